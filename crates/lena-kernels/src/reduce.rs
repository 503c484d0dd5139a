//! Reductions: dot, squared norm, squared distance, and the fused trigger norm.

use crate::Kernels;
use pulp::{Simd, WithSimd};

// PERF: every reduction keeps four independent accumulators so that the FMA latency (4 cycles)
// is hidden behind throughput; `#[inline(always)]` on `with_simd` lets pulp compile the body
// once per instruction set inside its target-feature context.

struct Dot<'a> {
    x: &'a [f32],
    y: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (xs, xt) = S::as_simd_f32s(self.x);
        let (ys, yt) = S::as_simd_f32s(self.y);
        let (x4, x1) = pulp::as_arrays::<4, _>(xs);
        let (y4, y1) = pulp::as_arrays::<4, _>(ys);
        let mut acc = [simd.splat_f32s(0.0); 4];
        for ([a0, a1, a2, a3], [b0, b1, b2, b3]) in x4.iter().zip(y4) {
            acc[0] = simd.mul_add_f32s(*a0, *b0, acc[0]);
            acc[1] = simd.mul_add_f32s(*a1, *b1, acc[1]);
            acc[2] = simd.mul_add_f32s(*a2, *b2, acc[2]);
            acc[3] = simd.mul_add_f32s(*a3, *b3, acc[3]);
        }
        for (a, b) in x1.iter().zip(y1) {
            acc[0] = simd.mul_add_f32s(*a, *b, acc[0]);
        }
        let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut r = simd.reduce_sum_f32s(s);
        for (a, b) in xt.iter().zip(yt) {
            r = a.mul_add(*b, r);
        }
        r
    }
}

struct Dist2<'a> {
    x: &'a [f32],
    y: &'a [f32],
}

impl WithSimd for Dist2<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (xs, xt) = S::as_simd_f32s(self.x);
        let (ys, yt) = S::as_simd_f32s(self.y);
        let (x4, x1) = pulp::as_arrays::<4, _>(xs);
        let (y4, y1) = pulp::as_arrays::<4, _>(ys);
        let mut acc = [simd.splat_f32s(0.0); 4];
        for ([a0, a1, a2, a3], [b0, b1, b2, b3]) in x4.iter().zip(y4) {
            let d0 = simd.sub_f32s(*a0, *b0);
            let d1 = simd.sub_f32s(*a1, *b1);
            let d2 = simd.sub_f32s(*a2, *b2);
            let d3 = simd.sub_f32s(*a3, *b3);
            acc[0] = simd.mul_add_f32s(d0, d0, acc[0]);
            acc[1] = simd.mul_add_f32s(d1, d1, acc[1]);
            acc[2] = simd.mul_add_f32s(d2, d2, acc[2]);
            acc[3] = simd.mul_add_f32s(d3, d3, acc[3]);
        }
        for (a, b) in x1.iter().zip(y1) {
            let d = simd.sub_f32s(*a, *b);
            acc[0] = simd.mul_add_f32s(d, d, acc[0]);
        }
        let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut r = simd.reduce_sum_f32s(s);
        for (a, b) in xt.iter().zip(yt) {
            let d = a - b;
            r = d.mul_add(d, r);
        }
        r
    }
}

struct LinDist2<'a> {
    e: &'a [f32],
    alpha: f32,
    g: &'a [f32],
    v: &'a [f32],
}

impl WithSimd for LinDist2<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (es, et) = S::as_simd_f32s(self.e);
        let (gs, gt) = S::as_simd_f32s(self.g);
        let (vs, vt) = S::as_simd_f32s(self.v);
        let (e4, e1) = pulp::as_arrays::<4, _>(es);
        let (g4, g1) = pulp::as_arrays::<4, _>(gs);
        let (v4, v1) = pulp::as_arrays::<4, _>(vs);
        let a = simd.splat_f32s(self.alpha);
        let mut acc = [simd.splat_f32s(0.0); 4];
        for (([e0, e1_, e2, e3], [g0, g1_, g2, g3]), [v0, v1_, v2, v3]) in e4.iter().zip(g4).zip(v4)
        {
            let d0 = simd.sub_f32s(simd.mul_add_f32s(a, *g0, *e0), *v0);
            let d1 = simd.sub_f32s(simd.mul_add_f32s(a, *g1_, *e1_), *v1_);
            let d2 = simd.sub_f32s(simd.mul_add_f32s(a, *g2, *e2), *v2);
            let d3 = simd.sub_f32s(simd.mul_add_f32s(a, *g3, *e3), *v3);
            acc[0] = simd.mul_add_f32s(d0, d0, acc[0]);
            acc[1] = simd.mul_add_f32s(d1, d1, acc[1]);
            acc[2] = simd.mul_add_f32s(d2, d2, acc[2]);
            acc[3] = simd.mul_add_f32s(d3, d3, acc[3]);
        }
        for ((e, g), v) in e1.iter().zip(g1).zip(v1) {
            let d = simd.sub_f32s(simd.mul_add_f32s(a, *g, *e), *v);
            acc[0] = simd.mul_add_f32s(d, d, acc[0]);
        }
        let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut r = simd.reduce_sum_f32s(s);
        for ((e, g), v) in et.iter().zip(gt).zip(vt) {
            let d = self.alpha.mul_add(*g, *e) - v;
            r = d.mul_add(d, r);
        }
        r
    }
}

impl Kernels {
    /// Inner product `x . y`.
    ///
    /// # Panics
    /// If `x` and `y` differ in length.
    #[inline]
    pub fn dot(self, x: &[f32], y: &[f32]) -> f32 {
        assert_eq!(x.len(), y.len(), "dot: length mismatch");
        self.run(Dot { x, y })
    }

    /// Squared Euclidean norm `||x||^2`.
    #[inline]
    pub fn norm2_sq(self, x: &[f32]) -> f32 {
        self.run(Dot { x, y: x })
    }

    /// Squared distance `||x - y||^2` without a temporary.
    ///
    /// # Panics
    /// If `x` and `y` differ in length.
    #[inline]
    pub fn dist2_sq(self, x: &[f32], y: &[f32]) -> f32 {
        assert_eq!(x.len(), y.len(), "dist2_sq: length mismatch");
        self.run(Dist2 { x, y })
    }

    /// The trigger rules' fused norm `||e + alpha * g - v||^2`, read in one pass, no temporary.
    ///
    /// # Panics
    /// If the three slices differ in length.
    #[inline]
    pub fn lin_dist2_sq(self, e: &[f32], alpha: f32, g: &[f32], v: &[f32]) -> f32 {
        assert_eq!(e.len(), g.len(), "lin_dist2_sq: length mismatch");
        assert_eq!(e.len(), v.len(), "lin_dist2_sq: length mismatch");
        self.run(LinDist2 { e, alpha, g, v })
    }
}

/// `out[k] = rows[k] . y` for exactly `N` rows, reading `y` once.
struct DotRows<'a, const N: usize> {
    rows: [&'a [f32]; N],
    y: &'a [f32],
}

impl<const N: usize> WithSimd for DotRows<'_, N> {
    type Output = [f32; N];
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [f32; N] {
        let (ys, yt) = S::as_simd_f32s(self.y);
        let head = ys.len() * S::F32_LANES;
        let xs: [&[S::f32s]; N] = self.rows.map(|r| S::as_simd_f32s(r).0);
        // Two accumulators per row: 2N independent FMA chains.
        let mut acc0 = [simd.splat_f32s(0.0); N];
        let mut acc1 = [simd.splat_f32s(0.0); N];
        let pairs = ys.len() / 2;
        for i in 0..pairs {
            let (y0, y1) = (ys[2 * i], ys[2 * i + 1]);
            for k in 0..N {
                acc0[k] = simd.mul_add_f32s(xs[k][2 * i], y0, acc0[k]);
                acc1[k] = simd.mul_add_f32s(xs[k][2 * i + 1], y1, acc1[k]);
            }
        }
        if ys.len() % 2 == 1 {
            let y0 = ys[ys.len() - 1];
            for k in 0..N {
                acc0[k] = simd.mul_add_f32s(xs[k][ys.len() - 1], y0, acc0[k]);
            }
        }
        let mut out = [0.0f32; N];
        for k in 0..N {
            let mut r = simd.reduce_sum_f32s(simd.add_f32s(acc0[k], acc1[k]));
            for (j, y) in yt.iter().enumerate() {
                r = self.rows[k][head + j].mul_add(*y, r);
            }
            out[k] = r;
        }
        out
    }
}

/// [`DotRows`] for two `y` at once (each sample row loaded once for both), with the same
/// accumulators and summation order, so each result is bit-identical to [`DotRows`]'s.
struct DotRows2<'a, const N: usize> {
    rows: [&'a [f32]; N],
    y: [&'a [f32]; 2],
}

impl<const N: usize> WithSimd for DotRows2<'_, N> {
    type Output = [[f32; N]; 2];
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> [[f32; N]; 2] {
        let (ya, yat) = S::as_simd_f32s(self.y[0]);
        let (yb, ybt) = S::as_simd_f32s(self.y[1]);
        let head = ya.len() * S::F32_LANES;
        let xs: [&[S::f32s]; N] = self.rows.map(|r| S::as_simd_f32s(r).0);
        let zero = simd.splat_f32s(0.0);
        let (mut a0, mut a1) = ([zero; N], [zero; N]);
        let (mut b0, mut b1) = ([zero; N], [zero; N]);
        let pairs = ya.len() / 2;
        // The vectors in pairs, every slice cut to the loop's length first, so that no index
        // in the loop is checked (the checks cost a tenth of a minibatch gradient: AMD Zen 4).
        let ya2 = &ya.as_chunks::<2>().0[..pairs];
        let yb2 = &yb.as_chunks::<2>().0[..pairs];
        let xs2: [&[[S::f32s; 2]]; N] = xs.map(|x| &x.as_chunks::<2>().0[..pairs]);
        for i in 0..pairs {
            let [ya0, ya1] = ya2[i];
            let [yb0, yb1] = yb2[i];
            for k in 0..N {
                let [x0, x1] = xs2[k][i];
                a0[k] = simd.mul_add_f32s(x0, ya0, a0[k]);
                a1[k] = simd.mul_add_f32s(x1, ya1, a1[k]);
                b0[k] = simd.mul_add_f32s(x0, yb0, b0[k]);
                b1[k] = simd.mul_add_f32s(x1, yb1, b1[k]);
            }
        }
        if ya.len() % 2 == 1 {
            let last = ya.len() - 1;
            for k in 0..N {
                a0[k] = simd.mul_add_f32s(xs[k][last], ya[last], a0[k]);
                b0[k] = simd.mul_add_f32s(xs[k][last], yb[last], b0[k]);
            }
        }
        let mut out = [[0.0f32; N]; 2];
        for k in 0..N {
            let mut r = simd.reduce_sum_f32s(simd.add_f32s(a0[k], a1[k]));
            for (j, y) in yat.iter().enumerate() {
                r = self.rows[k][head + j].mul_add(*y, r);
            }
            out[0][k] = r;
            let mut r = simd.reduce_sum_f32s(simd.add_f32s(b0[k], b1[k]));
            for (j, y) in ybt.iter().enumerate() {
                r = self.rows[k][head + j].mul_add(*y, r);
            }
            out[1][k] = r;
        }
        out
    }
}

/// `N` rows against every class row of `w` (class `c` at `c * stride`, as long as the rows),
/// in one dispatch: the classes in pairs as [`DotRows2`], a last odd one as [`DotRows`], so
/// each result is bit-identical to theirs. `out[k * classes + c]` is row `k`'s with class `c`.
struct DotRowsClasses<'a, const N: usize> {
    rows: [&'a [f32]; N],
    w: &'a [f32],
    stride: usize,
    classes: usize,
    out: &'a mut [f32],
}

impl<const N: usize> WithSimd for DotRowsClasses<'_, N> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            rows,
            w,
            stride,
            classes,
            out,
        } = self;
        let len = rows[0].len();
        let y = |c: usize| &w[c * stride..c * stride + len];
        let mut c = 0;
        while c + 1 < classes {
            let r = DotRows2 {
                rows,
                y: [y(c), y(c + 1)],
            }
            .with_simd(simd);
            for k in 0..N {
                out[k * classes + c] = r[0][k];
                out[k * classes + c + 1] = r[1][k];
            }
            c += 2;
        }
        if c < classes {
            let r = DotRows { rows, y: y(c) }.with_simd(simd);
            for k in 0..N {
                out[k * classes + c] = r[k];
            }
        }
    }
}

impl Kernels {
    /// [`Kernels::dot_rows`] against two vectors: `out0[k] = rows[k] . y0`, `out1[k] = rows[k]
    /// . y1`, each bit-identical to `dot_rows`'s result, with each row read once for both
    /// (the scores of a small minibatch against two classes).
    ///
    /// # Panics
    /// If `out0`, `out1` and `rows` differ in length or a row's length differs from `y0`'s or
    /// `y1`'s.
    pub fn dot_rows2(self, rows: &[&[f32]], y: [&[f32]; 2], out: [&mut [f32]; 2]) {
        let [out0, out1] = out;
        assert!(
            rows.len() == out0.len() && rows.len() == out1.len(),
            "dot_rows2: output length"
        );
        assert_eq!(y[0].len(), y[1].len(), "dot_rows2: vector lengths");
        for r in rows {
            assert_eq!(r.len(), y[0].len(), "dot_rows2: row length");
        }
        for ((rows, o0), o1) in rows
            .chunks(4)
            .zip(out0.chunks_mut(4))
            .zip(out1.chunks_mut(4))
        {
            macro_rules! go {
                ($n:literal) => {{
                    let r = self.run(DotRows2::<$n> {
                        rows: std::array::from_fn(|k| rows[k]),
                        y,
                    });
                    o0.copy_from_slice(&r[0]);
                    o1.copy_from_slice(&r[1]);
                }};
            }
            match rows.len() {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                _ => go!(4),
            }
        }
    }

    /// Every row against every class row of `w`: `out[k * classes + c] = rows[k] . w_c`, where
    /// `w_c` is `w[c * stride..]` as long as the rows (a linear model's class weights with their
    /// bias between them). Each result is bit-identical to [`Kernels::dot_rows2`]'s for the
    /// class pairs (0, 1), (2, 3), ... and to [`Kernels::dot_rows`]'s for a last odd class.
    ///
    /// PERF: one dispatch for all classes and up to four rows, where a call per pair of
    /// classes paid the dispatch, the checks and the copies out five times for MNIST's ten
    /// (the scores of a minibatch of three rows, a twelfth of LENA's round at M = 200).
    ///
    /// # Panics
    /// If the rows differ in length, `out` is not `rows.len() * classes` long, or `w` is too
    /// short for the last class.
    pub fn dot_rows_classes(
        self,
        rows: &[&[f32]],
        w: &[f32],
        stride: usize,
        classes: usize,
        out: &mut [f32],
    ) {
        assert_eq!(
            out.len(),
            rows.len() * classes,
            "dot_rows_classes: output length"
        );
        let len = rows.first().map_or(0, |r| r.len());
        for r in rows {
            assert_eq!(r.len(), len, "dot_rows_classes: row length");
        }
        if classes == 0 {
            return;
        }
        assert!(
            (classes - 1) * stride + len <= w.len(),
            "dot_rows_classes: the class rows run past w"
        );
        for (rows, out) in rows.chunks(4).zip(out.chunks_mut(4 * classes)) {
            macro_rules! go {
                ($n:literal) => {
                    self.run(DotRowsClasses::<$n> {
                        rows: std::array::from_fn(|k| rows[k]),
                        w,
                        stride,
                        classes,
                        out,
                    })
                };
            }
            match rows.len() {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                _ => go!(4),
            }
        }
    }

    /// `out[k] = rows[k] . y` for every row, reading `y` once per four rows.
    ///
    /// The scores of a small minibatch against one class's weights, without a matrix product.
    /// Each result may differ from [`Kernels::dot`]'s in the last bits (another summation order).
    ///
    /// # Panics
    /// If `out` and `rows` differ in length or a row's length differs from `y`'s.
    pub fn dot_rows(self, rows: &[&[f32]], y: &[f32], out: &mut [f32]) {
        assert_eq!(rows.len(), out.len(), "dot_rows: output length");
        for r in rows {
            assert_eq!(r.len(), y.len(), "dot_rows: row length");
        }
        for (rows, out) in rows.chunks(4).zip(out.chunks_mut(4)) {
            match rows.len() {
                1 => out.copy_from_slice(&self.run(DotRows::<1> { rows: [rows[0]], y })),
                2 => out.copy_from_slice(&self.run(DotRows::<2> {
                    rows: [rows[0], rows[1]],
                    y,
                })),
                3 => out.copy_from_slice(&self.run(DotRows::<3> {
                    rows: [rows[0], rows[1], rows[2]],
                    y,
                })),
                _ => out.copy_from_slice(&self.run(DotRows::<4> {
                    rows: [rows[0], rows[1], rows[2], rows[3]],
                    y,
                })),
            }
        }
    }
}
