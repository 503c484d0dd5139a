//! Seeded random streams. Every random choice of a run draws from a stream named by the run
//! seed, a purpose and an index (a node id), so adding a stream never shifts another.

use lena_kernels::{xoshiro256pp_back, xoshiro256pp_next};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::{SplitMix64, Xoshiro256PlusPlus};
use serde::{Deserialize, Serialize};

/// What a stream is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Splitting data among nodes.
    Split = 1,
    /// A node's minibatch sampling.
    Batches = 2,
    /// A node's algorithm randomness (dithering, random sparsification).
    Worker = 3,
    /// Initial parameters.
    Init = 4,
    /// A node's faults (losses, straggling, leaving and returning).
    Faults = 5,
    /// Link-rate realizations of the network model.
    Network = 6,
    /// A node's dropout masks (networks only).
    Dropout = 7,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit seed derived from `(seed, purpose, index)`.
pub fn derive(seed: u64, purpose: Purpose, index: u64) -> u64 {
    splitmix(splitmix(splitmix(seed) ^ purpose as u64) ^ index)
}

/// The stream `(seed, purpose, index)`.
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(derive(seed, purpose, index))
}

/// A node's worker stream: xoshiro256++ as `rand_xoshiro::Xoshiro256PlusPlus`, whose words,
/// seeding and serialised form it shares (runs and checkpoints are the same with either), with
/// its state open to the simulator, which advances several nodes' streams together
/// ([`lena_kernels::Kernels::xoshiro256pp_lanes`]) and steps back the words a node did not take
/// (the node phase's draw-ahead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    s: [u64; 4],
}

impl Stream {
    /// The stream `(seed, purpose, index)` (as [`stream`]).
    pub fn new(seed: u64, purpose: Purpose, index: u64) -> Self {
        Self::seed_from_u64(derive(seed, purpose, index))
    }

    /// The 256-bit state, to advance with others'.
    pub(crate) fn state_mut(&mut self) -> &mut [u64; 4] {
        &mut self.s
    }
}

impl SeedableRng for Stream {
    type Seed = [u8; 32];

    /// The state read little-endian from `seed`; an all-zero seed (whose stream would stay
    /// zero) is `seed_from_u64(0)`, as `rand_xoshiro` maps it.
    fn from_seed(seed: [u8; 32]) -> Self {
        if seed == [0; 32] {
            return Self::seed_from_u64(0);
        }
        let mut s = [0; 4];
        rand::rand_core::le::read_u64_into(&seed, &mut s);
        Self { s }
    }

    /// Seeded by SplitMix64, as `rand_xoshiro` seeds it.
    fn seed_from_u64(seed: u64) -> Self {
        Self::from_rng(&mut SplitMix64::seed_from_u64(seed))
    }
}

impl RngCore for Stream {
    fn next_u32(&mut self) -> u32 {
        // The upper bits, as rand_xoshiro (the lowest have linear dependencies).
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        xoshiro256pp_next(&mut self.s)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dest);
    }
}

/// A node's stream during one step: the words drawn ahead for it (with other nodes' streams,
/// a vector at a time) first, then the stream itself, which the drawing left past them. The
/// node sees exactly the words its stream would give; [`Ahead::finish`] steps the stream back
/// over the words it did not take.
pub(crate) struct Ahead<'a> {
    stream: &'a mut Stream,
    words: &'a [u64],
    /// Words taken from `words`.
    taken: usize,
    /// Words taken from the stream after `words`.
    beyond: usize,
}

impl<'a> Ahead<'a> {
    /// `stream`, advanced past `words`, which it drew.
    pub(crate) fn new(stream: &'a mut Stream, words: &'a [u64]) -> Self {
        Self {
            stream,
            words,
            taken: 0,
            beyond: 0,
        }
    }

    /// Leaves the stream just past the words taken; returns how many were taken.
    pub(crate) fn finish(self) -> usize {
        for _ in self.taken..self.words.len() {
            xoshiro256pp_back(&mut self.stream.s);
        }
        self.taken + self.beyond
    }
}

impl RngCore for Ahead<'_> {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        match self.words.get(self.taken) {
            Some(&w) => {
                self.taken += 1;
                w
            }
            None => {
                self.beyond += 1;
                self.stream.next_u64()
            }
        }
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // PERF: whole words copied from the words drawn ahead, eight bytes from each as
        // `fill_bytes_via_next` takes them; the rest from the stream itself in one call.
        let left = &self.words[self.taken..];
        let whole = (dest.len() / 8).min(left.len());
        let (head, rest) = dest.split_at_mut(8 * whole);
        for (d, w) in head.chunks_exact_mut(8).zip(left) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        self.taken += whole;
        if self.taken < self.words.len() {
            // A tail of under eight bytes, from the words drawn ahead.
            rand::rand_core::impls::fill_bytes_via_next(self, rest);
        } else {
            // Every eight bytes, and a tail of fewer, take one word (`fill_bytes_via_next`).
            self.beyond += rest.len().div_ceil(8);
            self.stream.fill_bytes(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lena_kernels::Kernels;
    use rand::Rng;

    /// Words, 32-bit draws, byte fills of every tail length, and the serialised state: the
    /// same as rand_xoshiro's from the same seed.
    #[test]
    fn a_stream_is_rand_xoshiros() {
        for seed in [0u64, 1, 42, u64::MAX] {
            let (mut a, mut b) = (
                Stream::seed_from_u64(seed),
                Xoshiro256PlusPlus::seed_from_u64(seed),
            );
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            for len in 0..40 {
                let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
                a.fill_bytes(&mut x);
                b.fill_bytes(&mut y);
                assert_eq!(x, y, "seed {seed}, {len} bytes");
                assert_eq!(a.next_u32(), b.next_u32());
                assert_eq!(a.next_u64(), b.next_u64());
            }
            let back: Xoshiro256PlusPlus =
                serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            assert_eq!(back, b);
        }
        assert_eq!(Stream::from_seed([0; 32]), Stream::seed_from_u64(0));
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let (mut a, mut b) = (Stream::from_seed(seed), Xoshiro256PlusPlus::from_seed(seed));
        assert_eq!(a.next_u64(), b.next_u64());
    }

    /// Drawn ahead or not, and whether the step takes fewer words than were drawn, as many, or
    /// more: the same bytes, and the stream left where it would be.
    #[test]
    fn words_drawn_ahead_are_the_streams_own() {
        let k = Kernels::detect();
        for ahead in [0usize, 1, 5, 64, 300] {
            for take in [0usize, 3, 64, 127, 128, 300, 301, 500] {
                let mut plain = Stream::new(9, Purpose::Worker, 3);
                let mut lanes = [
                    Stream::new(9, Purpose::Worker, 2),
                    plain.clone(),
                    Stream::new(9, Purpose::Worker, 4),
                    Stream::new(9, Purpose::Worker, 5),
                ];
                let mut states: Vec<[u64; 4]> = lanes.iter_mut().map(|s| *s.state_mut()).collect();
                let mut words = vec![0u64; 4 * ahead];
                k.xoshiro256pp_lanes(&mut states, &mut words);
                for (s, st) in lanes.iter_mut().zip(&states) {
                    *s.state_mut() = *st;
                }
                let mut served = Ahead::new(&mut lanes[1], &words[ahead..2 * ahead]);
                // Fills as QSGD draws (four bytes a coordinate, up to 256 at a time, an odd
                // tail), then single words.
                let (mut x, mut y) = (vec![0u8; 4 * take], vec![0u8; 4 * take]);
                for (a, b) in x.chunks_mut(1024).zip(y.chunks_mut(1024)) {
                    served.fill_bytes(a);
                    plain.fill_bytes(b);
                }
                assert_eq!(x, y, "{ahead} ahead, {take} taken");
                assert_eq!(served.next_u32(), plain.next_u32());
                let taken = served.finish();
                assert_eq!(taken, take.div_ceil(2) + 1, "{ahead} ahead, {take} taken");
                assert_eq!(
                    lanes[1], plain,
                    "{ahead} ahead, {take} taken: the stream's state"
                );
            }
        }
    }

    #[test]
    fn streams_are_distinct_and_reproducible() {
        let a: u64 = stream(1, Purpose::Batches, 0).random();
        assert_eq!(a, stream(1, Purpose::Batches, 0).random::<u64>());
        assert_ne!(a, stream(1, Purpose::Batches, 1).random::<u64>());
        assert_ne!(a, stream(1, Purpose::Worker, 0).random::<u64>());
        assert_ne!(a, stream(2, Purpose::Batches, 0).random::<u64>());
    }
}
