//! LENA: self-triggered uploads with error feedback and a drift for silent nodes
//! (AISTATS 2021; ALGORITHMS.md).
//!
//! This file: the parameters, the validated [`Lena`] and the upload [`Layout`]; the node is in
//! `worker.rs`, the server in `server.rs`.

mod server;
mod worker;

pub use server::LenaServer;
pub use worker::LenaWorker;

use crate::params::{check_step, compressor, contractive};
use crate::{Algorithm, Error, Message, Result, Server, Worker};
use lena_compress::{Compressor, CompressorParams, dense};
use lena_kernels::Kernels;
use lena_policy::drift::DriftKind;
use lena_policy::trigger::{ReferenceNorm, Significance};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// LENA's parameters.
///
/// Update, node m, round t (paper notation; `e` memory, `v` applied update, `q` drift):
/// `u = e + alpha g`; upload iff `||u - v_prev||^2 >= beta * R` (the significance filter, R the
/// [`ReferenceNorm`]), confirmed `confirm` times; on upload `v = u`, new `q`, send `v` (and
/// `q` unless the server rebuilds it); otherwise `v = q`, nothing sent; `e = u - v`.
/// Server: `w^{t+1} = w^t - (1/M) sum_m v_m`.
///
/// One upload: `v` as dense f32 (32 d bits), plus `q` (another 32 d bits) for LENA-g and
/// LENA-m. Defaults: beta = 40 and momentum drift with gamma = 0.1 (the paper's experiments and
/// issue 3's reference runs); the reference norm's default, the alpha-scaled running average of
/// gradients, was settled by measurement (docs/LENA_RULE.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LenaParams {
    /// Significance threshold beta (0 uploads every round).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// What the innovation is compared with.
    #[serde(default = "default_reference")]
    pub reference: ReferenceNorm,
    /// k-confirm: upload once the filter fired this many times since the last upload.
    #[serde(default = "default_confirm")]
    pub confirm: u32,
    /// The drift applied for silent rounds.
    #[serde(default = "default_drift")]
    pub drift: DriftKind,
    /// Weight of the running gradient average used by `reference = "scaled_average"`.
    #[serde(default = "default_avg_gamma")]
    pub average_gamma: f32,
    /// Optional compressor of the upload: `v = C(u)`, the residual `u - v` stays in `e`
    /// (any compressor with `||e'||^2 <= (1 - delta) ||e + alpha g||^2` keeps convergence).
    #[serde(default)]
    pub compressor: Option<CompressorParams>,
    /// After the broadcast reports a lost upload, upload again in the next round whatever
    /// the filter says (a retransmission, counted like any upload). Without it the server
    /// keeps the old drift until the node's next regular upload; measured in
    /// docs/COMMUNICATION.md.
    #[serde(default = "default_resend")]
    pub resend_lost: bool,
    /// How the drift and the reference start (Algorithm 1 leaves `q^{-1}` open).
    #[serde(default)]
    pub init: Init,
}

/// How a LENA node's drift and reference average start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Everything at zero: `q^{-1} = 0`, the momentum and the reference average grow from
    /// zero, and the first round's filter decides (with an empty memory and a small reference
    /// it fires, so every node uploads in its first round).
    #[default]
    Zero,
    /// An initial gradient exchange: a node's first round is an upload whatever the filter
    /// says (counted like any upload), and the momentum drift and the reference average
    /// start at that round's gradient (`alpha g^0`, `g^0`) instead of a tenth of it.
    Gradient,
}

fn default_resend() -> bool {
    true
}

fn default_beta() -> f64 {
    40.0
}
fn default_reference() -> ReferenceNorm {
    // Settled by measurement: docs/LENA_RULE.md.
    ReferenceNorm::ScaledAverage
}
fn default_confirm() -> u32 {
    1
}
fn default_drift() -> DriftKind {
    DriftKind::Momentum { gamma: 0.1 }
}
fn default_avg_gamma() -> f32 {
    0.1
}

impl LenaParams {
    /// LENA with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> Result<Lena> {
        check_step(step_size)?;
        Significance::new(self.beta, self.reference, self.confirm)?;
        self.drift.check()?;
        let g = self.average_gamma;
        if !(g > 0.0 && g <= 1.0) {
            return Err(Error::bad_param("average_gamma", "in (0, 1]", g));
        }
        let compressor = match &self.compressor {
            Some(cp) => Some(contractive(compressor(cp, dim)?)?),
            None => None,
        };
        Ok(Lena {
            step_size,
            params: self.clone(),
            compressor,
        })
    }
}

impl Default for LenaParams {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            reference: default_reference(),
            confirm: default_confirm(),
            drift: default_drift(),
            average_gamma: default_avg_gamma(),
            compressor: None,
            resend_lost: default_resend(),
            init: Init::Zero,
        }
    }
}

/// A validated LENA configuration.
///
/// A missing upload (faults) is a silent round for the server, which applies the drift; the
/// node, told of the loss, puts `v - q` back into its memory and, with `resend_lost`, uploads
/// again next round (docs/COMMUNICATION.md).
#[derive(Clone)]
pub struct Lena {
    /// Step size alpha.
    pub step_size: f32,
    /// The other parameters, checked.
    pub params: LenaParams,
    /// The upload compressor, if any (built from `params.compressor`).
    pub compressor: Option<Arc<dyn Compressor>>,
}

impl std::fmt::Debug for Lena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lena")
            .field("step_size", &self.step_size)
            .field("params", &self.params)
            .field("compressor", &self.compressor.as_ref().map(|c| c.name()))
            .finish()
    }
}

impl Lena {
    /// With the momentum drift at `gamma = average_gamma` (the default), the momentum is
    /// exactly `alpha` times the running gradient average: both are `sum_k gamma (1 - gamma)^k`
    /// times the past gradients, from zero. The average's norm is then read from the momentum
    /// (`||avg||^2 = ||mom||^2 / alpha^2`) instead of keeping a sixth vector per node.
    pub(super) fn avg_from_momentum(&self) -> bool {
        self.params.reference == ReferenceNorm::ScaledAverage
            && self.params.drift
                == (DriftKind::Momentum {
                    gamma: self.params.average_gamma,
                })
            && self.step_size > 0.0
    }
}

impl Algorithm for Lena {
    fn name(&self) -> String {
        let mut n = format!("LENA-{}", self.params.drift.suffix());
        if self.params.confirm > 1 {
            n.push_str(&format!(" (k={})", self.params.confirm));
        }
        if self.params.init == Init::Gradient {
            n.push_str(" (gradient init)");
        }
        n
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        let p = &self.params;
        (0..n_workers)
            .map(|_| {
                let t = Significance::new(p.beta, p.reference, p.confirm).expect("checked");
                Box::new(self.worker_with(n_workers, dim, Box::new(t), k)) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(self.lena_server(n_workers, dim, k))
    }
}

/// Where v and q sit in a LENA upload: the one description of its layout, read by the node
/// that writes an upload and by the server that reads it.
///
/// | upload | drift rebuilt by the server (`0`, `v`, `avg`) | drift sent (`g`, `m`) |
/// | --- | --- | --- |
/// | dense | `v` (d f32) | `v` then `q` (2d f32) |
/// | compressed | the encoding of `v` | `q` (d f32, byte aligned), then the encoding of `v` |
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    d: usize,
    /// The drift travels with `v` (the server cannot rebuild it).
    pub(super) sends_q: bool,
    compressed: bool,
}

impl Layout {
    pub(super) fn new(d: usize, drift: DriftKind, compressed: bool) -> Self {
        Self {
            d,
            sends_q: !drift.rebuildable(),
            compressed,
        }
    }

    /// Values in a dense upload.
    pub(super) fn dense_len(self) -> usize {
        if self.sends_q { 2 * self.d } else { self.d }
    }

    /// Where `q` starts, in f32 values, in an upload that sends it.
    pub(super) fn q_at(self) -> usize {
        if self.compressed { 0 } else { self.d }
    }

    /// Where a silent node's drift starts in its last dense upload: `q` where it is sent, else
    /// `v` itself (the drifts a server reads from the last upload are then the last `v`).
    pub(super) fn drift_at(self) -> usize {
        if self.sends_q { self.q_at() } else { 0 }
    }

    /// A silent node's drift is in its last upload, at [`Self::drift_at`]: uploads are dense
    /// and carry q (LENA-g, LENA-m) or are q (LENA-v). Where nothing can be lost, node and
    /// server read it from there instead of keeping it.
    pub(super) fn drift_in_upload(self, kind: DriftKind) -> bool {
        !self.compressed && (self.sends_q || kind == DriftKind::LastUpload)
    }

    /// Writes a compressed upload from the drift `q` and the encoding `v` of the compressed v.
    pub(super) fn write_compressed(self, q: &[f32], v: &Message, msg: &mut Message) {
        if self.sends_q {
            dense::encode(q, msg);
            msg.append_aligned(v);
        } else {
            msg.clone_from(v);
        }
    }

    /// Checks a dense upload's length.
    pub(super) fn check_dense(self, msg: &Message) -> lena_compress::Result<()> {
        dense::check(msg, self.dense_len())
    }

    /// Decodes a compressed upload's v into `v` with `c` (its encoding copied to `sub` where
    /// `q` precedes it).
    pub(super) fn decode(
        self,
        c: &dyn Compressor,
        msg: &Message,
        v: &mut [f32],
        sub: &mut Message,
    ) -> lena_compress::Result<()> {
        let encoded = if self.sends_q {
            msg.split_aligned(32 * self.d as u64, "LENA (q, v)", sub)?;
            &*sub
        } else {
            msg
        };
        c.decode(encoded, v)
    }
}
