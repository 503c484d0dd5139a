//! LAQ's b-bit innovation quantizer (Sun et al., NeurIPS 2019).
//!
//! It quantizes `g` against a reference `Qhat` both sides hold (the last uploaded quantized
//! gradient): `R = ||g - Qhat||_inf`, `delta = R / (2^b - 1)`,
//! `Q = Qhat - R + 2 delta floor((g - Qhat + R + delta) / (2 delta))`, so every coordinate
//! lands on a grid of `2^b` points spaced `2 delta` and `|Q_i - g_i| <= delta`. Stateful by
//! nature (it needs `Qhat`), so it is a module of functions rather than a [`crate::Compressor`].
//! Encoding: R as f32, then b bits per coordinate: `32 + b d` bits.

use crate::bits::{BitReader, BitWriter, FieldWord, Packer};
use crate::{Error, Message, Result};
use lena_kernels::Kernels;

/// The grid value `Qhat - R + 2 delta k`: the same float operations on both sides.
#[inline]
pub fn value(qhat: f32, r: f32, delta: f32, k: u32) -> f32 {
    qhat - r + 2.0 * delta * k as f32
}

/// Quantizes `g` against `qhat` with `bits` bits: writes the levels and `Q`, returns `R`.
/// [`quantize_with`] on this machine's kernels.
///
/// # Panics
/// If the slices differ in length or `bits` is not in 1..=24.
pub fn quantize(g: &[f32], qhat: &[f32], bits: u32, levels: &mut [u32], q: &mut [f32]) -> f32 {
    quantize_with(Kernels::detect(), g, qhat, bits, levels, q)
}

/// [`quantize`] on the instruction-set path of `k`: every path gives the same levels and `Q`
/// (element-wise IEEE operations, in the same order).
///
/// # Panics
/// If the slices differ in length or `bits` is not in 1..=24.
pub fn quantize_with(
    k: Kernels,
    g: &[f32],
    qhat: &[f32],
    bits: u32,
    levels: &mut [u32],
    q: &mut [f32],
) -> f32 {
    assert!((1..=24).contains(&bits), "LAQ bits must be in 1..=24");
    assert!(g.len() == qhat.len() && g.len() == levels.len() && g.len() == q.len());
    // PERF: the radius's reduction compiled for the path's instruction set too (it was four
    // lanes wide). The same R: a maximum of magnitudes (never -0.0) skipping NaN, whatever
    // the order.
    let (r, top, delta) = k.vectorize(|| grid(g, qhat, bits));
    if delta > 0.0 {
        // PERF: compiled for the path's instruction set, so `floor` is one rounding
        // instruction per vector (it was a call to libm's floorf per coordinate), and the
        // level goes through i32 (one conversion instruction; every level is below 2^24).
        k.vectorize(|| {
            for (((l, qi), g), h) in levels.iter_mut().zip(q.iter_mut()).zip(g).zip(qhat) {
                let x = ((g - h + r + delta) / (2.0 * delta)).floor();
                // `max` then `min`, not `clamp`: a NaN becomes 0 (as `clamp` then `as u32`
                // made it) instead of passing through, so the conversion below is in range.
                let x = x.max(0.0).min(top);
                // SAFETY: 0 <= x <= 2^24 - 1 and x is not NaN (above): representable in i32.
                let lvl = unsafe { x.to_int_unchecked::<i32>() } as u32;
                *l = lvl;
                *qi = value(*h, r, delta, lvl);
            }
        });
    } else {
        for ((l, qi), h) in levels.iter_mut().zip(q.iter_mut()).zip(qhat) {
            *l = 0;
            *qi = value(*h, r, delta, 0);
        }
    }
    r
}

/// The grid of `g` around `qhat`: the radius `R = ||g - qhat||_inf`, the top level
/// `2^bits - 1` and the half-spacing `delta = R / top`.
#[inline(always)]
fn grid(g: &[f32], qhat: &[f32], bits: u32) -> (f32, f32, f32) {
    let r = g
        .iter()
        .zip(qhat)
        .fold(0.0f32, |a, (g, q)| a.max((g - q).abs()));
    let top = ((1u64 << bits) - 1) as f32;
    (r, top, r / top)
}

/// Levels per [`BitWriter::pack`] and per bulk read: at most 24 bits each, within a packer.
const LEVEL_CHUNK: usize = 128;
const _: () = assert!(24 * LEVEL_CHUNK as u64 <= Packer::MAX_BITS);

/// Encodes `R` and the levels into `msg`.
pub fn encode(r: f32, levels: &[u32], bits: u32, msg: &mut Message) {
    let mut w = BitWriter::new(&mut msg.bytes);
    w.write_f32(r);
    // PERF: the levels go through the branch-free packer, a chunk at a time, as many as fit
    // 56 bits joined by shifts and pushed at once (the same bits as one `write` per level).
    for chunk in levels.chunks(LEVEL_CHUNK) {
        if bits <= 7 {
            // PERF: narrowed to bytes first (a vector loop), which the packer reads eight to a
            // load (it narrowed them one by one).
            let mut bytes = [0u8; LEVEL_CHUNK];
            for (b, &l) in bytes.iter_mut().zip(chunk) {
                *b = l as u8;
            }
            w.pack(|p| p.push_fields(&bytes[..chunk.len()], bits));
        } else {
            w.pack(|p| p.push_fields(chunk, bits));
        }
    }
    msg.bits = w.finish();
}

/// Decodes a message and moves `qhat` to the new `Q` in place. [`decode_with`] on this
/// machine's kernels.
pub fn decode(msg: &Message, bits: u32, qhat: &mut [f32]) -> Result<()> {
    decode_with(Kernels::detect(), msg, bits, qhat)
}

/// [`decode`] on the instruction-set path of `k`: every path gives the same `Q` (element-wise
/// IEEE operations, in the same order).
pub fn decode_with(k: Kernels, msg: &Message, bits: u32, qhat: &mut [f32]) -> Result<()> {
    let mut rd = BitReader::new(&msg.bytes, msg.bits, "LAQ");
    let r = rd.read_f32()?;
    if !(r.is_finite() && r >= 0.0) {
        return Err(Error::Malformed {
            kind: "LAQ",
            what: format!("radius {r}"),
        });
    }
    let delta = r / ((1u64 << bits) - 1) as f32;
    // PERF: the levels are read a chunk at a time by the bulk reader (the same values as one
    // `read` per level; a short message is still a `Truncated` error), then applied in a loop
    // without calls.
    // PERF: levels of up to 8 bits are read as bytes (which the reader writes eight at a
    // time), then widened in the loop that applies them.
    if bits <= 8 {
        apply_levels::<u8>(k, &mut rd, bits, qhat, r, delta)?;
    } else {
        apply_levels::<u32>(k, &mut rd, bits, qhat, r, delta)?;
    }
    rd.finish()
}

/// Reads the levels a chunk at a time as `T` and moves each `qhat_i` to
/// `value(qhat_i, r, delta, k_i)`.
#[inline(always)]
fn apply_levels<T: FieldWord + Default + Into<u32>>(
    k: Kernels,
    rd: &mut BitReader<'_>,
    bits: u32,
    qhat: &mut [f32],
    r: f32,
    delta: f32,
) -> Result<()> {
    let mut ks = [T::default(); LEVEL_CHUNK];
    for chunk in qhat.chunks_mut(LEVEL_CHUNK) {
        let ks = &mut ks[..chunk.len()];
        rd.read_fields(bits, ks)?;
        k.vectorize(|| {
            for (q, &l) in chunk.iter_mut().zip(ks.iter()) {
                *q = value(*q, r, delta, l.into());
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The quantizer's levels as first written: one scalar loop, `clamp` and a saturating
    /// cast.
    fn quantize_reference(g: &[f32], qhat: &[f32], bits: u32) -> (f32, Vec<u32>, Vec<f32>) {
        let (r, top, delta) = grid(g, qhat, bits);
        let levels: Vec<u32> = g
            .iter()
            .zip(qhat)
            .map(|(g, h)| {
                if delta > 0.0 {
                    ((g - h + r + delta) / (2.0 * delta))
                        .floor()
                        .clamp(0.0, top) as u32
                } else {
                    0
                }
            })
            .collect();
        let q = qhat
            .iter()
            .zip(&levels)
            .map(|(h, &l)| value(*h, r, delta, l))
            .collect();
        (r, levels, q)
    }

    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -50.0f32..50.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
        ]
    }

    proptest! {
        /// Every kernel path quantizes as the scalar reference does, bit for bit, NaN and
        /// infinities included; the encoding is the reference's one write per level, and every
        /// path decodes it to the reference's Q.
        #[test]
        fn every_path_quantizes_and_encodes_as_the_reference(
            gh in proptest::collection::vec((any_f32(), -50.0f32..50.0), 1..700),
            bits in prop_oneof![1u32..9, Just(16), Just(24)],
        ) {
            let (g, qhat): (Vec<f32>, Vec<f32>) = gh.into_iter().unzip();
            let d = g.len();
            let (r0, l0, q0) = quantize_reference(&g, &qhat, bits);
            let bitsof = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for k in Kernels::available() {
                let (mut levels, mut q) = (vec![7u32; d], vec![1.0f32; d]);
                let r = quantize_with(k, &g, &qhat, bits, &mut levels, &mut q);
                prop_assert_eq!(r.to_bits(), r0.to_bits(), "{}", k.name());
                prop_assert_eq!(&levels, &l0, "{}", k.name());
                prop_assert_eq!(bitsof(&q), bitsof(&q0), "{}", k.name());
            }
            let mut msg = Message::default();
            encode(r0, &l0, bits, &mut msg);
            let mut want = Message::default();
            let mut w = BitWriter::new(&mut want.bytes);
            w.write_f32(r0);
            for &l in &l0 {
                w.write(u64::from(l), bits);
            }
            want.bits = w.finish();
            prop_assert_eq!(&msg, &want);
            // Every path decodes Q as the reference quantized it.
            if r0.is_finite() {
                for k in Kernels::available() {
                    let mut back = qhat.clone();
                    decode_with(k, &msg, bits, &mut back).unwrap();
                    prop_assert_eq!(bitsof(&back), bitsof(&q0), "{}", k.name());
                }
            }
        }

        #[test]
        fn grid_error_round_trip_and_bits(
            g in proptest::collection::vec(-50.0f32..50.0, 1..100),
            shift in -5.0f32..5.0,
            bits in 1u32..9,
        ) {
            let d = g.len();
            let qhat: Vec<f32> = g.iter().map(|v| v * 0.5 + shift).collect();
            let (mut levels, mut q) = (vec![0u32; d], vec![0.0f32; d]);
            let r = quantize(&g, &qhat, bits, &mut levels, &mut q);
            let delta = r / ((1u64 << bits) - 1) as f32;
            for i in 0..d {
                prop_assert!((q[i] - g[i]).abs() <= delta * 1.0001 + 1e-5 * r, "coord {}", i);
            }
            let mut msg = Message::default();
            encode(r, &levels, bits, &mut msg);
            prop_assert_eq!(msg.bits(), 32 + u64::from(bits) * d as u64);
            let mut back = qhat.clone();
            decode(&msg, bits, &mut back).unwrap();
            for (a, b) in q.iter().zip(&back) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
