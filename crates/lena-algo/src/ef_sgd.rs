//! Error-feedback SGD with any compressor.

use crate::gather::{SenderSum, SparseSum};
use crate::params::{check_step, compressor, contractive};
use crate::{
    Algorithm, Broadcast, GradientOracle, Message, Result, Server, Upload, Uploads, Worker,
};
use lena_compress::{Compressor, CompressorParams, ErrorFeedback};
use lena_kernels::Kernels;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Error-feedback SGD's own parameters (`name = "ef_sgd"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfSgdParams {
    /// The compressor, a contraction (default: top-k keeping 1% of the coordinates, at least
    /// one).
    #[serde(default)]
    pub compressor: Option<CompressorParams>,
}

impl EfSgdParams {
    /// EF-SGD with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> Result<EfSgd> {
        check_step(step_size)?;
        let default = CompressorParams::top_k(dim.div_ceil(100).max(1));
        let c = compressor(self.compressor.as_ref().unwrap_or(&default), dim)?;
        Ok(EfSgd {
            step_size,
            compressor: contractive(c)?,
        })
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

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(EfWorker {
                    alpha: self.step_size,
                    c: self.compressor.clone(),
                    ef: ErrorFeedback::with_kernels(dim, k),
                    out: vec![0.0; dim],
                    kernels: k,
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(SumServer {
            n_workers,
            c: self.compressor.clone(),
            receive: match SparseSum::new(self.compressor.as_ref(), n_workers) {
                Some(sparse) => Receive::Sparse(sparse),
                None => Receive::Dense(SenderSum::new(n_workers, dim)),
            },
            sum: vec![0.0; dim],
            kernels: k,
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
        crate::buffers::with_buffers(w.len(), |[g, m, sent]| {
            oracle.gradient(w, g);
            self.kernels.scale(self.alpha, g);
            let out = if self.out.is_empty() {
                sent
            } else {
                &mut self.out[..]
            };
            self.ef
                .compress_scaled(self.c.as_ref(), 1.0, g, rng, m, out, msg);
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

/// How a [`SumServer`] takes in its uploads.
enum Receive {
    /// Each decoded to a whole vector, a group of nodes at a time.
    Dense(SenderSum),
    /// As (index, value) pairs, for a compressor with that form (top-k, rand-k).
    Sparse(SparseSum),
}

/// Server for algorithms whose uploads are already-scaled updates: `w -= (1/M) sum_m v_m`.
struct SumServer {
    n_workers: usize,
    c: Arc<dyn Compressor>,
    receive: Receive,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl Server for SumServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        let c = &self.c;
        let (k, inv_m) = (self.kernels, -1.0 / self.n_workers as f32);
        match &mut self.receive {
            Receive::Sparse(sparse) => {
                sparse.apply(k, round, &uploads, c.as_ref(), &mut self.sum, w, inv_m)
            }
            Receive::Dense(senders) => senders.apply(
                k,
                round,
                &uploads,
                |msg, out| c.decode(msg, out),
                &mut self.sum,
                w,
                None,
                |sum, w, _| k.axpy(inv_m, sum, w),
            ),
        }
    }

    fn visit(&mut self, _v: &mut dyn crate::state::Visitor) {}
}
