//! 2 x 2 max-pooling with stride 2 and its adjoint (a CNN's pooling layers).
//!
//! No arithmetic: the maxima are chosen by the same strict comparisons in the same order on
//! every path, so every path gives the same floats and positions bit for bit (signed zeros and
//! NaNs included), which the tests check against [`crate::reference::max_pool2`].

use crate::Kernels;

impl Kernels {
    /// 2 x 2 max-pooling with stride 2 of `planes` planes of `h x w` floats (`x`, row-major, one
    /// plane after another) into `y` (`planes` planes of `h / 2 x w / 2`); an odd last row or
    /// column is not read. Each window is scanned in the order (0, 0), (0, 1), (1, 0), (1, 1)
    /// with strict comparisons: the first maximum wins a tie, and a NaN only as the window's
    /// first value. With `argmax`, each maximum's position in its window (`2 di + dj`) is
    /// recorded there, a byte per pooled value.
    ///
    /// # Panics
    /// If `x` holds fewer than `planes h w` floats, or `y` (or `argmax`) fewer than
    /// `planes (h / 2) (w / 2)` values.
    pub fn max_pool2(
        self,
        planes: usize,
        h: usize,
        w: usize,
        x: &[f32],
        y: &mut [f32],
        argmax: Option<&mut [u8]>,
    ) {
        let (ho, wo) = (h / 2, w / 2);
        let (x, y) = (&x[..planes * h * w], &mut y[..planes * ho * wo]);
        let Some(am) = argmax.map(|a| &mut a[..planes * ho * wo]) else {
            // PERF: the maxima alone are one `maxps` each (`v > m ? v : m` is its definition),
            // which the compiler's loop does four windows at a time, faster than this crate's
            // AVX-512 and AVX2 steps with the same data (they take longer to gather each
            // window's four values; Intel Xeon family 6 model 207).
            pool_values(h, w, x, y);
            return;
        };
        // PERF: rows of fewer than eight windows (the paper's second pooling, four) go faster
        // through the compiler's loop, as does every row on AVX2 (an AVX2 step was slower).
        #[cfg(target_arch = "x86_64")]
        if self.is_x86_64_v4() && wo >= 8 {
            // SAFETY: the x86-64-v4 path proves AVX-512 F, BW and VL.
            unsafe { x86::pool_avx512(planes, h, w, x, y, am) };
            return;
        }
        pool_with_positions(h, w, x, y, am);
    }

    /// The adjoint of [`Kernels::max_pool2`]: each pooled value's gradient `dy` at the position
    /// `argmax` recorded for it in `dx` (`planes` planes of `h x w`), zero everywhere else (an
    /// odd last row or column included). Every float of `dx` is written.
    ///
    /// # Panics
    /// If `dx` holds fewer than `planes h w` floats, or `dy` or `argmax` fewer than
    /// `planes (h / 2) (w / 2)` values.
    pub fn max_pool2_adjoint(
        self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        argmax: &[u8],
        dx: &mut [f32],
    ) {
        let (ho, wo) = (h / 2, w / 2);
        let dx = &mut dx[..planes * h * w];
        let (dy, argmax) = (&dy[..planes * ho * wo], &argmax[..planes * ho * wo]);
        #[cfg(target_arch = "x86_64")]
        if self.is_x86_64_v4() {
            // SAFETY: the x86-64-v4 path proves AVX-512 F, BW and VL.
            unsafe { x86::adjoint_avx512(planes, h, w, dy, argmax, dx) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.is_x86_64_v3() {
            // SAFETY: the x86-64-v3 path proves AVX2.
            unsafe { x86::adjoint_avx2(planes, h, w, dy, argmax, dx) };
            return;
        }
        adjoint(h, w, dy, argmax, dx);
    }
}

/// [`Kernels::max_pool2`] without positions, in plain loops.
#[inline(always)]
fn pool_values(h: usize, w: usize, x: &[f32], y: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 {
        return;
    }
    for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(ho * wo)) {
        for (rows, yr) in xp.chunks_exact(2 * w).zip(yp.chunks_exact_mut(wo)) {
            let (r0, r1) = rows.split_at(w);
            let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            for (yj, (t, u)) in yr.iter_mut().zip(pairs) {
                let mut m = t[0];
                for v in [t[1], u[0], u[1]] {
                    m = if v > m { v } else { m };
                }
                *yj = m;
            }
        }
    }
}

/// [`Kernels::max_pool2`] with positions, in plain loops.
#[inline(always)]
fn pool_with_positions(h: usize, w: usize, x: &[f32], y: &mut [f32], am: &mut [u8]) {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 {
        return;
    }
    let out = y
        .chunks_exact_mut(ho * wo)
        .zip(am.chunks_exact_mut(ho * wo));
    for (xp, (yp, ap)) in x.chunks_exact(h * w).zip(out) {
        let rows = xp.chunks_exact(2 * w);
        for (rows, (yr, ar)) in rows.zip(yp.chunks_exact_mut(wo).zip(ap.chunks_exact_mut(wo))) {
            let (r0, r1) = rows.split_at(w);
            // PERF: selects instead of branches (data-dependent, mispredicted half the time).
            let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            for ((yj, aj), (t, u)) in yr.iter_mut().zip(ar.iter_mut()).zip(pairs) {
                let (mut m, mut best) = (t[0], 0u8);
                for (a, v) in [(1u8, t[1]), (2, u[0]), (3, u[1])] {
                    let gt = v > m;
                    m = if gt { v } else { m };
                    best = if gt { a } else { best };
                }
                *yj = m;
                *aj = best;
            }
        }
    }
}

/// [`Kernels::max_pool2_adjoint`] in plain loops. PERF: every value of `dx` written once, by
/// selects, rather than zeroed and then scattered to (the paper's first pooling: 3.2 us of a
/// training sample's 100 on AMD EPYC Zen 1).
#[inline(always)]
fn adjoint(h: usize, w: usize, dy: &[f32], am: &[u8], dx: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 {
        dx.fill(0.0);
        return;
    }
    let planes_out = dy.chunks_exact(ho * wo).zip(am.chunks_exact(ho * wo));
    for (xp, (yp, ap)) in dx.chunks_exact_mut(h * w).zip(planes_out) {
        let (pairs, odd_row) = xp.split_at_mut(2 * ho * w);
        odd_row.fill(0.0);
        for (rows, (yr, ar)) in pairs
            .chunks_exact_mut(2 * w)
            .zip(yp.chunks_exact(wo).zip(ap.chunks_exact(wo)))
        {
            let (r0, r1) = rows.split_at_mut(w);
            r0[2 * wo..].fill(0.0);
            r1[2 * wo..].fill(0.0);
            let windows = r0.chunks_exact_mut(2).zip(r1.chunks_exact_mut(2));
            for ((t, u), (&d, &a)) in windows.zip(yr.iter().zip(ar)) {
                t[0] = if a == 0 { d } else { 0.0 };
                t[1] = if a == 1 { d } else { 0.0 };
                u[0] = if a == 2 { d } else { 0.0 };
                u[1] = if a == 3 { d } else { 0.0 };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::prefix::avx2_first_lanes as first_lanes;
    use std::arch::x86_64::*;

    /// [`super::pool_with_positions`] on AVX-512: eight windows of a pair of rows at a time.
    /// Each row's 16 floats are loaded twice, the second time one float on, so that the even
    /// lanes hold each window's four values; they are compared there in the scalar order, the
    /// even lanes then gathered into eight. Positions are bytes, chosen by the comparisons'
    /// masks.
    ///
    /// PERF: the compiler's loops on the paper's network took 4-8% of a training step (one
    /// window at a time, bytes widened one by one); shuffles in place of the second loads, and
    /// positions in 32-bit lanes, were slower (Intel Xeon family 6 model 207).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL. `x` must hold `planes h w` floats, `y` and `am`
    /// `planes (h / 2) (w / 2)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pool_avx512(
        planes: usize,
        h: usize,
        w: usize,
        x: &[f32],
        y: &mut [f32],
        am: &mut [u8],
    ) {
        let (ho, wo) = (h / 2, w / 2);
        assert!(x.len() >= planes * h * w && y.len() >= planes * ho * wo);
        assert!(am.len() >= planes * ho * wo);
        for p in 0..planes {
            for i in 0..ho {
                let (r0, r1) = (p * h * w + 2 * i * w, p * h * w + (2 * i + 1) * w);
                let o = (p * ho + i) * wo;
                let mut j = 0;
                while j + 8 <= wo {
                    // SAFETY: the row pair's floats 2j..2j + 16 <= 2 wo <= w, the pooled values
                    // o + j..o + j + 8 (below).
                    unsafe { pool_step_avx512(x, r0, r1, y, am, o, j, 8) };
                    j += 8;
                }
                if j < wo {
                    // SAFETY: as above, for the wo - j < 8 windows left.
                    unsafe { pool_step_avx512(x, r0, r1, y, am, o, j, wo - j) };
                }
            }
        }
    }

    /// Windows `j..j + n` (`n <= 8`) of the rows at `r0` and `r1` of `x` into pooled values
    /// `o + j..` of `y` and their positions into `am`.
    ///
    /// # Safety
    /// AVX-512 F, BW and VL; floats `r0 + 2j..r0 + 2(j + n)` and the same from `r1` inside `x`,
    /// values `o + j..o + j + n` inside `y` and `am`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // One step of the loop above, inlined there.
    unsafe fn pool_step_avx512(
        x: &[f32],
        r0: usize,
        r1: usize,
        y: &mut [f32],
        am: &mut [u8],
        o: usize,
        j: usize,
        n: usize,
    ) {
        debug_assert!(n <= 8 && r0.max(r1) + 2 * (j + n) <= x.len() && o + j + n <= y.len());
        // Lanes 0..2n of each row; the loads one float on stop at the row's last (lane 2n - 1
        // is an odd lane, whose value is not used).
        let pairs = ((1u32 << (2 * n)) - 1) as u16;
        let (on, outs) = (pairs >> 1, ((1u32 << n) - 1) as u16);
        // SAFETY: the masked lanes are neither read nor written; the others are in bounds
        // (the caller's contract).
        unsafe {
            // Lane k < 8 takes lane 2k (the lanes past eight are not stored).
            let evens = _mm512_set_epi32(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0);
            let (xa, xb) = (x.as_ptr().add(r0 + 2 * j), x.as_ptr().add(r1 + 2 * j));
            let t0 = _mm512_maskz_loadu_ps(pairs, xa);
            let t1 = _mm512_maskz_loadu_ps(on, xa.add(1));
            let u0 = _mm512_maskz_loadu_ps(pairs, xb);
            let u1 = _mm512_maskz_loadu_ps(on, xb.add(1));
            let mut m = t0;
            let mut best = _mm_setzero_si128();
            for (v, at) in [(t1, 1), (u0, 2), (u1, 3)] {
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m);
                m = _mm512_mask_mov_ps(m, gt, v);
                best = _mm_mask_mov_epi8(best, gt, _mm_set1_epi8(at));
            }
            // Byte k < 8 takes byte 2k.
            let evens8 = _mm_set_epi8(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0);
            let best = _mm_shuffle_epi8(best, evens8);
            _mm_mask_storeu_epi8(am.as_mut_ptr().add(o + j).cast(), outs, best);
            let m = _mm512_permutexvar_ps(evens, m);
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(o + j), outs, m);
        }
    }

    /// The loops of the adjoint's vector paths: for each pair of rows (at `r0` and `r1` of
    /// its plane, their pooled values from `o`), `step(plane, r0, r1, o, j)` writes the windows
    /// from `j` on, as many as it returns (at least one); then the columns past the windows,
    /// and an odd last row, are zeroed as in [`super::adjoint`].
    #[inline(always)]
    fn adjoint_rows(
        planes: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        am: &[u8],
        dx: &mut [f32],
        mut step: impl FnMut(&mut [f32], usize, usize, usize, usize) -> usize,
    ) {
        let (ho, wo) = (h / 2, w / 2);
        assert!(dx.len() >= planes * h * w);
        assert!(dy.len() >= planes * ho * wo && am.len() >= planes * ho * wo);
        for p in 0..planes {
            let plane = &mut dx[p * h * w..][..h * w];
            for i in 0..ho {
                let (r0, r1) = (2 * i * w, (2 * i + 1) * w);
                let mut j = 0;
                while j < wo {
                    j += step(plane, r0, r1, (p * ho + i) * wo, j);
                }
                // PERF: not for an even width (a call to memset of nothing, twice a row).
                if 2 * wo < w {
                    plane[r0 + 2 * wo..r0 + w].fill(0.0);
                    plane[r1 + 2 * wo..r1 + w].fill(0.0);
                }
            }
            if 2 * ho < h {
                plane[2 * ho * w..].fill(0.0);
            }
        }
    }

    /// [`super::adjoint`] on AVX-512: eight pooled values at a time, each gradient doubled into
    /// two lanes and kept where the recorded position is the lane's (`0, 1` in the upper row,
    /// `2, 3` in the lower: the positions' bytes doubled and compared), zero elsewhere.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL. `dx` must hold `planes h w` floats, `dy` and
    /// `am` `planes (h / 2) (w / 2)` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn adjoint_avx512(
        planes: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        am: &[u8],
        dx: &mut [f32],
    ) {
        let wo = w / 2;
        let twice = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let twice8 = _mm_set_epi8(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
        let upper = _mm_set_epi8(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
        let lower = _mm_add_epi8(upper, _mm_set1_epi8(2));
        let step = |plane: &mut [f32], r0: usize, r1: usize, o: usize, j: usize| {
            let n = (wo - j).min(8);
            let (outs, pairs) = (((1u32 << n) - 1) as u16, ((1u32 << (2 * n)) - 1) as u16);
            // SAFETY: the loads read pooled values o + j..o + j + n of dy and am (in bounds,
            // `adjoint_rows` asserts), the stores floats 2j..2(j + n) <= w of the rows at r0
            // and r1 of the plane; the masked lanes are neither read nor written.
            unsafe {
                let d = _mm512_maskz_loadu_ps(outs, dy.as_ptr().add(o + j));
                let a = _mm_maskz_loadu_epi8(outs, am.as_ptr().add(o + j).cast());
                let d = _mm512_permutexvar_ps(twice, d);
                let a = _mm_shuffle_epi8(a, twice8);
                let t = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(a, upper), d);
                let u = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(a, lower), d);
                _mm512_mask_storeu_ps(plane.as_mut_ptr().add(r0 + 2 * j), pairs, t);
                _mm512_mask_storeu_ps(plane.as_mut_ptr().add(r1 + 2 * j), pairs, u);
            }
            n
        };
        adjoint_rows(planes, h, w, dy, am, dx, step);
    }

    /// [`adjoint_avx512`] on AVX2: four pooled values at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2. As [`adjoint_avx512`] for the slices.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn adjoint_avx2(
        planes: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        am: &[u8],
        dx: &mut [f32],
    ) {
        let wo = w / 2;
        let twice = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        let upper = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
        let lower = _mm256_add_epi32(upper, _mm256_set1_epi32(2));
        let step = |plane: &mut [f32], r0: usize, r1: usize, o: usize, j: usize| {
            let n = (wo - j).min(4);
            let mut bytes = [0u8; 4];
            if n == 4 {
                bytes.copy_from_slice(&am[o + j..o + j + 4]);
            } else {
                for (b, &a) in bytes.iter_mut().zip(&am[o + j..o + j + n]) {
                    *b = a;
                }
            }
            let a = _mm_cvtsi32_si128(u32::from_le_bytes(bytes) as i32);
            let a = _mm256_permutevar8x32_epi32(_mm256_cvtepu8_epi32(a), twice);
            // SAFETY: the loads read pooled values o + j..o + j + n of dy (in bounds,
            // `adjoint_rows` asserts), the stores floats 2j..2(j + n) <= w of the rows at r0
            // and r1 of the plane; the masked lanes are neither read nor written.
            unsafe {
                let src = dy.as_ptr().add(o + j);
                let d = if n == 4 {
                    _mm_loadu_ps(src)
                } else {
                    _mm_maskload_ps(src, _mm256_castsi256_si128(first_lanes(n)))
                };
                let d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), twice);
                let keep = |pos| _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a, pos)), d);
                let (t, u) = (keep(upper), keep(lower));
                let (d0, d1) = (
                    plane.as_mut_ptr().add(r0 + 2 * j),
                    plane.as_mut_ptr().add(r1 + 2 * j),
                );
                if n == 4 {
                    _mm256_storeu_ps(d0, t);
                    _mm256_storeu_ps(d1, u);
                } else {
                    let pairs = first_lanes(2 * n);
                    _mm256_maskstore_ps(d0, pairs, t);
                    _mm256_maskstore_ps(d1, pairs, u);
                }
            }
            n
        };
        adjoint_rows(planes, h, w, dy, am, dx, step);
    }
}
