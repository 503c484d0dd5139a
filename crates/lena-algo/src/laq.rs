//! LAQ: lazily aggregated quantized gradients (Sun et al. 2019).

use crate::params::{check_step, default_depth, lazy_rule};
use crate::stale::{Payload, StaleServer, Steps};
use crate::{Algorithm, Broadcast, GradientOracle, Message, Server, Upload, Worker};
use lena_compress::laq;
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// LAQ's own parameters (`name = "laq"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaqParams {
    /// Bits per coordinate b (1..=24).
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// History depth D.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Weight xi (default 0.8 / D).
    #[serde(default)]
    pub xi: Option<f64>,
    /// Clock C.
    #[serde(default = "default_clock")]
    pub clock: u64,
}

fn default_bits() -> u32 {
    4
}
fn default_clock() -> u64 {
    100
}

impl Default for LaqParams {
    fn default() -> Self {
        Self {
            bits: default_bits(),
            depth: default_depth(),
            xi: None,
            clock: default_clock(),
        }
    }
}

impl LaqParams {
    /// LAQ with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, _dim: usize) -> crate::Result<Laq> {
        check_step(step_size)?;
        if !(1..=24).contains(&self.bits) {
            return Err(crate::Error::bad_param("bits", "in 1..=24", self.bits));
        }
        let xi = self.xi.unwrap_or(0.8 / self.depth.max(1) as f64);
        lazy_rule(self.depth, xi, Some(self.clock))?;
        Ok(Laq {
            step_size,
            bits: self.bits,
            depth: self.depth,
            xi,
            clock: self.clock,
        })
    }
}

/// LAQ (Sun et al., NeurIPS 2019): lazily aggregated quantized gradients.
///
/// Node: `R = ||g - Qhat||_inf`, `delta = R / (2^b - 1)`,
/// `Q = Qhat - R + 2 delta floor((g - Qhat + R + delta) / (2 delta))`; upload iff
/// `||Q - Qhat||^2 > (1 / (alpha^2 M^2)) sum_d xi ||dw_d||^2 + 3 (||eps||^2 + ||eps_hat||^2)`
/// (eps = g - Q now, eps_hat at the last upload) or the clock reaches C. Defaults from the
/// authors' code: b = 4, D = 10, xi = 0.8 / D, C = 100. One upload: R as f32 and b bits per
/// coordinate (32 + b d bits). Server: `w -= (alpha / M) sum_m Qhat_m`.
///
/// A missing upload (faults): the server keeps its quantized gradient; the node, told, restores
/// its Qhat.
pub struct Laq {
    /// Step size alpha.
    pub step_size: f32,
    /// Bits per coordinate b.
    pub bits: u32,
    /// History depth D.
    pub depth: usize,
    /// Weight xi of each history term.
    pub xi: f64,
    /// Clock C: forced upload after this many rounds.
    pub clock: u64,
}

impl Algorithm for Laq {
    fn name(&self) -> String {
        format!("LAQ-{}", self.bits)
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(LaqWorker {
                    alpha: self.step_size,
                    bits: self.bits,
                    m: n_workers,
                    rule: LazyRule::new(
                        self.depth,
                        self.xi,
                        Normalisation::Alpha2M2,
                        Some(self.clock),
                    )
                    .expect("checked"),
                    steps: Steps::new(),
                    qhat: vec![0.0; dim],
                    // Allocated at the first upload unless the run is lossless.
                    qhat_prev: Vec::new(),
                    keep_prev: true,
                    eps_hat_sq: 0.0,
                    eps_hat_prev: 0.0,
                    kernels: k,
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::Laq { bits: self.bits },
            self.step_size,
            n_workers,
            dim,
            k,
        ))
    }
}

struct LaqWorker {
    alpha: f32,
    bits: u32,
    m: usize,
    rule: LazyRule,
    steps: Steps,
    qhat: Vec<f32>,
    /// Qhat before the last upload, to undo it if lost (empty in a lossless run).
    qhat_prev: Vec<f32>,
    /// Whether `qhat_prev` is kept (false after `Worker::lossless`).
    keep_prev: bool,
    eps_hat_sq: f64,
    eps_hat_prev: f64,
    kernels: Kernels,
}

impl Worker for LaqWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        _rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        let k = self.kernels;
        // PERF: the gradient, its quantization and the levels live for the round only, in
        // per-thread buffers (three vectors of d less per node).
        crate::buffers::with_buffers(w.len(), |[g, q]| {
            crate::buffers::with_levels_buffer(w.len(), |levels| {
                oracle.gradient(w, g);
                let r = laq::quantize_with(k, g, &self.qhat, self.bits, levels, q);
                let eps_sq = f64::from(k.dist2_sq(g, q));
                let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
                ctx.innovation_sq = f64::from(k.dist2_sq(q, &self.qhat));
                ctx.threshold_offset = 3.0 * (eps_sq + self.eps_hat_sq);
                if self.rule.decide(&ctx) == Decision::Skip {
                    return Upload::Skipped;
                }
                laq::encode(r, levels, self.bits, msg);
                if self.keep_prev {
                    // The previous Qhat is kept in case this upload is lost.
                    self.qhat_prev.resize(self.qhat.len(), 0.0);
                    std::mem::swap(&mut self.qhat, &mut self.qhat_prev);
                }
                self.qhat.copy_from_slice(q);
                self.eps_hat_prev = std::mem::replace(&mut self.eps_hat_sq, eps_sq);
                self.steps.since_upload = 0;
                Upload::Sent
            })
        })
    }

    /// The server's Qhat did not move: neither does the node's.
    fn on_lost(&mut self, _msg: &Message) {
        assert!(self.keep_prev, "on_lost in a run declared lossless");
        std::mem::swap(&mut self.qhat, &mut self.qhat_prev);
        self.eps_hat_sq = self.eps_hat_prev;
    }

    fn lossless(&mut self) {
        self.keep_prev = false;
        self.qhat_prev = Vec::new();
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(&mut self.rule);
        v.f32s(&mut self.qhat);
        if self.keep_prev {
            // The same length whether saved before or after the first upload.
            self.qhat_prev.resize(self.qhat.len(), 0.0);
        }
        v.f32s(&mut self.qhat_prev);
        v.f64(&mut self.eps_hat_sq);
        v.f64(&mut self.eps_hat_prev);
    }
}
