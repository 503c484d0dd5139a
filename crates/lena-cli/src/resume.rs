//! `lena resume`: an interrupted run continued from its verified checkpoint.

use crate::run::{Progress, finish, interrupted, round_bar};
use crate::rundir::{CHECKPOINT, CONFIG, CSV, INCOMPLETE, INCOMPLETE_NOTE, JSONL, RunDir};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use lena_sim::metrics::{Format, Writer};
use lena_sim::{ExperimentConfig, Simulation};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ResumeArgs {
    /// The run directory.
    pub(crate) dir: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Stop after this round as Ctrl-C would, leaving a checkpoint.
    #[arg(long)]
    pub(crate) stop_at: Option<u64>,
    #[command(flatten)]
    pub(crate) backend: crate::backend::BackendArgs,
}

pub(crate) fn resume(a: ResumeArgs) -> Result<()> {
    let started = a.backend.start()?;
    let cfg_path = a.dir.join(CONFIG);
    let read_config = || -> Result<(String, ExperimentConfig)> {
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "cannot read {} (is {} a run directory?)",
                cfg_path.display(),
                a.dir.display()
            )
        })?;
        let cfg = ExperimentConfig::from_toml(&text, &cfg_path.display().to_string())?;
        Ok((text, cfg))
    };
    let set_up = |cfg: ExperimentConfig| {
        let relative = cfg.data.source.paths().iter().any(|p| p.is_relative());
        Simulation::new(cfg).with_context(|| {
            let from = if relative {
                let cwd = std::env::current_dir().unwrap_or_default();
                format!(
                    " (its relative data paths are read from the current directory, {})",
                    cwd.display()
                )
            } else {
                String::new()
            };
            format!(
                "cannot set up the experiment of {}{from}",
                cfg_path.display()
            )
        })
    };
    if started.is_worker() {
        // The server sends the checkpoint's state with its first command.
        let (_, cfg) = read_config()?;
        return started.serve(set_up(cfg)?);
    }
    let dir = RunDir::open(&a.dir)?;
    let (text, cfg) = read_config()?;
    let iterations = cfg.run.iterations;
    // Everything is checked before anything in the directory is written.
    let found = crate::rundir::verify(&dir, &text, &cfg)?;
    same_simd(&dir)?;
    let ck = found.checkpoint;
    let ckpt_path = dir.file(CHECKPOINT);
    // Attaching writes nothing; loading checks the state (and, in a multi-process run, sends
    // it to the worker processes), all before anything in the directory is written.
    let mut sim = started
        .attach(set_up(cfg)?, Some(&dir.file(INCOMPLETE)))
        .inspect_err(|e| dir.note_failure(&format!("{e:#}")))?;
    sim.load_state(&ck.state)
        .with_context(|| format!("{}", ckpt_path.display()))?;
    anyhow::ensure!(
        sim.round() == ck.round,
        "{}: its header says round {}, its state round {}",
        ckpt_path.display(),
        ck.round,
        sim.round()
    );
    let mark = |name| ck.file(name).expect("verified");
    if let Some(rows) = &found.rebuild_csv {
        let tmp = dir.file("metrics.csv.tmp");
        std::fs::write(&tmp, lena_sim::metrics::render(rows, Format::Csv))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.file(CSV))
            .with_context(|| format!("cannot replace {}", dir.file(CSV).display()))?;
    }
    let csv = Writer::resume(&dir.file(CSV), Format::Csv, mark(CSV))?;
    let jsonl = Writer::resume(&dir.file(JSONL), Format::Jsonl, mark(JSONL))?;
    dir.write(INCOMPLETE, INCOMPLETE_NOTE)?;
    let round = ck.round;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let bar = round_bar(iterations);
        bar.set_position(round);
        bar.println(format!(
            "lena: resuming {} at iteration {round}",
            dir.path().display()
        ));
        bar
    };
    let obs = Progress {
        bar,
        csv,
        jsonl,
        rows: Vec::new(),
        config: mark(CONFIG),
        dir,
        stop_at: a.stop_at,
        interrupted: interrupted(),
    };
    finish(sim, obs, true).map(|_| ())
}

/// A run resumes on the instruction-set path it started on: another lane count sums in another
/// order, and the resumed run would silently differ from an uninterrupted one.
fn same_simd(dir: &RunDir) -> Result<()> {
    let path = dir.file(crate::rundir::META);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let started = meta["simd"]
        .as_str()
        .with_context(|| format!("{}: no simd field", path.display()))?;
    let here = lena_kernels::Kernels::detect().name();
    anyhow::ensure!(
        started == here,
        "{}: the run started on the SIMD path {started:?}, this process would take {here:?}, and \
         its results would differ from an uninterrupted run's; resume it with \
         LENA_SIMD={} on a CPU that runs that path",
        path.display(),
        started.split(' ').next().unwrap_or(started)
    );
    Ok(())
}
