//! This core's peak rate of f32 fused multiply-adds on its widest vectors (pulp's `Arch`): twelve
//! independent chains of vector FMAs (enough to cover the latency on every x86 core of the
//! project's machines), timed on one thread and then on every core at once. The compute floor
//! of an FMA-bound workload is its multiply-add count over this rate (docs/PERFORMANCE.md,
//! target 5).
//!
//! `cargo run --release -p lena-benches --example fma_peak -- [millions of iterations]`

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use pulp::{Simd, WithSimd};
use std::hint::black_box;
use std::time::Instant;

struct Chains {
    iters: usize,
}

impl WithSimd for Chains {
    type Output = (f64, f32, usize);
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f64, f32, usize) {
        let m = simd.splat_f32s(black_box(0.999_999));
        let c = simd.splat_f32s(black_box(1e-7));
        let mut a: [S::f32s; 12] = std::array::from_fn(|k| simd.splat_f32s(0.5 + k as f32 * 1e-3));
        let t = Instant::now();
        for _ in 0..self.iters {
            for v in &mut a {
                *v = simd.mul_add_f32s(*v, m, c);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let lanes = (12 * S::F32_LANES * self.iters) as f64;
        let sum: f32 = a.iter().map(|v| simd.reduce_sum_f32s(*v)).sum();
        (lanes / secs / 1e9, sum, S::F32_LANES)
    }
}

/// G multiply-adds a second, and the vectors' lanes.
fn rate(iters: usize) -> (f64, usize) {
    let (g, sum, lanes) = pulp::Arch::new().dispatch(Chains { iters });
    black_box(sum);
    (g, lanes)
}

fn main() {
    let iters = std::env::args().nth(1).map_or(200, |a| {
        a.parse::<usize>().expect("millions: a whole number")
    }) * 1_000_000;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let lanes = rate(1).1;
    let one = (0..3).map(|_| rate(iters).0).fold(0.0, f64::max);
    let all: f64 = std::thread::scope(|s| {
        let h: Vec<_> = (0..cores).map(|_| s.spawn(|| rate(iters).0)).collect();
        h.into_iter()
            .map(|h| h.join().expect("a probe thread"))
            .sum()
    });
    println!(
        "{lanes} lanes: {one:.2} G f32 multiply-adds a second on one core, {all:.2} on {cores} at once"
    );
}
