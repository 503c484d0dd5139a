//! Linear multi-class objectives: one-versus-all logistic ridge regression and softmax.

use crate::{Error, Result};
use lena_data::Dataset;
use lena_kernels::{ClassPanel, Kernels, LinearGradient, NonzeroRows};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Bytes of `X` per block (83 MNIST rows): a block's rows stay in L2 between the scores and
/// the gradient's accumulation, which reads them once per group of five classes and two
/// vectors of columns (measured: 16 KB blocks 20 ms, 64 KB 16 ms, 256 KB 14 ms, 1 MB 21 ms,
/// `examples/gradient_profile`).
const BLOCK_BYTES: usize = 256 << 10;
/// Most rows per block (the derivative's scratch is `BLOCK x classes`).
const BLOCK: usize = 256;
/// Rows per parallel chunk. Fixed, so the summation order never depends on the thread count.
const CHUNK: usize = 2048;
/// Up to this many rows (a minibatch), scores are dot products and the gradient one
/// [`Kernels::lin_comb`] per class, written straight into the output: a matrix product's
/// packing and call overhead would cost more than the arithmetic.
const SMALL: usize = 16;

/// The most rows whose gradient [`Linear::factored_gradient`] hands on. PERF: each element of a
/// formed gradient is one chain of a product and a multiply-add per row, and a consumer forms
/// one vector after another; past eight rows the chains' latency is more than the scan it is
/// formed in hides (LENA's round at M = 200, minibatches of 15: 1.39-1.44 ms written, 1.71-1.73
/// formed; of 8: 1.055-1.076 written, 1.032-1.037 formed; Intel Xeon, AVX-512), and
/// `lin_comb_classes` writes every class at once instead.
const FACTORED: usize = 8;

/// Which loss the linear model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearKind {
    /// One-versus-all logistic regression: one binary model per class with labels +-1,
    /// loss `sum_c log(1 + exp(-y_c z_c))` per sample (EXPERIMENTS.md).
    LogisticOva,
    /// Softmax (multinomial) regression: loss `logsumexp(z) - z_label` per sample.
    Softmax,
}

impl std::str::FromStr for LinearKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "logistic_ova" | "logistic" => Ok(Self::LogisticOva),
            "softmax" => Ok(Self::Softmax),
            _ => Err(format!(
                "unknown objective {s:?}, expected one of: logistic_ova, softmax"
            )),
        }
    }
}

/// Which rows of a dataset a call uses.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    /// Every row (full batch).
    All,
    /// The listed rows (a minibatch); repeats allowed.
    Subset(&'a [u32]),
}

/// A linear model over `n_features` inputs and `n_classes` outputs with an L2 penalty.
///
/// Parameters `w` are `n_classes` rows of `n_features + 1` values, row-major; the last value of
/// each row is that class's bias (for MNIST: 10 x 785 = 7850 values). The objective on a set of
/// `n` rows is `(1/n) sum_i loss_i(w) + (lambda/2) ||w||^2`, the penalty covering every
/// parameter, bias included.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    kind: LinearKind,
    n_features: usize,
    n_classes: usize,
    lambda: f32,
    kernels: Kernels,
    /// Whether full-batch calls may take the products from the nonzero values
    /// ([`Linear::with_nonzero_products`]).
    nonzero: bool,
}

/// Most nonzero values, as a share of the features, for which the full-batch products run
/// from the nonzero values alone. PERF: on MNIST (19% nonzero) the dense block kernels took
/// 1.13-1.38 times as long (`examples/gradient_profile`, Intel Xeon family 6 model 207); a row
/// of both products in cache took 189 ns against 226-231 ns; each nonzero value costs about four
/// times what a dense value does (three loads and a multiply-add for all classes, against ten
/// multiply-adds a vector), so from about a quarter nonzero they would be slower.
const NONZERO_SHARE: f64 = 0.22;

/// A dataset's nonzero values, a layout per chunk of [`CHUNK`] rows, kept with the dataset
/// ([`Dataset::derived`]).
struct NonzeroChunks(Vec<NonzeroRows>);

/// Per-chunk scratch: scores of one block and a partial gradient.
#[derive(Clone, Debug, Default)]
struct ChunkWs {
    z: Vec<f32>,
    g: Vec<f32>,
    /// A block of a minibatch's rows and their labels, copied from the dataset; empty until
    /// a call on a subset of rows needs it.
    x: Vec<f32>,
    y: Vec<u32>,
    /// The gradient's bias column while a chunk accumulates it (contiguous, not at `g`'s
    /// stride: ten chains of adds through ten cache lines of `g` were 2% of the gradient).
    bias: Vec<f32>,
    /// The partial gradient as columns of class vectors, where the chunk's products run from
    /// the nonzero values (empty until one does).
    panel: ClassPanel,
    loss: f64,
    correct: usize,
}

/// Reusable scratch memory for a [`Linear`] model: after the first call at a given size,
/// calls allocate nothing.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    chunks: Vec<ChunkWs>,
    /// Scores of a small call (at most `SMALL` rows): all a minibatch needs, so a node's
    /// workspace holds no gradient-sized buffer.
    z_small: Vec<f32>,
    /// A small call's gradient coefficients, every class's, class by class.
    coef: Vec<f32>,
    /// A small call's bias gradients.
    bias: Vec<f32>,
}

/// Where a call of at most [`SMALL`] rows puts its gradient.
enum SmallGrad<'a> {
    /// Nowhere: the objective's value only.
    None,
    /// Its values, into the slice.
    Values(&'a mut [f32]),
    /// Its factors, handed to the closure.
    Factored(&'a mut dyn FnMut(&LinearGradient<'_>)),
}

impl Linear {
    /// A validated model; `lambda` must be finite and >= 0.
    pub fn new(kind: LinearKind, n_features: usize, n_classes: usize, lambda: f32) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::from(lena_kernels::BadParam::new(
                "lambda",
                "a finite number >= 0",
                lambda,
            )));
        }
        if n_features == 0 {
            return Err(Error::from(lena_kernels::BadParam::new(
                "n_features",
                ">= 1",
                0,
            )));
        }
        if n_classes < 2 {
            return Err(Error::from(lena_kernels::BadParam::new(
                "n_classes",
                ">= 2",
                n_classes,
            )));
        }
        Ok(Self {
            kind,
            n_features,
            n_classes,
            lambda,
            kernels: Kernels::detect(),
            nonzero: true,
        })
    }

    /// The same model with another kernel context (e.g. [`Kernels::scalar`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The same model with the full-batch products from the features' nonzero values allowed
    /// (the default) or not. Either way the floats are the same: where the kernels have those
    /// products (x86-64-v4, at most 16 classes, a multiple of 16 features, at most 22% of
    /// the features nonzero), a call over all rows builds the dataset's layout of its nonzero
    /// values once ([`Dataset::derived`]) and runs from it; sums that could differ from the
    /// dense kernels' (a `-0.0`, a non-finite weight or derivative) are redone densely.
    pub fn with_nonzero_products(mut self, on: bool) -> Self {
        self.nonzero = on;
        self
    }

    /// Number of parameters, `n_classes * (n_features + 1)`.
    pub fn dim(&self) -> usize {
        self.n_classes * (self.n_features + 1)
    }

    /// The loss kind.
    pub fn kind(&self) -> LinearKind {
        self.kind
    }

    /// The L2 penalty.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Scratch memory for calls on up to `max_rows` rows (it grows if a call needs more).
    pub fn workspace(&self, max_rows: usize) -> Workspace {
        if (1..=SMALL).contains(&max_rows) {
            // PERF: minibatches take the small path, which reads the rows in place and needs
            // only the scores (a node's workspace was a vector of d more before).
            return Workspace {
                z_small: vec![0.0; SMALL * self.n_classes],
                ..Workspace::default()
            };
        }
        let mut ws = Workspace::default();
        self.reserve_chunks(&mut ws.chunks, max_rows);
        if max_rows > 0 {
            // A minibatch's rows are copied a block at a time: one block's room per chunk.
            let rows = max_rows.min(self.block());
            for cw in &mut ws.chunks {
                self.reserve_gather(cw, rows);
            }
        }
        ws
    }

    /// Checks that `data` has the model's feature count and labels below its class count.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        if data.n_features != self.n_features {
            return Err(Error::Shape {
                what: "features per sample",
                expected: self.n_features,
                found: data.n_features,
            });
        }
        if data.n_classes > self.n_classes {
            return Err(Error::Shape {
                what: "classes in the data",
                expected: self.n_classes,
                found: data.n_classes,
            });
        }
        Ok(())
    }

    fn reserve_chunks(&self, chunks: &mut Vec<ChunkWs>, rows: usize) {
        let n_chunks = rows.div_ceil(CHUNK).max(1);
        if chunks.len() < n_chunks {
            chunks.resize_with(n_chunks, || ChunkWs {
                z: vec![0.0; BLOCK * self.n_classes],
                g: vec![0.0; self.dim()],
                x: Vec::new(),
                y: Vec::new(),
                bias: vec![0.0; self.n_classes],
                panel: ClassPanel::default(),
                loss: 0.0,
                correct: 0,
            });
        }
    }

    /// Room in `cw` to gather `rows` rows.
    fn reserve_gather(&self, cw: &mut ChunkWs, rows: usize) {
        if cw.y.len() < rows {
            cw.x.resize(rows * self.n_features, 0.0);
            cw.y.resize(rows, 0);
        }
    }

    /// Rows per block: [`BLOCK_BYTES`] of them, within 4..=[`BLOCK`].
    fn block(&self) -> usize {
        (BLOCK_BYTES / (4 * self.n_features)).clamp(4, BLOCK)
    }

    /// Objective value on `rows` of `data`.
    pub fn loss(&self, data: &Dataset, rows: Rows, w: &[f32], ws: &mut Workspace) -> f64 {
        self.eval(data, rows, w, None, ws, true)
    }

    /// Gradient on `rows` of `data` into `grad`; returns the objective value (fused).
    ///
    /// # Panics
    /// If `w` or `grad` is not of length [`Self::dim`], or `data` has another feature count.
    pub fn loss_grad(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: &mut [f32],
        ws: &mut Workspace,
    ) -> f64 {
        self.eval(data, rows, w, Some(grad), ws, true)
    }

    /// [`Self::loss_grad`]'s gradient without the objective's value: the same floats in
    /// `grad`, less work where the value costs its own operations (a minibatch of at most 16
    /// rows does not sum `||w||^2`).
    ///
    /// # Panics
    /// As [`Self::loss_grad`].
    pub fn gradient(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: &mut [f32],
        ws: &mut Workspace,
    ) {
        self.eval(data, rows, w, Some(grad), ws, false);
    }

    /// [`Self::gradient`] on at most 8 listed rows, handed to `f` in factored form (the rows,
    /// their coefficients and the biases: [`LinearGradient`]) instead of written, so that a
    /// consumer such as [`lena_kernels::Kernels::ef_scan_linear`] forms it where it reads it;
    /// [`lena_kernels::Kernels::linear_gradient_into`] writes the floats `gradient` does.
    /// Returns `false`, without calling `f`, for more rows or all of them.
    ///
    /// # Panics
    /// If `w` is not of length [`Self::dim`] or `data` has another feature count.
    pub fn factored_gradient(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        ws: &mut Workspace,
        f: &mut dyn FnMut(&LinearGradient<'_>),
    ) -> bool {
        assert_eq!(w.len(), self.dim(), "parameter length");
        assert_eq!(data.n_features, self.n_features, "feature count");
        match rows {
            Rows::Subset(idx) if (1..=FACTORED).contains(&idx.len()) => {
                self.eval_small(data, rows, w, SmallGrad::Factored(f), ws, false);
                true
            }
            _ => false,
        }
    }

    /// Fraction of `data`'s rows whose largest score is their label's.
    pub fn accuracy(&self, data: &Dataset, w: &[f32], ws: &mut Workspace) -> f64 {
        assert_eq!(w.len(), self.dim(), "parameter length");
        let n = data.n_samples();
        if n == 0 {
            return 0.0;
        }
        self.reserve_chunks(&mut ws.chunks, n);
        let p = self.n_features;
        let chunks = &mut ws.chunks[..n.div_ceil(CHUNK)];
        chunks.par_iter_mut().enumerate().for_each(|(ci, cw)| {
            let (r0, r1) = (ci * CHUNK, ((ci + 1) * CHUNK).min(n));
            cw.correct = 0;
            for b0 in (r0..r1).step_by(BLOCK) {
                let b1 = (b0 + BLOCK).min(r1);
                let nb = b1 - b0;
                let z = &mut cw.z[..nb * self.n_classes];
                self.scores(&data.features()[b0 * p..b1 * p], nb, w, z, &[]);
                for (i, zi) in z.chunks_exact(self.n_classes).enumerate() {
                    let best = argmax(zi);
                    cw.correct += usize::from(best == data.labels[b0 + i] as usize);
                }
            }
        });
        let correct: usize = chunks.iter().map(|c| c.correct).sum();
        correct as f64 / n as f64
    }

    /// Smoothness constant `L` of the objective on all rows of `data`.
    ///
    /// `L = c * lambda_max(X~^T X~ / n) + lambda`, with `X~` the rows with a constant 1 appended
    /// (the bias), `c = 1/4` for one-versus-all logistic (each head's Hessian is
    /// `X~^T diag(s (1 - s)) X~ / n` and `s (1 - s) <= 1/4`) and `c = 1/2` for softmax
    /// (`diag(p) - p p^T <= I / 2`). The largest eigenvalue comes from `iters` power iterations
    /// (deterministic start), stopped early at relative change 1e-6.
    pub fn smoothness(&self, data: &Dataset, iters: usize) -> f64 {
        let c = match self.kind {
            LinearKind::LogisticOva => 0.25,
            LinearKind::Softmax => 0.5,
        };
        c * gram_lambda_max(data, iters, self.kernels) + f64::from(self.lambda)
    }

    /// `z = X W^T + b` for `nb` contiguous rows `x`; `z` is `nb x n_classes` row-major. Brings
    /// the first rows of `ahead` into L2 meanwhile and returns how many of its floats
    /// ([`Kernels::dot_block`]).
    fn scores(&self, x: &[f32], nb: usize, w: &[f32], z: &mut [f32], ahead: &[f32]) -> usize {
        let (p, c) = (self.n_features, self.n_classes);
        let brought = self
            .kernels
            .dot_block(&x[..nb * p], p, w, p + 1, c, &mut z[..nb * c], ahead);
        with_classes!(c, add_bias(z, w, p));
        brought
    }

    fn eval(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: Option<&mut [f32]>,
        ws: &mut Workspace,
        value: bool,
    ) -> f64 {
        assert_eq!(w.len(), self.dim(), "parameter length");
        assert_eq!(data.n_features, self.n_features, "feature count");
        let p = self.n_features;
        let n_rows = match rows {
            Rows::All => data.n_samples(),
            Rows::Subset(idx) => idx.len(),
        };
        if n_rows <= SMALL {
            let grad = grad.map_or(SmallGrad::None, SmallGrad::Values);
            return self.eval_small(data, rows, w, grad, ws, value);
        }
        let chunks = &mut ws.chunks;
        self.reserve_chunks(chunks, n_rows);
        let want_grad = grad.is_some();
        let n_chunks = n_rows.div_ceil(CHUNK).max(1);
        let chunks = &mut chunks[..n_chunks];
        let block = self.block();
        let nonzero = match rows {
            Rows::All => self.nonzero_chunks(data, want_grad).and_then(|nz| {
                let (p, c) = (self.n_features, self.n_classes);
                let panel = ClassPanel::from_rows(w, p + 1, p, c);
                panel.finite().then_some((nz, panel))
            }),
            Rows::Subset(_) => None,
        };
        chunks.par_iter_mut().enumerate().for_each(|(ci, cw)| {
            let (r0, r1) = (ci * CHUNK, ((ci + 1) * CHUNK).min(n_rows));
            if let Some((nz, panel)) = &nonzero
                && self.chunk_nonzero(data, &nz.0[ci], panel, r0..r1, w, cw, want_grad)
            {
                return;
            }
            let rows = match rows {
                Rows::All => {
                    let x = data.features();
                    ChunkRows::Contiguous(
                        &x[r0 * p..r1 * p],
                        &data.labels[r0..r1],
                        &x[r1 * p..(r1 + block).min(n_rows) * p],
                    )
                }
                Rows::Subset(idx) => ChunkRows::Gathered(data, &idx[r0..r1]),
            };
            self.chunk(rows, w, cw, want_grad);
        });
        crate::combine_chunks(
            self.kernels,
            self.lambda,
            w,
            n_rows,
            chunks.iter().map(|c| c.loss).sum(),
            chunks.iter().map(|c| &c.g[..]),
            grad,
        )
    }

    /// [`Self::eval`] for at most [`SMALL`] rows, straight from `data` (no copy of the rows)
    /// into `grad` (no partial gradient to zero, copy and scale).
    fn eval_small(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: SmallGrad<'_>,
        ws: &mut Workspace,
        value: bool,
    ) -> f64 {
        if let Rows::Subset(idx) = rows
            && data.has_pixel_bytes()
        {
            // Listed rows of pixel bytes: read as bytes (a quarter of the memory) into this
            // thread's scratch, which a node's workspace then need not hold.
            thread_local! {
                static ROWS: std::cell::RefCell<Vec<f32>> =
                    const { std::cell::RefCell::new(Vec::new()) };
            }
            let (p, n) = (self.n_features, idx.len());
            // Taken for the call (not borrowed), so that a gradient handed on in factored form
            // can be used by code that itself computes another.
            let mut rows_buf = ROWS.take();
            let loss = {
                let buf = &mut rows_buf;
                // PERF: the rows start on a cache line (and each of MNIST's, 49 lines long,
                // ends on one), so no vector load of them spans two lines: DGD's round at
                // M = 200 took 0.526-0.534 ms with them 16 bytes off a line, 0.501-0.508 ms
                // aligned (Intel Xeon, AVX-512, alternated in one process). A kernel's lanes
                // run from each row's start wherever it lies, so the floats are the same.
                const SLACK: usize = 64 / size_of::<f32>();
                buf.resize(n * p + SLACK, 0.0);
                let off = buf.as_ptr().align_offset(64).min(SLACK);
                let buf = &mut buf[off..off + n * p];
                let mut labels = [0u32; SMALL];
                crate::gather_rows(self.kernels, data, idx, buf, &mut labels[..n]);
                let mut xs: [&[f32]; SMALL] = [&[]; SMALL];
                for (x, row) in xs.iter_mut().zip(buf.chunks_exact(p)) {
                    *x = row;
                }
                self.eval_rows(&xs[..n], &labels[..n], w, grad, ws, value)
            };
            ROWS.set(rows_buf);
            return loss;
        }
        let mut xs: [&[f32]; SMALL] = [&[]; SMALL];
        let mut labels = [0u32; SMALL];
        let n = match rows {
            Rows::All => {
                for (i, x) in xs.iter_mut().take(data.n_samples()).enumerate() {
                    *x = data.row(i);
                    labels[i] = data.labels[i];
                }
                data.n_samples()
            }
            Rows::Subset(idx) => {
                for (i, &r) in idx.iter().enumerate() {
                    xs[i] = data.row(r as usize);
                    labels[i] = data.labels[r as usize];
                }
                idx.len()
            }
        };
        self.eval_rows(&xs[..n], &labels[..n], w, grad, ws, value)
    }

    /// [`Self::eval_small`] on its rows `xs` with their labels; without `value`, the returned
    /// value lacks the penalty (its `||w||^2` is not summed).
    fn eval_rows(
        &self,
        xs: &[&[f32]],
        labels: &[u32],
        w: &[f32],
        grad: SmallGrad<'_>,
        ws: &mut Workspace,
        value: bool,
    ) -> f64 {
        let (p, c, n) = (self.n_features, self.n_classes, xs.len());
        let k = self.kernels;
        if ws.z_small.len() < n * c {
            ws.z_small.resize(SMALL * c, 0.0);
        }
        let z = &mut ws.z_small[..n * c];
        // PERF: every class in one call, the classes in pairs, so each sample row is read once
        // per two classes (the results are bit-identical to one class at a time).
        let weights = |class: usize| &w[class * (p + 1)..class * (p + 1) + p];
        let bias_of = |class: usize| w[class * (p + 1) + p];
        k.dot_rows_classes(xs, w, p + 1, c, z);
        for zi in z.chunks_exact_mut(c) {
            for (class, s) in zi.iter_mut().enumerate() {
                *s += bias_of(class);
            }
        }
        let loss_sum = match self.kind {
            LinearKind::LogisticOva => logistic_ova_block(k, z, labels, c),
            LinearKind::Softmax => softmax_block(k, z, labels, c),
        };
        let inv_n = if n == 0 { 0.0 } else { 1.0 / n as f64 };
        // ||w||^2 for the penalty: summed by the gradient's pass over the weights when there is
        // one (PERF: a pass less per node and round), else by its own pass.
        let mut w_sq = 0.0f32;
        // g_k = lambda w_k + sum_i (d_ik / n) x_i; bias: lambda b_k + sum_i d_ik / n.
        // Fills class `class`'s coefficients and returns its bias gradient; adds its bias to w_sq.
        let coefficients = |class: usize, coef: &mut [f32], w_sq: &mut f32| {
            let wb = bias_of(class);
            let mut bias = self.lambda * wb;
            for (i, ci) in coef.iter_mut().enumerate() {
                *ci = z[i * c + class] * inv_n as f32;
                bias += *ci;
            }
            *w_sq = wb.mul_add(wb, *w_sq);
            bias
        };
        let grad = match grad {
            SmallGrad::None => None,
            // (No rows: the penalty's gradient alone, which the factors do not describe.)
            SmallGrad::Values(g) if value || n == 0 => Some(g),
            out => {
                // The gradient alone: every class's coefficients and bias, then the values written
                // (`linear_gradient_into`: lin_comb_classes for more than four rows, else lin_comb2
                // a pair of classes at a time) or the factors handed on.
                if ws.coef.len() < n * c {
                    ws.coef.resize(SMALL * c, 0.0);
                }
                ws.bias.resize(c, 0.0);
                for (class, (cc, b)) in ws.coef[..n * c]
                    .chunks_exact_mut(n)
                    .zip(&mut ws.bias)
                    .enumerate()
                {
                    *b = coefficients(class, cc, &mut w_sq);
                }
                let factors = LinearGradient {
                    lambda: self.lambda,
                    w,
                    rows: xs,
                    coef: &ws.coef[..n * c],
                    bias: &ws.bias,
                };
                match out {
                    SmallGrad::Values(g) => {
                        assert_eq!(g.len(), self.dim(), "gradient length");
                        k.linear_gradient_into(&factors, g);
                    }
                    SmallGrad::Factored(f) => f(&factors),
                    SmallGrad::None => unreachable!("matched above"),
                }
                // Without the value, the penalty's ||w||^2 is not summed.
                return loss_sum * inv_n;
            }
        };
        if let Some(g) = grad {
            assert_eq!(g.len(), self.dim(), "gradient length");
            let (mut coef0, mut coef1) = ([0.0f32; SMALL], [0.0f32; SMALL]);
            let mut class = 0;
            while class < c {
                let (coef0, coef1) = (&mut coef0[..n], &mut coef1[..n]);
                let b0 = coefficients(class, coef0, &mut w_sq);
                // PERF: two classes per pass over the sample rows where lin_comb2 applies.
                if class + 1 < c && n <= 4 {
                    let b1 = coefficients(class + 1, coef1, &mut w_sq);
                    let (g0, g1) = g[class * (p + 1)..(class + 2) * (p + 1)].split_at_mut(p + 1);
                    let (out, base) = (
                        [&mut g0[..p], &mut g1[..p]],
                        [weights(class), weights(class + 1)],
                    );
                    let sq = k.lin_comb2(out, self.lambda, base, [coef0, coef1], xs);
                    w_sq += sq[0] + sq[1];
                    (g0[p], g1[p]) = (b0, b1);
                    class += 2;
                } else {
                    let range = class * (p + 1)..class * (p + 1) + p;
                    w_sq += k.lin_comb(&mut g[range], self.lambda, weights(class), coef0, xs);
                    g[class * (p + 1) + p] = b0;
                    class += 1;
                }
            }
        } else {
            w_sq = k.norm2_sq(w);
        }
        loss_sum * inv_n + 0.5 * f64::from(self.lambda) * f64::from(w_sq)
    }

    /// The bytes of `data`'s layout of nonzero values where this model's calls over all of its
    /// rows run from them (building it if no call has yet), `None` where they run from the
    /// dense rows (see [`Linear::with_nonzero_products`]).
    pub fn nonzero_layout_bytes(&self, data: &Dataset) -> Option<usize> {
        let nz = self.nonzero_chunks(data, true)?;
        Some(nz.0.iter().map(NonzeroRows::bytes).sum())
    }

    /// The layout of `data`'s nonzero values for this model's blocks, where a call over all of
    /// `data`'s rows may run from them (see [`Linear::with_nonzero_products`]); built if
    /// `build`, else only if a call built it.
    ///
    /// PERF: only a gradient's call builds it (215 ms for MNIST's 60 000 rows on two threads,
    /// Intel Xeon family 6 model 207): a dataset that is only evaluated (a test set, a minibatch
    /// run's training loss) would not save that back.
    fn nonzero_chunks(&self, data: &Dataset, build: bool) -> Option<Arc<NonzeroChunks>> {
        let (p, c, n) = (self.n_features, self.n_classes, data.n_samples());
        if !self.nonzero
            || !self.kernels.has_nonzero_products()
            || c > 16
            || !p.is_multiple_of(16)
            || n <= SMALL
        {
            return None;
        }
        let block = self.block();
        let layout = |d: &Dataset| {
            let x = d.features();
            let nonzero: usize = x
                .par_chunks(CHUNK * p)
                .map(|x| x.iter().filter(|v| **v != 0.0).count())
                .sum();
            if nonzero as f64 > NONZERO_SHARE * x.len() as f64 {
                return None;
            }
            let chunks: Option<Vec<NonzeroRows>> = x
                .par_chunks(CHUNK * p)
                .map(|x| {
                    let rows = x.len() / p;
                    let blocks: Vec<_> = (0..rows)
                        .step_by(block)
                        .map(|b0| (b0, (b0 + block).min(rows)))
                        .collect();
                    NonzeroRows::build(x, p, &blocks)
                })
                .collect();
            chunks.map(NonzeroChunks)
        };
        if build {
            data.derived(block as u64, layout)
        } else {
            data.derived_if_built(block as u64)
        }
    }

    /// [`Self::chunk`] over the rows `rows` of all of `data`'s, with the products from the
    /// chunk's nonzero values `nz` (its rows counted from the chunk's first) and the class
    /// vectors `panel`: the same floats. `false` where a sum
    /// might not be the dense kernels' (a `-0.0` in the gradient, a derivative not finite):
    /// the caller then does the chunk densely. A score of `-0.0` is redone densely here.
    #[allow(clippy::too_many_arguments)]
    fn chunk_nonzero(
        &self,
        data: &Dataset,
        nz: &NonzeroRows,
        panel: &ClassPanel,
        rows: std::ops::Range<usize>,
        w: &[f32],
        cw: &mut ChunkWs,
        want_grad: bool,
    ) -> bool {
        let (p, c) = (self.n_features, self.n_classes);
        let x = data.features();
        cw.loss = 0.0;
        if want_grad {
            if cw.panel.columns() != p || cw.panel.classes() != c {
                cw.panel = ClassPanel::zeros(p, c);
            } else {
                cw.panel.clear();
            }
            cw.bias.fill(0.0);
        }
        let block = self.block();
        for b0 in rows.clone().step_by(block) {
            let b1 = (b0 + block).min(rows.end);
            let nb = b1 - b0;
            let z = &mut cw.z[..nb * c];
            let (i0, i1) = (b0 - rows.start, b1 - rows.start);
            if !self.kernels.nonzero_dot_rows(nz, i0, i1, panel, z) {
                self.kernels
                    .dot_block(&x[b0 * p..b1 * p], p, w, p + 1, c, z, &[]);
            }
            with_classes!(c, add_bias(z, w, p));
            cw.loss += self.derivatives(z, &data.labels[b0..b1]);
            if want_grad {
                if !self.kernels.nonzero_add_outer(nz, i0, i1, z, &mut cw.panel) {
                    return false;
                }
                with_classes!(c, add_column_sums(&mut cw.bias, z));
            }
        }
        if want_grad {
            if cw.panel.has_negative_zero() {
                return false;
            }
            cw.panel.write_rows(&mut cw.g, p + 1);
            self.write_bias(cw);
        }
        true
    }

    /// Replaces the scores `z` of rows with `labels` by the loss's derivatives with respect
    /// to them; returns the rows' loss sum.
    fn derivatives(&self, z: &mut [f32], labels: &[u32]) -> f64 {
        let c = self.n_classes;
        match self.kind {
            LinearKind::LogisticOva => logistic_ova_block(self.kernels, z, labels, c),
            LinearKind::Softmax => softmax_block(self.kernels, z, labels, c),
        }
    }

    /// The chunk's bias column, accumulated apart, into its gradient.
    fn write_bias(&self, cw: &mut ChunkWs) {
        let p = self.n_features;
        for (k, b) in cw.bias.iter().enumerate() {
            cw.g[k * (p + 1) + p] = *b;
        }
    }

    /// Loss sum (and gradient sum, unscaled) over a chunk's rows, a block at a time.
    fn chunk(&self, rows: ChunkRows, w: &[f32], cw: &mut ChunkWs, want_grad: bool) {
        let (p, c) = (self.n_features, self.n_classes);
        let n = rows.len();
        cw.loss = 0.0;
        if want_grad {
            cw.g.fill(0.0);
            cw.bias.fill(0.0);
        }
        let block = self.block();
        if let ChunkRows::Gathered(..) = rows {
            self.reserve_gather(cw, block.min(n));
        }
        for b0 in (0..n).step_by(block) {
            let b1 = (b0 + block).min(n);
            let nb = b1 - b0;
            let mut next: &[f32] = &[];
            let (xb, labels): (&[f32], &[u32]) = match rows {
                ChunkRows::Contiguous(x, y, after) => {
                    next = if b1 < n {
                        &x[b1 * p..(b1 + block).min(n) * p]
                    } else {
                        after
                    };
                    (&x[b0 * p..b1 * p], &y[b0..b1])
                }
                ChunkRows::Gathered(data, idx) => {
                    // A block at a time: a minibatch's copy is one block's room, not the
                    // whole minibatch's (the same rows in the same order as before).
                    let idx = &idx[b0..b1];
                    let (x, y) = (&mut cw.x[..nb * p], &mut cw.y[..nb]);
                    crate::gather_rows(self.kernels, data, idx, x, y);
                    (x, y)
                }
            };
            let z = &mut cw.z[..nb * c];
            // PERF: with a gradient, and where the kernels request ahead (a choice per CPU, see
            // `Kernels::requests_ahead`), the scores bring the first half of the next block into L2
            // and the accumulation the rest, so memory streams during both (the softmax gradient
            // 10-13% faster, Intel Xeon family 6 model 207, alternated in one process); the last
            // block brings the next chunk's first.
            let brought = self.scores(xb, nb, w, z, if want_grad { next } else { &[] });
            // Replace scores by d loss / d score, accumulating the loss.
            cw.loss += self.derivatives(z, labels);
            if want_grad {
                // G[:, :p] += D^T X_b (X_b still in cache, the next block on its way);
                // bias column += column sums of D.
                self.kernels
                    .add_outer_block(&mut cw.g, p + 1, c, z, xb, p, &next[brought..]);
                with_classes!(c, add_column_sums(&mut cw.bias, z));
            }
        }
        if want_grad {
            self.write_bias(cw);
        }
    }
}

/// A chunk's rows: contiguous with their labels (all rows of a dataset), or listed rows of a
/// dataset, copied a block at a time.
#[derive(Clone, Copy)]
enum ChunkRows<'a> {
    /// The chunk's rows, their labels, and the rows after the chunk that its last block brings
    /// into L2 (the next chunk's first block, which the same thread usually takes next: rayon
    /// hands each thread a run of neighbouring chunks).
    Contiguous(&'a [f32], &'a [u32], &'a [f32]),
    Gathered(&'a Dataset, &'a [u32]),
}

impl ChunkRows<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Contiguous(_, y, _) => y.len(),
            Self::Gathered(_, idx) => idx.len(),
        }
    }
}

/// Index of the largest value (the first on ties; NaN never wins).
fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in z.iter().enumerate().skip(1) {
        if v > z[best] {
            best = k;
        }
    }
    best
}

/// One-vs-all logistic loss of a block of rows (`z` is `rows x c` row-major); overwrites the
/// scores with d loss / d score.
///
/// Per entry, with `y = +1` for the row's label and `-1` otherwise and `t = -y z`:
/// loss `softplus(t)`, derivative `-y sigmoid(t)`. Negating the label entries turns `z` into
/// `t` and `sigmoid(t)` into the derivative, so the transcendental work is one flat,
/// vectorised pass ([`Kernels::softplus_sigmoid`]).
fn logistic_ova_block(k: Kernels, z: &mut [f32], labels: &[u32], c: usize) -> f64 {
    for (row, &l) in labels.iter().enumerate() {
        z[row * c + l as usize] *= -1.0;
    }
    let loss = k.softplus_sigmoid(z);
    for (row, &l) in labels.iter().enumerate() {
        z[row * c + l as usize] *= -1.0;
    }
    loss
}

/// Softmax cross-entropy of a block of rows; overwrites the scores with
/// `softmax(z) - onehot(label)`. Loss per row: `log sum_k exp(z_k - m) - (z_label - m)` with
/// `m` the row's maximum.
fn softmax_block(k: Kernels, z: &mut [f32], labels: &[u32], c: usize) -> f64 {
    with_classes!(c, softmax_rows(k, z, labels))
}

/// Runs `$f::<C>(args.., c)` with `C = 10` when `c` is 10 (MNIST's and CIFAR's classes) and
/// `C = 0` otherwise. The per-row loops take `C` for `c` when it is not 0: a row's length
/// known when compiling unrolls them (PERF: a block's scalar softmax, 4.7% of MNIST's
/// full-batch gradient, was loops over a row of unknown length). The operations and their
/// order are the same either way.
macro_rules! with_classes {
    ($c:expr, $f:ident($($arg:expr),*)) => {
        match $c {
            10 => $f::<10>($($arg,)* 10),
            c => $f::<0>($($arg,)* c),
        }
    };
}
use with_classes;

/// `z[i * c + k] += b_k` for each row `i`, `b_k` class `k`'s bias (the last of its `p + 1`
/// parameters in `w`). `C` is `c` or 0 ([`with_classes`]).
fn add_bias<const C: usize>(z: &mut [f32], w: &[f32], p: usize, c: usize) {
    let c = if C > 0 { C } else { c };
    for zi in z.chunks_exact_mut(c) {
        for (k, zk) in zi.iter_mut().enumerate() {
            *zk += w[k * (p + 1) + p];
        }
    }
}

/// `sums[k] += z[i * c + k]` for each row `i` in order. `C` is `c` or 0 ([`with_classes`]).
fn add_column_sums<const C: usize>(sums: &mut [f32], z: &[f32], c: usize) {
    let c = if C > 0 { C } else { c };
    let sums = &mut sums[..c];
    for zi in z.chunks_exact(c) {
        for (b, dk) in sums.iter_mut().zip(zi) {
            *b += dk;
        }
    }
}

/// [`softmax_block`] with `C` as in [`with_classes`].
fn softmax_rows<const C: usize>(k: Kernels, z: &mut [f32], labels: &[u32], c: usize) -> f64 {
    let c = if C > 0 { C } else { c };
    let mut loss = 0.0f64;
    for (zi, &l) in z.chunks_exact_mut(c).zip(labels) {
        let m = zi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in zi.iter_mut() {
            *v -= m;
        }
        loss -= f64::from(zi[l as usize]);
    }
    k.exp(z);
    for (zi, &l) in z.chunks_exact_mut(c).zip(labels) {
        let s: f32 = zi.iter().sum();
        loss += f64::from(s.ln());
        let inv = 1.0 / s;
        for v in zi.iter_mut() {
            *v *= inv;
        }
        zi[l as usize] -= 1.0;
    }
    loss
}

/// Largest eigenvalue of `X~^T X~ / n` by power iteration (X~ = rows with a 1 appended).
fn gram_lambda_max(data: &Dataset, iters: usize, k: Kernels) -> f64 {
    let (n, p) = (data.n_samples(), data.n_features);
    if n == 0 {
        return 0.0;
    }
    let mut v = vec![1.0f32 / ((p + 1) as f32).sqrt(); p + 1];
    let mut next = vec![0.0f32; p + 1];
    let mut lambda = 0.0f64;
    for _ in 0..iters.max(1) {
        // next = X~^T (X~ v) / n, in fixed chunks summed in order.
        let partials: Vec<Vec<f32>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|ci| {
                let mut acc = vec![0.0f32; p + 1];
                for r in ci * CHUNK..((ci + 1) * CHUNK).min(n) {
                    let row = data.row(r);
                    let u = k.dot(row, &v[..p]) + v[p];
                    k.axpy(u, row, &mut acc[..p]);
                    acc[p] += u;
                }
                acc
            })
            .collect();
        next.fill(0.0);
        for part in &partials {
            k.axpy(1.0 / n as f32, part, &mut next);
        }
        let norm = f64::from(k.norm2_sq(&next)).sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        let prev = lambda;
        lambda = norm; // ||A v|| with ||v|| = 1 converges to lambda_max for A >= 0.
        k.scale((1.0 / norm) as f32, &mut next);
        std::mem::swap(&mut v, &mut next);
        if (lambda - prev).abs() <= 1e-6 * lambda {
            break;
        }
    }
    lambda
}
