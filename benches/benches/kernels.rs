//! Kernels: reference (f64 loop), pulp's scalar path and the detected SIMD path side by side,
//! at an in-cache length (d = 7850, one MNIST model) and an out-of-cache length (64 MiB per
//! vector), plus a copy benchmark measuring the machine's memory bandwidth in the same run, and
//! xoshiro256++ draws one stream at a time against eight streams a vector at a time, and a
//! minibatch gradient's second product (`lin_comb2`, `lin_comb_classes`) as a linear model
//! takes it, and the CNN's pooling, its adjoint and its bias gradients' row sums.
//!
//! Throughput is in bytes the kernel must move (read + written), so the large-vector groups
//! read directly against `copy`.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lena_benches as _; // The `lena` binary's allocator (`lena_benches` installs it).
use lena_kernels::{Kernels, reference};
use std::hint::black_box;

const SIZES: [usize; 2] = [7850, 16 << 20];

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 * 1e-7 - 0.8
        })
        .collect()
}

fn reductions(c: &mut Criterion) {
    let paths: Vec<(&str, Kernels)> = lena_kernels::PATH_NAMES
        .into_iter()
        .filter_map(|n| Some((n, Kernels::named(n)?)))
        .collect();
    for n in SIZES {
        let (x, y, v) = (data(n, 1), data(n, 2), data(n, 3));
        let mut g = c.benchmark_group(format!("dot/f32/n={n}"));
        g.throughput(Throughput::Bytes(8 * n as u64));
        g.bench_function("reference", |b| {
            b.iter(|| reference::dot(black_box(&x), black_box(&y)))
        });
        for &(name, k) in &paths {
            g.bench_function(name, |b| b.iter(|| k.dot(black_box(&x), black_box(&y))));
        }
        g.finish();

        let mut g = c.benchmark_group(format!("norm2_sq/f32/n={n}"));
        g.throughput(Throughput::Bytes(4 * n as u64));
        g.bench_function("reference", |b| {
            b.iter(|| reference::norm2_sq(black_box(&x)))
        });
        for &(name, k) in &paths {
            g.bench_function(name, |b| b.iter(|| k.norm2_sq(black_box(&x))));
        }
        g.finish();

        let mut g = c.benchmark_group(format!("lin_dist2_sq/f32/n={n}"));
        g.throughput(Throughput::Bytes(12 * n as u64));
        g.bench_function("reference", |b| {
            b.iter(|| reference::lin_dist2_sq(black_box(&x), 0.1, black_box(&y), black_box(&v)))
        });
        for &(name, k) in &paths {
            g.bench_function(name, |b| {
                b.iter(|| k.lin_dist2_sq(black_box(&x), 0.1, &y, &v))
            });
        }
        g.finish();
    }
}

fn updates(c: &mut Criterion) {
    let paths: Vec<(&str, Kernels)> = lena_kernels::PATH_NAMES
        .into_iter()
        .filter_map(|n| Some((n, Kernels::named(n)?)))
        .collect();
    for n in SIZES {
        let x = data(n, 1);
        let v = data(n, 3);
        let mut y = data(n, 2);
        let mut g = c.benchmark_group(format!("axpy/f32/n={n}"));
        g.throughput(Throughput::Bytes(12 * n as u64));
        g.bench_function("reference", |b| {
            b.iter(|| reference::axpy(1e-3, black_box(&x), &mut y))
        });
        for &(name, k) in &paths {
            g.bench_function(name, |b| b.iter(|| k.axpy(1e-3, black_box(&x), &mut y)));
        }
        g.finish();

        let mut e = data(n, 4);
        let mut g = c.benchmark_group(format!("ef_update/f32/n={n}"));
        g.throughput(Throughput::Bytes(16 * n as u64));
        g.bench_function("reference", |b| {
            b.iter(|| reference::ef_update(&mut e, 1e-3, black_box(&x), black_box(&v)))
        });
        for &(name, k) in &paths {
            g.bench_function(name, |b| {
                b.iter(|| k.ef_update(&mut e, 1e-3, black_box(&x), &v))
            });
        }
        g.finish();

        let mut dst = vec![0.0f32; n];
        let mut g = c.benchmark_group(format!("copy/f32/n={n}"));
        g.throughput(Throughput::Bytes(8 * n as u64));
        g.bench_with_input(BenchmarkId::new("memcpy", n), &x, |b, x| {
            b.iter(|| dst.copy_from_slice(black_box(x)))
        });
        g.finish();
    }
}

/// Eight nodes' worker streams, a round of DIANA-QSGD's draws each at d = 7850 (3 925 words):
/// one stream at a time as a node draws them (`rand_xoshiro`'s `fill_bytes`), against
/// `xoshiro256pp_lanes` on every path (the node phase's draw-ahead). The same words.
fn draws(c: &mut Criterion) {
    use rand::{RngCore, SeedableRng};
    let words = 3925;
    let mut g = c.benchmark_group("xoshiro256pp/8 streams x 3925 words");
    g.throughput(Throughput::Elements(8 * words as u64));
    let mut streams: Vec<rand_xoshiro::Xoshiro256PlusPlus> = (0..8)
        .map(rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64)
        .collect();
    let mut bytes = vec![0u8; 8 * words];
    g.bench_function("one stream at a time", |b| {
        b.iter(|| {
            for s in &mut streams {
                s.fill_bytes(black_box(&mut bytes));
            }
        })
    });
    let mut states: Vec<[u64; 4]> = (0..8u64).map(|i| [2 * i + 1, i, 3, 4]).collect();
    let mut out = vec![0u64; 8 * words];
    for name in lena_kernels::PATH_NAMES {
        if let Some(k) = Kernels::named(name) {
            g.bench_function(name, |b| {
                b.iter(|| k.xoshiro256pp_lanes(black_box(&mut states), &mut out))
            });
        }
    }
    g.finish();
}

/// A minibatch gradient's second product as a linear model takes it: `g = lambda w + sum_k c_k
/// x_k` for ten classes of 784 weights (each class row 785 floats on from the last, so one float
/// further on a line per class), two classes a call (`lin_comb2_without_norms`), one and three
/// sample rows, on every path.
fn minibatch_gradient(c: &mut Criterion) {
    let (p, classes) = (784, 10);
    let d = classes * (p + 1);
    let w = data(d, 7);
    let mut grad = vec![0.0f32; d];
    for rows in [1, 3] {
        let x: Vec<Vec<f32>> = (0..rows).map(|r| data(p, 11 + r as u32)).collect();
        let xs: Vec<&[f32]> = x.iter().map(|r| &r[..]).collect();
        let coef = [vec![1e-3f32; rows], vec![-2e-3f32; rows]];
        let mut g = c.benchmark_group(format!("lin_comb2 gradient/10 classes x 784/rows={rows}"));
        g.throughput(Throughput::Elements(d as u64));
        for name in lena_kernels::PATH_NAMES {
            let Some(k) = Kernels::named(name) else {
                continue;
            };
            g.bench_function(name, |b| {
                b.iter(|| {
                    for pair in 0..classes / 2 {
                        let lo = 2 * pair * (p + 1);
                        let (g0, g1) = grad[lo..lo + 2 * (p + 1)].split_at_mut(p + 1);
                        let w0 = &w[lo..lo + p];
                        let w1 = &w[lo + p + 1..lo + 2 * p + 1];
                        k.lin_comb2_without_norms(
                            [&mut g0[..p], &mut g1[..p]],
                            1e-4,
                            [w0, w1],
                            [&coef[0], &coef[1]],
                            black_box(&xs),
                        );
                    }
                    black_box(&mut grad);
                })
            });
        }
        g.finish();
    }
    // Fifteen rows (figure 1's minibatches): class by class (`lin_comb`, the rows read again for
    // each class) against every class at once (`lin_comb_classes`), the same floats.
    let rows = 15;
    let x: Vec<Vec<f32>> = (0..rows).map(|r| data(p, 11 + r as u32)).collect();
    let xs: Vec<&[f32]> = x.iter().map(|r| &r[..]).collect();
    let coef = data(classes * rows, 5);
    let mut g = c.benchmark_group(format!("gradient/10 classes x 784/rows={rows}"));
    g.throughput(Throughput::Elements(d as u64));
    for name in lena_kernels::PATH_NAMES {
        let Some(k) = Kernels::named(name) else {
            continue;
        };
        g.bench_function(format!("lin_comb per class/{name}"), |b| {
            b.iter(|| {
                for class in 0..classes {
                    let at = class * (p + 1);
                    let c = &coef[class * rows..(class + 1) * rows];
                    black_box(k.lin_comb(&mut grad[at..at + p], 1e-4, &w[at..at + p], c, &xs));
                }
            })
        });
        g.bench_function(format!("lin_comb_classes/{name}"), |b| {
            b.iter(|| k.lin_comb_classes(&mut grad, p + 1, 1e-4, &w, &coef, black_box(&xs)))
        });
    }
    g.finish();
}

/// The paper's CNN's pooling (positions recorded), its adjoint and its bias gradients' row sums
/// at a training minibatch of 32 (the first layer: 320 planes of 24 x 24, ten rows of 18 432),
/// every path side by side (the plain loops on the scalar path, and on AVX2 for the pooling).
fn cnn_layers(c: &mut Criterion) {
    let paths: Vec<(&str, Kernels)> = lena_kernels::PATH_NAMES
        .into_iter()
        .filter_map(|n| Some((n, Kernels::named(n)?)))
        .collect();
    let (planes, h) = (320, 24);
    let x = data(planes * h * h, 7);
    let n = x.len() / 4;
    let (mut y, mut am, mut dx) = (vec![0.0f32; n], vec![0u8; n], vec![0.0f32; x.len()]);
    let dy = data(n, 9);
    let mut g = c.benchmark_group(format!("cnn/pooling/{planes} planes of {h} x {h}"));
    for &(name, k) in &paths {
        g.bench_function(format!("max_pool2/{name}"), |b| {
            b.iter(|| k.max_pool2(planes, h, h, black_box(&x), &mut y, Some(&mut am)))
        });
        k.max_pool2(planes, h, h, &x, &mut y, Some(&mut am));
        g.bench_function(format!("max_pool2_adjoint/{name}"), |b| {
            b.iter(|| k.max_pool2_adjoint(planes, h, h, black_box(&dy), &am, &mut dx))
        });
    }
    g.finish();
    let (rows, len) = (10, 18_432);
    let m = data(rows * len, 11);
    let mut acc = vec![0.0f32; rows];
    let mut g = c.benchmark_group(format!("cnn/add_row_sums/{rows} rows of {len}"));
    for &(name, k) in &paths {
        g.bench_function(name, |b| {
            b.iter(|| k.add_row_sums(&mut acc, black_box(&m), len))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = reductions, updates, draws, minibatch_gradient, cnn_layers
}
criterion_main!(benches);
