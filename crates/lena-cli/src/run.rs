//! `lena run`: one experiment into a new run directory, with a progress bar, metrics written
//! as the run goes, and a checkpoint to resume from.

use crate::flags::{RunArgs, resolve_config};
use crate::rundir::{CHECKPOINT, CONFIG, CSV, INCOMPLETE, INCOMPLETE_NOTE, JSONL, RunDir};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lena_sim::checkpoint::{Checkpoint, Mark};
use lena_sim::metrics::{Format, Writer};
use lena_sim::{ExperimentConfig, MetricsRow, Observer, Simulation};
use std::borrow::Cow;
use std::path::PathBuf;

/// Writes each evaluation (CSV and JSON lines) and checkpoints, and drives the progress bar.
pub(crate) struct Progress {
    pub(crate) bar: ProgressBar,
    pub(crate) csv: Writer,
    pub(crate) jsonl: Writer,
    pub(crate) rows: Vec<MetricsRow>,
    pub(crate) dir: RunDir,
    /// What config.toml holds (every checkpoint records it).
    pub(crate) config: Mark,
    pub(crate) stop_at: Option<u64>,
    pub(crate) interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Observer for Progress {
    fn on_eval(&mut self, row: &MetricsRow) -> lena_sim::Result<()> {
        self.csv.write(row)?;
        self.jsonl.write(row)?;
        self.rows.push(row.clone());
        self.bar.set_message(format!(
            "loss {:.4}  acc {:.4}  uploads {}  bits {:.3e}",
            row.train_loss, row.test_accuracy, row.uploads, row.bits as f64
        ));
        Ok(())
    }

    fn on_round(&mut self, round: u64) -> bool {
        self.bar.set_position(round);
        !(self.stop_at == Some(round) || self.interrupted.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn on_checkpoint(&mut self, round: u64, state: &[u8]) -> lena_sim::Result<()> {
        // The metrics the checkpoint records are on disk before it is.
        self.csv.sync()?;
        self.jsonl.sync()?;
        Checkpoint {
            round,
            files: vec![
                (CONFIG.into(), self.config),
                (CSV.into(), self.csv.mark()),
                (JSONL.into(), self.jsonl.mark()),
            ],
            state: Cow::Borrowed(state),
        }
        .write(&self.dir.file(CHECKPOINT))
    }
}

/// Run metadata (meta.json).
#[derive(serde::Serialize)]
struct Meta<'a> {
    pub(crate) label: String,
    pub(crate) algorithm: String,
    pub(crate) step_size: f32,
    pub(crate) seed: u64,
    pub(crate) version: &'a str,
    git_commit: &'a str,
    simd: &'a str,
    /// The CPU the run started on (`lena_kernels::cpu`; rank 0's under MPI): what its
    /// wall-clock figures ran on.
    cpu: &'a str,
    pub(crate) threads: usize,
    pub(crate) nodes: usize,
    node_samples: (usize, usize),
    started_unix: u64,
    pub(crate) backend: String,
}

pub(crate) fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn run(a: RunArgs) -> Result<()> {
    let cfg = resolve_config(&a)?;
    let path = a.output.clone().unwrap_or_else(|| {
        let stem = a
            .config
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(stem.unwrap_or_else(|| "run".into()))
    });
    let started = a.backend.start()?;
    if started.is_worker() {
        // Rank > 0 of an MPI job: hosts nodes; rank 0 writes the run directory.
        let sim = Simulation::new(cfg).context("cannot set up the experiment")?;
        return started.serve(sim);
    }
    let dir = RunDir::create(&path, a.force)?;
    run_in(cfg, dir, a.quiet, a.stop_at, true, &started, None).map(|_| ())
}

/// Sets up `cfg` and runs it into the claimed run directory `dir`; returns the evaluations.
/// A set-up failure leaves nothing behind; a later failure is noted in `INCOMPLETE`.
pub(crate) fn run_in(
    cfg: ExperimentConfig,
    dir: RunDir,
    quiet: bool,
    stop_at: Option<u64>,
    print: bool,
    backend: &crate::backend::Started,
    data: Option<&lena_sim::DataCache>,
) -> Result<Vec<MetricsRow>> {
    let iterations = cfg.run.iterations;
    let threads = if cfg.run.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.run.threads
    };
    let seed = cfg.run.seed;
    let config_text = toml::to_string(&cfg)?;
    let sim = match data {
        Some(d) => Simulation::with_data(cfg, d),
        None => Simulation::new(cfg),
    };
    let sim = match sim {
        Ok(sim) => sim,
        Err(e) => {
            dir.abandon();
            return Err(anyhow::Error::new(e).context("cannot set up the experiment"));
        }
    };
    let config = dir.write(CONFIG, &config_text)?;
    let sizes = sim.node_sizes();
    let simd = lena_kernels::Kernels::detect().name();
    let meta = Meta {
        label: sim.algorithm_name().to_string(),
        algorithm: sim.algorithm_name().to_string(),
        step_size: sim.step_size(),
        seed,
        version: env!("CARGO_PKG_VERSION"),
        git_commit: env!("LENA_GIT_COMMIT"),
        simd,
        cpu: lena_kernels::cpu(),
        threads,
        nodes: sizes.len(),
        node_samples: (
            *sizes.iter().min().unwrap_or(&0),
            *sizes.iter().max().unwrap_or(&0),
        ),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        backend: backend.describe(),
    };
    dir.write(crate::rundir::META, &serde_json::to_string_pretty(&meta)?)?;
    dir.write(INCOMPLETE, INCOMPLETE_NOTE)?;
    let sim = backend
        .attach(sim, Some(&dir.file(INCOMPLETE)))
        .inspect_err(|e| dir.note_failure(&format!("{e:#}")))?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = round_bar(iterations);
        bar.println(format!(
            "lena: {} ({} nodes, {}..{} samples each), step size {}, SIMD {simd}, {threads} threads -> {}",
            meta.algorithm,
            meta.nodes,
            meta.node_samples.0,
            meta.node_samples.1,
            meta.step_size,
            dir.path().display(),
        ));
        bar
    };
    let obs = Progress {
        bar,
        csv: Writer::create(&dir.file(CSV), Format::Csv)?,
        jsonl: Writer::create(&dir.file(JSONL), Format::Jsonl)?,
        rows: Vec::new(),
        dir,
        config,
        stop_at,
        interrupted: interrupted(),
    };
    finish(sim, obs, print)
}

/// A progress bar over a run's rounds, with rate and ETA, on stderr.
pub(crate) fn round_bar(iterations: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(iterations), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Set by Ctrl-C: the run stops after the current round and writes a checkpoint.
pub(crate) fn interrupted() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        // If a handler cannot be installed, Ctrl-C simply ends the process (checkpoints
        // written every run.checkpoint_every rounds remain usable).
        let _ = ctrlc::set_handler(move || f.store(true, std::sync::atomic::Ordering::SeqCst));
        flag
    })
    .clone()
}

/// Exit status of a run stopped by Ctrl-C or `--stop-at` (128 + SIGINT, as shells expect).
pub(crate) const STOPPED: u8 = 130;

/// A stop that left a checkpoint: not an error, but not a finished run either.
#[derive(Debug)]
pub(crate) struct StoppedRun(pub(crate) u64, pub(crate) PathBuf);

impl std::fmt::Display for StoppedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped at iteration {}; the checkpoint and metrics so far are in {}; continue with `lena resume {}`",
            self.0,
            self.1.display(),
            self.1.display()
        )
    }
}

impl std::error::Error for StoppedRun {}

/// Runs to the end, then writes latency statistics and the summary.
pub(crate) fn finish(
    mut sim: Simulation,
    mut obs: Progress,
    print: bool,
) -> Result<Vec<MetricsRow>> {
    let res = sim.run(&mut obs);
    obs.bar.finish_and_clear();
    let dir = obs.dir.path().to_path_buf();
    match &res {
        Ok(_) | Err(lena_sim::Error::Stopped(_)) => {}
        Err(e) => obs
            .dir
            .note_failure(&format!("at round {}: {e}", sim.round())),
    }
    if let Err(lena_sim::Error::Transport(e)) = &res {
        // Another process exited or hangs: say so, then end the whole job (a hung rank would
        // never return).
        eprintln!(
            "lena: {e}; the run stopped at round {}; metrics so far and the last checkpoint are \
             in {}",
            sim.round(),
            dir.display()
        );
        sim.abort_exchange();
    }
    // Workers of a multi-process run wait for a command whatever happened here.
    sim.finish_workers()?;
    let summary = match res {
        Err(lena_sim::Error::Stopped(round)) => return Err(StoppedRun(round, dir).into()),
        r => r.with_context(|| format!("run stopped; metrics so far are in {}", dir.display()))?,
    };
    // Latency over the network model's link-rate realizations, at every evaluation.
    // The run's last round: its iterations, or where run.until ended it.
    let (total, every) = (sim.round(), sim.config().run.eval_every);
    let at: Vec<u64> = (0..=total)
        .filter(|r| r % every == 0 || *r == total)
        .collect();
    let latency = sim.latency_stats(&at);
    if let Some(stats) = &latency {
        let mut text = String::from("iteration,mean,min,max,p5,p95\n");
        for s in stats {
            text.push_str(&format!(
                "{},{:e},{:e},{:e},{:e},{:e}\n",
                s.rounds, s.mean, s.min, s.max, s.p5, s.p95
            ));
        }
        obs.dir.write(crate::rundir::LATENCY, &text)?;
    }
    let l = &summary.last;
    let mut json = serde_json::json!({
        "algorithm": summary.algorithm,
        "step_size": summary.step_size,
        "last": l,
        "latency_final": latency.as_ref().and_then(|s| s.last().copied()),
        "traffic": sim.traffic(),
    });
    if let Some(cond) = &sim.config().run.until {
        // Where the run's stop condition held (null: never, and the run did all its rounds).
        json["until"] = serde_json::json!({ "condition": cond, "reached_at": summary.until });
    }
    obs.dir.write(
        crate::rundir::SUMMARY,
        &serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::remove_file(obs.dir.file(INCOMPLETE))
        .with_context(|| format!("cannot remove {}", obs.dir.file(INCOMPLETE).display()))?;
    #[allow(clippy::print_stdout)]
    if print {
        if let (Some(round), Some(cond)) = (summary.until, &sim.config().run.until) {
            println!("{cond} at iteration {round}: the run ends there (run.until)");
        }
        println!(
            "{}: {} iterations, train loss {:.6}, test accuracy {:.4}, uploads {} ({} delivered, {} lost, {} late, {} dropped), bits {}, simulated latency {:.3} s, {:.1} s; output in {}",
            summary.algorithm,
            l.iteration,
            l.train_loss,
            l.test_accuracy,
            l.uploads,
            l.delivered,
            l.lost,
            l.late,
            l.dropped,
            l.bits,
            l.latency_seconds,
            l.wall_seconds,
            dir.display()
        );
    }
    Ok(obs.rows)
}
