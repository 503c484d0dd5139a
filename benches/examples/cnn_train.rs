//! The CNN's training step as figure 3 runs it: `Cnn::loss_grad` (forward, cross-entropy,
//! backward, dropout on) on minibatches of 32 MNIST images drawn at random, on one thread.
//! Prints the fastest of `reps` timings of `steps` minibatches, the time per sample, and a
//! checksum of every gradient's bits (equal across builds that keep the arithmetic), then the
//! share of this core's FMA peak (measured in the same run) that its multiply-adds reach.
//!
//! `cargo run --release -p lena-benches --example cnn_train -- [steps] [reps]`

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_model::{Cnn, CnnArch, Rows};
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: usize = args
        .next()
        .map_or(200, |a| a.parse().expect("steps: a whole number"));
    let reps: usize = args
        .next()
        .map_or(5, |a| a.parse().expect("reps: a whole number"));
    let data = lena_benches::mnist_or_random();
    let cnn = Cnn::new(CnnArch::Small, 0.5, 0.0).expect("the network");
    let mut w = vec![0.0f32; cnn.dim()];
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    cnn.init(&mut rng, &mut w);
    const BATCH: usize = 32;
    let batches: Vec<Vec<u32>> = (0..steps)
        .map(|_| {
            (0..BATCH)
                .map(|_| rng.random_range(0..data.n_samples() as u32))
                .collect()
        })
        .collect();
    let mut ws = cnn.workspace(BATCH);
    let mut g = vec![0.0f32; cnn.dim()];
    let (mut best, mut sum) = (f64::INFINITY, 0u64);
    for _ in 0..reps {
        sum = 0;
        let t = std::time::Instant::now();
        for (s, rows) in batches.iter().enumerate() {
            cnn.loss_grad(
                &data,
                Rows::Subset(rows),
                &w,
                &mut g,
                &mut ws,
                Some(s as u64),
            );
            sum = g
                .iter()
                .fold(sum, |h, v| h.rotate_left(5) ^ u64::from(v.to_bits()));
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "small cnn training, {steps} minibatches of {BATCH}, 1 thread: {:.1} ms, {:.2} us per sample, gradients {sum:#018x}",
        best * 1e3,
        best * 1e6 / (steps * BATCH) as f64,
    );
    // The forward and backward products against this core's FMA peak, measured now.
    let peak = lena_benches::fma_peak(50_000_000);
    let (forward, backward) = cnn.multiply_adds();
    let floor = (forward + backward) as f64 * (steps * BATCH) as f64 / (peak * 1e9);
    println!(
        "its products at the FMA peak ({peak:.1} G a second): {:.1} ms, {:.0}% of the peak",
        floor * 1e3,
        100.0 * floor / best
    );
    lena_benches::report(
        "cnn_train",
        serde_json::json!({
            "us_per_sample": best * 1e6 / (steps * BATCH) as f64,
            "peak_share": floor / best,
            "checksum": format!("{sum:#018x}"),
        }),
    );
}
