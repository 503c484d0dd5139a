//! Plain f64 reference implementations of the objectives, for tests: no faer, no blocking.

use crate::LinearKind;
use crate::cnn::{CnnArch, Op, dropout_keep};
use lena_data::Dataset;

/// Objective and gradient of a linear model on all rows of `data`, in f64.
pub fn linear_loss_grad(
    kind: LinearKind,
    data: &Dataset,
    w: &[f32],
    lambda: f64,
) -> (f64, Vec<f64>) {
    let (p, c, n) = (
        data.n_features,
        w.len() / (data.n_features + 1),
        data.n_samples(),
    );
    let mut grad = vec![0.0f64; w.len()];
    let mut loss = 0.0;
    for i in 0..n {
        let x = data.row(i);
        let label = data.labels[i] as usize;
        let z: Vec<f64> = (0..c)
            .map(|k| {
                let row = &w[k * (p + 1)..(k + 1) * (p + 1)];
                (0..p).map(|j| row[j] as f64 * x[j] as f64).sum::<f64>() + row[p] as f64
            })
            .collect();
        let dz: Vec<f64> = match kind {
            LinearKind::LogisticOva => (0..c)
                .map(|k| {
                    let y = if k == label { 1.0 } else { -1.0 };
                    loss += (1.0 + (-y * z[k]).exp()).ln();
                    -y / (1.0 + (y * z[k]).exp())
                })
                .collect(),
            LinearKind::Softmax => {
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
                loss += m + s.ln() - z[label];
                (0..c)
                    .map(|k| (z[k] - m).exp() / s - f64::from(u8::from(k == label)))
                    .collect()
            }
        };
        for k in 0..c {
            for j in 0..p {
                grad[k * (p + 1) + j] += dz[k] * x[j] as f64;
            }
            grad[k * (p + 1) + p] += dz[k];
        }
    }
    let nf = n.max(1) as f64;
    let mut reg = 0.0;
    for (g, &wi) in grad.iter_mut().zip(w) {
        *g = *g / nf + lambda * wi as f64;
        reg += wi as f64 * wi as f64;
    }
    (loss / nf + 0.5 * lambda * reg, grad)
}

/// Output of one network layer for one sample, in f64 and the natural layout (`[c][h][w]`),
/// by direct loops: no im2col, no blocks. `mask`: dropout multipliers (`None`: identity).
pub(crate) fn layer_forward(op: &Op, x: &[f64], params: &[f64], mask: Option<&[f64]>) -> Vec<f64> {
    match *op {
        Op::Conv(c) => {
            let (ho, wo, k) = (c.ho(), c.wo(), c.k);
            let (wt, b) = params.split_at(c.cout * c.kk());
            let mut y = vec![0.0; c.cout * ho * wo];
            for co in 0..c.cout {
                for i in 0..ho {
                    for j in 0..wo {
                        let mut s = b[co];
                        for ci in 0..c.cin {
                            for ki in 0..k {
                                for kj in 0..k {
                                    s += wt[((co * c.cin + ci) * k + ki) * k + kj]
                                        * x[(ci * c.h + i + ki) * c.w + j + kj];
                                }
                            }
                        }
                        y[(co * ho + i) * wo + j] = s;
                    }
                }
            }
            y
        }
        Op::Pool { c, h, w } => {
            let (ho, wo) = (h / 2, w / 2);
            let mut y = vec![0.0; c * ho * wo];
            for p in 0..c {
                for i in 0..ho {
                    for j in 0..wo {
                        let at = |di: usize, dj: usize| x[(p * h + 2 * i + di) * w + 2 * j + dj];
                        y[(p * ho + i) * wo + j] =
                            at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    }
                }
            }
            y
        }
        Op::Relu => x.iter().map(|v| v.max(0.0)).collect(),
        Op::Dropout { .. } => match mask {
            Some(m) => x.iter().zip(m).map(|(a, b)| a * b).collect(),
            None => x.to_vec(),
        },
        Op::Flatten { .. } => x.to_vec(),
        Op::Dense { input, output } => {
            let (wt, b) = params.split_at(output * input);
            (0..output)
                .map(|o| b[o] + (0..input).map(|i| wt[o * input + i] * x[i]).sum::<f64>())
                .collect()
        }
    }
}

/// Gradients of `dy . layer_forward(x)` with respect to the input and the parameters.
pub(crate) fn layer_backward(
    op: &Op,
    x: &[f64],
    params: &[f64],
    mask: Option<&[f64]>,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dp = vec![0.0; params.len()];
    match *op {
        Op::Conv(c) => {
            let (ho, wo, k) = (c.ho(), c.wo(), c.k);
            let wt = &params[..c.cout * c.kk()];
            for co in 0..c.cout {
                for i in 0..ho {
                    for j in 0..wo {
                        let d = dy[(co * ho + i) * wo + j];
                        dp[c.cout * c.kk() + co] += d;
                        for ci in 0..c.cin {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let wi = ((co * c.cin + ci) * k + ki) * k + kj;
                                    let xi = (ci * c.h + i + ki) * c.w + j + kj;
                                    dp[wi] += d * x[xi];
                                    dx[xi] += d * wt[wi];
                                }
                            }
                        }
                    }
                }
            }
        }
        Op::Pool { c, h, w } => {
            let (ho, wo) = (h / 2, w / 2);
            for p in 0..c {
                for i in 0..ho {
                    for j in 0..wo {
                        // The first maximum in the order (0,0), (0,1), (1,0), (1,1).
                        let mut best = (p * h + 2 * i) * w + 2 * j;
                        for (di, dj) in [(0, 1), (1, 0), (1, 1)] {
                            let idx = (p * h + 2 * i + di) * w + 2 * j + dj;
                            if x[idx] > x[best] {
                                best = idx;
                            }
                        }
                        dx[best] += dy[(p * ho + i) * wo + j];
                    }
                }
            }
        }
        Op::Relu => {
            for ((d, &xi), &g) in dx.iter_mut().zip(x).zip(dy) {
                *d = if xi > 0.0 { g } else { 0.0 };
            }
        }
        Op::Dropout { .. } => {
            for (i, d) in dx.iter_mut().enumerate() {
                *d = dy[i] * mask.map_or(1.0, |m| m[i]);
            }
        }
        Op::Flatten { .. } => dx.copy_from_slice(dy),
        Op::Dense { input, output } => {
            let wt = &params[..output * input];
            for o in 0..output {
                dp[output * input + o] += dy[o];
                for i in 0..input {
                    dp[o * input + i] += dy[o] * x[i];
                    dx[i] += dy[o] * wt[o * input + i];
                }
            }
        }
    }
    (dx, dp)
}

/// Dropout multipliers of layer `l` for the sample at minibatch position `pos`, natural layout.
fn dropout_mask(op: &Op, l: usize, p: f32, seed: u64, pos: usize) -> Vec<f64> {
    let Op::Dropout { c, hw, channelwise } = *op else {
        unreachable!("a dropout layer")
    };
    let scale = 1.0 / (1.0 - f64::from(p));
    let mut m = vec![0.0; c * hw];
    let draws = if channelwise { c } else { c * hw };
    dropout_keep(seed, pos, l, draws, p, &mut |i, keep| {
        let v = if keep { scale } else { 0.0 };
        if channelwise {
            m[i * hw..(i + 1) * hw].fill(v);
        } else {
            m[i] = v;
        }
    });
    m
}

/// Objective and gradient of a network on all rows of `data`, in f64, sample by sample.
/// `dropout`: the rate and seed, with the sample at row `i` at minibatch position `i`.
pub fn cnn_loss_grad(
    arch: CnnArch,
    data: &Dataset,
    w: &[f32],
    lambda: f64,
    dropout: Option<(f32, u64)>,
) -> (f64, Vec<f64>) {
    net_loss_grad(arch.ops(), data, w, lambda, dropout)
}

/// [`cnn_loss_grad`] of any network of this crate (an MLP's layers are its own).
pub fn network_loss_grad(
    net: &crate::Cnn,
    data: &Dataset,
    w: &[f32],
    lambda: f64,
    dropout: Option<(f32, u64)>,
) -> (f64, Vec<f64>) {
    net_loss_grad(net.ops(), data, w, lambda, dropout)
}

fn net_loss_grad(
    ops: &[Op],
    data: &Dataset,
    w: &[f32],
    lambda: f64,
    dropout: Option<(f32, u64)>,
) -> (f64, Vec<f64>) {
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    cnn_loss_grad64(ops, data, &w64, lambda, dropout)
}

/// [`cnn_loss_grad`] at f64 parameters.
fn cnn_loss_grad64(
    ops: &[Op],
    data: &Dataset,
    w64: &[f64],
    lambda: f64,
    dropout: Option<(f32, u64)>,
) -> (f64, Vec<f64>) {
    let w = w64;
    let mut grad = vec![0.0f64; w.len()];
    let mut loss = 0.0;
    let n = data.n_samples();
    for s in 0..n {
        let mut acts = vec![
            data.row(s)
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>(),
        ];
        let mut masks = Vec::new();
        let mut off = 0;
        for (l, op) in ops.iter().enumerate() {
            let mask = match (op, dropout) {
                (Op::Dropout { .. }, Some((p, seed))) if p > 0.0 => {
                    Some(dropout_mask(op, l, p, seed, s))
                }
                _ => None,
            };
            let y = layer_forward(op, &acts[l], &w64[off..off + op.params()], mask.as_deref());
            off += op.params();
            acts.push(y);
            masks.push(mask);
        }
        let z = acts.last().expect("layers");
        let label = data.labels[s] as usize;
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let se: f64 = z.iter().map(|v| (v - m).exp()).sum();
        loss += m + se.ln() - z[label];
        let mut dy: Vec<f64> = (0..z.len())
            .map(|k| (z[k] - m).exp() / se - f64::from(u8::from(k == label)))
            .collect();
        let mut off = w.len();
        for (l, op) in ops.iter().enumerate().rev() {
            off -= op.params();
            let p = &w64[off..off + op.params()];
            let (dx, dp) = layer_backward(op, &acts[l], p, masks[l].as_deref(), &dy);
            for (g, d) in grad[off..off + op.params()].iter_mut().zip(dp) {
                *g += d;
            }
            dy = dx;
        }
    }
    let nf = n.max(1) as f64;
    let mut reg = 0.0;
    for (g, &wi) in grad.iter_mut().zip(w64) {
        *g = *g / nf + lambda * wi;
        reg += wi * wi;
    }
    (loss / nf + 0.5 * lambda * reg, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnn::Conv;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// Central differences of `phi(x, p) = dy . layer_forward(x, p)` against `layer_backward`,
    /// for every input and parameter coordinate.
    fn check_layer(op: Op, input: usize, seed: u64) {
        let x = values(input, seed);
        let p = values(op.params(), seed + 1);
        let out = op.out_size(input);
        let dy = values(out, seed + 2);
        let mask: Option<Vec<f64>> = matches!(op, Op::Dropout { .. }).then(|| {
            values(out, seed + 3)
                .iter()
                .map(|v| if *v > 0.0 { 2.0 } else { 0.0 })
                .collect()
        });
        let phi = |x: &[f64], p: &[f64]| -> f64 {
            layer_forward(&op, x, p, mask.as_deref())
                .iter()
                .zip(&dy)
                .map(|(a, b)| a * b)
                .sum()
        };
        let (dx, dp) = layer_backward(&op, &x, &p, mask.as_deref(), &dy);
        // Rounding in phi is about eps * sum |dy_i y_i|; divided by 2h in the difference.
        let y = layer_forward(&op, &x, &p, mask.as_deref());
        let scale: f64 = y.iter().zip(&dy).map(|(a, b)| (a * b).abs()).sum();
        let h = 1e-6;
        let tol = |fd: f64| 1e-6 * (1.0 + fd.abs()) + 10.0 * f64::EPSILON * scale / h;
        // At most about 60 coordinates of each kind, spread over the whole range.
        let coords = |n: usize| (0..n).step_by(n.div_ceil(60).max(1));
        for i in coords(input) {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (phi(&a, &p) - phi(&b, &p)) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() <= tol(fd),
                "{op:?} dx[{i}]: {fd} vs {}",
                dx[i]
            );
        }
        for i in coords(op.params()) {
            let (mut a, mut b) = (p.clone(), p.clone());
            a[i] += h;
            b[i] -= h;
            let fd = (phi(&x, &a) - phi(&x, &b)) / (2.0 * h);
            assert!(
                (fd - dp[i]).abs() <= tol(fd),
                "{op:?} dp[{i}]: {fd} vs {}",
                dp[i]
            );
        }
    }

    #[test]
    fn every_layer_matches_finite_differences() {
        let conv = Conv {
            cin: 3,
            cout: 4,
            k: 3,
            h: 7,
            w: 6,
        };
        check_layer(Op::Conv(conv), 3 * 7 * 6, 1);
        check_layer(Op::Pool { c: 3, h: 6, w: 4 }, 72, 2);
        check_layer(Op::Relu, 50, 3);
        check_layer(
            Op::Dropout {
                c: 3,
                hw: 5,
                channelwise: false,
            },
            15,
            4,
        );
        check_layer(Op::Flatten { c: 3, hw: 5 }, 15, 5);
        check_layer(
            Op::Dense {
                input: 13,
                output: 7,
            },
            13,
            6,
        );
        // Every layer of both networks, at its real shape.
        let mlp = crate::Cnn::mlp(&[30, 20], 0.5, 0.0).unwrap();
        for ops in [CnnArch::Small.ops(), CnnArch::Wide.ops(), mlp.ops()] {
            let mut size = crate::cnn::INPUT;
            for (l, op) in ops.iter().enumerate() {
                check_layer(*op, size, 10 + l as u64);
                size = op.out_size(size);
            }
        }
    }

    #[test]
    fn whole_network_matches_finite_differences() {
        // Both networks, dropout off and on (fixed masks), along coordinates of every layer and
        // along random directions.
        use crate::Cnn;
        for (cnn, n, drop) in [
            (Cnn::new(CnnArch::Small, 0.5, 1e-3).unwrap(), 3, None),
            (
                Cnn::new(CnnArch::Small, 0.5, 1e-3).unwrap(),
                3,
                Some((0.5, 9)),
            ),
            (
                Cnn::new(CnnArch::Wide, 0.5, 1e-3).unwrap(),
                1,
                Some((0.5, 9)),
            ),
            // MLPs: one hidden layer with dropout, two without.
            (Cnn::mlp(&[24], 0.5, 1e-3).unwrap(), 4, Some((0.5, 9))),
            (Cnn::mlp(&[20, 12], 0.0, 1e-3).unwrap(), 4, None),
        ] {
            let data = lena_data::synthetic::classification(n, 784, 10, 3.0, 4);
            let arch = cnn.arch();
            let ops = cnn.ops();
            let mut w32 = vec![0.0f32; cnn.dim()];
            use rand::SeedableRng;
            cnn.init(
                &mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3),
                &mut w32,
            );
            let w: Vec<f64> = w32.iter().map(|&v| f64::from(v)).collect();
            let (_, g) = cnn_loss_grad64(ops, &data, &w, 1e-3, drop);
            let f = |w: &[f64]| cnn_loss_grad64(ops, &data, w, 1e-3, drop).0;
            let h = 1e-6;
            let mut off = 0;
            let mut checked = 0;
            for op in ops {
                // The first weight, a middle one and the last bias of each layer.
                for i in [
                    off,
                    off + op.params() / 2,
                    off + op.params().saturating_sub(1),
                ] {
                    if op.params() == 0 {
                        break;
                    }
                    let (mut a, mut b) = (w.clone(), w.clone());
                    a[i] += h;
                    b[i] -= h;
                    let fd = (f(&a) - f(&b)) / (2.0 * h);
                    assert!(
                        (fd - g[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "{arch:?} g[{i}]: {fd} vs {}",
                        g[i]
                    );
                    checked += 1;
                }
                off += op.params();
            }
            assert!(checked >= 6, "{arch:?}: {checked}");
            for seed in 0..3 {
                let d = values(w.len(), 100 + seed);
                let gd: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
                let step =
                    |t: f64| -> Vec<f64> { w.iter().zip(&d).map(|(a, b)| a + t * b).collect() };
                let fd = (f(&step(h)) - f(&step(-h))) / (2.0 * h);
                assert!(
                    (fd - gd).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "{arch:?} direction {seed}: {fd} vs {gd}"
                );
            }
        }
    }
}
