//! One round of each algorithm at M = 200, minibatch 3, one label per node, d = 7850 (the
//! `round` bench's setting), measured so that a shared, noisy machine still gives stable ratios.
//!
//! `cargo run --release -p lena-benches --example round_profile` interleaves the algorithms
//! and the state-touch bound: ten repetitions, each stepping every simulation for a slice of
//! rounds in turn, then reports each one's fastest slice and median slice (ms per round), the
//! fastest slice's ratio to the bound's fastest on two threads, and the median over
//! repetitions of each slice's ratio to the bound of its own repetition. The simulations share
//! one pool of which this thread is one (see `Simulation::new`), as a `lena run` process's main
//! thread is of its own; the bound's two threads are the same pool's.
//! It also times QSGD's draws alone (every node's 32-bit uniform per coordinate from its own
//! stream, on two threads), DIANA's shifts alone (every node's shift read and written once,
//! on two threads) and QSGD's levels alone (every node's bucket norms and stochastic levels,
//! the encoder's loop, its vector and draws in cache, on two threads), and adds them to DGD's
//! ratio: DIANA's floor, what its round costs with a free coding, decoding and server. And it times LENA-m's node scan alone (`ef_scan` over every
//! node's memory, drift and momentum, as a skipping node runs it, on two threads) and adds it
//! to DGD's ratio: LENA-m's round with its gradient and its scan one after the other and
//! nothing else (since LENA's node forms a linear model's minibatch gradient inside its scan,
//! its round can be below this sum). And it times QSGD's whole encoder alone (`compress_shifted` of every
//! node's vector, draws copied from words drawn before, in cache) and the server's sum of its
//! messages alone (decoded two at a time into their level form and added, in cache), and adds
//! them to DGD's ratio, the draws without their copy and the shifts: DIANA's floor with its
//! codec as it is (DGD's round counts its own upload and sum, which DIANA replaces, so this is
//! not a lower bound: the parts' sum exceeds DIANA's round where they overlap).
//! And it times LENA-m's round written out by hand (`lena_m_bare`: every node skipping, the
//! same kernels and state as the simulator's, none of its machinery; see
//! `lena_benches::BareLena`), and DIANA-QSGD's likewise (`diana_bare`, `BareDiana`): against
//! `lena` and `diana_qsgd`, the framework's share of each round. `... -- bare` times LENA-m's
//! written-out round whole and with each part left out in turn (the rows drawn from memory, the
//! next node's rows requested, the scores, the scan, the server's sum; and the scan with none
//! of the rest), each part's cost a ratio to the bound, and a pass of the scan's own traffic
//! without its arithmetic (`own traffic`: three vectors read and two written a node, where the
//! bound reads four and writes one); `... -- bare-large [M]` does the same at M nodes (60 000
//! unless given; about 13 GB with the bound's state), five repetitions of two rounds;
//! `... -- bare-diana` DIANA's (the rows,
//! the requests, the scores, the gradient written, the draws, the compression, the decoding
//! and sum; and the round without its codec).
//! `... --example round_profile -- lena 3000` steps one algorithm only (for `perf record`);
//! `... -- dgd 500 30` does so with minibatches of 30 rows (figure 4's). `... -- ab dgd` times
//! one algorithm's round with the server's sum formed in the node phase and left to the
//! server, alternated (and checks that both give the same parameters); `... -- ab-draws
//! diana_qsgd` likewise with nodes' words drawn ahead, several streams together, and each
//! node drawing its own.

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_benches::{
    BareDiana, BareLena, BareParts, DianaParts, ROUND_ALGORITHMS, bound_state, bound_state_for,
    diana_shift_once, lena_scan_once, own_traffic_once, qsgd_compress_once, qsgd_decode_once,
    qsgd_levels_once, round_config, round_config_with_batch, touch_state_once,
};
use lena_compress::{Qsgd, QsgdCoding, QsgdNorm};
use lena_kernels::Kernels;
use lena_sim::Simulation;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("ab") {
        let name = args.get(1).map_or("dgd", String::as_str);
        let labels = ["nodes sum", "server sums"];
        alternate(name, labels, |sim, on| {
            sim.set_nodes_sum_rows(on);
        });
        return;
    }
    if args.first().map(String::as_str) == Some("ab-draws") {
        let name = args.get(1).map_or("diana_qsgd", String::as_str);
        alternate(
            name,
            ["drawn ahead", "node by node"],
            Simulation::set_draws_ahead,
        );
        return;
    }
    if args.first().map(String::as_str) == Some("bare-large") {
        let nodes = args.get(1).map_or(Ok(60_000), |n| n.parse());
        let nodes = nodes.expect("bare-large's node count: a number");
        let size = Size {
            nodes,
            warm: 2,
            reps: 5,
            slice: 2,
        };
        bare_parts("round_profile_bare_large", size);
        return;
    }
    if args.first().map(String::as_str) == Some("bare") {
        bare_parts("round_profile_bare", AT_200);
        return;
    }
    if args.first().map(String::as_str) == Some("bare-diana") {
        bare_diana_parts();
        return;
    }
    if let Some(name) = args.first() {
        let rounds: usize = args
            .get(1)
            .map_or(2000, |r| r.parse().expect("rounds: a number"));
        let table = ROUND_ALGORITHMS
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| format!("name = {name:?}"), |(_, t)| t.to_string());
        let batch: usize = args
            .get(2)
            .map_or(3, |b| b.parse().expect("batch: a number"));
        let mut sim = Simulation::new(round_config_with_batch(&table, batch)).unwrap();
        let start = Instant::now();
        for _ in 0..rounds {
            sim.step().unwrap();
        }
        let per = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
        println!("{name}: {per:.3} ms per round over {rounds} rounds");
        return;
    }
    let (reps, slice) = (10, 200);
    let mut sims: Vec<(&str, Simulation)> = ROUND_ALGORITHMS
        .iter()
        .map(|(name, table)| {
            let mut sim = Simulation::new(round_config(table)).unwrap();
            // Past the first rounds (LAG's warm-up, LENA's first uploads).
            for _ in 0..20 {
                sim.step().unwrap();
            }
            (*name, sim)
        })
        .collect();
    let k = Kernels::detect();
    let mut state = bound_state();
    // QSGD's draws: one 32-bit uniform per coordinate from each node's own stream, drawn as
    // the simulator draws them (eight nodes' streams at a time in a vector's lanes, each node's
    // words then copied into the compressor's chunks), for every node on the two threads (what
    // DIANA's round cannot do without, whatever its coding).
    let mut streams: Vec<[u64; 4]> = (0..200u64)
        .map(|i| [2 * i + 1, 0x9E37_79B9_7F4A_7C15 ^ i, 3, 4])
        .collect();
    let mut ahead = [Vec::new(), Vec::new()];
    // LENA-m's node scan alone: three vectors per node (the memory owing the drift, the drift,
    // the momentum), a gradient that stays in cache.
    let mut scan_state: Vec<Vec<f32>> = (0..200 * 3).map(|i| vec![i as f32 * 1e-6; 7850]).collect();
    // No zero coordinate: the momentum of one would decay into subnormals (0.9^k), whose
    // arithmetic is many times slower, and the probe would time that instead.
    let g: Vec<f32> = (0..7850).map(|i| (i % 97 + 1) as f32 * 1e-3).collect();
    // DIANA's shifts: a vector per node.
    let mut shifts: Vec<Vec<f32>> = (0..200).map(|i| vec![i as f32 * 1e-6; 7850]).collect();
    // QSGD's levels: DIANA's default compressor (s = 4, buckets of 512, L2 norm) on a vector
    // of mixed signs (levels 0 and 1, as most of a round's), with draws from a stream. The
    // loop has no branch on the values, so its cost does not depend on them.
    let qsgd = Qsgd::new(7850, 4, 512, QsgdNorm::L2, QsgdCoding::EliasGamma).unwrap();
    let x: Vec<f32> = (0..7850)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut draws = Xoshiro256PlusPlus::seed_from_u64(7);
    let uniforms: Vec<u32> = (0..7850).map(|_| draws.next_u32()).collect();
    let mut level_outs = [vec![0.0f32; 7850], vec![0.0f32; 7850]];
    // QSGD's whole encoder (norms, levels, the shift's move, the draws' copy, the packing) and
    // the server's sum of its messages (decoded two at a time, added), in cache.
    let words: Vec<u8> = uniforms.iter().flat_map(|u| u.to_le_bytes()).collect();
    let mut hs = [vec![1e-3f32; 7850], vec![1e-3f32; 7850]];
    let mut msgs = [
        lena_compress::Message::default(),
        lena_compress::Message::default(),
    ];
    qsgd_compress_once(k, &qsgd, &x, &words, &mut hs, &mut msgs, 2, 2);
    let coded = msgs.clone();
    let mut sums = [vec![0.0f32; 7850], vec![0.0f32; 7850]];
    let mut bare = BareLena::new(200);
    let mut bare_diana = BareDiana::new(200);
    for _ in 0..20 {
        black_box(bare.round(k, 2, BareParts::ALL));
        black_box(bare_diana.round(k, 2, DianaParts::ALL));
    }
    let n = sims.len() + 2;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n + 9];
    for _ in 0..reps {
        for (i, (_, sim)) in sims.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..slice {
                sim.step().unwrap();
            }
            times[i].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        }
        for threads in [1, 2] {
            let start = Instant::now();
            for _ in 0..slice {
                black_box(touch_state_once(k, &mut state, threads));
            }
            times[sims.len() + threads - 1]
                .push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        }
        let start = Instant::now();
        for _ in 0..slice {
            black_box(draw_uniforms(k, &mut streams, &mut ahead, 7850, true));
        }
        times[n].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(lena_scan_once(k, &mut scan_state, &g, 2));
        }
        times[n + 1].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(diana_shift_once(k, &mut shifts, &g, 2));
        }
        times[n + 2].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(qsgd_levels_once(
                &qsgd,
                &x,
                &uniforms,
                &mut level_outs,
                200,
                2,
            ));
        }
        times[n + 3].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(draw_uniforms(k, &mut streams, &mut ahead, 7850, false));
        }
        times[n + 4].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(qsgd_compress_once(
                k, &qsgd, &x, &words, &mut hs, &mut msgs, 200, 2,
            ));
        }
        times[n + 5].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(qsgd_decode_once(k, &qsgd, &coded, &mut sums, 200, 2));
        }
        times[n + 6].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(bare.round(k, 2, BareParts::ALL));
        }
        times[n + 7].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(bare_diana.round(k, 2, DianaParts::ALL));
        }
        times[n + 8].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
    }
    // Each slice against the 2-thread bound of its own repetition (measured within seconds of
    // it, so under about the same load of a shared machine): the median of these ratios moves
    // less between runs than fastest / fastest.
    let ratios: Vec<Vec<f64>> = times
        .iter()
        .map(|t| {
            let mut r: Vec<f64> = t.iter().zip(&times[n - 1]).map(|(a, b)| a / b).collect();
            r.sort_by(f64::total_cmp);
            r
        })
        .collect();
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let bound2 = times[n - 1][0];
    let names = sims.iter().map(|(name, _)| *name).chain([
        "bound_1_thread",
        "bound_2_threads",
        "qsgd_draws",
        "lena_m_scan",
        "diana_shifts",
        "qsgd_levels",
        "qsgd_draws_alone",
        "qsgd_compress",
        "qsgd_sum",
        "lena_m_bare",
        "diana_bare",
    ]);
    println!("ms per round, {reps} slices of {slice} rounds each, interleaved");
    println!(
        "{:<18} {:>8} {:>8} {:>14} {:>16}",
        "", "fastest", "median", "fastest/bound2", "median of ratios"
    );
    let median_ratio = |i: usize| (ratios[i][(reps - 1) / 2] + ratios[i][reps / 2]) / 2.0;
    let mut rows = serde_json::Map::new();
    for (i, (name, t)) in names.zip(&times).enumerate() {
        rows.insert(
            name.to_string(),
            serde_json::json!({
                "fastest_ms": t[0],
                "median_ms": t[reps / 2],
                "fastest_over_bound": t[0] / bound2,
                "median_ratio": median_ratio(i),
            }),
        );
        println!(
            "{name:<18} {:>8.3} {:>8.3} {:>14.2} {:>16.2}",
            t[0],
            t[reps / 2],
            t[0] / bound2,
            median_ratio(i)
        );
    }
    if let Some(dgd) = sims.iter().position(|(name, _)| *name == "dgd") {
        println!(
            "DIANA's floor (DGD's round, QSGD's draws, the shifts' read and write and QSGD's \
             levels): {:.2} of the bound (median of ratios; without the levels: {:.2}; DGD's \
             round and the draws alone: {:.2})",
            median_ratio(dgd) + median_ratio(n) + median_ratio(n + 2) + median_ratio(n + 3),
            median_ratio(dgd) + median_ratio(n) + median_ratio(n + 2),
            median_ratio(dgd) + median_ratio(n)
        );
        println!(
            "DIANA's floor with its codec (DGD's round, QSGD's draws without their copy, the \
             shifts' read and write, QSGD's whole encoder, the sum of its messages decoded): \
             {:.2} of the bound (median of ratios)",
            median_ratio(dgd)
                + median_ratio(n + 4)
                + median_ratio(n + 2)
                + median_ratio(n + 5)
                + median_ratio(n + 6),
        );
        println!(
            "DGD's round and LENA-m's node scan one after the other: {:.2} of the bound (median of \
             ratios)",
            median_ratio(dgd) + median_ratio(n + 1)
        );
    }
    println!(
        "LENA's node scan requests its state's lines ahead: {} (this CPU's default unless \
         LENA_SCAN_REQUESTS says on or off)",
        if k.scan_requests_ahead() { "on" } else { "off" }
    );
    lena_benches::report(
        "round_profile",
        serde_json::json!({
            "simd": k.name(),
            "scan_requests_ahead": k.scan_requests_ahead(),
            "reps": reps,
            "slice": slice,
            "rows": rows
        }),
    );
}

/// Every stream's uniforms for one QSGD round of `d` coordinates, drawn as the simulator draws
/// them: eight streams at a time in a vector's lanes (`Kernels::xoshiro256pp_lanes`), then, with
/// `copy`, each stream's words copied out chunk by chunk (256 coordinates a chunk, as many words
/// as the compressor takes) as a node's compressor copies them; half the streams on each of two
/// threads, each with its buffer in `ahead`.
fn draw_uniforms(
    k: Kernels,
    streams: &mut [[u64; 4]],
    ahead: &mut [Vec<u64>; 2],
    d: usize,
    copy: bool,
) -> u8 {
    let words: usize = (0..d)
        .step_by(256)
        .map(|c| (d - c).min(256).div_ceil(2))
        .sum();
    let part = |streams: &mut [[u64; 4]], ahead: &mut Vec<u64>| {
        ahead.resize(8 * words, 0);
        let mut bytes = [0u8; 4 * 256];
        let mut acc = 0u8;
        for group in streams.chunks_mut(8) {
            let ahead = &mut ahead[..group.len() * words];
            k.xoshiro256pp_lanes(group, ahead);
            if !copy {
                acc ^= ahead[ahead.len() - 1] as u8;
                continue;
            }
            for mine in ahead.chunks_exact(words) {
                let mut next = mine.iter();
                for c in (0..d).step_by(256) {
                    let m = 4 * (d - c).min(256);
                    let mut out = bytes[..m].chunks_exact_mut(8);
                    for (b, w) in (&mut out).zip(&mut next) {
                        b.copy_from_slice(&w.to_le_bytes());
                    }
                    let tail = out.into_remainder();
                    if let Some(w) = (!tail.is_empty()).then(|| next.next()).flatten() {
                        tail.copy_from_slice(&w.to_le_bytes()[..tail.len()]);
                    }
                    acc ^= bytes[m - 1];
                }
            }
        }
        acc
    };
    let (a, b) = streams.split_at_mut(streams.len() / 2);
    let [x, y] = ahead;
    let (x, y) = rayon::join(|| part(a, x), || part(b, y));
    x ^ y
}

/// `-- ab NAME`: one algorithm's round with the server's sum formed in the node phase (as
/// runs do) and left to the server; `-- ab-draws NAME`: with nodes' words drawn ahead, several
/// streams together (as runs do), and each node drawing its own. Alternated in one process, 40
/// slices of 200 rounds each; `switch` turns the first way on (true) or off.
fn alternate(name: &str, labels: [&str; 2], switch: impl Fn(&mut Simulation, bool)) {
    let table = ROUND_ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or_else(|| format!("name = {name:?}"), |(_, t)| t.to_string());
    let mut sims: Vec<Simulation> = [true, false]
        .into_iter()
        .map(|on| {
            let mut sim = Simulation::new(round_config(&table)).unwrap();
            switch(&mut sim, on);
            for _ in 0..20 {
                sim.step().unwrap();
            }
            sim
        })
        .collect();
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..40 {
        for (sim, t) in sims.iter_mut().zip(&mut times) {
            let start = Instant::now();
            for _ in 0..200 {
                sim.step().unwrap();
            }
            t.push(start.elapsed().as_secs_f64() * 1e3 / 200.0);
        }
    }
    assert_eq!(
        sims[0].params(),
        sims[1].params(),
        "the same floats either way"
    );
    for (label, t) in labels.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name} {label:<12} fastest {:.3} ms, median {:.3} ms per round",
            t[0],
            t[t.len() / 2]
        );
    }
}

/// `-- bare`: LENA-m's round written out ([`BareLena`]) whole, with each part left out in turn,
/// and as its scan with none of the rest ([`decompose`]), with what its scan's traffic implies.
fn bare_parts(example: &str, size: Size) {
    let k = Kernels::detect();
    let all = BareParts::ALL;
    let variants = [
        ("whole", all),
        (
            "rows in cache",
            BareParts {
                random_rows: false,
                ..all
            },
        ),
        (
            "no requests",
            BareParts {
                request_next: false,
                ..all
            },
        ),
        (
            "no scores",
            BareParts {
                scores: false,
                ..all
            },
        ),
        ("no scan", BareParts { scan: false, ..all }),
        ("no sum", BareParts { sum: false, ..all }),
        (
            "scan only",
            BareParts {
                random_rows: false,
                request_next: false,
                scores: false,
                scan: true,
                sum: false,
            },
        ),
    ];
    let mut bare = BareLena::new(size.nodes);
    let title = format!(
        "LENA-m's round written out (every node skipping), M = {}, {}",
        size.nodes,
        k.name()
    );
    let ratios = decompose(&title, example, &variants, 5, size, |parts| {
        black_box(bare.round(k, 2, parts));
    });
    let rest = ratios[4];
    println!(
        "Without its scan the round is {rest:.2} of the bound. The scan reads the memory, q and \
         the momentum and writes the memory and the momentum, as many lines from and to L3 as the \
         bound moves (four read, one written): at the bound's rate, the round is at least \
         {:.2} of the bound where none of the rest overlaps the scan.",
        1.0 + rest
    );
}

/// `-- bare-diana`: DIANA-QSGD's round written out ([`BareDiana`]) whole, with each part left
/// out in turn, and with its codec alone ([`decompose`]).
fn bare_diana_parts() {
    let k = Kernels::detect();
    let all = DianaParts::ALL;
    let variants = [
        ("whole", all),
        (
            "rows in cache",
            DianaParts {
                random_rows: false,
                ..all
            },
        ),
        (
            "no requests",
            DianaParts {
                request_next: false,
                ..all
            },
        ),
        (
            "no scores",
            DianaParts {
                scores: false,
                ..all
            },
        ),
        (
            "no gradient",
            DianaParts {
                gradient: false,
                ..all
            },
        ),
        (
            "no draws",
            DianaParts {
                draws: false,
                ..all
            },
        ),
        (
            "no compress",
            DianaParts {
                compress: false,
                ..all
            },
        ),
        ("no sum", DianaParts { sum: false, ..all }),
        (
            "no codec",
            DianaParts {
                draws: false,
                compress: false,
                sum: false,
                ..all
            },
        ),
    ];
    let mut bare = BareDiana::new(200);
    let title = format!("DIANA-QSGD's round written out, M = 200, {}", k.name());
    let ratios = decompose(
        &title,
        "round_profile_bare_diana",
        &variants,
        7,
        AT_200,
        |parts| {
            black_box(bare.round(k, 2, parts));
        },
    );
    println!(
        "Without its codec (draws, compression, decoding and sum) the round is {:.2} of the \
         bound; the codec's parts left out one at a time add up to {:.2}.",
        ratios[8],
        (5..=7).map(|i| ratios[0] - ratios[i]).sum::<f64>()
    );
}

/// Times `round(parts)` for each of `variants` (the first the whole round), interleaved with
/// the state-touch bound (15 repetitions of 200 rounds each); prints each variant's fastest
/// round and median ratio to the bound, and for variants `1..=parts_out` (each one part left
/// out) the part's cost: the median over repetitions of (whole - without it) / bound. Reports
/// the figures as `example`'s line; returns each variant's median ratio.
fn decompose<P: Copy>(
    title: &str,
    example: &str,
    variants: &[(&str, P)],
    parts_out: usize,
    size: Size,
    mut round: impl FnMut(P),
) -> Vec<f64> {
    let k = Kernels::detect();
    let mut state = bound_state_for(size.nodes);
    for _ in 0..size.warm {
        round(variants[0].1);
    }
    let (reps, slice) = (size.reps, size.slice);
    let mut times = vec![Vec::new(); variants.len() + 1];
    let mut traffic = Vec::new();
    for _ in 0..reps {
        for (t, (_, parts)) in times.iter_mut().zip(variants) {
            let start = Instant::now();
            for _ in 0..slice {
                round(*parts);
            }
            t.push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        }
        let start = Instant::now();
        for _ in 0..slice {
            black_box(touch_state_once(k, &mut state, 2));
        }
        times[variants.len()].push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
        let start = Instant::now();
        for _ in 0..slice {
            black_box(own_traffic_once(k, &mut state, 2));
        }
        traffic.push(start.elapsed().as_secs_f64() * 1e3 / slice as f64);
    }
    let bound = &times[variants.len()];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    let ratio = |t: &[f64]| median(t.iter().zip(bound).map(|(a, b)| a / b).collect());
    println!("{title} ({reps} repetitions of {slice} rounds, interleaved with the bound)");
    println!(
        "{:<14} {:>8} {:>16} {:>22}",
        "", "fastest", "median of ratios", "the part: (whole - it)"
    );
    let mut rows = serde_json::Map::new();
    let mut ratios = Vec::new();
    for (i, (name, _)) in variants.iter().enumerate() {
        let t = &times[i];
        let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
        let part = (1..=parts_out).contains(&i).then(|| {
            median(
                t.iter()
                    .zip(&times[0])
                    .zip(bound)
                    .map(|((a, w), b)| (w - a) / b)
                    .collect(),
            )
        });
        println!(
            "{name:<14} {fastest:>8.3} {:>16.2} {:>22}",
            ratio(t),
            part.map_or(String::new(), |p| format!("{p:.2}"))
        );
        rows.insert(
            (*name).to_string(),
            serde_json::json!({"fastest_ms": fastest, "median_ratio": ratio(t), "part": part}),
        );
        ratios.push(ratio(t));
    }
    let fastest = bound.iter().copied().fold(f64::INFINITY, f64::min);
    let traffic_fastest = traffic.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{:<14} {traffic_fastest:>8.3} {:>16.2}      (3 vectors read, 2 written a node)",
        "own traffic",
        ratio(&traffic)
    );
    println!("{:<14} {fastest:>8.3} {:>16.2}", "bound", 1.0);
    lena_benches::report(
        example,
        serde_json::json!({
            "simd": k.name(),
            "nodes": size.nodes,
            "bound_fastest_ms": fastest,
            "traffic": {"fastest_ms": traffic_fastest, "median_ratio": ratio(&traffic)},
            "rows": rows,
        }),
    );
    ratios
}

/// How [`decompose`] times: at `nodes` nodes (the bound's too), `warm` rounds first, then
/// `reps` repetitions of `slice` rounds of each variant.
#[derive(Clone, Copy)]
struct Size {
    nodes: usize,
    warm: usize,
    reps: usize,
    slice: usize,
}

/// M = 200: 20 rounds to warm, 15 repetitions of 200 rounds.
const AT_200: Size = Size {
    nodes: 200,
    warm: 20,
    reps: 15,
    slice: 200,
};
