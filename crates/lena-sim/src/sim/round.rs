//! One round and the run: faults drawn, nodes stepped in parallel, uploads counted and delivered,
//! the server's update; evaluations on schedule.

use super::remote::receive_upload;
use super::state::encode_f32s;
use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

impl Simulation {
    /// Draws every node's faults for this round from its own stream (before any node steps,
    /// in node order, so the pattern depends only on the seed and is the same whatever the
    /// algorithm).
    pub(super) fn plan_faults(&mut self) {
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
        let mut uploads = Uploads::new(&self.msgs, &self.delivered);
        // The node phase's sum holds for the rows delivered, which are the rows sent (a run
        // that loses no upload).
        if self.summed_round == Some(round) && self.delivered == self.sent {
            uploads = uploads.with_sum(&self.summed);
        }
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

    /// The nodes' part of a round: faults drawn, then every hosted node steps (in parallel).
    pub(super) fn node_phase(&mut self, round: u64) {
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
        // Fewer than four streams a vector (the scalar path) would be drawn one at a time: no
        // gain, so no draw-ahead and no chunks for it.
        let draws_ahead = self.draws_ahead && k.xoshiro256pp_width() >= 4;
        let step_node =
            |m: usize, node: &mut Node, msg: &mut Message, sent: &mut bool, words: &[u64]| {
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
                    node.worker.on_absent(plan.absent, msg);
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
                let mut rng = streams::Ahead::new(&mut node.rng, words);
                let up = node.worker.step(bc, &mut node.local, &mut rng, msg);
                node.draws = [node.draws[1], rng.finish()];
                *sent = up == Upload::Sent;
            };
        // PERF: a chunk's nodes that will step and drew as many words at each of their last two
        // steps have as many drawn ahead, their streams side by side in a vector's lanes: a
        // stream alone is one serial chain (DIANA-QSGD's draws were a fifth of its round at
        // M = 200). The words are each stream's own, and a node that takes fewer leaves the
        // rest to be stepped back.
        let step_chunk =
            |base: usize, nodes: &mut [Node], msgs: &mut [Message], sent: &mut [bool]| {
                let ahead = |m: usize, node: &Node| {
                    draws_ahead && hosted[m] && !node.plan.offline && node.words_ahead() > 0
                };
                let mut lanes = [usize::MAX; LANES];
                let (mut count, mut n) = (0, usize::MAX);
                for (i, node) in nodes.iter().enumerate() {
                    if count < LANES && ahead(base + i, node) {
                        lanes[count] = i;
                        count += 1;
                        n = n.min(node.words_ahead());
                    }
                }
                let mut words = AHEAD.take();
                // Fewer streams than a vector of four would be drawn one at a time: no gain.
                if count >= 4 {
                    let mut states = [[0u64; 4]; LANES];
                    for (s, &i) in states.iter_mut().zip(&lanes[..count]) {
                        *s = *nodes[i].rng.state_mut();
                    }
                    words.resize(count * n, 0);
                    k.xoshiro256pp_lanes(&mut states[..count], &mut words);
                    for (s, &i) in states.iter().zip(&lanes[..count]) {
                        *nodes[i].rng.state_mut() = *s;
                    }
                } else {
                    count = 0;
                }
                let mut lane = 0;
                for (i, (msg, sent)) in msgs.iter_mut().zip(sent.iter_mut()).enumerate() {
                    let mine: &[u64] = if lane < count && lanes[lane] == i {
                        lane += 1;
                        &words[(lane - 1) * n..lane * n]
                    } else {
                        &[]
                    };
                    // The next node's rows requested while this one steps (a hint).
                    if let Some(next) = nodes.get(i + 1)
                        && hosted[base + i + 1]
                        && !next.plan.offline
                    {
                        next.local.prefetch_next_batch();
                    }
                    step_node(base + i, &mut nodes[i], msg, sent, mine);
                }
                AHEAD.set(words);
            };
        let (nodes, msgs, sent) = (&mut self.nodes, &mut self.msgs, &mut self.sent);
        self.summed_round = None;
        let threads = self.pool.current_num_threads();
        if let (Some(rows), None) = (self.node_rows.clone(), &self.exchange) {
            self.summed.fill(0.0);
            // PERF: last round's allocation, so that a round allocates nothing.
            let mut chunks: Vec<Mutex<ChunkRefs<'_>>> = recycle(std::mem::take(&mut self.chunks));
            chunks.extend(
                nodes
                    .chunks_mut(SUM_CHUNK)
                    .zip(msgs.chunks_mut(SUM_CHUNK))
                    .zip(sent.chunks_mut(SUM_CHUNK))
                    .map(|((n, m), s)| Mutex::new((n, m, s))),
            );
            self.chunks_done
                .resize_with(chunks.len(), AtomicBool::default);
            let chain = Chain::new(k, rows, chunks, &self.chunks_done, &mut self.summed);
            self.pool.install(|| {
                (0..threads).into_par_iter().for_each(|_| {
                    while let Some((c, mut chunk)) = chain.claim() {
                        let (nodes, msgs, sent) = &mut *chunk;
                        step_chunk(c * SUM_CHUNK, nodes, msgs, sent);
                        // Released before its rows are added (by this thread or another).
                        drop(chunk);
                        chain.done(c);
                    }
                });
            });
            let (chunks, whole) = chain.finish();
            self.chunks = recycle(chunks);
            // Never short: the server sums the rows itself otherwise.
            self.summed_round = whole.then_some(round);
            return;
        }
        // Chunks of up to LANES nodes, at least four per thread, where some node has words
        // drawn ahead; one node a task otherwise (chunks of 8 made LAQ's round at M = 200
        // 5-7% slower: the threads' shares of uneven nodes balance less well).
        let drawing = draws_ahead && nodes.iter().any(|n| n.words_ahead() > 0);
        let chunk = if drawing {
            (nodes.len() / (4 * threads)).clamp(1, LANES)
        } else {
            1
        };
        self.pool.install(|| {
            nodes
                .par_chunks_mut(chunk)
                .zip(msgs.par_chunks_mut(chunk))
                .zip(sent.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(c, ((nodes, msgs), sent))| step_chunk(c * chunk, nodes, msgs, sent));
        });
    }

    /// Counts the round's uploads and bits, decides which uploads arrive, and advances the
    /// clock. Lost and late uploads were transmitted: they cost bits and time.
    pub(super) fn account(&mut self, round: u64) {
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

/// Nodes per task of a node phase that also sums the server's rows ([`Chain`]).
const SUM_CHUNK: usize = 8;

/// Most streams whose words are drawn ahead together (a vector of eight 64-bit lanes).
const LANES: usize = 8;

/// A node whose last two steps drew fewer words has none drawn ahead (too few to gain).
const MIN_AHEAD: usize = 64;

std::thread_local! {
    /// The words drawn ahead for a chunk's nodes, reused (taken while in use, so that a
    /// nested node phase on the same thread finds it empty rather than borrowed).
    static AHEAD: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Node {
    /// The words to draw ahead for this node's next step: as many as each of its last two
    /// steps drew, if they drew the same and at least [`MIN_AHEAD`]; else 0.
    fn words_ahead(&self) -> usize {
        match self.draws {
            [a, b] if a == b && b >= MIN_AHEAD => b,
            _ => 0,
        }
    }
}

/// One task's nodes, message buffers and sent flags.
pub(super) type ChunkRefs<'a> = (&'a mut [Node], &'a mut [Message], &'a mut [bool]);

/// `v`'s allocation, emptied, for elements of another type of the same size and alignment
/// (the standard library collects a vector's `into_iter` in place; `tests/alloc.rs` checks).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// The rows a server sums that the node phase may sum for it.
#[derive(Clone, Debug)]
pub(super) enum NodeRows {
    /// [`lena_algo::Server::dense_rows`].
    Dense(lena_algo::DenseRows),
    /// [`lena_algo::Server::level_rows`].
    Levels(lena_algo::LevelRows),
}

/// A node phase that forms the server's sum of dense rows ([`lena_algo::Server::dense_rows`])
/// or level rows ([`lena_algo::Server::level_rows`]) as it goes, so that the server reads no
/// message again (PERF: DGD's server at M = 200 read 6.3 MB of gradients back from L3; LENA-m's
/// at M = 60 000 read 1.9 GB of drifts from memory; DIANA's decoded every upload after the
/// node phase, half of them written by the other core, and summed fields the other core had
/// decoded: its round at M = 200 took 1.98-2.14 ms that way, 1.95-1.98 now, on an Intel Xeon).
/// Level rows are decoded by the thread that adds them, which is usually the one that just
/// encoded them, while the other thread steps the next chunk.
///
/// The nodes are stepped in chunks of [`SUM_CHUNK`], claimed in node order by the pool's
/// threads. A chunk's rows are added once every earlier chunk's are, by whichever thread then
/// holds the sum: usually the one that just stepped it, with the rows still in its cache. Each
/// coordinate's sum runs from +0.0 over the nodes in node order, as the server's own does, so
/// the floats are the server's whatever the threads or the order chunks finish in.
struct Chain<'a> {
    k: Kernels,
    rows: NodeRows,
    chunks: Vec<Mutex<ChunkRefs<'a>>>,
    /// Chunk c has been stepped.
    done: &'a [AtomicBool],
    /// The next chunk to claim.
    next: AtomicUsize,
    /// The next chunk to add, the sum so far, and whether an upload failed to decode (the
    /// sum is then left to the server, which reports it).
    sum: Mutex<(usize, &'a mut [f32], bool)>,
}

impl<'a> Chain<'a> {
    fn new(
        k: Kernels,
        rows: NodeRows,
        chunks: Vec<Mutex<ChunkRefs<'a>>>,
        done: &'a [AtomicBool],
        sum: &'a mut [f32],
    ) -> Self {
        for d in done {
            d.store(false, Ordering::Relaxed);
        }
        Self {
            k,
            rows,
            done,
            chunks,
            next: AtomicUsize::new(0),
            sum: Mutex::new((0, sum, false)),
        }
    }

    /// The next chunk in node order, to be stepped and then reported [`Chain::done`].
    fn claim(&self) -> Option<(usize, std::sync::MutexGuard<'_, ChunkRefs<'a>>)> {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        let chunk = self.chunks.get(c)?;
        Some((c, chunk.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    /// Chunk c has been stepped (its guard dropped): adds every chunk whose turn has come,
    /// unless another thread is adding them already.
    fn done(&self, c: usize) {
        self.done[c].store(true, Ordering::SeqCst);
        self.drain();
    }

    /// Adds whatever chunks are left (after every chunk has been stepped); gives the chunks'
    /// vector back for the next round, and whether the sum is whole (every chunk added).
    fn finish(self) -> (Vec<Mutex<ChunkRefs<'a>>>, bool) {
        self.drain();
        let (added, _, failed) = *self.sum.lock().unwrap_or_else(PoisonError::into_inner);
        let whole = added == self.chunks.len() && !failed;
        (self.chunks, whole)
    }

    fn drain(&self) {
        loop {
            let Ok(mut held) = self.sum.try_lock() else {
                // The holder adds this chunk too, or the next drain does.
                return;
            };
            let (next, sum, failed) = &mut *held;
            while !*failed && *next < self.chunks.len() && self.done[*next].load(Ordering::SeqCst) {
                let chunk = self.chunks[*next]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let (_, msgs, sent) = &*chunk;
                let nodes = || msgs.iter().zip(sent.iter().copied());
                match &self.rows {
                    NodeRows::Dense(rows) => {
                        let d = sum.len();
                        for off in (0..d).step_by(lena_algo::DenseRows::WIDTH) {
                            let end = (off + lena_algo::DenseRows::WIDTH).min(d);
                            rows.add(self.k, &mut sum[off..end], off, nodes());
                        }
                    }
                    NodeRows::Levels(rows) => {
                        *failed = rows.add(self.k, sum, nodes()).is_err();
                    }
                }
                *next += 1;
            }
            let (next, failed) = (*next, *failed);
            drop(held);
            // A chunk reported while this thread held the sum is added by the next holder.
            if failed || next >= self.chunks.len() || !self.done[next].load(Ordering::SeqCst) {
                return;
            }
        }
    }
}
