//! [`lena_sim::Exchange`] over MPI point-to-point messages, every wait with a deadline.

use crate::{tag, wire};
use lena_sim::{Command, Error, Exchange, Item, Items, Result, Traffic, host_of};
use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Equivalence;
use std::time::{Duration, Instant};

/// The MPI environment of this process (finalised when dropped).
pub struct Mpi {
    universe: Universe,
}

impl Mpi {
    /// Initialises MPI (only the main thread calls MPI: `Funneled`). `None` if MPI was
    /// initialised already or cannot be.
    pub fn init() -> Option<Self> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
        Some(Self { universe })
    }

    /// This process's rank (0: the server).
    pub fn rank(&self) -> usize {
        self.universe.world().rank() as usize
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.universe.world().size() as usize
    }

    /// The exchange of this process for a run of `nodes` nodes; waits longer than `timeout`
    /// are errors. Needs at least 2 processes.
    pub fn exchange(&self, nodes: usize, timeout: Duration) -> Result<MpiExchange> {
        let world = self.universe.world();
        let size = world.size() as usize;
        if size < 2 {
            return Err(Error::Config(
                "the MPI backend needs at least 2 processes (rank 0 is the server): \
                 start it with mpirun -n R, R >= 2"
                    .into(),
            ));
        }
        Ok(MpiExchange {
            rank: world.rank() as usize,
            world,
            size,
            nodes,
            timeout,
            comm: Duration::ZERO,
            frame: Vec::new(),
            payload_bytes: 0,
            control_bytes: 0,
            fault: Fault::from_env()?,
            note: None,
        })
    }
}

/// Fault injection for tests of the failure handling: `LENA_MPI_FAULT=stall:RANK:ROUND` makes
/// worker RANK stop answering (sleep) when asked for round ROUND, `exit:RANK:ROUND` makes it
/// exit with status 3 there.
#[derive(Clone, Copy, Debug)]
struct Fault {
    exit: bool,
    rank: usize,
    round: u64,
}

impl Fault {
    fn from_env() -> Result<Option<Self>> {
        let Ok(spec) = std::env::var("LENA_MPI_FAULT") else {
            return Ok(None);
        };
        let bad = || {
            Error::Config(format!(
                "LENA_MPI_FAULT={spec:?}: expected stall:RANK:ROUND or exit:RANK:ROUND"
            ))
        };
        let mut parts = spec.split(':');
        let exit = match parts.next() {
            Some("stall") => false,
            Some("exit") => true,
            _ => return Err(bad()),
        };
        let rank = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
        let round = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
        Ok(Some(Self { exit, rank, round }))
    }
}

/// One process's end of a run's MPI traffic.
pub struct MpiExchange {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    nodes: usize,
    timeout: Duration,
    comm: Duration,
    frame: Vec<u8>,
    payload_bytes: u64,
    control_bytes: u64,
    fault: Option<Fault>,
    note: Option<std::path::PathBuf>,
}

impl MpiExchange {
    /// A file that a fatal transport error is appended to before the job ends (the run
    /// directory's note, on the server).
    pub fn with_note(mut self, path: std::path::PathBuf) -> Self {
        self.note = Some(path);
        self
    }

    /// Upload bytes this process sent or received (the encoded messages only).
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Everything else it sent or received: commands (parameters included), headers, losses
    /// and checkpoint sections.
    pub fn control_bytes(&self) -> u64 {
        self.control_bytes
    }

    fn worker_of(&self, node: usize) -> usize {
        host_of(node, self.nodes, self.size - 1)
    }

    /// The deadline of a wait: workers wait twice as long as the server, so that when a
    /// worker fails the server, which waits on every rank, is the one that reports it.
    fn deadline(&self) -> Duration {
        if self.rank == 0 {
            self.timeout
        } else {
            2 * self.timeout
        }
    }

    /// A send that cannot complete (the peer exited or hangs) ends the whole job here: its
    /// request cannot be abandoned. The error goes to stderr and to the note file, if any.
    fn fatal(&self, msg: &str) -> ! {
        eprintln!(
            "lena (rank {}): transport: {msg}; ending the MPI job",
            self.rank
        );
        if let Some(path) = &self.note {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
                let _ = writeln!(f, "The run stopped: {msg}.");
            }
        }
        self.world.abort(1)
    }

    /// Sends `bytes` to `dest`, waiting at most the deadline for it to be taken.
    fn send(&mut self, dest: usize, t: i32, round: u64, what: &str, bytes: &[u8]) {
        let start = Instant::now();
        let deadline = self.deadline();
        let proc = self.world.process_at_rank(dest as i32);
        mpi::request::scope(|scope| {
            let mut req = proc.immediate_send_with_tag(scope, bytes, t);
            loop {
                match req.test() {
                    Ok(_) => return,
                    Err(r) => req = r,
                }
                if start.elapsed() > deadline {
                    self.fatal(&format!(
                        "{} did not take {what} of round {round} within {:.1} s: it exited or \
                         hangs",
                        who(dest),
                        deadline.as_secs_f64()
                    ));
                }
                pause(start);
            }
        });
        self.comm += start.elapsed();
    }

    /// Receives the next message with tag `t` from `src`, giving up after the timeout.
    fn recv(&mut self, src: usize, t: i32, round: u64, what: &str) -> Result<Vec<u8>> {
        let start = Instant::now();
        let proc = self.world.process_at_rank(src as i32);
        loop {
            if let Some((msg, status)) = proc.immediate_matched_probe_with_tag(t) {
                let n = status.count(u8::equivalent_datatype()) as usize;
                let mut buf = vec![0u8; n];
                msg.matched_receive_into(&mut buf[..]);
                self.comm += start.elapsed();
                return Ok(buf);
            }
            if start.elapsed() > self.deadline() {
                self.comm += start.elapsed();
                return Err(Error::Transport(format!(
                    "{} did not send {what} of round {round} within {:.1} s: it exited or hangs",
                    who(src),
                    self.deadline().as_secs_f64()
                )));
            }
            pause(start);
        }
    }
}

/// Busy-waits for the first millisecond (low latency), then sleeps briefly between polls.
fn pause(since: Instant) {
    if since.elapsed() < Duration::from_millis(1) {
        std::hint::spin_loop();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn who(rank: usize) -> String {
    if rank == 0 {
        "the server (rank 0)".to_string()
    } else {
        format!("rank {rank}")
    }
}

fn what(kind: Items) -> &'static str {
    match kind {
        Items::Uploads => "its uploads",
        Items::Losses => "its losses",
        Items::States => "its checkpoint sections",
    }
}

impl Exchange for MpiExchange {
    fn hosts(&self, node: usize) -> bool {
        self.rank > 0 && self.worker_of(node) == self.rank
    }

    fn is_server(&self) -> bool {
        self.rank == 0
    }

    fn command(&mut self, round: u64, cmd: Command, payload: &[u8]) -> Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        wire::encode_command(cmd, round, payload, &mut frame);
        for r in 1..self.size {
            self.send(r, tag::COMMAND, round, "the command", &frame);
            self.control_bytes += frame.len() as u64;
        }
        self.frame = frame;
        Ok(())
    }

    fn next_command(&mut self, round: u64, payload: &mut Vec<u8>) -> Result<Command> {
        if let Some(f) = self
            .fault
            .filter(|f| f.rank == self.rank && round >= f.round)
        {
            if f.exit {
                std::process::exit(3);
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let frame = self.recv(0, tag::COMMAND, round, "the command")?;
        self.control_bytes += frame.len() as u64;
        let (cmd, r, p) = wire::decode_command(&frame)
            .map_err(|e| Error::Transport(format!("round {round}: {e}")))?;
        if r != round && cmd != Command::Restore && cmd != Command::Finish {
            return Err(Error::Transport(format!(
                "rank {}: the server's {cmd:?} is for round {r}, this process is at round {round}",
                self.rank
            )));
        }
        payload.clear();
        payload.extend_from_slice(p);
        Ok(cmd)
    }

    fn send_items(&mut self, round: u64, kind: Items, items: &[Item<'_>]) -> Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        wire::encode_header(kind, round, items, &mut frame);
        self.send(0, tag::HEADER, round, what(kind), &frame);
        self.control_bytes += frame.len() as u64;
        self.frame = frame;
        for it in items.iter().filter(|it| wire::has_bytes(kind, it)) {
            // What was charged is what goes on the wire.
            debug_assert_eq!(it.bytes.len() as u64, it.bits.div_ceil(8));
            self.send(0, tag::DATA, round, what(kind), it.bytes);
            match kind {
                Items::Uploads => self.payload_bytes += it.bytes.len() as u64,
                _ => self.control_bytes += it.bytes.len() as u64,
            }
        }
        Ok(())
    }

    fn gather_items(
        &mut self,
        round: u64,
        kind: Items,
        take: &mut dyn FnMut(Item<'_>) -> Result<()>,
    ) -> Result<()> {
        for r in 1..self.size {
            let frame = self.recv(r, tag::HEADER, round, what(kind))?;
            self.control_bytes += frame.len() as u64;
            let bad = |e: String| Error::Transport(format!("rank {r}, round {round}: {e}"));
            let h = wire::decode_header(&frame).map_err(|e| bad(e.0))?;
            let hosted: Vec<usize> = (0..self.nodes)
                .filter(|&m| self.worker_of(m) == r)
                .collect();
            if h.kind != kind || h.round != round || h.items.len() != hosted.len() {
                return Err(bad(format!(
                    "expected {} {} of round {round}, got {} {:?} of round {}",
                    hosted.len(),
                    what(kind),
                    h.items.len(),
                    h.kind,
                    h.round
                )));
            }
            for (&node, bits) in hosted.iter().zip(&h.items) {
                match bits {
                    None => take(Item {
                        node,
                        bits: 0,
                        bytes: &[],
                    })?,
                    Some(bits) => {
                        let bytes = self.recv(r, tag::DATA, round, what(kind))?;
                        if bytes.len() as u64 != bits.div_ceil(8) {
                            return Err(bad(format!(
                                "node {node}: {} bytes for {bits} bits",
                                bytes.len()
                            )));
                        }
                        match kind {
                            Items::Uploads => self.payload_bytes += bytes.len() as u64,
                            _ => self.control_bytes += bytes.len() as u64,
                        }
                        take(Item {
                            node,
                            bits: *bits,
                            bytes: &bytes,
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn comm_seconds(&self) -> f64 {
        self.comm.as_secs_f64()
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            payload_bytes: self.payload_bytes,
            control_bytes: self.control_bytes,
        }
    }

    fn abort(&mut self) {
        self.world.abort(1);
    }
}
