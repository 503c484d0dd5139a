//! The CNN's evaluation pass (forward only, no dropout): `Cnn::loss` over the MNIST training
//! set, what each of figure 3's evaluations computes, on a pool of `threads` threads.
//! Prints the fastest of `reps` timings, the time per image, and the loss's bits (equal
//! across builds that keep the arithmetic), then the share of this core's FMA peak (measured
//! in the same run) that the pass's multiply-adds reach.
//!
//! `cargo run --release -p lena-benches --example cnn_eval -- [threads] [reps] [small|wide]`

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_model::{Cnn, CnnArch, Rows};
use rand::SeedableRng;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .map_or(1, |a| a.parse().expect("threads: a whole number"));
    let reps: usize = args
        .next()
        .map_or(5, |a| a.parse().expect("reps: a whole number"));
    let arch = match args.next().as_deref() {
        None | Some("small") => CnnArch::Small,
        Some("wide") => CnnArch::Wide,
        Some(a) => panic!("network: small or wide, not {a:?}"),
    };
    let data = lena_benches::mnist_or_random();
    let cnn = Cnn::new(arch, 0.5, 0.0).expect("the network");
    let mut w = vec![0.0f32; cnn.dim()];
    cnn.init(
        &mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1),
        &mut w,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let mut ws = cnn.workspace(0);
    let mut best = f64::INFINITY;
    let mut loss = 0.0;
    pool.install(|| {
        for _ in 0..reps {
            let t = std::time::Instant::now();
            loss = cnn.loss(&data, Rows::All, &w, &mut ws);
            best = best.min(t.elapsed().as_secs_f64());
        }
    });
    let n = data.n_samples();
    println!(
        "{arch:?} cnn loss over {n} images, {threads} thread(s): {:.1} ms, {:.2} us per image, loss {loss} ({:#018x})",
        best * 1e3,
        best * 1e6 / n as f64,
        loss.to_bits()
    );
    // The forward pass's products against this core's FMA peak, measured now (one thread's
    // rate: on more threads, the share of as many cores).
    let peak = lena_benches::fma_peak(50_000_000) * threads as f64;
    let floor = cnn.multiply_adds().0 as f64 * n as f64 / (peak * 1e9);
    println!(
        "its products at the FMA peak ({peak:.1} G a second): {:.1} ms, {:.0}% of the peak",
        floor * 1e3,
        100.0 * floor / best
    );
    lena_benches::report(
        "cnn_eval",
        serde_json::json!({
            "network": format!("{arch:?}"),
            "threads": threads,
            "us_per_image": best * 1e6 / n as f64,
            "peak_share": floor / best,
            "checksum": format!("{:#018x}", loss.to_bits()),
        }),
    );
}
