//! Distributed learning algorithms as a [`Worker`] per node and one [`Server`], which exchange
//! nothing but [`Message`]s.
//!
//! Must not depend on: `lena-net`, `lena-sim`, or I/O of any kind.
//!
//! # Design
//! A worker sees the broadcast parameters and a [`GradientOracle`] for its own data (minibatch
//! or full batch, chosen by whoever built the oracle); it returns whether it uploaded and fills
//! the message. The server sees the round's messages in node order and updates the parameters.
//! Because the two sides share only messages, the in-process simulator and any transport give
//! the same iterates for the same seed.
//!
//! ```
//! use lena_algo::{AlgorithmParams, GradientOracle};
//! struct Quadratic(f32); // f(w) = (w - c)^2 / 2 in every coordinate
//! impl GradientOracle for Quadratic {
//!     fn gradient(&mut self, w: &[f32], g: &mut [f32]) -> f64 {
//!         for (gi, wi) in g.iter_mut().zip(w) { *gi = wi - self.0; }
//!         0.0
//!     }
//! }
//! let dgd = AlgorithmParams::Dgd { step_size: 0.5.into(), missing: Default::default() };
//! let alg = dgd.check(1).unwrap();
//! let (mut workers, mut server) = (alg.workers(2, 1), alg.server(2, 1));
//! let mut oracles = [Quadratic(1.0), Quadratic(3.0)];
//! let mut msgs = vec![lena_compress::Message::default(); 2];
//! let mut w = vec![0.0f32];
//! use rand::SeedableRng;
//! let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
//! for t in 0..50 {
//!     {
//!         let bc = lena_algo::Broadcast { round: t, w: &w, step_sq: 0.0 };
//!         for m in 0..2 { workers[m].step(&bc, &mut oracles[m], &mut rng, &mut msgs[m]); }
//!     }
//!     server.apply(t, &mut w, lena_algo::Uploads::new(&msgs, &[true, true])).unwrap();
//! }
//! assert!((w[0] - 2.0).abs() < 1e-5); // minimiser of the average
//! ```

mod dgd;
mod gather;
pub mod lazy;
pub mod lena;
pub mod peers;
pub mod state;

pub use dgd::Dgd;
pub use lena::{Lena, LenaParams};
pub use lena_compress::{CompressorParams, Message};
/// The kernels context [`Broadcast::next`] and the workers compute with, re-exported so that a
/// caller needs no direct dependency on `lena-kernels`.
pub use lena_kernels::Kernels;
use rand::RngCore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter outside its allowed range.
    #[error("algorithm.{field} must be {expected}, got {found}")]
    BadParam {
        /// Field name.
        field: &'static str,
        /// Allowed range.
        expected: &'static str,
        /// Value found.
        found: String,
    },
    /// A message the server cannot decode.
    #[error("round {round}, node {node}: {source}")]
    Decode {
        /// Round.
        round: u64,
        /// Node index.
        node: usize,
        /// Decoder error.
        #[source]
        source: lena_compress::Error,
    },
    /// A compressor parameter outside its range.
    #[error("algorithm.{field} must be {expected}, got {found}")]
    Compressor {
        /// Field.
        field: &'static str,
        /// Allowed range.
        expected: String,
        /// Found.
        found: String,
    },
    /// The server got another number of slots than workers.
    #[error("server expects {expected} upload slots, got {found}")]
    Slots {
        /// Workers.
        expected: usize,
        /// Slots given.
        found: usize,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A node's access to its local gradient: full batch or a fresh minibatch per call.
pub trait GradientOracle {
    /// Writes the node's (stochastic) gradient at `w` into `g`, on a fresh minibatch; returns
    /// the sampled loss.
    fn gradient(&mut self, w: &[f32], g: &mut [f32]) -> f64;

    /// The gradient at `w` on the same minibatch as the last [`Self::gradient`] call (LASG and
    /// SASG compare two points on one sample). Full-batch oracles need not override it.
    fn gradient_same_batch(&mut self, w: &[f32], g: &mut [f32]) -> f64 {
        self.gradient(w, g)
    }

    /// Smoothness constant of the node's local objective, if known (LAG-PS needs it).
    fn smoothness(&mut self) -> Option<f64> {
        None
    }
}

/// What a worker did in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// The message was filled and is to be sent.
    Sent,
    /// Nothing is sent this round.
    Skipped,
}

/// Coordinates per block when a server aggregates in parallel. Fixed, so that each
/// coordinate's sum runs over the nodes in node order whatever the number of threads.
pub(crate) const AGG_BLOCK: usize = 1024;

/// `w += inv_m * sum` by blocks of [`AGG_BLOCK`] coordinates in parallel: each block zeroes its
/// piece of `sum`, lets `fill(offset, piece)` add the nodes' contributions (in node order, so
/// the floats do not depend on the thread count), then applies it.
pub(crate) fn apply_by_blocks(
    k: Kernels,
    sum: &mut [f32],
    w: &mut [f32],
    inv_m: f32,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    sum.par_chunks_mut(AGG_BLOCK)
        .zip(w.par_chunks_mut(AGG_BLOCK))
        .enumerate()
        .for_each(|(b, (sum, w))| {
            sum.fill(0.0);
            fill(b * AGG_BLOCK, sum);
            k.axpy(inv_m, sum, w);
        });
}

/// `sum += fl(scale row_m)` over the nodes in node order for the block at `off`, each row read
/// from node m's last upload (a server that keeps no copies, after `Server::lossless`): a
/// sender's row at the start of its upload, a silent node's at `silent_at` values in (its
/// drift after LENA's v, or 0), zero before its first upload.
pub(crate) fn sum_last_uploads(
    k: Kernels,
    scale: f32,
    sum: &mut [f32],
    uploads: &Uploads<'_>,
    off: usize,
    silent_at: usize,
) {
    static ZEROS: [f32; AGG_BLOCK] = [0.0; AGG_BLOCK];
    let width = sum.len();
    let mut buf = [0.0f32; AGG_BLOCK];
    let mut rows = RowSum::new(k, scale, sum);
    for m in 0..uploads.len() {
        let msg = uploads.last(m);
        let at = if uploads.get(m).is_some() {
            0
        } else {
            silent_at
        };
        if msg.bits() == 0 {
            rows.push(&ZEROS[..width]);
        } else if let Some(row) = lena_compress::dense::view_at(msg, at + off, width) {
            rows.push(row);
        } else {
            // Not readable in place (big-endian, misaligned).
            lena_compress::dense::decode_at(msg, at + off, &mut buf[..width]);
            rows.add_now(&buf[..width]);
        }
    }
    rows.finish();
}

/// Adds rows to a block of a server's sum eight at a time ([`Kernels::sum_rows`], the block
/// held in registers), in the order they are pushed: the floats of one `sum += fl(scale row)`
/// per row. A fixed group, so a round allocates nothing; [`RowSum::finish`] adds the rest.
pub(crate) struct RowSum<'r, 's> {
    k: Kernels,
    scale: f32,
    sum: &'s mut [f32],
    group: [&'r [f32]; 8],
    n: usize,
}

impl<'r, 's> RowSum<'r, 's> {
    pub(crate) fn new(k: Kernels, scale: f32, sum: &'s mut [f32]) -> Self {
        Self {
            k,
            scale,
            sum,
            group: [&[]; 8],
            n: 0,
        }
    }

    pub(crate) fn push(&mut self, row: &'r [f32]) {
        self.group[self.n] = row;
        self.n += 1;
        if self.n == self.group.len() {
            self.flush();
        }
    }

    /// Adds the rows pushed so far, then `row` (a buffer reused for the next row).
    pub(crate) fn add_now(&mut self, row: &[f32]) {
        self.flush();
        self.k.sum_rows(self.sum, self.scale, &[row]);
    }

    pub(crate) fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        self.k.sum_rows(self.sum, self.scale, &self.group[..self.n]);
        self.n = 0;
    }
}

/// One round's uploads in node order: node m's message, if it sent one.
///
/// A view over buffers the caller keeps from round to round (the simulator's message and
/// sent-flag vectors), so handing a round to the server allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Uploads<'a> {
    msgs: &'a [Message],
    sent: &'a [bool],
}

impl<'a> Uploads<'a> {
    /// Node m sent `msgs[m]` iff `sent[m]`.
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn new(msgs: &'a [Message], sent: &'a [bool]) -> Self {
        assert_eq!(msgs.len(), sent.len(), "one sent flag per message");
        Self { msgs, sent }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Errors unless there is one slot per worker (a server's first check).
    pub fn expect_len(&self, n_workers: usize) -> Result<()> {
        if self.len() == n_workers {
            Ok(())
        } else {
            Err(Error::Slots {
                expected: n_workers,
                found: self.len(),
            })
        }
    }

    /// Node m's message, if it sent one.
    pub fn get(&self, m: usize) -> Option<&'a Message> {
        self.sent[m].then(|| &self.msgs[m])
    }

    /// Node m's message buffer whether or not it sent this round: its upload if it did, else
    /// the last one it sent (empty before its first). In a run that loses no upload that is
    /// the last upload the server received from it (see [`Server::lossless`]).
    pub fn last(&self, m: usize) -> &'a Message {
        &self.msgs[m]
    }

    /// Every node's upload, in node order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&'a Message>> + 'a {
        let (msgs, sent) = (self.msgs, self.sent);
        msgs.iter().zip(sent).map(|(m, &s)| s.then_some(m))
    }
}

thread_local! {
    static GRADIENT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's gradient buffer of length `dim`.
///
/// PERF: a gradient that lives only for the round goes into a per-thread buffer that stays in
/// cache, instead of one per node (6 MB less state to stream at M = 200, d = 7850).
pub(crate) fn with_gradient_buffer<R>(dim: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffers(dim, |[g]| f(g))
}

/// Runs `f` with `N` per-thread buffers of length `dim` (the first is the gradient buffer):
/// vectors a node computes and uses within one round, so they are not node state.
pub(crate) fn with_buffers<const N: usize, R>(
    dim: usize,
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    GRADIENT.with_borrow_mut(|g| {
        g.resize(N * dim, 0.0);
        let mut parts = g.chunks_mut(dim.max(1));
        f(std::array::from_fn(|_| parts.next().unwrap_or_default()))
    })
}

thread_local! {
    static LEVELS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's integer buffer of length `dim` (quantization levels).
pub(crate) fn with_levels_buffer<R>(dim: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    LEVELS.with_borrow_mut(|l| {
        l.resize(dim, 0);
        f(&mut l[..dim])
    })
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes this thread's spare vector, of length `dim`: a kernel writes a candidate for a
/// node's state into it, and the node swaps it in or gives it back with
/// [`give_back_spare_vector`]. Allocates only on a thread's first use (or a new `dim`).
pub(crate) fn take_spare_vector(dim: usize) -> Vec<f32> {
    let mut v = SPARE.with_borrow_mut(std::mem::take);
    v.resize(dim, 0.0);
    v
}

/// Returns a vector (the spare, or the node state it replaced) to this thread for the next
/// [`take_spare_vector`].
pub(crate) fn give_back_spare_vector(v: Vec<f32>) {
    SPARE.with_borrow_mut(|s| *s = v);
}

/// What a server does with a node's missing upload (a lost upload, a straggler past the
/// deadline, an offline node; never in a fault-free run). Algorithms whose servers keep
/// per-node state (LENA's drift, the lazy methods' last contribution) use that state and
/// document it; DGD and DIANA offer the choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Average over the uploads that arrived.
    #[default]
    Average,
    /// Use what the server last had from that node.
    Last,
}

fn default_diana_missing() -> Missing {
    Missing::Last
}

/// What the server broadcasts at the start of a round, as every node receives it.
#[derive(Clone, Copy, Debug)]
pub struct Broadcast<'a> {
    /// The round t (0-based).
    pub round: u64,
    /// The parameters w^t.
    pub w: &'a [f32],
    /// `||w^t - w^{t-1}||^2` (0 in round 0), the parameter change the LAG-type rules compare
    /// against. A node could compute it from its copy of w^{t-1}; it is the same for every
    /// node, so a host running many nodes computes it once per round ([`Broadcast::next`]).
    pub step_sq: f64,
}

impl<'a> Broadcast<'a> {
    /// Round `round`'s broadcast of `w`, given the previous round's parameters (`None` in
    /// round 0).
    pub fn next(k: lena_kernels::Kernels, round: u64, w: &'a [f32], prev: Option<&[f32]>) -> Self {
        let step_sq = prev.map_or(0.0, |p| f64::from(k.dist2_sq(w, p)));
        Self { round, w, step_sq }
    }
}

/// The node side of an algorithm.
pub trait Worker: Send {
    /// One round at the broadcast parameters `bc.w`: may fill `msg` and return
    /// [`Upload::Sent`]. Randomness (dithering, random coordinates) comes from the node's own
    /// stream `rng`.
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload;

    /// Delivery feedback: this node's last upload `msg` never reached the server (lost, or a
    /// straggler past the deadline), which learned nothing from it and treated the node as
    /// silent. Called before the node's next `step` (the broadcast carries one delivery bit per
    /// node). Nodes with state the server mirrors restore agreement here; the default does
    /// nothing (uploads that carry no state).
    fn on_lost(&mut self, _msg: &Message) {}

    /// The node was offline for `rounds` rounds, in which the server treated it as silent
    /// (applied its missing-upload rule). Called before its first `step` back.
    fn on_absent(&mut self, _rounds: u64) {}

    /// The run never loses this node's uploads (no loss, no deadline that drops a
    /// straggler): state kept only to undo a lost upload may be dropped, and
    /// [`Worker::on_lost`] is never called. Called once, before the first `step`.
    fn lossless(&mut self) {}

    /// Visits the node's state (everything a later round reads), for checkpoints.
    fn visit(&mut self, v: &mut dyn state::Visitor);
}

/// The server side of an algorithm.
pub trait Server: Send {
    /// Applies one round: `uploads[m]` is node `m`'s message, or `None` if it sent nothing.
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()>;

    /// The run loses no upload, and every `apply` gets the same message buffers, each left as
    /// its node last sent it (the simulator's): state a server keeps only as a copy of a
    /// node's last upload may be read from [`Uploads::last`] instead. Called once, before the
    /// first `apply`.
    fn lossless(&mut self) {}

    /// Visits the server's state (everything a later round reads), for checkpoints.
    fn visit(&mut self, v: &mut dyn state::Visitor);
}

/// Unchecked algorithm choice and parameters, as read from a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum AlgorithmParams {
    /// Distributed gradient descent / minibatch SGD: every node uploads its gradient each round.
    Dgd {
        /// Step size alpha: a number, or `"c/L"` for c over the objective's smoothness constant.
        step_size: StepSize,
        /// What the server does without a node's upload (faults only): `"average"` over the
        /// arrivals (default) or the `"last"` gradient it received from that node.
        #[serde(default)]
        missing: Missing,
    },
    /// LAG-WK (see [`peers::Lag`]).
    LagWk {
        /// Step size alpha.
        step_size: StepSize,
        /// History depth D (authors' code: 10).
        #[serde(default = "default_depth")]
        depth: usize,
        /// Weight xi of each history term (default 1/D).
        #[serde(default)]
        xi: Option<f64>,
        /// Optional compressor of the upload, with error feedback (a combination no paper
        /// ran: LAG's trigger with, e.g., top-k uploads). Must be a contraction.
        #[serde(default)]
        compressor: Option<CompressorParams>,
    },
    /// DIANA with a compressor (see [`peers::Diana`]).
    Diana {
        /// Step size alpha.
        step_size: StepSize,
        /// The compressor of the differences; must be unbiased.
        #[serde(default = "default_diana_compressor")]
        compressor: CompressorParams,
        /// Shift step a (default 1 / (1 + omega)).
        #[serde(default)]
        a: Option<f32>,
        /// What the server does without a node's upload (faults only): the node's `"last"`
        /// shift h_m stands in for it (default), or the mean is over the `"average"` arrivals.
        #[serde(default = "default_diana_missing")]
        missing: Missing,
    },
    /// Error-feedback SGD with a compressor (see [`peers::EfSgd`]).
    EfSgd {
        /// Step size alpha.
        step_size: StepSize,
        /// The compressor (default: top-k keeping 1% of the coordinates, at least one).
        #[serde(default)]
        compressor: Option<CompressorParams>,
    },
    /// LAG-PS (see [`lazy::LagPs`]).
    LagPs {
        /// Step size alpha.
        step_size: StepSize,
        /// History depth D (authors' code: 10).
        #[serde(default = "default_depth")]
        depth: usize,
        /// Weight xi (authors' code: 1).
        #[serde(default = "one")]
        xi: f64,
    },
    /// LASG-WK2 (see [`lazy::LasgWk2`]).
    LasgWk2 {
        /// Step size alpha.
        step_size: StepSize,
        /// History depth D.
        #[serde(default = "default_depth")]
        depth: usize,
        /// Weight c of the history sum (default 1/D).
        #[serde(default)]
        c: Option<f64>,
        /// Forced upload after this many rounds.
        #[serde(default = "default_lasg_staleness")]
        max_staleness: u64,
    },
    /// LAQ (see [`lazy::Laq`]).
    Laq {
        /// Step size alpha.
        step_size: StepSize,
        /// Bits per coordinate b (1..=24).
        #[serde(default = "default_laq_bits")]
        bits: u32,
        /// History depth D.
        #[serde(default = "default_depth")]
        depth: usize,
        /// Weight xi (default 0.8 / D).
        #[serde(default)]
        xi: Option<f64>,
        /// Clock C.
        #[serde(default = "default_laq_clock")]
        clock: u64,
    },
    /// SASG (see [`lazy::Sasg`]).
    Sasg {
        /// Step size alpha.
        step_size: StepSize,
        /// Share of coordinates top-k keeps (default 0.01).
        #[serde(default = "default_sasg_fraction")]
        k_fraction: f64,
        /// History depth D.
        #[serde(default = "default_depth")]
        depth: usize,
        /// Weight of the history sum (default 1/D).
        #[serde(default)]
        xi: Option<f64>,
        /// Threshold normalisation.
        #[serde(default = "default_sasg_norm")]
        normalisation: lena_policy::trigger::Normalisation,
        /// Forced upload after this many silent rounds.
        #[serde(default = "default_depth_u64")]
        max_staleness: u64,
    },
    /// LENA (see [`LenaParams`]).
    Lena {
        /// Step size alpha.
        step_size: StepSize,
        /// Filter, drift and confirmation parameters.
        #[serde(flatten)]
        params: LenaParams,
    },
}

/// A step size as written in a config: a number (`0.05`) or a rule (`"1/L"`, `"0.5/L"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepSize {
    /// A fixed step.
    Value(f32),
    /// `"c/L"`: c divided by the smoothness constant of the objective.
    Rule(String),
}

impl From<f32> for StepSize {
    fn from(v: f32) -> Self {
        StepSize::Value(v)
    }
}

impl StepSize {
    /// The step as a number; `smoothness` is asked for only by a `"c/L"` rule.
    pub fn resolve(&self, smoothness: impl FnOnce() -> f64) -> Result<f32> {
        let step = match self {
            StepSize::Value(v) => *v,
            StepSize::Rule(r) => {
                let c = r
                    .trim()
                    .strip_suffix('L')
                    .map(str::trim)
                    .and_then(|c| c.strip_suffix('/'))
                    .map(str::trim)
                    .and_then(|c| c.parse::<f64>().ok());
                match c {
                    Some(c) => (c / smoothness()) as f32,
                    None => {
                        return Err(Error::BadParam {
                            field: "step_size",
                            expected: "a number or a rule \"c/L\" such as \"1/L\"",
                            // At most 80 characters of what was written.
                            found: match r.char_indices().nth(80) {
                                None => format!("{r:?}"),
                                Some((end, _)) => format!("{:?}... ({} bytes)", &r[..end], r.len()),
                            },
                        });
                    }
                }
            }
        };
        check_step(step)?;
        Ok(step)
    }
}

/// Names accepted for `algorithm.name`.
pub const ALGORITHM_NAMES: &[&str] = &[
    "dgd", "lena", "lag_wk", "lag_ps", "lasg_wk2", "laq", "sasg", "diana", "ef_sgd",
];

fn one() -> f64 {
    1.0
}
fn default_lasg_staleness() -> u64 {
    50
}
fn default_laq_bits() -> u32 {
    4
}
fn default_laq_clock() -> u64 {
    100
}
fn default_sasg_fraction() -> f64 {
    0.01
}
fn default_sasg_norm() -> lena_policy::trigger::Normalisation {
    lena_policy::trigger::Normalisation::Alpha2M2
}
fn default_depth_u64() -> u64 {
    10
}

fn default_depth() -> usize {
    10
}

fn default_diana_compressor() -> CompressorParams {
    CompressorParams::qsgd(4, 512, lena_compress::QsgdNorm::L2)
}

impl AlgorithmParams {
    /// Validates the parameters once; hot paths never re-check them. `smoothness` is called
    /// only if a step size is given as a `"c/L"` rule.
    pub fn check_with(
        &self,
        dim: usize,
        smoothness: impl FnOnce() -> f64,
    ) -> Result<Box<dyn Algorithm>> {
        let compressor =
            |c: &CompressorParams| -> Result<std::sync::Arc<dyn lena_compress::Compressor>> {
                c.check(dim).map(std::sync::Arc::from).map_err(|e| match e {
                    lena_compress::Error::BadParam {
                        field,
                        expected,
                        found,
                    } => Error::Compressor {
                        field,
                        expected,
                        found,
                    },
                    other => Error::Compressor {
                        field: "compressor",
                        expected: String::new(),
                        found: other.to_string(),
                    },
                })
            };
        match self {
            AlgorithmParams::LagWk {
                step_size,
                depth,
                xi,
                compressor: cp,
            } => {
                let xi = xi.unwrap_or(1.0 / (*depth).max(1) as f64);
                lazy_rule(*depth, xi, None)?;
                let compressor = match cp {
                    Some(cp) => Some(contractive(compressor(cp)?)?),
                    None => None,
                };
                Ok(Box::new(peers::Lag {
                    step_size: step_size.resolve(smoothness)?,
                    depth: *depth,
                    xi,
                    compressor,
                }))
            }
            AlgorithmParams::Diana {
                step_size,
                compressor: cp,
                a,
                missing,
            } => {
                let c = compressor(cp)?;
                let Some(omega) = c.omega().filter(|_| c.unbiased()) else {
                    return Err(Error::BadParam {
                        field: "compressor",
                        expected: "an unbiased compressor (identity, qsgd, rand_k with scaled = true)",
                        found: c.name(),
                    });
                };
                let a = a.unwrap_or((1.0 / (1.0 + omega)) as f32);
                if !(a >= 0.0 && f64::from(a) * (1.0 + omega) <= 1.0 + 1e-6) {
                    return Err(Error::BadParam {
                        field: "a",
                        expected: "in [0, 1 / (1 + omega)] (DIANA's condition a (1 + omega) <= 1)",
                        found: format!("{a} with omega = {omega}"),
                    });
                }
                Ok(Box::new(peers::Diana {
                    step_size: step_size.resolve(smoothness)?,
                    a,
                    compressor: c,
                    missing: *missing,
                }))
            }
            AlgorithmParams::EfSgd {
                step_size,
                compressor: cp,
            } => {
                let default = CompressorParams::top_k(dim.div_ceil(100).max(1));
                Ok(Box::new(peers::EfSgd {
                    step_size: step_size.resolve(smoothness)?,
                    compressor: contractive(compressor(cp.as_ref().unwrap_or(&default))?)?,
                }))
            }
            AlgorithmParams::LagPs {
                step_size,
                depth,
                xi,
            } => {
                lazy_rule(*depth, *xi, None)?;
                Ok(Box::new(lazy::LagPs {
                    step_size: step_size.resolve(smoothness)?,
                    depth: *depth,
                    xi: *xi,
                }))
            }
            AlgorithmParams::LasgWk2 {
                step_size,
                depth,
                c,
                max_staleness,
            } => {
                let c = c.unwrap_or(1.0 / (*depth).max(1) as f64);
                lazy_rule(*depth, c, Some(*max_staleness))?;
                Ok(Box::new(lazy::LasgWk2 {
                    step_size: step_size.resolve(smoothness)?,
                    depth: *depth,
                    c,
                    max_staleness: *max_staleness,
                }))
            }
            AlgorithmParams::Laq {
                step_size,
                bits,
                depth,
                xi,
                clock,
            } => {
                if !(1..=24).contains(bits) {
                    return Err(Error::BadParam {
                        field: "bits",
                        expected: "in 1..=24",
                        found: bits.to_string(),
                    });
                }
                let xi = xi.unwrap_or(0.8 / (*depth).max(1) as f64);
                lazy_rule(*depth, xi, Some(*clock))?;
                Ok(Box::new(lazy::Laq {
                    step_size: step_size.resolve(smoothness)?,
                    bits: *bits,
                    depth: *depth,
                    xi,
                    clock: *clock,
                }))
            }
            AlgorithmParams::Sasg {
                step_size,
                k_fraction,
                depth,
                xi,
                normalisation,
                max_staleness,
            } => {
                if !(*k_fraction > 0.0 && *k_fraction <= 1.0) {
                    return Err(Error::BadParam {
                        field: "k_fraction",
                        expected: "in (0, 1]",
                        found: k_fraction.to_string(),
                    });
                }
                let xi = xi.unwrap_or(1.0 / (*depth).max(1) as f64);
                lazy_rule(*depth, xi, Some(*max_staleness))?;
                let k = ((dim as f64 * k_fraction).ceil() as usize).clamp(1, dim.max(1));
                Ok(Box::new(lazy::Sasg {
                    step_size: step_size.resolve(smoothness)?,
                    depth: *depth,
                    xi,
                    normalisation: *normalisation,
                    max_staleness: *max_staleness,
                    compressor: compressor(&CompressorParams::top_k(k))?,
                }))
            }
            AlgorithmParams::Dgd { step_size, missing } => Ok(Box::new(Dgd {
                missing: *missing,
                step_size: step_size.resolve(smoothness)?,
            })),
            AlgorithmParams::Lena { step_size, params } => {
                let mut lena = Lena::new(step_size.resolve(smoothness)?, params.clone())?;
                if let Some(cp) = &params.compressor {
                    lena.compressor = Some(contractive(compressor(cp)?)?);
                }
                Ok(Box::new(lena))
            }
        }
    }

    /// [`Self::check_with`] for configs whose step sizes are plain numbers.
    pub fn check(&self, dim: usize) -> Result<Box<dyn Algorithm>> {
        self.check_with(dim, || f64::NAN)
    }

    /// The configured step size, mutable (for command-line overrides).
    pub fn step_size_mut(&mut self) -> &mut StepSize {
        match self {
            AlgorithmParams::Dgd { step_size, .. }
            | AlgorithmParams::Lena { step_size, .. }
            | AlgorithmParams::LagWk { step_size, .. }
            | AlgorithmParams::Diana { step_size, .. }
            | AlgorithmParams::EfSgd { step_size, .. }
            | AlgorithmParams::LagPs { step_size, .. }
            | AlgorithmParams::LasgWk2 { step_size, .. }
            | AlgorithmParams::Laq { step_size, .. }
            | AlgorithmParams::Sasg { step_size, .. } => step_size,
        }
    }

    /// The configured step size.
    pub fn step_size(&self) -> &StepSize {
        match self {
            AlgorithmParams::Dgd { step_size, .. }
            | AlgorithmParams::Lena { step_size, .. }
            | AlgorithmParams::LagWk { step_size, .. }
            | AlgorithmParams::Diana { step_size, .. }
            | AlgorithmParams::EfSgd { step_size, .. }
            | AlgorithmParams::LagPs { step_size, .. }
            | AlgorithmParams::LasgWk2 { step_size, .. }
            | AlgorithmParams::Laq { step_size, .. }
            | AlgorithmParams::Sasg { step_size, .. } => step_size,
        }
    }
}

/// Error feedback needs a contraction: a compressor with a contraction constant delta, or an
/// unbiased one with omega < 1 (then delta = 1 - omega in expectation).
fn contractive(
    c: std::sync::Arc<dyn lena_compress::Compressor>,
) -> Result<std::sync::Arc<dyn lena_compress::Compressor>> {
    let ok =
        c.delta().is_some_and(|d| d > 0.0) || (c.unbiased() && c.omega().is_some_and(|w| w < 1.0));
    if ok {
        return Ok(c);
    }
    Err(Error::BadParam {
        field: "compressor",
        expected: "a contraction for error feedback (top_k, rand_k, scaled_sign, identity, or qsgd with omega < 1: more levels or smaller buckets)",
        found: format!(
            "{} with omega = {:.3}",
            c.name(),
            c.omega().unwrap_or(f64::INFINITY)
        ),
    })
}

fn lazy_rule(depth: usize, xi: f64, staleness: Option<u64>) -> Result<()> {
    use lena_policy::trigger::{LazyRule, Normalisation};
    LazyRule::new(depth, xi, Normalisation::Alpha2M2, staleness)
        .map(|_| ())
        .map_err(lena::policy_err)
}

fn check_step(step_size: f32) -> Result<()> {
    if step_size.is_finite() && step_size > 0.0 {
        Ok(())
    } else {
        Err(Error::BadParam {
            field: "step_size",
            expected: "a finite number > 0",
            found: step_size.to_string(),
        })
    }
}

/// A validated algorithm: a factory of workers and a server.
pub trait Algorithm: Send + Sync {
    /// Display name (as in the paper's legends).
    fn name(&self) -> String;
    /// One worker per node, for parameters of dimension `dim`.
    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>>;
    /// The server for `n_workers` nodes.
    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_size_rules_and_errors() {
        assert_eq!(StepSize::Value(0.1).resolve(|| 1.0).unwrap(), 0.1);
        assert_eq!(StepSize::Rule("2/L".into()).resolve(|| 4.0).unwrap(), 0.5);
        assert_eq!(
            StepSize::Rule(" 0.5 / L".into()).resolve(|| 1.0).unwrap(),
            0.5
        );
        let e = StepSize::Rule("fast".into())
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("algorithm.step_size must be a number or a rule"),
            "{e}"
        );
        let e = StepSize::Value(-1.0)
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "algorithm.step_size must be a finite number > 0, got -1");
        let e = StepSize::Value(f32::NAN)
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("got NaN"), "{e}");
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
