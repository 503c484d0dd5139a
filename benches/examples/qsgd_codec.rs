//! QSGD (s = 4, buckets of 512: DIANA's default) encoding and decoding of one gradient-sized
//! vector (d = 7850), single-threaded, fastest of repeated batches, for both level codings
//! (Elias gamma, DIANA's default, and fixed width) and two inputs: `uniform` (every level 0
//! or 1) and `sparse` (like a minibatch gradient of MNIST's linear model: most coordinates
//! zero, the rest heavy-tailed, levels up to 4), and the server's level form of a message alone
//! and two at once (`Compressor::decode_levels_two`):
//! `cargo run --release -p lena-benches --example qsgd_codec` (`-- fixed sparse`: one of them,
//! for `valgrind --tool=callgrind`).

#![allow(clippy::print_stdout)] // A command-line tool: its report is its output.
use lena_benches as _; // The `lena` binary's allocator (`lena_benches` installs it).
use lena_compress::{Compressor, Message, Qsgd, QsgdCoding, QsgdNorm};
use rand::{RngCore, SeedableRng};

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let d = 7850;
    let uniform: Vec<f32> = (0..d)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    // Zero where i * 7919 mod 1000 is below 700; else a value whose size spans 1e-3 to 1.
    let sparse: Vec<f32> = (0..d)
        .map(|i| {
            let h = (i * 7919) % 1000;
            if h < 700 {
                0.0
            } else {
                let sign = if h % 2 == 0 { 1.0 } else { -1.0 };
                sign * 10f32.powf(-3.0 * ((h - 700) as f32 / 300.0))
            }
        })
        .collect();
    for (coding, name) in [
        (QsgdCoding::EliasGamma, "gamma"),
        (QsgdCoding::Fixed, "fixed"),
    ] {
        let c = Qsgd::new(d, 4, 512, QsgdNorm::L2, coding).unwrap();
        for (input, x) in [("uniform", &uniform), ("sparse", &sparse)] {
            if !only.is_empty() && only != [name, input] {
                continue;
            }
            let (decode, levels, compress, bits, forms) = time(&c, Some(&c), x);
            println!(
                "{name} {input:>7}: decode {decode:5.2} us, compress {compress:5.2} us (levels \
                 alone {levels:5.2}) per 7850-vector ({bits} bits){forms}"
            );
        }
    }
}

/// Fastest decode, levels alone (if `quantizer` is given: `c` itself) and compress of `x` by
/// `c`, in microseconds, the message's bits, and the level form's decode alone and two at once.
fn time(c: &dyn Compressor, quantizer: Option<&Qsgd>, x: &[f32]) -> (f64, f64, f64, u64, String) {
    let d = x.len();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    let mut out = vec![0.0f32; d];
    let mut msg = Message::default();
    c.compress(x, &mut rng, &mut out, &mut msg);
    let mut back = vec![0.0f32; d];
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            c.decode(&msg, &mut back).unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    // The level form (a server's), one message at a time and two at once, per message.
    let mut forms = String::new();
    if c.decode_levels(&msg, &mut vec![0; d], &mut Vec::new())
        .is_some()
    {
        let (mut f0, mut f1, mut s0, mut s1) = (vec![0u8; d], vec![0u8; d], vec![], vec![]);
        let (mut one, mut two) = (f64::MAX, f64::MAX);
        for _ in 0..20 {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                let _ = c.decode_levels(&msg, &mut f0, &mut s0);
            }
            one = one.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
            let t = std::time::Instant::now();
            for _ in 0..100 {
                let _ = c.decode_levels_two([&msg, &msg], [&mut f0, &mut f1], [&mut s0, &mut s1]);
            }
            two = two.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
        }
        forms = format!(", level form {one:5.2} us alone, {two:5.2} us two at once");
    }
    // The levels alone (`Qsgd::quantize`), with draws from the same stream.
    let mut bestq = f64::MAX;
    if let Some(q) = quantizer {
        let uniforms: Vec<u32> = (0..d).map(|_| rng.next_u32()).collect();
        for _ in 0..40 {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                q.quantize(x, &uniforms, &mut out);
            }
            bestq = bestq.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
        }
    }
    let mut bestc = f64::MAX;
    for _ in 0..40 {
        let t = std::time::Instant::now();
        for _ in 0..200 {
            c.compress(x, &mut rng, &mut out, &mut msg);
        }
        bestc = bestc.min(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    (best, bestq, bestc, msg.bits(), forms)
}
