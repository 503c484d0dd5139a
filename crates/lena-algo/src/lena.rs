//! LENA: self-triggered uploads with error feedback and a drift for silent nodes
//! (AISTATS 2021; ALGORITHMS.md).

use crate::gather::{AGG_BLOCK, Decoded};
use crate::params::{check_step, compressor, contractive};
use crate::{
    Algorithm, Broadcast, Error, GradientOracle, Message, Result, Server, Upload, Uploads, Worker,
};
use lena_compress::{Compressor, CompressorParams, ErrorFeedback, dense};
use lena_kernels::{Ema, Kernels, SkipUpdate};
use lena_policy::drift::{Drift, DriftKind};
use lena_policy::trigger::{Decision, ReferenceNorm, Significance, Trigger, TriggerCtx};
use rand::RngCore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// LENA's parameters.
///
/// Update, node m, round t (paper notation; `e` memory, `v` applied update, `q` drift):
/// `u = e + alpha g`; upload iff `||u - v_prev||^2 >= beta * R` (the significance filter, R the
/// [`ReferenceNorm`]), confirmed `confirm` times; on upload `v = u`, new `q`, send `v` (and
/// `q` unless the server rebuilds it); otherwise `v = q`, nothing sent; `e = u - v`.
/// Server: `w^{t+1} = w^t - (1/M) sum_m v_m`.
///
/// One upload: `v` as dense f32 (32 d bits), plus `q` (another 32 d bits) for LENA-g and
/// LENA-m. Defaults: beta = 40 and momentum drift with gamma = 0.1 (the paper's experiments and
/// issue 3's reference runs); the reference norm's default, the alpha-scaled running average of
/// gradients, was settled by measurement (docs/LENA_RULE.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LenaParams {
    /// Significance threshold beta (0 uploads every round).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// What the innovation is compared with.
    #[serde(default = "default_reference")]
    pub reference: ReferenceNorm,
    /// k-confirm: upload once the filter fired this many times since the last upload.
    #[serde(default = "default_confirm")]
    pub confirm: u32,
    /// The drift applied for silent rounds.
    #[serde(default = "default_drift")]
    pub drift: DriftKind,
    /// Weight of the running gradient average used by `reference = "scaled_average"`.
    #[serde(default = "default_avg_gamma")]
    pub average_gamma: f32,
    /// Optional compressor of the upload: `v = C(u)`, the residual `u - v` stays in `e`
    /// (any compressor with `||e'||^2 <= (1 - delta) ||e + alpha g||^2` keeps convergence).
    #[serde(default)]
    pub compressor: Option<CompressorParams>,
    /// After the broadcast reports a lost upload, upload again in the next round whatever
    /// the filter says (a retransmission, counted like any upload). Without it the server
    /// keeps the old drift until the node's next regular upload; measured in
    /// docs/COMMUNICATION.md.
    #[serde(default = "default_resend")]
    pub resend_lost: bool,
    /// How the drift and the reference start (Algorithm 1 leaves `q^{-1}` open).
    #[serde(default)]
    pub init: Init,
}

/// How a LENA node's drift and reference average start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Everything at zero: `q^{-1} = 0`, the momentum and the reference average grow from
    /// zero, and the first round's filter decides (with an empty memory and a small reference
    /// it fires, so every node uploads in its first round).
    #[default]
    Zero,
    /// An initial gradient exchange: a node's first round is an upload whatever the filter
    /// says (counted like any upload), and the momentum drift and the reference average
    /// start at that round's gradient (`alpha g^0`, `g^0`) instead of a tenth of it.
    Gradient,
}

fn default_resend() -> bool {
    true
}

fn default_beta() -> f64 {
    40.0
}
fn default_reference() -> ReferenceNorm {
    // Settled by measurement: docs/LENA_RULE.md.
    ReferenceNorm::ScaledAverage
}
fn default_confirm() -> u32 {
    1
}
fn default_drift() -> DriftKind {
    DriftKind::Momentum { gamma: 0.1 }
}
fn default_avg_gamma() -> f32 {
    0.1
}

impl LenaParams {
    /// LENA with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> Result<Lena> {
        check_step(step_size)?;
        Significance::new(self.beta, self.reference, self.confirm)?;
        self.drift.check()?;
        let g = self.average_gamma;
        if !(g > 0.0 && g <= 1.0) {
            return Err(Error::bad_param("average_gamma", "in (0, 1]", g));
        }
        let compressor = match &self.compressor {
            Some(cp) => Some(contractive(compressor(cp, dim)?)?),
            None => None,
        };
        Ok(Lena {
            step_size,
            params: self.clone(),
            compressor,
        })
    }
}

impl Default for LenaParams {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            reference: default_reference(),
            confirm: default_confirm(),
            drift: default_drift(),
            average_gamma: default_avg_gamma(),
            compressor: None,
            resend_lost: default_resend(),
            init: Init::Zero,
        }
    }
}

/// A validated LENA configuration.
///
/// A missing upload (faults) is a silent round for the server, which applies the drift; the
/// node, told of the loss, puts `v - q` back into its memory and, with `resend_lost`, uploads
/// again next round (docs/COMMUNICATION.md).
#[derive(Clone)]
pub struct Lena {
    /// Step size alpha.
    pub step_size: f32,
    /// The other parameters, checked.
    pub params: LenaParams,
    /// The upload compressor, if any (built from `params.compressor`).
    pub compressor: Option<Arc<dyn Compressor>>,
}

impl std::fmt::Debug for Lena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lena")
            .field("step_size", &self.step_size)
            .field("params", &self.params)
            .field("compressor", &self.compressor.as_ref().map(|c| c.name()))
            .finish()
    }
}

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
            ef: ErrorFeedback::with_kernels(dim, k),
            // PERF: without a compressor the v last sent is read from the node's message (its
            // first d values), not kept a second time.
            v_prev: if self.compressor.is_some() {
                vec![0.0; dim]
            } else {
                Vec::new()
            },
            alpha_g: if self.params.drift == DriftKind::LastGradient {
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
            u: if self.compressor.is_some() {
                vec![0.0; dim]
            } else {
                Vec::new()
            },
            tmp: Message::default(),
            kernels: k,
            fresh: self.params.init == Init::Gradient,
            fresh_tracked: self.params.init == Init::Gradient,
        }
    }

    /// With the momentum drift at `gamma = average_gamma` (the default), the momentum is
    /// exactly `alpha` times the running gradient average: both are `sum_k gamma (1 - gamma)^k`
    /// times the past gradients, from zero. The average's norm is then read from the momentum
    /// (`||avg||^2 = ||mom||^2 / alpha^2`) instead of keeping a sixth vector per node.
    fn avg_from_momentum(&self) -> bool {
        self.params.reference == ReferenceNorm::ScaledAverage
            && self.params.drift
                == (DriftKind::Momentum {
                    gamma: self.params.average_gamma,
                })
            && self.step_size > 0.0
    }
}

impl Algorithm for Lena {
    fn name(&self) -> String {
        let mut n = format!("LENA-{}", self.params.drift.suffix());
        if self.params.confirm > 1 {
            n.push_str(&format!(" (k={})", self.params.confirm));
        }
        if self.params.init == Init::Gradient {
            n.push_str(" (gradient init)");
        }
        n
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        let p = &self.params;
        (0..n_workers)
            .map(|_| {
                let t = Significance::new(p.beta, p.reference, p.confirm).expect("checked");
                Box::new(self.worker_with(n_workers, dim, Box::new(t), k)) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(self.lena_server(n_workers, dim, k))
    }
}

/// Where v and q sit in a LENA upload: the one description of its layout, read by the node
/// that writes an upload and by the server that reads it.
///
/// | upload | drift rebuilt by the server (`0`, `v`, `avg`) | drift sent (`g`, `m`) |
/// | --- | --- | --- |
/// | dense | `v` (d f32) | `v` then `q` (2d f32) |
/// | compressed | the encoding of `v` | `q` (d f32, byte aligned), then the encoding of `v` |
#[derive(Clone, Copy, Debug)]
struct Layout {
    d: usize,
    /// The drift travels with `v` (the server cannot rebuild it).
    sends_q: bool,
    compressed: bool,
}

impl Layout {
    fn new(d: usize, drift: DriftKind, compressed: bool) -> Self {
        Self {
            d,
            sends_q: !drift.rebuildable(),
            compressed,
        }
    }

    /// Values in a dense upload.
    fn dense_len(self) -> usize {
        if self.sends_q { 2 * self.d } else { self.d }
    }

    /// Where `q` starts, in f32 values, in an upload that sends it.
    fn q_at(self) -> usize {
        if self.compressed { 0 } else { self.d }
    }

    /// Where a silent node's drift starts in its last dense upload: `q` where it is sent, else
    /// `v` itself (the drifts a server reads from the last upload are then the last `v`).
    fn drift_at(self) -> usize {
        if self.sends_q { self.q_at() } else { 0 }
    }

    /// Writes a compressed upload from the drift `q` and the encoding `v` of the compressed v.
    fn write_compressed(self, q: &[f32], v: &Message, msg: &mut Message) {
        if self.sends_q {
            dense::encode(q, msg);
            msg.append_aligned(v);
        } else {
            msg.clone_from(v);
        }
    }

    /// Checks an upload; with a compressor `c`, decodes its v into `v` (its encoding copied to
    /// `sub` where `q` precedes it).
    fn read(
        self,
        c: Option<&dyn Compressor>,
        msg: &Message,
        v: &mut [f32],
        sub: &mut Message,
    ) -> lena_compress::Result<()> {
        match c {
            None => dense::check(msg, self.dense_len()),
            Some(c) if self.sends_q => {
                msg.split_aligned(32 * self.d as u64, "LENA (q, v)", sub)?;
                c.decode(sub, v)
            }
            Some(c) => c.decode(msg, v),
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
    /// The error-feedback memory e.
    ef: ErrorFeedback,
    /// The compressed v last sent (empty without a compressor: then it is the first d
    /// values of the node's message).
    v_prev: Vec<f32>,
    alpha_g: Vec<f32>,
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
    u: Vec<f32>,
    tmp: Message,
    kernels: Kernels,
    /// With `Init::Gradient`: the node has not stepped yet (its first round is the exchange).
    fresh: bool,
    /// `fresh` is part of the state (only with `Init::Gradient`: other states keep their
    /// layout).
    fresh_tracked: bool,
}

impl LenaWorker {
    /// Error-feedback memory e.
    pub fn memory(&self) -> &[f32] {
        self.ef.memory()
    }

    /// The update this node believes the server applied for it last round (v), given the
    /// node's message buffer (the one passed to every `step`, which holds a dense `v`).
    ///
    /// # Panics
    /// If `msg` is not the buffer of this node's last upload.
    pub fn applied(&self, msg: &Message) -> Vec<f32> {
        let mut scratch = Vec::new();
        applied(
            self.v_is_q,
            self.drift.q(),
            &self.v_prev,
            msg,
            self.ef.memory().len(),
            &mut scratch,
        )
        .to_vec()
    }

    /// The node's current drift q.
    pub fn drift(&self) -> &[f32] {
        self.drift.q()
    }

    /// One round given an already computed gradient `g` (the oracle-free core of `step`).
    pub fn step_with_gradient(
        &mut self,
        round: u64,
        g: &[f32],
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        self.core(round, g, rng, msg)
    }

    fn core(&mut self, round: u64, g: &[f32], rng: &mut dyn RngCore, msg: &mut Message) -> Upload {
        let k = self.kernels;
        let alpha = self.alpha;
        self.since_upload += 1;
        // PERF: one fused pass over the node's state computes ||g||^2, the innovation
        // ||e + alpha g - v_prev||^2 (without forming u), the momentum drift's update and the
        // running average with its norm (five passes before). After a skip v_prev is the drift
        // q itself (q only changes on upload), so it is read from there instead of copied.
        // PERF: the scan also writes the memory a skip leaves, e + alpha g - q, into a
        // per-thread spare vector, swapped in below if the node skips: a skip costs no second
        // pass over e, g and q.
        let mut skip_e = crate::buffers::take_spare_vector(g.len());
        let first = std::mem::take(&mut self.fresh);
        let (q, mut mom) = self.drift.observe_fused(alpha);
        let mut decoded = Vec::new();
        let v_prev = applied(self.v_is_q, q, &self.v_prev, msg, g.len(), &mut decoded);
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
        let skip = SkipUpdate {
            q,
            out: &mut skip_e,
        };
        let norms = k.ef_scan(self.ef.memory(), alpha, g, v_prev, mom, avg, Some(skip));
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
        match decision {
            Decision::Upload => {
                let d = g.len();
                // The drift before is kept in case the upload is lost (see `on_lost`); in a
                // run that loses nothing the thread's spare vector takes it (and drops it).
                self.since_before = self.since_upload;
                let before = if self.keep_before {
                    self.q_before.resize(d, 0.0);
                    &mut self.q_before
                } else {
                    &mut skip_e
                };
                let layout = Layout::new(d, self.drift.kind(), self.compressor.is_some());
                match &self.compressor {
                    None => {
                        // v = u = e + alpha g, written straight into the upload (v, or v then
                        // q); e = u - v = 0 exactly.
                        let n = layout.dense_len();
                        let (e, drift, alpha_g) =
                            (self.ef.memory(), &mut self.drift, &mut self.alpha_g);
                        let since = self.since_upload;
                        dense::encode_with(msg, n, &mut decoded, |out| {
                            let (v, q_out) = out.split_at_mut(d);
                            k.lin_comb(v, 1.0, e, &[alpha], &[g]);
                            if !alpha_g.is_empty() {
                                alpha_g.fill(0.0);
                                k.axpy(alpha, g, alpha_g);
                            }
                            drift.on_upload_keeping(k, v, alpha_g, since, before);
                            if layout.sends_q {
                                q_out.copy_from_slice(drift.q());
                            }
                        });
                        self.ef.memory_mut().fill(0.0);
                    }
                    Some(c) => {
                        // u = e + alpha g; v = C(u); e = u - v.
                        self.ef.compress_scaled(
                            c.as_ref(),
                            alpha,
                            g,
                            rng,
                            &mut self.u,
                            &mut self.v_prev,
                            &mut self.tmp,
                        );
                        if !self.alpha_g.is_empty() {
                            self.alpha_g.fill(0.0);
                            k.axpy(alpha, g, &mut self.alpha_g);
                        }
                        self.drift.on_upload_keeping(
                            k,
                            &self.v_prev,
                            &self.alpha_g,
                            self.since_upload,
                            before,
                        );
                        layout.write_compressed(self.drift.q(), &self.tmp, msg);
                    }
                }
                self.since_upload = 0;
                self.v_is_q = false;
                crate::buffers::give_back_spare_vector(skip_e);
                Upload::Sent
            }
            Decision::Skip => {
                // v = q; e = e + alpha g - q, computed by the scan.
                self.ef.swap_memory(&mut skip_e);
                crate::buffers::give_back_spare_vector(skip_e);
                self.v_is_q = true;
                Upload::Skipped
            }
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
        crate::buffers::with_gradient_buffer(w.len(), |g| {
            oracle.gradient(w, g);
            self.core(round, g, rng, msg)
        })
    }

    /// The server applied the old drift `q_before` instead of `v` and kept its old drift and
    /// upload age: the difference `v - q_before` goes back into the memory (so nothing is
    /// lost, only delayed) and the node's drift and age return to the server's.
    fn on_lost(&mut self, msg: &Message) {
        assert!(self.keep_before, "on_lost in a run declared lossless");
        let k = self.kernels;
        let mut decoded = Vec::new();
        let d = self.ef.memory().len();
        let v = applied(false, &[], &self.v_prev, msg, d, &mut decoded);
        k.ef_update(self.ef.memory_mut(), 1.0, v, &self.q_before);
        self.drift.set(&self.q_before);
        self.v_is_q = true;
        self.since_upload = self.since_before;
        self.resend = self.resend_lost;
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(self.ef.memory_mut());
        v.f32s(&mut self.v_prev);
        v.f32s(&mut self.alpha_g);
        v.f32s(&mut self.avg);
        v.bool(&mut self.v_is_q);
        if self.keep_before {
            // The same length whether saved before or after the first upload.
            self.q_before.resize(self.ef.memory().len(), 0.0);
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
    fn on_absent(&mut self, rounds: u64) {
        let k = self.kernels;
        k.axpy(-(rounds as f32), self.drift.q(), self.ef.memory_mut());
        self.since_upload += rounds;
        self.v_is_q = true;
    }

    fn lossless(&mut self) {
        self.keep_before = false;
        self.q_before = Vec::new();
    }
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
    match dense::view_at(msg, 0, d) {
        Some(v) => v,
        None => {
            scratch.resize(d, 0.0);
            dense::decode_at(msg, 0, scratch);
            scratch
        }
    }
}

/// LENA's server: keeps each node's drift and applies it in the node's silent rounds.
///
/// The drifts are stored block-major (for each block of 1024 coordinates, every
/// node's piece in turn), so that coordinate blocks are aggregated in parallel: each block
/// applies the nodes in node order, with the same element-wise float operations as the node,
/// whatever the thread count. Compressed uploads are first decoded in parallel over nodes.
pub struct LenaServer {
    n_workers: usize,
    dim: usize,
    kind: DriftKind,
    compressor: Option<Arc<dyn Compressor>>,
    /// Every node's drift q, block-major (empty where it is read from the node's last upload,
    /// see `aliased`).
    qs: Vec<f32>,
    /// The drifts are read from the nodes' last uploads instead of kept (after
    /// `Server::lossless`, dense uploads, a drift that is sent or is the last v).
    aliased: bool,
    since_upload: Vec<u64>,
    /// Rounds since node m's previous upload, for this round's rebuild (Average drift).
    rounds: Vec<u64>,
    /// Every node's decoded compressed v (none without a compressor).
    decoded: Option<Decoded>,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl Lena {
    /// The server, with its concrete type (tests inspect its bookkeeping).
    pub fn lena_server(&self, n_workers: usize, dim: usize, k: Kernels) -> LenaServer {
        LenaServer {
            n_workers,
            dim,
            kind: self.params.drift,
            compressor: self.compressor.clone(),
            qs: vec![0.0; n_workers * dim],
            aliased: false,
            since_upload: vec![0; n_workers],
            rounds: vec![0; n_workers],
            decoded: self
                .compressor
                .as_ref()
                .map(|_| Decoded::new(n_workers, dim)),
            sum: vec![0.0; dim],
            kernels: k,
        }
    }
}

impl LenaServer {
    /// The drift the server holds for node `m` (applied in its silent rounds); empty after
    /// `Server::lossless` where the drift is read from the node's last upload.
    pub fn drift(&self, m: usize) -> Vec<f32> {
        if self.aliased {
            return Vec::new();
        }
        let mut q = Vec::with_capacity(self.dim);
        for block in self.qs.chunks(AGG_BLOCK * self.n_workers) {
            let width = block.len() / self.n_workers;
            q.extend_from_slice(&block[m * width..(m + 1) * width]);
        }
        q
    }

    /// Checks every upload and decodes the compressed ones (in parallel over nodes).
    fn receive(&mut self, round: u64, uploads: &Uploads<'_>) -> Result<()> {
        let layout = Layout::new(self.dim, self.kind, self.compressor.is_some());
        let err = |node, source| Error::Decode {
            round,
            node,
            source,
        };
        let (Some(c), Some(decoded)) = (&self.compressor, &mut self.decoded) else {
            for (m, msg) in uploads.iter().enumerate() {
                if let Some(msg) = msg {
                    layout
                        .read(None, msg, &mut [], &mut Message::default())
                        .map_err(|e| err(m, e))?;
                }
            }
            return Ok(());
        };
        decoded.decode(round, uploads, |msg, v, sub| {
            layout.read(Some(c.as_ref()), msg, v, sub)
        })
    }
}

impl Server for LenaServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        self.receive(round, &uploads)?;
        for (m, msg) in uploads.iter().enumerate() {
            self.since_upload[m] += 1;
            self.rounds[m] = self.since_upload[m];
            if msg.is_some() {
                self.since_upload[m] = 0;
            }
        }
        let (k, kind, d, n) = (self.kernels, self.kind, self.dim, self.n_workers);
        let (rounds, decoded) = (&self.rounds, &self.decoded);
        let layout = Layout::new(d, kind, decoded.is_some());
        let q_offset = layout.q_at();
        let inv_m = -1.0 / n as f32;
        if self.aliased {
            let q_at = layout.drift_at();
            crate::gather::apply_by_blocks(k, &mut self.sum, w, inv_m, |off, sum| {
                crate::gather::sum_last_uploads(k, 1.0, sum, &uploads, off, q_at);
            });
            return Ok(());
        }
        self.qs
            .par_chunks_mut(AGG_BLOCK * n)
            .zip(self.sum.par_chunks_mut(AGG_BLOCK))
            .zip(w.par_chunks_mut(AGG_BLOCK))
            .enumerate()
            .for_each(|(b, ((qs, sum), w))| {
                let (off, width) = (b * AGG_BLOCK, sum.len());
                sum.fill(0.0);
                // PERF: every node's row of the block (its drift, or the v it sent, read in
                // place) goes into the sum eight at a time, the block held in registers; the
                // sum per coordinate is in node order as before (sum + x, exact as 1 * x + sum).
                let mut buf = [0.0f32; AGG_BLOCK];
                let mut rows = crate::gather::RowSum::new(k, 1.0, sum);
                for (m, q) in qs.chunks_exact_mut(width).enumerate() {
                    let Some(msg) = uploads.get(m) else {
                        rows.push(q);
                        continue;
                    };
                    let v: &[f32] = match decoded {
                        Some(dec) => &dec.get(m)[off..off + width],
                        None => match dense::view_at(msg, off, width) {
                            Some(v) => v,
                            None => {
                                // Not readable in place (big-endian, misaligned).
                                dense::decode_at(msg, off, &mut buf[..width]);
                                let v = &buf[..width];
                                update_drift(kind, k, q, v, rounds[m], msg, q_offset + off);
                                rows.add_now(v);
                                continue;
                            }
                        },
                    };
                    update_drift(kind, k, q, v, rounds[m], msg, q_offset + off);
                    rows.push(v);
                }
                rows.finish();
                k.axpy(inv_m, sum, w);
            });
        Ok(())
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.qs);
        v.u64s(&mut self.since_upload);
    }

    /// Dense uploads whose drift is sent (LENA-g, LENA-m) or is the last v (LENA-v): the drift
    /// of a silent node is the one in its last upload, read from there (a vector of d less
    /// per node, and no copy per upload).
    fn lossless(&mut self) {
        if self.compressor.is_none()
            && matches!(
                self.kind,
                DriftKind::LastUpload | DriftKind::LastGradient | DriftKind::Momentum { .. }
            )
        {
            self.aliased = true;
            self.qs = Vec::new();
        }
    }
}

/// The server's copy of an uploading node's drift, for one block at `q_offset` of the message:
/// rebuilt from the `v` it sent where the drift allows, else read from the upload.
fn update_drift(
    kind: DriftKind,
    k: Kernels,
    q: &mut [f32],
    v: &[f32],
    rounds: u64,
    msg: &Message,
    q_offset: usize,
) {
    if kind.rebuildable() {
        kind.rebuild(k, q, v, rounds);
    } else {
        dense::decode_at(msg, q_offset, q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
