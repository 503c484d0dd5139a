//! Evaluation: the nodes' full-batch losses, test and validation metrics, and the metrics row.

use super::state::encode_f32s;
use super::*;

impl Simulation {
    /// The full-batch loss of each node this process hosts.
    /// `w`: the parameters to evaluate at (default: this process's).
    pub(super) fn hosted_losses(&mut self, w: Option<&[f32]>) -> Vec<(usize, f64)> {
        let w = w.unwrap_or(&self.w);
        let model = self.model;
        let hosted = &self.hosted;
        self.pool.install(|| {
            self.nodes
                .par_iter_mut()
                .enumerate()
                .filter(|(m, _)| hosted[*m])
                .map(|(m, n)| {
                    let data = &n.local.data;
                    (m, n.local.ws.with(|ws| model.loss(data, Rows::All, w, ws)))
                })
                .collect()
        })
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
        let start = self.round == 0 && self.exchange.is_none();
        let (losses, acc) = match self.cache.as_ref().filter(|_| start).cloned() {
            Some(cache) => self.start_evaluation(&cache),
            None => self.losses_and_accuracy()?,
        };
        // Summed in node order, as in-process.
        Ok((losses.iter().sum::<f64>() / losses.len() as f64, acc))
    }

    /// Every node's full-batch loss and the test accuracy.
    fn losses_and_accuracy(&mut self) -> Result<(Vec<f64>, f64)> {
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
        let (w, model, test) = (&self.w, self.model, &self.test);
        let acc = self
            .pool
            .install(|| self.workspaces.with(|ws| model.accuracy(test, w, ws)));
        Ok((losses, acc))
    }

    /// [`Self::losses_and_accuracy`] of the starting parameters of an in-process run built
    /// with `cache`: another run of the cache may have evaluated the same ones already
    /// ([`DataCache`]'s start evaluations); if not, this one's is kept for the others.
    fn start_evaluation(&mut self, cache: &DataCache) -> (Vec<f64>, f64) {
        let nodes: Vec<Arc<Dataset>> = self.nodes.iter().map(|n| n.local.data.clone()).collect();
        if let Some(kept) = cache.start_evaluation(&self.start_key(&nodes)) {
            return kept;
        }
        let (losses, acc) = self
            .losses_and_accuracy()
            .expect("an in-process evaluation has no transport to fail");
        cache.keep_start_evaluation(self.start_key(&nodes).entry(losses.clone(), acc));
        (losses, acc)
    }

    /// What an evaluation of the current parameters over the datasets `nodes` (the nodes',
    /// in order) is of.
    fn start_key<'a>(&'a self, nodes: &'a [Arc<Dataset>]) -> build::StartKey<'a> {
        build::StartKey {
            model: &self.cfg.model,
            kernels: self.kernels.name(),
            nodes,
            test: &self.test,
            w: &self.w,
        }
    }

    /// Loss and accuracy on the validation set, if there is one.
    pub(super) fn evaluate_validation(&mut self) -> Option<(f64, f64)> {
        let val = self.validation.as_ref()?;
        let (w, model) = (&self.w, self.model);
        Some(self.pool.install(|| {
            self.workspaces.with(|ws| {
                let loss = model.loss(val, Rows::All, w, ws);
                (loss, model.accuracy(val, w, ws))
            })
        }))
    }

    /// Whether `c` holds now, computing only what it names: the validation or test metric
    /// alone (the server holds both sets, so no process is asked), a counter as it stands;
    /// any other column takes a full evaluation. A condition that holds here holds on the
    /// full row of the same round (the same parameters, the same arithmetic).
    pub(super) fn quick_check(&mut self, c: &crate::metrics::Condition) -> Result<bool> {
        let value = match c.column.as_str() {
            "val_loss" | "val_accuracy" => {
                let Some((loss, acc)) = self.evaluate_validation() else {
                    return Ok(false);
                };
                if c.column == "val_loss" { loss } else { acc }
            }
            "test_accuracy" => {
                let (w, model, test) = (&self.w, self.model, &self.test);
                self.pool
                    .install(|| self.workspaces.with(|ws| model.accuracy(test, w, ws)))
            }
            "iteration" => self.round as f64,
            "uploads" => self.counters.uploads as f64,
            "bits" => self.counters.bits as f64,
            "latency_seconds" => self.counters.latency,
            _ => return Ok(c.holds(&self.eval_row(Instant::now())?)),
        };
        Ok(c.holds_for(value))
    }

    pub(super) fn eval_row(&mut self, start: Instant) -> Result<MetricsRow> {
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
}
