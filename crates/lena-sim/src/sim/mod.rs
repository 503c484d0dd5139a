//! The simulation: its state and accessors here; building, rounds, evaluation, checkpoint
//! state and the multi-process worker side in the submodules.

mod build;
mod eval;
mod remote;
mod round;
mod state;

pub use build::DataCache;

use crate::config::{DataSource, ExperimentConfig};
use crate::exchange::{Command, Exchange, Item, Items};
use crate::metrics::MetricsRow;
use crate::streams::{self, Purpose};
use crate::{Error, Result};
use crossbeam_utils::CachePadded;
use lena_algo::state::{Loader, Saver, Visitor};
use lena_algo::{Algorithm, Broadcast, GradientOracle, Message, Server, Upload, Uploads, Worker};
use lena_data::{Dataset, libsvm, mnist, sampler::BatchSampler, split, synthetic};
use lena_kernels::Kernels;
use lena_model::{Model, ModelWorkspace, Rows};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

/// Callbacks a caller gets while a simulation runs.
pub trait Observer {
    /// After each evaluation. Returning an error stops the run with it.
    fn on_eval(&mut self, row: &MetricsRow) -> Result<()>;
    /// After each round; returning `false` stops the run (e.g. on Ctrl-C) after that round's
    /// evaluation, if one is due, and a checkpoint. After the last round the run has finished
    /// and a stop is moot.
    fn on_round(&mut self, _round: u64) -> bool {
        true
    }
    /// Every `run.checkpoint_every` rounds (after that round's evaluation, if any), and when
    /// the run is stopped: the whole state, for [`Simulation::load_state`].
    fn on_checkpoint(&mut self, _round: u64, _state: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// No observer: a run that wants only its [`Summary`] (`sim.run(&mut ())`).
impl Observer for () {
    fn on_eval(&mut self, _row: &MetricsRow) -> Result<()> {
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The last evaluation.
    pub last: MetricsRow,
    /// The step size actually used.
    pub step_size: f32,
    /// The algorithm's display name.
    pub algorithm: String,
    /// The round at which `run.until` held and the run ended (`None`: it never held, or
    /// there is no such condition, and the run did all its iterations).
    pub until: Option<u64>,
}

/// A node's data and its access to gradients (the [`GradientOracle`] its worker calls).
struct Local {
    /// The node's rows (shared with other runs of the same split, [`DataCache`]).
    data: Arc<Dataset>,
    model: Model,
    /// 0 = full batch.
    batch_size: usize,
    sampler: BatchSampler,
    rng: Xoshiro256PlusPlus,
    batch: Vec<u32>,
    /// Scratch memory, shared with the simulation's other nodes ([`Workspaces`]).
    ws: Arc<Workspaces>,
    /// The node's dropout stream (`Purpose::Dropout`): one seed per fresh minibatch.
    dropout: Xoshiro256PlusPlus,
    /// The current minibatch's dropout seed (reused by `gradient_same_batch`).
    dropout_seed: u64,
    /// The local objective's smoothness, computed on first request (`None` inside: unknown).
    smoothness: Option<Option<f64>>,
}

impl Local {
    /// Draws a fresh minibatch (none for a full batch) and, for a model with dropout, its
    /// dropout seed: what every call on a new minibatch does first.
    fn next_batch(&mut self) {
        if self.batch_size > 0 {
            self.sampler.fill(&mut self.rng, &mut self.batch);
        }
        if self.model.has_dropout() {
            self.dropout_seed = self.dropout.random();
        }
    }

    /// Asks for the rows of the node's next minibatch (up to the first [`NEXT_ROWS`] of them)
    /// to come into L2, where the sampler knows them without drawing: a hint, no draw and no
    /// value changed.
    ///
    /// PERF: called for the next node of a chunk before a node steps, so that its rows come
    /// from memory during that node's step instead of at the start of its own: DGD's round at
    /// M = 200 1.2-5.5% faster in six alternated quads (Intel Xeon family 6 model 167). LENA's
    /// and LAG-WK's as before: in LENA's the wait moves from the rows' copy to these requests
    /// and the scan (`perf`: the copy 7.2% -> 3.8% of the round, the requests 3.6%, the scan
    /// 54% -> 58%), and so it did with the requests issued after the scores, before the scan.
    fn prefetch_next_batch(&self) {
        if self.batch_size == 0 || self.model.has_dropout() {
            return;
        }
        let mut next = [0u32; NEXT_ROWS];
        let next = &mut next[..self.batch_size.min(NEXT_ROWS)];
        if self.sampler.peek(&self.rng, next) {
            for &r in &*next {
                self.data.prefetch_row_l2(r as usize);
            }
        }
    }
}

/// Rows of a node's next minibatch that [`Local::prefetch_next_batch`] asks for.
const NEXT_ROWS: usize = 8;

impl GradientOracle for Local {
    fn gradient(&mut self, w: &[f32], g: &mut [f32]) {
        self.next_batch();
        self.gradient_same_batch(w, g);
    }

    fn gradient_with(
        &mut self,
        w: &[f32],
        buf: &mut [f32],
        f: &mut dyn FnMut(lena_algo::Gradient<'_>),
    ) {
        self.next_batch();
        self.gradient_same_batch_with(w, buf, f);
    }

    fn gradient_same_batch_with(
        &mut self,
        w: &[f32],
        buf: &mut [f32],
        f: &mut dyn FnMut(lena_algo::Gradient<'_>),
    ) {
        let (model, data, rows) = (self.model, &self.data, Rows::Subset(&self.batch));
        let factored = self.batch_size > 0
            && !model.has_dropout()
            && self.ws.with(|ws| {
                model.factored_gradient(data, rows, w, ws, &mut |lg| {
                    f(lena_algo::Gradient::Linear(lg, &mut *buf));
                })
            });
        if !factored {
            self.gradient_same_batch(w, buf);
            f(lena_algo::Gradient::Values(buf));
        }
    }

    fn gradient_same_batch(&mut self, w: &[f32], g: &mut [f32]) {
        let rows = if self.batch_size == 0 {
            Rows::All
        } else {
            Rows::Subset(&self.batch)
        };
        let seed = self.model.has_dropout().then_some(self.dropout_seed);
        let (model, data) = (self.model, &self.data);
        self.ws
            .with(|ws| model.gradient(data, rows, w, g, ws, seed));
    }

    fn smoothness(&mut self) -> Option<f64> {
        *self
            .smoothness
            .get_or_insert_with(|| self.model.smoothness(&self.data, 100))
    }
}

/// A model's scratch memory shared by the nodes of a simulation and its evaluations (PERF): a
/// node takes a workspace for one call and gives it back, so a thread's calls reuse one warm
/// workspace where each node kept its own (a CNN's is about 2 MB for minibatches of 32: 20
/// nodes' took 34 MB, past the last-level cache, and made each training step about 8% slower). A
/// workspace keeps nothing from one call to the next that a result depends on, so which one a
/// call gets never changes a result; each list holds as many as calls ever ran at once on the
/// threads that take from it (one per thread, and one more where a thread waiting inside a call
/// took another node's).
///
/// PERF: a list of them per pool thread, each on cache lines of its own: with one list for
/// all, the lock's line went from core to core at every node's call, and its atomic operations
/// took 2.8% of LENA's round at M = 200 (Intel Xeon, family 6 model 167).
struct Workspaces {
    model: Model,
    /// Rows a workspace is first sized for (a node's minibatch; 0: a full batch).
    rows: usize,
    /// The lists, by the calling thread's index in its pool ([`Workspaces::list`]).
    free: [CachePadded<Mutex<Vec<ModelWorkspace>>>; FREE_LISTS],
}

/// Lists of [`Workspaces`]: threads beyond the first ones share them (as do threads outside a
/// pool and pools' threads of the same index), which is correct at any count.
const FREE_LISTS: usize = 8;

impl Workspaces {
    fn new(model: Model, rows: usize) -> Self {
        Self {
            model,
            rows,
            free: Default::default(),
        }
    }

    /// The calling thread's list.
    fn list(&self) -> &Mutex<Vec<ModelWorkspace>> {
        let i = rayon::current_thread_index().map_or(0, |i| (i + 1) % FREE_LISTS);
        &self.free[i]
    }

    /// `f` with a workspace of its own for the length of the call.
    fn with<R>(&self, f: impl FnOnce(&mut ModelWorkspace) -> R) -> R {
        let list = self.list();
        let taken = list.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut ws = taken.unwrap_or_else(|| self.model.workspace(self.rows));
        let out = f(&mut ws);
        list.lock().unwrap_or_else(PoisonError::into_inner).push(ws);
        out
    }
}

struct Node {
    local: Local,
    /// The node's algorithm randomness (stream `Purpose::Worker`).
    rng: streams::Stream,
    /// The words its last two steps drew from `rng`: if they are the same, as many are drawn
    /// ahead for its next (DIANA draws as many at every step; LENA with a compressor draws
    /// only at an upload).
    draws: [usize; 2],
    worker: Box<dyn Worker>,
    /// The node's fault draws (stream `Purpose::Faults`).
    faults: Xoshiro256PlusPlus,
    /// This round's fault plan and the node's standing.
    plan: Plan,
}

/// A node's faults for the round being run, drawn before it steps.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Offline this round.
    offline: bool,
    /// Rounds it has been offline (reported when it returns).
    absent: u64,
    /// Staleness of its parameters this round (0: fresh).
    delay: u64,
    /// Its upload, if it sends one, is lost.
    lose: bool,
    /// Its previous upload never arrived: tell it before it steps.
    lost_last: bool,
}

/// Cumulative communication counters.
#[derive(Clone, Debug, Default)]
struct Counters {
    uploads: u64,
    bits: u64,
    delivered: u64,
    lost: u64,
    late: u64,
    dropped: u64,
    latency: f64,
}

/// An experiment being run in one process.
pub struct Simulation {
    cfg: ExperimentConfig,
    /// Each node's message buffer, reused every round.
    msgs: Vec<Message>,
    /// Whether each node uploaded this round.
    sent: Vec<bool>,
    model: Model,
    nodes: Vec<Node>,
    server: Box<dyn Server>,
    /// The rows the server sums, when the node phase may sum them itself (a run in one process
    /// that loses no upload, and a server with dense or level rows).
    node_rows: Option<round::NodeRows>,
    /// Their sum, formed in the node phase of round `summed_round`.
    summed: Vec<f32>,
    summed_round: Option<u64>,
    /// Whether nodes' words are drawn ahead, several streams together ([`Self::set_draws_ahead`]).
    draws_ahead: bool,
    /// The node phase's chunks (empty between rounds: an allocation kept) and their flags.
    chunks: Vec<Mutex<round::ChunkRefs<'static>>>,
    chunks_done: Vec<std::sync::atomic::AtomicBool>,
    test: Arc<Dataset>,
    /// Scratch memory of the nodes' calls and of the test and validation evaluations.
    workspaces: Arc<Workspaces>,
    w: Vec<f32>,
    /// The previous round's parameters (for the broadcast parameter change).
    w_prev: Vec<f32>,
    round: u64,
    counters: Counters,
    /// What the server receives this round (sent and delivered).
    delivered: Vec<bool>,
    /// Every round's message sizes (kept when the network model has a clock).
    trace: Option<lena_net::Trace>,
    /// This round's sizes (0: nothing sent).
    row_bits: Vec<u32>,
    network: lena_net::Network,
    /// Link rates of the metrics' realization (seeded by the run).
    rates: Vec<f64>,
    /// Uploads per round over the last `accounting.window` rounds, as a ring.
    window: Vec<u32>,
    window_sum: u64,
    /// The last rounds' parameters, newest at `round % len` (stragglers only).
    history: Vec<Vec<f32>>,
    initial_loss: Option<f64>,
    step_size: f32,
    algorithm: String,
    kernels: Kernels,
    pool: std::sync::Arc<rayon::ThreadPool>,
    /// The transport to the other processes of a multi-process run (`None` in-process).
    exchange: Option<Box<dyn Exchange>>,
    /// Which nodes this process computes (all in-process; none on a multi-process server).
    hosted: Vec<bool>,
    /// Worker process: the next round command must not shift `w` into `w_prev` (just started
    /// or restored: `w_prev` is already right).
    fresh: bool,
    /// Reused buffer for what crosses the transport.
    wire: Vec<u8>,
    /// CRC-32C of the training and test data as loaded (part of the checkpoint fingerprint,
    /// so that a checkpoint never resumes on other data under the same file names).
    data_digest: u32,
    /// Held out from the training data (`data.validation`), evaluated beside the test set.
    validation: Option<Dataset>,
    /// The data cache the run was built with ([`Self::with_data`]): it shares the evaluation of
    /// the starting parameters with the cache's other runs.
    cache: Option<DataCache>,
}

impl Simulation {
    /// Makes this simulation one process of a multi-process run over `exchange`: it computes
    /// only the nodes the exchange says it hosts (the other nodes' data is dropped), and, on
    /// the server, asks the other processes for the rest. Call [`Self::serve`] on workers and
    /// [`Self::run`] on the server, then [`Self::finish_workers`].
    pub fn with_exchange(mut self, exchange: Box<dyn Exchange>) -> Self {
        for (m, node) in self.nodes.iter_mut().enumerate() {
            self.hosted[m] = exchange.hosts(m);
            if !self.hosted[m] {
                let d = &node.local.data;
                node.local.data = Arc::new(Dataset::empty(d.n_features, d.n_classes));
            }
        }
        self.exchange = Some(exchange);
        self
    }

    /// Whether the node phase forms the server's sum of dense or level rows as it steps the
    /// nodes (the default, where the server has such rows and no upload is lost) or leaves it
    /// to the server; returns whether it now does. The same floats either way: on by
    /// construction, switchable for tests and profiles.
    #[doc(hidden)]
    pub fn set_nodes_sum_rows(&mut self, on: bool) -> bool {
        // Every upload sent is then delivered, so the node phase knows the server's rows.
        let lossless = !self.cfg.faults.loses_uploads();
        let rows = (self.server.dense_rows().map(round::NodeRows::Dense))
            .or_else(|| self.server.level_rows().map(round::NodeRows::Levels));
        self.node_rows = rows.filter(|_| on && lossless);
        if self.node_rows.is_some() {
            self.summed.resize(self.w.len(), 0.0);
        }
        self.node_rows.is_some()
    }

    /// Whether the node phase draws the words of nodes that draw as many at every step ahead,
    /// several nodes' streams together (the default), or leaves each node to draw its own. The
    /// same words either way: switchable for tests and profiles.
    #[doc(hidden)]
    pub fn set_draws_ahead(&mut self, on: bool) {
        self.draws_ahead = on;
    }

    /// Whether this process is a worker of a multi-process run (it runs [`Self::serve`]).
    pub fn is_worker(&self) -> bool {
        self.exchange.as_ref().is_some_and(|e| !e.is_server())
    }

    /// Current parameters.
    pub fn params(&self) -> &[f32] {
        &self.w
    }

    /// Rounds completed.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The algorithm's display name (LENA-m, DGD, ...).
    pub fn algorithm_name(&self) -> &str {
        &self.algorithm
    }

    /// The step size in use (after resolving a `"c/L"` rule).
    pub fn step_size(&self) -> f32 {
        self.step_size
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Sample count of each node, in node order.
    pub fn node_sizes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.local.data.n_samples())
            .collect()
    }

    /// The configuration being run.
    pub fn config(&self) -> &ExperimentConfig {
        &self.cfg
    }

    /// The recorded message sizes (`None` for the ideal network, which has no clock).
    pub fn trace(&self) -> Option<&lena_net::Trace> {
        self.trace.as_ref()
    }

    /// Latency statistics over the network model's link-rate realizations at the listed
    /// round counts, from the recorded trace (no re-training). `None` for the ideal network.
    pub fn latency_stats(&self, at: &[u64]) -> Option<Vec<lena_net::LatencyStats>> {
        let seed = streams::derive(self.cfg.run.seed, Purpose::Network, 0);
        let trace = self.trace.as_ref()?;
        let net = &self.network;
        Some(self.pool.install(|| trace.latency_stats(net, seed, at)))
    }
}
