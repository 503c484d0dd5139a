//! LASG-WK2: stochastic LAG, two gradients on one minibatch (Chen, Sun, Yin 2020).

use crate::params::{check_step, default_depth, lazy_rule};
use crate::stale::{Payload, StaleServer, Steps};
use crate::{Algorithm, Broadcast, Gradient, GradientOracle, Message, Server, Upload, Worker};
use lena_compress::{Compressor, ErrorFeedback};
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// LASG-WK2's own parameters (`name = "lasg_wk2"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LasgWk2Params {
    /// History depth D.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Weight c of the history sum (default 1/D).
    #[serde(default)]
    pub c: Option<f64>,
    /// Forced upload after this many rounds.
    #[serde(default = "default_staleness")]
    pub max_staleness: u64,
}

fn default_staleness() -> u64 {
    50
}

impl Default for LasgWk2Params {
    fn default() -> Self {
        Self {
            depth: default_depth(),
            c: None,
            max_staleness: default_staleness(),
        }
    }
}

impl LasgWk2Params {
    /// LASG-WK2 with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, _dim: usize) -> crate::Result<LasgWk2> {
        check_step(step_size)?;
        let c = self.c.unwrap_or(1.0 / self.depth.max(1) as f64);
        lazy_rule(self.depth, c, Some(self.max_staleness))?;
        Ok(LasgWk2 {
            step_size,
            depth: self.depth,
            c,
            max_staleness: self.max_staleness,
        })
    }
}

/// LASG-WK2 (Chen, Sun, Yin 2020), stochastic LAG: each node evaluates its gradient at `w^t`
/// and at its last upload point on the same fresh minibatch, and skips iff the squared
/// difference is at most `c / (alpha^2 M^2) sum_{d<=D} ||dw_d||^2`; an upload is forced once
/// `max_staleness` rounds passed. Server: `w -= (alpha / M) sum_m g_hat_m` over the last
/// gradients received. One upload: the fresh gradient, dense f32. Two gradients per round.
///
/// A missing upload (faults): the server keeps the node's last gradient until the next upload
/// replaces it.
pub struct LasgWk2 {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight c of the history sum.
    pub c: f64,
    /// Forced upload after this many rounds (authors' default 50).
    pub max_staleness: u64,
}

impl Algorithm for LasgWk2 {
    fn name(&self) -> String {
        "LASG-WK2".into()
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                let rule = LazyRule::new(
                    self.depth,
                    self.c,
                    Normalisation::Alpha2M2,
                    Some(self.max_staleness),
                )
                .expect("checked");
                Box::new(TwoPointWorker {
                    alpha: self.step_size,
                    m: n_workers,
                    rule: Box::new(rule),
                    steps: Steps::new(),
                    w_hat: vec![0.0; dim],
                    sparse: None,
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

/// SASG's sparse upload state: error feedback around top-k, and the last vector sent.
pub(crate) struct Sparse {
    pub(crate) c: Arc<dyn Compressor>,
    pub(crate) ef: ErrorFeedback,
    /// The last vector sent, kept to take it back if lost (empty in a lossless run).
    pub(crate) v_prev: Vec<f32>,
}

/// A node that compares gradients at two points on one minibatch (LASG-WK2, SASG).
pub struct TwoPointWorker {
    pub(crate) alpha: f32,
    pub(crate) m: usize,
    pub(crate) rule: Box<dyn Trigger>,
    pub(crate) steps: Steps,
    pub(crate) w_hat: Vec<f32>,
    pub(crate) sparse: Option<Sparse>,
    pub(crate) kernels: Kernels,
}

impl Worker for TwoPointWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let (round, w) = (bc.round, bc.w);
        let k = self.kernels;
        // PERF: both gradients, SASG's m and (in a lossless run) the vector it sends live for
        // the round only, in per-thread buffers. LASG's gradient is computed straight into
        // this thread's spare message, which an upload swaps with the node's: an upload is the
        // gradient's one write, with no copy into the message after the decision.
        let mut next = self
            .sparse
            .is_none()
            .then(crate::buffers::take_spare_message);
        let sent = crate::buffers::with_buffers(w.len(), |[g_buf, g_old, m, sent]| {
            let g: &[f32] = match next.as_mut() {
                Some(next) => crate::buffers::gradient_into_message(oracle, w, next, g_buf),
                None => {
                    oracle.gradient(w, g_buf);
                    g_buf
                }
            };
            let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
            if round > 0 {
                // PERF: a linear model's gradient at w_hat is formed where its distance to g is
                // summed, never written (the floats of writing it and `dist2_sq`): LASG-WK2's
                // round at M = 200 0.691-0.732 ms against 0.707-0.933 in seven alternated pairs
                // of processes (AMD EPYC Zen 4; 46th session, docs/PERFORMANCE.md).
                let mut innovation = 0.0;
                oracle.gradient_same_batch_with(&self.w_hat, g_old, &mut |old| {
                    innovation = match old {
                        Gradient::Values(old) => k.dist2_sq(g, old),
                        Gradient::Linear(lg, _) => k.linear_gradient_dist(lg, g, None),
                    };
                });
                ctx.innovation_sq = f64::from(innovation);
            }
            let up = self.rule.decide(&ctx) == Decision::Upload;
            match (&mut self.sparse, up) {
                // The spare message holding g is swapped in below.
                (None, _) => {}
                (Some(s), true) => {
                    // m = e + alpha g; v = C(m); e = m - v.
                    let v = if s.v_prev.is_empty() {
                        sent
                    } else {
                        &mut s.v_prev[..]
                    };
                    s.ef.compress_scaled(s.c.as_ref(), self.alpha, g, rng, m, v, msg);
                }
                // Silent: the server reuses v_prev in place of this round's gradient (the LAG
                // approximation); the memory is untouched. Charging the reuse to the memory
                // instead re-applies an error-feedback sum up to max_staleness times and
                // diverges (measured in the crate's tests before this choice).
                (Some(_), false) => {}
            }
            if up {
                self.w_hat.copy_from_slice(w);
                self.steps.since_upload = 0;
                Upload::Sent
            } else {
                Upload::Skipped
            }
        });
        if let Some(mut next) = next {
            if sent == Upload::Sent {
                std::mem::swap(msg, &mut next);
            }
            crate::buffers::give_back_spare_message(next);
        }
        sent
    }

    /// SASG: the sparse vector never arrived, so it goes back into the memory. (The server
    /// keeps reusing its older vector; LASG's dense uploads carry no state to restore, and the
    /// next upload replaces the server's copy either way.)
    fn on_lost(&mut self, _msg: &Message) {
        if let Some(s) = &mut self.sparse {
            assert!(!s.v_prev.is_empty(), "on_lost in a run declared lossless");
            s.ef.restore(&s.v_prev);
        }
    }

    /// SASG keeps the vector it sent only to take it back if lost.
    fn lossless(&mut self) {
        if let Some(s) = &mut self.sparse {
            s.v_prev = Vec::new();
        }
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(self.rule.as_mut());
        v.f32s(&mut self.w_hat);
        if let Some(s) = &mut self.sparse {
            v.f32s(s.ef.memory_mut());
            v.f32s(&mut s.v_prev);
        }
    }
}

impl TwoPointWorker {
    /// The error-feedback memory (SASG), or `None` (LASG sends whole gradients).
    pub fn memory(&self) -> Option<&[f32]> {
        self.sparse.as_ref().map(|s| s.ef.memory())
    }

    /// The update the server applies for this node (SASG: the last sparse vector).
    pub fn applied(&self) -> Option<&[f32]> {
        self.sparse.as_ref().map(|s| s.v_prev.as_slice())
    }
}
