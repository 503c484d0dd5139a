//! A new upload trigger for LENA, run in the simulator without changing any lena crate: a node
//! uploads when its innovation is large against its fresh gradient, and at least every
//! `max_silence` rounds. `cargo run -p lena-sim --example custom_trigger`
#![allow(clippy::print_stdout)] // an example reports on stdout
use lena_algo::{Algorithm, Kernels, Lena, LenaParams, Server, Worker};
use lena_policy::trigger::{Decision, Trigger, TriggerCtx};
use lena_sim::{ExperimentConfig, Simulation};

/// Upload iff `||u - v||^2 >= BETA alpha^2 ||g||^2`, or after `MAX_SILENCE` silent rounds.
struct Bounded;
const BETA: f64 = 2.0;
const MAX_SILENCE: u64 = 5;

impl Trigger for Bounded {
    fn decide(&mut self, c: &TriggerCtx) -> Decision {
        let large = c.innovation_sq >= BETA * c.step_size * c.step_size * c.grad_sq;
        match large || c.since_upload >= MAX_SILENCE {
            true => Decision::Upload,
            false => Decision::Skip,
        }
    }
    fn save(&self) -> Vec<f64> {
        Vec::new() // no state of its own: the node counts the silent rounds
    }
    fn restore(&mut self, state: &[f64]) -> bool {
        state.is_empty()
    }
}

/// LENA's node (memory, drift) and server, with the new trigger.
struct BoundedLena(Lena);

impl Algorithm for BoundedLena {
    fn name(&self) -> String {
        "LENA-m (bounded silence)".into()
    }
    fn workers(&self, n: usize, dim: usize, k: Kernels) -> Vec<Box<dyn Worker>> {
        let node = |_| Box::new(self.0.worker_with(n, dim, Box::new(Bounded), k)) as _;
        (0..n).map(node).collect()
    }
    fn server(&self, n: usize, dim: usize, k: Kernels) -> Box<dyn Server> {
        self.0.server(n, dim, k)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = ExperimentConfig::from_toml(include_str!("synthetic.toml"), "synthetic.toml")?;
    let lena = LenaParams::default().check(0.1, 0)?; // no compressor: the dimension is unused
    let s = Simulation::with_algorithm(cfg, Box::new(BoundedLena(lena)))?.run(&mut ())?;
    println!(
        "{}: loss {:.4}, {} uploads",
        s.algorithm, s.last.train_loss, s.last.uploads
    );
    assert!(s.last.train_loss < 0.5 && s.last.uploads < 4 * 60);
    Ok(())
}
