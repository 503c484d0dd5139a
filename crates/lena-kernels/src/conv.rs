//! Direct "valid" convolution (stride 1, no padding) of a block of samples, for a small CNN's
//! forward pass: no unfolded input, and no matrix-product tile half empty when a layer has few
//! output channels.

use crate::Kernels;
use pulp::{Simd, WithSimd};

// PERF: a tile is CO_TILE output channels x POS_TILE output vectors (a vector: up to one lane
// count of one output row; a layer's last channels short of CO_TILE go one at a time): 10
// accumulators, the tile's input vectors and one broadcast weight fit AVX2's 16 registers. With
// 16 lanes (32 registers) a tile takes twice CO_TILE channels where the layer has them: each
// input vector, and on AVX-512 each join of two half-vector loads, then serves 20 multiply-adds
// (the paper's second layer 73% of the FMA peak against 65%, Intel Xeon family 6 model 207). Each
// step of the sum loads POS_TILE input vectors, broadcasts CO_TILE weights and issues CO_TILE *
// POS_TILE fused multiply-adds, so the tile is bound by FMA throughput. Through an unfolding and
// a GEMM (faer's tiles have 24 rows), the paper's first layer (10 output channels) computed 2.4
// times the products it needed, and every input value was first copied k * k times.
const CO_TILE: usize = 5;
/// Output channels a tile takes with 16 lanes (32 registers), where the layer has them.
const WIDE_CO_TILE: usize = 2 * CO_TILE;
const POS_TILE: usize = 2;

/// A convolution's sizes over a block of samples: `cin` input planes of `h x w` per sample,
/// `cout` output planes of `(h - k + 1) x (w - k + 1)`, `k x k` kernels, stride 1, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side.
    pub k: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Samples in the block.
    pub samples: usize,
}

impl ConvShape {
    /// Output height.
    pub fn ho(&self) -> usize {
        self.h + 1 - self.k
    }
    /// Output width.
    pub fn wo(&self) -> usize {
        self.w + 1 - self.k
    }
    /// Weights per output channel: `cin * k * k`.
    pub fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Length of the input, `[cin][samples][h][w]`.
    pub fn input_len(&self) -> usize {
        self.cin * self.samples * self.h * self.w
    }
    /// Length of the output, `[cout][samples][ho][wo]`.
    pub fn output_len(&self) -> usize {
        self.cout * self.samples * self.ho() * self.wo()
    }
}

struct Conv<'a> {
    s: ConvShape,
    x: &'a [f32],
    wt: &'a [f32],
    bias: &'a [f32],
    y: &'a mut [f32],
}

/// Loads the vector of `plane` at `at`; past the plane's end the lanes are zero (they only
/// ever feed outputs past the end of a row, which are not stored). The tiles call it inside
/// closures (which `prefix` warns of): the closures are inlined into the path's code, so the
/// masked load is too (no call in the disassembly); written as plain loops instead, the
/// paper's second layer took 12-16% longer on AVX-512.
#[inline(always)]
fn load<S: Simd>(simd: S, plane: &[f32], at: usize) -> S::f32s {
    // A whole vector where the plane has one (`load_prefix` checks that itself).
    crate::prefix::load_prefix(simd, &plane[at..])
}

/// One step of a tile's sum: each of the `C` channels' weight `t` times each of the `R` input
/// vectors `xv`, fused into the accumulators.
#[inline(always)]
fn fma_step<S: Simd, const C: usize, const R: usize>(
    simd: S,
    acc: &mut [[S::f32s; R]; C],
    wc: &[&[f32]; C],
    t: usize,
    xv: &[S::f32s; R],
) {
    for c in 0..C {
        let wv = simd.splat_f32s(wc[c][t]);
        for r in 0..R {
            acc[c][r] = simd.mul_add_f32s(wv, xv[r], acc[c][r]);
        }
    }
}

impl Conv<'_> {
    /// One tile: output channels `co..co + C` of sample `b` at the output vectors `slots`
    /// (numbered row by row, `per_row` to a row). `K`: the kernel side if known at compile time
    /// (the kernel's loops are then unrolled), else 0; `INSIDE`: every load of the tile lies
    /// inside the input plane (no bounds are then checked within a kernel row).
    #[inline(always)]
    fn tile<S: Simd, const C: usize, const R: usize, const K: usize, const INSIDE: bool>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        slots: [usize; R],
        per_row: usize,
    ) {
        let s = self.s;
        let k = if K > 0 { K } else { s.k };
        let (lanes, kk) = (S::F32_LANES, s.kk());
        let (row, col) = (
            slots.map(|q| q / per_row),
            slots.map(|q| q % per_row * lanes),
        );
        let base: [usize; R] = std::array::from_fn(|r| row[r] * s.w + col[r]);
        let mut acc = [[simd.splat_f32s(0.0); R]; C];
        let plane_len = s.h * s.w;
        for ci in 0..s.cin {
            let plane = &self.x[(ci * s.samples + b) * plane_len..][..plane_len];
            let wc: [&[f32]; C] =
                std::array::from_fn(|c| &self.wt[(co + c) * kk + ci * k * k..][..k * k]);
            for ki in 0..k {
                // The input this kernel row reads for each output vector.
                let rows: [&[f32]; R] = std::array::from_fn(|r| {
                    let from = &plane[base[r] + ki * s.w..];
                    if INSIDE { &from[..k - 1 + lanes] } else { from }
                });
                for kj in 0..k {
                    let xv: [S::f32s; R] = std::array::from_fn(|r| {
                        if INSIDE {
                            S::as_simd_f32s(&rows[r][kj..kj + lanes]).0[0]
                        } else {
                            load(simd, rows[r], kj)
                        }
                    });
                    fma_step(simd, &mut acc, &wc, ki * k + kj, &xv);
                }
            }
        }
        self.store::<S, C, R>(simd, b, co, row, col, &acc);
    }

    /// `y = bias + acc` for a tile's outputs, only those inside their output row.
    #[inline(always)]
    fn store<S: Simd, const C: usize, const R: usize>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        row: [usize; R],
        col: [usize; R],
        acc: &[[S::f32s; R]; C],
    ) {
        let (lanes, wo) = (S::F32_LANES, self.s.wo());
        let out_plane = self.s.ho() * wo;
        // PERF: a tile of whole vectors (every tile of the paper's two layers on AVX2) is
        // stored with its checks hoisted out of the loops: the general loop's per-store
        // lengths, bounds and spilled addresses cost the first layer (25 products an output)
        // 4-7% (conv_profile, AMD EPYC Zen 1: 74-77% of the FMA peak before, 79% after; the
        // second layer 90-91% before, 92% after).
        if col.iter().all(|&j| j + lanes <= wo) {
            let at: [usize; R] = std::array::from_fn(|r| row[r] * wo + col[r]);
            let bias = &self.bias[co..co + C];
            let samples = self.s.samples;
            for (c, acc) in acc.iter().enumerate() {
                let bias = simd.splat_f32s(bias[c]);
                let plane = &mut self.y[((co + c) * samples + b) * out_plane..][..out_plane];
                for r in 0..R {
                    let v = simd.add_f32s(bias, acc[r]);
                    S::as_mut_simd_f32s(&mut plane[at[r]..at[r] + lanes]).0[0] = v;
                }
            }
            return;
        }
        for (c, acc) in acc.iter().enumerate() {
            let bias = simd.splat_f32s(self.bias[co + c]);
            let plane = &mut self.y[((co + c) * self.s.samples + b) * out_plane..][..out_plane];
            for r in 0..R {
                let v = simd.add_f32s(bias, acc[r]);
                let len = lanes.min(wo - col[r]);
                crate::prefix::store_prefix(simd, &mut plane[row[r] * wo + col[r]..][..len], v);
            }
        }
    }

    /// One tile: unrolled, with no bounds checked inside a kernel row, for the paper's kernel
    /// side (5) where the tile stays inside the plane; the general loops otherwise.
    ///
    /// PERF: each specialisation is compiled for every instruction-set path; with sides 3 and 5,
    /// both with and without checks, and tiles of 1 to 5 channels, the crate took 33 s to
    /// compile instead of 7, in every profile CI builds.
    #[inline(always)]
    fn any_tile<S: Simd, const C: usize, const R: usize>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        slots: [usize; R],
        per_row: usize,
    ) {
        let s = self.s;
        // The farthest value a tile's loads reach: its last vector's, from the kernel's last
        // row and column.
        let last = slots[R - 1];
        let reach = (last / per_row + s.k - 1) * s.w + last % per_row * S::F32_LANES + s.k - 1;
        let inside = reach + S::F32_LANES <= s.h * s.w;
        match (s.k, inside) {
            (5, true) => self.tile::<S, C, R, 5, true>(simd, b, co, slots, per_row),
            _ => self.tile::<S, C, R, 0, false>(simd, b, co, slots, per_row),
        }
    }

    /// Output channels `co..co + C` of sample `b`: every output vector, two at a time.
    #[inline(always)]
    fn channels<S: Simd, const C: usize>(&mut self, simd: S, b: usize, co: usize) {
        let per_row = self.s.wo().div_ceil(S::F32_LANES);
        let slots = self.s.ho() * per_row;
        let mut q = 0;
        while q + POS_TILE <= slots {
            self.any_tile::<S, C, POS_TILE>(simd, b, co, [q, q + 1], per_row);
            q += POS_TILE;
        }
        if q < slots {
            self.any_tile::<S, C, 1>(simd, b, co, [q], per_row);
        }
    }
}

/// Half-vector segments (PERF, wide paths): an output row of `wo` values is cut into segments of
/// half a vector each (`half` lanes), numbered row by row, `per_row` to a row; a vector holds
/// two consecutive segments, the second possibly at the start of the next output row. With 16
/// lanes the paper's second layer (8 x 8 outputs) fills whole vectors instead of half of each,
/// and its first (24 wide) 36 vectors per plane instead of 48.
#[derive(Clone, Copy)]
struct Segments {
    half: usize,
    per_row: usize,
}

impl Segments {
    /// The segment layout when it takes fewer vectors per output plane than whole-vector rows
    /// do and every segment's load can start half a vector early inside the plane (`w >= half`).
    fn for_shape(s: ConvShape, lanes: usize) -> Option<Self> {
        let half = lanes / 2;
        if half < 2 || s.w < half {
            return None;
        }
        let per_row = s.wo().div_ceil(half);
        ((s.ho() * per_row).div_ceil(2) < s.ho() * s.wo().div_ceil(lanes))
            .then_some(Self { half, per_row })
    }

    /// Output row and column where segment `g` starts.
    #[inline(always)]
    fn at(self, g: usize) -> (usize, usize) {
        (g / self.per_row, g % self.per_row * self.half)
    }

    /// Where the loads of each vector's two halves start in an input plane `w` wide: the first
    /// at its segment, the second half a vector before its segment (a lone last segment's
    /// second half, never stored, at the first's).
    #[inline(always)]
    fn starts<const R: usize>(self, w: usize, pairs: [[usize; 2]; R]) -> ([usize; R], [usize; R]) {
        let start = |g: usize| {
            let (row, col) = self.at(g);
            row * w + col
        };
        let lo = pairs.map(|p| start(p[0]));
        let hi = pairs.map(|p| {
            if p[0] == p[1] {
                start(p[0])
            } else {
                start(p[1]) - self.half
            }
        });
        (lo, hi)
    }
}

impl Conv<'_> {
    /// [`Self::tile`] over vectors of two segments each (`pairs[r]`: the vector's first and
    /// second segment, equal for a plane's last vector when the segments are odd in number; its
    /// second half is then not stored). Each half of a vector is read by a load of its own (the
    /// second from half a vector before its segment) and the two are joined by a lane select:
    /// every output is the same sum in the same order as in [`Self::tile`].
    #[inline(always)]
    fn tile_split<S: Simd, const C: usize, const R: usize, const K: usize, const INSIDE: bool>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        pairs: [[usize; 2]; R],
        seg: Segments,
    ) {
        let s = self.s;
        let k = if K > 0 { K } else { s.k };
        let (lanes, kk, half) = (S::F32_LANES, s.kk(), seg.half);
        let first = simd.mask_between_m32s(0, half as u32).mask();
        let lo: [(usize, usize); R] = pairs.map(|p| seg.at(p[0]));
        let hi: [(usize, usize); R] = pairs.map(|p| seg.at(p[1]));
        // PERF: recomputed here rather than passed from `any_tile_split`, which checked them:
        // passed in, they made the evaluation 2% slower (cnn_eval, AMD EPYC Zen 5).
        let (start_lo, start_hi) = seg.starts(s.w, pairs);
        let mut acc = [[simd.splat_f32s(0.0); R]; C];
        let plane_len = s.h * s.w;
        for ci in 0..s.cin {
            let plane = &self.x[(ci * s.samples + b) * plane_len..][..plane_len];
            let wc: [&[f32]; C] =
                std::array::from_fn(|c| &self.wt[(co + c) * kk + ci * k * k..][..k * k]);
            for ki in 0..k {
                let rows = |start: [usize; R]| -> [&[f32]; R] {
                    std::array::from_fn(|r| {
                        let from = &plane[start[r] + ki * s.w..];
                        if INSIDE { &from[..k - 1 + lanes] } else { from }
                    })
                };
                let (rows_lo, rows_hi) = (rows(start_lo), rows(start_hi));
                for kj in 0..k {
                    let xv: [S::f32s; R] = std::array::from_fn(|r| {
                        let (a, b) = if INSIDE {
                            (
                                S::as_simd_f32s(&rows_lo[r][kj..kj + lanes]).0[0],
                                S::as_simd_f32s(&rows_hi[r][kj..kj + lanes]).0[0],
                            )
                        } else {
                            (load(simd, rows_lo[r], kj), load(simd, rows_hi[r], kj))
                        };
                        simd.select_f32s(first, a, b)
                    });
                    fma_step(simd, &mut acc, &wc, ki * k + kj, &xv);
                }
            }
        }
        // y = bias + acc, each half into its own output row (only the values inside it).
        let wo = s.wo();
        let out_plane = s.ho() * wo;
        for (c, acc) in acc.iter().enumerate() {
            let bias = simd.splat_f32s(self.bias[co + c]);
            let plane = &mut self.y[((co + c) * s.samples + b) * out_plane..][..out_plane];
            for r in 0..R {
                let v = simd.add_f32s(bias, acc[r]);
                let (row, col) = lo[r];
                crate::prefix::store_prefix(
                    simd,
                    &mut plane[row * wo + col..][..half.min(wo - col)],
                    v,
                );
                if pairs[r][0] != pairs[r][1] {
                    // Half a vector's rotation brings the second half to the first lanes.
                    let (row, col) = hi[r];
                    let dst = &mut plane[row * wo + col..][..half.min(wo - col)];
                    crate::prefix::store_prefix(simd, dst, simd.rotate_right_f32s(v, half));
                }
            }
        }
    }

    /// [`Self::any_tile`] for vectors of two segments.
    #[inline(always)]
    fn any_tile_split<S: Simd, const C: usize, const R: usize>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        pairs: [[usize; 2]; R],
        seg: Segments,
    ) {
        let s = self.s;
        // The farthest value a tile's loads reach: from the farthest load start, the kernel's
        // last row and column.
        let (lo, hi) = seg.starts(s.w, pairs);
        let far = lo.into_iter().chain(hi).max().unwrap_or(0);
        let inside = far + (s.k - 1) * (s.w + 1) + S::F32_LANES <= s.h * s.w;
        match (s.k, inside) {
            (5, true) => self.tile_split::<S, C, R, 5, true>(simd, b, co, pairs, seg),
            _ => self.tile_split::<S, C, R, 0, false>(simd, b, co, pairs, seg),
        }
    }

    /// [`Self::channels`] for vectors of two segments: every segment, four at a time.
    #[inline(always)]
    fn channels_split<S: Simd, const C: usize>(
        &mut self,
        simd: S,
        b: usize,
        co: usize,
        seg: Segments,
    ) {
        let segs = self.s.ho() * seg.per_row;
        let mut g = 0;
        while g + 2 * POS_TILE <= segs {
            self.any_tile_split::<S, C, POS_TILE>(simd, b, co, [[g, g + 1], [g + 2, g + 3]], seg);
            g += 2 * POS_TILE;
        }
        while g < segs {
            let pair = [g, (g + 1).min(segs - 1)];
            self.any_tile_split::<S, C, 1>(simd, b, co, [pair], seg);
            g += 2;
        }
    }
}

impl WithSimd for Conv<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let seg = Segments::for_shape(self.s, S::F32_LANES);
        let wide = S::F32_LANES >= 16;
        for b in 0..self.s.samples {
            let mut co = 0;
            while co < self.s.cout {
                let c = match self.s.cout - co {
                    n if wide && n >= WIDE_CO_TILE => WIDE_CO_TILE,
                    n if n >= CO_TILE => CO_TILE,
                    _ => 1,
                };
                match (seg, c) {
                    (Some(seg), WIDE_CO_TILE) => {
                        self.channels_split::<S, WIDE_CO_TILE>(simd, b, co, seg);
                    }
                    (Some(seg), CO_TILE) => self.channels_split::<S, CO_TILE>(simd, b, co, seg),
                    (Some(seg), _) => self.channels_split::<S, 1>(simd, b, co, seg),
                    (None, WIDE_CO_TILE) => self.channels::<S, WIDE_CO_TILE>(simd, b, co),
                    (None, CO_TILE) => self.channels::<S, CO_TILE>(simd, b, co),
                    (None, _) => self.channels::<S, 1>(simd, b, co),
                }
                co += c;
            }
        }
    }
}

impl Kernels {
    /// `y[co][b][i][j] = bias[co] + sum_t wt[co][t] x[ci][b][i + ki][j + kj]` over
    /// `t = (ci, ki, kj)` for a block's samples `b`: a valid convolution with stride 1, `wt`
    /// row-major `cout x (cin k k)`, `x` as `[cin][samples][h][w]`, `y` as
    /// `[cout][samples][ho][wo]`.
    ///
    /// Each output is the sum taken in the order of `t` by fused multiply-adds from zero, the
    /// bias added last ([`reference::conv_valid`](crate::reference::conv_valid)), on every path:
    /// the same floats as the unfolded input times the weights through faer's matrix product.
    ///
    /// # Panics
    /// If a slice's length does not match `shape` or `k` exceeds `h` or `w`.
    pub fn conv_valid(self, shape: ConvShape, x: &[f32], wt: &[f32], bias: &[f32], y: &mut [f32]) {
        assert!(
            shape.k > 0 && shape.k <= shape.h && shape.k <= shape.w,
            "conv_valid: kernel side"
        );
        assert_eq!(x.len(), shape.input_len(), "conv_valid: input length");
        assert_eq!(wt.len(), shape.cout * shape.kk(), "conv_valid: weights");
        assert_eq!(bias.len(), shape.cout, "conv_valid: biases");
        assert_eq!(y.len(), shape.output_len(), "conv_valid: output length");
        self.run(Conv {
            s: shape,
            x,
            wt,
            bias,
            y,
        });
    }
}

/// The weights' gradient of a valid convolution ([`Kernels::conv_weight_grad`]).
struct WeightGrad<'a> {
    s: ConvShape,
    x: &'a [f32],
    dy: &'a [f32],
    gw: &'a mut [f32],
}

// PERF: a tile is WG_CO output channels x WG_ROWS kernel rows (one vector each, its first k
// lanes the row's weights): 10 accumulators. Each position loads WG_ROWS input vectors and
// broadcasts WG_CO output gradients for 10 fused multiply-adds, 5 lanes of 8 useful for the
// paper's first layer: 13.5-14.4 us a sample (about 85% of that design's FMA floor, AMD EPYC
// Zen 1), where faer's product with the unfolding took about 15 and the unfolding 1 more. The
// positions of a row that read whole vectors inside the input are a loop of their own with no
// bounds to check, and a piece's sums are passed by value: each of the two doubled the time.
const WG_CO: usize = 2;
const WG_ROWS: usize = 5;
/// The kernel side whose rows [`WeightGrad::tile_packed`] packs several to a vector (the
/// paper's 5 x 5 kernels).
const PACK_K: usize = 5;
/// Kernel rows of side [`PACK_K`] a vector of 16 lanes holds.
const PACK_ROWS: usize = 3;

/// Whether [`WeightGrad`] packs kernel rows of side `k` several to a vector on a path of
/// `lanes` lanes ([`WeightGrad::tile_packed`]): side [`PACK_K`] on 16 lanes.
fn packs(k: usize, lanes: usize) -> bool {
    k == PACK_K && lanes / PACK_K == PACK_ROWS
}

impl WeightGrad<'_> {
    /// Channels `co..co + C`, kernel rows `rows` (each `(ci, ki)`).
    #[inline(always)]
    fn tile<S: Simd, const C: usize, const R: usize>(
        &mut self,
        simd: S,
        co: usize,
        rows: [(usize, usize); R],
    ) {
        let s = self.s;
        let (ho, wo, lanes) = (s.ho(), s.wo(), S::F32_LANES);
        let np = s.samples * ho * wo;
        let dyc: [&[f32]; C] = std::array::from_fn(|c| &self.dy[(co + c) * np..][..np]);
        let zero = [[simd.splat_f32s(0.0); R]; C];
        let mut acc = zero;
        let (mut p, mut piece_end) = (0, crate::DENSE_PIECE);
        for b in 0..s.samples {
            for i in 0..ho {
                // The input each kernel row reads for this output row, from its first column,
                // and how many of the row's positions read whole vectors inside it.
                let xr: [&[f32]; R] = std::array::from_fn(|r| {
                    let (ci, ki) = rows[r];
                    &self.x[(ci * s.samples + b) * s.h * s.w + (i + ki) * s.w..]
                });
                let inside = xr
                    .iter()
                    .map(|x| (x.len() + 1).saturating_sub(lanes))
                    .fold(wo, usize::min);
                // Each slice `inside + lanes - 1` long (the row's reads), or empty if none is.
                let xin: [&[f32]; R] = std::array::from_fn(|r| match inside {
                    0 => &[][..],
                    n => &xr[r][..n + lanes - 1],
                });
                let mut j = 0;
                while j < wo {
                    if p == piece_end {
                        self.add_piece(simd, co, rows, acc);
                        acc = zero;
                        piece_end += crate::DENSE_PIECE;
                    }
                    // Up to the row's end or the piece's.
                    let end = wo.min(j + (piece_end - p));
                    let fast = end.min(inside);
                    for q in j..fast {
                        let d: [S::f32s; C] =
                            std::array::from_fn(|c| simd.splat_f32s(dyc[c][p + q - j]));
                        for r in 0..R {
                            let xv = S::as_simd_f32s(&xin[r][q..q + lanes]).0[0];
                            for c in 0..C {
                                acc[c][r] = simd.mul_add_f32s(d[c], xv, acc[c][r]);
                            }
                        }
                    }
                    for q in fast..end {
                        let d: [S::f32s; C] =
                            std::array::from_fn(|c| simd.splat_f32s(dyc[c][p + q - j]));
                        for r in 0..R {
                            let xv = load(simd, xr[r], q);
                            for c in 0..C {
                                acc[c][r] = simd.mul_add_f32s(d[c], xv, acc[c][r]);
                            }
                        }
                    }
                    p += end - j;
                    j = end;
                }
            }
        }
        self.add_piece(simd, co, rows, acc);
    }

    /// Adds a piece's sums (channels `co..`, kernel rows `rows`) to the gradient. PERF: the sums
    /// by value: a closure taking them by reference kept them in memory throughout the tile.
    #[inline(always)]
    fn add_piece<S: Simd, const C: usize, const R: usize>(
        &mut self,
        simd: S,
        co: usize,
        rows: [(usize, usize); R],
        acc: [[S::f32s; R]; C],
    ) {
        let (k, kk) = (self.s.k, self.s.kk());
        for (c, acc) in acc.iter().enumerate() {
            for (r, &sum) in acc.iter().enumerate() {
                let (ci, ki) = rows[r];
                let dst = &mut self.gw[(co + c) * kk + (ci * k + ki) * k..][..k];
                let cur = crate::prefix::load_prefix(simd, dst);
                crate::prefix::store_prefix(simd, dst, simd.add_f32s(cur, sum));
            }
        }
    }

    /// Channels `co..co + C`, kernel rows (side [`PACK_K`]) `g0 * PACK_ROWS ..` in `G` vectors of
    /// [`PACK_ROWS`] rows each (fewer in the last vector of the layer's rows), each vector holding
    /// consecutive kernel rows side by side, as their taps lie in `gw`.
    ///
    /// PERF: the paper's first layer on AVX-512 (16 lanes): one kernel row a vector used 5 of its
    /// 16 lanes, and each position's input was loaded once per tile of two channels. Here three
    /// rows share a vector (15 lanes), every channel's sums are in registers (10 x 2 vectors), and
    /// each position's input rows are loaded once: a lane's sum is the same chain of fused
    /// multiply-adds over the positions, so the floats are those of [`Self::tile`]. The second
    /// layer's 50 kernel rows (17 vectors a channel, two a tile) take it too, in place of faer's
    /// product with the unfolded input, which the forward pass then no longer forms.
    #[inline(always)]
    fn tile_packed<S: Simd, const C: usize, const G: usize>(
        &mut self,
        simd: S,
        co: usize,
        g0: usize,
    ) {
        let s = self.s;
        let (ho, wo) = (s.ho(), s.wo());
        // The kernel rows from the tile's first on (`q` below counts from there).
        let rows = s.cin * PACK_K - g0 * PACK_ROWS;
        debug_assert!(s.k == PACK_K && S::F32_LANES / PACK_K == PACK_ROWS && rows > 0);
        let np = s.samples * ho * wo;
        let dyc: [&[f32]; C] = std::array::from_fn(|c| &self.dy[(co + c) * np..][..np]);
        // Kernel row `q = g * PACK_ROWS + r` (group g, slot r) fills lanes `r * PACK_K ..
        // (r + 1) * PACK_K`; a slot past the last row is skipped.
        let masks: [_; PACK_ROWS] = std::array::from_fn(|r| {
            let from = (r * PACK_K) as u32;
            simd.mask_between_m32s(from, from + PACK_K as u32)
        });
        let lanes_of = masks.map(|m| m.mask());
        let zero = [[simd.splat_f32s(0.0); G]; C];
        let mut acc = zero;
        let (mut p, mut piece_end) = (0, crate::DENSE_PIECE);
        let plane = s.h * s.w;
        let x_len = self.x.len();
        // Where each slot's vector load starts for the first sample's first position, in `x`: its
        // kernel row's input, `r * PACK_K` values early, so that lanes `r * PACK_K ..` hold the
        // row's values from the position on (wrapped below zero for a slot reading nothing
        // before the input's start: then no row is `inside`). Sample b's output row i adds
        // `b * plane + i * w`.
        let first: [[usize; PACK_ROWS]; G] = std::array::from_fn(|g| {
            std::array::from_fn(|r| {
                let q = g0 * PACK_ROWS + (g * PACK_ROWS + r).min(rows - 1);
                let (ci, ki) = (q / PACK_K, q % PACK_K);
                (ci * s.samples * plane + ki * s.w).wrapping_sub(r * PACK_K)
            })
        });
        let highest = first.iter().flatten().copied().max().unwrap_or(0);
        // A slot that would start before the input (wrapped) never reads whole vectors; and the
        // furthest a row's loads reach past its slots' starts.
        let wrapped = highest > x_len;
        let reach = wo - 1 + S::F32_LANES;
        for b in 0..s.samples {
            for i in 0..ho {
                let row_at = b * plane + i * s.w;
                let start = first.map(|g| g.map(|at| at.wrapping_add(row_at)));
                // Whether every load of the row (whole vectors from `start + j`, `j < wo`) lies
                // inside `x`: all but rows at the very end of the block.
                let inside = !wrapped && highest + row_at + reach <= x_len;
                let mut j = 0;
                while j < wo {
                    if p == piece_end {
                        self.add_packed::<S, C, G>(simd, co, g0, acc);
                        acc = zero;
                        piece_end += crate::DENSE_PIECE;
                    }
                    let end = wo.min(j + (piece_end - p));
                    for q in j..end {
                        // PERF: plain loops, no closures: a closure's body does not take the
                        // path's target features, and its blends were calls.
                        let mut xv = [simd.splat_f32s(0.0); G];
                        for g in 0..G {
                            for r in 0..PACK_ROWS {
                                if g * PACK_ROWS + r >= rows {
                                    break;
                                }
                                let at = start[g][r].wrapping_add(q);
                                let part = if inside {
                                    // Lanes outside slot r's are read and not kept.
                                    // SAFETY: `at + lanes <= x.len()` for every position of
                                    // this output row (`inside`).
                                    unsafe {
                                        self.x.as_ptr().add(at).cast::<S::f32s>().read_unaligned()
                                    }
                                } else {
                                    // SAFETY: the mask's lanes `r * PACK_K .. (r + 1) * PACK_K`
                                    // read the kernel row's `q .. q + PACK_K`, inside its input
                                    // row (`q < wo`); a masked load reads only its lanes.
                                    unsafe {
                                        simd.mask_load_ptr_f32s(
                                            masks[r],
                                            self.x.as_ptr().wrapping_add(at),
                                        )
                                    }
                                };
                                xv[g] = simd.select_f32s(lanes_of[r], part, xv[g]);
                            }
                        }
                        for c in 0..C {
                            // SAFETY: `p + q - j < np`, the length of each channel's slice (the
                            // positions counted so far and this one's place in the row).
                            let d = simd.splat_f32s(unsafe { *dyc[c].get_unchecked(p + q - j) });
                            for g in 0..G {
                                acc[c][g] = simd.mul_add_f32s(d, xv[g], acc[c][g]);
                            }
                        }
                    }
                    p += end - j;
                    j = end;
                }
            }
        }
        self.add_packed::<S, C, G>(simd, co, g0, acc);
    }

    /// Adds a piece's sums of [`Self::tile_packed`] to the gradient: group `g` of channel `c`
    /// holds the taps of its kernel rows, consecutive in `gw`.
    #[inline(always)]
    fn add_packed<S: Simd, const C: usize, const G: usize>(
        &mut self,
        simd: S,
        co: usize,
        g0: usize,
        acc: [[S::f32s; G]; C],
    ) {
        let kk = self.s.kk();
        for (c, acc) in acc.iter().enumerate() {
            for (g, &sum) in acc.iter().enumerate() {
                let from = (g0 + g) * PACK_ROWS * PACK_K;
                if from >= kk {
                    break;
                }
                let len = (kk - from).min(PACK_ROWS * PACK_K);
                let dst = &mut self.gw[(co + c) * kk + from..][..len];
                let cur = crate::prefix::load_prefix(simd, dst);
                crate::prefix::store_prefix(simd, dst, simd.add_f32s(cur, sum));
            }
        }
    }

    /// Channels `co..co + C`: every kernel row, `WG_ROWS` at a time.
    #[inline(always)]
    fn channels<S: Simd, const C: usize>(&mut self, simd: S, co: usize) {
        let (cin, k) = (self.s.cin, self.s.k);
        let row = |q: usize| (q / k, q % k);
        let mut q = 0;
        while q + WG_ROWS <= cin * k {
            self.tile::<S, C, WG_ROWS>(simd, co, std::array::from_fn(|r| row(q + r)));
            q += WG_ROWS;
        }
        while q < cin * k {
            self.tile::<S, C, 1>(simd, co, [row(q)]);
            q += 1;
        }
    }
}

impl WithSimd for WeightGrad<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let mut co = 0;
        if packs(self.s.k, S::F32_LANES) {
            let groups = (self.s.cin * PACK_K).div_ceil(PACK_ROWS);
            while co < self.s.cout {
                let c = match self.s.cout - co {
                    10.. => 10,
                    5.. => 5,
                    _ => 1,
                };
                // Two vectors of kernel rows a tile (the last one alone if they are odd).
                for g0 in (0..groups).step_by(2) {
                    match (c, groups - g0) {
                        (10, 2..) => self.tile_packed::<S, 10, 2>(simd, co, g0),
                        (10, _) => self.tile_packed::<S, 10, 1>(simd, co, g0),
                        (5, 2..) => self.tile_packed::<S, 5, 2>(simd, co, g0),
                        (5, _) => self.tile_packed::<S, 5, 1>(simd, co, g0),
                        (_, 2..) => self.tile_packed::<S, 1, 2>(simd, co, g0),
                        _ => self.tile_packed::<S, 1, 1>(simd, co, g0),
                    }
                }
                co += c;
            }
            return;
        }
        while co < self.s.cout {
            if self.s.cout - co >= WG_CO {
                self.channels::<S, WG_CO>(simd, co);
                co += WG_CO;
            } else {
                self.channels::<S, 1>(simd, co);
                co += 1;
            }
        }
    }
}

impl Kernels {
    /// Whether [`Self::conv_weight_grad`] holds several kernel rows of side `k` in a vector on
    /// this path (side 5 on AVX-512's 16 lanes), so that any number of input channels keeps
    /// most lanes busy; otherwise a kernel row takes a vector of its own.
    pub fn conv_weight_grad_packs(self, k: usize) -> bool {
        packs(k, self.f32_lanes())
    }

    /// The weights' gradient of [`Kernels::conv_valid`]: `gw[co][t] += sum_p dy[co][p]
    /// x[ci][b][i + ki][j + kj]` over the output positions `p = (b, i, j)`, for `t = (ci, ki,
    /// kj)`, `dy` as `[cout][samples][ho][wo]` and `gw` row-major `cout x (cin k k)`.
    ///
    /// Each sum runs over `p` in order by fused multiply-adds from zero, in pieces of
    /// [`DENSE_PIECE`](crate::DENSE_PIECE), each added to `gw` in turn
    /// ([`reference::conv_weight_grad`](crate::reference::conv_weight_grad)), on every path:
    /// faer's product of `dy` and the unfolded input's transpose into `gw`. A kernel row is one
    /// vector (its first `k` lanes), so `k` must not exceed [`Kernels::f32_lanes`]; where
    /// [`Kernels::conv_weight_grad_packs`], several kernel rows share a vector.
    ///
    /// # Panics
    /// If a slice's length does not match `shape` or `k` exceeds the lanes, `h` or `w`.
    pub fn conv_weight_grad(self, shape: ConvShape, x: &[f32], dy: &[f32], gw: &mut [f32]) {
        assert!(
            shape.k > 0 && shape.k <= self.f32_lanes() && shape.k <= shape.h.min(shape.w),
            "conv_weight_grad: kernel side"
        );
        assert_eq!(x.len(), shape.input_len(), "conv_weight_grad: input length");
        assert_eq!(
            dy.len(),
            shape.output_len(),
            "conv_weight_grad: gradient length"
        );
        assert_eq!(
            gw.len(),
            shape.cout * shape.kk(),
            "conv_weight_grad: weights"
        );
        self.run(WeightGrad {
            s: shape,
            x,
            dy,
            gw,
        });
    }
}
