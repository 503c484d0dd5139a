//! What LENA-m's round at M = 200 could cost if its node scan also did the work that now runs
//! beside it: a bound on the fusions that would change its floats, against the state-touch
//! bound in the same run.
//!
//! LENA-m's round is its node scan (`Kernels::ef_scan_linear`: each skipping node's memory
//! owing its drift q, q and its momentum, the gradient formed from three rows), the next
//! minibatch's scores (`dot_rows_classes`), the server's sum of the 200 drifts (`sum_rows`),
//! and the rows drawn from memory. Two of these could ride inside the scan, which reads the
//! parameters and q anyway:
//! - the next node's scores, each class's weights times the next node's three rows as the
//!   scan passes that class (its lanes then run on the scan's vector grid, not on each class
//!   row's: other floats);
//! - the sum, each node's q added into its thread's running sum as the scan reads it (the sum
//!   then in two halves, one per thread: other floats, and other than the MPI server's).
//!
//! `cargo run --release -p lena-benches --example fusion_profile` interleaves, fifteen times,
//! 100 passes each of:
//! - the library's scan over 200 nodes on two threads, alone and with the next node's scores
//!   (`dot_rows_classes`), the sum of q (`sum_rows`, eight rows at a time in node order) or
//!   both apart, as the round runs them;
//! - a copy of that scan written here, alone (it should take about as long; it forms the few
//!   vectors across a class's bias as its class's and has no tail, so it does a little less),
//!   and with the scores, the sum or both inside;
//! - each of these over one node's state again and again (in cache: the arithmetic and the
//!   core's loads and stores without the state's transfers from L3);
//! - and the bound (`touch_state_once`, two threads).
//!
//! It prints each one's fastest pass and the median over repetitions of its ratio to the bound
//! of its repetition. Where the fused scans take as long as the library's scan with the same
//! work apart, or longer, fusing gains nothing on this CPU: the parts compete for the same
//! core's loads, stores and multiply-adds.

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_benches::{ScanNode, bound_state_for, on_path, touch_state_once, varied};
use lena_kernels::{Ema, Kernels, LinearGradient, Memory};
use pulp::{Simd, WithSimd};
use std::hint::black_box;
use std::time::Instant;

const D: usize = 7850;
const P: usize = 784;
const CLASSES: usize = 10;
/// How far ahead the scan requests each state vector's lines (the library's 1024 bytes).
const AHEAD_BYTES: usize = 1024;

/// The parameters and a node's three rows (with room past the end for a vector's loads).
struct Inputs {
    w: Vec<f32>,
    rows: [Vec<f32>; 3],
    next: [Vec<f32>; 3],
    coef: Vec<f32>,
    bias: Vec<f32>,
}

/// The copy of LENA-m's scan (owing memory, momentum, three rows), with the next node's scores
/// (`SCORES`) and the sum of q (`SUM`) inside it where asked.
struct Fused<'a, const SCORES: bool, const SUM: bool> {
    x: &'a Inputs,
    node: &'a mut ScanNode,
    sum: &'a mut [f32],
    scores: &'a mut [f32; 3 * CLASSES],
    ahead: bool,
}

impl<const SCORES: bool, const SUM: bool> WithSimd for Fused<'_, SCORES, SUM> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let lanes = S::F32_LANES;
        let chunks = D / lanes;
        let us = &mut S::as_mut_simd_f32s(&mut self.node.u).0[..chunks];
        let moms = &mut S::as_mut_simd_f32s(&mut self.node.mom).0[..chunks];
        let qs = &S::as_simd_f32s(&self.node.q).0[..chunks];
        let sums = &mut S::as_mut_simd_f32s(&mut *self.sum).0[..if SUM { chunks } else { 0 }];
        let ws = &S::as_simd_f32s(&self.x.w).0[..chunks];
        let (alpha, lambda) = (simd.splat_f32s(0.05), simd.splat_f32s(1e-4));
        let (a1, b1, scale) = (
            simd.splat_f32s(0.05),
            simd.splat_f32s(0.9),
            simd.splat_f32s(0.005),
        );
        let zero = simd.splat_f32s(0.0);
        let (mut g_acc, mut d_acc, mut m_acc) = (zero, zero, zero);
        let per_line = (64 / (4 * lanes)).max(1);
        let distance = (AHEAD_BYTES / (4 * lanes)).max(1);
        let split = if self.ahead {
            chunks.saturating_sub(distance)
        } else {
            0
        };
        let load = |s: *const f32, j: usize| {
            // SAFETY: `j + lanes` lies within the row (padded by a vector past its end).
            unsafe { s.add(j).cast::<S::f32s>().read_unaligned() }
        };
        let mut i = 0;
        for class in 0..CLASSES {
            let start = class * (P + 1);
            // The vectors that start in this class (the few that cross into the next are
            // formed as this class's: the same work).
            let end = (((class + 1) * (P + 1)).div_ceil(lanes)).min(chunks);
            let c = [0, 1, 2].map(|r| simd.splat_f32s(self.x.coef[class * 3 + r]));
            let rows = [0, 1, 2].map(|r| self.x.rows[r].as_ptr());
            let next = [0, 1, 2].map(|r| self.x.next[r].as_ptr());
            let mut s = [zero; 3];
            while i < end {
                if i < split && i % per_line == 0 {
                    let j = i + distance;
                    prefetch(&us[j]);
                    prefetch(&qs[j]);
                    prefetch(&moms[j]);
                }
                let f = (i * lanes).saturating_sub(start);
                let wi = ws[i];
                let mut g = simd.mul_f32s(lambda, wi);
                for r in 0..3 {
                    g = simd.mul_add_f32s(c[r], load(rows[r], f), g);
                }
                if SCORES {
                    for r in 0..3 {
                        s[r] = simd.mul_add_f32s(wi, load(next[r], f), s[r]);
                    }
                }
                let vi = qs[i];
                let e = simd.sub_f32s(us[i], vi);
                g_acc = simd.mul_add_f32s(g, g, g_acc);
                let t = simd.mul_add_f32s(alpha, g, e);
                let d = simd.sub_f32s(t, vi);
                d_acc = simd.mul_add_f32s(d, d, d_acc);
                us[i] = t;
                let x = simd.mul_add_f32s(a1, g, simd.mul_f32s(b1, moms[i]));
                moms[i] = x;
                m_acc = simd.mul_add_f32s(x, x, m_acc);
                if SUM {
                    sums[i] = simd.add_f32s(sums[i], simd.mul_f32s(scale, vi));
                }
                i += 1;
            }
            if SCORES {
                for r in 0..3 {
                    self.scores[r * CLASSES + class] = simd.reduce_sum_f32s(s[r]);
                }
            }
        }
        simd.reduce_sum_f32s(simd.add_f32s(g_acc, simd.add_f32s(d_acc, m_acc)))
    }
}

/// One node's scan by the copy, with the scores and the sum inside where asked.
fn fused<const SCORES: bool, const SUM: bool>(
    k: Kernels,
    x: &Inputs,
    node: &mut ScanNode,
    sum: &mut [f32],
    scores: &mut [f32; 3 * CLASSES],
    ahead: bool,
) -> f32 {
    on_path(
        k,
        Fused::<SCORES, SUM> {
            x,
            node,
            sum,
            scores,
            ahead,
        },
    )
}

/// A request for `v`'s line into L1.
#[inline(always)]
fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and writes nothing; the pointer comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<3>(std::ptr::from_ref(v).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// The scans a pass runs on each thread.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    Library,
    ScoresApart,
    SumApart,
    Apart,
    Copy,
    Scores,
    Sum,
    Both,
}

/// One thread's nodes' scans (or node 0's, `nodes.len()` times, with `in_cache`).
fn scan_all(
    k: Kernels,
    case: Case,
    nodes: &mut [ScanNode],
    x: &Inputs,
    sum: &mut [f32],
    in_cache: bool,
) {
    let ahead = k.scan_requests_ahead();
    let mut acc = 0.0f32;
    let mut scores = [0.0f32; 3 * CLASSES];
    let rows = x.rows.each_ref().map(|r| &r[..P]);
    let lg = LinearGradient {
        lambda: 1e-4,
        w: &x.w,
        rows: &rows,
        coef: &x.coef,
        bias: &x.bias,
    };
    let next = x.next.each_ref().map(|r| &r[..P]);
    sum.fill(0.0);
    for i in 0..nodes.len() {
        let node = &mut nodes[if in_cache { 0 } else { i }];
        acc += match case {
            Case::Library | Case::ScoresApart | Case::SumApart | Case::Apart => {
                if matches!(case, Case::ScoresApart | Case::Apart) {
                    k.dot_rows_classes(&next, &x.w, P + 1, CLASSES, &mut scores);
                }
                let mom = Ema {
                    x: &mut node.mom,
                    a: 0.05,
                    b: 0.9,
                };
                let memory = Memory::Owing(&mut node.u);
                k.ef_scan_linear(memory, 0.05, &lg, &node.q, Some(mom), None)
                    .innovation_sq
            }
            Case::Copy => fused::<false, false>(k, x, node, sum, &mut scores, ahead),
            Case::Scores => fused::<true, false>(k, x, node, sum, &mut scores, ahead),
            Case::Sum => fused::<false, true>(k, x, node, sum, &mut scores, ahead),
            Case::Both => fused::<true, true>(k, x, node, sum, &mut scores, ahead),
        };
    }
    if matches!(case, Case::SumApart | Case::Apart) {
        // The server's sum as the simulator forms it: eight rows at a time, in node order
        // (in cache: node 0's q eight times over).
        for g in 0..nodes.len().div_ceil(8) {
            let group = &nodes[if in_cache {
                0..1
            } else {
                8 * g..(8 * g + 8).min(nodes.len())
            }];
            let mut qs: [&[f32]; 8] = [&group[0].q; 8];
            if !in_cache {
                for (r, n) in qs.iter_mut().zip(group) {
                    *r = &n.q;
                }
            }
            let qs = &qs[..if in_cache { 8 } else { group.len() }];
            k.sum_rows(sum, 0.005, qs);
        }
    }
    black_box((acc, scores));
}

fn main() {
    let k = Kernels::detect();
    let nodes = 200;
    let padded = |scale: f32| {
        let mut r = varied(P + 1, scale);
        r.resize(P + 1 + 64, 0.0);
        r
    };
    let x = Inputs {
        w: varied(D, 1e-3),
        rows: [1.0, 2.0, 3.0].map(|s| padded(1e-2 * s)),
        next: [4.0, 5.0, 6.0].map(|s| padded(1e-2 * s)),
        coef: varied(3 * CLASSES, 0.1),
        bias: varied(CLASSES, 0.1),
    };
    let mut halves: [Vec<ScanNode>; 2] =
        [(); 2].map(|()| (0..nodes / 2).map(|_| ScanNode::new(D)).collect());
    let mut sums = [vec![0.0f32; D], vec![0.0f32; D]];
    let mut state = bound_state_for(nodes);
    let cases = [
        ("library's scan", Case::Library),
        ("+ next scores apart", Case::ScoresApart),
        ("+ sum of q apart", Case::SumApart),
        ("+ both apart", Case::Apart),
        ("its copy", Case::Copy),
        ("+ next scores", Case::Scores),
        ("+ sum of q", Case::Sum),
        ("+ both", Case::Both),
    ];
    let mut names: Vec<String> = Vec::new();
    for in_cache in [false, true] {
        for (name, _) in cases {
            let place = if in_cache { "in cache" } else { "200 nodes" };
            names.push(format!("{place}, {name}"));
        }
    }
    names.push("bound".into());
    let (reps, passes) = (15, 100);
    let mut times = vec![Vec::new(); names.len()];
    for _ in 0..reps {
        for (slot, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..passes {
                if slot == 2 * cases.len() {
                    black_box(touch_state_once(k, &mut state, 2));
                    continue;
                }
                let (case, in_cache) = (cases[slot % cases.len()].1, slot >= cases.len());
                let [h0, h1] = &mut halves;
                let [s0, s1] = &mut sums;
                rayon::join(
                    || scan_all(k, case, h0, &x, s0, in_cache),
                    || scan_all(k, case, h1, &x, s1, in_cache),
                );
            }
            t.push(start.elapsed().as_secs_f64() * 1e3 / passes as f64);
        }
    }
    println!(
        "LENA-m's node scan with the work beside it fused in, M = {nodes}, d = {D}, three rows, \
         2 threads, {}; ms a pass, {reps} repetitions interleaved",
        k.name()
    );
    let bound = &times[2 * cases.len()];
    let mut rows = serde_json::Map::new();
    let mut medians = Vec::new();
    for (name, t) in names.iter().zip(&times) {
        let mut ratios: Vec<f64> = t.iter().zip(bound).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
        let median = ratios[reps / 2];
        medians.push(median);
        println!("{name:<31} fastest {fastest:.3} ms, median of ratios to the bound {median:.2}");
        rows.insert(
            name.clone(),
            serde_json::json!({ "fastest_ms": fastest, "median_ratio": median }),
        );
    }
    println!(
        "200 nodes' scans with the next scores and the sum of q: {:.2} of the bound fused in one \
         pass, {:.2} one after another (LENA-m's round adds its rows, coefficients, worker and \
         server; target 3 asks 1.5)",
        medians[7], medians[3]
    );
    lena_benches::report(
        "fusion_profile",
        serde_json::json!({ "simd": k.name(), "rows": rows }),
    );
}
