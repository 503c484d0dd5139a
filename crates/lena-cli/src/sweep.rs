//! `lena sweep` and `lena tune`: a grid of variations of an experiment, each in its own run
//! directory, tabulated; `tune` picks the cheapest setting that reaches a target.

use crate::flags::{absolute_paths, apply_sets};
use crate::run::{run_in, write_file};
use crate::rundir::RunDir;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lena_sim::{ExperimentConfig, MetricsRow};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct SweepArgs {
    /// The base experiment file.
    pub(crate) config: PathBuf,
    /// A grid axis: `KEY=V1,V2,...` (repeatable; every combination runs), e.g.
    /// `--grid algorithm.step_size=0.01,0.05,0.1 --grid run.seed=1,2,3`.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Overrides applied to every run (`KEY=VALUE`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
    /// Output directory (default `runs/NAME-sweep`).
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
    /// Replace earlier results: the run directories of this grid and sweep.csv.
    #[arg(long)]
    pub(crate) force: bool,
    /// Runs at once (default: one per core; each run then gets the remaining threads).
    #[arg(long)]
    jobs: Option<usize>,
    /// A target `COLUMN=VALUE` (reached when the column first gets there: `>=` for accuracy,
    /// `<=` for losses), e.g. `test_accuracy=0.88` or `train_loss=1.0`.
    #[arg(long)]
    target: Option<String>,
    /// What the best setting minimises at the target: bits (default), uploads,
    /// latency_seconds, iteration, or any other cost or loss column of the metrics; with
    /// `--target iteration=T`, e.g. `--minimize val_loss` picks the least validation loss
    /// after T rounds.
    #[arg(long, default_value = "bits")]
    minimize: String,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// Every combination of the grid's axes, as `--set` lists, in a fixed order.
fn combinations(grid: &[String]) -> Result<Vec<Vec<(String, String)>>> {
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in grid {
        let (key, values) = axis.split_once('=').with_context(|| {
            format!("--grid {}: expected KEY=V1,V2,...", lena_data::quote(axis))
        })?;
        let values: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        anyhow::ensure!(
            !values.is_empty(),
            "--grid {}: no values",
            lena_data::quote(axis)
        );
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.trim().to_string(), v.to_string()));
                    c
                })
            })
            .collect();
    }
    Ok(combos)
}

/// When a run first reaches `target` (`column=value`): the row, if ever.
pub(crate) fn reached<'a>(
    rows: &'a [MetricsRow],
    column: &str,
    value: f64,
) -> Result<Option<&'a MetricsRow>> {
    let get = |r: &MetricsRow| -> Result<f64> {
        r.get(column).with_context(|| {
            if lena_sim::metrics::COLUMNS.contains(&column) {
                format!("--target: the runs have no {column} (val_* need data.validation > 0)")
            } else {
                format!(
                    "--target: no metrics column {}; columns are: {}",
                    lena_data::quote(column),
                    lena_sim::metrics::COLUMNS.join(", ")
                )
            }
        })
    };
    // Accuracy-like columns must rise to the target, loss-like ones fall to it.
    let rising = !column.contains("loss");
    for r in rows {
        let x = get(r)?;
        if (rising && x >= value) || (!rising && x <= value) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

pub(crate) fn sweep(a: SweepArgs, tune: bool) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read experiment file {}", a.config.display()))?;
    let name = a.config.display().to_string();
    ExperimentConfig::from_toml(&text, &name)?;
    let combos = combinations(&a.grid)?;
    let target = match (&a.target, tune) {
        (Some(t), _) => {
            let (c, v) = t.split_once('=').with_context(|| {
                format!("--target {}: expected COLUMN=VALUE", lena_data::quote(t))
            })?;
            Some((
                c.trim().to_string(),
                v.trim()
                    .parse::<f64>()
                    .with_context(|| format!("--target {}: not a number", lena_data::quote(t)))?,
            ))
        }
        (None, true) => {
            anyhow::bail!("lena tune needs --target COLUMN=VALUE, e.g. test_accuracy=0.88")
        }
        (None, false) => None,
    };
    anyhow::ensure!(
        lena_sim::metrics::COLUMNS.contains(&a.minimize.as_str())
            && !a.minimize.contains("accuracy"),
        "--minimize {}: expected a cost or loss column (bits, uploads, latency_seconds, iteration, \
         train_loss, val_loss, ...); columns are: {}",
        lena_data::quote(&a.minimize),
        lena_sim::metrics::COLUMNS.join(", ")
    );
    // Every configuration is checked before anything runs.
    let mut jobs_cfg = Vec::new();
    for combo in &combos {
        let mut table: toml::Table = text.parse()?;
        let sets: Vec<String> = a
            .sets
            .iter()
            .cloned()
            .chain(combo.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        apply_sets(&mut table, &sets)?;
        let mut cfg = ExperimentConfig::from_generated_toml(
            &toml::to_string(&table)?,
            &format!("{name} with {}", sets.join(" ")),
        )?;
        absolute_paths(&mut cfg)?;
        let label: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let label = if label.is_empty() {
            "base".to_string()
        } else {
            // `;` between axes keeps the label one CSV field and a valid directory name.
            label.join(";")
        };
        jobs_cfg.push((label, cfg));
    }
    let out = a.output.clone().unwrap_or_else(|| {
        let stem = a
            .config
            .file_stem()
            .map_or("run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(format!("{stem}-sweep"))
    });
    // Every run directory is claimed before anything runs: earlier results are refused (or,
    // with --force, replaced) all at once, not run by run.
    let table_path = out.join("sweep.csv");
    anyhow::ensure!(
        a.force || !table_path.exists(),
        "{} already holds a sweep ({} exists); pass --force to replace its results, or choose \
         another output directory with -o",
        out.display(),
        table_path.display()
    );
    let mut claimed = Vec::with_capacity(jobs_cfg.len());
    for (label, _) in &jobs_cfg {
        let dir = out.join(label.replace(['/', ' ', '"'], "_"));
        claimed.push(RunDir::create(&dir, a.force)?);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = a.jobs.unwrap_or(cores).clamp(1, jobs_cfg.len().max(1));
    let threads_each = (cores / jobs).max(1);
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(
            Some(jobs_cfg.len() as u64),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} runs [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        bar.println(format!(
            "lena sweep: {} runs, {jobs} at a time, {threads_each} threads each -> {}",
            jobs_cfg.len(),
            out.display()
        ));
        bar
    };
    let results = run_many(&jobs_cfg, claimed, threads_each, jobs, &bar, false);
    let mut table =
        String::from("setting,final_train_loss,final_test_accuracy,uploads,bits,latency_seconds");
    if let Some((c, v)) = &target {
        table.push_str(&format!(
            ",iteration_at_{c}_{v},bits_at_target,uploads_at_target,latency_at_target"
        ));
    }
    table.push('\n');
    let minimize = |r: &MetricsRow| -> Result<f64> {
        r.get(&a.minimize).with_context(|| {
            format!(
                "--minimize {}: the runs have no such column (val_* need data.validation > 0)",
                lena_data::quote(&a.minimize)
            )
        })
    };
    // Per run: the last row and, with a target, the cost where it was first reached.
    let mut finals: Vec<Option<MetricsRow>> = Vec::new();
    let mut costs: Vec<Option<f64>> = Vec::new();
    let mut failed = Vec::new();
    for ((label, _), r) in jobs_cfg.iter().zip(results) {
        let rows = match r {
            Ok(rows) => rows,
            // Divergence is an outcome of a setting (a step size too large), not a failure of
            // the sweep: it never reaches a target.
            Err(e)
                if e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<lena_sim::Error>(),
                        Some(lena_sim::Error::Diverged { .. })
                    )
                }) =>
            {
                table.push_str(&format!("{label},diverged,,,,"));
                if target.is_some() {
                    table.push_str(",never,,,");
                }
                table.push('\n');
                finals.push(None);
                costs.push(None);
                continue;
            }
            Err(e) => {
                failed.push(format!("{label}: {e:#}"));
                table.push_str(&format!("{label},failed,,,,\n"));
                finals.push(None);
                costs.push(None);
                continue;
            }
        };
        let l = rows.last().context("a run without evaluations")?;
        table.push_str(&format!(
            "{label},{},{},{},{},{}",
            l.train_loss, l.test_accuracy, l.uploads, l.bits, l.latency_seconds
        ));
        finals.push(Some(l.clone()));
        let mut cost = None;
        if let Some((c, v)) = &target {
            match reached(&rows, c, *v)? {
                Some(r) => {
                    table.push_str(&format!(
                        ",{},{},{},{}",
                        r.iteration, r.bits, r.uploads, r.latency_seconds
                    ));
                    cost = Some(minimize(r)?);
                }
                None => table.push_str(",never,,,"),
            }
        }
        costs.push(cost);
        table.push('\n');
    }
    let labels: Vec<&str> = jobs_cfg.iter().map(|(l, _)| l.as_str()).collect();
    let with_seeds = combos
        .iter()
        .any(|c| c.iter().any(|(k, _)| k == "run.seed"));
    // The best setting: by its mean cost over seeds when the grid has seeds (a setting counts
    // only if every seed reached the target), else by the cost of its one run.
    let mut best: Option<(f64, String, usize, f64)> = None;
    if with_seeds {
        let mut text = String::from(
            "setting,seeds,final_train_loss_mean,final_train_loss_ci95,final_test_accuracy_mean,\
             final_test_accuracy_ci95,bits_mean,bits_ci95",
        );
        if target.is_some() {
            text.push_str(&format!(
                ",reached,{0}_at_target_mean,{0}_at_target_ci95",
                a.minimize
            ));
        }
        text.push('\n');
        for (setting, members) in crate::seeds::group(&labels) {
            let done: Vec<&MetricsRow> =
                members.iter().filter_map(|&i| finals[i].as_ref()).collect();
            let stat = |f: &dyn Fn(&MetricsRow) -> f64| {
                crate::seeds::mean_ci(&done.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (loss, loss_ci) = stat(&|r| r.train_loss);
            let (acc, acc_ci) = stat(&|r| r.test_accuracy);
            let (bits, bits_ci) = stat(&|r| r.bits as f64);
            text.push_str(&format!(
                "{setting},{},{loss},{loss_ci},{acc},{acc_ci},{bits},{bits_ci}",
                members.len()
            ));
            if target.is_some() {
                let reached: Vec<f64> = members.iter().filter_map(|&i| costs[i]).collect();
                let (mean, ci) = crate::seeds::mean_ci(&reached);
                text.push_str(&format!(",{},{mean},{ci}", reached.len()));
                if reached.len() == members.len() && best.as_ref().is_none_or(|(b, ..)| mean < *b) {
                    best = Some((mean, setting.clone(), members.len(), ci));
                }
            }
            text.push('\n');
        }
        write_file(&out.join("seeds.csv"), &text)?;
    } else {
        for (label, cost) in labels.iter().zip(&costs) {
            if let Some(cost) = *cost
                && best.as_ref().is_none_or(|(b, ..)| cost < *b)
            {
                best = Some((cost, label.to_string(), 1, f64::NAN));
            }
        }
    }
    write_file(&table_path, &table)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{} runs; table in {}", jobs_cfg.len(), table_path.display());
        if let Some((c, v)) = &target {
            match &best {
                Some((cost, label, n, ci)) if *n > 1 => {
                    println!(
                        "best for {c} = {v}: {label} ({} {cost} +- {ci} over {n} seeds, 95% CI)",
                        a.minimize
                    );
                    write_file(
                        &out.join("best.json"),
                        &serde_json::to_string_pretty(&serde_json::json!({
                            "setting": label, "target": format!("{c}={v}"), "minimize": a.minimize,
                            "value": cost, "seeds": n, "ci95": ci
                        }))?,
                    )?;
                }
                Some((cost, label, ..)) => {
                    println!("best for {c} = {v}: {label} ({} {cost})", a.minimize);
                    write_file(
                        &out.join("best.json"),
                        &serde_json::to_string_pretty(&serde_json::json!({
                            "setting": label, "target": format!("{c}={v}"), "minimize": a.minimize, "value": cost
                        }))?,
                    )?;
                }
                None if with_seeds => {
                    println!("no setting reached {c} = {v} with every seed")
                }
                None => println!("no setting reached {c} = {v}"),
            }
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    Ok(())
}

/// Runs `runs` (label, configuration) into their claimed directories `dirs`, `jobs` at a time,
/// in order, each with `threads_each` threads where its configuration leaves `run.threads` to
/// the machine (0), all reading their data from one [`lena_sim::DataCache`] (each source loaded
/// once). Every run goes, whatever the others do; each one's evaluations or error, in order.
/// `print`: each run's summary line as it ends.
pub(crate) fn run_many(
    runs: &[(String, ExperimentConfig)],
    dirs: Vec<RunDir>,
    threads_each: usize,
    jobs: usize,
    bar: &ProgressBar,
    print: bool,
) -> Vec<Result<Vec<MetricsRow>>> {
    use std::sync::Mutex;
    let data = lena_sim::DataCache::new();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let dirs: Vec<Mutex<Option<RunDir>>> = dirs.into_iter().map(|d| Mutex::new(Some(d))).collect();
    let results: Vec<Mutex<Option<Result<Vec<MetricsRow>>>>> =
        runs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((label, cfg)) = runs.get(i) else {
                        break;
                    };
                    let mut cfg = cfg.clone();
                    if cfg.run.threads == 0 {
                        cfg.run.threads = threads_each;
                    }
                    let dir = dirs[i]
                        .lock()
                        .expect("no panics while holding the lock")
                        .take()
                        .expect("each run directory is taken once");
                    let local = crate::backend::Started::local();
                    let r = run_in(cfg, dir, true, None, print, &local, Some(&data));
                    *results[i].lock().expect("no panics while holding the lock") = Some(r);
                    bar.inc(1);
                    bar.set_message(label.clone());
                }
            });
        }
    });
    bar.finish_and_clear();
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("threads are done")
                .expect("every run ran")
        })
        .collect()
}
