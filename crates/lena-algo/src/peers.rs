//! LENA's peers: DIANA with a compressor, error-feedback SGD, and LAG-WK.

use crate::Missing;
use crate::gather::{Decoded, Terms};
use crate::{
    Algorithm, Broadcast, GradientOracle, Message, Result, Server, Upload, Uploads, Worker,
};
use lena_compress::{Compressor, ErrorFeedback, dense};
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger, TriggerCtx};
use rand::RngCore;
use std::sync::Arc;

/// DIANA (Mishchenko et al. 2019) with any unbiased compressor, QSGD by default.
///
/// Node m: `delta = g - h_m`; send `Q(delta)`; `h_m += a Q(delta)`.
/// Server: `g_hat = h + mean_m Q(delta_m)`; `h += a mean_m Q(delta_m)`; `w -= alpha g_hat`.
/// Convergence needs `a (1 + omega) <= 1`; the default is `a = 1 / (1 + omega)`.
/// One upload: the compressor's encoding of `delta` (for QSGD: a norm per bucket and a level
/// and sign per coordinate).
///
/// A missing upload (faults): see [`Missing`]; the node rolls its shift back when told.
pub struct Diana {
    /// Step size alpha.
    pub step_size: f32,
    /// Shift step a.
    pub a: f32,
    /// The compressor (shared by all nodes; stateless).
    pub compressor: Arc<dyn Compressor>,
    /// A missing upload (faults only): the node's last shift h_m stands in for its gradient
    /// (`Last`: its difference counts as 0 in the mean over M), or the mean of the differences
    /// is taken over the arrivals only (`Average`). Either way `h` moves by `a/M` times the
    /// arrivals' sum, as the nodes' shifts do (a node whose upload was lost rolls its shift back).
    pub missing: Missing,
}

impl Algorithm for Diana {
    fn name(&self) -> String {
        format!("DIANA-{}", self.compressor.name())
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(DianaWorker {
                    a: self.a,
                    c: self.compressor.clone(),
                    h: vec![0.0; dim],
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(DianaServer {
            alpha: self.step_size,
            a: self.a,
            n_workers,
            missing: self.missing,
            c: self.compressor.clone(),
            h: vec![0.0; dim],
            decoded: Decoded::new(n_workers, dim),
            mean: vec![0.0; dim],
            kernels: Kernels::detect(),
        })
    }
}

struct DianaWorker {
    a: f32,
    c: Arc<dyn Compressor>,
    /// The shift h_m (the round's gradient and compressed difference live in per-thread buffers).
    h: Vec<f32>,
    kernels: Kernels,
}

impl Worker for DianaWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        crate::with_buffers(w.len(), |[g, q]| {
            oracle.gradient(w, g);
            // delta = g - h, in place in g.
            self.kernels.axpy(-1.0, &self.h, g);
            self.c.compress(g, rng, q, msg);
            self.kernels.axpy(self.a, q, &mut self.h);
        });
        Upload::Sent
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.h);
    }

    /// The server never added `a Q` to its shift: roll the node's shift back (exact up to
    /// rounding).
    fn on_lost(&mut self, msg: &Message) {
        crate::with_gradient_buffer(self.h.len(), |q| {
            if self.c.decode(msg, q).is_ok() {
                self.kernels.axpy(-self.a, q, &mut self.h);
            }
        });
    }
}

struct DianaServer {
    alpha: f32,
    a: f32,
    n_workers: usize,
    missing: Missing,
    c: Arc<dyn Compressor>,
    h: Vec<f32>,
    /// Every node's decoded upload (decoded in parallel).
    decoded: Decoded,
    mean: Vec<f32>,
    kernels: Kernels,
}

impl Server for DianaServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        let c = &self.c;
        self.decoded
            .decode(round, &uploads, |msg, out, _| c.decode(msg, out))?;
        let (k, alpha, a, inv_m) = (
            self.kernels,
            self.alpha,
            self.a,
            1.0 / self.n_workers as f32,
        );
        let arrived = uploads.iter().flatten().count();
        // Average: the step uses sum / |A| instead of sum / M; h still moves by a sum / M.
        let step_ratio = match self.missing {
            Missing::Average if arrived > 0 => self.n_workers as f32 / arrived as f32,
            _ => 1.0,
        };
        // Per coordinate block: mean = sum / M; w -= alpha (h + mean); h += a mean.
        self.decoded.sum_blocks(
            k,
            &uploads,
            Terms::Senders,
            &mut self.mean,
            w,
            Some(&mut self.h),
            |mean, w, h| {
                k.scale(inv_m, mean);
                k.axpy(-alpha, h, w);
                k.axpy(-alpha * step_ratio, mean, w);
                k.axpy(a, mean, h);
            },
        );
        Ok(())
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.h);
    }
}

/// Error-feedback SGD (Stich et al. 2018; Karimireddy et al. 2019) with any compressor,
/// typically top-k or rand-k.
///
/// Node: `m <- m + alpha g`; send `C(m)`; `m <- m - C(m)`. Server: `w -= (1/M) sum_m C(m_m)`.
/// One upload: the compressor's encoding (top-k: k indices of ceil(log2 d) bits and k floats).
///
/// A missing upload (faults) counts as 0 in the mean over M; the node puts the undelivered
/// vector back into its memory.
pub struct EfSgd {
    /// Step size alpha.
    pub step_size: f32,
    /// The compressor.
    pub compressor: Arc<dyn Compressor>,
}

impl Algorithm for EfSgd {
    fn name(&self) -> String {
        format!("EF-SGD-{}", self.compressor.name())
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(EfWorker {
                    alpha: self.step_size,
                    c: self.compressor.clone(),
                    ef: ErrorFeedback::new(dim),
                    out: vec![0.0; dim],
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(SumServer {
            n_workers,
            c: self.compressor.clone(),
            decoded: Decoded::new(n_workers, dim),
            sum: vec![0.0; dim],
            kernels: Kernels::detect(),
        })
    }
}

struct EfWorker {
    alpha: f32,
    c: Arc<dyn Compressor>,
    ef: ErrorFeedback,
    /// The vector last sent, kept to take it back if lost (empty in a lossless run).
    out: Vec<f32>,
    kernels: Kernels,
}

impl EfWorker {
    /// The error-feedback memory.
    #[allow(dead_code)]
    fn memory(&self) -> &[f32] {
        self.ef.memory()
    }
}

impl Worker for EfWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        // PERF: the gradient (and, in a lossless run, the vector sent) live for the round
        // only, in per-thread buffers.
        crate::with_buffers(w.len(), |[g, m, sent]| {
            oracle.gradient(w, g);
            self.kernels.scale(self.alpha, g);
            let out = if self.out.is_empty() {
                sent
            } else {
                &mut self.out[..]
            };
            self.ef.compress_with(self.c.as_ref(), g, rng, m, out, msg);
        });
        Upload::Sent
    }

    /// The compressed vector never arrived: it goes back into the memory.
    fn on_lost(&mut self, _msg: &Message) {
        assert!(!self.out.is_empty(), "on_lost in a run declared lossless");
        self.ef.restore(&self.out);
    }

    fn lossless(&mut self) {
        self.out = Vec::new();
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(self.ef.memory_mut());
        v.f32s(&mut self.out);
    }
}

/// Server for algorithms whose uploads are already-scaled updates: `w -= (1/M) sum_m v_m`.
struct SumServer {
    n_workers: usize,
    c: Arc<dyn Compressor>,
    decoded: Decoded,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl Server for SumServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        let c = &self.c;
        self.decoded
            .decode(round, &uploads, |msg, out, _| c.decode(msg, out))?;
        let (k, inv_m) = (self.kernels, -1.0 / self.n_workers as f32);
        self.decoded.sum_blocks(
            k,
            &uploads,
            Terms::Senders,
            &mut self.sum,
            w,
            None,
            |sum, w, _| k.axpy(inv_m, sum, w),
        );
        Ok(())
    }

    fn visit(&mut self, _v: &mut dyn crate::state::Visitor) {}
}

/// LAG-WK (Chen et al., NeurIPS 2018): a node uploads its fresh gradient only when it changed
/// enough since the last one it sent (the [`LazyRule`] with `alpha^2 M^2` normalisation and no
/// staleness limit); the server aggregates the last
/// gradient received from every node: `w -= (alpha / M) sum_m g_hat_m`.
///
/// Defaults from the authors' code: D = 10, xi_d = 1/D. One upload: the gradient as dense f32.
///
/// With a `compressor` (a combination no paper ran), node and server both keep `g_hat_m`, the
/// server's copy of the node's gradient. The trigger compares the fresh gradient with it (for
/// the identity this is LAG's rule), and an upload sends the compressed innovation
/// `v = C(g - g_hat)`, after which both sides set `g_hat += v`. What compression leaves out
/// stays in `g - g_hat` and goes out with later uploads, so no separate error memory is
/// needed (LAQ's construction with any compressor). Reusing a stale compressed vector
/// instead (SASG's choice) ends far from DGD's point on non-IID nodes: measured in this
/// crate's tests before this choice. One upload: the compressor's encoding.
///
/// A missing upload (faults): the server keeps the node's last gradient; the node, told,
/// restores its copy of it.
pub struct Lag {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight of each history term.
    pub xi: f64,
    /// Optional compressor of the upload, with error feedback.
    pub compressor: Option<Arc<dyn Compressor>>,
}

impl Algorithm for Lag {
    fn name(&self) -> String {
        match &self.compressor {
            None => "LAG-WK".into(),
            Some(c) => format!("LAG-WK-{}", c.name()),
        }
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(LagWorker {
                    alpha: self.step_size,
                    n_workers,
                    trigger: LazyRule::new(self.depth, self.xi, Normalisation::Alpha2M2, None)
                        .expect("checked"),
                    // Dense uploads: allocated at the first step unless the run is lossless.
                    last_sent: if self.compressor.is_some() {
                        vec![0.0; dim]
                    } else {
                        Vec::new()
                    },
                    dim,
                    // Allocated at the first step unless the run is lossless (a vector that was
                    // allocated and freed would stay resident).
                    prev_sent: Vec::new(),
                    keep_prev: self.compressor.is_none(),
                    compressed: self.compressor.as_ref().map(|c| LagCompressed {
                        c: c.clone(),
                        delta: vec![0.0; dim],
                        v: vec![0.0; dim],
                    }),
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        let payload = match &self.compressor {
            None => crate::lazy::Payload::DenseGradient,
            Some(c) => crate::lazy::Payload::Innovation(c.clone()),
        };
        Box::new(crate::lazy::StaleServer::new(
            payload,
            self.step_size,
            n_workers,
            dim,
        ))
    }
}

/// A compressed LAG node's buffers.
struct LagCompressed {
    c: Arc<dyn Compressor>,
    /// The innovation `g - g_hat`.
    delta: Vec<f32>,
    /// Its compression `v`.
    v: Vec<f32>,
}

struct LagWorker {
    alpha: f32,
    n_workers: usize,
    trigger: LazyRule,
    /// `g_hat`: the server's copy of this node's gradient.
    last_sent: Vec<f32>,
    dim: usize,
    /// Dense uploads: the previous g_hat after an upload, restored if the upload is lost;
    /// during a step, the fresh gradient (empty in a lossless run).
    prev_sent: Vec<f32>,
    /// Whether `prev_sent` is kept (dense uploads, until `Worker::lossless`).
    keep_prev: bool,
    compressed: Option<LagCompressed>,
    kernels: Kernels,
}

impl Worker for LagWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let (round, w) = (bc.round, bc.w);
        let k = self.kernels;
        let ctx = |g: &[f32], last_sent: &[f32]| TriggerCtx {
            round,
            innovation_sq: f64::from(k.dist2_sq(g, last_sent)),
            param_step_sq: bc.step_sq,
            step_size: f64::from(self.alpha),
            n_workers: self.n_workers,
            ..TriggerCtx::default()
        };
        match &mut self.compressed {
            None if !self.keep_prev => {
                // A lossless run: the gradient lives in the thread's buffer and g_hat is the
                // node's last upload (zero before the first), read from its message.
                crate::with_buffers(w.len(), |[g, hat]| {
                    oracle.gradient(w, g);
                    let g_hat: &[f32] = if msg.bits() == 0 {
                        hat.fill(0.0);
                        hat
                    } else if let Some(v) = dense::view_at(msg, 0, w.len()) {
                        v
                    } else {
                        dense::decode_at(msg, 0, hat);
                        hat
                    };
                    match self.trigger.decide(&ctx(g, g_hat)) {
                        Decision::Upload => {
                            dense::encode(g, msg);
                            Upload::Sent
                        }
                        Decision::Skip => Upload::Skipped,
                    }
                })
            }
            None => {
                // PERF: the gradient goes into `prev_sent`, free by now (a loss of the last
                // upload is reported before this step): an upload swaps it in as g_hat and
                // keeps the previous g_hat there in case this upload is lost; no copy.
                self.last_sent.resize(w.len(), 0.0);
                let g = &mut self.prev_sent;
                g.resize(w.len(), 0.0);
                oracle.gradient(w, g);
                match self.trigger.decide(&ctx(g, &self.last_sent)) {
                    Decision::Upload => {
                        std::mem::swap(&mut self.last_sent, &mut self.prev_sent);
                        dense::encode(&self.last_sent, msg);
                        Upload::Sent
                    }
                    Decision::Skip => Upload::Skipped,
                }
            }
            Some(s) => crate::with_gradient_buffer(w.len(), |g| {
                oracle.gradient(w, g);
                match self.trigger.decide(&ctx(g, &self.last_sent)) {
                    Decision::Upload => {
                        // v = C(g - g_hat); g_hat += v (the server does the same).
                        k.lin_comb(&mut s.delta, 1.0, g, &[-1.0], &[&self.last_sent]);
                        s.c.compress(&s.delta, rng, &mut s.v, msg);
                        k.axpy(1.0, &s.v, &mut self.last_sent);
                        Upload::Sent
                    }
                    Decision::Skip => Upload::Skipped,
                }
            }),
        }
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.trigger(&mut self.trigger);
        if self.keep_prev || self.compressed.is_some() {
            // The same length whether saved before or after the first step.
            self.last_sent.resize(self.dim, 0.0);
        }
        v.f32s(&mut self.last_sent);
        if self.keep_prev {
            // The same length whether saved before or after the first step.
            self.prev_sent.resize(self.dim, 0.0);
        }
        v.f32s(&mut self.prev_sent);
        if let Some(c) = &mut self.compressed {
            v.f32s(&mut c.v);
        }
    }

    /// The server kept its old g_hat: so does the node.
    fn on_lost(&mut self, _msg: &Message) {
        match &mut self.compressed {
            None => {
                assert!(self.keep_prev, "on_lost in a run declared lossless");
                std::mem::swap(&mut self.last_sent, &mut self.prev_sent)
            }
            Some(s) => self.kernels.axpy(-1.0, &s.v, &mut self.last_sent),
        }
    }

    /// Dense uploads: g_hat is then read from the node's last upload (see `step`), so
    /// neither g_hat nor the copy before an upload is kept.
    fn lossless(&mut self) {
        self.keep_prev = false;
        if self.compressed.is_none() {
            self.last_sent = Vec::new();
        }
    }
}
