//! A dense layer's forward pass over a block of rows, `y = bias + x W^T`, from the weights
//! transposed: each output's sum by fused multiply-adds from zero in the order of the inputs.

use crate::Kernels;
use pulp::{Simd, WithSimd};

/// Pieces of the sum: faer's x86 products sum the inner dimension in pieces of this many, each
/// from zero, added to the output in turn; the kernel follows, so a model may use either.
pub const DENSE_PIECE: usize = 512;

// PERF: a tile is ROWS rows x 2 output vectors: 12 accumulators, the two weight vectors and one
// broadcast input fit AVX2's 16 registers. Each input index loads 2 weight vectors, broadcasts
// ROWS inputs and issues 2 ROWS fused multiply-adds. The paper's 320 x 50 layer over a block of
// 6 rows: 1.05 us a row (15 G multiply-adds a second, its last vector 2 outputs of 8), faer's
// product 1.63 (it repacks the weights at every call; AMD EPYC Zen 1).
const ROWS: usize = 6;

struct Dense<'a> {
    x: &'a [f32],
    input: usize,
    wt: &'a [f32],
    bias: &'a [f32],
    y: &'a mut [f32],
}

impl Dense<'_> {
    /// Outputs `o0..` (`V` vectors, the last possibly partial) of rows `r0..r0 + R`.
    #[inline(always)]
    fn tile<S: Simd, const R: usize, const V: usize>(&mut self, simd: S, r0: usize, o0: usize) {
        let (lanes, input, output) = (S::F32_LANES, self.input, self.bias.len());
        let len: [usize; V] = std::array::from_fn(|v| lanes.min(output - (o0 + v * lanes)));
        let xr: [&[f32]; R] = std::array::from_fn(|r| &self.x[(r0 + r) * input..][..input]);
        let mut out = [[simd.splat_f32s(0.0); V]; R];
        let mut from = 0;
        while from < input {
            let to = input.min(from + DENSE_PIECE);
            let mut acc = [[simd.splat_f32s(0.0); V]; R];
            for i in from..to {
                let row = &self.wt[i * output + o0..];
                // A plain loop: a closure's body would not get the path's target features, and
                // the masked load would become a call (see `prefix`).
                let mut wv = [simd.splat_f32s(0.0); V];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = crate::prefix::load_prefix(simd, &row[v * lanes..][..len[v]]);
                }
                for r in 0..R {
                    let xv = simd.splat_f32s(xr[r][i]);
                    for v in 0..V {
                        acc[r][v] = simd.mul_add_f32s(xv, wv[v], acc[r][v]);
                    }
                }
            }
            // The first piece onto the bias, each later one onto the sum so far.
            for v in 0..V {
                let b = if from == 0 {
                    crate::prefix::load_prefix(simd, &self.bias[o0 + v * lanes..][..len[v]])
                } else {
                    simd.splat_f32s(0.0)
                };
                for r in 0..R {
                    let base = if from == 0 { b } else { out[r][v] };
                    out[r][v] = simd.add_f32s(base, acc[r][v]);
                }
            }
            from = to;
        }
        for r in 0..R {
            let yr = &mut self.y[(r0 + r) * output..][..output];
            for v in 0..V {
                crate::prefix::store_prefix(simd, &mut yr[o0 + v * lanes..][..len[v]], out[r][v]);
            }
        }
    }

    /// Rows `r0..r0 + R`: every output, two vectors at a time.
    #[inline(always)]
    fn rows<S: Simd, const R: usize>(&mut self, simd: S, r0: usize) {
        let (lanes, output) = (S::F32_LANES, self.bias.len());
        let mut o = 0;
        while o + lanes < output {
            self.tile::<S, R, 2>(simd, r0, o);
            o += 2 * lanes;
        }
        if o < output {
            self.tile::<S, R, 1>(simd, r0, o);
        }
    }
}

impl WithSimd for Dense<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let n = self.y.len() / self.bias.len();
        let mut r = 0;
        while r < n {
            match n - r {
                1 => self.rows::<S, 1>(simd, r),
                2 => self.rows::<S, 2>(simd, r),
                3 => self.rows::<S, 3>(simd, r),
                4 => self.rows::<S, 4>(simd, r),
                5 => self.rows::<S, 5>(simd, r),
                _ => self.rows::<S, ROWS>(simd, r),
            }
            r += ROWS;
        }
    }
}

impl Kernels {
    /// A dense layer over a block of rows: `y[b][o] = bias[o] + sum_i x[b][i] wt[i][o]`, with
    /// `x` row-major `rows x input`, `wt` the weights transposed (row-major `input x output`,
    /// `output = bias.len()`) and `y` row-major `rows x output`.
    ///
    /// Each output's sum runs over `i` in order by fused multiply-adds from zero, in pieces of
    /// [`DENSE_PIECE`], the first piece added to the bias and each later one to the sum so far
    /// ([`reference::dense`](crate::reference::dense)), on every path: faer's product of two
    /// or more rows into outputs holding the bias gives the same floats.
    ///
    /// # Panics
    /// If a slice's length does not match the others.
    pub fn dense(self, x: &[f32], input: usize, wt: &[f32], bias: &[f32], y: &mut [f32]) {
        let output = bias.len();
        assert!(output > 0 && input > 0, "dense: empty layer");
        assert_eq!(wt.len(), input * output, "dense: weights");
        assert_eq!(y.len() % output, 0, "dense: output length");
        assert_eq!(x.len(), y.len() / output * input, "dense: input length");
        self.run(Dense {
            x,
            input,
            wt,
            bias,
            y,
        });
    }
}

// PERF: a tile of `out` is TN_ROWS rows x TN_VECS column vectors: 10 accumulators. Each step of
// the sum loads TN_VECS vectors of `b`, broadcasts TN_ROWS values of `a` and issues 10 fused
// multiply-adds. The paper's second convolution (depth 20, 250 x 384 outputs a block): 83% of
// the FMA peak against faer's 80% (AMD EPYC Zen 1); a tile's 10 stores per 200 multiply-adds
// bound it.
const TN_ROWS: usize = 5;
const TN_VECS: usize = 2;

struct ProductTn<'a> {
    depth: usize,
    a: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl ProductTn<'_> {
    /// Rows `t0..t0 + T` of `out`, columns from `j0` (`V` vectors, the last possibly partial).
    #[inline(always)]
    fn tile<S: Simd, const T: usize, const V: usize>(&mut self, simd: S, t0: usize, j0: usize) {
        let lanes = S::F32_LANES;
        let (m, n) = (self.a.len() / self.depth, self.b.len() / self.depth);
        let len: [usize; V] = std::array::from_fn(|v| lanes.min(n - (j0 + v * lanes)));
        let mut acc = [[simd.splat_f32s(0.0); V]; T];
        for (ar, br) in self.a.chunks_exact(m).zip(self.b.chunks_exact(n)) {
            let ar = &ar[t0..t0 + T];
            // A plain loop, as in `Dense::tile`.
            let mut bv = [simd.splat_f32s(0.0); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = crate::prefix::load_prefix(simd, &br[j0 + v * lanes..][..len[v]]);
            }
            for t in 0..T {
                let av = simd.splat_f32s(ar[t]);
                for v in 0..V {
                    acc[t][v] = simd.mul_add_f32s(av, bv[v], acc[t][v]);
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            let row = &mut self.out[(t0 + t) * n..][..n];
            for v in 0..V {
                crate::prefix::store_prefix(simd, &mut row[j0 + v * lanes..][..len[v]], acc[v]);
            }
        }
    }

    /// Rows `t0..t0 + T`: every column, `TN_VECS` vectors at a time.
    #[inline(always)]
    fn rows<S: Simd, const T: usize>(&mut self, simd: S, t0: usize) {
        let (lanes, n) = (S::F32_LANES, self.b.len() / self.depth);
        let mut j = 0;
        while j + (TN_VECS - 1) * lanes < n {
            self.tile::<S, T, TN_VECS>(simd, t0, j);
            j += TN_VECS * lanes;
        }
        while j < n {
            self.tile::<S, T, 1>(simd, t0, j);
            j += lanes;
        }
    }
}

impl WithSimd for ProductTn<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let m = self.a.len() / self.depth;
        let mut t = 0;
        while t < m {
            if m - t >= TN_ROWS {
                self.rows::<S, TN_ROWS>(simd, t);
                t += TN_ROWS;
            } else {
                self.rows::<S, 1>(simd, t);
                t += 1;
            }
        }
    }
}

impl Kernels {
    /// `out = a^T b` for `a` row-major `depth x m`, `b` row-major `depth x n` and `out`
    /// row-major `m x n`, over a short depth (at most [`DENSE_PIECE`]).
    ///
    /// Each output's sum runs over the depth in order by fused multiply-adds from zero
    /// ([`reference::product_tn`](crate::reference::product_tn)), on every path: faer's product
    /// (`Accum::Replace`) beyond its small-product sizes. With `a` a convolution's weights and
    /// `b` its output gradient, `out` is the gradient of its unfolded input.
    ///
    /// # Panics
    /// If the lengths do not agree or the depth is 0 or exceeds [`DENSE_PIECE`].
    pub fn product_tn(self, depth: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(depth > 0 && depth <= DENSE_PIECE, "product_tn: depth");
        assert_eq!(a.len() % depth, 0, "product_tn: left factor");
        assert_eq!(b.len() % depth, 0, "product_tn: right factor");
        assert_eq!(
            out.len(),
            a.len() / depth * (b.len() / depth),
            "product_tn: output"
        );
        if out.is_empty() {
            return;
        }
        self.run(ProductTn { depth, a, b, out });
    }
}
