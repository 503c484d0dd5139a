//! The server of the lazily aggregated methods, which reuses a silent node's last contribution,
//! and the upload-age bookkeeping their workers share.

use crate::gather::{AGG_BLOCK, Decoded, SparseSum, Terms};
use crate::{Broadcast, Result, Server, Uploads};
use lena_compress::{Compressor, dense, laq};
use lena_kernels::Kernels;
use lena_policy::trigger::TriggerCtx;
use rayon::prelude::*;
use std::sync::Arc;

/// What a stale-aggregation server stores per node and how a message updates it.
#[derive(Clone)]
pub(crate) enum Payload {
    /// The message is a dense gradient; the server applies `alpha g`.
    DenseGradient,
    /// LAQ: b-bit innovation against the stored quantized gradient; applies `alpha Q`.
    Laq { bits: u32 },
    /// SASG: an already scaled sparse update from a compressor; applies it as is.
    Update(Arc<dyn Compressor>),
    /// Compressed LAG: a compressed innovation added to the stored gradient; applies
    /// `alpha g_hat`.
    Innovation(Arc<dyn Compressor>),
}

/// Keeps each node's last contribution and applies `w -= (1/M) sum_m scale * last_m`
/// (LAG-WK, LAG-PS, LASG-WK2, LAQ, SASG).
///
/// INVARIANT: a dense gradient is applied as fl(alpha g) summed in node order, then scaled by
/// -1/M, as DGD's server does, so a zero threshold reproduces DGD bit for bit.
pub(crate) struct StaleServer {
    payload: Payload,
    alpha: f32,
    n_workers: usize,
    dim: usize,
    /// Dense gradients: each node's last gradient, block-major (for each block of
    /// `AGG_BLOCK` coordinates, every node's piece in turn, as LENA's drifts), replaced from
    /// the messages inside the block sums. Empty for the other payloads, and after
    /// `Server::lossless` (then read from each node's last upload).
    dense_last: Vec<f32>,
    /// Dense gradients read from the nodes' last uploads (after `Server::lossless`).
    aliased: bool,
    /// Other payloads: each node's last contribution (updated in parallel over the round's
    /// senders). No nodes for dense gradients, nor for SASG's updates with a sparse form.
    last: Decoded,
    /// SASG's updates from a compressor with a sparse form (top-k, rand-k): each node's last
    /// update as its (index, value) pairs, instead of a vector of d in `last`.
    sparse: Option<SparseSum>,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl StaleServer {
    pub(crate) fn new(
        payload: Payload,
        alpha: f32,
        n_workers: usize,
        dim: usize,
        k: Kernels,
    ) -> Self {
        let dense = matches!(payload, Payload::DenseGradient);
        let sparse = match &payload {
            Payload::Update(c) => SparseSum::stale(c.as_ref(), n_workers),
            _ => None,
        };
        let buffers = if dense || sparse.is_some() {
            0
        } else {
            n_workers
        };
        Self {
            payload,
            alpha,
            n_workers,
            dim,
            dense_last: if dense {
                vec![0.0; n_workers * dim]
            } else {
                Vec::new()
            },
            aliased: false,
            last: Decoded::new(buffers, dim),
            sparse,
            sum: vec![0.0; dim],
            kernels: k,
        }
    }

    /// Dense gradients in one pass per block: a sender's piece is replaced from its message
    /// and every node's piece is added as fl(alpha g), in node order.
    ///
    /// PERF: no separate decode pass (a copy of every upload) before the sums.
    fn apply_dense(&mut self, round: u64, w: &mut [f32], uploads: &Uploads<'_>) -> Result<()> {
        for (node, msg) in uploads.iter().enumerate() {
            if let Some(msg) = msg {
                dense::check(msg, self.dim).map_err(|source| crate::Error::Decode {
                    round,
                    node,
                    source,
                })?;
            }
        }
        let (k, n, a, inv_m) = (
            self.kernels,
            self.n_workers,
            self.alpha,
            -1.0 / self.n_workers as f32,
        );
        if let Some(rows) = self.dense_rows() {
            // fl(a g) rounded before the sum, in node order, as DGD's server does.
            rows.apply(k, &mut self.sum, w, inv_m, uploads);
            return Ok(());
        }
        self.dense_last
            .par_chunks_mut(AGG_BLOCK * n)
            .zip(self.sum.par_chunks_mut(AGG_BLOCK))
            .zip(w.par_chunks_mut(AGG_BLOCK))
            .enumerate()
            .for_each(|(b, ((last, sum), w))| {
                let (off, width) = (b * AGG_BLOCK, sum.len());
                sum.fill(0.0);
                // fl(a g) rounded before the sum, in node order, as DGD's server does.
                let mut rows = crate::gather::RowSum::new(k, a, sum);
                for (m, g) in last.chunks_exact_mut(width).enumerate() {
                    if let Some(msg) = uploads.get(m) {
                        dense::decode_at(msg, off, g);
                    }
                    rows.push(g);
                }
                rows.finish();
                k.axpy(inv_m, sum, w);
            });
        Ok(())
    }
}

impl Server for StaleServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        if matches!(self.payload, Payload::DenseGradient) {
            return self.apply_dense(round, w, &uploads);
        }
        let (payload, k) = (&self.payload, self.kernels);
        if let (Payload::Update(c), Some(sparse)) = (payload, &mut self.sparse) {
            // The floats of the dense path below: per coordinate, the nodes' last updates
            // summed from +0.0 in node order, a node without that coordinate adding nothing.
            let inv_m = -1.0 / self.n_workers as f32;
            return sparse.apply(k, round, &uploads, c.as_ref(), &mut self.sum, w, inv_m);
        }
        self.last
            .decode(round, &uploads, |msg, last, _| match payload {
                Payload::DenseGradient => unreachable!("dense gradients are applied above"),
                Payload::Laq { bits } => laq::decode_with(k, msg, *bits, last),
                Payload::Update(c) => c.decode(msg, last),
                Payload::Innovation(c) => crate::buffers::with_gradient_buffer(last.len(), |v| {
                    c.decode(msg, v)?;
                    k.axpy(1.0, v, last);
                    Ok(())
                }),
            })?;
        let terms = match self.payload {
            Payload::Update(_) => Terms::All,
            _ => Terms::AllScaled(self.alpha),
        };
        let (k, inv_m) = (self.kernels, -1.0 / self.n_workers as f32);
        self.last
            .sum_blocks(k, &uploads, terms, &mut self.sum, w, |sum, w| {
                k.axpy(inv_m, sum, w)
            });
        Ok(())
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.dense_last);
        self.last.visit(v);
        if let Some(sparse) = &mut self.sparse {
            sparse.visit(self.dim, v);
        }
    }

    /// After [`Server::lossless`], dense gradients: every node's last, as `fl(alpha g)`.
    fn dense_rows(&self) -> Option<crate::DenseRows> {
        self.aliased.then_some(crate::DenseRows {
            scale: self.alpha,
            silent_at: Some(0),
        })
    }

    /// Dense gradients: a node's last gradient is its last upload, read from there (a vector
    /// of d less per node, and no copy per upload).
    fn lossless(&mut self) {
        if matches!(self.payload, Payload::DenseGradient) {
            self.aliased = true;
            self.dense_last = Vec::new();
        }
    }
}

/// Upload-age bookkeeping every lazy worker shares.
pub(crate) struct Steps {
    pub(crate) since_upload: u64,
}

impl Steps {
    pub(crate) fn new() -> Self {
        Self { since_upload: 0 }
    }

    /// The context for this round; `innovation_sq` and `threshold_offset` are filled by the caller.
    pub(crate) fn ctx(&mut self, bc: &Broadcast<'_>, alpha: f32, m: usize) -> TriggerCtx {
        self.since_upload += 1;
        TriggerCtx {
            round: bc.round,
            since_upload: self.since_upload,
            param_step_sq: bc.step_sq,
            step_size: f64::from(alpha),
            n_workers: m,
            ..TriggerCtx::default()
        }
    }
}
