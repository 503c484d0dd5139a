//! A vector's first lanes loaded or stored inline on AVX-512, for the edges of the convolution
//! and dense kernels' tiles.
//!
//! PERF: pulp's `partial_load_f32s` and `partial_store_f32s` jump to a stub picked from a table
//! by the length, through inline assembly that pins the vector to one register and, as any
//! assembly block not marked otherwise, may read and write any memory, so the compiler spills
//! around it. The paper's first convolution on AVX-512 stores each tile's 20 accumulators as 40
//! half vectors that way: the code spilled 377 vectors to the stack, 33 with these helpers, and
//! the CNN's evaluation took 2-9% less time, its training step 3-4% less (Intel Xeon family 6
//! model 207; medians of 16 runs alternated with the stubs', three sittings). On AVX-512 the part
//! is one masked load or store in the caller's code. The AVX2 path keeps pulp's stubs, which
//! move the lanes in pieces: AVX2's masked stores are slow on the AMD cores that take that path,
//! and on this Intel kind they made the second convolution's weight gradient 4-9% slower. The
//! same lanes are read and written either way, so every float is unchanged.
//!
//! Call them from plain loops rather than closures where the compiler may keep the closure out
//! of line: its body does not get the path's target features, so the intrinsics become calls (a
//! `std::array::from_fn` around `load_prefix` made the CNN's training step take 1.6-2 times as
//! long, through its input-gradient product).

use pulp::Simd;

/// Lanes `0..n` of eight set (all bits) in an AVX2 lane mask (the mask of `_mm256_maskload_ps`
/// and `_mm256_maskstore_ps`), the rest clear: the AVX2 kernels' partial vectors.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn avx2_first_lanes(n: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::{_mm256_cmpgt_epi32, _mm256_set1_epi32, _mm256_setr_epi32};
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
}

/// `dst[..n] = v[..n]` with `n = min(dst.len(), lanes)`: pulp's `partial_store_f32s`.
#[inline(always)]
pub(crate) fn store_prefix<S: Simd>(simd: S, dst: &mut [f32], v: S::f32s) {
    let n = dst.len().min(S::F32_LANES);
    if n == S::F32_LANES {
        S::as_mut_simd_f32s(&mut dst[..n]).0[0] = v;
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m512, _mm512_mask_storeu_ps};
        if S::F32_LANES == 16 && size_of::<S::f32s>() == size_of::<__m512>() {
            // SAFETY: 16 lanes of f32 in 64 bytes are pulp's AVX-512 vectors, which exist only
            // where the CPU has AVX-512F; every bit pattern is a float. The mask enables lanes
            // 0..n, n < 16, and `dst` holds n floats: no lane past it is written.
            unsafe {
                let x: __m512 = std::mem::transmute_copy(&v);
                _mm512_mask_storeu_ps(dst.as_mut_ptr(), ((1u32 << n) - 1) as u16, x);
            }
            return;
        }
    }
    simd.partial_store_f32s(dst, v);
}

/// `src[..n]` in a vector's first lanes, zeros after, with `n = min(src.len(), lanes)`: pulp's
/// `partial_load_f32s`.
#[inline(always)]
pub(crate) fn load_prefix<S: Simd>(simd: S, src: &[f32]) -> S::f32s {
    let n = src.len().min(S::F32_LANES);
    if n == S::F32_LANES {
        return S::as_simd_f32s(&src[..n]).0[0];
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m512, _mm512_maskz_loadu_ps};
        if S::F32_LANES == 16 && size_of::<S::f32s>() == size_of::<__m512>() {
            // SAFETY: as in `store_prefix`; lanes n.. are neither read (a masked load does not
            // fault on them) nor kept (zeroed).
            unsafe {
                let x = _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, src.as_ptr());
                return std::mem::transmute_copy(&x);
            }
        }
    }
    simd.partial_load_f32s(src)
}

#[cfg(test)]
mod tests {
    use super::{load_prefix, store_prefix};
    use crate::Kernels;
    use pulp::{Simd, WithSimd};

    /// For every length 0..=lanes + 1 at every offset within a cache line: the store writes
    /// exactly the first lanes a slice holds and the load reads exactly them, zeros after.
    struct Check;

    impl WithSimd for Check {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let lanes = S::F32_LANES;
            let values: Vec<f32> = (0..lanes).map(|i| i as f32 + 0.5).collect();
            let v = S::as_simd_f32s(&values).0[0];
            for n in 0..=lanes + 1 {
                for off in 0..16 {
                    let mut buf = vec![-1.0f32; off + lanes + 2 + 16];
                    store_prefix(simd, &mut buf[off..off + n], v);
                    for (i, &b) in buf.iter().enumerate() {
                        let want = if i >= off && i < off + n.min(lanes) {
                            values[i - off]
                        } else {
                            -1.0
                        };
                        assert_eq!(b.to_bits(), want.to_bits(), "store {n} at {off}: float {i}");
                    }
                    let got = load_prefix(simd, &buf[off..off + n]);
                    let mut out = vec![f32::NAN; lanes];
                    S::as_mut_simd_f32s(&mut out).0[0] = got;
                    for (i, &o) in out.iter().enumerate() {
                        let want = if i < n.min(lanes) { values[i] } else { 0.0 };
                        assert_eq!(o.to_bits(), want.to_bits(), "load {n} at {off}: lane {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn prefixes_touch_exactly_their_slices_lanes() {
        for k in Kernels::available() {
            k.run(Check);
        }
    }
}
