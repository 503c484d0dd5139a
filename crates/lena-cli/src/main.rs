//! `lena`: run communication-efficient distributed learning experiments.

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
    /// Run one experiment from a TOML file and/or flags (flags override the file).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Experiment file (TOML). Without one, flags and defaults describe the run.
    config: Option<PathBuf>,
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
    /// Metrics file, `.csv` or `.jsonl` (default `runs/NAME.csv`, NAME from the experiment file).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Metrics format, overriding the output's extension.
    #[arg(long, value_parser = ["csv", "jsonl"])]
    format: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
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

fn resolve_config(a: &RunArgs) -> Result<ExperimentConfig> {
    let mut cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read experiment file {}", path.display()))?;
            ExperimentConfig::from_toml(&text, &path.display().to_string())?
        }
        None => default_config(),
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

/// Writes each evaluation and drives the progress bar.
struct Progress {
    bar: ProgressBar,
    writer: Writer,
}

impl Observer for Progress {
    fn on_eval(&mut self, row: &MetricsRow) -> lena_sim::Result<()> {
        self.writer.write(row)?;
        self.bar.set_message(format!(
            "loss {:.4}  acc {:.4}  uploads {}  bits {:.3e}",
            row.train_loss, row.test_accuracy, row.uploads, row.bits as f64
        ));
        Ok(())
    }

    fn on_round(&mut self, round: u64) -> bool {
        self.bar.set_position(round);
        true
    }
}

fn run(a: RunArgs) -> Result<()> {
    let cfg = resolve_config(&a)?;
    let output = a.output.clone().unwrap_or_else(|| {
        let stem = a
            .config
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(format!("{}.csv", stem.unwrap_or_else(|| "run".into())))
    });
    let format = match a.format.as_deref() {
        Some("jsonl") => Format::Jsonl,
        Some(_) => Format::Csv,
        None => Format::from_path(&output),
    };
    let iterations = cfg.run.iterations;
    let mut sim = Simulation::new(cfg).context("cannot set up the experiment")?;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(iterations), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    };
    if !a.quiet {
        let sizes = sim.node_sizes();
        bar.println(format!(
            "lena: {} nodes ({}..{} samples each), step size {}, SIMD {}, {} threads",
            sizes.len(),
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0),
            sim.step_size(),
            lena_kernels::Kernels::detect().name(),
            rayon::current_num_threads(),
        ));
    }
    let writer = Writer::create(&output, format)?;
    let mut obs = Progress { bar, writer };
    let res = sim.run(&mut obs);
    obs.bar.finish_and_clear();
    let summary =
        res.with_context(|| format!("run stopped; metrics so far are in {}", output.display()))?;
    let l = &summary.last;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{}: {} iterations, train loss {:.6}, test accuracy {:.4}, uploads {} ({} delivered, {} lost, {} late, {} dropped), bits {}, simulated latency {:.3} s, {:.1} s; metrics in {}",
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
            output.display()
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run(a),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
