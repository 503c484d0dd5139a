//! The experiment file: what to run, on what data, for how long.
//!
//! ```toml
//! [data]
//! split = "one_label"      # iid | one_label | dirichlet:ALPHA
//! nodes = 10
//! batch = 0                # 0 = full batch
//! [data.source]
//! kind = "mnist"
//! dir = "data/mnist"
//! [model]
//! objective = "logistic_ova"
//! lambda = 0.001
//! [algorithm]
//! name = "dgd"
//! step_size = "1/L"        # or a number
//! [run]
//! iterations = 200
//! eval_every = 10
//! seed = 1
//! ```

use crate::{Error, Result};
use lena_algo::AlgorithmParams;
use lena_model::Objective;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The field serde's `unknown field` message names.
fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0.to_string())
}

/// The first line at or after `from` (1-based) that writes the key `field` (alone or as the
/// last part of a dotted key), and the header of the table it is in.
fn find_key(text: &str, from: usize, field: &str) -> Option<(usize, String)> {
    let mut header = "the top level".to_string();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            header = t.split('#').next().unwrap_or(t).trim().to_string();
            continue;
        }
        let Some((key, _)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if i + 1 >= from && (key == field || key.ends_with(&format!(".{field}"))) {
            return Some((i + 1, header));
        }
    }
    None
}

/// The fields a table takes, from serde's `expected ...` list, with the table's tag (`name`
/// for `[algorithm]`, `kind` for the tables tagged by kind).
fn valid_fields(msg: &str, table: &str) -> Option<String> {
    let listed: Vec<&str> = match msg.split_once("expected ") {
        Some((_, rest)) => rest.split('`').skip(1).step_by(2).collect(),
        None => return None,
    };
    // [algorithm] is `name`, `step_size` and the named algorithm's own fields (serde lists
    // only the latter); the tables tagged by kind add `kind`.
    let own: &[&str] = if table == " in [algorithm]" {
        &["name", "step_size"]
    } else if table.ends_with("compressor]")
        || table.ends_with("drift]")
        || table.ends_with("source]")
        || table.ends_with("network]")
    {
        &["kind"]
    } else {
        &[]
    };
    let all: Vec<String> = own
        .iter()
        .copied()
        .chain(listed)
        .map(|f| format!("`{f}`"))
        .collect();
    Some(all.join(", "))
}

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Data source, split and batching.
    pub data: DataConfig,
    /// The model trained: objective, regularisation, network sizes.
    #[serde(default)]
    pub model: ModelConfig,
    /// Algorithm and its parameters.
    pub algorithm: AlgorithmParams,
    /// Length, evaluation interval, seed.
    #[serde(default)]
    pub run: RunConfig,
    /// The network model that turns message sizes into a clock (default: ideal).
    #[serde(default)]
    pub network: lena_net::NetworkParams,
    /// How uploads are counted beyond their payload.
    #[serde(default)]
    pub accounting: AccountingConfig,
    /// Injected faults (default: none).
    #[serde(default)]
    pub faults: FaultConfig,
}

/// Counting beyond the payload bits (ALGORITHMS.md, "Bit accounting").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingConfig {
    /// Charge a 1-bit "silent" flag for every online node that does not upload in a round
    /// (default off: the paper counts uploads).
    #[serde(default)]
    pub silent_flag: bool,
    /// Rounds in the window of the upload-frequency metric (the paper's figure 1 uses 1000).
    #[serde(default = "default_window")]
    pub window: u64,
}

fn default_window() -> u64 {
    1000
}

impl Default for AccountingConfig {
    fn default() -> Self {
        Self {
            silent_flag: false,
            window: default_window(),
        }
    }
}

/// Faults injected into a run, each drawn from the node's own seeded stream, so that two
/// algorithms run with the same seed see the same fault pattern.
///
/// - `loss`: each upload is lost with this probability. The server treats the node as silent;
///   the node learns it from the next broadcast's delivery bit ([`lena_algo::Worker::on_lost`]).
/// - `straggler`: with this probability a node's upload in a round was computed on parameters
///   `1..=max_delay` rounds old (uniform): the server does not wait for the straggler and uses
///   its stale result. A delay beyond `deadline` (default `max_delay`: none) means the upload
///   missed the round and is dropped, as a loss.
/// - `leave` / `rejoin`: an online node goes offline with probability `leave` per round and an
///   offline node comes back with probability `rejoin` per round; offline nodes compute and
///   send nothing and the server applies its missing-upload rule
///   ([`lena_algo::Worker::on_absent`] on return).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that an upload is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a node's upload is stale.
    #[serde(default)]
    pub straggler: f64,
    /// Largest staleness of a straggler, in rounds (default 1).
    #[serde(default)]
    pub max_delay: Option<u64>,
    /// Staleness beyond which a straggler's upload is dropped (default: `max_delay`).
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Probability per round that an online node goes offline.
    #[serde(default)]
    pub leave: f64,
    /// Probability per round that an offline node comes back.
    #[serde(default)]
    pub rejoin: f64,
}

impl FaultConfig {
    /// True if no fault can happen.
    pub fn is_none(&self) -> bool {
        self.loss == 0.0 && self.straggler == 0.0 && self.leave == 0.0
    }

    /// Whether an upload can be lost: a loss probability, or stragglers whose delay can pass
    /// the deadline (then a node's worker must be able to undo its upload).
    pub fn loses_uploads(&self) -> bool {
        self.loss > 0.0 || (self.straggler > 0.0 && self.deadline() < self.max_delay())
    }

    /// Largest straggler delay (rounds).
    pub fn max_delay(&self) -> u64 {
        self.max_delay.unwrap_or(1)
    }

    /// Straggler deadline (rounds).
    pub fn deadline(&self) -> u64 {
        self.deadline.unwrap_or(self.max_delay())
    }
}

/// Where the data comes from and how nodes see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The dataset.
    pub source: DataSource,
    /// `iid`, `one_label` or `dirichlet:ALPHA`.
    #[serde(default = "default_split")]
    pub split: String,
    /// Number of nodes M.
    pub nodes: usize,
    /// Minibatch size per node and round; 0 means full batch. Without replacement it must not
    /// exceed any node's sample count (an error names the node).
    #[serde(default)]
    pub batch: usize,
    /// Sample minibatches with replacement: every index drawn uniformly and independently, so
    /// a batch may repeat samples and may be larger than a node's data (default: without,
    /// epoch-wise, where a batch larger than a node's data is an error).
    #[serde(default)]
    pub replacement: bool,
    /// Use only the first `n` training samples (0 = all); for quick runs.
    #[serde(default)]
    pub max_train: usize,
    /// Share of the training samples held out as a validation set (0 = none, at most 0.5),
    /// class by class, before the nodes' split: the metrics gain `val_loss` and
    /// `val_accuracy`, on which tuning chooses (never on the test set). The held-out samples
    /// depend only on the data and this share, not on the run's seed, so every seed and
    /// method trains on the same data.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub validation: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn default_split() -> String {
    "one_label".into()
}

/// A dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// The four MNIST IDX files in `dir` (gzipped or raw).
    Mnist {
        /// Directory holding them (`cargo xtask data mnist` fills `data/mnist`).
        dir: PathBuf,
    },
    /// LIBSVM-format files.
    Libsvm {
        /// Training file.
        train: PathBuf,
        /// Test file; without one, accuracy is measured on the training set.
        #[serde(default)]
        test: Option<PathBuf>,
        /// The most memory the dense training (or test) matrix may take, in GiB (default 8): a
        /// file whose largest index asks for more is refused before anything is allocated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_dense_gib: Option<f64>,
    },
    /// Any IDX image-classification set (Fashion-MNIST, KMNIST, EMNIST, ...): four files by
    /// name, raw or gzipped.
    Idx {
        /// Directory the four names are relative to (default: the names as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<PathBuf>,
        /// Training images.
        train_images: PathBuf,
        /// Training labels.
        train_labels: PathBuf,
        /// Test images.
        test_images: PathBuf,
        /// Test labels.
        test_labels: PathBuf,
        /// Number of classes (default: the largest label plus one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        classes: Option<usize>,
    },
    /// Seeded Gaussian clusters (for tests and demos).
    Synthetic {
        /// Training samples.
        samples: usize,
        /// Test samples.
        test_samples: usize,
        /// Features per sample.
        features: usize,
        /// Number of classes (labels `0..classes`).
        classes: usize,
        /// Distance between cluster centres.
        #[serde(default = "default_separation")]
        separation: f32,
    },
}

impl DataSource {
    /// An IDX source's four files, each joined to its `dir` if it has one.
    pub fn idx_files(&self) -> Option<lena_data::mnist::IdxFiles> {
        let DataSource::Idx {
            dir,
            train_images,
            train_labels,
            test_images,
            test_labels,
            ..
        } = self
        else {
            return None;
        };
        let at = |p: &PathBuf| dir.as_ref().map_or(p.clone(), |d| d.join(p));
        Some(lena_data::mnist::IdxFiles {
            train_images: at(train_images),
            train_labels: at(train_labels),
            test_images: at(test_images),
            test_labels: at(test_labels),
        })
    }

    /// The files and directories the source reads.
    pub fn paths(&self) -> Vec<&std::path::Path> {
        match self {
            DataSource::Mnist { dir } => vec![dir],
            DataSource::Libsvm { train, test, .. } => std::iter::once(train.as_path())
                .chain(test.as_deref())
                .collect(),
            DataSource::Idx {
                dir,
                train_images,
                train_labels,
                test_images,
                test_labels,
                ..
            } => dir
                .as_deref()
                .into_iter()
                .chain([train_images, train_labels, test_images, test_labels].map(|p| p.as_path()))
                .collect(),
            DataSource::Synthetic { .. } => Vec::new(),
        }
    }

    /// Makes relative paths absolute by joining them to `base` (e.g. the directory a run was
    /// started from), so that the source names the same files from any directory. (An IDX
    /// source's names stay relative to its `dir` when it has one.)
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            DataSource::Mnist { dir } => fix(dir),
            DataSource::Libsvm { train, test, .. } => {
                fix(train);
                if let Some(t) = test {
                    fix(t);
                }
            }
            DataSource::Idx { dir: Some(dir), .. } => fix(dir),
            DataSource::Idx {
                dir: None,
                train_images,
                train_labels,
                test_images,
                test_labels,
                ..
            } => {
                for p in [train_images, train_labels, test_images, test_labels] {
                    fix(p);
                }
            }
            DataSource::Synthetic { .. } => {}
        }
    }
}

fn default_separation() -> f32 {
    3.0
}

/// The objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `logistic_ova`, `softmax`, `cnn` (the paper's network of figure 3), `cnn_wide` or `mlp`.
    #[serde(default = "default_objective")]
    pub objective: Objective,
    /// L2 penalty lambda.
    #[serde(default = "default_lambda")]
    pub lambda: f32,
    /// Dropout rate of the networks' hidden layers during training (ignored by linear models;
    /// default 0.5 for the CNNs, as the paper's network, and 0 for the MLP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f32>,
    /// Hidden layer sizes of `objective = "mlp"` (default one layer of 200 units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<usize>,
}

impl ModelConfig {
    /// The dropout rate, given or the objective's default.
    pub fn dropout(&self) -> f32 {
        self.dropout.unwrap_or(match self.objective {
            Objective::Mlp => 0.0,
            _ => 0.5,
        })
    }

    /// The MLP's hidden sizes, given or the default `[200]` (empty for other objectives).
    pub fn hidden(&self) -> Vec<usize> {
        match (self.objective, self.hidden.is_empty()) {
            (Objective::Mlp, true) => vec![200],
            _ => self.hidden.clone(),
        }
    }
}

fn default_objective() -> Objective {
    Objective::LogisticOva
}
fn default_lambda() -> f32 {
    1e-3
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            objective: default_objective(),
            lambda: default_lambda(),
            dropout: None,
            hidden: Vec::new(),
        }
    }
}

/// Run length and bookkeeping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Rounds to run.
    #[serde(default = "default_iterations")]
    pub iterations: u64,
    /// Evaluate (train loss, test accuracy) every this many rounds, and at the end.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Seed of every random stream of the run.
    #[serde(default)]
    pub seed: u64,
    /// Worker threads (0 = one per core). Results do not depend on it.
    #[serde(default)]
    pub threads: usize,
    /// Stop as diverged when the train loss exceeds this multiple of its initial value.
    #[serde(default = "default_divergence")]
    pub divergence_factor: f64,
    /// Write a checkpoint every this many rounds (0: never).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Record wall-clock seconds in the metrics (false writes 0, so that a run's metrics are
    /// a pure function of its config and seed, byte for byte).
    #[serde(default = "default_true")]
    pub wall_clock: bool,
    /// End the run at the first evaluation where this holds, e.g. `"test_accuracy>=0.86"` or
    /// `"train_loss<=0.3"` ([`crate::metrics::Condition`]); the summary records the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Also check `until` every this many rounds between evaluations (0: at evaluations
    /// only), computing only the column it names (the validation or test set, not the full
    /// train loss); where it holds, a full evaluation row is written and the run ends. A
    /// tuning run thus stops at the exact round its target is met, at a fraction of an
    /// evaluation's cost.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub check_every: u64,
}

fn is_zero_u64(x: &u64) -> bool {
    *x == 0
}

fn default_checkpoint_every() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}

fn default_iterations() -> u64 {
    100
}
fn default_eval_every() -> u64 {
    10
}
fn default_divergence() -> f64 {
    1e3
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            iterations: default_iterations(),
            eval_every: default_eval_every(),
            seed: 0,
            threads: 0,
            divergence_factor: default_divergence(),
            checkpoint_every: default_checkpoint_every(),
            wall_clock: true,
            until: None,
            check_every: 0,
        }
    }
}

impl ExperimentConfig {
    /// Parses TOML text; errors name `source_name`, the line and the offending key.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self> {
        Self::parse(text, &|n, line, table| {
            format!("{source_name}:{n}: `{line}`{table}")
        })
    }

    /// Parses TOML text the program assembled (a file with command-line overrides), whose line
    /// numbers mean nothing to the user: errors name `what`, the offending line's text and its
    /// table.
    pub fn from_generated_toml(text: &str, what: &str) -> Result<Self> {
        Self::parse(text, &|_, line, table| format!("{what}: `{line}`{table}"))
    }

    /// `locate(line number, line text, " in [table]" or "")` says where an error is.
    fn parse(text: &str, locate: &dyn Fn(usize, &str, &str) -> String) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            // The parser's message may quote a whole value of the input.
            let mut msg = lena_data::clip(e.message(), 5 * lena_data::QUOTE_CHARS).into_owned();
            let start = e.span().map_or(0, |s| s.start.min(text.len()));
            let mut n = text[..start].matches('\n').count() + 1;
            let mut table = String::new();
            if let Some(field) = unknown_field(&msg) {
                // Tagged tables are read whole, so serde points at their header: find the
                // line that writes the field, and list what the table takes.
                if let Some((line, header)) = find_key(text, n, &field) {
                    n = line;
                    table = format!(" in {header}");
                }
                msg = format!(
                    "unknown field `{}`{}",
                    lena_data::clip(&field, lena_data::QUOTE_CHARS),
                    valid_fields(&msg, &table)
                        .map(|v| format!("; valid fields here: {v}"))
                        .unwrap_or_default()
                );
            } else if msg.contains("unknown variant") && msg.contains("dgd") {
                // [algorithm] is read whole, so serde points at its header: find `name`.
                if let Some((line, _)) = find_key(text, n, "name") {
                    n = line;
                }
                let algos = lena_algo::ALGORITHM_NAMES.join(", ");
                msg = format!("{msg} (algorithm.name must be one of: {algos})");
            }
            let content = text.lines().nth(n - 1).unwrap_or("").trim();
            let content = lena_data::clip(content, lena_data::QUOTE_CHARS);
            Error::Config(format!("{}: {msg}", locate(n, &content, &table)))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot (ranges, the split's syntax).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, expected: &str, found: String| {
            Err(Error::Config(format!(
                "{field} must be {expected}, got {found}"
            )))
        };
        if self.data.nodes == 0 {
            return bad("data.nodes", ">= 1", "0".into());
        }
        if let Err(e) = self.data.split.parse::<lena_data::split::Split>() {
            return Err(Error::Config(format!("data.split: {e}")));
        }
        if self.run.eval_every == 0 {
            return bad("run.eval_every", ">= 1", "0".into());
        }
        if !self.model.hidden.is_empty() && self.model.objective != Objective::Mlp {
            return bad(
                "model.hidden",
                "absent unless model.objective = \"mlp\" (the other models have no hidden \
                 sizes to set)",
                format!("{:?}", self.model.hidden),
            );
        }
        if !(0.0..=0.5).contains(&self.data.validation) {
            return bad(
                "data.validation",
                "a share of the training samples in [0, 0.5]",
                self.data.validation.to_string(),
            );
        }
        if let Some(u) = &self.run.until {
            let c = u
                .parse::<crate::metrics::Condition>()
                .map_err(|e| Error::Config(format!("run.until = {e}")))?;
            if c.column.starts_with("val_") && self.data.validation == 0.0 {
                return bad(
                    "run.until",
                    "a condition on a column the run writes (val_* columns need \
                     data.validation > 0)",
                    format!("{u:?}"),
                );
            }
        }
        if self.run.check_every > 0 && self.run.until.is_none() {
            return bad(
                "run.check_every",
                "0 without run.until (it checks that condition between evaluations)",
                self.run.check_every.to_string(),
            );
        }
        if self.run.divergence_factor.is_nan() || self.run.divergence_factor <= 1.0 {
            return bad(
                "run.divergence_factor",
                "> 1",
                self.run.divergence_factor.to_string(),
            );
        }
        for (field, p) in [
            ("faults.loss", self.faults.loss),
            ("faults.straggler", self.faults.straggler),
            ("faults.leave", self.faults.leave),
            ("faults.rejoin", self.faults.rejoin),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, "a probability in [0, 1]", p.to_string());
            }
        }
        if self.faults.loss == 1.0 {
            return bad("faults.loss", "below 1 (every upload lost)", "1".into());
        }
        if !(1..=1000).contains(&self.faults.max_delay()) {
            return bad(
                "faults.max_delay",
                "in 1..=1000 rounds",
                self.faults.max_delay().to_string(),
            );
        }
        if self.faults.leave > 0.0 && self.faults.rejoin == 0.0 {
            return bad(
                "faults.rejoin",
                "> 0 when faults.leave > 0 (nodes that leave must be able to return)",
                "0".into(),
            );
        }
        if let DataSource::Libsvm {
            max_dense_gib: Some(g),
            ..
        } = self.data.source
            && !(g.is_finite() && g > 0.0)
        {
            return bad(
                "data.source.max_dense_gib",
                "a positive number of GiB",
                g.to_string(),
            );
        }
        if let DataSource::Idx {
            classes: Some(k), ..
        } = self.data.source
            && !(2..=256).contains(&k)
        {
            return bad(
                "data.source.classes",
                "in 2..=256 (labels are bytes)",
                k.to_string(),
            );
        }
        if self.accounting.window == 0 {
            return bad("accounting.window", ">= 1", "0".into());
        }
        if let Err(e) = self.network.check() {
            return Err(Error::Config(e.to_string()));
        }
        if let DataSource::Synthetic {
            samples,
            features,
            classes,
            test_samples,
            ..
        } = self.data.source
            && (samples == 0 || features == 0 || classes < 2 || test_samples == 0)
        {
            return bad(
                "data.source (synthetic)",
                "samples, test_samples, features >= 1 and classes >= 2",
                format!("{samples}, {test_samples}, {features}, {classes}"),
            );
        }
        Ok(())
    }
}
