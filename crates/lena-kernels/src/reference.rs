//! Plain reference twins of every kernel: obvious loops, f64 accumulation.
//!
//! They define what the SIMD kernels compute; tests and benches compare against them.

/// Reference `x . y`.
pub fn dot(x: &[f32], y: &[f32]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Reference `||x||^2`.
pub fn norm2_sq(x: &[f32]) -> f64 {
    dot(x, x)
}

/// Reference `||x - y||^2`.
pub fn dist2_sq(x: &[f32], y: &[f32]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(&a, &b)| {
            let d = a as f64 - b as f64;
            d * d
        })
        .sum()
}

/// Reference `||e + alpha g - v||^2`.
pub fn lin_dist2_sq(e: &[f32], alpha: f32, g: &[f32], v: &[f32]) -> f64 {
    assert!(e.len() == g.len() && e.len() == v.len());
    (0..e.len())
        .map(|i| {
            let d = e[i] as f64 + alpha as f64 * g[i] as f64 - v[i] as f64;
            d * d
        })
        .sum()
}

/// Reference `y <- a x + b y`.
pub fn axpby(a: f32, x: &[f32], b: f32, y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = (a as f64 * xi as f64 + b as f64 * *yi as f64) as f32;
    }
}

/// Reference `y <- a x + y`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    axpby(a, x, 1.0, y)
}

/// Reference `acc <- acc + sum_m fl(scale rows[m])`: plain f32 operations, each product and
/// each sum rounded, rows in order (Rust never fuses or reorders them), so the kernel must
/// match it bit for bit.
pub fn sum_rows(acc: &mut [f32], scale: f32, rows: &[&[f32]]) {
    for r in rows {
        for (a, x) in acc.iter_mut().zip(r.iter()) {
            *a += scale * x;
        }
    }
}

/// Reference valid convolution ([`crate::Kernels::conv_valid`]): each output the f32 sum over
/// `t = (ci, ki, kj)` in order by fused multiply-adds from zero, then the bias added, so the
/// kernel must match it bit for bit.
pub fn conv_valid(s: crate::ConvShape, x: &[f32], wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let (ho, wo, k) = (s.ho(), s.wo(), s.k);
    for co in 0..s.cout {
        for b in 0..s.samples {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = 0.0f32;
                    for ci in 0..s.cin {
                        let plane = &x[(ci * s.samples + b) * s.h * s.w..];
                        for ki in 0..k {
                            for kj in 0..k {
                                let wv = wt[co * s.kk() + (ci * k + ki) * k + kj];
                                acc = wv.mul_add(plane[(i + ki) * s.w + j + kj], acc);
                            }
                        }
                    }
                    y[((co * s.samples + b) * ho + i) * wo + j] = bias[co] + acc;
                }
            }
        }
    }
}

/// Reference dense layer ([`crate::Kernels::dense`]): each output the f32 sum over the inputs
/// in order by fused multiply-adds from zero, in pieces of [`crate::DENSE_PIECE`], the first
/// piece added to the bias and each later one to the sum so far, so the kernel must match it
/// bit for bit.
pub fn dense(x: &[f32], input: usize, wt: &[f32], bias: &[f32], y: &mut [f32]) {
    let output = bias.len();
    for (xr, yr) in x.chunks_exact(input).zip(y.chunks_exact_mut(output)) {
        for (o, yo) in yr.iter_mut().enumerate() {
            *yo = bias[o];
            for (p, piece) in xr.chunks(crate::DENSE_PIECE).enumerate() {
                let from = p * crate::DENSE_PIECE;
                let mut acc = 0.0f32;
                for (i, &xi) in piece.iter().enumerate() {
                    acc = xi.mul_add(wt[(from + i) * output + o], acc);
                }
                *yo += acc;
            }
        }
    }
}

/// Reference weights' gradient of a valid convolution ([`crate::Kernels::conv_weight_grad`]):
/// each sum over the output positions in order by fused multiply-adds from zero, in pieces of
/// [`crate::DENSE_PIECE`], each added to `gw` in turn, so the kernel must match it bit for bit.
pub fn conv_weight_grad(s: crate::ConvShape, x: &[f32], dy: &[f32], gw: &mut [f32]) {
    let (ho, wo, k) = (s.ho(), s.wo(), s.k);
    let np = s.samples * ho * wo;
    for co in 0..s.cout {
        for ci in 0..s.cin {
            for ki in 0..k {
                for kj in 0..k {
                    let g = &mut gw[co * s.kk() + (ci * k + ki) * k + kj];
                    for from in (0..np).step_by(crate::DENSE_PIECE) {
                        let mut acc = 0.0f32;
                        for p in from..np.min(from + crate::DENSE_PIECE) {
                            let (b, i, j) = (p / (ho * wo), p / wo % ho, p % wo);
                            let xv = x[(ci * s.samples + b) * s.h * s.w + (i + ki) * s.w + j + kj];
                            acc = dy[co * np + p].mul_add(xv, acc);
                        }
                        *g += acc;
                    }
                }
            }
        }
    }
}

/// Reference `out = a^T b` ([`crate::Kernels::product_tn`]): each output the f32 sum over the
/// depth in order by fused multiply-adds from zero, so the kernel must match it bit for bit.
pub fn product_tn(depth: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (m, n) = (a.len() / depth, b.len() / depth);
    for t in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for k in 0..depth {
                acc = a[k * m + t].mul_add(b[k * n + j], acc);
            }
            out[t * n + j] = acc;
        }
    }
}

/// Reference `x <- a x`.
pub fn scale(a: f32, x: &mut [f32]) {
    for xi in x {
        *xi = (a as f64 * *xi as f64) as f32;
    }
}

/// Reference `e <- e + alpha g - v`, returning `||e_new||^2` of the rounded result.
pub fn ef_update(e: &mut [f32], alpha: f32, g: &[f32], v: &[f32]) -> f64 {
    assert!(e.len() == g.len() && e.len() == v.len());
    let mut s = 0.0;
    for i in 0..e.len() {
        let n = (e[i] as f64 + alpha as f64 * g[i] as f64 - v[i] as f64) as f32;
        e[i] = n;
        s += n as f64 * n as f64;
    }
    s
}

/// Reference `(sum softplus(t_i), sigmoid(t_i))` in f64.
pub fn softplus_sigmoid(t: &[f32]) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let sig = t
        .iter()
        .map(|&v| {
            let v = v as f64;
            loss += v.max(0.0) + (-v.abs()).exp().ln_1p();
            1.0 / (1.0 + (-v).exp())
        })
        .collect();
    (loss, sig)
}

/// Reference `exp(x_i)` in f64.
pub fn exp(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| (v as f64).exp()).collect()
}

/// Reference `out <- b * base + sum_k c[k] * rows[k]`.
pub fn lin_comb(out: &mut [f32], b: f32, base: &[f32], c: &[f32], rows: &[&[f32]]) {
    for (j, o) in out.iter_mut().enumerate() {
        let mut s = b as f64 * base[j] as f64;
        for (ck, r) in c.iter().zip(rows) {
            s += *ck as f64 * r[j] as f64;
        }
        *o = s as f32;
    }
}

/// Reference scores `z[i * c + k] = <x_i, w_k>` (f64), the rows of `x` `p` long, the class rows
/// of `w` at `stride`.
pub fn dot_block(x: &[f32], p: usize, w: &[f32], stride: usize, c: usize) -> Vec<f64> {
    let n = x.len() / p;
    let mut z = vec![0.0; n * c];
    for i in 0..n {
        for k in 0..c {
            z[i * c + k] = dot(&x[i * p..(i + 1) * p], &w[k * stride..k * stride + p]);
        }
    }
    z
}

/// Reference `g[k * stride + j] += sum_i d[i * c + k] x_i[j]`, in row order with one fused
/// multiply-add (one rounding) per term: what the SIMD kernel computes exactly.
pub fn add_outer_block(g: &mut [f32], stride: usize, c: usize, d: &[f32], x: &[f32], p: usize) {
    for (i, xi) in x.chunks_exact(p).enumerate() {
        for k in 0..c {
            for j in 0..p {
                g[k * stride + j] = d[i * c + k].mul_add(xi[j], g[k * stride + j]);
            }
        }
    }
}

/// Reference 2 x 2 max-pooling with stride 2 of `planes` planes of `h x w`: each window's
/// values in the order (0, 0), (0, 1), (1, 0), (1, 1), a later value taking the place of the
/// maximum so far only if greater. Returns the maxima and their positions `2 di + dj`.
pub fn max_pool2(planes: usize, h: usize, w: usize, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let (ho, wo) = (h / 2, w / 2);
    let (mut y, mut am) = (Vec::new(), Vec::new());
    for p in 0..planes {
        for i in 0..ho {
            for j in 0..wo {
                let at = |di: usize, dj: usize| x[p * h * w + (2 * i + di) * w + 2 * j + dj];
                let (mut m, mut best) = (at(0, 0), 0u8);
                for (k, v) in [(1u8, at(0, 1)), (2, at(1, 0)), (3, at(1, 1))] {
                    if v > m {
                        (m, best) = (v, k);
                    }
                }
                y.push(m);
                am.push(best);
            }
        }
    }
    (y, am)
}

/// Reference adjoint of [`max_pool2`]: `planes` planes of `h x w` zeros, each pooled value's
/// gradient `dy` then written at its recorded position `am` (none for a position past 3).
pub fn max_pool2_adjoint(planes: usize, h: usize, w: usize, dy: &[f32], am: &[u8]) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0f32; planes * h * w];
    for o in 0..planes * ho * wo {
        let (p, i, j) = (o / (ho * wo), o % (ho * wo) / wo, o % wo);
        let (di, dj) = (usize::from(am[o] >> 1), usize::from(am[o] & 1));
        if am[o] < 4 {
            dx[p * h * w + (2 * i + di) * w + 2 * j + dj] = dy[o];
        }
    }
    dx
}

/// Reference [`crate::Kernels::add_row_sums`]: each row of `m` (`len` values) summed by
/// `Iterator::sum` (from `-0.0`, in order) and added to its `acc`.
pub fn add_row_sums(acc: &mut [f32], m: &[f32], len: usize) {
    for (r, a) in acc.iter_mut().enumerate() {
        *a += m[r * len..(r + 1) * len].iter().sum::<f32>();
    }
}
