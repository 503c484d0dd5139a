//! A user's program on lena's crates alone: error feedback over a top-k compressor built
//! directly, then DGD and LENA on the user's own least-squares problem, with their uploads
//! and bits. Exits non-zero if a result is not what the crates promise.

use lena_algo::{
    AlgorithmParams, Broadcast, GradientOracle, Kernels, LenaParams, Message, Upload, Uploads,
};
use lena_compress::{Compressor, ErrorFeedback, IndexCoding, TopK};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// One node's least squares `||A w - b||^2 / (2 n)` on its own rows.
struct LeastSquares {
    a: Vec<Vec<f32>>,
    b: Vec<f32>,
}

impl GradientOracle for LeastSquares {
    fn gradient(&mut self, w: &[f32], g: &mut [f32]) {
        g.fill(0.0);
        let n = self.b.len() as f32;
        for (row, bi) in self.a.iter().zip(&self.b) {
            let r: f32 = row.iter().zip(w).map(|(x, y)| x * y).sum::<f32>() - bi;
            for (gj, xj) in g.iter_mut().zip(row) {
                *gj += r * xj / n;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Error feedback keeps what top-k drops: after many rounds the sum of the compressed
    // vectors plus the memory is the sum of the inputs.
    let d = 50;
    let topk = TopK::new(d, 5, IndexCoding::Log2)?;
    let mut ef = ErrorFeedback::new(d);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let (mut out, mut msg) = (vec![0.0f32; d], Message::default());
    let (mut sent, mut fed, mut bits) = (vec![0.0f64; d], vec![0.0f64; d], 0);
    for t in 0..40 {
        let x: Vec<f32> = (0..d)
            .map(|j| ((t * 7 + j * 3) % 11) as f32 - 5.0)
            .collect();
        ef.compress(&topk, &x, &mut rng, &mut out, &mut msg);
        bits += msg.bits();
        for j in 0..d {
            sent[j] += f64::from(out[j]);
            fed[j] += f64::from(x[j]);
        }
    }
    let gap = (0..d)
        .map(|j| (sent[j] + f64::from(ef.memory()[j]) - fed[j]).abs())
        .fold(0.0, f64::max);
    println!(
        "error feedback over {}: {bits} bits in 40 rounds, sum gap {gap:.2e}",
        topk.name()
    );
    if gap > 1e-3 {
        return Err(format!("error feedback lost mass: {gap}").into());
    }

    // DGD and LENA on the same problem, four nodes.
    let (m, dim) = (4, 8);
    let w_true: Vec<f32> = (0..dim).map(|j| j as f32 / 4.0 - 1.0).collect();
    let node = |i: usize| {
        let a: Vec<Vec<f32>> = (0..20)
            .map(|r| {
                (0..dim)
                    .map(|j| (((i * 31 + r * 7 + j * 13) % 17) as f32 - 8.0) / 8.0)
                    .collect()
            })
            .collect();
        let b = a
            .iter()
            .map(|row| row.iter().zip(&w_true).map(|(x, y)| x * y).sum())
            .collect();
        LeastSquares { a, b }
    };
    for params in [
        AlgorithmParams::new(0.5, lena_algo::DgdParams::default()),
        AlgorithmParams::new(0.5, LenaParams::default()),
    ] {
        let alg = params.check(dim)?;
        let k = Kernels::detect();
        let (mut workers, mut server) = (alg.workers(m, dim, k), alg.server(m, dim, k));
        let mut nodes: Vec<LeastSquares> = (0..m).map(node).collect();
        let mut msgs = vec![Message::default(); m];
        let (mut w, mut prev) = (vec![0.0f32; dim], vec![0.0f32; dim]);
        let (mut uploads, mut bits) = (0, 0);
        for t in 0..400 {
            let bc = Broadcast::next(k, t, &w, (t > 0).then_some(&prev[..]));
            let mut up = vec![false; m];
            for i in 0..m {
                if workers[i].step(&bc, &mut nodes[i], &mut rng, &mut msgs[i]) == Upload::Sent {
                    up[i] = true;
                    uploads += 1;
                    bits += msgs[i].bits();
                }
            }
            prev.copy_from_slice(&w);
            server.apply(t, &mut w, Uploads::new(&msgs, &up))?;
        }
        let err = w
            .iter()
            .zip(&w_true)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{}: {uploads} uploads, {bits} bits, max error {err:.2e}",
            alg.name()
        );
        if err.is_nan() || err >= 0.1 {
            return Err(format!("{} did not converge: {err}", alg.name()).into());
        }
    }
    Ok(())
}
