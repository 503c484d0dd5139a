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
//! use lena_algo::{AlgorithmParams, DgdParams, GradientOracle};
//! struct Quadratic(f32); // f(w) = (w - c)^2 / 2 in every coordinate
//! impl GradientOracle for Quadratic {
//!     fn gradient(&mut self, w: &[f32], g: &mut [f32]) {
//!         for (gi, wi) in g.iter_mut().zip(w) { *gi = wi - self.0; }
//!     }
//! }
//! let dgd = AlgorithmParams::new(0.5, DgdParams::default());
//! let alg = dgd.check(1).unwrap();
//! let k = lena_algo::Kernels::detect();
//! let (mut workers, mut server) = (alg.workers(2, 1, k), alg.server(2, 1, k));
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

mod buffers;
mod dgd;
mod diana;
mod ef_sgd;
mod gather;
mod lag_ps;
mod lag_wk;
mod laq;
mod lasg;
mod lena;
mod params;
mod sasg;
mod stale;
pub mod state;

pub use dgd::{Dgd, DgdParams};
pub use diana::{Diana, DianaParams};
pub use ef_sgd::{EfSgd, EfSgdParams};
pub use gather::{DenseRows, LevelRows};
pub use lag_ps::{LagPs, LagPsParams};
pub use lag_wk::{LagWk, LagWkParams};
pub use laq::{Laq, LaqParams};
pub use lasg::{LasgWk2, LasgWk2Params, TwoPointWorker};
pub use lena::{Init, Lena, LenaParams, LenaServer, LenaWorker};
pub use lena_compress::{CompressorParams, Message};
/// The shape of every parameter error (re-exported from `lena-kernels`).
pub use lena_kernels::BadParam;
/// The kernels context [`Broadcast::next`] and the workers compute with, re-exported so that a
/// caller needs no direct dependency on `lena-kernels`.
pub use lena_kernels::Kernels;
pub use lena_kernels::LinearGradient;
pub use params::{ALGORITHM_NAMES, AlgorithmKind, AlgorithmParams, Missing, StepSize};
use rand::RngCore;
pub use sasg::{Sasg, SasgParams};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter outside its allowed range (named by its path: `algorithm.beta`).
    #[error(transparent)]
    BadParam(#[from] BadParam),
    /// A compressor that could not be built for other reasons than a parameter.
    #[error("algorithm.compressor: {0}")]
    Compressor(#[source] lena_compress::Error),
    /// A message the server cannot decode.
    #[error("round {round}, node {node}: {source}")]
    Decode {
        /// The round of the upload.
        round: u64,
        /// The node that sent it.
        node: usize,
        /// Decoder error.
        #[source]
        source: lena_compress::Error,
    },
    /// The server got another number of slots than workers.
    #[error("server expects {expected} upload slots, got {found}")]
    Slots {
        /// The number of workers the server was built for.
        expected: usize,
        /// The number of upload slots it was given.
        found: usize,
    },
}

impl Error {
    /// `algorithm.{field}` must be `expected`; `found` was given.
    pub(crate) fn bad_param(
        field: &'static str,
        expected: impl Into<std::borrow::Cow<'static, str>>,
        found: impl ToString,
    ) -> Self {
        BadParam::new(field, expected, found)
            .within("algorithm")
            .into()
    }
}

/// A trigger's or drift's parameter error, named in the `[algorithm]` table.
impl From<lena_policy::Error> for Error {
    fn from(e: lena_policy::Error) -> Self {
        match e {
            lena_policy::Error::BadParam(p) => p.within("algorithm").into(),
        }
    }
}

/// A compressor's parameter error, named in the `[algorithm]` table.
impl From<lena_compress::Error> for Error {
    fn from(e: lena_compress::Error) -> Self {
        match e {
            lena_compress::Error::BadParam(p) => p.within("algorithm").into(),
            other => Error::Compressor(other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A node's access to its local gradient: full batch or a fresh minibatch per call.
pub trait GradientOracle {
    /// Writes the node's (stochastic) gradient at `w` into `g`, on a fresh minibatch. (No
    /// algorithm reads the sampled loss, so an oracle need not compute it: a linear model's
    /// minibatch gradient skips the penalty's `||w||^2`.)
    fn gradient(&mut self, w: &[f32], g: &mut [f32]);

    /// The gradient at `w` on the same minibatch as the last [`Self::gradient`] call (LASG and
    /// SASG compare two points on one sample). Full-batch oracles need not override it.
    fn gradient_same_batch(&mut self, w: &[f32], g: &mut [f32]) {
        self.gradient(w, g);
    }

    /// [`Self::gradient`] handed to `f` in the form the oracle has it: its values in `buf`,
    /// or a linear model's minibatch gradient in factored form with `buf` untouched, for a
    /// consumer that forms it where it reads it ([`Kernels::ef_scan_linear`]) and writes its
    /// values into `buf` only where it needs them ([`Kernels::linear_gradient_into`]: the
    /// floats `gradient` would have written). The default writes the values.
    fn gradient_with(&mut self, w: &[f32], buf: &mut [f32], f: &mut dyn FnMut(Gradient<'_>)) {
        self.gradient(w, buf);
        f(Gradient::Values(buf));
    }

    /// [`Self::gradient_same_batch`] handed to `f` as [`Self::gradient_with`] hands its
    /// gradient on: a linear model's minibatch gradient in factored form (`buf` untouched), or
    /// its values in `buf`. The default writes the values.
    fn gradient_same_batch_with(
        &mut self,
        w: &[f32],
        buf: &mut [f32],
        f: &mut dyn FnMut(Gradient<'_>),
    ) {
        self.gradient_same_batch(w, buf);
        f(Gradient::Values(buf));
    }

    /// Smoothness constant of the node's local objective, if known (LAG-PS needs it).
    fn smoothness(&mut self) -> Option<f64> {
        None
    }
}

/// A gradient as [`GradientOracle::gradient_with`] hands it on.
#[derive(Debug)]
pub enum Gradient<'a> {
    /// Its values.
    Values(&'a [f32]),
    /// A linear model's minibatch gradient in factored form, and a buffer of its length for
    /// its values.
    Linear(&'a LinearGradient<'a>, &'a mut [f32]),
}

/// What a worker did in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// The message was filled and is to be sent.
    Sent,
    /// Nothing is sent this round.
    Skipped,
}

/// One round's uploads in node order: node m's message, if it sent one.
///
/// A view over buffers the caller keeps from round to round (the simulator's message and
/// sent-flag vectors), so handing a round to the server allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct Uploads<'a> {
    msgs: &'a [Message],
    sent: &'a [bool],
    sum: Option<&'a [f32]>,
}

impl<'a> Uploads<'a> {
    /// Node m sent `msgs[m]` iff `sent[m]`.
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn new(msgs: &'a [Message], sent: &'a [bool]) -> Self {
        assert_eq!(msgs.len(), sent.len(), "one sent flag per message");
        Self {
            msgs,
            sent,
            sum: None,
        }
    }

    /// These uploads with the sum of the rows the server's [`Server::dense_rows`] describes,
    /// formed by the caller ([`DenseRows::add`] over every node in node order, from +0.0), so
    /// that the server need not read them again: a host that runs the nodes adds each one's row
    /// while it is still in cache. A server without dense rows, or given a sum of another
    /// length than the parameters, sums them itself.
    pub fn with_sum(self, sum: &'a [f32]) -> Self {
        Self {
            sum: Some(sum),
            ..self
        }
    }

    /// The sum given by [`Uploads::with_sum`].
    pub fn sum(&self) -> Option<&'a [f32]> {
        self.sum
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
    /// (applied its missing-upload rule). Called before its first `step` back, with the node's
    /// message buffer (`msg`, as passed to `step`: its last upload, empty before its first).
    fn on_absent(&mut self, _rounds: u64, _msg: &Message) {}

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

    /// The rows this server sums, if they are dense rows of the message buffers as
    /// [`DenseRows`] reads them (DGD's server; after [`Server::lossless`], LAG's lossless one
    /// and LENA's reading drifts from the last uploads): a caller may then form their sum
    /// itself and hand it over ([`Uploads::with_sum`]). Asked after `lossless`.
    fn dense_rows(&self) -> Option<DenseRows> {
        None
    }

    /// The rows this server sums, if they are the level form of its uploads as [`LevelRows`]
    /// decodes them (DIANA's server with QSGD): a caller may then form their sum itself and hand
    /// it over ([`Uploads::with_sum`]), as for [`Self::dense_rows`]. Asked after `lossless`.
    fn level_rows(&self) -> Option<LevelRows> {
        None
    }

    /// Visits the server's state (everything a later round reads), for checkpoints.
    fn visit(&mut self, v: &mut dyn state::Visitor);
}

/// A validated algorithm: a factory of workers and a server.
pub trait Algorithm: Send + Sync {
    /// Display name (as in the paper's legends).
    fn name(&self) -> String;
    /// One worker per node, for parameters of dimension `dim`.
    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>>;
    /// The server for `n_workers` nodes.
    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server>;
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
