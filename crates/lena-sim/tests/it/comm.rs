//! Communication: network models, bit accounting, faults (issue 4).

use crate::{mnist_slice, run, strip_time, synthetic};
use lena_sim::{ExperimentConfig, MetricsRow, Simulation};

fn lena_synthetic(extra: &str) -> String {
    synthetic("", "step_size = 0.5", "batch = 8").replace("name = \"dgd\"", "name = \"lena\"")
        + extra
}

/// Everything but the clock.
fn without_clock(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    strip_time(rows)
        .into_iter()
        .map(|r| MetricsRow {
            latency_seconds: 0.0,
            ..r
        })
        .collect()
}

#[test]
fn network_model_changes_only_the_clock() {
    let ideal = run(&lena_synthetic("")).unwrap();
    let lan = run(&lena_synthetic(
        "[network]\nkind = \"lan\"\nrate_mbps = 2\nheader_bytes = 40\nlatency_ms = 1\n",
    ))
    .unwrap();
    let wan = run(&lena_synthetic(
        "[network]\nkind = \"wan\"\nprobabilities = \"skewed\"\nheader_bytes = 40\n",
    ))
    .unwrap();
    assert_eq!(without_clock(&ideal), without_clock(&lan));
    assert_eq!(without_clock(&ideal), without_clock(&wan));
    assert!(ideal.iter().all(|r| r.latency_seconds == 0.0));
    let last = lan.last().unwrap();
    // LAN, TDMA: every message's bits plus its 320 header bits at 2 Mbit/s, plus 1 ms each.
    let want = (last.bits + 320 * last.uploads) as f64 / 2e6 + 1e-3 * last.uploads as f64;
    assert!(
        (last.latency_seconds - want).abs() <= 1e-9 * want,
        "{} vs {want}",
        last.latency_seconds
    );
    assert!(wan.last().unwrap().latency_seconds > 0.0);
}

#[test]
fn latency_statistics_come_from_the_recorded_trace() {
    let text = lena_synthetic("[network]\nkind = \"wan\"\nrealizations = 25\n");
    let mut sim = Simulation::new(ExperimentConfig::from_toml(&text, "t.toml").unwrap()).unwrap();
    let mut rows = Vec::new();
    struct Keep<'a>(&'a mut Vec<MetricsRow>);
    impl lena_sim::Observer for Keep<'_> {
        fn on_eval(&mut self, row: &MetricsRow) -> lena_sim::Result<()> {
            self.0.push(row.clone());
            Ok(())
        }
    }
    sim.run(&mut Keep(&mut rows)).unwrap();
    let trace = sim.trace().unwrap();
    assert_eq!(trace.rounds(), 60);
    assert_eq!(trace.nodes(), 10);
    let stats = sim.latency_stats(&[20, 60]).unwrap();
    let metric = rows.last().unwrap().latency_seconds;
    // The metric is realization 0, one of the 25.
    assert!(
        stats[1].min <= metric && metric <= stats[1].max,
        "{stats:?} vs {metric}"
    );
    assert!(stats[0].mean <= stats[1].mean);
    // The trace's sizes are the messages' bits.
    let total: u64 = (0..60)
        .map(|t| trace.round(t).iter().map(|&b| u64::from(b)).sum::<u64>())
        .sum();
    assert_eq!(total, rows.last().unwrap().bits);
}

#[test]
fn every_upload_is_accounted_for_under_faults() {
    let faults = "[faults]\nloss = 0.2\nstraggler = 0.2\nmax_delay = 3\ndeadline = 2\n\
                  leave = 0.05\nrejoin = 0.3\n[accounting]\nsilent_flag = true\nwindow = 20\n";
    let text = lena_synthetic(faults);
    let rows = run(&text).unwrap();
    let last = rows.last().unwrap();
    eprintln!("{last:?}");
    assert_eq!(last.uploads, last.delivered + last.lost + last.dropped);
    assert!(
        last.lost > 0 && last.dropped > 0 && last.late > 0,
        "{last:?}"
    );
    assert!(last.late <= last.delivered);
    // Same faults whatever the thread count.
    let two = run(&text.replace("seed = 3", "seed = 3\nthreads = 2")).unwrap();
    assert_eq!(strip_time(&rows), strip_time(&two));
    // DGD on the same seed sees the same fault pattern: every node uploads every online
    // round, so its upload count is the online node-rounds, with the same losses drawn.
    let dgd = run(&(synthetic("", "step_size = 0.5", "batch = 8") + faults)).unwrap();
    let d = dgd.last().unwrap();
    assert_eq!(d.uploads, d.delivered + d.lost + d.dropped);
    // With silent flags, a round costs at least one bit per online node.
    assert!(last.bits >= last.iteration * 10 * 7 / 10, "{last:?}");
    // Without faults: everything sent is delivered, on time.
    let clean = run(&lena_synthetic("")).unwrap();
    let c = clean.last().unwrap();
    assert_eq!(
        (c.delivered, c.lost, c.late, c.dropped),
        (c.uploads, 0, 0, 0)
    );
    // The upload frequency is uploads per node-round over the window.
    assert!(c.upload_frequency > 0.0 && c.upload_frequency <= 1.0);
    let dgd_clean = run(&synthetic("", "step_size = 0.5", "batch = 8")).unwrap();
    assert_eq!(dgd_clean.last().unwrap().upload_frequency, 1.0);
}

#[test]
fn silent_flags_cost_one_bit_per_silent_node_and_round() {
    let plain = run(&lena_synthetic("")).unwrap();
    let flagged = run(&lena_synthetic("[accounting]\nsilent_flag = true\n")).unwrap();
    let (p, f) = (plain.last().unwrap(), flagged.last().unwrap());
    assert_eq!(p.uploads, f.uploads);
    assert_eq!(f.bits - p.bits, p.iteration * 10 - p.uploads);
}

#[test]
fn bad_fault_and_network_fields_are_named() {
    for (extra, want) in [
        (
            "[faults]\nloss = 1.5\n",
            "faults.loss must be a probability in [0, 1], got 1.5",
        ),
        (
            "[faults]\nleave = 0.1\n",
            "faults.rejoin must be > 0 when faults.leave > 0",
        ),
        (
            "[faults]\nmax_delay = 0\n",
            "faults.max_delay must be in 1..=1000 rounds, got 0",
        ),
        (
            "[network]\nkind = \"lan\"\nrate_mbps = -1\n",
            "network.rate_mbps must be a finite number > 0",
        ),
        (
            "[network]\nkind = \"satellite\"\n",
            "unknown variant `satellite`",
        ),
    ] {
        let e = ExperimentConfig::from_toml(&lena_synthetic(extra), "t.toml").unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}

/// The paper's robustness claim, measured: under 10% upload loss on the same problem and seed
/// (MNIST slice, M = 10, one label per node, minibatch 10, 400 rounds), LENA's final loss
/// degrades less than DGD's and DIANA's, and far fewer of its uploads are exposed to loss.
/// Measured (docs/COMMUNICATION.md): loss ratio lossy/clean LENA 0.994, DGD 1.0001,
/// DIANA 0.9986; lost uploads 22 vs 417.
#[test]
fn lena_degrades_less_than_dgd_and_diana_under_upload_loss() {
    let ratio = |algo: &str| {
        let base = mnist_slice(algo, 400).replace("nodes = 10\n", "nodes = 10\nbatch = 10\n");
        let clean = run(&base).unwrap();
        let lossy = run(&format!("{base}[faults]\nloss = 0.1\n")).unwrap();
        let (c, l) = (clean.last().unwrap(), lossy.last().unwrap());
        eprintln!(
            "{algo}: clean {} lossy {} ({} of {} uploads lost)",
            c.train_loss, l.train_loss, l.lost, l.uploads
        );
        (l.train_loss / c.train_loss, l.lost)
    };
    let (lena, lena_lost) = ratio("name = \"lena\"\nstep_size = 0.05");
    let (dgd, dgd_lost) = ratio("name = \"dgd\"\nstep_size = 0.05");
    let (diana, _) = ratio("name = \"diana\"\nstep_size = 0.05");
    eprintln!("loss ratio lossy/clean: LENA {lena}, DGD {dgd}, DIANA {diana}");
    assert!(lena < dgd, "LENA {lena} vs DGD {dgd}");
    assert!(lena < diana, "LENA {lena} vs DIANA {diana}");
    assert!(lena_lost * 5 < dgd_lost, "{lena_lost} vs {dgd_lost}");
}

/// The study behind docs/COMMUNICATION.md's loss table (prints a markdown table):
/// `cargo test --release -p lena-sim --test it loss_study -- --ignored --nocapture`.
#[test]
#[ignore = "a study, printed for the docs; about a minute in release"]
fn loss_study() {
    for (name, algo) in [
        ("DGD average", "name = \"dgd\"\nstep_size = 0.05"),
        (
            "DGD last",
            "name = \"dgd\"\nstep_size = 0.05\nmissing = \"last\"",
        ),
        ("DIANA last", "name = \"diana\"\nstep_size = 0.05"),
        (
            "DIANA average",
            "name = \"diana\"\nstep_size = 0.05\nmissing = \"average\"",
        ),
        ("LENA", "name = \"lena\"\nstep_size = 0.05"),
        (
            "LENA no resend",
            "name = \"lena\"\nstep_size = 0.05\nresend_lost = false",
        ),
    ] {
        for (nodes, batch, rounds) in [(10, 0, 400), (10, 10, 400), (100, 3, 600)] {
            let base = mnist_slice(algo, rounds).replace(
                "nodes = 10\n",
                &format!("nodes = {nodes}\nbatch = {batch}\n"),
            );
            let clean = run(&base).unwrap();
            let lossy = run(&format!("{base}[faults]\nloss = 0.1\n")).unwrap();
            let (c, l) = (clean.last().unwrap(), lossy.last().unwrap());
            eprintln!(
                "| {name} | {nodes} | {batch} | {rounds} | {:.5} | {:.5} | {:.4} | {} / {} |",
                c.train_loss,
                l.train_loss,
                l.train_loss / c.train_loss,
                l.lost,
                l.uploads
            );
        }
    }
}

/// Keeps every row and every checkpoint.
#[derive(Default)]
pub(crate) struct Record {
    pub rows: Vec<MetricsRow>,
    pub checkpoints: Vec<(u64, Vec<u8>)>,
    pub stop_at: Option<u64>,
}

impl lena_sim::Observer for Record {
    fn on_eval(&mut self, row: &MetricsRow) -> lena_sim::Result<()> {
        self.rows.push(row.clone());
        Ok(())
    }
    fn on_round(&mut self, round: u64) -> bool {
        self.stop_at != Some(round)
    }
    fn on_checkpoint(&mut self, round: u64, state: &[u8]) -> lena_sim::Result<()> {
        self.checkpoints.push((round, state.to_vec()));
        Ok(())
    }
}

/// A run stopped and resumed from its checkpoint produces exactly the rows and parameters of
/// the uninterrupted run, for every algorithm, with minibatches, faults and a network clock.
#[test]
fn resuming_from_a_checkpoint_continues_exactly() {
    let extra = "[faults]\nloss = 0.1\nstraggler = 0.1\nmax_delay = 2\nleave = 0.05\nrejoin = 0.5\n\
                 [network]\nkind = \"wan\"\nrealizations = 5\n";
    for algo in [
        "name = \"lena\"",
        "name = \"lena\"\ninit = \"gradient\"",
        "name = \"dgd\"\nmissing = \"last\"",
        "name = \"lag_wk\"",
        "name = \"lag_ps\"",
        "name = \"lasg_wk2\"",
        "name = \"laq\"",
        "name = \"sasg\"",
        "name = \"diana\"",
        "name = \"ef_sgd\"",
        "name = \"lena\"\nstep_size = 0.5\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 15",
    ] {
        let step = if algo.contains("step_size") {
            ""
        } else {
            "step_size = 0.5"
        };
        let text = synthetic(
            "wall_clock = false\ncheckpoint_every = 20",
            step,
            "batch = 8",
        )
        .replace("name = \"dgd\"", algo)
            + extra;
        let cfg = ExperimentConfig::from_toml(&text, "t.toml").unwrap();
        let mut whole = Simulation::new(cfg.clone()).unwrap();
        let mut a = Record::default();
        whole.run(&mut a).unwrap();
        // Stopped at round 33 (Ctrl-C): the stop writes a checkpoint, then resume from it.
        let mut first = Simulation::new(cfg.clone()).unwrap();
        let mut b = Record {
            stop_at: Some(33),
            ..Record::default()
        };
        assert!(matches!(
            first.run(&mut b),
            Err(lena_sim::Error::Stopped(33))
        ));
        let (round, state) = b.checkpoints.last().unwrap().clone();
        assert_eq!(round, 33, "{algo}");
        assert_eq!(b.checkpoints[0].0, 20);
        let mut resumed = Simulation::new(cfg.clone()).unwrap();
        resumed.load_state(&state).unwrap();
        assert_eq!(resumed.round(), 33);
        let mut c = Record::default();
        resumed.run(&mut c).unwrap();
        let mut rows = b.rows.clone();
        rows.extend(c.rows.clone());
        assert_eq!(rows, a.rows, "{algo}: rows after resuming differ");
        assert!(
            whole
                .params()
                .iter()
                .zip(resumed.params())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{algo}: parameters differ"
        );
        // A checkpoint of another configuration is refused.
        let other =
            ExperimentConfig::from_toml(&text.replace("seed = 3", "seed = 4"), "t.toml").unwrap();
        let e = Simulation::new(other)
            .unwrap()
            .load_state(&state)
            .unwrap_err();
        assert!(e.to_string().contains("another configuration"), "{e}");
        // Truncated bytes are an error, not a panic.
        let e = Simulation::new(cfg)
            .unwrap()
            .load_state(&state[..state.len() / 2])
            .unwrap_err();
        assert!(e.to_string().starts_with("checkpoint:"), "{e}");
    }
}
