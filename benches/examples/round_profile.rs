//! Steps one algorithm's simulation for a while, for profilers:
//! `cargo build --release -p lena-benches --example round_profile` then
//! `perf record -g target/release/examples/round_profile lena 2000`.
//! Same setting as the `round` bench (M = 200, minibatch 3, one label per node, d = 7850).

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.

use lena_sim::{ExperimentConfig, Simulation};

fn config(algorithm: &str) -> ExperimentConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mnist = root.join("data/mnist");
    let source = if mnist.join("train-images-idx3-ubyte.gz").exists() {
        format!("kind = \"mnist\"\ndir = {:?}", mnist)
    } else {
        "kind = \"synthetic\"\nsamples = 60000\ntest_samples = 1000\nfeatures = 784\nclasses = 10"
            .into()
    };
    let text = format!(
        "[data]\nsplit = \"one_label\"\nnodes = 200\nbatch = 3\n[data.source]\n{source}\n\
         [algorithm]\nstep_size = 0.05\n{algorithm}\n[run]\nthreads = 0\nseed = 1\n"
    );
    ExperimentConfig::from_toml(&text, "bench").unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "lena".into());
    let rounds: usize = args
        .next()
        .map_or(2000, |r| r.parse().expect("rounds: a number"));
    let mut sim = Simulation::new(config(&format!("name = {name:?}"))).unwrap();
    // Ten equal slices; the fastest and the median slice say more than one mean on a shared
    // machine.
    let slice = (rounds / 10).max(1);
    let mut per: Vec<f64> = (0..10)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..slice {
                sim.step().unwrap();
            }
            start.elapsed().as_secs_f64() * 1e3 / slice as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    println!(
        "{name}: {:.3} ms per round (fastest tenth), {:.3} (median), {} rounds",
        per[0],
        per[5],
        slice * 10
    );
}
