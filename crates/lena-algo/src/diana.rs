//! DIANA with any unbiased compressor (Mishchenko et al. 2019).

use crate::gather::{LevelSum, SenderSum};
use crate::params::{check_step, compressor};
use crate::{
    Algorithm, Broadcast, Error, GradientOracle, Message, Missing, Result, Server, Upload, Uploads,
    Worker,
};
use lena_compress::{Compressor, CompressorParams, Shift};
use lena_kernels::Kernels;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// DIANA's own parameters (`name = "diana"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DianaParams {
    /// The compressor of the differences; must be unbiased (default QSGD, 4 levels, buckets
    /// of 512, L2 norm).
    #[serde(default = "default_compressor")]
    pub compressor: CompressorParams,
    /// Shift step a (default 1 / (1 + omega)).
    #[serde(default)]
    pub a: Option<f32>,
    /// What the server does without a node's upload (faults only): the node's `"last"` shift
    /// h_m stands in for it (default), or the mean is over the `"average"` arrivals.
    #[serde(default = "default_missing")]
    pub missing: Missing,
}

fn default_compressor() -> CompressorParams {
    CompressorParams::qsgd(4, 512, lena_compress::QsgdNorm::L2)
}

fn default_missing() -> Missing {
    Missing::Last
}

impl Default for DianaParams {
    fn default() -> Self {
        Self {
            compressor: default_compressor(),
            a: None,
            missing: default_missing(),
        }
    }
}

impl DianaParams {
    /// DIANA with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> Result<Diana> {
        check_step(step_size)?;
        let c = compressor(&self.compressor, dim)?;
        let Some(omega) = c.omega().filter(|_| c.unbiased()) else {
            return Err(Error::bad_param(
                "compressor",
                "an unbiased compressor (identity, qsgd, rand_k with scaled = true)",
                c.name(),
            ));
        };
        let a = self.a.unwrap_or((1.0 / (1.0 + omega)) as f32);
        if !(a >= 0.0 && f64::from(a) * (1.0 + omega) <= 1.0 + 1e-6) {
            return Err(Error::bad_param(
                "a",
                "in [0, 1 / (1 + omega)] (DIANA's condition a (1 + omega) <= 1)",
                format!("{a} with omega = {omega}"),
            ));
        }
        Ok(Diana {
            step_size,
            a,
            compressor: c,
            missing: self.missing,
        })
    }
}

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

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(DianaWorker {
                    a: self.a,
                    c: self.compressor.clone(),
                    h: vec![0.0; dim],
                    kernels: k,
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(DianaServer {
            alpha: self.step_size,
            a: self.a,
            n_workers,
            missing: self.missing,
            c: self.compressor.clone(),
            h: vec![0.0; dim],
            receive: match LevelSum::new(&*self.compressor, n_workers, dim) {
                Some(levels) => Receive::Levels(levels),
                None => Receive::Dense(SenderSum::new(n_workers, dim)),
            },
            mean: vec![0.0; dim],
            kernels: k,
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
        crate::buffers::with_buffers(w.len(), |[g, q]| {
            oracle.gradient(w, g);
            let shift = Shift {
                h: &mut self.h,
                a: self.a,
            };
            self.c.compress_shifted(self.kernels, g, shift, rng, q, msg);
        });
        Upload::Sent
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.h);
    }

    /// The server never added `a Q` to its shift: roll the node's shift back (exact up to
    /// rounding).
    fn on_lost(&mut self, msg: &Message) {
        crate::buffers::with_gradient_buffer(self.h.len(), |q| {
            if self.c.decode(msg, q).is_ok() {
                self.kernels.axpy(-self.a, q, &mut self.h);
            }
        });
    }
}

/// How DIANA's server receives its uploads.
enum Receive {
    /// As levels, for a compressor with a level form (QSGD).
    Levels(LevelSum),
    /// As decoded vectors.
    Dense(SenderSum),
}

struct DianaServer {
    alpha: f32,
    a: f32,
    n_workers: usize,
    missing: Missing,
    c: Arc<dyn Compressor>,
    h: Vec<f32>,
    /// The uploads' decode buffers (a group of nodes at a time).
    receive: Receive,
    mean: Vec<f32>,
    kernels: Kernels,
}

impl Server for DianaServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        let c = &self.c;
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
        let then = |mean: &mut [f32], w: &mut [f32], h: &mut [f32]| {
            k.scale(inv_m, mean);
            k.axpy(-alpha, h, w);
            k.axpy(-alpha * step_ratio, mean, w);
            k.axpy(a, mean, h);
        };
        let (mean, h) = (&mut self.mean, Some(&mut self.h[..]));
        match &mut self.receive {
            // Summed by the caller (level_rows): the same floats.
            Receive::Levels(_) if let Some(sum) = uploads.sum().filter(|s| s.len() == w.len()) => {
                mean.copy_from_slice(sum);
                crate::gather::then_by_blocks(mean, w, h, then);
                Ok(())
            }
            Receive::Levels(levels) => levels.apply(k, round, &uploads, &**c, mean, w, h, then),
            Receive::Dense(senders) => {
                let decode = |msg: &Message, out: &mut [f32]| c.decode(msg, out);
                senders.apply(k, round, &uploads, decode, mean, w, h, then)
            }
        }
    }

    fn level_rows(&self) -> Option<crate::LevelRows> {
        match self.receive {
            Receive::Levels(_) => crate::LevelRows::new(self.c.clone(), self.h.len()),
            Receive::Dense(_) => None,
        }
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.h);
    }
}
