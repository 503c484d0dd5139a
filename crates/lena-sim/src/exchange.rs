//! The seam between a simulation and a transport that puts its nodes in other processes.
//!
//! The in-process simulator has no [`Exchange`]. A multi-process backend (`lena-mpi`) gives
//! every process the same [`Simulation`](crate::Simulation) of the same config; the server
//! process (rank 0) hosts no node and runs the rounds, evaluations and checkpoints, asking the
//! others through [`Exchange`] for what only they compute; a worker process hosts some nodes and
//! runs [`Simulation::serve`](crate::Simulation::serve), obeying [`Command`]s. Both sides run
//! the simulator's own code on the same seeded streams, so a multi-process run gives the same
//! iterates and metrics, bit for bit, as the in-process one.

use crate::Result;

/// What the server asks the worker processes to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run a round; the payload is the parameters (f32, little-endian). Workers answer with
    /// their nodes' uploads ([`Items::Uploads`]).
    Round,
    /// Evaluate at the parameters in the payload (f32, little-endian); workers answer with
    /// their nodes' full-batch losses ([`Items::Losses`]).
    Evaluate,
    /// Checkpoint; workers answer with their nodes' state sections ([`Items::States`]).
    Checkpoint,
    /// Load the checkpoint in the payload (resume); no answer.
    Restore,
    /// The run is over (finished or stopped); no answer.
    Finish,
}

impl Command {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Command::Round => 1,
            Command::Evaluate => 2,
            Command::Checkpoint => 3,
            Command::Restore => 4,
            Command::Finish => 5,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Command::Round,
            2 => Command::Evaluate,
            3 => Command::Checkpoint,
            4 => Command::Restore,
            5 => Command::Finish,
            _ => return None,
        })
    }
}

/// The kind of per-node answer a worker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Items {
    /// A node's upload: its encoded message (exactly `ceil(bits / 8)` bytes) and bit length,
    /// or nothing for a silent node.
    Uploads,
    /// A node's full-batch loss (f64, little-endian).
    Losses,
    /// A node's checkpoint section.
    States,
}

/// One node's answer: `bits` is the message length in bits for [`Items::Uploads`] (0: silent)
/// and the byte length times 8 otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    /// Node index.
    pub node: usize,
    /// Length in bits.
    pub bits: u64,
    /// The encoded upload, `ceil(bits / 8)` bytes.
    pub bytes: &'a [u8],
}

/// What a transport carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Bytes of encoded uploads (the messages whose bits were charged).
    pub payload_bytes: u64,
    /// All other bytes: commands (with the parameters), headers, losses, checkpoint sections.
    pub control_bytes: u64,
}

/// A transport between the server process and the processes hosting nodes.
///
/// Every call names the round it belongs to, so that a transport's errors (a process that
/// died or hangs) can say where the run stopped.
pub trait Exchange {
    /// Whether this process computes node `node`.
    fn hosts(&self, node: usize) -> bool;
    /// Whether this process is the server.
    fn is_server(&self) -> bool;
    /// Server: sends `cmd` with `payload` to every worker process.
    fn command(&mut self, round: u64, cmd: Command, payload: &[u8]) -> Result<()>;
    /// Worker: waits for the server's next command; its payload replaces `payload`.
    fn next_command(&mut self, round: u64, payload: &mut Vec<u8>) -> Result<Command>;
    /// Worker: one item per hosted node, in node order.
    fn send_items(&mut self, round: u64, kind: Items, items: &[Item<'_>]) -> Result<()>;
    /// Server: receives the items of every node hosted elsewhere and hands each to `take`.
    fn gather_items(
        &mut self,
        round: u64,
        kind: Items,
        take: &mut dyn FnMut(Item<'_>) -> Result<()>,
    ) -> Result<()>;
    /// Wall-clock seconds spent communicating so far (waiting included).
    fn comm_seconds(&self) -> f64;
    /// Bytes this process sent and received so far.
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
    /// Ends every process of the run at once, after a failure this process cannot recover
    /// from (a hung peer would otherwise wait forever). Returns only if the transport has no
    /// such means.
    fn abort(&mut self) {}
}

/// The process (1-based worker rank) hosting node `node` of `nodes` over `workers` worker
/// processes: contiguous blocks, the first `nodes % workers` blocks one node larger.
///
/// # Panics
/// If `workers` is 0 or `node >= nodes`.
pub fn host_of(node: usize, nodes: usize, workers: usize) -> usize {
    assert!(
        workers > 0 && node < nodes,
        "node {node} of {nodes} on {workers} workers"
    );
    let (base, extra) = (nodes / workers, nodes % workers);
    // The first `extra` workers host base + 1 nodes.
    let big = extra * (base + 1);
    1 + if node < big {
        node / (base + 1)
    } else {
        extra + (node - big) / base.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_contiguous_balanced_blocks() {
        for nodes in 1..40 {
            for workers in 1..9 {
                let hosts: Vec<usize> = (0..nodes).map(|m| host_of(m, nodes, workers)).collect();
                assert!(hosts.windows(2).all(|p| p[0] <= p[1]), "{hosts:?}");
                let used = workers.min(nodes);
                for w in 1..=used {
                    let n = hosts.iter().filter(|&&h| h == w).count();
                    assert!(
                        n == nodes / workers || n == nodes / workers + 1,
                        "{hosts:?}"
                    );
                }
                assert!(hosts.iter().all(|&h| (1..=used).contains(&h)));
            }
        }
    }
}
