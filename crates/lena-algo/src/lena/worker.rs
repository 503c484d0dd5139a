//! A LENA node: the memory, the significance filter, the drift, and its upload.

use super::{Init, Layout, Lena};
use crate::{Broadcast, Gradient, GradientOracle, Message, Upload, Worker};
use lena_compress::{Compressor, ErrorFeedback, dense};
use lena_kernels::{Ema, Kernels, Memory, ScanNorms};
use lena_policy::drift::Drift;
use lena_policy::trigger::{Decision, ReferenceNorm, Trigger, TriggerCtx};
use rand::RngCore;
use std::sync::Arc;

impl Lena {
    /// A worker with an explicit trigger (tests script trigger outcomes with it; a researcher's
    /// own trigger runs in LENA's node this way), computing with `k`.
    pub fn worker_with(
        &self,
        n_workers: usize,
        dim: usize,
        trigger: Box<dyn Trigger>,
        k: Kernels,
    ) -> LenaWorker {
        LenaWorker {
            alpha: self.step_size,
            n_workers,
            avg_gamma: self.params.average_gamma,
            trigger,
            drift: Drift::new(self.params.drift, dim),
            q_at: None,
            dim,
            ef: ErrorFeedback::with_kernels(dim, k),
            hold: false,
            held: false,
            owes_q: false,
            // PERF: without a compressor the v last sent is read from the node's message (its
            // first d values), not kept a second time.
            v_prev: if self.compressor.is_some() {
                vec![0.0; dim]
            } else {
                Vec::new()
            },
            avg: if self.params.reference == ReferenceNorm::ScaledAverage
                && !self.avg_from_momentum()
            {
                vec![0.0; dim]
            } else {
                Vec::new()
            },
            avg_from_momentum: self.avg_from_momentum(),
            // Before the first upload v_prev = q = 0: read from q.
            v_is_q: true,
            // Allocated at the first upload unless the run is lossless (a vector that was
            // allocated and freed would stay resident).
            q_before: Vec::new(),
            keep_before: true,
            since_before: 0,
            resend: false,
            resend_lost: self.params.resend_lost,
            prev_grad_sq: 0.0,
            since_upload: 0,
            compressor: self.compressor.clone(),
            tmp: Message::default(),
            kernels: k,
            fresh: self.params.init == Init::Gradient,
            fresh_tracked: self.params.init == Init::Gradient,
        }
    }
}

/// A LENA node.
pub struct LenaWorker {
    alpha: f32,
    n_workers: usize,
    avg_gamma: f32,
    trigger: Box<dyn Trigger>,
    drift: Drift,
    /// Where q is read in the node's last upload, instead of kept by `drift` (see
    /// `Worker::lossless`).
    q_at: Option<usize>,
    /// The parameters' number.
    dim: usize,
    /// The error-feedback memory e (see `owes_q`), unless `held`.
    ef: ErrorFeedback,
    /// The memory is held in the upload once there is one (set by `Worker::lossless` where
    /// uploads are dense and carry q apart from v: LENA-g, LENA-m).
    hold: bool,
    /// The memory is held in the first d values of the node's last upload, its v's place
    /// (`ef` then holds nothing): zero, that v then still being what the node applied
    /// (`!v_is_q`), or the t of a skip owing q (`owes_q`; q sits after it in the upload).
    /// The server reads a silent node's q there and a sender's v only in the round it is
    /// sent, and v's place is read by the node only as its last v, so the scan writes its t
    /// there: an upload's v is in place as the scan forms it. Taken back into `ef` where the
    /// memory is changed outside a scan (an absence).
    held: bool,
    /// The memory owes the drift: `ef` holds `t = e + alpha g` as the last round's scan formed
    /// it, and that round skipped, so the memory is `t - q` (each element one rounded
    /// subtraction; q has not moved since, as it moves at uploads only). The next scan takes q
    /// off as it reads the memory (q is then its v), and `settle` where the memory is read
    /// otherwise.
    owes_q: bool,
    /// The compressed v last sent (empty without a compressor: then it is the first d
    /// values of the node's message).
    v_prev: Vec<f32>,
    avg: Vec<f32>,
    /// The average's norm comes from the momentum drift (see `Lena::avg_from_momentum`).
    avg_from_momentum: bool,
    /// True after a skip: the applied update is the drift `q`, not `v_prev`.
    v_is_q: bool,
    /// The drift and upload age before the last upload, to undo it if it is lost (empty in
    /// a run that loses no upload, see `Worker::lossless`).
    q_before: Vec<f32>,
    /// Whether `q_before` is kept (false after `Worker::lossless`).
    keep_before: bool,
    since_before: u64,
    /// Upload in the next round whatever the filter says (after a loss, if `resend_lost`).
    resend: bool,
    resend_lost: bool,
    prev_grad_sq: f64,
    since_upload: u64,
    compressor: Option<Arc<dyn Compressor>>,
    tmp: Message,
    kernels: Kernels,
    /// With `Init::Gradient`: the node has not stepped yet (its first round is the exchange).
    fresh: bool,
    /// `fresh` is part of the state (only with `Init::Gradient`: other states keep their
    /// layout).
    fresh_tracked: bool,
}

impl LenaWorker {
    /// The error-feedback memory e, given the node's message buffer (as for [`Self::applied`]:
    /// a lossless node may hold its memory there, and the memory a skip leaves is kept owing
    /// the drift, which may live there too).
    ///
    /// # Panics
    /// If `msg` is not the buffer of this node's last upload.
    pub fn memory(&self, msg: &Message) -> Vec<f32> {
        let mut e = if self.held && self.v_is_q {
            let mut scratch = Vec::new();
            dense_at(msg, 0, self.dim, &mut scratch).to_vec()
        } else {
            self.ef.memory().to_vec()
        };
        if self.owes_q {
            take_q_off(self.kernels, &self.drift, self.q_at, msg, &mut e);
        }
        e
    }

    /// The update this node believes the server applied for it last round (v), given the
    /// node's message buffer (the one passed to every `step`, which holds a dense `v`).
    ///
    /// # Panics
    /// If `msg` is not the buffer of this node's last upload.
    pub fn applied(&self, msg: &Message) -> Vec<f32> {
        let (mut scratch, mut q_scratch) = (Vec::new(), Vec::new());
        let d = self.dim;
        let q = drift_q(&self.drift, self.q_at, msg, d, &mut q_scratch);
        applied(self.v_is_q, q, &self.v_prev, msg, d, &mut scratch).to_vec()
    }

    /// The node's current drift q, given the node's message buffer (as for [`Self::applied`]).
    pub fn drift(&self, msg: &Message) -> Vec<f32> {
        let mut scratch = Vec::new();
        drift_q(&self.drift, self.q_at, msg, self.dim, &mut scratch).to_vec()
    }

    /// One round given an already computed gradient `g` (the oracle-free core of `step`).
    pub fn step_with_gradient(
        &mut self,
        round: u64,
        g: &[f32],
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        self.core(round, Gradient::Values(g), rng, msg)
    }

    fn core(
        &mut self,
        round: u64,
        g: Gradient<'_>,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let k = self.kernels;
        let alpha = self.alpha;
        self.since_upload += 1;
        // PERF: one fused pass over the node's state computes ||g||^2, the innovation
        // ||e + alpha g - v_prev||^2, the momentum drift's update and the running average with
        // its norm (five passes before), and writes t = e + alpha g. After a skip v_prev is the
        // drift q itself (q only changes on upload), so it is read from there instead of copied.
        // PERF: t is what an upload sends (before any compression) and, less q, the memory a
        // skip leaves. The memory after a skip is kept as t owing q (`owes_q`), so that the
        // next scan takes q off as it reads it (q is that scan's v) and writes its own t over
        // it: a skipping node's memory is read and written in place, where the scan wrote the
        // skip's memory into a spare vector (a stream of stores into lines not in cache), and an
        // upload copies t instead of forming e + alpha g again. LENA-m's round at M = 200:
        // 0.556-0.603 ms against 0.811-0.885 in nine alternated pairs of processes in a noisy
        // hour, 0.587-0.597 against 0.627-0.652 in a quiet one (AMD EPYC Zen 4; 46th session,
        // docs/PERFORMANCE.md); the same floats.
        let dim = self.dim;
        let first = std::mem::take(&mut self.fresh);
        let (q, mut mom) = self.drift.observe_fused(alpha);
        let (mut decoded, mut decoded_q) = (Vec::new(), Vec::new());
        let mut avg = (!self.avg.is_empty()).then(|| Ema {
            x: &mut self.avg[..],
            a: self.avg_gamma,
            b: 1.0 - self.avg_gamma,
        });
        if first {
            // The initial exchange: the averages start at this gradient.
            if let Some(m) = mom.as_mut() {
                (m.a, m.b) = (alpha, 0.0);
            }
            if let Some(a) = avg.as_mut() {
                (a.a, a.b) = (1.0, 0.0);
            }
        }
        // A memory owes q only after a skip, when v_prev is q.
        debug_assert!(
            !self.owes_q || self.v_is_q,
            "a memory owing q with v_prev not q"
        );
        let owing = self.owes_q;
        let mut spare = Vec::new();
        let norms = if self.held {
            // PERF: the memory kept in the place of the last upload's v (see `held`): zero
            // after that upload, whose v is then the scan's v and takes t, else t owing q.
            // Either way t is written where an upload sends it: no copy at an upload, no
            // vector of the node's own, and no spare vector's stores. LENA-m's node: 3.03
            // vectors of d against 4.04 (`memory_profile`), M = 60 000 in 6.00 GB against
            // 7.89; its round at M = 200 0.532-0.661 ms against 0.582-0.679 in 14 alternated
            // pairs of processes (new faster in 11; AMD EPYC Zen 4, 47th session,
            // docs/PERFORMANCE.md); the same floats.
            let over = !self.v_is_q;
            debug_assert!(
                over || owing,
                "a memory held in the upload is zero or owes q"
            );
            dense::update_with(msg, &mut decoded, |values| {
                assert!(
                    values.len() == 2 * dim,
                    "a LENA node's memory held in its upload: {} values there, {} expected",
                    values.len(),
                    2 * dim
                );
                let (held, q) = values.split_at_mut(dim);
                if over {
                    scan(k, Memory::ZeroOver(held), alpha, &g, &[], mom, avg)
                } else {
                    scan(k, Memory::Owing(held), alpha, &g, q, mom, avg)
                }
            })
        } else {
            let q = match self.q_at {
                None => q,
                Some(at) => msg_q(msg, at, dim, &mut decoded_q),
            };
            let v_prev = applied(self.v_is_q, q, &self.v_prev, msg, dim, &mut decoded);
            let memory = if owing {
                Memory::Owing(self.ef.memory_mut())
            } else {
                spare = crate::buffers::take_spare_vector(dim);
                Memory::Into {
                    e: self.ef.memory(),
                    out: &mut spare,
                }
            };
            let norms = scan(k, memory, alpha, &g, v_prev, mom, avg);
            if !owing {
                // t into the memory's place; the spare takes the memory before.
                self.ef.swap_memory(&mut spare);
            }
            norms
        };
        self.owes_q = false;
        let grad_sq = f64::from(norms.g_sq);
        let innovation_sq = f64::from(norms.innovation_sq);
        let avg_grad_sq = if self.avg_from_momentum {
            f64::from(norms.ema_sq[0]) / (f64::from(alpha) * f64::from(alpha))
        } else {
            f64::from(norms.ema_sq[1])
        };
        // PERF: LENA's filter never reads parameter steps, so they are not computed (that
        // was a copy of w and a distance per node and round).
        let param_step_sq = 0.0;
        let ctx = TriggerCtx {
            round,
            since_upload: self.since_upload,
            innovation_sq,
            grad_sq,
            prev_grad_sq: self.prev_grad_sq,
            avg_grad_sq,
            param_step_sq,
            step_size: f64::from(alpha),
            n_workers: self.n_workers,
            threshold_offset: 0.0,
        };
        self.prev_grad_sq = grad_sq;
        let decision = self.trigger.decide(&ctx);
        let decision = if std::mem::take(&mut self.resend) || first {
            Decision::Upload
        } else {
            decision
        };
        let up = match decision {
            Decision::Upload => {
                // The gradient, written out where the drift reads it (LENA-g's alpha g).
                let g: &[f32] = match g {
                    _ if !self.drift.kind().reads_gradient() => &[],
                    Gradient::Values(g) => g,
                    Gradient::Linear(lg, buf) => {
                        k.linear_gradient_into(lg, buf);
                        buf
                    }
                };
                self.since_before = self.since_upload;
                if self.held {
                    // v = t, in place already; the new q after it (a held memory's run is
                    // lossless: nothing is kept to undo the upload).
                    let drift = &self.drift;
                    dense::update_with(msg, &mut decoded, |values| {
                        drift.sent_q_into(k, alpha, g, &mut values[dim..]);
                    });
                } else {
                    self.upload(alpha, g, rng, msg, &mut spare, &mut decoded);
                }
                self.since_upload = 0;
                self.v_is_q = false;
                Upload::Sent
            }
            Decision::Skip => {
                // v = q; e = t - q, taken off by the next scan (or where the memory is read).
                self.owes_q = true;
                self.v_is_q = true;
                Upload::Skipped
            }
        };
        if !spare.is_empty() {
            crate::buffers::give_back_spare_vector(spare);
        }
        up
    }

    /// An upload of a memory of the node's own, which holds t: the message (v, and q where it
    /// is sent), the memory left and the drift; then, where the run allows, the memory is
    /// held in the upload from here on (see `held`).
    fn upload(
        &mut self,
        alpha: f32,
        g: &[f32],
        rng: &mut dyn RngCore,
        msg: &mut Message,
        spare: &mut Vec<f32>,
        decoded: &mut Vec<f32>,
    ) {
        let (k, d) = (self.kernels, self.dim);
        // The drift before is kept in case the upload is lost (see `on_lost`); in a run that
        // loses nothing the thread's spare vector takes it (and drops it).
        let before = if self.keep_before {
            self.q_before.resize(d, 0.0);
            &mut self.q_before
        } else {
            if spare.is_empty() {
                *spare = crate::buffers::take_spare_vector(d);
            }
            spare
        };
        let layout = Layout::new(d, self.drift.kind(), self.compressor.is_some());
        match &self.compressor {
            None => {
                // v = u = t, the memory's place, written into the upload (v, or v then q);
                // e = u - v = 0 exactly.
                let n = layout.dense_len();
                let (t, drift) = (self.ef.memory(), &mut self.drift);
                let since = self.since_upload;
                let aliased = self.q_at.is_some();
                dense::encode_with(msg, n, decoded, |out| {
                    let (v, q_out) = out.split_at_mut(d);
                    v.copy_from_slice(t);
                    if aliased {
                        // q lives in the upload: the new one goes there (LENA-v's is v).
                        drift.sent_q_into(k, alpha, g, q_out);
                        return;
                    }
                    drift.on_upload_keeping(k, v, alpha, g, since, before);
                    if layout.sends_q {
                        q_out.copy_from_slice(drift.q());
                    }
                });
                if self.hold {
                    // PERF: from now on the memory lives in the upload (zero, v in place).
                    self.ef.release();
                    self.held = true;
                } else {
                    // PERF: zero without writing it (see `ErrorFeedback::clear`).
                    self.ef.clear();
                }
            }
            Some(c) => {
                // u = t, held in the memory's place; v = C(u); e = u - v.
                self.ef
                    .compress_held(c.as_ref(), rng, &mut self.v_prev, &mut self.tmp);
                self.drift
                    .on_upload_keeping(k, &self.v_prev, alpha, g, self.since_upload, before);
                layout.write_compressed(self.drift.q(), &self.tmp, msg);
            }
        }
    }

    /// A memory held in the upload ([`Self::held`]) taken back into the node's own vector:
    /// zero, or t owing q, as it was held (then `settle` takes q off).
    fn unhold(&mut self, msg: &Message) {
        if std::mem::take(&mut self.held) && self.v_is_q {
            let mut scratch = Vec::new();
            let t = dense_at(msg, 0, self.dim, &mut scratch);
            self.ef.memory_mut().copy_from_slice(t);
        }
    }

    /// Takes the drift a skip applied off the memory, where it is owed (`owes_q`): `e = t - q`,
    /// the floats the next scan would read. `msg` is the node's last upload (where a lossless
    /// node's q lives).
    fn settle(&mut self, msg: &Message) {
        if std::mem::take(&mut self.owes_q) {
            let t = self.ef.memory_mut();
            take_q_off(self.kernels, &self.drift, self.q_at, msg, t);
        }
    }
}

impl Worker for LenaWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let (round, w) = (bc.round, bc.w);
        // PERF: the gradient lives only for the round, so it goes into a per-thread buffer
        // that stays in cache instead of one per node (6 MB less state at M = 200).
        crate::buffers::with_gradient_buffer(w.len(), |buf| {
            let mut up = Upload::Skipped;
            oracle.gradient_with(w, buf, &mut |g| up = self.core(round, g, rng, msg));
            up
        })
    }

    /// The server applied the old drift `q_before` instead of `v` and kept its old drift and
    /// upload age: the difference `v - q_before` goes back into the memory (so nothing is
    /// lost, only delayed) and the node's drift and age return to the server's.
    fn on_lost(&mut self, msg: &Message) {
        assert!(self.keep_before, "on_lost in a run declared lossless");
        // A loss may be known rounds after the upload, the node having skipped since.
        self.settle(msg);
        let k = self.kernels;
        let mut decoded = Vec::new();
        let d = self.dim;
        let v = applied(false, &[], &self.v_prev, msg, d, &mut decoded);
        k.ef_update(self.ef.memory_mut(), 1.0, v, &self.q_before);
        self.drift.set(&self.q_before);
        self.v_is_q = true;
        self.since_upload = self.since_before;
        self.resend = self.resend_lost;
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        // Whether the memory is held in the upload (the node's message, saved by the caller),
        // else the memory as held; and whether it owes q (which may live in the message too).
        v.bool(&mut self.held);
        if self.held {
            if !self.hold {
                v.fail("a LENA node's memory is held in its upload, in a run that keeps it".into());
            }
            self.ef.release();
        } else {
            v.f32s(self.ef.memory_mut());
        }
        v.bool(&mut self.owes_q);
        v.f32s(&mut self.v_prev);
        v.f32s(&mut self.avg);
        v.bool(&mut self.v_is_q);
        if self.owes_q && !self.v_is_q {
            v.fail(
                "a LENA node's memory owes its drift, but its last update was not the drift".into(),
            );
        }
        if self.held && self.v_is_q && !self.owes_q {
            v.fail(
                "a LENA node's memory held in its upload neither zero nor owing its drift".into(),
            );
        }
        if self.keep_before {
            // The same length whether saved before or after the first upload.
            self.q_before.resize(self.dim, 0.0);
        }
        v.f32s(&mut self.q_before);
        v.u64(&mut self.since_before);
        v.bool(&mut self.resend);
        v.f64(&mut self.prev_grad_sq);
        v.u64(&mut self.since_upload);
        v.trigger(self.trigger.as_mut());
        let (q, mom) = self.drift.buffers_mut();
        v.f32s(q);
        v.f32s(mom);
        if self.fresh_tracked {
            v.bool(&mut self.fresh);
        }
    }

    /// The server applied the drift q in each absent round, which the node never computed:
    /// it is charged to the memory, `e -= rounds q`.
    fn on_absent(&mut self, rounds: u64, msg: &Message) {
        self.unhold(msg);
        self.settle(msg);
        let k = self.kernels;
        let mut scratch = Vec::new();
        let d = self.dim;
        let q = drift_q(&self.drift, self.q_at, msg, d, &mut scratch);
        k.axpy(-(rounds as f32), q, self.ef.memory_mut());
        self.since_upload += rounds;
        self.v_is_q = true;
    }

    /// Drops the undo copies; and where uploads are dense and carry q (LENA-g, LENA-m) or
    /// are q (LENA-v), q is read from the node's last upload, as the server reads it.
    ///
    /// PERF: a vector less per node, and an upload writes the new q once (into the message)
    /// instead of into the node's q and then the message; q changes only at uploads, and the
    /// last upload is kept by the caller (the message buffer passed to `step`).
    fn lossless(&mut self) {
        self.keep_before = false;
        self.q_before = Vec::new();
        let layout = Layout::new(self.dim, self.drift.kind(), self.compressor.is_some());
        if layout.drift_in_upload(self.drift.kind()) {
            self.q_at = Some(layout.drift_at());
            self.drift.release_q();
            // Where q is sent apart from v, the memory is held in v's place (see `held`).
            self.hold = layout.sends_q;
        }
    }
}

/// One scan of the node's state ([`Kernels::ef_scan`], or [`Kernels::ef_scan_linear`] for a
/// gradient in factored form).
///
/// PERF: a linear model's minibatch gradient is formed where the scan reads it (no pass of its
/// own, no store), and written out only for an upload whose drift reads it.
fn scan(
    k: Kernels,
    memory: Memory<'_>,
    alpha: f32,
    g: &Gradient<'_>,
    v: &[f32],
    mom: Option<Ema<'_>>,
    avg: Option<Ema<'_>>,
) -> ScanNorms {
    match g {
        Gradient::Values(g) => k.ef_scan(memory, alpha, g, v, mom, avg),
        Gradient::Linear(lg, _) => k.ef_scan_linear(memory, alpha, lg, v, mom, avg),
    }
}

/// `t - q` into `t`, the drift q read as [`drift_q`] reads it: the floats the next scan would
/// read. `fl(-1 q + t)`: the product is exact, so one rounding of `t - q`, as the scan's.
fn take_q_off(k: Kernels, drift: &Drift, q_at: Option<usize>, msg: &Message, t: &mut [f32]) {
    let mut scratch = Vec::new();
    let q = drift_q(drift, q_at, msg, t.len(), &mut scratch);
    k.axpy(-1.0, q, t);
}

/// The drift q: the node's own, or the one in its last upload at `q_at` (see
/// `Worker::lossless`).
fn drift_q<'a>(
    drift: &'a Drift,
    q_at: Option<usize>,
    msg: &'a Message,
    d: usize,
    scratch: &'a mut Vec<f32>,
) -> &'a [f32] {
    match q_at {
        None => drift.q(),
        Some(at) => msg_q(msg, at, d, scratch),
    }
}

/// The drift at `at` in the node's last dense upload `msg`; zeros before its first upload
/// (`msg` empty), when q is zero.
fn msg_q<'a>(msg: &'a Message, at: usize, d: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
    if msg.bytes().is_empty() {
        return lena_kernels::zeros(d);
    }
    dense_at(msg, at, d, scratch)
}

/// The update a node applied last round: its drift `q` after a skip, else the `v` it sent:
/// the compressed `v_prev` it kept, or the first `d` values of its dense message (read in
/// place, or decoded into `scratch` where the platform cannot).
///
/// # Panics
/// If `msg` holds fewer than `d` values where it is read.
fn applied<'a>(
    v_is_q: bool,
    q: &'a [f32],
    v_prev: &'a [f32],
    msg: &'a Message,
    d: usize,
    scratch: &'a mut Vec<f32>,
) -> &'a [f32] {
    if v_is_q {
        return q;
    }
    if !v_prev.is_empty() {
        return v_prev;
    }
    dense_at(msg, 0, d, scratch)
}

/// The `d` values at `at` of a dense message, read in place, or decoded into `scratch` where
/// the platform cannot.
fn dense_at<'a>(msg: &'a Message, at: usize, d: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
    match dense::view_at(msg, at, d) {
        Some(x) => x,
        None => {
            scratch.resize(d, 0.0);
            dense::decode_at(msg, at, scratch);
            scratch
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LenaParams;
    use lena_policy::trigger::Significance;
    use rand::SeedableRng;

    /// Reading the average's norm from the momentum makes the same decisions, to the last
    /// round, as keeping the average separately.
    #[test]
    fn average_from_momentum_matches_a_separate_average() {
        let (d, alpha) = (50, 0.05f32);
        let lena = LenaParams::default().check(alpha, d).unwrap();
        assert!(lena.avg_from_momentum());
        let mk = || {
            let p = &lena.params;
            let t = Significance::new(p.beta, p.reference, p.confirm).unwrap();
            lena.worker_with(1, d, Box::new(t), Kernels::detect())
        };
        let (mut shared, mut separate) = (mk(), mk());
        assert!(shared.avg.is_empty());
        separate.avg_from_momentum = false;
        separate.avg = vec![0.0; d];
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let (mut m1, mut m2) = (Message::default(), Message::default());
        let mut uploads = 0;
        for t in 0..300u64 {
            // A slowly varying gradient with noise: uploads come and go.
            let g: Vec<f32> = (0..d)
                .map(|i| (t as f32 * 0.05 + i as f32).sin() + (rng.next_u32() % 100) as f32 * 0.01)
                .collect();
            let a = shared.step_with_gradient(t, &g, &mut rng.clone(), &mut m1);
            let b = separate.step_with_gradient(t, &g, &mut rng.clone(), &mut m2);
            assert_eq!(a, b, "round {t}");
            uploads += usize::from(a == Upload::Sent);
        }
        assert!(
            (5..250).contains(&uploads),
            "{uploads} uploads: the test needs both outcomes"
        );
    }
}
