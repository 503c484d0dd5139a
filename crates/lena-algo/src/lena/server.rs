//! LENA's server: every node's drift, applied in its silent rounds.

use super::{Layout, Lena};
use crate::gather::{AGG_BLOCK, RowSum, SenderSum};
use crate::{Error, Message, Result, Server, Uploads};
use lena_compress::{Compressor, dense};
use lena_kernels::Kernels;
use lena_policy::drift::DriftKind;
use rayon::prelude::*;
use std::sync::Arc;

/// LENA's server: keeps each node's drift and applies it in the node's silent rounds.
///
/// The drifts are stored block-major (for each block of 1024 coordinates, every
/// node's piece in turn), so that coordinate blocks are aggregated in parallel: each block
/// applies the nodes in node order, with the same element-wise float operations as the node,
/// whatever the thread count. Compressed uploads are decoded in parallel over nodes, a group
/// of nodes at a time (`gather::SenderSum`), each group applied while its buffers are in cache.
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
    /// The decode buffers of a group of nodes' compressed v (none without a compressor).
    senders: Option<SenderSum>,
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
            senders: self
                .compressor
                .as_ref()
                .map(|_| SenderSum::new(n_workers, dim)),
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
}

impl Server for LenaServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        let (k, kind, d, n) = (self.kernels, self.kind, self.dim, self.n_workers);
        let compressed = self.compressor.is_some();
        let layout = Layout::new(d, kind, compressed);
        if !compressed {
            for (m, msg) in uploads.iter().enumerate() {
                if let Some(msg) = msg {
                    layout.check_dense(msg).map_err(|source| Error::Decode {
                        round,
                        node: m,
                        source,
                    })?;
                }
            }
        }
        for (m, msg) in uploads.iter().enumerate() {
            self.since_upload[m] += 1;
            self.rounds[m] = self.since_upload[m];
            if msg.is_some() {
                self.since_upload[m] = 0;
            }
        }
        let rounds = &self.rounds;
        let q_offset = layout.q_at();
        let inv_m = -1.0 / n as f32;
        if let Some(rows) = self.dense_rows() {
            rows.apply(k, &mut self.sum, w, inv_m, &uploads);
            return Ok(());
        }
        // PERF: every node's row of a block (its drift, or the v it sent) goes into the sum
        // eight at a time, the block held in registers; the sum per coordinate is in node order
        // (sum + x, exact as 1 * x + sum), so the floats do not depend on threads or groups.
        let (qs, sum) = (&mut self.qs, &mut self.sum);
        if let (Some(c), Some(senders)) = (&self.compressor, &mut self.senders) {
            // A decode error ends the round with the drifts of earlier groups' senders already
            // updated: a failed step is not resumed from, but from the last checkpoint.
            sum.fill(0.0);
            senders.for_each_group(
                round,
                &uploads,
                |msg, v, sub| layout.decode(c.as_ref(), msg, v, sub),
                |g0, bufs| {
                    qs.par_chunks_mut(AGG_BLOCK * n)
                        .zip(sum.par_chunks_mut(AGG_BLOCK))
                        .enumerate()
                        .for_each(|(b, (qs, sum))| {
                            let (off, width) = (b * AGG_BLOCK, sum.len());
                            let mut rows = RowSum::new(k, 1.0, sum);
                            let nodes = qs.chunks_exact_mut(width).enumerate().skip(g0);
                            for ((m, q), buf) in nodes.zip(bufs) {
                                if let Some(msg) = uploads.get(m) {
                                    let v = &buf[off..off + width];
                                    update_drift(kind, k, q, v, rounds[m], msg, q_offset + off);
                                    rows.push(v);
                                } else {
                                    rows.push(q);
                                }
                            }
                            rows.finish();
                        });
                },
            )?;
            sum.par_chunks(AGG_BLOCK)
                .zip(w.par_chunks_mut(AGG_BLOCK))
                .for_each(|(sum, w)| k.axpy(inv_m, sum, w));
            return Ok(());
        }
        qs.par_chunks_mut(AGG_BLOCK * n)
            .zip(sum.par_chunks_mut(AGG_BLOCK))
            .zip(w.par_chunks_mut(AGG_BLOCK))
            .enumerate()
            .for_each(|(b, ((qs, sum), w))| {
                let (off, width) = (b * AGG_BLOCK, sum.len());
                sum.fill(0.0);
                let mut buf = [0.0f32; AGG_BLOCK];
                let mut rows = RowSum::new(k, 1.0, sum);
                for (m, q) in qs.chunks_exact_mut(width).enumerate() {
                    let Some(msg) = uploads.get(m) else {
                        rows.push(q);
                        continue;
                    };
                    if let Some(v) = dense::view_at(msg, off, width) {
                        update_drift(kind, k, q, v, rounds[m], msg, q_offset + off);
                        rows.push(v);
                    } else {
                        // Not readable in place (big-endian, misaligned).
                        dense::decode_at(msg, off, &mut buf[..width]);
                        let v = &buf[..width];
                        update_drift(kind, k, q, v, rounds[m], msg, q_offset + off);
                        rows.add_now(v);
                    }
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

    /// After [`Server::lossless`]: a sender's v, a silent node's drift from its last upload.
    fn dense_rows(&self) -> Option<crate::DenseRows> {
        let layout = Layout::new(self.dim, self.kind, self.compressor.is_some());
        self.aliased.then(|| crate::DenseRows {
            scale: 1.0,
            silent_at: Some(layout.drift_at()),
        })
    }

    /// Dense uploads whose drift is sent (LENA-g, LENA-m) or is the last v (LENA-v): the drift
    /// of a silent node is the one in its last upload, read from there (a vector of d less
    /// per node, and no copy per upload).
    fn lossless(&mut self) {
        let layout = Layout::new(self.dim, self.kind, self.compressor.is_some());
        if layout.drift_in_upload(self.kind) {
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
