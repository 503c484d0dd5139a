//! This core's peak rate of f32 fused multiply-adds on its widest vectors (pulp's `Arch`):
//! twelve independent chains of vector FMAs (`lena_benches::fma_rate`), timed on one thread and
//! then on every core at once. The compute floor of an FMA-bound workload is its multiply-add
//! count over this rate (docs/PERFORMANCE.md, target 5); `cnn_eval` and `cnn_train` print their
//! share of it.
//!
//! `cargo run --release -p lena-benches --example fma_peak -- [millions of steps]`

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_benches::{fma_peak, fma_rate};

fn main() {
    let iters = std::env::args().nth(1).map_or(200, |a| {
        a.parse::<usize>().expect("millions: a whole number")
    }) * 1_000_000;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let lanes = fma_rate(1).1;
    let one = fma_peak(iters);
    let all: f64 = std::thread::scope(|s| {
        let h: Vec<_> = (0..cores).map(|_| s.spawn(|| fma_rate(iters).0)).collect();
        h.into_iter()
            .map(|h| h.join().expect("a probe thread"))
            .sum()
    });
    println!(
        "{lanes} lanes: {one:.2} G f32 multiply-adds a second on one core, {all:.2} on {cores} at once"
    );
    lena_benches::report(
        "fma_peak",
        serde_json::json!({ "lanes": lanes, "one_core": one, "all_cores": all, "cores": cores }),
    );
}
