//! LAG-WK: lazily aggregated gradients, the worker-side rule (Chen et al. 2018).

use crate::params::{check_step, compressor, contractive, default_depth, lazy_rule};
use crate::{Algorithm, Broadcast, Gradient, GradientOracle, Message, Server, Upload, Worker};
use lena_compress::{Compressor, CompressorParams, dense};
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger, TriggerCtx};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// LAG-WK's own parameters (`name = "lag_wk"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagWkParams {
    /// History depth D (authors' code: 10).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Weight xi of each history term (default 1/D).
    #[serde(default)]
    pub xi: Option<f64>,
    /// Optional compressor of the upload, with error feedback (a combination no paper
    /// ran: LAG's trigger with, e.g., top-k uploads). Must be a contraction.
    #[serde(default)]
    pub compressor: Option<CompressorParams>,
}

impl Default for LagWkParams {
    fn default() -> Self {
        Self {
            depth: default_depth(),
            xi: None,
            compressor: None,
        }
    }
}

impl LagWkParams {
    /// LAG-WK with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> crate::Result<LagWk> {
        check_step(step_size)?;
        let xi = self.xi.unwrap_or(1.0 / self.depth.max(1) as f64);
        lazy_rule(self.depth, xi, None)?;
        let compressor = match &self.compressor {
            Some(cp) => Some(contractive(compressor(cp, dim)?)?),
            None => None,
        };
        Ok(LagWk {
            step_size,
            depth: self.depth,
            xi,
            compressor,
        })
    }
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
pub struct LagWk {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight of each history term.
    pub xi: f64,
    /// Optional compressor of the upload, with error feedback.
    pub compressor: Option<Arc<dyn Compressor>>,
}

impl Algorithm for LagWk {
    fn name(&self) -> String {
        match &self.compressor {
            None => "LAG-WK".into(),
            Some(c) => format!("LAG-WK-{}", c.name()),
        }
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
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
                    kernels: k,
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        let payload = match &self.compressor {
            None => crate::stale::Payload::DenseGradient,
            Some(c) => crate::stale::Payload::Innovation(c.clone()),
        };
        Box::new(crate::stale::StaleServer::new(
            payload,
            self.step_size,
            n_workers,
            dim,
            k,
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
        let ctx = |innovation_sq: f32| TriggerCtx {
            round,
            innovation_sq: f64::from(innovation_sq),
            param_step_sq: bc.step_sq,
            step_size: f64::from(self.alpha),
            n_workers: self.n_workers,
            ..TriggerCtx::default()
        };
        match &mut self.compressed {
            None if !self.keep_prev => {
                // A lossless run: g_hat is the node's last upload (zero before the first), read
                // from its message. PERF: the gradient is computed straight into this thread's
                // spare message, which an upload swaps with the node's: an upload is the
                // gradient's one write, with no copy into the message after the decision.
                // PERF: a linear model's minibatch gradient is written there by the pass that
                // sums its distance to g_hat (`linear_gradient_dist`), not read back by a second.
                let n = w.len();
                let mut next = crate::buffers::take_spare_message();
                let decision = crate::buffers::with_buffers(n, |[hat]| {
                    let g_hat: &[f32] = if msg.bits() == 0 {
                        hat.fill(0.0);
                        hat
                    } else if let Some(v) = dense::view_at(msg, 0, n) {
                        v
                    } else {
                        dense::decode_at(msg, 0, hat);
                        hat
                    };
                    let mut unaligned = Vec::new();
                    let innovation = dense::encode_with(&mut next, n, &mut unaligned, |g| {
                        let mut innovation = 0.0;
                        oracle.gradient_with(w, g, &mut |grad| {
                            innovation = match grad {
                                Gradient::Values(g) => k.dist2_sq(g, g_hat),
                                Gradient::Linear(lg, g) => {
                                    k.linear_gradient_dist(lg, g_hat, Some(g))
                                }
                            };
                        });
                        innovation
                    });
                    self.trigger.decide(&ctx(innovation))
                });
                let sent = match decision {
                    Decision::Upload => {
                        std::mem::swap(msg, &mut next);
                        Upload::Sent
                    }
                    Decision::Skip => Upload::Skipped,
                };
                crate::buffers::give_back_spare_message(next);
                sent
            }
            None => {
                // PERF: the gradient goes into `prev_sent`, free by now (a loss of the last
                // upload is reported before this step): an upload swaps it in as g_hat and
                // keeps the previous g_hat there in case this upload is lost; no copy.
                self.last_sent.resize(w.len(), 0.0);
                let g = &mut self.prev_sent;
                g.resize(w.len(), 0.0);
                oracle.gradient(w, g);
                match self.trigger.decide(&ctx(k.dist2_sq(g, &self.last_sent))) {
                    Decision::Upload => {
                        std::mem::swap(&mut self.last_sent, &mut self.prev_sent);
                        dense::encode(&self.last_sent, msg);
                        Upload::Sent
                    }
                    Decision::Skip => Upload::Skipped,
                }
            }
            Some(s) => crate::buffers::with_gradient_buffer(w.len(), |g| {
                oracle.gradient(w, g);
                match self.trigger.decide(&ctx(k.dist2_sq(g, &self.last_sent))) {
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
