//! A linear model's two full-batch products (`Z = X W^T`, `G += D^T X`) from the nonzero
//! values of `X` alone, on the x86-64-v4 path, with the dense block kernels' floats.
//!
//! PERF: four in five of MNIST's pixels are 0. On AVX-512 one vector holds a column's weights
//! for up to 16 classes, so each nonzero value is one fused multiply-add for all classes:
//! - the scores walk a row's values lane by lane: value `j` belongs to the dense kernel's lane
//!   `j % 16`, whose chain of multiply-adds over `j = l, l + 16, ...` each lane's accumulator
//!   repeats here over the lane's nonzero columns only, one class vector per lane; the 16 lanes
//!   then go through the dense kernel's tree (lane `i` plus lane `i + 8`, then `+ 4`, `+ 2`,
//!   `+ 1`). The lanes run in lock step, each padded to the row's longest (MNIST: 180 steps of a
//!   lane a row for 150 values).
//! - the gradient walks a block's columns, each one's chain over the block's rows in row order
//!   as the dense kernel's, a column's class vector held in a register; eight columns of like
//!   length run in lock step (153 steps a row for MNIST's 150 values).
//!
//! Measured on MNIST's 60 000 rows (Intel Xeon family 6 model 207, two threads, alternated in
//! one process, `examples/gradient_profile`): the softmax loss and gradient from the dense block
//! kernels took 1.13-1.38 times as long as from the nonzero values; both products on a row in
//! cache 189 ns against 226-231 ns. Each nonzero value costs three loads (its value, its index,
//! a class vector) and a multiply-add, about four times a dense value's share of ten
//! multiply-adds a vector: the products gain only where few values are nonzero.
//!
//! Why the floats are the dense kernels': a skipped term is `fma(0, w, a)`, which with a finite
//! `w` is `a` unless `a` is `-0.0`, which it may turn into `+0.0`; the padding adds `-0.0 * +0.0
//! = -0.0`, which changes no float. So the two chains agree but for the sign of a zero sum,
//! and only where the sparse result is `-0.0`: a result with no `-0.0` is the dense result bit
//! for bit, and a caller redoes one with a `-0.0` densely. The class rows and the derivatives must
//! be finite (`0 * inf` is NaN in the dense sum): [`ClassPanel::finite`] and
//! [`Kernels::nonzero_add_outer`]'s check.

use crate::Kernels;

/// Lanes of the dense kernels' AVX-512 accumulators, and floats of a class vector.
const LANES: usize = 16;
/// Columns whose chains run in lock step in the gradient.
const GROUP: usize = 8;

/// A class vector: up to 16 classes' values of one column, on a cache line of its own.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct ClassVector(pub [f32; LANES]);

/// The columns of up to 16 class rows, one [`ClassVector`] a column, and a zero vector after the
/// last (the padding's). The sparse products' form of `W` (scores) and of `G` (gradient).
#[derive(Clone, Debug, Default)]
pub struct ClassPanel {
    cols: Vec<ClassVector>,
    classes: usize,
}

impl ClassPanel {
    /// Zeros for `p` columns of `classes` (at most 16) class rows.
    ///
    /// # Panics
    /// If `classes > 16`.
    pub fn zeros(p: usize, classes: usize) -> Self {
        assert!(classes <= LANES, "ClassPanel: at most 16 classes");
        Self {
            cols: vec![ClassVector::default(); p + 1],
            classes,
        }
    }

    /// The first `p` columns of `classes` rows of `w`, row `k` at `w[k * stride..]`.
    ///
    /// # Panics
    /// If `classes > 16` or `w` is too short.
    pub fn from_rows(w: &[f32], stride: usize, p: usize, classes: usize) -> Self {
        let mut panel = Self::zeros(p, classes);
        for k in 0..classes {
            let row = &w[k * stride..k * stride + p];
            for (col, v) in panel.cols.iter_mut().zip(row) {
                col.0[k] = *v;
            }
        }
        panel
    }

    /// Writes the panel's values into rows of `g`, row `k` at `g[k * stride..]`.
    pub fn write_rows(&self, g: &mut [f32], stride: usize) {
        let p = self.cols.len() - 1;
        for k in 0..self.classes {
            for (out, col) in g[k * stride..k * stride + p].iter_mut().zip(&self.cols) {
                *out = col.0[k];
            }
        }
    }

    /// Whether every value is finite.
    pub fn finite(&self) -> bool {
        self.cols.iter().all(|c| c.0.iter().all(|v| v.is_finite()))
    }

    /// Whether a value is `-0.0` (a sparse sum the caller redoes densely).
    pub fn has_negative_zero(&self) -> bool {
        self.cols[..self.cols.len() - 1].iter().any(|c| {
            c.0[..self.classes]
                .iter()
                .any(|v| v.to_bits() == (-0.0f32).to_bits())
        })
    }

    /// Columns (not counting the padding's zero vector).
    pub fn columns(&self) -> usize {
        self.cols.len().saturating_sub(1)
    }

    /// Class rows.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Sets every value to zero.
    pub fn clear(&mut self) {
        self.cols.fill(ClassVector::default());
    }
}

/// The nonzero values of a row-major matrix, laid out for [`Kernels::nonzero_dot_rows`] (every
/// row) and [`Kernels::nonzero_add_outer`] (in the blocks of rows it was built for).
#[derive(Debug, Default)]
pub struct NonzeroRows {
    p: usize,
    /// Per row: its first entry in `row_vals` (one more at the end).
    row_start: Vec<u32>,
    /// Lane by lane in steps of 16: step `s` holds lane `l`'s `s`-th nonzero value.
    row_vals: Vec<f32>,
    /// Each value's column (`p`: padding).
    row_cols: Vec<u16>,
    /// The blocks of rows, in order, and each one's first group.
    blocks: Vec<(usize, usize, u32)>,
    /// Per group of 8 columns: the columns (`p`: padding), the steps, the first entry.
    groups: Vec<([u16; GROUP], u32, u32)>,
    /// Step by step, 8 at a time: each column's value and row in the block (padding: the
    /// block's length, a zero row).
    col_vals: Vec<f32>,
    col_rows: Vec<u16>,
}

impl NonzeroRows {
    /// The layout of `x`'s rows of `p` columns, the gradient's for the blocks of rows `blocks`
    /// (contiguous, in order, together all of `x`'s rows, each at most 1024 rows). `None` where
    /// the layout does not apply: `p` not a multiple of 16 or over 65 535 columns, a block too
    /// long, or more than 2^32 entries.
    pub fn build(x: &[f32], p: usize, blocks: &[(usize, usize)]) -> Option<Self> {
        if p == 0 || !p.is_multiple_of(LANES) || p >= usize::from(u16::MAX) {
            return None;
        }
        let n = x.len() / p;
        let mut at = 0;
        for &(r0, r1) in blocks {
            if r0 != at || r1 < r0 || r1 - r0 > 1024 {
                return None;
            }
            at = r1;
        }
        if at != n {
            return None;
        }
        let mut s = Self {
            p,
            ..Self::default()
        };
        let pad = p as u16;
        let mut lanes: [Vec<u16>; LANES] = Default::default();
        for row in x.chunks_exact(p) {
            s.row_start.push(u32::try_from(s.row_vals.len()).ok()?);
            for lane in &mut lanes {
                lane.clear();
            }
            for (j, v) in row.iter().enumerate() {
                if *v != 0.0 {
                    lanes[j % LANES].push(j as u16);
                }
            }
            let steps = lanes.iter().map(Vec::len).max().unwrap_or(0);
            for step in 0..steps {
                for lane in &lanes {
                    let j = lane.get(step).copied();
                    s.row_vals.push(j.map_or(-0.0, |j| row[usize::from(j)]));
                    s.row_cols.push(j.unwrap_or(pad));
                }
            }
        }
        s.row_start.push(u32::try_from(s.row_vals.len()).ok()?);
        let mut cols: Vec<Vec<u16>> = vec![Vec::new(); p];
        for &(r0, r1) in blocks {
            s.blocks.push((r0, r1, u32::try_from(s.groups.len()).ok()?));
            for c in &mut cols {
                c.clear();
            }
            for (i, row) in x[r0 * p..r1 * p].chunks_exact(p).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    if *v != 0.0 {
                        cols[j].push(i as u16);
                    }
                }
            }
            // Columns of like length together (the lock step pads each group to its longest).
            let mut order: Vec<usize> = (0..p).filter(|&j| !cols[j].is_empty()).collect();
            order.sort_by_key(|&j| std::cmp::Reverse(cols[j].len()));
            let zero_row = (r1 - r0) as u16;
            for group in order.chunks(GROUP) {
                let steps = cols[group[0]].len();
                let mut gcols = [pad; GROUP];
                for (g, &j) in gcols.iter_mut().zip(group) {
                    *g = j as u16;
                }
                let first = u32::try_from(s.col_vals.len()).ok()?;
                s.groups.push((gcols, steps as u32, first));
                for step in 0..steps {
                    for g in 0..GROUP {
                        match group
                            .get(g)
                            .and_then(|&j| cols[j].get(step).map(|&i| (j, i)))
                        {
                            Some((j, i)) => {
                                s.col_vals.push(x[(r0 + usize::from(i)) * p + j]);
                                s.col_rows.push(i);
                            }
                            None => {
                                s.col_vals.push(-0.0);
                                s.col_rows.push(zero_row);
                            }
                        }
                    }
                }
            }
        }
        u32::try_from(s.col_vals.len()).ok()?;
        Some(s)
    }

    /// Columns per row.
    pub fn columns(&self) -> usize {
        self.p
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.row_start.len().saturating_sub(1)
    }

    /// Bytes the layout holds.
    pub fn bytes(&self) -> usize {
        self.row_start.len() * 4
            + self.row_vals.len() * 6
            + self.blocks.len() * 24
            + self.groups.len() * (2 * GROUP + 8)
            + self.col_vals.len() * 6
    }

    fn block_index(&self, r0: usize, r1: usize) -> Option<usize> {
        let b = self.blocks.partition_point(|&(s, _, _)| s < r0);
        let &(s, e, _) = self.blocks.get(b)?;
        (s == r0 && e == r1).then_some(b)
    }
}

thread_local! {
    /// A thread's derivative rows for [`Kernels::nonzero_add_outer`]: a block's rows as class
    /// vectors, then a zero row.
    static DERIVATIVES: std::cell::RefCell<Vec<ClassVector>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Kernels {
    /// Whether this path has the products from nonzero values (x86-64-v4 only).
    pub fn has_nonzero_products(self) -> bool {
        self.is_x86_64_v4()
    }

    /// `z = X W^T` for rows `r0..r1` of `nz` (`z` is `(r1 - r0) x classes`, row-major) with the
    /// floats of [`Kernels::dot_block`] where it returns `true`. `false`: this path has no such
    /// kernel, or a score is `-0.0` (`z` then holds values to be redone densely). The panel must
    /// be finite ([`ClassPanel::finite`]).
    ///
    /// # Panics
    /// If the rows or the panel's columns do not match `nz`, or `z` has the wrong length.
    pub fn nonzero_dot_rows(
        self,
        nz: &NonzeroRows,
        r0: usize,
        r1: usize,
        w: &ClassPanel,
        z: &mut [f32],
    ) -> bool {
        assert!(r0 <= r1 && r1 <= nz.rows(), "nonzero_dot_rows: rows");
        assert_eq!(w.cols.len(), nz.p + 1, "nonzero_dot_rows: panel columns");
        let c = w.classes;
        assert_eq!(z.len(), (r1 - r0) * c, "nonzero_dot_rows: output length");
        if !self.has_nonzero_products() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut exact = true;
            for (r, zr) in (r0..r1).zip(z.chunks_exact_mut(c.max(1))) {
                let (a, b) = (nz.row_start[r] as usize, nz.row_start[r + 1] as usize);
                // SAFETY: `has_nonzero_products` means AVX-512F; every column index is at most
                // `p`, a column of the panel (asserted above); a row's entries are whole steps.
                let sums = unsafe {
                    x86::dot_row(&nz.row_vals[a..b], &nz.row_cols[a..b], w.cols.as_ptr())
                };
                for (out, s) in zr.iter_mut().zip(sums) {
                    *out = s;
                    exact &= s.to_bits() != (-0.0f32).to_bits();
                }
            }
            exact
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// `G += D^T X` for the block of rows `r0..r1` of `nz` (one it was built with), `d` the
    /// block's derivatives (`(r1 - r0) x classes`, row-major), `g` the gradient as a panel, with
    /// the floats of [`Kernels::add_outer_block`] on the same rows, but for `-0.0` (see the
    /// module's doc: a caller checks [`ClassPanel::has_negative_zero`] once it is done). `false`,
    /// `g` untouched: this path has no such kernel, `nz` has no such block, or a derivative is
    /// not finite.
    ///
    /// # Panics
    /// If the panel's columns do not match `nz` or `d` has the wrong length.
    pub fn nonzero_add_outer(
        self,
        nz: &NonzeroRows,
        r0: usize,
        r1: usize,
        d: &[f32],
        g: &mut ClassPanel,
    ) -> bool {
        assert_eq!(g.cols.len(), nz.p + 1, "nonzero_add_outer: panel columns");
        let c = g.classes;
        assert_eq!(
            d.len(),
            (r1 - r0) * c,
            "nonzero_add_outer: derivative length"
        );
        if !self.has_nonzero_products() || !d.iter().all(|v| v.is_finite()) {
            return false;
        }
        let Some(b) = nz.block_index(r0, r1) else {
            return false;
        };
        let groups = {
            let first = nz.blocks[b].2 as usize;
            let end = nz
                .blocks
                .get(b + 1)
                .map_or(nz.groups.len(), |n| n.2 as usize);
            &nz.groups[first..end]
        };
        DERIVATIVES.with_borrow_mut(|rows| {
            rows.clear();
            rows.extend(d.chunks_exact(c.max(1)).map(|di| {
                let mut v = ClassVector::default();
                v.0[..c].copy_from_slice(di);
                v
            }));
            rows.push(ClassVector::default());
            #[cfg(target_arch = "x86_64")]
            for &(cols, steps, first) in groups {
                let (a, len) = (first as usize, steps as usize * GROUP);
                // SAFETY: AVX-512F (above); the columns are at most `p`, a column of `g`
                // (asserted); the rows at most the block's length, the zero row of `rows`.
                unsafe {
                    x86::add_outer_group(
                        &nz.col_vals[a..a + len],
                        &nz.col_rows[a..a + len],
                        rows.as_ptr(),
                        cols,
                        g.cols.as_mut_ptr(),
                    );
                }
            }
        });
        true
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ClassVector, GROUP, LANES};
    use std::arch::x86_64::*;

    /// Bytes of values ahead of the one in use that the products request (indices: half as
    /// many bytes, the same entries).
    const AHEAD: usize = 2048;

    /// One row's scores: the lanes' chains in lock step, then the dense kernel's tree.
    ///
    /// # Safety
    /// AVX-512F; `vals` and `cols` the same whole number of steps of 16; every column a valid
    /// index of `w`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn dot_row(
        vals: &[f32],
        cols: &[u16],
        w: *const ClassVector,
    ) -> [f32; LANES] {
        let mut a = [_mm512_setzero_ps(); LANES];
        for (v, c) in vals.chunks_exact(LANES).zip(cols.chunks_exact(LANES)) {
            // Streams from memory: request the lines AHEAD bytes on (a hint: past the end is
            // harmless).
            _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().cast::<i8>().wrapping_add(AHEAD));
            _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().cast::<i8>().wrapping_add(AHEAD / 2));
            for l in 0..LANES {
                // SAFETY: the caller's column indices are inside `w`.
                let wv = unsafe { _mm512_load_ps(w.add(usize::from(c[l])).cast()) };
                a[l] = _mm512_fmadd_ps(_mm512_set1_ps(v[l]), wv, a[l]);
            }
        }
        let mut b = [_mm512_setzero_ps(); 8];
        for i in 0..8 {
            b[i] = _mm512_add_ps(a[i], a[i + 8]);
        }
        for i in 0..4 {
            b[i] = _mm512_add_ps(b[i], b[i + 4]);
        }
        for i in 0..2 {
            b[i] = _mm512_add_ps(b[i], b[i + 2]);
        }
        let mut out = [0.0f32; LANES];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), _mm512_add_ps(b[0], b[1])) };
        out
    }

    /// One group of eight columns of `G += D^T X`, each column's class vector in a register
    /// while its rows go by in order.
    ///
    /// # Safety
    /// AVX-512F; `vals` and `rows` the same whole number of steps of 8; every row a valid
    /// index of `d`, every column of `g`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn add_outer_group(
        vals: &[f32],
        rows: &[u16],
        d: *const ClassVector,
        cols: [u16; GROUP],
        g: *mut ClassVector,
    ) {
        // SAFETY (every pointer below): the caller's indices are inside `d` and `g`.
        let mut a: [__m512; GROUP] =
            std::array::from_fn(|k| unsafe { _mm512_load_ps(g.add(usize::from(cols[k])).cast()) });
        for (step, (v, r)) in vals
            .chunks_exact(GROUP)
            .zip(rows.chunks_exact(GROUP))
            .enumerate()
        {
            if step % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().cast::<i8>().wrapping_add(AHEAD));
            }
            if step % 4 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(r.as_ptr().cast::<i8>().wrapping_add(AHEAD / 2));
            }
            for k in 0..GROUP {
                let dv = unsafe { _mm512_load_ps(d.add(usize::from(r[k])).cast()) };
                a[k] = _mm512_fmadd_ps(_mm512_set1_ps(v[k]), dv, a[k]);
            }
        }
        for k in 0..GROUP {
            unsafe { _mm512_store_ps(g.add(usize::from(cols[k])).cast(), a[k]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift for test data.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Rows of `p` columns, about `share` of them nonzero, with an all-zero row and a row with
    /// no zero among them.
    fn sparse_rows(n: usize, p: usize, share: f64, seed: &mut u64) -> Vec<f32> {
        let mut x = vec![0.0f32; n * p];
        for (i, row) in x.chunks_exact_mut(p).enumerate() {
            for v in row.iter_mut() {
                let r = rng(seed);
                let keep = i == 1 || (r % 1000) as f64 / 1000.0 < share;
                if i != 0 && keep {
                    *v = ((r >> 20) % 255 + 1) as f32 / 255.0;
                }
            }
        }
        x
    }

    fn blocks_of(n: usize, size: usize) -> Vec<(usize, usize)> {
        (0..n)
            .step_by(size)
            .map(|b| (b, (b + size).min(n)))
            .collect()
    }

    /// Scores and gradient from the nonzero values are the dense block kernels' bit for bit,
    /// block after block, for several class counts and block sizes; paths without the products
    /// say so.
    #[test]
    fn nonzero_products_match_the_dense_block_kernels() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (p, c, size, share) in [(48, 10, 37, 0.2), (16, 3, 5, 0.5), (64, 16, 64, 0.05)] {
            let n = 203;
            let x = sparse_rows(n, p, share, &mut seed);
            let stride = p + 1;
            let w: Vec<f32> = (0..c * stride)
                .map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let blocks = blocks_of(n, size);
            let nz = NonzeroRows::build(&x, p, &blocks).expect("a layout");
            assert_eq!((nz.rows(), nz.columns()), (n, p));
            let panel = ClassPanel::from_rows(&w, stride, p, c);
            assert!(panel.finite());
            for k in Kernels::available() {
                let mut g_dense = vec![0.0f32; c * stride];
                let mut g = ClassPanel::zeros(p, c);
                for &(r0, r1) in &blocks {
                    let mut zd = vec![0.0f32; (r1 - r0) * c];
                    k.dot_block(&x[r0 * p..r1 * p], p, &w, stride, c, &mut zd, &[]);
                    let mut zs = vec![1.0f32; (r1 - r0) * c];
                    let ran = k.nonzero_dot_rows(&nz, r0, r1, &panel, &mut zs);
                    assert_eq!(ran, k.has_nonzero_products(), "{}", k.name());
                    let d: Vec<f32> = zd.iter().map(|z| z * 0.37 - 0.01).collect();
                    k.add_outer_block(&mut g_dense, stride, c, &d, &x[r0 * p..r1 * p], p, &[]);
                    let added = k.nonzero_add_outer(&nz, r0, r1, &d, &mut g);
                    assert_eq!(added, ran);
                    if ran {
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&zs),
                            bits(&zd),
                            "scores of rows {r0}..{r1}, p {p}, c {c}"
                        );
                    }
                }
                if k.has_nonzero_products() {
                    assert!(!g.has_negative_zero());
                    let mut out = vec![0.0f32; c * stride];
                    g.write_rows(&mut out, stride);
                    for k in 0..c {
                        for j in 0..p {
                            let (a, b) = (out[k * stride + j], g_dense[k * stride + j]);
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "gradient ({k}, {j}), p {p}, c {c}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The one way the sums can differ from the dense kernels', a `-0.0` where the dense sum
    /// is `+0.0`, is reported: a score as `false`, a gradient by `has_negative_zero`.
    #[test]
    fn negative_zero_sums_are_reported() {
        let Some(k) = Kernels::named("x86-64-v4") else {
            return; // No AVX-512 here: no such products to check (the test above checks that).
        };
        // Every lane: a product that rounds to -0.0, then a zero value (the dense kernel's
        // `fma(0, +1, -0.0)` makes +0.0; the sparse chain skips it and stays -0.0).
        let (p, c) = (32, 1);
        let mut x = vec![0.0f32; p];
        x[..16].fill(1e-30);
        let mut w = vec![1.0f32; p + 1];
        w[..16].fill(-1e-30);
        let nz = NonzeroRows::build(&x, p, &[(0, 1)]).unwrap();
        let panel = ClassPanel::from_rows(&w, p + 1, p, c);
        let mut zd = [7.0f32];
        k.dot_block(&x, p, &w, p + 1, c, &mut zd, &[]);
        assert_eq!(zd[0].to_bits(), 0.0f32.to_bits());
        let mut zs = [7.0f32];
        assert!(!k.nonzero_dot_rows(&nz, 0, 1, &panel, &mut zs));
        assert_eq!(zs[0].to_bits(), (-0.0f32).to_bits());
        // The gradient: row 0 gives -0.0 in column 0, row 1's zero in that column +0.0 densely.
        let x = {
            let mut x = vec![0.0f32; 2 * p];
            x[0] = 1e-30;
            x[p + 1] = 1.0;
            x
        };
        let d = [-1e-30f32, 1.0];
        let nz = NonzeroRows::build(&x, p, &[(0, 2)]).unwrap();
        let mut g_dense = vec![0.0f32; p + 1];
        k.add_outer_block(&mut g_dense, p + 1, 1, &d, &x, p, &[]);
        assert_eq!(g_dense[0].to_bits(), 0.0f32.to_bits());
        let mut g = ClassPanel::zeros(p, 1);
        assert!(k.nonzero_add_outer(&nz, 0, 2, &d, &mut g));
        assert!(g.has_negative_zero());
    }

    /// A derivative that is not finite (whose product with a zero is NaN in the dense sum)
    /// leaves the gradient untouched and says so; so does a block the layout was not built with.
    #[test]
    fn non_finite_derivatives_and_unknown_blocks_are_declined() {
        let Some(k) = Kernels::named("x86-64-v4") else {
            return;
        };
        let p = 16;
        let x = vec![0.5f32; 4 * p];
        let nz = NonzeroRows::build(&x, p, &[(0, 2), (2, 4)]).unwrap();
        let mut g = ClassPanel::zeros(p, 2);
        assert!(!k.nonzero_add_outer(&nz, 0, 2, &[1.0, f32::INFINITY, 0.0, 1.0], &mut g));
        assert!(!k.nonzero_add_outer(&nz, 0, 2, &[1.0, f32::NAN, 0.0, 1.0], &mut g));
        assert!(!k.nonzero_add_outer(&nz, 1, 3, &[1.0; 4], &mut g));
        let mut out = vec![1.0f32; 2 * (p + 1)];
        g.write_rows(&mut out, p + 1);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, v)| *v == 0.0 || i % (p + 1) == p)
        );
        assert!(k.nonzero_add_outer(&nz, 2, 4, &[1.0; 4], &mut g));
        assert!(!ClassPanel::from_rows(&[f32::INFINITY; 17], 17, 16, 1).finite());
    }

    /// The layout declines shapes it does not cover.
    #[test]
    fn build_declines_other_shapes() {
        let x = vec![1.0f32; 4 * 20];
        assert!(
            NonzeroRows::build(&x, 20, &[(0, 4)]).is_none(),
            "20 columns"
        );
        let x = vec![1.0f32; 4 * 16];
        assert!(
            NonzeroRows::build(&x, 16, &[(0, 3)]).is_none(),
            "rows left out"
        );
        assert!(
            NonzeroRows::build(&x, 16, &[(0, 2), (3, 4)]).is_none(),
            "a gap"
        );
        assert!(NonzeroRows::build(&x, 16, &[(0, 2), (2, 4)]).is_some());
        let x = vec![1.0f32; 1100 * 16];
        assert!(
            NonzeroRows::build(&x, 16, &[(0, 1100)]).is_none(),
            "a block over 1024 rows"
        );
    }
}
