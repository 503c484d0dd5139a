//! Row sums added to an accumulator, each row's sum in order (a CNN's bias gradients).
//!
//! Each row's sum is `Iterator::sum`'s: from `-0.0`, one addition per element in order, so every
//! path gives the same floats; a vector path holds one row per lane and adds the rows' columns
//! one after another, after transposing blocks of the rows.

use crate::Kernels;

impl Kernels {
    /// `acc[r] += m[r len..(r + 1) len].iter().sum()` for every row `r < acc.len()`, each
    /// row's sum from `-0.0` in order (bit for bit `Iterator::sum`'s on every path).
    ///
    /// # Panics
    /// If `m` does not hold `acc.len() * len` values.
    pub fn add_row_sums(self, acc: &mut [f32], m: &[f32], len: usize) {
        assert_eq!(m.len(), acc.len() * len, "add_row_sums: rows");
        #[cfg(target_arch = "x86_64")]
        if self.is_x86_64_v4() {
            // SAFETY: the x86-64-v4 path proves AVX-512 F.
            unsafe { x86::add_row_sums_avx512(acc, m, len) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.is_x86_64_v3() {
            // SAFETY: the x86-64-v3 path proves AVX2.
            unsafe { x86::add_row_sums_avx2(acc, m, len) };
            return;
        }
        add_row_sums_plain(acc, m, len);
    }
}

/// [`Kernels::add_row_sums`] in plain loops. PERF: rows are summed eight (or four, two) at a
/// time, one addition of each in turn, so that their chains overlap; one row at a time waited
/// for each addition's latency (a convolution's bias gradient sums rows of a block's every
/// output position: about a tenth of a CNN round, before).
fn add_row_sums_plain(acc: &mut [f32], m: &[f32], len: usize) {
    let mut c = 0;
    while c < acc.len() {
        let n = match acc.len() - c {
            8.. => 8,
            4..=7 => 4,
            2 | 3 => 2,
            _ => 1,
        };
        let (acc, m) = (&mut acc[c..c + n], &m[c * len..(c + n) * len]);
        match n {
            8 => add_row_sums_n::<8>(acc, m, len),
            4 => add_row_sums_n::<4>(acc, m, len),
            2 => add_row_sums_n::<2>(acc, m, len),
            _ => add_row_sums_n::<1>(acc, m, len),
        }
        c += n;
    }
}

/// [`add_row_sums_plain`] for `N` rows.
#[inline(always)]
fn add_row_sums_n<const N: usize>(acc: &mut [f32], m: &[f32], len: usize) {
    let rows: [&[f32]; N] = std::array::from_fn(|c| &m[c * len..(c + 1) * len]);
    let mut s = [-0.0f32; N];
    for j in 0..len {
        for c in 0..N {
            s[c] += rows[c][j];
        }
    }
    for (a, s) in acc.iter_mut().zip(s) {
        *a += s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::prefix::avx2_first_lanes;
    use std::arch::x86_64::*;

    /// [`super::add_row_sums_plain`] on AVX-512: sixteen rows at a time, one a lane. Each
    /// block of sixteen columns is loaded a row a vector (fewer under a mask at the rows' end,
    /// zero for lanes past the last row), transposed into one vector a column, and the columns
    /// added to the lanes' sums in order; the sums then added to `acc` under a mask.
    ///
    /// PERF: the plain loops' eight interleaved rows gathered each column's values one by one
    /// into vectors (a load and a shuffle a value), and ten rows took two passes (eight and
    /// two); here a block of 16 x 16 values takes 16 loads and 64 shuffles, about the time of
    /// its 16 dependent additions.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F. `m` must hold `acc.len() * len` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_row_sums_avx512(acc: &mut [f32], m: &[f32], len: usize) {
        let rows = acc.len();
        assert_eq!(m.len(), rows * len);
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(16);
            let mut s = _mm512_set1_ps(-0.0);
            let mut j = 0;
            while j < len {
                let t = (len - j).min(16);
                let cols = ((1u32 << t) - 1) as u16;
                // PERF: no load at all for a row past the last: a masked load with no lane left
                // whose address lies outside the allocation took a microcode assist (a sum of
                // 20 rows of 2048, 7.7 us in the plain loops, took 21.6 here).
                let mut v: [__m512; 16] = std::array::from_fn(|r| {
                    if r < n {
                        // SAFETY: row r reads its values j..j + t <= len (inside `m`,
                        // asserted); the lanes the mask leaves out are not read.
                        unsafe { _mm512_maskz_loadu_ps(cols, m.as_ptr().add((r0 + r) * len + j)) }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                transpose16(&mut v);
                // Column k of the block is v[COLUMN[k]]: add them in the rows' order.
                for &c in &COLUMN[..t] {
                    s = _mm512_add_ps(s, v[c]);
                }
                j += t;
            }
            let lanes = ((1u32 << n) - 1) as u16;
            // SAFETY: lanes 0..n are acc[r0..r0 + n], in bounds; the others are not touched.
            unsafe {
                let a = _mm512_maskz_loadu_ps(lanes, acc.as_ptr().add(r0));
                _mm512_mask_storeu_ps(acc.as_mut_ptr().add(r0), lanes, _mm512_add_ps(a, s));
            }
            r0 += n;
        }
    }

    /// Where [`transpose16`] leaves column `k = 4 q + e` (128-bit block q, float e in it):
    /// `v[4 e + q]`.
    const COLUMN: [usize; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

    /// Transposes 16 rows of 16 floats, up to the columns' order ([`COLUMN`]): lane r of the
    /// vector of column k holds row r's float k.
    #[inline(always)]
    fn transpose16(v: &mut [__m512; 16]) {
        // SAFETY: register shuffles; the caller has AVX-512 F (this is inlined into it).
        unsafe {
            // Rows 2i, 2i + 1 interleaved: floats 4q, 4q + 1 (lo) and 4q + 2, 4q + 3 (hi) of each
            // 128-bit block q.
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
            }
            // Rows 4g..4g + 4 of column 4q + e in block q of u[4g + e].
            let mut u = [_mm512_setzero_ps(); 16];
            for g in 0..4 {
                let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                u[4 * g] = _mm512_shuffle_ps::<0x44>(a, c);
                u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
                u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(b, d);
                u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
            }
            // For each e, the 4 x 4 blocks (row group g, block q) transposed: v[4e + q] holds
            // column 4q + e of every row group.
            for e in 0..4 {
                let (v0, v1, v2, v3) = (u[e], u[4 + e], u[8 + e], u[12 + e]);
                let x0 = _mm512_shuffle_f32x4::<0x44>(v0, v1);
                let x1 = _mm512_shuffle_f32x4::<0xEE>(v0, v1);
                let x2 = _mm512_shuffle_f32x4::<0x44>(v2, v3);
                let x3 = _mm512_shuffle_f32x4::<0xEE>(v2, v3);
                v[4 * e] = _mm512_shuffle_f32x4::<0x88>(x0, x2);
                v[4 * e + 1] = _mm512_shuffle_f32x4::<0xDD>(x0, x2);
                v[4 * e + 2] = _mm512_shuffle_f32x4::<0x88>(x1, x3);
                v[4 * e + 3] = _mm512_shuffle_f32x4::<0xDD>(x1, x3);
            }
        }
    }

    /// [`add_row_sums_avx512`] on AVX2: sixteen rows at a time as two vectors of eight (the
    /// second only where there are more than eight), each block of eight columns transposed
    /// eight rows at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2. `m` must hold `acc.len() * len` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn add_row_sums_avx2(acc: &mut [f32], m: &[f32], len: usize) {
        let rows = acc.len();
        assert_eq!(m.len(), rows * len);
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(16);
            let mut s = [_mm256_set1_ps(-0.0); 2];
            let mut j = 0;
            while j < len {
                let t = (len - j).min(8);
                let cols = avx2_first_lanes(t);
                for (half, s) in s.iter_mut().enumerate().take(n.div_ceil(8)) {
                    let mut v: [__m256; 8] = std::array::from_fn(|r| {
                        let r = 8 * half + r;
                        if r >= n {
                            _mm256_setzero_ps()
                        } else if t == 8 {
                            // SAFETY: row r reads its values j..j + 8 <= len (inside `m`).
                            unsafe { _mm256_loadu_ps(m.as_ptr().add((r0 + r) * len + j)) }
                        } else {
                            // SAFETY: row r reads its values j..j + t <= len; the lanes the
                            // mask leaves out are not read.
                            unsafe { _mm256_maskload_ps(m.as_ptr().add((r0 + r) * len + j), cols) }
                        }
                    });
                    transpose8(&mut v);
                    for c in &v[..t] {
                        *s = _mm256_add_ps(*s, *c);
                    }
                }
                j += t;
            }
            for (half, s) in s.into_iter().enumerate().take(n.div_ceil(8)) {
                let from = r0 + 8 * half;
                let mask = avx2_first_lanes(n - 8 * half);
                // SAFETY: lanes 0..min(8, n - 8 half) are acc[from..], in bounds; the others
                // are not touched.
                unsafe {
                    let a = _mm256_maskload_ps(acc.as_ptr().add(from), mask);
                    _mm256_maskstore_ps(acc.as_mut_ptr().add(from), mask, _mm256_add_ps(a, s));
                }
            }
            r0 += n;
        }
    }

    /// Transposes 8 rows of 8 floats: lane r of `v[k]` then holds row r's float k.
    #[inline(always)]
    fn transpose8(v: &mut [__m256; 8]) {
        // SAFETY: register shuffles; the caller has AVX2 (this is inlined into it).
        unsafe {
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (v[i & !1], v[i | 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            // Rows 4g..4g + 4 of column 4h + e in 128-bit half h of u[4g + e].
            let mut u = [_mm256_setzero_ps(); 8];
            for g in 0..2 {
                let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                u[4 * g] = _mm256_shuffle_ps::<0x44>(a, c);
                u[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
                u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(b, d);
                u[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
            }
            for e in 0..4 {
                v[e] = _mm256_permute2f128_ps::<0x20>(u[e], u[4 + e]);
                v[4 + e] = _mm256_permute2f128_ps::<0x31>(u[e], u[4 + e]);
            }
        }
    }
}
