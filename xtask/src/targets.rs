//! `cargo xtask targets [--runs N] [--tests] [--baseline COMMIT] [--simd PATH] [--out DIR]`:
//! every speed target of issue 14 measured on this machine, each against its bound in the same
//! run, with a verdict per target and the machine named (docs/PERFORMANCE.md keeps one column of
//! figures per machine kind).
//!
//! Each run takes the profiling examples in turn (`fma_peak`, `gradient_profile`, NumPy's two
//! GEMMs, `round_profile` and its `-- bare` and `-- bare-diana` decompositions of LENA-m's and
//! DIANA's rounds, PyTorch's DGD round, `scan_profile` (whether this CPU's default for LENA's scan
//! requests is the faster), `fusion_profile` (LENA-m's scan with its scores and sum fused in),
//! `memory_profile -- one lena 60000` with `round_profile -- bare-large` (LENA-m's round
//! written out at M = 60 000, its scan alone and a pass of its traffic), and what figure 3's
//! CNN runs spend,
//! `cnn_train` and `cnn_eval`), which append their figures to one file as JSON lines
//! (`LENA_REPORT`); the Python references run where NumPy and PyTorch import, on as many threads as
//! the machine has cores. `--simd` narrows the examples' path (`LENA_SIMD`). `--tests` runs `cargo
//! test --workspace` (target 1: every kernel's tests on every path this CPU has). `--baseline
//! COMMIT` times `cargo xtask reproduce all --quick` at that commit (a git worktree under
//! `target/`) and here, alternated (baseline, here, here, baseline), for target 5 (the issue was
//! filed at cef624b). The report goes to stdout and, with the raw lines, to `DIR` (default
//! `target/targets`).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What `cargo xtask targets` measures.
pub struct Options {
    /// Runs of every profile (the host's speed moves between minutes: the verdicts count runs).
    pub runs: usize,
    /// Also run `cargo test --workspace`.
    pub tests: bool,
    /// The commit target 5's time is compared with.
    pub baseline: Option<String>,
    /// Where the report is written.
    pub out: Option<PathBuf>,
    /// A narrower kernels' path for the examples (`LENA_SIMD`), e.g. `x86-64-v3` on an AVX-512
    /// machine: the AVX2 path that AMD's Zen 1-3 take, measured here.
    pub simd: Option<String>,
}

/// The machine, from `/proc/cpuinfo` (empty fields elsewhere).
#[derive(Default)]
struct Cpu {
    name: String,
    family: String,
    model: String,
    flags: Vec<String>,
}

impl Cpu {
    fn read() -> Self {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        Self {
            name: field("model name"),
            family: field("cpu family"),
            model: field("model"),
            flags: field("flags")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The widest path lena-kernels should take here (issue 14, target 1).
    fn expected_path(&self) -> &'static str {
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
            .iter()
            .all(|f| self.has(f))
        {
            "x86-64-v4"
        } else if ["avx2", "fma", "bmi2"].iter().all(|f| self.has(f)) {
            "x86-64-v3"
        } else {
            "scalar"
        }
    }
}

/// `cargo xtask targets`.
pub fn targets(root: &Path, opts: &Options) -> Result<()> {
    if opts.runs == 0 {
        bail!("--runs: at least one run");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/targets"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let stamp = utc_stamp();
    let lines_path = out.join(format!("targets-{stamp}.jsonl"));
    eprintln!("building the profiling examples (release)");
    checked(
        Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "lena-benches",
                "--examples",
            ])
            .current_dir(root),
        "cargo build --release -p lena-benches --examples",
    )?;
    // The figures are MNIST's (on random data of its shape the full-batch products would take
    // the dense kernels, not the nonzero values'): fetched if missing, as `reproduce` does.
    crate::data::mnist(&root.join("data/mnist"))?;
    let examples = root.join("target/release/examples");
    let python = Python::find(root);
    let cpu = Cpu::read();
    let started = Instant::now();
    // The Python references that failed: reported, not fatal (they are references, and the
    // examples' figures should not be lost with them).
    let mut failures = Vec::new();
    for run in 1..=opts.runs {
        eprintln!("run {run} of {}", opts.runs);
        append_line(
            &lines_path,
            &serde_json::json!({ "example": RUN_MARK, "run": run }),
        )?;
        let example = |name: &str, args: &[&str]| {
            let mut cmd = Command::new(examples.join(name));
            cmd.args(args).current_dir(root);
            if let Some(path) = &opts.simd {
                cmd.env("LENA_SIMD", path);
            }
            step(&mut cmd, &lines_path)
        };
        example("fma_peak", &[])?;
        example("gradient_profile", &[])?;
        if python.numpy {
            python.step(
                &mut python.command(root, "benches/python/gradient_numpy.py"),
                &lines_path,
                &mut failures,
            );
        }
        example("round_profile", &[])?;
        // LENA-m's round written out by hand, whole and without its scan: how much of its
        // round is the framework's, and what its own work costs (target 3's floor).
        example("round_profile", &["bare"])?;
        example("round_profile", &["bare-diana"])?;
        if python.torch {
            python.step(
                python
                    .command(root, "benches/python/round_torch.py")
                    .arg(root.join("data/mnist")),
                &lines_path,
                &mut failures,
            );
        }
        example("scan_profile", &[])?;
        // LENA-m's scan with its next scores and its sum inside (other floats): whether fusing
        // them would bring its round nearer target 3 on this kind.
        example("fusion_profile", &[])?;
        example("memory_profile", &["one", "lena", "60000"])?;
        // LENA-m's round written out at M = 60 000, its scan alone and a pass of the scan's own
        // traffic, against the bound (target 4's floor on this kind; about 13 GB, 45 s).
        example("round_profile", &["bare-large"])?;
        // What figure 3's runs (most of target 5's time) spend: a training step and an
        // evaluation, each on one thread as `reproduce`'s runs take them.
        example("cnn_train", &[])?;
        example("cnn_eval", &["1"])?;
    }
    let profiles = started.elapsed().as_secs_f64();
    let tests = if opts.tests {
        eprintln!("cargo test --workspace");
        let t = Instant::now();
        let run = Command::new(&cargo)
            .args(["test", "--workspace", "-q"])
            .current_dir(root)
            .stderr(std::io::stderr())
            .output()
            .context("running cargo test")?;
        let text = String::from_utf8_lossy(&run.stdout);
        eprint!("{text}");
        Some(Tests {
            ok: run.status.success(),
            counts: test_counts(&text),
            seconds: t.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let baseline = match &opts.baseline {
        Some(commit) => Some(time_reproduce(root, &cargo, commit)?),
        None => None,
    };
    let text = std::fs::read_to_string(&lines_path)
        .with_context(|| format!("reading {}", lines_path.display()))?;
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Value>(l)
                .with_context(|| format!("{}:{}: not a JSON line", lines_path.display(), i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let report = render(
        &cpu,
        opts.simd.as_deref(),
        &stamp,
        opts.runs,
        &lines,
        &python,
        tests.as_ref(),
        baseline.as_ref(),
    );
    let mut report = format!(
        "{report}\nProfiles {profiles:.0} s in all; the raw figures: `{}`.\n",
        lines_path.display()
    );
    for f in &failures {
        let _ = writeln!(
            report,
            "\n{f} failed in one run (its output is above the report)."
        );
    }
    let md = out.join(format!("targets-{stamp}.md"));
    std::fs::write(&md, &report).with_context(|| format!("writing {}", md.display()))?;
    #[allow(clippy::print_stdout)] // The report is the command's output.
    {
        print!("{report}");
    }
    eprintln!("report written to {}", md.display());
    Ok(())
}

/// What `cargo test --workspace` gave.
struct Tests {
    ok: bool,
    /// Passed and failed, summed over its `test result:` lines.
    counts: (usize, usize),
    seconds: f64,
}

/// The tests passed and failed in `cargo test`'s output, summed over its `test result:` lines.
fn test_counts(text: &str) -> (usize, usize) {
    let count = |line: &str, what: &str| {
        line.split(';')
            .find_map(|part| {
                part.trim()
                    .strip_suffix(what)?
                    .trim()
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0usize)
    };
    text.lines()
        .filter(|l| l.starts_with("test result:"))
        .fold((0, 0), |(p, f), l| {
            (p + count(l, "passed"), f + count(l, "failed"))
        })
}

/// Appends `line` to the figures' file `path`.
fn append_line(path: &Path, line: &Value) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"))
        .with_context(|| format!("appending to {}", path.display()))
}

/// The variable that asks the examples and the Python references for their figures
/// (`lena_benches::REPORT_VAR`; xtask does not link the benches' crate).
const REPORT_VAR: &str = "LENA_REPORT";

/// Runs `cmd` to its end (its output passed through); an error naming `what` if it fails.
fn checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` with its figures appended to `lines` (its own output to stderr).
fn step(cmd: &mut Command, lines: &Path) -> Result<()> {
    let what = format!("{:?}", cmd.get_program());
    checked(cmd.env(REPORT_VAR, lines).stdout(std::io::stderr()), &what)
}

/// Which Python references can run here.
struct Python {
    exe: String,
    numpy: bool,
    torch: bool,
}

impl Python {
    fn find(root: &Path) -> Self {
        let exe = "python3".to_string();
        let imports = |module: &str| {
            Command::new(&exe)
                .args(["-c", &format!("import {module}")])
                .current_dir(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let (numpy, torch) = (imports("numpy"), imports("torch"));
        Self { exe, numpy, torch }
    }

    /// Runs `cmd` as [`step`] does; a failure is noted in `failures` rather than returned.
    fn step(&self, cmd: &mut Command, lines: &Path, failures: &mut Vec<String>) {
        if let Err(e) = step(cmd, lines) {
            eprintln!("warning: {e:#}");
            failures.push(format!(
                "`{}`",
                cmd.get_args()
                    .next()
                    .map_or_else(String::new, |a| a.to_string_lossy().into_owned())
            ));
        }
    }

    /// `script` on one thread a core (the issue's references ran on the machines' two).
    fn command(&self, root: &Path, script: &str) -> Command {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut cmd = Command::new(&self.exe);
        cmd.arg(root.join(script))
            .env("OMP_NUM_THREADS", cores.to_string())
            .env("OPENBLAS_NUM_THREADS", cores.to_string())
            .current_dir(root);
        cmd
    }
}

/// Target 5: `cargo xtask reproduce all --quick` at `commit` (its worktree under `target/`) and
/// here, each built first, then timed alternately (baseline, here, here, baseline): the seconds
/// of each side.
fn time_reproduce(root: &Path, cargo: &str, commit: &str) -> Result<Baseline> {
    let tree = root.join("target/targets-baseline").join(commit);
    if !tree.exists() {
        eprintln!("git worktree of {commit} at {}", tree.display());
        checked(
            Command::new("git")
                .args(["worktree", "add", "--detach"])
                .arg(&tree)
                .arg(commit)
                .current_dir(root),
            &format!("git worktree add {} {commit}", tree.display()),
        )?;
    }
    // The baseline reads the same MNIST files (no download).
    let data = tree.join("data");
    if !data.exists() && root.join("data").exists() {
        link_dir(&root.join("data"), &data)?;
    }
    let sides = [
        (tree.clone(), tree.join("target/reproduce")),
        (root.to_path_buf(), root.join("target/targets/reproduce")),
    ];
    // Cargo in a side's directory, with its own target directory.
    let cargo_in = |dir: &Path| {
        let mut cmd = Command::new(cargo);
        cmd.current_dir(dir)
            .env("CARGO_TARGET_DIR", dir.join("target"));
        cmd
    };
    let run = |(dir, out): &(PathBuf, PathBuf)| -> Result<f64> {
        let t = Instant::now();
        checked(
            cargo_in(dir)
                .args(["xtask", "reproduce", "all", "--quick", "--out"])
                .arg(out)
                .stdout(std::io::stderr()),
            &format!("cargo xtask reproduce all --quick in {}", dir.display()),
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    // Both builds each side's timed command would otherwise start with: xtask in the `cargo
    // xtask` alias's profile (dev) and `lena` in release.
    eprintln!("target 5: building both sides");
    for (dir, _) in &sides {
        for args in [
            &["build", "-q", "-p", "xtask"][..],
            &["build", "--release", "-q", "-p", "lena-cli"],
        ] {
            checked(
                cargo_in(dir).args(args),
                &format!("cargo {} in {}", args.join(" "), dir.display()),
            )?;
        }
    }
    let mut times = Baseline::default();
    for side in [0, 1, 1, 0] {
        eprintln!(
            "target 5: reproduce all --quick, {}",
            ["baseline", "this commit"][side]
        );
        let t = run(&sides[side])?;
        if side == 0 {
            times.baseline.push(t);
        } else {
            times.current.push(t);
        }
    }
    times.commit = commit.to_string();
    Ok(times)
}

#[cfg(unix)]
fn link_dir(from: &Path, to: &Path) -> Result<()> {
    std::os::unix::fs::symlink(from, to)
        .with_context(|| format!("linking {} to {}", to.display(), from.display()))
}

#[cfg(not(unix))]
fn link_dir(_from: &Path, to: &Path) -> Result<()> {
    bail!("{} is missing (fetch MNIST there)", to.display())
}

/// Target 5's timings.
#[derive(Default)]
struct Baseline {
    commit: String,
    baseline: Vec<f64>,
    current: Vec<f64>,
}

/// One measure of a target over the runs, against its threshold.
struct Row {
    target: &'static str,
    measure: String,
    bound: Bound,
    values: Vec<f64>,
    /// Shown beside each value (the same run's other figure), if any.
    notes: Vec<String>,
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
    /// Shown, not judged.
    Info,
}

impl Bound {
    fn holds(self, v: f64) -> bool {
        match self {
            Self::AtMost(b) => v <= b,
            Self::AtLeast(b) => v >= b,
            Self::Info => true,
        }
    }

    fn text(self) -> String {
        match self {
            Self::AtMost(b) => format!("<= {b}"),
            Self::AtLeast(b) => format!(">= {b}"),
            Self::Info => "(shown)".into(),
        }
    }
}

impl Row {
    fn verdict(&self) -> String {
        if self.values.is_empty() {
            return "not measured".into();
        }
        if matches!(self.bound, Bound::Info) {
            return String::new();
        }
        let met = self.values.iter().filter(|&&v| self.bound.holds(v)).count();
        let n = self.values.len();
        if met == n {
            format!("**met** ({met} of {n})")
        } else {
            format!("**not met** ({met} of {n})")
        }
    }
}

/// The figures named `key` of every line of `example`.
fn figures(lines: &[Value], example: &str, path: &[&str]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l["example"] == example)
        .filter_map(|l| path.iter().try_fold(l, |v, k| v.get(k))?.as_f64())
        .collect()
}

/// The marker line that starts each run in the figures' file: figures of two programs are
/// paired within a run ([`paired`]).
const RUN_MARK: &str = "run";

/// `a`'s and `b`'s figures (an example and a path into its line) from each run that has both,
/// the runs cut at [`RUN_MARK`] lines (all lines one run if there are none).
fn paired(lines: &[Value], a: (&str, &[&str]), b: (&str, &[&str])) -> Vec<(f64, f64)> {
    lines
        .split(|l| l["example"] == RUN_MARK)
        .filter_map(|run| {
            let first =
                |(example, path): (&str, &[&str])| figures(run, example, path).first().copied();
            Some((first(a)?, first(b)?))
        })
        .collect()
}

fn render(
    cpu: &Cpu,
    forced: Option<&str>,
    stamp: &str,
    runs: usize,
    lines: &[Value],
    python: &Python,
    tests: Option<&Tests>,
    baseline: Option<&Baseline>,
) -> String {
    let mut rows = Vec::new();
    let paths: Vec<&str> = lines
        .iter()
        .filter(|l| l["example"] == "gradient_profile")
        .filter_map(|l| l["simd"].as_str())
        .collect();
    let path = paths.first().copied().unwrap_or("?");
    // Target 2.
    for (key, what) in [
        ("softmax_roofline", "softmax gradient / roofline"),
        ("logistic_ova_roofline", "logistic OVA gradient / roofline"),
    ] {
        rows.push(Row {
            target: "2. full-batch gradient",
            measure: what.into(),
            bound: Bound::AtMost(1.3),
            values: figures(lines, "gradient_profile", &[key]),
            notes: Vec::new(),
        });
    }
    rows.push(Row {
        target: "2. full-batch gradient",
        measure: "NumPy's two GEMMs / softmax gradient".into(),
        bound: Bound::AtLeast(4.0),
        values: paired(
            lines,
            ("gradient_numpy", &["two_gemms_ms"]),
            ("gradient_profile", &["softmax_ms"]),
        )
        .iter()
        .map(|(n, s)| n / s)
        .collect(),
        notes: Vec::new(),
    });
    rows.push(Row {
        target: "2. (data the nonzero layout declines)",
        measure: "dense block kernels / roofline".into(),
        bound: Bound::Info,
        values: figures(lines, "gradient_profile", &["dense_kernels_roofline"]),
        notes: Vec::new(),
    });
    rows.push(default_row(
        lines,
        "2. (the CPU's default, `Kernels::requests_ahead`)",
        "dense block kernels' softmax gradient, requests ahead toggled / default",
        "gradient_profile",
        "requests_ahead",
    ));
    // Target 3.
    for (name, label, bound) in [
        ("dgd", "3. round, DGD", 1.3),
        ("lag_wk", "3. round, LAG-WK", 1.5),
        ("lena", "3. round, LENA-m", 1.5),
        ("diana_qsgd", "3. round, DIANA-QSGD", 3.0),
    ] {
        let fastest = figures(
            lines,
            "round_profile",
            &["rows", name, "fastest_over_bound"],
        );
        rows.push(Row {
            target: label,
            measure: "median of ratios to the bound (fastest slice / bound's fastest)".into(),
            bound: Bound::AtMost(bound),
            values: figures(lines, "round_profile", &["rows", name, "median_ratio"]),
            notes: fastest.iter().map(|f| format!("{f:.2}")).collect(),
        });
    }
    for (target, example, path, what) in [
        (
            "3. (LENA-m's own work)",
            "round_profile",
            &["rows", "lena_m_bare", "median_ratio"][..],
            "LENA-m's round written out (its kernels, no framework), median of ratios",
        ),
        (
            "3. (LENA-m's own work)",
            "round_profile_bare",
            &["rows", "no scan", "median_ratio"][..],
            "the same without its scan (a scan at the bound's rate adds 1)",
        ),
        (
            "3. (LENA-m's own work)",
            "round_profile_bare",
            &["traffic", "median_ratio"][..],
            "a pass of its scan's traffic alone (three vectors read, two written a node)",
        ),
        (
            "3. (DIANA's own work)",
            "round_profile",
            &["rows", "diana_bare", "median_ratio"][..],
            "DIANA-QSGD's round written out (its kernels and codec, no framework)",
        ),
        (
            "3. (DIANA's own work)",
            "round_profile_bare_diana",
            &["rows", "no codec", "median_ratio"][..],
            "the same without its codec (draws, compression, decoding and sum)",
        ),
    ] {
        rows.push(Row {
            target,
            measure: what.into(),
            bound: Bound::Info,
            values: figures(lines, example, path),
            notes: Vec::new(),
        });
    }
    // What fusing LENA-m's scores and sum into its scan would give (`fusion_profile`): each
    // part's cost apart, over the library's scan alone, and inside a copy of the scan, over the
    // copy alone.
    for (parts, apart, inside) in [
        (
            "the sum of q",
            "200 nodes, + sum of q apart",
            "200 nodes, + sum of q",
        ),
        (
            "the next node's scores and the sum of q",
            "200 nodes, + both apart",
            "200 nodes, + both",
        ),
    ] {
        let part = |base: &str, with: &str| {
            let at = |name: &str| figures(lines, "fusion_profile", &["rows", name, "median_ratio"]);
            at(with)
                .iter()
                .zip(at(base))
                .map(|(w, b)| w - b)
                .collect::<Vec<f64>>()
        };
        rows.push(Row {
            target: "3. (LENA-m's own work)",
            measure: format!(
                "{parts} beside its scan: their part apart (inside a copy of the scan, other \
                 floats; `fusion_profile`)"
            ),
            bound: Bound::Info,
            values: part("200 nodes, library's scan", apart),
            notes: part("200 nodes, its copy", inside)
                .iter()
                .map(|f| format!("{f:.2}"))
                .collect(),
        });
    }
    rows.push(default_row(
        lines,
        "3. (the CPU's default, `Kernels::scan_requests_ahead`)",
        "LENA-m's node scan of 200 nodes, requests ahead toggled / default",
        "scan_profile",
        "scan_requests_ahead",
    ));
    let dgd_torch = paired(
        lines,
        ("round_profile", &["rows", "dgd", "fastest_ms"]),
        ("round_torch", &["fastest_ms"]),
    );
    rows.push(Row {
        target: "3. round, DGD",
        measure: "lena's fastest slice / PyTorch's".into(),
        bound: Bound::AtMost(1.0),
        values: dgd_torch.iter().map(|(l, t)| l / t).collect(),
        notes: dgd_torch
            .iter()
            .map(|(_, t)| format!("{t:.3} ms"))
            .collect(),
    });
    // Target 4.
    for (key, what, bound) in [
        ("resident_gb", "GB resident", Bound::AtMost(12.0)),
        (
            "vectors_per_node",
            "vectors of d per node",
            Bound::AtMost(6.0),
        ),
        (
            "fastest_ratio",
            "round / bound, fastest slice",
            Bound::AtMost(1.5),
        ),
        (
            "median_ratio",
            "round / bound, median of ratios",
            Bound::AtMost(1.5),
        ),
    ] {
        rows.push(Row {
            target: "4. LENA at M = 60 000",
            measure: what.into(),
            bound,
            values: figures(lines, "memory_profile", &[key]),
            notes: Vec::new(),
        });
    }
    for (path, what) in [
        (
            &["rows", "whole", "median_ratio"][..],
            "LENA-m's round written out (every node skipping), median of ratios",
        ),
        (&["rows", "scan only", "median_ratio"][..], "its scan alone"),
        (
            &["traffic", "median_ratio"][..],
            "a pass of its scan's traffic alone (three vectors read, two written a node)",
        ),
    ] {
        rows.push(Row {
            target: "4. (LENA's own work at M = 60 000)",
            measure: what.into(),
            bound: Bound::Info,
            values: figures(lines, "round_profile_bare_large", path),
            notes: Vec::new(),
        });
    }
    for (example, key, what) in [
        (
            "cnn_train",
            "us_per_sample",
            "CNN training step, us a sample (share of the FMA peak)",
        ),
        (
            "cnn_eval",
            "us_per_image",
            "CNN evaluation, us an image (share of the FMA peak)",
        ),
    ] {
        rows.push(Row {
            target: "5. (figure 3's runs, one thread)",
            measure: what.into(),
            bound: Bound::Info,
            values: figures(lines, example, &[key]),
            notes: figures(lines, example, &["peak_share"])
                .iter()
                .map(|f| format!("{:.0}%", 100.0 * f))
                .collect(),
        });
    }
    if let Some(b) = baseline {
        let (cur, base) = (
            b.current.iter().sum::<f64>(),
            b.baseline.iter().sum::<f64>(),
        );
        rows.push(Row {
            target: "5. reproduce all --quick",
            measure: format!("time here / at {} (alternated)", b.commit),
            bound: Bound::AtMost(0.5),
            values: vec![cur / base],
            notes: vec![format!(
                "{} s against {} s",
                join(&b.current, 0),
                join(&b.baseline, 0)
            )],
        });
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Issue 14's targets, {stamp}\n\n**Machine:** {} (family {}, model {}); kernels' path \
         **{path}** (this CPU's widest: {}).",
        or_unknown(&cpu.name),
        or_unknown(&cpu.family),
        or_unknown(&cpu.model),
        cpu.expected_path()
    );
    let peaks = figures(lines, "fma_peak", &["one_core"]);
    if !peaks.is_empty() {
        let _ = writeln!(
            s,
            "**Host speed:** `fma_peak` {} G multiply-adds a second on one core (runs in order).",
            join(&peaks, 1)
        );
    }
    let _ = writeln!(
        s,
        "**Runs:** {runs}; every ratio is to a bound measured in the same process.\n\n\
         | target | measure | bound | runs | verdict |\n| --- | --- | --- | --- | --- |"
    );
    let expected = forced.unwrap_or(cpu.expected_path());
    let _ = writeln!(
        s,
        "| 1. widest path | kernels' path taken{} | {expected} | {path} | {} |",
        if forced.is_some() {
            " (narrowed by `--simd`)"
        } else {
            ""
        },
        // Kernels::name gives the path's name first ("x86-64-v4 (AVX-512)").
        if !paths.is_empty()
            && paths
                .iter()
                .all(|p| p.split_whitespace().next() == Some(expected))
        {
            "**met**"
        } else {
            "**not met**"
        }
    );
    match tests {
        Some(t) => {
            let _ = writeln!(
                s,
                "| 1. tests on every path | `cargo test --workspace` | pass | {} passed, {} failed \
                 in {:.0} s | {} |",
                t.counts.0,
                t.counts.1,
                t.seconds,
                if t.ok { "**met**" } else { "**not met**" }
            );
        }
        None => {
            let _ = writeln!(
                s,
                "| 1. tests on every path | `cargo test --workspace` | pass | (not run: `--tests`) | not measured |"
            );
        }
    }
    for row in &rows {
        let values: Vec<String> = row
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                // Two decimals, or three where two would round a miss onto the bound.
                let two = format!("{v:.2}");
                let v = match two.parse::<f64>() {
                    Ok(r) if row.bound.holds(r) != row.bound.holds(v) => format!("{v:.3}"),
                    _ => two,
                };
                match row.notes.get(i) {
                    Some(n) => format!("{v} ({n})"),
                    None => v,
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            row.target,
            row.measure,
            row.bound.text(),
            if values.is_empty() {
                "-".into()
            } else {
                values.join(", ")
            },
            row.verdict()
        );
    }
    if let Some(narrowed) = forced {
        let _ = writeln!(
            s,
            "\nThe examples ran on `{narrowed}` (`--simd`). The FMA peak and faer's sgemm (the \
             compute floor of target 2's roofline) still run on this CPU's widest path, so the \
             roofline ratios and the shares of the FMA peak are against the wider path's rates."
        );
    }
    if !python.numpy {
        let _ = writeln!(
            s,
            "\nNumPy does not import here (`pip install numpy`): its two GEMMs were not timed."
        );
    }
    if !python.torch {
        let _ = writeln!(
            s,
            "\nPyTorch does not import here (`pip install torch numpy`): its DGD round was not timed."
        );
    }
    if baseline.is_none() {
        let _ = writeln!(
            s,
            "\nTarget 5 not measured: `--baseline cef624b` times `reproduce all --quick` there \
             and here, alternated."
        );
    }
    s
}

/// A shown row for one of the kernels' per-CPU defaults: `example`'s figure of the time with
/// the default toggled over the time with it (`requests_toggled_over_default`), each run noted
/// with the default its line gives under `flag`.
fn default_row(
    lines: &[Value],
    target: &'static str,
    measure: &str,
    example: &str,
    flag: &str,
) -> Row {
    let defaults = lines
        .iter()
        .filter(|l| l["example"] == example)
        .filter_map(|l| l[flag].as_bool())
        .map(|on| format!("default {}", if on { "on" } else { "off" }))
        .collect();
    Row {
        target,
        measure: measure.into(),
        bound: Bound::Info,
        values: figures(lines, example, &["requests_toggled_over_default"]),
        notes: defaults,
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}

fn join(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The time now as `YYYYmmddTHHMMSSZ` (UTC).
fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_of_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_widest_path_follows_the_flags() {
        let cpu = |flags: &[&str]| Cpu {
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Cpu::default()
        };
        let v4 = [
            "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx2", "fma",
        ];
        assert_eq!(cpu(&v4).expected_path(), "x86-64-v4");
        assert_eq!(cpu(&["avx2", "fma", "bmi2"]).expected_path(), "x86-64-v3");
        assert_eq!(cpu(&["avx2", "bmi2"]).expected_path(), "scalar");
        assert_eq!(cpu(&[]).expected_path(), "scalar");
    }

    #[test]
    fn test_counts_sum_every_result_line() {
        let text = "\nrunning 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 \
                    measured; 0 filtered out; finished in 0.05s\n\ntest result: FAILED. 10 \
                    passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(test_counts(text), (13, 2));
        assert_eq!(test_counts("no tests here"), (0, 0));
    }

    #[cfg(unix)]
    #[test]
    fn a_failed_reference_is_noted_not_fatal() {
        let python = Python {
            exe: "false".into(),
            numpy: true,
            torch: true,
        };
        let mut failures = Vec::new();
        let lines = std::env::temp_dir().join(format!("targets-test-{}.jsonl", std::process::id()));
        python.step(
            Command::new("false").arg("benches/python/round_torch.py"),
            &lines,
            &mut failures,
        );
        assert_eq!(failures, ["`benches/python/round_torch.py`"]);
        python.step(Command::new("true").arg("x.py"), &lines, &mut failures);
        assert_eq!(failures.len(), 1);
    }

    fn line(text: &str) -> Value {
        serde_json::from_str(text).expect("a JSON line")
    }

    #[test]
    fn verdicts_count_the_runs_within_each_bound() {
        let lines = vec![
            line(r#"{"example":"run","run":1}"#),
            line(
                r#"{"example":"gradient_profile","simd":"x86-64-v4 (AVX-512)","softmax_ms":6.0,
                "softmax_roofline":1.05,"logistic_ova_roofline":1.4,"dense_kernels_roofline":1.41}"#,
            ),
            line(r#"{"example":"gradient_numpy","two_gemms_ms":30.0}"#),
            line(
                r#"{"example":"round_profile","rows":{"dgd":{"median_ratio":0.8,
                "fastest_over_bound":0.82,"fastest_ms":0.32},"lena":{"median_ratio":1.55,
                "fastest_over_bound":1.57},"lag_wk":{"median_ratio":0.97},
                "diana_qsgd":{"median_ratio":2.66}}}"#,
            ),
            // Run 1 has no PyTorch figure: its DGD round pairs with nothing, and run 2's
            // PyTorch round with run 2's DGD round.
            line(r#"{"example":"run","run":2}"#),
            line(
                r#"{"example":"round_profile","rows":{"dgd":{"median_ratio":1.35,
                "fastest_ms":0.30},"lena":{"median_ratio":1.503},"lag_wk":{"median_ratio":0.97},
                "diana_qsgd":{"median_ratio":2.9}}}"#,
            ),
            line(r#"{"example":"round_torch","fastest_ms":0.60}"#),
            line(
                r#"{"example":"scan_profile","scan_requests_ahead":true,
                "requests_toggled_over_default":1.25}"#,
            ),
            line(
                r#"{"example":"fusion_profile","rows":{"200 nodes, library's scan":
                {"median_ratio":0.75},"200 nodes, its copy":{"median_ratio":0.7},
                "200 nodes, + both apart":{"median_ratio":0.97},
                "200 nodes, + both":{"median_ratio":1.1}}}"#,
            ),
        ];
        let cpu = Cpu {
            name: "Test CPU".into(),
            family: "6".into(),
            model: "207".into(),
            flags: ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
                .map(String::from)
                .to_vec(),
        };
        let python = Python {
            exe: "python3".into(),
            numpy: true,
            torch: true,
        };
        let text = render(&cpu, None, "now", 2, &lines, &python, None, None);
        let row = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?} in\n{text}"))
                .to_string()
        };
        assert!(row("| 1. widest path").ends_with("| **met** |"));
        assert!(row("| 2. full-batch gradient | softmax").contains("**met** (1 of 1)"));
        assert!(row("| 2. full-batch gradient | logistic").contains("**not met** (0 of 1)"));
        // 30 ms over 6 ms: 5x NumPy.
        assert!(row("| 2. full-batch gradient | NumPy").contains("| 5.00 | **met**"));
        assert!(row("| 3. round, DGD | median").contains("**not met** (1 of 2)"));
        // 1.503 shown with the third decimal that makes it a miss.
        assert!(row("| 3. round, LENA-m").contains("1.55 (1.57), 1.503 | **not met** (0 of 2)"));
        assert!(row("| 3. round, LENA-m").contains("1.55 (1.57)"));
        assert!(row("| 3. round, LAG-WK").contains("**met** (2 of 2)"));
        assert!(row("| 3. round, DIANA-QSGD").contains("**met** (2 of 2)"));
        // Run 2's 0.30 ms against its PyTorch's 0.60 (not run 1's 0.32).
        assert!(row("| 3. round, DGD | lena's").contains("| 0.50 (0.600 ms) | **met** (1 of 1) |"));
        assert!(row("| 4. LENA at M = 60 000 | GB").contains("| - | not measured |"));
        assert!(text.contains("Target 5 not measured"));
        assert!(
            row("| 3. (the CPU's default, `Kernels::scan_requests_ahead`)")
                .contains("| (shown) | 1.25 (default on) |")
        );
        // Each part over its own scan: 0.97 - 0.75 apart, 1.1 - 0.7 inside.
        assert!(
            row("| 3. (LENA-m's own work) | the next node's").contains("| (shown) | 0.22 (0.40) |")
        );
        // No figures, no row values.
        assert!(row("| 3. (LENA-m's own work) | the sum of q beside").contains("| (shown) | - |"));
        // A path narrowed by --simd is judged against the one asked for.
        let narrowed = render(
            &cpu,
            Some("x86-64-v3"),
            "now",
            2,
            &lines,
            &python,
            None,
            None,
        );
        let first = narrowed
            .lines()
            .find(|l| l.starts_with("| 1. widest path"))
            .expect("the path's row");
        assert!(first.contains("(narrowed by `--simd`) | x86-64-v3 |"));
        assert!(first.ends_with("| **not met** |"));
        assert!(narrowed.contains("The examples ran on `x86-64-v3`"));
    }
}
