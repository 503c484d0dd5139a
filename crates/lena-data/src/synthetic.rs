//! Seeded synthetic classification data for tests and examples.

use crate::Dataset;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// `n` samples in `d` dimensions from `n_classes` Gaussian clusters.
///
/// Class `c`'s centre is a fixed random point of norm about `separation`; each sample is its
/// class centre plus standard normal noise. Labels cycle through the classes so every class
/// has `n / n_classes` (+1) samples. Fully determined by `seed`.
pub fn classification(n: usize, d: usize, n_classes: usize, separation: f32, seed: u64) -> Dataset {
    assert!(
        d > 0 && n_classes > 0,
        "synthetic data needs d > 0 and n_classes > 0"
    );
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let scale = separation / (d as f32).sqrt();
    let centres: Vec<f32> = (0..n_classes * d)
        .map(|_| {
            let z: f32 = StandardNormal.sample(&mut rng);
            scale * z
        })
        .collect();
    let mut features = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % n_classes;
        labels.push(c as u32);
        for j in 0..d {
            let noise: f32 = StandardNormal.sample(&mut rng);
            features.push(centres[c * d + j] + 0.5 * noise);
        }
    }
    // Shuffle rows so that splits do not see the class cycle.
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    Dataset::new(features, labels, d, n_classes)
        .expect("consistent shapes and labels")
        .subset(&order)
}
