//! xoshiro256++ (Blackman and Vigna), one stream at a time and many streams a vector at a time.
//!
//! A stream's outputs form one dependency chain (about two cycles a word), so a node's draws
//! cannot be made faster on their own; the draws of several nodes' streams can, side by side
//! in the lanes of a vector register. [`Kernels::xoshiro256pp_lanes`] does that and yields, for
//! each stream, exactly the words [`xoshiro256pp_next`] would.

use crate::{Kernels, Path};

/// The next output of the xoshiro256++ stream whose state is `s`, advancing it one step: the
/// reference the lane-parallel kernel is tested against (and the same words as
/// `rand_xoshiro::Xoshiro256PlusPlus::next_u64` from the same state).
#[inline]
pub fn xoshiro256pp_next(s: &mut [u64; 4]) -> u64 {
    let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    out
}

/// Undoes one [`xoshiro256pp_next`]: the state `s` was in before the step that left it as it
/// is (the step is a bijection of the 256-bit state).
pub fn xoshiro256pp_back(s: &mut [u64; 4]) {
    // After the step: a0 = s0^s1^s3, a1 = s0^s1^s2, a2 = s0^s2^(s1<<17), a3 = rotl(s1^s3, 45).
    let [a0, a1, a2, a3] = *s;
    let s1_s3 = a3.rotate_right(45);
    let s0 = a0 ^ s1_s3;
    // a1 ^ a2 = s1 ^ (s1 << 17): undone by the shifts' geometric series.
    let x = a1 ^ a2;
    let s1 = x ^ x << 17 ^ x << 34 ^ x << 51;
    *s = [s0, s1, a1 ^ s0 ^ s1, s1_s3 ^ s1];
}

impl Kernels {
    /// How many streams [`Kernels::xoshiro256pp_lanes`] advances together on this path: 8 on
    /// AVX-512, 4 on AVX2, 1 (one at a time) otherwise. Fewer than four streams, or a width
    /// of 1, are drawn one stream at a time, no faster than drawing them where they are used.
    pub fn xoshiro256pp_width(self) -> usize {
        match self.path {
            #[cfg(target_arch = "x86_64")]
            Path::Detected(pulp::Arch::V4(_)) => 8,
            #[cfg(target_arch = "x86_64")]
            Path::Detected(pulp::Arch::V3(_)) => 4,
            _ => 1,
        }
    }

    /// The next `n = out.len() / states.len()` outputs of each xoshiro256++ stream in `states`,
    /// stream `l`'s in order into `out[l * n..(l + 1) * n]`, each state advanced `n` steps.
    /// The words are exactly those of [`xoshiro256pp_next`] on each stream in turn; the vector
    /// paths advance eight (AVX-512) or four (AVX2) streams together.
    ///
    /// # Panics
    /// If `out.len()` is not a multiple of `states.len()`.
    pub fn xoshiro256pp_lanes(self, states: &mut [[u64; 4]], out: &mut [u64]) {
        if states.is_empty() {
            assert!(out.is_empty(), "xoshiro256pp_lanes: words without streams");
            return;
        }
        assert_eq!(
            out.len() % states.len(),
            0,
            "xoshiro256pp_lanes: out is not a whole number of words per stream"
        );
        let n = out.len() / states.len();
        let (mut states, mut out) = (states, out);
        #[cfg(target_arch = "x86_64")]
        {
            let width = self.xoshiro256pp_width();
            if width >= 8 {
                while states.len() >= 8 {
                    let (s, rest) = states.split_at_mut(8);
                    let (o, out_rest) = out.split_at_mut(8 * n);
                    // SAFETY: width 8 is the V4 token's, which proves AVX-512F.
                    unsafe { x86::lanes8(s.try_into().expect("eight states"), o, n) };
                    (states, out) = (rest, out_rest);
                }
            }
            if width >= 4 {
                while states.len() >= 4 {
                    let (s, rest) = states.split_at_mut(4);
                    let (o, out_rest) = out.split_at_mut(4 * n);
                    // SAFETY: width 4 or more is the V3 or V4 token's, which prove AVX2.
                    unsafe { x86::lanes4(s.try_into().expect("four states"), o, n) };
                    (states, out) = (rest, out_rest);
                }
            }
        }
        for (s, o) in states.iter_mut().zip(out.chunks_exact_mut(n.max(1))) {
            for w in o {
                *w = xoshiro256pp_next(s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::xoshiro256pp_next;
    use std::arch::x86_64::*;

    /// Four streams, one per 64-bit lane of an AVX2 register: four steps at a time, their
    /// 4 x 4 words transposed so that each stream's four words are one store.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lanes4(states: &mut [[u64; 4]; 4], out: &mut [u64], n: usize) {
        assert_eq!(out.len(), 4 * n);
        let word = |i: usize| {
            let [a, b, c, d] = states.map(|s| s[i] as i64);
            _mm256_set_epi64x(d, c, b, a)
        };
        let mut s = [word(0), word(1), word(2), word(3)];
        macro_rules! rotl {
            ($x:expr, $k:literal) => {{
                let x = $x;
                _mm256_or_si256(
                    _mm256_slli_epi64::<$k>(x),
                    _mm256_srli_epi64::<{ 64 - $k }>(x),
                )
            }};
        }
        let step = |s: &mut [__m256i; 4]| -> __m256i {
            let out = _mm256_add_epi64(rotl!(_mm256_add_epi64(s[0], s[3]), 23), s[0]);
            let t = _mm256_slli_epi64::<17>(s[1]);
            s[2] = _mm256_xor_si256(s[2], s[0]);
            s[3] = _mm256_xor_si256(s[3], s[1]);
            s[1] = _mm256_xor_si256(s[1], s[2]);
            s[0] = _mm256_xor_si256(s[0], s[3]);
            s[2] = _mm256_xor_si256(s[2], t);
            s[3] = rotl!(s[3], 45);
            out
        };
        let (lane0, rest) = out.split_at_mut(n);
        let (lane1, rest) = rest.split_at_mut(n);
        let (lane2, lane3) = rest.split_at_mut(n);
        let whole = n - n % 4;
        for t in (0..whole).step_by(4) {
            let (r0, r1, r2, r3) = (step(&mut s), step(&mut s), step(&mut s), step(&mut s));
            let a = _mm256_unpacklo_epi64(r0, r1);
            let b = _mm256_unpackhi_epi64(r0, r1);
            let c = _mm256_unpacklo_epi64(r2, r3);
            let d = _mm256_unpackhi_epi64(r2, r3);
            let store = |dst: &mut [u64], v: __m256i| {
                let dst: &mut [u64; 4] = (&mut dst[t..t + 4]).try_into().expect("four words");
                // SAFETY: 32 writable bytes; an unaligned store.
                unsafe { _mm256_storeu_si256(std::ptr::from_mut(dst).cast(), v) }
            };
            store(lane0, _mm256_permute2x128_si256::<0x20>(a, c));
            store(lane1, _mm256_permute2x128_si256::<0x20>(b, d));
            store(lane2, _mm256_permute2x128_si256::<0x31>(a, c));
            store(lane3, _mm256_permute2x128_si256::<0x31>(b, d));
        }
        let mut back = [[0u64; 4]; 4];
        for (i, v) in s.into_iter().enumerate() {
            let mut w = [0u64; 4];
            // SAFETY: 32 writable bytes; an unaligned store.
            unsafe { _mm256_storeu_si256(std::ptr::from_mut(&mut w).cast(), v) };
            for (l, x) in w.into_iter().enumerate() {
                back[l][i] = x;
            }
        }
        *states = back;
        for (st, lane) in states.iter_mut().zip([lane0, lane1, lane2, lane3]) {
            for w in &mut lane[whole..] {
                *w = xoshiro256pp_next(st);
            }
        }
    }

    /// Eight streams, one per 64-bit lane of an AVX-512 register: eight steps at a time, their
    /// 8 x 8 words transposed so that each stream's eight words are one store.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lanes8(states: &mut [[u64; 4]; 8], out: &mut [u64], n: usize) {
        assert_eq!(out.len(), 8 * n);
        let word = |i: usize| {
            let [a, b, c, d, e, f, g, h] = states.map(|s| s[i] as i64);
            _mm512_set_epi64(h, g, f, e, d, c, b, a)
        };
        let mut s = [word(0), word(1), word(2), word(3)];
        let step = |s: &mut [__m512i; 4]| -> __m512i {
            let sum = _mm512_add_epi64(s[0], s[3]);
            let out = _mm512_add_epi64(_mm512_rol_epi64::<23>(sum), s[0]);
            let t = _mm512_slli_epi64::<17>(s[1]);
            s[2] = _mm512_xor_si512(s[2], s[0]);
            s[3] = _mm512_xor_si512(s[3], s[1]);
            s[1] = _mm512_xor_si512(s[1], s[2]);
            s[0] = _mm512_xor_si512(s[0], s[3]);
            s[2] = _mm512_xor_si512(s[2], t);
            s[3] = _mm512_rol_epi64::<45>(s[3]);
            out
        };
        let mut lanes: [&mut [u64]; 8] = Default::default();
        let mut rest = out;
        for lane in &mut lanes {
            let (l, r) = rest.split_at_mut(n);
            (*lane, rest) = (l, r);
        }
        let whole = n - n % 8;
        for t in (0..whole).step_by(8) {
            let r: [__m512i; 8] = [
                step(&mut s),
                step(&mut s),
                step(&mut s),
                step(&mut s),
                step(&mut s),
                step(&mut s),
                step(&mut s),
                step(&mut s),
            ];
            // Pairs of steps, then 128-bit blocks of four steps, then whole streams.
            let lo = |a, b| _mm512_unpacklo_epi64(a, b);
            let hi = |a, b| _mm512_unpackhi_epi64(a, b);
            let (t0, t1) = (lo(r[0], r[1]), hi(r[0], r[1]));
            let (t2, t3) = (lo(r[2], r[3]), hi(r[2], r[3]));
            let (t4, t5) = (lo(r[4], r[5]), hi(r[4], r[5]));
            let (t6, t7) = (lo(r[6], r[7]), hi(r[6], r[7]));
            let even = |a, b| _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b);
            let odd = |a, b| _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b);
            let (u0, u1, u2, u3) = (even(t0, t2), odd(t0, t2), even(t4, t6), odd(t4, t6));
            let (v0, v1, v2, v3) = (even(t1, t3), odd(t1, t3), even(t5, t7), odd(t5, t7));
            let streams = [
                even(u0, u2),
                even(v0, v2),
                even(u1, u3),
                even(v1, v3),
                odd(u0, u2),
                odd(v0, v2),
                odd(u1, u3),
                odd(v1, v3),
            ];
            for (lane, v) in lanes.iter_mut().zip(streams) {
                let dst: &mut [u64; 8] = (&mut lane[t..t + 8]).try_into().expect("eight words");
                // SAFETY: 64 writable bytes; an unaligned store.
                unsafe { _mm512_storeu_si512(std::ptr::from_mut(dst).cast(), v) };
            }
        }
        let mut back = [[0u64; 4]; 8];
        for (i, v) in s.into_iter().enumerate() {
            let mut w = [0u64; 8];
            // SAFETY: 64 writable bytes; an unaligned store.
            unsafe { _mm512_storeu_si512(std::ptr::from_mut(&mut w).cast(), v) };
            for (l, x) in w.into_iter().enumerate() {
                back[l][i] = x;
            }
        }
        *states = back;
        for (st, lane) in states.iter_mut().zip(lanes) {
            for w in &mut lane[whole..] {
                *w = xoshiro256pp_next(st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(i: u64) -> [u64; 4] {
        // Any nonzero states will do: SplitMix-like spreading of the index.
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        std::array::from_fn(|_| {
            z ^= z >> 31;
            z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ z >> 29
        })
    }

    /// The reference reproduces the published outputs of xoshiro256plusplus.c from the state
    /// (1, 2, 3, 4) (the same as `rand_xoshiro`'s test).
    #[test]
    fn the_reference_is_xoshiro256pp() {
        let mut s = [1, 2, 3, 4];
        let expected: [u64; 10] = [
            41943041,
            58720359,
            3588806011781223,
            3591011842654386,
            9228616714210784205,
            9973669472204895162,
            14011001112246962877,
            12406186145184390807,
            15849039046786891736,
            10450023813501588000,
        ];
        for e in expected {
            assert_eq!(xoshiro256pp_next(&mut s), e);
        }
    }

    #[test]
    fn a_step_back_undoes_a_step() {
        for i in 0..1000 {
            let start = seeded(i);
            let mut s = start;
            for _ in 0..(i % 7 + 1) {
                xoshiro256pp_next(&mut s);
            }
            for _ in 0..(i % 7 + 1) {
                xoshiro256pp_back(&mut s);
            }
            assert_eq!(s, start, "state {i}");
        }
    }

    /// Every path, for stream counts around the vector widths and word counts around the
    /// transposes' blocks: the same words and the same final states as one stream at a time.
    #[test]
    fn lanes_draw_each_streams_own_words_on_every_path() {
        for k in Kernels::available() {
            for streams in [1usize, 3, 4, 5, 8, 9, 12, 13, 16, 17] {
                for n in [0usize, 1, 3, 4, 7, 8, 9, 15, 16, 17, 64, 131] {
                    let mut states: Vec<[u64; 4]> =
                        (0..streams as u64).map(|i| seeded(i + 7)).collect();
                    let mut expect_states = states.clone();
                    let expected: Vec<u64> = expect_states
                        .iter_mut()
                        .flat_map(|s| (0..n).map(|_| xoshiro256pp_next(s)).collect::<Vec<_>>())
                        .collect();
                    let mut out = vec![0u64; streams * n];
                    k.xoshiro256pp_lanes(&mut states, &mut out);
                    let what = format!("{}: {streams} streams of {n} words", k.name());
                    assert_eq!(out, expected, "{what}");
                    assert_eq!(states, expect_states, "{what}: final states");
                }
            }
        }
    }

    #[test]
    fn each_path_names_its_width() {
        for (name, width) in [("x86-64-v4", 8), ("x86-64-v3", 4), ("scalar", 1)] {
            if let Some(k) = Kernels::named(name) {
                assert_eq!(k.xoshiro256pp_width(), width, "{name}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "whole number of words")]
    fn words_not_shared_evenly_panic() {
        let mut states = [[1, 2, 3, 4], [5, 6, 7, 8]];
        Kernels::detect().xoshiro256pp_lanes(&mut states, &mut [0; 3]);
    }
}
