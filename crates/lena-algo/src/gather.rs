//! Servers' parallel receive path: decode every upload in parallel over nodes, then sum the
//! decoded vectors in parallel over coordinate blocks, in node order within each block.
//!
//! Both phases give the same floats whatever the thread count: a node's decode is sequential,
//! and every coordinate's sum runs over the nodes in node order.

use crate::{Error, Message, Result, Uploads};
use lena_kernels::Kernels;
use rayon::prelude::*;

/// Coordinates per block when a server aggregates in parallel. Fixed, so that each
/// coordinate's sum runs over the nodes in node order whatever the number of threads.
pub(crate) const AGG_BLOCK: usize = 1024;

/// `w += inv_m * sum` by blocks of [`AGG_BLOCK`] coordinates in parallel: each block zeroes its
/// piece of `sum`, lets `fill(offset, piece)` add the nodes' contributions (in node order, so
/// the floats do not depend on the thread count), then applies it.
pub(crate) fn apply_by_blocks(
    k: Kernels,
    sum: &mut [f32],
    w: &mut [f32],
    inv_m: f32,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    sum.par_chunks_mut(AGG_BLOCK)
        .zip(w.par_chunks_mut(AGG_BLOCK))
        .enumerate()
        .for_each(|(b, (sum, w))| {
            sum.fill(0.0);
            fill(b * AGG_BLOCK, sum);
            k.axpy(inv_m, sum, w);
        });
}

/// `sum += fl(scale row_m)` over the nodes in node order for the block at `off`, each row read
/// from node m's last upload (a server that keeps no copies, after `Server::lossless`): a
/// sender's row at the start of its upload, a silent node's at `silent_at` values in (its
/// drift after LENA's v, or 0), zero before its first upload.
pub(crate) fn sum_last_uploads(
    k: Kernels,
    scale: f32,
    sum: &mut [f32],
    uploads: &Uploads<'_>,
    off: usize,
    silent_at: usize,
) {
    static ZEROS: [f32; AGG_BLOCK] = [0.0; AGG_BLOCK];
    let width = sum.len();
    let mut buf = [0.0f32; AGG_BLOCK];
    let mut rows = RowSum::new(k, scale, sum);
    for m in 0..uploads.len() {
        let msg = uploads.last(m);
        let at = if uploads.get(m).is_some() {
            0
        } else {
            silent_at
        };
        if msg.bits() == 0 {
            rows.push(&ZEROS[..width]);
        } else if let Some(row) = lena_compress::dense::view_at(msg, at + off, width) {
            rows.push(row);
        } else {
            // Not readable in place (big-endian, misaligned).
            lena_compress::dense::decode_at(msg, at + off, &mut buf[..width]);
            rows.add_now(&buf[..width]);
        }
    }
    rows.finish();
}

/// Adds rows to a block of a server's sum eight at a time ([`Kernels::sum_rows`], the block
/// held in registers), in the order they are pushed: the floats of one `sum += fl(scale row)`
/// per row. A fixed group, so a round allocates nothing; [`RowSum::finish`] adds the rest.
pub(crate) struct RowSum<'r, 's> {
    k: Kernels,
    scale: f32,
    sum: &'s mut [f32],
    group: [&'r [f32]; 8],
    n: usize,
}

impl<'r, 's> RowSum<'r, 's> {
    pub(crate) fn new(k: Kernels, scale: f32, sum: &'s mut [f32]) -> Self {
        Self {
            k,
            scale,
            sum,
            group: [&[]; 8],
            n: 0,
        }
    }

    pub(crate) fn push(&mut self, row: &'r [f32]) {
        self.group[self.n] = row;
        self.n += 1;
        if self.n == self.group.len() {
            self.flush();
        }
    }

    /// Adds the rows pushed so far, then `row` (a buffer reused for the next row).
    pub(crate) fn add_now(&mut self, row: &[f32]) {
        self.flush();
        self.k.sum_rows(self.sum, self.scale, &[row]);
    }

    pub(crate) fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        self.k.sum_rows(self.sum, self.scale, &self.group[..self.n]);
        self.n = 0;
    }
}

/// Which buffers a block sum adds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Terms {
    /// This round's senders' (their freshly decoded uploads).
    Senders,
    /// Every node's (each buffer keeps a node's last contribution).
    All,
    /// Every node's, each scaled by the factor: `sum += fl(a x)`.
    AllScaled(f32),
}

/// One decode buffer, scratch message and error slot per node, reused every round.
pub(crate) struct Decoded {
    bufs: Vec<Vec<f32>>,
    scratch: Vec<Message>,
    errors: Vec<Option<lena_compress::Error>>,
}

impl Decoded {
    /// Buffers for `n` nodes of dimension `d`.
    pub(crate) fn new(n: usize, d: usize) -> Self {
        Self {
            bufs: vec![vec![0.0; d]; n],
            scratch: vec![Message::default(); n],
            errors: (0..n).map(|_| None).collect(),
        }
    }

    /// Decodes every sent upload with `decode(msg, out, scratch)`, in parallel over nodes.
    /// On failure, the error of the first failing node in node order.
    pub(crate) fn decode<F>(&mut self, round: u64, uploads: &Uploads<'_>, decode: F) -> Result<()>
    where
        F: Fn(&Message, &mut [f32], &mut Message) -> lena_compress::Result<()> + Sync,
    {
        self.bufs
            .par_iter_mut()
            .zip(self.scratch.par_iter_mut())
            .zip(self.errors.par_iter_mut())
            .enumerate()
            .for_each(|(m, ((out, scratch), error))| {
                *error = uploads
                    .get(m)
                    .and_then(|msg| decode(msg, out, scratch).err());
            });
        for (node, e) in self.errors.iter_mut().enumerate() {
            if let Some(source) = e.take() {
                return Err(Error::Decode {
                    round,
                    node,
                    source,
                });
            }
        }
        Ok(())
    }

    /// Every node's buffer, for servers whose buffers keep state across rounds.
    pub(crate) fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        for b in &mut self.bufs {
            v.f32s(b);
        }
    }

    /// Node `m`'s decoded vector (meaningful if it sent this round).
    pub(crate) fn get(&self, m: usize) -> &[f32] {
        &self.bufs[m]
    }

    /// For each coordinate block in parallel: `sum_block` = the buffers of the nodes `terms`
    /// selects, summed in node order (each term scaled as `scale` says), then
    /// `then(sum_block, w_block, aux_block)`; `aux` is server state updated block by block
    /// (empty blocks if `None`).
    pub(crate) fn sum_blocks<F>(
        &self,
        k: Kernels,
        uploads: &Uploads<'_>,
        terms: Terms,
        sum: &mut [f32],
        w: &mut [f32],
        aux: Option<&mut [f32]>,
        then: F,
    ) where
        F: Fn(&mut [f32], &mut [f32], &mut [f32]) + Sync,
    {
        let body = |b: usize, sum: &mut [f32], w: &mut [f32], aux: &mut [f32]| {
            let off = b * AGG_BLOCK;
            sum.fill(0.0);
            for (m, msg) in uploads.iter().enumerate() {
                let x = &self.bufs[m][off..off + sum.len()];
                match terms {
                    Terms::Senders if msg.is_some() => k.axpy(1.0, x, sum),
                    Terms::Senders => {}
                    Terms::AllScaled(a) => k.vectorize(|| {
                        // fl(a x) rounded before the sum, as DGD's server does.
                        for (s, x) in sum.iter_mut().zip(x) {
                            *s += a * *x;
                        }
                    }),
                    Terms::All => k.axpy(1.0, x, sum),
                }
            }
            then(sum, w, aux);
        };
        let blocks = sum
            .par_chunks_mut(AGG_BLOCK)
            .zip(w.par_chunks_mut(AGG_BLOCK));
        match aux {
            Some(aux) => blocks
                .zip(aux.par_chunks_mut(AGG_BLOCK))
                .enumerate()
                .for_each(|(b, ((s, w), a))| body(b, s, w, a)),
            None => blocks
                .enumerate()
                .for_each(|(b, (s, w))| body(b, s, w, &mut [])),
        }
    }
}
