//! Compressors and the bit-exact upload messages they produce.
//!
//! Must not depend on: `lena-policy`, `lena-model`, `lena-algo`, `lena-net`, `lena-sim`.
//!
//! A [`Message`] is the encoded payload of one upload; [`Message::bits`] is the length of that
//! encoding, never a formula, so every bit a simulation charges is a bit an encoder produced.
//! [`compressor`] holds the compressors (identity, QSGD, top-k, rand-k, scaled sign) and the
//! error-feedback decorator; [`dense`] the plain f32 encoding; [`bits`] the bit writer they share.
//!
//! ```
//! use lena_compress::{Message, dense};
//! let g = [1.5f32, -2.0, 0.25];
//! let mut msg = Message::default();
//! dense::encode(&g, &mut msg);
//! assert_eq!(msg.bits(), 96);
//! let mut back = [0.0f32; 3];
//! dense::decode(&msg, &mut back).unwrap();
//! assert_eq!(back, g);
//! ```

pub mod bits;
pub mod compressor;
pub mod laq;

pub use compressor::{
    Compressor, CompressorParams, ErrorFeedback, Identity, IndexCoding, Qsgd, QsgdCoding, QsgdNorm,
    RandK, ScaledSign, Shift, TopK,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A message that ends before its decoder is done.
    #[error("{kind} message truncated: {needed} more bits needed, {left} left")]
    Truncated {
        /// Message kind.
        kind: &'static str,
        /// Bits the next field needs.
        needed: u64,
        /// Bits left.
        left: u64,
    },
    /// Bits left over after decoding.
    #[error("{kind} message has {bits} trailing bits")]
    Trailing {
        /// Message kind.
        kind: &'static str,
        /// Bits left over.
        bits: u64,
    },
    /// A field with an impossible value.
    #[error("{kind} message malformed: {what}")]
    Malformed {
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        what: String,
    },
    /// An output buffer of the wrong dimension.
    #[error("{kind}: output has {found} coordinates, expected {expected}")]
    Dimension {
        /// The compressor's name.
        kind: &'static str,
        /// The dimension it was built for.
        expected: usize,
        /// The output's length.
        found: usize,
    },
    /// A compressor parameter outside its range.
    #[error(transparent)]
    BadParam(#[from] lena_kernels::BadParam),
    /// A message whose length does not match what its decoder expects.
    #[error("{kind} message of {found_bits} bits, expected {expected_bits} bits")]
    Length {
        /// Message kind.
        kind: &'static str,
        /// Bits expected.
        expected_bits: u64,
        /// Bits found.
        found_bits: u64,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One encoded upload: a byte buffer and the number of meaningful bits in it.
///
/// The buffer is reused across rounds (encoders clear and refill it), so steady-state rounds
/// allocate nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    bytes: Vec<u8>,
    bits: u64,
}

impl Message {
    /// Length of the encoding in bits: what the upload costs.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// The encoded bytes (the last one may be partly used).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encodes with a [`bits::BitWriter`] over the message's buffer (cleared first); the bit
    /// length is what `f` wrote. How a compressor outside this crate writes its encoding.
    pub fn write_with(&mut self, f: impl FnOnce(&mut bits::BitWriter<'_>)) {
        let mut w = bits::BitWriter::new(&mut self.bytes);
        f(&mut w);
        self.bits = w.finish();
    }

    /// Replaces the message with received `bytes` holding `bits` bits, reusing its buffer (a
    /// transport that receives into the same message every round).
    ///
    /// # Errors
    /// If `bits` does not fit in `bytes`, or leaves a whole unused byte (the message is then
    /// left as it was).
    pub fn set_from(&mut self, bytes: &[u8], bits: u64) -> Result<()> {
        check_fit(bytes.len(), bits)?;
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.bits = bits;
        Ok(())
    }

    /// Appends `tail`'s encoding after this one's, which must end on a byte boundary (a
    /// composite upload: a dense part, then another encoding).
    ///
    /// # Panics
    /// If this message's bit length is not a multiple of 8.
    pub fn append_aligned(&mut self, tail: &Message) {
        assert!(
            self.bits.is_multiple_of(8),
            "append_aligned after {} bits",
            self.bits
        );
        self.bytes.extend_from_slice(&tail.bytes);
        self.bits += tail.bits;
    }

    /// The encoding after the first `at` bits (a multiple of 8), written into `tail` (its buffer
    /// reused): the inverse of [`Self::append_aligned`].
    ///
    /// # Errors
    /// [`Error::Truncated`] (named `kind`) if the message holds fewer than `at` bits.
    ///
    /// # Panics
    /// If `at` is not a multiple of 8.
    pub fn split_aligned(&self, at: u64, kind: &'static str, tail: &mut Message) -> Result<()> {
        assert!(at.is_multiple_of(8), "split_aligned at {at} bits");
        if self.bits < at {
            return Err(Error::Truncated {
                kind,
                needed: at,
                left: self.bits,
            });
        }
        tail.bytes.clear();
        tail.bytes
            .extend_from_slice(&self.bytes[(at / 8) as usize..]);
        tail.bits = self.bits - at;
        Ok(())
    }

    /// Rebuilds a message from received bytes and a bit length.
    ///
    /// # Errors
    /// If `bits` does not fit in `bytes`, or leaves a whole unused byte.
    pub fn from_bytes(bytes: Vec<u8>, bits: u64) -> Result<Self> {
        check_fit(bytes.len(), bits)?;
        Ok(Self { bytes, bits })
    }
}

/// `bits` bits fill `len` bytes exactly (the last one possibly in part).
fn check_fit(len: usize, bits: u64) -> Result<()> {
    if bits.div_ceil(8) != len as u64 {
        return Err(Error::Length {
            kind: "raw",
            expected_bits: len as u64 * 8,
            found_bits: bits,
        });
    }
    Ok(())
}

/// Dense f32 upload: 32 bits per coordinate, little-endian IEEE 754.
pub mod dense {
    use super::{Error, Message, Result};

    /// Encodes `x` into `msg`, replacing its contents.
    pub fn encode(x: &[f32], msg: &mut Message) {
        encode_concat(&[x], msg)
    }

    /// Encodes `n` values that `fill` writes, straight into the message buffer when the
    /// platform allows (little-endian and a 4-byte-aligned buffer), so a node can compute its
    /// gradient into its upload without a copy. Otherwise `fill` writes into `scratch` (grown
    /// to `n`), which is then encoded.
    pub fn encode_with<R>(
        msg: &mut Message,
        n: usize,
        scratch: &mut Vec<f32>,
        fill: impl FnOnce(&mut [f32]) -> R,
    ) -> R {
        if msg.bytes.len() != 4 * n {
            msg.bytes.clear();
            msg.bytes.resize(4 * n, 0);
        }
        msg.bits = 32 * n as u64;
        if cfg!(target_endian = "little")
            && let Ok(out) = bytemuck::try_cast_slice_mut::<u8, f32>(&mut msg.bytes)
        {
            return fill(out);
        }
        scratch.resize(n, 0.0);
        let r = fill(scratch);
        encode(scratch, msg);
        r
    }

    /// Runs `f` on the values of a dense message, in place where the platform allows
    /// (little-endian, a 4-byte-aligned buffer), else on a copy decoded into `scratch` (grown to
    /// fit) and encoded back after: a holder that updates part of a dense message it keeps
    /// (LENA's node keeps its memory in its last upload).
    ///
    /// # Panics
    /// If the message is not 32 bits a value over its whole buffer.
    pub fn update_with<R>(
        msg: &mut Message,
        scratch: &mut Vec<f32>,
        f: impl FnOnce(&mut [f32]) -> R,
    ) -> R {
        assert!(
            msg.bytes.len().is_multiple_of(4) && msg.bits == 8 * msg.bytes.len() as u64,
            "update_with: {} bits in {} bytes, not a dense message",
            msg.bits,
            msg.bytes.len()
        );
        if cfg!(target_endian = "little")
            && let Ok(values) = bytemuck::try_cast_slice_mut::<u8, f32>(&mut msg.bytes)
        {
            return f(values);
        }
        update_decoded(msg, scratch, f)
    }

    /// [`update_with`] on a decoded copy: the path of a platform that cannot read the values in
    /// place.
    pub(crate) fn update_decoded<R>(
        msg: &mut Message,
        scratch: &mut Vec<f32>,
        f: impl FnOnce(&mut [f32]) -> R,
    ) -> R {
        scratch.resize(msg.bytes.len() / 4, 0.0);
        decode_at(msg, 0, scratch);
        let r = f(scratch);
        encode(scratch, msg);
        r
    }

    /// Decodes `msg` into `out`, which must have exactly the encoded length.
    pub fn decode(msg: &Message, out: &mut [f32]) -> Result<()> {
        let expected_bits = 32 * out.len() as u64;
        if msg.bits != expected_bits || msg.bytes.len() != 4 * out.len() {
            return Err(Error::Length {
                kind: "dense f32",
                expected_bits,
                found_bits: msg.bits,
            });
        }
        for (o, b) in out.iter_mut().zip(msg.bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    /// Encodes the concatenation of `parts` into `msg` (e.g. LENA's `(v, q)` pair).
    pub fn encode_concat(parts: &[&[f32]], msg: &mut Message) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        msg.bytes.clear();
        msg.bytes.reserve(4 * n);
        for p in parts {
            if cfg!(target_endian = "little") {
                // PERF: the in-memory bytes are the wire format: one memcpy, no zero fill.
                msg.bytes.extend_from_slice(bytemuck::cast_slice(p));
            } else {
                msg.bytes.extend(p.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        msg.bits = 32 * n as u64;
    }

    /// Decodes a message holding `outs.len()` concatenated vectors into `outs`.
    pub fn decode_concat(msg: &Message, outs: &mut [&mut [f32]]) -> Result<()> {
        let n: usize = outs.iter().map(|o| o.len()).sum();
        let expected_bits = 32 * n as u64;
        if msg.bits != expected_bits || msg.bytes.len() != 4 * n {
            return Err(Error::Length {
                kind: "dense f32",
                expected_bits,
                found_bits: msg.bits,
            });
        }
        let mut chunks = msg.bytes.chunks_exact(4);
        for out in outs.iter_mut() {
            for (o, b) in out.iter_mut().zip(&mut chunks) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }

    /// Adds `scale * decode(msg)` to `acc` without a temporary.
    pub fn decode_axpy(msg: &Message, scale: f32, acc: &mut [f32]) -> Result<()> {
        check(msg, acc.len())?;
        axpy_at(msg, 0, scale, acc);
        Ok(())
    }

    /// Checks that `msg` is a dense encoding of exactly `n` values.
    pub fn check(msg: &Message, n: usize) -> Result<()> {
        let expected_bits = 32 * n as u64;
        if msg.bits != expected_bits || msg.bytes.len() != 4 * n {
            return Err(Error::Length {
                kind: "dense f32",
                expected_bits,
                found_bits: msg.bits,
            });
        }
        Ok(())
    }

    /// Adds `scale * x[offset..offset + acc.len()]` to `acc`, `x` being the encoded vector:
    /// each product is rounded before the sum. For servers that aggregate coordinate blocks
    /// in parallel after a [`check`].
    ///
    /// # Panics
    /// If the range is outside the message.
    pub fn axpy_at(msg: &Message, offset: usize, scale: f32, acc: &mut [f32]) {
        let bytes = &msg.bytes[4 * offset..4 * (offset + acc.len())];
        for (o, b) in acc.iter_mut().zip(bytes.chunks_exact(4)) {
            *o += scale * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }

    /// `x[offset..offset + len]` of the encoded vector `x`, read in place where the platform
    /// allows (little-endian, buffer 4-byte aligned), else `None` (then use [`decode_at`] or
    /// [`axpy_at`]). For servers that aggregate coordinate blocks after a [`check`].
    ///
    /// # Panics
    /// If the range is outside the message.
    pub fn view_at(msg: &Message, offset: usize, len: usize) -> Option<&[f32]> {
        let bytes = &msg.bytes[4 * offset..4 * (offset + len)];
        if cfg!(target_endian = "little") {
            bytemuck::try_cast_slice(bytes).ok()
        } else {
            None
        }
    }

    /// `out = x[offset..offset + out.len()]`, `x` being the encoded vector (see [`axpy_at`]).
    ///
    /// # Panics
    /// If the range is outside the message.
    pub fn decode_at(msg: &Message, offset: usize, out: &mut [f32]) {
        let bytes = &msg.bytes[4 * offset..4 * (offset + out.len())];
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dense_round_trips_bit_exactly(x in proptest::collection::vec(any::<f32>(), 0..300)) {
            let mut msg = Message::default();
            dense::encode(&x, &mut msg);
            prop_assert_eq!(msg.bits(), 8 * msg.bytes().len() as u64);
            let mut back = vec![0.0f32; x.len()];
            dense::decode(&msg, &mut back).unwrap();
            for (a, b) in x.iter().zip(&back) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }

        /// `update_with` changes the values it is given in the message, in place and through
        /// the decoded copy alike, and leaves the others and the bit length as they were.
        #[test]
        fn dense_update_in_place_and_decoded_agree(
            x in proptest::collection::vec(any::<f32>(), 1..300),
            at in any::<proptest::sample::Index>(),
        ) {
            let mut msg = Message::default();
            dense::encode(&x, &mut msg);
            let (mut a, mut b) = (msg.clone(), msg.clone());
            let j = at.index(x.len());
            let set = |v: &mut [f32]| {
                v[j] = -v[j];
                v.len()
            };
            let mut scratch = Vec::new();
            prop_assert_eq!(dense::update_with(&mut a, &mut scratch, set), x.len());
            prop_assert_eq!(dense::update_decoded(&mut b, &mut scratch, set), x.len());
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.bits(), msg.bits());
            let mut back = vec![0.0f32; x.len()];
            dense::decode(&a, &mut back).unwrap();
            for (i, (g, w)) in back.iter().zip(&x).enumerate() {
                let want = if i == j { -*w } else { *w };
                prop_assert_eq!(g.to_bits(), want.to_bits());
            }
        }

        #[test]
        fn dense_decode_rejects_wrong_lengths(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..20) {
            let bits = 8 * bytes.len() as u64;
            let msg = Message::from_bytes(bytes, bits).unwrap();
            let mut out = vec![0.0f32; n];
            let r = dense::decode(&msg, &mut out);
            prop_assert_eq!(r.is_ok(), bits == 32 * n as u64);
        }
    }
}

#[cfg(test)]
mod concat_tests {
    use super::*;

    #[test]
    fn encode_with_equals_encode() {
        let x: Vec<f32> = (0..1001).map(|i| (i as f32).sin() * 1e3).collect();
        let (mut a, mut b) = (Message::default(), Message::default());
        dense::encode(&x, &mut a);
        let mut scratch = Vec::new();
        // Twice: the second call reuses the sized buffer.
        for _ in 0..2 {
            dense::encode_with(&mut b, x.len(), &mut scratch, |out| out.copy_from_slice(&x));
            assert_eq!(a, b);
        }
    }

    #[test]
    fn concat_round_trips_several_parts() {
        let (a, b, c) = ([1.0f32, 2.0], [3.0f32], [4.0f32, 5.0, 6.0]);
        let mut msg = Message::default();
        dense::encode_concat(&[&a, &b, &c], &mut msg);
        assert_eq!(msg.bits(), 6 * 32);
        let (mut x, mut y, mut z) = ([0.0f32; 2], [0.0f32; 1], [0.0f32; 3]);
        dense::decode_concat(&msg, &mut [&mut x, &mut y, &mut z]).unwrap();
        assert_eq!((x, y, z), (a, b, c));
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
