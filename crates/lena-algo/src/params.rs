//! What a config's `[algorithm]` table holds: the step size every algorithm has, and one
//! algorithm's own parameters (`name = "..."` chooses which), each checked by its own type
//! into an [`Algorithm`].
//!
//! ```toml
//! [algorithm]
//! name = "lena"
//! step_size = 0.05   # or "1/L"
//! beta = 40          # LENA's own parameters (LenaParams)
//! ```

use crate::{
    Algorithm, DgdParams, DianaParams, EfSgdParams, Error, LagPsParams, LagWkParams, LaqParams,
    LasgWk2Params, LenaParams, Result, SasgParams,
};
use lena_compress::{Compressor, CompressorParams};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Unchecked algorithm choice and parameters, as read from a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmParams {
    /// Step size alpha: a number, or `"c/L"` for c over the objective's smoothness constant.
    pub step_size: StepSize,
    /// Which algorithm (the table's `name`), with its own parameters.
    #[serde(flatten)]
    pub kind: AlgorithmKind,
}

/// An algorithm's own parameters, by the name a config gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum AlgorithmKind {
    /// `dgd`: distributed gradient descent / minibatch SGD.
    Dgd(DgdParams),
    /// `lena`.
    Lena(LenaParams),
    /// `lag_wk`: LAG with the worker-side rule.
    LagWk(LagWkParams),
    /// `lag_ps`: LAG with the server-side rule.
    LagPs(LagPsParams),
    /// `lasg_wk2`: stochastic LAG.
    LasgWk2(LasgWk2Params),
    /// `laq`: lazily aggregated quantized gradients.
    Laq(LaqParams),
    /// `sasg`: sparse LASG with error feedback.
    Sasg(SasgParams),
    /// `diana`: compressed gradient differences.
    Diana(DianaParams),
    /// `ef_sgd`: error-feedback SGD.
    EfSgd(EfSgdParams),
}

/// Names accepted for `algorithm.name`.
pub const ALGORITHM_NAMES: &[&str] = &[
    "dgd", "lena", "lag_wk", "lag_ps", "lasg_wk2", "laq", "sasg", "diana", "ef_sgd",
];

impl AlgorithmParams {
    /// `kind` with step size `step_size`.
    pub fn new(step_size: impl Into<StepSize>, kind: impl Into<AlgorithmKind>) -> Self {
        Self {
            step_size: step_size.into(),
            kind: kind.into(),
        }
    }

    /// Validates the parameters once; hot paths never re-check them. `smoothness` is called
    /// only if the step size is given as a `"c/L"` rule.
    pub fn check_with(
        &self,
        dim: usize,
        smoothness: impl FnOnce() -> f64,
    ) -> Result<Box<dyn Algorithm>> {
        let step = self.step_size.resolve(smoothness)?;
        Ok(match &self.kind {
            AlgorithmKind::Dgd(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::Lena(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::LagWk(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::LagPs(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::LasgWk2(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::Laq(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::Sasg(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::Diana(p) => Box::new(p.check(step, dim)?),
            AlgorithmKind::EfSgd(p) => Box::new(p.check(step, dim)?),
        })
    }

    /// [`Self::check_with`] for configs whose step sizes are plain numbers.
    pub fn check(&self, dim: usize) -> Result<Box<dyn Algorithm>> {
        self.check_with(dim, || f64::NAN)
    }
}

macro_rules! kind_from {
    ($($variant:ident($params:ty)),*) => {$(
        impl From<$params> for AlgorithmKind {
            fn from(p: $params) -> Self {
                AlgorithmKind::$variant(p)
            }
        }
    )*};
}
kind_from!(
    Dgd(DgdParams),
    Lena(LenaParams),
    LagWk(LagWkParams),
    LagPs(LagPsParams),
    LasgWk2(LasgWk2Params),
    Laq(LaqParams),
    Sasg(SasgParams),
    Diana(DianaParams),
    EfSgd(EfSgdParams)
);

/// A step size as written in a config: a number (`0.05`) or a rule (`"1/L"`, `"0.5/L"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepSize {
    /// A fixed step.
    Value(f32),
    /// `"c/L"`: c divided by the smoothness constant of the objective.
    Rule(String),
}

impl From<f32> for StepSize {
    fn from(v: f32) -> Self {
        StepSize::Value(v)
    }
}

impl StepSize {
    /// The step as a number; `smoothness` is asked for only by a `"c/L"` rule.
    pub fn resolve(&self, smoothness: impl FnOnce() -> f64) -> Result<f32> {
        let step = match self {
            StepSize::Value(v) => *v,
            StepSize::Rule(r) => {
                let c = r
                    .trim()
                    .strip_suffix('L')
                    .map(str::trim)
                    .and_then(|c| c.strip_suffix('/'))
                    .map(str::trim)
                    .and_then(|c| c.parse::<f64>().ok());
                match c {
                    Some(c) => (c / smoothness()) as f32,
                    None => {
                        return Err(Error::bad_param(
                            "step_size",
                            "a number or a rule \"c/L\" such as \"1/L\"",
                            // At most 80 characters of what was written.
                            match r.char_indices().nth(80) {
                                None => format!("{r:?}"),
                                Some((end, _)) => format!("{:?}... ({} bytes)", &r[..end], r.len()),
                            },
                        ));
                    }
                }
            }
        };
        check_step(step)?;
        Ok(step)
    }
}

/// What a server does with a node's missing upload (a lost upload, a straggler past the
/// deadline, an offline node; never in a fault-free run). Algorithms whose servers keep
/// per-node state (LENA's drift, the lazy methods' last contribution) use that state and
/// document it; DGD and DIANA offer the choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Average over the uploads that arrived.
    #[default]
    Average,
    /// Use what the server last had from that node.
    Last,
}

/// Errors unless `step_size` is a finite number > 0 (every algorithm's `check` starts here).
pub(crate) fn check_step(step_size: f32) -> Result<()> {
    if step_size.is_finite() && step_size > 0.0 {
        Ok(())
    } else {
        Err(Error::bad_param(
            "step_size",
            "a finite number > 0",
            step_size.to_string(),
        ))
    }
}

/// Builds a compressor of dimension `dim` (its parameter errors named as this table's fields).
pub(crate) fn compressor(c: &CompressorParams, dim: usize) -> Result<Arc<dyn Compressor>> {
    Ok(Arc::from(c.check(dim)?))
}

/// Error feedback needs a contraction: a compressor with a contraction constant delta, or an
/// unbiased one with omega < 1 (then delta = 1 - omega in expectation).
pub(crate) fn contractive(c: Arc<dyn Compressor>) -> Result<Arc<dyn Compressor>> {
    let ok =
        c.delta().is_some_and(|d| d > 0.0) || (c.unbiased() && c.omega().is_some_and(|w| w < 1.0));
    if ok {
        return Ok(c);
    }
    Err(Error::bad_param(
        "compressor",
        "a contraction for error feedback (top_k, rand_k, scaled_sign, identity, or qsgd with omega < 1: more levels or smaller buckets)",
        format!(
            "{} with omega = {:.3}",
            c.name(),
            c.omega().unwrap_or(f64::INFINITY)
        ),
    ))
}

/// Checks a lazy rule's depth, weight and staleness limit as the workers will build it.
pub(crate) fn lazy_rule(depth: usize, xi: f64, staleness: Option<u64>) -> Result<()> {
    use lena_policy::trigger::{LazyRule, Normalisation};
    LazyRule::new(depth, xi, Normalisation::Alpha2M2, staleness)?;
    Ok(())
}

/// History depth D (the authors' codes: 10).
pub(crate) fn default_depth() -> usize {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_size_rules_and_errors() {
        assert_eq!(StepSize::Value(0.1).resolve(|| 1.0).unwrap(), 0.1);
        assert_eq!(StepSize::Rule("2/L".into()).resolve(|| 4.0).unwrap(), 0.5);
        assert_eq!(
            StepSize::Rule(" 0.5 / L".into()).resolve(|| 1.0).unwrap(),
            0.5
        );
        let e = StepSize::Rule("fast".into())
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("algorithm.step_size must be a number or a rule"),
            "{e}"
        );
        let e = StepSize::Value(-1.0)
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "algorithm.step_size must be a finite number > 0, got -1");
        let e = StepSize::Value(f32::NAN)
            .resolve(|| 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("got NaN"), "{e}");
    }
}
