//! One round of each algorithm at M = 200 nodes, minibatch 3, one label per node, d = 7850
//! (paper figure 2b's setting), beside the bound of touching every node's state once.
//!
//! Uses MNIST from `data/mnist` if present (run `cargo xtask data mnist`), else synthetic data
//! of MNIST's shape (the round's cost does not depend on the pixel values).
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use lena_benches::{ROUND_ALGORITHMS, bound_state, round_config, touch_state_once};
use lena_kernels::Kernels;
use lena_sim::Simulation;
use std::hint::black_box;

fn rounds(c: &mut Criterion) {
    let mut g = c.benchmark_group("round/M=200/batch=3/d=7850");
    g.sample_size(20);
    for (name, algo) in ROUND_ALGORITHMS {
        let mut sim = Simulation::new(round_config(algo)).unwrap();
        // Warm past the first rounds (LAG's warm-up, LENA's first upload).
        for _ in 0..20 {
            sim.step().unwrap();
        }
        g.bench_function(name, |b| b.iter(|| sim.step().unwrap()));
    }
    // The bound (issue 3): read "a few vectors of 7850 f32, about 126 KB" per node once, i.e.
    // four vectors (e, g, q, mom: 25 MB in all, inside the 32 MiB L3), and write one of them;
    // on one thread, and on both cores as the rounds run.
    let k = Kernels::detect();
    let mut state = bound_state();
    g.bench_function("bound_touch_state_once", |b| {
        b.iter(|| black_box(touch_state_once(k, &mut state, 1)))
    });
    g.bench_function("bound_touch_state_once_2_threads", |b| {
        b.iter(|| black_box(touch_state_once(k, &mut state, 2)))
    });
    g.finish();
}

criterion_group!(benches, rounds);
criterion_main!(benches);
