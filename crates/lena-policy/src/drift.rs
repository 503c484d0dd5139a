//! Drifts: the update applied for a node in a round it stays silent.
//!
//! LENA (ALGORITHMS.md, step 4): when a node skips, both sides apply its drift `q` as if it had
//! uploaded `v = q`. `q` is set at each upload. Drifts the server can rebuild from the uploaded
//! `v` alone ([`DriftKind::rebuildable`]) are computed on both sides with the same float operations;
//! the others are sent with `v`.

use crate::{Result, check_range};
use lena_kernels::{Ema, Kernels};
use serde::{Deserialize, Serialize};

/// Drift choices (paper figure 4c/4d).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriftKind {
    /// LENA-0: `q = 0`.
    Zero,
    /// LENA-g: `q = alpha g` at the upload (sent with `v`).
    LastGradient,
    /// LENA-v: `q = v`, the last upload (rebuildable; LAG's "reuse the last received gradient").
    LastUpload,
    /// LENA-m: `q = mom` at the upload, `mom <- (1 - gamma) mom + gamma alpha g` every round
    /// (sent with `v`).
    Momentum {
        /// Momentum weight gamma in (0, 1].
        gamma: f32,
    },
    /// LENA-avg (paper eq. 7): `q` = the uniform average of `alpha g` over the rounds since the
    /// previous upload, `(v + (k - 1) q_prev) / k` after `k` rounds (rebuildable from `v`).
    Average,
}

impl DriftKind {
    /// Checks parameters.
    pub fn check(self) -> Result<Self> {
        if let DriftKind::Momentum { gamma } = self {
            let g = f64::from(gamma);
            check_range("drift.gamma", g, g > 0.0 && g <= 1.0, "in (0, 1]")?;
        }
        Ok(self)
    }

    /// True if the server computes `q` from uploads alone (nothing extra is sent).
    pub fn rebuildable(self) -> bool {
        matches!(
            self,
            DriftKind::Zero | DriftKind::LastUpload | DriftKind::Average
        )
    }

    /// True if an upload's new `q` is formed from the round's gradient (LENA-g's `alpha g`):
    /// the other kinds never read the gradient handed to [`Drift::on_upload`] and
    /// [`Drift::sent_q_into`].
    pub fn reads_gradient(self) -> bool {
        matches!(self, DriftKind::LastGradient)
    }

    /// A rebuildable drift's new `q` from the uploaded `v` after `rounds` rounds, element-wise,
    /// so that a server may apply it to any block of coordinates with the node's exact float
    /// operations. Does nothing for the other kinds (their `q` is sent).
    pub fn rebuild(self, k: Kernels, q: &mut [f32], v: &[f32], rounds: u64) {
        match self {
            DriftKind::Zero => {}
            DriftKind::LastUpload => q.copy_from_slice(v),
            DriftKind::Average => {
                let kf = rounds.max(1) as f32;
                // q <- (v + (k - 1) q) / k
                k.axpby(1.0 / kf, v, (kf - 1.0) / kf, q);
            }
            DriftKind::LastGradient | DriftKind::Momentum { .. } => {}
        }
    }

    /// Paper legend suffix: 0, g, v, m, avg.
    pub fn suffix(self) -> &'static str {
        match self {
            DriftKind::Zero => "0",
            DriftKind::LastGradient => "g",
            DriftKind::LastUpload => "v",
            DriftKind::Momentum { .. } => "m",
            DriftKind::Average => "avg",
        }
    }
}

/// One node's drift state, the same type on the node and (for rebuildable kinds) the server.
#[derive(Clone, Debug)]
pub struct Drift {
    kind: DriftKind,
    /// Current drift q; not allocated while it is zero, before the first upload (read as
    /// the shared zeros), nor after [`Self::release_q`].
    q: Vec<f32>,
    /// The dimension.
    dim: usize,
    /// q is kept by the caller ([`Self::release_q`]).
    released: bool,
    /// Momentum (LENA-m only).
    mom: Vec<f32>,
}

impl Drift {
    /// A zero drift of dimension `dim`.
    pub fn new(kind: DriftKind, dim: usize) -> Self {
        let mom = if matches!(kind, DriftKind::Momentum { .. }) {
            vec![0.0; dim]
        } else {
            Vec::new()
        };
        Self {
            kind,
            // PERF: allocated at the first upload, so a node whose q is kept elsewhere (see
            // `release_q`) never holds a vector that was allocated and freed (it would stay
            // resident).
            q: Vec::new(),
            dim,
            released: false,
            mom,
        }
    }

    /// The kind.
    pub fn kind(&self) -> DriftKind {
        self.kind
    }

    /// The current drift q (empty after [`Self::release_q`]).
    pub fn q(&self) -> &[f32] {
        q_or_zeros(&self.q, self.dim, self.released)
    }

    /// q to be written, allocated (zero) at its first use.
    fn q_mut(&mut self) -> &mut [f32] {
        if !self.released && self.q.is_empty() {
            self.q = vec![0.0; self.dim];
        }
        &mut self.q
    }

    /// The momentum vector (empty unless LENA-m).
    pub fn momentum(&self) -> &[f32] {
        &self.mom
    }

    /// The drift and momentum buffers, for checkpoints.
    pub fn buffers_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        self.q_mut();
        (&mut self.q, &mut self.mom)
    }

    /// Node side, every round before the decision: `mom <- (1 - gamma) mom + gamma alpha g`.
    pub fn observe(&mut self, k: Kernels, alpha: f32, g: &[f32]) {
        if let DriftKind::Momentum { gamma } = self.kind {
            k.axpby(gamma * alpha, g, 1.0 - gamma, &mut self.mom);
        }
    }

    /// The drift `q` together with [`Self::observe`]'s update as an [`Ema`] for a caller that
    /// fuses it into its own pass over the gradient ([`Kernels::ef_scan`]); applying the
    /// returned average is bit-identical to calling `observe`.
    pub fn observe_fused(&mut self, alpha: f32) -> (&[f32], Option<Ema<'_>>) {
        let ema = match self.kind {
            DriftKind::Momentum { gamma } => Some(Ema {
                x: &mut self.mom,
                a: gamma * alpha,
                b: 1.0 - gamma,
            }),
            _ => None,
        };
        (q_or_zeros(&self.q, self.dim, self.released), ema)
    }

    /// At an upload of `v` after `rounds` rounds (1 = uploaded in the previous round too):
    /// sets the new q. `alpha` and `g` are this round's step and gradient (read by LENA-g only).
    pub fn on_upload(&mut self, k: Kernels, v: &[f32], alpha: f32, g: &[f32], rounds: u64) {
        let kind = self.kind;
        if kind.rebuildable() {
            kind.rebuild(k, self.q_mut(), v, rounds);
        } else {
            self.q_mut();
            sent_q(self.kind, &self.mom, k, alpha, g, &mut self.q);
        }
    }

    /// [`Self::on_upload`], keeping the drift from before it in `before` (of the same length).
    ///
    /// PERF: where the new q overwrites the old one entirely, the old vector is moved into
    /// `before` (a pointer swap) instead of copied.
    pub fn on_upload_keeping(
        &mut self,
        k: Kernels,
        v: &[f32],
        alpha: f32,
        g: &[f32],
        rounds: u64,
        before: &mut Vec<f32>,
    ) {
        assert_eq!(before.len(), self.dim, "on_upload_keeping: length mismatch");
        match self.kind {
            _ if self.q.is_empty() => before.fill(0.0),
            DriftKind::LastGradient | DriftKind::Momentum { .. } | DriftKind::LastUpload => {
                std::mem::swap(&mut self.q, before);
            }
            DriftKind::Zero | DriftKind::Average => before.copy_from_slice(&self.q),
        }
        self.on_upload(k, v, alpha, g, rounds);
    }

    /// Frees q, for a caller that keeps it elsewhere (a LENA node that reads its drift from its
    /// last upload, where the new q is written by [`Self::sent_q_into`]); [`Self::q`] is then
    /// empty and [`Self::on_upload`] must not be called.
    pub fn release_q(&mut self) {
        self.q = Vec::new();
        self.released = true;
    }

    /// The new q at an upload, for a drift that is sent (LENA-g: `alpha g`; LENA-m: the
    /// momentum), written into `q_out` instead of kept: the values [`Self::on_upload`] leaves
    /// in q. Writes nothing for the kinds the server rebuilds.
    pub fn sent_q_into(&self, k: Kernels, alpha: f32, g: &[f32], q_out: &mut [f32]) {
        sent_q(self.kind, &self.mom, k, alpha, g, q_out);
    }

    /// Sets q to a value received from the node (non-rebuildable kinds, server side).
    pub fn set(&mut self, q: &[f32]) {
        self.q_mut().copy_from_slice(q);
    }
}

/// A sent drift's new q into `out`: LENA-g's `alpha g` (formed as `0 + alpha g`, one fused
/// multiply-add per value), LENA-m's momentum `mom`; nothing for the rebuildable kinds.
fn sent_q(kind: DriftKind, mom: &[f32], k: Kernels, alpha: f32, g: &[f32], out: &mut [f32]) {
    match kind {
        DriftKind::LastGradient => {
            out.fill(0.0);
            k.axpy(alpha, g, out);
        }
        DriftKind::Momentum { .. } => out.copy_from_slice(mom),
        DriftKind::Zero | DriftKind::LastUpload | DriftKind::Average => {}
    }
}

/// q, or the shared zeros where it is not allocated yet (empty if released).
fn q_or_zeros(q: &[f32], dim: usize, released: bool) -> &[f32] {
    if q.is_empty() && !released {
        lena_kernels::zeros(dim)
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every drift kind.
    const KINDS: [DriftKind; 5] = [
        DriftKind::Zero,
        DriftKind::LastGradient,
        DriftKind::LastUpload,
        DriftKind::Momentum { gamma: 0.1 },
        DriftKind::Average,
    ];

    /// `on_upload_keeping` leaves the same q and keeps the same old q as a copy followed by
    /// `on_upload`, for every kind, over several uploads (so swapped buffers get reused).
    #[test]
    fn on_upload_keeping_equals_copy_then_on_upload() {
        let k = Kernels::detect();
        let d = 37;
        for kind in KINDS {
            let (mut a, mut b) = (Drift::new(kind, d), Drift::new(kind, d));
            let (mut before_a, mut before_b) = (vec![0.0; d], vec![0.0; d]);
            for t in 0..5u64 {
                let g: Vec<f32> = (0..d)
                    .map(|i| ((i as u64 * 7 + t) % 11) as f32 - 5.0)
                    .collect();
                let v: Vec<f32> = g.iter().map(|x| 0.5 * x + t as f32).collect();
                a.observe(k, 0.05, &g);
                b.observe(k, 0.05, &g);
                a.on_upload_keeping(k, &v, 0.05, &g, t + 1, &mut before_a);
                before_b.copy_from_slice(b.q());
                b.on_upload(k, &v, 0.05, &g, t + 1);
                assert_eq!(a.q(), b.q(), "{kind:?} q after upload {t}");
                assert_eq!(before_a, before_b, "{kind:?} q before upload {t}");
            }
        }
    }

    /// `sent_q_into` writes the q that `on_upload` keeps, for the kinds that are sent, and
    /// nothing for the others.
    #[test]
    fn sent_q_into_writes_the_q_on_upload_keeps() {
        let k = Kernels::detect();
        let (d, alpha) = (37, 0.05f32);
        for kind in KINDS {
            let (mut kept, mut sent) = (Drift::new(kind, d), Drift::new(kind, d));
            sent.release_q();
            for t in 0..5u64 {
                let g: Vec<f32> = (0..d)
                    .map(|i| ((i as u64 * 7 + t) % 11) as f32 * 0.3 - 1.7)
                    .collect();
                let v: Vec<f32> = g.iter().map(|x| 0.5 * x + t as f32).collect();
                kept.observe(k, alpha, &g);
                sent.observe(k, alpha, &g);
                kept.on_upload(k, &v, alpha, &g, t + 1);
                let mut q_out = vec![f32::NAN; d];
                sent.sent_q_into(k, alpha, &g, &mut q_out);
                if kind.rebuildable() {
                    assert!(q_out.iter().all(|x| x.is_nan()), "{kind:?} wrote q");
                } else {
                    assert_eq!(q_out, kept.q(), "{kind:?} q after upload {t}");
                }
            }
        }
    }
}
