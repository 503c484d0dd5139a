//! Latency statistics from a recorded trace (issue 4): 100 link-rate realizations over
//! 10 000 rounds at M = 500, for a LENA-like trace (5% of nodes upload in a round) and a
//! DGD-like one (every node, every round), d = 7850.
#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{Criterion, criterion_group, criterion_main};
use lena_benches as _; // The `lena` binary's allocator (`lena_benches` installs it).
use lena_net::{NetworkParams, Probabilities, Trace};
use std::hint::black_box;

fn trace(m: usize, rounds: usize, every: usize) -> Trace {
    let mut t = Trace::new(m);
    let mut row = vec![0u32; m];
    for r in 0..rounds {
        for (i, b) in row.iter_mut().enumerate() {
            *b = if (i + r) % every == 0 {
                2 * 32 * 7850
            } else {
                0
            };
        }
        t.push_round(&row).unwrap();
    }
    t
}

fn stats(c: &mut Criterion) {
    let net = NetworkParams::Wan {
        rates_mbps: lena_net::PAPER_RATES_MBPS.to_vec(),
        probabilities: Probabilities::default(),
        header_bytes: 40,
        latency_ms: 0.0,
        realizations: 100,
    }
    .check()
    .unwrap();
    let at: Vec<u64> = (1..=100).map(|i| i * 100).collect();
    let mut g = c.benchmark_group("latency_stats/100 realizations/10000 rounds/M=500");
    g.sample_size(10);
    for (name, every) in [("lena_like_5pct", 20), ("dgd_like_all", 1)] {
        let t = trace(500, 10_000, every);
        g.bench_function(name, |b| {
            b.iter(|| black_box(t.latency_stats(&net, 1, &at)))
        });
    }
    g.finish();
}

criterion_group!(benches, stats);
criterion_main!(benches);
