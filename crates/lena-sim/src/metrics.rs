//! Metrics: one row per evaluation, written as CSV or JSON lines while the run goes.

use crate::checkpoint::Mark;
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
    /// The objective on the validation set held out from the training data
    /// (`data.validation`; absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Accuracy on the validation set (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// The metric columns, in the order of [`CSV_HEADER`].
pub const COLUMNS: [&str; 15] = [
    "iteration",
    "train_loss",
    "test_accuracy",
    "uploads",
    "bits",
    "delivered",
    "lost",
    "late",
    "dropped",
    "latency_seconds",
    "upload_frequency",
    "wall_seconds",
    "comm_seconds",
    "val_loss",
    "val_accuracy",
];

impl MetricsRow {
    /// The value of the column `name` (one of [`COLUMNS`]; `None` for an unknown name, or a
    /// validation column of a run without a validation set).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "iteration" => self.iteration as f64,
            "train_loss" => self.train_loss,
            "test_accuracy" => self.test_accuracy,
            "uploads" => self.uploads as f64,
            "bits" => self.bits as f64,
            "delivered" => self.delivered as f64,
            "lost" => self.lost as f64,
            "late" => self.late as f64,
            "dropped" => self.dropped as f64,
            "latency_seconds" => self.latency_seconds,
            "upload_frequency" => self.upload_frequency,
            "wall_seconds" => self.wall_seconds,
            "comm_seconds" => self.comm_seconds,
            "val_loss" => self.val_loss?,
            "val_accuracy" => self.val_accuracy?,
            _ => return None,
        })
    }
}

/// A condition on one metric, written `COLUMN>=VALUE` or `COLUMN<=VALUE` (e.g.
/// `test_accuracy>=0.86`, `train_loss<=0.3`): `run.until` ends a run at the first evaluation
/// where it holds.
///
/// ```
/// use lena_sim::metrics::Condition;
/// let c: Condition = "test_accuracy >= 0.86".parse().unwrap();
/// assert_eq!(c.to_string(), "test_accuracy>=0.86");
/// assert!("accuracy>=1".parse::<Condition>().unwrap_err().contains("test_accuracy"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// One of [`COLUMNS`].
    pub column: String,
    /// `>=` (else `<=`).
    pub at_least: bool,
    /// The bound.
    pub value: f64,
}

impl Condition {
    /// True if `row` meets the condition.
    pub fn holds(&self, row: &MetricsRow) -> bool {
        row.get(&self.column).is_some_and(|x| self.holds_for(x))
    }

    /// True if the column's value `x` meets the condition.
    pub fn holds_for(&self, x: f64) -> bool {
        if self.at_least {
            x >= self.value
        } else {
            x <= self.value
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (column, at_least, value) = if let Some((c, v)) = s.split_once(">=") {
            (c, true, v)
        } else if let Some((c, v)) = s.split_once("<=") {
            (c, false, v)
        } else {
            return Err(format!(
                "{}: expected COLUMN>=VALUE or COLUMN<=VALUE, e.g. \"test_accuracy>=0.86\"",
                lena_data::quote(s)
            ));
        };
        let column = column.trim();
        if !COLUMNS.contains(&column) {
            return Err(format!(
                "{}: no metrics column {}; columns are: {}",
                lena_data::quote(s),
                lena_data::quote(column),
                COLUMNS.join(", ")
            ));
        }
        let value = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                format!(
                    "{}: {} is not a finite number",
                    lena_data::quote(s),
                    lena_data::quote(value.trim())
                )
            })?;
        Ok(Self {
            column: column.to_string(),
            at_least,
            value,
        })
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.at_least { ">=" } else { "<=" };
        write!(f, "{}{op}{}", self.column, self.value)
    }
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

/// Writes metric rows to a file, flushing each so an interrupted run keeps what it wrote, and
/// keeps the file's [`Mark`] (length, lines, CRC-32C) for checkpoints.
pub struct Writer {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    format: Format,
    mark: Mark,
    line: String,
}

/// The CSV header, one column per [`MetricsRow`] field.
/// Cells of absent values (the validation columns of a run without a validation set) are empty.
pub const CSV_HEADER: &str = "iteration,train_loss,test_accuracy,uploads,bits,delivered,lost,late,dropped,latency_seconds,upload_frequency,wall_seconds,comm_seconds,val_loss,val_accuracy";

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
            mark: Mark::default(),
            line: String::new(),
        };
        w.line = render(&[], format);
        w.put()?;
        Ok(w)
    }

    /// Reopens `path` to continue a run from a checkpoint that recorded `mark`: verifies the
    /// file ([`verify`]), cuts what follows the mark, and appends after it.
    pub fn resume(path: &Path, format: Format, mark: Mark) -> Result<Self> {
        verify(path, mark)?;
        let io = |err| Error::Io {
            path: path.into(),
            err,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.set_len(mark.len).map_err(io)?;
        let mut file = std::io::BufWriter::new(file);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(mark.len)).map_err(io)?;
        Ok(Self {
            path: path.into(),
            file,
            format,
            mark,
            line: String::new(),
        })
    }

    /// What the file holds so far (all of it is flushed: every write flushes).
    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// Makes what was written durable (before a checkpoint that records it).
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .flush()
            .and_then(|_| self.file.get_ref().sync_data())
            .map_err(|err| Error::Io {
                path: self.path.clone(),
                err,
            })
    }

    /// Writes `self.line` and flushes.
    fn put(&mut self) -> Result<()> {
        let res = self
            .file
            .write_all(self.line.as_bytes())
            .and_then(|_| self.file.flush());
        res.map_err(|err| Error::Io {
            path: self.path.clone(),
            err,
        })?;
        self.mark.append(self.line.as_bytes());
        Ok(())
    }

    /// Appends one row and flushes.
    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        self.line.clear();
        render_row(row, self.format, &mut self.line);
        self.put()
    }
}

/// The first `mark.len` bytes of `path`, if they are exactly those a checkpoint recorded in
/// `mark` (length, lines, CRC-32C); otherwise [`Error::Metrics`] saying how they differ.
fn prefix(path: &Path, mark: Mark) -> Result<Vec<u8>> {
    let io = |err| Error::Io {
        path: path.into(),
        err,
    };
    let bad = |what: String| Error::Metrics {
        path: path.into(),
        what,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < mark.len {
        return Err(bad(format!(
            "{len} bytes, shorter than the {} bytes written up to the checkpoint",
            mark.len
        )));
    }
    let mut bytes = Vec::with_capacity(mark.len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, mark.len), &mut bytes).map_err(io)?;
    let found = Mark::of(&bytes);
    if found != mark {
        return Err(bad(format!(
            "its first {} bytes are not those written up to the checkpoint ({} lines, CRC-32C \
             {:08x}; expected {} lines, {:08x}): the file was changed",
            mark.len, found.lines, found.crc, mark.lines, mark.crc
        )));
    }
    Ok(bytes)
}

/// Checks that `path` begins with exactly the bytes a checkpoint recorded in `mark`. Reads
/// only: a file that fails is left as it is.
pub fn verify(path: &Path, mark: Mark) -> Result<()> {
    prefix(path, mark).map(|_| ())
}

/// The rows in the first `mark.len` bytes of the JSON-lines metrics file `path`, verified
/// against `mark` (the file the CSV is rebuilt from).
pub fn read_jsonl_rows(path: &Path, mark: Mark) -> Result<Vec<MetricsRow>> {
    let bytes = prefix(path, mark)?;
    let bad = |what: String| Error::Metrics {
        path: path.into(),
        what,
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| bad(format!("byte {}: not UTF-8", e.valid_up_to())))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| bad(format!("line {}: not a metrics row: {e}", i + 1)))
        })
        .collect()
}

/// The text a [`Writer`] of `format` writes for `rows`, header included.
pub fn render(rows: &[MetricsRow], format: Format) -> String {
    let mut out = String::new();
    if format == Format::Csv {
        out.push_str(CSV_HEADER);
        out.push('\n');
    }
    for row in rows {
        render_row(row, format, &mut out);
    }
    out
}

/// Appends one row as `format` writes it, newline included.
fn render_row(row: &MetricsRow, format: Format, out: &mut String) {
    use std::fmt::Write as _;
    match format {
        Format::Csv => writeln!(
            out,
            "{},{:e},{},{},{},{},{},{},{},{:e},{},{:.3},{:.3},{},{}",
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
            row.comm_seconds,
            row.val_loss.map_or(String::new(), |v| format!("{v:e}")),
            row.val_accuracy.map_or(String::new(), |v| v.to_string()),
        )
        .expect("writing to a String"),
        Format::Jsonl => {
            out.push_str(&serde_json::to_string(row).expect("metrics rows serialise"));
            out.push('\n');
        }
    }
}
