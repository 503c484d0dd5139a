//! Objectives for distributed learning: one-versus-all logistic ridge regression and softmax
//! regression over dense rows, with loss, gradient, fused loss+gradient, accuracy and a
//! smoothness estimate; and convolutional networks for MNIST ([`Cnn`]: the paper's small
//! network and a wider one) with forward and backward passes, dropout and He initialisation.
//! [`Model`] puts them behind one interface, every model exposing a flat parameter vector.
//!
//! Must not depend on: `lena-compress`, `lena-policy`, `lena-algo`, `lena-sim` (objectives know
//! nothing of how gradients travel).
//!
//! Batched products go through faer (`X W^T` and `D^T X`, never a hand-written GEMM); the
//! element-wise work (sigmoid, softmax, regulariser) is plain loops and `lena-kernels`. Rows are
//! processed in fixed blocks so one block of `X` stays in cache between the two products, and
//! in fixed chunks that run in parallel and are summed in chunk order: the result does not depend
//! on the number of threads.
//!
//! ```
//! use lena_model::{Linear, LinearKind, Rows};
//! let data = lena_data::synthetic::classification(64, 5, 3, 3.0, 1);
//! let model = Linear::new(LinearKind::LogisticOva, 5, 3, 1e-3).unwrap();
//! let mut ws = model.workspace(64);
//! let w = vec![0.0f32; model.dim()];
//! let mut g = vec![0.0f32; model.dim()];
//! let loss = model.loss_grad(&data, Rows::All, &w, &mut g, &mut ws);
//! assert!((loss - 3.0 * std::f64::consts::LN_2).abs() < 1e-6);
//! ```

mod cnn;
mod linear;
pub mod reference;

pub use cnn::{Cnn, CnnArch, CnnWorkspace};
use lena_data::Dataset;
pub use linear::{Linear, LinearKind, Rows, Workspace};
use serde::{Deserialize, Serialize};

/// Which model a run trains (the `model.objective` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// [`LinearKind::LogisticOva`].
    LogisticOva,
    /// [`LinearKind::Softmax`].
    Softmax,
    /// [`CnnArch::Small`], the paper's network of figure 3.
    Cnn,
    /// [`CnnArch::Wide`].
    CnnWide,
    /// A multilayer perceptron ([`Cnn::mlp`]): ReLU hidden layers, softmax cross-entropy.
    Mlp,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "logistic_ova" | "logistic" => Ok(Self::LogisticOva),
            "softmax" => Ok(Self::Softmax),
            "cnn" => Ok(Self::Cnn),
            "cnn_wide" => Ok(Self::CnnWide),
            "mlp" => Ok(Self::Mlp),
            _ => Err(format!(
                "unknown objective {}, expected one of: logistic_ova, softmax, cnn, cnn_wide, mlp",
                lena_data::quote(s)
            )),
        }
    }
}

/// Any model of this crate behind one interface, for runners that pick it from a config.
#[derive(Clone, Copy, Debug)]
pub enum Model {
    /// A linear model.
    Linear(Linear),
    /// A convolutional network.
    Cnn(Cnn),
}

/// Scratch memory of a [`Model`].
#[derive(Clone, Debug)]
pub enum ModelWorkspace {
    /// For [`Model::Linear`].
    Linear(Workspace),
    /// For [`Model::Cnn`].
    Cnn(CnnWorkspace),
}

impl Model {
    /// The model of `objective` for data with `n_features` and `n_classes`; `dropout` applies
    /// to the networks only, `hidden` (the hidden layer sizes) to the MLP only.
    pub fn new(
        objective: Objective,
        n_features: usize,
        n_classes: usize,
        lambda: f32,
        dropout: f32,
        hidden: &[usize],
    ) -> Result<Self> {
        let linear = |kind| Linear::new(kind, n_features, n_classes, lambda).map(Model::Linear);
        match objective {
            Objective::LogisticOva => linear(LinearKind::LogisticOva),
            Objective::Softmax => linear(LinearKind::Softmax),
            Objective::Cnn => Cnn::new(CnnArch::Small, dropout, lambda).map(Model::Cnn),
            Objective::CnnWide => Cnn::new(CnnArch::Wide, dropout, lambda).map(Model::Cnn),
            Objective::Mlp => Cnn::mlp(hidden, dropout, lambda).map(Model::Cnn),
        }
    }

    /// The same model computing with `kernels` (a run passes its own context down; the
    /// constructors start from [`lena_kernels::Kernels::detect`]).
    pub fn with_kernels(self, kernels: lena_kernels::Kernels) -> Self {
        match self {
            Model::Linear(m) => Model::Linear(m.with_kernels(kernels)),
            Model::Cnn(m) => Model::Cnn(m.with_kernels(kernels)),
        }
    }

    /// Number of parameters.
    pub fn dim(&self) -> usize {
        match self {
            Model::Linear(m) => m.dim(),
            Model::Cnn(m) => m.dim(),
        }
    }

    /// Whether gradients draw dropout masks (and so want a seed).
    pub fn has_dropout(&self) -> bool {
        matches!(self, Model::Cnn(m) if m.dropout() > 0.0)
    }

    /// Scratch memory for calls on up to `max_rows` rows (0: sized on first use).
    pub fn workspace(&self, max_rows: usize) -> ModelWorkspace {
        match self {
            Model::Linear(m) => ModelWorkspace::Linear(m.workspace(max_rows)),
            Model::Cnn(m) => ModelWorkspace::Cnn(m.workspace(max_rows)),
        }
    }

    /// Checks that `data` fits the model.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        match self {
            Model::Linear(m) => m.check_data(data),
            Model::Cnn(m) => m.check_data(data),
        }
    }

    /// Initial parameters: zero for linear models (a convex objective), He initialisation
    /// from `rng` for networks (zero would leave every hidden unit alike).
    pub fn init(&self, rng: &mut dyn rand::RngCore, w: &mut [f32]) {
        match self {
            Model::Linear(_) => w.fill(0.0),
            Model::Cnn(m) => m.init(rng, w),
        }
    }

    /// Objective value on `rows` of `data` (no dropout).
    ///
    /// # Panics
    /// If `ws` was made by another kind of model.
    pub fn loss(&self, data: &Dataset, rows: Rows, w: &[f32], ws: &mut ModelWorkspace) -> f64 {
        match (self, ws) {
            (Model::Linear(m), ModelWorkspace::Linear(ws)) => m.loss(data, rows, w, ws),
            (Model::Cnn(m), ModelWorkspace::Cnn(ws)) => m.loss(data, rows, w, ws),
            _ => panic!("workspace of another model"),
        }
    }

    /// Gradient on `rows` into `grad`, returning the objective (fused); `dropout_seed` turns
    /// dropout on (networks only).
    ///
    /// # Panics
    /// If `ws` was made by another kind of model.
    pub fn loss_grad(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: &mut [f32],
        ws: &mut ModelWorkspace,
        dropout_seed: Option<u64>,
    ) -> f64 {
        match (self, ws) {
            (Model::Linear(m), ModelWorkspace::Linear(ws)) => m.loss_grad(data, rows, w, grad, ws),
            (Model::Cnn(m), ModelWorkspace::Cnn(ws)) => {
                m.loss_grad(data, rows, w, grad, ws, dropout_seed)
            }
            _ => panic!("workspace of another model"),
        }
    }

    /// [`Self::loss_grad`]'s gradient without the objective's value (the same floats in
    /// `grad`; see [`Linear::gradient`]).
    ///
    /// # Panics
    /// If `ws` was made by another kind of model.
    pub fn gradient(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: &mut [f32],
        ws: &mut ModelWorkspace,
        dropout_seed: Option<u64>,
    ) {
        match (self, ws) {
            (Model::Linear(m), ModelWorkspace::Linear(ws)) => m.gradient(data, rows, w, grad, ws),
            (Model::Cnn(m), ModelWorkspace::Cnn(ws)) => {
                m.loss_grad(data, rows, w, grad, ws, dropout_seed);
            }
            _ => panic!("workspace of another model"),
        }
    }

    /// A linear model's gradient on at most 8 listed rows in factored form, handed to `f`
    /// ([`Linear::factored_gradient`]); `false`, without calling `f`, for other calls and for
    /// networks, whose gradients are then written by [`Self::gradient`].
    ///
    /// # Panics
    /// If `ws` was made by another kind of model, or as [`Linear::factored_gradient`].
    pub fn factored_gradient(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        ws: &mut ModelWorkspace,
        f: &mut dyn FnMut(&lena_kernels::LinearGradient<'_>),
    ) -> bool {
        match (self, ws) {
            (Model::Linear(m), ModelWorkspace::Linear(ws)) => {
                m.factored_gradient(data, rows, w, ws, f)
            }
            (Model::Cnn(_), ModelWorkspace::Cnn(_)) => false,
            _ => panic!("workspace of another model"),
        }
    }

    /// Test accuracy on all rows of `data`.
    ///
    /// # Panics
    /// If `ws` was made by another kind of model.
    pub fn accuracy(&self, data: &Dataset, w: &[f32], ws: &mut ModelWorkspace) -> f64 {
        match (self, ws) {
            (Model::Linear(m), ModelWorkspace::Linear(ws)) => m.accuracy(data, w, ws),
            (Model::Cnn(m), ModelWorkspace::Cnn(ws)) => m.accuracy(data, w, ws),
            _ => panic!("workspace of another model"),
        }
    }

    /// Smoothness constant of the objective on `data`, where one is known (linear models);
    /// `None` for networks, whose gradients are not globally Lipschitz.
    pub fn smoothness(&self, data: &Dataset, iters: usize) -> Option<f64> {
        match self {
            Model::Linear(m) => Some(m.smoothness(data, iters)),
            Model::Cnn(_) => None,
        }
    }
}

/// Copies `data`'s rows `rows`, one after another, into `x` and their labels into `labels`
/// ([`Dataset::copy_row`], compiled for `kernels`' instruction set so that rows kept as pixel
/// bytes are scaled a vector at a time), each row prefetched a few rows ahead
/// ([`Dataset::prefetch_row`]).
pub(crate) fn gather_rows(
    kernels: lena_kernels::Kernels,
    data: &Dataset,
    rows: &[u32],
    x: &mut [f32],
    labels: &mut [u32],
) {
    let p = data.n_features;
    kernels.vectorize(
        #[inline(always)]
        || {
            // Rows `AHEAD` places on are prefetched while one is copied: several rows' misses
            // in flight rather than one row's.
            const AHEAD: usize = 4;
            for &r in rows.iter().take(AHEAD) {
                data.prefetch_row(r as usize);
            }
            for (i, ((xi, l), &r)) in x
                .chunks_exact_mut(p)
                .zip(labels.iter_mut())
                .zip(rows)
                .enumerate()
            {
                if let Some(&a) = rows.get(i + AHEAD) {
                    data.prefetch_row(a as usize);
                }
                data.copy_row(r as usize, xi);
                *l = data.labels[r as usize];
            }
        },
    );
}

/// The objective and gradient from per-chunk results, summed in chunk order:
/// `loss = sum(losses) / n + (lambda/2) ||w||^2` and, if `grad` is given,
/// `grad = sum(partials) / n + lambda w`. Shared by every model, so all regularise alike.
pub(crate) fn combine_chunks<'a>(
    k: lena_kernels::Kernels,
    lambda: f32,
    w: &[f32],
    n: usize,
    loss_sum: f64,
    mut partials: impl Iterator<Item = &'a [f32]>,
    grad: Option<&mut [f32]>,
) -> f64 {
    let inv_n = if n == 0 { 0.0 } else { 1.0 / n as f64 };
    let loss = loss_sum * inv_n + 0.5 * f64::from(lambda) * f64::from(k.norm2_sq(w));
    if let Some(g) = grad {
        assert_eq!(g.len(), w.len(), "gradient length");
        let first = partials.next().expect("at least one chunk");
        match partials.next() {
            // `(1/n) partial + lambda w`, the product rounded first: the copy, scale and
            // axpy in one pass.
            None => {
                k.lin_comb(g, inv_n as f32, first, &[lambda], &[w]);
            }
            Some(second) => {
                g.copy_from_slice(first);
                for p in std::iter::once(second).chain(partials) {
                    k.axpy(1.0, p, g);
                }
                // Scale, then axpy, in one pass.
                k.axpby(lambda, w, inv_n as f32, g);
            }
        }
    }
    loss
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model parameter outside its valid range.
    #[error(transparent)]
    BadParam(#[from] lena_kernels::BadParam),
    /// Data and model disagree on shape.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// What was compared.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Found size.
        found: usize,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
