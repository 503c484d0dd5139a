//! The multi-process backend: a run's nodes in other processes, talking over MPI, with the
//! in-process simulator's results bit for bit.
//!
//! Rank 0 is the server; ranks 1..R host the M nodes in contiguous blocks
//! ([`lena_sim::host_of`]). Every process builds the same [`lena_sim::Simulation`] from the
//! same experiment file; the server runs it, and the workers obey its commands through
//! [`lena_sim::Exchange`] (see that module for the protocol). What crosses the wire per round:
//!
//! - server -> each worker: one command message, the parameters (4 d bytes) for a round;
//! - each worker -> server: one header (kind, round, one flag bit per hosted node, and the bit
//!   length of each flagged item), then one message per flagged item holding exactly
//!   `ceil(bits / 8)` bytes: for uploads, the encoded message whose bits were charged. A silent
//!   node sends nothing but its flag bit.
//!
//! Every wait has a deadline: a process that exits or hangs stops the run with an error naming
//! its rank and the round.
//!
//! [`wire`] (the framing) is always built and tested; the MPI transport needs the `mpi` feature
//! (rsmpi over an MPI library such as OpenMPI, and libclang for its bindings).
//!
//! Must not depend on: `lena-cli` (the binary uses this crate, not the reverse).

pub mod wire;

#[cfg(feature = "mpi")]
mod transport;
#[cfg(feature = "mpi")]
pub use transport::{Mpi, MpiExchange};

/// Message tags.
pub mod tag {
    /// Server -> worker: a command.
    pub const COMMAND: i32 = 1;
    /// Worker -> server: the header of a round's items.
    pub const HEADER: i32 = 2;
    /// Worker -> server: one item's bytes.
    pub const DATA: i32 = 3;
}
