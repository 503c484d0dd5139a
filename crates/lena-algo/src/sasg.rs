//! SASG: LASG's rule with sparse uploads and error feedback (Deng et al.).

use crate::lasg::{Sparse, TwoPointWorker};
use crate::params::{check_step, compressor, default_depth, lazy_rule};
use crate::stale::{Payload, StaleServer, Steps};
use crate::{Algorithm, Server, Worker};
use lena_compress::{Compressor, CompressorParams};
use lena_kernels::Kernels;
use lena_policy::trigger::{LazyRule, Normalisation, Trigger};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// SASG's own parameters (`name = "sasg"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SasgParams {
    /// Share of coordinates top-k keeps (default 0.01).
    #[serde(default = "default_fraction")]
    pub k_fraction: f64,
    /// History depth D.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Weight of the history sum (default 1/D).
    #[serde(default)]
    pub xi: Option<f64>,
    /// Threshold normalisation.
    #[serde(default = "default_norm")]
    pub normalisation: Normalisation,
    /// Forced upload after this many silent rounds.
    #[serde(default = "default_staleness")]
    pub max_staleness: u64,
}

fn default_fraction() -> f64 {
    0.01
}
fn default_norm() -> Normalisation {
    Normalisation::Alpha2M2
}
fn default_staleness() -> u64 {
    10
}

impl Default for SasgParams {
    fn default() -> Self {
        Self {
            k_fraction: default_fraction(),
            depth: default_depth(),
            xi: None,
            normalisation: default_norm(),
            max_staleness: default_staleness(),
        }
    }
}

impl SasgParams {
    /// SASG with step size `step_size`, for parameters of dimension `dim`.
    pub fn check(&self, step_size: f32, dim: usize) -> crate::Result<Sasg> {
        check_step(step_size)?;
        let f = self.k_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(crate::Error::bad_param("k_fraction", "in (0, 1]", f));
        }
        let xi = self.xi.unwrap_or(1.0 / self.depth.max(1) as f64);
        lazy_rule(self.depth, xi, Some(self.max_staleness))?;
        let k = ((dim as f64 * f).ceil() as usize).clamp(1, dim.max(1));
        Ok(Sasg {
            step_size,
            depth: self.depth,
            xi,
            normalisation: self.normalisation,
            max_staleness: self.max_staleness,
            compressor: compressor(&CompressorParams::top_k(k), dim)?,
        })
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
    /// A SASG node with an explicit trigger (tests script trigger outcomes with it),
    /// computing with `k`.
    pub fn worker_with(
        &self,
        n_workers: usize,
        dim: usize,
        trigger: Box<dyn Trigger>,
        k: Kernels,
    ) -> TwoPointWorker {
        TwoPointWorker {
            alpha: self.step_size,
            m: n_workers,
            rule: trigger,
            steps: Steps::new(),
            w_hat: vec![0.0; dim],
            sparse: Some(Sparse {
                c: self.compressor.clone(),
                ef: lena_compress::ErrorFeedback::with_kernels(dim, k),
                v_prev: vec![0.0; dim],
            }),
            kernels: k,
        }
    }
}

impl Algorithm for Sasg {
    fn name(&self) -> String {
        "SASG".into()
    }

    fn workers(&self, n_workers: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        (0..n_workers)
            .map(|_| {
                let rule = LazyRule::new(
                    self.depth,
                    self.xi,
                    self.normalisation,
                    Some(self.max_staleness),
                )
                .expect("checked");
                Box::new(self.worker_with(n_workers, dim, Box::new(rule), k)) as Box<dyn Worker>
            })
            .collect()
    }

    fn server(&self, n_workers: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        Box::new(StaleServer::new(
            Payload::Update(self.compressor.clone()),
            self.step_size,
            n_workers,
            dim,
            k,
        ))
    }
}
