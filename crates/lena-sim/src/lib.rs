//! The in-process simulator: M nodes and a server in one process, run round by round.
//!
//! Must not depend on: clap or any terminal UI (the `lena` binary draws progress from the
//! [`Observer`] callbacks).
//!
//! - [`config`]: the experiment file (TOML), with errors that name the field;
//! - [`streams`]: seeded RNG streams, one per node and purpose;
//! - [`Simulation`]: loads data, splits it, builds workers and server, runs rounds, evaluates;
//! - [`checkpoint`]: the checkpoint file (versioned, checksummed, verified before it is parsed);
//! - [`metrics`]: one [`MetricsRow`] per evaluation, written as CSV or JSON lines as it goes;
//! - [`exchange`]: the seam a multi-process backend (`lena-mpi`) plugs into.
//!
//! # Determinism
//! A run is fully determined by its config and seed. Nodes compute in parallel (rayon), but each
//! node's work depends only on its own stream, and the server combines messages in node order,
//! so the metrics do not depend on the number of threads.

pub mod checkpoint;
pub mod config;
pub mod exchange;
pub mod metrics;
mod sim;
pub mod streams;

pub use config::ExperimentConfig;
pub use exchange::{Command, Exchange, Item, Items, Traffic, host_of};
pub use metrics::MetricsRow;
pub use sim::{DataCache, Observer, Simulation, Summary};

/// Errors of a simulation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The experiment file or a value in it is wrong.
    #[error("{0}")]
    Config(String),
    /// Data could not be loaded or split.
    #[error(transparent)]
    Data(#[from] lena_data::Error),
    /// The model rejected its parameters or the data.
    #[error(transparent)]
    Model(#[from] lena_model::Error),
    /// The algorithm rejected its parameters or a message.
    #[error(transparent)]
    Algo(#[from] lena_algo::Error),
    /// The iterates blew up.
    #[error(
        "diverged at iteration {iteration}: {what}; the step size {step_size} is likely too large \
         (try a smaller algorithm.step_size, e.g. \"1/L\")"
    )]
    Diverged {
        /// Iteration at which divergence was detected.
        iteration: u64,
        /// What was seen (non-finite parameters, a loss past the bound).
        what: String,
        /// The step size in use.
        step_size: f32,
    },
    /// Writing metrics failed.
    #[error("{path}: {err}")]
    Io {
        /// The metrics file being written.
        path: std::path::PathBuf,
        /// Underlying error.
        #[source]
        err: std::io::Error,
    },
    /// A metrics file does not hold what a checkpoint recorded for it.
    #[error("{path}: {what}")]
    Metrics {
        /// The metrics file that disagrees with the checkpoint.
        path: std::path::PathBuf,
        /// What does not match.
        what: String,
    },
    /// An observer asked to stop (e.g. Ctrl-C).
    #[error("stopped by the caller at iteration {0}")]
    Stopped(u64),
    /// A checkpoint cannot be used for this run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A multi-process transport failed (a process exited, hung or sent something wrong).
    #[error("transport: {0}")]
    Transport(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
