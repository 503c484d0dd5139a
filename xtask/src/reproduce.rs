//! `cargo xtask reproduce fig1 | fig2 | fig3 | fig4 | all [--quick] [--out DIR]`: runs the
//! paper's experiments from the files in `experiments/` with the `lena` binary, then writes
//! CSV tables and PNG/SVG figures under one output directory (default `runs/reproduce`).
//!
//! Every curve is `lena run experiments/figN.toml --set ...`; its run directory keeps the
//! resolved config, so any curve can be re-run alone. `--quick` shortens the runs (fewer
//! iterations, realizations and node counts) so that `all` finishes within minutes on 2 cores.

use anyhow::{Context, Result, bail};
use lena_plot::Table;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tuned::{Seeded, cost_to, run_seed};

/// One curve: its run directory name, legend label and overrides of the figure's file.
struct Curve {
    dir: String,
    label: String,
    sets: Vec<String>,
}

fn curve(dir: impl Into<String>, label: impl Into<String>, sets: &[&str]) -> Curve {
    Curve {
        dir: dir.into(),
        label: label.into(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
    }
}

/// The four methods of the figures, as `--set` overrides.
const METHODS: [(&str, &str, &[&str]); 4] = [
    ("dgd", "DGD", &["algorithm.name=dgd"]),
    ("lag", "LAG", &["algorithm.name=lag_wk"]),
    ("diana", "DIANA", &["algorithm.name=diana"]),
    ("lena", "LENA", &["algorithm.name=lena"]),
];

struct Ctx {
    root: PathBuf,
    lena: PathBuf,
    out: PathBuf,
    quick: bool,
    /// Run directories made by [`Ctx::run_ahead`] in this invocation: [`Ctx::run_all`] does not
    /// run them again.
    done: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Curves that run together, each with its extra overrides.
type Curves = [(Curve, Vec<String>)];
/// [`Curves`] owned.
type Group = Vec<(Curve, Vec<String>)>;

impl Ctx {
    /// Runs curves of `figure`, each with its extra overrides, into `out/figure/curve.dir`
    /// (replacing a curve's earlier run there: `--force`, a figure is re-made whole), a few
    /// at a time in one `lena batch` process (the runs load MNIST once; the batch file is kept
    /// beside them as `runs.toml`); their directories in the curves' order. Curves that
    /// [`Ctx::run_ahead`] already ran are not run again.
    fn run_all(&self, figure: &str, curves: &Curves) -> Result<Vec<PathBuf>> {
        let dirs: Vec<PathBuf> = curves
            .iter()
            .map(|(c, _)| self.out.join(figure).join(&c.dir))
            .collect();
        let done = {
            let ran = self.done.lock().expect("no panics while holding the lock");
            dirs.iter().all(|d| ran.contains(d))
        };
        if !done {
            self.batch(
                &self.out.join(figure).join("runs.toml"),
                &[(figure, curves)],
            )?;
        }
        Ok(dirs)
    }

    /// Runs every group of every figure in one `lena batch` process before any figure is
    /// tabulated, in the order given (longest runs first): the cores stay busy across
    /// figures instead of waiting at each figure's (or group's) last run, and MNIST is loaded
    /// once. The same runs as figure by figure, so the same results.
    fn run_ahead(&self, groups: &[(&str, Group)]) -> Result<()> {
        let groups: Vec<(&str, &Curves)> = groups.iter().map(|(f, g)| (*f, &g[..])).collect();
        self.batch(&self.out.join("runs.toml"), &groups)
    }

    /// One `lena batch` of `groups` (figure and curves), its file written to `file`; marks
    /// their directories done.
    fn batch(&self, file: &Path, groups: &[(&str, &Curves)]) -> Result<()> {
        let n = groups.iter().map(|(_, g)| g.len()).sum::<usize>();
        let jobs = crate::pool::jobs().min(n).max(1);
        let threads = (crate::pool::cores() / jobs).max(1);
        let mut runs = Vec::with_capacity(n);
        let mut dirs = Vec::with_capacity(n);
        for (figure, curves) in groups {
            for (c, extra) in *curves {
                let dir = self.out.join(figure).join(&c.dir);
                let sets: Vec<toml::Value> = std::iter::once(format!("run.threads={threads}"))
                    .chain(c.sets.iter().chain(extra).cloned())
                    .map(toml::Value::from)
                    .collect();
                eprintln!("  {figure}/{}: {}", c.dir, c.sets.join(" "));
                let mut run = toml::Table::new();
                run.insert("config".into(), format!("experiments/{figure}.toml").into());
                run.insert("output".into(), dir.display().to_string().into());
                run.insert("set".into(), toml::Value::Array(sets));
                runs.push(toml::Value::Table(run));
                dirs.push(dir);
            }
        }
        let mut table = toml::Table::new();
        table.insert("run".into(), toml::Value::Array(runs));
        let abs = self.root.join(file);
        std::fs::create_dir_all(abs.parent().context("a batch file's directory")?)
            .with_context(|| format!("cannot create {}", abs.display()))?;
        write(&abs, &toml::to_string(&table)?)?;
        let status = Command::new(&self.lena)
            .current_dir(&self.root)
            .arg("batch")
            .arg(file)
            .arg("--force")
            .arg("--jobs")
            .arg(jobs.to_string())
            .status()
            .context("cannot start lena")?;
        if !status.success() {
            bail!("lena batch {} failed ({status})", file.display());
        }
        self.done
            .lock()
            .expect("no panics while holding the lock")
            .extend(dirs);
        Ok(())
    }

    /// `lena plot` of run directories with explicit labels.
    fn plot(&self, runs: &[(PathBuf, String)], stem: &Path, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(&self.lena);
        cmd.current_dir(&self.root).arg("plot");
        for (dir, _) in runs {
            cmd.arg(dir);
        }
        for (_, label) in runs {
            cmd.arg("--label").arg(label);
        }
        cmd.args(args).arg("-o").arg(stem);
        let out = cmd.output().context("cannot start lena plot")?;
        if !out.status.success() {
            bail!("lena plot: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

fn metrics(dir: &Path) -> Result<Table> {
    Ok(Table::read(&dir.join("metrics.csv"))?)
}

fn col(t: &Table, name: &str) -> Vec<f64> {
    t.column(name).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Figure 1's curves, each with its panel (B, M-2, M-15) and method label.
fn fig1_curves(cx: &Ctx) -> (Vec<(&'static str, &'static str, String)>, Group) {
    let (iters_b, iters_m, window) = fig1_lengths(cx);
    let mut curves = Vec::new();
    let mut keys = Vec::new();
    for (suffix, batch, iters) in [
        ("B", "0", iters_b),
        ("M-2", "2", iters_m),
        ("M-15", "15", iters_m),
    ] {
        for (dir, label, sets) in METHODS {
            let mut s: Vec<&str> = sets.to_vec();
            let b = format!("data.batch={batch}");
            let n = format!("run.iterations={iters}");
            let w = format!("accounting.window={window}");
            let e = format!(
                "run.eval_every={}",
                if cx.quick && batch == "0" { 10 } else { 50 }
            );
            s.extend([b.as_str(), n.as_str(), w.as_str(), e.as_str()]);
            let c = curve(format!("{dir}-{suffix}"), format!("{label}-{suffix}"), &s);
            keys.push((suffix, label, c.label.clone()));
            curves.push((c, Vec::new()));
        }
    }
    (keys, curves)
}

/// Figure 1's iterations (full batch, minibatch) and upload-frequency window.
fn fig1_lengths(cx: &Ctx) -> (&'static str, &'static str, &'static str) {
    if cx.quick {
        ("300", "1000", "100")
    } else {
        ("3000", "3000", "1000")
    }
}

/// Figure 1: loss vs iterations, B / M-2 / M-15, and upload frequency of LENA and LAG.
fn fig1(cx: &Ctx) -> Result<()> {
    let window = fig1_lengths(cx).2;
    let (keys, curves) = fig1_curves(cx);
    let runs: Vec<_> = keys
        .into_iter()
        .zip(cx.run_all("fig1", &curves)?)
        .map(|((suffix, label, curve_label), d)| (suffix, label, d, curve_label))
        .collect();
    let fig = cx.out.join("fig1");
    let mut table = String::from(
        "curve,iterations,final_train_loss,final_test_accuracy,uploads,bits,final_upload_frequency\n",
    );
    for suffix in ["B", "M-2", "M-15"] {
        let these: Vec<(PathBuf, String)> = runs
            .iter()
            .filter(|r| r.0 == suffix)
            .map(|r| (r.2.clone(), r.3.clone()))
            .collect();
        cx.plot(
            &these,
            &fig.join(format!("loss-{suffix}")),
            &[
                "--x",
                "iteration",
                "--y",
                "train_loss",
                "--log-y",
                "--title",
                &format!("Figure 1: training loss, {suffix}"),
            ],
        )?;
        let freq: Vec<(PathBuf, String)> = runs
            .iter()
            .filter(|r| r.0 == suffix && (r.1 == "LENA" || r.1 == "LAG"))
            .map(|r| (r.2.clone(), r.3.clone()))
            .collect();
        cx.plot(
            &freq,
            &fig.join(format!("upload-frequency-{suffix}")),
            &[
                "--x",
                "iteration",
                "--y",
                "upload_frequency",
                "--title",
                &format!("Figure 1: uploads per node and round (window {window}), {suffix}"),
            ],
        )?;
    }
    for (_, _, dir, label) in &runs {
        let t = metrics(dir)?;
        let last = t.rows.last().context("no rows")?;
        let v = |n: &str| last[t.names.iter().position(|x| x == n).unwrap_or(0)];
        writeln!(
            table,
            "{label},{},{},{},{},{},{}",
            v("iteration"),
            v("train_loss"),
            v("test_accuracy"),
            v("uploads"),
            v("bits"),
            v("upload_frequency")
        )?;
    }
    write(&fig.join("fig1.csv"), &table)
}

/// Figure 2's settings: name, nodes, minibatch.
const FIG2_SETTINGS: [(&str, &str, &str); 2] = [("a", "10", "15"), ("b", "200", "3")];

/// Figure 2's curves of one setting.
fn fig2_curves(cx: &Ctx, setting: &str, nodes: &str, batch: &str) -> Group {
    let iters = if cx.quick { "600" } else { "3000" };
    let mut curves: Vec<Curve> = METHODS.iter().map(|(d, l, s)| curve(*d, *l, s)).collect();
    curves.push(curve(
        "lena-k3",
        "LENA (k = 3)",
        &["algorithm.name=lena", "algorithm.confirm=3"],
    ));
    curves
        .into_iter()
        .map(|mut c| {
            c.dir = format!("{setting}-{}", c.dir);
            let extra = vec![
                format!("data.nodes={nodes}"),
                format!("data.batch={batch}"),
                format!("run.iterations={iters}"),
            ];
            (c, extra)
        })
        .collect()
}

/// Figure 2: test accuracy vs bits, (a) M = 10 minibatch 15, (b) M = 200 minibatch 3.
fn fig2(cx: &Ctx) -> Result<()> {
    let fig = cx.out.join("fig2");
    let mut table = String::from(
        "setting,curve,final_test_accuracy,bits,bits_to_0.80,bits_to_0.85,bits_to_0.88\n",
    );
    for (setting, nodes, batch) in FIG2_SETTINGS {
        let curves = fig2_curves(cx, setting, nodes, batch);
        let runs: Vec<(PathBuf, String)> = cx
            .run_all("fig2", &curves)?
            .into_iter()
            .zip(curves.iter().map(|(c, _)| c.label.clone()))
            .collect();
        cx.plot(
            &runs,
            &fig.join(format!("accuracy-vs-bits-{setting}")),
            &["--x", "bits", "--y", "test_accuracy", "--log-x", "--title", &format!("Figure 2{setting}: test accuracy vs uploaded bits, M = {nodes}, minibatch {batch}")],
        )?;
        for (dir, label) in &runs {
            let t = metrics(dir)?;
            let fmt = |v: Option<f64>| v.map_or("never".into(), |b| format!("{b:e}"));
            writeln!(
                table,
                "{setting},{label},{},{:e},{},{},{}",
                col(&t, "test_accuracy").last().copied().unwrap_or(0.0),
                col(&t, "bits").last().copied().unwrap_or(0.0),
                fmt(cost_to(&t, "bits", 0.80)),
                fmt(cost_to(&t, "bits", 0.85)),
                fmt(cost_to(&t, "bits", 0.88)),
            )?;
        }
    }
    write(&fig.join("fig2.csv"), &table)
}

/// Figure 3 curves: the paper's three methods and LENA composed with a rebuildable drift and a
/// QSGD upload (a combination the toolkit offers; 32 levels keep QSGD a contraction, as error
/// feedback requires).
const FIG3_METHODS: [(&str, &str, &[&str]); 4] = [
    ("dgd", "DGD", &["algorithm.name=dgd"]),
    ("diana", "DIANA", &["algorithm.name=diana"]),
    ("lena", "LENA", &["algorithm.name=lena"]),
    (
        "lena-v-qsgd",
        "LENA-v + QSGD",
        &[
            "algorithm.name=lena",
            "algorithm.drift.kind=\"last_upload\"",
            "algorithm.compressor.kind=\"qsgd\"",
            "algorithm.compressor.levels=32",
            "algorithm.compressor.bucket=512",
        ],
    ),
];

/// Test accuracies at which figure 3 compares latencies.
const FIG3_TARGETS: [f64; 11] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97];

/// One evaluation of a run: test accuracy and simulated latency so far.
#[derive(Clone, Copy)]
struct Eval {
    iteration: f64,
    accuracy: f64,
    /// Mean, 5th and 95th percentile over the link-rate realizations (seconds).
    mean: f64,
    p5: f64,
    p95: f64,
}

/// Every evaluation of a run, from metrics.csv and latency.csv.
fn accuracy_latency(dir: &Path) -> Result<Vec<Eval>> {
    let m = metrics(dir)?;
    let l = Table::read(&dir.join("latency.csv"))?;
    let (it, acc) = (col(&m, "iteration"), col(&m, "test_accuracy"));
    let (lit, mean, p5, p95) = (
        col(&l, "iteration"),
        col(&l, "mean"),
        col(&l, "p5"),
        col(&l, "p95"),
    );
    let mut out = Vec::new();
    for (i, a) in it.iter().zip(&acc) {
        if let Some(k) = lit.iter().position(|x| x == i) {
            out.push(Eval {
                iteration: *i,
                accuracy: *a,
                mean: mean[k],
                p5: p5[k],
                p95: p95[k],
            });
        }
    }
    if out.is_empty() {
        bail!("{}: no evaluation has a latency row", dir.display());
    }
    Ok(out)
}

/// Figure 3's curves.
fn fig3_curves(cx: &Ctx) -> Group {
    let (iters, every, realizations) = if cx.quick {
        ("300", "25", "20")
    } else {
        ("1500", "50", "100")
    };
    FIG3_METHODS
        .iter()
        .map(|(dir, label, sets)| {
            let extra = vec![
                format!("run.iterations={iters}"),
                format!("run.eval_every={every}"),
                format!("network.realizations={realizations}"),
            ];
            (curve(*dir, *label, sets), extra)
        })
        .collect()
}

/// Figure 3: the CNN; latency (wide-area model) to reach each test accuracy, and the gain of
/// LENA over DIANA and DGD.
fn fig3(cx: &Ctx) -> Result<()> {
    let fig = cx.out.join("fig3");
    let curves = fig3_curves(cx);
    let mut runs = Vec::new();
    for ((_, label, _), d) in FIG3_METHODS.iter().zip(cx.run_all("fig3", &curves)?) {
        runs.push((*label, accuracy_latency(&d)?));
    }
    // First evaluation at or above each target.
    let reach = |rows: &[Eval], target: f64| rows.iter().find(|r| r.accuracy >= target).copied();
    let mut table = String::from(
        "target_accuracy,method,iteration,mean_latency_s,p5_s,p95_s,latency_over_lena,\
         latency_over_lena_v_qsgd\n",
    );
    let mut gains: Vec<lena_plot::Series> = Vec::new();
    for (bench, lena) in [
        ("DIANA", "LENA"),
        ("DGD", "LENA"),
        ("DIANA", "LENA-v + QSGD"),
        ("DGD", "LENA-v + QSGD"),
    ] {
        gains.push(lena_plot::Series {
            label: format!("{bench} / {lena}"),
            points: Vec::new(),
            band: Vec::new(),
        });
    }
    for target in FIG3_TARGETS {
        let at: Vec<Option<Eval>> = runs.iter().map(|(_, rows)| reach(rows, target)).collect();
        let lat = |label: &str| {
            runs.iter()
                .position(|(l, _)| *l == label)
                .and_then(|i| at[i])
                .map(|r| r.mean)
        };
        for ((label, _), r) in runs.iter().zip(&at) {
            let ratio = |base: &str| match (r, lat(base)) {
                (Some(r), Some(b)) if b > 0.0 => format!("{}", r.mean / b),
                _ => String::new(),
            };
            match r {
                Some(r) => writeln!(
                    table,
                    "{target},{label},{},{:e},{:e},{:e},{},{}",
                    r.iteration,
                    r.mean,
                    r.p5,
                    r.p95,
                    ratio("LENA"),
                    ratio("LENA-v + QSGD")
                )?,
                None => writeln!(table, "{target},{label},,,,,,")?,
            }
        }
        for s in &mut gains {
            let (bench, lena) = s.label.split_once(" / ").expect("label");
            if let (Some(b), Some(l)) = (lat(bench), lat(lena))
                && l > 0.0
            {
                s.points.push((target, b / l));
            }
        }
    }
    write(&fig.join("fig3.csv"), &table)?;
    let chart = lena_plot::Chart {
        title: "Figure 3 (CNN): latency to reach a test accuracy, relative to LENA's".into(),
        x_label: "test accuracy".into(),
        y_label: "benchmark latency / LENA latency".into(),
        log_x: false,
        log_y: true,
        series: gains,
    };
    lena_plot::draw(&chart, &fig.join("latency-gain-vs-accuracy"))?;
    let curves = runs
        .iter()
        .map(|(label, rows)| lena_plot::Series {
            label: label.to_string(),
            points: rows
                .iter()
                .filter(|r| r.mean > 0.0)
                .map(|r| (r.mean, r.accuracy))
                .collect(),
            band: Vec::new(),
        })
        .collect();
    let chart = lena_plot::Chart {
        title: "Figure 3 (CNN): test accuracy vs simulated upload latency (wide-area)".into(),
        x_label: "latency (s, mean over link-rate realizations)".into(),
        y_label: "test accuracy".into(),
        log_x: true,
        log_y: false,
        series: curves,
    };
    lena_plot::draw(&chart, &fig.join("accuracy-vs-latency"))?;
    Ok(())
}

/// Figure 4's node counts, iterations and link-rate realizations.
fn fig4_sizes(cx: &Ctx) -> (&'static [usize], &'static str, &'static str) {
    if cx.quick {
        (&[20, 100, 200], "200", "20")
    } else {
        (&[20, 50, 100, 200, 500], "1000", "100")
    }
}

/// Figure 4's curves for one link-rate distribution, each with its node count and label.
fn fig4_curves(cx: &Ctx, probs: &str) -> (Vec<(usize, &'static str)>, Group) {
    let (ms, iters, realizations) = fig4_sizes(cx);
    let mut curves = Vec::new();
    let mut keys = Vec::new();
    for &m in ms {
        // Minibatch: 10% of each node's share of the 60 000 training images.
        let batch = (60_000 / m / 10).max(1);
        for (dir, label, sets) in METHODS {
            let c = curve(format!("{probs}-m{m}-{dir}"), label, sets);
            let extra = vec![
                format!("data.nodes={m}"),
                format!("data.batch={batch}"),
                format!("run.iterations={iters}"),
                format!("run.eval_every={iters}"),
                format!("network.probabilities=\"{probs}\""),
                format!("network.realizations={realizations}"),
            ];
            keys.push((m, label));
            curves.push((c, extra));
        }
    }
    (keys, curves)
}

/// Figure 4's link-rate distributions.
const FIG4_PROBS: [&str; 2] = ["uniform", "skewed"];

/// Figure 4: upload latency relative to LENA vs M, (a) uniform and (b) skewed link rates.
fn fig4(cx: &Ctx) -> Result<()> {
    let ms = fig4_sizes(cx).0;
    let fig = cx.out.join("fig4");
    let mut table =
        String::from("probabilities,nodes,method,mean_latency_s,p5_s,p95_s,relative_to_lena\n");
    for probs in FIG4_PROBS {
        let mut lat = std::collections::BTreeMap::<(usize, &str), (f64, f64, f64)>::new();
        let (keys, curves) = fig4_curves(cx, probs);
        for (key, d) in keys.into_iter().zip(cx.run_all("fig4", &curves)?) {
            let t = Table::read(&d.join("latency.csv"))?;
            let last = t.rows.last().context("empty latency.csv")?;
            lat.insert(key, (last[1], last[4], last[5]));
        }
        let mut series = Vec::new();
        for (_, label, _) in METHODS {
            let mut pts = Vec::new();
            for &m in ms {
                let (mean, p5, p95) = lat[&(m, label)];
                let lena = lat[&(m, "LENA")].0;
                writeln!(
                    table,
                    "{probs},{m},{label},{mean:e},{p5:e},{p95:e},{}",
                    mean / lena
                )?;
                pts.push((m as f64, mean / lena));
            }
            if label != "LENA" {
                series.push(lena_plot::Series {
                    label: label.to_string(),
                    points: pts,
                    band: Vec::new(),
                });
            }
        }
        let chart = lena_plot::Chart {
            title: format!("Figure 4 ({probs} link rates): upload latency relative to LENA"),
            x_label: "nodes M".into(),
            y_label: "latency / LENA's latency".into(),
            log_x: false,
            log_y: true,
            series,
        };
        lena_plot::draw(&chart, &fig.join(format!("latency-vs-m-{probs}")))?;
    }
    write(&fig.join("fig4.csv"), &table)
}

/// MNIST present and `lena` built in release: the path of the binary.
fn prepare(root: &Path) -> Result<PathBuf> {
    if !root.join("data/mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("MNIST is missing: fetching it first (cargo xtask data mnist)");
        crate::data::mnist(&root.join("data/mnist"))?;
    }
    eprintln!("building lena (release)");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", "lena-cli"])
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p lena-cli failed");
    }
    Ok(root.join("target/release/lena"))
}

/// `cargo xtask reproduce tune FIGURE [METHOD...]`.
pub fn tune(root: &Path, figure: &str, only: &[String]) -> Result<()> {
    let lena = prepare(root)?;
    let start = std::time::Instant::now();
    crate::tune::tune(root, &lena, &root.join("runs"), figure, only)?;
    eprintln!("tuning done in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Entry point: `which` is fig1, fig2, fig3, fig4 or all.
pub fn reproduce(
    root: &Path,
    which: &str,
    quick: bool,
    tuned: bool,
    out: Option<PathBuf>,
) -> Result<()> {
    let lena = prepare(root)?;
    let cx = Ctx {
        root: root.to_path_buf(),
        lena,
        out: out.unwrap_or_else(|| root.join("runs/reproduce")),
        quick,
        done: Default::default(),
    };
    let start = std::time::Instant::now();
    let figs: Vec<&str> = match which {
        "all" if tuned => vec!["fig1", "fig2", "fig3", "fig4", "claims"],
        "all" => vec!["fig1", "fig2", "fig3", "fig4"],
        f @ ("fig1" | "fig2" | "fig3" | "fig4") => vec![f],
        "claims" if tuned => vec!["claims"],
        "claims" => bail!("claims are evaluated from their tuned settings only: add --tuned"),
        other => {
            bail!("unknown figure {other:?}, expected one of: fig1, fig2, fig3, fig4, claims, all")
        }
    };
    if which == "all" && !tuned {
        // Longest runs first (the CNN's, then figure 1's full-batch ones), so that the last
        // runs to finish are short ones. The first CNN run starts beside a full-batch one, not
        // beside another CNN run: the later CNN runs then find its evaluation of their common
        // starting parameters kept (`lena batch` shares it) instead of all starting at once.
        let (mut fig3, mut fig1) = (fig3_curves(&cx), fig1_curves(&cx).1);
        let (fig3_rest, fig1_rest) = (fig3.split_off(1), fig1.split_off(1));
        let mut groups = vec![
            ("fig3", fig3),
            ("fig1", fig1),
            ("fig3", fig3_rest),
            ("fig1", fig1_rest),
        ];
        groups.extend(FIG4_PROBS.map(|p| ("fig4", fig4_curves(&cx, p).1)));
        groups.extend(FIG2_SETTINGS.map(|(s, m, b)| ("fig2", fig2_curves(&cx, s, m, b))));
        let t = std::time::Instant::now();
        eprintln!(
            "every figure's runs{}, in one batch",
            if quick { " (quick)" } else { "" }
        );
        cx.run_ahead(&groups)?;
        eprintln!("runs done in {:.0} s", t.elapsed().as_secs_f64());
    }
    for f in figs {
        let t = std::time::Instant::now();
        eprintln!("{f}{}", if quick { " (quick)" } else { "" });
        match f {
            "fig2" if tuned => fig2_tuned(&cx)?,
            "fig1" if tuned => {
                crate::tuned::evaluate(&cx.root, &cx.lena, &cx.out, &crate::tuned::FIG1, cx.quick)?;
            }
            "fig3" if tuned && cx.quick => {
                eprintln!("fig3: the CNN's tuned runs take minutes each; left out of --quick");
                continue;
            }
            "fig3" if tuned => {
                crate::tuned::evaluate(&cx.root, &cx.lena, &cx.out, &crate::tuned::FIG3, false)?;
            }
            "fig4" if tuned => crate::tuned::fig4(&cx.root, &cx.lena, &cx.out, cx.quick)?,
            "claims" => crate::tuned::claims(&cx.root, &cx.lena, &cx.out, cx.quick)?,
            "fig1" => fig1(&cx)?,
            "fig2" => fig2(&cx)?,
            "fig3" => fig3(&cx)?,
            _ => fig4(&cx)?,
        }
        eprintln!(
            "{f} done in {:.0} s -> {}",
            t.elapsed().as_secs_f64(),
            cx.out
                .join(if f == "claims" {
                    String::new()
                } else if tuned {
                    format!("{f}-tuned")
                } else {
                    f.into()
                })
                .display()
        );
    }
    eprintln!("all done in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Test accuracy every tuned figure-2 run goes to (the tuning's validation target is 0.88 on
/// the held-out split).
const FIG2_TEST_TARGET: f64 = 0.88;

/// Figure 2 with the committed tuned settings: every method of `experiments/tuned/fig2` (the
/// paper's only with `--quick`) over the evaluation seeds, each run until it reaches the
/// test target (checked every round), then bits, uploads and rounds to the target as means
/// with 95% intervals, and each method's ratio to tuned DIANA, paired by seed.
fn fig2_tuned(cx: &Ctx) -> Result<()> {
    use crate::tune::{EVAL_SEEDS, FIG2, tuned_file};
    use lena_plot::stats::mean_ci;
    let seeds: &[u64] = if cx.quick {
        &EVAL_SEEDS[..3]
    } else {
        &EVAL_SEEDS
    };
    let (cap, every) = if cx.quick { (600, 5) } else { (1500, 5) };
    let fig = cx.out.join("fig2-tuned");
    let mut table = String::from(
        "setting,method,label,seeds,reached,rounds_mean,rounds_ci95,uploads_mean,uploads_ci95,\
         bits_mean,bits_ci95,bits_per_upload,bits_vs_diana_mean,bits_vs_diana_ci95,\
         bits_to_0.85_mean,bits_to_0.85_ci95\n",
    );
    let mut fronts =
        String::from("setting,family,test_accuracy,bits_mean,bits_ci95,configuration\n");
    for (setting, _) in FIG2.settings {
        let mut methods = Vec::new();
        let mut tasks = Vec::new();
        for method in FIG2.methods {
            if cx.quick && !method.paper {
                continue;
            }
            let file = tuned_file(&cx.root, "fig2", setting, method.key);
            if !file.exists() {
                eprintln!(
                    "  fig2 ({setting}) {}: no tuned setting, left out",
                    method.label
                );
                continue;
            }
            methods.push(method);
            for &seed in seeds {
                let dir = fig
                    .join(format!("{setting}-{}", method.key))
                    .join(format!("seed-{seed}"));
                tasks.push((file.clone(), dir, seed));
            }
        }
        let until = format!("test_accuracy>={FIG2_TEST_TARGET}");
        let mut done = crate::pool::map(&tasks, |(file, dir, seed), threads| {
            run_seed(
                &cx.root,
                &cx.lena,
                file,
                dir,
                (*seed, threads),
                &until,
                (1, every, cap),
                &[],
            )
        })?
        .into_iter();
        let mut results: Vec<(&crate::tune::Method, Vec<Seeded>)> = Vec::new();
        for method in methods {
            let runs: Vec<Seeded> = done.by_ref().take(seeds.len()).collect();
            eprintln!(
                "  fig2 ({setting}) {}: {}/{} seeds reached {FIG2_TEST_TARGET}",
                method.label,
                runs.iter().filter(|r| r.reached.is_some()).count(),
                seeds.len()
            );
            results.push((method, runs));
        }
        let at_target = |r: &Seeded, name: &str| r.at_target(name);
        let diana: Option<Vec<Option<f64>>> = results
            .iter()
            .find(|(m, _)| m.key == "diana")
            .map(|(_, runs)| runs.iter().map(|r| at_target(r, "bits")).collect());
        let mut series = Vec::new();
        for (method, runs) in &results {
            let reached: Vec<&Seeded> = runs.iter().filter(|r| r.reached.is_some()).collect();
            let stat = |name: &str| {
                mean_ci(
                    &reached
                        .iter()
                        .filter_map(|r| at_target(r, name))
                        .collect::<Vec<_>>(),
                )
            };
            let (rounds, rounds_ci) = stat("iteration");
            let (uploads, uploads_ci) = stat("uploads");
            let (bits, bits_ci) = stat("bits");
            // Paired by seed: this method's bits over DIANA's, where both reached.
            let ratios: Vec<f64> = match &diana {
                Some(d) => runs
                    .iter()
                    .zip(d)
                    .filter_map(|(r, d)| Some(at_target(r, "bits")? / (*d)?))
                    .collect(),
                None => Vec::new(),
            };
            let (ratio, ratio_ci) = mean_ci(&ratios);
            let lower: Vec<f64> = runs
                .iter()
                .filter_map(|r| cost_to(&r.rows, "bits", 0.85))
                .collect();
            let (lower_mean, lower_ci) = if lower.len() == runs.len() {
                mean_ci(&lower)
            } else {
                (f64::NAN, f64::NAN)
            };
            writeln!(
                table,
                "{setting},{},{},{},{},{rounds},{rounds_ci},{uploads},{uploads_ci},{bits:e},\
                 {bits_ci:e},{:.0},{ratio},{ratio_ci},{lower_mean:e},{lower_ci:e}",
                method.key,
                method.label,
                runs.len(),
                reached.len(),
                bits / uploads,
            )?;
            // The curve: mean test accuracy against mean bits at the scheduled evaluations
            // every seed has, with the accuracy's 95% band.
            let n = runs
                .iter()
                .map(|r| {
                    col(&r.rows, "iteration")
                        .iter()
                        .take_while(|i| (**i as u64).is_multiple_of(every))
                        .count()
                })
                .min()
                .unwrap_or(0);
            let bits_of: Vec<Vec<f64>> = runs.iter().map(|r| col(&r.rows, "bits")).collect();
            let acc_of: Vec<Vec<f64>> =
                runs.iter().map(|r| col(&r.rows, "test_accuracy")).collect();
            let mut points = Vec::new();
            let mut band = Vec::new();
            for k in 0..n {
                let b: Vec<f64> = bits_of.iter().map(|c| c[k]).collect();
                let a: Vec<f64> = acc_of.iter().map(|c| c[k]).collect();
                let (x, (y, h)) = (mean_ci(&b).0, mean_ci(&a));
                points.push((x, y));
                band.push((x, y - h, y + h));
            }
            series.push(lena_plot::Series {
                label: method.label.to_string(),
                points,
                band,
            });
        }
        if series.is_empty() {
            continue;
        }
        lena_plot::draw(
            &lena_plot::Chart {
                title: format!(
                    "Figure 2{setting}, tuned: test accuracy vs bits (mean of {} seeds, 95% band)",
                    seeds.len()
                ),
                x_label: "uploaded bits".into(),
                y_label: "test accuracy".into(),
                log_x: true,
                log_y: false,
                series,
            },
            &fig.join(format!("accuracy-vs-bits-{setting}")),
        )?;
        let levels: Vec<f64> = (50..=88).map(|i| f64::from(i) / 100.0).collect();
        crate::tuned::frontier(
            &results
                .iter()
                .map(|(m, runs)| (*m, runs.as_slice()))
                .collect::<Vec<_>>(),
            &crate::tuned::Frontier {
                cost: "bits",
                levels: &levels,
                row: setting,
                title: format!(
                    "Figure 2{setting}: Pareto frontier per family (fewest mean bits to each \
                     accuracy)"
                ),
                x_label: "uploaded bits",
                path: fig.join(format!("frontier-{setting}")),
            },
            &mut fronts,
        )?;
    }
    write(&fig.join("fig2-tuned.csv"), &table)?;
    write(&fig.join("frontier.csv"), &fronts)
}
