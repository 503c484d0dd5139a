//! Triggers: when a node uploads.
//!
//! A trigger sees a [`TriggerCtx`] of squared norms the node computed this round (with fused
//! kernels, so no vector is materialised just for a norm) and keeps its own history.

use crate::{Result, check_range};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Norms a node computed this round; each trigger reads the ones its rule uses.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TriggerCtx {
    /// Round index t (0-based).
    pub round: u64,
    /// Rounds since this node's last upload (1 in the round after an upload).
    pub since_upload: u64,
    /// The rule's innovation: LENA `||e + alpha g - v_prev||^2`; LAG `||g - g_last_sent||^2`.
    pub innovation_sq: f64,
    /// `||g^t||^2`, the current gradient.
    pub grad_sq: f64,
    /// `||g^{t-1}||^2`, the previous gradient (0 in round 0).
    pub prev_grad_sq: f64,
    /// `||a||^2` of the node's running average `a <- (1 - gamma) a + gamma g` (LENA's momentum
    /// divided by alpha).
    pub avg_grad_sq: f64,
    /// `||w^t - w^{t-1}||^2`, the last parameter change (0 in round 0).
    pub param_step_sq: f64,
    /// Step size alpha.
    pub step_size: f64,
    /// Number of nodes M.
    pub n_workers: usize,
    /// Added to a lazy rule's threshold (LAQ: `3 (||eps||^2 + ||eps_hat||^2)`).
    pub threshold_offset: f64,
}

/// The decision of a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Upload this round.
    Upload,
    /// Stay silent.
    Skip,
}

/// Decides, round by round, whether a node uploads.
pub trait Trigger: Send {
    /// This round's decision. Called once per round, with the round's norms.
    fn decide(&mut self, ctx: &TriggerCtx) -> Decision;

    /// The state a checkpoint must keep (counters, histories), as numbers.
    fn save(&self) -> Vec<f64>;

    /// Restores [`Self::save`]'s numbers; false if they cannot be this trigger's state.
    fn restore(&mut self, state: &[f64]) -> bool;
}

/// Which squared norm LENA's significance filter compares the innovation with.
///
/// The paper is ambiguous (issue 3): eq. 4 writes `beta ||g^{t-1}||^2`, Algorithm 1 writes
/// `beta ||g^t||^2`, and the text suggests a running average; none scales by alpha although the
/// innovation is in units of `alpha g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceNorm {
    /// Paper eq. 4 taken literally: `||g^{t-1}||^2`.
    PrevGradient,
    /// Paper Algorithm 1: `||g^t||^2`.
    CurrentGradient,
    /// `alpha^2 ||g^{t-1}||^2`: eq. 4 in the innovation's units.
    ScaledPrevGradient,
    /// `alpha^2 ||a||^2` with `a` the running average of gradients (momentum gamma).
    ScaledAverage,
}

impl ReferenceNorm {
    /// The reference value for a context.
    pub fn value(self, ctx: &TriggerCtx) -> f64 {
        let a2 = ctx.step_size * ctx.step_size;
        match self {
            ReferenceNorm::PrevGradient => ctx.prev_grad_sq,
            ReferenceNorm::CurrentGradient => ctx.grad_sq,
            ReferenceNorm::ScaledPrevGradient => a2 * ctx.prev_grad_sq,
            ReferenceNorm::ScaledAverage => a2 * ctx.avg_grad_sq,
        }
    }
}

/// Uploads every round (DGD, DIANA, EF-SGD).
#[derive(Clone, Copy, Debug, Default)]
pub struct Always;

impl Trigger for Always {
    fn save(&self) -> Vec<f64> {
        Vec::new()
    }

    fn restore(&mut self, state: &[f64]) -> bool {
        state.is_empty()
    }

    fn decide(&mut self, _ctx: &TriggerCtx) -> Decision {
        Decision::Upload
    }
}

/// Uploads every `period` rounds (round 0, H, 2H, ...).
#[derive(Clone, Copy, Debug)]
pub struct Periodic {
    period: u64,
}

impl Periodic {
    /// A periodic trigger; `period >= 1`.
    pub fn new(period: u64) -> Result<Self> {
        check_range("trigger.period", period as f64, period >= 1, ">= 1")?;
        Ok(Self { period })
    }
}

impl Trigger for Periodic {
    fn save(&self) -> Vec<f64> {
        Vec::new()
    }

    fn restore(&mut self, state: &[f64]) -> bool {
        state.is_empty()
    }

    fn decide(&mut self, ctx: &TriggerCtx) -> Decision {
        if ctx.round.is_multiple_of(self.period) {
            Decision::Upload
        } else {
            Decision::Skip
        }
    }
}

/// LENA's significance filter (paper eq. 4) with k-confirm.
///
/// Fires iff `innovation_sq >= beta * reference`; uploads once it has fired `confirm` times
/// since the last upload (k-confirm, paper k = 3; `confirm = 1` uploads at the first firing).
/// The first round always uploads (there is no previous upload to compare with).
#[derive(Clone, Copy, Debug)]
pub struct Significance {
    beta: f64,
    reference: ReferenceNorm,
    confirm: u32,
    fired: u32,
}

impl Significance {
    /// A validated filter: `beta >= 0`, `confirm >= 1`.
    pub fn new(beta: f64, reference: ReferenceNorm, confirm: u32) -> Result<Self> {
        check_range("beta", beta, beta >= 0.0, "a finite number >= 0")?;
        check_range("confirm", f64::from(confirm), confirm >= 1, ">= 1")?;
        Ok(Self {
            beta,
            reference,
            confirm,
            fired: 0,
        })
    }
}

impl Trigger for Significance {
    fn save(&self) -> Vec<f64> {
        vec![f64::from(self.fired)]
    }

    fn restore(&mut self, state: &[f64]) -> bool {
        match state {
            [f] if *f >= 0.0 && *f <= f64::from(u32::MAX) => {
                self.fired = *f as u32;
                true
            }
            _ => false,
        }
    }

    fn decide(&mut self, ctx: &TriggerCtx) -> Decision {
        if ctx.round == 0 {
            self.fired = 0;
            return Decision::Upload;
        }
        if ctx.innovation_sq >= self.beta * self.reference.value(ctx) {
            self.fired += 1;
        }
        if self.fired >= self.confirm {
            self.fired = 0;
            Decision::Upload
        } else {
            Decision::Skip
        }
    }
}

/// How a lazy rule divides its sum of recent parameter changes. Published codes disagree
/// (SASG's scripts use both `2 alpha M^2` and `alpha M^2`; LAG and LASG use `alpha^2 M^2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// `alpha^2 M^2` (LAG, LASG, LAQ).
    Alpha2M2,
    /// `alpha M^2`.
    AlphaM2,
    /// `2 alpha M^2`.
    TwoAlphaM2,
}

impl Normalisation {
    fn denominator(self, alpha: f64, m: f64) -> f64 {
        match self {
            Normalisation::Alpha2M2 => alpha * alpha * m * m,
            Normalisation::AlphaM2 => alpha * m * m,
            Normalisation::TwoAlphaM2 => 2.0 * alpha * m * m,
        }
    }
}

/// The lazy-aggregation rule shared by LAG-WK, LASG-WK2, LAQ, SASG and LAG-PS: upload iff
/// `innovation_sq > xi * sum_{d=1..D} ||w^{t+1-d} - w^{t-d}||^2 / N + threshold_offset`
/// (N the [`Normalisation`]), or once `max_staleness` rounds passed since the last upload.
/// Uploads every round until the history holds D parameter changes. LAG-WK (Chen et al. 2018)
/// is the case `Alpha2M2`, no offset, no staleness limit, `xi = 1/D` (authors' code).
#[derive(Clone, Debug)]
pub struct LazyRule {
    xi: f64,
    norm: Normalisation,
    max_staleness: Option<u64>,
    depth: usize,
    history: VecDeque<f64>,
}

impl LazyRule {
    /// A validated rule: `depth >= 1`, `xi >= 0`, `max_staleness >= 1` if given.
    pub fn new(
        depth: usize,
        xi: f64,
        norm: Normalisation,
        max_staleness: Option<u64>,
    ) -> Result<Self> {
        check_range("depth", depth as f64, depth >= 1, ">= 1")?;
        check_range("xi", xi, xi >= 0.0, "a finite number >= 0")?;
        if let Some(s) = max_staleness {
            check_range("max_staleness", s as f64, s >= 1, ">= 1")?;
        }
        Ok(Self {
            xi,
            norm,
            max_staleness,
            depth,
            history: VecDeque::with_capacity(depth + 1),
        })
    }

    /// The threshold for the current history.
    pub fn threshold(&self, ctx: &TriggerCtx) -> f64 {
        let sum: f64 = self.history.iter().sum();
        self.xi * sum / self.norm.denominator(ctx.step_size, ctx.n_workers as f64)
            + ctx.threshold_offset
    }
}

impl Trigger for LazyRule {
    fn save(&self) -> Vec<f64> {
        self.history.iter().copied().collect()
    }

    fn restore(&mut self, state: &[f64]) -> bool {
        if state.len() > self.depth {
            return false;
        }
        self.history = state.iter().copied().collect();
        true
    }

    fn decide(&mut self, ctx: &TriggerCtx) -> Decision {
        if ctx.round > 0 {
            if self.history.len() == self.depth {
                self.history.pop_back();
            }
            self.history.push_front(ctx.param_step_sq);
        }
        let stale = self.max_staleness.is_some_and(|s| ctx.since_upload >= s);
        if ctx.round <= self.depth as u64 || stale || ctx.innovation_sq > self.threshold(ctx) {
            Decision::Upload
        } else {
            Decision::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(round: u64, innovation_sq: f64, prev_grad_sq: f64) -> TriggerCtx {
        TriggerCtx {
            round,
            innovation_sq,
            prev_grad_sq,
            step_size: 0.5,
            n_workers: 2,
            ..Default::default()
        }
    }

    #[test]
    fn significance_fires_and_confirms() {
        let mut s = Significance::new(2.0, ReferenceNorm::PrevGradient, 1).unwrap();
        assert_eq!(s.decide(&ctx(0, 0.0, 0.0)), Decision::Upload);
        assert_eq!(s.decide(&ctx(1, 1.9, 1.0)), Decision::Skip);
        assert_eq!(s.decide(&ctx(2, 2.0, 1.0)), Decision::Upload);
        let mut k = Significance::new(2.0, ReferenceNorm::ScaledPrevGradient, 3).unwrap();
        k.decide(&ctx(0, 0.0, 0.0));
        // alpha^2 * 4 * beta = 2: fires at 2.0, uploads on the third firing.
        let d: Vec<_> = (1..=4).map(|t| k.decide(&ctx(t, 2.0, 4.0))).collect();
        assert_eq!(
            d,
            [
                Decision::Skip,
                Decision::Skip,
                Decision::Upload,
                Decision::Skip
            ]
        );
    }

    #[test]
    fn zero_beta_always_uploads() {
        let mut s = Significance::new(0.0, ReferenceNorm::CurrentGradient, 1).unwrap();
        assert!((0..20).all(|t| s.decide(&ctx(t, 0.0, 5.0)) == Decision::Upload));
    }

    #[test]
    fn lag_wk_threshold_uses_recent_parameter_steps() {
        let mut lag = LazyRule::new(2, 0.5, Normalisation::Alpha2M2, None).unwrap();
        let mut c = ctx(0, 0.0, 0.0);
        for t in 0..=2 {
            c.round = t;
            c.param_step_sq = 1.0;
            assert_eq!(lag.decide(&c), Decision::Upload, "warm-up round {t}");
        }
        // history [1, 1]: threshold = 0.5 * 2 / (0.25 * 4) = 1
        c.round = 3;
        c.param_step_sq = 1.0;
        c.innovation_sq = 1.0;
        assert_eq!(lag.decide(&c), Decision::Skip);
        c.round = 4;
        c.innovation_sq = 1.01;
        assert_eq!(lag.decide(&c), Decision::Upload);
        // A zero threshold uploads on any innovation > 0.
        let mut z = LazyRule::new(1, 0.0, Normalisation::Alpha2M2, None).unwrap();
        c.round = 5;
        c.innovation_sq = 1e-30;
        assert_eq!(z.decide(&c), Decision::Upload);
    }

    #[test]
    fn lazy_rule_forces_stale_uploads_and_normalises_explicitly() {
        let mut r = LazyRule::new(1, 1.0, Normalisation::TwoAlphaM2, Some(3)).unwrap();
        let mut c = ctx(0, 0.0, 0.0);
        c.param_step_sq = 1.0;
        assert_eq!(r.decide(&c), Decision::Upload);
        c.round = 1;
        assert_eq!(r.decide(&c), Decision::Upload, "warm-up");
        // threshold = 1 / (2 * 0.5 * 4) = 0.25
        c.round = 2;
        c.since_upload = 1;
        c.innovation_sq = 0.25;
        assert_eq!(r.decide(&c), Decision::Skip);
        c.round = 3;
        c.since_upload = 2;
        c.threshold_offset = 1.0;
        c.innovation_sq = 1.2;
        assert_eq!(r.decide(&c), Decision::Skip, "offset raises the threshold");
        c.round = 4;
        c.since_upload = 3;
        assert_eq!(r.decide(&c), Decision::Upload, "max staleness");
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let e = Significance::new(-1.0, ReferenceNorm::PrevGradient, 1).unwrap_err();
        assert_eq!(e.to_string(), "beta must be a finite number >= 0, got -1");
        assert!(Significance::new(1.0, ReferenceNorm::PrevGradient, 0).is_err());
        assert!(Periodic::new(0).is_err());
        assert!(LazyRule::new(0, 0.1, Normalisation::Alpha2M2, None).is_err());
    }
}
