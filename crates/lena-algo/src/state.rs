//! Checkpoint state. Every worker and server lists its mutable state, in a fixed order,
//! through a [`Visitor`]: the [`Saver`] writes it, the [`Loader`] reads it back into a freshly
//! built algorithm of the same configuration. Scratch buffers that are rewritten before being
//! read each round are not state and are not visited.

use crate::Message;
use lena_policy::trigger::Trigger;

/// Walks an algorithm's state; the same calls save and load it.
pub trait Visitor {
    /// A fixed-length vector.
    fn f32s(&mut self, x: &mut [f32]);
    /// A float.
    fn f64(&mut self, x: &mut f64);
    /// A counter.
    fn u64(&mut self, x: &mut u64);
    /// A flag.
    fn bool(&mut self, x: &mut bool);
    /// A variable-length byte string.
    fn bytes(&mut self, x: &mut Vec<u8>);
    /// A trigger's counters and histories.
    fn trigger(&mut self, t: &mut dyn Trigger);
    /// A value read back does not fit what it is read into: loading fails with `what` (the
    /// first failure is kept). Saving never fails, so the default does nothing.
    fn fail(&mut self, _what: String) {}
    /// A message (bytes and bit length).
    fn message(&mut self, m: &mut Message) {
        let mut bits = m.bits();
        self.u64(&mut bits);
        let mut bytes = m.bytes().to_vec();
        self.bytes(&mut bytes);
        match Message::from_bytes(bytes, bits) {
            Ok(back) => *m = back,
            Err(e) => self.fail(format!("checkpoint message: {e}")),
        }
    }
    /// A variable-length vector of `u32` (read back with the saved length).
    fn u32s(&mut self, x: &mut Vec<u32>) {
        let mut bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(&mut bytes);
        if bytes.len().is_multiple_of(4) {
            *x = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
        } else {
            self.fail(format!(
                "checkpoint holds {} bytes where whole u32 values belong",
                bytes.len()
            ));
        }
    }
    /// A `u64` per element.
    fn u64s(&mut self, x: &mut [u64]) {
        for v in x {
            self.u64(v);
        }
    }
}

/// Writes visited state as little-endian bytes.
#[derive(Debug, Default)]
pub struct Saver {
    /// The bytes written so far.
    pub out: Vec<u8>,
}

impl Visitor for Saver {
    fn f32s(&mut self, x: &mut [f32]) {
        self.out.extend_from_slice(&(x.len() as u64).to_le_bytes());
        for v in x.iter() {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn f64(&mut self, x: &mut f64) {
        self.out.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: &mut u64) {
        self.out.extend_from_slice(&x.to_le_bytes());
    }
    fn bool(&mut self, x: &mut bool) {
        self.out.push(u8::from(*x));
    }
    fn bytes(&mut self, x: &mut Vec<u8>) {
        self.out.extend_from_slice(&(x.len() as u64).to_le_bytes());
        self.out.extend_from_slice(x);
    }
    fn trigger(&mut self, t: &mut dyn Trigger) {
        let s = t.save();
        self.out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        for v in s {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Reads state written by a [`Saver`]; the first mismatch is kept as an error and every later
/// read is ignored.
#[derive(Debug)]
pub struct Loader<'a> {
    input: &'a [u8],
    pos: usize,
    error: Option<String>,
}

impl<'a> Loader<'a> {
    /// A loader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            error: None,
        }
    }

    /// The first error, or `Ok` with the bytes not consumed.
    pub fn finish(self) -> Result<&'a [u8], String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(&self.input[self.pos..]),
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.error.is_some() {
            return None;
        }
        match self.input.get(self.pos..self.pos + n) {
            Some(b) => {
                self.pos += n;
                Some(b)
            }
            None => {
                self.error = Some(format!(
                    "checkpoint truncated at byte {} (needed {n} more)",
                    self.pos
                ));
                None
            }
        }
    }

    fn word(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn len(&mut self, expected: Option<usize>) -> Option<usize> {
        let n = self.word()?;
        if let Some(e) = expected
            && n != e as u64
        {
            self.error = Some(format!(
                "checkpoint holds a vector of {n} values at byte {} where this experiment has {e}",
                self.pos - 8
            ));
            return None;
        }
        if n > (self.input.len() - self.pos) as u64 {
            self.error = Some(format!(
                "checkpoint length {n} at byte {} runs past its end",
                self.pos - 8
            ));
            return None;
        }
        Some(n as usize)
    }
}

impl Visitor for Loader<'_> {
    fn f32s(&mut self, x: &mut [f32]) {
        if self.len(Some(x.len())).is_none() {
            return;
        }
        if let Some(b) = self.take(4 * x.len()) {
            for (v, c) in x.iter_mut().zip(b.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    fn f64(&mut self, x: &mut f64) {
        if let Some(w) = self.word() {
            *x = f64::from_bits(w);
        }
    }
    fn u64(&mut self, x: &mut u64) {
        if let Some(w) = self.word() {
            *x = w;
        }
    }
    fn bool(&mut self, x: &mut bool) {
        if let Some(b) = self.take(1) {
            match b[0] {
                0 | 1 => *x = b[0] == 1,
                other => self.fail(format!(
                    "checkpoint flag at byte {} is {other}, expected 0 or 1",
                    self.pos - 1
                )),
            }
        }
    }
    fn fail(&mut self, what: String) {
        if self.error.is_none() {
            self.error = Some(what);
        }
    }
    fn bytes(&mut self, x: &mut Vec<u8>) {
        if let Some(n) = self.len(None)
            && let Some(b) = self.take(n)
        {
            x.clear();
            x.extend_from_slice(b);
        }
    }
    fn trigger(&mut self, t: &mut dyn Trigger) {
        let Some(n) = self.len(None) else { return };
        let Some(b) = self.take(8 * n) else { return };
        let s: Vec<f64> = b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if !t.restore(&s) {
            self.error = Some(format!(
                "checkpoint trigger state {s:?} does not fit this experiment's trigger"
            ));
        }
    }
}
