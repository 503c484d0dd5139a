//! `lena`: run communication-efficient distributed learning experiments.

mod backend;
mod rundir;
mod seeds;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lena_algo::{AlgorithmParams, StepSize};
use lena_sim::checkpoint::{Checkpoint, Mark};
use lena_sim::config::{DataConfig, DataSource, ModelConfig, RunConfig};
use lena_sim::metrics::{Format, Writer};
use lena_sim::{ExperimentConfig, MetricsRow, Observer, Simulation};
use rundir::{CHECKPOINT, CONFIG, CSV, INCOMPLETE, INCOMPLETE_NOTE, JSONL, RunDir};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

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
    /// Run one experiment from a TOML file and/or flags into a new output directory:
    /// config.toml (resolved), meta.json, metrics.csv, metrics.jsonl (both written as the run
    /// goes), summary.json, and latency.csv for a network with a clock. Flags apply over the
    /// file, then every `--set` over both (`--set` always wins).
    Run(Box<RunArgs>),
    /// Draw metrics of one or more runs as a line chart, PNG and SVG.
    Plot(PlotArgs),
    /// Run a grid of variations of an experiment, in parallel, each into its own run
    /// directory, and tabulate them (sweep.csv). With `--target`, also pick the best setting.
    Sweep(SweepArgs),
    /// `sweep` that picks the setting reaching `--target` with the least `--minimize`
    /// (by default the fewest bits), as the paper tuned its baselines by grid search. With a
    /// `run.seed` axis, a setting's cost is its mean over seeds and it counts only if every
    /// seed reached the target (seeds.csv: mean and 95% interval per setting); ties go to the
    /// first setting in grid order.
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
    /// Replace earlier results: the run directories of this grid and sweep.csv.
    #[arg(long)]
    force: bool,
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
    /// laq, sasg, diana, ef_sgd): replaces the file's `[algorithm]` table, keeping its step
    /// size; `--set algorithm.FIELD=...` then applies on top.
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
    /// Output directory (default `runs/NAME`, NAME from the experiment file). It must be new
    /// or empty: a directory holding a run is refused unless `--force`.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Replace the run already in the output directory (removes only the files lena writes).
    #[arg(long)]
    force: bool,
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
            validation: 0.0,
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

/// Sets `path` (dotted) in `table` to `value`, making tables on the way.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, path) = parts.split_last().expect("split gives one part");
    let mut cur = &mut *table;
    for p in path {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| {
                format!(
                    "{}: {} is not a table",
                    lena_data::quote(key),
                    lena_data::quote(p)
                )
            })?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

/// The table at `path` in `table`, if there is one.
fn get_path<'t>(table: &'t toml::Table, path: &str) -> Option<&'t toml::Value> {
    let mut parts = path.split('.');
    let mut cur = table.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

/// Applies `--set key=value` overrides to a TOML document.
fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .with_context(|| format!("--set {}: expected KEY=VALUE", lena_data::quote(set)))?;
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        set_path(table, key, value).with_context(|| format!("--set {}", lena_data::quote(set)))?;
    }
    Ok(())
}

/// Applies the run flags to a TOML document, as the fields they stand for.
fn apply_flags(table: &mut toml::Table, a: &RunArgs) -> Result<()> {
    use toml::Value as V;
    let path = |p: &Path| V::String(p.display().to_string());
    let kind = get_path(table, "data.source.kind").and_then(|v| v.as_str().map(String::from));
    let mut source = |fields: Vec<(&str, V)>| {
        let t: toml::Table = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        set_path(table, "data.source", V::Table(t))
    };
    match (a.dataset.as_deref(), &a.train) {
        (Some("libsvm") | None, Some(train)) => {
            let mut f = vec![("kind", V::String("libsvm".into())), ("train", path(train))];
            if let Some(test) = &a.test {
                f.push(("test", path(test)));
            }
            anyhow::ensure!(
                a.data_dir.is_none(),
                "--data-dir is for MNIST, not with --train"
            );
            source(f)?;
        }
        (Some("libsvm"), None) => bail!("--dataset libsvm needs --train FILE"),
        (Some("mnist"), _) => {
            anyhow::ensure!(a.test.is_none(), "--test is for LIBSVM data (with --train)");
            let dir = a.data_dir.clone().unwrap_or("data/mnist".into());
            source(vec![
                ("kind", V::String("mnist".into())),
                ("dir", path(&dir)),
            ])?;
        }
        (Some(other), _) => bail!(
            "unknown --dataset {}, expected one of: mnist, libsvm",
            lena_data::quote(other)
        ),
        (None, None) => {
            if let Some(dir) = &a.data_dir {
                anyhow::ensure!(
                    kind.as_deref() == Some("mnist"),
                    "--data-dir is for the mnist source; the experiment's source is {}",
                    kind.as_deref().unwrap_or("not set")
                );
                set_path(table, "data.source.dir", path(dir))?;
            }
            if let Some(test) = &a.test {
                anyhow::ensure!(
                    kind.as_deref() == Some("libsvm"),
                    "--test is for LIBSVM data; the experiment's source is {}",
                    kind.as_deref().unwrap_or("not set")
                );
                set_path(table, "data.source.test", path(test))?;
            }
        }
    }
    // TOML integers are i64: a larger value is an error, never a different number.
    let int = |key: &str, v: u64| -> Result<V> {
        i64::try_from(v).map(V::Integer).map_err(|_| {
            anyhow::anyhow!("{key} = {v} is past the largest integer a run takes, 2^63 - 1")
        })
    };
    let mut fields: Vec<(&str, V)> = Vec::new();
    if let Some(v) = &a.split {
        fields.push(("data.split", V::String(v.clone())));
    }
    if let Some(v) = a.nodes {
        fields.push(("data.nodes", int("data.nodes", v as u64)?));
    }
    if let Some(v) = a.batch {
        fields.push(("data.batch", int("data.batch", v as u64)?));
    }
    if let Some(v) = a.max_train {
        fields.push(("data.max_train", int("data.max_train", v as u64)?));
    }
    if let Some(name) = &a.algorithm {
        anyhow::ensure!(
            lena_algo::ALGORITHM_NAMES.contains(&name.as_str()),
            "--algorithm {}: unknown algorithm, expected one of: {}",
            lena_data::quote(name),
            lena_algo::ALGORITHM_NAMES.join(", ")
        );
        // NAME's defaults, keeping the step size the file (or the defaults) gave.
        let mut t = toml::Table::new();
        t.insert("name".into(), V::String(name.clone()));
        if let Some(step) = get_path(table, "algorithm.step_size") {
            t.insert("step_size".into(), step.clone());
        }
        table.insert("algorithm".into(), V::Table(t));
    }
    if let Some(v) = &a.step {
        let step = match v.parse::<f64>() {
            Ok(x) => V::Float(x),
            Err(_) => V::String(v.clone()),
        };
        fields.push(("algorithm.step_size", step));
    }
    if let Some(v) = a.lambda {
        fields.push(("model.lambda", V::Float(f64::from(v))));
    }
    if let Some(v) = &a.objective {
        fields.push(("model.objective", V::String(v.clone())));
    }
    if let Some(v) = a.iterations {
        fields.push(("run.iterations", int("run.iterations", v)?));
    }
    if let Some(v) = a.eval_every {
        fields.push(("run.eval_every", int("run.eval_every", v)?));
    }
    if let Some(v) = a.seed {
        fields.push(("run.seed", int("run.seed", v)?));
    }
    if let Some(v) = a.threads {
        fields.push(("run.threads", int("run.threads", v as u64)?));
    }
    for (key, value) in fields {
        set_path(table, key, value)?;
    }
    Ok(())
}

/// The experiment of `lena run`: the file (or the defaults), then the flags, then every
/// `--set`, checked once; relative data paths are made absolute (from the current directory)
/// so that the run directory's config.toml finds the same files from anywhere.
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
    let mut table: toml::Table = text.parse()?;
    apply_flags(&mut table, a)?;
    apply_sets(&mut table, &a.sets)?;
    let mut cfg = ExperimentConfig::from_generated_toml(
        &toml::to_string(&table)?,
        &format!("{name} with the command line's flags and --set"),
    )?;
    absolute_paths(&mut cfg)?;
    Ok(cfg)
}

/// Makes the data source's relative paths absolute, from the current directory.
fn absolute_paths(cfg: &mut ExperimentConfig) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    cfg.data.source.resolve_paths(&cwd);
    Ok(())
}

/// Writes each evaluation (CSV and JSON lines) and checkpoints, and drives the progress bar.
struct Progress {
    bar: ProgressBar,
    csv: Writer,
    jsonl: Writer,
    rows: Vec<MetricsRow>,
    dir: RunDir,
    /// What config.toml holds (every checkpoint records it).
    config: Mark,
    stop_at: Option<u64>,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
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

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn run(a: RunArgs) -> Result<()> {
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
    run_in(cfg, dir, a.quiet, a.stop_at, true, &started).map(|_| ())
}

/// Sets up `cfg` and runs it into the claimed run directory `dir`; returns the evaluations.
/// A set-up failure leaves nothing behind; a later failure is noted in `INCOMPLETE`.
fn run_in(
    cfg: ExperimentConfig,
    dir: RunDir,
    quiet: bool,
    stop_at: Option<u64>,
    print: bool,
    backend: &backend::Started,
) -> Result<Vec<MetricsRow>> {
    let iterations = cfg.run.iterations;
    let threads = if cfg.run.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.run.threads
    };
    let seed = cfg.run.seed;
    let config_text = toml::to_string(&cfg)?;
    let sim = match Simulation::new(cfg) {
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
    dir.write(rundir::META, &serde_json::to_string_pretty(&meta)?)?;
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
        obs.dir.write(rundir::LATENCY, &text)?;
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
    obs.dir
        .write(rundir::SUMMARY, &serde_json::to_string_pretty(&json)?)?;
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
fn reached<'a>(rows: &'a [MetricsRow], column: &str, value: f64) -> Result<Option<&'a MetricsRow>> {
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

fn sweep(a: SweepArgs, tune: bool) -> Result<()> {
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
        claimed.push(std::sync::Mutex::new(Some(RunDir::create(&dir, a.force)?)));
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
                    let dir = claimed[i]
                        .lock()
                        .expect("no panics while holding the lock")
                        .take()
                        .expect("each run directory is taken once");
                    let local = backend::Started::local();
                    let r = run_in(cfg, dir, true, None, false, &local);
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
    for ((label, _), r) in jobs_cfg.iter().zip(&results) {
        let r = r
            .lock()
            .expect("threads are done")
            .take()
            .expect("every run ran");
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
        for (setting, members) in seeds::group(&labels) {
            let done: Vec<&MetricsRow> =
                members.iter().filter_map(|&i| finals[i].as_ref()).collect();
            let stat = |f: &dyn Fn(&MetricsRow) -> f64| {
                seeds::mean_ci(&done.iter().map(|r| f(r)).collect::<Vec<_>>())
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
                let (mean, ci) = seeds::mean_ci(&reached);
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

fn resume(a: ResumeArgs) -> Result<()> {
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
    let found = rundir::verify(&dir, &text, &cfg)?;
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
    let path = dir.file(rundir::META);
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
                    "{}: no column {}; columns are: {}",
                    csv.display(),
                    lena_data::quote(name),
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
            band: Vec::new(),
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
    let res = lena_kernels::Kernels::from_env()
        .map_err(anyhow::Error::new)
        .and_then(|_| match cli.command {
            Command::Run(a) => run(*a),
            Command::Plot(a) => plot(a),
            Command::Resume(a) => resume(a),
            Command::Sweep(a) => sweep(a, false),
            Command::Tune(a) => sweep(a, true),
        });
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
