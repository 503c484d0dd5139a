//! Fused multi-output passes over a node's state, for the error-feedback trigger rules.

use crate::Kernels;
use pulp::{Simd, WithSimd};

/// An exponential moving average `x <- a * g + b * x` updated during an [`Kernels::ef_scan`].
#[derive(Debug)]
pub struct Ema<'a> {
    /// The average, updated in place.
    pub x: &'a mut [f32],
    /// Weight of the new gradient.
    pub a: f32,
    /// Weight of the old average.
    pub b: f32,
}

/// The norms an [`Kernels::ef_scan`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScanNorms {
    /// `||g||^2`.
    pub g_sq: f32,
    /// `||e + alpha g - v||^2`.
    pub innovation_sq: f32,
    /// `||x_new||^2` of each average (0 where none was given).
    pub ema_sq: [f32; 2],
}

/// The error-feedback memory after a skip, `e + alpha g - q`, written during an
/// [`Kernels::ef_scan`] into `out` (so that a skip needs no second pass over the state).
#[derive(Debug)]
pub struct SkipUpdate<'a> {
    /// The update a skip applies (the drift q); may be the same slice as the scan's `v`.
    pub q: &'a [f32],
    /// Receives `e + alpha g - q`, element-wise bit-identical to [`Kernels::ef_update`].
    pub out: &'a mut [f32],
}

struct Scan<'a, const E1: bool, const E2: bool, const SKIP: bool> {
    e: &'a [f32],
    alpha: f32,
    g: &'a [f32],
    v: &'a [f32],
    ema: [Option<Ema<'a>>; 2],
    skip: Option<SkipUpdate<'a>>,
}

impl<const E1: bool, const E2: bool, const SKIP: bool> WithSimd for Scan<'_, E1, E2, SKIP> {
    type Output = ScanNorms;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> ScanNorms {
        let n = self.g.len();
        let (es, _) = S::as_simd_f32s(self.e);
        let (gs, _) = S::as_simd_f32s(self.g);
        let (vs, _) = S::as_simd_f32s(self.v);
        let head = gs.len() * S::F32_LANES;
        let [m1, m2] = self.ema;
        let (mut x1, a1, b1) = m1.map_or((&mut [][..], 0.0, 0.0), |m| (m.x, m.a, m.b));
        let (mut x2, a2, b2) = m2.map_or((&mut [][..], 0.0, 0.0), |m| (m.x, m.a, m.b));
        let alpha = simd.splat_f32s(self.alpha);
        let (sa1, sb1) = (simd.splat_f32s(a1), simd.splat_f32s(b1));
        let (sa2, sb2) = (simd.splat_f32s(a2), simd.splat_f32s(b2));
        let zero = simd.splat_f32s(0.0);
        let (mut g_acc, mut d_acc, mut m1_acc, mut m2_acc) = (zero, zero, zero, zero);
        let (skip_q, mut skip_out): (&[f32], &mut [f32]) = match self.skip {
            Some(SkipUpdate { q, out }) if SKIP => (q, out),
            _ => (&[], &mut []),
        };
        // When q is v, the skip update is the innovation vector itself.
        let q_is_v = std::ptr::eq(skip_q, self.v);
        {
            let (x1s, _) = S::as_mut_simd_f32s(if E1 { &mut *x1 } else { &mut [] });
            let (x2s, _) = S::as_mut_simd_f32s(if E2 { &mut *x2 } else { &mut [] });
            let (qs, _) = S::as_simd_f32s(skip_q);
            let (outs, _) = S::as_mut_simd_f32s(&mut *skip_out);
            for i in 0..gs.len() {
                let g = gs[i];
                g_acc = simd.mul_add_f32s(g, g, g_acc);
                let t = simd.mul_add_f32s(alpha, g, es[i]);
                let d = simd.sub_f32s(t, vs[i]);
                d_acc = simd.mul_add_f32s(d, d, d_acc);
                if SKIP {
                    outs[i] = if q_is_v { d } else { simd.sub_f32s(t, qs[i]) };
                }
                if E1 {
                    let x = simd.mul_add_f32s(sa1, g, simd.mul_f32s(sb1, x1s[i]));
                    x1s[i] = x;
                    m1_acc = simd.mul_add_f32s(x, x, m1_acc);
                }
                if E2 {
                    let x = simd.mul_add_f32s(sa2, g, simd.mul_f32s(sb2, x2s[i]));
                    x2s[i] = x;
                    m2_acc = simd.mul_add_f32s(x, x, m2_acc);
                }
            }
        }
        let mut out = ScanNorms {
            g_sq: simd.reduce_sum_f32s(g_acc),
            innovation_sq: simd.reduce_sum_f32s(d_acc),
            ema_sq: [simd.reduce_sum_f32s(m1_acc), simd.reduce_sum_f32s(m2_acc)],
        };
        for i in head..n {
            let g = self.g[i];
            out.g_sq = g.mul_add(g, out.g_sq);
            let t = self.alpha.mul_add(g, self.e[i]);
            let d = t - self.v[i];
            out.innovation_sq = d.mul_add(d, out.innovation_sq);
            if SKIP {
                skip_out[i] = t - skip_q[i];
            }
            if E1 {
                let x = a1.mul_add(g, b1 * x1[i]);
                x1[i] = x;
                out.ema_sq[0] = x.mul_add(x, out.ema_sq[0]);
            }
            if E2 {
                let x = a2.mul_add(g, b2 * x2[i]);
                x2[i] = x;
                out.ema_sq[1] = x.mul_add(x, out.ema_sq[1]);
            }
        }
        // Keep the borrow checker aware that the averages were written.
        let _ = (&mut x1, &mut x2, &mut skip_out);
        out
    }
}

impl Kernels {
    /// One pass over a node's state: `||g||^2`, the trigger norm `||e + alpha g - v||^2`, up to
    /// two exponential averages `x <- a g + b x` updated in place with their new squared norms,
    /// and optionally the memory a skip would leave, `e + alpha g - q`, into `skip.out`.
    ///
    /// This replaces six separate passes of LENA's node step (gradient norm, innovation,
    /// momentum drift, running average and its norm, and the skip's memory update). Each
    /// average is updated element-wise with the same operation as [`Kernels::axpby`] and the
    /// skip memory as [`Kernels::ef_update`], so both are bit-identical to those; the norms are
    /// summed in another order than [`Kernels::norm2_sq`] and may differ in the last bits.
    ///
    /// # Panics
    /// If any slice's length differs from `g`'s.
    pub fn ef_scan(
        self,
        e: &[f32],
        alpha: f32,
        g: &[f32],
        v: &[f32],
        ema1: Option<Ema<'_>>,
        ema2: Option<Ema<'_>>,
        skip: Option<SkipUpdate<'_>>,
    ) -> ScanNorms {
        let n = g.len();
        assert!(e.len() == n && v.len() == n, "ef_scan: length mismatch");
        for m in [&ema1, &ema2].into_iter().flatten() {
            assert_eq!(m.x.len(), n, "ef_scan: average length mismatch");
        }
        if let Some(s) = &skip {
            assert!(
                s.q.len() == n && s.out.len() == n,
                "ef_scan: skip length mismatch"
            );
        }
        fn scan<const E1: bool, const E2: bool, const SKIP: bool>(
            k: Kernels,
            e: &[f32],
            alpha: f32,
            g: &[f32],
            v: &[f32],
            ema: [Option<Ema<'_>>; 2],
            skip: Option<SkipUpdate<'_>>,
        ) -> ScanNorms {
            k.run(Scan::<E1, E2, SKIP> {
                e,
                alpha,
                g,
                v,
                ema,
                skip,
            })
        }
        let ema = [ema1, ema2];
        match (ema[0].is_some(), ema[1].is_some(), skip.is_some()) {
            (false, false, false) => scan::<false, false, false>(self, e, alpha, g, v, ema, skip),
            (true, false, false) => scan::<true, false, false>(self, e, alpha, g, v, ema, skip),
            (false, true, false) => scan::<false, true, false>(self, e, alpha, g, v, ema, skip),
            (true, true, false) => scan::<true, true, false>(self, e, alpha, g, v, ema, skip),
            (false, false, true) => scan::<false, false, true>(self, e, alpha, g, v, ema, skip),
            (true, false, true) => scan::<true, false, true>(self, e, alpha, g, v, ema, skip),
            (false, true, true) => scan::<false, true, true>(self, e, alpha, g, v, ema, skip),
            (true, true, true) => scan::<true, true, true>(self, e, alpha, g, v, ema, skip),
        }
    }
}
