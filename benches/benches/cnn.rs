//! Forward + backward of the paper's CNN (`CnnArch::Small`) per minibatch, with dropout on, on
//! one and on two threads. Criterion's throughput is in samples, so the reported time per
//! element is the time per sample; `benches/python/cnn_torch.py` measures PyTorch the same way.
//! A wide-network row shows the cost of the 1.2M-parameter option.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lena_benches as _; // The `lena` binary's allocator (`lena_benches` installs it).
use lena_model::{Cnn, CnnArch, Rows};
use rand::SeedableRng;
use std::hint::black_box;

fn images(n: usize) -> lena_data::Dataset {
    let features: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u32).collect();
    lena_data::Dataset::new(features, labels, 784, 10).unwrap()
}

fn forward_backward(c: &mut Criterion) {
    let data = images(1024);
    for (arch, batches) in [
        (CnnArch::Small, &[8usize, 32, 64, 256][..]),
        (CnnArch::Wide, &[32][..]),
    ] {
        let cnn = Cnn::new(arch, 0.5, 0.0).unwrap();
        let mut w = vec![0.0f32; cnn.dim()];
        cnn.init(
            &mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1),
            &mut w,
        );
        let mut g = vec![0.0f32; cnn.dim()];
        let mut group = c.benchmark_group(format!("cnn_{arch:?}").to_lowercase());
        group.sample_size(20);
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for &batch in batches {
                let idx: Vec<u32> = (0..batch as u32).map(|i| (i * 37) % 1024).collect();
                let mut ws = cnn.workspace(batch);
                let mut seed = 0u64;
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(BenchmarkId::new(format!("threads={threads}"), batch), |b| {
                    pool.install(|| {
                        b.iter(|| {
                            seed += 1;
                            cnn.loss_grad(
                                &data,
                                Rows::Subset(&idx),
                                black_box(&w),
                                &mut g,
                                &mut ws,
                                Some(seed),
                            )
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, forward_backward);
criterion_main!(benches);
