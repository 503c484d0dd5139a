//! LIBSVM-format text: `label index:value index:value ...`, one sample per line.
//!
//! Indices are 1-based and strictly increasing within a line; blank lines and `#` comments are
//! skipped. Rows come out as CSR ([`Csr`]) or dense ([`Csr::to_dataset`]).

use crate::{Dataset, Error, Result};
use std::path::Path;

/// Sparse rows in compressed-sparse-row form.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    /// Row `i` holds entries `indptr[i]..indptr[i + 1]`.
    pub indptr: Vec<usize>,
    /// 0-based column of each entry.
    pub indices: Vec<u32>,
    /// Value of each entry.
    pub values: Vec<f32>,
    /// Target (label) of each row as written in the file.
    pub targets: Vec<f64>,
    /// Number of columns.
    pub n_features: usize,
    /// The most bytes [`Csr::to_dataset`] may allocate for the dense matrix
    /// ([`Options::max_dense_bytes`] of the parse).
    pub max_dense_bytes: u64,
}

/// The most distinct targets (classes) a LIBSVM file may have.
pub const MAX_CLASSES: usize = 10_000;

/// The dense matrix a LIBSVM file may ask for by default: 8 GiB.
pub const DEFAULT_MAX_DENSE_BYTES: u64 = 8 << 30;

/// Options of the reader.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Fixed number of features; an index above it is an error. `None`: the largest index seen.
    pub n_features: Option<usize>,
    /// The most bytes the dense form (`rows x features` f32) may take. A file asking for more
    /// (a corrupt index, or data too wide and sparse for dense models) is an error naming the
    /// line of its largest index, before anything that size is allocated.
    pub max_dense_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            n_features: None,
            max_dense_bytes: DEFAULT_MAX_DENSE_BYTES,
        }
    }
}

/// Bytes of a dense `rows x features` f32 matrix (`None` past `u64`).
fn dense_bytes(rows: usize, features: usize) -> Option<u64> {
    (rows as u64).checked_mul(features as u64)?.checked_mul(4)
}

/// Bytes as GiB for messages.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn err(name: &str, line: usize, msg: String) -> Error {
    Error::Libsvm {
        source_name: name.into(),
        line,
        msg,
    }
}

/// Parses LIBSVM text.
pub fn parse(text: &str, source_name: &str, opts: Options) -> Result<Csr> {
    let mut csr = Csr {
        indptr: vec![0],
        indices: Vec::new(),
        values: Vec::new(),
        targets: Vec::new(),
        n_features: 0,
        max_dense_bytes: opts.max_dense_bytes,
    };
    let mut max_index = 0usize;
    // The line of the largest index (named if the dense form would be too large).
    let mut widest_line = 0usize;
    for (ln, line) in text.lines().enumerate() {
        let ln = ln + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut tokens = line.split_ascii_whitespace();
        let label = tokens.next().unwrap_or_default();
        let target: f64 = label
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite())
            .ok_or_else(|| {
                err(
                    source_name,
                    ln,
                    format!("expected a numeric label, found {}", crate::quote(label)),
                )
            })?;
        let mut prev = 0usize;
        for tok in tokens {
            let (i, v) = tok.split_once(':').ok_or_else(|| {
                err(
                    source_name,
                    ln,
                    format!("expected index:value, found {}", crate::quote(tok)),
                )
            })?;
            let index: usize = i.parse().map_err(|_| {
                err(
                    source_name,
                    ln,
                    format!(
                        "expected a positive integer index, found {}",
                        crate::quote(i)
                    ),
                )
            })?;
            if index == 0 {
                return Err(err(
                    source_name,
                    ln,
                    "index 0 found, LIBSVM indices start at 1".into(),
                ));
            }
            if index <= prev {
                return Err(err(
                    source_name,
                    ln,
                    format!("index {index} after {prev}: indices must be strictly increasing"),
                ));
            }
            if let Some(n) = opts.n_features
                && index > n
            {
                return Err(err(
                    source_name,
                    ln,
                    format!("index {index} exceeds n_features = {n}"),
                ));
            }
            if index > u32::MAX as usize {
                return Err(err(source_name, ln, format!("index {index} is too large")));
            }
            let value: f32 = v
                .parse()
                .ok()
                .filter(|x: &f32| x.is_finite())
                .ok_or_else(|| {
                    err(
                        source_name,
                        ln,
                        format!(
                            "expected a finite value after {}:, found {}",
                            crate::quote(i),
                            crate::quote(v)
                        ),
                    )
                })?;
            prev = index;
            if index > max_index {
                max_index = index;
                widest_line = ln;
            }
            csr.indices.push((index - 1) as u32);
            csr.values.push(value);
        }
        csr.targets.push(target);
        csr.indptr.push(csr.indices.len());
    }
    if csr.targets.is_empty() {
        return Err(Error::Empty {
            source_name: source_name.into(),
            expected: "LIBSVM rows",
        });
    }
    csr.n_features = opts.n_features.unwrap_or(max_index).max(1);
    let rows = csr.n_rows();
    match dense_bytes(rows, csr.n_features) {
        Some(b) if b <= opts.max_dense_bytes => Ok(csr),
        b => Err(err(
            source_name,
            widest_line,
            format!(
                "feature index {max_index} makes the dense matrix {rows} rows x {} features = {}, \
                 over the limit of {} (a corrupt index, or data too wide for dense models; \
                 data.source.max_dense_gib raises the limit)",
                csr.n_features,
                b.map_or("more than 2^64 bytes".into(), gib),
                gib(opts.max_dense_bytes)
            ),
        )),
    }
}

/// Reads a LIBSVM file (raw or gzipped).
pub fn read(path: &Path, opts: Options) -> Result<Csr> {
    let bytes = crate::idx::read_maybe_gz(path)?;
    let name = path.display().to_string();
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(&name, line, "invalid UTF-8".into())
    })?;
    parse(text, &name, opts)
}

impl Csr {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.targets.len()
    }

    /// Dense classification dataset. Distinct targets, sorted, become classes `0..k`
    /// (so `-1 / +1` become `0 / 1`); returns the dataset and the target of each class.
    /// More than [`MAX_CLASSES`] distinct targets is an error: the models here are
    /// classifiers, and such a file is most likely regression data.
    pub fn to_dataset(&self) -> Result<(Dataset, Vec<f64>)> {
        let mut classes = self.targets.clone();
        classes.sort_by(f64::total_cmp);
        classes.dedup_by(|a, b| a == b);
        if classes.len() > MAX_CLASSES {
            return Err(Error::TooLarge {
                what: format!(
                    "LIBSVM data with {} distinct targets (classes; regression data is not \
                     supported)",
                    classes.len()
                ),
                limit: format!("{MAX_CLASSES} classes"),
            });
        }
        let ds = self.to_dataset_with(&classes, "LIBSVM data")?;
        Ok((ds, classes))
    }

    /// Dense dataset whose labels are positions in `classes` (e.g. a training set's classes,
    /// so that a test set maps its targets the same way); a target not in `classes` is an error.
    pub fn to_dataset_with(&self, classes: &[f64], source_name: &str) -> Result<Dataset> {
        // By value, with -0 and 0 as one (as `==` has them).
        let key = |t: f64| if t == 0.0 { 0 } else { t.to_bits() };
        let index: std::collections::HashMap<u64, usize> = classes
            .iter()
            .enumerate()
            .map(|(k, &c)| (key(c), k))
            .collect();
        let mut labels = Vec::with_capacity(self.n_rows());
        for (r, t) in self.targets.iter().enumerate() {
            match index.get(&key(*t)) {
                Some(&k) => labels.push(k as u32),
                None => {
                    let shown: Vec<String> = classes.iter().take(10).map(f64::to_string).collect();
                    let more = if classes.len() > 10 { ", ..." } else { "" };
                    return Err(Error::BadSplit(format!(
                        "{source_name}: row {} has target {t}, not among the {} classes [{}{more}]",
                        r + 1,
                        classes.len(),
                        shown.join(", ")
                    )));
                }
            }
        }
        let d = self.n_features;
        match dense_bytes(self.n_rows(), d) {
            Some(b) if b <= self.max_dense_bytes => {}
            b => {
                return Err(Error::TooLarge {
                    what: format!(
                        "{source_name}: a dense matrix of {} rows x {d} features ({})",
                        self.n_rows(),
                        b.map_or("more than 2^64 bytes".into(), gib)
                    ),
                    limit: gib(self.max_dense_bytes),
                });
            }
        }
        let mut features = crate::large::vec_with_capacity(self.n_rows() * d);
        features.resize(self.n_rows() * d, 0.0f32);
        for r in 0..self.n_rows() {
            for k in self.indptr[r]..self.indptr[r + 1] {
                let col = self.indices[k] as usize;
                if col >= d {
                    return Err(Error::DimensionMismatch {
                        what: format!("{source_name}, row {}", r + 1),
                        expected: d,
                        found: col + 1,
                    });
                }
                features[r * d + col] = self.values[k];
            }
        }
        Dataset::new(features, labels, d, classes.len().max(2))
    }
}
