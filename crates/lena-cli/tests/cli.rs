//! The `lena` binary end to end: files written, flags over the file, errors and exit codes.

mod common;

use common::{lena, ok};

const SYNTH: &str = r#"
[data]
split = "iid"
nodes = 4
[data.source]
kind = "synthetic"
samples = 400
test_samples = 100
features = 8
classes = 3
[algorithm]
name = "dgd"
step_size = "1/L"
[run]
iterations = 30
eval_every = 10
seed = 2
"#;

#[test]
fn run_writes_its_directory_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(&["run", "exp.toml", "-q"], dir.path());
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("DGD: 30 iterations"), "{stdout}");
    let run_dir = dir.path().join("runs/exp");
    let csv = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], lena_sim::metrics::CSV_HEADER);
    assert_eq!(lines.len(), 1 + 4);
    assert!(lines[4].starts_with("30,"));
    let jsonl = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 4);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 2);
    assert_eq!(meta["algorithm"], "DGD");
    assert!(meta["simd"].as_str().unwrap().len() > 3);
    // The CPU it ran on, as `cpuid` names it (the architecture's name off x86-64).
    let cpu = meta["cpu"].as_str().unwrap();
    assert!(!cpu.is_empty());
    if cfg!(target_arch = "x86_64") {
        assert!(cpu.contains(", family "), "{cpu}");
    }
    assert!(meta["git_commit"].is_string());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["last"]["iteration"], 30);
    // The resolved config is a valid experiment file giving the same run.
    let resolved = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(lena_sim::ExperimentConfig::from_toml(&resolved, "config.toml").is_ok());

    let out = lena(
        &[
            "run", "exp.toml", "-q", "-n", "20", "--nodes", "5", "-o", "out",
        ],
        dir.path(),
    );
    ok(&out);
    let jsonl = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
    assert_eq!(last["iteration"], 20);
    assert_eq!(last["uploads"], 100); // 5 nodes x 20 rounds
}

#[test]
fn set_overrides_any_field_and_names_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "--set",
            "run.iterations=12",
            "--set",
            "algorithm.name=\"lena\"",
            "--set",
            "algorithm.beta=5",
            "--set",
            "network.kind=lan",
            "--set",
            "network.rate_mbps=2",
            "-o",
            "s",
        ],
        dir.path(),
    );
    ok(&out);
    let resolved = std::fs::read_to_string(dir.path().join("s/config.toml")).unwrap();
    assert!(
        resolved.contains("beta = 5.0") && resolved.contains("iterations = 12"),
        "{resolved}"
    );
    assert!(dir.path().join("s/latency.csv").exists());
    for (set, want) in [
        ("algorithm.betta=1", "unknown field `betta`"),
        (
            "faults.loss=2",
            "faults.loss must be a probability in [0, 1], got 2",
        ),
        ("nokey", "expected KEY=VALUE"),
    ] {
        let out = lena(&["run", "exp.toml", "-q", "--set", set], dir.path());
        assert_eq!(out.status.code(), Some(1), "{set}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{set}: expected {want:?} in {err}");
    }
}

#[test]
fn plot_draws_runs_to_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    for (name, out) in [("dgd", "a"), ("lena", "b")] {
        let o = lena(
            &["run", "exp.toml", "-q", "-a", name, "-o", out],
            dir.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = lena(
        &[
            "plot",
            "a",
            "b",
            "--x",
            "bits",
            "--y",
            "train_loss",
            "--log-x",
            "-o",
            "fig/loss",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(dir.path().join("fig/loss.svg")).unwrap();
    assert!(
        svg.contains("DGD") && svg.contains("LENA-m"),
        "legend from meta.json"
    );
    assert!(dir.path().join("fig/loss.png").exists());
    let o = lena(&["plot", "a", "--y", "nope", "-o", "x"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no column \"nope\"; columns are: iteration")
    );
}

#[test]
fn bad_input_exits_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        SYNTH.replace("\"dgd\"", "\"lag2\""),
    )
    .unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["run", "bad.toml", "-q"],
            "bad.toml:12: `name = \"lag2\"`: unknown variant `lag2`",
        ),
        (
            &["run", "missing.toml"],
            "cannot read experiment file missing.toml",
        ),
        (
            &["run", "--data-dir", "nowhere", "-q"],
            "nowhere/train-images-idx3-ubyte.gz",
        ),
        (
            &["run", "--dataset", "cifar"],
            "unknown --dataset \"cifar\", expected one of: mnist, libsvm",
        ),
        (
            &["run", "--objective", "hinge", "--data-dir", "x"],
            "`objective = \"hinge\"`: unknown variant `hinge`, expected one of `logistic_ova`",
        ),
        (
            &["run", "-a", "lenna", "--data-dir", "x"],
            "--algorithm \"lenna\": unknown algorithm, expected one of: dgd, lena",
        ),
    ];
    for (args, want) in cases {
        let out = lena(args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    }
}

#[test]
fn diverging_run_keeps_the_rows_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "--step",
            "1e6",
            "-n",
            "200",
            "--eval-every",
            "1",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("diverged at iteration") && err.contains("metrics so far are in"),
        "{err}"
    );
    let csv = std::fs::read_to_string(dir.path().join("runs/exp/metrics.csv")).unwrap();
    assert!(
        csv.lines().count() >= 2,
        "the rows before divergence are kept: {csv}"
    );
}

#[test]
fn every_algorithm_runs_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    for name in [
        "dgd", "lena", "lag_wk", "lag_ps", "lasg_wk2", "laq", "sasg", "diana", "ef_sgd",
    ] {
        let out = lena(
            &[
                "run", "exp.toml", "-q", "-a", name, "-n", "15", "-o", "a", "--force",
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = std::fs::read_to_string(dir.path().join("a/metrics.csv")).unwrap();
        assert!(
            csv.lines().last().unwrap().starts_with("15,"),
            "{name}: {csv}"
        );
    }
}

/// An interrupted run resumed from its checkpoint ends with metrics files byte for byte equal
/// to an uninterrupted run's (wall-clock time off, so that the files are deterministic).
#[test]
fn resume_continues_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let exp = SYNTH.replace("name = \"dgd\"", "name = \"lena\"")
        + "[faults]\nloss = 0.1\n[network]\nkind = \"lan\"\nrate_mbps = 1\n";
    let exp = exp.replace(
        "seed = 2",
        "seed = 2\nwall_clock = false\ncheckpoint_every = 7\niterations = 60",
    );
    let exp = exp.replace("iterations = 30\n", "");
    std::fs::write(dir.path().join("exp.toml"), &exp).unwrap();
    let out = lena(&["run", "exp.toml", "-q", "-o", "whole"], dir.path());
    ok(&out);
    // Stopped twice (as by Ctrl-C), resumed twice; the first stop is on an evaluation round,
    // whose row the resumed run must still have.
    let out = lena(
        &["run", "exp.toml", "-q", "-o", "cut", "--stop-at", "20"],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lena resume cut"));
    let out = lena(&["resume", "cut", "-q", "--stop-at", "41"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lena(&["resume", "cut", "-q"], dir.path());
    ok(&out);
    for file in [
        "metrics.csv",
        "metrics.jsonl",
        "latency.csv",
        "summary.json",
    ] {
        let a = std::fs::read(dir.path().join("whole").join(file)).unwrap();
        let b = std::fs::read(dir.path().join("cut").join(file)).unwrap();
        assert!(a == b, "{file} differs after resuming");
    }
    // No checkpoint: a clear error.
    let out = lena(&["resume", "nowhere", "-q"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nowhere is not a run directory: it has no config.toml"),
        "{err}"
    );
}

/// A sweep runs every combination, each into its own directory with the same metrics as the
/// equivalent `lena run --set`, and tune picks the cheapest setting that reaches the target.
#[test]
fn sweep_and_tune_run_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let exp = SYNTH.replace("seed = 2", "seed = 2\nwall_clock = false");
    std::fs::write(dir.path().join("exp.toml"), exp).unwrap();
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--grid",
            "algorithm.name=dgd,lena",
            "--grid",
            "algorithm.step_size=0.1,0.5",
            "--target",
            "test_accuracy=0.9",
            "-o",
            "t",
        ],
        dir.path(),
    );
    ok(&out);
    let table = std::fs::read_to_string(dir.path().join("t/sweep.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 4, "{table}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("best for test_accuracy = 0.9: algorithm.name=lena;"),
        "{stdout}"
    );
    assert!(dir.path().join("t/best.json").exists());
    // The same run alone gives the same bytes.
    let one = "algorithm.name=lena;algorithm.step_size=0.5";
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "--set",
            "algorithm.name=lena",
            "--set",
            "algorithm.step_size=0.5",
            "--set",
            "run.threads=1",
            "-o",
            "alone",
        ],
        dir.path(),
    );
    ok(&out);
    let a = std::fs::read(dir.path().join("t").join(one).join("metrics.csv")).unwrap();
    let b = std::fs::read(dir.path().join("alone/metrics.csv")).unwrap();
    assert!(a == b, "a sweep run differs from the same run alone");
    // Tune without a target, or with a bad axis, is an error naming it.
    let out = lena(
        &["tune", "exp.toml", "-q", "--grid", "run.seed=1,2"],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lena tune needs --target"));
    let out = lena(
        &["sweep", "exp.toml", "-q", "--grid", "algorithm.betta=1,2"],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `betta`"));
}

/// A batch runs each listed experiment into its directory, with the bytes `lena run --set`
/// writes for it (two at a time, sharing the loaded data); a bad entry is refused before
/// anything runs, naming the file, the run and the field.
#[test]
fn batch_runs_each_listed_experiment_as_lena_run_would() {
    let dir = tempfile::tempdir().unwrap();
    let exp = SYNTH.replace("seed = 2", "seed = 2\nwall_clock = false");
    std::fs::write(dir.path().join("exp.toml"), exp).unwrap();
    let runs = [
        ("b/dgd", vec!["algorithm.name=dgd", "run.threads=1"]),
        (
            "b/lena",
            vec!["algorithm.name=lena", "algorithm.step_size=0.5"],
        ),
        (
            "b/seed",
            vec!["run.seed=7", "data.batch=5", "run.threads=2"],
        ),
    ];
    let mut text = String::new();
    for (out, sets) in &runs {
        let sets: Vec<String> = sets.iter().map(|s| format!("{s:?}")).collect();
        text.push_str(&format!(
            "[[run]]\nconfig = \"exp.toml\"\noutput = \"{out}\"\nset = [{}]\n\n",
            sets.join(", ")
        ));
    }
    std::fs::write(dir.path().join("runs.toml"), &text).unwrap();
    let out = lena(&["batch", "runs.toml", "--jobs", "2"], dir.path());
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for (i, (out_dir, sets)) in runs.iter().enumerate() {
        let mut args = vec!["run", "exp.toml", "-q", "-o"];
        let alone = format!("alone{i}");
        args.push(&alone);
        for s in sets {
            args.extend(["--set", s]);
        }
        ok(&lena(&args, dir.path()));
        let a = std::fs::read(dir.path().join(out_dir).join("metrics.csv")).unwrap();
        let b = std::fs::read(dir.path().join(&alone).join("metrics.csv")).unwrap();
        assert!(
            a == b,
            "{out_dir}: the batch's run differs from the same run alone"
        );
    }
    // Again without --force: the directories hold runs, refused before anything runs.
    let out = lena(&["batch", "runs.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("b/dgd"));
    ok(&lena(&["batch", "runs.toml", "--force"], dir.path()));
    // A bad override names the batch file, the run and the field.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[run]]\nconfig = \"exp.toml\"\noutput = \"c/1\"\n\n\
         [[run]]\nconfig = \"exp.toml\"\noutput = \"c/2\"\nset = [\"algorithm.betta=1\"]\n",
    )
    .unwrap();
    let out = lena(&["batch", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: run 2 (c/2)") && err.contains("betta"),
        "{err}"
    );
    assert!(!dir.path().join("c/1/metrics.csv").exists(), "nothing ran");
}

#[test]
fn backend_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(&["run", "exp.toml", "-q", "--timeout", "0"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--timeout must be a positive"), "{err}");
    let out = lena(&["run", "exp.toml", "-q", "--backend", "mpi"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "mpi") {
        // Started without mpirun: a single process.
        assert!(err.contains("at least 2 processes"), "{err}");
    } else {
        assert!(err.contains("--features mpi"), "{err}");
    }
    // Nothing was written for a run that could not start.
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn an_unfinished_run_directory_has_a_note() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &["run", "exp.toml", "-q", "-o", "r", "--stop-at", "15"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(130));
    let note = std::fs::read_to_string(dir.path().join("r/INCOMPLETE")).unwrap();
    assert!(note.contains("lena resume"), "{note}");
    let out = lena(&["resume", "r", "-q"], dir.path());
    ok(&out);
    assert!(!dir.path().join("r/INCOMPLETE").exists());
}

/// `--algorithm` used to replace the `[algorithm]` table after `--set` applied, silently
/// dropping the user's `--set algorithm.beta=0`. Flags apply first, then every `--set`.
#[test]
fn flags_then_set_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "-n",
            "2",
            "-o",
            "a",
            "--set",
            "algorithm.beta=0",
            "--algorithm",
            "lena",
            "--step",
            "0.3",
            "--set",
            "algorithm.step_size=0.2",
        ],
        dir.path(),
    );
    ok(&out);
    let config = std::fs::read_to_string(dir.path().join("a/config.toml")).unwrap();
    let cfg: toml::Table = config.parse().unwrap();
    let alg = cfg["algorithm"].as_table().unwrap();
    assert_eq!(alg["name"].as_str(), Some("lena"));
    assert_eq!(alg["beta"].as_float(), Some(0.0), "{config}");
    assert_eq!(alg["step_size"].as_float(), Some(0.2), "{config}");
    // A flag that does not apply to the experiment's source is an error, not ignored.
    let out = lena(&["run", "exp.toml", "-q", "--test", "t.svm"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--test is for LIBSVM data"), "{err}");
}

/// A minibatch larger than a node's samples used to sample with repeats silently.
#[test]
fn a_batch_larger_than_a_node_is_an_error_unless_sampling_with_replacement() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    // 400 samples over 4 nodes: 100 each.
    let out = lena(
        &["run", "exp.toml", "-q", "--batch", "101", "-o", "b"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data.batch = 101 is larger than node")
            && err.contains("'s 100 samples")
            && err.contains("data.batch = 0 for full batch")
            && err.contains("data.replacement = true"),
        "{err}"
    );
    assert!(!dir.path().join("b").exists());
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "--batch",
            "101",
            "-o",
            "b",
            "--set",
            "data.replacement=true",
            "-n",
            "3",
        ],
        dir.path(),
    );
    ok(&out);
}

/// A misspelt field names its own line and table and lists the valid ones, in the file and on
/// the command line.
#[test]
fn unknown_fields_name_their_line_and_the_valid_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = SYNTH.replace("name = \"dgd\"", "name = \"diana\"").replace(
        "step_size = \"1/L\"",
        "step_size = \"1/L\"\n[algorithm.compressor]\nkind = \"qsgd\"\nlevls = 4",
    );
    std::fs::write(dir.path().join("exp.toml"), &file).unwrap();
    let out = lena(&["run", "exp.toml", "-q"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "exp.toml:16: `levls = 4` in [algorithm.compressor]: unknown field `levls`; valid \
             fields here: `kind`, `levels`, `bucket`, `norm`, `coding`"
        ),
        "{err}"
    );
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &["run", "exp.toml", "-q", "--set", "algorithm.nmae=lena"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "`nmae = \"lena\"` in [algorithm]: unknown field `nmae`; valid fields here: `name`, \
             `step_size`, `missing`"
        ),
        "{err}"
    );
}

/// An error quoting a 20 MB token used to print all of it.
#[test]
fn errors_quote_at_most_80_characters() {
    let dir = tempfile::tempdir().unwrap();
    let long = "q".repeat(20_000_000);
    std::fs::write(dir.path().join("big.svm"), format!("1 1:1\n1 2:{long}\n")).unwrap();
    let split = SYNTH.replace("split = \"iid\"", &format!("split = \"{long}\""));
    std::fs::write(dir.path().join("split.toml"), split).unwrap();
    let key = SYNTH.replace("nodes = 4", &format!("{long} = 4"));
    std::fs::write(dir.path().join("key.toml"), key).unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    // A command line holds at most 128 KiB per argument.
    let arg = "q".repeat(100_000);
    for (args, size) in [
        (vec!["run", "--train", "big.svm", "-q"], "(20000000 bytes)"),
        (vec!["run", "split.toml", "-q"], "(20000000 bytes)"),
        (vec!["run", "key.toml", "-q"], "(20000004 bytes)"),
        (
            vec!["run", "exp.toml", "-q", "--algorithm", &arg],
            "(100000 bytes)",
        ),
        (
            vec![
                "run",
                "exp.toml",
                "-q",
                "--set",
                &format!("data.split={arg}"),
            ],
            "(100000 bytes)",
        ),
    ] {
        let out = lena(&args, dir.path());
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.len() < 600 && err.contains(size),
            "{args:?}: {}",
            &err[..err.len().min(800)]
        );
    }
}

/// Any IDX image set runs: four files by name, classes from the labels.
#[test]
fn an_idx_set_runs_by_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("kmnist")).unwrap();
    let set = |n: usize| {
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        let pixels: Vec<u8> = (0..n * 9)
            .map(|i| ((i / 9 % 4) * 60 + i % 9) as u8)
            .collect();
        (
            lena_data::idx::encode_images(&pixels, n as u32, 3, 3),
            lena_data::idx::encode_labels(&labels),
        )
    };
    for (name, (im, lb)) in [("train", set(80)), ("test", set(20))] {
        std::fs::write(d.join(format!("kmnist/k-{name}-imgs")), im).unwrap();
        std::fs::write(d.join(format!("kmnist/k-{name}-labels")), lb).unwrap();
    }
    let exp = SYNTH.replace(
        "kind = \"synthetic\"\nsamples = 400\ntest_samples = 100\nfeatures = 8\nclasses = 3",
        "kind = \"idx\"\ndir = \"kmnist\"\ntrain_images = \"k-train-imgs\"\n\
         train_labels = \"k-train-labels\"\ntest_images = \"k-test-imgs\"\n\
         test_labels = \"k-test-labels\"",
    );
    assert!(exp.contains("kind = \"idx\""));
    std::fs::write(d.join("exp.toml"), exp).unwrap();
    let out = lena(&["run", "exp.toml", "-q", "-o", "k", "--step", "0.5"], d);
    ok(&out);
    let summary = std::fs::read_to_string(d.join("k/summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    // Four classes, so chance is 0.25.
    assert!(
        v["last"]["test_accuracy"].as_f64().unwrap() >= 0.7,
        "{summary}"
    );
}

/// `run.until` ends the run at the first evaluation where it holds; the summary, the latency
/// statistics and the metrics end there, and the directory holds a finished run.
#[test]
fn run_until_ends_the_run_and_records_where() {
    let dir = tempfile::tempdir().unwrap();
    let exp = format!("{SYNTH}[network]\nkind = \"lan\"\nrate_mbps = 1\n");
    std::fs::write(dir.path().join("exp.toml"), exp).unwrap();
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-o",
            "u",
            "--set",
            "run.until=\"iteration >= 15\"",
        ],
        dir.path(),
    );
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("iteration >= 15 at iteration 20"),
        "{stdout}"
    );
    let u = dir.path().join("u");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(u.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["until"]["condition"], "iteration >= 15");
    assert_eq!(summary["until"]["reached_at"], 20);
    assert_eq!(summary["last"]["iteration"], 20);
    for file in ["metrics.csv", "latency.csv"] {
        let text = std::fs::read_to_string(u.join(file)).unwrap();
        assert!(
            text.lines().last().unwrap().starts_with("20,"),
            "{file}: {text}"
        );
    }
    assert!(!u.join("INCOMPLETE").exists());
    let out = lena(&["resume", "u", "-q"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a finished run"));
    // Never met: every round runs, and the summary says so.
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "-o",
            "n",
            "--set",
            "run.until=\"train_loss<=0\"",
        ],
        dir.path(),
    );
    ok(&out);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("n/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["until"]["reached_at"], serde_json::Value::Null);
    assert_eq!(summary["last"]["iteration"], 30);
}

/// Tuning chooses on a validation split held out from the training data: its columns are in
/// the metrics (empty without one), `lena tune` targets them, and plots skip empty cells.
#[test]
fn tune_chooses_on_the_validation_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--set",
            "data.validation=0.2",
            "--grid",
            "algorithm.step_size=0.01,0.5",
            "--target",
            "val_accuracy=0.9",
            "-o",
            "t",
        ],
        dir.path(),
    );
    ok(&out);
    // The chosen setting is the one whose validation accuracy first reaches 0.9 with the
    // fewest bits, read back from its own metrics.
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t/best.json")).unwrap())
            .unwrap();
    let setting = best["setting"].as_str().unwrap();
    let csv =
        std::fs::read_to_string(dir.path().join("t").join(setting).join("metrics.csv")).unwrap();
    let first = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|c| c[14].parse::<f64>().unwrap() >= 0.9)
        .unwrap();
    assert_eq!(first.len(), 15);
    assert_eq!(
        best["value"].as_f64(),
        first[4].parse::<f64>().ok(),
        "{csv}"
    );
    // Without a validation split: empty cells, and a target on them says why it cannot work.
    ok(&lena(&["run", "exp.toml", "-q", "-o", "plain"], dir.path()));
    let csv = std::fs::read_to_string(dir.path().join("plain/metrics.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().ends_with(",,"), "{csv}");
    ok(&lena(
        &[
            "plot",
            "plain",
            "t/algorithm.step_size=0.5",
            "--y",
            "test_accuracy",
            "-o",
            "p",
        ],
        dir.path(),
    ));
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--grid",
            "run.seed=1",
            "--target",
            "val_accuracy=0.9",
            "-o",
            "t2",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the runs have no val_accuracy"), "{err}");
}

/// With a `run.seed` axis, a sweep reports each setting's mean and 95% interval over its seeds
/// (seeds.csv), and tune chooses by the mean cost over seeds, from the runs' own metrics.
#[test]
fn tune_over_seeds_chooses_by_the_mean_with_an_interval() {
    let dir = tempfile::tempdir().unwrap();
    let exp = SYNTH
        .replace("batch", "b")
        .replace("nodes = 4", "nodes = 4\nbatch = 5");
    std::fs::write(dir.path().join("exp.toml"), exp).unwrap();
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--grid",
            "algorithm.step_size=0.05,0.5",
            "--grid",
            "run.seed=1,2,3",
            "--target",
            "test_accuracy=0.9",
            "-o",
            "t",
        ],
        dir.path(),
    );
    ok(&out);
    let seeds = std::fs::read_to_string(dir.path().join("t/seeds.csv")).unwrap();
    let lines: Vec<&str> = seeds.lines().collect();
    assert_eq!(lines.len(), 3, "{seeds}");
    assert!(lines[0].ends_with(",reached,bits_at_target_mean,bits_at_target_ci95"));
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t/best.json")).unwrap())
            .unwrap();
    assert_eq!(best["seeds"], 3);
    let setting = best["setting"].as_str().unwrap();
    // The mean over the setting's three runs, each read from its own metrics.
    let mut bits = Vec::new();
    for seed in 1..=3 {
        let csv = std::fs::read_to_string(
            dir.path()
                .join("t")
                .join(format!("{setting};run.seed={seed}"))
                .join("metrics.csv"),
        )
        .unwrap();
        let first = csv
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .map(|c| c.parse::<f64>().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>()
            })
            .find(|c| c[2] >= 0.9)
            .unwrap();
        bits.push(first[4]);
    }
    let mean = bits.iter().sum::<f64>() / 3.0;
    assert!(
        (best["value"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{best} vs {bits:?}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with(&format!("{setting},3,")))
        .unwrap();
    assert!(
        row.split(',').nth(8) == Some("3"),
        "every seed reached: {row}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("over 3 seeds, 95% CI"), "{stdout}");
}

/// `lena tune` is a deterministic choice: equal costs go to the first setting in grid order,
/// and a setting that diverges is a setting that never reaches the target (the sweep goes on
/// and says so), not a failed sweep.
#[test]
fn tune_breaks_ties_by_grid_order_and_counts_divergence_as_never() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    // Results do not depend on the thread count: both thread settings cost the same.
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--grid",
            "algorithm.step_size=1e9,0.5",
            "--grid",
            "run.threads=2,1",
            "--target",
            "test_accuracy=0.9",
            "-o",
            "t",
        ],
        dir.path(),
    );
    ok(&out);
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t/best.json")).unwrap())
            .unwrap();
    assert_eq!(best["setting"], "algorithm.step_size=0.5;run.threads=2");
    let sweep = std::fs::read_to_string(dir.path().join("t/sweep.csv")).unwrap();
    let rows: Vec<&str> = sweep.lines().skip(1).collect();
    assert!(
        rows[0].starts_with("algorithm.step_size=1e9;run.threads=2,diverged,"),
        "{sweep}"
    );
    assert!(rows[0].contains(",never,"), "{sweep}");
    let cost = |r: &str| r.split(',').nth(7).unwrap().to_string();
    assert_eq!(cost(rows[2]), cost(rows[3]), "{sweep}");
}

/// `--target iteration=T --minimize train_loss`: the setting with the least training loss after
/// T rounds, as figure 1's tuning chooses; an accuracy or unknown column is refused up front.
#[test]
fn tune_minimises_a_loss_after_a_fixed_number_of_rounds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), SYNTH).unwrap();
    let out = lena(
        &[
            "tune",
            "exp.toml",
            "-q",
            "--grid",
            "algorithm.step_size=0.001,1/L,0.01",
            "--target",
            "iteration=20",
            "--minimize",
            "train_loss",
            "-o",
            "t",
        ],
        dir.path(),
    );
    ok(&out);
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t/best.json")).unwrap())
            .unwrap();
    // The cost is the loss at round 20 (the evaluation there), and it is the least of the three.
    let sweep = std::fs::read_to_string(dir.path().join("t/sweep.csv")).unwrap();
    let losses: Vec<f64> = sweep
        .lines()
        .skip(1)
        .map(|r| {
            let run = dir
                .path()
                .join("t")
                .join(r.split(',').next().unwrap().replace('/', "_"));
            let m = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
            let row = m
                .lines()
                .find(|l| l.starts_with("20,"))
                .unwrap()
                .to_string();
            row.split(',').nth(1).unwrap().parse().unwrap()
        })
        .collect();
    let least = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(best["value"].as_f64().unwrap(), least, "{sweep}");
    assert_eq!(best["setting"], "algorithm.step_size=1/L", "{sweep}");
    for bad in ["test_accuracy", "nonsense"] {
        let out = lena(
            &[
                "tune",
                "exp.toml",
                "-q",
                "--target",
                "iteration=20",
                "--minimize",
                bad,
                "-o",
                "u",
            ],
            dir.path(),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--minimize \"{bad}\"")), "{err}");
        assert!(err.contains("val_loss"), "{err}");
    }
}
