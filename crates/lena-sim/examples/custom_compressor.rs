//! A new compressor in the simulator, no lena crate changed: TernGrad-style ternary quantization
//! (an f32 scale, 2 bits a coordinate) under DIANA. `cargo run -p lena-sim --example custom_compressor`
#![allow(clippy::print_stdout)] // an example reports on stdout
use lena_algo::{Diana, Missing};
use lena_compress::{Compressor, Message, bits::BitReader};
use lena_sim::{ExperimentConfig, Simulation};
/// `C(x)_i = s sign(x_i) b_i`, `s = max |x_i|`, `b_i ~ Bernoulli(|x_i| / s)`: unbiased, and
/// `E||C(x) - x||^2 = sum (s |x_i| - x_i^2) <= (sqrt(d) - 1) ||x||^2`.
struct Ternary(usize);
impl Compressor for Ternary {
    fn name(&self) -> String {
        "ternary".into()
    }
    fn compress(&self, x: &[f32], rng: &mut dyn rand::RngCore, out: &mut [f32], msg: &mut Message) {
        let s = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        msg.write_with(|w| {
            w.write_f32(s);
            for (o, &v) in out.iter_mut().zip(x) {
                let keep = s > 0.0 && (rng.next_u32() as f32) < v.abs() / s * u32::MAX as f32;
                *o = if keep { s.copysign(v) } else { 0.0 };
                w.write(u64::from(keep) << u32::from(v < 0.0), 2); // 0, 1 (+s) or 2 (-s)
            }
        });
    }
    fn decode(&self, msg: &Message, out: &mut [f32]) -> lena_compress::Result<()> {
        let mut r = BitReader::new(msg.bytes(), msg.bits(), "ternary");
        let s = r.read_f32()?;
        for o in out.iter_mut() {
            *o = [0.0, s, -s, 0.0][r.read(2)? as usize];
        }
        r.finish()
    }
    fn unbiased(&self) -> bool {
        true
    }
    fn omega(&self) -> Option<f64> {
        Some((self.0 as f64).sqrt() - 1.0)
    }
    fn delta(&self) -> Option<f64> {
        None
    }
}
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = ExperimentConfig::from_toml(include_str!("synthetic.toml"), "synthetic.toml")?;
    let d = 17 * 3; // softmax regression: (16 features + bias) x 3 classes
    let diana = Diana {
        step_size: 0.1,
        a: 1.0 / (d as f32).sqrt(), // DIANA's shift step 1 / (1 + omega)
        compressor: std::sync::Arc::new(Ternary(d)),
        missing: Missing::Last,
    };
    let s = Simulation::with_algorithm(cfg, Box::new(diana))?.run(&mut ())?;
    println!(
        "{}: loss {:.4}, {} bits",
        s.algorithm, s.last.train_loss, s.last.bits
    );
    assert!(s.last.train_loss < 0.5 && s.last.bits == 60 * 4 * (32 + 2 * d as u64));
    Ok(())
}
