//! The round loop.

use crate::config::{DataSource, ExperimentConfig};
use crate::exchange::{Command, Exchange, Item, Items};
use crate::metrics::MetricsRow;
use crate::streams::{self, Purpose};
use crate::{Error, Result};
use lena_algo::state::{Loader, Saver, Visitor};
use lena_algo::{Algorithm, Broadcast, GradientOracle, Message, Server, Upload, Uploads, Worker};
use lena_data::{Dataset, libsvm, mnist, sampler::BatchSampler, split, synthetic};
use lena_kernels::Kernels;
use lena_model::{Model, ModelWorkspace, Rows};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
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

/// First bytes of a checkpoint.
const MAGIC: &[u8; 8] = b"LENACKP1";

fn rng_state(v: &mut dyn Visitor, rng: &mut Xoshiro256PlusPlus) {
    let mut bytes = serde_json::to_vec(rng).expect("a xoshiro state serialises");
    v.bytes(&mut bytes);
    match serde_json::from_slice::<Xoshiro256PlusPlus>(&bytes) {
        // An all-zero state would stay zero: never written, so damage.
        Ok(r) if r != Xoshiro256PlusPlus::from_seed([0; 32]) => *rng = r,
        _ => v.fail("checkpoint: a random stream's state does not parse".into()),
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
    data: Dataset,
    model: Model,
    /// 0 = full batch.
    batch_size: usize,
    sampler: BatchSampler,
    rng: Xoshiro256PlusPlus,
    batch: Vec<u32>,
    ws: ModelWorkspace,
    /// The node's dropout stream (`Purpose::Dropout`): one seed per fresh minibatch.
    dropout: Xoshiro256PlusPlus,
    /// The current minibatch's dropout seed (reused by `gradient_same_batch`).
    dropout_seed: u64,
    /// The local objective's smoothness, computed on first request (`None` inside: unknown).
    smoothness: Option<Option<f64>>,
}

impl GradientOracle for Local {
    fn gradient(&mut self, w: &[f32], g: &mut [f32]) -> f64 {
        if self.batch_size > 0 {
            self.sampler.fill(&mut self.rng, &mut self.batch);
        }
        if self.model.has_dropout() {
            self.dropout_seed = self.dropout.random();
        }
        self.gradient_same_batch(w, g)
    }

    fn gradient_same_batch(&mut self, w: &[f32], g: &mut [f32]) -> f64 {
        let rows = if self.batch_size == 0 {
            Rows::All
        } else {
            Rows::Subset(&self.batch)
        };
        let seed = self.model.has_dropout().then_some(self.dropout_seed);
        self.model
            .loss_grad(&self.data, rows, w, g, &mut self.ws, seed)
    }

    fn smoothness(&mut self) -> Option<f64> {
        *self
            .smoothness
            .get_or_insert_with(|| self.model.smoothness(&self.data, 100))
    }
}

struct Node {
    local: Local,
    /// The node's algorithm randomness (stream `Purpose::Worker`).
    rng: Xoshiro256PlusPlus,
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
    test: Dataset,
    eval_ws: ModelWorkspace,
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
    pool: rayon::ThreadPool,
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
}

/// CRC-32C of datasets' shapes, features and labels.
fn digest(sets: &[&Dataset]) -> u32 {
    let mut crc = 0;
    for d in sets {
        for n in [d.n_samples(), d.n_features, d.n_classes] {
            crc = crc32c::crc32c_append(crc, &(n as u64).to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, bytemuck::cast_slice(&d.features));
        crc = crc32c::crc32c_append(crc, bytemuck::cast_slice(&d.labels));
    }
    crc
}

/// Loads `(train, test)` for a data source.
fn load(source: &DataSource, seed: u64) -> Result<(Dataset, Dataset)> {
    Ok(match source {
        DataSource::Mnist { dir } => mnist::load(dir)?,
        DataSource::Idx { classes, .. } => {
            let files = source.idx_files().expect("an idx source");
            mnist::load_files(&files, *classes)?
        }
        DataSource::Libsvm {
            train,
            test,
            max_dense_gib,
        } => {
            let max_dense_bytes = max_dense_gib.map_or(libsvm::DEFAULT_MAX_DENSE_BYTES, |g| {
                (g * (1u64 << 30) as f64) as u64
            });
            let opts = libsvm::Options {
                n_features: None,
                max_dense_bytes,
            };
            let tr = libsvm::read(train, opts)?;
            let te = match test {
                Some(p) => Some(libsvm::read(
                    p,
                    libsvm::Options {
                        n_features: Some(tr.n_features),
                        ..opts
                    },
                )?),
                None => None,
            };
            let (train_ds, classes) = tr.to_dataset()?;
            let test_ds = match te {
                Some(mut te) => {
                    te.n_features = train_ds.n_features;
                    te.to_dataset_with(&classes, &test.as_ref().unwrap().display().to_string())?
                }
                None => train_ds.clone(),
            };
            (train_ds, test_ds)
        }
        DataSource::Synthetic {
            samples,
            test_samples,
            features,
            classes,
            separation,
        } => {
            let all = synthetic::classification(
                samples + test_samples,
                *features,
                *classes,
                *separation,
                streams::derive(seed, Purpose::Split, u64::MAX),
            );
            let train: Vec<usize> = (0..*samples).collect();
            let test: Vec<usize> = (*samples..samples + test_samples).collect();
            (all.subset(&train), all.subset(&test))
        }
    })
}

impl Simulation {
    /// Loads the data, splits it among the nodes, and builds workers and server.
    pub fn new(cfg: ExperimentConfig) -> Result<Self> {
        cfg.validate()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.run.threads)
            .build()
            .map_err(|e| Error::Config(format!("run.threads: {e}")))?;
        let seed = cfg.run.seed;
        let (mut train, test) = load(&cfg.data.source, seed)?;
        if cfg.data.max_train > 0 {
            train = train.head(cfg.data.max_train);
        }
        // The validation set: the same samples whatever the run's seed.
        let validation = if cfg.data.validation > 0.0 {
            let (kept, held) = split::hold_out(
                &train.labels,
                train.n_classes,
                cfg.data.validation,
                streams::derive(0, Purpose::Split, u64::MAX - 1),
            );
            if held.is_empty() || kept.is_empty() {
                return Err(Error::Config(format!(
                    "data.validation = {} holds out {} of the {} training samples: nothing to \
                     validate on or to train on",
                    cfg.data.validation,
                    held.len(),
                    train.n_samples()
                )));
            }
            let val = train.subset(&held);
            train = train.subset(&kept);
            Some(val)
        } else {
            None
        };
        if test.n_features != train.n_features {
            return Err(lena_data::Error::DimensionMismatch {
                what: "test set".into(),
                expected: train.n_features,
                found: test.n_features,
            }
            .into());
        }
        let n_classes = train.n_classes.max(test.n_classes);
        let model = Model::new(
            cfg.model.objective,
            train.n_features,
            n_classes,
            cfg.model.lambda,
            cfg.model.dropout(),
            &cfg.model.hidden(),
        )?;
        model.check_data(&train)?;
        model.check_data(&test)?;
        if let Some(v) = &validation {
            model.check_data(v)?;
        }

        let split_kind: split::Split = cfg.data.split.parse().map_err(Error::Config)?;
        let m = cfg.data.nodes;
        let parts = split::partition(
            &train.labels,
            n_classes,
            m,
            &split_kind,
            streams::derive(seed, Purpose::Split, 0),
        )?;
        if cfg.data.batch > 0
            && !cfg.data.replacement
            && let Some((node, rows)) = parts
                .iter()
                .enumerate()
                .filter(|(_, rows)| rows.len() < cfg.data.batch)
                .min_by_key(|(_, rows)| rows.len())
        {
            return Err(Error::Config(format!(
                "data.batch = {} is larger than node {node}'s {} samples: its minibatches would \
                 repeat samples, a different estimator from full batch; use data.batch = 0 for \
                 full batch, data.batch <= {}, or data.replacement = true to sample with \
                 replacement",
                cfg.data.batch,
                rows.len(),
                rows.len()
            )));
        }
        let data_digest = digest(
            &[&train, &test]
                .into_iter()
                .chain(&validation)
                .collect::<Vec<_>>(),
        );
        if let (lena_algo::StepSize::Rule(r), Model::Cnn(_)) = (cfg.algorithm.step_size(), model) {
            return Err(Error::Config(format!(
                "algorithm.step_size = {r:?}: a \"c/L\" rule needs the objective's smoothness \
                 constant, which a neural network does not have; give a number"
            )));
        }
        // The smoothness of F on the whole training set, computed once and only if a "c/L"
        // step size asks for it (linear models only: checked above).
        let smoothness = std::cell::OnceCell::new();
        let smooth = || {
            *smoothness.get_or_init(|| {
                pool.install(|| model.smoothness(&train, 100))
                    .unwrap_or(f64::NAN)
            })
        };
        let alg: Box<dyn Algorithm> = cfg.algorithm.check_with(model.dim(), smooth)?;
        let step_size = cfg.algorithm.step_size().resolve(smooth)?;
        let dim = model.dim();
        let batch = cfg.data.batch;
        let mut workers = alg.workers(m, dim);
        if !cfg.faults.loses_uploads() {
            for w in &mut workers {
                w.lossless();
            }
        }
        let nodes: Vec<Node> = parts
            .iter()
            .zip(workers)
            .enumerate()
            .map(|(i, (rows, worker))| {
                let data = train.subset(rows);
                let n = data.n_samples();
                let ws = model.workspace(if batch == 0 { 0 } else { batch });
                Node {
                    local: Local {
                        sampler: BatchSampler::new(n, cfg.data.replacement),
                        rng: streams::stream(seed, Purpose::Batches, i as u64),
                        batch: vec![0; batch],
                        batch_size: batch,
                        data,
                        model,
                        ws,
                        dropout: streams::stream(seed, Purpose::Dropout, i as u64),
                        dropout_seed: 0,
                        smoothness: None,
                    },
                    worker,
                    rng: streams::stream(seed, Purpose::Worker, i as u64),
                    faults: streams::stream(seed, Purpose::Faults, i as u64),
                    plan: Plan::default(),
                }
            })
            .collect();
        drop(train);
        let mut server = alg.server(m, dim);
        if !cfg.faults.loses_uploads() {
            server.lossless();
        }
        let network = cfg
            .network
            .check()
            .map_err(|e| Error::Config(e.to_string()))?;
        let rates = network.rates(m, streams::derive(seed, Purpose::Network, 0));
        let history = if cfg.faults.straggler > 0.0 {
            vec![vec![0.0; dim]; cfg.faults.max_delay() as usize + 2]
        } else {
            Vec::new()
        };
        Ok(Self {
            delivered: vec![false; m],
            trace: (!network.is_ideal()).then(|| lena_net::Trace::new(m)),
            row_bits: vec![0; m],
            network,
            rates,
            window: vec![0; cfg.accounting.window as usize],
            window_sum: 0,
            history,
            msgs: vec![Message::default(); m],
            sent: vec![false; m],
            model,
            nodes,
            server,
            eval_ws: model.workspace(0),
            test,
            w: {
                let mut w = vec![0.0; dim];
                model.init(&mut streams::stream(seed, Purpose::Init, 0), &mut w);
                w
            },
            w_prev: vec![0.0; dim],
            round: 0,
            counters: Counters::default(),
            initial_loss: None,
            step_size,
            algorithm: alg.name(),
            kernels: Kernels::detect(),
            pool,
            exchange: None,
            hosted: vec![true; m],
            fresh: true,
            wire: Vec::new(),
            data_digest,
            validation,
            cfg,
        })
    }

    /// Makes this simulation one process of a multi-process run over `exchange`: it computes
    /// only the nodes the exchange says it hosts (the other nodes' data is dropped), and, on
    /// the server, asks the other processes for the rest. Call [`Self::serve`] on workers and
    /// [`Self::run`] on the server, then [`Self::finish_workers`].
    pub fn with_exchange(mut self, exchange: Box<dyn Exchange>) -> Self {
        for (m, node) in self.nodes.iter_mut().enumerate() {
            self.hosted[m] = exchange.hosts(m);
            if !self.hosted[m] {
                let d = &node.local.data;
                node.local.data = Dataset {
                    features: Vec::new(),
                    labels: Vec::new(),
                    n_features: d.n_features,
                    n_classes: d.n_classes,
                };
            }
        }
        self.exchange = Some(exchange);
        self
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

    /// The whole state after the rounds run so far: parameters, every node's algorithm state,
    /// random streams, minibatch sampler and fault plan, the server, counters, trace and
    /// metric windows. A fresh simulation of the same config given these bytes continues
    /// exactly as this one would. On a multi-process server the nodes' sections come from the
    /// processes hosting them (an error there is returned as a transport error).
    pub fn save_state(&mut self) -> Vec<u8> {
        match self.try_save_state() {
            Ok(bytes) => bytes,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Self::save_state`], with a multi-process transport's failure as an error.
    pub fn try_save_state(&mut self) -> Result<Vec<u8>> {
        self.fetch_node_states()?;
        let mut s = Saver::default();
        s.out.extend_from_slice(MAGIC);
        let mut fp = self.fingerprint();
        s.bytes(&mut fp);
        self.visit(&mut s);
        Ok(s.out)
    }

    /// Server of a multi-process run: loads the hosting processes' node sections into this
    /// process's copies of the nodes, so that its checkpoint is the whole state.
    fn fetch_node_states(&mut self) -> Result<()> {
        let Some(ex) = self.exchange.as_mut().filter(|e| e.is_server()) else {
            return Ok(());
        };
        let round = self.round;
        ex.command(round, Command::Checkpoint, &[])?;
        let dropout = self.model.has_dropout();
        let (nodes, msgs, sent) = (&mut self.nodes, &mut self.msgs, &mut self.sent);
        ex.gather_items(round, Items::States, &mut |it| {
            let bad = |what: String| {
                Error::Transport(format!("node {}'s state at round {round}: {what}", it.node))
            };
            let node = nodes
                .get_mut(it.node)
                .ok_or_else(|| bad("no such node".into()))?;
            let mut l = Loader::new(it.bytes);
            visit_node(
                &mut l,
                node,
                &mut msgs[it.node],
                &mut sent[it.node],
                dropout,
            );
            match l.finish() {
                Ok([]) => Ok(()),
                Ok(rest) => Err(bad(format!("{} unread bytes", rest.len()))),
                Err(e) => Err(bad(e)),
            }
        })
    }

    /// Restores [`Self::save_state`]'s bytes, which must come from a run of the same config.
    /// Every length, index and invariant is checked; on an error the simulation is left
    /// partly loaded and must not be run (build a new one, or load a good state).
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let bad = |what: String| Error::Checkpoint(what);
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(bad("not a lena checkpoint (wrong magic bytes)".into()));
        };
        let mut l = Loader::new(rest);
        let mut fp = Vec::new();
        l.bytes(&mut fp);
        if fp != self.fingerprint() {
            return Err(bad(
                "the checkpoint was written by a run of another configuration".into(),
            ));
        }
        self.visit(&mut l);
        match l.finish() {
            Ok([]) => {}
            Ok(rest) => return Err(bad(format!("{} unread bytes at the end", rest.len()))),
            Err(e) => return Err(bad(e)),
        }
        self.check_loaded().map_err(bad)?;
        if let Some(ex) = self.exchange.as_mut().filter(|e| e.is_server()) {
            ex.command(self.round, Command::Restore, bytes)?;
        }
        self.fresh = true;
        Ok(())
    }

    /// Checks the loaded state's indices and invariants, which later rounds rely on.
    fn check_loaded(&self) -> std::result::Result<(), String> {
        for (m, node) in self.nodes.iter().enumerate() {
            node.local
                .sampler
                .check()
                .map_err(|e| format!("node {m}'s minibatch sampler: {e}"))?;
            if node.plan.offline && node.plan.absent == 0 {
                return Err(format!("node {m} is offline for 0 rounds"));
            }
        }
        let sum: u64 = self.window.iter().map(|&x| u64::from(x)).sum();
        if sum != self.window_sum {
            return Err(format!(
                "the upload window sums to {sum}, its total says {}",
                self.window_sum
            ));
        }
        let uploads_per_round = self.nodes.len() as u64;
        if let Some(&x) = self
            .window
            .iter()
            .find(|&&x| u64::from(x) > uploads_per_round)
        {
            return Err(format!(
                "{x} uploads in one round of the upload window, from {uploads_per_round} nodes"
            ));
        }
        if let Some(t) = &self.trace
            && t.rounds() as u64 != self.round
        {
            return Err(format!(
                "the message-size trace holds {} rounds at round {}",
                t.rounds(),
                self.round
            ));
        }
        let c = &self.counters;
        if c.delivered + c.lost + c.dropped != c.uploads || c.late > c.delivered {
            return Err(format!(
                "upload counters disagree: {} sent, {} delivered ({} late), {} lost, {} dropped",
                c.uploads, c.delivered, c.late, c.lost, c.dropped
            ));
        }
        if !self.w.iter().chain(&self.w_prev).all(|x| x.is_finite()) {
            return Err("the parameters are not finite".into());
        }
        Ok(())
    }

    /// What a checkpoint must match: the configuration, minus what does not change a run.
    fn fingerprint(&self) -> Vec<u8> {
        let mut cfg = self.cfg.clone();
        cfg.run.iterations = 0;
        cfg.run.threads = 0;
        cfg.run.checkpoint_every = 0;
        cfg.run.eval_every = 0;
        cfg.run.until = None;
        let mut fp = toml::to_string(&cfg).unwrap_or_default().into_bytes();
        fp.extend_from_slice(&self.data_digest.to_le_bytes());
        fp
    }

    fn visit(&mut self, v: &mut dyn Visitor) {
        v.f32s(&mut self.w);
        v.f32s(&mut self.w_prev);
        v.u64(&mut self.round);
        let c = &mut self.counters;
        for x in [
            &mut c.uploads,
            &mut c.bits,
            &mut c.delivered,
            &mut c.lost,
            &mut c.late,
            &mut c.dropped,
        ] {
            v.u64(x);
        }
        v.f64(&mut c.latency);
        let mut init = self.initial_loss.unwrap_or(f64::NAN);
        v.f64(&mut init);
        self.initial_loss = (!init.is_nan()).then_some(init);
        let mut window = self.window.clone();
        v.u32s(&mut window);
        if window.len() == self.window.len() {
            self.window = window;
        } else {
            v.fail(format!(
                "checkpoint holds an upload window of {} rounds, this experiment's is {}",
                window.len(),
                self.window.len()
            ));
        }
        v.u64(&mut self.window_sum);
        for h in &mut self.history {
            v.f32s(h);
        }
        if let Some(trace) = &mut self.trace {
            let mut bits = trace.raw().to_vec();
            v.u32s(&mut bits);
            match lena_net::Trace::from_raw(trace.nodes(), bits) {
                Some(t) => *trace = t,
                None => v.fail("checkpoint: the message-size trace does not fit the nodes".into()),
            }
        }
        let dropout = self.model.has_dropout();
        for ((node, msg), sent) in self
            .nodes
            .iter_mut()
            .zip(&mut self.msgs)
            .zip(&mut self.sent)
        {
            visit_node(v, node, msg, sent, dropout);
        }
        self.server.visit(v);
    }

    /// Draws every node's faults for this round from its own stream (before any node steps,
    /// in node order, so the pattern depends only on the seed and is the same whatever the
    /// algorithm).
    fn plan_faults(&mut self) {
        let f = &self.cfg.faults;
        if f.is_none() {
            return;
        }
        for node in &mut self.nodes {
            let (rng, plan) = (&mut node.faults, &mut node.plan);
            // Fixed draws per round, whatever the outcome, so streams stay aligned.
            let (u_leave, u_strag, u_delay, u_loss): (f64, f64, f64, f64) =
                (rng.random(), rng.random(), rng.random(), rng.random());
            if plan.offline {
                if u_leave < f.rejoin {
                    plan.offline = false;
                } else {
                    plan.absent += 1;
                }
            } else if u_leave < f.leave {
                plan.offline = true;
                plan.absent = 1;
            }
            plan.delay = if u_strag < f.straggler {
                1 + (u_delay * f.max_delay() as f64) as u64 % f.max_delay()
            } else {
                0
            };
            plan.lose = u_loss < f.loss;
        }
    }

    /// One round: every node steps at the current parameters (in parallel), then the server
    /// applies the uploads that arrived (node order per coordinate). On a multi-process server
    /// the parameters go out first and the other processes' uploads come back before the
    /// server applies them.
    pub fn step(&mut self) -> Result<()> {
        let round = self.round;
        if self.is_worker() {
            return Err(Error::Config(
                "a worker process of a multi-process run serves the server's rounds \
                 (Simulation::serve); it does not step on its own"
                    .into(),
            ));
        }
        if let Some(ex) = self.exchange.as_mut() {
            encode_f32s(&self.w, &mut self.wire);
            ex.command(round, Command::Round, &self.wire)?;
        }
        self.node_phase(round);
        if let Some(ex) = self.exchange.as_mut() {
            let (msgs, sent) = (&mut self.msgs, &mut self.sent);
            ex.gather_items(round, Items::Uploads, &mut |it| {
                receive_upload(round, it, &mut msgs[it.node], &mut sent[it.node])
            })?;
        }
        self.account(round);
        let uploads = Uploads::new(&self.msgs, &self.delivered);
        self.w_prev.copy_from_slice(&self.w);
        // Inside the pool: servers aggregate coordinate blocks on the run's threads.
        let (server, w) = (&mut self.server, &mut self.w);
        self.pool.install(|| server.apply(round, w, uploads))?;
        self.round += 1;
        if !self.kernels.norm2_sq(&self.w).is_finite() {
            return Err(Error::Diverged {
                iteration: self.round,
                what: "the parameters are no longer finite".into(),
                step_size: self.step_size,
            });
        }
        Ok(())
    }

    /// Worker process of a multi-process run: obeys the server's commands until it says the
    /// run is over. Returns the transport's error if the server goes silent or away.
    pub fn serve(&mut self) -> Result<()> {
        let mut payload = Vec::new();
        loop {
            let round = self.round;
            let ex = self
                .exchange
                .as_mut()
                .ok_or_else(|| Error::Config("serve() needs an exchange".into()))?;
            match ex.next_command(round, &mut payload)? {
                Command::Round => {
                    if !self.fresh {
                        self.w_prev.copy_from_slice(&self.w);
                    }
                    self.fresh = false;
                    decode_f32s(&payload, &mut self.w).map_err(|e| {
                        Error::Transport(format!("round {round}'s parameters: {e}"))
                    })?;
                    self.node_phase(round);
                    let items: Vec<Item<'_>> = (0..self.nodes.len())
                        .filter(|&m| self.hosted[m])
                        .map(|m| {
                            let msg = &self.msgs[m];
                            let sent = self.sent[m];
                            Item {
                                node: m,
                                bits: if sent { msg.bits() } else { 0 },
                                bytes: if sent { msg.bytes() } else { &[] },
                            }
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::Uploads, &items)?;
                    // The delivery outcome (lost, dropped) the server will see, for the nodes'
                    // feedback next round; counters here are not reported.
                    self.account(round);
                    self.round += 1;
                }
                Command::Evaluate => {
                    // At the server's current parameters (this process's are a round behind).
                    let mut w = vec![0.0; self.w.len()];
                    decode_f32s(&payload, &mut w).map_err(|e| {
                        Error::Transport(format!("round {round}'s parameters: {e}"))
                    })?;
                    let losses = self.hosted_losses(Some(&w));
                    let bytes: Vec<(usize, [u8; 8])> =
                        losses.iter().map(|&(m, l)| (m, l.to_le_bytes())).collect();
                    let items: Vec<Item<'_>> = bytes
                        .iter()
                        .map(|(m, b)| Item {
                            node: *m,
                            bits: 64,
                            bytes: b,
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::Losses, &items)?;
                }
                Command::Checkpoint => {
                    let dropout = self.model.has_dropout();
                    let mut sections = Vec::new();
                    for m in (0..self.nodes.len()).filter(|&m| self.hosted[m]) {
                        let mut s = Saver::default();
                        visit_node(
                            &mut s,
                            &mut self.nodes[m],
                            &mut self.msgs[m],
                            &mut self.sent[m],
                            dropout,
                        );
                        sections.push((m, s.out));
                    }
                    let items: Vec<Item<'_>> = sections
                        .iter()
                        .map(|(m, b)| Item {
                            node: *m,
                            bits: 8 * b.len() as u64,
                            bytes: b,
                        })
                        .collect();
                    let ex = self.exchange.as_mut().expect("checked above");
                    ex.send_items(round, Items::States, &items)?;
                }
                Command::Restore => {
                    let bytes = std::mem::take(&mut payload);
                    self.load_state(&bytes)?;
                }
                Command::Finish => return Ok(()),
            }
        }
    }

    /// Server of a multi-process run: tells the workers the run is over (after [`Self::run`]
    /// returned, whatever it returned).
    pub fn finish_workers(&mut self) -> Result<()> {
        match self.exchange.as_mut().filter(|e| e.is_server()) {
            Some(ex) => ex.command(self.round, Command::Finish, &[]),
            None => Ok(()),
        }
    }

    /// What this process's transport carried (zero in-process).
    pub fn traffic(&self) -> crate::Traffic {
        self.exchange
            .as_ref()
            .map(|e| e.traffic())
            .unwrap_or_default()
    }

    /// Multi-process run: ends every process at once after an unrecoverable failure (see
    /// [`Exchange::abort`]).
    pub fn abort_exchange(&mut self) {
        if let Some(ex) = self.exchange.as_mut() {
            ex.abort();
        }
    }

    /// The full-batch loss of each node this process hosts.
    /// `w`: the parameters to evaluate at (default: this process's).
    fn hosted_losses(&mut self, w: Option<&[f32]>) -> Vec<(usize, f64)> {
        let w = w.unwrap_or(&self.w);
        let model = self.model;
        let hosted = &self.hosted;
        self.pool.install(|| {
            self.nodes
                .par_iter_mut()
                .enumerate()
                .filter(|(m, _)| hosted[*m])
                .map(|(m, n)| (m, model.loss(&n.local.data, Rows::All, w, &mut n.local.ws)))
                .collect()
        })
    }

    /// The nodes' part of a round: faults drawn, then every hosted node steps (in parallel).
    fn node_phase(&mut self, round: u64) {
        self.plan_faults();
        let k = self.kernels;
        if !self.history.is_empty() {
            let h = self.history.len() as u64;
            self.history[(round % h) as usize].copy_from_slice(&self.w);
        }
        let w = &self.w;
        let prev = (round > 0).then_some(&self.w_prev[..]);
        let bc = Broadcast::next(k, round, w, prev);
        let history = &self.history;
        let hosted = &self.hosted;
        let (nodes, msgs, sent) = (&mut self.nodes, &mut self.msgs, &mut self.sent);
        self.pool.install(|| {
            nodes
                .par_iter_mut()
                .zip(msgs.par_iter_mut())
                .zip(sent.par_iter_mut())
                .enumerate()
                .for_each(|(m, ((node, msg), sent))| {
                    if !hosted[m] {
                        // Computed by another process.
                        *sent = false;
                        return;
                    }
                    let plan = &mut node.plan;
                    if plan.offline {
                        *sent = false;
                        return;
                    }
                    // In the order they happened: a loss, then the absence that followed it.
                    if plan.lost_last {
                        node.worker.on_lost(msg);
                        plan.lost_last = false;
                    }
                    if plan.absent > 0 {
                        node.worker.on_absent(plan.absent);
                        plan.absent = 0;
                    }
                    // A straggler computes on the parameters of `delay` rounds ago.
                    let stale;
                    let bc = if plan.delay > 0 {
                        let h = history.len() as u64;
                        let t = round.saturating_sub(plan.delay);
                        let p = (t > 0).then(|| &history[((t - 1) % h) as usize][..]);
                        stale = Broadcast::next(k, t, &history[(t % h) as usize], p);
                        &stale
                    } else {
                        &bc
                    };
                    let up = node.worker.step(bc, &mut node.local, &mut node.rng, msg);
                    *sent = up == Upload::Sent;
                });
        });
    }

    /// Counts the round's uploads and bits, decides which uploads arrive, and advances the
    /// clock. Lost and late uploads were transmitted: they cost bits and time.
    fn account(&mut self, round: u64) {
        let deadline = self.cfg.faults.deadline();
        let flag = self.cfg.accounting.silent_flag;
        let c = &mut self.counters;
        let mut uploads_this_round = 0u32;
        for (m, node) in self.nodes.iter_mut().enumerate() {
            let plan = &mut node.plan;
            let msg = &self.msgs[m];
            let mut bits = 0u64;
            self.delivered[m] = false;
            if self.sent[m] {
                bits = msg.bits();
                c.uploads += 1;
                uploads_this_round += 1;
                if plan.delay > deadline {
                    c.dropped += 1;
                    plan.lost_last = true;
                } else if plan.lose {
                    c.lost += 1;
                    plan.lost_last = true;
                } else {
                    c.delivered += 1;
                    c.late += u64::from(plan.delay > 0);
                    self.delivered[m] = true;
                }
            } else if flag && !plan.offline {
                bits = 1;
            }
            c.bits += bits;
            self.row_bits[m] = u32::try_from(bits).unwrap_or(u32::MAX);
        }
        if let Some(trace) = &mut self.trace {
            trace
                .push_round(&self.row_bits)
                .expect("one entry per node");
            c.latency += self.network.round_latency(&self.row_bits, &self.rates);
        }
        let slot = (round % self.window.len() as u64) as usize;
        self.window_sum =
            self.window_sum - u64::from(self.window[slot]) + u64::from(uploads_this_round);
        self.window[slot] = uploads_this_round;
    }

    /// Global train loss `F(w) = (1/M) sum_m f_m(w)` (full batch) and test accuracy.
    ///
    /// # Panics
    /// On a multi-process server whose transport fails (use [`Self::try_evaluate`]).
    pub fn evaluate(&mut self) -> (f64, f64) {
        self.try_evaluate().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::evaluate`]; on a multi-process server the other processes' node losses are
    /// gathered, and a transport failure is an error.
    pub fn try_evaluate(&mut self) -> Result<(f64, f64)> {
        let mut losses = vec![f64::NAN; self.nodes.len()];
        for (m, l) in self.hosted_losses(None) {
            losses[m] = l;
        }
        if let Some(ex) = self.exchange.as_mut().filter(|e| e.is_server()) {
            let round = self.round;
            encode_f32s(&self.w, &mut self.wire);
            ex.command(round, Command::Evaluate, &self.wire)?;
            ex.gather_items(round, Items::Losses, &mut |it| {
                let b: [u8; 8] = it.bytes.try_into().map_err(|_| {
                    Error::Transport(format!("node {}'s loss at round {round}", it.node))
                })?;
                losses[it.node] = f64::from_le_bytes(b);
                Ok(())
            })?;
        }
        let w = &self.w;
        let model = self.model;
        let acc = self
            .pool
            .install(|| model.accuracy(&self.test, w, &mut self.eval_ws));
        // Summed in node order, as in-process.
        Ok((losses.iter().sum::<f64>() / losses.len() as f64, acc))
    }

    /// Loss and accuracy on the validation set, if there is one.
    fn evaluate_validation(&mut self) -> Option<(f64, f64)> {
        let val = self.validation.as_ref()?;
        let (w, model, ws) = (&self.w, self.model, &mut self.eval_ws);
        Some(self.pool.install(|| {
            let loss = model.loss(val, Rows::All, w, ws);
            (loss, model.accuracy(val, w, ws))
        }))
    }

    /// Whether `c` holds now, computing only what it names: the validation or test metric
    /// alone (the server holds both sets, so no process is asked), a counter as it stands;
    /// any other column takes a full evaluation. A condition that holds here holds on the
    /// full row of the same round (the same parameters, the same arithmetic).
    fn quick_check(&mut self, c: &crate::metrics::Condition) -> Result<bool> {
        let value = match c.column.as_str() {
            "val_loss" | "val_accuracy" => {
                let Some((loss, acc)) = self.evaluate_validation() else {
                    return Ok(false);
                };
                if c.column == "val_loss" { loss } else { acc }
            }
            "test_accuracy" => {
                let (w, model, ws) = (&self.w, self.model, &mut self.eval_ws);
                self.pool.install(|| model.accuracy(&self.test, w, ws))
            }
            "iteration" => self.round as f64,
            "uploads" => self.counters.uploads as f64,
            "bits" => self.counters.bits as f64,
            "latency_seconds" => self.counters.latency,
            _ => return Ok(c.holds(&self.eval_row(Instant::now())?)),
        };
        Ok(c.holds_for(value))
    }

    fn eval_row(&mut self, start: Instant) -> Result<MetricsRow> {
        let (train_loss, test_accuracy) = self.try_evaluate()?;
        let val = self.evaluate_validation();
        let initial = *self.initial_loss.get_or_insert(train_loss);
        let bound = self.cfg.run.divergence_factor * initial.max(1e-12);
        if !train_loss.is_finite() || train_loss > bound {
            return Err(Error::Diverged {
                iteration: self.round,
                what: format!(
                    "train loss {train_loss:e} exceeds {} x its initial value {initial:e}",
                    self.cfg.run.divergence_factor
                ),
                step_size: self.step_size,
            });
        }
        Ok(MetricsRow {
            iteration: self.round,
            train_loss,
            test_accuracy,
            uploads: self.counters.uploads,
            bits: self.counters.bits,
            delivered: self.counters.delivered,
            lost: self.counters.lost,
            late: self.counters.late,
            dropped: self.counters.dropped,
            latency_seconds: self.counters.latency,
            upload_frequency: {
                let rounds = self.round.min(self.window.len() as u64).max(1);
                self.window_sum as f64 / (rounds * self.nodes.len() as u64) as f64
            },
            wall_seconds: if self.cfg.run.wall_clock {
                start.elapsed().as_secs_f64()
            } else {
                0.0
            },
            comm_seconds: match &self.exchange {
                Some(ex) if self.cfg.run.wall_clock => ex.comm_seconds(),
                _ => 0.0,
            },
            val_loss: val.map(|v| v.0),
            val_accuracy: val.map(|v| v.1),
        })
    }

    /// Runs the configured number of rounds, evaluating at round 0, every `eval_every` rounds
    /// and at the end.
    pub fn run(&mut self, obs: &mut dyn Observer) -> Result<Summary> {
        let start = Instant::now();
        let total = self.cfg.run.iterations;
        let every = self.cfg.run.eval_every;
        let ckpt = self.cfg.run.checkpoint_every;
        let check = self.cfg.run.check_every;
        let until: Option<crate::metrics::Condition> = match &self.cfg.run.until {
            Some(u) => Some(
                u.parse()
                    .map_err(|e| Error::Config(format!("run.until = {e}")))?,
            ),
            None => None,
        };
        let summary = |sim: &Self, last, until| Summary {
            last,
            step_size: sim.step_size,
            algorithm: sim.algorithm.clone(),
            until,
        };
        let met = |row: &MetricsRow| until.as_ref().is_some_and(|c| c.holds(row));
        // A resumed run (round > 0) wrote its evaluations up to its checkpoint already.
        let mut last = self.eval_row(start)?;
        if self.round == 0 {
            obs.on_eval(&last)?;
            if met(&last) {
                return Ok(summary(self, last, Some(0)));
            }
        }
        while self.round < total {
            self.step()?;
            let go_on = obs.on_round(self.round) || self.round == total;
            // A stop comes after the round's evaluation, so the resumed run has its row.
            if self.round.is_multiple_of(every) || self.round == total {
                last = self.eval_row(start)?;
                obs.on_eval(&last)?;
                if met(&last) {
                    return Ok(summary(self, last, Some(self.round)));
                }
            } else if let Some(c) = until
                .as_ref()
                .filter(|_| check > 0 && self.round.is_multiple_of(check))
                && self.quick_check(c)?
            {
                // Met between evaluations: the round gets its full row, and the run ends.
                last = self.eval_row(start)?;
                obs.on_eval(&last)?;
                return Ok(summary(self, last, Some(self.round)));
            }
            let due = ckpt > 0 && self.round.is_multiple_of(ckpt) && self.round < total;
            if due || !go_on {
                obs.on_checkpoint(self.round, &self.try_save_state()?)?;
            }
            if !go_on {
                return Err(Error::Stopped(self.round));
            }
        }
        Ok(summary(self, last, None))
    }
}

/// One node's part of the state walk (a checkpoint's node section).
fn visit_node(
    v: &mut dyn Visitor,
    node: &mut Node,
    msg: &mut Message,
    sent: &mut bool,
    dropout: bool,
) {
    v.message(msg);
    v.bool(sent);
    let p = &mut node.plan;
    v.bool(&mut p.offline);
    v.u64(&mut p.absent);
    v.u64(&mut p.delay);
    v.bool(&mut p.lose);
    v.bool(&mut p.lost_last);
    rng_state(v, &mut node.rng);
    rng_state(v, &mut node.faults);
    rng_state(v, &mut node.local.rng);
    if dropout {
        rng_state(v, &mut node.local.dropout);
        v.u64(&mut node.local.dropout_seed);
    }
    let (perm, pos) = node.local.sampler.state_mut();
    v.u32s(perm);
    let mut p64 = *pos as u64;
    v.u64(&mut p64);
    *pos = p64 as usize;
    node.worker.visit(v);
}

/// Parameters as little-endian bytes into `out` (reused).
fn encode_f32s(w: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(w.iter().flat_map(|x| x.to_le_bytes()));
}

/// Little-endian bytes into parameters of the expected length.
fn decode_f32s(bytes: &[u8], w: &mut [f32]) -> std::result::Result<(), String> {
    if bytes.len() != 4 * w.len() {
        return Err(format!("{} bytes, expected {}", bytes.len(), 4 * w.len()));
    }
    for (x, b) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// The server's copy of a node's upload from another process: exactly `ceil(bits / 8)` bytes,
/// the length the bits were charged for (checked on every upload).
fn receive_upload(round: u64, it: Item<'_>, msg: &mut Message, sent: &mut bool) -> Result<()> {
    *sent = it.bits > 0;
    if !*sent {
        return Ok(());
    }
    if it.bytes.len() as u64 != it.bits.div_ceil(8) {
        return Err(Error::Transport(format!(
            "node {}'s upload at round {round}: {} bytes for {} bits (expected {})",
            it.node,
            it.bytes.len(),
            it.bits,
            it.bits.div_ceil(8)
        )));
    }
    let buf = msg.bytes_mut();
    buf.clear();
    buf.extend_from_slice(it.bytes);
    msg.set_bits(it.bits);
    Ok(())
}
