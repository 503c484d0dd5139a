//! Servers' parallel receive path: decode uploads in parallel over nodes, then sum the decoded
//! vectors in parallel over coordinate blocks, in node order within each block (every node's
//! buffer at once for servers that keep them, [`Decoded`]; a group of nodes at a time for
//! servers that sum this round's senders only, [`SenderSum`]).
//!
//! Both phases give the same floats whatever the thread count or group: a node's decode is
//! sequential, and every coordinate's sum runs over the nodes in node order.

use crate::{Error, Message, Result, Uploads};
use lena_kernels::Kernels;
use rayon::prelude::*;

/// Coordinates per block of the servers that keep every node's vector block-major (LENA's
/// drifts, LAG's last gradients) and aggregate those blocks in parallel. Fixed: the layout is
/// saved in checkpoints. Each coordinate's sum runs over the nodes in node order whatever the
/// block size or the number of threads.
pub(crate) const AGG_BLOCK: usize = 1024;

/// Coordinates per block of [`apply_by_blocks`], whose servers keep nothing by blocks: any size
/// gives the same floats (every coordinate's sum runs over the nodes in node order), so it is
/// sized for reading: a node's piece of a block is one stream of 16 KB. PERF: LENA-m's server
/// at M = 60 000 reads every node's drift from its last upload, 1.9 GB a round: 98-116 ms
/// (median 113) with blocks of 1024, 91-111 ms (median 92) with 4096 (Intel Xeon, five runs
/// each, alternated); DGD's at M = 200 the same either way.
pub(crate) const SUM_BLOCK: usize = 4096;

/// `w += inv_m * sum` by blocks of [`SUM_BLOCK`] coordinates in parallel: each block zeroes its
/// piece of `sum`, lets `fill(offset, piece)` add the nodes' contributions (in node order, so
/// the floats do not depend on the thread count), then applies it. With `summed` (the whole
/// sum, formed by the caller: [`Uploads::with_sum`]) each block applies its piece of that.
pub(crate) fn apply_by_blocks(
    k: Kernels,
    sum: &mut [f32],
    w: &mut [f32],
    inv_m: f32,
    summed: Option<&[f32]>,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if let Some(summed) = summed.filter(|s| s.len() == w.len()) {
        summed
            .par_chunks(SUM_BLOCK)
            .zip(w.par_chunks_mut(SUM_BLOCK))
            .for_each(|(sum, w)| k.axpy(inv_m, sum, w));
        return;
    }
    sum.par_chunks_mut(SUM_BLOCK)
        .zip(w.par_chunks_mut(SUM_BLOCK))
        .enumerate()
        .for_each(|(b, (sum, w))| {
            sum.fill(0.0);
            fill(b * SUM_BLOCK, sum);
            k.axpy(inv_m, sum, w);
        });
}

/// The rows a server without copies sums ([`Server::dense_rows`](crate::Server::dense_rows)):
/// node m's row is read from its message buffer (its last upload, [`Uploads::last`]), at its
/// start if the upload was delivered this round, else at `silent_at` values in (LENA's drift
/// after its v; LAG's last gradient at 0; zero before a node's first upload), or not at all
/// (`silent_at = None`: DGD's average over the arrivals). The server's sum is
/// `sum += fl(scale row_m)` from +0.0 over the nodes in node order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseRows {
    /// Each row is added as `fl(scale row)`.
    pub scale: f32,
    /// Where a silent node's row starts in its last upload (`None`: it adds nothing).
    pub silent_at: Option<usize>,
}

impl DenseRows {
    /// `sum += fl(scale row_m)` over `nodes` in their order, each a message buffer and whether
    /// its upload was delivered this round, for the coordinates from `off` (as many as `sum`
    /// has; at most [`DenseRows::WIDTH`]). The server's floats, whoever adds: any split of the
    /// nodes into consecutive runs, added run after run, gives the same sum.
    ///
    /// # Panics
    /// If `sum` is longer than [`DenseRows::WIDTH`].
    pub fn add<'m>(
        &self,
        k: Kernels,
        sum: &mut [f32],
        off: usize,
        nodes: impl IntoIterator<Item = (&'m Message, bool)>,
    ) {
        static ZEROS: [f32; SUM_BLOCK] = [0.0; SUM_BLOCK];
        let width = sum.len();
        assert!(
            width <= Self::WIDTH,
            "{width} coordinates at a time at most"
        );
        let mut buf = [0.0f32; SUM_BLOCK];
        let mut rows = RowSum::new(k, self.scale, sum);
        for (msg, delivered) in nodes {
            let at = match (delivered, self.silent_at) {
                (true, _) => 0,
                (false, None) => continue,
                (false, Some(_)) if msg.bits() == 0 => {
                    rows.push(&ZEROS[..width]);
                    continue;
                }
                (false, Some(at)) => at,
            };
            if let Some(row) = lena_compress::dense::view_at(msg, at + off, width) {
                rows.push(row);
            } else {
                // Not readable in place (big-endian, misaligned).
                lena_compress::dense::decode_at(msg, at + off, &mut buf[..width]);
                rows.add_now(&buf[..width]);
            }
        }
        rows.finish();
    }

    /// The most coordinates one [`DenseRows::add`] takes.
    pub const WIDTH: usize = SUM_BLOCK;

    /// A server's update `w += inv_m * sum`, the sum of these rows over every node of
    /// `uploads` in node order (or the caller's, [`Uploads::with_sum`]), by blocks in parallel.
    pub(crate) fn apply(
        &self,
        k: Kernels,
        sum: &mut [f32],
        w: &mut [f32],
        inv_m: f32,
        uploads: &Uploads<'_>,
    ) {
        apply_by_blocks(k, sum, w, inv_m, uploads.sum(), |off, sum| {
            let nodes = (0..uploads.len()).map(|m| (uploads.last(m), uploads.get(m).is_some()));
            self.add(k, sum, off, nodes);
        });
    }
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
    /// Every node's (each buffer keeps a node's last contribution).
    All,
    /// Every node's, each scaled by the factor: `sum += fl(a x)`.
    AllScaled(f32),
}

/// The first decode error of `errors` (node `base + i`'s in slot i), clearing them all.
fn first_error(round: u64, base: usize, errors: &mut [Option<lena_compress::Error>]) -> Result<()> {
    let mut first = None;
    for (i, e) in errors.iter_mut().enumerate() {
        if let Some(source) = e.take() {
            first.get_or_insert((i, source));
        }
    }
    match first {
        Some((i, source)) => Err(Error::Decode {
            round,
            node: base + i,
            source,
        }),
        None => Ok(()),
    }
}

/// `f(upload, item)` for every item in parallel, item i for node `first + i` (skipped if it
/// did not send), each error into its slot of `errors`; then the first in node order.
fn decode_each<I, T>(
    round: u64,
    first: usize,
    uploads: &Uploads<'_>,
    items: I,
    errors: &mut [Option<lena_compress::Error>],
    f: impl Fn(&Message, T) -> lena_compress::Result<()> + Sync + Send,
) -> Result<()>
where
    I: IndexedParallelIterator<Item = T>,
{
    items
        .zip(errors.par_iter_mut())
        .enumerate()
        .for_each(|(i, (item, error))| {
            *error = uploads.get(first + i).and_then(|msg| f(msg, item).err());
        });
    first_error(round, first, errors)
}

/// This round's senders' uploads from a compressor with a sparse form
/// ([`lena_compress::Compressor::decode_sparse`]: top-k, rand-k) decoded as (index, value) pairs
/// in parallel over nodes, then added per coordinate block in parallel, in node order; then
/// `w += inv_m * sum`.
///
/// The floats of decoding every upload to a whole vector and summing them ([`SenderSum`]):
/// per coordinate, the sum runs from +0.0 over the senders in node order, and a sender without
/// that coordinate adds +0.0, which changes nothing: such a sum is never -0.0 (+0.0 plus -0.0
/// is +0.0, and an exact cancellation is +0.0).
///
/// PERF: a top-k upload at d = 7850, k = 79 was a whole vector zeroed, written and read again
/// (EF-SGD's server at M = 200).
pub(crate) struct SparseSum {
    pairs: Vec<Vec<(u32, f32)>>,
    errors: Vec<Option<lena_compress::Error>>,
    /// Every node's last upload is summed, not only this round's senders' ([`Self::stale`]).
    stale: bool,
}

impl SparseSum {
    /// For `n` nodes, if compressor `c` has a sparse form (asked of an empty message).
    pub(crate) fn new(c: &dyn lena_compress::Compressor, n: usize) -> Option<Self> {
        // Only whether there is a form: an empty message is malformed either way.
        let _malformed = c.decode_sparse(&Message::default(), &mut Vec::new())?;
        Some(Self {
            pairs: vec![Vec::new(); n],
            errors: (0..n).map(|_| None).collect(),
            stale: false,
        })
    }

    /// [`Self::new`] for a stale server (SASG's): the sum is of every node's last upload, and
    /// the server keeps k pairs per node rather than a vector of d.
    pub(crate) fn stale(c: &dyn lena_compress::Compressor, n: usize) -> Option<Self> {
        Self::new(c, n).map(|s| Self { stale: true, ..s })
    }

    /// `w += inv_m * sum`, `sum` the senders' decoded uploads (with [`Self::stale`]: every
    /// node's last, a silent node's from an earlier round, none before its first); on a failed
    /// decode, the error of the first failing node in node order, with `w` untouched (and, if
    /// stale, that node's pairs lost: a failed round is not resumed from, but from the last
    /// checkpoint).
    #[allow(clippy::too_many_arguments)] // One round's operands, as SenderSum::apply's.
    pub(crate) fn apply(
        &mut self,
        k: Kernels,
        round: u64,
        uploads: &Uploads<'_>,
        c: &dyn lena_compress::Compressor,
        sum: &mut [f32],
        w: &mut [f32],
        inv_m: f32,
    ) -> Result<()> {
        self.decode(round, uploads, c)?;
        self.add(k, sum, w, inv_m);
        Ok(())
    }

    /// Every node's pairs as a vector of `d` (+0.0 where it has none), as a stale server kept
    /// them before it kept pairs: the same checkpoint bytes. Read back, a vector's pairs are
    /// its coordinates that are not +0.0 (a +0.0 pair adds nothing to a sum).
    pub(crate) fn visit(&mut self, d: usize, v: &mut dyn crate::state::Visitor) {
        let mut dense = vec![0.0f32; d];
        for pairs in &mut self.pairs {
            dense.fill(0.0);
            for &(i, x) in pairs.iter() {
                if let Some(slot) = dense.get_mut(i as usize) {
                    *slot = x;
                }
            }
            v.f32s(&mut dense);
            pairs.clear();
            pairs.extend(
                dense
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.to_bits() != 0)
                    .map(|(i, &x)| (i as u32, x)),
            );
        }
    }

    /// Decodes the senders' uploads into their pairs, in parallel over nodes; a node without
    /// an upload keeps its pairs if the sum is stale, else has none.
    fn decode(
        &mut self,
        round: u64,
        uploads: &Uploads<'_>,
        c: &dyn lena_compress::Compressor,
    ) -> Result<()> {
        let keep = self.stale;
        self.pairs
            .par_iter_mut()
            .zip(self.errors.par_iter_mut())
            .enumerate()
            .for_each(|(m, (pairs, error))| match uploads.get(m) {
                Some(msg) => {
                    pairs.clear();
                    let decoded = c.decode_sparse(msg, pairs);
                    *error = decoded.expect("a sparse form for every message").err();
                }
                None if keep => {}
                None => pairs.clear(),
            });
        first_error(round, 0, &mut self.errors)
    }

    /// `w += inv_m * sum`, `sum` every node's pairs added per coordinate block in node order.
    fn add(&self, k: Kernels, sum: &mut [f32], w: &mut [f32], inv_m: f32) {
        let pairs = &self.pairs;
        apply_by_blocks(k, sum, w, inv_m, None, |off, block| {
            let end = off + block.len();
            for node in pairs {
                // Ascending indices: this block's pairs are one run.
                let from = node.partition_point(|&(i, _)| (i as usize) < off);
                for &(i, v) in node[from..]
                    .iter()
                    .take_while(|&&(i, _)| (i as usize) < end)
                {
                    block[i as usize - off] += v;
                }
            }
        });
    }
}

/// Bytes of decode buffers a [`SenderSum`] keeps: one group of nodes, decoded and then summed
/// while the buffers are still in cache (about an L2).
const GROUP_BYTES: usize = 512 << 10;

/// The least nodes a [`SenderSum`] group holds, so that every thread of a small pool has
/// nodes to decode.
const MIN_GROUP: usize = 8;

/// Nodes in a group of `n` nodes' decode buffers of `node_bytes` each: `GROUP_BYTES` worth, at
/// least `MIN_GROUP` and at most `n`.
fn group_len(node_bytes: usize, n: usize) -> usize {
    (GROUP_BYTES / node_bytes.max(1)).max(MIN_GROUP).min(n)
}

/// This round's senders' uploads decoded in parallel over nodes and summed over coordinate
/// blocks in parallel, a group of nodes at a time; then a server's update per block.
///
/// Each coordinate's sum runs from zero over the senders in node order whatever the group size
/// or thread count: the floats of decoding every upload and then summing them all.
///
/// PERF: a group's buffers are summed while they are still in cache and then reused, so the
/// decoded vectors never travel to memory and back (DIANA at M = 200, d = 7850: 6.3 MB written
/// and read again per round with a buffer per node), and the server keeps a group's `d` floats
/// per buffer rather than every node's.
pub(crate) struct SenderSum {
    /// One group's buffers.
    group: Decoded,
}

impl SenderSum {
    /// Buffers for `n` nodes of dimension `d`: a group of `GROUP_BYTES` worth, at least
    /// `MIN_GROUP` and at most `n`.
    pub(crate) fn new(n: usize, d: usize) -> Self {
        let group = group_len(4 * d, n);
        Self {
            group: Decoded::new(group, d),
        }
    }

    /// Decodes this round's senders a group of nodes at a time, in parallel over the group's
    /// nodes with `decode(msg, out, scratch)`, then calls `group(g0, bufs)`: node `g0 + i`'s
    /// decoded upload is `bufs[i]` if it sent. On a failed decode, the error of the group's
    /// first failing node, before `group` sees it (earlier groups have been seen).
    pub(crate) fn for_each_group<F, G>(
        &mut self,
        round: u64,
        uploads: &Uploads<'_>,
        decode: F,
        mut group: G,
    ) -> Result<()>
    where
        F: Fn(&Message, &mut [f32], &mut Message) -> lena_compress::Result<()> + Sync,
        G: FnMut(usize, &[Vec<f32>]),
    {
        let n = uploads.len();
        let size = self.group.bufs.len().max(1);
        let mut g0 = 0;
        while g0 < n {
            let g1 = (g0 + size).min(n);
            self.group
                .decode_nodes(round, uploads, g0, g1 - g0, &decode)?;
            group(g0, &self.group.bufs[..g1 - g0]);
            g0 = g1;
        }
        Ok(())
    }

    /// `sum` = the senders' uploads decoded by `decode(msg, out)`, summed in node order per
    /// coordinate; then `then(sum_block, w_block, aux_block)` for each coordinate block in
    /// parallel (`aux`: server state updated block by block, empty blocks if `None`).
    /// On a failed decode, the error of the first failing node in node order, with `w` and
    /// `aux` untouched.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply<F, T>(
        &mut self,
        k: Kernels,
        round: u64,
        uploads: &Uploads<'_>,
        decode: F,
        sum: &mut [f32],
        w: &mut [f32],
        aux: Option<&mut [f32]>,
        then: T,
    ) -> Result<()>
    where
        F: Fn(&Message, &mut [f32]) -> lena_compress::Result<()> + Sync,
        T: Fn(&mut [f32], &mut [f32], &mut [f32]) + Sync,
    {
        sum.fill(0.0);
        self.for_each_group(
            round,
            uploads,
            |msg, out, _| decode(msg, out),
            |g0, bufs| {
                sum.par_chunks_mut(AGG_BLOCK)
                    .enumerate()
                    .for_each(|(b, sum)| {
                        let (off, len) = (b * AGG_BLOCK, sum.len());
                        // fl(1 x) = x: the floats of adding each upload in turn.
                        let mut rows = RowSum::new(k, 1.0, sum);
                        for (i, buf) in bufs.iter().enumerate() {
                            if uploads.get(g0 + i).is_some() {
                                rows.push(&buf[off..off + len]);
                            }
                        }
                        rows.finish();
                    });
            },
        )?;
        then_by_blocks(sum, w, aux, then);
        Ok(())
    }
}

/// `then(sum_block, w_block, aux_block)` for each coordinate block in parallel (empty aux
/// blocks if `aux` is `None`).
pub(crate) fn then_by_blocks<T>(sum: &mut [f32], w: &mut [f32], aux: Option<&mut [f32]>, then: T)
where
    T: Fn(&mut [f32], &mut [f32], &mut [f32]) + Sync,
{
    let blocks = sum
        .par_chunks_mut(AGG_BLOCK)
        .zip(w.par_chunks_mut(AGG_BLOCK));
    match aux {
        Some(aux) => blocks
            .zip(aux.par_chunks_mut(AGG_BLOCK))
            .for_each(|((s, w), a)| then(s, w, a)),
        None => blocks.for_each(|(s, w)| then(s, w, &mut [])),
    }
}

/// This round's senders' uploads from a compressor with a level form
/// ([`lena_compress::Compressor::decode_levels`]: QSGD) decoded to a byte per coordinate and a
/// step per bucket, in parallel over a group of nodes at a time, and summed over coordinate
/// blocks in parallel, each value computed as it is added; then a server's update per block.
/// (A simulator in one process forms this sum in its node phase instead, [`LevelRows`].)
///
/// The floats of [`SenderSum`]: per coordinate, the sum runs from zero over the senders in node
/// order, adding the value each one's decode writes ([`lena_compress::Qsgd::level_value`]).
///
/// PERF: a group's bytes are a quarter of its decoded floats. One core decodes a node and both
/// read it in the block sums, so each line of a buffer the other core has read must be taken
/// back before the next group's decode writes it: DIANA's decoding (M = 200, d = 7850) cost
/// about 1.7 times as much with the server on two threads as on one. Two senders are decoded
/// at once (`decode_levels_two`): DIANA's round at M = 200 with the server summing (a
/// multi-process run's server, or one that may lose uploads) took 1.92-1.93 ms one at a time,
/// 1.79-1.81 two at once (`round_profile ab diana_qsgd`, fastest slices, two pairs, Intel Xeon).
pub(crate) struct LevelSum {
    group: Vec<Levels>,
    errors: Vec<Option<lena_compress::Error>>,
}

/// One node's decoded upload in a [`LevelSum`]: a field per coordinate, a step per bucket.
#[derive(Clone)]
struct Levels {
    fields: Vec<u8>,
    steps: Vec<f32>,
    bucket: usize,
}

impl Levels {
    /// Whether `c` has a level form for dimension `d` (asked of an empty message, which is
    /// malformed either way).
    fn form(c: &dyn lena_compress::Compressor, d: usize) -> bool {
        c.decode_levels(&Message::default(), &mut vec![0; d], &mut Vec::new())
            .is_some()
    }

    /// `msg` decoded into these buffers by `c`'s level form (which [`Self::form`] found).
    fn decode(
        &mut self,
        c: &dyn lena_compress::Compressor,
        msg: &Message,
    ) -> lena_compress::Result<()> {
        let decoded = c.decode_levels(msg, &mut self.fields, &mut self.steps);
        self.bucket = decoded.expect("a level form (checked when made)")?;
        Ok(())
    }

    /// Two messages decoded at once into `a` and `b` (`decode_levels_two`): each one's result.
    fn decode_two(
        c: &dyn lena_compress::Compressor,
        [a, b]: [&mut Self; 2],
        msgs: [&Message; 2],
    ) -> [lena_compress::Result<()>; 2] {
        let fields = [&mut a.fields[..], &mut b.fields[..]];
        let decoded = c.decode_levels_two(msgs, fields, [&mut a.steps, &mut b.steps]);
        let [first, second] = decoded.expect("a level form (checked when made)");
        [
            first.map(|bucket| a.bucket = bucket),
            second.map(|bucket| b.bucket = bucket),
        ]
    }
}

impl LevelSum {
    /// Buffers for `n` nodes of dimension `d` (a group of `GROUP_BYTES` worth, at least
    /// `MIN_GROUP` and at most `n`), if compressor `c` has a level form (asked of an empty
    /// message).
    pub(crate) fn new(c: &dyn lena_compress::Compressor, n: usize, d: usize) -> Option<Self> {
        if !Levels::form(c, d) {
            return None;
        }
        let group = group_len(d, n);
        let levels = Levels {
            fields: vec![0; d],
            steps: Vec::new(),
            bucket: 1,
        };
        Some(Self {
            group: vec![levels; group],
            errors: (0..group).map(|_| None).collect(),
        })
    }

    /// [`SenderSum::apply`] with the uploads decoded by `c`'s level form.
    #[allow(clippy::too_many_arguments)] // One round's operands, as SenderSum::apply's.
    pub(crate) fn apply<T>(
        &mut self,
        k: Kernels,
        round: u64,
        uploads: &Uploads<'_>,
        c: &dyn lena_compress::Compressor,
        sum: &mut [f32],
        w: &mut [f32],
        aux: Option<&mut [f32]>,
        then: T,
    ) -> Result<()>
    where
        T: Fn(&mut [f32], &mut [f32], &mut [f32]) + Sync,
    {
        sum.fill(0.0);
        let (n, size) = (uploads.len(), self.group.len().max(1));
        for g0 in (0..n).step_by(size) {
            let count = size.min(n - g0);
            // PERF: two senders decoded at once where both sent (`decode_levels_two`).
            self.group[..count]
                .par_chunks_mut(2)
                .zip(self.errors[..count].par_chunks_mut(2))
                .enumerate()
                .for_each(|(p, (levels, errors))| {
                    let m = g0 + 2 * p;
                    if let [a, b] = &mut *levels
                        && let (Some(x), Some(y)) = (uploads.get(m), uploads.get(m + 1))
                    {
                        let [first, second] = Levels::decode_two(c, [a, b], [x, y]);
                        (errors[0], errors[1]) = (first.err(), second.err());
                        return;
                    }
                    for (i, (l, error)) in levels.iter_mut().zip(errors).enumerate() {
                        *error = uploads.get(m + i).and_then(|msg| l.decode(c, msg).err());
                    }
                });
            first_error(round, g0, &mut self.errors[..count])?;
            let group = &self.group[..count];
            sum.par_chunks_mut(AGG_BLOCK)
                .enumerate()
                .for_each(|(b, sum)| {
                    for (i, l) in group.iter().enumerate() {
                        if uploads.get(g0 + i).is_some() {
                            add_levels(k, sum, b * AGG_BLOCK, l);
                        }
                    }
                });
        }
        then_by_blocks(sum, w, aux, then);
        Ok(())
    }
}

/// `sum[j] += level_value(step of coordinate off + j, fields[off + j])` for every j: a block of
/// one node's decoded levels added, bucket by bucket.
fn add_levels(k: Kernels, sum: &mut [f32], off: usize, l: &Levels) {
    let end = off + sum.len();
    let mut at = off;
    while at < end {
        let b = at / l.bucket;
        let seg = ((b + 1) * l.bucket).min(end);
        let step = l.steps[b];
        let (s, f) = (&mut sum[at - off..seg - off], &l.fields[at..seg]);
        lena_compress::Qsgd::add_level_values(k, s, f, step);
        at = seg;
    }
}

/// The rows a server sums as the level form of its uploads ([`Server::level_rows`](
/// crate::Server::level_rows): DIANA's with QSGD): node m's row is its upload decoded by the
/// compressor's level form, if it was delivered this round. The server's sum is
/// `sum += level_value(step, field)` from +0.0 over the delivered nodes in node order, as the
/// server forms it when it sums its uploads itself.
#[derive(Clone)]
pub struct LevelRows {
    c: std::sync::Arc<dyn lena_compress::Compressor>,
}

impl std::fmt::Debug for LevelRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelRows")
            .field("compressor", &self.c.name())
            .finish()
    }
}

impl LevelRows {
    /// The level rows of `c`'s uploads of dimension `d`, if it has a level form (asked of an
    /// empty message): what a server that sums them returns from
    /// [`Server::level_rows`](crate::Server::level_rows).
    pub fn new(c: std::sync::Arc<dyn lena_compress::Compressor>, d: usize) -> Option<Self> {
        Levels::form(&*c, d).then_some(Self { c })
    }

    /// `sum += row_m` over `nodes` in their order, each a message buffer and whether its upload
    /// was delivered this round, for all of `sum`'s coordinates. The server's floats, whoever
    /// adds: any split of the nodes into consecutive runs, added run after run, gives the same
    /// sum.
    ///
    /// # Errors
    /// The first delivered upload that does not decode (the nodes after it are not added).
    pub fn add<'m>(
        &self,
        k: Kernels,
        sum: &mut [f32],
        nodes: impl IntoIterator<Item = (&'m Message, bool)>,
    ) -> lena_compress::Result<()> {
        std::thread_local! {
            static LEVELS: std::cell::RefCell<[Levels; 2]> = const {
                std::cell::RefCell::new([const {
                    Levels {
                        fields: Vec::new(),
                        steps: Vec::new(),
                        bucket: 1,
                    }
                }; 2])
            };
        }
        // PERF: two uploads decoded at once (`decode_levels_two`: two serial chains in one
        // loop), then added in node order.
        LEVELS.with_borrow_mut(|[a, b]| {
            a.fields.resize(sum.len(), 0);
            b.fields.resize(sum.len(), 0);
            let mut waiting = None;
            for (msg, delivered) in nodes {
                if !delivered {
                    continue;
                }
                let Some(first) = waiting.take() else {
                    waiting = Some(msg);
                    continue;
                };
                let [first, second] = Levels::decode_two(&*self.c, [a, b], [first, msg]);
                first?;
                add_levels(k, sum, 0, a);
                second?;
                add_levels(k, sum, 0, b);
            }
            if let Some(last) = waiting {
                a.decode(&*self.c, last)?;
                add_levels(k, sum, 0, a);
            }
            Ok(())
        })
    }
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
        self.decode_nodes(round, uploads, 0, self.bufs.len(), decode)
    }

    /// [`Self::decode`] of nodes `first..first + count` into buffers `0..count`.
    fn decode_nodes<F>(
        &mut self,
        round: u64,
        uploads: &Uploads<'_>,
        first: usize,
        count: usize,
        decode: F,
    ) -> Result<()>
    where
        F: Fn(&Message, &mut [f32], &mut Message) -> lena_compress::Result<()> + Sync,
    {
        let items = self.bufs[..count]
            .par_iter_mut()
            .zip(self.scratch.par_iter_mut());
        decode_each(
            round,
            first,
            uploads,
            items,
            &mut self.errors[..count],
            |msg, (out, scratch)| decode(msg, out, scratch),
        )
    }

    /// Every node's buffer, for servers whose buffers keep state across rounds.
    pub(crate) fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        for b in &mut self.bufs {
            v.f32s(b);
        }
    }

    /// For each coordinate block in parallel: `sum_block` = the buffers of the nodes `terms`
    /// selects, summed in node order (each term scaled as `scale` says), then
    /// `then(sum_block, w_block)`.
    pub(crate) fn sum_blocks<F>(
        &self,
        k: Kernels,
        uploads: &Uploads<'_>,
        terms: Terms,
        sum: &mut [f32],
        w: &mut [f32],
        then: F,
    ) where
        F: Fn(&mut [f32], &mut [f32]) + Sync,
    {
        sum.par_chunks_mut(AGG_BLOCK)
            .zip(w.par_chunks_mut(AGG_BLOCK))
            .enumerate()
            .for_each(|(b, (sum, w))| {
                let off = b * AGG_BLOCK;
                sum.fill(0.0);
                for m in 0..uploads.len() {
                    let x = &self.bufs[m][off..off + sum.len()];
                    match terms {
                        Terms::AllScaled(a) => k.vectorize(|| {
                            // fl(a x) rounded before the sum, as DGD's server does.
                            for (s, x) in sum.iter_mut().zip(x) {
                                *s += a * *x;
                            }
                        }),
                        Terms::All => k.axpy(1.0, x, sum),
                    }
                }
                then(sum, w);
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lena_compress::dense;

    /// Node m's vector: values of mixed size and sign, so that the order of the sums shows in
    /// the last bits.
    fn vector(m: usize, d: usize) -> Vec<f32> {
        (0..d)
            .map(|i| {
                let h = (i * 7919 + m * 104_729) % 1000;
                (h as f32 - 500.0) * 10f32.powi((h % 7) as i32 - 3)
            })
            .collect()
    }

    /// Round 4 of a server whose update is `w -= sum / 2`, `aux += sum`.
    fn round4(
        ss: &mut SenderSum,
        k: Kernels,
        uploads: &Uploads<'_>,
        sum: &mut [f32],
        w: &mut [f32],
        aux: &mut [f32],
    ) -> Result<()> {
        ss.apply(
            k,
            4,
            uploads,
            dense::decode,
            sum,
            w,
            Some(aux),
            |s, w, a| {
                for ((s, w), a) in s.iter_mut().zip(w.iter_mut()).zip(a.iter_mut()) {
                    *w -= 0.5 * *s;
                    *a += *s;
                }
            },
        )
    }

    /// `SenderSum` over several groups equals decoding every upload and adding the senders'
    /// one by one in node order, bit for bit, on any pool; a malformed upload is reported for
    /// the first failing node in node order, with `w` and `aux` untouched.
    #[test]
    fn sender_sum_equals_the_sum_in_node_order() {
        let k = Kernels::detect();
        // Buffers of 280 KB: groups of 8 nodes, so 37 nodes make five groups (the last short).
        let (n, d) = (37, 70_000);
        let mut ss = SenderSum::new(n, d);
        assert_eq!(ss.group.bufs.len(), MIN_GROUP);
        let mut msgs = vec![Message::default(); n];
        let sent: Vec<bool> = (0..n).map(|m| m % 5 != 3).collect();
        for (m, msg) in msgs.iter_mut().enumerate() {
            dense::encode(&vector(m, d), msg);
        }
        let uploads = Uploads::new(&msgs, &sent);
        let mut want = vec![0.0f32; d];
        for m in (0..n).filter(|&m| sent[m]) {
            for (s, x) in want.iter_mut().zip(vector(m, d)) {
                *s += x;
            }
        }
        let w0: Vec<f32> = (0..d).map(|i| i as f32 * 1e-3).collect();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut sum, mut w, mut aux) = (vec![1.0f32; d], w0.clone(), vec![0.0f32; d]);
            pool.install(|| round4(&mut ss, k, &uploads, &mut sum, &mut w, &mut aux))
                .unwrap();
            assert!(
                sum.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert!(
                aux.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            let step = w0.iter().zip(&want).map(|(w, s)| w - 0.5 * s);
            assert!(w.iter().zip(step).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // Nodes 21 and 30 (groups 2 and 3) send uploads of the wrong length; node 23 (group 2)
        // did not send its own.
        for m in [21, 23, 30] {
            dense::encode(&vector(m, 3), &mut msgs[m]);
        }
        let uploads = Uploads::new(&msgs, &sent);
        let (mut sum, mut w, mut aux) = (vec![0.0f32; d], w0.clone(), vec![0.0f32; d]);
        let e = round4(&mut ss, k, &uploads, &mut sum, &mut w, &mut aux).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Decode {
                    round: 4,
                    node: 21,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(w, w0);
        assert!(aux.iter().all(|&a| a == 0.0));
    }

    /// Every node's top-k upload of round `round`'s vector: values that make signed zeros
    /// matter (node 3 keeps -0.0 values, nodes 5 and 6 cancel exactly), an infinity (node 8)
    /// and a NaN (node 9), and coordinates every node keeps with terms whose sum depends on
    /// their order.
    fn top_k_uploads(
        c: &dyn lena_compress::Compressor,
        n: usize,
        d: usize,
        round: usize,
    ) -> Vec<Message> {
        use rand::SeedableRng;
        let mut msgs = vec![Message::default(); n];
        for (m, msg) in msgs.iter_mut().enumerate() {
            let mut x = vector(m + 31 * round, d);
            // Node 3 keeps -0.0 values (its vector is mostly -0.0); nodes 5 and 6 cancel
            // exactly; node 8 sends an infinity and node 9 a NaN.
            if m == 3 {
                x.iter_mut().skip(5).for_each(|v| *v = -0.0);
            }
            if m == 6 {
                x = vector(5 + 31 * round, d).iter().map(|v| -v).collect();
            }
            x[100 + m] = match m {
                8 => f32::INFINITY,
                9 => f32::NAN,
                _ => x[100 + m],
            };
            // Coordinates every node keeps, with terms whose sum depends on their order.
            for (i, v) in x.iter_mut().take(30).enumerate() {
                *v = match (m + i) % 3 {
                    0 => 1e8,
                    1 => -1e8 + (m * 8) as f32,
                    _ => 1.7e6 + (m * i) as f32,
                };
            }
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(m as u64);
            c.compress(&x, &mut rng, &mut vec![0.0; d], msg);
        }
        msgs
    }

    /// A stale `SparseSum` (SASG's server) equals decoding every node's last top-k upload to a
    /// whole vector and summing them all (`Decoded`), bit for bit, round after round with
    /// different silent nodes, on 1 and 3 threads; its checkpoint bytes are the dense
    /// server's, and a sum loaded from them goes on as the dense one does.
    #[test]
    fn stale_sparse_sum_equals_the_dense_sum_of_last_uploads() {
        use crate::state::{Loader, Saver, Visitor};
        use lena_compress::{Compressor, IndexCoding, TopK};
        let k = Kernels::detect();
        let (n, d, kk) = (17, 2500, 30);
        let c = TopK::new(d, kk, IndexCoding::Log2).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let w0: Vec<f32> = (0..d).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut dense = Decoded::new(n, d);
        let mut want = w0.clone();
        let mut sparse = [1, 3].map(|_| SparseSum::stale(&c, n).unwrap());
        let mut w = [w0.clone(), w0.clone()];
        let pools = [1, 3].map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        });
        let mut sum = vec![0.0f32; d];
        for round in 0..5 {
            let msgs = top_k_uploads(&c, n, d, round);
            // Node m silent in some rounds; node 0 silent in the first three.
            let sent: Vec<bool> = (0..n)
                .map(|m| (m + round) % 3 != 0 && (m > 0 || round > 2))
                .collect();
            let uploads = Uploads::new(&msgs, &sent);
            dense
                .decode(round as u64, &uploads, |msg, out, _| c.decode(msg, out))
                .unwrap();
            dense.sum_blocks(k, &uploads, Terms::All, &mut sum, &mut want, |s, w| {
                k.axpy(-0.3, s, w)
            });
            for ((sp, w), pool) in sparse.iter_mut().zip(&mut w).zip(&pools) {
                pool.install(|| sp.apply(k, round as u64, &uploads, &c, &mut sum.clone(), w, -0.3))
                    .unwrap();
                assert_eq!(bits(w), bits(&want), "round {round}");
            }
        }
        // The checkpoint bytes are the dense server's; loaded, the sum goes on the same.
        let save = |visit: &mut dyn FnMut(&mut dyn Visitor)| {
            let mut s = Saver::default();
            visit(&mut s);
            s.out
        };
        let bytes = save(&mut |v| dense.visit(v));
        assert_eq!(save(&mut |v| sparse[0].visit(d, v)), bytes);
        let mut loaded = SparseSum::stale(&c, n).unwrap();
        let mut loader = Loader::new(&bytes);
        loaded.visit(d, &mut loader);
        let msgs = top_k_uploads(&c, n, d, 9);
        let sent: Vec<bool> = (0..n).map(|m| m % 4 == 1).collect();
        let uploads = Uploads::new(&msgs, &sent);
        dense
            .decode(9, &uploads, |msg, out, _| c.decode(msg, out))
            .unwrap();
        dense.sum_blocks(k, &uploads, Terms::All, &mut sum, &mut want, |s, w| {
            k.axpy(-0.3, s, w)
        });
        let mut w = w[0].clone();
        loaded
            .apply(k, 9, &uploads, &c, &mut sum, &mut w, -0.3)
            .unwrap();
        assert_eq!(bits(&w), bits(&want));
    }

    /// `SparseSum` equals decoding every top-k upload to a whole vector and summing with
    /// `SenderSum`, bit for bit, with values that make signed zeros matter (-0.0 kept by top-k,
    /// exact cancellations between nodes), infinities and NaN; a malformed upload is reported
    /// for the first failing node in node order, with `w` untouched.
    #[test]
    fn sparse_sum_equals_the_dense_sum() {
        use lena_compress::{Compressor, IndexCoding, TopK};
        let k = Kernels::detect();
        let (n, d, kk) = (23, 3000, 40);
        let c = TopK::new(d, kk, IndexCoding::Log2).unwrap();
        let mut msgs = top_k_uploads(&c, n, d, 0);
        let sent: Vec<bool> = (0..n).map(|m| m % 7 != 4).collect();
        let uploads = Uploads::new(&msgs, &sent);
        let w0: Vec<f32> = (0..d)
            .map(|i| if i % 3 == 0 { -0.0 } else { i as f32 })
            .collect();
        let mut dense = SenderSum::new(n, d);
        let (mut sum, mut want) = (vec![0.0f32; d], w0.clone());
        dense
            .apply(
                k,
                2,
                &uploads,
                |msg, out| c.decode(msg, out),
                &mut sum,
                &mut want,
                None,
                |s, w, _| k.axpy(-0.25, s, w),
            )
            .unwrap();
        let mut sparse = SparseSum::new(&c, n).expect("top-k has a sparse form");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut sum, mut w) = (vec![1.0f32; d], w0.clone());
            pool.install(|| sparse.apply(k, 2, &uploads, &c, &mut sum, &mut w, -0.25))
                .unwrap();
            assert_eq!(bits(&w), bits(&want));
        }
        let bad = Message::from_bytes(vec![0xff; 9], 70).unwrap();
        msgs[12] = bad.clone();
        msgs[16] = bad;
        let uploads = Uploads::new(&msgs, &sent);
        let (mut sum, mut w) = (vec![0.0f32; d], w0.clone());
        let e = sparse
            .apply(k, 2, &uploads, &c, &mut sum, &mut w, -0.25)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Decode {
                    round: 2,
                    node: 12,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(bits(&w), bits(&w0));
        // Compressors without a sparse form have none.
        assert!(SparseSum::new(&lena_compress::Identity::new(d), n).is_none());
    }

    /// `LevelSum` (and `LevelRows` in runs of nodes) equals decoding every QSGD upload to a
    /// whole vector and summing with `SenderSum`, bit for bit, over two groups of nodes with
    /// silent ones, buckets that straddle coordinate blocks, zero and huge coordinates, on any
    /// pool, and with the same server state after; a malformed upload is reported for the first
    /// failing node in node order, with `w` and `aux` untouched.
    #[test]
    fn level_sum_equals_the_dense_sum() {
        use lena_compress::{Compressor, Qsgd, QsgdCoding, QsgdNorm};
        use rand::SeedableRng;
        let k = Kernels::detect();
        // Groups of 104 nodes: 151 nodes make two, the second of an odd count.
        let (n, d) = (151, 5000);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (s, bucket, coding) in [
            (4, 300, QsgdCoding::EliasGamma),
            (126, 0, QsgdCoding::Fixed),
            (1, 1024, QsgdCoding::EliasGamma),
        ] {
            let c = Qsgd::new(d, s, bucket, QsgdNorm::L2, coding).unwrap();
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(s.into());
            let mut msgs = vec![Message::default(); n];
            for (m, msg) in msgs.iter_mut().enumerate() {
                let mut x = vector(m, d);
                // Buckets whose norm one huge coordinate makes (the rest level 0).
                if m == 5 {
                    (x[10], x[4000]) = (1e15, -1e15);
                }
                x[m] = 0.0;
                c.compress(&x, &mut rng, &mut vec![0.0; d], msg);
            }
            let sent: Vec<bool> = (0..n).map(|m| m % 9 != 2).collect();
            let uploads = Uploads::new(&msgs, &sent);
            let w0: Vec<f32> = (0..d).map(|i| i as f32 * 1e-3).collect();
            let then = |sum: &mut [f32], w: &mut [f32], a: &mut [f32]| {
                k.axpy(-0.5, sum, w);
                k.axpy(1.0, sum, a);
            };
            let mut dense = SenderSum::new(n, d);
            let (mut sum, mut want, mut want_aux) = (vec![0.0; d], w0.clone(), vec![0.5; d]);
            let decode = |msg: &Message, out: &mut [f32]| c.decode(msg, out);
            dense
                .apply(
                    k,
                    3,
                    &uploads,
                    decode,
                    &mut sum,
                    &mut want,
                    Some(&mut want_aux),
                    then,
                )
                .unwrap();
            // The node phase's sum of level rows, in runs of nodes: the dense sum's floats.
            let shared =
                std::sync::Arc::new(Qsgd::new(d, s, bucket, QsgdNorm::L2, coding).unwrap());
            let rows = LevelRows::new(shared, d).expect("a level form");
            let mut by_rows = vec![0.0; d];
            for run in [0..37, 37..38, 38..n] {
                let nodes = run.map(|m| (&msgs[m], sent[m]));
                rows.add(k, &mut by_rows, nodes).unwrap();
            }
            assert_eq!(bits(&by_rows), bits(&sum), "s = {s}");
            let mut levels = LevelSum::new(&c, n, d).expect("QSGD with s <= 126 has a level form");
            assert_eq!(levels.group.len(), 104);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (mut sum, mut w, mut aux) = (vec![1.0; d], w0.clone(), vec![0.5; d]);
                pool.install(|| {
                    levels.apply(k, 3, &uploads, &c, &mut sum, &mut w, Some(&mut aux), then)
                })
                .unwrap();
                assert_eq!(bits(&w), bits(&want), "s = {s}, {threads} threads");
                assert_eq!(bits(&aux), bits(&want_aux), "s = {s}, {threads} threads");
            }
            // Nodes 120 and 130 (the second group) send malformed uploads.
            let bad = Message::from_bytes(vec![0x0f; 9], 70).unwrap();
            (msgs[120], msgs[130]) = (bad.clone(), bad);
            let uploads = Uploads::new(&msgs, &sent);
            let (mut sum, mut w, mut aux) = (vec![0.0; d], w0.clone(), vec![0.5; d]);
            let e = levels
                .apply(k, 3, &uploads, &c, &mut sum, &mut w, Some(&mut aux), then)
                .unwrap_err();
            let nodes = (0..n).map(|m| (&msgs[m], sent[m]));
            assert!(rows.add(k, &mut vec![0.0; d], nodes).is_err());
            assert!(
                matches!(
                    e,
                    Error::Decode {
                        round: 3,
                        node: 120,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!((bits(&w), bits(&aux)), (bits(&w0), bits(&[0.5; 5000])));
        }
        // Compressors without a level form have none.
        let wide = Qsgd::new(d, 127, 0, QsgdNorm::L2, QsgdCoding::EliasGamma).unwrap();
        assert!(LevelSum::new(&wide, n, d).is_none());
        assert!(LevelSum::new(&lena_compress::Identity::new(d), n, d).is_none());
    }
}
