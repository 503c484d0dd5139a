//! Distributed gradient descent (DGD) and minibatch SGD.

use crate::params::check_step;
use crate::{
    Algorithm, Broadcast, DenseRows, Error, GradientOracle, Message, Missing, Result, Server,
    Upload, Uploads, Worker,
};
use lena_compress::dense;
use lena_kernels::Kernels;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// DGD's own parameters (`name = "dgd"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgdParams {
    /// What the server does without a node's upload (faults only): `"average"` over the
    /// arrivals (default) or the `"last"` gradient it received from that node.
    #[serde(default)]
    pub missing: Missing,
}

impl DgdParams {
    /// DGD with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, _dim: usize) -> Result<Dgd> {
        check_step(step_size)?;
        Ok(Dgd {
            step_size,
            missing: self.missing,
        })
    }
}

/// DGD / minibatch SGD: `w^{t+1} = w^t - alpha (1/M) sum_m g_m^t`.
///
/// Every node uploads its full gradient `g_m^t` (dense f32, 32 d bits) every round; with a
/// minibatch oracle this is minibatch SGD. It is the baseline every other algorithm is measured
/// against (ALGORITHMS.md, "Baselines").
#[derive(Clone, Copy, Debug)]
pub struct Dgd {
    /// Step size alpha.
    pub step_size: f32,
    /// A missing upload (faults only): average over the arrivals, or reuse the node's last
    /// gradient (a LAG-style server with every node's last gradient stored).
    pub missing: Missing,
}

impl Algorithm for Dgd {
    fn name(&self) -> String {
        "DGD".into()
    }

    fn workers(&self, n_workers: usize, _dim: usize, _k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| Box::new(DgdWorker { g: Vec::new() }) as Box<dyn Worker>)
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        if self.missing == Missing::Last {
            // With every upload delivered this is DGD's server, float for float.
            return Box::new(crate::stale::StaleServer::new(
                crate::stale::Payload::DenseGradient,
                self.step_size,
                n_workers,
                dim,
                k,
            ));
        }
        Box::new(DgdServer {
            step_size: self.step_size,
            n_workers,
            sum: vec![0.0; dim],
            kernels: k,
        })
    }
}

struct DgdWorker {
    /// Used only where the message buffer cannot be written as f32 (big-endian, misaligned).
    g: Vec<f32>,
}

impl Worker for DgdWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        _rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        // The gradient is computed straight into the upload's buffer.
        dense::encode_with(msg, w.len(), &mut self.g, |g| oracle.gradient(w, g));
        Upload::Sent
    }

    fn visit(&mut self, _v: &mut dyn crate::state::Visitor) {}
}

struct DgdServer {
    step_size: f32,
    n_workers: usize,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl Server for DgdServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        for (node, msg) in uploads.iter().enumerate() {
            if let Some(msg) = msg {
                dense::check(msg, w.len()).map_err(|source| Error::Decode {
                    round,
                    node,
                    source,
                })?;
            }
        }
        // sum_m fl(alpha g_m) in node order, then w += (-1/|A|) sum over the arrivals A (all M
        // nodes unless uploads were lost). Coordinate blocks run in parallel; each block sums
        // the nodes in node order, so the result does not depend on the thread count.
        // INVARIANT: the same float operations as LENA's server when e = 0, so LENA with
        // beta = 0 reproduces DGD bit for bit.
        let arrived = uploads.iter().flatten().count();
        if arrived == 0 {
            return Ok(());
        }
        let (k, inv_m) = (self.kernels, -1.0 / arrived as f32);
        // sum += fl(alpha g): the product is rounded before the sum. PERF: the blocks are read
        // in place, eight nodes at a time past the block held in registers.
        self.rows().apply(k, &mut self.sum, w, inv_m, &uploads);
        Ok(())
    }

    /// The gradients delivered this round, each as `fl(alpha g)`.
    fn dense_rows(&self) -> Option<DenseRows> {
        Some(self.rows())
    }

    fn visit(&mut self, _v: &mut dyn crate::state::Visitor) {}
}

impl DgdServer {
    fn rows(&self) -> DenseRows {
        DenseRows {
            scale: self.step_size,
            silent_at: None,
        }
    }
}
