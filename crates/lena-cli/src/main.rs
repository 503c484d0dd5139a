//! `lena`: run communication-efficient distributed learning experiments.

mod backend;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lena_algo::{AlgorithmParams, StepSize};
use lena_sim::config::{DataConfig, DataSource, ModelConfig, RunConfig};
use lena_sim::metrics::{Format, Writer};
use lena_sim::{ExperimentConfig, MetricsRow, Observer, Simulation};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "lena",
    version,
    about = "Communication-efficient distributed learning: LENA and its peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one experiment from a TOML file and/or flags (flags override the file) into an
    /// output directory: config.toml (resolved), meta.json, metrics.csv, metrics.jsonl (both
    /// written as the run goes), summary.json, and latency.csv for a network with a clock.
    Run(Box<RunArgs>),
    /// Draw metrics of one or more runs as a line chart, PNG and SVG.
    Plot(PlotArgs),
    /// Run a grid of variations of an experiment, in parallel, each into its own run
    /// directory, and tabulate them (sweep.csv). With `--target`, also pick the best setting.
    Sweep(SweepArgs),
    /// `sweep` that picks the setting reaching `--target` with the least `--minimize`
    /// (by default the fewest bits), as the paper tuned its baselines by grid search.
    Tune(SweepArgs),
    /// Continue an interrupted run from its directory's checkpoint (config.toml and
    /// checkpoint.bin): the metrics files end exactly as an uninterrupted run's would.
    Resume(ResumeArgs),
}

#[derive(Args)]
struct SweepArgs {
    /// The base experiment file.
    config: PathBuf,
    /// A grid axis: `KEY=V1,V2,...` (repeatable; every combination runs), e.g.
    /// `--grid algorithm.step_size=0.01,0.05,0.1 --grid run.seed=1,2,3`.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// Overrides applied to every run (`KEY=VALUE`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Output directory (default `runs/NAME-sweep`).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Runs at once (default: one per core; each run then gets the remaining threads).
    #[arg(long)]
    jobs: Option<usize>,
    /// A target `COLUMN=VALUE` (reached when the column first gets there: `>=` for accuracy,
    /// `<=` for losses), e.g. `test_accuracy=0.88` or `train_loss=1.0`.
    #[arg(long)]
    target: Option<String>,
    /// What the best setting minimises at the target: bits (default), uploads,
    /// latency_seconds or iteration.
    #[arg(long, default_value = "bits")]
    minimize: String,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
struct ResumeArgs {
    /// The run directory.
    dir: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Stop after this round as Ctrl-C would, leaving a checkpoint.
    #[arg(long)]
    stop_at: Option<u64>,
    #[command(flatten)]
    backend: backend::BackendArgs,
}

#[derive(Args)]
struct PlotArgs {
    /// Run directories (or metrics CSV files) to draw, one line each.
    runs: Vec<PathBuf>,
    /// Output path without extension (writes OUT.png and OUT.svg).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Column for the x axis (iteration, bits, uploads, latency_seconds, ...).
    #[arg(long, default_value = "iteration")]
    x: String,
    /// Column for the y axis (train_loss, test_accuracy, upload_frequency, ...).
    #[arg(long, default_value = "train_loss")]
    y: String,
    /// Logarithmic x axis.
    #[arg(long)]
    log_x: bool,
    /// Logarithmic y axis.
    #[arg(long)]
    log_y: bool,
    /// Legend entries, one per run in order (default: each run's algorithm name).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Title (default: "Y vs X").
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Experiment file (TOML). Without one, flags and defaults describe the run.
    config: Option<PathBuf>,
    /// Override any field of the experiment, e.g. `--set algorithm.beta=20` or
    /// `--set faults.loss=0.1` (repeatable; the value is read as TOML, else as a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Dataset: mnist (from --data-dir), or a LIBSVM training file given with --train.
    #[arg(long)]
    dataset: Option<String>,
    /// Directory holding the four MNIST files (default data/mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// LIBSVM training file (implies --dataset libsvm).
    #[arg(long)]
    train: Option<PathBuf>,
    /// LIBSVM test file.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Split among nodes: iid, one_label or dirichlet:ALPHA.
    #[arg(long)]
    split: Option<String>,
    /// Number of nodes M.
    #[arg(long, short = 'm')]
    nodes: Option<usize>,
    /// Minibatch per node and round (0 = full batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Algorithm by name, with its default parameters (dgd, lena, lag_wk, lag_ps, lasg_wk2,
    /// laq, sasg, diana, ef_sgd); the file's `[algorithm]` table gives the others.
    #[arg(long, short = 'a')]
    algorithm: Option<String>,
    /// Step size: a number or "c/L" (c over the smoothness constant).
    #[arg(long)]
    step: Option<String>,
    /// L2 penalty lambda.
    #[arg(long)]
    lambda: Option<f32>,
    /// Objective: logistic_ova or softmax.
    #[arg(long)]
    objective: Option<String>,
    /// Rounds to run.
    #[arg(long, short = 'n')]
    iterations: Option<u64>,
    /// Evaluate every this many rounds.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Run seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (0 = one per core); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Use only the first N training samples.
    #[arg(long)]
    max_train: Option<usize>,
    /// Output directory (default `runs/NAME`, NAME from the experiment file).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Stop after this round as Ctrl-C would, leaving a checkpoint (`lena resume` continues).
    #[arg(long)]
    stop_at: Option<u64>,
    #[command(flatten)]
    backend: backend::BackendArgs,
}

fn default_config() -> ExperimentConfig {
    ExperimentConfig {
        data: DataConfig {
            source: DataSource::Mnist {
                dir: "data/mnist".into(),
            },
            split: "one_label".into(),
            nodes: 10,
            batch: 0,
            replacement: false,
            max_train: 0,
        },
        model: ModelConfig::default(),
        algorithm: AlgorithmParams::Dgd {
            step_size: StepSize::Rule("1/L".into()),
            missing: Default::default(),
        },
        run: RunConfig {
            iterations: 200,
            ..RunConfig::default()
        },
        network: Default::default(),
        accounting: Default::default(),
        faults: Default::default(),
    }
}

/// Applies `--set key=value` overrides to a TOML document.
fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .with_context(|| format!("--set {set:?}: expected KEY=VALUE"))?;
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let (last, path) = parts.split_last().expect("split gives one part");
        let mut cur = &mut *table;
        for p in path {
            cur = cur
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("--set {set:?}: {p} is not a table"))?;
        }
        cur.insert(last.to_string(), value);
    }
    Ok(())
}

fn resolve_config(a: &RunArgs) -> Result<ExperimentConfig> {
    let (text, name) = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read experiment file {}", path.display()))?;
            // Errors in the file itself name its lines.
            ExperimentConfig::from_toml(&text, &path.display().to_string())?;
            (text, path.display().to_string())
        }
        None => (toml::to_string(&default_config())?, "defaults".into()),
    };
    let mut cfg = if a.sets.is_empty() {
        ExperimentConfig::from_toml(&text, &name)?
    } else {
        let mut table: toml::Table = text.parse()?;
        apply_sets(&mut table, &a.sets)?;
        ExperimentConfig::from_toml(&toml::to_string(&table)?, &format!("{name} with --set"))?
    };
    let d = &mut cfg.data;
    match (a.dataset.as_deref(), &a.train) {
        (Some("libsvm") | None, Some(train)) => {
            d.source = DataSource::Libsvm {
                train: train.clone(),
                test: a.test.clone(),
            };
        }
        (Some("libsvm"), None) => anyhow::bail!("--dataset libsvm needs --train FILE"),
        (Some("mnist"), _) => {
            d.source = DataSource::Mnist {
                dir: a.data_dir.clone().unwrap_or("data/mnist".into()),
            }
        }
        (Some(other), _) => {
            anyhow::bail!("unknown --dataset {other:?}, expected one of: mnist, libsvm")
        }
        (None, None) => {
            if let (Some(dir), DataSource::Mnist { dir: cur }) = (&a.data_dir, &mut d.source) {
                *cur = dir.clone();
            }
        }
    }
    if let Some(v) = &a.split {
        d.split = v.clone();
    }
    if let Some(v) = a.nodes {
        d.nodes = v;
    }
    if let Some(v) = a.batch {
        d.batch = v;
    }
    if let Some(v) = a.max_train {
        d.max_train = v;
    }
    if let Some(name) = &a.algorithm {
        // Built through the same deserializer as the file, so defaults and errors match.
        let step = toml::Value::try_from(cfg.algorithm.step_size())?;
        let mut table = toml::Table::new();
        table.insert("name".into(), toml::Value::String(name.clone()));
        table.insert("step_size".into(), step);
        cfg.algorithm = table.try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("--algorithm {name:?}: {}", e.message())
        })?;
    }
    if let Some(v) = &a.step {
        let step = match v.parse::<f32>() {
            Ok(x) => StepSize::Value(x),
            Err(_) => StepSize::Rule(v.clone()),
        };
        *cfg.algorithm.step_size_mut() = step;
    }
    if let Some(v) = a.lambda {
        cfg.model.lambda = v;
    }
    if let Some(v) = &a.objective {
        cfg.model.objective = v.parse().map_err(anyhow::Error::msg)?;
    }
    let r = &mut cfg.run;
    if let Some(v) = a.iterations {
        r.iterations = v;
    }
    if let Some(v) = a.eval_every {
        r.eval_every = v;
    }
    if let Some(v) = a.seed {
        r.seed = v;
    }
    if let Some(v) = a.threads {
        r.threads = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Writes each evaluation (CSV and JSON lines) and checkpoints, and drives the progress bar.
struct Progress {
    bar: ProgressBar,
    csv: Writer,
    jsonl: Writer,
    rows: Vec<MetricsRow>,
    dir: PathBuf,
    stop_at: Option<u64>,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The checkpoint file of a run directory: the metrics files' lengths at the checkpoint, then
/// the simulation's state.
const CHECKPOINT: &str = "checkpoint.bin";

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
        // Atomic: written beside the old one, then renamed over it.
        let mut bytes = Vec::with_capacity(state.len() + 24);
        bytes.extend_from_slice(&round.to_le_bytes());
        bytes.extend_from_slice(&self.csv.written()?.to_le_bytes());
        bytes.extend_from_slice(&self.jsonl.written()?.to_le_bytes());
        bytes.extend_from_slice(state);
        let path = self.dir.join(CHECKPOINT);
        let tmp = self.dir.join(format!("{CHECKPOINT}.tmp"));
        let io = |err| lena_sim::Error::Io {
            path: path.clone(),
            err,
        };
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

/// Run metadata (meta.json).
#[derive(serde::Serialize)]
struct Meta<'a> {
    label: String,
    algorithm: String,
    step_size: f32,
    seed: u64,
    version: &'a str,
    git_commit: &'a str,
    simd: &'a str,
    threads: usize,
    nodes: usize,
    node_samples: (usize, usize),
    started_unix: u64,
    backend: String,
}

/// A note that lives in a run directory until the run has finished: whoever finds metrics
/// files beside it knows they stop early, and why.
const INCOMPLETE: &str = "INCOMPLETE";
const INCOMPLETE_NOTE: &str = "This run has not finished (it is running, or it was stopped or \
killed): metrics.csv and metrics.jsonl end at the last evaluation written. `lena resume` on this \
directory continues from checkpoint.bin if there is one.\n";

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn run(a: RunArgs) -> Result<()> {
    let cfg = resolve_config(&a)?;
    let dir = a.output.clone().unwrap_or_else(|| {
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
    run_in(cfg, &dir, a.quiet, a.stop_at, true, &started).map(|_| ())
}

/// Runs `cfg` into the run directory `dir`; returns the evaluations.
fn run_in(
    cfg: ExperimentConfig,
    dir: &std::path::Path,
    quiet: bool,
    stop_at: Option<u64>,
    print: bool,
    backend: &backend::Started,
) -> Result<Vec<MetricsRow>> {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_file(&dir.join("config.toml"), &toml::to_string(&cfg)?)?;
    let iterations = cfg.run.iterations;
    let threads = if cfg.run.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.run.threads
    };
    let seed = cfg.run.seed;
    let sim = Simulation::new(cfg).context("cannot set up the experiment")?;
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
    write_file(
        &dir.join("meta.json"),
        &serde_json::to_string_pretty(&meta)?,
    )?;
    write_file(&dir.join(INCOMPLETE), INCOMPLETE_NOTE)?;
    let sim = backend.attach(sim, Some(&dir.join(INCOMPLETE)))?;
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
            dir.display(),
        ));
        bar
    };
    let obs = Progress {
        bar,
        csv: Writer::create(&dir.join("metrics.csv"), Format::Csv)?,
        jsonl: Writer::create(&dir.join("metrics.jsonl"), Format::Jsonl)?,
        rows: Vec::new(),
        dir: dir.clone(),
        stop_at,
        interrupted: interrupted(),
    };
    finish(sim, obs, print)
}

/// A progress bar over a run's rounds, with rate and ETA, on stderr.
fn round_bar(iterations: u64) -> ProgressBar {
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
fn interrupted() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
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
const STOPPED: u8 = 130;

/// A stop that left a checkpoint: not an error, but not a finished run either.
#[derive(Debug)]
struct StoppedRun(u64, PathBuf);

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
fn finish(mut sim: Simulation, mut obs: Progress, print: bool) -> Result<Vec<MetricsRow>> {
    let dir = obs.dir.clone();
    let res = sim.run(&mut obs);
    obs.bar.finish_and_clear();
    if let Err(lena_sim::Error::Transport(e)) = &res {
        // Another process exited or hangs: say so beside the metrics, then end the whole job
        // (a hung rank would never return).
        let note = format!(
            "{INCOMPLETE_NOTE}The run stopped at round {}: {e}.\n",
            sim.round()
        );
        let _ = std::fs::write(dir.join(INCOMPLETE), note);
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
    let (total, every) = (sim.config().run.iterations, sim.config().run.eval_every);
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
        write_file(&dir.join("latency.csv"), &text)?;
    }
    let l = &summary.last;
    let json = serde_json::json!({
        "algorithm": summary.algorithm,
        "step_size": summary.step_size,
        "last": l,
        "latency_final": latency.as_ref().and_then(|s| s.last().copied()),
        "traffic": sim.traffic(),
    });
    write_file(
        &dir.join("summary.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    let _ = std::fs::remove_file(dir.join(INCOMPLETE));
    #[allow(clippy::print_stdout)]
    if print {
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

/// Every combination of the grid's axes, as `--set` lists, in a fixed order.
fn combinations(grid: &[String]) -> Result<Vec<Vec<(String, String)>>> {
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in grid {
        let (key, values) = axis
            .split_once('=')
            .with_context(|| format!("--grid {axis:?}: expected KEY=V1,V2,..."))?;
        let values: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        anyhow::ensure!(!values.is_empty(), "--grid {axis:?}: no values");
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
fn reached<'a>(rows: &'a [MetricsRow], column: &str, value: f64) -> Result<Option<&'a MetricsRow>> {
    let get = |r: &MetricsRow| -> Result<f64> {
        let v = serde_json::to_value(r)?;
        v[column]
            .as_f64()
            .with_context(|| format!("--target: no metrics column {column:?}"))
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

fn sweep(a: SweepArgs, tune: bool) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read experiment file {}", a.config.display()))?;
    let name = a.config.display().to_string();
    ExperimentConfig::from_toml(&text, &name)?;
    let combos = combinations(&a.grid)?;
    let target = match (&a.target, tune) {
        (Some(t), _) => {
            let (c, v) = t
                .split_once('=')
                .with_context(|| format!("--target {t:?}: expected COLUMN=VALUE"))?;
            Some((
                c.trim().to_string(),
                v.trim()
                    .parse::<f64>()
                    .with_context(|| format!("--target {t:?}: not a number"))?,
            ))
        }
        (None, true) => {
            anyhow::bail!("lena tune needs --target COLUMN=VALUE, e.g. test_accuracy=0.88")
        }
        (None, false) => None,
    };
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
        let cfg = ExperimentConfig::from_toml(
            &toml::to_string(&table)?,
            &format!("{name} with {}", sets.join(" ")),
        )?;
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
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Vec<MetricsRow>>>>> = jobs_cfg
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((label, cfg)) = jobs_cfg.get(i) else {
                        break;
                    };
                    let mut cfg = cfg.clone();
                    if cfg.run.threads == 0 {
                        cfg.run.threads = threads_each;
                    }
                    let dir = out.join(label.replace(['/', ' ', '"'], "_"));
                    let local = backend::Started::local();
                    let r = run_in(cfg, &dir, true, None, false, &local);
                    *results[i].lock().expect("no panics while holding the lock") = Some(r);
                    bar.inc(1);
                    bar.set_message(label.clone());
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut table =
        String::from("setting,final_train_loss,final_test_accuracy,uploads,bits,latency_seconds");
    if let Some((c, v)) = &target {
        table.push_str(&format!(
            ",iteration_at_{c}_{v},bits_at_target,uploads_at_target,latency_at_target"
        ));
    }
    table.push('\n');
    let mut best: Option<(f64, String)> = None;
    let mut failed = Vec::new();
    for ((label, _), r) in jobs_cfg.iter().zip(&results) {
        let r = r
            .lock()
            .expect("threads are done")
            .take()
            .expect("every run ran");
        let rows = match r {
            Ok(rows) => rows,
            Err(e) => {
                failed.push(format!("{label}: {e:#}"));
                table.push_str(&format!("{label},failed,,,,\n"));
                continue;
            }
        };
        let l = rows.last().context("a run without evaluations")?;
        table.push_str(&format!(
            "{label},{},{},{},{},{}",
            l.train_loss, l.test_accuracy, l.uploads, l.bits, l.latency_seconds
        ));
        if let Some((c, v)) = &target {
            match reached(&rows, c, *v)? {
                Some(r) => {
                    table.push_str(&format!(
                        ",{},{},{},{}",
                        r.iteration, r.bits, r.uploads, r.latency_seconds
                    ));
                    let cost = match a.minimize.as_str() {
                        "bits" => r.bits as f64,
                        "uploads" => r.uploads as f64,
                        "latency_seconds" => r.latency_seconds,
                        "iteration" => r.iteration as f64,
                        other => anyhow::bail!(
                            "--minimize {other:?}: expected one of bits, uploads, latency_seconds, iteration"
                        ),
                    };
                    if best.as_ref().is_none_or(|(b, _)| cost < *b) {
                        best = Some((cost, label.clone()));
                    }
                }
                None => table.push_str(",never,,,"),
            }
        }
        table.push('\n');
    }
    write_file(&out.join("sweep.csv"), &table)?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{} runs; table in {}",
            jobs_cfg.len(),
            out.join("sweep.csv").display()
        );
        if let Some((c, v)) = &target {
            match &best {
                Some((cost, label)) => {
                    println!("best for {c} = {v}: {label} ({} {cost})", a.minimize);
                    write_file(
                        &out.join("best.json"),
                        &serde_json::to_string_pretty(&serde_json::json!({
                            "setting": label, "target": format!("{c}={v}"), "minimize": a.minimize, "value": cost
                        }))?,
                    )?;
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

fn resume(a: ResumeArgs) -> Result<()> {
    let started = a.backend.start()?;
    let dir = a.dir;
    let cfg_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!(
            "cannot read {} (is {} a run directory?)",
            cfg_path.display(),
            dir.display()
        )
    })?;
    let cfg = ExperimentConfig::from_toml(&text, &cfg_path.display().to_string())?;
    let ckpt_path = dir.join(CHECKPOINT);
    let bytes = std::fs::read(&ckpt_path).with_context(|| {
        format!(
            "cannot read {}: no checkpoint to resume from",
            ckpt_path.display()
        )
    })?;
    anyhow::ensure!(
        bytes.len() >= 24,
        "{}: truncated checkpoint",
        ckpt_path.display()
    );
    let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let (round, csv_len, jsonl_len) = (word(0), word(1), word(2));
    let iterations = cfg.run.iterations;
    let sim = Simulation::new(cfg).context("cannot set up the experiment")?;
    if started.is_worker() {
        // The server sends the checkpoint's state with its first command.
        return started.serve(sim);
    }
    write_file(&dir.join(INCOMPLETE), INCOMPLETE_NOTE)?;
    let mut sim = started.attach(sim, Some(&dir.join(INCOMPLETE)))?;
    sim.load_state(&bytes[24..])
        .with_context(|| format!("{}", ckpt_path.display()))?;
    anyhow::ensure!(
        sim.round() == round,
        "{}: round mismatch",
        ckpt_path.display()
    );
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let bar = round_bar(iterations);
        bar.set_position(round);
        bar.println(format!(
            "lena: resuming {} at iteration {round}",
            dir.display()
        ));
        bar
    };
    let obs = Progress {
        bar,
        csv: Writer::resume(&dir.join("metrics.csv"), Format::Csv, csv_len)?,
        jsonl: Writer::resume(&dir.join("metrics.jsonl"), Format::Jsonl, jsonl_len)?,
        rows: Vec::new(),
        dir: dir.clone(),
        stop_at: a.stop_at,
        interrupted: interrupted(),
    };
    finish(sim, obs, true).map(|_| ())
}

fn plot(a: PlotArgs) -> Result<()> {
    anyhow::ensure!(
        !a.runs.is_empty(),
        "lena plot: give at least one run directory"
    );
    anyhow::ensure!(
        a.labels.is_empty() || a.labels.len() == a.runs.len(),
        "lena plot: {} --label for {} runs",
        a.labels.len(),
        a.runs.len()
    );
    let mut series = Vec::new();
    for (i, run) in a.runs.iter().enumerate() {
        let (csv, meta) = if run.is_dir() {
            (run.join("metrics.csv"), Some(run.join("meta.json")))
        } else {
            (run.clone(), None)
        };
        let table = lena_plot::Table::read(&csv)?;
        let col = |name: &str| {
            table.column(name).with_context(|| {
                format!(
                    "{}: no column {name:?}; columns are: {}",
                    csv.display(),
                    table.names.join(", ")
                )
            })
        };
        let (x, y) = (col(&a.x)?, col(&a.y)?);
        let label = match a.labels.get(i) {
            Some(l) => l.clone(),
            None => meta
                .and_then(|m| std::fs::read_to_string(m).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["label"].as_str().map(String::from))
                .unwrap_or_else(|| run.display().to_string()),
        };
        series.push(lena_plot::Series {
            label,
            points: x.into_iter().zip(y).collect(),
        });
    }
    let chart = lena_plot::Chart {
        title: a.title.unwrap_or_else(|| format!("{} vs {}", a.y, a.x)),
        x_label: a.x.clone(),
        y_label: a.y.clone(),
        log_x: a.log_x,
        log_y: a.log_y,
        series,
    };
    let [png, svg] = lena_plot::draw(&chart, &a.output)?;
    #[allow(clippy::print_stdout)]
    {
        println!("wrote {} and {}", png.display(), svg.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run(*a),
        Command::Plot(a) => plot(a),
        Command::Resume(a) => resume(a),
        Command::Sweep(a) => sweep(a, false),
        Command::Tune(a) => sweep(a, true),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<StoppedRun>() => {
            eprintln!("lena: {e}");
            std::process::ExitCode::from(STOPPED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
