//! `lena`: run communication-efficient distributed learning experiments.

mod backend;
mod batch;
mod flags;
mod plot;
mod resume;
mod run;
mod rundir;
mod seeds;
mod sweep;

use batch::BatchArgs;
use flags::RunArgs;
use plot::PlotArgs;
use resume::ResumeArgs;
use run::{STOPPED, StoppedRun};
use sweep::SweepArgs;

use clap::{Parser, Subcommand};

/// Every large block (a node's state vectors, the messages) on a cache line, so that no
/// 64-byte load of the AVX-512 kernels straddles two lines; never changes a float.
#[global_allocator]
static ALLOC: lena_kernels::LineAligned = lena_kernels::LineAligned;

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
    /// Run a list of experiments (a TOML file of `[[run]]` tables: config, output, set) in
    /// one process, a few at a time, each into its own run directory as `lena run` would: the
    /// runs load each data source once and share it.
    Batch(BatchArgs),
    /// Continue an interrupted run from its directory's checkpoint (config.toml and
    /// checkpoint.bin): the metrics files end exactly as an uninterrupted run's would.
    Resume(ResumeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = lena_kernels::Kernels::from_env()
        .map_err(anyhow::Error::new)
        .and_then(|_| match cli.command {
            Command::Run(a) => run::run(*a),
            Command::Plot(a) => plot::plot(a),
            Command::Resume(a) => resume::resume(a),
            Command::Sweep(a) => sweep::sweep(a, false),
            Command::Tune(a) => sweep::sweep(a, true),
            Command::Batch(a) => batch::batch(a),
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
