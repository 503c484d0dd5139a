//! QSGD (s = 4, buckets of 512, Elias-gamma: DIANA's default) encoding and decoding of one
//! gradient-sized vector (d = 7850), single-threaded, fastest of repeated batches:
//! `cargo run --release -p lena-benches --example qsgd_codec`.

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.
use lena_compress::{Compressor, CompressorParams, Message, QsgdNorm};
use rand::SeedableRng;
fn main() {
    let d = 7850;
    let c: Box<dyn Compressor> = CompressorParams::qsgd(4, 512, QsgdNorm::L2)
        .check(d)
        .unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    let x: Vec<f32> = (0..d)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut out = vec![0.0f32; d];
    let mut msg = Message::default();
    c.compress(&x, &mut rng, &mut out, &mut msg);
    let mut back = vec![0.0f32; d];
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            c.decode(&msg, &mut back).unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    let mut bestc = f64::MAX;
    for _ in 0..40 {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            c.compress(&x, &mut rng, &mut out, &mut msg);
        }
        bestc = bestc.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    println!(
        "decode {best:.2} us, compress {bestc:.2} us per 7850-vector ({} bits)",
        msg.bits()
    );
}
