//! Full-batch gradient of the one-vs-all logistic model on MNIST-sized data, beside two faer
//! GEMMs of the same shapes (`X W^T` and `D^T X`): the target is at most 1.3x those.
//!
//! Uses the real MNIST training set if `data/mnist` holds it, else random data of that shape.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faer::MatRef;
use lena_model::{Linear, LinearKind, Rows};
use std::hint::black_box;

fn gradient(c: &mut Criterion) {
    let data = lena_benches::mnist_or_random();
    let (n, p, k) = (data.n_samples(), data.n_features, 10usize);
    let model = Linear::new(LinearKind::LogisticOva, p, k, 1e-3).unwrap();
    let w: Vec<f32> = (0..model.dim())
        .map(|i| ((i % 13) as f32 - 6.0) * 1e-3)
        .collect();
    let mut g = vec![0.0f32; model.dim()];
    let mut ws = model.workspace(0);
    let threads = rayon::current_num_threads();

    let mut group = c.benchmark_group(format!("full_gradient/n={n}/d={}", model.dim()));
    group.sample_size(20);
    group.throughput(Throughput::Bytes((n * p * 4) as u64));
    group.bench_function("lena_loss_grad", |b| {
        b.iter(|| model.loss_grad(&data, Rows::All, black_box(&w), &mut g, &mut ws))
    });
    // Two plain faer GEMMs of the same shapes, with faer's own parallelism on all threads.
    let x = MatRef::from_row_major_slice(data.features(), n, p);
    let wm = MatRef::from_row_major_slice(&w[..k * p], k, p);
    let mut z = vec![0.0f32; n * k];
    let mut gw = vec![0.0f32; k * p];
    group.bench_function("two_faer_gemms", |b| {
        b.iter(|| {
            lena_benches::two_faer_gemms(x, wm, &mut z, &mut gw, threads);
            black_box(&gw);
        })
    });
    group.finish();
}

criterion_group!(benches, gradient);
criterion_main!(benches);
