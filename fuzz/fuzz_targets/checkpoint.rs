//! The checkpoint reader: a damaged or crafted checkpoint is an error, never a panic or a
//! silently different run. The first input byte picks what is fuzzed:
//!
//! 0. arbitrary bytes as a checkpoint file;
//! 1. a real checkpoint file with the input's edits and a recomputed checksum (a crafted file),
//!    then its state loaded and run;
//! 2. a real simulation state with the input's edits, loaded past the checksum and run;
//! 3. a real checkpoint file with one edit and no new checksum: always refused.
//!
//! Edits are 5-byte records: a little-endian u32 position (modulo the length) and a byte to
//! XOR there. A state that loads must run (errors such as divergence allowed) without a panic.
#![no_main]
use lena_sim::checkpoint::{Checkpoint, Mark};
use lena_sim::{ExperimentConfig, Simulation};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use std::cell::RefCell;

const CONFIG: &str = r#"
[data]
split = "iid"
nodes = 3
batch = 4
[data.source]
kind = "synthetic"
samples = 60
test_samples = 20
features = 3
classes = 3
[algorithm]
name = "lena"
step_size = 0.3
confirm = 2
[algorithm.compressor]
kind = "qsgd"
levels = 4
[run]
iterations = 12
eval_every = 4
seed = 5
threads = 1
wall_clock = false
[faults]
loss = 0.2
straggler = 0.2
max_delay = 2
leave = 0.1
rejoin = 0.5
[network]
kind = "lan"
rate_mbps = 1
"#;

struct Fixture {
    sim: Simulation,
    /// The state after 8 rounds.
    state: Vec<u8>,
    /// That state as a checkpoint file.
    file: Vec<u8>,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new({
        let cfg = ExperimentConfig::from_toml(CONFIG, "fuzz.toml").expect("valid config");
        let mut sim = Simulation::new(cfg).expect("set up");
        for _ in 0..8 {
            sim.step().expect("a round");
        }
        let state = sim.save_state();
        let file = Checkpoint {
            round: 8,
            files: vec![("metrics.csv".into(), Mark::of(b"iteration\n0\n4\n8\n"))],
            state: Cow::Borrowed(&state),
        }
        .encode();
        Fixture { sim, state, file }
    });
}

fn edit(bytes: &mut [u8], edits: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    for e in edits.chunks_exact(5) {
        let at = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % bytes.len();
        bytes[at] ^= e[4];
    }
}

/// Loads `state`; if accepted, runs two rounds and an evaluation. Restores the good state.
fn load(f: &mut Fixture, state: &[u8]) {
    if f.sim.load_state(state).is_ok() {
        for _ in 0..2 {
            if f.sim.step().is_err() {
                break;
            }
        }
        let _ = f.sim.try_evaluate();
    }
    f.sim.load_state(&f.state).expect("the good state loads");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with_borrow_mut(|f| match mode % 4 {
        0 => {
            if let Ok(ck) = Checkpoint::decode(rest, "fuzz") {
                let state = ck.state.into_owned();
                load(f, &state);
            }
        }
        1 => {
            let mut file = f.file.clone();
            edit(&mut file, rest);
            let n = file.len() - 4;
            let crc = crc32c::crc32c(&file[..n]);
            file[n..].copy_from_slice(&crc.to_le_bytes());
            if let Ok(ck) = Checkpoint::decode(&file, "fuzz") {
                let state = ck.state.into_owned();
                load(f, &state);
            }
        }
        2 => {
            let mut state = f.state.clone();
            edit(&mut state, rest);
            load(f, &state);
        }
        _ => {
            let mut file = f.file.clone();
            edit(&mut file, &rest[..rest.len().min(5)]);
            if file != f.file {
                assert!(
                    Checkpoint::decode(&file, "fuzz").is_err(),
                    "a damaged byte passed the checksum"
                );
            }
        }
    });
});
