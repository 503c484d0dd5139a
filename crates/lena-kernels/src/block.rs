//! Skinny matrix products of a linear model's full-batch gradient: the scores of a block of
//! sample rows against a few class rows (`Z = X W^T`) and the gradient's accumulation from the
//! same rows (`G += D^T X`), with the few classes' accumulators held in registers.

use crate::Kernels;
use pulp::{Simd, WithSimd};
use std::cell::RefCell;

// PERF: `Z = X W^T` keeps a tile of 2 sample rows x 10 class rows of accumulators in registers
// on AVX-512 (32 registers), so each class vector loaded serves two rows; AVX2's 16 registers
// take the two rows against 5 classes and then the other 5 (a block in L2 scored 12% faster
// than one row x 10 classes, AMD Zen 3). The class rows are memory operands and a minibatch's
// few rows take 1 row x 10 classes, streaming each row once. `G += D^T X` keeps 10 (AVX-512)
// or 5 (AVX2) class rows x 2 vectors of G in registers while it streams the block's rows, so
// G is loaded and stored once per block instead of once per row. The two rows of a tile are a row
// of the block's first half and the row half a block after it, so that the scores read memory as
// two forward streams, each the next row of its own (neighbouring rows as pairs, two streams a row
// apart in the same pages, were 5-11% slower, Intel Xeon family 6 model 167). The caller's next
// block comes into L2 during both kernels where `Kernels::requests_ahead` says so: its first rows
// during the scores (one per pair of rows), the rest during the accumulation, so that memory
// streams throughout (the accumulation bringing all of it left memory idle during the scores; the
// scores bringing all of it slowed them, AMD Zen 5). Whether that helps depends on the machine:
// with these pairs, the softmax gradient was 10-13% faster with the requests on Intel Xeon family 6
// model 207 (AVX-512; on the AVX2 path no different) and 4% slower on model 167, where the
// hardware's prefetchers alone kept the two streams at memory speed. Both kernels are bound by FMA
// throughput, not by loads. Each call is one dispatch with every tile inside it: a dispatch per
// tile cost more than the tile's arithmetic on blocks of a few rows.
/// Class rows per tile of `G += D^T X` with 16 vector registers; twice as many with 32.
const CLASSES: usize = 5;
/// Classes per pass of `Z = X W^T` over a row.
const DOT_CLASSES: usize = 10;
/// Rows per call from which `Z = X W^T` first copies its class rows into a panel.
///
/// PERF: 8, not 32: figure 4's minibatches of 30 rows (M = 200) read the class rows from L2
/// on every row without the panel; with it their round took 2.5 instead of 3.15 ms (AMD Zen 4).
const PANEL_ROWS: usize = 8;
/// L1 data cache bytes left for the rows streaming by during a pass over the panel.
const ROWS_L1_BYTES: usize = 16 << 10;

/// Bytes of the panel's columns that one pass over the block's rows reads: the L1 data cache
/// less [`ROWS_L1_BYTES`] (16 KiB on a 32 KiB L1, as on AMD Zen 3 and 4; 32 KiB, MNIST's whole
/// panel, on a 48 KiB L1, as on Zen 5 and recent Xeons). How the columns are cut into passes
/// does not change the sums or their order, so the results do not depend on the machine.
fn panel_pass_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        (l1_data_bytes().unwrap_or(32 << 10))
            .saturating_sub(ROWS_L1_BYTES)
            .max(8 << 10)
    })
}

/// The first core's L1 data cache size as Linux reports it (`None` elsewhere or if unreadable).
fn l1_data_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
        if read("level")?.trim() != "1" || read("type")?.trim() != "Data" {
            return None;
        }
        parse_cache_size(&read("size")?)
    })
}

/// A sysfs cache size (`48K`, `1024K`, `2M`) in bytes.
pub(crate) fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.strip_suffix('K') {
        Some(d) => (d, 1 << 10),
        None => match s.strip_suffix('M') {
            Some(d) => (d, 1 << 20),
            None => (s, 1),
        },
    };
    digits.parse::<usize>().ok().map(|n| n * unit)
}

/// A thread's scratch for [`Kernels::dot_block`] (see [`DotBlock`]).
#[derive(Default)]
struct DotScratch {
    /// Groups of ten class rows, interleaved vector by vector.
    panel: Vec<f32>,
    /// Each row's ten vector accumulators between passes.
    acc: Vec<f32>,
}

thread_local! {
    static DOT_SCRATCH: RefCell<DotScratch> = RefCell::new(DotScratch::default());
}

/// One tile of `Z = X W^T`: the dot products of the `R` rows `x` with the `C` class rows `w`.
#[inline(always)]
fn dot_tile<S: Simd, const R: usize, const C: usize>(
    simd: S,
    x: [&[f32]; R],
    w: [&[f32]; C],
) -> [[f32; C]; R] {
    let head = x[0].len() / S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    let mut wv = [simd.splat_f32s(0.0); C];
    for j in 0..head {
        for c in 0..C {
            wv[c] = S::as_simd_f32s(w[c]).0[j];
        }
        for r in 0..R {
            let xv = S::as_simd_f32s(x[r]).0[j];
            for c in 0..C {
                acc[r][c] = simd.mul_add_f32s(xv, wv[c], acc[r][c]);
            }
        }
    }
    finish(simd, &acc, &x, &w)
}

/// The main tile of [`dot_tile`] (1 row x 10 classes) written out, so that its ten
/// accumulators stay in registers with no bounds check in the loop. One row against all ten
/// classes at once: every iteration reads a new part of the row, so memory streams without
/// pause (two rows against five classes, twice, left the memory idle while the second group
/// re-read the rows from L1).
#[inline(always)]
fn dot_tile_1x10<S: Simd>(
    simd: S,
    x: [&[f32]; 1],
    w: [&[f32]; 10],
    ahead: &[f32],
) -> [[f32; 10]; 1] {
    let x0 = S::as_simd_f32s(x[0]).0;
    let ahead = S::as_simd_f32s(ahead).0;
    let v = |k: usize| S::as_simd_f32s(w[k]).0;
    let (w0, w1, w2, w3, w4) = (v(0), v(1), v(2), v(3), v(4));
    let (w5, w6, w7, w8, w9) = (v(5), v(6), v(7), v(8), v(9));
    let z = simd.splat_f32s(0.0);
    let (mut a0, mut a1, mut a2, mut a3, mut a4) = (z, z, z, z, z);
    let (mut a5, mut a6, mut a7, mut a8, mut a9) = (z, z, z, z, z);
    for (((((((((((u, next), c0), c1), c2), c3), c4), c5), c6), c7), c8), c9) in x0
        .iter()
        .zip(ahead)
        .zip(w0)
        .zip(w1)
        .zip(w2)
        .zip(w3)
        .zip(w4)
        .zip(w5)
        .zip(w6)
        .zip(w7)
        .zip(w8)
        .zip(w9)
    {
        prefetch(next);
        a0 = simd.mul_add_f32s(*u, *c0, a0);
        a1 = simd.mul_add_f32s(*u, *c1, a1);
        a2 = simd.mul_add_f32s(*u, *c2, a2);
        a3 = simd.mul_add_f32s(*u, *c3, a3);
        a4 = simd.mul_add_f32s(*u, *c4, a4);
        a5 = simd.mul_add_f32s(*u, *c5, a5);
        a6 = simd.mul_add_f32s(*u, *c6, a6);
        a7 = simd.mul_add_f32s(*u, *c7, a7);
        a8 = simd.mul_add_f32s(*u, *c8, a8);
        a9 = simd.mul_add_f32s(*u, *c9, a9);
    }
    finish(simd, &[[a0, a1, a2, a3, a4, a5, a6, a7, a8, a9]], &x, &w)
}

/// Part of [`dot_tile_1x10`]: the vectors `x` of one row (a chunk of its columns) against
/// the same columns of ten class rows read from a panel that interleaves them vector by vector
/// (`panel[j][k]` is vector `j` of class `k`), continuing the accumulators `acc`. One pointer
/// walks the ten classes, so the loop is ten fused multiply-adds at constant offsets, a load
/// and an increment, and a prefetch of `ahead` once per cache line. Run chunk after chunk from
/// zero accumulators, it adds the same products in the same order as [`dot_tile_1x10`].
#[inline(always)]
fn dot_chunk_1x10<S: Simd>(
    simd: S,
    x: &[S::f32s],
    ahead: &[S::f32s],
    panel: &[[S::f32s; 10]],
    acc: &mut [S::f32s; 10],
) {
    let [
        mut a0,
        mut a1,
        mut a2,
        mut a3,
        mut a4,
        mut a5,
        mut a6,
        mut a7,
        mut a8,
        mut a9,
    ] = *acc;
    let line = (64 / (4 * S::F32_LANES)).max(1);
    for (j, ((u, next), c)) in x.iter().zip(ahead).zip(panel).enumerate() {
        if j.is_multiple_of(line) {
            prefetch(next);
        }
        a0 = simd.mul_add_f32s(*u, c[0], a0);
        a1 = simd.mul_add_f32s(*u, c[1], a1);
        a2 = simd.mul_add_f32s(*u, c[2], a2);
        a3 = simd.mul_add_f32s(*u, c[3], a3);
        a4 = simd.mul_add_f32s(*u, c[4], a4);
        a5 = simd.mul_add_f32s(*u, c[5], a5);
        a6 = simd.mul_add_f32s(*u, c[6], a6);
        a7 = simd.mul_add_f32s(*u, c[7], a7);
        a8 = simd.mul_add_f32s(*u, c[8], a8);
        a9 = simd.mul_add_f32s(*u, c[9], a9);
    }
    *acc = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9];
}

/// [`dot_chunk_1x10`] for two rows at once against `H` of the ten classes from class `K0` on:
/// `2 H` accumulators, so that each vector of the panel read from L1 serves two rows (the
/// single-row loop is bound by its eleven loads per ten fused multiply-adds, not by the FMAs).
/// With 32 vector registers (AVX-512) all ten classes at once; with 16 (AVX2) five and then
/// the other five, reading the two rows' columns twice from L1. Only the pass from class 0
/// prefetches `ahead` (into L1: the rows after the two) and `far` (into L2: the same columns of a
/// row the caller reads after this block, or nothing). Each row's sums are the same, in the same
/// order, as [`dot_chunk_1x10`]'s.
#[inline(always)]
fn dot_chunk_2xh<S: Simd, const K0: usize, const H: usize>(
    simd: S,
    x: [&[S::f32s]; 2],
    ahead: [&[S::f32s]; 2],
    panel: &[[S::f32s; 10]],
    acc: [&mut [S::f32s; 10]; 2],
    fresh: bool,
    far: &[S::f32s],
) {
    let [p, q] = acc;
    // Arrays indexed by constants once the class loop is unrolled: registers, as in the
    // single-row loop's named accumulators. A row's first pass (`fresh`) starts them at zero
    // in registers rather than storing zeros to read them back.
    let mut a = [simd.splat_f32s(0.0); H];
    let mut b = [simd.splat_f32s(0.0); H];
    if !fresh {
        a.copy_from_slice(&p[K0..K0 + H]);
        b.copy_from_slice(&q[K0..K0 + H]);
    }
    let line = (64 / (4 * S::F32_LANES)).max(1);
    let [x0, x1] = x;
    let [n0, n1] = ahead;
    for (j, ((((u, v), m), n), c)) in x0.iter().zip(x1).zip(n0).zip(n1).zip(panel).enumerate() {
        if K0 == 0 && j.is_multiple_of(line) {
            prefetch(m);
            prefetch(n);
            if let Some(f) = far.get(j) {
                prefetch_l2(f);
            }
        }
        for k in 0..H {
            a[k] = simd.mul_add_f32s(*u, c[K0 + k], a[k]);
            b[k] = simd.mul_add_f32s(*v, c[K0 + k], b[k]);
        }
    }
    p[K0..K0 + H].copy_from_slice(&a);
    q[K0..K0 + H].copy_from_slice(&b);
}

/// Asks the CPU to bring `v`'s cache line towards L1 without waiting for it: a hint, with no
/// effect on any result. The row kernels prefetch the next row while they work on one, so
/// that more of the row is in flight than the load buffer allows (each vector of a row comes
/// with ten loads of class rows from L1).
#[inline(always)]
pub(crate) fn prefetch<T>(v: &T) {
    prefetch_into::<3, T>(v); // _MM_HINT_T0
}

/// As [`prefetch`], into L2 only.
#[inline(always)]
pub(crate) fn prefetch_l2<T>(v: &T) {
    prefetch_into::<2, T>(v); // _MM_HINT_T1
}

/// A prefetch of `v`'s line with x86's hint `HINT` (3: into L1, 2: into L2).
#[inline(always)]
fn prefetch_into<const HINT: i32, T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and writes nothing; the pointer comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(std::ptr::from_ref(v).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// The sums of a tile's accumulators (ten classes' at once through [`sums10`]), plus the
/// products of the columns past the last full vector, if there are any (explicit loops:
/// `std::array::from_fn`'s closures are not inlined into pulp's target-feature context, and
/// the reductions' intrinsics would become calls). Without the check, each row of a block
/// sliced every class row for an empty tail; with it and the accumulators started in
/// registers, a block of MNIST's rows in L2 scores in 0.86x the time (AMD Zen 4, AVX-512).
#[inline(always)]
fn finish<S: Simd, const R: usize, const C: usize>(
    simd: S,
    acc: &[[S::f32s; C]; R],
    x: &[&[f32]; R],
    w: &[&[f32]; C],
) -> [[f32; C]; R] {
    let tail = x[0].len() / S::F32_LANES * S::F32_LANES;
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        let ten = <&[S::f32s; 10]>::try_from(&acc[r][..]).map(|a| sums10(simd, a));
        for c in 0..C {
            let mut s = match ten {
                Ok(sums) => sums[c],
                Err(_) => simd.reduce_sum_f32s(acc[r][c]),
            };
            if tail < x[r].len() {
                for (a, b) in x[r][tail..].iter().zip(&w[c][tail..]) {
                    s = a.mul_add(*b, s);
                }
            }
            out[r][c] = s;
        }
    }
    out
}

/// The sums of ten accumulators, each bit for bit what `simd.reduce_sum_f32s` gives it. On
/// AVX-512 one transposing tree reduces all ten at once: it adds the same pairs of lanes in
/// the same order (lane `i` with `i + 8`, then `i + 4`, `i + 2`, `i + 1`; a float sum does not
/// depend on its operands' order), in 33 shuffles and adds instead of 80. On MNIST's rows the
/// scores of a block in L2 went from 2.9 to 2.5 ms with it (AMD Zen 5).
#[inline(always)]
pub(crate) fn sums10<S: Simd>(simd: S, acc: &[S::f32s; 10]) -> [f32; 10] {
    #[cfg(target_arch = "x86_64")]
    if S::F32_LANES == 16 && size_of::<S::f32s>() == size_of::<std::arch::x86_64::__m512>() {
        // SAFETY: 16 lanes of f32 in 64 bytes are pulp's AVX-512 vectors, which exist only
        // where the CPU has AVX-512F; the sizes are equal, every bit pattern is a float, and
        // the read does not assume `__m512`'s alignment (pulp's vectors have a float's).
        return unsafe {
            let v = std::ptr::from_ref(acc).cast::<[std::arch::x86_64::__m512; 10]>();
            tree10_avx512(v.read_unaligned())
        };
    }
    let mut out = [0.0f32; 10];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = simd.reduce_sum_f32s(*a);
    }
    out
}

/// [`sums10`]'s tree. Each step adds two halves of every group of lanes, two vectors' groups
/// packed into one vector: the 512-bit halves (quarters shuffled), the 256-bit halves' 128-bit
/// halves, then pairs and single lanes within each 128-bit lane. Class `k` ends in lane
/// `4 (k % 4) + k / 4`.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tree10_avx512(v: [std::arch::x86_64::__m512; 10]) -> [f32; 10] {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps,
    };
    // SAFETY: the caller promises AVX-512F.
    unsafe {
        let q = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            )
        };
        let h = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        };
        let z = _mm512_setzero_ps();
        let s1 = [
            q(v[0], v[1]),
            q(v[2], v[3]),
            q(v[4], v[5]),
            q(v[6], v[7]),
            q(v[8], v[9]),
        ];
        let s2 = [h(s1[0], s1[1]), h(s1[2], s1[3]), h(s1[4], z)];
        let p = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(a, b),
                _mm512_shuffle_ps::<0xEE>(a, b),
            )
        };
        let s3 = [p(s2[0], s2[1]), p(s2[2], z)];
        let s4 = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(s3[0], s3[1]),
            _mm512_shuffle_ps::<0xDD>(s3[0], s3[1]),
        );
        let lanes: [f32; 16] = std::mem::transmute(s4);
        let mut out = [0.0f32; 10];
        for (k, o) in out.iter_mut().enumerate() {
            *o = lanes[4 * (k % 4) + k / 4];
        }
        out
    }
}

/// `Z = X W^T` over a block of rows. From [`PANEL_ROWS`] rows on, each group of ten class rows
/// is first copied into a panel (a copy of the model per call, small beside the rows it
/// serves, a loss on a minibatch's few rows), and the block's rows are scored in passes over
/// [`panel_pass_bytes`] of the panel's columns each, every row's accumulators kept between
/// passes: ten class rows of MNIST's 785 columns fill the 32 KiB L1 cache of an AMD Zen core
/// alone, and read from L2 they made scoring a block already in L2 1.6x slower (AMD EPYC Zen 3:
/// 11.7 against 7.2 ms over MNIST's 60 000 rows). The sums are the same, in the same order, as
/// one pass over each row ([`dot_tile_1x10`]), which the few rows of a minibatch still take.
struct DotBlock<'a> {
    x: &'a [f32],
    p: usize,
    w: &'a [f32],
    stride: usize,
    c: usize,
    z: &'a mut [f32],
    scratch: &'a mut DotScratch,
    /// Rows the caller reads next: the first of them brought into L2, one per pair of rows.
    ahead: &'a [f32],
}

impl WithSimd for DotBlock<'_> {
    /// Floats of `ahead` brought into L2.
    type Output = usize;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> usize {
        let Self {
            x,
            p,
            w,
            stride,
            c,
            z,
            scratch,
            ahead,
        } = self;
        let class = |k: usize| &w[k * stride..k * stride + p];
        let n = x.len() / p;
        let lanes = S::F32_LANES;
        let head = p / lanes;
        let groups = if n >= PANEL_ROWS && head > 0 {
            c / DOT_CLASSES
        } else {
            0
        };
        if groups > 0 {
            let DotScratch { panel, acc } = scratch;
            // Grown, never cleared: every value the calls read is written below.
            let len = groups * head * DOT_CLASSES * lanes;
            if panel.len() < len + 16 {
                panel.resize(len + 16, 0.0);
            }
            let off = panel.as_ptr().align_offset(64).min(16);
            let panel = &mut panel[off..off + len];
            let mut at = 0;
            for g in 0..groups {
                for j in 0..head {
                    for k in 0..DOT_CLASSES {
                        let row = class(g * DOT_CLASSES + k);
                        panel[at..at + lanes].copy_from_slice(&row[j * lanes..(j + 1) * lanes]);
                        at += lanes;
                    }
                }
            }
            // Grown, never refilled: each row's accumulators start from zero at its first pass.
            let need = n * DOT_CLASSES * lanes;
            if acc.len() < need {
                acc.resize(need, 0.0);
            }
            let panel = S::as_simd_f32s(panel).0.as_chunks::<DOT_CLASSES>().0;
            let acc = S::as_mut_simd_f32s(&mut acc[..need])
                .0
                .as_chunks_mut::<DOT_CLASSES>()
                .0;
            let per_pass = (panel_pass_bytes() / (DOT_CLASSES * lanes * 4)).max(1);
            let row = |i: usize| &x[i * p..(i + 1) * p];
            // Two rows at a time, row q with row q + n / 2 (see the PERF note at the top):
            // against all ten classes where there are 32 vector registers (AVX-512's 16 lanes),
            // else against five and five. Each prefetches the row after each of its two.
            let wide = lanes >= 16;
            let half = n / 2;
            for g in 0..groups {
                let panel = &panel[g * head..(g + 1) * head];
                for j0 in (0..head).step_by(per_pass) {
                    let j1 = (j0 + per_pass).min(head);
                    // Row i's columns j0..j1, and those of the row after it to prefetch (the
                    // last row prefetches itself: its lines are in cache).
                    let cols = |i: usize| &S::as_simd_f32s(row(i)).0[j0..j1];
                    let next = |i: usize| cols((i + 1).min(n - 1));
                    let panel = &panel[j0..j1];
                    let fresh = j0 == 0;
                    let (first, second) = acc.split_at_mut(half);
                    for (q, (a, b)) in first.iter_mut().zip(second).enumerate() {
                        let (x, nx) = ([cols(q), cols(q + half)], [next(q), next(q + half)]);
                        // Pair q brings row q of `ahead` into L2 (the first group's passes).
                        let far = match ahead.get(q * p..(q + 1) * p) {
                            Some(row) if g == 0 => &S::as_simd_f32s(row).0[j0..j1],
                            _ => &[],
                        };
                        if wide {
                            dot_chunk_2xh::<S, 0, 10>(simd, x, nx, panel, [a, b], fresh, far);
                        } else {
                            dot_chunk_2xh::<S, 0, 5>(simd, x, nx, panel, [a, b], fresh, far);
                            dot_chunk_2xh::<S, 5, 5>(simd, x, nx, panel, [a, b], fresh, far);
                        }
                    }
                    // An odd block's last row alone.
                    for (i, a) in acc.iter_mut().enumerate().skip(2 * half) {
                        if fresh {
                            *a = [simd.splat_f32s(0.0); DOT_CLASSES];
                        }
                        dot_chunk_1x10(simd, cols(i), next(i), panel, a);
                    }
                }
                let c0 = g * DOT_CLASSES;
                let mut wr: [&[f32]; DOT_CLASSES] = [&[]; DOT_CLASSES];
                for (k, wk) in wr.iter_mut().enumerate() {
                    *wk = class(c0 + k);
                }
                for (i, a) in acc.iter().enumerate() {
                    let [t] = finish(simd, std::array::from_ref(a), &[row(i)], &wr);
                    z[i * c + c0..i * c + c0 + DOT_CLASSES].copy_from_slice(&t);
                }
            }
        }
        for (i, (xs, zs)) in x.chunks_exact(p).zip(z.chunks_exact_mut(c)).enumerate() {
            // The next row (the last row prefetches itself: every line of it is in cache).
            let ahead = &x[(i + 1).min(n - 1) * p..(i + 1).min(n - 1) * p + p];
            for c0 in (groups * DOT_CLASSES..c).step_by(DOT_CLASSES) {
                macro_rules! tile {
                    ($c:literal, |$wr:ident| $call:expr) => {{
                        let mut $wr: [&[f32]; $c] = [&[]; $c];
                        for (k, wk) in $wr.iter_mut().enumerate() {
                            *wk = class(c0 + k);
                        }
                        let [t]: [[f32; $c]; 1] = $call;
                        zs[c0..c0 + $c].copy_from_slice(&t);
                    }};
                    ($f:ident, $c:literal) => {
                        tile!($c, |wr| $f(simd, [xs], wr))
                    };
                }
                match DOT_CLASSES.min(c - c0) {
                    10 => tile!(10, |wr| dot_tile_1x10(simd, [xs], wr, ahead)),
                    9 => tile!(dot_tile, 9),
                    8 => tile!(dot_tile, 8),
                    7 => tile!(dot_tile, 7),
                    6 => tile!(dot_tile, 6),
                    5 => tile!(dot_tile, 5),
                    4 => tile!(dot_tile, 4),
                    3 => tile!(dot_tile, 3),
                    2 => tile!(dot_tile, 2),
                    _ => tile!(dot_tile, 1),
                }
            }
        }
        if groups > 0 {
            (n / 2).min(ahead.len() / p) * p
        } else {
            0
        }
    }
}

/// One tile of `G += D^T X`: `C` class rows of G over `J` vectors of columns starting at
/// column `j`, accumulated over every row of the block in row order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn outer_tile<S: Simd, const C: usize, const J: usize>(
    simd: S,
    g: &mut [f32],
    stride: usize,
    c0: usize,
    j: usize,
    d: &[f32],
    c: usize,
    x: &[f32],
    p: usize,
    ahead: &mut Ahead<'_>,
) {
    let lanes = S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); J]; C];
    for k in 0..C {
        let at = (c0 + k) * stride + j;
        acc[k].copy_from_slice(&S::as_simd_f32s(&g[at..at + J * lanes]).0[..J]);
    }
    let mut xv = [simd.splat_f32s(0.0); J];
    for (xi, di) in x.chunks_exact(p).zip(d.chunks_exact(c)) {
        ahead.step();
        xv.copy_from_slice(&S::as_simd_f32s(&xi[j..j + J * lanes]).0[..J]);
        let di = &di[c0..c0 + C];
        for k in 0..C {
            let dv = simd.splat_f32s(di[k]);
            for v in 0..J {
                acc[k][v] = simd.mul_add_f32s(dv, xv[v], acc[k][v]);
            }
        }
    }
    for k in 0..C {
        let at = (c0 + k) * stride + j;
        S::as_mut_simd_f32s(&mut g[at..at + J * lanes]).0[..J].copy_from_slice(&acc[k]);
    }
}

/// The cache lines of the rows a caller reads next, brought into L2 a few at a time while
/// [`Kernels::add_outer_block`] works on a block already in cache, so that the memory streams
/// during its arithmetic instead of idling until the next block's first loads miss.
struct Ahead<'a> {
    lines: std::slice::ChunksExact<'a, f32>,
    per_step: usize,
}

impl Ahead<'_> {
    /// Prefetches the next `per_step` lines, if any are left.
    #[inline(always)]
    fn step(&mut self) {
        for _ in 0..self.per_step {
            match self.lines.next() {
                Some(line) => prefetch_l2(&line[0]),
                None => return,
            }
        }
    }
}

struct OuterBlock<'a> {
    g: &'a mut [f32],
    stride: usize,
    c: usize,
    d: &'a [f32],
    x: &'a [f32],
    p: usize,
    ahead: &'a [f32],
}

impl WithSimd for OuterBlock<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            g,
            stride,
            c,
            d,
            x,
            p,
            ahead,
        } = self;
        let lanes = S::F32_LANES;
        let head = p / lanes * lanes;
        // PERF: ten class rows a tile where there are 32 vector registers (AVX-512's 16 lanes:
        // 20 accumulators), so the block's rows are read from L2 once instead of twice: MNIST's
        // accumulation in L2 took 2.27-2.32 ms instead of 2.43-2.47, its softmax gradient
        // 7.22-7.33 instead of 7.43-7.54 (Intel Xeon, three pairs). Five with AVX2's 16.
        let group = if lanes >= 16 { 2 * CLASSES } else { CLASSES };
        // Lines of `ahead` per row step of the tiles, each tile stepping once per row (about
        // one for the half of MNIST's next block left by the scores: 25 tiles x 83 rows on
        // AVX-512 against 2 034 lines).
        let steps = c.div_ceil(group) * (head / lanes).div_ceil(2) * (x.len() / p);
        let mut ahead = Ahead {
            lines: ahead.chunks_exact(16),
            per_step: (ahead.len() / 16).div_ceil(steps.max(1)),
        };
        for c0 in (0..c).step_by(group) {
            let cb = group.min(c - c0);
            let mut j = 0;
            while j < head {
                let two = head - j >= 2 * lanes;
                macro_rules! tile {
                    ($c:literal, $j:literal) => {
                        outer_tile::<S, $c, $j>(simd, g, stride, c0, j, d, c, x, p, &mut ahead)
                    };
                }
                match (cb, two) {
                    (10, true) => tile!(10, 2),
                    (9, true) => tile!(9, 2),
                    (8, true) => tile!(8, 2),
                    (7, true) => tile!(7, 2),
                    (6, true) => tile!(6, 2),
                    (10, false) => tile!(10, 1),
                    (9, false) => tile!(9, 1),
                    (8, false) => tile!(8, 1),
                    (7, false) => tile!(7, 1),
                    (6, false) => tile!(6, 1),
                    (5, true) => tile!(5, 2),
                    (4, true) => tile!(4, 2),
                    (3, true) => tile!(3, 2),
                    (2, true) => tile!(2, 2),
                    (_, true) => tile!(1, 2),
                    (5, false) => tile!(5, 1),
                    (4, false) => tile!(4, 1),
                    (3, false) => tile!(3, 1),
                    (2, false) => tile!(2, 1),
                    (_, false) => tile!(1, 1),
                }
                j += if two { 2 * lanes } else { lanes };
            }
            // The last p % lanes columns: plain loops, the same order and rounding.
            if head < p {
                for (xi, di) in x.chunks_exact(p).zip(d.chunks_exact(c)) {
                    for k in c0..c0 + cb {
                        let gk = &mut g[k * stride + head..k * stride + p];
                        for (gj, xj) in gk.iter_mut().zip(&xi[head..]) {
                            *gj = di[k].mul_add(*xj, *gj);
                        }
                    }
                }
            }
        }
    }
}

impl Kernels {
    /// `z[i * c + k] = <x_i, w_k>` for the `n = x.len() / p` rows `x_i` of the row-major `x` and
    /// the `c` rows `w_k = w[k * stride..k * stride + p]` (a linear model's scores without
    /// bias: `Z = X W^T`). Each row of `x` is read from memory once.
    ///
    /// `ahead` is what the caller reads next (the next block of rows, or empty): where
    /// [`Self::requests_ahead`], through the panel (from 8 rows, 10 classes and a vector of
    /// columns on), each pair of rows scored brings one row of it into L2, a hint with no effect
    /// on any result. Returns how many of `ahead`'s floats it brought (whole rows from its
    /// start; 0 off the panel or without requests), so that the caller can hand the rest to
    /// [`Self::add_outer_block`].
    ///
    /// # Panics
    /// If `p` is 0, `x.len()` is not a multiple of `p`, `stride < p`, `w` is too short for `c`
    /// rows, or `z.len() != n * c`.
    #[allow(clippy::too_many_arguments)]
    pub fn dot_block(
        self,
        x: &[f32],
        p: usize,
        w: &[f32],
        stride: usize,
        c: usize,
        z: &mut [f32],
        ahead: &[f32],
    ) -> usize {
        assert!(p > 0 && x.len().is_multiple_of(p), "dot_block: row length");
        assert!(stride >= p, "dot_block: stride");
        assert!(
            c == 0 || w.len() >= (c - 1) * stride + p,
            "dot_block: class rows"
        );
        assert_eq!(z.len(), x.len() / p * c, "dot_block: output length");
        if c == 0 {
            return 0;
        }
        DOT_SCRATCH.with_borrow_mut(|scratch| {
            self.run(DotBlock {
                x,
                p,
                w,
                stride,
                c,
                z,
                scratch,
                ahead: if self.requests_ahead() { ahead } else { &[] },
            })
        })
    }

    /// `g[k * stride + j] += sum_i d[i * c + k] x_i[j]` for the `c` rows of `g` (each `p` long,
    /// at `stride`), the `n = x.len() / p` rows `x_i` of the row-major `x` and the row-major
    /// `n x c` matrix `d` (a linear model's gradient: `G += D^T X`). The terms are added to each
    /// `g[k * stride + j]` in row order, one rounding each, so the result does not depend on
    /// the instruction set. `ahead` is what the caller reads next (the next block of rows, or
    /// empty): where [`Self::requests_ahead`], its cache lines are brought into L2 while this
    /// works, a hint with no effect on any result.
    ///
    /// # Panics
    /// If `p` is 0, `x.len()` is not a multiple of `p`, `stride < p`, `g` is too short for `c`
    /// rows, or `d.len() != n * c`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_outer_block(
        self,
        g: &mut [f32],
        stride: usize,
        c: usize,
        d: &[f32],
        x: &[f32],
        p: usize,
        ahead: &[f32],
    ) {
        assert!(
            p > 0 && x.len().is_multiple_of(p),
            "add_outer_block: row length"
        );
        assert!(stride >= p, "add_outer_block: stride");
        assert!(
            c == 0 || g.len() >= (c - 1) * stride + p,
            "add_outer_block: class rows"
        );
        assert_eq!(
            d.len(),
            x.len() / p * c,
            "add_outer_block: derivative length"
        );
        if c > 0 && !x.is_empty() {
            self.run(OuterBlock {
                g,
                stride,
                c,
                d,
                x,
                p,
                ahead: if self.requests_ahead() { ahead } else { &[] },
            });
        }
    }
}
