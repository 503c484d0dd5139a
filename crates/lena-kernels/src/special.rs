//! Vectorised special functions for the objectives' element-wise work: the fused logistic
//! `softplus` + `sigmoid`, and `exp`.
//!
//! The bodies are branch-free scalar code that LLVM vectorises inside pulp's target-feature
//! context (no libm calls): exp by range reduction to `[-ln2/2, ln2/2]` and a degree-6
//! polynomial; `log1p(e)` for `e` in `(0, 1]` as `2 atanh(e / (2 + e))`, which has no
//! cancellation for small `e`. Relative error about 2e-7 against the f64 references.

use crate::Kernels;
use pulp::{Simd, WithSimd};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// `exp(x)` for `x` in roughly `[-87, 88]`; smaller arguments give about 1e-38, larger clamp.
///
/// PERF: the power of two comes from the bits of `t = x log2(e) + ROUND`, whose low mantissa
/// bits hold the integer `n` (`t` is `1.5 * 2^23 + n`, one unit per integer), rather than from
/// `n as i32`: Rust's saturating float-to-int cast (NaN to 0) was scalarised, sixteen
/// conversions and NaN checks per AVX-512 vector, and made the exponential 3.3 cycles an
/// element on an Intel Xeon. The scale is the same (`scale_bits_match_the_cast`).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let (t, _, p) = exp_parts(x);
    p * f32::from_bits(scale_bits(t))
}

/// The steps of [`exp_f32`] up to its power of two: the clamped argument rounded,
/// `t = x log2(e) + ROUND`, its integer `n = t - ROUND`, and the polynomial `p ~ exp(x - n ln 2)`.
#[inline(always)]
fn exp_parts(x: f32) -> (f32, f32, f32) {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = r.mul_add(p, 1.0 / 24.0);
    let p = r.mul_add(p, 1.0 / 6.0);
    let p = r.mul_add(p, 0.5);
    let p = r.mul_add(p, 1.0);
    let p = r.mul_add(p, 1.0);
    (t, n, p)
}

/// [`exp_f32`] as written before its power of two came from `t`'s bits: by Rust's cast of
/// `n` (what `exp_is_bit_identical_to_the_cast_form_on_every_path` compares against).
#[cfg(test)]
pub(crate) fn exp_by_cast(x: f32) -> f32 {
    let (_, n, p) = exp_parts(x);
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `(n + 127) << 23`, the bits of `2^n`, for `t = ROUND + n` with `n` an integer in
/// `[-126, 127]`; for a NaN `t` some finite or infinite scale, which the NaN `p` it multiplies
/// keeps NaN.
#[inline(always)]
fn scale_bits(t: f32) -> u32 {
    t.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23
}

/// `(softplus(t), sigmoid(t))` with one exponential.
#[inline(always)]
fn softplus_sigmoid_one(t: f32) -> (f32, f32) {
    let e = exp_f32(-t.abs()); // in (0, 1]
    let s = e / (2.0 + e);
    let s2 = s * s;
    let q = s2.mul_add(1.0 / 13.0, 1.0 / 11.0);
    let q = s2.mul_add(q, 1.0 / 9.0);
    let q = s2.mul_add(q, 1.0 / 7.0);
    let q = s2.mul_add(q, 1.0 / 5.0);
    let q = s2.mul_add(q, 1.0 / 3.0);
    let q = s2.mul_add(q, 1.0);
    let log1p_e = 2.0 * s * q;
    let inv = 1.0 / (1.0 + e);
    let sig = if t >= 0.0 { inv } else { e * inv };
    (t.max(0.0) + log1p_e, sig)
}

struct SoftplusSigmoid<'a> {
    t: &'a mut [f32],
}

impl WithSimd for SoftplusSigmoid<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> f64 {
        // PERF: eight independent partial sums let LLVM keep the loss in one vector register.
        let mut acc = [0.0f32; 8];
        let (body, tail) = self.t.split_at_mut(self.t.len() / 8 * 8);
        for ch in body.chunks_exact_mut(8) {
            for j in 0..8 {
                let (sp, sig) = softplus_sigmoid_one(ch[j]);
                acc[j] += sp;
                ch[j] = sig;
            }
        }
        let mut total: f64 = acc.iter().map(|&a| f64::from(a)).sum();
        for v in tail {
            let (sp, sig) = softplus_sigmoid_one(*v);
            total += f64::from(sp);
            *v = sig;
        }
        total
    }
}

struct Exp<'a> {
    x: &'a mut [f32],
}

impl WithSimd for Exp<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        for v in self.x.iter_mut() {
            *v = exp_f32(*v);
        }
    }
}

#[cfg(test)]
#[test]
fn scale_bits_match_the_cast() {
    for n in -126i32..=127 {
        let t = n as f32 + ROUND;
        assert_eq!(t - ROUND, n as f32, "t holds n = {n} exactly");
        assert_eq!(scale_bits(t), ((n + 127) as u32) << 23, "n = {n}");
    }
}

impl Kernels {
    /// Replaces each `t_i` by `sigmoid(t_i)` and returns `sum_i softplus(t_i)`
    /// (`softplus(t) = log(1 + exp(t))`), the logistic loss and its derivative in one pass.
    ///
    /// The sum is accumulated in f32 within blocks of eight lanes and in f64 across them.
    pub fn softplus_sigmoid(self, t: &mut [f32]) -> f64 {
        self.run(SoftplusSigmoid { t })
    }

    /// `x_i <- exp(x_i)` (arguments clamped to `[-87, 88]`).
    pub fn exp(self, x: &mut [f32]) {
        self.run(Exp { x })
    }
}
