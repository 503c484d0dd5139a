//! Seeded random streams. Every random choice of a run draws from a stream named by the run
//! seed, a purpose and an index (a node id), so adding a stream never shifts another.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_distinct_and_reproducible() {
        let a: u64 = stream(1, Purpose::Batches, 0).random();
        assert_eq!(a, stream(1, Purpose::Batches, 0).random::<u64>());
        assert_ne!(a, stream(1, Purpose::Batches, 1).random::<u64>());
        assert_ne!(a, stream(1, Purpose::Worker, 0).random::<u64>());
        assert_ne!(a, stream(2, Purpose::Batches, 0).random::<u64>());
    }
}
