//! `lena run --backend mpi` under `mpirun`, on loopback (needs `--features mpi` and OpenMPI's
//! `mpirun` on PATH): the in-process results bit for bit, exact bytes on the wire, and failing
//! ranks named with their round.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output};

fn base(algo: &str, extra: &str) -> String {
    format!(
        r#"
[data]
split = "one_label"
nodes = 10
batch = 8
[data.source]
kind = "synthetic"
samples = 2000
test_samples = 500
features = 20
classes = 10
separation = 4.0
[algorithm]
{algo}
[run]
iterations = 60
eval_every = 20
seed = 3
wall_clock = false
checkpoint_every = 25
{extra}
"#
    )
}

const FAULTS: &str = "[faults]\nloss = 0.1\nstraggler = 0.1\nmax_delay = 2\nleave = 0.05\n\
                      rejoin = 0.5\n[network]\nkind = \"wan\"\nrealizations = 3\n";

fn lena(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lena"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn mpirun(ranks: usize, args: &[&str], dir: &Path, env: Option<(&str, &str)>) -> Output {
    // Each job's OpenMPI session directory under a temporary directory of its own: jobs started
    // at once by parallel tests raced to create the shared /tmp/ompi.<host>.<uid>, and the
    // loser failed orte_init ("mkdir ... File exists").
    let session = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(ranks.to_string())
        .env("TMPDIR", session.path())
        .current_dir(dir);
    if let Some((k, v)) = env {
        // Exported to every rank (-x), not only to local ones.
        cmd.env(k, v).args(["-x", k]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_lena")).args(args);
    cmd.output()
        .expect("mpirun on PATH (apt-get install openmpi-bin)")
}

/// Waits until no process holds `dir`'s run lock. mpirun can return while the ranks of a job it
/// aborted are still being torn down, and rank 0 holds the lock until it is gone; a `lena
/// resume` started at once would (rightly) refuse the directory as busy.
fn wait_for_the_lock(dir: &Path) {
    let path = dir.join(".lena.lock");
    let lock = std::fs::File::open(&path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match lock.try_lock() {
            Ok(()) => return lock.unlock().unwrap(),
            Err(std::fs::TryLockError::WouldBlock) => assert!(
                std::time::Instant::now() < deadline,
                "{} still held 60 s after mpirun returned: a rank outlived its job",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout {}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn same_files(a: &Path, b: &Path, what: &str) {
    for f in [
        "metrics.csv",
        "metrics.jsonl",
        "latency.csv",
        "checkpoint.bin",
    ] {
        let (x, y) = (std::fs::read(a.join(f)), std::fs::read(b.join(f)));
        match (x, y) {
            (Ok(x), Ok(y)) => assert!(x == y, "{what}: {f} differs"),
            (Err(_), Err(_)) => {}
            (x, y) => panic!("{what}: {f} present on one side only ({x:?} vs {y:?})"),
        }
    }
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn mpi_runs_equal_local_runs_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    // LENA on a network over 784 synthetic features, shrunk to a few rounds.
    let network = |model: &str| {
        base("name = \"lena\"\nstep_size = 0.05", "")
            .replace("features = 20", "features = 784")
            .replace("samples = 2000", "samples = 200")
            .replace("test_samples = 500", "test_samples = 50")
            .replace("iterations = 60", "iterations = 6")
            .replace("eval_every = 20", "eval_every = 3")
            .replace("checkpoint_every = 25", "checkpoint_every = 4")
            .replace("[algorithm]", &format!("[model]\n{model}\n[algorithm]"))
    };
    let cases = [
        ("dgd", base("name = \"dgd\"\nstep_size = 0.5", "")),
        ("lena", base("name = \"lena\"\nstep_size = 0.5", FAULTS)),
        ("diana", base("name = \"diana\"\nstep_size = 0.5", "")),
        ("lag_wk", base("name = \"lag_wk\"\nstep_size = 0.5", FAULTS)),
        (
            "ef_sgd_topk",
            base(
                "name = \"ef_sgd\"\nstep_size = 0.5\n[algorithm.compressor]\nkind = \"top_k\"\nk = 30",
                "",
            ),
        ),
        ("cnn_lena", network("objective = \"cnn\"")),
        (
            "mlp_lena",
            network("objective = \"mlp\"\nhidden = [16]\ndropout = 0.5"),
        ),
    ];
    for (name, text) in cases {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap();
        let local = tmp.path().join(format!("{name}-local"));
        ok(&lena(
            &["run", f, "-q", "-o", local.to_str().unwrap()],
            tmp.path(),
        ));
        for ranks in [3, 4] {
            let out = tmp.path().join(format!("{name}-mpi{ranks}"));
            let o = out.to_str().unwrap();
            ok(&mpirun(
                ranks,
                &["run", f, "-q", "-o", o, "--backend", "mpi"],
                tmp.path(),
                None,
            ));
            same_files(&local, &out, &format!("{name} on {ranks} ranks"));
            assert!(!out.join("INCOMPLETE").exists());
            let meta = std::fs::read_to_string(out.join("meta.json")).unwrap();
            assert!(meta.contains(&format!("mpi ({ranks} ranks")), "{meta}");
        }
    }
}

#[test]
fn upload_bytes_on_the_wire_equal_the_charged_bits() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, algo) in [
        ("dgd", "name = \"dgd\"\nstep_size = 0.5"),
        ("diana", "name = \"diana\"\nstep_size = 0.5"),
    ] {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&file, base(algo, "")).unwrap();
        let out = tmp.path().join(name);
        let args = [
            "run",
            file.to_str().unwrap(),
            "-q",
            "-o",
            out.to_str().unwrap(),
        ];
        ok(&mpirun(
            3,
            &[&args[..], &["--backend", "mpi"]].concat(),
            tmp.path(),
            None,
        ));
        let s = summary(&out);
        let payload = s["traffic"]["payload_bytes"].as_u64().unwrap();
        let bits = s["last"]["bits"].as_u64().unwrap();
        let uploads = s["last"]["uploads"].as_u64().unwrap();
        assert_eq!(uploads, 600);
        // Every upload is ceil(bits / 8) bytes: at most 7 bits of padding each.
        assert!(
            8 * payload >= bits && 8 * payload < bits + 8 * uploads,
            "{name}: {payload} bytes for {bits} bits"
        );
        if name == "dgd" {
            assert_eq!(8 * payload, bits, "dense f32 uploads are whole bytes");
        }
    }
}

/// LENA with faults written to `lena.toml` in a fresh directory and run in-process into
/// `local`: the reference a failing or resumed MPI run must end equal to.
fn lena_with_faults_run_locally() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("lena.toml");
    std::fs::write(&file, base("name = \"lena\"\nstep_size = 0.5", FAULTS)).unwrap();
    let local = tmp.path().join("local");
    ok(&lena(
        &[
            "run",
            file.to_str().unwrap(),
            "-q",
            "-o",
            local.to_str().unwrap(),
        ],
        tmp.path(),
    ));
    (tmp, file, local)
}

#[test]
fn a_hung_rank_is_named_with_its_round_and_the_checkpoint_resumes() {
    let (tmp, file, local) = lena_with_faults_run_locally();
    let f = file.to_str().unwrap();
    let dir = tmp.path().join("hung");
    let d = dir.to_str().unwrap();
    let args = [
        "run",
        f,
        "-q",
        "-o",
        d,
        "--backend",
        "mpi",
        "--timeout",
        "2",
    ];
    let started = std::time::Instant::now();
    let out = mpirun(4, &args, tmp.path(), Some(("LENA_MPI_FAULT", "stall:2:35")));
    assert!(!out.status.success());
    assert!(
        started.elapsed().as_secs() < 30,
        "the timeout did not stop the run"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank 2") && err.contains("round 35"), "{err}");
    let note = std::fs::read_to_string(dir.join("INCOMPLETE")).unwrap();
    assert!(
        note.contains("rank 2") && note.contains("round 35"),
        "{note}"
    );
    // The checkpoint of round 25 is usable: resumed in-process, the run ends as the local one.
    wait_for_the_lock(&dir);
    ok(&lena(&["resume", d, "-q"], tmp.path()));
    same_files(&local, &dir, "resumed after a hung rank");
    assert!(!dir.join("INCOMPLETE").exists());
}

#[test]
fn an_exiting_rank_ends_the_job_and_leaves_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dgd.toml");
    std::fs::write(&file, base("name = \"dgd\"\nstep_size = 0.5", "")).unwrap();
    let dir = tmp.path().join("exit");
    let d = dir.to_str().unwrap();
    let args = [
        "run",
        file.to_str().unwrap(),
        "-q",
        "-o",
        d,
        "--backend",
        "mpi",
    ];
    let out = mpirun(4, &args, tmp.path(), Some(("LENA_MPI_FAULT", "exit:3:30")));
    assert!(!out.status.success());
    // mpirun names the process that exited: [[job,1],3] is rank 3.
    let all =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(all.contains(",1],3]"), "{all}");
    assert!(dir.join("INCOMPLETE").exists());
    let rows = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(
        rows.lines().count() < 5,
        "the metrics should stop early:\n{rows}"
    );
    wait_for_the_lock(&dir);
    ok(&lena(&["resume", d, "-q"], tmp.path()));
    assert!(!dir.join("INCOMPLETE").exists());
}

#[test]
fn an_mpi_run_stops_and_resumes_on_another_rank_count() {
    let (tmp, file, local) = lena_with_faults_run_locally();
    let f = file.to_str().unwrap();
    let dir = tmp.path().join("mpi");
    let d = dir.to_str().unwrap();
    let out = mpirun(
        4,
        &[
            "run",
            f,
            "-q",
            "-o",
            d,
            "--backend",
            "mpi",
            "--stop-at",
            "33",
        ],
        tmp.path(),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("INCOMPLETE").exists());
    ok(&mpirun(
        3,
        &["resume", d, "-q", "--backend", "mpi"],
        tmp.path(),
        None,
    ));
    same_files(&local, &dir, "stopped at 33 on 4 ranks, resumed on 3");
}
