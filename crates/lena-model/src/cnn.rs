//! A convolutional network for 28 x 28 single-channel images (MNIST), with a flat parameter
//! vector so that every algorithm and compressor applies to it unchanged.
//!
//! Activations of the convolutional part are stored channel-major over a block of samples
//! (`[channel][sample][row][column]`), so one convolution over the whole block is a single
//! matrix product: `out (C_out x B*P) = W (C_out x C_in*k*k) . col (C_in*k*k x B*P)`, with `col`
//! the im2col unfolding of the block (P output positions per sample). The fully connected part
//! stores `[sample][feature]`. Where faer's tiles would be mostly empty (the paper's network:
//! 10 and 20 output channels), the convolutions, their weight gradients, the unfolded input's
//! gradient and the small dense layers run this crate's direct kernels instead, each giving
//! faer's floats (tested), and keep no unfolding they do not need; every other product goes
//! through faer. The element-wise layers (pooling, ReLU, dropout, log-softmax) are plain loops.
//!
//! Samples are processed in fixed blocks inside fixed chunks; chunks run in parallel and their
//! partial gradients are summed in chunk order, so results do not depend on the thread count.
//! Dropout masks are drawn per sample from `(seed, position in the minibatch, layer)`, so they
//! depend neither on threads nor on how the minibatch is blocked.

use crate::{Error, Result, Rows};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use lena_data::Dataset;
use lena_kernels::Kernels;
use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Samples per parallel chunk. Fixed, so the summation order never depends on the thread count.
const CHUNK: usize = 64;
/// faer 0.24 takes a product of at most this many multiply-adds to nano-gemm, whose sums may
/// run in another order than its general kernels' (FMAs from zero along the inner dimension in
/// pieces of 512), which this crate's direct kernels follow.
const NANO_GEMM_THRESHOLD: usize = 16 * 16 * 16;
/// Bytes of activations and unfolded inputs one block may use (so a block stays in L2).
const BLOCK_BYTES: usize = 1 << 20;

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CnnArch {
    /// The paper's network (PyTorch's classic MNIST example): conv 1->10 (5x5), max-pool 2,
    /// ReLU, conv 10->20 (5x5), channel dropout, max-pool 2, ReLU, fully connected 320->50,
    /// ReLU, dropout, 50->10, log-softmax. 21 840 parameters.
    Small,
    /// A wider network (PyTorch's current MNIST example): conv 1->32 (3x3), ReLU, conv 32->64
    /// (3x3), ReLU, max-pool 2, dropout, fully connected 9216->128, ReLU, dropout, 128->10,
    /// log-softmax. 1 199 882 parameters.
    Wide,
    /// A multilayer perceptron ([`Cnn::mlp`]): fully connected layers with ReLU (and dropout
    /// after each, if the rate is positive), 784 inputs, 10 outputs, log-softmax.
    Mlp,
}

/// The layer list of `ops`, with a `'static` lifetime so that networks stay small and `Copy`:
/// each distinct list is stored once for the life of the process (MLPs are built from their
/// hidden sizes; a process sees a handful of architectures).
fn interned(ops: Vec<Op>) -> &'static [Op] {
    static SEEN: std::sync::Mutex<Vec<&'static [Op]>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = seen.iter().find(|k| **k == &ops[..]) {
        return known;
    }
    let new: &'static [Op] = Box::leak(ops.into_boxed_slice());
    seen.push(new);
    new
}

/// A convolution with stride 1 and no padding over `cin` planes of `h x w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
}

impl Conv {
    pub fn ho(&self) -> usize {
        self.h - self.k + 1
    }
    pub fn wo(&self) -> usize {
        self.w - self.k + 1
    }
    /// Rows of the unfolded input: `cin * k * k`.
    pub fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Whether the forward pass computes this convolution directly ([`Kernels::conv_valid`])
    /// rather than as the unfolded input through faer's product (the same floats either way).
    ///
    /// PERF: directly where faer's tiles (24 output channels on AVX2) would be half empty: the
    /// paper's two layers (10 and 20 output channels; evaluation 1.8x faster on AMD EPYC). The
    /// wide network's layers (32 and 64 channels) keep the product: its second layer (288
    /// weights per channel) was 1.2x slower directly, since faer's packed tiles are full there
    /// and the direct loops read input planes that outgrow the L1 cache.
    pub fn direct(&self) -> bool {
        self.cout <= 24
    }

    /// Whether the backward pass computes the gradient of this convolution's unfolded input over
    /// `nb` samples with [`Kernels::product_tn`] rather than faer's product (the same floats,
    /// tested): where faer's tiles would be mostly empty (at most 24 output channels, the
    /// product's depth) and the product is beyond faer's small-product sizes.
    ///
    /// PERF: the paper's second layer (250 x 384 outputs over 20 channels a block): 16.5 us a
    /// sample against faer's 17.1 (83% and 80% of the FMA peak alone, AMD EPYC Zen 1); the
    /// training step 1% faster. Each tile sums only 20 terms, so its 10 stores bound it.
    pub fn input_grad_direct(&self, nb: usize) -> bool {
        self.direct() && self.kk() * nb * self.ho() * self.wo() * self.cout > NANO_GEMM_THRESHOLD
    }

    /// Whether the backward pass computes this convolution's weight gradient directly
    /// ([`Kernels::conv_weight_grad`], on `kernels`' path) rather than as faer's product with
    /// the unfolded input (the same floats either way, tested); with the forward pass direct
    /// too, the layer keeps no unfolded input.
    ///
    /// PERF: directly where faer's tiles would be mostly empty and a kernel row fills most of a
    /// vector: the paper's first layer (10 channels of 25 weights; through faer 45% of the FMA
    /// peak, AMD EPYC Zen 1); and every layer whose kernel rows the path packs several to a
    /// vector ([`Kernels::conv_weight_grad_packs`]): the paper's second layer on AVX-512, with no
    /// unfolding kept (on AVX2, 250 weights a channel, faer reaches about 75% where a 5-wide
    /// kernel row would fill 5 of 8 lanes).
    pub fn weight_grad_direct(&self, kernels: Kernels) -> bool {
        self.direct()
            && self.k <= kernels.f32_lanes()
            && (self.kk() <= 32 || kernels.conv_weight_grad_packs(self.k))
    }

    /// Length of the unfolded input a block of `samples` keeps on `kernels`' path: none where
    /// both passes are direct ([`Conv::weight_grad_direct`]).
    fn unfolded_len(&self, kernels: Kernels, samples: usize) -> usize {
        if self.weight_grad_direct(kernels) {
            0
        } else {
            self.kk() * self.ho() * self.wo() * samples
        }
    }

    /// The kernels' shape of this convolution over `samples` samples.
    pub fn shape(&self, samples: usize) -> lena_kernels::ConvShape {
        lena_kernels::ConvShape {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            h: self.h,
            w: self.w,
            samples,
        }
    }
}

/// One layer. Sizes are per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Convolution; parameters `cout x (cin k k)` weights (row-major, `[co][ci][ki][kj]`), then
    /// `cout` biases.
    Conv(Conv),
    /// 2 x 2 max-pooling with stride 2 over `c` planes of `h x w` (even sizes).
    Pool { c: usize, h: usize, w: usize },
    /// `max(0, x)` element-wise (ReLU).
    Relu,
    /// Inverted dropout over `c` groups of `hw` values: one draw per group (`channelwise`, as
    /// PyTorch's `Dropout2d`) or per value. The rate is the model's.
    Dropout {
        c: usize,
        hw: usize,
        channelwise: bool,
    },
    /// From the channel-major block layout to `[sample][c * hw]` (PyTorch's flattening order).
    Flatten { c: usize, hw: usize },
    /// Fully connected; parameters `output x input` weights (row-major), then `output` biases.
    Dense { input: usize, output: usize },
}

const SMALL_OPS: &[Op] = &[
    Op::Conv(Conv {
        cin: 1,
        cout: 10,
        k: 5,
        h: 28,
        w: 28,
    }),
    Op::Pool {
        c: 10,
        h: 24,
        w: 24,
    },
    Op::Relu,
    Op::Conv(Conv {
        cin: 10,
        cout: 20,
        k: 5,
        h: 12,
        w: 12,
    }),
    Op::Dropout {
        c: 20,
        hw: 64,
        channelwise: true,
    },
    Op::Pool { c: 20, h: 8, w: 8 },
    Op::Relu,
    Op::Flatten { c: 20, hw: 16 },
    Op::Dense {
        input: 320,
        output: 50,
    },
    Op::Relu,
    Op::Dropout {
        c: 1,
        hw: 50,
        channelwise: false,
    },
    Op::Dense {
        input: 50,
        output: 10,
    },
];

const WIDE_OPS: &[Op] = &[
    Op::Conv(Conv {
        cin: 1,
        cout: 32,
        k: 3,
        h: 28,
        w: 28,
    }),
    Op::Relu,
    Op::Conv(Conv {
        cin: 32,
        cout: 64,
        k: 3,
        h: 26,
        w: 26,
    }),
    Op::Relu,
    Op::Pool {
        c: 64,
        h: 24,
        w: 24,
    },
    Op::Dropout {
        c: 64,
        hw: 144,
        channelwise: false,
    },
    Op::Flatten { c: 64, hw: 144 },
    Op::Dense {
        input: 9216,
        output: 128,
    },
    Op::Relu,
    Op::Dropout {
        c: 1,
        hw: 128,
        channelwise: false,
    },
    Op::Dense {
        input: 128,
        output: 10,
    },
];

/// Input values per sample (28 x 28).
pub const INPUT: usize = 784;
/// Output classes.
pub const CLASSES: usize = 10;

impl Op {
    /// Output values per sample, given the input's.
    pub fn out_size(&self, input: usize) -> usize {
        match *self {
            Op::Conv(c) => c.cout * c.ho() * c.wo(),
            Op::Pool { c, h, w } => c * (h / 2) * (w / 2),
            Op::Relu => input,
            Op::Dropout { c, hw, .. } | Op::Flatten { c, hw } => c * hw,
            Op::Dense { output, .. } => output,
        }
    }

    /// Weights the forward pass reads transposed, from [`Kernels::dense`]: a small dense
    /// layer's `input x output` (0 for other layers and large dense layers, which faer's
    /// product takes).
    ///
    /// PERF: faer repacks the weights at every block: the paper's first dense layer (320 x 50)
    /// took 1.63 us a row in blocks of 6, the direct kernel from weights transposed once a call
    /// 1.05 (AMD EPYC Zen 1, alternated in one process). A large layer (the wide network's 9216
    /// x 128) keeps faer's cache blocking.
    pub fn transposed_len(&self) -> usize {
        match *self {
            Op::Dense { input, output } if input * output <= 1 << 15 => input * output,
            _ => 0,
        }
    }

    /// Whether the forward pass computes this layer over a block of `nb` rows with
    /// [`Kernels::dense`] (the same floats as faer's product, tested): a small dense layer, two
    /// rows or more (faer takes one row as a matrix-vector product, summed in another order),
    /// and more multiply-adds than faer gives its small-product kernels (`16^3` in faer 0.24:
    /// nano-gemm, which sums the wide network's last layer over 2 or 3 rows in another order).
    pub fn dense_direct(&self, nb: usize) -> bool {
        let n = self.transposed_len();
        n > 0 && nb > 1 && nb * n > NANO_GEMM_THRESHOLD
    }

    /// Parameters of the layer.
    pub fn params(&self) -> usize {
        match *self {
            Op::Conv(c) => c.cout * c.kk() + c.cout,
            Op::Dense { input, output } => output * input + output,
            _ => 0,
        }
    }
}

impl CnnArch {
    /// The layers of a convolutional architecture (an MLP's depend on its hidden sizes).
    pub(crate) fn ops(self) -> &'static [Op] {
        match self {
            CnnArch::Small => SMALL_OPS,
            CnnArch::Wide => WIDE_OPS,
            CnnArch::Mlp => &[],
        }
    }
}

/// Keep decisions of one dropout layer for the sample at position `pos` of a minibatch: one per
/// group (`channelwise`) or per value, `true` with probability `1 - p`. A pure function of its
/// arguments, shared with the f64 reference.
pub(crate) fn dropout_keep(
    seed: u64,
    pos: usize,
    layer: usize,
    draws: usize,
    p: f32,
    out: &mut impl FnMut(usize, bool),
) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(
        seed ^ (pos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((layer as u64) << 56),
    );
    // keep iff u >= p with u uniform on [0, 1) in steps of 2^-32.
    let threshold = (f64::from(p) * 4_294_967_296.0).min(u32::MAX as f64) as u64;
    for i in 0..draws {
        out(i, u64::from(rng.next_u32()) >= threshold);
    }
}

/// The convolutional network of [`CnnArch`] with cross-entropy loss, dropout rate `p` on its
/// hidden layers and an L2 penalty `lambda` on every parameter.
///
/// The objective on `n` samples is `(1/n) sum_i (logsumexp(z_i) - z_i[y_i]) + (lambda/2)
/// ||w||^2`. Dropout applies only when a gradient call passes a dropout seed (training);
/// losses and accuracies are evaluated without it.
#[derive(Clone, Copy, Debug)]
pub struct Cnn {
    arch: CnnArch,
    ops: &'static [Op],
    dropout: f32,
    lambda: f32,
    kernels: Kernels,
}

/// Scratch memory of one chunk: activations, unfolded inputs, masks, a partial gradient.
#[derive(Clone, Debug, Default)]
struct ChunkWs {
    /// Output of each layer (index 0: the input), for one block.
    acts: Vec<Vec<f32>>,
    /// Unfolded input of each convolution (empty for other layers).
    cols: Vec<Vec<f32>>,
    /// Dropout multipliers (0 or 1/(1-p)) of each dropout layer.
    masks: Vec<Vec<f32>>,
    /// Position of each pooled maximum (0..4).
    argmax: Vec<Vec<u8>>,
    /// Backward buffers.
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    d_col: Vec<f32>,
    labels: Vec<u32>,
    g: Vec<f32>,
    loss: f64,
    correct: usize,
}

/// A call's weights: as given, and the small dense layers' transposed.
#[derive(Clone, Copy)]
struct Weights<'a> {
    w: &'a [f32],
    dense_t: &'a [f32],
}

/// Reusable scratch memory for a [`Cnn`]: after the first call at a given size, calls allocate
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct CnnWorkspace {
    rows: Vec<u32>,
    chunks: Vec<ChunkWs>,
    /// Each chunk's loss and correct count, in chunk order, of a call without a gradient.
    parts: Vec<(f64, usize)>,
    /// The call's weights of each small dense layer transposed ([`Op::transposed_len`]), layer
    /// after layer, for [`Kernels::dense`].
    dense_t: Vec<f32>,
}

impl Cnn {
    /// A network; `dropout` must be in `[0, 1)` and `lambda` finite and non-negative.
    ///
    /// # Panics
    /// For [`CnnArch::Mlp`], whose hidden sizes [`Cnn::mlp`] takes.
    pub fn new(arch: CnnArch, dropout: f32, lambda: f32) -> Result<Self> {
        assert!(arch != CnnArch::Mlp, "an MLP is made by Cnn::mlp");
        Self::with_ops(arch, arch.ops(), dropout, lambda)
    }

    /// A multilayer perceptron for MNIST: 784 inputs, fully connected hidden layers of the
    /// given sizes, each followed by ReLU (and by dropout if `dropout > 0`), then 10 outputs
    /// and softmax cross-entropy. `hidden` holds 1 to 5 sizes, each at least 1.
    pub fn mlp(hidden: &[usize], dropout: f32, lambda: f32) -> Result<Self> {
        if hidden.is_empty() || hidden.len() > 5 || hidden.contains(&0) {
            return Err(Error::from(lena_kernels::BadParam::new(
                "model.hidden",
                "1 to 5 hidden layer sizes, each >= 1",
                format!("{hidden:?}"),
            )));
        }
        let mut ops = Vec::new();
        let mut input = INPUT;
        for &h in hidden {
            ops.push(Op::Dense { input, output: h });
            ops.push(Op::Relu);
            if dropout > 0.0 {
                ops.push(Op::Dropout {
                    c: 1,
                    hw: h,
                    channelwise: false,
                });
            }
            input = h;
        }
        ops.push(Op::Dense {
            input,
            output: CLASSES,
        });
        Self::with_ops(CnnArch::Mlp, interned(ops), dropout, lambda)
    }

    fn with_ops(arch: CnnArch, ops: &'static [Op], dropout: f32, lambda: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::from(lena_kernels::BadParam::new(
                "model.dropout",
                "in [0, 1)",
                dropout,
            )));
        }
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::from(lena_kernels::BadParam::new(
                "model.lambda",
                "finite and >= 0",
                lambda,
            )));
        }
        Ok(Self {
            arch,
            ops,
            dropout,
            lambda,
            kernels: Kernels::detect(),
        })
    }

    /// The layers.
    pub(crate) fn ops(&self) -> &'static [Op] {
        self.ops
    }

    /// The same network with the given SIMD dispatch (tests compare paths).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The architecture.
    pub fn arch(&self) -> CnnArch {
        self.arch
    }

    /// The dropout rate.
    pub fn dropout(&self) -> f32 {
        self.dropout
    }

    /// The L2 penalty.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Number of parameters.
    pub fn dim(&self) -> usize {
        self.ops().iter().map(Op::params).sum()
    }

    /// Multiply-adds per sample, `(forward, backward)`: the forward pass's are its products (a
    /// convolution's `cout x cin k^2` per output position, a dense layer's `output x input`);
    /// the backward pass's are each product's weight gradient and, past the first layer, its
    /// input gradient, as many again each. Pooling, activations, dropout and the loss are not
    /// counted. Over a core's rate of fused multiply-adds, a compute floor.
    pub fn multiply_adds(&self) -> (u64, u64) {
        let (mut forward, mut backward) = (0, 0);
        for (l, op) in self.ops().iter().enumerate() {
            let m = match *op {
                Op::Conv(c) => c.cout * c.kk() * c.ho() * c.wo(),
                Op::Dense { input, output } => output * input,
                _ => 0,
            } as u64;
            forward += m;
            // As in the backward pass: the first layer's input gradient is never needed.
            backward += if l > 0 { 2 * m } else { m };
        }
        (forward, backward)
    }

    /// Per-sample sizes of every layer's output, the input first.
    fn sizes(&self) -> impl Iterator<Item = usize> {
        let mut size = INPUT;
        std::iter::once(INPUT).chain(self.ops().iter().map(move |op| {
            size = op.out_size(size);
            size
        }))
    }

    /// Samples per block: as many as fit [`BLOCK_BYTES`], at least 1, at most [`CHUNK`].
    fn block(&self) -> usize {
        let per_sample: usize = self.sizes().sum::<usize>()
            + self
                .ops()
                .iter()
                .map(|op| match op {
                    Op::Conv(c) => c.kk() * c.ho() * c.wo(),
                    _ => 0,
                })
                .sum::<usize>();
        (BLOCK_BYTES / (4 * per_sample)).clamp(1, CHUNK)
    }

    /// He (Kaiming) uniform initialisation: weights uniform on `+-sqrt(6 / fan_in)` (variance
    /// `2 / fan_in`), biases zero.
    pub fn init(&self, rng: &mut dyn RngCore, w: &mut [f32]) {
        assert_eq!(w.len(), self.dim(), "parameter length");
        let mut off = 0;
        for op in self.ops() {
            let (fan_in, weights, biases) = match *op {
                Op::Conv(c) => (c.kk(), c.cout * c.kk(), c.cout),
                Op::Dense { input, output } => (input, output * input, output),
                _ => continue,
            };
            let bound = (6.0 / fan_in as f64).sqrt() as f32;
            for wi in &mut w[off..off + weights] {
                *wi = rng.random_range(-bound..bound);
            }
            w[off + weights..off + weights + biases].fill(0.0);
            off += weights + biases;
        }
    }

    /// Scratch memory for calls on up to `max_rows` rows (it grows if a call needs more).
    pub fn workspace(&self, max_rows: usize) -> CnnWorkspace {
        let mut ws = CnnWorkspace::default();
        self.reserve(&mut ws, max_rows.max(1), max_rows > 0);
        ws
    }

    fn reserve(&self, ws: &mut CnnWorkspace, rows: usize, grad: bool) {
        let n_chunks = rows.div_ceil(CHUNK).max(1);
        if ws.chunks.len() < n_chunks {
            ws.chunks.resize_with(n_chunks, ChunkWs::default);
        }
        let (block, ops) = (self.block(), self.ops());
        let layers = ops.len() + 1;
        // A workspace made by a network on another instruction-set path may lack unfoldings.
        let unfolded = |cw: &ChunkWs| {
            cw.cols.iter().zip(ops).all(|(col, op)| match op {
                Op::Conv(c) => col.len() >= c.unfolded_len(self.kernels, block),
                _ => true,
            })
        };
        let ready = |cw: &ChunkWs| {
            cw.acts.len() == layers && unfolded(cw) && (!grad || cw.g.len() == self.dim())
        };
        if ws.chunks[..n_chunks].iter().all(ready) {
            // The steady state: nothing to allocate.
            return;
        }
        let sizes: Vec<usize> = self.sizes().collect();
        let max_act = *sizes.iter().max().expect("layers");
        for cw in &mut ws.chunks[..n_chunks] {
            if ready(cw) {
                continue;
            }
            cw.acts = sizes.iter().map(|s| vec![0.0; s * block]).collect();
            cw.cols = ops
                .iter()
                .map(|op| match op {
                    Op::Conv(c) => vec![0.0; c.unfolded_len(self.kernels, block)],
                    _ => Vec::new(),
                })
                .collect();
            cw.masks = ops
                .iter()
                .zip(&sizes[1..])
                .map(|(op, s)| match op {
                    Op::Dropout { .. } => vec![0.0; s * block],
                    _ => Vec::new(),
                })
                .collect();
            cw.argmax = ops
                .iter()
                .zip(&sizes[1..])
                .map(|(op, s)| match op {
                    Op::Pool { .. } => vec![0; s * block],
                    _ => Vec::new(),
                })
                .collect();
            cw.labels = vec![0; block];
            if grad {
                // The unfolded input's gradient of every convolution whose input's gradient the
                // backward pass forms (all but the first layer's), kept unfolding or not.
                let max_col = (ops.iter().skip(1))
                    .filter_map(|op| match op {
                        Op::Conv(c) => Some(c.kk() * c.ho() * c.wo() * block),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                cw.d_out = vec![0.0; max_act * block];
                cw.d_in = vec![0.0; max_act * block];
                cw.d_col = vec![0.0; max_col];
                cw.g = vec![0.0; self.dim()];
            }
        }
    }

    /// Checks that `data` holds 28 x 28 images (784 values) with at most 10 classes.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        if data.n_features != INPUT {
            return Err(Error::Shape {
                what: "features per sample (the CNN takes 28 x 28 images)",
                expected: INPUT,
                found: data.n_features,
            });
        }
        if data.n_classes > CLASSES {
            return Err(Error::Shape {
                what: "classes in the data (the CNN has 10 outputs)",
                expected: CLASSES,
                found: data.n_classes,
            });
        }
        Ok(())
    }

    /// Objective value on `rows` of `data`, without dropout.
    pub fn loss(&self, data: &Dataset, rows: Rows, w: &[f32], ws: &mut CnnWorkspace) -> f64 {
        self.eval(data, rows, w, None, None, ws).0
    }

    /// Gradient on `rows` of `data` into `grad`; returns the objective value (fused). With
    /// `dropout_seed`, dropout is on (training) with masks drawn from that seed; the same seed
    /// gives the same masks.
    ///
    /// # Panics
    /// If `w` or `grad` is not of length [`Self::dim`] or `data` does not hold 784 features.
    pub fn loss_grad(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: &mut [f32],
        ws: &mut CnnWorkspace,
        dropout_seed: Option<u64>,
    ) -> f64 {
        self.eval(data, rows, w, Some(grad), dropout_seed, ws).0
    }

    /// Fraction of `data`'s rows whose largest output is their label's (no dropout).
    pub fn accuracy(&self, data: &Dataset, w: &[f32], ws: &mut CnnWorkspace) -> f64 {
        let n = data.n_samples();
        if n == 0 {
            return 0.0;
        }
        self.eval(data, Rows::All, w, None, None, ws).1 as f64 / n as f64
    }

    /// Loss and correct count over `rows`.
    fn eval(
        &self,
        data: &Dataset,
        rows: Rows,
        w: &[f32],
        grad: Option<&mut [f32]>,
        dropout_seed: Option<u64>,
        ws: &mut CnnWorkspace,
    ) -> (f64, usize) {
        assert_eq!(w.len(), self.dim(), "parameter length");
        assert_eq!(data.n_features, INPUT, "feature count");
        let want_grad = grad.is_some();
        let n = match rows {
            Rows::All => data.n_samples(),
            Rows::Subset(idx) => idx.len(),
        };
        let n_chunks = n.div_ceil(CHUNK).max(1);
        // A gradient sums one partial gradient per chunk, in chunk order, so every chunk keeps
        // its own workspace. Without one, the chunks of a loss over many rows (a node's whole
        // share, the test set) take turns in as many workspaces as threads: a node's loss over
        // 3 000 images held 47 chunk workspaces of about 1 MB each, 1.4 GB over 20 nodes.
        let slots = if want_grad {
            n_chunks
        } else {
            n_chunks.min(rayon::current_num_threads())
        };
        self.reserve(ws, slots * CHUNK, want_grad);
        let CnnWorkspace {
            rows: wrows,
            chunks,
            parts,
            dense_t,
        } = ws;
        self.transpose_dense(w, dense_t);
        let dense_t: &[f32] = dense_t;
        let idx: &[u32] = match rows {
            Rows::All => {
                if wrows.len() != n || wrows.iter().enumerate().any(|(i, &r)| r as usize != i) {
                    wrows.clear();
                    wrows.extend(0..n as u32);
                }
                wrows
            }
            Rows::Subset(idx) => idx,
        };
        let chunks = &mut chunks[..slots];
        parts.clear();
        for first in (0..n_chunks).step_by(slots) {
            let turn = &mut chunks[..slots.min(n_chunks - first)];
            turn.par_iter_mut().enumerate().for_each(|(j, cw)| {
                let ci = first + j;
                let (r0, r1) = ((ci * CHUNK).min(n), ((ci + 1) * CHUNK).min(n));
                let w = Weights { w, dense_t };
                self.chunk(data, &idx[r0..r1], r0, w, cw, want_grad, dropout_seed);
            });
            parts.extend(turn.iter().map(|c| (c.loss, c.correct)));
        }
        let loss = crate::combine_chunks(
            self.kernels,
            self.lambda,
            w,
            n,
            parts.iter().map(|p| p.0).sum(),
            chunks.iter().map(|c| &c.g[..]),
            grad,
        );
        (loss, parts.iter().map(|p| p.1).sum())
    }

    /// The weights of every dense layer [`Op::transposed_len`] counts, transposed into `out`
    /// (`input x output` each), layer after layer.
    fn transpose_dense(&self, w: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let mut off = 0;
        for op in self.ops() {
            if let (Op::Dense { input, output }, 1..) = (*op, op.transposed_len()) {
                let wt = &w[off..off + output * input];
                let at = out.len();
                out.resize(at + input * output, 0.0);
                // Column `o` of the transposed block is row `o` of the weights.
                for (o, row) in wt.chunks_exact(input).enumerate() {
                    for (t, &v) in out[at + o..].iter_mut().step_by(output).zip(row) {
                        *t = v;
                    }
                }
            }
            off += op.params();
        }
    }

    /// One chunk: blocks in order; `first` is the chunk's first position in the minibatch.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        &self,
        data: &Dataset,
        idx: &[u32],
        first: usize,
        w: Weights,
        cw: &mut ChunkWs,
        want_grad: bool,
        dropout_seed: Option<u64>,
    ) {
        cw.loss = 0.0;
        cw.correct = 0;
        if want_grad {
            cw.g.fill(0.0);
        }
        let block = self.block();
        for (bi, rows) in idx.chunks(block).enumerate() {
            let nb = rows.len();
            crate::gather_rows(
                self.kernels,
                data,
                rows,
                &mut cw.acts[0][..nb * INPUT],
                &mut cw.labels[..nb],
            );
            let pos = first + bi * block;
            self.forward(w, cw, nb, dropout_seed.map(|s| (s, pos)), want_grad);
            self.loss_block(cw, nb, want_grad);
            if want_grad {
                self.backward(w.w, cw, nb);
            }
        }
    }

    /// Forward pass over the block's `nb` samples in `cw.acts[0]`. `dropout`: the seed and the
    /// block's first position in the minibatch (training mode).
    /// `backward`: a backward pass follows, so also unfold each convolution's input into
    /// `cw.cols` and record each pooled maximum's position.
    fn forward(
        &self,
        Weights { w, dense_t }: Weights,
        cw: &mut ChunkWs,
        nb: usize,
        dropout: Option<(u64, usize)>,
        backward: bool,
    ) {
        let (mut off, mut t_off) = (0, 0);
        for (l, op) in self.ops().iter().enumerate() {
            let (done, rest) = cw.acts.split_at_mut(l + 1);
            let x = &done[l];
            let y = &mut rest[0];
            match *op {
                Op::Conv(c) => {
                    let p = c.ho() * c.wo();
                    let x = &x[..c.cin * nb * c.h * c.w];
                    let (wt, bias) = w[off..off + op.params()].split_at(c.cout * c.kk());
                    let y = &mut y[..c.cout * nb * p];
                    let col = &mut cw.cols[l];
                    if !c.direct() || (backward && !c.weight_grad_direct(self.kernels)) {
                        im2col(self.kernels, c, nb, x, &mut col[..c.kk() * nb * p]);
                    }
                    if c.direct() {
                        // The same floats as `col` through faer's product (tested): each
                        // output's sum in the order of the unfolded rows, by fused
                        // multiply-adds from zero, the bias added last.
                        self.kernels.conv_valid(c.shape(nb), x, wt, bias, y);
                    } else {
                        conv_by_product(c, nb, &col[..c.kk() * nb * p], wt, bias, y);
                    }
                }
                Op::Pool { c, h, w: wd } => {
                    let am = &mut cw.argmax[l];
                    let am = if backward { Some(&mut am[..]) } else { None };
                    self.kernels.max_pool2(c * nb, h, wd, x, y, am);
                }
                Op::Relu => {
                    let n = self.out_len(l, nb);
                    for (yi, &xi) in y[..n].iter_mut().zip(&x[..n]) {
                        *yi = xi.max(0.0);
                    }
                }
                Op::Dropout { c, hw, channelwise } => {
                    let n = c * hw * nb;
                    match dropout {
                        Some((seed, pos)) if self.dropout > 0.0 => {
                            let mask = &mut cw.masks[l][..n];
                            self.draw_mask(seed, pos, l, nb, c, hw, channelwise, mask);
                            for ((yi, &xi), &m) in y[..n].iter_mut().zip(&x[..n]).zip(&*mask) {
                                *yi = xi * m;
                            }
                        }
                        _ => {
                            // Only a backward pass reads the multipliers.
                            if backward {
                                cw.masks[l][..n].fill(1.0);
                            }
                            y[..n].copy_from_slice(&x[..n]);
                        }
                    }
                }
                Op::Flatten { c, hw } => {
                    for ci in 0..c {
                        for b in 0..nb {
                            let src = &x[(ci * nb + b) * hw..(ci * nb + b + 1) * hw];
                            copy_row(
                                &mut y[b * c * hw + ci * hw..b * c * hw + (ci + 1) * hw],
                                src,
                            );
                        }
                    }
                }
                Op::Dense { input, output } if op.dense_direct(nb) => {
                    // The same floats as faer's product below (tested).
                    let bias = &w[off + output * input..off + op.params()];
                    let wt = &dense_t[t_off..t_off + input * output];
                    let x = &x[..nb * input];
                    self.kernels
                        .dense(x, input, wt, bias, &mut y[..nb * output]);
                }
                Op::Dense { input, output } => {
                    let (wt, bias) = w[off..off + op.params()].split_at(output * input);
                    dense_by_product(&x[..nb * input], input, wt, bias, &mut y[..nb * output]);
                }
            }
            t_off += op.transposed_len();
            off += op.params();
        }
    }

    /// Values of layer `l`'s output for `nb` samples.
    fn out_len(&self, l: usize, nb: usize) -> usize {
        self.sizes().nth(l + 1).expect("layer") * nb
    }

    /// Dropout multipliers of layer `l` for a block, in the block layout (`[c][b][hw]`).
    #[allow(clippy::too_many_arguments)]
    fn draw_mask(
        &self,
        seed: u64,
        pos: usize,
        l: usize,
        nb: usize,
        c: usize,
        hw: usize,
        channelwise: bool,
        mask: &mut [f32],
    ) {
        let scale = 1.0 / (1.0 - self.dropout);
        for b in 0..nb {
            let draws = if channelwise { c } else { c * hw };
            dropout_keep(seed, pos + b, l, draws, self.dropout, &mut |i, keep| {
                let v = if keep { scale } else { 0.0 };
                if channelwise {
                    mask[(i * nb + b) * hw..(i * nb + b + 1) * hw].fill(v);
                } else {
                    let (ci, j) = (i / hw, i % hw);
                    mask[(ci * nb + b) * hw + j] = v;
                }
            });
        }
    }

    /// Cross-entropy of the last layer's outputs; leaves `softmax - onehot` in `cw.d_out`.
    fn loss_block(&self, cw: &mut ChunkWs, nb: usize, want_grad: bool) {
        let z = &cw.acts[cw.acts.len() - 1][..nb * CLASSES];
        for (b, zb) in z.chunks_exact(CLASSES).enumerate() {
            let label = cw.labels[b] as usize;
            let (mut best, mut m) = (0, zb[0]);
            for (k, &v) in zb.iter().enumerate() {
                if v > m {
                    (best, m) = (k, v);
                }
            }
            cw.correct += usize::from(best == label);
            let s: f64 = zb.iter().map(|&v| f64::from(v - m).exp()).sum();
            cw.loss += f64::from(m) + s.ln() - f64::from(zb[label]);
            if want_grad {
                let d = &mut cw.d_out[b * CLASSES..(b + 1) * CLASSES];
                for (k, (dk, &v)) in d.iter_mut().zip(zb).enumerate() {
                    *dk = ((f64::from(v - m).exp()) / s) as f32 - f32::from(u8::from(k == label));
                }
            }
        }
    }

    /// Backward pass: from `cw.d_out` (the loss's gradient w.r.t. the outputs) accumulates the
    /// parameter gradient (summed over samples) into `cw.g`.
    fn backward(&self, w: &[f32], cw: &mut ChunkWs, nb: usize) {
        let ops = self.ops();
        let mut off = self.dim();
        for (l, op) in ops.iter().enumerate().rev() {
            off -= op.params();
            let x = &cw.acts[l];
            let y = &cw.acts[l + 1];
            let dy = &cw.d_out;
            let dx = &mut cw.d_in;
            // The first layer's input gradient is never needed.
            let need_dx = l > 0;
            match *op {
                Op::Conv(c) => {
                    let p = c.ho() * c.wo();
                    let np = nb * p;
                    let dy = &dy[..c.cout * np];
                    let (gw, gb) = cw.g[off..off + op.params()].split_at_mut(c.cout * c.kk());
                    if c.weight_grad_direct(self.kernels) {
                        // The same floats as faer's product below (tested).
                        let x = &x[..c.cin * nb * c.h * c.w];
                        self.kernels.conv_weight_grad(c.shape(nb), x, dy, gw);
                    } else {
                        weight_grad_by_product(c, dy, &cw.cols[l][..c.kk() * np], gw);
                    }
                    self.kernels.add_row_sums(gb, dy, np);
                    if need_dx {
                        let wt = &w[off..off + c.cout * c.kk()];
                        let d_col = &mut cw.d_col[..c.kk() * np];
                        if c.input_grad_direct(nb) {
                            // The same floats as faer's product below (tested).
                            self.kernels.product_tn(c.cout, wt, dy, d_col);
                        } else {
                            unfolded_grad_by_product(c, wt, dy, d_col);
                        }
                        col2im(
                            self.kernels,
                            c,
                            nb,
                            d_col,
                            &mut dx[..c.cin * nb * c.h * c.w],
                        );
                    }
                }
                Op::Pool { c, h, w: wd } => {
                    self.kernels
                        .max_pool2_adjoint(c * nb, h, wd, dy, &cw.argmax[l], dx);
                }
                Op::Relu => {
                    let n = self.out_len(l, nb);
                    for ((dxi, &dyi), &yi) in dx[..n].iter_mut().zip(&dy[..n]).zip(&y[..n]) {
                        *dxi = if yi > 0.0 { dyi } else { 0.0 };
                    }
                }
                Op::Dropout { c, hw, .. } => {
                    let n = c * hw * nb;
                    for ((dxi, &dyi), &m) in dx[..n].iter_mut().zip(&dy[..n]).zip(&cw.masks[l]) {
                        *dxi = dyi * m;
                    }
                }
                Op::Flatten { c, hw } => {
                    for ci in 0..c {
                        for b in 0..nb {
                            copy_row(
                                &mut dx[(ci * nb + b) * hw..(ci * nb + b + 1) * hw],
                                &dy[b * c * hw + ci * hw..b * c * hw + (ci + 1) * hw],
                            );
                        }
                    }
                }
                Op::Dense { input, output } => {
                    let dy = &dy[..nb * output];
                    let (gw, gb) = cw.g[off..off + op.params()].split_at_mut(output * input);
                    gemm(
                        MatMut::from_row_major_slice_mut(gw, output, input),
                        Accum::Add,
                        MatRef::from_row_major_slice(dy, nb, output).transpose(),
                        MatRef::from_row_major_slice(&x[..nb * input], nb, input),
                    );
                    for row in dy.chunks_exact(output) {
                        for (gbi, &d) in gb.iter_mut().zip(row) {
                            *gbi += d;
                        }
                    }
                    if need_dx {
                        let wt = &w[off..off + output * input];
                        gemm(
                            MatMut::from_row_major_slice_mut(&mut dx[..nb * input], nb, input),
                            Accum::Replace,
                            MatRef::from_row_major_slice(dy, nb, output),
                            MatRef::from_row_major_slice(wt, output, input),
                        );
                    }
                }
            }
            std::mem::swap(&mut cw.d_out, &mut cw.d_in);
        }
    }
}

/// A dense layer through faer's product: `y = bias + x wt^T`, with `x` rows of `input` values
/// and `wt` row-major `output x input` (`output = bias.len()`).
fn dense_by_product(x: &[f32], input: usize, wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let output = bias.len();
    let nb = y.len() / output;
    for row in y.chunks_exact_mut(output) {
        row.copy_from_slice(bias);
    }
    gemm(
        MatMut::from_row_major_slice_mut(y, nb, output),
        Accum::Add,
        MatRef::from_row_major_slice(x, nb, input),
        MatRef::from_row_major_slice(wt, output, input).transpose(),
    );
}

/// A convolution's weight gradient through faer's product: `gw += dy col^T`, with `dy` its
/// output gradient (`cout` rows) and `col` its unfolded input (`cin k k` rows).
fn weight_grad_by_product(c: Conv, dy: &[f32], col: &[f32], gw: &mut [f32]) {
    let np = dy.len() / c.cout;
    gemm(
        MatMut::from_row_major_slice_mut(gw, c.cout, c.kk()),
        Accum::Add,
        MatRef::from_row_major_slice(dy, c.cout, np),
        MatRef::from_row_major_slice(col, c.kk(), np).transpose(),
    );
}

/// The gradient of a convolution's unfolded input through faer's product: `d_col = wt^T dy`,
/// with `wt` its weights (`cout x cin k k`) and `dy` its output gradient.
fn unfolded_grad_by_product(c: Conv, wt: &[f32], dy: &[f32], d_col: &mut [f32]) {
    let np = dy.len() / c.cout;
    gemm(
        MatMut::from_row_major_slice_mut(d_col, c.kk(), np),
        Accum::Replace,
        MatRef::from_row_major_slice(wt, c.cout, c.kk()).transpose(),
        MatRef::from_row_major_slice(dy, c.cout, np),
    );
}

/// `dst (+)= lhs . rhs`, single-threaded (parallelism is over chunks).
fn gemm(dst: MatMut<f32>, accum: Accum, lhs: MatRef<f32>, rhs: MatRef<f32>) {
    matmul(dst, accum, lhs, rhs, 1.0f32, Par::Seq);
}

/// A convolution's output over a block as the product of its weights and the unfolded input
/// `col` ([`im2col`]), each output channel's row started at its bias.
fn conv_by_product(c: Conv, nb: usize, col: &[f32], wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let np = nb * c.ho() * c.wo();
    for (co, row) in y.chunks_exact_mut(np).enumerate() {
        row.fill(bias[co]);
    }
    gemm(
        MatMut::from_row_major_slice_mut(y, c.cout, np),
        Accum::Add,
        MatRef::from_row_major_slice(wt, c.cout, c.kk()),
        MatRef::from_row_major_slice(col, c.kk(), np),
    );
}

/// `dst = src` for the short rows of the unfolding and flattening (8-24 values): PERF: in
/// pieces of eight values moved inline; `copy_from_slice` calls libc's memmove for every row,
/// whose call cost was a fifth of a CNN round (the rest of a row, if any, goes that way).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (d, s) in (&mut d).zip(&mut s) {
        // Array to array: register moves (a local array in between went through the stack).
        let d: &mut [f32; 8] = d.try_into().expect("eight values");
        *d = *<&[f32; 8]>::try_from(s).expect("eight values");
    }
    let rest = d.into_remainder();
    if !rest.is_empty() {
        rest.copy_from_slice(s.remainder());
    }
}

/// Unfolds a block's input (`[cin][nb][h][w]`) into `col` (`cin k k` rows of `nb * ho * wo`):
/// `col[(ci, ki, kj)][(b, y, x)] = in[ci][b][y + ki][x + kj]`.
///
/// PERF: the networks' output widths (8, 24, 26) are copied at a width known at compile time
/// (register moves, no per-row loop or length checks), on the instruction set the kernels run:
/// the paper's network's two unfoldings took a tenth of its training step.
fn im2col(kernels: Kernels, c: Conv, nb: usize, x: &[f32], col: &mut [f32]) {
    kernels.vectorize(
        #[inline(always)]
        || match c.wo() {
            8 => unfold(c, 8, nb, x, col),
            24 => unfold(c, 24, nb, x, col),
            26 => unfold(c, 26, nb, x, col),
            wo => unfold(c, wo, nb, x, col),
        },
    );
}

/// `dst += src` element-wise, rows `WO` long (if not 0): as arrays, which the compiler
/// vectorises (as slices of a constant length it did not).
#[inline(always)]
fn add_row<const WO: usize>(dst: &mut [f32], src: &[f32]) {
    if WO > 0 {
        let d: &mut [f32; WO] = dst.try_into().expect("a row");
        let s: [f32; WO] = *<&[f32; WO]>::try_from(src).expect("a row");
        let mut sum = *d;
        for j in 0..WO {
            sum[j] += s[j];
        }
        *d = sum;
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// [`im2col`] for output rows `wo` wide (the layer's, passed as a constant where known).
#[inline(always)]
fn unfold(c: Conv, wo: usize, nb: usize, x: &[f32], col: &mut [f32]) {
    let (ho, h, w, k) = (c.ho(), c.h, c.w, c.k);
    let np = nb * ho * wo;
    for ci in 0..c.cin {
        for ki in 0..k {
            for kj in 0..k {
                let row = &mut col[((ci * k + ki) * k + kj) * np..][..np];
                for (b, dst) in row.chunks_exact_mut(ho * wo).enumerate() {
                    // The input this kernel position reads for the sample's output rows.
                    let src = &x[(ci * nb + b) * h * w + ki * w + kj..][..(ho - 1) * w + wo];
                    for (y, d) in dst.chunks_exact_mut(wo).enumerate() {
                        copy_row(d, &src[y * w..][..wo]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[ci][b][y + ki][x + kj] += d_col[(ci, ki, kj)][(b, y, x)]`,
/// with `dx` overwritten first. PERF: as [`im2col`], rows of a known width.
fn col2im(kernels: Kernels, c: Conv, nb: usize, d_col: &[f32], dx: &mut [f32]) {
    kernels.vectorize(
        #[inline(always)]
        || match c.wo() {
            8 => fold::<8>(c, 8, nb, d_col, dx),
            24 => fold::<24>(c, 24, nb, d_col, dx),
            26 => fold::<26>(c, 26, nb, d_col, dx),
            wo => fold::<0>(c, wo, nb, d_col, dx),
        },
    );
}

/// [`col2im`] for output rows `wo` wide (`WO` if not 0).
#[inline(always)]
fn fold<const WO: usize>(c: Conv, wo: usize, nb: usize, d_col: &[f32], dx: &mut [f32]) {
    let (ho, h, w, k) = (c.ho(), c.h, c.w, c.k);
    let np = nb * ho * wo;
    let dx = &mut dx[..c.cin * nb * h * w];
    dx.fill(0.0);
    for ci in 0..c.cin {
        for ki in 0..k {
            for kj in 0..k {
                let row = &d_col[((ci * k + ki) * k + kj) * np..][..np];
                for (b, src) in row.chunks_exact(ho * wo).enumerate() {
                    let plane = &mut dx[(ci * nb + b) * h * w + ki * w + kj..][..(ho - 1) * w + wo];
                    for (y, s) in src.chunks_exact(wo).enumerate() {
                        add_row::<WO>(&mut plane[y * w..][..wo], s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_a_fraction_one_minus_p() {
        // Over 200 000 draws the kept fraction is within 5 standard deviations of 1 - p.
        for p in [0.1f32, 0.25, 0.5, 0.9] {
            let (mut kept, mut n) = (0usize, 0usize);
            for pos in 0..1000 {
                dropout_keep(7, pos, 3, 200, p, &mut |_, k| {
                    kept += usize::from(k);
                    n += 1;
                });
            }
            let q = 1.0 - f64::from(p);
            let sd = (q * (1.0 - q) / n as f64).sqrt();
            let frac = kept as f64 / n as f64;
            assert!((frac - q).abs() < 5.0 * sd, "p={p}: kept {frac}");
        }
        // Positions and layers draw different masks.
        let draw = |pos, layer| {
            let mut v = Vec::new();
            dropout_keep(7, pos, layer, 64, 0.5, &mut |_, k| v.push(k));
            v
        };
        assert_ne!(draw(0, 1), draw(1, 1));
        assert_ne!(draw(0, 1), draw(0, 2));
        assert_eq!(draw(5, 2), draw(5, 2));
    }

    /// The unfolding and its adjoint equal their definitions bit for bit, on every
    /// instruction-set path, at the networks' output widths (8, 24, 26: copied at a constant
    /// width) and at others (the general loop), for one and several samples and channels.
    #[test]
    fn unfolding_and_its_adjoint_follow_their_definitions() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        let shapes = [
            (1, 5, 28, 28),
            (10, 5, 12, 12),
            (2, 3, 28, 28),
            (3, 3, 7, 9),
            (2, 2, 5, 4),
        ];
        for (cin, k, h, w) in shapes {
            let c = Conv {
                cin,
                cout: 1,
                k,
                h,
                w,
            };
            let (ho, wo) = (c.ho(), c.wo());
            for nb in [1, 3] {
                let np = nb * ho * wo;
                let x: Vec<f32> = (0..cin * nb * h * w)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let d_col: Vec<f32> = (0..c.kk() * np)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let mut col_want = vec![0.0f32; c.kk() * np];
                let mut dx_want = vec![0.0f32; x.len()];
                for ci in 0..cin {
                    for ki in 0..k {
                        for kj in 0..k {
                            let r = (ci * k + ki) * k + kj;
                            for b in 0..nb {
                                for y in 0..ho {
                                    for xo in 0..wo {
                                        let i = ((ci * nb + b) * h + y + ki) * w + xo + kj;
                                        let j = r * np + (b * ho + y) * wo + xo;
                                        col_want[j] = x[i];
                                        dx_want[i] += d_col[j];
                                    }
                                }
                            }
                        }
                    }
                }
                for kern in Kernels::available() {
                    let mut col = vec![f32::NAN; col_want.len()];
                    im2col(kern, c, nb, &x, &mut col);
                    let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&col), bits(&col_want), "{c:?} nb={nb} {}", kern.name());
                    let mut dx = vec![f32::NAN; x.len()];
                    col2im(kern, c, nb, &d_col, &mut dx);
                    assert_eq!(bits(&dx), bits(&dx_want), "{c:?} nb={nb} {}", kern.name());
                }
            }
        }
    }

    /// A network's convolutions.
    fn convolutions(arch: CnnArch) -> impl Iterator<Item = Conv> {
        let ops = Cnn::new(arch, 0.0, 0.0).unwrap().ops();
        ops.iter()
            .filter_map(|op| if let Op::Conv(c) = op { Some(*c) } else { None })
    }

    /// How many of two slices' floats differ in their bits.
    fn differing_bits(a: &[f32], b: &[f32]) -> usize {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count()
    }

    /// The forward pass's direct convolution gives the floats of the unfolded input through
    /// faer's product (what the forward computed before, and what the backward's products are
    /// built on), bit for bit, on every instruction-set path, for every convolution of both
    /// networks at block sizes around the tile edges.
    #[test]
    fn direct_convolution_equals_the_unfolding_through_faer() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        for arch in [CnnArch::Small, CnnArch::Wide] {
            for c in convolutions(arch) {
                for nb in [1, 2, 5] {
                    let p = c.ho() * c.wo();
                    let x: Vec<f32> = (0..c.cin * nb * c.h * c.w)
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect();
                    let wt: Vec<f32> = (0..c.cout * c.kk())
                        .map(|_| rng.random_range(-0.5..0.5))
                        .collect();
                    let bias: Vec<f32> = (0..c.cout).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let mut col = vec![0.0; c.kk() * nb * p];
                    im2col(Kernels::scalar(), c, nb, &x, &mut col);
                    let mut want = vec![0.0; c.cout * nb * p];
                    conv_by_product(c, nb, &col, &wt, &bias, &mut want);
                    for k in Kernels::available() {
                        let mut got = vec![f32::NAN; want.len()];
                        k.conv_valid(c.shape(nb), &x, &wt, &bias, &mut got);
                        let bad = differing_bits(&got, &want);
                        assert_eq!(bad, 0, "{arch:?} {c:?} nb={nb} {}", k.name());
                    }
                }
            }
        }
    }

    /// The small dense layers' direct kernel, from the weights as `transpose_dense` lays them
    /// out, is faer's product bit for bit on every instruction-set path, for every such layer
    /// of both networks and an MLP, at every block size up to a chunk's where the forward pass
    /// takes it ([`Op::dense_direct`]).
    #[test]
    fn direct_dense_layers_equal_faers_product() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        let nets = [
            Cnn::new(CnnArch::Small, 0.0, 0.0).unwrap(),
            Cnn::new(CnnArch::Wide, 0.0, 0.0).unwrap(),
            Cnn::mlp(&[100, 30], 0.0, 0.0).unwrap(),
        ];
        let mut checked = 0;
        for cnn in &nets {
            let mut w = vec![0.0f32; cnn.dim()];
            w.iter_mut().for_each(|v| *v = rng.random_range(-0.5..0.5));
            let mut dense_t = Vec::new();
            cnn.transpose_dense(&w, &mut dense_t);
            let (mut off, mut t_off) = (0, 0);
            for op in cnn.ops() {
                if let (Op::Dense { input, output }, 1..) = (*op, op.transposed_len()) {
                    let (wt, bias) = w[off..off + op.params()].split_at(output * input);
                    let wt_t = &dense_t[t_off..t_off + input * output];
                    for nb in (2..=CHUNK).filter(|&nb| op.dense_direct(nb)) {
                        let x: Vec<f32> = (0..nb * input)
                            .map(|_| rng.random_range(-2.0..2.0))
                            .collect();
                        let mut want = vec![0.0; nb * output];
                        dense_by_product(&x, input, wt, bias, &mut want);
                        for k in Kernels::available() {
                            let mut got = vec![f32::NAN; want.len()];
                            k.dense(&x, input, wt_t, bias, &mut got);
                            let bad = differing_bits(&got, &want);
                            assert_eq!(bad, 0, "{input} x {output} nb={nb} {}", k.name());
                        }
                    }
                    checked += 1;
                }
                t_off += op.transposed_len();
                off += op.params();
            }
        }
        // The small network's two, the wide one's last, the MLP's last two.
        assert_eq!(checked, 5);
    }

    /// The direct weight gradient of every convolution the backward pass takes it for
    /// ([`Conv::weight_grad_direct`]) is faer's product with the unfolded input, bit for bit, on
    /// every instruction-set path where it applies, over 1 to 7 samples (one piece of 512
    /// positions and several).
    #[test]
    fn direct_weight_gradient_equals_faers_product() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(14);
        let mut checked = 0;
        for arch in [CnnArch::Small, CnnArch::Wide] {
            for c in convolutions(arch) {
                for nb in 1..=7 {
                    let np = nb * c.ho() * c.wo();
                    let x: Vec<f32> = (0..c.cin * nb * c.h * c.w)
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect();
                    let dy: Vec<f32> = (0..c.cout * np)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    let g0: Vec<f32> = (0..c.cout * c.kk())
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    let mut col = vec![0.0; c.kk() * np];
                    im2col(Kernels::scalar(), c, nb, &x, &mut col);
                    let mut want = g0.clone();
                    weight_grad_by_product(c, &dy, &col, &mut want);
                    for k in Kernels::available() {
                        if !c.weight_grad_direct(k) {
                            continue;
                        }
                        let mut got = g0.clone();
                        k.conv_weight_grad(c.shape(nb), &x, &dy, &mut got);
                        let bad = differing_bits(&got, &want);
                        assert_eq!(bad, 0, "{c:?} nb={nb} {}", k.name());
                        checked += 1;
                    }
                }
            }
        }
        // The paper's first layer, on the x86-64-v3 path at least.
        assert!(checked >= 7, "{checked}");
    }

    /// The direct gradient of the unfolded input of every convolution the backward pass takes
    /// it for ([`Conv::input_grad_direct`]) is faer's product, bit for bit, on every
    /// instruction-set path, over 1 to 7 samples.
    #[test]
    fn direct_input_gradient_equals_faers_product() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(15);
        let mut checked = 0;
        for arch in [CnnArch::Small, CnnArch::Wide] {
            for c in convolutions(arch) {
                for nb in (1..=7).filter(|&nb| c.input_grad_direct(nb)) {
                    let np = nb * c.ho() * c.wo();
                    let wt: Vec<f32> = (0..c.cout * c.kk())
                        .map(|_| rng.random_range(-0.5..0.5))
                        .collect();
                    let dy: Vec<f32> = (0..c.cout * np)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    let mut want = vec![0.0; c.kk() * np];
                    unfolded_grad_by_product(c, &wt, &dy, &mut want);
                    for k in Kernels::available() {
                        let mut got = vec![f32::NAN; want.len()];
                        k.product_tn(c.cout, &wt, &dy, &mut got);
                        assert_eq!(differing_bits(&got, &want), 0, "{c:?} nb={nb} {}", k.name());
                    }
                    checked += 1;
                }
            }
        }
        // Both direct layers of the paper's network, every block size.
        assert_eq!(checked, 14);
    }
}
