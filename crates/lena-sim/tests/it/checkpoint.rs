//! Damaged checkpoints: the file's checksum catches every damaged byte, and a state that passes
//! it anyway (a deliberate edit) is still checked: an error or a usable state, never a panic.

use lena_sim::checkpoint::{Checkpoint, Mark};
use lena_sim::{ExperimentConfig, Simulation};
use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A small run with minibatches, faults and a clock, for `algo` (an `[algorithm]` body).
fn config(algo: &str) -> ExperimentConfig {
    let text = format!(
        r#"
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
step_size = 0.3
{algo}
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
"#
    );
    ExperimentConfig::from_toml(&text, "t.toml").unwrap()
}

const ALGORITHMS: [&str; 10] = [
    "name = \"lena\"",
    "name = \"lena\"\nconfirm = 2\n[algorithm.drift]\nkind = \"last_upload\"\n[algorithm.compressor]\nkind = \"top_k\"\nk = 3",
    "name = \"dgd\"\nmissing = \"last\"",
    "name = \"lag_wk\"",
    "name = \"lag_ps\"",
    "name = \"lasg_wk2\"",
    "name = \"laq\"",
    "name = \"sasg\"",
    "name = \"diana\"",
    "name = \"ef_sgd\"",
];

/// The state after 8 rounds.
fn state_after_8(cfg: &ExperimentConfig) -> Vec<u8> {
    let mut sim = Simulation::new(cfg.clone()).unwrap();
    for _ in 0..8 {
        sim.step().unwrap();
    }
    sim.save_state()
}

#[test]
fn every_damaged_byte_of_a_checkpoint_file_is_an_error() {
    let cfg = config(ALGORITHMS[0]);
    let ck = Checkpoint {
        round: 8,
        files: vec![("metrics.csv".into(), Mark::of(b"iteration\n0\n4\n8\n"))],
        state: Cow::Owned(state_after_8(&cfg)),
    };
    let bytes = ck.encode();
    let mut sim = Simulation::new(cfg).unwrap();
    let back = Checkpoint::decode(&bytes, "ck").unwrap();
    sim.load_state(&back.state).unwrap();
    assert_eq!(sim.round(), 8);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << (i % 8);
        let e = Checkpoint::decode(&b, "ck").expect_err("a flipped byte is caught");
        assert!(
            e.to_string().starts_with("checkpoint: ck: "),
            "byte {i}: {e}"
        );
    }
}

/// Every byte of a real state, changed and loaded past the checksum (as a crafted
/// file would be): the load fails with an error, or the state it accepts runs on (errors such
/// as divergence allowed) without a panic.
#[test]
fn a_damaged_state_is_an_error_or_runs_never_a_panic() {
    for algo in ALGORITHMS {
        let cfg = config(algo);
        let good = state_after_8(&cfg);
        let mut sim = Simulation::new(cfg.clone()).unwrap();
        let (mut refused, mut ran) = (0, 0);
        for i in 0..good.len() {
            // One change per byte, cycling through a low bit, the high bit and all bits.
            {
                let flip = [0x01u8, 0x80, 0xff][i % 3];
                let mut bad = good.clone();
                bad[i] ^= flip;
                let res = catch_unwind(AssertUnwindSafe(|| match sim.load_state(&bad) {
                    Err(_) => false,
                    Ok(()) => {
                        for _ in 0..2 {
                            if sim.step().is_err() {
                                break;
                            }
                        }
                        let _ = sim.try_evaluate();
                        true
                    }
                }));
                match res {
                    Ok(true) => ran += 1,
                    Ok(false) => refused += 1,
                    Err(_) => panic!("{algo}: byte {i} ^ {flip:#x} of {} panicked", good.len()),
                }
                // Whatever happened, the next trial starts from the good state.
                sim.load_state(&good).unwrap();
            }
        }
        assert!(
            refused > 0 && ran > 0,
            "{algo}: {refused} refused, {ran} ran"
        );
    }
}
