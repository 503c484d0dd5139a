//! The paper's CNN and the MLP under the simulator: every algorithm runs on them, runs are
//! determined by config and seed, and resume exactly.

use crate::comm::Record;
use crate::run;
use lena_sim::{ExperimentConfig, Simulation};

fn cnn_slice(algo: &str, iterations: u64, extra: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/mnist-mini");
    format!(
        "[data]\nsplit = \"one_label\"\nnodes = 10\nbatch = 8\n[data.source]\nkind = \"mnist\"\n\
         dir = {dir:?}\n[model]\nobjective = \"cnn\"\nlambda = 0.0\n[algorithm]\n{algo}\n\
         [run]\niterations = {iterations}\neval_every = {iterations}\nseed = 2\nwall_clock = false\n{extra}"
    )
}

#[test]
fn every_algorithm_runs_on_the_cnn_and_the_mlp() {
    for objective in [
        "objective = \"cnn\"",
        "objective = \"mlp\"\nhidden = [32, 16]\ndropout = 0.5",
    ] {
        for algo in [
            "name = \"dgd\"",
            "name = \"lena\"",
            "name = \"lag_wk\"",
            "name = \"lag_ps\"",
            "name = \"lasg_wk2\"",
            "name = \"laq\"",
            "name = \"sasg\"",
            "name = \"diana\"",
            "name = \"ef_sgd\"",
            "name = \"lena\"\n[algorithm.compressor]\nkind = \"top_k\"\nk = 2000",
        ] {
            let algo = algo.replacen('\n', "\nstep_size = 0.05\n", 1);
            let algo = if algo.contains("step_size") {
                algo
            } else {
                algo + "\nstep_size = 0.05"
            };
            let text = cnn_slice(&algo, 4, "").replace("objective = \"cnn\"", objective);
            let rows = run(&text).unwrap_or_else(|e| panic!("{objective} {algo}: {e}"));
            let last = rows.last().unwrap();
            assert_eq!(last.iteration, 4, "{algo}");
            assert!(
                last.train_loss.is_finite() && last.uploads > 0,
                "{objective} {algo}: {last:?}"
            );
        }
    }
}

/// The MLP learns non-IID MNIST with distributed SGD, its dropout-free default gives
/// thread-independent runs, and `model.hidden` is refused for models without hidden layers.
#[test]
fn the_mlp_learns_and_its_hidden_sizes_are_checked() {
    let text = cnn_slice("name = \"dgd\"\nstep_size = 0.2", 150, "")
        .replace("objective = \"cnn\"", "objective = \"mlp\"\nhidden = [64]");
    let rows = run(&text).unwrap();
    let last = rows.last().unwrap();
    assert!(last.test_accuracy > 0.75, "{rows:?}");
    let threads = |t: usize| {
        let t = text
            .replace("iterations = 150", "iterations = 10")
            .replace("seed = 2", &format!("seed = 2\nthreads = {t}"));
        run(&t).unwrap()
    };
    assert_eq!(threads(1), threads(2));
    let e = run(&cnn_slice("name = \"dgd\"\nstep_size = 0.2", 4, "")
        .replace("objective = \"cnn\"", "objective = \"cnn\"\nhidden = [64]"))
    .unwrap_err()
    .to_string();
    assert!(e.contains("model.hidden") && e.contains("mlp"), "{e}");
}

#[test]
fn cnn_runs_do_not_depend_on_threads_and_resume_exactly() {
    let text = cnn_slice(
        "name = \"lena\"\nstep_size = 0.05",
        12,
        "checkpoint_every = 5",
    );
    let rows = |threads: usize| {
        let t = text.replace("seed = 2", &format!("seed = 2\nthreads = {threads}"));
        let mut sim = Simulation::new(ExperimentConfig::from_toml(&t, "t").unwrap()).unwrap();
        let mut rec = Record::default();
        sim.run(&mut rec).unwrap();
        (rec.rows, sim.params().to_vec())
    };
    let one = rows(1);
    assert_eq!(one, rows(2), "the thread count changed a CNN run");
    // Stop at round 7, resume from the checkpoint: the same rows and parameters.
    let cfg = ExperimentConfig::from_toml(&text, "t").unwrap();
    let mut first = Simulation::new(cfg.clone()).unwrap();
    let mut rec = Record {
        stop_at: Some(7),
        ..Record::default()
    };
    assert!(first.run(&mut rec).is_err());
    let (round, state) = rec.checkpoints.last().unwrap().clone();
    assert_eq!(round, 7);
    let mut resumed = Simulation::new(cfg).unwrap();
    resumed.load_state(&state).unwrap();
    let mut rest = Record::default();
    resumed.run(&mut rest).unwrap();
    let mut all = rec.rows;
    all.extend(rest.rows);
    assert_eq!(all, one.0);
    assert_eq!(resumed.params(), &one.1[..]);
}

#[test]
fn distributed_sgd_on_the_cnn_learns_non_iid_mnist() {
    // One label per node, minibatch 8 per node, dropout on: test accuracy far above chance.
    let text = cnn_slice("name = \"dgd\"\nstep_size = 0.1", 150, "");
    let rows = run(&text).unwrap();
    let last = rows.last().unwrap();
    eprintln!("{last:?}");
    assert!(last.test_accuracy > 0.75, "{rows:?}");
    assert!(last.train_loss < 0.5 * rows[0].train_loss, "{rows:?}");
}

#[test]
fn smoothness_rules_are_refused_for_networks() {
    let text = cnn_slice("name = \"dgd\"\nstep_size = \"1/L\"", 4, "");
    let e = run(&text).unwrap_err().to_string();
    assert!(
        e.contains("step_size") && e.contains("give a number"),
        "{e}"
    );
    let text = cnn_slice("name = \"dgd\"\nstep_size = 0.1", 4, "")
        .replace("lambda = 0.0", "lambda = 0.0\ndropout = 1.5");
    let e = run(&text).unwrap_err().to_string();
    assert!(e.contains("model.dropout"), "{e}");
}
