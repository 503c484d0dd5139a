//! The run directory holds one run: refused when taken, verified before a resume writes to it,
//! never left half made. Each test names the fault it pins.

mod common;

use common::{fails_with, lena, ok};
use std::path::Path;
use std::process::Command;

const EXP: &str = r#"
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
name = "lena"
step_size = 0.3
[run]
iterations = 60
eval_every = 10
seed = 2
wall_clock = false
checkpoint_every = 7
"#;

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The bytes of every file lena wrote into `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), read(e.path())))
        .collect();
    files.sort();
    files
}

/// [`snapshot`] with meta.json's start time blanked: what a re-run of the same experiment
/// writes byte for byte (it may start in another second).
fn results(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .map(|(name, bytes)| {
            if name != "meta.json" {
                return (name, bytes);
            }
            let mut meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let started = meta.get_mut("started_unix").expect("a start time");
            assert!(started.is_u64(), "the start time in seconds");
            *started = serde_json::Value::Null;
            (name, serde_json::to_vec(&meta).unwrap())
        })
        .collect()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("exp.toml"), EXP).unwrap();
    ok(&lena(&["run", "exp.toml", "-q", "-o", "whole"], dir.path()));
    dir
}

/// A run stopped at round 20 (an evaluation round) into `name`.
fn cut(dir: &Path, name: &str) {
    let out = lena(
        &["run", "exp.toml", "-q", "-o", name, "--stop-at", "20"],
        dir,
    );
    assert_eq!(out.status.code(), Some(130));
}

fn same_metrics(dir: &Path, a: &str, b: &str) {
    for file in ["metrics.csv", "metrics.jsonl", "summary.json"] {
        assert!(
            read(dir.join(a).join(file)) == read(dir.join(b).join(file)),
            "{file} of {a} and {b} differ"
        );
    }
}

#[test]
fn a_directory_holding_a_run_is_refused_until_forced() {
    let dir = setup();
    let d = dir.path();
    let before = snapshot(&d.join("whole"));
    // Another step size into the finished run's directory: refused, nothing touched.
    let out = lena(
        &["run", "exp.toml", "-q", "-o", "whole", "--step", "0.1"],
        d,
    );
    fails_with(
        &out,
        "whole already holds a finished run; pass --force to replace it",
    );
    fails_with(&out, "choose another output directory with -o");
    assert_eq!(snapshot(&d.join("whole")), before);
    // --force replaces it.
    ok(&lena(
        &[
            "run", "exp.toml", "-q", "-o", "whole", "--step", "0.1", "--force",
        ],
        d,
    ));
    let config = String::from_utf8(read(d.join("whole/config.toml"))).unwrap();
    assert!(config.contains("step_size = 0.1"), "{config}");
    // A directory with files lena did not write is never a run directory, forced or not.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep").unwrap();
    for force in [false, true] {
        let mut args = vec!["run", "exp.toml", "-q", "-o", "mine"];
        if force {
            args.push("--force");
        }
        fails_with(
            &lena(&args, d),
            "mine is not empty and holds files lena did not write (notes.txt)",
        );
        assert_eq!(read(d.join("mine/notes.txt")), b"keep");
    }
    // An empty directory is fine.
    std::fs::create_dir(d.join("empty")).unwrap();
    ok(&lena(&["run", "exp.toml", "-q", "-o", "empty"], d));
}

/// `lena run` into an interrupted directory used to keep the old checkpoint, and `lena resume`
/// then ran past the config's iterations and wrote NUL bytes into metrics.csv.
#[test]
fn a_new_run_never_inherits_an_old_checkpoint() {
    let dir = setup();
    let d = dir.path();
    cut(d, "cut");
    fails_with(
        &lena(&["run", "exp.toml", "-q", "-o", "cut", "-n", "5"], d),
        "cut already holds an unfinished run (continue it with `lena resume cut`)",
    );
    // Forced: a fresh run of 5 rounds, with no file of the old one.
    ok(&lena(
        &["run", "exp.toml", "-q", "-o", "cut", "-n", "5", "--force"],
        d,
    ));
    assert!(!d.join("cut/checkpoint.bin").exists());
    let before = snapshot(&d.join("cut"));
    fails_with(
        &lena(&["resume", "cut", "-q"], d),
        "cut holds a finished run: there is nothing to resume",
    );
    assert_eq!(snapshot(&d.join("cut")), before);
    let csv = read(d.join("cut/metrics.csv"));
    assert!(!csv.contains(&0), "NUL bytes in metrics.csv");
}

#[test]
fn resume_refuses_a_directory_whose_files_disagree_and_writes_nothing() {
    let dir = setup();
    let d = dir.path();
    // The config was edited after the checkpoint.
    cut(d, "edited");
    let config = d.join("edited/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("iterations = 60", "iterations = 50")).unwrap();
    let before = snapshot(&d.join("edited"));
    fails_with(
        &lena(&["resume", "edited", "-q"], d),
        "config.toml was changed after the checkpoint was written",
    );
    assert_eq!(snapshot(&d.join("edited")), before);

    // Another run's checkpoint (another seed) copied in.
    cut(d, "mine");
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "-o",
            "other",
            "--seed",
            "9",
            "--stop-at",
            "20",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(130));
    std::fs::copy(
        d.join("other/checkpoint.bin"),
        d.join("mine/checkpoint.bin"),
    )
    .unwrap();
    let before = snapshot(&d.join("mine"));
    fails_with(
        &lena(&["resume", "mine", "-q"], d),
        "config.toml was changed after the checkpoint was written",
    );
    assert_eq!(snapshot(&d.join("mine")), before);

    // metrics.jsonl cut short (a crash, or by hand): refused, never padded.
    cut(d, "short");
    let path = d.join("short/metrics.jsonl");
    let jsonl = read(&path);
    std::fs::write(&path, &jsonl[..jsonl.len() / 2]).unwrap();
    let before = snapshot(&d.join("short"));
    fails_with(&lena(&["resume", "short", "-q"], d), "shorter than the");
    assert_eq!(snapshot(&d.join("short")), before);

    // A damaged checkpoint.
    cut(d, "flipped");
    let path = d.join("flipped/checkpoint.bin");
    let mut ck = read(&path);
    let at = ck.len() / 2;
    ck[at] ^= 0x10;
    std::fs::write(&path, ck).unwrap();
    let before = snapshot(&d.join("flipped"));
    fails_with(&lena(&["resume", "flipped", "-q"], d), "checksum mismatch");
    assert_eq!(snapshot(&d.join("flipped")), before);
}

/// metrics.csv cut short or changed: rebuilt from metrics.jsonl, ending exactly as the
/// uninterrupted run.
#[test]
fn resume_rebuilds_a_damaged_csv_from_the_json_lines() {
    let dir = setup();
    let d = dir.path();
    for (name, damage) in [("cut", 0usize), ("changed", 1)] {
        cut(d, name);
        let path = d.join(name).join("metrics.csv");
        let mut csv = read(&path);
        if damage == 0 {
            csv.truncate(csv.len() - 30);
        } else {
            let at = csv.len() - 5;
            csv[at] = b'7';
        }
        std::fs::write(&path, csv).unwrap();
        let out = lena(&["resume", name, "-q"], d);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rebuilding it from metrics.jsonl"), "{err}");
        same_metrics(d, "whole", name);
    }
}

/// A stop on an evaluation round used to lose that round's row.
#[test]
fn a_stop_on_an_evaluation_round_keeps_its_row() {
    let dir = setup();
    let d = dir.path();
    cut(d, "c");
    let csv = String::from_utf8(read(d.join("c/metrics.csv"))).unwrap();
    assert!(csv.lines().last().unwrap().starts_with("20,"), "{csv}");
    ok(&lena(&["resume", "c", "-q"], d));
    same_metrics(d, "whole", "c");
}

/// Relative data paths are stored absolute, so `lena resume` works from any directory.
#[test]
fn resume_works_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    let mut text = String::new();
    for i in 0..120u32 {
        let label = i % 3;
        let x = f64::from(label) + f64::from(i % 7) * 0.1;
        text.push_str(&format!(
            "{label} 1:{x} 2:{} 4:{}\n",
            1.0 - x,
            f64::from(i % 5)
        ));
    }
    std::fs::write(d.join("data/train.txt"), text).unwrap();
    let args = [
        "run",
        "--train",
        "data/train.txt",
        "--split",
        "iid",
        "--nodes",
        "3",
        "--step",
        "0.1",
        "-n",
        "30",
        "--eval-every",
        "5",
        "-q",
        "--set",
        "run.wall_clock=false",
        "--set",
        "run.checkpoint_every=4",
    ];
    let mut whole = args.to_vec();
    whole.extend(["-o", "whole"]);
    ok(&lena(&whole, d));
    let mut stopped = args.to_vec();
    stopped.extend(["-o", "cut", "--stop-at", "13"]);
    assert_eq!(lena(&stopped, d).status.code(), Some(130));
    let config = std::fs::read_to_string(d.join("cut/config.toml")).unwrap();
    let abs = d.join("data/train.txt");
    assert!(config.contains(&abs.display().to_string()), "{config}");
    let run_dir = d.join("cut");
    ok(&lena(
        &["resume", run_dir.to_str().unwrap(), "-q"],
        Path::new("/"),
    ));
    same_metrics(d, "whole", "cut");
}

/// A run whose set-up fails (here: data that is not there) leaves no directory behind, or,
/// in a directory that existed, nothing in it.
#[test]
fn a_failed_set_up_leaves_no_half_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(
        &lena(&["run", "--data-dir", "nowhere", "-q", "-o", "x"], d),
        "nowhere/train-images-idx3-ubyte.gz",
    );
    assert!(!d.join("x").exists());
    std::fs::create_dir(d.join("e")).unwrap();
    fails_with(
        &lena(&["run", "--data-dir", "nowhere", "-q", "-o", "e"], d),
        "cannot set up the experiment",
    );
    assert_eq!(std::fs::read_dir(d.join("e")).unwrap().count(), 0);
    // A failure during the run says what it was beside the metrics.
    std::fs::write(d.join("exp.toml"), EXP).unwrap();
    let out = lena(
        &[
            "run",
            "exp.toml",
            "-q",
            "-o",
            "div",
            "--step",
            "1e6",
            "--eval-every",
            "1",
        ],
        d,
    );
    fails_with(&out, "diverged at iteration");
    let note = std::fs::read_to_string(d.join("div/INCOMPLETE")).unwrap();
    assert!(
        note.contains("It stopped with an error: at round"),
        "{note}"
    );
    assert!(note.contains("diverged"), "{note}");
}

/// Two processes never write one directory.
#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("exp.toml"), EXP).unwrap();
    /// Ends the long run however the test ends, so that it never outlives the test.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _long = Killed(
        Command::new(env!("CARGO_BIN_EXE_lena"))
            .args(["run", "exp.toml", "-q", "-o", "busy", "-n", "100000000"])
            .current_dir(d)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while !d.join("busy/metrics.csv").exists() {
        assert!(t0.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let forced = lena(&["run", "exp.toml", "-q", "-o", "busy", "--force"], d);
    let resumed = lena(&["resume", "busy", "-q"], d);
    fails_with(&forced, "another lena process is running in busy");
    fails_with(&resumed, "another lena process is running in busy");
}

/// A sweep re-run is refused as a whole, before anything runs; --force replaces it.
#[test]
fn a_sweep_refuses_earlier_results_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("exp.toml"),
        EXP.replace("iterations = 60", "iterations = 10"),
    )
    .unwrap();
    let args = [
        "sweep",
        "exp.toml",
        "-q",
        "--grid",
        "run.seed=1,2",
        "-o",
        "s",
    ];
    ok(&lena(&args, d));
    let before = snapshot(&d.join("s/run.seed=1"));
    fails_with(&lena(&args, d), "s already holds a sweep");
    assert_eq!(snapshot(&d.join("s/run.seed=1")), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    let results_before = results(&d.join("s/run.seed=1"));
    ok(&lena(&forced, d));
    // The re-run's own start time (a second later, at times) aside, the same files.
    assert_eq!(results(&d.join("s/run.seed=1")), results_before);
}

/// A run resumes only on the SIMD path it started on (another lane count would sum in another
/// order), and with LENA_SIMD naming that path it ends as the uninterrupted run did; a
/// LENA_SIMD this CPU cannot run is refused up front.
#[test]
fn resume_keeps_the_simd_path_the_run_started_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("exp.toml"), EXP).unwrap();
    let scalar = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lena"))
            .args(args)
            .current_dir(d)
            .env("LENA_SIMD", "scalar")
            .output()
            .unwrap()
    };
    ok(&scalar(&["run", "exp.toml", "-q", "-o", "whole"]));
    let out = scalar(&["run", "exp.toml", "-q", "-o", "cut", "--stop-at", "20"]);
    assert_eq!(out.status.code(), Some(130));
    let meta = std::fs::read_to_string(d.join("cut/meta.json")).unwrap();
    assert!(meta.contains("\"simd\": \"scalar\""), "{meta}");
    if lena_kernels::Kernels::detect().name() != "scalar" {
        let before = snapshot(&d.join("cut"));
        fails_with(
            &lena(&["resume", "cut", "-q"], d),
            "the run started on the SIMD path \"scalar\"",
        );
        assert_eq!(snapshot(&d.join("cut")), before);
    }
    ok(&scalar(&["resume", "cut", "-q"]));
    for f in ["metrics.csv", "metrics.jsonl"] {
        assert_eq!(
            read(d.join("cut").join(f)),
            read(d.join("whole").join(f)),
            "{f}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lena"))
        .args(["run", "exp.toml", "-q", "-o", "x"])
        .current_dir(d)
        .env("LENA_SIMD", "avx9")
        .output()
        .unwrap();
    fails_with(&out, "LENA_SIMD=\"avx9\": expected one of");
    assert!(!d.join("x").exists());
}
