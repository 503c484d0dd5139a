//! Project automation: `cargo xtask data mnist`, `cargo xtask fixtures`,
//! `cargo xtask reproduce FIGURE [--quick]`, `cargo xtask targets`.

mod data;
mod pool;
mod reproduce;
mod targets;
mod tune;
mod tuned;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

const USAGE: &str = "usage:
  cargo xtask data mnist [--dir DIR]   fetch the four MNIST files into DIR (default data/mnist)
  cargo xtask fixtures                 rebuild tests/data/mnist-mini from data/mnist
  cargo xtask reproduce FIGURE [--quick] [--out DIR] [--jobs N]
                                       run the paper's figure (fig1, fig2, fig3, fig4 or all)
                                       from experiments/, writing CSV and PNG/SVG under DIR
                                       (default runs/reproduce); fetches MNIST if missing;
                                       N runs at once (default: one per core), sharing the
                                       cores (results do not depend on it)
  cargo xtask reproduce FIGURE --tuned [--quick]
                                       the same with the committed tuned settings of
                                       experiments/tuned/FIGURE over 5 evaluation seeds
                                       (fig2, fig4, claims: LAG's, LAQ's and SASG's own
                                       claims, or all)
  cargo xtask reproduce tune FIGURE [METHOD...]
                                       re-run a study's tuning on the validation split
                                       (fig2, fig4, lag-mnist, laq-logistic, laq-mlp,
                                       sasg-mnist)
                                       (all methods, or those named) and rewrite
                                       experiments/tuned/FIGURE
  cargo xtask targets [--runs N] [--tests] [--baseline COMMIT] [--simd PATH] [--out DIR]
                                       issue 14's speed targets on this machine, each
                                       against its bound in the same run, over N runs
                                       (default 3): the profiling examples, NumPy's and
                                       PyTorch's references where they import; --tests
                                       runs cargo test --workspace; --baseline times
                                       reproduce all --quick there and here, alternated;
                                       --simd narrows the examples' path (LENA_SIMD,
                                       e.g. x86-64-v3); a report in DIR (default
                                       target/targets)";

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = dispatch(&args);
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn dispatch(args: &[String]) -> Result<()> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["data", "mnist"] => data::mnist(&root().join("data/mnist")),
        ["data", "mnist", "--dir", dir] => data::mnist(&PathBuf::from(dir)),
        ["fixtures"] => data::fixtures(&root()),
        ["reproduce", "tune", figure, only @ ..] => reproduce::tune(
            &root(),
            figure,
            &only.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ),
        ["reproduce", which, rest @ ..] => {
            let (mut quick, mut tuned) = (false, false);
            let mut out = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "--quick" => quick = true,
                    "--tuned" => tuned = true,
                    "--out" => out = it.next().map(PathBuf::from),
                    "--jobs" => {
                        let n = it.next().context("--jobs needs a number")?;
                        pool::set_jobs(n.parse().with_context(|| {
                            format!("--jobs: expected a number of runs at once, found {n:?}")
                        })?);
                    }
                    other => bail!("unknown option {other:?}\n{USAGE}"),
                }
            }
            reproduce::reproduce(&root(), which, quick, tuned, out)
        }
        ["targets", rest @ ..] => {
            let mut opts = targets::Options {
                runs: 3,
                tests: false,
                baseline: None,
                out: None,
                simd: None,
            };
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "--runs" => {
                        let n = it.next().context("--runs needs a number")?;
                        opts.runs = n.parse().with_context(|| {
                            format!("--runs: expected a number of runs, found {n:?}")
                        })?;
                    }
                    "--tests" => opts.tests = true,
                    "--simd" => {
                        opts.simd = Some(it.next().context("--simd needs a path")?.to_string());
                    }
                    "--baseline" => {
                        opts.baseline =
                            Some(it.next().context("--baseline needs a commit")?.to_string());
                    }
                    "--out" => {
                        opts.out =
                            Some(PathBuf::from(it.next().context("--out needs a directory")?))
                    }
                    other => bail!("unknown option {other:?}\n{USAGE}"),
                }
            }
            targets::targets(&root(), &opts)
        }
        ["help" | "--help" | "-h"] | [] => {
            eprintln!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command {:?}\n{USAGE}", a.join(" ")),
    }
}
