//! Where a run's nodes compute: in this process, or in the other ranks of an MPI job.

use anyhow::Result;
use clap::{Args, ValueEnum};
use lena_sim::Simulation;

/// The backend choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The in-process simulator.
    #[default]
    Local,
    /// Under `mpirun -n R`: rank 0 is the server, ranks 1..R host the nodes (a lena built with
    /// `--features mpi`).
    Mpi,
}

/// `--backend` and its options.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where the nodes compute: `local` (this process) or `mpi` (the other ranks of an MPI
    /// job started with `mpirun -n R`; the same results, bit for bit).
    #[arg(long, value_enum, default_value_t)]
    pub backend: Kind,
    /// MPI backend: seconds a process waits for another before the run stops with an error
    /// naming the silent rank and the round.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub timeout: f64,
}

/// A started backend: for MPI, the initialised environment (finalised when dropped).
pub struct Started {
    #[cfg(feature = "mpi")]
    mpi: Option<lena_mpi::Mpi>,
    timeout: std::time::Duration,
}

impl BackendArgs {
    /// Starts the backend (initialises MPI for `mpi`).
    pub fn start(&self) -> Result<Started> {
        anyhow::ensure!(
            self.timeout.is_finite() && self.timeout > 0.0,
            "--timeout must be a positive number of seconds, got {}",
            self.timeout
        );
        let timeout = std::time::Duration::from_secs_f64(self.timeout);
        match self.backend {
            Kind::Local => {
                let mut s = Started::local();
                s.timeout = timeout;
                Ok(s)
            }
            #[cfg(feature = "mpi")]
            Kind::Mpi => {
                let mpi = lena_mpi::Mpi::init()
                    .ok_or_else(|| anyhow::anyhow!("cannot initialise MPI"))?;
                anyhow::ensure!(
                    mpi.size() >= 2,
                    "--backend mpi needs at least 2 processes (rank 0 is the server): start \
                     lena with mpirun -n R, R >= 2"
                );
                Ok(Started {
                    mpi: Some(mpi),
                    timeout,
                })
            }
            #[cfg(not(feature = "mpi"))]
            Kind::Mpi => anyhow::bail!(
                "this lena was built without MPI; build it with \
                 `cargo build --release -p lena-cli --features mpi` (docs/DISTRIBUTED.md)"
            ),
        }
    }
}

impl Started {
    /// The in-process backend.
    pub fn local() -> Self {
        Started {
            #[cfg(feature = "mpi")]
            mpi: None,
            timeout: std::time::Duration::from_secs(120),
        }
    }

    /// This process's MPI rank (0 without MPI).
    pub fn rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.rank();
        }
        0
    }

    /// Processes in the job (1 without MPI).
    pub fn ranks(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.size();
        }
        1
    }

    /// Whether this process hosts nodes for a server elsewhere (and writes nothing).
    pub fn is_worker(&self) -> bool {
        self.rank() > 0
    }

    /// Puts `sim` on the backend (a no-op for `local`); `note`: a file that a fatal transport
    /// error is appended to.
    pub fn attach(&self, sim: Simulation, note: Option<&std::path::Path>) -> Result<Simulation> {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            let mut ex = m.exchange(sim.node_count(), self.timeout)?;
            if let Some(p) = note {
                ex = ex.with_note(p.to_path_buf());
            }
            return Ok(sim.with_exchange(Box::new(ex)));
        }
        let _ = (self.timeout, note);
        Ok(sim)
    }

    /// A worker rank's whole life: obey the server until it finishes the run. Ctrl-C is left
    /// to rank 0, which checkpoints and then releases the workers.
    pub fn serve(&self, sim: Simulation) -> Result<()> {
        let mut sim = self.attach(sim, None)?;
        let _ = ctrlc::set_handler(|| {});
        if let Err(e) = sim.serve() {
            eprintln!("lena (rank {}): {e}; ending the MPI job", self.rank());
            sim.abort_exchange();
            return Err(e.into());
        }
        Ok(())
    }

    /// For meta.json: `local`, or `mpi (R ranks)`.
    pub fn describe(&self) -> String {
        match self.ranks() {
            1 => "local".into(),
            r => format!("mpi ({r} ranks: a server and {} hosting nodes)", r - 1),
        }
    }
}
