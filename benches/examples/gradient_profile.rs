//! The full-batch loss and gradient of the linear models on MNIST (60 000 x 784, 10 classes,
//! d = 7850) against the machine's roofline, all measured in the same run.
//!
//! `cargo run --release -p lena-benches --example gradient_profile` interleaves, ten times:
//! `Linear::loss_grad` (softmax and one-versus-all logistic, all threads, by default: from the
//! nonzero values where the kernels run the products so; and softmax from the dense block
//! kernels alone, `softmax_dense`, and with their requests ahead the other way from this CPU's
//! default, `softmax_dense_toggled`); the memory floor
//! (X read once, a sum over its rows on all threads); sgemm's peak (faer, 1536^3, all threads);
//! two faer GEMMs of the gradient's shapes; each of the two block kernels alone over X (in the
//! model's chunks, not blocked for cache: the second reads X from memory again); and each of
//! them with the same FLOPs on one block of rows in L2 per thread (their rate with no row from
//! memory); the softmax loss alone (an evaluation's pass); and the softmax gradient on the
//! first 4096 rows again and again (in L3), scaled to all rows: its cost with memory out of the
//! way (an upper bound: a call's fixed costs, two chunks' partial gradients summed, count
//! fifteen times); and X streamed once on all threads with the gradient's 20 fused multiply-adds
//! of each vector (ten classes' scores and ten gradient rows) into register accumulators and
//! nothing else, without requests and with one into L1 every four lines, eight lines ahead:
//! what memory and arithmetic cost together at their least, with the core's own fetching and
//! with requests timed for it (`stream_fma`, `stream_fma_near`). It reports each one's fastest repetition, the
//! compute floor (the gradient's 4 n p c FLOPs at the sgemm peak), the roofline (the larger
//! floor) and the gradient's ratio to it. Every measurement that reads X from memory starts
//! with X evicted from the caches (a buffer twice the last-level cache read on every thread), so
//! that a last-level cache as large as X does not keep a share of it that depends on what ran
//! before. Uses `data/mnist` if present (`cargo xtask data mnist`), else random data of that
//! shape.

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use lena_benches::on_path;
use lena_kernels::Kernels;
use lena_model::{Linear, LinearKind, Rows};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let data = lena_benches::mnist_or_random();
    let (n, p, c) = (data.n_samples(), data.n_features, 10usize);
    let threads = rayon::current_num_threads();
    let k = Kernels::detect();
    let models: Vec<(&str, Linear)> = [
        ("softmax", LinearKind::Softmax),
        ("logistic_ova", LinearKind::LogisticOva),
    ]
    .into_iter()
    .map(|(name, kind)| (name, Linear::new(kind, p, c, 1e-3).unwrap()))
    .collect();
    let w: Vec<f32> = (0..models[0].1.dim())
        .map(|i| ((i % 13) as f32 - 6.0) * 1e-3)
        .collect();
    let mut g = vec![0.0f32; w.len()];
    let mut ws = models[0].1.workspace(0);
    // `-- softmax 200`: that model's gradient only, 200 times (for `perf record`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((_, m)) = args
        .first()
        .and_then(|a| models.iter().find(|(n, _)| n == a))
    {
        let times: usize = args.get(1).map_or(200, |t| t.parse().expect("a count"));
        let t = Instant::now();
        for _ in 0..times {
            black_box(m.loss_grad(&data, Rows::All, black_box(&w), &mut g, &mut ws));
        }
        println!(
            "{:.2} ms each",
            t.elapsed().as_secs_f64() * 1e3 / times as f64
        );
        return;
    }
    let big = 1536;
    let (a, b) = (
        Mat::<f32>::from_fn(big, big, |i, j| ((i + 2 * j) % 7) as f32),
        Mat::<f32>::from_fn(big, big, |i, j| ((3 * i + j) % 5) as f32),
    );
    let mut out = Mat::<f32>::zeros(big, big);
    let x = MatRef::from_row_major_slice(data.features(), n, p);
    let wm = MatRef::from_row_major_slice_with_stride(&w, c, p, p + 1);
    let (mut z, mut gw) = (vec![0.0f32; n * c], vec![0.0f32; c * p]);
    let rows_per_task = n.div_ceil(threads * 8).max(1);

    let names = [
        "softmax",
        "logistic_ova",
        "read_x",
        "sgemm_1536",
        "two_faer_gemms",
        "dot_block_alone",
        "add_outer_alone",
        "dot_block_in_l2",
        "add_outer_in_l2",
        "softmax_loss",
        "softmax_in_cache",
        "stream_fma",
        "stream_fma_near",
        "softmax_dense_toggled",
        "softmax_dense",
    ];
    let mut best = [f64::INFINITY; 15];
    // The softmax gradient from the dense block kernels alone, where the default runs from the
    // nonzero values (`Linear::with_nonzero_products`).
    let dense = models[0].1.with_nonzero_products(false);
    // The same with the block kernels' requests ahead the other way from this CPU's default
    // (`Kernels::requests_ahead`), to check the default on each machine kind: only the dense
    // block kernels make the requests.
    let ahead = k.requests_ahead();
    let toggled = dense.with_kernels(k.with_requests_ahead(!ahead));
    let t = Instant::now();
    let layout = models[0].1.nonzero_layout_bytes(&data);
    let built = t.elapsed().as_secs_f64();
    // The first 4096 rows (12.8 MB, within L3) alone, their time scaled to all n rows: the
    // gradient with its rows from cache, what it costs with memory out of the way.
    let few = 4096.min(n);
    let cached = lena_data::Dataset::new(
        data.features()[..few * p].to_vec(),
        data.labels[..few].to_vec(),
        p,
        c,
    )
    .expect("a prefix of the data");
    // The same two kernels with the same FLOPs, each thread on one block of the model's size
    // (256 KiB of rows, in L2) again and again: their rate with no row from memory.
    let block = ((256 << 10) / (4 * p)).clamp(4, 256);
    let repeats = n / block / threads;
    // The two block kernels alone over X, in the model's chunks of 2048 rows.
    let chunk = 2048;
    let mut zs = vec![0.0f32; n * c];
    let mut gs: Vec<Vec<f32>> = vec![vec![0.0f32; c * (p + 1)]; n.div_ceil(chunk)];
    // Each measurement that reads X from memory starts with X out of the caches: a last-level
    // cache as large as X (300 MiB on Intel Xeon family 6 model 207's hosts, shared with other
    // machines) otherwise keeps some of it from the measurement before, by an amount that
    // depends on that measurement and on the neighbours. Reading a buffer twice the cache's
    // size on every thread evicts it.
    let evict = vec![1.0f32; (2 * last_level_cache_bytes().max(n * p * 4)) / 4];
    let flush = || {
        // One float every 64 bytes: one in every cache line.
        let s: f32 = evict
            .par_chunks(1 << 16)
            .map(|v| v.iter().step_by(16).sum::<f32>())
            .sum();
        black_box(s);
    };
    for _ in 0..10 {
        for (i, (_, m)) in models.iter().enumerate() {
            flush();
            let t = Instant::now();
            black_box(m.loss_grad(&data, Rows::All, black_box(&w), &mut g, &mut ws));
            best[i] = best[i].min(t.elapsed().as_secs_f64());
        }
        flush();
        let t = Instant::now();
        black_box(toggled.loss_grad(&data, Rows::All, black_box(&w), &mut g, &mut ws));
        best[13] = best[13].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        black_box(dense.loss_grad(&data, Rows::All, black_box(&w), &mut g, &mut ws));
        best[14] = best[14].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        let s: f32 = data
            .features()
            .par_chunks(rows_per_task * p)
            .map(|rows| k.norm2_sq(rows))
            .sum();
        black_box(s);
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        matmul(
            out.as_mut(),
            Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            1.0f32,
            Par::rayon(threads),
        );
        black_box(&out);
        best[3] = best[3].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        lena_benches::two_faer_gemms(x, wm, &mut z, &mut gw, threads);
        black_box(&gw);
        best[4] = best[4].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        data.features()
            .par_chunks(chunk * p)
            .zip(zs.par_chunks_mut(chunk * c))
            .for_each(|(x, z)| {
                k.dot_block(x, p, &w, p + 1, c, z, &[]);
            });
        black_box(&zs);
        best[5] = best[5].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        data.features()
            .par_chunks(chunk * p)
            .zip(zs.par_chunks(chunk * c))
            .zip(gs.par_iter_mut())
            .for_each(|((x, z), g)| k.add_outer_block(g, p + 1, c, z, x, p, &[]));
        black_box(&gs);
        best[6] = best[6].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        (0..threads).into_par_iter().for_each(|i| {
            let x = &data.features()[i * block * p..(i + 1) * block * p];
            let mut z = vec![0.0f32; block * c];
            for _ in 0..repeats {
                k.dot_block(x, p, &w, p + 1, c, &mut z, &[]);
            }
            black_box(&z);
        });
        best[7] = best[7].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        gs.par_iter_mut()
            .take(threads)
            .enumerate()
            .for_each(|(i, g)| {
                let x = &data.features()[i * block * p..(i + 1) * block * p];
                let d = &zs[..block * c];
                for _ in 0..repeats {
                    k.add_outer_block(g, p + 1, c, d, x, p, &[]);
                }
            });
        best[8] = best[8].min(t.elapsed().as_secs_f64());
        flush();
        let t = Instant::now();
        black_box(models[0].1.loss(&data, Rows::All, black_box(&w), &mut ws));
        best[9] = best[9].min(t.elapsed().as_secs_f64());
        for _ in 0..n / few {
            let t = Instant::now();
            black_box(
                models[0]
                    .1
                    .loss_grad(&cached, Rows::All, black_box(&w), &mut g, &mut ws),
            );
            best[10] = best[10].min(t.elapsed().as_secs_f64() * (n as f64 / few as f64));
        }
        let parts = data.features().len().div_ceil(threads);
        for (slot, near) in [(11, false), (12, true)] {
            flush();
            let t = Instant::now();
            let s: f32 = data
                .features()
                .par_chunks(parts)
                .map(|x| stream_fma(k, x, near))
                .sum();
            black_box(s);
            best[slot] = best[slot].min(t.elapsed().as_secs_f64());
        }
    }
    let peak = 2.0 * (big as f64).powi(3) / best[3];
    let flops = 4.0 * (n * p * c) as f64;
    let (memory, compute) = (best[2], flops / peak);
    let roofline = memory.max(compute);
    println!(
        "n = {n}, p = {p}, c = {c}, {threads} threads, SIMD {}; fastest of 10, interleaved",
        k.name()
    );
    for (name, t) in names.iter().zip(best) {
        println!("{name:<16} {:>8.2} ms", t * 1e3);
    }
    println!(
        "read bandwidth {:.1} GB/s, sgemm peak {:.0} GFLOP/s",
        (n * p * 4) as f64 / memory / 1e9,
        peak / 1e9
    );
    println!(
        "memory floor {:.2} ms, compute floor {:.2} ms, roofline {:.2} ms",
        memory * 1e3,
        compute * 1e3,
        roofline * 1e3
    );
    for (i, name) in ["softmax", "logistic_ova"].iter().enumerate() {
        println!(
            "{name}: {:.2}x the roofline, {:.2}x two faer GEMMs",
            best[i] / roofline,
            best[i] / best[4]
        );
    }
    println!(
        "X streamed once with 20 FMAs a vector: {:.2}x the roofline; with a request every four \
         lines, eight lines ahead {:.2}x",
        best[11] / roofline,
        best[12] / roofline
    );
    println!(
        "the block kernels' requests ahead are {} on this CPU; softmax from the dense block \
         kernels with them {}: {:.2}x the roofline, {:.3} of the time with them {}",
        if ahead { "on" } else { "off" },
        if ahead { "off" } else { "on" },
        best[13] / roofline,
        best[13] / best[14],
        if ahead { "on" } else { "off" },
    );
    match layout {
        Some(bytes) => println!(
            "the full-batch products run from the nonzero values: a layout of {:.1} MB (X is \
             {:.1} MB), built in {:.0} ms",
            bytes as f64 / 1e6,
            (n * p * 4) as f64 / 1e6,
            built * 1e3
        ),
        None => println!("the full-batch products run from the dense rows (no layout)"),
    }
    println!(
        "softmax from the dense block kernels alone: {:.2}x the roofline, {:.3} of the default's \
         time",
        best[14] / roofline,
        best[14] / best[0]
    );
    lena_benches::report(
        "gradient_profile",
        serde_json::json!({
            "simd": k.name(),
            "threads": threads,
            "softmax_ms": best[0] * 1e3,
            "logistic_ova_ms": best[1] * 1e3,
            "memory_floor_ms": memory * 1e3,
            "compute_floor_ms": compute * 1e3,
            "roofline_ms": roofline * 1e3,
            "read_gb_s": (n * p * 4) as f64 / memory / 1e9,
            "sgemm_gflop_s": peak / 1e9,
            "softmax_roofline": best[0] / roofline,
            "logistic_ova_roofline": best[1] / roofline,
            "dense_kernels_roofline": best[14] / roofline,
            "nonzero_layout": layout.is_some(),
            "requests_ahead": ahead,
            "requests_toggled_over_default": best[13] / best[14],
        }),
    );
}

/// `x` read once, each vector into 20 fused multiply-adds (ten class vectors, twenty
/// accumulators in registers) and nothing else; with `near`, every fourth line requested into
/// L1 eight lines before its first load (on Intel Xeon family 6 model 167 that pattern let the
/// stream run as fast as X read alone; every line two lines ahead did not). On `k`'s
/// instruction set.
fn stream_fma(k: Kernels, x: &[f32], near: bool) -> f32 {
    if near {
        on_path(k, StreamFma::<true> { x })
    } else {
        on_path(k, StreamFma::<false> { x })
    }
}

/// See [`stream_fma`].
struct StreamFma<'a, const NEAR: bool> {
    x: &'a [f32],
}

impl<const NEAR: bool> WithSimd for StreamFma<'_, NEAR> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let xs = S::as_simd_f32s(self.x).0;
        let c: [S::f32s; 10] = std::array::from_fn(|k| simd.splat_f32s(1.0 + k as f32 * 1e-7));
        let mut a = [simd.splat_f32s(0.0); 20];
        let line = (64 / (4 * S::F32_LANES)).max(1);
        for (j, v) in xs.iter().enumerate() {
            #[cfg(target_arch = "x86_64")]
            if NEAR && j.is_multiple_of(4 * line) {
                // SAFETY: a prefetch never faults and writes nothing, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<3>(
                        std::ptr::from_ref(v).wrapping_add(8 * line).cast(),
                    );
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = j;
            for (k, acc) in a.iter_mut().enumerate() {
                *acc = simd.mul_add_f32s(*v, c[k % 10], *acc);
            }
        }
        let mut s = simd.splat_f32s(0.0);
        for v in a {
            s = simd.add_f32s(s, v);
        }
        simd.reduce_sum_f32s(s)
    }
}

/// The size of the first core's last-level cache as Linux reports it (0 if unreadable).
fn last_level_cache_bytes() -> usize {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let size = std::fs::read_to_string(e.path().join("size")).ok()?;
            let size = size.trim();
            let (digits, unit) = match (size.strip_suffix('K'), size.strip_suffix('M')) {
                (Some(d), _) => (d, 1 << 10),
                (_, Some(d)) => (d, 1 << 20),
                _ => (size, 1),
            };
            digits.parse::<usize>().ok().map(|v| v * unit)
        })
        .max()
        .unwrap_or(0)
}
