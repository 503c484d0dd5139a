//! How `lena run`'s flags, `--set` and the experiment file combine into one configuration.

use anyhow::{Context, Result, bail};
use clap::Args;
use lena_algo::{AlgorithmParams, DgdParams, StepSize};
use lena_sim::ExperimentConfig;
use lena_sim::config::{DataConfig, DataSource, ModelConfig, RunConfig};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Experiment file (TOML). Without one, flags and defaults describe the run.
    pub(crate) config: Option<PathBuf>,
    /// Override any field of the experiment, e.g. `--set algorithm.beta=20` or
    /// `--set faults.loss=0.1` (repeatable; the value is read as TOML, else as a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) sets: Vec<String>,
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
    pub(crate) split: Option<String>,
    /// Number of nodes M.
    #[arg(long, short = 'm')]
    pub(crate) nodes: Option<usize>,
    /// Minibatch per node and round (0 = full batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Algorithm by name, with its default parameters (dgd, lena, lag_wk, lag_ps, lasg_wk2,
    /// laq, sasg, diana, ef_sgd): replaces the file's `[algorithm]` table, keeping its step
    /// size; `--set algorithm.FIELD=...` then applies on top.
    #[arg(long, short = 'a')]
    pub(crate) algorithm: Option<String>,
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
    pub(crate) iterations: Option<u64>,
    /// Evaluate every this many rounds.
    #[arg(long)]
    pub(crate) eval_every: Option<u64>,
    /// Run seed.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Worker threads (0 = one per core); results do not depend on it.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Use only the first N training samples.
    #[arg(long)]
    max_train: Option<usize>,
    /// Output directory (default `runs/NAME`, NAME from the experiment file). It must be new
    /// or empty: a directory holding a run is refused unless `--force`.
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
    /// Replace the run already in the output directory (removes only the files lena writes).
    #[arg(long)]
    pub(crate) force: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Stop after this round as Ctrl-C would, leaving a checkpoint (`lena resume` continues).
    #[arg(long)]
    pub(crate) stop_at: Option<u64>,
    #[command(flatten)]
    pub(crate) backend: crate::backend::BackendArgs,
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
        algorithm: AlgorithmParams::new(StepSize::Rule("1/L".into()), DgdParams::default()),
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
pub(crate) fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
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
pub(crate) fn resolve_config(a: &RunArgs) -> Result<ExperimentConfig> {
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
pub(crate) fn absolute_paths(cfg: &mut ExperimentConfig) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    cfg.data.source.resolve_paths(&cwd);
    Ok(())
}
