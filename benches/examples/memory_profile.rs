//! Resident memory per node of every algorithm, in vectors of d (d = 7850: MNIST, ten classes).
//!
//! `cargo run --release -p lena-benches --example memory_profile` builds each algorithm's
//! simulation at two node counts (IID split, minibatch 1), steps it 30 rounds, and reads the
//! process's resident set: the slope between the two, `(RSS(M2) - RSS(M1)) / (M2 - M1)`, is
//! what one more node costs, free of the dataset and the per-thread scratch. Each measurement
//! runs in a child process of its own (`-- one NAME M`), so the allocator of one cannot hold
//! pages for the next. `-- one lena 60000` reports one simulation's resident set and ms per
//! round (the extreme federated split: one MNIST image per node) against the state-touch bound
//! at the same M, both stepped in turn in one child process (7.5 GB more for the bound's
//! state at M = 60 000); `-- one lena 60000 server-sums` the same with the server summing the
//! drifts itself rather than the node phase (`Simulation::set_nodes_sum_rows`).

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_sim::Simulation;
use std::process::Command;
use std::time::Instant;

/// The algorithms measured, by name and `[algorithm]` table body.
const ALGORITHMS: [(&str, &str); 14] = [
    ("dgd", "name = \"dgd\""),
    ("lena (LENA-m)", "name = \"lena\""),
    (
        "lena-v (last-upload drift)",
        "name = \"lena\"\n[algorithm.drift]\nkind = \"last_upload\"",
    ),
    (
        "lena-g (last-gradient drift)",
        "name = \"lena\"\n[algorithm.drift]\nkind = \"last_gradient\"",
    ),
    (
        "lena-avg (average drift)",
        "name = \"lena\"\n[algorithm.drift]\nkind = \"average\"",
    ),
    (
        "lena-v + QSGD",
        "name = \"lena\"\n[algorithm.drift]\nkind = \"last_upload\"\n\
         [algorithm.compressor]\nkind = \"qsgd\"\nlevels = 32\nbucket = 512",
    ),
    (
        "lena-m + top-k",
        "name = \"lena\"\n[algorithm.compressor]\nkind = \"top_k\"\nk = 100",
    ),
    ("lag_wk", "name = \"lag_wk\""),
    ("lag_ps", "name = \"lag_ps\""),
    ("lasg_wk2", "name = \"lasg_wk2\""),
    ("laq", "name = \"laq\""),
    ("sasg", "name = \"sasg\""),
    ("diana (QSGD)", "name = \"diana\""),
    (
        "ef_sgd (top-k)",
        "name = \"ef_sgd\"\n[algorithm.compressor]\nkind = \"top_k\"\nk = 100",
    ),
];

fn config(algorithm: &str, nodes: usize) -> lena_sim::ExperimentConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mnist = root.join("data/mnist");
    let source = if mnist.join("train-images-idx3-ubyte.gz").exists() {
        format!("kind = \"mnist\"\ndir = {mnist:?}")
    } else {
        "kind = \"synthetic\"\nsamples = 60000\ntest_samples = 1000\nfeatures = 784\nclasses = 10"
            .into()
    };
    let text = format!(
        "[data]\nsplit = \"iid\"\nnodes = {nodes}\nbatch = 1\n[data.source]\n{source}\n\
         [algorithm]\nstep_size = 0.05\n{algorithm}\n[run]\nthreads = 2\nseed = 1\n"
    );
    lena_sim::ExperimentConfig::from_toml(&text, "memory setting").expect("a valid setting")
}

/// Resident set of this process in bytes (Linux `/proc/self/statm`).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

/// Child: one simulation at `nodes`, its resident set after 30 rounds, and ms per round.
fn one(table: &str, nodes: usize, rounds: usize) {
    let mut sim = Simulation::new(config(table, nodes)).expect("simulation");
    for _ in 0..10 {
        sim.step().expect("round");
    }
    let start = Instant::now();
    for _ in 0..rounds {
        sim.step().expect("round");
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    println!("{} {ms:.3}", resident());
}

/// Slices of the simulation and passes of the bound, in turn, in `interleaved`.
const SLICES: usize = 8;

/// Child: the simulation at `nodes` and, in the same process, the state-touch bound at that M,
/// stepped in turn (5 rounds, one pass of the bound, `SLICES` times): prints the resident set
/// (the simulation's alone, read before the bound's state exists), the fastest slice's ms per
/// round, the fastest pass of the bound, and the median over slices of a slice's ms per round
/// over the pass right after it (the two seconds apart, so under the same load of the shared
/// machine).
fn interleaved(table: &str, nodes: usize, server_sums: bool) {
    let mut sim = Simulation::new(config(table, nodes)).expect("simulation");
    sim.set_nodes_sum_rows(!server_sums);
    for _ in 0..10 {
        sim.step().expect("round");
    }
    let rss = resident();
    let k = lena_kernels::Kernels::detect();
    let mut state = lena_benches::bound_state_for(nodes);
    let (mut best_sim, mut best_bound) = (f64::INFINITY, f64::INFINITY);
    let mut ratios = Vec::new();
    for _ in 0..SLICES {
        let start = Instant::now();
        for _ in 0..5 {
            sim.step().expect("round");
        }
        let round = start.elapsed().as_secs_f64() * 1e3 / 5.0;
        let start = Instant::now();
        std::hint::black_box(lena_benches::touch_state_once(k, &mut state, 2));
        let bound = start.elapsed().as_secs_f64() * 1e3;
        (best_sim, best_bound) = (best_sim.min(round), best_bound.min(bound));
        ratios.push(round / bound);
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[(SLICES - 1) / 2] + ratios[SLICES / 2]) / 2.0;
    println!("{rss} {best_sim:.3} {best_bound:.3} {median:.3}");
}

fn measure(table: &str, nodes: usize, rounds: usize) -> (u64, f64) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["child", table, &nodes.to_string(), &rounds.to_string()])
        .output()
        .expect("child process");
    assert!(out.status.success(), "child failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut f = text.split_whitespace();
    let rss = f.next().and_then(|s| s.parse().ok()).expect("rss");
    let ms = f.next().and_then(|s| s.parse().ok()).expect("ms");
    (rss, ms)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let vector = 4.0 * 7850.0;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["child", table, nodes, rounds] => {
            one(
                table,
                nodes.parse().expect("nodes"),
                rounds.parse().expect("rounds"),
            );
        }
        ["interleaved", table, nodes, how] => {
            interleaved(table, nodes.parse().expect("nodes"), how == "server-sums")
        }
        ["one", name, nodes] | ["one", name, nodes, _] => {
            let how = args.get(3).map_or("nodes-sum", String::as_str);
            let table = ALGORITHMS
                .iter()
                .find(|(n, _)| n.starts_with(name))
                .map_or_else(|| format!("name = {name:?}"), |(_, t)| t.to_string());
            let nodes: usize = nodes.parse().expect("nodes: a number");
            let exe = std::env::current_exe().expect("own path");
            let out = Command::new(exe)
                .args(["interleaved", &table, &nodes.to_string(), how])
                .output()
                .expect("child process");
            assert!(out.status.success(), "child failed: {out:?}");
            let text = String::from_utf8(out.stdout).expect("utf-8");
            let f: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse().expect("a number"))
                .collect();
            let (rss, ms, bound, median) = (f[0], f[1], f[2], f[3]);
            println!(
                "{name} at M = {nodes}: {:.2} GB resident, {:.0} KB ({:.2} vectors of d) per \
                 node in all, {ms:.1} ms per round; state-touch bound (4 vectors per node read, \
                 one written, 2 threads) {bound:.1} ms: {:.2}x (fastest of {SLICES} interleaved \
                 slices); median of the slices' ratios {median:.2}x",
                rss / 1e9,
                rss / nodes as f64 / 1e3,
                rss / nodes as f64 / vector,
                ms / bound
            );
            lena_benches::report(
                "memory_profile",
                serde_json::json!({
                    "algorithm": name,
                    "nodes": nodes,
                    "resident_gb": rss / 1e9,
                    "vectors_per_node": rss / nodes as f64 / vector,
                    "round_ms": ms,
                    "bound_ms": bound,
                    "fastest_ratio": ms / bound,
                    "median_ratio": median,
                }),
            );
        }
        [] => {
            let (m1, m2) = (1000, 3000);
            println!("resident bytes per node, slope between M = {m1} and M = {m2}");
            println!("{:<28} {:>10} {:>12}", "", "KB/node", "vectors of d");
            for (name, table) in ALGORITHMS {
                let (r1, _) = measure(table, m1, 5);
                let (r2, _) = measure(table, m2, 5);
                let per = (r2 as f64 - r1 as f64) / (m2 - m1) as f64;
                println!("{name:<28} {:>10.1} {:>12.2}", per / 1e3, per / vector);
            }
        }
        _ => panic!("usage: memory_profile [one NAME NODES [server-sums]]"),
    }
}
