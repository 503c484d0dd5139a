//! Metrics: one row per evaluation, written as CSV or JSON lines while the run goes.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One evaluation of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Rounds completed.
    pub iteration: u64,
    /// Global training loss F(w) = (1/M) sum_m f_m(w), full batch.
    pub train_loss: f64,
    /// Test accuracy (argmax of the scores).
    pub test_accuracy: f64,
    /// Uploads sent so far, over all nodes.
    pub uploads: u64,
    /// Uploaded bits so far: the sum of the encoded messages' lengths, plus the silent flags
    /// if the bit model charges them. Lost and late uploads were sent, so they count.
    pub bits: u64,
    /// Uploads that reached the server in time.
    pub delivered: u64,
    /// Uploads lost on the way (faults).
    pub lost: u64,
    /// Straggler uploads the server used although computed on stale parameters.
    pub late: u64,
    /// Straggler uploads past the deadline, dropped.
    pub dropped: u64,
    /// Simulated upload time so far under the configured network model, in seconds (for WAN:
    /// the run's first link-rate realization; statistics over all come from the trace).
    pub latency_seconds: f64,
    /// Uploads per node and round over the last `accounting.window` rounds (the paper's
    /// figure 1, right panel).
    pub upload_frequency: f64,
    /// Wall-clock seconds since the run started (not deterministic; everything else is).
    pub wall_seconds: f64,
    /// Wall-clock seconds the server spent communicating with other processes (the MPI
    /// backend; 0 in-process). Not deterministic.
    #[serde(default)]
    pub comm_seconds: f64,
}

/// Output format of the metrics file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format a path's extension implies (`.jsonl`/`.json` or anything else as CSV).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => Format::Jsonl,
            _ => Format::Csv,
        }
    }
}

/// Writes metric rows to a file, flushing each so an interrupted run keeps what it wrote.
pub struct Writer {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    format: Format,
}

/// The CSV header, one column per [`MetricsRow`] field.
pub const CSV_HEADER: &str = "iteration,train_loss,test_accuracy,uploads,bits,delivered,lost,late,dropped,latency_seconds,upload_frequency,wall_seconds,comm_seconds";

impl Writer {
    /// Creates (truncates) `path`, making parent directories.
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        let io = |err| Error::Io {
            path: path.into(),
            err,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = Self {
            path: path.into(),
            file: std::io::BufWriter::new(file),
            format,
        };
        if format == Format::Csv {
            writeln!(w.file, "{CSV_HEADER}").map_err(io)?;
        }
        Ok(w)
    }

    /// Reopens `path` to continue a run: keeps its first `len` bytes (what was written up to a
    /// checkpoint) and appends after them.
    pub fn resume(path: &Path, format: Format, len: u64) -> Result<Self> {
        let io = |err| Error::Io {
            path: path.into(),
            err,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.set_len(len).map_err(io)?;
        let mut file = std::io::BufWriter::new(file);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            path: path.into(),
            file,
            format,
        })
    }

    /// Bytes written so far (the file's length once flushed).
    pub fn written(&mut self) -> Result<u64> {
        let io = |err| Error::Io {
            path: self.path.clone(),
            err,
        };
        self.file.flush().map_err(io)?;
        self.file.get_ref().metadata().map(|m| m.len()).map_err(io)
    }

    /// Appends one row and flushes.
    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        let res = match self.format {
            Format::Csv => writeln!(
                self.file,
                "{},{:e},{},{},{},{},{},{},{},{:e},{},{:.3},{:.3}",
                row.iteration,
                row.train_loss,
                row.test_accuracy,
                row.uploads,
                row.bits,
                row.delivered,
                row.lost,
                row.late,
                row.dropped,
                row.latency_seconds,
                row.upload_frequency,
                row.wall_seconds,
                row.comm_seconds
            ),
            Format::Jsonl => {
                let line = serde_json::to_string(row).expect("metrics rows serialise");
                writeln!(self.file, "{line}")
            }
        };
        res.and_then(|_| self.file.flush())
            .map_err(|err| Error::Io {
                path: self.path.clone(),
                err,
            })
    }
}
