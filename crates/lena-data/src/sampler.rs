//! Minibatch sampling from a caller's seeded RNG stream.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Draws minibatches of row indices `0..n`.
///
/// With replacement, each index is drawn uniformly and independently. Without replacement, the
/// sampler walks a random permutation and reshuffles when it runs out (epoch-wise sampling):
/// every index appears once per epoch, and an index can repeat within a batch only when the
/// batch straddles the end of an epoch (never when `batch` divides `n`).
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

    /// Checks a state restored through [`Self::state_mut`]: without replacement, a
    /// permutation of `0..n` and a position in `0..=n`; with replacement, no permutation.
    pub fn check(&self) -> Result<(), String> {
        if self.replacement {
            return if self.perm.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} permutation entries for sampling with replacement",
                    self.perm.len()
                ))
            };
        }
        if self.perm.len() != self.n || self.pos > self.n {
            return Err(format!(
                "permutation of {} entries at position {}, expected {} entries",
                self.perm.len(),
                self.pos,
                self.n
            ));
        }
        let mut seen = vec![false; self.n];
        for &i in &self.perm {
            match seen.get_mut(i as usize) {
                Some(s) if !*s => *s = true,
                _ => return Err(format!("entry {i} is out of range or repeated")),
            }
        }
        Ok(())
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

    /// The rows the next [`BatchSampler::fill`] of `out.len()` rows will draw with `rng`, into
    /// `out`, without drawing them (nothing changes); `false`, and `out` left unspecified, where
    /// they are not known without a shuffle (the batch would start a new pass over the rows).
    ///
    /// PERF: a caller can ask for the next batch's rows from memory before it draws them.
    pub fn peek<R: Rng + Clone>(&self, rng: &R, out: &mut [u32]) -> bool {
        if self.replacement {
            let mut rng = rng.clone();
            for o in out {
                *o = rng.random_range(0..self.n as u32);
            }
            return true;
        }
        match self.perm.get(self.pos..self.pos + out.len()) {
            Some(next) => {
                out.copy_from_slice(next);
                true
            }
            None => false,
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
