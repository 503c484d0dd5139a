//! LAG-PS: lazily aggregated gradients, the server-side rule (Chen et al. 2018).

use crate::params::{check_step, default_depth, lazy_rule};
use crate::stale::{Payload, StaleServer, Steps};
use crate::{Algorithm, Broadcast, GradientOracle, Message, Server, Upload, Worker};
use lena_compress::dense;
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// LAG-PS's own parameters (`name = "lag_ps"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagPsParams {
    /// History depth D (authors' code: 10).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Weight xi (authors' code: 1).
    #[serde(default = "one")]
    pub xi: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for LagPsParams {
    fn default() -> Self {
        Self {
            depth: default_depth(),
            xi: one(),
        }
    }
}

impl LagPsParams {
    /// LAG-PS with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, _dim: usize) -> crate::Result<LagPs> {
        check_step(step_size)?;
        lazy_rule(self.depth, self.xi, None)?;
        Ok(LagPs {
            step_size,
            depth: self.depth,
            xi: self.xi,
        })
    }
}

/// LAG-PS (Chen et al. 2018), the server-side rule: node m is asked for a gradient only when
/// `L_m^2 ||w_hat_m - w^t||^2 > (1 / (alpha^2 M^2)) sum_{d=1..D} xi ||dw_d||^2` (xi = 1 in the
/// authors' code), `w_hat_m` its last upload point and `L_m` its local smoothness constant.
/// The rule needs only quantities the node also has, so the node evaluates it and the outcome
/// is the server's decision; a skipped node computes no gradient at all. A node whose oracle
/// knows no smoothness constant uploads every round. One upload: the
/// gradient, dense f32.
///
/// A missing upload (faults): the server keeps the node's last gradient until the next upload
/// replaces it.
pub struct LagPs {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight xi.
    pub xi: f64,
}

impl Algorithm for LagPs {
    fn name(&self) -> String {
        "LAG-PS".into()
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(LagPsWorker {
                    alpha: self.step_size,
                    m: n_workers,
                    rule: LazyRule::new(self.depth, self.xi, Normalisation::Alpha2M2, None)
                        .expect("checked"),
                    steps: Steps::new(),
                    g: Vec::new(),
                    w_hat: vec![0.0; dim],
                    kernels: k,
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::DenseGradient,
            self.step_size,
            n_workers,
            dim,
            k,
        ))
    }
}

struct LagPsWorker {
    alpha: f32,
    m: usize,
    rule: LazyRule,
    steps: Steps,
    /// Used only where the message buffer cannot be written as f32 (big-endian, misaligned).
    g: Vec<f32>,
    w_hat: Vec<f32>,
    kernels: Kernels,
}

impl Worker for LagPsWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        _rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        let k = self.kernels;
        // Without a smoothness constant the rule cannot be evaluated safely: upload every round.
        let l = oracle.smoothness().unwrap_or(f64::INFINITY);
        let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
        ctx.innovation_sq = l * l * f64::from(k.dist2_sq(&self.w_hat, w));
        if self.rule.decide(&ctx) == Decision::Skip {
            return Upload::Skipped;
        }
        // PERF: the gradient is computed straight into the upload.
        dense::encode_with(msg, w.len(), &mut self.g, |g| oracle.gradient(w, g));
        self.w_hat.copy_from_slice(w);
        self.steps.since_upload = 0;
        Upload::Sent
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(&mut self.rule);
        v.f32s(&mut self.w_hat);
    }
}
