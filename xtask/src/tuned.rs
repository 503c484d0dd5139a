//! `cargo xtask reproduce fig4 | claims --tuned`: the committed tuned settings of a study
//! (`experiments/tuned/STUDY/`) run over the evaluation seeds, each run until it reaches the
//! test target (checked every `check_every` rounds), then rounds, uploads, bits and latency
//! to the target as means with 95% intervals, and each method's ratio to a baseline method,
//! paired by seed. Figure 2 has its own report (`reproduce.rs`: curves and the frontier) but
//! runs its seeds with [`run_seed`] too.

use crate::tune::{EVAL_SEEDS, Method, Study, tuned_file};
use anyhow::{Context, Result, bail};
use lena_plot::Table;
use lena_plot::stats::mean_ci;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One evaluation run of a tuned method: its metrics rows and, if it met the test target,
/// the round it did.
pub struct Seeded {
    pub rows: Table,
    pub reached: Option<usize>,
    /// Mean latency over the network model's link-rate realizations up to the last round
    /// (`latency.csv`), where the network has a clock.
    pub latency: Option<f64>,
}

impl Seeded {
    /// The value of a metrics column where the run met the target (`None` if it never did).
    pub fn at_target(&self, column: &str) -> Option<f64> {
        self.reached?;
        if column == "latency" {
            return self.latency;
        }
        self.rows.column(column)?.last().copied()
    }
}

/// Runs one tuned experiment file with one seed until `until` holds (or `cap` rounds),
/// evaluating every `every` rounds and checking the target every `check` rounds, into `dir`,
/// on `threads` threads.
/// A diverged run is a run that never reached the target, not a failure.
#[allow(clippy::too_many_arguments)]
pub fn run_seed(
    root: &Path,
    lena: &Path,
    file: &Path,
    dir: &Path,
    (seed, threads): (u64, usize),
    until: &str,
    (check, every, cap): (u64, u64, u64),
    extra: &[&str],
) -> Result<Seeded> {
    let mut cmd = Command::new(lena);
    cmd.current_dir(root)
        .arg("run")
        .arg(file)
        .args(["-q", "--force", "-o"])
        .arg(dir);
    let sets = [
        format!("run.seed={seed}"),
        format!("run.until=\"{until}\""),
        format!("run.check_every={check}"),
        format!("run.eval_every={every}"),
        format!("run.iterations={cap}"),
        "run.wall_clock=false".into(),
        format!("run.threads={threads}"),
    ];
    for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().context("cannot start lena")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !text.contains("diverged") {
        bail!("{} seed {seed}: {text}", file.display());
    }
    let rows = Table::read(&dir.join("metrics.csv"))?;
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    Ok(Seeded {
        rows,
        reached: summary["until"]["reached_at"].as_u64().map(|r| r as usize),
        latency: summary["latency_final"]["mean"].as_f64(),
    })
}

/// The evaluation of one tuned study.
pub struct Evaluation {
    /// The study's name ([`crate::tune::STUDIES`]), its directory under `experiments/tuned/`.
    pub name: &'static str,
    /// The test target every run goes to: `COLUMN>=VALUE` or `COLUMN<=VALUE`.
    pub until: &'static str,
    /// The methods every other is compared with, paired by seed, and on which column.
    pub baselines: &'static [&'static str],
    pub compare: &'static str,
    /// Runs of every setting under each of these overrides (figure 4: the two link-rate
    /// distributions).
    pub variants: &'static [(&'static str, &'static [&'static str])],
    /// Target checked every this many rounds (the test set is larger than the validation set).
    pub check_every: u64,
    /// `--quick`: these settings only (all if empty).
    pub quick_settings: &'static [&'static str],
    /// The curve drawn per setting and variant (mean over seeds with its 95% band): x and y
    /// columns and whether x is on a log scale.
    pub curve: (&'static str, &'static str, bool),
    /// The cost column of the Pareto frontier per family drawn per setting and variant
    /// ([`frontier`], from 0.5 test accuracy to the target), if any.
    pub frontier: Option<&'static str>,
}

impl Evaluation {
    /// The study whose committed settings this evaluates.
    pub fn study(&self) -> &'static Study {
        crate::tune::study(self.name).expect("every evaluation names a study (tested)")
    }
}

/// One method's seeds in one setting and variant.
pub struct Outcome {
    pub variant: &'static str,
    pub setting: &'static str,
    pub method: &'static Method,
    pub runs: Vec<Seeded>,
}

/// Runs `e` over the evaluation seeds (3 with `quick`, and then only its quick settings and
/// the paper's methods) and writes its table, `OUT/NAME-tuned/NAME-tuned.csv`.
pub fn evaluate(
    root: &Path,
    lena: &Path,
    out: &Path,
    e: &Evaluation,
    quick: bool,
) -> Result<Vec<Outcome>> {
    let seeds: &[u64] = if quick { &EVAL_SEEDS[..3] } else { &EVAL_SEEDS };
    let cap = e.study().iterations * 3 / 2;
    // Evaluations for the curves every 5 rounds (or the check interval, if longer).
    let every = e.check_every.max(5).div_ceil(e.check_every) * e.check_every;
    let mut table = String::from(
        "variant,setting,method,label,seeds,reached,rounds_mean,rounds_ci95,uploads_mean,\
         uploads_ci95,bits_mean,bits_ci95,latency_mean_s,latency_ci95_s,train_loss_mean,\
         train_loss_ci95,test_accuracy_mean,test_accuracy_ci95",
    );
    for b in e.baselines {
        write!(table, ",{0}_vs_{b}_mean,{0}_vs_{b}_ci95", e.compare)?;
    }
    table.push('\n');
    let mut fronts = String::new();
    if let Some(cost) = e.frontier {
        writeln!(
            fronts,
            "variant,setting,family,test_accuracy,{cost}_mean,{cost}_ci95,configuration"
        )?;
    }
    let mut outcomes = Vec::new();
    for (variant, extra) in e.variants {
        for (setting, _) in e.study().settings {
            if quick && !e.quick_settings.is_empty() && !e.quick_settings.contains(setting) {
                continue;
            }
            let first = outcomes.len();
            // Every (method, seed) run of this setting, run a few at a time.
            let mut methods = Vec::new();
            let mut tasks = Vec::new();
            for method in e.study().methods {
                if !method.in_setting(setting)
                    || (quick && !method.paper && e.study().methods.iter().any(|m| m.paper))
                {
                    continue;
                }
                let file = tuned_file(root, e.name, setting, method.key);
                if !file.exists() {
                    eprintln!(
                        "  {} ({setting}) {}: no tuned setting, left out",
                        e.name, method.label
                    );
                    continue;
                }
                methods.push(method);
                for &seed in seeds {
                    let dir = out
                        .join(format!("{}-tuned", e.name))
                        .join(format!(
                            "{variant}{}{setting}-{}",
                            if variant.is_empty() { "" } else { "-" },
                            method.key
                        ))
                        .join(format!("seed-{seed}"));
                    tasks.push((file.clone(), dir, seed));
                }
            }
            let mut done = crate::pool::map(&tasks, |(file, dir, seed), threads| {
                run_seed(
                    root,
                    lena,
                    file,
                    dir,
                    (*seed, threads),
                    e.until,
                    (e.check_every, every, cap),
                    extra,
                )
            })?
            .into_iter();
            for method in methods {
                let runs: Vec<Seeded> = done.by_ref().take(seeds.len()).collect();
                eprintln!(
                    "  {} {variant} ({setting}) {}: {}/{} seeds reached {}",
                    e.name,
                    method.label,
                    runs.iter().filter(|r| r.reached.is_some()).count(),
                    seeds.len(),
                    e.until
                );
                outcomes.push(Outcome {
                    variant,
                    setting,
                    method,
                    runs,
                });
            }
            let here = &outcomes[first..];
            draw_curves(
                e,
                variant,
                setting,
                here,
                every,
                &out.join(format!("{}-tuned", e.name)),
            )?;
            if let Some(cost) = e.frontier {
                let top: f64 = e
                    .until
                    .strip_prefix("test_accuracy>=")
                    .context("a frontier needs a test accuracy target")?
                    .parse()?;
                let levels: Vec<f64> = (50..=(top * 100.0).round() as u32)
                    .map(|i| f64::from(i) / 100.0)
                    .collect();
                let name = run_name(variant, setting);
                frontier(
                    &here
                        .iter()
                        .map(|o| (o.method, o.runs.as_slice()))
                        .collect::<Vec<_>>(),
                    &Frontier {
                        cost,
                        levels: &levels,
                        row: &format!("{variant},{setting}"),
                        title: format!(
                            "{} ({name}): Pareto frontier, least mean {} to each accuracy",
                            e.name,
                            cost.replace('_', " ")
                        ),
                        x_label: &cost.replace('_', " "),
                        path: out
                            .join(format!("{}-tuned", e.name))
                            .join(format!("frontier-{name}")),
                    },
                    &mut fronts,
                )?;
            }
            for o in here {
                let stat = |column: &str| {
                    mean_ci(
                        &o.runs
                            .iter()
                            .filter_map(|r| r.at_target(column))
                            .collect::<Vec<_>>(),
                    )
                };
                let (rounds, rounds_ci) = stat("iteration");
                let (uploads, uploads_ci) = stat("uploads");
                let (bits, bits_ci) = stat("bits");
                let (latency, latency_ci) = stat("latency");
                let (loss, loss_ci) = stat("train_loss");
                let (acc, acc_ci) = stat("test_accuracy");
                write!(
                    table,
                    "{variant},{setting},{},{},{},{},{rounds},{rounds_ci},{uploads},{uploads_ci},\
                     {bits:e},{bits_ci:e},{latency},{latency_ci},{loss},{loss_ci},{acc},{acc_ci}",
                    o.method.key,
                    o.method.label,
                    o.runs.len(),
                    o.runs.iter().filter(|r| r.reached.is_some()).count(),
                )?;
                for key in e.baselines {
                    let (ratio, ratio_ci) = paired_ratio(o, here, key, e.compare);
                    write!(table, ",{ratio},{ratio_ci}")?;
                }
                table.push('\n');
            }
        }
    }
    let dir = out.join(format!("{}-tuned", e.name));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-tuned.csv", e.name));
    std::fs::write(&path, table).with_context(|| format!("cannot write {}", path.display()))?;
    if e.frontier.is_some() {
        let path = dir.join("frontier.csv");
        std::fs::write(&path, fronts)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(outcomes)
}

/// The evaluation's curve for one setting and variant: per method, the mean of the y column
/// against the mean of the x column at the evaluations every seed has, with y's 95% band.
fn draw_curves(
    e: &Evaluation,
    variant: &str,
    setting: &str,
    here: &[Outcome],
    every: u64,
    dir: &Path,
) -> Result<()> {
    let (x, y, log_x) = e.curve;
    let mut series = Vec::new();
    for o in here {
        let xs: Vec<Vec<f64>> = o
            .runs
            .iter()
            .map(|r| r.rows.column(x).unwrap_or_default())
            .collect();
        let ys: Vec<Vec<f64>> = o
            .runs
            .iter()
            .map(|r| r.rows.column(y).unwrap_or_default())
            .collect();
        let iters: Vec<Vec<f64>> = o
            .runs
            .iter()
            .map(|r| r.rows.column("iteration").unwrap_or_default())
            .collect();
        // The scheduled evaluations every seed has (a run's last row, where it stopped, may
        // fall between them).
        let n = iters
            .iter()
            .map(|c| {
                c.iter()
                    .take_while(|i| (**i as u64).is_multiple_of(every))
                    .count()
            })
            .min()
            .unwrap_or(0);
        let (mut points, mut band) = (Vec::new(), Vec::new());
        for k in 0..n {
            let xk: Vec<f64> = xs.iter().map(|c| c[k]).collect();
            let yk: Vec<f64> = ys.iter().map(|c| c[k]).collect();
            let (xm, (ym, h)) = (mean_ci(&xk).0, mean_ci(&yk));
            if log_x && xm <= 0.0 {
                continue;
            }
            points.push((xm, ym));
            band.push((xm, ym - h, ym + h));
        }
        if !points.is_empty() {
            series.push(lena_plot::Series {
                label: o.method.label.to_string(),
                points,
                band,
            });
        }
    }
    let name = run_name(variant, setting);
    draw_any(
        lena_plot::Chart {
            title: format!(
                "{} tuned ({name}): {y} vs {x} (mean over seeds, 95% band)",
                e.name
            ),
            x_label: x.replace('_', " "),
            y_label: y.replace('_', " "),
            log_x,
            log_y: false,
            series,
        },
        &dir.join(format!("{y}-vs-{x}-{name}")),
    )?;
    Ok(())
}

/// `VARIANT-SETTING` (either left out where empty): the suffix of a setting's figures.
fn run_name(variant: &str, setting: &str) -> String {
    [variant, setting]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("-")
}

/// Draws `chart` unless no series has a point to draw (a method whose seeds never reached).
fn draw_any(mut chart: lena_plot::Chart, path: &Path) -> Result<()> {
    chart.series.retain(|s| !s.points.is_empty());
    if chart.series.is_empty() {
        eprintln!("  {}: nothing to draw", path.display());
        return Ok(());
    }
    lena_plot::draw(&chart, path)?;
    Ok(())
}

/// Per seed both reached, `o`'s `column` at the target over the baseline's (same setting and
/// variant, same seed); empty without a baseline.
fn paired_ratios(o: &Outcome, baseline: Option<&Outcome>, column: &str) -> Vec<f64> {
    baseline.map_or(Vec::new(), |b| {
        o.runs
            .iter()
            .zip(&b.runs)
            .filter_map(|(r, b)| Some(r.at_target(column)? / b.at_target(column)?))
            .collect()
    })
}

/// Mean and 95% interval of [`paired_ratios`] against the method `baseline` among `here`.
pub fn paired_ratio(o: &Outcome, here: &[Outcome], baseline: &str, column: &str) -> (f64, f64) {
    let b = here.iter().find(|b| b.method.key == baseline);
    if b.is_none() {
        return (f64::NAN, f64::NAN);
    }
    mean_ci(&paired_ratios(o, b, column))
}

/// The family a method of a study belongs to, for the Pareto frontier.
fn family(key: &str) -> &'static str {
    match key {
        k if k.starts_with("lena") => "LENA family",
        k if k.starts_with("lag") || k == "laq" => "LAG / LAQ",
        k if k.starts_with("ef") => "EF-SGD",
        "diana" => "DIANA-QSGD",
        _ => "DGD",
    }
}

/// The `cost` column of a run where its test accuracy first reached `level` (None if never).
pub fn cost_to(rows: &Table, cost: &str, level: f64) -> Option<f64> {
    let (acc, cost) = (rows.column("test_accuracy")?, rows.column(cost)?);
    acc.iter()
        .zip(&cost)
        .find(|(a, _)| **a >= level)
        .map(|(_, c)| *c)
}

/// One Pareto frontier: what it minimises and where it goes.
pub struct Frontier<'a> {
    /// The metrics column minimised to each accuracy (`bits`, `latency_seconds`).
    pub cost: &'a str,
    /// The test accuracies the frontier is drawn at.
    pub levels: &'a [f64],
    /// The leading fields of each of its CSV rows (setting, variant).
    pub row: &'a str,
    pub title: String,
    pub x_label: &'a str,
    /// The figure's path without extension.
    pub path: std::path::PathBuf,
}

/// The Pareto frontier per family: for each test accuracy, the least mean `cost` (over the
/// seeds, every seed reaching that accuracy) any tuned configuration of the family needs to
/// first reach it, and which configuration that is. Appends `ROW,family,accuracy,mean,ci95,
/// configuration` rows to `table` and draws the frontiers. The cost is each run's own
/// metrics column (for latency: the link-rate realization of its seed).
pub fn frontier(results: &[(&Method, &[Seeded])], f: &Frontier, table: &mut String) -> Result<()> {
    let mut families: Vec<&str> = Vec::new();
    for (m, _) in results {
        if !families.contains(&family(m.key)) {
            families.push(family(m.key));
        }
    }
    let mut series = Vec::new();
    for fam in families {
        let mut points = Vec::new();
        for &level in f.levels {
            let best = results
                .iter()
                .filter(|(m, _)| family(m.key) == fam)
                .filter_map(|(m, runs)| {
                    let c: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| cost_to(&r.rows, f.cost, level))
                        .collect();
                    (c.len() == runs.len() && !c.is_empty()).then(|| (mean_ci(&c), m.label))
                })
                .min_by(|a, b| a.0.0.total_cmp(&b.0.0));
            if let Some(((cost, ci), label)) = best {
                writeln!(table, "{},{fam},{level},{cost:e},{ci:e},{label}", f.row)?;
                points.push((cost, level));
            }
        }
        series.push(lena_plot::Series {
            label: fam.to_string(),
            points,
            band: Vec::new(),
        });
    }
    draw_any(
        lena_plot::Chart {
            title: f.title.clone(),
            x_label: f.x_label.into(),
            y_label: "test accuracy".into(),
            log_x: true,
            log_y: false,
            series,
        },
        &f.path,
    )
}

/// Figure 4 tuned: latency to 0.88 test accuracy per M, under both link-rate distributions
/// (tuned under the uniform one), against LENA-m (the paper's ratio) and tuned DIANA.
pub const FIG4: Evaluation = Evaluation {
    name: "fig4",
    until: "test_accuracy>=0.88",
    baselines: &["lena", "diana"],
    compare: "latency",
    variants: &[
        ("uniform", &[]),
        ("skewed", &["network.probabilities=\"skewed\""]),
    ],
    check_every: 1,
    quick_settings: &["m20", "m100"],
    curve: ("latency_seconds", "test_accuracy", true),
    frontier: Some("latency_seconds"),
};

/// Figure 1 tuned: 300 rounds at each method's tuned step (least validation loss there), the
/// training loss against rounds with its band, and the final loss and uploads per method.
pub const FIG1: Evaluation = Evaluation {
    name: "fig1",
    until: "iteration>=300",
    baselines: &["dgd"],
    compare: "train_loss",
    variants: &[("", &[])],
    check_every: 1,
    quick_settings: &["m2", "m15"],
    curve: ("iteration", "train_loss", false),
    frontier: None,
};

/// Figure 3 tuned: latency to 0.95 test accuracy on the CNN (M = 20, uniform link rates),
/// against LENA-m and tuned DIANA; the target checked every 10 rounds, as in the tuning.
pub const FIG3: Evaluation = Evaluation {
    name: "fig3",
    until: "test_accuracy>=0.95",
    baselines: &["lena", "diana"],
    compare: "latency",
    variants: &[("", &[])],
    check_every: 10,
    quick_settings: &[],
    curve: ("latency_seconds", "test_accuracy", true),
    frontier: Some("latency_seconds"),
};

/// The seeds' own claims (LAG, LAQ, SASG), each in its own setting; `--quick` runs the first
/// only.
pub const CLAIMS: &[Evaluation] = &[
    Evaluation {
        name: "laq-logistic",
        until: "test_accuracy>=0.9",
        baselines: &["laq"],
        compare: "bits",
        variants: &[("", &[])],
        check_every: 1,
        quick_settings: &[],
        curve: ("bits", "test_accuracy", true),
        frontier: None,
    },
    Evaluation {
        name: "laq-mlp",
        until: "test_accuracy>=0.92",
        baselines: &["laq"],
        compare: "bits",
        variants: &[("", &[])],
        check_every: 1,
        quick_settings: &[],
        curve: ("bits", "test_accuracy", true),
        frontier: None,
    },
    Evaluation {
        name: "sasg-mnist",
        until: "test_accuracy>=0.92",
        baselines: &["sasg"],
        compare: "bits",
        variants: &[("", &[]), ("one-label", &["data.split=\"one_label\""])],
        check_every: 5,
        quick_settings: &[],
        curve: ("bits", "test_accuracy", true),
        frontier: None,
    },
    Evaluation {
        name: "lag-mnist",
        until: "train_loss<=0.9",
        baselines: &["dgd"],
        compare: "uploads",
        variants: &[("", &[])],
        check_every: 1,
        quick_settings: &[],
        curve: ("uploads", "train_loss", false),
        frontier: None,
    },
];

/// `reproduce fig4 --tuned`: the table and, per link-rate distribution, each method's latency
/// over LENA-m's against M with its 95% band, and the absolute latencies.
pub fn fig4(root: &Path, lena: &Path, out: &Path, quick: bool) -> Result<()> {
    let outcomes = evaluate(root, lena, out, &FIG4, quick)?;
    let dir = out.join("fig4-tuned");
    for (variant, _) in FIG4.variants {
        let mut relative: Vec<lena_plot::Series> = Vec::new();
        let mut absolute: Vec<lena_plot::Series> = Vec::new();
        for method in FIG4.study().methods {
            let (mut rel, mut band, mut abs) = (Vec::new(), Vec::new(), Vec::new());
            for (setting, _) in FIG4.study().settings {
                let here: Vec<&Outcome> = outcomes
                    .iter()
                    .filter(|o| o.variant == *variant && o.setting == *setting)
                    .collect();
                let Some(o) = here.iter().find(|o| o.method.key == method.key) else {
                    continue;
                };
                let m: f64 = setting.trim_start_matches('m').parse()?;
                let lat: Vec<f64> = o
                    .runs
                    .iter()
                    .filter_map(|r| r.at_target("latency"))
                    .collect();
                if lat.len() == o.runs.len() {
                    abs.push((m, mean_ci(&lat).0));
                }
                let base = here.iter().find(|b| b.method.key == "lena").copied();
                let ratios = paired_ratios(o, base, "latency");
                if method.key != "lena" && ratios.len() == o.runs.len() && !ratios.is_empty() {
                    let (y, h) = mean_ci(&ratios);
                    rel.push((m, y));
                    band.push((m, (y - h).max(1e-6), y + h));
                }
            }
            if !rel.is_empty() {
                relative.push(lena_plot::Series {
                    label: method.label.to_string(),
                    points: rel,
                    band,
                });
            }
            if !abs.is_empty() {
                absolute.push(lena_plot::Series {
                    label: method.label.to_string(),
                    points: abs,
                    band: Vec::new(),
                });
            }
        }
        draw_any(
            lena_plot::Chart {
                title: format!(
                    "Figure 4 tuned ({variant} link rates): latency to 0.88 test accuracy over \
                     LENA-m's (95% band)"
                ),
                x_label: "nodes M".into(),
                y_label: "latency / LENA-m's".into(),
                log_x: true,
                log_y: true,
                series: relative,
            },
            &dir.join(format!("relative-latency-{variant}")),
        )?;
        draw_any(
            lena_plot::Chart {
                title: format!(
                    "Figure 4 tuned ({variant} link rates): mean latency to 0.88 test accuracy"
                ),
                x_label: "nodes M".into(),
                y_label: "latency (s)".into(),
                log_x: true,
                log_y: true,
                series: absolute,
            },
            &dir.join(format!("latency-{variant}")),
        )?;
    }
    Ok(())
}

/// `reproduce claims --tuned`: the seeds' own claims over the evaluation seeds, a table each
/// (`OUT/STUDY-tuned/STUDY-tuned.csv`).
pub fn claims(root: &Path, lena: &Path, out: &Path, quick: bool) -> Result<()> {
    for e in if quick { &CLAIMS[..1] } else { CLAIMS } {
        evaluate(root, lena, out, e, quick)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluations go to a test-set target (or a training loss or a fixed round for the
    /// optimisation claims), against baselines that are methods of their study, from the
    /// directory their study writes.
    #[test]
    fn evaluations_measure_on_test_against_methods_of_their_study() {
        for e in [&FIG1, &FIG3, &FIG4].into_iter().chain(CLAIMS) {
            let column = e.until.split(['>', '<']).next().unwrap();
            assert!(
                ["test_accuracy", "train_loss", "iteration"].contains(&column),
                "{}: {}",
                e.name,
                e.until
            );
            assert!(crate::tune::study(e.name).is_ok(), "{}", e.name);
            for b in e.baselines {
                assert!(
                    e.study().methods.iter().any(|m| m.key == *b),
                    "{}: {b}",
                    e.name
                );
            }
            for q in e.quick_settings {
                assert!(
                    e.study().settings.iter().any(|(n, _)| n == q),
                    "{}: {q}",
                    e.name
                );
            }
        }
    }

    /// The frontier takes, per family and accuracy, the configuration with the least mean
    /// cost among those whose every seed reached the accuracy, and leaves out an accuracy
    /// no configuration reached on every seed.
    #[test]
    fn frontier_takes_the_cheapest_configuration_every_seed_reached_with() {
        let run = |rows: &str| Seeded {
            rows: Table::parse(&format!("test_accuracy,bits\n{rows}"), Path::new("t")).unwrap(),
            reached: None,
            latency: None,
        };
        let study = crate::tune::study("fig4").unwrap();
        let method = |key: &str| study.methods.iter().find(|m| m.key == key).unwrap();
        let (lena, lena_g, diana) = (method("lena"), method("lena-g"), method("diana"));
        let a = [run("0.5,10\n0.6,30"), run("0.5,20\n0.6,50")];
        let b = [run("0.5,12\n0.6,20"), run("0.5,12\n0.6,20")];
        let c = [run("0.5,1\n0.6,2"), run("0.5,1")];
        let dir = std::env::temp_dir().join(format!("lena-frontier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut table = String::new();
        frontier(
            &[(lena, &a[..]), (lena_g, &b[..]), (diana, &c[..])],
            &Frontier {
                cost: "bits",
                levels: &[0.5, 0.6],
                row: "x",
                title: "t".into(),
                x_label: "bits",
                path: dir.join("f"),
            },
            &mut table,
        )
        .unwrap();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[0].starts_with("x,LENA family,0.5,1.2e1,0e0,"),
            "{table}"
        );
        assert!(rows[0].ends_with(&lena_g.label), "{table}");
        assert!(rows[1].starts_with("x,LENA family,0.6,2e1,"), "{table}");
        assert!(rows[2].starts_with("x,DIANA-QSGD,0.5,1e0,"), "{table}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
