//! `lena batch`: a list of experiments run in one process, a few at a time, each into its own
//! run directory; the runs load each data source once and share it.

use crate::flags::{absolute_paths, apply_sets};
use crate::rundir::RunDir;
use crate::sweep::run_many;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use lena_sim::ExperimentConfig;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct BatchArgs {
    /// The batch file (TOML): one `[[run]]` table per run, with `config` (an experiment file),
    /// `output` (its run directory) and optionally `set` (overrides, `["KEY=VALUE", ...]`, as
    /// `lena run --set`). Relative paths are from the current directory.
    file: PathBuf,
    /// Replace earlier results in the runs' directories (only files lena writes).
    #[arg(long)]
    force: bool,
    /// Runs at once (default: one per core; each run then gets the remaining threads).
    #[arg(long)]
    jobs: Option<usize>,
}

/// A batch file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    run: Vec<BatchRun>,
}

/// One run of a batch file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRun {
    config: PathBuf,
    output: PathBuf,
    #[serde(default)]
    set: Vec<String>,
}

pub(crate) fn batch(a: BatchArgs) -> Result<()> {
    let name = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read batch file {name}"))?;
    let file: BatchFile = toml::from_str(&text).with_context(|| {
        format!("{name}: expected [[run]] tables with config, output and set (a list of KEY=VALUE)")
    })?;
    // Every configuration is checked, and every run directory claimed, before anything runs.
    let mut runs = Vec::with_capacity(file.run.len());
    let mut dirs = Vec::with_capacity(file.run.len());
    for (i, r) in file.run.iter().enumerate() {
        let what = format!("{name}: run {} ({})", i + 1, r.output.display());
        let base = std::fs::read_to_string(&r.config).with_context(|| {
            format!("{what}: cannot read experiment file {}", r.config.display())
        })?;
        let config_name = r.config.display().to_string();
        ExperimentConfig::from_toml(&base, &config_name).with_context(|| what.clone())?;
        let mut table: toml::Table = base.parse()?;
        apply_sets(&mut table, &r.set).with_context(|| what.clone())?;
        let mut cfg = ExperimentConfig::from_generated_toml(
            &toml::to_string(&table)?,
            &format!("{config_name} with {}", r.set.join(" ")),
        )
        .with_context(|| what.clone())?;
        absolute_paths(&mut cfg)?;
        runs.push((r.output.display().to_string(), cfg));
        dirs.push(RunDir::create(&r.output, a.force).with_context(|| what.clone())?);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = a.jobs.unwrap_or(cores).clamp(1, runs.len().max(1));
    let threads_each = (cores / jobs).max(1);
    let results = run_many(
        &runs,
        dirs,
        threads_each,
        jobs,
        &ProgressBar::hidden(),
        true,
    );
    let failed: Vec<String> = runs
        .iter()
        .zip(results)
        .filter_map(|((label, _), r)| r.err().map(|e| format!("{label}: {e:#}")))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} runs failed:\n{}",
        failed.len(),
        runs.len(),
        failed.join("\n")
    );
    Ok(())
}
