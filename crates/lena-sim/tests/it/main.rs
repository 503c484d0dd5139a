//! End-to-end tests of the simulator on synthetic data and fixtures.

use lena_sim::{DataCache, Error, ExperimentConfig, MetricsRow, Observer, Simulation};

struct Collect(Vec<MetricsRow>);
impl Observer for Collect {
    fn on_eval(&mut self, row: &MetricsRow) -> lena_sim::Result<()> {
        self.0.push(row.clone());
        Ok(())
    }
}

fn synthetic(extra_run: &str, algo: &str, data: &str) -> String {
    format!(
        r#"
[data]
split = "one_label"
nodes = 10
{data}
[data.source]
kind = "synthetic"
samples = 2000
test_samples = 500
features = 20
classes = 10
separation = 4.0
[model]
objective = "logistic_ova"
lambda = 0.001
[algorithm]
name = "dgd"
{algo}
[run]
iterations = 60
eval_every = 20
seed = 3
{extra_run}
"#
    )
}

fn run(text: &str) -> lena_sim::Result<Vec<MetricsRow>> {
    let cfg = ExperimentConfig::from_toml(text, "test.toml")?;
    let mut sim = Simulation::new(cfg)?;
    let mut obs = Collect(Vec::new());
    sim.run(&mut obs)?;
    Ok(obs.0)
}

fn strip_time(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    rows.iter()
        .map(|r| MetricsRow {
            wall_seconds: 0.0,
            comm_seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

#[test]
fn dgd_learns_synthetic_one_label_split() {
    let rows = run(&synthetic("", "step_size = \"1/L\"", "")).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        vec![0, 20, 40, 60]
    );
    assert!(rows[3].train_loss < 0.5 * rows[0].train_loss, "{rows:?}");
    assert!(rows[3].test_accuracy > 0.9, "{rows:?}");
    // Every node uploads a dense 10 x 21 gradient every round.
    assert_eq!(rows[3].uploads, 60 * 10);
    assert_eq!(rows[3].bits, 60 * 10 * 32 * 210);
}

#[test]
fn same_seed_same_metrics_whatever_the_thread_count() {
    let one = run(&synthetic("threads = 1", "step_size = 0.5", "batch = 8")).unwrap();
    let two = run(&synthetic("threads = 2", "step_size = 0.5", "batch = 8")).unwrap();
    let again = run(&synthetic("threads = 2", "step_size = 0.5", "batch = 8")).unwrap();
    assert_eq!(strip_time(&one), strip_time(&two));
    assert_eq!(strip_time(&two), strip_time(&again));
    let other = run(&synthetic(
        "threads = 2\nseed = 4",
        "step_size = 0.5",
        "batch = 8",
    ));
    // (seed is set twice above: TOML rejects the duplicate key, naming the line.)
    assert!(
        other.unwrap_err().to_string().contains("test.toml:"),
        "duplicate key must be named"
    );
}

/// Simulations built from one `DataCache` (a sweep's runs) give exactly the runs that load their
/// own data: seeded synthetic data per seed (another seed is other data, not the cached one),
/// and the training set cut (`max_train`) or split (`validation`) per run from the shared one.
#[test]
fn runs_sharing_loaded_data_equal_runs_loading_their_own() {
    let cache = DataCache::new();
    let shared = |text: &str| {
        let cfg = ExperimentConfig::from_toml(text, "test.toml").unwrap();
        let mut sim = Simulation::with_data(cfg, &cache).unwrap();
        let mut obs = Collect(Vec::new());
        sim.run(&mut obs).unwrap();
        strip_time(&obs.0)
    };
    let base = synthetic("wall_clock = false", "step_size = 0.5", "batch = 4");
    let texts = [
        base.clone(),
        base.replace("seed = 3", "seed = 9"),
        base.replace("batch = 4", "batch = 4\nmax_train = 700"),
        base.replace("batch = 4", "batch = 4\nvalidation = 0.1"),
        base.clone(),
    ];
    for text in &texts {
        assert_eq!(shared(text), strip_time(&run(text).unwrap()), "{text}");
    }
    assert_ne!(
        shared(&texts[0]),
        shared(&texts[1]),
        "seeds 3 and 9: other data"
    );
    // Runs built while the others live share their nodes' rows: still the same runs.
    let alive = [
        base.clone(),
        base.replace("name = \"dgd\"", "name = \"lena\""),
        base.replace("split = \"one_label\"", "split = \"iid\""),
        base.clone(),
    ];
    let mut sims: Vec<Simulation> = alive
        .iter()
        .map(|t| {
            let cfg = ExperimentConfig::from_toml(t, "test.toml").unwrap();
            Simulation::with_data(cfg, &cache).unwrap()
        })
        .collect();
    for (sim, text) in sims.iter_mut().zip(&alive) {
        let mut obs = Collect(Vec::new());
        sim.run(&mut obs).unwrap();
        assert_eq!(
            strip_time(&obs.0),
            strip_time(&run(text).unwrap()),
            "{text}"
        );
    }
}

#[test]
fn different_seed_changes_minibatch_runs() {
    let a = run(&synthetic("", "step_size = 0.5", "batch = 4")).unwrap();
    let b = run(&synthetic("", "step_size = 0.5", "batch = 4").replace("seed = 3", "seed = 9"))
        .unwrap();
    assert_ne!(strip_time(&a), strip_time(&b));
}

#[test]
fn diverging_step_size_is_an_error_naming_the_iteration() {
    let e = run(&synthetic("", "step_size = 5000.0", "")).unwrap_err();
    match &e {
        Error::Diverged {
            iteration,
            step_size,
            ..
        } => {
            assert!(*iteration > 0 && *iteration <= 60);
            assert_eq!(*step_size, 5000.0);
        }
        other => panic!("expected divergence, got {other}"),
    }
    assert!(
        e.to_string().contains("step size 5000 is likely too large"),
        "{e}"
    );
}

#[test]
fn more_nodes_than_samples_is_an_error() {
    let text = synthetic("", "step_size = 0.1", "").replace("samples = 2000", "samples = 20");
    let text = text
        .replace("nodes = 10", "nodes = 30")
        .replace("one_label", "iid");
    let e = run(&text).unwrap_err().to_string();
    assert_eq!(
        e,
        "cannot split 20 samples among 30 nodes: every node needs at least one sample"
    );
}

#[test]
fn config_errors_name_file_line_and_field() {
    let cases = [
        (
            synthetic("", "step_size = 0.1", "").replace("\"dgd\"", "\"lenaa\""),
            "test.toml:17",
            "one of: dgd",
        ),
        (
            synthetic("iterationz = 5", "step_size = 0.1", ""),
            "test.toml:23",
            "iterationz",
        ),
        (
            synthetic("", "step_size = 0.1", "").replace("nodes = 10", "nodes = -1"),
            "test.toml:4",
            "nodes",
        ),
        (
            synthetic("", "step_size = 0.1", "").replace("one_label", "roundrobin"),
            "data.split",
            "iid, one_label",
        ),
        (
            synthetic("", "step_size = -0.1", ""),
            "algorithm.step_size",
            "> 0, got -0.1",
        ),
        (
            synthetic("", "step_size = \"fast\"", ""),
            "algorithm.step_size",
            "\"c/L\"",
        ),
        (
            synthetic("eval_every = 0", "step_size = 0.1", "").replace("eval_every = 20\n", ""),
            "run.eval_every",
            ">= 1",
        ),
    ];
    for (text, at, what) in cases {
        let e = match ExperimentConfig::from_toml(&text, "test.toml") {
            Err(e) => e.to_string(),
            Ok(cfg) => match Simulation::new(cfg) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted a bad config ({at})"),
            },
        };
        assert!(
            e.contains(at) && e.contains(what),
            "expected {at:?} and {what:?} in: {e}"
        );
    }
}

#[test]
fn libsvm_train_and_test_with_mismatched_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tr.svm"),
        "1 1:1 2:0.5\n-1 2:1\n1 1:0.3\n-1 1:-1 2:2\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("te.svm"), "1 1:1 5:0.5\n").unwrap();
    let text = format!(
        "[data]\nsplit = \"iid\"\nnodes = 2\n[data.source]\nkind = \"libsvm\"\ntrain = {:?}\ntest = {:?}\n\
         [algorithm]\nname = \"dgd\"\nstep_size = 0.1\n",
        dir.path().join("tr.svm"),
        dir.path().join("te.svm")
    );
    let e = run(&text).unwrap_err().to_string();
    assert!(
        e.contains("te.svm:1: index 5 exceeds n_features = 2"),
        "{e}"
    );
    // And a consistent pair runs.
    std::fs::write(dir.path().join("te.svm"), "1 1:1 2:0.5\n-1 1:-1\n").unwrap();
    let rows = run(&text).unwrap();
    assert!(rows.last().unwrap().test_accuracy >= 0.5);
}

#[test]
fn dgd_on_iid_equal_nodes_is_centralised_gradient_descent() {
    use lena_model::{Linear, LinearKind, Rows};
    let text = synthetic("", "step_size = 0.3", "")
        .replace("one_label", "iid")
        .replace("iterations = 60", "iterations = 5");
    let cfg = ExperimentConfig::from_toml(&text, "t").unwrap();
    let mut sim = Simulation::new(cfg).unwrap();
    assert!(sim.node_sizes().iter().all(|&n| n == 200));
    // Centralised GD on the mean of the node objectives (equal sizes: the full data objective).
    let data = lena_data::synthetic::classification(
        2500,
        20,
        10,
        4.0,
        lena_sim::streams::derive(3, lena_sim::streams::Purpose::Split, u64::MAX),
    )
    .head(2000);
    let m = Linear::new(LinearKind::LogisticOva, 20, 10, 1e-3).unwrap();
    let mut ws = m.workspace(0);
    let mut w = vec![0.0f32; m.dim()];
    let mut g = vec![0.0f32; m.dim()];
    for _ in 0..5 {
        sim.step().unwrap();
        m.loss_grad(&data, Rows::All, &w, &mut g, &mut ws);
        for (wi, gi) in w.iter_mut().zip(&g) {
            *wi -= 0.3 * gi;
        }
    }
    let max_diff = sim
        .params()
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = w.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(
        max_diff <= 1e-4 * scale,
        "distributed {max_diff} away from centralised (scale {scale})"
    );
}

/// The pinned, fast version of "full-batch DGD on MNIST, one label per node, M = 10": the first
/// 2000 training and 500 test images of the real MNIST files (tests/data/mnist-mini).
#[test]
fn dgd_on_mnist_slice_one_label_per_node() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/mnist-mini");
    let text = format!(
        "[data]\nsplit = \"one_label\"\nnodes = 10\n[data.source]\nkind = \"mnist\"\ndir = {dir:?}\n\
         [algorithm]\nname = \"dgd\"\nstep_size = \"1/L\"\n[run]\niterations = 150\neval_every = 50\nseed = 1\n"
    );
    let rows = run(&text).unwrap();
    let last = rows.last().unwrap();
    eprintln!("{rows:?}");
    assert_eq!(last.iteration, 150);
    assert!(last.train_loss < 0.35 * rows[0].train_loss, "{rows:?}");
    assert!(last.test_accuracy >= 0.80, "{rows:?}");
    assert_eq!(last.bits, 150 * 10 * 32 * 7850);
}

fn params_after(text: &str, rounds: u64) -> Vec<f32> {
    let mut sim = Simulation::new(ExperimentConfig::from_toml(text, "t").unwrap()).unwrap();
    for _ in 0..rounds {
        sim.step().unwrap();
    }
    sim.params().to_vec()
}

#[test]
fn lena_with_zero_beta_is_dgd_bit_for_bit() {
    for data in ["", "batch = 5"] {
        let dgd = params_after(&synthetic("", "step_size = 0.3", data), 25);
        for drift in [
            "kind = \"zero\"",
            "kind = \"last_upload\"",
            "kind = \"momentum\"\ngamma = 0.2",
            "kind = \"average\"",
            "kind = \"last_gradient\"",
        ] {
            let algo = format!("step_size = 0.3\nbeta = 0.0\n[algorithm.drift]\n{drift}");
            let text = synthetic("", &algo, data).replace("name = \"dgd\"", "name = \"lena\"");
            let lena = params_after(&text, 25);
            assert!(
                dgd.iter()
                    .zip(&lena)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "LENA (beta = 0, drift {drift}, {data:?}) differs from DGD"
            );
        }
    }
}

fn mnist_slice(algo: &str, iterations: u64) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/mnist-mini");
    format!(
        "[data]\nsplit = \"one_label\"\nnodes = 10\n[data.source]\nkind = \"mnist\"\ndir = {dir:?}\n\
         [algorithm]\n{algo}\n[run]\niterations = {iterations}\neval_every = 100\nseed = 1\n"
    )
}

/// Full batch on the MNIST slice: LENA's loss tracks DGD's with far fewer uploads, and its
/// upload rate falls over time (paper figure 1).
#[test]
fn lena_tracks_dgd_with_fewer_uploads_on_mnist_slice() {
    let dgd = run(&mnist_slice("name = \"dgd\"\nstep_size = 0.05", 400)).unwrap();
    let lena = run(&mnist_slice("name = \"lena\"\nstep_size = 0.05", 400)).unwrap();
    let (d, l) = (dgd.last().unwrap(), lena.last().unwrap());
    eprintln!("DGD {d:?}\nLENA {l:?}");
    // Stated tolerance: within 3% of DGD's loss (measured: 1.4% with 15x fewer uploads).
    assert!(
        l.train_loss <= d.train_loss * 1.03,
        "LENA loss {} vs DGD {}",
        l.train_loss,
        d.train_loss
    );
    assert!(
        l.uploads * 3 <= d.uploads,
        "LENA uploads {} vs DGD {}",
        l.uploads,
        d.uploads
    );
    // Upload frequency per 100-round window falls: first window vs last.
    let per_window: Vec<u64> = lena
        .windows(2)
        .map(|w| w[1].uploads - w[0].uploads)
        .collect();
    eprintln!("LENA uploads per 100 rounds: {per_window:?}");
    assert!(per_window[3] < per_window[0], "{per_window:?}");
    // LAG-WK too reaches DGD's loss with fewer uploads (stated tolerance 1%).
    let lag = run(&mnist_slice("name = \"lag_wk\"\nstep_size = 0.05", 400)).unwrap();
    let g = lag.last().unwrap();
    eprintln!("LAG {g:?}");
    assert!(
        g.train_loss <= d.train_loss * 1.01,
        "LAG loss {} vs DGD {}",
        g.train_loss,
        d.train_loss
    );
    assert!(
        g.uploads < d.uploads,
        "LAG uploads {} vs DGD {}",
        g.uploads,
        d.uploads
    );
}

mod checkpoint;
mod cnn;
mod comm;
mod exchange;
mod experiments;

/// `run.until` ends a run at the first evaluation where its condition holds: the rows are the
/// uninterrupted run's up to there, and the summary says where.
#[test]
fn a_run_ends_where_its_stop_condition_first_holds() {
    let base = synthetic("wall_clock = false", "step_size = 0.5", "");
    let whole = strip_time(&run(&base).unwrap());
    let target = whole[1].test_accuracy;
    assert!(target > whole[0].test_accuracy, "{whole:?}");
    let first = whole
        .iter()
        .position(|r| r.test_accuracy >= target)
        .unwrap();
    let text = base.replace(
        "seed = 3",
        &format!("seed = 3\nuntil = \"test_accuracy >= {target}\""),
    );
    let cfg = ExperimentConfig::from_toml(&text, "t.toml").unwrap();
    let mut sim = Simulation::new(cfg).unwrap();
    let mut obs = Collect(Vec::new());
    let summary = sim.run(&mut obs).unwrap();
    assert_eq!(strip_time(&obs.0), whole[..=first].to_vec());
    assert_eq!(summary.until, Some(whole[first].iteration));
    assert_eq!(sim.round(), whole[first].iteration);
    // Met before any round, or never.
    for (cond, rows, until) in [
        ("iteration>=0", 1, Some(0)),
        ("train_loss<=-1", whole.len(), None),
    ] {
        let cfg = ExperimentConfig::from_toml(
            &base.replace("seed = 3", &format!("seed = 3\nuntil = \"{cond}\"")),
            "t.toml",
        )
        .unwrap();
        let mut sim = Simulation::new(cfg).unwrap();
        let mut obs = Collect(Vec::new());
        assert_eq!(sim.run(&mut obs).unwrap().until, until, "{cond}");
        assert_eq!(obs.0.len(), rows, "{cond}");
    }
    // A condition that does not parse is an error naming the field and the columns.
    let e = ExperimentConfig::from_toml(
        &base.replace("seed = 3", "seed = 3\nuntil = \"accuracy>=0.9\""),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("run.until = \"accuracy>=0.9\": no metrics column \"accuracy\"")
            && e.contains("test_accuracy"),
        "{e}"
    );
}

/// `data.validation` holds samples out of the training data before the nodes' split and
/// reports loss and accuracy on them (that the held-out samples depend only on the data is
/// `hold_out`'s test in lena-data).
#[test]
fn a_validation_split_is_held_out_and_evaluated() {
    let base = synthetic("wall_clock = false", "step_size = 0.5", "validation = 0.1");
    let sizes = |text: &str| {
        let sim = Simulation::new(ExperimentConfig::from_toml(text, "t.toml").unwrap()).unwrap();
        sim.node_sizes().iter().sum::<usize>()
    };
    // 2000 samples in 10 classes: a tenth of each class held out.
    let kept = sizes(&base);
    assert!((1790..=1810).contains(&kept), "{kept}");
    let rows = run(&base).unwrap();
    assert!(
        rows.iter()
            .all(|r| r.val_accuracy.is_some() && r.val_loss.is_some())
    );
    let last = rows.last().unwrap();
    assert!(last.val_accuracy.unwrap() > 0.5, "{last:?}");
    assert!(last.val_loss.unwrap() < rows[0].val_loss.unwrap());
    // Without a validation share the columns are absent.
    let plain = run(&synthetic("wall_clock = false", "step_size = 0.5", "")).unwrap();
    assert!(plain.iter().all(|r| r.val_accuracy.is_none()));
    // A condition on validation columns needs a validation set.
    let e = ExperimentConfig::from_toml(
        &synthetic("until = \"val_accuracy>=0.9\"", "step_size = 0.5", ""),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.validation > 0"), "{e}");
}

/// `run.check_every` checks the stop condition between evaluations from the one column it
/// names: the run ends at the round an every-round evaluation would end it, with the same
/// row, and writes the scheduled rows before it.
#[test]
fn a_stop_condition_checked_between_evaluations_ends_at_the_exact_round() {
    for column in ["val_accuracy", "test_accuracy", "train_loss", "bits"] {
        let every = synthetic("wall_clock = false", "step_size = 0.5", "validation = 0.1")
            .replace("eval_every = 20", "eval_every = 1");
        let whole = strip_time(&run(&every).unwrap());
        // A target first met strictly between two evaluations of a 20-round schedule.
        let value = |r: &MetricsRow| r.get(column).unwrap();
        let at_least = column != "train_loss";
        let hit = |r: &MetricsRow, t: f64| {
            if at_least {
                value(r) >= t
            } else {
                value(r) <= t
            }
        };
        let (target, first) = whole
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 20 != 0)
            .map(|(_, r)| value(r))
            .find_map(|t| {
                let first = whole.iter().position(|r| hit(r, t))?;
                (first % 20 != 0).then_some((t, first))
            })
            .unwrap_or_else(|| panic!("{column}: no target between evaluations"));
        let op = if at_least { ">=" } else { "<=" };
        let cond = format!("until = \"{column}{op}{target:e}\"");
        let sparse = synthetic(
            &format!("wall_clock = false\ncheck_every = 1\n{cond}"),
            "step_size = 0.5",
            "validation = 0.1",
        );
        let cfg = ExperimentConfig::from_toml(&sparse, "t.toml").unwrap();
        let mut sim = Simulation::new(cfg).unwrap();
        let mut obs = Collect(Vec::new());
        let summary = sim.run(&mut obs).unwrap();
        assert_eq!(summary.until, Some(first as u64), "{column}");
        let rows = strip_time(&obs.0);
        let expect: Vec<MetricsRow> = whole[..=first]
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 20 == 0 || *i == first)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(rows, expect, "{column}");
    }
    // Without a condition there is nothing to check.
    let e = ExperimentConfig::from_toml(
        &synthetic("check_every = 1", "step_size = 0.5", ""),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("run.check_every") && e.contains("run.until"),
        "{e}"
    );
}

/// The node phase sums the server's dense rows as it steps the nodes (DGD's server, LAG's and
/// Words drawn ahead, several nodes' streams a vector at a time, are the words each node would
/// draw itself: the same parameters with and without, whatever the threads, for nodes that are
/// not a multiple of a vector's lanes, nodes that go offline, straggle or lose uploads, and an
/// algorithm that draws only when it uploads (LENA with QSGD).
#[test]
fn words_drawn_ahead_are_the_nodes_own() {
    let offline = "[faults]\nleave = 0.1\nrejoin = 0.5\nstraggler = 0.2\nmax_delay = 2";
    let lossy = "[faults]\nloss = 0.2";
    let qsgd = "\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 15";
    for (algo, more, faults) in [
        ("diana", "", ""),
        ("diana", "", offline),
        ("diana", "", lossy),
        ("lena", qsgd, ""),
        ("lena", qsgd, offline),
    ] {
        for threads in [1, 3] {
            let text = synthetic(
                &format!("threads = {threads}\n{faults}"),
                &format!("step_size = 0.1{more}"),
                "batch = 8",
            )
            .replace("nodes = 10", "nodes = 60")
            .replace("name = \"dgd\"", &format!("name = \"{algo}\""));
            let params = |ahead: bool| {
                let cfg = ExperimentConfig::from_toml(&text, "test.toml").unwrap();
                let mut sim = Simulation::new(cfg).unwrap();
                sim.set_draws_ahead(ahead);
                for _ in 0..40 {
                    sim.step().unwrap();
                }
                sim.params().to_vec()
            };
            let (ahead, alone) = (params(true), params(false));
            assert!(ahead.iter().all(|x| x.is_finite()), "{algo}{more} {faults}");
            assert_eq!(
                ahead.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                alone.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{algo}{more} {faults} on {threads} threads"
            );
        }
    }
}

/// The rows the node phase sums for the server (DGD's and LAG's dense rows, LENA's reading the
/// last uploads, DIANA's level rows): the same parameters, bit for bit, as the server summing
/// them itself, whatever the threads, for nodes that are not a multiple of a chunk (8) and nodes
/// that go offline or straggle.
#[test]
fn rows_summed_by_the_node_phase_are_the_servers_sum() {
    // Faults that lose nothing: nodes offline, stragglers within the deadline.
    let offline = "[faults]\nleave = 0.1\nrejoin = 0.5\nstraggler = 0.2\nmax_delay = 2";
    let drift = |kind: &str| format!("\n[algorithm.drift]\nkind = \"{kind}\"");
    for (algo, more, faults) in [
        ("dgd", String::new(), ""),
        ("dgd", String::new(), offline),
        ("lag_wk", String::new(), ""),
        ("lena", String::new(), ""),
        ("lena", String::new(), offline),
        ("lena", drift("last_gradient"), ""),
        ("lena", drift("last_upload"), ""),
        ("diana", String::new(), ""),
        ("diana", String::new(), offline),
        (
            "diana",
            "\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 2\nbucket = 64\ncoding = \"fixed\""
                .into(),
            "",
        ),
    ] {
        for threads in [1, 3] {
            let text = synthetic(
                &format!("threads = {threads}\n{faults}"),
                &format!("step_size = 0.5{more}"),
                "batch = 8",
            )
            .replace("nodes = 10", "nodes = 30")
            .replace("name = \"dgd\"", &format!("name = \"{algo}\""));
            let params = |nodes_sum: bool| {
                let cfg = ExperimentConfig::from_toml(&text, "test.toml").unwrap();
                let mut sim = Simulation::new(cfg).unwrap();
                assert!(sim.set_nodes_sum_rows(nodes_sum) == nodes_sum, "{algo}");
                for _ in 0..40 {
                    sim.step().unwrap();
                }
                sim.params().to_vec()
            };
            let (by_nodes, by_server) = (params(true), params(false));
            assert_eq!(
                by_nodes.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                by_server.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{algo}{more} {faults} on {threads} threads"
            );
        }
    }
}
