//! The checkpoint state: every node's and the server's state walked in one order, saved to bytes
//! and loaded back with every length, index and invariant checked.

use super::*;

/// First bytes of a checkpoint.
pub(super) const MAGIC: &[u8; 8] = b"LENACKP1";

pub(super) fn rng_state<R>(v: &mut dyn Visitor, rng: &mut R)
where
    R: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let mut bytes = serde_json::to_vec(rng).expect("a xoshiro state serialises");
    v.bytes(&mut bytes);
    // An all-zero state would stay zero: never written, so damage.
    let dead: R = serde_json::from_str(r#"{"s":[0,0,0,0]}"#).expect("the zero state parses");
    match serde_json::from_slice::<R>(&bytes) {
        Ok(r) if r != dead => *rng = r,
        _ => v.fail("checkpoint: a random stream's state does not parse".into()),
    }
}

/// One node's part of the state walk (a checkpoint's node section).
pub(super) fn visit_node(
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
pub(super) fn encode_f32s(w: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.extend(w.iter().flat_map(|x| x.to_le_bytes()));
}

/// Little-endian bytes into parameters of the expected length.
pub(super) fn decode_f32s(bytes: &[u8], w: &mut [f32]) -> std::result::Result<(), String> {
    if bytes.len() != 4 * w.len() {
        return Err(format!("{} bytes, expected {}", bytes.len(), 4 * w.len()));
    }
    for (x, b) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

impl Simulation {
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
    pub(super) fn fetch_node_states(&mut self) -> Result<()> {
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
    pub(super) fn check_loaded(&self) -> std::result::Result<(), String> {
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
    pub(super) fn fingerprint(&self) -> Vec<u8> {
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

    pub(super) fn visit(&mut self, v: &mut dyn Visitor) {
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
}
