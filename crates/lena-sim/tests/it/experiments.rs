//! Every experiment file the repository ships still reads as it did: the `[algorithm]` table
//! (`name`, `step_size`, the named algorithm's own fields) parses, checks, and writes back to
//! the same configuration.

use lena_sim::ExperimentConfig;
use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_experiment_file_parses_checks_and_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    assert!(files.len() > 100, "{} files under {root:?}", files.len());
    let mut names = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let cfg = ExperimentConfig::from_toml(&text, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        // MNIST's dimension; a "c/L" rule resolves against a made-up smoothness.
        cfg.algorithm
            .check_with(7850, || 4.0)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let back = toml::to_string(&cfg).unwrap();
        let again = ExperimentConfig::from_toml(&back, "written back").unwrap();
        assert_eq!(again, cfg, "{}", f.display());
        names.insert(
            back.lines()
                .find(|l| l.starts_with("name = "))
                .map(str::to_owned),
        );
    }
    // The files exercise most algorithms' tables.
    assert!(names.len() >= 5, "{names:?}");
}

/// A caller's own algorithm runs exactly as a configured one: the stock LENA handed to
/// `Simulation::with_algorithm` gives the configured run's metrics row for row.
#[test]
fn an_algorithm_handed_in_runs_as_the_configured_one() {
    let text = include_str!("../../examples/synthetic.toml");
    let cfg = ExperimentConfig::from_toml(text, "synthetic.toml").unwrap();
    let rows = |sim: lena_sim::Simulation| {
        struct Rows(Vec<lena_sim::MetricsRow>);
        impl lena_sim::Observer for Rows {
            fn on_eval(&mut self, r: &lena_sim::MetricsRow) -> lena_sim::Result<()> {
                self.0.push(lena_sim::MetricsRow {
                    wall_seconds: 0.0,
                    comm_seconds: 0.0,
                    ..r.clone()
                });
                Ok(())
            }
        }
        let (mut sim, mut obs) = (sim, Rows(Vec::new()));
        sim.run(&mut obs).unwrap();
        obs.0
    };
    let configured = rows(lena_sim::Simulation::new(cfg.clone()).unwrap());
    let alg = cfg.algorithm.check(17 * 3).unwrap();
    let handed = rows(lena_sim::Simulation::with_algorithm(cfg, alg).unwrap());
    assert_eq!(configured, handed);
    assert!(configured.len() == 4 && configured[3].uploads > 0);
}
