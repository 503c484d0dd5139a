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
