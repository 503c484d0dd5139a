//! Lazily aggregated methods: LASG-WK2, LAQ, SASG and LAG-PS. A silent node's last
//! contribution is reused by the server.

use crate::gather::{Decoded, Terms};
use crate::{
    AGG_BLOCK, Algorithm, Broadcast, GradientOracle, Message, Result, Server, Upload, Uploads,
    Worker,
};
use lena_compress::{Compressor, dense, laq};
use lena_kernels::Kernels;
use lena_policy::trigger::{Decision, LazyRule, Normalisation, Trigger, TriggerCtx};
use rand::RngCore;
use rayon::prelude::*;
use std::sync::Arc;

/// What a stale-aggregation server stores per node and how a message updates it.
#[derive(Clone)]
pub(crate) enum Payload {
    /// The message is a dense gradient; the server applies `alpha g`.
    DenseGradient,
    /// LAQ: b-bit innovation against the stored quantized gradient; applies `alpha Q`.
    Laq { bits: u32 },
    /// SASG: an already scaled sparse update from a compressor; applies it as is.
    Update(Arc<dyn Compressor>),
    /// Compressed LAG: a compressed innovation added to the stored gradient; applies
    /// `alpha g_hat`.
    Innovation(Arc<dyn Compressor>),
}

/// Keeps each node's last contribution and applies `w -= (1/M) sum_m scale * last_m`
/// (LAG-WK, LAG-PS, LASG-WK2, LAQ, SASG).
///
/// INVARIANT: a dense gradient is applied as fl(alpha g) summed in node order, then scaled by
/// -1/M, as DGD's server does, so a zero threshold reproduces DGD bit for bit.
pub(crate) struct StaleServer {
    payload: Payload,
    alpha: f32,
    n_workers: usize,
    dim: usize,
    /// Dense gradients: each node's last gradient, block-major (for each block of
    /// `AGG_BLOCK` coordinates, every node's piece in turn, as LENA's drifts), replaced from
    /// the messages inside the block sums. Empty for the other payloads, and after
    /// `Server::lossless` (then read from each node's last upload).
    dense_last: Vec<f32>,
    /// Dense gradients read from the nodes' last uploads (after `Server::lossless`).
    aliased: bool,
    /// Other payloads: each node's last contribution (updated in parallel over the round's
    /// senders). No nodes for dense gradients.
    last: Decoded,
    sum: Vec<f32>,
    kernels: Kernels,
}

impl StaleServer {
    pub(crate) fn new(payload: Payload, alpha: f32, n_workers: usize, dim: usize) -> Self {
        let dense = matches!(payload, Payload::DenseGradient);
        Self {
            payload,
            alpha,
            n_workers,
            dim,
            dense_last: if dense {
                vec![0.0; n_workers * dim]
            } else {
                Vec::new()
            },
            aliased: false,
            last: Decoded::new(if dense { 0 } else { n_workers }, dim),
            sum: vec![0.0; dim],
            kernels: Kernels::detect(),
        }
    }

    /// Dense gradients in one pass per block: a sender's piece is replaced from its message
    /// and every node's piece is added as fl(alpha g), in node order.
    ///
    /// PERF: no separate decode pass (a copy of every upload) before the sums.
    fn apply_dense(&mut self, round: u64, w: &mut [f32], uploads: &Uploads<'_>) -> Result<()> {
        for (node, msg) in uploads.iter().enumerate() {
            if let Some(msg) = msg {
                dense::check(msg, self.dim).map_err(|source| crate::Error::Decode {
                    round,
                    node,
                    source,
                })?;
            }
        }
        let (k, n, a, inv_m) = (
            self.kernels,
            self.n_workers,
            self.alpha,
            -1.0 / self.n_workers as f32,
        );
        if self.aliased {
            crate::apply_by_blocks(k, &mut self.sum, w, inv_m, |off, sum| {
                // fl(a g) rounded before the sum, in node order, as DGD's server does.
                crate::sum_last_uploads(k, a, sum, uploads, off, 0);
            });
            return Ok(());
        }
        self.dense_last
            .par_chunks_mut(AGG_BLOCK * n)
            .zip(self.sum.par_chunks_mut(AGG_BLOCK))
            .zip(w.par_chunks_mut(AGG_BLOCK))
            .enumerate()
            .for_each(|(b, ((last, sum), w))| {
                let (off, width) = (b * AGG_BLOCK, sum.len());
                sum.fill(0.0);
                // fl(a g) rounded before the sum, in node order, as DGD's server does.
                let mut rows = crate::RowSum::new(k, a, sum);
                for (m, g) in last.chunks_exact_mut(width).enumerate() {
                    if let Some(msg) = uploads.get(m) {
                        dense::decode_at(msg, off, g);
                    }
                    rows.push(g);
                }
                rows.finish();
                k.axpy(inv_m, sum, w);
            });
        Ok(())
    }
}

impl Server for StaleServer {
    fn apply(&mut self, round: u64, w: &mut [f32], uploads: Uploads<'_>) -> Result<()> {
        uploads.expect_len(self.n_workers)?;
        if matches!(self.payload, Payload::DenseGradient) {
            return self.apply_dense(round, w, &uploads);
        }
        let payload = &self.payload;
        self.last
            .decode(round, &uploads, |msg, last, _| match payload {
                Payload::DenseGradient => unreachable!("dense gradients are applied above"),
                Payload::Laq { bits } => laq::decode(msg, *bits, last),
                Payload::Update(c) => c.decode(msg, last),
                Payload::Innovation(c) => crate::with_gradient_buffer(last.len(), |v| {
                    c.decode(msg, v)?;
                    Kernels::detect().axpy(1.0, v, last);
                    Ok(())
                }),
            })?;
        let terms = match self.payload {
            Payload::Update(_) => Terms::All,
            _ => Terms::AllScaled(self.alpha),
        };
        let (k, inv_m) = (self.kernels, -1.0 / self.n_workers as f32);
        self.last
            .sum_blocks(k, &uploads, terms, &mut self.sum, w, None, |sum, w, _| {
                k.axpy(inv_m, sum, w)
            });
        Ok(())
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.f32s(&mut self.dense_last);
        self.last.visit(v);
    }

    /// Dense gradients: a node's last gradient is its last upload, read from there (a vector
    /// of d less per node, and no copy per upload).
    fn lossless(&mut self) {
        if matches!(self.payload, Payload::DenseGradient) {
            self.aliased = true;
            self.dense_last = Vec::new();
        }
    }
}

/// Upload-age bookkeeping every lazy worker shares.
struct Steps {
    since_upload: u64,
}

impl Steps {
    fn new() -> Self {
        Self { since_upload: 0 }
    }

    /// The context for this round; `innovation_sq` and `threshold_offset` are filled by the caller.
    fn ctx(&mut self, bc: &Broadcast<'_>, alpha: f32, m: usize) -> TriggerCtx {
        self.since_upload += 1;
        TriggerCtx {
            round: bc.round,
            since_upload: self.since_upload,
            param_step_sq: bc.step_sq,
            step_size: f64::from(alpha),
            n_workers: m,
            ..TriggerCtx::default()
        }
    }
}

/// LASG-WK2 (Chen, Sun, Yin 2020), stochastic LAG: each node evaluates its gradient at `w^t`
/// and at its last upload point on the same fresh minibatch, and skips iff the squared
/// difference is at most `c / (alpha^2 M^2) sum_{d<=D} ||dw_d||^2`; an upload is forced once
/// `max_staleness` rounds passed. Server: `w -= (alpha / M) sum_m g_hat_m` over the last
/// gradients received. One upload: the fresh gradient, dense f32. Two gradients per round.
///
/// A missing upload (faults): the server keeps the node's last gradient until the next upload
/// replaces it.
pub struct LasgWk2 {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight c of the history sum.
    pub c: f64,
    /// Forced upload after this many rounds (authors' default 50).
    pub max_staleness: u64,
}

impl Algorithm for LasgWk2 {
    fn name(&self) -> String {
        "LASG-WK2".into()
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                let rule = LazyRule::new(
                    self.depth,
                    self.c,
                    Normalisation::Alpha2M2,
                    Some(self.max_staleness),
                )
                .expect("checked");
                Box::new(TwoPointWorker {
                    alpha: self.step_size,
                    m: n_workers,
                    rule: Box::new(rule),
                    steps: Steps::new(),
                    w_hat: vec![0.0; dim],
                    sparse: None,
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::DenseGradient,
            self.step_size,
            n_workers,
            dim,
        ))
    }
}

/// SASG's sparse upload state: error feedback around top-k, and the last vector sent.
struct Sparse {
    c: Arc<dyn Compressor>,
    e: Vec<f32>,
    /// The last vector sent, kept to take it back if lost (empty in a lossless run).
    v_prev: Vec<f32>,
}

/// A node that compares gradients at two points on one minibatch (LASG-WK2, SASG).
pub struct TwoPointWorker {
    alpha: f32,
    m: usize,
    rule: Box<dyn Trigger>,
    steps: Steps,
    w_hat: Vec<f32>,
    sparse: Option<Sparse>,
    kernels: Kernels,
}

impl Worker for TwoPointWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let (round, w) = (bc.round, bc.w);
        let k = self.kernels;
        // PERF: both gradients, SASG's m and (in a lossless run) the vector it sends live for
        // the round only, in per-thread buffers.
        crate::with_buffers(w.len(), |[g, g_old, m, sent]| {
            oracle.gradient(w, g);
            let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
            if round > 0 {
                oracle.gradient_same_batch(&self.w_hat, g_old);
                ctx.innovation_sq = f64::from(k.dist2_sq(g, g_old));
            }
            let up = self.rule.decide(&ctx) == Decision::Upload;
            match (&mut self.sparse, up) {
                (None, true) => dense::encode(g, msg),
                (None, false) => {}
                (Some(s), true) => {
                    // m = e + alpha g; v = C(m); e = m - v.
                    let v = if s.v_prev.is_empty() {
                        sent
                    } else {
                        &mut s.v_prev[..]
                    };
                    m.copy_from_slice(&s.e);
                    k.axpy(self.alpha, g, m);
                    s.c.compress(m, rng, v, msg);
                    k.ef_update(&mut s.e, self.alpha, g, v);
                }
                // Silent: the server reuses v_prev in place of this round's gradient (the LAG
                // approximation); the memory is untouched. Charging the reuse to the memory
                // instead re-applies an error-feedback sum up to max_staleness times and
                // diverges (measured in the crate's tests before this choice).
                (Some(_), false) => {}
            }
            if up {
                self.w_hat.copy_from_slice(w);
                self.steps.since_upload = 0;
                Upload::Sent
            } else {
                Upload::Skipped
            }
        })
    }

    /// SASG: the sparse vector never arrived, so it goes back into the memory. (The server
    /// keeps reusing its older vector; LASG's dense uploads carry no state to restore, and the
    /// next upload replaces the server's copy either way.)
    fn on_lost(&mut self, _msg: &Message) {
        if let Some(s) = &mut self.sparse {
            assert!(!s.v_prev.is_empty(), "on_lost in a run declared lossless");
            self.kernels.axpy(1.0, &s.v_prev, &mut s.e);
        }
    }

    /// SASG keeps the vector it sent only to take it back if lost.
    fn lossless(&mut self) {
        if let Some(s) = &mut self.sparse {
            s.v_prev = Vec::new();
        }
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(self.rule.as_mut());
        v.f32s(&mut self.w_hat);
        if let Some(s) = &mut self.sparse {
            v.f32s(&mut s.e);
            v.f32s(&mut s.v_prev);
        }
    }
}

/// SASG (Deng et al.): LASG-WK2's rule with a forced upload after `max_staleness` silent
/// rounds; an upload sends `TopK(alpha g + e)` with k a fraction of d (default 1%) and keeps
/// the rest in `e`; the server reuses a silent node's last sparse vector in place of its
/// gradient, as LAG does. Error feedback acts at uploads only, so over the rounds in which a
/// node uploads, `sum of sent vectors + e = sum of alpha g` holds exactly; a silent round's
/// gradient is replaced by the stale vector, not accumulated.
/// The threshold's normalisation is explicit ([`Normalisation`]); the authors' scripts use
/// `2 alpha M^2` and `alpha M^2`. One upload: top-k indices and values.
///
/// A missing upload (faults): the server reuses the node's last sparse vector; the node puts
/// the undelivered one back into its memory.
pub struct Sasg {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight of the history sum.
    pub xi: f64,
    /// Threshold normalisation.
    pub normalisation: Normalisation,
    /// Forced upload after this many rounds (default D = 10).
    pub max_staleness: u64,
    /// The sparsifier (top-k).
    pub compressor: Arc<dyn Compressor>,
}

impl Sasg {
    /// A SASG node with an explicit trigger (tests script trigger outcomes with it).
    pub fn worker_with(
        &self,
        n_workers: usize,
        dim: usize,
        trigger: Box<dyn Trigger>,
    ) -> TwoPointWorker {
        TwoPointWorker {
            alpha: self.step_size,
            m: n_workers,
            rule: trigger,
            steps: Steps::new(),
            w_hat: vec![0.0; dim],
            sparse: Some(Sparse {
                c: self.compressor.clone(),
                e: vec![0.0; dim],
                v_prev: vec![0.0; dim],
            }),
            kernels: Kernels::detect(),
        }
    }
}

impl TwoPointWorker {
    /// The error-feedback memory (SASG), or `None` (LASG sends whole gradients).
    pub fn memory(&self) -> Option<&[f32]> {
        self.sparse.as_ref().map(|s| s.e.as_slice())
    }

    /// The update the server applies for this node (SASG: the last sparse vector).
    pub fn applied(&self) -> Option<&[f32]> {
        self.sparse.as_ref().map(|s| s.v_prev.as_slice())
    }
}

impl Algorithm for Sasg {
    fn name(&self) -> String {
        "SASG".into()
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                let rule = LazyRule::new(
                    self.depth,
                    self.xi,
                    self.normalisation,
                    Some(self.max_staleness),
                )
                .expect("checked");
                Box::new(self.worker_with(n_workers, dim, Box::new(rule))) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::Update(self.compressor.clone()),
            self.step_size,
            n_workers,
            dim,
        ))
    }
}

/// LAQ (Sun et al., NeurIPS 2019): lazily aggregated quantized gradients.
///
/// Node: `R = ||g - Qhat||_inf`, `delta = R / (2^b - 1)`,
/// `Q = Qhat - R + 2 delta floor((g - Qhat + R + delta) / (2 delta))`; upload iff
/// `||Q - Qhat||^2 > (1 / (alpha^2 M^2)) sum_d xi ||dw_d||^2 + 3 (||eps||^2 + ||eps_hat||^2)`
/// (eps = g - Q now, eps_hat at the last upload) or the clock reaches C. Defaults from the
/// authors' code: b = 4, D = 10, xi = 0.8 / D, C = 100. One upload: R as f32 and b bits per
/// coordinate (32 + b d bits). Server: `w -= (alpha / M) sum_m Qhat_m`.
///
/// A missing upload (faults): the server keeps its quantized gradient; the node, told, restores
/// its Qhat.
pub struct Laq {
    /// Step size alpha.
    pub step_size: f32,
    /// Bits per coordinate b.
    pub bits: u32,
    /// History depth D.
    pub depth: usize,
    /// Weight xi of each history term.
    pub xi: f64,
    /// Clock C: forced upload after this many rounds.
    pub clock: u64,
}

impl Algorithm for Laq {
    fn name(&self) -> String {
        format!("LAQ-{}", self.bits)
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(LaqWorker {
                    alpha: self.step_size,
                    bits: self.bits,
                    m: n_workers,
                    rule: LazyRule::new(
                        self.depth,
                        self.xi,
                        Normalisation::Alpha2M2,
                        Some(self.clock),
                    )
                    .expect("checked"),
                    steps: Steps::new(),
                    qhat: vec![0.0; dim],
                    // Allocated at the first upload unless the run is lossless.
                    qhat_prev: Vec::new(),
                    keep_prev: true,
                    eps_hat_sq: 0.0,
                    eps_hat_prev: 0.0,
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::Laq { bits: self.bits },
            self.step_size,
            n_workers,
            dim,
        ))
    }
}

struct LaqWorker {
    alpha: f32,
    bits: u32,
    m: usize,
    rule: LazyRule,
    steps: Steps,
    qhat: Vec<f32>,
    /// Qhat before the last upload, to undo it if lost (empty in a lossless run).
    qhat_prev: Vec<f32>,
    /// Whether `qhat_prev` is kept (false after `Worker::lossless`).
    keep_prev: bool,
    eps_hat_sq: f64,
    eps_hat_prev: f64,
    kernels: Kernels,
}

impl Worker for LaqWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        _rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        let k = self.kernels;
        // PERF: the gradient, its quantization and the levels live for the round only, in
        // per-thread buffers (three vectors of d less per node).
        crate::with_buffers(w.len(), |[g, q]| {
            crate::with_levels_buffer(w.len(), |levels| {
                oracle.gradient(w, g);
                let r = laq::quantize(g, &self.qhat, self.bits, levels, q);
                let eps_sq = f64::from(k.dist2_sq(g, q));
                let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
                ctx.innovation_sq = f64::from(k.dist2_sq(q, &self.qhat));
                ctx.threshold_offset = 3.0 * (eps_sq + self.eps_hat_sq);
                if self.rule.decide(&ctx) == Decision::Skip {
                    return Upload::Skipped;
                }
                laq::encode(r, levels, self.bits, msg);
                if self.keep_prev {
                    // The previous Qhat is kept in case this upload is lost.
                    self.qhat_prev.resize(self.qhat.len(), 0.0);
                    std::mem::swap(&mut self.qhat, &mut self.qhat_prev);
                }
                self.qhat.copy_from_slice(q);
                self.eps_hat_prev = std::mem::replace(&mut self.eps_hat_sq, eps_sq);
                self.steps.since_upload = 0;
                Upload::Sent
            })
        })
    }

    /// The server's Qhat did not move: neither does the node's.
    fn on_lost(&mut self, _msg: &Message) {
        assert!(self.keep_prev, "on_lost in a run declared lossless");
        std::mem::swap(&mut self.qhat, &mut self.qhat_prev);
        self.eps_hat_sq = self.eps_hat_prev;
    }

    fn lossless(&mut self) {
        self.keep_prev = false;
        self.qhat_prev = Vec::new();
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(&mut self.rule);
        v.f32s(&mut self.qhat);
        if self.keep_prev {
            // The same length whether saved before or after the first upload.
            self.qhat_prev.resize(self.qhat.len(), 0.0);
        }
        v.f32s(&mut self.qhat_prev);
        v.f64(&mut self.eps_hat_sq);
        v.f64(&mut self.eps_hat_prev);
    }
}

/// LAG-PS (Chen et al. 2018), the server-side rule: node m is asked for a gradient only when
/// `L_m^2 ||w_hat_m - w^t||^2 > (1 / (alpha^2 M^2)) sum_{d=1..D} xi ||dw_d||^2` (xi = 1 in the
/// authors' code), `w_hat_m` its last upload point and `L_m` its local smoothness constant.
/// The rule needs only quantities the node also has, so the node evaluates it and the outcome
/// is the server's decision; a skipped node computes no gradient at all. A node whose oracle
/// knows no smoothness constant uploads every round. One upload: the
/// gradient, dense f32.
///
/// A missing upload (faults): the server keeps the node's last gradient until the next upload
/// replaces it.
pub struct LagPs {
    /// Step size alpha.
    pub step_size: f32,
    /// History depth D.
    pub depth: usize,
    /// Weight xi.
    pub xi: f64,
}

impl Algorithm for LagPs {
    fn name(&self) -> String {
        "LAG-PS".into()
    }

    fn workers(&self, n_workers: usize, dim: usize) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                Box::new(LagPsWorker {
                    alpha: self.step_size,
                    m: n_workers,
                    rule: LazyRule::new(self.depth, self.xi, Normalisation::Alpha2M2, None)
                        .expect("checked"),
                    steps: Steps::new(),
                    g: Vec::new(),
                    w_hat: vec![0.0; dim],
                    kernels: Kernels::detect(),
                }) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::DenseGradient,
            self.step_size,
            n_workers,
            dim,
        ))
    }
}

struct LagPsWorker {
    alpha: f32,
    m: usize,
    rule: LazyRule,
    steps: Steps,
    /// Used only where the message buffer cannot be written as f32 (big-endian, misaligned).
    g: Vec<f32>,
    w_hat: Vec<f32>,
    kernels: Kernels,
}

impl Worker for LagPsWorker {
    fn step(
        &mut self,
        bc: &Broadcast<'_>,
        oracle: &mut dyn GradientOracle,
        _rng: &mut dyn RngCore,
        msg: &mut Message,
    ) -> Upload {
        let w = bc.w;
        let k = self.kernels;
        // Without a smoothness constant the rule cannot be evaluated safely: upload every round.
        let l = oracle.smoothness().unwrap_or(f64::INFINITY);
        let mut ctx = self.steps.ctx(bc, self.alpha, self.m);
        ctx.innovation_sq = l * l * f64::from(k.dist2_sq(&self.w_hat, w));
        if self.rule.decide(&ctx) == Decision::Skip {
            return Upload::Skipped;
        }
        // PERF: the gradient is computed straight into the upload.
        dense::encode_with(msg, w.len(), &mut self.g, |g| oracle.gradient(w, g));
        self.w_hat.copy_from_slice(w);
        self.steps.since_upload = 0;
        Upload::Sent
    }

    fn visit(&mut self, v: &mut dyn crate::state::Visitor) {
        v.u64(&mut self.steps.since_upload);
        v.trigger(&mut self.rule);
        v.f32s(&mut self.w_hat);
    }
}
