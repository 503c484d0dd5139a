//! The paper's two convolutions through `Kernels::conv_valid` alone, at the evaluation's block
//! of 6 samples: time per sample and its share of this core's FMA peak. The clock drifts within
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
    const CALLS: usize = 50;
    let k = Kernels::detect();
    let layer = |cin, cout, h| ConvShape {
        cin,
        cout,
        k: 5,
        h,
        w: h,
        samples: 6,
    };
    for (name, s) in [("first", layer(1, 10, 28)), ("second", layer(10, 20, 12))] {
        let x: Vec<f32> = (0..s.input_len())
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0)
            .collect();
        let wt: Vec<f32> = (0..s.cout * s.kk())
            .map(|i| (i * 104_729 % 997) as f32 / 997.0 - 0.5)
            .collect();
        let bias = vec![0.1f32; s.cout];
        let mut y = vec![0.0f32; s.output_len()];
        let (mut secs, mut peak) = (0.0, 0.0);
        for _ in 0..slices {
            peak += lena_benches::fma_rate(20_000).0;
            let t = std::time::Instant::now();
            for _ in 0..CALLS {
                k.conv_valid(s, std::hint::black_box(&x), &wt, &bias, &mut y);
            }
            secs += t.elapsed().as_secs_f64();
        }
        let calls = (slices * CALLS) as f64;
        let macs = (s.cout * s.kk() * s.ho() * s.wo() * s.samples) as f64 * calls;
        let peak = peak / slices as f64;
        println!(
            "{name} layer ({} -> {} channels, {}x{} outputs): {:.2} us a sample, {:.1} G multiply-adds a second, {:.0}% of the FMA peak ({peak:.1} G a second, {})",
            s.cin,
            s.cout,
            s.ho(),
            s.wo(),
            secs * 1e6 / calls / s.samples as f64,
            macs / secs / 1e9,
            100.0 * macs / secs / 1e9 / peak,
            k.name()
        );
    }
}
