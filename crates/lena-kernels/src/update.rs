//! In-place updates: axpy, axpby, scale and the fused error-feedback update.

use crate::Kernels;
use pulp::{Simd, WithSimd};

struct Axpby<'a> {
    a: f32,
    x: &'a [f32],
    b: f32,
    y: &'a mut [f32],
}

impl WithSimd for Axpby<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (xs, xt) = S::as_simd_f32s(self.x);
        let (ys, yt) = S::as_mut_simd_f32s(self.y);
        let a = simd.splat_f32s(self.a);
        if self.b == 1.0 {
            // PERF: the common axpy case skips one multiply per lane.
            for (y, x) in ys.iter_mut().zip(xs) {
                *y = simd.mul_add_f32s(a, *x, *y);
            }
            for (y, x) in yt.iter_mut().zip(xt) {
                *y = self.a.mul_add(*x, *y);
            }
        } else {
            let b = simd.splat_f32s(self.b);
            for (y, x) in ys.iter_mut().zip(xs) {
                *y = simd.mul_add_f32s(a, *x, simd.mul_f32s(b, *y));
            }
            for (y, x) in yt.iter_mut().zip(xt) {
                *y = self.a.mul_add(*x, self.b * *y);
            }
        }
    }
}

struct Scale<'a> {
    a: f32,
    x: &'a mut [f32],
}

impl WithSimd for Scale<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (xs, xt) = S::as_mut_simd_f32s(self.x);
        let a = simd.splat_f32s(self.a);
        for x in xs {
            *x = simd.mul_f32s(a, *x);
        }
        for x in xt {
            *x *= self.a;
        }
    }
}

struct EfUpdate<'a> {
    e: &'a mut [f32],
    alpha: f32,
    g: &'a [f32],
    v: &'a [f32],
}

impl WithSimd for EfUpdate<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (es, et) = S::as_mut_simd_f32s(self.e);
        let (gs, gt) = S::as_simd_f32s(self.g);
        let (vs, vt) = S::as_simd_f32s(self.v);
        let a = simd.splat_f32s(self.alpha);
        let mut acc0 = simd.splat_f32s(0.0);
        let mut acc1 = simd.splat_f32s(0.0);
        let (e2, e1) = pulp::as_arrays_mut::<2, _>(es);
        let (g2, g1) = pulp::as_arrays::<2, _>(gs);
        let (v2, v1) = pulp::as_arrays::<2, _>(vs);
        for (([e0, e1_], [g0, g1_]), [v0, v1_]) in e2.iter_mut().zip(g2).zip(v2) {
            *e0 = simd.sub_f32s(simd.mul_add_f32s(a, *g0, *e0), *v0);
            *e1_ = simd.sub_f32s(simd.mul_add_f32s(a, *g1_, *e1_), *v1_);
            acc0 = simd.mul_add_f32s(*e0, *e0, acc0);
            acc1 = simd.mul_add_f32s(*e1_, *e1_, acc1);
        }
        for ((e, g), v) in e1.iter_mut().zip(g1).zip(v1) {
            *e = simd.sub_f32s(simd.mul_add_f32s(a, *g, *e), *v);
            acc0 = simd.mul_add_f32s(*e, *e, acc0);
        }
        let mut r = simd.reduce_sum_f32s(simd.add_f32s(acc0, acc1));
        for ((e, g), v) in et.iter_mut().zip(gt).zip(vt) {
            *e = self.alpha.mul_add(*g, *e) - v;
            r = e.mul_add(*e, r);
        }
        r
    }
}

/// `acc <- acc + fl(scale * rows[0]) + fl(scale * rows[1]) + ...`, the rows added in order,
/// each product rounded before its sum (no fused multiply-add), a tile of `acc` held in
/// registers while every row streams past it.
struct SumRows<'a> {
    acc: &'a mut [f32],
    scale: f32,
    rows: &'a [&'a [f32]],
}

impl WithSimd for SumRows<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // PERF: rows in groups of G, each group streamed once past tiles of T vectors of `acc`
        // held in registers: G sequential streams are what the hardware prefetcher follows
        // (all 200 rows at once are not), and `acc` is loaded and stored once per group
        // instead of once per row. The order of the sums per coordinate is unchanged.
        const T: usize = 4;
        const G: usize = 8;
        let s = simd.splat_f32s(self.scale);
        let one = self.scale == 1.0;
        let (acc_s, acc_t) = S::as_mut_simd_f32s(self.acc);
        let head = acc_s.len() * S::F32_LANES;
        for group in self.rows.chunks(G) {
            let rs: [&[S::f32s]; G] =
                std::array::from_fn(|i| group.get(i).map_or(&[][..], |r| S::as_simd_f32s(r).0));
            let (tiles, rest) = pulp::as_arrays_mut::<T, _>(&mut *acc_s);
            for (t, tile) in tiles.iter_mut().enumerate() {
                let mut a = *tile;
                for r in &rs[..group.len()] {
                    for j in 0..T {
                        let x = r[T * t + j];
                        let p = if one { x } else { simd.mul_f32s(s, x) };
                        a[j] = simd.add_f32s(a[j], p);
                    }
                }
                *tile = a;
            }
            let base = tiles.len() * T;
            for (j, a) in rest.iter_mut().enumerate() {
                for r in &rs[..group.len()] {
                    let x = r[base + j];
                    let p = if one { x } else { simd.mul_f32s(s, x) };
                    *a = simd.add_f32s(*a, p);
                }
            }
        }
        for (j, a) in acc_t.iter_mut().enumerate() {
            for r in self.rows {
                *a += self.scale * r[head + j];
            }
        }
    }
}

impl Kernels {
    /// `y <- a * x + y`.
    ///
    /// # Panics
    /// If `x` and `y` differ in length.
    #[inline]
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy: length mismatch");
        self.run(Axpby { a, x, b: 1.0, y })
    }

    /// `acc[i] <- acc[i] + fl(scale * rows[0][i]) + fl(scale * rows[1][i]) + ...`, the rows
    /// in order and each product rounded before it is added: the same floats as one
    /// `acc[i] += scale * row[i]` loop per row, with `acc` read and written once (a server
    /// summing its nodes' uploads over a block of coordinates).
    ///
    /// # Panics
    /// If a row's length differs from `acc`'s.
    pub fn sum_rows(self, acc: &mut [f32], scale: f32, rows: &[&[f32]]) {
        for r in rows {
            assert_eq!(r.len(), acc.len(), "sum_rows: row length");
        }
        self.run(SumRows { acc, scale, rows })
    }

    /// `y <- a * x + b * y`.
    ///
    /// # Panics
    /// If `x` and `y` differ in length.
    #[inline]
    pub fn axpby(self, a: f32, x: &[f32], b: f32, y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpby: length mismatch");
        self.run(Axpby { a, x, b, y })
    }

    /// `x <- a * x`.
    #[inline]
    pub fn scale(self, a: f32, x: &mut [f32]) {
        self.run(Scale { a, x })
    }

    /// Fused error-feedback update `e <- e + alpha * g - v`, returning `||e_new||^2`.
    ///
    /// This is step 5 of LENA (`e = u - v` with `u = e + alpha g`) and the residual update of
    /// error-feedback compressors, done in one pass with the new memory's norm for free.
    ///
    /// # Panics
    /// If the three slices differ in length.
    #[inline]
    pub fn ef_update(self, e: &mut [f32], alpha: f32, g: &[f32], v: &[f32]) -> f32 {
        assert_eq!(e.len(), g.len(), "ef_update: length mismatch");
        assert_eq!(e.len(), v.len(), "ef_update: length mismatch");
        self.run(EfUpdate { e, alpha, g, v })
    }
}

/// `out <- b * base + sum_k c[k] * rows[k]` for exactly `N` rows, one pass over `out`.
struct LinComb<'a, const N: usize> {
    out: &'a mut [f32],
    b: f32,
    base: Option<&'a [f32]>,
    c: [f32; N],
    rows: [&'a [f32]; N],
}

impl<const N: usize> WithSimd for LinComb<'_, N> {
    /// `||base||^2` when `base` is given (read in the same pass), else 0.
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let len = self.out.len();
        let head = len / S::F32_LANES * S::F32_LANES;
        let rows_s: [&[S::f32s]; N] = self.rows.map(|r| S::as_simd_f32s(r).0);
        let c_s: [S::f32s; N] = self.c.map(|c| simd.splat_f32s(c));
        let b_s = simd.splat_f32s(self.b);
        let (os, ot) = S::as_mut_simd_f32s(self.out);
        let mut base_sq = 0.0f32;
        // `base` is either a separate slice or `out` itself (accumulating passes).
        match self.base {
            Some(base) => {
                let (bs, _) = S::as_simd_f32s(base);
                let mut sq = simd.splat_f32s(0.0);
                for (i, (o, bv)) in os.iter_mut().zip(bs).enumerate() {
                    let mut acc = simd.mul_f32s(b_s, *bv);
                    sq = simd.mul_add_f32s(*bv, *bv, sq);
                    for k in 0..N {
                        acc = simd.mul_add_f32s(c_s[k], rows_s[k][i], acc);
                    }
                    *o = acc;
                }
                base_sq = simd.reduce_sum_f32s(sq);
            }
            None => {
                for (i, o) in os.iter_mut().enumerate() {
                    let mut acc = simd.mul_f32s(b_s, *o);
                    for k in 0..N {
                        acc = simd.mul_add_f32s(c_s[k], rows_s[k][i], acc);
                    }
                    *o = acc;
                }
            }
        }
        for (j, o) in ot.iter_mut().enumerate() {
            let idx = head + j;
            let mut acc = self.b * self.base.map_or(*o, |b| b[idx]);
            if let Some(b) = self.base {
                base_sq = b[idx].mul_add(b[idx], base_sq);
            }
            for k in 0..N {
                acc = self.c[k].mul_add(self.rows[k][idx], acc);
            }
            *o = acc;
        }
        base_sq
    }
}

/// [`LinComb`] with a base for two outputs at once, sharing the rows (each row element loaded
/// once for both): each output bit-identical to [`LinComb`]'s, and both bases' squared norms.
/// `NORMS`: also sum `||base[h]||^2` (two of the loop's ten vector operations at three rows);
/// without them, each output is written on its own with its stores on vector boundaries.
struct LinComb2<'a, const N: usize, const NORMS: bool> {
    out: [&'a mut [f32]; 2],
    b: f32,
    base: [&'a [f32]; 2],
    c: [[f32; N]; 2],
    rows: [&'a [f32]; N],
}

impl<const N: usize, const NORMS: bool> WithSimd for LinComb2<'_, N, NORMS> {
    type Output = [f32; 2];
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f32; 2] {
        // PERF: without the norms, each output on its own with its stores on vector
        // boundaries. A gradient's class rows (785 floats) start on a cache line one time in
        // sixteen, and a 64-byte store across two lines made this loop 1.6-1.8x slower
        // (Intel Xeon, AVX-512 and AVX2 alike); the loads the two outputs then do not share
        // cost less. The norms' lanes fix where the vectors start, so they keep the shared loop.
        if !NORMS {
            for (h, out) in self.out.into_iter().enumerate() {
                lin_comb_stores_aligned(simd, out, self.b, self.base[h], &self.c[h], &self.rows);
            }
            return [0.0; 2];
        }
        let [out0, out1] = self.out;
        let len = out0.len();
        let head = len / S::F32_LANES * S::F32_LANES;
        let (o0s, o0t) = S::as_mut_simd_f32s(out0);
        let (o1s, o1t) = S::as_mut_simd_f32s(out1);
        // Every slice cut to the loop's length first, so that no index in the loop is
        // checked: the checks and the pointers they kept out of registers (reloaded from the
        // stack in every iteration) cost more than the loop's arithmetic on AMD Zen 4.
        let n = o0s.len();
        let o1s = &mut o1s[..n];
        let rows_s: [&[S::f32s]; N] = self.rows.map(|r| &S::as_simd_f32s(r).0[..n]);
        let c0: [S::f32s; N] = self.c[0].map(|c| simd.splat_f32s(c));
        let c1: [S::f32s; N] = self.c[1].map(|c| simd.splat_f32s(c));
        let b_s = simd.splat_f32s(self.b);
        let b0s = &S::as_simd_f32s(self.base[0]).0[..n];
        let b1s = &S::as_simd_f32s(self.base[1]).0[..n];
        let (mut sq0, mut sq1) = (simd.splat_f32s(0.0), simd.splat_f32s(0.0));
        for i in 0..n {
            let (v0, v1) = (b0s[i], b1s[i]);
            let mut acc0 = simd.mul_f32s(b_s, v0);
            let mut acc1 = simd.mul_f32s(b_s, v1);
            if NORMS {
                sq0 = simd.mul_add_f32s(v0, v0, sq0);
                sq1 = simd.mul_add_f32s(v1, v1, sq1);
            }
            for k in 0..N {
                let x = rows_s[k][i];
                acc0 = simd.mul_add_f32s(c0[k], x, acc0);
                acc1 = simd.mul_add_f32s(c1[k], x, acc1);
            }
            o0s[i] = acc0;
            o1s[i] = acc1;
        }
        let mut sq = [simd.reduce_sum_f32s(sq0), simd.reduce_sum_f32s(sq1)];
        for (j, (o0, o1)) in o0t.iter_mut().zip(o1t.iter_mut()).enumerate() {
            let idx = head + j;
            for (h, o) in [o0, o1].into_iter().enumerate() {
                let v = self.base[h][idx];
                let mut acc = self.b * v;
                if NORMS {
                    sq[h] = v.mul_add(v, sq[h]);
                }
                for k in 0..N {
                    acc = self.c[h][k].mul_add(self.rows[k][idx], acc);
                }
                *o = acc;
            }
        }
        sq
    }
}

/// `out <- b * base + sum_k c[k] * rows[k]` as [`LinComb`] sums each element, with the vector
/// stores on vector boundaries: the first elements up to `out`'s first boundary and the last
/// short of a whole vector one by one (the same operations on one lane), the loads wherever
/// the other slices fall.
#[inline(always)]
fn lin_comb_stores_aligned<S: Simd, const N: usize>(
    simd: S,
    out: &mut [f32],
    b: f32,
    base: &[f32],
    c: &[f32; N],
    rows: &[&[f32]; N],
) {
    #[inline(always)]
    fn one<const N: usize>(
        b: f32,
        base: &[f32],
        c: &[f32; N],
        rows: &[&[f32]; N],
        j: usize,
    ) -> f32 {
        let mut acc = b * base[j];
        for k in 0..N {
            acc = c[k].mul_add(rows[k][j], acc);
        }
        acc
    }
    let len = out.len();
    let peel = out
        .as_ptr()
        .align_offset(std::mem::size_of::<S::f32s>())
        .min(len);
    for (j, o) in out[..peel].iter_mut().enumerate() {
        *o = one(b, base, c, rows, j);
    }
    let (os, ot) = S::as_mut_simd_f32s(&mut out[peel..]);
    let n = os.len();
    let bs = &S::as_simd_f32s(&base[peel..]).0[..n];
    let xs: [&[S::f32s]; N] = rows.map(|r| &S::as_simd_f32s(&r[peel..]).0[..n]);
    let cs: [S::f32s; N] = c.map(|c| simd.splat_f32s(c));
    let b_s = simd.splat_f32s(b);
    for i in 0..n {
        let mut acc = simd.mul_f32s(b_s, bs[i]);
        for k in 0..N {
            acc = simd.mul_add_f32s(cs[k], xs[k][i], acc);
        }
        os[i] = acc;
    }
    let from = peel + n * S::F32_LANES;
    for (j, o) in ot.iter_mut().enumerate() {
        *o = one(b, base, c, rows, from + j);
    }
}

/// [`Kernels::lin_comb_classes`] for exactly `N` rows.
struct LinCombClasses<'a, const N: usize> {
    g: &'a mut [f32],
    stride: usize,
    b: f32,
    w: &'a [f32],
    coef: &'a [f32],
    rows: [&'a [f32]; N],
}

impl<const N: usize> WithSimd for LinCombClasses<'_, N> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            g,
            stride,
            b,
            w,
            coef,
            rows,
        } = self;
        let lanes = S::F32_LANES;
        // One row at least (`lin_comb_classes`).
        let p = rows[0].len();
        let classes = coef.len() / N;
        let whole = p / lanes;
        let xs: [&[S::f32s]; N] = rows.map(|r| &S::as_simd_f32s(r).0[..whole]);
        let b_s = simd.splat_f32s(b);
        // PERF: each vector of the rows loaded once for every class (registers), where one
        // class at a time read all the rows again from L2 for each class.
        for i in 0..whole {
            let x: [S::f32s; N] = std::array::from_fn(|k| xs[k][i]);
            for class in 0..classes {
                let at = class * stride + i * lanes;
                let c = &coef[class * N..class * N + N];
                let mut acc = simd.mul_f32s(b_s, S::as_simd_f32s(&w[at..at + lanes]).0[0]);
                for k in 0..N {
                    acc = simd.mul_add_f32s(simd.splat_f32s(c[k]), x[k], acc);
                }
                S::as_mut_simd_f32s(&mut g[at..at + lanes]).0[0] = acc;
            }
        }
        for class in 0..classes {
            let c = &coef[class * N..class * N + N];
            for f in whole * lanes..p {
                let at = class * stride + f;
                let mut acc = b * w[at];
                for k in 0..N {
                    acc = c[k].mul_add(rows[k][f], acc);
                }
                g[at] = acc;
            }
        }
    }
}

impl Kernels {
    /// [`Kernels::lin_comb`] for two outputs sharing the rows (at most four): `out[h] <- b *
    /// base[h] + sum_k c[h][k] * rows[k]`, each bit-identical to `lin_comb`'s, with each row
    /// read once for both (the gradient of two classes). Returns `||base[h]||^2`.
    ///
    /// # Panics
    /// If there are more than four rows, `c[h]` and `rows` differ in length, or a slice's
    /// length differs from `out[0]`'s.
    pub fn lin_comb2(
        self,
        out: [&mut [f32]; 2],
        b: f32,
        base: [&[f32]; 2],
        c: [&[f32]; 2],
        rows: &[&[f32]],
    ) -> [f32; 2] {
        self.lin_comb2_with::<true>(out, b, base, c, rows)
    }

    /// [`Kernels::lin_comb2`] without the norms of `base` (a gradient whose loss value is not
    /// wanted): the same outputs, bit for bit, each written with its vector stores on vector
    /// boundaries wherever it starts.
    ///
    /// # Panics
    /// As [`Kernels::lin_comb2`].
    pub fn lin_comb2_without_norms(
        self,
        out: [&mut [f32]; 2],
        b: f32,
        base: [&[f32]; 2],
        c: [&[f32]; 2],
        rows: &[&[f32]],
    ) {
        self.lin_comb2_with::<false>(out, b, base, c, rows);
    }

    #[inline(always)]
    fn lin_comb2_with<const NORMS: bool>(
        self,
        out: [&mut [f32]; 2],
        b: f32,
        base: [&[f32]; 2],
        c: [&[f32]; 2],
        rows: &[&[f32]],
    ) -> [f32; 2] {
        let n = out[0].len();
        assert!(rows.len() <= 4, "lin_comb2: at most four rows");
        assert!(
            c[0].len() == rows.len() && c[1].len() == rows.len(),
            "lin_comb2: coefficient count"
        );
        assert!(
            out[1].len() == n && base[0].len() == n && base[1].len() == n,
            "lin_comb2: length mismatch"
        );
        for r in rows {
            assert_eq!(r.len(), n, "lin_comb2: row length");
        }
        // Without the norms on AVX-512: each output's first and last elements as one masked
        // vector each (`x86::lin_comb_masked`), not one by one.
        #[cfg(target_arch = "x86_64")]
        if !NORMS && !rows.is_empty() && self.is_x86_64_v4() {
            macro_rules! masked {
                ($n:literal) => {{
                    let rows: &[&[f32]; $n] = rows.try_into().expect("row count");
                    for (h, out) in out.into_iter().enumerate() {
                        let c: &[f32; $n] = c[h].try_into().expect("coefficient count");
                        // SAFETY: the x86-64-v4 path proves AVX-512F; every slice is n long (above).
                        unsafe { x86::lin_comb_masked::<$n>(out, b, base[h], c, rows) };
                    }
                }};
            }
            match rows.len() {
                1 => masked!(1),
                2 => masked!(2),
                3 => masked!(3),
                _ => masked!(4),
            }
            return [0.0; 2];
        }
        macro_rules! go {
            ($n:literal) => {
                self.run(LinComb2::<$n, NORMS> {
                    out,
                    b,
                    base,
                    c: [
                        std::array::from_fn(|k| c[0][k]),
                        std::array::from_fn(|k| c[1][k]),
                    ],
                    rows: std::array::from_fn(|k| rows[k]),
                })
            };
        }
        match rows.len() {
            0 => go!(0),
            1 => go!(1),
            2 => go!(2),
            3 => go!(3),
            _ => go!(4),
        }
    }

    /// [`Kernels::lin_comb`] for every class of a linear model at once, without the norms: for
    /// each class `h < coef.len() / rows.len()` and feature `f < p` (the rows' length),
    /// `g[h * stride + f] <- b * w[h * stride + f] + sum_k coef[h * rows.len() + k] *
    /// rows[k][f]`, each element bit for bit `lin_comb`'s of that class's slice (the same
    /// chain of one product and fused multiply-adds in `k` order). `g[h * stride + p..]` up to
    /// the next class is not written (a gradient's bias). At most sixteen rows.
    ///
    /// PERF: the gradient of a minibatch of up to sixteen rows: each vector of the rows is
    /// loaded once for all classes, where `lin_comb` per class read every row again for each
    /// class (fifteen rows are 47 KB, so from L2: figure 1's minibatches of fifteen).
    ///
    /// # Panics
    /// If there are no rows or more than sixteen, the rows differ in length, `coef`'s length is
    /// not a multiple of the row count, `stride` is less than `p`, or `g` or `w` is shorter than
    /// the last class's features need.
    pub fn lin_comb_classes(
        self,
        g: &mut [f32],
        stride: usize,
        b: f32,
        w: &[f32],
        coef: &[f32],
        rows: &[&[f32]],
    ) {
        let n = rows.len();
        assert!(
            (1..=16).contains(&n),
            "lin_comb_classes: one to sixteen rows"
        );
        let p = rows[0].len();
        assert!(
            rows.iter().all(|r| r.len() == p),
            "lin_comb_classes: row lengths"
        );
        assert_eq!(coef.len() % n, 0, "lin_comb_classes: coefficient count");
        assert!(stride >= p, "lin_comb_classes: stride shorter than a row");
        let classes = coef.len() / n;
        if classes == 0 {
            return;
        }
        let need = (classes - 1) * stride + p;
        assert!(
            g.len() >= need && w.len() >= need,
            "lin_comb_classes: g or w too short"
        );
        macro_rules! go {
            ($($k:literal)+) => {
                match n {
                    $($k => self.run(LinCombClasses::<$k> {
                        g,
                        stride,
                        b,
                        w,
                        coef,
                        rows: std::array::from_fn(|i| rows[i]),
                    }),)+
                    _ => unreachable!("one to sixteen rows"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }

    /// `out <- b * base + sum_k c[k] * rows[k]` (a small linear combination of rows), each
    /// element rounded once per term: `acc = b * base`, then `acc = fma(c[k], rows[k], acc)` in
    /// `k` order. Rows are taken four at a time, so `out` is written `ceil(rows / 4)` times.
    ///
    /// This is the gradient of a linear model on a small minibatch (`base` = the weights, `b` =
    /// the L2 penalty, `c` = the loss derivatives over the batch size, `rows` = the samples)
    /// without the overhead of a matrix product.
    ///
    /// Returns `||base||^2`, summed in the same pass (the L2 penalty's value costs no extra
    /// pass over the weights); it may differ from [`Kernels::norm2_sq`]'s in the last bits.
    ///
    /// # Panics
    /// If `c` and `rows` differ in length or a slice's length differs from `out`'s.
    pub fn lin_comb(
        self,
        out: &mut [f32],
        b: f32,
        base: &[f32],
        c: &[f32],
        rows: &[&[f32]],
    ) -> f32 {
        assert_eq!(c.len(), rows.len(), "lin_comb: coefficient count");
        assert_eq!(base.len(), out.len(), "lin_comb: base length");
        for r in rows {
            assert_eq!(r.len(), out.len(), "lin_comb: row length");
        }
        let mut first = true;
        let mut k = 0;
        let mut base_sq = 0.0;
        while k < rows.len() || first {
            let n = (rows.len() - k).min(4);
            let (b, base) = if first { (b, Some(base)) } else { (1.0, None) };
            let out = &mut *out;
            base_sq += match n {
                0 => self.run(LinComb::<0> {
                    out,
                    b,
                    base,
                    c: [],
                    rows: [],
                }),
                1 => self.run(LinComb::<1> {
                    out,
                    b,
                    base,
                    c: [c[k]],
                    rows: [rows[k]],
                }),
                2 => self.run(LinComb::<2> {
                    out,
                    b,
                    base,
                    c: [c[k], c[k + 1]],
                    rows: [rows[k], rows[k + 1]],
                }),
                3 => self.run(LinComb::<3> {
                    out,
                    b,
                    base,
                    c: [c[k], c[k + 1], c[k + 2]],
                    rows: [rows[k], rows[k + 1], rows[k + 2]],
                }),
                _ => self.run(LinComb::<4> {
                    out,
                    b,
                    base,
                    c: [c[k], c[k + 1], c[k + 2], c[k + 3]],
                    rows: [rows[k], rows[k + 1], rows[k + 2], rows[k + 3]],
                }),
            };
            first = false;
            k += n;
        }
        base_sq
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::lin_comb_stores_aligned`] on AVX-512 with the elements before `out`'s first
    /// vector boundary and after its last whole vector each done as one vector under a mask
    /// (masked loads and store), where the generic loop does them one by one. The same
    /// operations on each element in the same order: bit for bit the generic loop's outputs.
    ///
    /// PERF: a gradient's class rows (784 weights) start one float further on a cache line per
    /// class, so each of the ten has a head and a tail of 15 elements between them, which one
    /// by one cost about as much as its 48 whole vectors: a minibatch gradient of three rows
    /// and ten classes 1.08 -> 0.79 us, of one row 0.78 -> 0.70 us (Intel Xeon, family 6 model
    /// 167).
    ///
    /// # Safety
    /// The CPU must have AVX-512F (and FMA, which every AVX-512 CPU has). `base` and every row
    /// must be `out.len()` long.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn lin_comb_masked<const N: usize>(
        out: &mut [f32],
        b: f32,
        base: &[f32],
        c: &[f32; N],
        rows: &[&[f32]; N],
    ) {
        let len = out.len();
        assert!(base.len() == len && rows.iter().all(|r| r.len() == len));
        let bs = _mm512_set1_ps(b);
        let cs: [__m512; N] = std::array::from_fn(|k| _mm512_set1_ps(c[k]));
        // Elements j..j + count (count <= 16) in one vector's first lanes, loaded and stored
        // under a mask: the same operations as a whole vector's, on fewer lanes.
        let masked = |out: &mut [f32], j: usize, count: usize| {
            assert!(count <= 16 && j + count <= len);
            let m: __mmask16 = ((1u32 << count) - 1) as u16;
            // SAFETY: lanes 0..count touch elements j..j + count of each slice, all in
            // bounds (asserted); the masked lanes are not accessed.
            unsafe {
                let mut acc = _mm512_mul_ps(bs, _mm512_maskz_loadu_ps(m, base.as_ptr().add(j)));
                for k in 0..N {
                    let x = _mm512_maskz_loadu_ps(m, rows[k].as_ptr().add(j));
                    acc = _mm512_fmadd_ps(cs[k], x, acc);
                }
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, acc);
            }
        };
        // An f32 pointer is 4-aligned, so its first 64-byte boundary is fewer than 16 on.
        let peel = out.as_ptr().align_offset(64).min(len);
        if peel > 0 {
            masked(out, 0, peel);
        }
        let n = (len - peel) / 16;
        // SAFETY: vector i covers elements peel + 16 i .. peel + 16 (i + 1) <= len of out, base
        // and each row; out's are on a 64-byte boundary (peel).
        unsafe {
            let op = out.as_mut_ptr().add(peel);
            let bp = base.as_ptr().add(peel);
            let xp: [*const f32; N] = std::array::from_fn(|k| rows[k].as_ptr().add(peel));
            for i in 0..n {
                let mut acc = _mm512_mul_ps(bs, _mm512_loadu_ps(bp.add(16 * i)));
                for k in 0..N {
                    acc = _mm512_fmadd_ps(cs[k], _mm512_loadu_ps(xp[k].add(16 * i)), acc);
                }
                _mm512_store_ps(op.add(16 * i), acc);
            }
        }
        let from = peel + 16 * n;
        if from < len {
            masked(out, from, len - from);
        }
    }
}
