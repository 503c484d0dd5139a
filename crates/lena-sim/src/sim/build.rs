//! Building a simulation: the data loaded and split, the nodes' streams, workers and server.

use super::*;
use crate::config::ModelConfig;

/// CRC-32C of datasets' shapes, features and labels.
pub(super) fn digest(sets: &[&Dataset]) -> u32 {
    let mut crc = 0;
    for d in sets {
        for n in [d.n_samples(), d.n_features, d.n_classes] {
            crc = crc32c::crc32c_append(crc, &(n as u64).to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, bytemuck::cast_slice(d.features()));
        crc = crc32c::crc32c_append(crc, bytemuck::cast_slice(&d.labels));
    }
    crc
}

/// A source's training and test data as loaded.
#[derive(Debug)]
struct Loaded {
    train: Dataset,
    test: Arc<Dataset>,
}

/// Data sources loaded once and shared by every simulation built with this cache
/// ([`Simulation::with_data`]): the runs of a sweep or a tuning grid over one dataset load and
/// convert it once instead of once each (for MNIST that is about half of a short run's
/// start-up), and runs at once share one copy. A source is loaded when the first simulation
/// needs it and kept as long as the cache (or a clone of it) lives, so a file changed later is
/// not read again: the cache's runs all see the same data. A failed load is not kept. Runs of
/// the same split share their nodes' datasets, and runs that start from the same parameters
/// share the evaluation of them (their first metrics row's loss and accuracy, computed once).
#[derive(Clone, Debug, Default)]
pub struct DataCache {
    loaded: Arc<Mutex<Vec<Entry>>>,
    /// Nodes' datasets cut from a cached training set, while some run still holds them.
    nodes: Arc<Mutex<Vec<NodeEntry>>>,
    /// Evaluations of the parameters runs start from ([`DataCache::start_evaluation`]).
    starts: Arc<Mutex<Vec<Evaluated>>>,
}

/// An evaluation of parameters `w` ([`Simulation::try_evaluate`]): each node's full-batch loss
/// and the test accuracy, for a model (its configuration and instruction set) over given nodes'
/// datasets and test set. The datasets are held weakly, by identity: while an entry holds
/// them, their addresses cannot be reused by other data.
#[derive(Debug)]
pub(super) struct Evaluated {
    pub model: ModelConfig,
    pub kernels: &'static str,
    pub nodes: Vec<Weak<Dataset>>,
    pub test: Weak<Dataset>,
    pub w: Vec<f32>,
    pub losses: Vec<f64>,
    pub accuracy: f64,
}

/// What a start evaluation is of ([`DataCache::start_evaluation`]): a model (its configuration
/// and instruction set), the nodes' and test datasets, and the parameters.
pub(super) struct StartKey<'a> {
    pub model: &'a ModelConfig,
    pub kernels: &'static str,
    pub nodes: &'a [Arc<Dataset>],
    pub test: &'a Arc<Dataset>,
    pub w: &'a [f32],
}

impl StartKey<'_> {
    /// The entry that keeps this key's evaluation.
    pub fn entry(&self, losses: Vec<f64>, accuracy: f64) -> Evaluated {
        Evaluated {
            model: self.model.clone(),
            kernels: self.kernels,
            nodes: self.nodes.iter().map(Arc::downgrade).collect(),
            test: Arc::downgrade(self.test),
            w: self.w.to_vec(),
            losses,
            accuracy,
        }
    }
}

impl Evaluated {
    /// Whether this is the evaluation of `key`: the same model and path, exactly the same
    /// datasets (the same allocations, still alive) and the same parameters, bit for bit.
    fn is_of(&self, key: &StartKey<'_>) -> bool {
        let same = |weak: &Weak<Dataset>, arc: &Arc<Dataset>| {
            std::ptr::eq(weak.as_ptr(), Arc::as_ptr(arc)) && weak.strong_count() > 0
        };
        self.model == *key.model
            && self.kernels == key.kernels
            && self.nodes.len() == key.nodes.len()
            && self.nodes.iter().zip(key.nodes).all(|(a, b)| same(a, b))
            && same(&self.test, key.test)
            && self.w.len() == key.w.len()
            && self
                .w
                .iter()
                .zip(key.w)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// Start evaluations a cache keeps at most (the newest).
const STARTS_KEPT: usize = 4;

/// Nodes' datasets: the cached source they were cut from (its address, which the cache keeps
/// alive), each node's rows, and the datasets themselves while a run holds them.
type NodeEntry = (usize, Vec<Vec<usize>>, Vec<Weak<Dataset>>);

/// A cached source: the source, the seed (for seeded synthetic data only) and its data.
type Entry = (DataSource, Option<u64>, Arc<Loaded>);

impl DataCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `source`'s data: from the cache, or loaded (with the cache held, so that runs starting
    /// together load it once) and kept.
    fn get(&self, source: &DataSource, seed: u64) -> Result<Arc<Loaded>> {
        // Synthetic data is drawn from the run's seed; files are the same for every seed.
        let seed = matches!(source, DataSource::Synthetic { .. }).then_some(seed);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, data)) = loaded.iter().find(|(s, k, _)| s == source && *k == seed) {
            return Ok(Arc::clone(data));
        }
        let data = Arc::new(load(source, seed.unwrap_or(0))?);
        loaded.push((source.clone(), seed, Arc::clone(&data)));
        Ok(data)
    }

    /// The node losses and test accuracy of a start evaluation that another run of this cache
    /// made of the same parameters, model and datasets, if one is kept.
    ///
    /// PERF: the runs of a figure or a tuning grid that differ only in their algorithm or step
    /// size start from the same parameters, so their first evaluations are the same: figure 3's
    /// four CNN runs evaluated 70 000 images each at round 0 (a thirteenth of their
    /// evaluations in `--quick`). The evaluation is a pure function of what the key compares
    /// (threads never change it), so a kept one is the run's own, bit for bit.
    pub(super) fn start_evaluation(&self, key: &StartKey<'_>) -> Option<(Vec<f64>, f64)> {
        let mut starts = self.starts.lock().unwrap_or_else(PoisonError::into_inner);
        starts.retain(|e| e.nodes.iter().all(|n| n.strong_count() > 0));
        starts
            .iter()
            .find(|e| e.is_of(key))
            .map(|e| (e.losses.clone(), e.accuracy))
    }

    /// Keeps a start evaluation for the cache's other runs ([`Self::start_evaluation`]).
    pub(super) fn keep_start_evaluation(&self, e: Evaluated) {
        let mut starts = self.starts.lock().unwrap_or_else(PoisonError::into_inner);
        if starts.len() >= STARTS_KEPT {
            starts.remove(0);
        }
        starts.push(e);
    }

    /// The nodes' datasets, `parts[i]`'s rows of `loaded`'s training set for node `i`: those
    /// of a run with the same rows that still holds them (runs of a figure that differ only in
    /// the algorithm, one after another on the same workers), else cut anew (with the cache
    /// held, so that runs starting together cut them once). The same rows of the same data, so
    /// the same datasets; sharing them saves a copy of the training set per run (188 MB for
    /// MNIST, written into fresh pages).
    fn node_data(&self, loaded: &Arc<Loaded>, parts: &[Vec<usize>]) -> Vec<Arc<Dataset>> {
        let source = Arc::as_ptr(loaded) as usize;
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|(_, _, sets)| sets.iter().all(|w| w.strong_count() > 0));
        let alive = nodes
            .iter()
            .find(|(s, rows, _)| *s == source && rows == parts)
            .and_then(|(_, _, sets)| sets.iter().map(Weak::upgrade).collect::<Option<Vec<_>>>());
        if let Some(sets) = alive {
            return sets;
        }
        let sets: Vec<Arc<Dataset>> = loaded
            .train
            .split(parts)
            .into_iter()
            .map(Arc::new)
            .collect();
        nodes.push((
            source,
            parts.to_vec(),
            sets.iter().map(Arc::downgrade).collect(),
        ));
        sets
    }
}

/// [`load_pair`], the test set ready to share.
fn load(source: &DataSource, seed: u64) -> Result<Loaded> {
    let (train, test) = load_pair(source, seed)?;
    Ok(Loaded {
        train,
        test: Arc::new(test),
    })
}

/// Loads `(train, test)` for a data source.
fn load_pair(source: &DataSource, seed: u64) -> Result<(Dataset, Dataset)> {
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
    ///
    /// The run computes on a rayon pool of `run.threads` threads. Where the calling thread
    /// serves no pool yet, it becomes one of them (so a round does not put it to sleep while
    /// others work) and stays one: rayon never releases it, so its later simulations with the
    /// same thread count share that pool, and rayon calls made on it outside a simulation run
    /// there too, not on the global pool. Results never depend on the threads.
    pub fn new(cfg: ExperimentConfig) -> Result<Self> {
        Self::build(cfg, None, None)
    }

    /// [`Self::new`] with its data from `data`, loaded there by the first simulation that
    /// needs it and shared with the others (a sweep's runs): the same data, so the same run.
    pub fn with_data(cfg: ExperimentConfig, data: &DataCache) -> Result<Self> {
        let mut sim = Self::build(cfg, None, Some(data))?;
        sim.cache = Some(data.clone());
        Ok(sim)
    }

    /// [`Self::new`] with an algorithm of the caller's own (a new trigger, compressor or
    /// method; `examples/custom_trigger.rs` and `examples/custom_compressor.rs`) in place of
    /// `cfg.algorithm`, whose step size is still what the run records.
    pub fn with_algorithm(cfg: ExperimentConfig, algorithm: Box<dyn Algorithm>) -> Result<Self> {
        Self::build(cfg, Some(algorithm), None)
    }

    fn build(
        cfg: ExperimentConfig,
        custom: Option<Box<dyn Algorithm>>,
        data: Option<&DataCache>,
    ) -> Result<Self> {
        cfg.validate()?;
        // The one kernels context of the run (LENA_SIMD, else the widest path the CPU runs),
        // passed down to the model, the workers and the server.
        let kernels = Kernels::detect();
        let pool = run_pool(cfg.run.threads)?;
        let seed = cfg.run.seed;
        let loaded = match data {
            Some(cache) => cache.get(&cfg.data.source, seed)?,
            None => Arc::new(load(&cfg.data.source, seed)?),
        };
        // The training set as loaded, or this run's part of it (owned).
        let mut train = Cow::Borrowed(&loaded.train);
        let test = Arc::clone(&loaded.test);
        if cfg.data.max_train > 0 {
            train = Cow::Owned(train.head(cfg.data.max_train));
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
            train = Cow::Owned(train.subset(&kept));
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
        )?
        .with_kernels(kernels);
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
            &[&*train, &*test]
                .into_iter()
                .chain(&validation)
                .collect::<Vec<_>>(),
        );
        if let (lena_algo::StepSize::Rule(r), Model::Cnn(_)) = (&cfg.algorithm.step_size, model) {
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
        let alg: Box<dyn Algorithm> = match custom {
            Some(alg) => alg,
            None => cfg.algorithm.check_with(model.dim(), smooth)?,
        };
        let step_size = cfg.algorithm.step_size.resolve(smooth)?;
        let dim = model.dim();
        let batch = cfg.data.batch;
        let mut workers = alg.workers(m, dim, kernels);
        if !cfg.faults.loses_uploads() {
            for w in &mut workers {
                w.lossless();
            }
        }
        // Each node's rows: shared with a run of the same split where the training set is the
        // cache's own, else copied (every node's rows into one block: `Dataset::split`).
        let node_data = match (data, &train) {
            (Some(cache), Cow::Borrowed(_)) => cache.node_data(&loaded, &parts),
            _ => train.split(&parts).into_iter().map(Arc::new).collect(),
        };
        let workspaces = Arc::new(Workspaces::new(model, batch));
        let nodes: Vec<Node> = node_data
            .into_iter()
            .zip(workers)
            .enumerate()
            .map(|(i, (data, worker))| {
                let n = data.n_samples();
                let ws = Arc::clone(&workspaces);
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
                    rng: streams::Stream::new(seed, Purpose::Worker, i as u64),
                    draws: [0; 2],
                    faults: streams::stream(seed, Purpose::Faults, i as u64),
                    plan: Plan::default(),
                }
            })
            .collect();
        drop(train);
        drop(loaded);
        let mut server = alg.server(m, dim, kernels);
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
        let mut sim = Self {
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
            // Set below (`set_nodes_sum_rows`).
            node_rows: None,
            draws_ahead: true,
            summed: Vec::new(),
            summed_round: None,
            chunks: Vec::new(),
            chunks_done: Vec::new(),
            server,
            workspaces,
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
            kernels,
            pool,
            exchange: None,
            hosted: vec![true; m],
            fresh: true,
            wire: Vec::new(),
            data_digest,
            validation,
            cache: None,
            cfg,
        };
        sim.set_nodes_sum_rows(true);
        Ok(sim)
    }
}

/// The run's pool of `threads` threads (0: one per core), the calling thread one of them where
/// rayon lets it be.
///
/// PERF: a round's parallel phases are entered from the calling thread. From outside the pool,
/// each entry hands the work to a pool thread, wakes it and puts the caller to sleep until it
/// is done, twice per round (the nodes, then the server); a profile of DGD's round at M = 200
/// found a tenth of it in the kernel's scheduler. With the caller in the pool, it runs its share
/// itself and only the other threads are woken.
///
/// Rayon takes a thread into one pool only and never lets it go, so that pool is kept for the
/// thread's later simulations with the same thread count (a sweep's runs one after the other,
/// a test's simulations); a simulation asking for another count gets a pool of its own threads.
/// Results do not depend on which threads run the work.
fn run_pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>> {
    use std::sync::Arc;
    thread_local! {
        /// This thread's pool (with the thread count asked for), if it is one of its threads.
        static OWN: std::cell::RefCell<Option<(usize, Arc<rayon::ThreadPool>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let build = |current: bool| {
        let b = rayon::ThreadPoolBuilder::new().num_threads(threads);
        if current { b.use_current_thread() } else { b }.build()
    };
    let pool = OWN.with_borrow_mut(|own| match own {
        Some((n, pool)) if *n == threads => Ok(pool.clone()),
        Some(_) => build(false).map(Arc::new),
        None if rayon::current_thread_index().is_some() => build(false).map(Arc::new),
        None => match build(true) {
            Ok(pool) => {
                let pool = Arc::new(pool);
                *own = Some((threads, pool.clone()));
                Ok(pool)
            }
            Err(_) => build(false).map(Arc::new),
        },
    });
    pool.map_err(|e| Error::Config(format!("run.threads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::run_pool;
    use crate::{DataCache, ExperimentConfig, Simulation};
    use std::sync::Arc;

    /// Runs built from one cache while another run of the same split still lives share its
    /// nodes' datasets; another split, another seed or a cut training set gets its own; once
    /// no run holds a split, the next run of it cuts it anew.
    #[test]
    fn runs_of_the_same_split_share_their_nodes_data_while_one_holds_it() {
        let text = |split: &str, alg: &str, extra: &str| {
            format!(
                "[data]\nsplit = \"{split}\"\nnodes = 4\n{extra}\n[data.source]\n\
                 kind = \"synthetic\"\nsamples = 400\ntest_samples = 100\nfeatures = 5\n\
                 classes = 4\n[model]\nobjective = \"logistic_ova\"\n[algorithm]\n\
                 name = \"{alg}\"\nstep_size = 0.1\n[run]\niterations = 2\nseed = 3\n"
            )
        };
        let cache = DataCache::new();
        let build = |t: String| {
            let cfg = ExperimentConfig::from_toml(&t, "t.toml").unwrap();
            Simulation::with_data(cfg, &cache).unwrap()
        };
        let same = |x: &Simulation, y: &Simulation| {
            x.nodes
                .iter()
                .zip(&y.nodes)
                .all(|(p, q)| Arc::ptr_eq(&p.local.data, &q.local.data))
        };
        let a = build(text("one_label", "dgd", ""));
        let b = build(text("one_label", "lena", ""));
        assert!(same(&a, &b), "same split, another algorithm: shared");
        let c = build(text("iid", "dgd", ""));
        assert!(!same(&a, &c), "another split");
        let d = build(text("one_label", "dgd", "max_train = 300"));
        assert!(!same(&a, &d), "a cut training set");
        let e = build(text("one_label", "dgd", "").replace("seed = 3", "seed = 4"));
        assert!(!same(&a, &e), "another seed: other synthetic data");
        let weak = Arc::downgrade(&a.nodes[0].local.data);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "no run holds the split: freed");
        let f = build(text("one_label", "dgd", ""));
        let g = build(text("one_label", "dgd", ""));
        assert!(same(&f, &g));
    }

    /// A run's nodes share the model's scratch memory: on one thread every node's minibatch
    /// gradient and full-batch loss take turns in one workspace (each node kept its own).
    #[test]
    fn a_runs_nodes_take_turns_in_one_workspace_per_thread() {
        let text = "[data]\nsplit = \"iid\"\nnodes = 5\nbatch = 3\n[data.source]\n\
                    kind = \"synthetic\"\nsamples = 400\ntest_samples = 100\nfeatures = 5\n\
                    classes = 4\n[model]\nobjective = \"softmax\"\n[algorithm]\n\
                    name = \"lena\"\nstep_size = 0.1\n[run]\niterations = 4\nseed = 3\n\
                    threads = 1\n";
        let cfg = ExperimentConfig::from_toml(text, "t.toml").unwrap();
        let mut sim = Simulation::new(cfg).unwrap();
        for _ in 0..4 {
            sim.step().unwrap();
        }
        sim.evaluate();
        let first = &sim.nodes[0].local.ws;
        assert!(sim.nodes.iter().all(|n| Arc::ptr_eq(&n.local.ws, first)));
        let held: usize = first.free.iter().map(|l| l.lock().unwrap().len()).sum();
        assert_eq!(held, 1, "one thread, one workspace");
    }

    /// A run's evaluation of its starting parameters is kept in its cache and given to a later
    /// run of the same model, datasets and parameters, bit for bit what that run computes
    /// itself; other parameters (another seed's initialisation), another model or another
    /// split are evaluated anew, and a kept evaluation goes once its datasets do.
    #[test]
    fn start_evaluations_are_shared_by_runs_of_the_same_model_data_and_parameters() {
        let text = |split: &str, alg: &str, extra: &str| {
            format!(
                "[data]\nsplit = \"{split}\"\nnodes = 4\n[data.source]\nkind = \"synthetic\"\n\
                 samples = 400\ntest_samples = 100\nfeatures = 5\nclasses = 4\n[model]\n\
                 objective = \"softmax\"\n{extra}\n[algorithm]\nname = \"{alg}\"\n\
                 step_size = 0.1\n[run]\niterations = 2\nseed = 3\n"
            )
        };
        let cfg = |t: String| ExperimentConfig::from_toml(&t, "t.toml").unwrap();
        let cache = DataCache::new();
        let kept = |c: &DataCache| c.starts.lock().unwrap().len();
        let mut a = Simulation::with_data(cfg(text("one_label", "dgd", "")), &cache).unwrap();
        let ea = a.evaluate();
        assert_eq!(kept(&cache), 1);
        // Another algorithm, the same model, data and starting parameters: the kept one.
        let mut b = Simulation::with_data(cfg(text("one_label", "lena", "")), &cache).unwrap();
        let eb = b.evaluate();
        assert_eq!(kept(&cache), 1, "found, not evaluated again");
        let mut alone = Simulation::new(cfg(text("one_label", "lena", ""))).unwrap();
        let own = alone.evaluate();
        for (x, y) in [(ea, own), (eb, own)] {
            assert_eq!(
                (x.0.to_bits(), x.1.to_bits()),
                (y.0.to_bits(), y.1.to_bits())
            );
        }
        // Another model: evaluated anew.
        let mut c =
            Simulation::with_data(cfg(text("one_label", "dgd", "lambda = 0.5")), &cache).unwrap();
        c.evaluate();
        assert_eq!(kept(&cache), 2);
        // Other starting parameters (the same model and data): evaluated anew.
        let mut d = Simulation::with_data(cfg(text("one_label", "dgd", "")), &cache).unwrap();
        d.w[0] += 1.0;
        let ed = d.evaluate();
        assert_eq!(kept(&cache), 3);
        assert_ne!(ed.0.to_bits(), ea.0.to_bits());
        // Past round 0, nothing is kept or looked up.
        a.step().unwrap();
        a.evaluate();
        assert_eq!(kept(&cache), 3);
        // Once no run holds the datasets, their evaluations go.
        drop((a, b, c, d, alone));
        let mut e = Simulation::with_data(cfg(text("iid", "dgd", "")), &cache).unwrap();
        e.evaluate();
        assert_eq!(kept(&cache), 1, "only the new split's");
    }

    /// A fresh thread becomes its pool's first thread and keeps that pool for later runs of
    /// the same thread count; another count, or a thread already serving another pool, gets a
    /// pool of its own threads.
    #[test]
    fn a_thread_serves_one_pool_and_reuses_it() {
        std::thread::spawn(|| {
            assert_eq!(rayon::current_thread_index(), None);
            let a = run_pool(2).unwrap();
            assert_eq!(rayon::current_thread_index(), Some(0));
            assert_eq!(a.current_num_threads(), 2);
            let b = run_pool(2).unwrap();
            assert!(Arc::ptr_eq(&a, &b), "the thread's pool is reused");
            // The pool runs work on this thread itself, inside and outside `install`.
            assert_eq!(a.install(rayon::current_thread_index), Some(0));
            let c = run_pool(3).unwrap();
            assert!(!Arc::ptr_eq(&a, &c));
            assert_eq!(c.current_num_threads(), 3);
            assert_ne!(c.install(rayon::current_thread_index), None);
            // A pool's own worker asking for a pool gets one of its own threads.
            let d = c.install(|| run_pool(1).unwrap());
            assert_eq!(d.current_num_threads(), 1);
            assert_eq!(d.install(|| 1 + 1), 2);
        })
        .join()
        .unwrap();
    }
}
