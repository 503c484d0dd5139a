//! LENA-m's node scan as its round runs it, against the state-touch bound: on two threads,
//! every one of M = 200 nodes' `Kernels::ef_scan_linear` with the gradient formed from three
//! rows of MNIST's shape (d = 7850), over the node's own memory, momentum and drift q, as
//! LENA's worker runs it after a skip: the memory owes q (`Memory::Owing`: q taken off as it is
//! read), q is the update applied (the scan's v), and `t = e + alpha g` is written over the
//! memory.
//!
//! `cargo run --release -p lena-benches --example scan_profile` interleaves, fifteen times,
//! 100 passes each of: the 200 nodes' scans with the scan's requests ahead off and on
//! (`Kernels::with_scan_requests_ahead`), the same scans over one node's state again and again
//! (in cache: the scan's arithmetic alone, off and on), and the bound (`touch_state_once`, two
//! threads); it prints each one's fastest pass and the median over repetitions of its ratio to
//! the bound's pass of the same repetition. Where the out-of-cache scan with requests off is
//! near the sum of the arithmetic and the bound, the state's loads and the arithmetic do not
//! overlap; the requests are what can make them. Its last line says whether this CPU's default
//! (`Kernels::scan_requests_ahead`) is the faster.

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_benches::{ScanNode, bound_state_for, touch_state_once, varied};
use lena_kernels::{Ema, Kernels, LinearGradient, Memory};
use std::hint::black_box;
use std::time::Instant;

/// A linear model's minibatch gradient in factored form (its parts owned).
struct Gradient {
    w: Vec<f32>,
    rows: Vec<Vec<f32>>,
    coef: Vec<f32>,
    bias: Vec<f32>,
}

/// Every node's scan in `nodes` (or node 0's, `nodes.len()` times, with `in_cache`).
fn scan_all(k: Kernels, nodes: &mut [ScanNode], g: &Gradient, in_cache: bool) {
    let rows: Vec<&[f32]> = g.rows.iter().map(|r| &r[..]).collect();
    let lg = LinearGradient {
        lambda: 1e-4,
        w: &g.w,
        rows: &rows,
        coef: &g.coef,
        bias: &g.bias,
    };
    let mut acc = 0.0f32;
    for i in 0..nodes.len() {
        let node = &mut nodes[if in_cache { 0 } else { i }];
        let mom = Ema {
            x: &mut node.mom,
            a: 0.05,
            b: 0.9,
        };
        let memory = Memory::Owing(&mut node.u);
        let norms = k.ef_scan_linear(memory, 0.05, &lg, &node.q, Some(mom), None);
        acc += norms.innovation_sq;
    }
    black_box(acc);
}

fn main() {
    let k = Kernels::detect();
    let (d, p, nodes) = (7850, 784, 200);
    let g = Gradient {
        w: varied(d, 1e-3),
        rows: (1..=3).map(|r| varied(p, 1e-2 * r as f32)).collect(),
        coef: varied(30, 0.1),
        bias: varied(10, 0.1),
    };
    let mut halves: [Vec<ScanNode>; 2] =
        [(); 2].map(|()| (0..nodes / 2).map(|_| ScanNode::new(d)).collect());
    let mut state = bound_state_for(nodes);
    let names = [
        "200 nodes, requests off",
        "200 nodes, requests on",
        "in cache, requests off",
        "in cache, requests on",
        "bound",
    ];
    let (reps, passes) = (15, 100);
    let mut times = vec![Vec::new(); names.len()];
    for _ in 0..reps {
        for (case, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..passes {
                if case == 4 {
                    black_box(touch_state_once(k, &mut state, 2));
                    continue;
                }
                let k = k.with_scan_requests_ahead(case % 2 == 1);
                let in_cache = case >= 2;
                let [h0, h1] = &mut halves;
                rayon::join(
                    || scan_all(k, h0, &g, in_cache),
                    || scan_all(k, h1, &g, in_cache),
                );
            }
            t.push(start.elapsed().as_secs_f64() * 1e3 / passes as f64);
        }
    }
    println!(
        "LENA-m's node scan, M = {nodes}, d = {d}, gradient formed from 3 rows, 2 threads, {}; \
         ms a pass, {reps} repetitions interleaved",
        k.name()
    );
    let mut rows = serde_json::Map::new();
    for (name, t) in names.iter().zip(&times) {
        let mut ratios: Vec<f64> = t.iter().zip(&times[4]).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
        let median = ratios[reps / 2];
        println!("{name:<26} fastest {fastest:.3} ms, median of ratios to the bound {median:.2}");
        rows.insert(
            (*name).to_string(),
            serde_json::json!({ "fastest_ms": fastest, "median_ratio": median }),
        );
    }
    // The 200 nodes' scan with the requests the other way than this CPU's default, over its
    // time with the default, repetition by repetition.
    let on = k.scan_requests_ahead();
    let mut toggled: Vec<f64> = times[0]
        .iter()
        .zip(&times[1])
        .map(|(off, with)| if on { off / with } else { with / off })
        .collect();
    toggled.sort_by(f64::total_cmp);
    let toggled = toggled[reps / 2];
    println!(
        "the scan's requests ahead are {} on this CPU by default; the other way, the 200 \
         nodes' scan takes {toggled:.3} of the default's time (median of repetitions)",
        if on { "on" } else { "off" }
    );
    lena_benches::report(
        "scan_profile",
        serde_json::json!({
            "simd": k.name(),
            "scan_requests_ahead": on,
            "requests_toggled_over_default": toggled,
            "rows": rows
        }),
    );
}
