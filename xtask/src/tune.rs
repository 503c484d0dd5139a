//! `cargo xtask reproduce tune FIGURE [METHOD...]`: the tuning protocol of the replication
//! study (docs/REPRODUCTION.md). For every setting of a figure and every method, `lena tune`
//! runs a grid over the method's free constants on a **validation split** held out from the
//! training data (`data.validation`), never on the test set; each grid point runs with every
//! tuning seed and stops at the exact round its validation target is met (`run.until`,
//! `run.check_every = 1`). The setting with the least mean cost over the tuning seeds that
//! every seed reached wins (ties: the first in grid order).
//!
//! Committed results, under `experiments/tuned/FIGURE/`: `SETTING-METHOD.toml`, the chosen
//! experiment file (the figure's file with the method's and the chosen constants written
//! in), `SETTING-METHOD.csv`, the tuning table (per grid point: seeds, mean and 95% interval
//! of the cost, how many seeds reached), and `tuning.csv`, one line per method with its choice
//! and where it came from (date, commit). `cargo xtask reproduce FIGURE --tuned` then runs the
//! chosen files over fresh seeds and reports means with intervals on the test set.

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Step sizes the paper's methods are tuned over: a log grid from 0.01 to 2, plus 1/L.
pub const STEPS: &str = "0.01,0.02,0.05,0.1,0.2,0.5,1,2,1/L";

/// The coarser step grid of the composition frontier and of the LENA variants beyond the
/// paper's (every paper method chose a step of 0.5 or more on the full grid).
pub const COARSE_STEPS: &str = "0.1,0.2,0.5,1,2";

/// Seeds of the tuning runs (the evaluation uses others: [`EVAL_SEEDS`]).
pub const TUNE_SEEDS: &str = "1,2";

/// Seeds of the evaluation of the chosen settings (`--tuned`), disjoint from the tuning seeds.
pub const EVAL_SEEDS: [u64; 5] = [101, 102, 103, 104, 105];

/// Share of the training samples held out for validation (class by class, the same samples
/// whatever the seed), in tuning and in the evaluation of the chosen settings alike.
pub const VALIDATION: &str = "0.1";

/// One method of a study: fixed overrides and the grid over its free constants (the step
/// size axis is added to every method).
pub struct Method {
    /// File-name key and legend label.
    pub key: &'static str,
    pub label: &'static str,
    /// Whether the method belongs to the paper's figure (else: the composition frontier).
    pub paper: bool,
    /// The step-size axis: [`STEPS`] or [`COARSE_STEPS`].
    pub steps: &'static str,
    pub sets: &'static [&'static str],
    pub grid: &'static [&'static str],
}

const fn m(
    key: &'static str,
    label: &'static str,
    paper: bool,
    sets: &'static [&'static str],
    grid: &'static [&'static str],
) -> Method {
    Method {
        key,
        label,
        paper,
        steps: if paper { STEPS } else { COARSE_STEPS },
        sets,
        grid,
    }
}

/// Figure 2's methods: the paper's (DGD, LAG-WK, DIANA-QSGD, LENA-m, LENA-m with k = 3) with
/// their constants, LENA-m's other reference norms, and the compositions of the frontier.
pub const FIG2_METHODS: &[Method] = &[
    m("dgd", "DGD", true, &["algorithm.name=dgd"], &[]),
    m(
        "lag",
        "LAG-WK",
        true,
        &["algorithm.name=lag_wk"],
        &["algorithm.xi=0.1,0.3,1"],
    ),
    m(
        "diana",
        "DIANA-QSGD",
        true,
        &["algorithm.name=diana", "algorithm.compressor.kind=qsgd"],
        &[
            "algorithm.compressor.levels=1,2,4,8,16",
            "algorithm.compressor.bucket=512,0",
        ],
    ),
    m(
        "lena",
        "LENA-m",
        true,
        &["algorithm.name=lena", "algorithm.drift.kind=momentum"],
        &[
            "algorithm.beta=10,40,160,640",
            "algorithm.drift.gamma=0.1,0.3",
        ],
    ),
    m(
        "lena-k3",
        "LENA-m (k = 3)",
        true,
        &["algorithm.name=lena", "algorithm.confirm=3"],
        &["algorithm.beta=10,40,160"],
    ),
    m(
        "lena-init",
        "LENA-m (gradient init)",
        false,
        &["algorithm.name=lena", "algorithm.init=gradient"],
        &["algorithm.beta=10,40,160,640"],
    ),
    m(
        "lena-ref",
        "LENA-m (other references)",
        false,
        &["algorithm.name=lena"],
        &[
            "algorithm.reference=prev_gradient,current_gradient,scaled_prev_gradient",
            "algorithm.beta=10,40,160",
        ],
    ),
    m(
        "lena-v-qsgd",
        "LENA-v + QSGD",
        false,
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=last_upload",
            "algorithm.compressor.kind=qsgd",
            "algorithm.compressor.levels=32",
            "algorithm.compressor.bucket=512",
        ],
        &["algorithm.beta=10,40,160"],
    ),
    m(
        "lena-avg-qsgd",
        "LENA-avg + QSGD",
        false,
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=average",
            "algorithm.compressor.kind=qsgd",
            "algorithm.compressor.levels=32",
            "algorithm.compressor.bucket=512",
        ],
        &["algorithm.beta=10,40,160"],
    ),
    m(
        "lena-v-topk",
        "LENA-v + top-k",
        false,
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=last_upload",
            "algorithm.compressor.kind=top_k",
        ],
        &["algorithm.compressor.k=20,200"],
    ),
    m(
        "lena-v-sign",
        "LENA-v + scaled sign",
        false,
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=last_upload",
            "algorithm.compressor.kind=scaled_sign",
        ],
        &[],
    ),
    m(
        "lena-v-randk",
        "LENA-v + rand-k",
        false,
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=last_upload",
            "algorithm.compressor.kind=rand_k",
            "algorithm.compressor.k=785",
        ],
        &[],
    ),
    m(
        "ef-topk",
        "EF-SGD + top-k",
        false,
        &["algorithm.name=ef_sgd", "algorithm.compressor.kind=top_k"],
        &["algorithm.compressor.k=20,200,785"],
    ),
    m(
        "lag-topk",
        "LAG-WK + top-k",
        false,
        &[
            "algorithm.name=lag_wk",
            "algorithm.compressor.kind=top_k",
            "algorithm.compressor.k=200",
        ],
        &[],
    ),
    m(
        "laq",
        "LAQ",
        false,
        &["algorithm.name=laq"],
        &["algorithm.bits=2,4,8"],
    ),
];

/// A tuning study of one figure.
pub struct Study {
    /// Settings: name and overrides (figure 2: (a) M = 10, minibatch 15; (b) M = 200,
    /// minibatch 3).
    pub settings: &'static [(&'static str, &'static [&'static str])],
    pub methods: &'static [Method],
    /// The validation target (`COLUMN=VALUE`) and what is minimised there.
    pub target: &'static str,
    pub minimize: &'static str,
    /// Round cap of a tuning run (a run that has not met the target by then never does).
    pub iterations: u64,
    /// The tuning seeds (`run.seed` axis).
    pub seeds: &'static str,
}

pub const FIG2: Study = Study {
    settings: &[
        ("a", &["data.nodes=10", "data.batch=15"]),
        ("b", &["data.nodes=200", "data.batch=3"]),
    ],
    methods: FIG2_METHODS,
    target: "val_accuracy=0.88",
    minimize: "bits",
    iterations: 1000,
    seeds: TUNE_SEEDS,
};

/// LAG's own claim (section 4 of the study): with full batch, LAG-WK reaches the loss gradient
/// descent reaches with fewer uploads. Full batch has no randomness (the one-label split is
/// fixed by the data), so one seed is the whole distribution.
pub const LAG_MNIST: Study = Study {
    settings: &[("full-batch", &["data.batch=0", "data.nodes=10"])],
    methods: &[
        m("dgd", "DGD", false, &["algorithm.name=dgd"], &[]),
        m(
            "lag",
            "LAG-WK",
            false,
            &["algorithm.name=lag_wk"],
            &["algorithm.xi=0.1,0.3,1"],
        ),
    ],
    target: "train_loss=0.9",
    minimize: "uploads",
    iterations: 400,
    seeds: "1",
};

pub fn study(figure: &str) -> Result<&'static Study> {
    match figure {
        "fig2" => Ok(&FIG2),
        "lag-mnist" => Ok(&LAG_MNIST),
        other => bail!(
            "no tuning study for {other:?} yet: fig2 and lag-mnist are tuned (figures 3 and 4: \
             see docs/REPRODUCTION.md)"
        ),
    }
}

/// `KEY=VALUE` overrides into a TOML document, values parsed as TOML (else strings), as
/// `lena run --set` does.
pub fn apply(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for set in sets {
        let (key, raw) = set.split_once('=').context("KEY=VALUE")?;
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").context("parsed")?,
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.split('.').collect();
        let (last, path) = parts.split_last().context("a key")?;
        let mut cur = &mut *table;
        for p in path {
            cur = cur
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("{key}: {p} is not a table"))?;
        }
        cur.insert(last.to_string(), value);
    }
    Ok(())
}

/// The overrides shared by every tuning run of a study's setting.
fn tuning_sets(s: &Study, setting: &[&str]) -> Vec<String> {
    let (column, value) = s.target.split_once('=').expect("COLUMN=VALUE");
    let op = if column.ends_with("loss") { "<=" } else { ">=" };
    let mut sets = tuning_free(setting);
    sets.extend([
        format!("run.until=\"{column}{op}{value}\""),
        "run.check_every=1".into(),
        format!("run.eval_every={}", s.iterations),
        format!("run.iterations={}", s.iterations),
        "run.wall_clock=false".into(),
        "run.checkpoint_every=0".into(),
    ]);
    sets
}

fn git_commit(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}

fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}

/// Runs the tuning of `figure` (all methods, or those named in `only`), writing the chosen
/// experiment files and tables into `experiments/tuned/FIGURE/` and the runs under `out`.
pub fn tune(root: &Path, lena: &Path, out: &Path, figure: &str, only: &[String]) -> Result<()> {
    let s = study(figure)?;
    for key in only {
        anyhow::ensure!(
            s.methods.iter().any(|m| {
                m.key == key
                    || s.settings
                        .iter()
                        .any(|(set, _)| *key == format!("{set}-{}", m.key))
            }),
            "no method {key:?} in {figure}'s study (METHOD or SETTING-METHOD); methods: {}",
            s.methods
                .iter()
                .map(|m| m.key)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let dest = root.join("experiments/tuned").join(figure);
    std::fs::create_dir_all(&dest)?;
    let base_path = root.join("experiments").join(format!("{figure}.toml"));
    let base_text = std::fs::read_to_string(&base_path)
        .with_context(|| format!("cannot read {}", base_path.display()))?;
    let (commit, date) = (git_commit(root), today());
    let summary_path = dest.join("tuning.csv");
    // One line per (setting, method); lines of methods not re-tuned now are kept.
    let mut lines: Vec<String> = std::fs::read_to_string(&summary_path)
        .map(|t| t.lines().skip(1).map(str::to_string).collect())
        .unwrap_or_default();
    for (setting, setting_sets) in s.settings {
        for method in s.methods {
            let name = format!("{setting}-{}", method.key);
            if !only.is_empty() && !only.iter().any(|k| k == method.key || *k == name) {
                continue;
            }
            let dir = out.join("tune").join(figure).join(&name);
            let mut cmd = Command::new(lena);
            cmd.current_dir(root)
                .arg("tune")
                .arg(&base_path)
                .args(["-q", "--force", "-o"])
                .arg(&dir)
                .args(["--target", s.target, "--minimize", s.minimize]);
            for set in tuning_sets(s, setting_sets)
                .iter()
                .map(String::as_str)
                .chain(method.sets.iter().copied())
            {
                cmd.arg("--set").arg(set);
            }
            cmd.arg("--grid")
                .arg(format!("algorithm.step_size={}", method.steps));
            for g in method.grid {
                cmd.arg("--grid").arg(g);
            }
            cmd.arg("--grid").arg(format!("run.seed={}", s.seeds));
            let t = std::time::Instant::now();
            eprintln!("  tune {figure}/{name}");
            let status = cmd.status().context("cannot start lena")?;
            if !status.success() {
                bail!("lena tune for {figure}/{name} failed ({status})");
            }
            let secs = t.elapsed().as_secs_f64();
            let table = std::fs::read_to_string(dir.join("seeds.csv"))
                .with_context(|| format!("{}: no seeds.csv", dir.display()))?;
            std::fs::write(dest.join(format!("{name}.csv")), &table)?;
            let runs = std::fs::read_to_string(dir.join("sweep.csv"))?
                .lines()
                .count()
                - 1;
            let best = dir.join("best.json");
            let line = if best.exists() {
                let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&best)?)?;
                let chosen = j["setting"].as_str().context("best.json: setting")?;
                let value = j["value"].as_f64().unwrap_or(f64::NAN);
                let ci = j["ci95"].as_f64().unwrap_or(f64::NAN);
                let mut sets: Vec<String> = tuning_free(setting_sets);
                sets.extend(method.sets.iter().map(|x| x.to_string()));
                sets.extend(chosen.split(';').map(str::to_string));
                let mut doc: toml::Table = base_text.parse()?;
                apply(&mut doc, &sets)?;
                let header = format!(
                    "# {figure} ({setting}), {}: chosen by `cargo xtask reproduce tune {figure}` on \
                     {date} (commit {commit})\n# from {runs} runs: least mean {} over tuning seeds \
                     {} to {}; chosen {chosen}\n# ({} {value:e} +- {ci:e}, 95% interval). \
                     Table: {name}.csv.\n",
                    method.label, s.minimize, s.seeds, s.target, s.minimize
                );
                std::fs::write(
                    dest.join(format!("{name}.toml")),
                    header + &toml::to_string(&doc)?,
                )?;
                format!(
                    "{setting},{},{},{chosen},{value},{ci},{runs},{secs:.0},{date},{commit}",
                    method.key, method.label
                )
            } else {
                let _ = std::fs::remove_file(dest.join(format!("{name}.toml")));
                format!(
                    "{setting},{},{},none reached the target,,,{runs},{secs:.0},{date},{commit}",
                    method.key, method.label
                )
            };
            eprintln!("    {line}");
            let prefix = format!("{setting},{},", method.key);
            lines.retain(|l| !l.starts_with(&prefix));
            lines.push(line);
            let mut text = format!(
                "setting,method,label,chosen,{0}_mean,{0}_ci95,runs,seconds,date,commit\n",
                s.minimize
            );
            for l in &lines {
                writeln!(text, "{l}")?;
            }
            std::fs::write(&summary_path, text)?;
        }
    }
    Ok(())
}

/// The setting's overrides and the validation share, without the tuning-only run fields.
fn tuning_free(setting: &[&str]) -> Vec<String> {
    let mut sets = vec![format!("data.validation={VALIDATION}")];
    sets.extend(setting.iter().map(|x| x.to_string()));
    sets
}

/// The committed experiment file of a tuned method, if the tuning chose one.
pub fn tuned_file(root: &Path, figure: &str, setting: &str, key: &str) -> PathBuf {
    root.join("experiments/tuned")
        .join(figure)
        .join(format!("{setting}-{key}.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels and keys go into CSV fields and file names unquoted.
    #[test]
    fn labels_and_keys_are_plain_fields() {
        for s in [&FIG2, &LAG_MNIST] {
            for m in s.methods {
                assert!(!m.label.contains(','), "{}", m.label);
                assert!(m.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            }
        }
    }
}
