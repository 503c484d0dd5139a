//! The paper's two convolutions through `Kernels::conv_valid` alone, at the evaluation's block
//! of 6 samples, and the first one's weight gradient (`Kernels::conv_weight_grad`, which the
//! training step takes directly) over a minibatch of 32: time per sample and its share of this
//! core's FMA peak. The clock drifts within
//! a second on the project's machines, so `slices` short timings of the convolution alternate
//! with short timings of the FMA peak (`lena_benches::fma_rate`), and the share is the ratio of
//! their sums.
//!
//! `cargo run --release -p lena-benches --example conv_profile -- [slices]`

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_kernels::{ConvShape, Kernels};

fn main() {
    let slices: usize = std::env::args()
        .nth(1)
        .map_or(100, |a| a.parse().expect("slices: a whole number"));
    let k = Kernels::detect();
    let layer = |cin, cout, h| ConvShape {
        cin,
        cout,
        k: 5,
        h,
        w: h,
        samples: 6,
    };
    let values = |n: usize, m: usize, q: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (i * m % q) as f32 / q as f32 - 0.5)
            .collect()
    };
    for (name, s) in [("first", layer(1, 10, 28)), ("second", layer(10, 20, 12))] {
        let (x, wt) = (
            values(s.input_len(), 7919, 1000),
            values(s.cout * s.kk(), 104_729, 997),
        );
        let bias = vec![0.1f32; s.cout];
        let mut y = vec![0.0f32; s.output_len()];
        let what = format!(
            "{name} layer ({} -> {} channels, {}x{} outputs)",
            s.cin,
            s.cout,
            s.ho(),
            s.wo()
        );
        report(k, &what, s, slices, 50, || {
            k.conv_valid(s, std::hint::black_box(&x), &wt, &bias, &mut y);
        });
    }
    // The first layer's weight gradient over a training minibatch.
    let s = ConvShape {
        samples: 32,
        ..layer(1, 10, 28)
    };
    let (x, dy) = (
        values(s.input_len(), 7919, 1000),
        values(s.output_len(), 104_729, 997),
    );
    let mut gw = vec![0.0f32; s.cout * s.kk()];
    let what = "first layer's weight gradient (32 samples)";
    report(k, what, s, slices, 10, || {
        k.conv_weight_grad(s, std::hint::black_box(&x), &dy, &mut gw);
    });
}

/// Times `slices` slices of `calls` calls of `run` (one convolution's worth of multiply-adds
/// over `s`), each after a short timing of the FMA peak, and prints the time per sample and its
/// share of the peak.
fn report(
    k: Kernels,
    what: &str,
    s: ConvShape,
    slices: usize,
    calls: usize,
    mut run: impl FnMut(),
) {
    let (mut secs, mut peak) = (0.0, 0.0);
    for _ in 0..slices {
        peak += lena_benches::fma_rate(20_000).0;
        let t = std::time::Instant::now();
        for _ in 0..calls {
            run();
        }
        secs += t.elapsed().as_secs_f64();
    }
    let calls = (slices * calls) as f64;
    let rate = (s.cout * s.kk() * s.ho() * s.wo() * s.samples) as f64 * calls / secs / 1e9;
    let peak = peak / slices as f64;
    println!(
        "{what}: {:.2} us a sample, {rate:.1} G multiply-adds a second, {:.0}% of the FMA peak ({peak:.1} G a second, {})",
        secs * 1e6 / calls / s.samples as f64,
        100.0 * rate / peak,
        k.name()
    );
}
