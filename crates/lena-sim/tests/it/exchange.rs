//! The multi-process seam (`Exchange`) over threads and channels: a run split over a server
//! and worker "processes" gives the in-process simulator's metrics and parameters bit for bit,
//! checkpoints and resumes. `lena-mpi` runs the same protocol over MPI.

use crate::comm::Record;
use crate::synthetic;
use lena_sim::{Command, Exchange, ExperimentConfig, Item, Items, Simulation, host_of};
use std::sync::mpsc::{Receiver, Sender, channel};

type Batch = Vec<(usize, u64, Vec<u8>)>;

struct Server {
    nodes: usize,
    to_workers: Vec<Sender<(Command, Vec<u8>)>>,
    from_workers: Receiver<(Items, Batch)>,
}

struct Worker {
    rank: usize,
    nodes: usize,
    workers: usize,
    from_server: Receiver<(Command, Vec<u8>)>,
    to_server: Sender<(Items, Batch)>,
}

fn closed(round: u64) -> lena_sim::Error {
    lena_sim::Error::Transport(format!("channel closed at round {round}"))
}

impl Exchange for Server {
    fn hosts(&self, _node: usize) -> bool {
        false
    }
    fn is_server(&self) -> bool {
        true
    }
    fn command(&mut self, round: u64, cmd: Command, payload: &[u8]) -> lena_sim::Result<()> {
        for t in &self.to_workers {
            t.send((cmd, payload.to_vec())).map_err(|_| closed(round))?;
        }
        Ok(())
    }
    fn next_command(&mut self, _: u64, _: &mut Vec<u8>) -> lena_sim::Result<Command> {
        unreachable!("the server gives commands")
    }
    fn send_items(&mut self, _: u64, _: Items, _: &[Item<'_>]) -> lena_sim::Result<()> {
        unreachable!("the server gathers")
    }
    fn gather_items(
        &mut self,
        round: u64,
        kind: Items,
        take: &mut dyn FnMut(Item<'_>) -> lena_sim::Result<()>,
    ) -> lena_sim::Result<()> {
        let mut got = 0;
        for _ in 0..self.to_workers.len() {
            let (k, batch) = self.from_workers.recv().map_err(|_| closed(round))?;
            assert_eq!(k, kind);
            for (node, bits, bytes) in &batch {
                take(Item {
                    node: *node,
                    bits: *bits,
                    bytes,
                })?;
                got += 1;
            }
        }
        assert_eq!(got, self.nodes, "one item per node");
        Ok(())
    }
    fn comm_seconds(&self) -> f64 {
        0.0
    }
}

impl Exchange for Worker {
    fn hosts(&self, node: usize) -> bool {
        host_of(node, self.nodes, self.workers) == self.rank
    }
    fn is_server(&self) -> bool {
        false
    }
    fn command(&mut self, _: u64, _: Command, _: &[u8]) -> lena_sim::Result<()> {
        unreachable!("workers obey")
    }
    fn next_command(&mut self, round: u64, payload: &mut Vec<u8>) -> lena_sim::Result<Command> {
        let (cmd, p) = self.from_server.recv().map_err(|_| closed(round))?;
        *payload = p;
        Ok(cmd)
    }
    fn send_items(&mut self, round: u64, kind: Items, items: &[Item<'_>]) -> lena_sim::Result<()> {
        let batch = items
            .iter()
            .map(|it| {
                assert!(self.hosts(it.node));
                (it.node, it.bits, it.bytes.to_vec())
            })
            .collect();
        self.to_server
            .send((kind, batch))
            .map_err(|_| closed(round))
    }
    fn gather_items(
        &mut self,
        _: u64,
        _: Items,
        _: &mut dyn FnMut(Item<'_>) -> lena_sim::Result<()>,
    ) -> lena_sim::Result<()> {
        unreachable!("workers send")
    }
    fn comm_seconds(&self) -> f64 {
        0.0
    }
}

/// Runs `cfg` split over `workers` worker threads; `prepare` may load a checkpoint into the
/// server first. Returns the server's rows and final parameters.
fn split_run(
    cfg: &ExperimentConfig,
    workers: usize,
    stop_at: Option<u64>,
    resume: Option<&[u8]>,
) -> (Record, Vec<f32>) {
    let nodes = cfg.data.nodes;
    let (to_server, from_workers) = channel();
    let mut to_workers = Vec::new();
    let mut handles = Vec::new();
    for rank in 1..=workers {
        let (tx, rx) = channel();
        to_workers.push(tx);
        let ex = Worker {
            rank,
            nodes,
            workers,
            from_server: rx,
            to_server: to_server.clone(),
        };
        let cfg = cfg.clone();
        handles.push(std::thread::spawn(move || {
            let mut sim = Simulation::new(cfg).unwrap().with_exchange(Box::new(ex));
            assert!(sim.is_worker());
            sim.serve()
        }));
    }
    let server = Server {
        nodes,
        to_workers,
        from_workers,
    };
    let mut sim = Simulation::new(cfg.clone())
        .unwrap()
        .with_exchange(Box::new(server));
    if let Some(state) = resume {
        sim.load_state(state).unwrap();
    }
    let mut rec = Record {
        stop_at,
        ..Record::default()
    };
    let res = sim.run(&mut rec);
    assert!(res.is_ok() || stop_at.is_some(), "{res:?}");
    sim.finish_workers().unwrap();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    (rec, sim.params().to_vec())
}

fn in_process(cfg: &ExperimentConfig) -> (Record, Vec<f32>) {
    let mut sim = Simulation::new(cfg.clone()).unwrap();
    let mut rec = Record::default();
    sim.run(&mut rec).unwrap();
    (rec, sim.params().to_vec())
}

#[test]
fn split_runs_equal_the_simulator_bit_for_bit() {
    let faults = "[faults]\nloss = 0.1\nstraggler = 0.1\nmax_delay = 2\nleave = 0.05\nrejoin = 0.5\n\
                  [network]\nkind = \"wan\"\nrealizations = 3\n";
    for (algo, extra) in [
        ("name = \"dgd\"", ""),
        ("name = \"lena\"", faults),
        ("name = \"diana\"", ""),
        ("name = \"lag_wk\"", faults),
        ("name = \"lasg_wk2\"", ""),
        ("name = \"ef_sgd\"", ""),
    ] {
        let text = synthetic(
            "wall_clock = false\ncheckpoint_every = 25",
            "step_size = 0.5",
            "batch = 8",
        )
        .replace("name = \"dgd\"", algo)
            + extra;
        let cfg = ExperimentConfig::from_toml(&text, "t.toml").unwrap();
        let (want, w) = in_process(&cfg);
        for workers in [2, 3] {
            let (got, gw) = split_run(&cfg, workers, None, None);
            assert_eq!(got.rows, want.rows, "{algo} over {workers} workers: rows");
            assert_eq!(gw, w, "{algo} over {workers} workers: parameters");
            // The server's checkpoints hold the workers' node states: the same bytes.
            assert_eq!(got.checkpoints, want.checkpoints, "{algo}: checkpoints");
        }
    }
}

#[test]
fn split_runs_stop_and_resume_exactly() {
    let text = synthetic(
        "wall_clock = false\ncheckpoint_every = 20",
        "step_size = 0.5",
        "batch = 8",
    )
    .replace("name = \"dgd\"", "name = \"lena\"")
        + "[faults]\nloss = 0.1\nleave = 0.05\nrejoin = 0.5\n";
    let cfg = ExperimentConfig::from_toml(&text, "t.toml").unwrap();
    let (want, w) = in_process(&cfg);
    let (first, _) = split_run(&cfg, 3, Some(33), None);
    let (round, state) = first.checkpoints.last().unwrap().clone();
    assert_eq!(round, 33);
    // Resumed over another number of workers: the node states travel with the checkpoint.
    let (rest, gw) = split_run(&cfg, 2, None, Some(&state));
    let mut rows = first.rows;
    rows.extend(rest.rows);
    assert_eq!(rows, want.rows);
    assert_eq!(gw, w);
}
