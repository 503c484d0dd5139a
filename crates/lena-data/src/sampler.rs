//! Minibatch sampling from a caller's seeded RNG stream.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Draws minibatches of row indices `0..n`.
///
/// With replacement, each index is drawn uniformly and independently. Without replacement, the
/// sampler walks a random permutation and reshuffles when it runs out (epoch-wise sampling),
/// so no index repeats within a batch while `batch <= n`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchSampler {
    n: usize,
    replacement: bool,
    perm: Vec<u32>,
    pos: usize,
}

impl BatchSampler {
    /// The sampler's state (permutation and position), for checkpoints.
    pub fn state_mut(&mut self) -> (&mut Vec<u32>, &mut usize) {
        (&mut self.perm, &mut self.pos)
    }

    /// A sampler over `0..n`.
    ///
    /// # Panics
    /// If `n` is zero or does not fit in `u32`.
    pub fn new(n: usize, replacement: bool) -> Self {
        assert!(
            n > 0 && n <= u32::MAX as usize,
            "sampler needs 1..=u32::MAX rows, got {n}"
        );
        let perm = if replacement {
            Vec::new()
        } else {
            (0..n as u32).collect()
        };
        // pos = n forces a shuffle before the first batch.
        Self {
            n,
            replacement,
            perm,
            pos: n,
        }
    }

    /// Fills `out` with the next batch, drawing randomness from `rng`.
    pub fn fill<R: Rng + ?Sized>(&mut self, rng: &mut R, out: &mut [u32]) {
        if self.replacement {
            for o in out {
                *o = rng.random_range(0..self.n as u32);
            }
            return;
        }
        for o in out {
            if self.pos == self.n {
                for i in (1..self.n).rev() {
                    self.perm.swap(i, rng.random_range(0..=i));
                }
                self.pos = 0;
            }
            *o = self.perm[self.pos];
            self.pos += 1;
        }
    }
}
