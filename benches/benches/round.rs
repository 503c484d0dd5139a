//! One round of each algorithm at M = 200 nodes, minibatch 3, one label per node, d = 7850
//! (paper figure 2b's setting), beside the bound of touching every node's state once.
//!
//! Uses MNIST from `data/mnist` if present (run `cargo xtask data mnist`), else synthetic data
//! of MNIST's shape (the round's cost does not depend on the pixel values).
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use lena_kernels::Kernels;
use lena_sim::{ExperimentConfig, Simulation};
use std::hint::black_box;

fn config(algorithm: &str) -> ExperimentConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mnist = root.join("data/mnist");
    let source = if mnist.join("train-images-idx3-ubyte.gz").exists() {
        format!("kind = \"mnist\"\ndir = {:?}", mnist)
    } else {
        "kind = \"synthetic\"\nsamples = 60000\ntest_samples = 1000\nfeatures = 784\nclasses = 10"
            .into()
    };
    let text = format!(
        "[data]\nsplit = \"one_label\"\nnodes = 200\nbatch = 3\n[data.source]\n{source}\n\
         [algorithm]\nstep_size = 0.05\n{algorithm}\n[run]\nthreads = 0\nseed = 1\n"
    );
    ExperimentConfig::from_toml(&text, "bench").unwrap()
}

fn rounds(c: &mut Criterion) {
    let mut g = c.benchmark_group("round/M=200/batch=3/d=7850");
    g.sample_size(20);
    for (name, algo) in [
        ("dgd", "name = \"dgd\""),
        ("lena", "name = \"lena\""),
        ("lag_wk", "name = \"lag_wk\""),
        ("diana_qsgd", "name = \"diana\""),
        (
            "diana_qsgd_fixed",
            "name = \"diana\"\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 4\nbucket = 512\ncoding = \"fixed\"",
        ),
    ] {
        let mut sim = Simulation::new(config(algo)).unwrap();
        // Warm past the first rounds (LAG's warm-up, LENA's first upload).
        for _ in 0..20 {
            sim.step().unwrap();
        }
        g.bench_function(name, |b| b.iter(|| sim.step().unwrap()));
    }
    // The bound (issue 3): read "a few vectors of 7850 f32, about 126 KB" per node once, i.e.
    // four vectors (e, g, q, mom: 25 MB in all, inside the 32 MiB L3), and write one of them.
    let k = Kernels::detect();
    let d = 7850;
    let mut state: Vec<Vec<f32>> = (0..200 * 4).map(|i| vec![i as f32 * 1e-6; d]).collect();
    g.bench_function("bound_touch_state_once", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            for node in state.chunks_mut(4) {
                let (e, rest) = node.split_first_mut().unwrap();
                acc += k.ef_update(e, 0.1, &rest[0], &rest[1]);
                acc += k.norm2_sq(&rest[2]);
            }
            black_box(acc)
        })
    });
    // The same touch on both cores (the rounds run on 2 threads): nodes split in two halves.
    g.bench_function("bound_touch_state_once_2_threads", |b| {
        b.iter(|| {
            let half = state.len() / 2;
            let (a, z) = state.split_at_mut(half);
            let touch = |part: &mut [Vec<f32>]| {
                let mut acc = 0.0f32;
                for node in part.chunks_mut(4) {
                    let (e, rest) = node.split_first_mut().unwrap();
                    acc += k.ef_update(e, 0.1, &rest[0], &rest[1]);
                    acc += k.norm2_sq(&rest[2]);
                }
                acc
            };
            let (x, y) = rayon::join(|| touch(a), || touch(z));
            black_box(x + y)
        })
    });
    g.finish();
}

criterion_group!(benches, rounds);
criterion_main!(benches);
