//! Compressors: identity, QSGD, top-k, rand-k, scaled sign, and error feedback for any of them.
//!
//! A compressor writes `C(x)` (exactly what its decoder will reconstruct) and the encoded
//! message in one call. Its contract is data: [`Compressor::unbiased`], the variance factor
//! omega (`E||C(x) - x||^2 <= omega ||x||^2` for unbiased ones) and the contraction delta
//! (`E||C(x) - x||^2 <= (1 - delta) ||x||^2`).

use crate::bits::{BitReader, BitWriter, Cursor, FieldWord, Packer, width_for};
use crate::{Error, Message, Result};
use lena_kernels::{BadParam, Kernels};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// A (possibly randomized) compression operator with a real encoding.
pub trait Compressor: Send + Sync {
    /// Display name, e.g. `QSGD(s=4)`.
    fn name(&self) -> String;
    /// Writes `C(x)` into `out` and its encoding into `msg`; randomness comes from `rng`.
    ///
    /// # Panics
    /// If `out.len() != x.len()` or `x` is not of the dimension the compressor was built for.
    fn compress(&self, x: &[f32], rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message);
    /// Reconstructs `C(x)` from a message; malformed messages are errors, never panics.
    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()>;
    /// For a compressor whose messages carry a small level per coordinate (QSGD with at most
    /// 126 levels): `Some(bucket)`, having put into `fields` (of length `d`) each coordinate's
    /// `level << 1 | sign` and into `steps` (cleared first) each bucket's step, so that
    /// coordinate i's value as [`Self::decode`] writes it is
    /// [`Qsgd::level_value`]`(steps[i / bucket], fields[i])`; a malformed message is the same
    /// error. `None` (the default) for a compressor without such a form. A server sums the
    /// values from a quarter of the bytes of decoded vectors.
    fn decode_levels(
        &self,
        msg: &Message,
        fields: &mut [u8],
        steps: &mut Vec<f32>,
    ) -> Option<Result<usize>> {
        let _ = (msg, fields, steps);
        None
    }
    /// [`Self::decode_levels`] of two messages: the same fields, steps and errors as one after
    /// the other (the default). A compressor may decode both at once (QSGD with Elias-gamma
    /// levels does): a server with many uploads decodes them two by two.
    fn decode_levels_two(
        &self,
        msgs: [&Message; 2],
        fields: [&mut [u8]; 2],
        steps: [&mut Vec<f32>; 2],
    ) -> Option<[Result<usize>; 2]> {
        let ([f0, f1], [s0, s1]) = (fields, steps);
        let first = self.decode_levels(msgs[0], f0, s0)?;
        let second = self.decode_levels(msgs[1], f1, s1)?;
        Some([first, second])
    }
    /// For a compressor whose messages carry a few coordinates (top-k, rand-k): `Some`, having
    /// put into `out` (cleared first) the (index, value) pairs of the coordinates `msg` carries,
    /// ascending by index, with the values [`Self::decode`] writes there; every other coordinate
    /// of its vector is +0.0. `None` (the default) for a compressor without such a form. A
    /// server adds the pairs rather than a whole vector per upload.
    fn decode_sparse(&self, msg: &Message, out: &mut Vec<(u32, f32)>) -> Option<Result<()>> {
        let _ = (msg, out);
        None
    }
    /// DIANA's node step with this compressor: the encoding of `C(x - h)` into `msg`, and
    /// `h += a C(x - h)` for the shift's `h` and `a` (each value `fma(a, C(x - h)_i, h_i)`, as
    /// [`Kernels::axpy`] computes it). `x` and `scratch` (both of length d) are the caller's
    /// scratch: their contents afterwards are unspecified.
    ///
    /// The default forms `x - h` in `x`, compresses it with [`Self::compress`] into `scratch`
    /// and `msg`, and adds `a` times that to `h`, with `k`. A compressor may fuse these passes
    /// ([`Qsgd`] does), with the same bits in `msg` and `h`.
    ///
    /// # Panics
    /// If a slice is not of length d.
    fn compress_shifted(
        &self,
        k: Kernels,
        x: &mut [f32],
        shift: Shift<'_>,
        rng: &mut dyn RngCore,
        scratch: &mut [f32],
        msg: &mut Message,
    ) {
        k.axpy(-1.0, shift.h, x);
        self.compress(x, rng, scratch, msg);
        k.axpy(shift.a, scratch, shift.h);
    }
    /// `E[C(x)] = x`.
    fn unbiased(&self) -> bool;
    /// Variance factor omega, for unbiased compressors.
    fn omega(&self) -> Option<f64>;
    /// Contraction constant delta in (0, 1], where one holds.
    fn delta(&self) -> Option<f64>;
}

/// A shift `h` that [`Compressor::compress_shifted`] compresses against and moves by `a` times
/// the compressed difference (DIANA's `h_m` and its step `a`).
#[derive(Debug)]
pub struct Shift<'a> {
    /// The shift, updated in place.
    pub h: &'a mut [f32],
    /// Its step.
    pub a: f32,
}

/// Which norm QSGD scales each bucket by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QsgdNorm {
    /// Euclidean norm (Alistarh et al. 2017).
    L2,
    /// Largest magnitude (lower variance, used by many codes).
    Max,
}

/// How QSGD writes each coordinate's level and sign (ALGORITHMS.md, "Bit accounting").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QsgdCoding {
    /// The level `l` as the Elias-gamma code of `l + 1` (1 bit for level 0, `2 floor(log2(l + 1))
    /// + 1` bits in general), then a sign bit when `l > 0`: short when most levels are 0.
    #[default]
    EliasGamma,
    /// Fixed width: `ceil(log2(s + 1))` bits of level and one sign bit per coordinate.
    Fixed,
}

/// How top-k writes its indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexCoding {
    /// `ceil(log2 d)` bits per index.
    #[default]
    Log2,
    /// 32 bits per index, as many published codes count.
    U32,
}

/// Unchecked compressor choice, as read from a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CompressorParams {
    /// 32-bit floats, unchanged.
    Identity,
    /// QSGD with `levels` (s) levels per sign, buckets of `bucket` coordinates (0: one bucket).
    Qsgd {
        /// s >= 1.
        levels: u32,
        /// Bucket size; 0 means the whole vector.
        #[serde(default)]
        bucket: usize,
        /// Bucket norm.
        #[serde(default = "default_norm")]
        norm: QsgdNorm,
        /// Level coding (default Elias gamma).
        #[serde(default)]
        coding: QsgdCoding,
    },
    /// The k largest magnitudes.
    TopK {
        /// Coordinates kept, 1..=d.
        k: usize,
        /// Index coding (default `ceil(log2 d)` bits).
        #[serde(default)]
        index_coding: IndexCoding,
    },
    /// k uniformly random coordinates (indices from a shared seed).
    RandK {
        /// Coordinates kept, 1..=d.
        k: usize,
        /// Scale by d/k to make it unbiased (for DIANA-style use); off for error feedback.
        #[serde(default)]
        scaled: bool,
    },
    /// `(||x||_1 / d) sign(x)`.
    ScaledSign,
}

fn default_norm() -> QsgdNorm {
    QsgdNorm::L2
}

impl CompressorParams {
    /// QSGD with the default (Elias-gamma) coding.
    pub fn qsgd(levels: u32, bucket: usize, norm: QsgdNorm) -> Self {
        CompressorParams::Qsgd {
            levels,
            bucket,
            norm,
            coding: QsgdCoding::default(),
        }
    }

    /// Top-k with the default (`ceil(log2 d)`-bit) index coding.
    pub fn top_k(k: usize) -> Self {
        CompressorParams::TopK {
            k,
            index_coding: IndexCoding::default(),
        }
    }

    /// Validates against dimension `d` and builds the compressor (the same checks as each
    /// type's `new`).
    pub fn check(&self, d: usize) -> Result<Box<dyn Compressor>> {
        Ok(match *self {
            CompressorParams::Identity => Box::new(Identity::new(d)),
            CompressorParams::Qsgd {
                levels,
                bucket,
                norm,
                coding,
            } => Box::new(Qsgd::new(d, levels, bucket, norm, coding)?),
            CompressorParams::TopK { k, index_coding } => Box::new(TopK::new(d, k, index_coding)?),
            CompressorParams::RandK { k, scaled } => Box::new(RandK::new(d, k, scaled)?),
            CompressorParams::ScaledSign => Box::new(ScaledSign::new(d)),
        })
    }
}

/// `k` in `1..=d`, or the error that names the field.
fn check_k(k: usize, d: usize) -> Result<()> {
    if k == 0 || k > d {
        return Err(BadParam::new("compressor.k", format!("in 1..={d}"), k).into());
    }
    Ok(())
}

fn check_len<T>(kind: &'static str, d: usize, out: &[T]) -> Result<()> {
    if out.len() == d {
        Ok(())
    } else {
        Err(Error::Dimension {
            kind,
            expected: d,
            found: out.len(),
        })
    }
}

/// 32-bit floats, unchanged: omega = 0, delta = 1.
pub struct Identity {
    d: usize,
}

impl Identity {
    /// The identity on vectors of dimension `d`.
    pub fn new(d: usize) -> Self {
        Self { d }
    }
}

impl Compressor for Identity {
    fn name(&self) -> String {
        "identity".into()
    }
    fn compress(&self, x: &[f32], _rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
        assert_eq!(x.len(), self.d);
        out.copy_from_slice(x);
        crate::dense::encode(x, msg);
    }
    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        check_len("identity", self.d, out)?;
        crate::dense::decode(msg, out)
    }
    fn unbiased(&self) -> bool {
        true
    }
    fn omega(&self) -> Option<f64> {
        Some(0.0)
    }
    fn delta(&self) -> Option<f64> {
        Some(1.0)
    }
}

/// QSGD (Alistarh et al. 2017): per bucket, `Q(x)_i = N sign(x_i) l_i / s` with `l_i` the
/// stochastic rounding of `s |x_i| / N`, N the bucket's norm. Unbiased.
///
/// Encoding (fixed width): per bucket the norm as f32, then per coordinate one field of
/// `ceil(log2(s + 1)) + 1` bits: the level, then the sign in the lowest bit. omega = `min(b / s^2, sqrt(b) / s)` for the L2 norm
/// and `b / (4 s^2)` for the max norm, b the bucket size.
pub struct Qsgd {
    d: usize,
    s: u32,
    bucket: usize,
    norm: QsgdNorm,
    coding: QsgdCoding,
    kernels: Kernels,
}

impl Qsgd {
    /// QSGD on vectors of dimension `d` with `levels` (s) levels per sign, in 1..=2^24, and
    /// buckets of `bucket` coordinates (0: the whole vector as one bucket).
    ///
    /// # Errors
    /// [`Error::BadParam`] naming `compressor.levels` if `levels` is out of range.
    ///
    /// ```
    /// use lena_compress::{Compressor, Message, Qsgd, QsgdCoding, QsgdNorm};
    /// use rand::SeedableRng;
    ///
    /// let x: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    /// let q = Qsgd::new(x.len(), 4, 256, QsgdNorm::L2, QsgdCoding::EliasGamma)?;
    /// let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    /// let (mut cx, mut msg) = (vec![0.0; x.len()], Message::default());
    /// q.compress(&x, &mut rng, &mut cx, &mut msg);
    /// // The exact length of the encoding: 4 bucket norms of 32 bits, then a code per level.
    /// assert!(msg.bits() > 4 * 32 && msg.bits() < 32 * x.len() as u64);
    /// let mut back = vec![0.0; x.len()];
    /// q.decode(&msg, &mut back)?;
    /// assert_eq!(back, cx); // the decoder rebuilds exactly C(x)
    /// assert!(Qsgd::new(10, 0, 0, QsgdNorm::L2, QsgdCoding::Fixed).is_err());
    /// # Ok::<(), lena_compress::Error>(())
    /// ```
    pub fn new(
        d: usize,
        levels: u32,
        bucket: usize,
        norm: QsgdNorm,
        coding: QsgdCoding,
    ) -> Result<Self> {
        if levels == 0 || levels > (1 << 24) {
            return Err(BadParam::new("compressor.levels", "in 1..=2^24", levels).into());
        }
        Ok(Self {
            d,
            s: levels,
            bucket: if bucket == 0 { d.max(1) } else { bucket },
            norm,
            coding,
            kernels: Kernels::detect(),
        })
    }

    /// The value of `level` in a bucket whose step is `unit = norm / s` (encoder and decoder
    /// compute it identically).
    ///
    /// PERF: the sign is set with a bit operation, not a branch or select (which the compiler
    /// turned into two masked stores, slow on AMD); `unit * level` is never negative, so this
    /// is `-v` for a negative coordinate. The sign comes as the bit itself (0 or 1), shifted
    /// into place: given as a `bool`, it was compared with zero and masked per lane.
    #[inline(always)]
    fn value(unit: f32, level: f32, negative: u32) -> f32 {
        debug_assert!(negative <= 1);
        let v = unit * level;
        f32::from_bits(v.to_bits() | (negative << 31))
    }

    /// `C(x)` without its encoding: the value of every coordinate's stochastic level, given
    /// its 32-bit draw `uniforms[i]` (a uniform in [0, 1) from its top 24 bits), written into
    /// `out`. [`Compressor::compress`] writes the same into its `out` given the same draws; it
    /// takes them from its stream, for every 256 coordinates of a bucket (fewer at its end)
    /// one `fill_bytes` of four bytes per coordinate, read little-endian. For a simulation that
    /// needs no messages, or to time QSGD's arithmetic apart from its draws and its coding.
    ///
    /// # Panics
    /// If `x`, `uniforms` or `out` is not of length `d`.
    pub fn quantize(&self, x: &[f32], uniforms: &[u32], out: &mut [f32]) {
        assert_eq!(x.len(), self.d);
        assert_eq!(uniforms.len(), self.d);
        assert_eq!(out.len(), self.d);
        if self.byte_fields() {
            self.quantize_fields::<u8>(x, uniforms, out);
        } else {
            self.quantize_fields::<u32>(x, uniforms, out);
        }
    }

    /// [`Self::quantize`] through a buffer of fields of type `F`.
    fn quantize_fields<F: Field>(&self, x: &[f32], uniforms: &[u32], out: &mut [f32]) {
        let mut fields = [F::default(); CHUNK];
        let b = self.bucket;
        for ((xb, ub), ob) in x.chunks(b).zip(uniforms.chunks(b)).zip(out.chunks_mut(b)) {
            let n = self.bucket_norm(xb);
            for ((xc, uc), oc) in xb
                .chunks(CHUNK)
                .zip(ub.chunks(CHUNK))
                .zip(ob.chunks_mut(CHUNK))
            {
                self.levels::<F, false>(n, xc, uc, 0.0, oc, &mut fields[..xc.len()], Ahead::NONE);
            }
        }
    }

    /// The levels of a chunk `xc` of a bucket of norm `n`, given each coordinate's 32-bit draw:
    /// each coordinate's field (`level << 1 | sign`) into `fields` and its value into `oc`.
    ///
    /// With `SHIFT`, `oc` is a shift h and the chunk's coordinates are `x_i - h_i` (rounded
    /// once, the floats of `axpy(-1, h, x)`); each `h_i` moves to `fma(a, value, h_i)`.
    /// `ahead`: memory the caller reads next, requested meanwhile where the loop can.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // The loop's operands and a hint.
    fn levels<F: Field, const SHIFT: bool>(
        &self,
        n: f32,
        xc: &[f32],
        random: &[u32],
        a: f32,
        oc: &mut [f32],
        fields: &mut [F],
        ahead: Ahead,
    ) {
        let s = self.s as f32;
        let scale = if n > 0.0 { s / n } else { 0.0 };
        let unit = n / s;
        #[allow(unused_mut)] // Only x86-64 has a path that takes some first.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if self.s <= AVX512_LEVELS
            && self.kernels.is_x86_64_v4()
            && let Some(bytes) = F::bytes_mut(fields)
        {
            // SAFETY: the x86-64-v4 path proves AVX-512 F, BW and DQ.
            done =
                unsafe { levels_avx512::<SHIFT>(s, scale, unit, a, xc, random, oc, bytes, ahead) };
        } else if self.kernels.is_x86_64_v3()
            && let Some(bytes) = F::bytes_mut(fields)
        {
            // SAFETY: the x86-64-v3 path proves AVX2 and FMA.
            done = unsafe { levels_avx2::<SHIFT>(s, scale, unit, a, xc, random, oc, bytes, ahead) };
        }
        let (xc, random) = (&xc[done..], &random[done..]);
        let (oc, fields) = (&mut oc[done..], &mut fields[done..]);
        self.kernels.vectorize(|| {
            for (((xi, oi), f), &bits) in xc
                .iter()
                .zip(oc.iter_mut())
                .zip(fields.iter_mut())
                .zip(random)
            {
                // A uniform in [0, 1) from the top 24 bits of the draw.
                // PERF: integer <-> float conversions go through i32 (every value here is below
                // 2^31), which AVX2 converts in one instruction; u32 takes several. The values
                // are the same.
                let u = (bits >> 8) as i32 as f32 * (1.0 / (1u32 << 24) as f32);
                let xi = if SHIFT { xi - *oi } else { *xi };
                // Never NaN: s for a NaN product (a NaN or infinite x), as `min` gives.
                // PERF: written as a compare and select, which is one `vminps` (whose NaN
                // case it is); `min` adds a NaN test and a blend.
                let p = xi.abs() * scale;
                let r = if p < s { p } else { s };
                // PERF: a saturating `r as i32` is not vectorised (NaN and range checks per
                // lane); truncation is floor here and the checks cannot fire.
                // SAFETY: 0 <= r <= s <= 2^24 and r is not NaN (above), so r truncated is
                // representable in i32.
                let lower: i32 = unsafe { r.to_int_unchecked() };
                // At most s: below s, lower + 1 <= s; at s, r - lower = 0 and u is not below.
                let level = lower + i32::from(u < r - lower as f32);
                // Negative: x's sign bit if the level is above 0 (level >= 0).
                // PERF: a minimum of two integers; a boolean and takes four vector instructions.
                let negative = (xi.to_bits() >> 31).min(level as u32);
                *f = F::new(((level as u32) << 1) | negative);
                let v = Self::value(unit, level as f32, negative);
                *oi = if SHIFT { a.mul_add(v, *oi) } else { v };
            }
        });
    }

    /// Compresses `x` (of length `d`) into `out` and `msg` through a buffer of fields of
    /// type `F`; with a shift `(a, h)`, compresses `x - h` into `msg` and adds `a` times its
    /// compressed value to `h` instead (`out` unused: [`Compressor::compress_shifted`]).
    ///
    /// PERF: with a shift, the difference is never stored: each bucket's norm is taken from x
    /// and h ([`Kernels::dist2_sq`], the floats of the norm of the stored difference) and the
    /// level loop forms it again and moves h while h's bucket is still in L1. perf put a tenth
    /// of DIANA's round on AMD Zen 1 in the two passes this replaces (one to form the
    /// difference, one to move h after compressing); fused, the round takes about 0.97 of
    /// the time (alternated pairs): forming a bucket's difference cost about as much with the
    /// shift in L1, so the passes' cost was mostly their own instructions, not the memory.
    fn compress_fields<F: Field>(
        &self,
        x: &[f32],
        rng: &mut dyn RngCore,
        out: &mut [f32],
        mut shift: Option<(f32, &mut [f32])>,
        msg: &mut Message,
    ) {
        let width = width_for(u64::from(self.s) + 1);
        let mut w = BitWriter::new(&mut msg.bytes);
        // PERF: the uniforms of up to CHUNK coordinates come from one `fill_bytes` call (not one
        // call through `dyn RngCore` per coordinate), the levels are computed in a loop free of
        // calls and branches (vectorised by the compiler), and packing is a separate pass.
        // PERF: words, not bytes, so the level loop loads eight draws with one vector load.
        let mut random = [0u32; CHUNK];
        let mut fields = [F::default(); CHUNK];
        let a = shift.as_ref().map_or(0.0, |s| s.0);
        // The shift's place, for `Ahead` hints (addresses only: never read through).
        let h_span = shift.as_ref().map(|(_, h)| h.as_ptr_range());
        for (b, (xb, ob)) in x
            .chunks(self.bucket)
            .zip(out.chunks_mut(self.bucket))
            .enumerate()
        {
            // The norm of the bucket to compress (x's, or x - h's), and where its values go.
            let (n, ob) = match &mut shift {
                None => (self.bucket_norm(xb), ob),
                Some((_, h)) => {
                    let hb = &mut h[b * self.bucket..][..xb.len()];
                    (self.bucket_norm_shifted(xb, hb), hb)
                }
            };
            w.write_f32(n);
            for (xc, oc) in xb.chunks(CHUNK).zip(ob.chunks_mut(CHUNK)) {
                let m = xc.len();
                rng.fill_bytes(bytemuck::cast_slice_mut(&mut random[..m]));
                // Four bytes of the stream read little-endian, whatever the machine (a no-op
                // on little-endian ones).
                for r in &mut random[..m] {
                    *r = u32::from_le(*r);
                }
                if let Some(h) = &h_span {
                    // PERF: the shift two chunks on, requested while this chunk's levels are
                    // worked out: its bucket's norm then reads it from L1, not L3 (the norms
                    // were a tenth of DIANA's round; they take h's first reads). One chunk on
                    // gained less. Only the AVX-512 and AVX2 loops take the requests.
                    let ahead = Ahead::within(oc.as_ptr().wrapping_add(2 * CHUNK), m, h);
                    self.levels::<F, true>(n, xc, &random[..m], a, oc, &mut fields[..m], ahead);
                } else {
                    let none = Ahead::NONE;
                    self.levels::<F, false>(n, xc, &random[..m], 0.0, oc, &mut fields[..m], none);
                }
                match self.coding {
                    // PERF: byte fields (at most 8 bits each): eight at a time where they are
                    // narrower than a byte, else as many as fit 56 bits joined by shifts and
                    // pushed at once.
                    QsgdCoding::Fixed if let Some(bytes) = F::bytes(&fields[..m]) => {
                        const _: () = assert!(8 * CHUNK as u64 <= Packer::MAX_BITS);
                        w.pack(|p| p.push_fields(bytes, width + 1));
                    }
                    QsgdCoding::Fixed => {
                        let mut word = Word::default();
                        for &f in &fields[..m] {
                            word.push(&mut w, f.get(), width + 1);
                        }
                        word.flush(&mut w);
                    }
                    // PERF: levels up to 6 (byte fields below 16, codes of at most 6 bits):
                    // eight or 32 fields at a time, with no branch on the levels (pack_gamma).
                    QsgdCoding::EliasGamma
                        if self.s <= PAIR_LEVELS
                            && let Some(bytes) = F::bytes(&fields[..m]) =>
                    {
                        // At most 6 bits per field: CHUNK fields fit one packer.
                        const _: () = assert!(6 * CHUNK as u64 <= Packer::MAX_BITS);
                        w.pack(|p| pack_gamma(self.kernels, p, bytes));
                    }
                    QsgdCoding::EliasGamma => {
                        let codes = gamma_codes();
                        let quads = gamma_quad_codes();
                        let mut word = Word::default();
                        let fields = &fields[..m];
                        let mut i = 0;
                        while i < m {
                            // PERF: four fields of levels 0 and 1 (most of them at usual s and
                            // buckets) from one table entry: a quarter of the serial steps.
                            if let Some(&[f0, f1, f2, f3]) = fields.get(i..i + 4)
                                && let (f0, f1, f2, f3) = (f0.get(), f1.get(), f2.get(), f3.get())
                                && (f0 | f1 | f2 | f3) <= 3
                            {
                                let (code, len) =
                                    quads[(f0 | f1 << 2 | f2 << 4 | f3 << 6) as usize];
                                word.push(&mut w, code, u32::from(len));
                                i += 4;
                                continue;
                            }
                            let f = fields[i].get();
                            i += 1;
                            if let Some(&(code, len)) = codes.get(f as usize) {
                                // Code and sign as one field (the same bits as write_gamma
                                // followed by a 1-bit write), from the table.
                                word.push(&mut w, code, u32::from(len));
                            } else {
                                let (level, negative) = (f >> 1, f & 1);
                                let n = u64::from(level) + 1;
                                word.flush(&mut w);
                                w.write_gamma(n);
                                if level > 0 {
                                    w.write(u64::from(negative), 1);
                                }
                            }
                        }
                        word.flush(&mut w);
                    }
                }
            }
        }
        msg.bits = w.finish();
    }

    /// Decodes `msg` into `out` (of length `d`) through a buffer of fields of type `F`.
    fn decode_fields<F: Field>(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        self.parse::<F>(msg, |at, unit, fields| {
            let oc = &mut out[at..at + fields.len()];
            self.kernels.vectorize(|| {
                for (oi, f) in oc.iter_mut().zip(fields.iter()) {
                    *oi = Self::field_value(unit, f.get());
                }
            });
        })
    }

    /// Parses `msg`, a message of `d` coordinates, through a buffer of fields of type `F`:
    /// `chunk(at, step, fields)` for every chunk of up to 256 coordinates of a bucket, from
    /// coordinate `at`, with its bucket's step `norm / s` and its fields (`level << 1 | sign`,
    /// every level checked to be at most s), in order; the first error stops it.
    #[inline(always)]
    fn parse<F: Field>(
        &self,
        msg: &Message,
        mut chunk: impl FnMut(usize, f32, &[F]),
    ) -> Result<()> {
        let width = width_for(u64::from(self.s) + 1);
        let mut r = BitReader::new(&msg.bytes, msg.bits, "QSGD");
        let (steps, multi) = (multi_gamma_steps(), multi_gamma_table());
        // Room for a whole window's fields written past the chunk's last (see gamma_windows).
        let mut buf = [F::default(); 256 + MULTI_FIELDS];
        // PERF: plain counters, not iterators: the window loop below keeps its values in
        // registers only if little else is live around it.
        let mut at = 0;
        while at < self.d {
            let unit = self.read_step(&mut r)?;
            let b1 = (at + self.bucket).min(self.d);
            while at < b1 {
                let len = (b1 - at).min(256);
                match self.coding {
                    QsgdCoding::Fixed => r.read_fields(width + 1, &mut buf[..len])?,
                    QsgdCoding::EliasGamma => {
                        // PERF: whole windows while the cursor has them (most of the chunk),
                        // then the rest code by code.
                        let (mut c, mut i) = (r.cursor(), 0);
                        while gamma_windows(&mut c, &mut buf, &mut i, len, steps, multi) {}
                        r.resume(c);
                        self.gamma_rest(&mut r, &mut buf, i, len)?;
                    }
                }
                let fields = &buf[..len];
                self.check_levels(fields)?;
                chunk(at, unit, fields);
                at += len;
            }
        }
        r.finish()
    }

    /// A bucket's norm read from `r` and checked: its step `norm / s`.
    #[inline(always)]
    fn read_step(&self, r: &mut BitReader<'_>) -> Result<f32> {
        let n = r.read_f32()?;
        if !(n.is_finite() && n >= 0.0) {
            return Err(Error::Malformed {
                kind: "QSGD",
                what: format!("bucket norm {n}"),
            });
        }
        Ok(n / self.s as f32)
    }

    /// An error unless every level of `fields` is at most s.
    #[inline(always)]
    fn check_levels<F: Field>(&self, fields: &[F]) -> Result<()> {
        let top = F::max(fields) >> 1;
        if top > self.s {
            return Err(Error::Malformed {
                kind: "QSGD",
                what: format!("level {top} > s"),
            });
        }
        Ok(())
    }

    /// The Elias-gamma fields `i..len` of a chunk into `buf`, after the cursor's windows
    /// ([`gamma_windows`]) stopped: near the chunk's or the message's end, code by code.
    #[inline(always)]
    fn gamma_rest<F: Field>(
        &self,
        r: &mut BitReader<'_>,
        buf: &mut [F; 256 + MULTI_FIELDS],
        mut i: usize,
        len: usize,
    ) -> Result<()> {
        let (steps, multi) = (multi_gamma_steps(), multi_gamma_table());
        while i < len {
            // A whole window where the cursor could not fill (near the message's end), its
            // bits checked against the real ones.
            if len - i >= GAMMA_BITS as usize {
                let window = r.peek_bits(GAMMA_BITS) as usize;
                let step = steps[window];
                let bits = u32::from(step.bits);
                if bits > 0 && u64::from(bits) <= r.real() {
                    F::copy_all(&mut buf[i..i + MULTI_FIELDS], &multi[window].fields);
                    i += usize::from(step.count);
                    r.consume(bits);
                    continue;
                }
            }
            // Near the chunk's end, or a window without a whole code: the window's codes up to
            // the chunk's end, or one code.
            let (window, real) = r.peek(GAMMA_BITS);
            let e = &multi[window as usize];
            if real == GAMMA_BITS && e.count > 0 {
                let k = usize::from(e.count).min(len - i);
                // PERF: the whole entry, a copy of fixed size (of k fields, a call to memcpy:
                // 1.2% of DIANA's round). Past the k fields it writes fields that come later
                // in the chunk or the room past it (i < len <= 256), which are written over.
                F::copy_all(&mut buf[i..i + MULTI_FIELDS], &e.fields);
                r.consume(u32::from(e.ends[k - 1]));
                i += k;
                continue;
            }
            // One code: from the single-code table, or parsed.
            let (field, code_len) = gamma_table()[window as usize];
            if code_len > 0 && u32::from(code_len) <= real {
                r.consume(u32::from(code_len));
                buf[i] = F::new(field);
                i += 1;
                continue;
            }
            let n = r.read_gamma()?;
            // n - 1 is the level; bound it before it can overflow a u32.
            let level = (n - 1).min(u64::from(self.s) + 1) as u32;
            let negative = if level > 0 { r.read(1)? as u32 } else { 0 };
            buf[i] = F::new((level << 1) | negative);
            i += 1;
        }
        Ok(())
    }

    /// [`Compressor::decode_levels_two`] for Elias-gamma byte fields: both messages parsed
    /// chunk by chunk in step (their chunks cover the same coordinates), their cursors' windows
    /// taken in turns. On an error in either, each is decoded again alone (the errors of
    /// [`Self::decode_byte_levels`]).
    ///
    /// PERF: the decoder is one serial chain per message (a table load and a shift per window,
    /// [`gamma_windows`]); two chains in one loop keep the core busy while each waits.
    fn decode_gamma_two(
        &self,
        msgs: [&Message; 2],
        fields: [&mut [u8]; 2],
        steps: [&mut Vec<f32>; 2],
    ) -> [Result<()>; 2] {
        let [f0, f1] = fields;
        let [s0, s1] = steps;
        let (tables, multi) = (multi_gamma_steps(), multi_gamma_table());
        let mut both = || -> Result<()> {
            check_len("QSGD", self.d, f0)?;
            check_len("QSGD", self.d, f1)?;
            s0.clear();
            s1.clear();
            let mut r0 = BitReader::new(&msgs[0].bytes, msgs[0].bits, "QSGD");
            let mut r1 = BitReader::new(&msgs[1].bytes, msgs[1].bits, "QSGD");
            let mut b0 = [0u8; 256 + MULTI_FIELDS];
            let mut b1 = [0u8; 256 + MULTI_FIELDS];
            let mut at = 0;
            while at < self.d {
                s0.push(self.read_step(&mut r0)?);
                s1.push(self.read_step(&mut r1)?);
                let end = (at + self.bucket).min(self.d);
                while at < end {
                    let len = (end - at).min(256);
                    // PERF: into the fields themselves where a chunk's room (its fields and a
                    // window's past them, which the next chunk writes over) fits before d.
                    let room = at + 256 + MULTI_FIELDS;
                    let direct = room <= self.d;
                    {
                        let (w0, w1): (
                            &mut [u8; 256 + MULTI_FIELDS],
                            &mut [u8; 256 + MULTI_FIELDS],
                        ) = if direct {
                            let w0 = (&mut f0[at..room]).try_into();
                            let w1 = (&mut f1[at..room]).try_into();
                            (w0.expect("a chunk's room"), w1.expect("a chunk's room"))
                        } else {
                            (&mut b0, &mut b1)
                        };
                        let (mut c0, mut i0, mut c1, mut i1) = (r0.cursor(), 0, r1.cursor(), 0);
                        // Both while both can (`&`: each takes its turn), then each alone.
                        while gamma_windows(&mut c0, w0, &mut i0, len, tables, multi)
                            & gamma_windows(&mut c1, w1, &mut i1, len, tables, multi)
                        {
                        }
                        while gamma_windows(&mut c0, w0, &mut i0, len, tables, multi) {}
                        while gamma_windows(&mut c1, w1, &mut i1, len, tables, multi) {}
                        r0.resume(c0);
                        r1.resume(c1);
                        self.gamma_rest(&mut r0, w0, i0, len)?;
                        self.gamma_rest(&mut r1, w1, i1, len)?;
                        self.check_levels(&w0[..len])?;
                        self.check_levels(&w1[..len])?;
                    }
                    if !direct {
                        f0[at..at + len].copy_from_slice(&b0[..len]);
                        f1[at..at + len].copy_from_slice(&b1[..len]);
                    }
                    at += len;
                }
            }
            r0.finish()?;
            r1.finish()
        };
        match both() {
            Ok(()) => [Ok(()), Ok(())],
            Err(_) => [
                self.decode_byte_levels(msgs[0], f0, s0),
                self.decode_byte_levels(msgs[1], f1, s1),
            ],
        }
    }

    /// [`Compressor::decode_levels`] for byte fields.
    fn decode_byte_levels(
        &self,
        msg: &Message,
        fields: &mut [u8],
        steps: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("QSGD", self.d, fields)?;
        steps.clear();
        self.parse::<u8>(msg, |at, step, chunk| {
            if at % self.bucket == 0 {
                steps.push(step);
            }
            fields[at..at + chunk.len()].copy_from_slice(chunk);
        })
    }

    /// The value of a decoded QSGD field `level << 1 | sign` in a bucket of step `norm / s`
    /// ([`Compressor::decode_levels`]): what [`Compressor::decode`] writes for it.
    #[inline(always)]
    pub fn level_value(step: f32, field: u8) -> f32 {
        Self::field_value(step, u32::from(field))
    }

    /// `sum[j] += Self::level_value(step, fields[j])` for every j: the values of a run of a
    /// decoded upload's fields in one bucket added to a server's sum, the same floats on every
    /// path.
    ///
    /// PERF: on AVX-512, where every field is below 32 (levels up to 15), each value is its
    /// field's entry of a 32-value table (`vpermt2ps`): three vector instructions per sixteen
    /// fields where the arithmetic takes eight.
    ///
    /// # Panics
    /// If `sum` and `fields` differ in length.
    pub fn add_level_values(k: Kernels, sum: &mut [f32], fields: &[u8], step: f32) {
        assert_eq!(sum.len(), fields.len(), "add_level_values: lengths");
        #[allow(unused_mut)] // Only x86-64 has a path that takes some first.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if k.is_x86_64_v4() && k.vectorize(|| <u8 as Field>::max(fields)) < 32 {
            // SAFETY: the x86-64-v4 path proves AVX-512 F, BW and DQ.
            done = unsafe { add_values_avx512(sum, fields, step) };
        }
        let (sum, fields) = (&mut sum[done..], &fields[done..]);
        k.vectorize(|| {
            for (s, &f) in sum.iter_mut().zip(fields) {
                *s += Self::level_value(step, f);
            }
        });
    }

    /// The value of field `f` (`level << 1 | sign`) in a bucket of step `step`.
    #[inline(always)]
    fn field_value(step: f32, f: u32) -> f32 {
        Self::value(step, (f >> 1) as f32, f & 1)
    }

    /// Whether every field (`level << 1 | sign`, up to `2 s + 1`, and up to `2 s + 3` for the
    /// decoder's bound on a malformed level) fits a byte: levels up to 126.
    ///
    /// PERF: byte fields are what the encoder's pair table reads four at a time, what the
    /// decoder's multi-code table copies sixteen at a time, and a quarter of the bytes for the
    /// passes over them.
    fn byte_fields(&self) -> bool {
        self.s <= 126
    }

    fn bucket_norm(&self, xb: &[f32]) -> f32 {
        match self.norm {
            QsgdNorm::L2 => self.kernels.norm2_sq(xb).sqrt(),
            // The kernels' instruction set: the same maximum (of magnitudes, never -0.0,
            // skipping NaN) in any order.
            QsgdNorm::Max => self
                .kernels
                .vectorize(|| xb.iter().fold(0.0f32, |m, v| m.max(v.abs()))),
        }
    }

    /// [`Self::bucket_norm`] of `xb - hb` without forming it: the same float.
    fn bucket_norm_shifted(&self, xb: &[f32], hb: &[f32]) -> f32 {
        match self.norm {
            // The same sums as `norm2_sq` of the difference (each x - h rounded once).
            QsgdNorm::L2 => self.kernels.dist2_sq(xb, hb).sqrt(),
            QsgdNorm::Max => self.kernels.vectorize(|| {
                xb.iter()
                    .zip(hb)
                    .fold(0.0f32, |m, (x, h)| m.max((x - h).abs()))
            }),
        }
    }
}

/// The value of every field below 32 (`level << 1 | sign`) in a bucket of step `step`, as
/// [`Qsgd::level_value`] computes it, in two vectors for `vpermt2ps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn value_table(step: f32) -> [std::arch::x86_64::__m512; 2] {
    use std::arch::x86_64::_mm512_loadu_ps;
    let table: [f32; 32] = std::array::from_fn(|f| Qsgd::level_value(step, f as u8));
    // SAFETY: 32 floats, read in two unaligned loads of 16.
    unsafe {
        [
            _mm512_loadu_ps(table.as_ptr()),
            _mm512_loadu_ps(table.as_ptr().add(16)),
        ]
    }
}

/// The most levels [`levels_avx512`] takes: its fields (`level << 1 | sign`) index a table of
/// 32 values.
#[cfg(target_arch = "x86_64")]
const AVX512_LEVELS: u32 = 15;

/// [`Qsgd::levels`]' loop on the leading whole vectors of sixteen coordinates, for at most
/// [`AVX512_LEVELS`] levels (`s`): the same fields and the same floats, bit for bit; returns
/// how many coordinates it took.
///
/// PERF: 19 vector instructions per sixteen coordinates (one of them a register copy) where
/// the compiler's loop takes 24.
/// With 512-bit vectors Intel runs vector arithmetic on two ports only, and the loop is bound
/// by them. A coordinate's value `±unit level` is its field's entry of a 32-value table
/// (`vpermt2ps`) instead of a conversion, a product and the sign's shift and or; the fraction
/// `r - floor(r)` is one `vreduceps` (exact, as the subtraction is) instead of a conversion
/// back and a subtraction; the level's carry is one masked subtraction instead of a mask
/// widened to a vector and subtracted.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and DQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
#[allow(clippy::too_many_arguments)] // The level loop's operands, as `Qsgd::levels` has them.
unsafe fn levels_avx512<const SHIFT: bool>(
    s: f32,
    scale: f32,
    unit: f32,
    a: f32,
    xc: &[f32],
    random: &[u32],
    oc: &mut [f32],
    fields: &mut [u8],
    ahead: Ahead,
) -> usize {
    use std::arch::x86_64::{
        __m128i, __m512, __m512i, _CMP_LT_OS, _mm_storeu_si128, _mm512_add_epi32, _mm512_and_si512,
        _mm512_castps_si512, _mm512_cmp_ps_mask, _mm512_cvtepi32_epi8, _mm512_cvtepi32_ps,
        _mm512_cvttps_epi32, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512,
        _mm512_min_epu32, _mm512_min_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_permutex2var_ps,
        _mm512_reduce_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_srli_epi32, _mm512_storeu_ps,
        _mm512_sub_ps,
    };
    let m = xc.len().min(random.len()).min(oc.len()).min(fields.len()) / 16 * 16;
    // Every field's value (the coordinates' values, as the compiler's loop computes them).
    let [t_lo, t_hi] = value_table(unit);
    let (s_v, scale_v, a_v) = (_mm512_set1_ps(s), _mm512_set1_ps(scale), _mm512_set1_ps(a));
    let two_m24 = _mm512_set1_ps(1.0 / (1u32 << 24) as f32);
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let minus_one = _mm512_set1_epi32(-1);
    for i in (0..m).step_by(16) {
        ahead.request(i);
        // SAFETY (every load and store of the loop): within the slices, the first `m` elements
        // of each (m <= every length); unaligned accesses.
        let (bits, x, o): (__m512i, __m512, __m512) = unsafe {
            (
                _mm512_loadu_si512(random.as_ptr().add(i).cast()),
                _mm512_loadu_ps(xc.as_ptr().add(i)),
                _mm512_loadu_ps(oc.as_ptr().add(i)),
            )
        };
        // A uniform in [0, 1) from the top 24 bits of the draw (exact).
        let u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32::<8>(bits)), two_m24);
        let xi = if SHIFT { _mm512_sub_ps(x, o) } else { x };
        let xb = _mm512_castps_si512(xi);
        let abs = std::arch::x86_64::_mm512_castsi512_ps(_mm512_and_si512(xb, abs_mask));
        // min(p, s): p if p < s, else s (and s for a NaN p), as the loop's select.
        let r = _mm512_min_ps(_mm512_mul_ps(abs, scale_v), s_v);
        let lower = _mm512_cvttps_epi32(r);
        // r - floor(r), exact; 0x0b: no fraction bit kept, truncation (r >= 0), no precision
        // exception.
        let frac = _mm512_reduce_ps::<0x0b>(r);
        let carry = _mm512_cmp_ps_mask::<_CMP_LT_OS>(u, frac);
        // PERF: one masked subtraction, in assembly: the compiler rewrites the intrinsic as a
        // mask widened to a vector (`vpmovm2d`, a second instruction on a busy port) and
        // subtracted.
        let mut level = lower;
        // SAFETY: a register-only instruction of AVX-512F, which the CPU has.
        unsafe {
            std::arch::asm!(
                "vpsubd {l}{{{k}}}, {l}, {m}",
                l = inout(zmm_reg) level,
                k = in(kreg) carry,
                m = in(zmm_reg) minus_one,
                options(pure, nomem, nostack),
            );
        }
        let negative = _mm512_min_epu32(_mm512_srli_epi32::<31>(xb), level);
        let field = _mm512_or_si512(_mm512_add_epi32(level, level), negative);
        let narrow: __m128i = _mm512_cvtepi32_epi8(field);
        let v = _mm512_permutex2var_ps(t_lo, field, t_hi);
        let out = if SHIFT { _mm512_fmadd_ps(a_v, v, o) } else { v };
        unsafe {
            _mm_storeu_si128(fields.as_mut_ptr().add(i).cast(), narrow);
            _mm512_storeu_ps(oc.as_mut_ptr().add(i), out);
        }
    }
    m
}

/// [`Qsgd::levels`]' loop on the leading whole pairs of vectors of eight coordinates on AVX2:
/// the same fields and the same floats, bit for bit, for byte fields (`s <= 126`); returns how
/// many coordinates it took.
///
/// PERF: the compiler's loop, written out so that it can request `ahead` (the shift two
/// chunks on, a line per sixteen coordinates) as it goes: that chunk's norm then reads the
/// shift from L1. The compiler's loop could not take the request and stay vectorised.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // The level loop's operands, as `Qsgd::levels` has them.
unsafe fn levels_avx2<const SHIFT: bool>(
    s: f32,
    scale: f32,
    unit: f32,
    a: f32,
    xc: &[f32],
    random: &[u32],
    oc: &mut [f32],
    fields: &mut [u8],
    ahead: Ahead,
) -> usize {
    use std::arch::x86_64::{
        __m256, __m256i, _CMP_LT_OS, _mm_storeu_si128, _mm256_add_epi32, _mm256_and_si256,
        _mm256_castps_si256, _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmp_ps,
        _mm256_cvtepi32_ps, _mm256_cvttps_epi32, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_loadu_si256, _mm256_min_epu32, _mm256_min_ps, _mm256_mul_ps, _mm256_or_si256,
        _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permutevar8x32_epi32, _mm256_set1_epi32,
        _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_si256, _mm256_slli_epi32,
        _mm256_srli_epi32, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_sub_ps,
    };
    let m = xc.len().min(random.len()).min(oc.len()).min(fields.len()) / 16 * 16;
    let (s_v, scale_v, unit_v) = (
        _mm256_set1_ps(s),
        _mm256_set1_ps(scale),
        _mm256_set1_ps(unit),
    );
    let a_v = _mm256_set1_ps(a);
    let two_m24 = _mm256_set1_ps(1.0 / (1u32 << 24) as f32);
    let abs_mask = _mm256_set1_epi32(0x7fff_ffff);
    // The packed fields' groups of four in coordinate order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // Eight coordinates from `j`: their fields (32 bits each), their values stored.
    macro_rules! eight {
        ($j:expr) => {{
            let j = $j;
            // SAFETY (every load and store): within the slices' first `m` elements (m <= every
            // length); unaligned accesses.
            let (bits, x, o): (__m256i, __m256, __m256) = unsafe {
                (
                    _mm256_loadu_si256(random.as_ptr().add(j).cast()),
                    _mm256_loadu_ps(xc.as_ptr().add(j)),
                    _mm256_loadu_ps(oc.as_ptr().add(j)),
                )
            };
            // A uniform in [0, 1) from the top 24 bits of the draw (exact).
            let u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<8>(bits)), two_m24);
            let xi = if SHIFT { _mm256_sub_ps(x, o) } else { x };
            let xb = _mm256_castps_si256(xi);
            let abs = _mm256_castsi256_ps(_mm256_and_si256(xb, abs_mask));
            // min(p, s): p if p < s, else s (and s for a NaN p), as the loop's select.
            let r = _mm256_min_ps(_mm256_mul_ps(abs, scale_v), s_v);
            let lower = _mm256_cvttps_epi32(r);
            let frac = _mm256_sub_ps(r, _mm256_cvtepi32_ps(lower));
            // All ones (-1) where the level rounds up.
            let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OS>(u, frac));
            let level = _mm256_sub_epi32(lower, up);
            let negative = _mm256_min_epu32(_mm256_srli_epi32::<31>(xb), level);
            let field = _mm256_or_si256(_mm256_add_epi32(level, level), negative);
            let magnitude = _mm256_castps_si256(_mm256_mul_ps(unit_v, _mm256_cvtepi32_ps(level)));
            let sign = _mm256_slli_epi32::<31>(negative);
            let v = _mm256_castsi256_ps(_mm256_or_si256(magnitude, sign));
            let out = if SHIFT { _mm256_fmadd_ps(a_v, v, o) } else { v };
            unsafe { _mm256_storeu_ps(oc.as_mut_ptr().add(j), out) };
            field
        }};
    }
    for i in (0..m).step_by(16) {
        ahead.request(i);
        let (f0, f1) = (eight!(i), eight!(i + 8));
        // Byte fields are taken for s <= 126: every field is at most 253, which both
        // saturating packs keep; the packs interleave the two vectors' halves, `order` puts
        // them back.
        let bytes = _mm256_packus_epi16(_mm256_packus_epi32(f0, f1), _mm256_setzero_si256());
        let bytes = _mm256_permutevar8x32_epi32(bytes, order);
        // SAFETY: sixteen bytes within `fields`' first `m`; an unaligned store.
        unsafe {
            _mm_storeu_si128(
                fields.as_mut_ptr().add(i).cast(),
                _mm256_castsi256_si128(bytes),
            )
        };
    }
    m
}

/// [`Qsgd::add_level_values`] on the leading whole vectors of sixteen fields, each below 32;
/// returns how many it took.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn add_values_avx512(sum: &mut [f32], fields: &[u8], step: f32) -> usize {
    use std::arch::x86_64::{
        _mm_loadu_si128, _mm512_add_ps, _mm512_cvtepu8_epi32, _mm512_loadu_ps,
        _mm512_permutex2var_ps, _mm512_storeu_ps,
    };
    let m = sum.len().min(fields.len()) / 16 * 16;
    let [lo, hi] = value_table(step);
    for i in (0..m).step_by(16) {
        // SAFETY: within the slices' first `m` elements; unaligned accesses.
        unsafe {
            let f = _mm512_cvtepu8_epi32(_mm_loadu_si128(fields.as_ptr().add(i).cast()));
            let v = _mm512_permutex2var_ps(lo, f, hi);
            let s = sum.as_mut_ptr().add(i);
            _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), v));
        }
    }
    m
}

/// Floats a loop requests into L1 as it goes, one cache line per sixteen of its coordinates
/// (a hint: never read through, so it may cover memory the loop writes).
#[derive(Clone, Copy)]
struct Ahead {
    /// The first float's address.
    at: usize,
    /// How many floats.
    len: usize,
}

impl Ahead {
    /// Nothing to request.
    const NONE: Self = Self { at: 0, len: 0 };

    /// The `len` floats from `at`, cut to those within `span`.
    fn within(at: *const f32, len: usize, span: &std::ops::Range<*const f32>) -> Self {
        let (at, start, end) = (at as usize, span.start as usize, span.end as usize);
        if at < start || at >= end {
            return Self::NONE;
        }
        Self {
            at,
            len: len.min((end - at) / 4),
        }
    }

    /// Requests the line of float `i` (if within), for a loop at coordinate `i`.
    #[inline(always)]
    fn request(self, i: usize) {
        if i < self.len {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults and writes nothing, whatever its address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (self.at + 4 * i) as *const i8,
                );
            }
        }
    }
}

/// Coordinates QSGD's encoder draws, rounds and packs at a time (within a bucket: a chunk of
/// a bucket starts at an even coordinate, so the draws are the same words whatever the size).
///
/// PERF: a whole bucket of DIANA's default (512), not half of one: each chunk is a call of the
/// level loop (whose captured operands it reloads from memory the caller has just written:
/// about a tenth of the loop's samples at 256), a draw and a pack. DIANA's round at M = 200:
/// 1.83-1.93 ms at 256, 1.77-1.80 at 512 (Intel Xeon, seven alternated pairs).
const CHUNK: usize = 512;

/// Short codes gathered in a local word and handed to a [`BitWriter`] 32 bits at a time.
///
/// PERF: one `BitWriter::write` per word instead of one per code (QSGD writes a code for every
/// coordinate).
#[derive(Default)]
struct Word {
    acc: u64,
    filled: u32,
}

impl Word {
    /// Appends `code`, `len <= 32` bits, writing the word out first if it would overflow.
    #[inline(always)]
    fn push(&mut self, w: &mut BitWriter<'_>, code: u32, len: u32) {
        if self.filled + len > 32 {
            self.flush(w);
        }
        self.acc |= u64::from(code) << self.filled;
        self.filled += len;
    }

    /// Writes out what the word holds and empties it.
    #[inline(always)]
    fn flush(&mut self, w: &mut BitWriter<'_>) {
        w.write(self.acc, self.filled);
        (self.acc, self.filled) = (0, 0);
    }
}

/// A decoded QSGD field (`level << 1 | sign`) as the decoder buffers it.
trait Field: Copy + Default + FieldWord {
    /// `f`, which the caller has bounded to fit.
    fn new(f: u32) -> Self;
    /// The field.
    fn get(self) -> u32;
    /// `to[j] = from[j]` for every j (equal lengths).
    fn copy_all(to: &mut [Self], from: &[u8]);
    /// The largest of `fields` (0 if none).
    fn max(fields: &[Self]) -> u32;
    /// The fields as bytes, if they are bytes.
    fn bytes(fields: &[Self]) -> Option<&[u8]>;
    /// The fields as bytes to write, if they are bytes.
    fn bytes_mut(fields: &mut [Self]) -> Option<&mut [u8]>;
}

impl Field for u8 {
    #[inline(always)]
    fn new(f: u32) -> Self {
        debug_assert!(f <= 255);
        f as u8
    }
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
    #[inline(always)]
    fn copy_all(to: &mut [Self], from: &[u8]) {
        to.copy_from_slice(from);
    }
    #[inline(always)]
    fn max(fields: &[Self]) -> u32 {
        // PERF: compared as bytes, sixteen to an SSE2 register.
        u32::from(fields.iter().fold(0, |m, &f| m.max(f)))
    }
    #[inline(always)]
    fn bytes(fields: &[Self]) -> Option<&[u8]> {
        Some(fields)
    }
    #[inline(always)]
    fn bytes_mut(fields: &mut [Self]) -> Option<&mut [u8]> {
        Some(fields)
    }
}

impl Field for u32 {
    #[inline(always)]
    fn new(f: u32) -> Self {
        f
    }
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
    #[inline(always)]
    fn copy_all(to: &mut [Self], from: &[u8]) {
        for (t, &f) in to.iter_mut().zip(from) {
            *t = u32::from(f);
        }
    }
    #[inline(always)]
    fn max(fields: &[Self]) -> u32 {
        fields.iter().fold(0, |m, &f| m.max(f))
    }
    #[inline(always)]
    fn bytes(_: &[Self]) -> Option<&[u8]> {
        None
    }
    #[inline(always)]
    fn bytes_mut(_: &mut [Self]) -> Option<&mut [u8]> {
        None
    }
}

impl Compressor for Qsgd {
    fn name(&self) -> String {
        match self.coding {
            QsgdCoding::EliasGamma => format!("QSGD(s={})", self.s),
            QsgdCoding::Fixed => format!("QSGD(s={}, fixed)", self.s),
        }
    }

    fn compress(&self, x: &[f32], rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
        assert_eq!(x.len(), self.d);
        assert_eq!(out.len(), self.d);
        if self.byte_fields() {
            self.compress_fields::<u8>(x, rng, out, None, msg);
        } else {
            self.compress_fields::<u32>(x, rng, out, None, msg);
        }
    }

    fn compress_shifted(
        &self,
        _k: Kernels,
        x: &mut [f32],
        shift: Shift<'_>,
        rng: &mut dyn RngCore,
        scratch: &mut [f32],
        msg: &mut Message,
    ) {
        assert_eq!(x.len(), self.d);
        assert_eq!(shift.h.len(), self.d);
        assert_eq!(scratch.len(), self.d);
        let shift = Some((shift.a, &mut *shift.h));
        if self.byte_fields() {
            self.compress_fields::<u8>(x, rng, scratch, shift, msg);
        } else {
            self.compress_fields::<u32>(x, rng, scratch, shift, msg);
        }
    }

    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        check_len("QSGD", self.d, out)?;
        if self.byte_fields() {
            self.decode_fields::<u8>(msg, out)
        } else {
            self.decode_fields::<u32>(msg, out)
        }
    }

    fn decode_levels(
        &self,
        msg: &Message,
        fields: &mut [u8],
        steps: &mut Vec<f32>,
    ) -> Option<Result<usize>> {
        self.byte_fields().then(|| {
            self.decode_byte_levels(msg, fields, steps)
                .map(|()| self.bucket)
        })
    }

    fn decode_levels_two(
        &self,
        msgs: [&Message; 2],
        fields: [&mut [u8]; 2],
        steps: [&mut Vec<f32>; 2],
    ) -> Option<[Result<usize>; 2]> {
        if !self.byte_fields() {
            return None;
        }
        let [a, b] = match self.coding {
            QsgdCoding::EliasGamma => self.decode_gamma_two(msgs, fields, steps),
            QsgdCoding::Fixed => {
                let ([f0, f1], [s0, s1]) = (fields, steps);
                [
                    self.decode_byte_levels(msgs[0], f0, s0),
                    self.decode_byte_levels(msgs[1], f1, s1),
                ]
            }
        };
        Some([a.map(|()| self.bucket), b.map(|()| self.bucket)])
    }

    fn unbiased(&self) -> bool {
        true
    }

    fn omega(&self) -> Option<f64> {
        let (b, s) = (self.bucket.min(self.d) as f64, f64::from(self.s));
        Some(match self.norm {
            QsgdNorm::L2 => (b / (s * s)).min(b.sqrt() / s),
            QsgdNorm::Max => b / (4.0 * s * s),
        })
    }

    fn delta(&self) -> Option<f64> {
        None
    }
}

/// One step of the QSGD Elias-gamma decoder's inner loop: one fill of the cursor, then up to
/// four windows (at most 48 bits) while the chunk (of `len <= 256` fields) has room past `at`
/// for a whole window's fields. A window gives every whole code it starts with: the bits they
/// span from an 8 KiB table (in L1) and their fields copied whole (some past the last, which
/// the next window overwrites). Returns whether it took a window; if not, no bit is consumed
/// (near the chunk's end or the message's, or a window without a whole code).
///
/// PERF: the serial chain per window is the accumulator, one load from that table and a shift.
/// The fill is branch-free (a branch on how full the accumulator is mispredicts on codes of
/// varying length) but its load depends on the last window's length, so one fill serves four
/// windows (a fill per window was no faster than the branch). About 1.3x faster than the
/// branching refill on a DIANA message of d = 7850, on AMD Zen 4.
#[inline(always)]
fn gamma_windows<F: Field>(
    c: &mut Cursor<'_>,
    buf: &mut [F; 256 + MULTI_FIELDS],
    at: &mut usize,
    len: usize,
    steps: &[MultiStep; 1 << GAMMA_BITS],
    multi: &[MultiCodes; 1 << GAMMA_BITS],
) -> bool {
    if len.min(256) < *at + GAMMA_BITS as usize || !c.fill() {
        return false;
    }
    // PERF: one fill (at least 56 bits) serves four windows of at most 12 bits.
    for k in 0..4 {
        let i = *at;
        if k > 0 && len.min(256) < i + GAMMA_BITS as usize {
            return true;
        }
        let window = c.peek(GAMMA_BITS) as usize & ((1 << GAMMA_BITS) - 1);
        let step = steps[window];
        if step.bits == 0 {
            return k > 0;
        }
        // i <= 256 - GAMMA_BITS (above), so the window's fields fit the buffer.
        F::copy_all(&mut buf[i..i + MULTI_FIELDS], &multi[window].fields);
        *at = i + usize::from(step.count);
        c.consume(u32::from(step.bits));
    }
    true
}

/// Bits of the QSGD Elias-gamma decoding table's window.
const GAMMA_BITS: u32 = 12;

/// For every `GAMMA_BITS`-bit window: the QSGD field (`level << 1 | sign`) of the code that
/// starts it and its length in bits, or length 0 if the code (with its sign) is longer.
fn gamma_table() -> &'static [(u32, u8)] {
    static TABLE: std::sync::OnceLock<Vec<(u32, u8)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..1u32 << GAMMA_BITS)
            .map(|w| {
                let z = w.trailing_zeros();
                if z >= GAMMA_BITS {
                    return (0, 0);
                }
                let code_len = 2 * z + 1;
                if code_len > GAMMA_BITS {
                    return (0, 0);
                }
                let low = (w >> (z + 1)) & ((1 << z) - 1);
                let level = ((1 << z) | low) - 1;
                if level == 0 {
                    return (0, code_len as u8);
                }
                if code_len + 1 > GAMMA_BITS {
                    return (0, 0);
                }
                let sign = (w >> code_len) & 1;
                ((level << 1) | sign, (code_len + 1) as u8)
            })
            .collect()
    })
}

/// The Elias-gamma code of every QSGD field (`level << 1 | sign`) with a level up to 254: the
/// code's bits followed by the sign bit (none for level 0), as one field, and its length (at
/// most 16 bits).
fn gamma_codes() -> &'static [(u32, u8)] {
    static TABLE: std::sync::OnceLock<Vec<(u32, u8)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..510u32)
            .map(|f| {
                let (level, negative) = (f >> 1, f & 1);
                let n = level + 1;
                let big = 31 - n.leading_zeros();
                let code = (1 << big) | ((n & ((1 << big) - 1)) << (big + 1));
                let sign = (negative & u32::from(level > 0)) << (2 * big + 1);
                (code | sign, (2 * big + 1 + u32::from(level > 0)) as u8)
            })
            .collect()
    })
}

/// The largest QSGD level the encoder packs eight fields at a time: its codes (with the sign)
/// take at most 6 bits, so eight fit one push of 48 bits ([`Packer::push`] takes up to 56).
const PAIR_LEVELS: u32 = 6;

/// The codes of two consecutive QSGD fields of levels up to 7, indexed by the
/// two fields as little-endian bytes (`f0 | f1 << 8`, f1 below 16), concatenated as
/// [`gamma_codes`] gives them: `code | len << 16` (16 KiB).
fn gamma_pair_codes() -> &'static [u32; 4096] {
    static TABLE: std::sync::OnceLock<Box<[u32; 4096]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let single = gamma_codes();
        Box::new(std::array::from_fn(|q| {
            // Entries whose f0 is 16 or more are never read.
            let (c0, l0) = single[q & 15];
            let (c1, l1) = single[q >> 8];
            (c0 | c1 << l0) | u32::from(l0 + l1) << 16
        }))
    })
}

/// Pushes the Elias-gamma codes of `fields` (each at most `2 PAIR_LEVELS + 1`, so that a code
/// and its sign take at most 6 bits) into `p`, the bits of one push per field: 64 at a time
/// where `k`'s path has AVX-512 ([`pack_gamma_avx512`]), 32 at a time where it has AVX2
/// ([`pack_gamma_avx2`]), then eight at a time, then one at a time.
///
/// PERF: every eight fields are one 64-bit load, four lookups of a byte pair's codes and one
/// push of at most 48 bits, with no branch on the levels.
fn pack_gamma(k: Kernels, p: &mut Packer, fields: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    let fields = if k.is_x86_64_v4() {
        // SAFETY: the x86-64-v4 path proves AVX-512 F, BW and DQ, and so AVX2.
        let done = unsafe { pack_gamma_avx512(p, fields) };
        let fields = &fields[done..];
        let done = unsafe { pack_gamma_avx2(p, fields) };
        &fields[done..]
    } else if k.is_x86_64_v3() {
        // SAFETY: the x86-64-v3 path proves AVX2.
        let done = unsafe { pack_gamma_avx2(p, fields) };
        &fields[done..]
    } else {
        fields
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = k;
    let (pairs, codes) = (gamma_pair_codes(), gamma_codes());
    let mut octets = fields.chunks_exact(8);
    for o in &mut octets {
        let o = u64::from_le_bytes(o.try_into().expect("eight fields"));
        // `f0 | f1 << 8` of each pair: below 4096 since f1 < 16 (the mask only tells the
        // compiler so).
        let pair = |k: u32| pairs[(o >> (16 * k) & 0xfff) as usize];
        let (e0, e1, e2, e3) = (pair(0), pair(1), pair(2), pair(3));
        let (l0, l1, l2, l3) = (e0 >> 16, e1 >> 16, e2 >> 16, e3 >> 16);
        let q0 = (e0 & 0xffff) | (e1 & 0xffff) << l0;
        let q1 = (e2 & 0xffff) | (e3 & 0xffff) << l2;
        p.push(
            u64::from(q0) | u64::from(q1) << (l0 + l1),
            l0 + l1 + l2 + l3,
        );
    }
    for &f in octets.remainder() {
        let (c, l) = codes[usize::from(f)];
        p.push(u64::from(c), u32::from(l));
    }
}

/// [`gamma_codes`] of the fields up to `2 PAIR_LEVELS + 1` as 32-byte shuffle tables for
/// [`pack_gamma_avx2`]: each field's code, its length, and the power of two of each length (a
/// table twice over, once per 128-bit lane; zero past the fields it covers).
fn gamma_nibble_tables() -> &'static [[u8; 32]; 3] {
    static TABLES: std::sync::OnceLock<[[u8; 32]; 3]> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let codes = gamma_codes();
        let mut t = [[0u8; 32]; 3];
        for i in 0..32 {
            let f = i % 16;
            if f <= 2 * PAIR_LEVELS as usize + 1 {
                let (code, len) = codes[f];
                t[0][i] = code as u8;
                t[1][i] = len;
            }
            if f <= 6 {
                t[2][i] = 1 << f;
            }
        }
        t
    })
}

/// Pushes the Elias-gamma codes of the leading whole groups of 32 `fields` (each field at most
/// `2 PAIR_LEVELS + 1`) into `p`, the bits of one push per field; returns how many fields it
/// took.
///
/// PERF: each group's codes and lengths are looked up 32 at a time (`vpshufb`), and joined in
/// three steps of doubling width (pairs of bytes by `vpmaddubsw` with a power of two, pairs of
/// 16-bit halves by `vpmaddwd`, pairs of 32-bit halves by a variable shift), so that a push
/// of eight fields' codes costs a few vector instructions instead of four table loads and a
/// dozen scalar shifts. Codes of at most 6 bits: eight fields' fit one push of 48 bits.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_gamma_avx2(p: &mut Packer, fields: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_and_si256, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set1_epi8, _mm256_set1_epi16,
        _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_shuffle_epi8, _mm256_slli_epi16,
        _mm256_slli_epi32, _mm256_sllv_epi32, _mm256_sllv_epi64, _mm256_srli_epi64,
        _mm256_storeu_si256,
    };
    const _: () = assert!(6 * 8 <= 56 && 2 * PAIR_LEVELS + 1 < 16);
    let load = |b: &[u8; 32]| {
        // SAFETY: 32 readable bytes; an unaligned load.
        unsafe { _mm256_loadu_si256(std::ptr::from_ref(b).cast::<__m256i>()) }
    };
    let [codes_t, lens_t, pow_t] = gamma_nibble_tables();
    let (codes_t, lens_t, pow_t) = (load(codes_t), load(lens_t), load(pow_t));
    let groups = fields.chunks_exact(32);
    let done = fields.len() - groups.remainder().len();
    for group in groups {
        let v = load(group.try_into().expect("32 fields"));
        // Fields below 16: each byte's table entry in its 128-bit lane.
        let codes = _mm256_shuffle_epi8(codes_t, v);
        let lens = _mm256_shuffle_epi8(lens_t, v);
        // Pairs: c0 + c1 2^l0 (disjoint bits, so c0 | c1 << l0), up to 12 bits.
        let pow = _mm256_shuffle_epi8(pow_t, lens);
        let mult = _mm256_or_si256(_mm256_slli_epi16(pow, 8), _mm256_set1_epi16(1));
        let c16 = _mm256_maddubs_epi16(codes, mult);
        let l16 = _mm256_maddubs_epi16(lens, _mm256_set1_epi8(1));
        // Quads: the low pair's code, then the high pair's shifted past it, up to 24 bits.
        let low_len = _mm256_and_si256(l16, _mm256_set1_epi32(0xffff));
        let pow16 = _mm256_sllv_epi32(_mm256_set1_epi32(1), low_len);
        let mult16 = _mm256_or_si256(_mm256_slli_epi32(pow16, 16), _mm256_set1_epi32(1));
        let c32 = _mm256_madd_epi16(c16, mult16);
        let l32 = _mm256_madd_epi16(l16, _mm256_set1_epi16(1));
        // Octets: the low quad's code, then the high quad's shifted past it, up to 48 bits.
        let low32 = _mm256_set1_epi64x(0xffff_ffff);
        let low_len = _mm256_and_si256(l32, low32);
        let high = _mm256_sllv_epi64(_mm256_srli_epi64(c32, 32), low_len);
        let c64 = _mm256_or_si256(_mm256_and_si256(c32, low32), high);
        let l64 = _mm256_add_epi64(low_len, _mm256_srli_epi64(l32, 32));
        let (mut c, mut l) = ([0u64; 4], [0u64; 4]);
        // SAFETY: 32 writable bytes each; unaligned stores.
        unsafe {
            _mm256_storeu_si256(std::ptr::from_mut(&mut c).cast::<__m256i>(), c64);
            _mm256_storeu_si256(std::ptr::from_mut(&mut l).cast::<__m256i>(), l64);
        }
        push_octets(p, &c, &l);
    }
    done
}

/// Pushes octets' codes `c` of lengths `l` (at most 48 bits each) in order.
///
/// PERF: two octets' codes in one push where they fit 56 bits (most do: a field of level 0 is
/// one bit), so that the packer's serial chain takes half as many steps.
#[inline(always)]
fn push_octets(p: &mut Packer, c: &[u64], l: &[u64]) {
    for (c, l) in c.chunks_exact(2).zip(l.chunks_exact(2)) {
        let (l0, l1) = (l[0] as u32, l[1] as u32);
        if l0 + l1 <= 56 {
            p.push(c[0] | c[1] << l0, l0 + l1);
        } else {
            p.push(c[0], l0);
            p.push(c[1], l1);
        }
    }
}

/// [`pack_gamma_avx2`] 64 fields at a time: the same lookups and joins on 512-bit vectors,
/// eight octets' codes a step.
///
/// PERF: half the vector instructions per field; DIANA's round at M = 200 about 2% faster
/// (Intel Xeon, alternated builds).
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_gamma_avx512(p: &mut Packer, fields: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_loadu_si256, _mm512_add_epi64, _mm512_and_si512,
        _mm512_broadcast_i64x4, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_maddubs_epi16,
        _mm512_or_si512, _mm512_set1_epi8, _mm512_set1_epi16, _mm512_set1_epi32, _mm512_set1_epi64,
        _mm512_shuffle_epi8, _mm512_slli_epi16, _mm512_slli_epi32, _mm512_sllv_epi32,
        _mm512_sllv_epi64, _mm512_srli_epi64, _mm512_storeu_si512,
    };
    const _: () = assert!(6 * 8 <= 56 && 2 * PAIR_LEVELS + 1 < 16);
    let wide = |b: &[u8; 32]| {
        // SAFETY: 32 readable bytes; an unaligned load, the same table in both halves.
        _mm512_broadcast_i64x4(unsafe {
            _mm256_loadu_si256(std::ptr::from_ref(b).cast::<__m256i>())
        })
    };
    let [codes_t, lens_t, pow_t] = gamma_nibble_tables();
    let (codes_t, lens_t, pow_t) = (wide(codes_t), wide(lens_t), wide(pow_t));
    let groups = fields.chunks_exact(64);
    let done = fields.len() - groups.remainder().len();
    for group in groups {
        // SAFETY: 64 readable bytes; an unaligned load.
        let v = unsafe { _mm512_loadu_si512(group.as_ptr().cast::<__m512i>()) };
        let codes = _mm512_shuffle_epi8(codes_t, v);
        let lens = _mm512_shuffle_epi8(lens_t, v);
        let pow = _mm512_shuffle_epi8(pow_t, lens);
        let mult = _mm512_or_si512(_mm512_slli_epi16::<8>(pow), _mm512_set1_epi16(1));
        let c16 = _mm512_maddubs_epi16(codes, mult);
        let l16 = _mm512_maddubs_epi16(lens, _mm512_set1_epi8(1));
        let low_len = _mm512_and_si512(l16, _mm512_set1_epi32(0xffff));
        let pow16 = _mm512_sllv_epi32(_mm512_set1_epi32(1), low_len);
        let mult16 = _mm512_or_si512(_mm512_slli_epi32::<16>(pow16), _mm512_set1_epi32(1));
        let c32 = _mm512_madd_epi16(c16, mult16);
        let l32 = _mm512_madd_epi16(l16, _mm512_set1_epi16(1));
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let low_len = _mm512_and_si512(l32, low32);
        let high = _mm512_sllv_epi64(_mm512_srli_epi64::<32>(c32), low_len);
        let c64 = _mm512_or_si512(_mm512_and_si512(c32, low32), high);
        let l64 = _mm512_add_epi64(low_len, _mm512_srli_epi64::<32>(l32));
        let (mut c, mut l) = ([0u64; 8], [0u64; 8]);
        // SAFETY: 64 writable bytes each; unaligned stores.
        unsafe {
            _mm512_storeu_si512(c.as_mut_ptr().cast(), c64);
            _mm512_storeu_si512(l.as_mut_ptr().cast(), l64);
        }
        push_octets(p, &c, &l);
    }
    done
}

/// The codes of four consecutive QSGD fields of levels 0 and 1 (`f0 | f1 << 2 | f2 << 4 |
/// f3 << 6`, each field below 4), concatenated as [`gamma_codes`] gives them (at most 16 bits).
fn gamma_quad_codes() -> &'static [(u32, u8)] {
    static TABLE: std::sync::OnceLock<Vec<(u32, u8)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let single = gamma_codes();
        (0..256u32)
            .map(|q| {
                let (mut code, mut len) = (0u32, 0u32);
                for j in 0..4 {
                    let (c, l) = single[((q >> (2 * j)) & 3) as usize];
                    code |= c << len;
                    len += u32::from(l);
                }
                (code, len as u8)
            })
            .collect()
    })
}

/// Fields a [`MultiCodes`] entry holds: at least `GAMMA_BITS` (a window of level-0 codes), and
/// a whole vector register's worth, so that they are copied at once.
const MULTI_FIELDS: usize = 16;

/// Every whole QSGD code (level and sign) at the start of a `GAMMA_BITS`-bit window, in order.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct MultiCodes {
    /// Their fields, `level << 1 | sign` (levels below 63 fit a byte), zero past `count`.
    fields: [u8; MULTI_FIELDS],
    /// Bits consumed after each code.
    ends: [u8; GAMMA_BITS as usize],
    /// How many codes (0: the first code does not fit the window).
    count: u8,
}

/// A window's codes taken whole: how many, and the bits they span (0: none fits).
#[derive(Clone, Copy, Default)]
struct MultiStep {
    count: u8,
    bits: u8,
}

/// [`MultiStep`] of every `GAMMA_BITS`-bit window (8 KiB: the decoder's serial chain reads it,
/// so it is kept apart from the fields to stay in L1).
fn multi_gamma_steps() -> &'static [MultiStep; 1 << GAMMA_BITS] {
    static TABLE: std::sync::OnceLock<Box<[MultiStep; 1 << GAMMA_BITS]>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        multi_gamma_table()
            .iter()
            .map(|e| MultiStep {
                count: e.count,
                bits: match e.count {
                    0 => 0,
                    k => e.ends[usize::from(k) - 1],
                },
            })
            .collect::<Vec<_>>()
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("one entry per window"))
    })
}

/// For every `GAMMA_BITS`-bit window: all the whole codes it starts with (see [`MultiCodes`]).
fn multi_gamma_table() -> &'static [MultiCodes; 1 << GAMMA_BITS] {
    static TABLE: std::sync::OnceLock<Box<[MultiCodes; 1 << GAMMA_BITS]>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let single = gamma_table();
        (0..1u32 << GAMMA_BITS)
            .map(|w| {
                let mut e = MultiCodes::default();
                let mut pos = 0;
                while pos < GAMMA_BITS {
                    // The rest of the window, zero-filled above: a code found there is whole
                    // only if its length fits what is left.
                    let (field, len) = single[(w >> pos) as usize];
                    let len = u32::from(len);
                    if len == 0 || pos + len > GAMMA_BITS {
                        break;
                    }
                    e.fields[usize::from(e.count)] = field as u8;
                    pos += len;
                    e.ends[usize::from(e.count)] = pos as u8;
                    e.count += 1;
                }
                e
            })
            .collect::<Vec<_>>()
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("one entry per window"))
    })
}

/// Top-k: keeps the k largest magnitudes (ties: lower index; a NaN counts as larger than any
/// number). delta = k / d, deterministic.
///
/// Encoding: k indices of `ceil(log2 d)` bits each, ascending, then their k values as f32.
pub struct TopK {
    d: usize,
    k: usize,
    index_width: u32,
    kernels: Kernels,
}

impl TopK {
    /// Top-k on vectors of dimension `d`, keeping `k` in 1..=d coordinates, indices written
    /// as `index_coding` says.
    ///
    /// # Errors
    /// [`Error::BadParam`] naming `compressor.k` if `k` is out of range.
    pub fn new(d: usize, k: usize, index_coding: IndexCoding) -> Result<Self> {
        check_k(k, d)?;
        Ok(Self {
            d,
            k,
            index_width: match index_coding {
                IndexCoding::Log2 => width_for(d as u64),
                IndexCoding::U32 => 32,
            },
            kernels: Kernels::detect(),
        })
    }

    fn compress_with(&self, x: &[f32], idx: &mut Vec<u32>, out: &mut [f32], msg: &mut Message) {
        top_k_indices(self.kernels, x, self.k, idx);
        let sel = &idx[..];
        out.fill(0.0);
        let width = self.index_width;
        let mut w = BitWriter::new(&mut msg.bytes);
        for &i in sel.iter() {
            w.write(u64::from(i), width);
        }
        for &i in sel.iter() {
            let v = x[i as usize];
            w.write_f32(v);
            out[i as usize] = v;
        }
        msg.bits = w.finish();
    }
}

/// The magnitude of `v` as a key that orders as `|v|` for every value but NaN (+0 and -0 equal),
/// and NaN above infinity.
#[inline(always)]
fn magnitude_key(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// Writes into `idx`, ascending, the `k <= x.len()` coordinates of largest magnitude (ties: the
/// lower index; a NaN counts above infinity): the k first under (magnitude descending, index
/// ascending).
///
/// PERF: an order over all d coordinates through their indices was most of a top-k upload
/// (d = 7850, k = 79). A threshold taken from a sample of about 256 coordinates keeps about 3k
/// candidates in one branch-free pass, and the exact selection runs over those; a threshold
/// that keeps fewer than k (a sample unlike the vector) is lowered, then dropped. The set is the
/// same whatever the threshold: every coordinate of the k first has a key at or above the k-th
/// largest key, which is at or above a threshold that keeps k or more.
fn top_k_indices(kernels: Kernels, x: &[f32], k: usize, idx: &mut Vec<u32>) {
    let d = x.len();
    assert!(
        k <= d && d <= u32::MAX as usize,
        "top-k: k = {k} of d = {d}"
    );
    idx.clear();
    if k == 0 {
        return;
    }
    // At most 256 keys, every stride-th; the sample's r-th largest keeps about r d / m
    // coordinates.
    let stride = d.div_ceil(256).max(1);
    let m = d.div_ceil(stride);
    let r = (3 * k * m).div_ceil(d);
    let mut sample = [0u32; 256];
    let sample = &mut sample[..m];
    for (s, v) in sample.iter_mut().zip(x.iter().step_by(stride)) {
        *s = magnitude_key(*v);
    }
    for rank in [r, 4 * r] {
        if rank >= sample.len() || rank == 0 {
            break;
        }
        let (_, &mut t, _) = sample.select_nth_unstable_by(rank - 1, |a, b| b.cmp(a));
        idx.reserve(d);
        kernels.vectorize(|| {
            // PERF: a mask per 64 coordinates (compares the compiler vectorises), then the set
            // bits' indices: work in the candidates, not a dependent step per coordinate.
            for (b, block) in x.chunks(64).enumerate() {
                let mut mask = 0u64;
                for (j, v) in block.iter().enumerate() {
                    mask |= u64::from(magnitude_key(*v) >= t) << j;
                }
                let base = (64 * b) as u32;
                while mask != 0 {
                    idx.push(base + mask.trailing_zeros());
                    mask &= mask - 1;
                }
            }
        });
        if idx.len() >= k {
            break;
        }
        idx.clear();
    }
    if idx.is_empty() {
        idx.extend(0..d as u32);
    }
    if idx.len() > k {
        // Descending by magnitude, then ascending by index: one u64 key per candidate.
        let order = |i: u32| u64::from(magnitude_key(x[i as usize])) << 32 | u64::from(!i);
        idx.select_nth_unstable_by(k - 1, |&a, &b| order(b).cmp(&order(a)));
        idx.truncate(k);
    }
    idx.sort_unstable();
}

impl Compressor for TopK {
    fn name(&self) -> String {
        format!("top-{}", self.k)
    }

    fn compress(&self, x: &[f32], _rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
        assert_eq!(x.len(), self.d);
        // PERF: the index buffer is per thread and reused, so a round allocates nothing.
        with_index_scratch(|idx| self.compress_with(x, idx, out, msg));
    }

    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        check_len("top-k", self.d, out)?;
        sparse_decode("top-k", msg, self.d, self.k, self.index_width, out)
    }

    fn decode_sparse(&self, msg: &Message, out: &mut Vec<(u32, f32)>) -> Option<Result<()>> {
        out.clear();
        let put = |i, v| out.push((i, v));
        Some(sparse_pairs(
            "top-k",
            msg,
            self.d,
            self.k,
            self.index_width,
            put,
        ))
    }

    fn unbiased(&self) -> bool {
        false
    }
    fn omega(&self) -> Option<f64> {
        None
    }
    fn delta(&self) -> Option<f64> {
        Some(self.k as f64 / self.d as f64)
    }
}

fn sparse_decode(
    kind: &'static str,
    msg: &Message,
    d: usize,
    k: usize,
    width: u32,
    out: &mut [f32],
) -> Result<()> {
    out.fill(0.0);
    sparse_pairs(kind, msg, d, k, width, |i, v| out[i as usize] = v)
}

/// Reads a top-k message (`k` ascending indices of `width` bits below `d`, then their values)
/// and hands each (index, value) to `put`, in index order.
fn sparse_pairs(
    kind: &'static str,
    msg: &Message,
    d: usize,
    k: usize,
    width: u32,
    mut put: impl FnMut(u32, f32),
) -> Result<()> {
    let mut r = BitReader::new(&msg.bytes, msg.bits, kind);
    with_index_scratch(|idx| {
        idx.clear();
        let mut prev: Option<u64> = None;
        for _ in 0..k {
            let i = r.read(width)?;
            if i >= d as u64 || prev.is_some_and(|p| i <= p) {
                return Err(Error::Malformed {
                    kind,
                    what: format!("index {i} out of order or >= {d}"),
                });
            }
            prev = Some(i);
            idx.push(i as u32);
        }
        for &i in idx.iter() {
            put(i, r.read_f32()?);
        }
        Ok(())
    })?;
    r.finish()
}

/// Runs `f` with this thread's reusable index buffer (top-k encode and decode).
fn with_index_scratch<T>(f: impl FnOnce(&mut Vec<u32>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(f)
}

/// Rand-k: k coordinates drawn uniformly without replacement; the message carries a 64-bit
/// seed instead of the indices. Scaled by d/k it is unbiased with omega = d/k - 1; unscaled
/// (for error feedback) it contracts with delta = k/d in expectation.
pub struct RandK {
    d: usize,
    k: usize,
    scaled: bool,
}

impl RandK {
    /// Reads a message (the 64-bit seed, then the values of the k coordinates it selects) and
    /// hands each (index, scaled value) to `put`, in index order.
    fn pairs(&self, msg: &Message, mut put: impl FnMut(u32, f32)) -> Result<()> {
        let mut r = BitReader::new(&msg.bytes, msg.bits, "rand-k");
        let seed = r.read(32)? | (r.read(32)? << 32);
        let f = self.factor();
        self.with_indices(seed, |idx| {
            for &i in idx {
                put(i, f * r.read_f32()?);
            }
            Ok::<(), Error>(())
        })?;
        r.finish()
    }

    /// Rand-k on vectors of dimension `d`, keeping `k` in 1..=d coordinates, scaled by d/k
    /// (unbiased) if `scaled`.
    ///
    /// # Errors
    /// [`Error::BadParam`] naming `compressor.k` if `k` is out of range.
    pub fn new(d: usize, k: usize, scaled: bool) -> Result<Self> {
        check_k(k, d)?;
        Ok(Self { d, k, scaled })
    }

    /// Runs `f` on the k coordinates `seed` selects, ascending, without allocating: Floyd's
    /// algorithm (k draws, uniform over k-subsets) on a bitmap of d bits, read back in order.
    fn with_indices<T>(&self, seed: u64, f: impl FnOnce(&[u32]) -> T) -> T {
        thread_local! {
            static BITMAP: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        BITMAP.with_borrow_mut(|bits| {
            bits.clear();
            bits.resize(self.d.div_ceil(64), 0);
            for j in (self.d - self.k)..self.d {
                let t = rand::Rng::random_range(&mut rng, 0..=j);
                let pick = if bits[t / 64] >> (t % 64) & 1 == 1 {
                    j
                } else {
                    t
                };
                bits[pick / 64] |= 1 << (pick % 64);
            }
            with_index_scratch(|idx| {
                idx.clear();
                for (wi, &word) in bits.iter().enumerate() {
                    let mut word = word;
                    while word != 0 {
                        idx.push((wi * 64) as u32 + word.trailing_zeros());
                        word &= word - 1;
                    }
                }
                f(idx)
            })
        })
    }

    fn factor(&self) -> f32 {
        if self.scaled {
            self.d as f32 / self.k as f32
        } else {
            1.0
        }
    }
}

impl Compressor for RandK {
    fn name(&self) -> String {
        format!("rand-{}", self.k)
    }

    fn compress(&self, x: &[f32], rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
        assert_eq!(x.len(), self.d);
        let seed = rng.next_u64();
        out.fill(0.0);
        let mut w = BitWriter::new(&mut msg.bytes);
        w.write(seed & 0xFFFF_FFFF, 32);
        w.write(seed >> 32, 32);
        let f = self.factor();
        self.with_indices(seed, |idx| {
            for &i in idx {
                let i = i as usize;
                w.write_f32(x[i]);
                out[i] = f * x[i];
            }
        });
        msg.bits = w.finish();
    }

    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        check_len("rand-k", self.d, out)?;
        out.fill(0.0);
        self.pairs(msg, |i, v| out[i as usize] = v)
    }

    fn decode_sparse(&self, msg: &Message, out: &mut Vec<(u32, f32)>) -> Option<Result<()>> {
        out.clear();
        Some(self.pairs(msg, |i, v| out.push((i, v))))
    }

    fn unbiased(&self) -> bool {
        self.scaled
    }
    fn omega(&self) -> Option<f64> {
        self.scaled.then(|| self.d as f64 / self.k as f64 - 1.0)
    }
    fn delta(&self) -> Option<f64> {
        (!self.scaled).then(|| self.k as f64 / self.d as f64)
    }
}

/// Scaled sign (Karimireddy et al. 2019): `(||x||_1 / d) sign(x)`, sign(0) = +1.
/// Encoding: the scale as f32 and one bit per coordinate. delta = 1/d in the worst case.
pub struct ScaledSign {
    d: usize,
}

impl ScaledSign {
    /// The scaled sign on vectors of dimension `d`.
    pub fn new(d: usize) -> Self {
        Self { d }
    }
}

impl Compressor for ScaledSign {
    fn name(&self) -> String {
        "sign".into()
    }

    fn compress(&self, x: &[f32], _rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
        assert_eq!(x.len(), self.d);
        let l1: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
        let scale = (l1 / self.d.max(1) as f64) as f32;
        let mut w = BitWriter::new(&mut msg.bytes);
        w.write_f32(scale);
        for (xi, oi) in x.iter().zip(out.iter_mut()) {
            let neg = xi.is_sign_negative() && *xi != 0.0;
            w.write(u64::from(neg), 1);
            *oi = if neg { -scale } else { scale };
        }
        msg.bits = w.finish();
    }

    fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
        check_len("sign", self.d, out)?;
        let mut r = BitReader::new(&msg.bytes, msg.bits, "sign");
        let scale = r.read_f32()?;
        for oi in out.iter_mut() {
            *oi = if r.read(1)? == 1 { -scale } else { scale };
        }
        r.finish()
    }

    fn unbiased(&self) -> bool {
        false
    }
    fn omega(&self) -> Option<f64> {
        None
    }
    fn delta(&self) -> Option<f64> {
        Some(1.0 / self.d as f64)
    }
}

/// Error feedback (Stich et al. 2018) around any compressor: `m = e + alpha x`, send `C(m)`,
/// `e <- m - C(m)`. The residual `e` is kept, so no mass is lost.
///
/// The one error-feedback mechanism of the workspace: EF-SGD, SASG and LENA with a compressor
/// each keep one per node.
#[derive(Clone, Debug)]
pub struct ErrorFeedback {
    /// The memory (stale while `zero`; empty until first written).
    e: Vec<f32>,
    /// The memory's length.
    d: usize,
    /// The memory is zero ([`Self::clear`]) and is read as the shared zeros.
    zero: bool,
    m: Vec<f32>,
    kernels: Kernels,
}

impl ErrorFeedback {
    /// Zero memory of dimension `d`, computing with this process's kernels
    /// ([`Kernels::detect`]).
    pub fn new(d: usize) -> Self {
        Self::with_kernels(d, Kernels::detect())
    }

    /// Zero memory of dimension `d`, computing with `k`. Nothing is allocated until the memory
    /// is first written: until then it reads as the process's shared zeros.
    pub fn with_kernels(d: usize, k: Kernels) -> Self {
        Self {
            e: Vec::new(),
            d,
            zero: true,
            // Grown by the first `compress` (never with `compress_scaled`).
            m: Vec::new(),
            kernels: k,
        }
    }

    /// The residual e.
    pub fn memory(&self) -> &[f32] {
        if self.zero {
            lena_kernels::zeros(self.d)
        } else {
            &self.e
        }
    }

    /// The memory, for checkpoints and for algorithms that also move it outside uploads
    /// (LENA charges its drift to it in silent rounds).
    pub fn memory_mut(&mut self) -> &mut [f32] {
        if std::mem::take(&mut self.zero) {
            self.e.clear();
            self.e.resize(self.d, 0.0);
        }
        &mut self.e
    }

    /// Sets the memory to zero without writing it: it reads as the process's shared zeros
    /// until it is next written (then the zeros are written first).
    ///
    /// PERF: LENA's memory after an upload without a compressor is exactly zero; writing zeros
    /// that the next round reads back is one vector written and one read per upload, from DRAM
    /// where node state does not fit in cache.
    pub fn clear(&mut self) {
        self.zero = true;
    }

    /// Sets the memory to zero and frees its vector: a caller that keeps the memory elsewhere
    /// for a while (LENA's node keeps it in its last upload) holds nothing here. The next
    /// write allocates it again.
    pub fn release(&mut self) {
        self.zero = true;
        self.e = Vec::new();
    }

    /// Exchanges the memory with `e` (of the memory's length): an algorithm that computed the
    /// next memory elsewhere swaps it in without a copy. `e` then holds the vector the memory
    /// held (empty if it had none yet).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn swap_memory(&mut self, e: &mut Vec<f32>) {
        assert_eq!(e.len(), self.d, "swap_memory: length mismatch");
        std::mem::swap(&mut self.e, e);
        self.zero = false;
    }

    /// Puts a compressed vector `v` that was never delivered back into the memory, `e += v`,
    /// so that the sum of delivered vectors plus the memory is again the sum of inputs.
    pub fn restore(&mut self, v: &[f32]) {
        let k = self.kernels;
        k.axpy(1.0, v, self.memory_mut());
    }

    /// Compresses `m = e + x` with `c`; `out` receives what the receiver decodes.
    pub fn compress(
        &mut self,
        c: &dyn Compressor,
        x: &[f32],
        rng: &mut dyn RngCore,
        out: &mut [f32],
        msg: &mut Message,
    ) {
        let mut m = std::mem::take(&mut self.m);
        m.resize(self.d, 0.0);
        self.compress_scaled(c, 1.0, x, rng, &mut m, out, msg);
        self.m = m;
    }

    /// Compresses `m = e + alpha x` (one fused multiply-add per coordinate), formed in the
    /// caller's `scratch` of the memory's length, so that the decorator holds only its memory
    /// (a simulation of many nodes passes a per-thread buffer). Then `e <- m - C(m)`, from the
    /// same fused multiply-add.
    ///
    /// # Panics
    /// If `scratch`, `x` or `out` differ in length from the memory.
    pub fn compress_scaled(
        &mut self,
        c: &dyn Compressor,
        alpha: f32,
        x: &[f32],
        rng: &mut dyn RngCore,
        scratch: &mut [f32],
        out: &mut [f32],
        msg: &mut Message,
    ) {
        let k = self.kernels;
        self.memory_mut();
        scratch.copy_from_slice(&self.e);
        k.axpy(alpha, x, scratch);
        c.compress(scratch, rng, out, msg);
        // e <- fl(fl(e + alpha x) - C(m)) = m - C(m): the kernel rounds the multiply-add
        // before the subtraction, as `m` was rounded.
        k.ef_update(&mut self.e, alpha, x, out);
    }

    /// Compresses `m` that the memory already holds (a caller that formed `m = e + alpha x`
    /// over its memory in a pass of its own, as LENA's scan does): `out = C(m)`, then
    /// `e <- m - C(m)`, each element one rounded subtraction. The same floats as
    /// [`Self::compress_scaled`] given the `e`, `alpha` and `x` whose fused multiply-add
    /// formed `m`.
    pub fn compress_held(
        &mut self,
        c: &dyn Compressor,
        rng: &mut dyn RngCore,
        out: &mut [f32],
        msg: &mut Message,
    ) {
        let k = self.kernels;
        self.memory_mut();
        c.compress(&self.e, rng, out, msg);
        // fl(-1 C(m) + m): the product is exact, so one rounding of m - C(m).
        k.axpy(-1.0, out, &mut self.e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::RngCore;

    /// QSGD's values as the definition reads, one coordinate at a time: `r = min(s |x| / N,
    /// s)` (s for NaN), the level `floor(r)`, one more if the uniform `(draw >> 8) / 2^24` is
    /// below `r - floor(r)`, at most s; the value `N / s` times the level, negated for a
    /// negative x with a level above 0. N is the bucket's norm as the compressor takes it.
    fn values_reference(q: &Qsgd, x: &[f32], uniforms: &[u32]) -> Vec<f32> {
        let s = q.s as f32;
        let mut out = Vec::with_capacity(x.len());
        for (xb, ub) in x.chunks(q.bucket).zip(uniforms.chunks(q.bucket)) {
            let n = q.bucket_norm(xb);
            let (scale, unit) = (if n > 0.0 { s / n } else { 0.0 }, n / s);
            for (&xi, &draw) in xb.iter().zip(ub) {
                let r = (xi.abs() * scale).min(s);
                let lower = r.floor();
                let u = (draw >> 8) as f32 / (1u32 << 24) as f32;
                let level = if u < r - lower { lower + 1.0 } else { lower }.min(s);
                let v = unit * level;
                out.push(if xi.is_sign_negative() && level > 0.0 {
                    -v
                } else {
                    v
                });
            }
        }
        out
    }

    fn any_coordinate() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -10.0f32..10.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(1e-40f32),
            1 => Just(-3e38f32),
        ]
    }

    /// A hint's floats are cut to the span they lie in, and a hint that starts outside it is
    /// none (the encoder's last chunks point past the shift's end).
    #[test]
    fn lines_ahead_stay_within_their_span() {
        let h = vec![0.0f32; 100];
        let span = h.as_ptr_range();
        let inside = Ahead::within(h.as_ptr().wrapping_add(90), 64, &span);
        assert_eq!((inside.at, inside.len), (h.as_ptr() as usize + 360, 10));
        let whole = Ahead::within(h.as_ptr(), 64, &span);
        assert_eq!(whole.len, 64);
        for past in [100, 1124] {
            assert_eq!(
                Ahead::within(h.as_ptr().wrapping_add(past), 64, &span).len,
                0
            );
        }
        // Every request, in or out of the hint, leaves everything as it was.
        for i in 0..200 {
            inside.request(i);
        }
        assert!(h.iter().all(|&v| v == 0.0));
    }

    proptest! {
        /// Every kernel path rounds as the definition does, bit for bit: NaN, infinities,
        /// signed zeros, subnormal and huge values, from one level to 2^24.
        #[test]
        fn quantize_is_the_definition_on_every_path(
            x in proptest::collection::vec(any_coordinate(), 1..700),
            s in prop_oneof![1u32..=8, 9u32..=16, Just(126), Just(127), Just(300), Just(1 << 24)],
            bucket in prop_oneof![Just(0usize), 1usize..40, Just(256), Just(300)],
            seed in any::<u64>(),
        ) {
            let d = x.len();
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            let uniforms: Vec<u32> = (0..d).map(|_| rng.next_u32()).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for k in Kernels::available() {
                let q = Qsgd {
                    kernels: k,
                    ..Qsgd::new(d, s, bucket, QsgdNorm::L2, QsgdCoding::EliasGamma).unwrap()
                };
                let mut out = vec![0.0f32; d];
                q.quantize(&x, &uniforms, &mut out);
                prop_assert_eq!(bits(&out), bits(&values_reference(&q, &x, &uniforms)), "{}", k.name());
            }
        }

        /// The level loop writes the same fields and floats on every kernel path as on the
        /// scalar one, given a bucket's norm (AVX-512 takes whole vectors of sixteen with a
        /// table of values up to 15 levels, AVX2 pairs of vectors of eight in a loop of its
        /// own, the others the compiler's loop): with and without
        /// a shift, any norm (zero, subnormal, infinite, NaN), levels either side of the
        /// table's bound, any length (the vectors' tail).
        #[test]
        fn level_loop_is_the_same_on_every_path(
            xh in proptest::collection::vec((any_coordinate(), -10.0f32..10.0), 1..100),
            s in prop_oneof![1u32..=16, Just(126)],
            n in prop_oneof![
                4 => 1e-3f32..100.0,
                1 => Just(0.0f32),
                1 => Just(1e-40f32),
                1 => Just(3e-39f32),
                1 => Just(f32::INFINITY),
                1 => Just(f32::NAN),
            ],
            a in 0.0f32..1.0,
            seed in any::<u64>(),
        ) {
            let d = xh.len();
            let (x, h): (Vec<f32>, Vec<f32>) = xh.into_iter().unzip();
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            let random: Vec<u32> = (0..d).map(|_| rng.next_u32()).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let run = |k: Kernels, shifted: bool| {
                let q = Qsgd {
                    kernels: k,
                    ..Qsgd::new(d, s, 0, QsgdNorm::L2, QsgdCoding::EliasGamma).unwrap()
                };
                let (mut o, mut fields) = (h.clone(), vec![0u8; d]);
                if shifted {
                    q.levels::<u8, true>(n, &x, &random, a, &mut o, &mut fields, Ahead::NONE);
                } else {
                    q.levels::<u8, false>(n, &x, &random, 0.0, &mut o, &mut fields, Ahead::NONE);
                }
                (fields, bits(&o))
            };
            for shifted in [false, true] {
                let scalar = run(Kernels::scalar(), shifted);
                for k in Kernels::available() {
                    prop_assert_eq!(&run(k, shifted), &scalar, "{} shifted {}", k.name(), shifted);
                }
            }
        }

        /// With the max norm (the same float on every path, whatever the summation order),
        /// QSGD writes the same message, values and shift on every kernel path as on the
        /// scalar one (AVX-512 and AVX2 round with loops of their own, `levels_avx512` and
        /// `levels_avx2`; AVX2 packs 32 codes at a time): with and without a shift, either
        /// coding, whole and partial buckets and chunks.
        #[test]
        fn max_norm_messages_are_the_same_on_every_path(
            xh in proptest::collection::vec((any_coordinate(), -10.0f32..10.0), 1..1300),
            s in prop_oneof![1u32..=8, 9u32..=16, Just(126)],
            bucket in prop_oneof![Just(0usize), 1usize..40, Just(100), Just(600)],
            fixed in any::<bool>(),
            a in 0.0f32..1.0,
            seed in any::<u64>(),
        ) {
            let d = xh.len();
            let (x, h): (Vec<f32>, Vec<f32>) = xh.into_iter().unzip();
            let coding = if fixed { QsgdCoding::Fixed } else { QsgdCoding::EliasGamma };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let run = |k: Kernels| {
                let q = Qsgd {
                    kernels: k,
                    ..Qsgd::new(d, s, bucket, QsgdNorm::Max, coding).unwrap()
                };
                let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
                let (mut out, mut msg) = (vec![0.0; d], Message::default());
                q.compress(&x, &mut rng, &mut out, &mut msg);
                let (mut xs, mut hs, mut scratch) = (x.clone(), h.clone(), vec![0.0; d]);
                let mut shifted = Message::default();
                let shift = Shift { h: &mut hs, a };
                q.compress_shifted(k, &mut xs, shift, &mut rng, &mut scratch, &mut shifted);
                (msg.bytes, msg.bits, bits(&out), shifted.bytes, shifted.bits, bits(&hs))
            };
            let scalar = run(Kernels::scalar());
            for k in Kernels::available() {
                prop_assert_eq!(&run(k), &scalar, "{}", k.name());
            }
        }

        /// A decoded upload's values add to a sum as the definition's (`level_value`, one
        /// after the other) on every kernel path: fields below 32 (AVX-512's table) and
        /// above, any step (zero, subnormal, infinite, NaN), any length.
        #[test]
        fn level_values_add_as_the_definition_on_every_path(
            rows in proptest::collection::vec((0u8..=31, -10.0f32..10.0), 0..100),
            wide in prop_oneof![3 => Just(None), 1 => (0usize..100, 32u8..=255).prop_map(Some)],
            step in prop_oneof![
                4 => 1e-3f32..10.0,
                1 => Just(0.0f32),
                1 => Just(1e-41f32),
                1 => Just(f32::INFINITY),
                1 => Just(f32::NAN),
            ],
        ) {
            let (mut fields, sum): (Vec<u8>, Vec<f32>) = rows.into_iter().unzip();
            if let Some((at, f)) = wide && at < fields.len() {
                fields[at] = f;
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let mut expect = sum.clone();
            for (s, &f) in expect.iter_mut().zip(&fields) {
                *s += Qsgd::level_value(step, f);
            }
            for k in Kernels::available() {
                let mut got = sum.clone();
                Qsgd::add_level_values(k, &mut got, &fields, step);
                prop_assert_eq!(bits(&got), bits(&expect), "{}", k.name());
            }
        }

        /// The Elias-gamma packer writes the same bits on every kernel path (AVX-512 packs 64
        /// codes at a time, AVX2 32, the others eight), after any number of bits already held.
        #[test]
        fn gamma_packing_is_the_same_on_every_path(
            fields in proptest::collection::vec(0u8..=2 * PAIR_LEVELS as u8 + 1, 0..600),
            held in 0u32..=20,
        ) {
            let pack = |k: Kernels| {
                let mut bytes = Vec::new();
                let mut w = BitWriter::new(&mut bytes);
                w.write(0x5_a5a5 & ((1 << held) - 1), held);
                w.pack(|p| pack_gamma(k, p, &fields));
                let bits = w.finish();
                (bytes, bits)
            };
            let scalar = pack(Kernels::scalar());
            // The definition: each field's code from the table, one after another.
            let mut bytes = Vec::new();
            let mut w = BitWriter::new(&mut bytes);
            w.write(0x5_a5a5 & ((1 << held) - 1), held);
            for &f in &fields {
                let (c, l) = gamma_codes()[usize::from(f)];
                w.write(u64::from(c), u32::from(l));
            }
            let bits = w.finish();
            prop_assert_eq!(&scalar, &(bytes, bits));
            for k in Kernels::available() {
                prop_assert_eq!(&pack(k), &scalar, "{}", k.name());
            }
        }

        /// QSGD's fused DIANA step writes the bits of the trait's default (the difference in
        /// place, `compress`, then an axpy into the shift) into the message and the shift, on
        /// every kernel path, with either norm and coding, byte and word fields, whole and
        /// partial buckets.
        #[test]
        fn compress_shifted_is_the_default_on_every_path(
            xh in proptest::collection::vec((any_coordinate(), -10.0f32..10.0), 1..700),
            s in prop_oneof![1u32..=8, Just(126), Just(300)],
            bucket in prop_oneof![Just(0usize), 1usize..40, Just(256), Just(300)],
            max_norm in any::<bool>(),
            fixed in any::<bool>(),
            a in 0.0f32..1.0,
            seed in any::<u64>(),
        ) {
            /// QSGD without its own `compress_shifted`.
            struct Unfused<'a>(&'a Qsgd);
            impl Compressor for Unfused<'_> {
                fn name(&self) -> String {
                    self.0.name()
                }
                fn compress(&self, x: &[f32], rng: &mut dyn RngCore, out: &mut [f32], msg: &mut Message) {
                    self.0.compress(x, rng, out, msg);
                }
                fn decode(&self, msg: &Message, out: &mut [f32]) -> Result<()> {
                    self.0.decode(msg, out)
                }
                fn unbiased(&self) -> bool {
                    true
                }
                fn omega(&self) -> Option<f64> {
                    self.0.omega()
                }
                fn delta(&self) -> Option<f64> {
                    None
                }
            }
            let d = xh.len();
            let (x, h): (Vec<f32>, Vec<f32>) = xh.into_iter().unzip();
            let norm = if max_norm { QsgdNorm::Max } else { QsgdNorm::L2 };
            let coding = if fixed { QsgdCoding::Fixed } else { QsgdCoding::EliasGamma };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for k in Kernels::available() {
                let q = Qsgd {
                    kernels: k,
                    ..Qsgd::new(d, s, bucket, norm, coding).unwrap()
                };
                let run = |c: &dyn Compressor| {
                    let (mut x, mut h, mut scratch) = (x.clone(), h.clone(), vec![0.0; d]);
                    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
                    let mut msg = Message::default();
                    let shift = Shift { h: &mut h, a };
                    c.compress_shifted(k, &mut x, shift, &mut rng, &mut scratch, &mut msg);
                    (msg.bytes, msg.bits, bits(&h))
                };
                prop_assert_eq!(run(&q), run(&Unfused(&q)), "{}", k.name());
            }
        }
    }
}
