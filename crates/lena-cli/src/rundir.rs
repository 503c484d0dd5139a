//! The run directory: one run per directory.
//!
//! - A new run claims a directory that does not exist or is empty; a directory that holds a
//!   run is refused unless the user says `--force`, which removes only the files lena writes.
//! - The claim is an exclusive lock on `.lena.lock`, held for as long as the process runs in the
//!   directory, so two processes never write one directory.
//! - A checkpoint records the round and, for `config.toml` and both metrics files, the bytes
//!   written so far (length, lines, CRC-32C); `lena resume` verifies all of them, and the
//!   checkpoint's own checksum, before it writes anything.

use anyhow::{Context, Result, bail};
use lena_sim::checkpoint::{Checkpoint, Mark};
use lena_sim::metrics::{self, Format};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The resolved experiment.
pub const CONFIG: &str = "config.toml";
/// Run metadata.
pub const META: &str = "meta.json";
/// Metrics as CSV.
pub const CSV: &str = "metrics.csv";
/// Metrics as JSON lines.
pub const JSONL: &str = "metrics.jsonl";
/// The finished run's summary.
pub const SUMMARY: &str = "summary.json";
/// Latency statistics (networks with a clock).
pub const LATENCY: &str = "latency.csv";
/// The last checkpoint.
pub const CHECKPOINT: &str = "checkpoint.bin";
/// Present until the run has finished.
pub const INCOMPLETE: &str = "INCOMPLETE";
/// Locked by the process running in the directory.
const LOCK: &str = ".lena.lock";

/// Every file lena writes into a run directory (and so may remove with `--force`).
const OWN: [&str; 11] = [
    CONFIG,
    META,
    CSV,
    JSONL,
    SUMMARY,
    LATENCY,
    CHECKPOINT,
    "checkpoint.bin.tmp",
    "metrics.csv.tmp",
    INCOMPLETE,
    LOCK,
];

/// What [`INCOMPLETE`] says until the run has finished.
pub const INCOMPLETE_NOTE: &str = "This run has not finished (it is running, or it was stopped \
or killed): metrics.csv and metrics.jsonl end at the last evaluation written. `lena resume` on \
this directory continues from checkpoint.bin if there is one.\n";

/// A run directory this process has claimed (locked) for one run.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Held for the claim's lifetime; the lock goes with the handle.
    _lock: File,
    /// This claim created the directory (set-up failures remove it again).
    created: bool,
}

/// Opens and locks `dir/.lena.lock`, or says who holds it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another lena process is running in {} (it holds {LOCK}); wait for it, or choose \
             another output directory",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The directory's entries other than the lock, by name.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != LOCK {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

impl RunDir {
    /// Claims `path` for a new run: creates it, or takes an existing empty directory. A
    /// directory that holds anything is refused, naming what it holds and the ways on; with
    /// `force`, a previous run's files (only those lena writes) are removed first, and
    /// anything else in the directory is still refused.
    pub fn create(path: &Path, force: bool) -> Result<Self> {
        let created = !path.exists();
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the run directory {}", path.display()))?;
        let lock = lock(path)?;
        let names = entries(path)?;
        if !names.is_empty() {
            let foreign: Vec<&String> = names
                .iter()
                .filter(|n| !OWN.contains(&n.as_str()))
                .collect();
            if !foreign.is_empty() {
                bail!(
                    "{} is not empty and holds files lena did not write ({}): a run starts in \
                     an empty directory; choose another with -o",
                    path.display(),
                    list(&foreign)
                );
            }
            if !force {
                let what = if names.iter().any(|n| n == INCOMPLETE) {
                    format!(
                        "an unfinished run (continue it with `lena resume {}`)",
                        path.display()
                    )
                } else if names.iter().any(|n| n == SUMMARY) {
                    "a finished run".to_string()
                } else {
                    format!(
                        "a run's files ({})",
                        list(&names.iter().collect::<Vec<_>>())
                    )
                };
                bail!(
                    "{} already holds {what}; pass --force to replace it, or choose another \
                     output directory with -o",
                    path.display()
                );
            }
            for name in &names {
                let p = path.join(name);
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
            created,
        })
    }

    /// Claims the existing run directory `path` to resume its run.
    pub fn open(path: &Path) -> Result<Self> {
        let config = path.join(CONFIG);
        if !config.is_file() {
            bail!(
                "{} is not a run directory: it has no {CONFIG}",
                path.display()
            );
        }
        Ok(Self {
            _lock: lock(path)?,
            path: path.to_path_buf(),
            created: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Set-up failed before anything was written: removes the claim, and the directory if the
    /// claim created it, so that no half directory is left.
    pub fn abandon(self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            let _ = std::fs::remove_file(self.path.join(LOCK));
        }
    }

    /// Writes `text` to the file `name`, returning its mark.
    pub fn write(&self, name: &str, text: &str) -> Result<Mark> {
        let path = self.file(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Mark::of(text.as_bytes()))
    }

    /// Appends a line saying what stopped the run to the INCOMPLETE note.
    pub fn note_failure(&self, what: &str) {
        let _ = std::fs::write(
            self.file(INCOMPLETE),
            format!("{INCOMPLETE_NOTE}It stopped with an error: {what}\n"),
        );
    }
}

fn list(names: &[&String]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<&str> = names.iter().take(SHOWN).map(|n| n.as_str()).collect();
    let more = names.len().saturating_sub(SHOWN);
    let tail = format!("and {more} more");
    if more > 0 {
        s.push(&tail);
    }
    s.join(", ")
}

/// Rows of metrics a run has written once it has completed `round` rounds: round 0, every
/// `every`-th round, and the last.
pub fn rows_at(round: u64, every: u64, total: u64) -> u64 {
    1 + round / every + u64::from(round == total && !total.is_multiple_of(every))
}

/// What `lena resume` found in a run directory, all verified; nothing written yet.
pub struct Resumable {
    /// The checkpoint.
    pub checkpoint: Checkpoint<'static>,
    /// `metrics.csv` must be rebuilt from these rows (it was cut short or changed).
    pub rebuild_csv: Option<Vec<lena_sim::MetricsRow>>,
}

/// Reads and verifies `dir`'s checkpoint against its config text and metrics files.
pub fn verify(
    dir: &RunDir,
    config_text: &str,
    cfg: &lena_sim::ExperimentConfig,
) -> Result<Resumable> {
    let d = dir.path().display();
    if !dir.file(INCOMPLETE).exists() && dir.file(SUMMARY).exists() {
        bail!("{d} holds a finished run: there is nothing to resume");
    }
    let ck_path = dir.file(CHECKPOINT);
    if !ck_path.exists() {
        bail!(
            "{} does not exist: the run stopped before its first checkpoint (run.checkpoint_every \
             = {}); start it again with `lena run ... -o {d} --force`",
            ck_path.display(),
            cfg.run.checkpoint_every
        );
    }
    let ck = Checkpoint::read(&ck_path)?;
    let mark = |name: &str| {
        ck.file(name)
            .with_context(|| format!("{}: it records no {name}", ck_path.display()))
    };
    if mark(CONFIG)? != Mark::of(config_text.as_bytes()) {
        bail!(
            "{d}/{CONFIG} was changed after the checkpoint was written (it no longer matches \
             the checkpoint's record of it); restore it, or start the run again with --force"
        );
    }
    let (total, every) = (cfg.run.iterations, cfg.run.eval_every);
    if ck.round > total {
        bail!(
            "{}: round {} is past the run's {total} iterations",
            ck_path.display(),
            ck.round
        );
    }
    let rows = rows_at(ck.round, every, total);
    let (csv, jsonl) = (mark(CSV)?, mark(JSONL)?);
    if csv.lines != rows + 1 || jsonl.lines != rows {
        bail!(
            "{}: it records {} CSV rows and {} JSON lines at round {}, where the run writes {rows}",
            ck_path.display(),
            csv.lines.saturating_sub(1),
            jsonl.lines,
            ck.round
        );
    }
    metrics::verify(&dir.file(JSONL), jsonl).with_context(|| {
        format!(
            "cannot resume: the metrics written up to round {} are not intact",
            ck.round
        )
    })?;
    let rebuild_csv = match metrics::verify(&dir.file(CSV), csv) {
        Ok(()) => None,
        Err(e) => {
            // The JSON lines hold every value the CSV does: rebuild it, if that gives exactly
            // the bytes the checkpoint recorded.
            let rows = metrics::read_jsonl_rows(&dir.file(JSONL), jsonl)?;
            let rebuilt = metrics::render(&rows, Format::Csv);
            if Mark::of(rebuilt.as_bytes()) != csv {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot resume: {CSV} is damaged and rebuilding it from {JSONL} does not \
                     give the bytes the checkpoint recorded"
                )));
            }
            eprintln!("lena: {e}; rebuilding it from {JSONL}");
            Some(rows)
        }
    };
    Ok(Resumable {
        checkpoint: ck,
        rebuild_csv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_evaluation_schedule() {
        // every = 50, total = 300: rounds 0, 50, ..., 300.
        assert_eq!(rows_at(0, 50, 300), 1);
        assert_eq!(rows_at(49, 50, 300), 1);
        assert_eq!(rows_at(150, 50, 300), 4);
        assert_eq!(rows_at(300, 50, 300), 7);
        // total = 310: the last round is evaluated as well.
        assert_eq!(rows_at(300, 50, 310), 7);
        assert_eq!(rows_at(310, 50, 310), 8);
        for (every, total) in [(1, 10), (3, 10), (7, 7), (10, 3)] {
            let mut n = 1;
            for r in 1..=total {
                n += u64::from(r % every == 0 || r == total);
                assert_eq!(rows_at(r, every, total), n, "{r} {every} {total}");
            }
        }
    }
}
