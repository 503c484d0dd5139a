//! Bit-level writer and reader over a byte buffer (little-endian bit order).
//!
//! Hand-written rather than `bitvec` because encoders write fields of 1 to 32 bits millions of
//! times per round (M = 200 nodes x d = 7850 coordinates); a u64 accumulator does one shift and
//! one or per field, where a bit-by-bit push would cost one call per bit. `bitvec` is the
//! independent reference the tests compare every byte against.

use crate::{Error, Result};

/// Appends bit fields to a byte buffer.
pub struct BitWriter<'a> {
    buf: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
    bits: u64,
    /// The [`Packer`] every [`Self::pack`] call hands out.
    ///
    /// PERF: one per writer, its bytes zeroed once, not once per call (a QSGD message of
    /// d = 7850 packs 31 chunks: zeroing a packer each time was about 1.4% of DIANA's round).
    packer: Packer,
}

impl<'a> BitWriter<'a> {
    /// A writer that clears `buf` and appends to it.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        Self {
            buf,
            acc: 0,
            n: 0,
            bits: 0,
            packer: Packer {
                out: [0; PACK_BYTES + 8],
                pos: 0,
                acc: 0,
                n: 0,
            },
        }
    }

    /// Writes the low `width` bits of `v` (`width <= 32`).
    #[inline]
    pub fn write(&mut self, v: u64, width: u32) {
        debug_assert!(width <= 32 && (width == 0 || v >> width == 0));
        // INVARIANT: n < 32 between calls, so n + width <= 63 fits the accumulator.
        self.acc |= v << self.n;
        self.n += width;
        self.bits += u64::from(width);
        if self.n >= 32 {
            // PERF: four bytes per flush instead of one per loop iteration.
            self.buf.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Writes the Elias-gamma code of `n >= 1`: `N = floor(log2 n)` zero bits, a one bit, then
    /// the `N` low bits of `n` (as one field, in this writer's bit order). `2N + 1` bits.
    #[inline]
    pub fn write_gamma(&mut self, n: u64) {
        debug_assert!((1..(1 << 32)).contains(&n));
        let big = 63 - n.leading_zeros();
        let low = n & ((1u64 << big) - 1);
        if 2 * big < 32 {
            self.write((1u64 << big) | (low << (big + 1)), 2 * big + 1);
        } else {
            self.write(1u64 << big, big + 1);
            self.write(low, big);
        }
    }

    /// Runs `f` with a [`Packer`], which appends up to [`Packer::MAX_BITS`] bits to this writer
    /// at a fixed cost per code, without branches.
    ///
    /// # Panics
    /// If `f` pushes more than [`Packer::MAX_BITS`] bits.
    pub fn pack<R>(&mut self, f: impl FnOnce(&mut Packer) -> R) -> R {
        // A packer holds fewer than 8 bits: the accumulator's whole bytes go out first.
        while self.n >= 8 {
            self.buf.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
        // The bytes a call reads back, below `pos`, are the ones its pushes wrote (each push
        // writes eight bytes from `pos` and moves it at most seven): what an earlier call left
        // in `out` is never read.
        let p = &mut self.packer;
        (p.pos, p.acc, p.n) = (0, self.acc, self.n);
        let r = f(p);
        // Pushes of at most MAX_BITS end below PACK_BYTES; more end at or past it (the count
        // only grows), whatever the mask made of the bytes.
        assert!(
            p.pos < PACK_BYTES,
            "pack: more than {} bits pushed",
            Packer::MAX_BITS
        );
        self.buf.extend_from_slice(&p.out[..p.pos]);
        self.bits += 8 * p.pos as u64 + u64::from(p.n) - u64::from(self.n);
        (self.acc, self.n) = (p.acc, p.n);
        r
    }

    /// Writes an f32's 32 bits.
    #[inline]
    pub fn write_f32(&mut self, v: f32) {
        self.write(u64::from(v.to_bits()), 32);
    }

    /// Flushes the remaining bits (whole bytes); returns the number of bits written.
    pub fn finish(mut self) -> u64 {
        while self.n > 0 {
            self.buf.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.bits
    }
}

/// Bytes a [`Packer`] holds: a QSGD chunk's fields of up to eight bits.
const PACK_BYTES: usize = 1024;

/// Appends codes of up to 56 bits for a [`BitWriter`] ([`BitWriter::pack`]).
///
/// PERF: every push stores the accumulator's eight bytes and keeps the whole ones, so the cost
/// of a code does not depend on where it falls (a writer that flushes when a word fills takes a
/// branch that a stream of variable-length codes mispredicts); its bytes are a fixed array
/// indexed under a mask, so a push has no bounds check either.
pub struct Packer {
    out: [u8; PACK_BYTES + 8],
    /// Bytes complete in `out`.
    pos: usize,
    /// Bits not yet complete: fewer than 8 between pushes, zero above `n`.
    acc: u64,
    n: u32,
}

impl Packer {
    /// The most bits one [`BitWriter::pack`] call may push.
    /// (With fewer than 8 bits held before them, the bytes made stay below `PACK_BYTES`.)
    pub const MAX_BITS: u64 = 8 * PACK_BYTES as u64 - 8;

    /// Appends the low `len <= 56` bits of `code`, whose higher bits are zero.
    #[inline(always)]
    pub fn push(&mut self, code: u64, len: u32) {
        debug_assert!(len <= 56 && code >> len == 0 && self.n < 8);
        self.acc |= code << self.n;
        self.n += len;
        // Past PACK_BYTES the mask wraps, and `pack` fails on the count.
        let at = self.pos % PACK_BYTES;
        self.out[at..at + 8].copy_from_slice(&self.acc.to_le_bytes());
        // n < 64, so at most 7 whole bytes and a shift of at most 56.
        let whole = self.n >> 3;
        self.pos += whole as usize;
        self.acc >>= whole * 8;
        self.n &= 7;
    }

    /// Appends `fields` of `width` bits each (1 to 56; each field's higher bits zero): the
    /// bits of one push per field.
    ///
    /// PERF: fields of up to 7 bits eight at a time (eight such fields are `width` whole bytes,
    /// so every group of eight falls at the same bit offset within its bytes): each group's
    /// fields narrowed to bytes, joined by shifts within one word in three steps (not one per
    /// field) and stored with the bits the group before spills into its first byte, so no group
    /// waits on the last one, as each push waits on the bits held. Wider fields: as many as fit
    /// 56 bits joined by shifts and pushed at once.
    #[inline(always)]
    pub fn push_fields<T: Copy + Into<u64>>(&mut self, fields: &[T], width: u32) {
        debug_assert!((1..=56).contains(&width) && self.n < 8);
        let rest = if width <= 7 {
            self.push_small_fields(fields, width)
        } else {
            fields
        };
        for group in rest.chunks((56 / width) as usize) {
            let mut code = 0u64;
            for (j, &f) in group.iter().enumerate() {
                code |= f.into() << (j as u32 * width);
            }
            self.push(code, group.len() as u32 * width);
        }
    }

    /// [`Self::push_fields`]' groups of eight fields of `width <= 7` bits; returns the fields
    /// left (fewer than eight).
    #[inline(always)]
    fn push_small_fields<'f, T: Copy + Into<u64>>(
        &mut self,
        fields: &'f [T],
        width: u32,
    ) -> &'f [T] {
        let mut groups = fields.chunks_exact(8);
        let w = width as usize;
        let (n, held) = (self.n, self.acc);
        let mut spill = held;
        for (g, f) in (&mut groups).enumerate() {
            // The fields as bytes (each below 2^7), then joined: pairs, quadruples, all eight.
            let x = u64::from_le_bytes(std::array::from_fn(|j| f[j].into() as u8));
            const BYTES: u64 = 0x00ff_00ff_00ff_00ff;
            const PAIRS: u64 = 0x0000_ffff_0000_ffff;
            let x = (x & BYTES) | (x >> 8 & BYTES) << width;
            let x = (x & PAIRS) | (x >> 16 & PAIRS) << (2 * width);
            let x = (x & 0xffff_ffff) | (x >> 32) << (4 * width);
            // At most 7 + 56 bits; the bytes past the group's are written again by the next.
            let at = (self.pos + g * w) % PACK_BYTES;
            self.out[at..at + 8].copy_from_slice(&(x << n | spill).to_le_bytes());
            // The group's bits past its last whole byte (`n` of them; none if n = 0).
            spill = (x << n) >> (8 * width);
        }
        let done = fields.len() - groups.remainder().len();
        self.pos += done / 8 * w;
        self.acc = if done > 0 { spill } else { held };
        groups.remainder()
    }
}

/// Reads bit fields written by [`BitWriter`]; running past the end is an error.
#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    left: u64,
    kind: &'static str,
}

impl<'a> BitReader<'a> {
    /// A reader over the first `bits` bits of `buf`.
    pub fn new(buf: &'a [u8], bits: u64, kind: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            acc: 0,
            n: 0,
            left: bits,
            kind,
        }
    }

    /// Reads `width <= 32` bits.
    #[inline]
    pub fn read(&mut self, width: u32) -> Result<u64> {
        debug_assert!(width <= 32);
        if u64::from(width) > self.left {
            return Err(Error::Truncated {
                kind: self.kind,
                needed: u64::from(width),
                left: self.left,
            });
        }
        if self.n < width {
            // PERF: refill four bytes at once when they are there.
            if let Some(b) = self.buf.get(self.pos..self.pos + 4) {
                self.acc |= u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) << self.n;
                self.pos += 4;
                self.n += 32;
            } else {
                while self.n < width {
                    let b = *self.buf.get(self.pos).ok_or(Error::Truncated {
                        kind: self.kind,
                        needed: u64::from(width),
                        left: self.left,
                    })?;
                    self.acc |= u64::from(b) << self.n;
                    self.pos += 1;
                    self.n += 8;
                }
            }
        }
        let v = if width == 0 {
            0
        } else {
            self.acc & (u64::MAX >> (64 - width))
        };
        self.acc >>= width;
        self.n -= width;
        self.left -= u64::from(width);
        Ok(v)
    }

    /// Reads `out.len()` fields of `width` bits (1 to `T::BITS`, at most 32, each) in one
    /// tight loop: the same result as that many [`Self::read`] calls, checked once up front.
    pub fn read_fields<T: FieldWord>(&mut self, width: u32, out: &mut [T]) -> Result<()> {
        debug_assert!((1..=T::BITS.min(32)).contains(&width));
        let need = u64::from(width) * out.len() as u64;
        if need > self.left {
            return Err(Error::Truncated {
                kind: self.kind,
                needed: need,
                left: self.left,
            });
        }
        let mask = u64::MAX >> (64 - width);
        let done = if width <= 7 {
            self.read_small_fields(width, out)
        } else {
            0
        };
        let out = &mut out[done..];
        // PERF: while the cursor fills (at least 56 bits, all real), as many fields as fit are
        // cut from the same bits, each with its own shift: no step waits on the last one.
        let per = (56 / width) as usize;
        let mut c = self.cursor();
        let mut done = 0;
        for group in out.chunks_mut(per) {
            if !c.fill() {
                break;
            }
            for (j, o) in group.iter_mut().enumerate() {
                *o = T::from_low(c.peek_at(j as u32 * width) & mask);
            }
            c.consume(width * group.len() as u32);
            done += group.len();
        }
        self.resume(c);
        for o in &mut out[done..] {
            *o = T::from_low(self.read(width)?);
        }
        Ok(())
    }

    /// Reads fields of `width <= 7` bits eight at a time into `out` while eight bytes from the
    /// group's first one are in the buffer, each group from its own load (no group waits on
    /// the last one); returns how many fields it read, a multiple of eight. The caller has
    /// checked that `out.len()` fields are real.
    fn read_small_fields<T: FieldWord>(&mut self, width: u32, out: &mut [T]) -> usize {
        debug_assert!((1..=7).contains(&width) && width <= T::BITS);
        // The next unread bit: the buffered bits are the stream's own, from there on.
        let start = 8 * self.pos - self.n as usize;
        let group_bits = 8 * width as usize;
        // Groups whose eight-byte load stays in the buffer: none in a buffer under eight bytes
        // (eight fields of one bit in a one-byte buffer once made the load run past its end).
        let loads = self.buf.len().checked_sub(8).map_or(0, |last| {
            (last * 8)
                .checked_sub(start)
                .map_or(0, |room| room / group_bits + 1)
        });
        let groups = (out.len() / 8).min(loads);
        if groups == 0 {
            return 0;
        }
        // The low `bits` bits of each lane of `lane` bits, for the three steps of the spread.
        let lanes = |lane: u32, bits: u32| {
            let one = (1u64 << bits) - 1;
            (0..64 / lane).fold(0u64, |m, i| m | one << (i * lane))
        };
        let (m32, m16, m8) = (lanes(64, 4 * width), lanes(32, 2 * width), lanes(16, width));
        for (g, o) in out[..8 * groups].chunks_exact_mut(8).enumerate() {
            let bit = start + g * group_bits;
            let b = &self.buf[bit / 8..bit / 8 + 8];
            // At most 7 + 56 bits: the group's fields are all in it.
            let v = u64::from_le_bytes(b.try_into().expect("eight bytes")) >> (bit % 8);
            // PERF: the eight fields spread to a byte each in three steps of shifts and masks
            // (halves, quarters, eighths), not a shift by a variable per field.
            let v = (v & m32) | (v >> (4 * width) & m32) << 32;
            let v = (v & m16) | (v >> (2 * width) & m16) << 16;
            let v = (v & m8) | (v >> width & m8) << 8;
            T::from_bytes(o, v);
        }
        // Continue after the last group: the unread bits of its last byte buffered.
        let end = start + groups * group_bits;
        let (pos, skip) = (end / 8, (end % 8) as u32);
        (self.acc, self.n, self.pos) = if skip == 0 {
            (0, 0, pos)
        } else {
            (u64::from(self.buf[pos] >> skip), 8 - skip, pos + 1)
        };
        self.left -= (groups * group_bits) as u64;
        8 * groups
    }

    /// The next `width <= 32` bits without consuming them (bits past the end read as 0), and
    /// how many of them are real.
    #[inline]
    pub fn peek(&mut self, width: u32) -> (u64, u32) {
        debug_assert!(width <= 32);
        self.refill();
        let avail = u64::from(self.n).min(self.left) as u32;
        let real = avail.min(width);
        let bits = if real == 0 {
            0
        } else {
            self.acc & (u64::MAX >> (64 - real))
        };
        (bits, real)
    }

    /// The next `width <= 32` bits without consuming them, bits past the end read as 0, without
    /// counting the real ones: for a table-driven decoder whose lookup gives a length that it
    /// then checks against [`Self::real`] (one dependency fewer per lookup than [`Self::peek`]).
    #[inline(always)]
    pub fn peek_bits(&mut self, width: u32) -> u64 {
        debug_assert!((1..=32).contains(&width));
        self.refill();
        // INVARIANT: the accumulator's bits at and above `n` are zero (it is shifted right and
        // filled at `n`) or, after a `Cursor`'s fill, the stream's own next bits (which a fill
        // ORs in again unchanged), so bits past the buffer's end read as 0.
        self.acc & (u64::MAX >> (64 - width))
    }

    /// How many of the buffered bits are real (not past the end).
    #[inline(always)]
    pub fn real(&self) -> u64 {
        u64::from(self.n).min(self.left)
    }

    /// Buffers at least 32 bits where the buffer still has them.
    #[inline(always)]
    fn refill(&mut self) {
        if self.n < 32 {
            if let Some(b) = self.buf.get(self.pos..self.pos + 4) {
                self.acc |= u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) << self.n;
                self.pos += 4;
                self.n += 32;
            } else {
                while self.n < 56 {
                    let Some(&b) = self.buf.get(self.pos) else {
                        break;
                    };
                    self.acc |= u64::from(b) << self.n;
                    self.pos += 1;
                    self.n += 8;
                }
            }
        }
    }

    /// Consumes `width` bits that [`Self::peek`] reported real.
    #[inline]
    pub fn consume(&mut self, width: u32) {
        debug_assert!(width <= self.n && u64::from(width) <= self.left);
        self.acc >>= width;
        self.n -= width;
        self.left -= u64::from(width);
    }

    /// Reads an Elias-gamma code written by [`BitWriter::write_gamma`]; a prefix of more than
    /// 31 zeros is malformed (no encoder here writes one).
    pub fn read_gamma(&mut self) -> Result<u64> {
        // PERF: fast path when the whole code is already in the accumulator: the prefix length
        // is the trailing-zero count of the buffered bits.
        self.refill();
        let avail = u64::from(self.n).min(self.left) as u32;
        let window = if avail >= 64 {
            self.acc
        } else {
            self.acc & ((1u64 << avail) - 1)
        };
        if window != 0 {
            let z = window.trailing_zeros();
            let total = 2 * z + 1;
            if z <= 31 && total <= avail {
                let low = (self.acc >> (z + 1)) & ((1u64 << z) - 1);
                self.acc >>= total;
                self.n -= total;
                self.left -= u64::from(total);
                return Ok((1u64 << z) | low);
            }
        }
        let mut zeros = 0u32;
        loop {
            let bit = self.read(1)?;
            if bit == 1 {
                break;
            }
            zeros += 1;
            if zeros > 31 {
                return Err(Error::Malformed {
                    kind: self.kind,
                    what: "Elias-gamma prefix longer than 31 bits".into(),
                });
            }
        }
        Ok((1u64 << zeros) | self.read(zeros)?)
    }

    /// Reads an f32.
    #[inline]
    pub fn read_f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.read(32)? as u32))
    }

    /// Bits not yet read.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// Errors unless every bit was read.
    pub fn finish(self) -> Result<()> {
        if self.left == 0 {
            Ok(())
        } else {
            Err(Error::Trailing {
                kind: self.kind,
                bits: self.left,
            })
        }
    }
}

impl<'a> BitReader<'a> {
    /// The reader's position as a [`Cursor`], for a decoder's inner loop; hand it back with
    /// [`Self::resume`].
    #[inline(always)]
    pub fn cursor(&self) -> Cursor<'a> {
        // The whole bytes of real bits past those buffered; none if a buffered bit is not
        // real, so that the cursor's first fill fails.
        let end = match self.left.checked_sub(u64::from(self.n)) {
            Some(rest) => self.buf.len().min(self.pos + (rest / 8) as usize),
            None => 0,
        };
        Cursor {
            buf: &self.buf[..end],
            pos: self.pos,
            acc: self.acc,
            n: self.n,
        }
    }

    /// Continues from where `c` (a [`Self::cursor`] of this reader) stopped.
    #[inline(always)]
    pub fn resume(&mut self, c: Cursor<'a>) {
        // Bits consumed: those loaded since, less those still buffered.
        let read = 8 * (c.pos - self.pos) as u64 + u64::from(self.n) - u64::from(c.n);
        debug_assert!(read <= self.left);
        (self.pos, self.acc, self.n, self.left) = (c.pos, c.acc, c.n, self.left - read);
    }
}

/// A [`BitReader`]'s position for a table-driven decoder's inner loop, away from the end of the
/// buffer: [`Cursor::fill`] buffers at least 56 bits without a branch on how many are buffered
/// (the branch of [`BitReader::peek`]'s fill mispredicts on variable-length codes), and while it
/// succeeds every buffered bit is real (it reads only whole bytes of real bits, so there is no
/// count of bits left to check). Small enough for a loop to keep several in registers.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl Cursor<'_> {
    /// Buffers at least 56 bits if the buffer has eight bytes from the next unread one; else
    /// `false`, and nothing changes. Whole bytes up to 63 bits; the next byte's low bits may sit
    /// above them (the stream's own bits, which a later fill writes again).
    #[inline(always)]
    pub fn fill(&mut self) -> bool {
        let Some(b) = self.buf.get(self.pos..self.pos + 8) else {
            return false;
        };
        self.acc |= u64::from_le_bytes(b.try_into().expect("eight bytes")) << self.n;
        let take = (63 - self.n) >> 3;
        self.pos += take as usize;
        self.n += 8 * take;
        true
    }

    /// The next `width <= 32` bits (after a successful [`Self::fill`]: all real).
    #[inline(always)]
    pub fn peek(&self, width: u32) -> u64 {
        debug_assert!((1..=32).contains(&width) && width <= self.n);
        self.acc & (u64::MAX >> (64 - width))
    }

    /// The buffered bits from `at <= 56` on (after a successful [`Self::fill`]: the low
    /// `56 - at` of them are real).
    #[inline(always)]
    pub fn peek_at(&self, at: u32) -> u64 {
        debug_assert!(at <= 56);
        self.acc >> at
    }

    /// Consumes `width <= 56` bits, which a successful [`Self::fill`] buffered.
    #[inline(always)]
    pub fn consume(&mut self, width: u32) {
        debug_assert!(width <= self.n);
        self.acc >>= width;
        self.n -= width;
    }
}

/// An unsigned integer that [`BitReader::read_fields`] cuts fields into.
pub trait FieldWord: Copy {
    /// Its width in bits: the widest field it holds.
    const BITS: u32;
    /// The low `BITS` bits of `v` (the caller has masked `v` to a field's width).
    fn from_low(v: u64) -> Self;
    /// `out[j]` = byte j of `v` (little-endian), for the eight of `out`.
    #[inline(always)]
    fn from_bytes(out: &mut [Self], v: u64) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = Self::from_low(v >> (8 * j) & 0xff);
        }
    }
}

macro_rules! field_word {
    ($($t:ty),*) => {$(
        impl FieldWord for $t {
            const BITS: u32 = <$t>::BITS;
            #[inline(always)]
            fn from_low(v: u64) -> Self {
                v as $t
            }
        }
    )*};
}
field_word!(u16, u32);

impl FieldWord for u8 {
    const BITS: u32 = 8;
    #[inline(always)]
    fn from_low(v: u64) -> Self {
        v as u8
    }
    #[inline(always)]
    fn from_bytes(out: &mut [Self], v: u64) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

/// Bits needed to write any value in `0..n` (at least 1).
pub fn width_for(n: u64) -> u32 {
    (64 - n.saturating_sub(1).leading_zeros()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fields_round_trip_at_any_width(fields in proptest::collection::vec((0u32..=32, any::<u64>()), 0..200)) {
            let fields: Vec<(u32, u64)> = fields
                .into_iter()
                .map(|(w, v)| (w, if w == 0 { 0 } else { v & (u64::MAX >> (64 - w)) }))
                .collect();
            let mut buf = Vec::new();
            let mut wr = BitWriter::new(&mut buf);
            for &(w, v) in &fields {
                wr.write(v, w);
            }
            let bits = wr.finish();
            prop_assert_eq!(bits, fields.iter().map(|f| u64::from(f.0)).sum::<u64>());
            prop_assert_eq!(buf.len() as u64, bits.div_ceil(8));
            let mut rd = BitReader::new(&buf, bits, "test");
            for &(w, v) in &fields {
                prop_assert_eq!(rd.read(w).unwrap(), v);
            }
            prop_assert!(rd.read(1).is_err());
            rd.finish().unwrap();
        }

        /// Bulk reads equal one-at-a-time reads, including the byte-wise tail and a
        /// truncated stream.
        #[test]
        fn bulk_reads_equal_single_reads(width in 1u32..=32, values in proptest::collection::vec(any::<u32>(), 0..300), lead in 0u32..=32, cut in 0u64..8) {
            let mask = u64::MAX >> (64 - width);
            let mut buf = Vec::new();
            let mut wr = BitWriter::new(&mut buf);
            wr.write(0, lead);
            for &v in &values {
                wr.write(u64::from(v) & mask, width);
            }
            let bits = wr.finish();
            let bits = bits.saturating_sub(cut);
            let mut one = BitReader::new(&buf, bits, "test");
            let mut bulk = BitReader::new(&buf, bits, "test");
            one.read(lead).unwrap_or_default();
            bulk.read(lead).unwrap_or_default();
            let singles: std::result::Result<Vec<u32>, _> =
                values.iter().map(|_| one.read(width).map(|v| v as u32)).collect();
            let mut out = vec![0u32; values.len()];
            // Byte fields too (eight at a time where they are narrower than a byte).
            let mut bytes = bulk.clone();
            let r = bulk.read_fields(width, &mut out);
            prop_assert_eq!(r.is_ok(), singles.is_ok());
            if let Ok(s) = &singles {
                prop_assert_eq!(&out, s);
                prop_assert_eq!(one.remaining(), bulk.remaining());
                // The reader goes on where the fields end.
                prop_assert_eq!(one.read(32.min(one.remaining() as u32)).unwrap(), bulk.read(32.min(bulk.remaining() as u32)).unwrap());
            }
            if width <= 8 {
                let mut out8 = vec![0u8; values.len()];
                let r = bytes.read_fields(width, &mut out8);
                prop_assert_eq!(r.is_ok(), singles.is_ok());
                if let Ok(s) = &singles {
                    prop_assert_eq!(out8.iter().map(|&b| u32::from(b)).collect::<Vec<_>>(), s.clone());
                    let left = bytes.remaining();
                    prop_assert_eq!(left, bulk.remaining() + u64::from(32.min(left as u32)));
                    prop_assert_eq!(bytes.read(32.min(left as u32)).unwrap(), {
                        let mut again = BitReader::new(&buf, bits, "test");
                        again.read(lead).unwrap_or_default();
                        for _ in &values { again.read(width).unwrap(); }
                        again.read(32.min(left as u32)).unwrap()
                    });
                }
            }
        }

        /// Fields of up to 7 bits pushed eight at a time (as bytes and as u32) give the bits of
        /// one push per field, at any offset within a byte, one call after another, and the
        /// writer goes on after them.
        #[test]
        fn small_fields_push_as_single_fields(
            lead in 0u32..=32,
            runs in proptest::collection::vec((1u32..=7, proptest::collection::vec(any::<u8>(), 0..100)), 1..4),
        ) {
            let mut fast = Vec::new();
            let mut slow = Vec::new();
            for (buf, byte_fields) in [(&mut fast, true), (&mut slow, false)] {
                let mut w = BitWriter::new(buf);
                w.write(0x5555_5555 >> (32 - lead), lead);
                for (width, fields) in &runs {
                    let fields: Vec<u8> = fields.iter().map(|f| f & ((1u8 << width) - 1)).collect();
                    let wide: Vec<u32> = fields.iter().map(|&f| u32::from(f)).collect();
                    w.pack(|p| {
                        if byte_fields {
                            // Byte fields, then the same as u32 fields.
                            p.push_fields(&fields, *width);
                            p.push_fields(&wide, *width);
                        } else {
                            for &f in &fields {
                                p.push(u64::from(f), *width);
                            }
                            for &f in &fields {
                                p.push(u64::from(f), *width);
                            }
                        }
                        p.push(0b101, 3);
                    });
                }
                w.write(0x3ff, 10);
                w.finish();
            }
            prop_assert_eq!(fast, slow);
        }
    }

    /// The hand-written writer against bitvec (the chosen bit-exact encoding crate) as an
    /// independent reference: fields pushed bit by bit, least significant first, into a
    /// `BitVec<u8, Lsb0>`, Elias-gamma codes spelled out by their definition.
    #[test]
    fn writer_matches_bitvec_bit_for_bit() {
        use bitvec::prelude::*;
        proptest!(|(ops in proptest::collection::vec((any::<bool>(), 0u32..=32, any::<u32>()), 0..300))| {
            let mut buf = Vec::new();
            let mut w = BitWriter::new(&mut buf);
            let mut reference: BitVec<u8, Lsb0> = BitVec::new();
            for &(gamma, width, v) in &ops {
                if gamma {
                    let n = u64::from(v.max(1));
                    w.write_gamma(n);
                    let big = 63 - n.leading_zeros();
                    for _ in 0..big {
                        reference.push(false);
                    }
                    reference.push(true);
                    for i in 0..big {
                        reference.push(n >> i & 1 == 1);
                    }
                } else {
                    let v = if width == 0 { 0 } else { u64::from(v) & (u64::MAX >> (64 - width)) };
                    w.write(v, width);
                    for i in 0..width {
                        reference.push(v >> i & 1 == 1);
                    }
                }
            }
            let bits = w.finish();
            prop_assert_eq!(bits, reference.len() as u64);
            prop_assert_eq!(&buf[..], reference.as_raw_slice());
            // And the reader walks it back.
            let mut r = BitReader::new(&buf, bits, "test");
            for &(gamma, width, v) in &ops {
                if gamma {
                    prop_assert_eq!(r.read_gamma().unwrap(), u64::from(v.max(1)));
                } else {
                    let want = if width == 0 { 0 } else { u64::from(v) & (u64::MAX >> (64 - width)) };
                    prop_assert_eq!(r.read(width).unwrap(), want);
                }
            }
            r.finish().unwrap();
        });
    }

    #[test]
    fn gamma_prefix_too_long_is_malformed() {
        let buf = [0u8; 8];
        let mut r = BitReader::new(&buf, 64, "test");
        assert!(matches!(r.read_gamma(), Err(Error::Malformed { .. })));
        let mut r = BitReader::new(&buf, 10, "test");
        assert!(matches!(r.read_gamma(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn width_for_counts_bits() {
        assert_eq!(width_for(1), 1);
        assert_eq!(width_for(2), 1);
        assert_eq!(width_for(3), 2);
        assert_eq!(width_for(1000), 10);
        assert_eq!(width_for(1024), 10);
        assert_eq!(width_for(1025), 11);
    }

    /// Codes pushed through packers, between plain writes, give the same bits as bitvec; a
    /// reader's `peek_bits` sees them, zero past the end.
    #[test]
    fn packer_matches_bitvec_bit_for_bit() {
        use bitvec::prelude::*;
        let field = (0u32..=56, any::<u64>());
        let op = prop_oneof![
            field.clone().prop_map(|f| vec![f]),
            proptest::collection::vec(field, 0..120),
        ];
        proptest!(|(ops in proptest::collection::vec((any::<bool>(), op), 0..12))| {
            let mask = |v: u64, width: u32| if width == 0 { 0 } else { v & (u64::MAX >> (64 - width)) };
            let mut buf = Vec::new();
            let mut w = BitWriter::new(&mut buf);
            let mut reference: BitVec<u8, Lsb0> = BitVec::new();
            for (packed, fields) in &ops {
                if *packed {
                    w.pack(|p| {
                        for &(width, v) in fields {
                            p.push(mask(v, width), width);
                        }
                    });
                } else {
                    for &(width, v) in fields {
                        // A plain write takes at most 32 bits: wider fields in two.
                        let (v, low) = (mask(v, width), width.min(32));
                        w.write(mask(v, low), low);
                        w.write(v >> low, width - low);
                    }
                }
                for &(width, v) in fields {
                    for i in 0..width {
                        reference.push(mask(v, width) >> i & 1 == 1);
                    }
                }
            }
            let bits = w.finish();
            prop_assert_eq!(bits, reference.len() as u64);
            prop_assert_eq!(&buf[..], reference.as_raw_slice());
            let mut r = BitReader::new(&buf, bits, "test");
            for (_, fields) in &ops {
                for &(width, v) in fields {
                    // A peek takes at most 32 bits: wider fields in two.
                    let v = mask(v, width);
                    for (part, bits) in [(v & 0xffff_ffff, width.min(32)), (v >> 32, width.saturating_sub(32))] {
                        if bits > 0 {
                            // Refilled by the peek, the bits are all real.
                            prop_assert_eq!(r.peek_bits(bits), part);
                            prop_assert!(r.real() >= u64::from(bits));
                            r.consume(bits);
                        }
                    }
                }
            }
            prop_assert_eq!(r.peek_bits(32), 0);
            r.finish().unwrap();
        });
    }

    #[test]
    #[should_panic(expected = "more than")]
    fn a_packer_refuses_more_than_it_holds() {
        let mut buf = Vec::new();
        let mut w = BitWriter::new(&mut buf);
        w.write(1, 7);
        w.pack(|p| {
            for _ in 0..=Packer::MAX_BITS / 8 {
                p.push(0xff, 8);
            }
        });
    }

    proptest! {
        /// A cursor reads the stream's bits as the reader does, never a bit past the reader's
        /// `bits` (here a buffer longer than them, of nonzero bytes), and hands back a reader
        /// that goes on where it stopped.
        #[test]
        fn a_cursor_reads_what_the_reader_reads_and_only_real_bits(
            bytes in proptest::collection::vec(1u8..=255, 0..64),
            cut in 0usize..64,
            skip in 0u32..=32,
            widths in proptest::collection::vec(1u32..=12, 1..40),
        ) {
            let bits = (8 * bytes.len()).saturating_sub(cut) as u64;
            let (mut r, mut plain) = (BitReader::new(&bytes, bits, "t"), BitReader::new(&bytes, bits, "t"));
            let skip = u64::from(skip).min(bits) as u32;
            prop_assert_eq!(r.read(skip).unwrap(), plain.read(skip).unwrap());
            let mut c = r.cursor();
            for &w in widths.iter().cycle().take(200) {
                if !c.fill() {
                    break;
                }
                for _ in 0..4 {
                    // Every bit the cursor gives is real, and the reader's.
                    prop_assert_eq!(c.peek(w), plain.read(w).unwrap());
                    c.consume(w);
                }
            }
            r.resume(c);
            prop_assert_eq!(r.remaining(), plain.remaining());
            let rest = plain.remaining().min(32) as u32;
            prop_assert_eq!(r.read(rest).unwrap(), plain.read(rest).unwrap());
        }
    }
}
