use crate::idx::{pixel, pixel_fused};
use crate::{Error, Result};

/// A dense, labelled dataset: `n_samples x n_features` row-major f32 features, class labels.
///
/// A dataset of 8-bit images ([`Dataset::from_pixel_bytes`]) also keeps its pixels as bytes,
/// each feature being its byte over 255: [`Dataset::copy_row`] reads those, a quarter of the
/// memory, and writes the same floats.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Row-major features, `n_samples * n_features` values.
    features: Vec<f32>,
    /// The features as pixel bytes (`features[i] == f32::from(bytes[i]) / 255.0`), if the
    /// dataset was made from them and its features have not been handed out for writing since.
    bytes: Option<Vec<u8>>,
    /// Class label of each row, in `0..n_classes`.
    pub labels: Vec<u32>,
    /// Columns per row.
    pub n_features: usize,
    /// Number of classes; every label is below it.
    pub n_classes: usize,
}

/// Datasets are equal when their values are: the byte form is another copy of the features.
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.features == other.features
            && self.labels == other.labels
            && self.n_features == other.n_features
            && self.n_classes == other.n_classes
    }
}

impl Dataset {
    /// Builds a dataset, checking that shapes and labels agree.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<u32>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Self> {
        if n_features == 0 || features.len() != labels.len() * n_features {
            return Err(Error::DimensionMismatch {
                what: format!("dataset with {} labels", labels.len()),
                expected: labels.len() * n_features,
                found: features.len(),
            });
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= n_classes)
        {
            return Err(Error::LabelOutOfRange {
                source_name: "dataset".into(),
                offset: i,
                label: l,
                n_classes,
            });
        }
        Ok(Self {
            features,
            bytes: None,
            labels,
            n_features,
            n_classes,
        })
    }

    /// A dataset of 8-bit images: each feature is its pixel byte over 255 (`[0, 1]`), and the
    /// bytes are kept for [`Dataset::copy_row`]. Shapes and labels are checked as in
    /// [`Dataset::new`].
    pub fn from_pixel_bytes(
        bytes: Vec<u8>,
        labels: Vec<u32>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Self> {
        let mut features = crate::large::vec_with_capacity(bytes.len());
        features.extend(bytes.iter().map(|&b| pixel(b)));
        let mut d = Self::new(features, labels, n_features, n_classes)?;
        d.bytes = Some(bytes);
        Ok(d)
    }

    /// A dataset of no rows (a process of a multi-process run that hosts none of a node's).
    pub fn empty(n_features: usize, n_classes: usize) -> Self {
        Self {
            features: Vec::new(),
            bytes: None,
            labels: Vec::new(),
            n_features,
            n_classes,
        }
    }

    /// Row-major features, `n_samples * n_features` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The features, to be changed in place; the dataset stops keeping them as bytes too.
    pub fn features_mut(&mut self) -> &mut [f32] {
        self.bytes = None;
        &mut self.features
    }

    /// Whether [`Dataset::copy_row`] reads pixel bytes (a dataset made by
    /// [`Dataset::from_pixel_bytes`] whose features have not been written since).
    pub fn has_pixel_bytes(&self) -> bool {
        self.bytes.is_some()
    }

    /// Number of rows.
    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// Writes row `i`'s features into `out` (of length `n_features`): the same values as
    /// [`Dataset::row`], read from the pixel bytes where the dataset keeps them.
    ///
    /// PERF: a minibatch's rows are scattered over the whole set, so copying one is a wait on
    /// memory: as bytes a row of MNIST is 13 cache lines instead of 49. Meant to be inlined
    /// into a kernel path (`Kernels::vectorize`): its bytes are scaled without a division by
    /// fused multiply-adds, which code compiled without them calls as a library function.
    ///
    /// # Panics
    /// If `i` is out of range or `out` is not `n_features` long.
    #[inline(always)]
    pub fn copy_row(&self, i: usize, out: &mut [f32]) {
        let p = self.n_features;
        match &self.bytes {
            Some(bytes) => {
                let src = &bytes[i * p..(i + 1) * p];
                assert_eq!(out.len(), p, "copy_row: output length");
                for (o, &b) in out.iter_mut().zip(src) {
                    *o = pixel_fused(b);
                }
            }
            None => out.copy_from_slice(self.row(i)),
        }
    }

    /// Asks the CPU to start bringing row `i` into cache, every cache line of it, from the
    /// pixel bytes where the dataset keeps them: a hint, with no effect on any value.
    ///
    /// PERF: a minibatch's rows are known before they are copied; prefetching a few rows ahead
    /// of [`Dataset::copy_row`] keeps several rows' misses in flight instead of one row's
    /// (figure 4's round, M = 200 and minibatches of 30: 3.7 -> 3.15 ms, AMD Zen 4).
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline(always)]
    pub fn prefetch_row(&self, i: usize) {
        let p = self.n_features;
        match &self.bytes {
            Some(bytes) => prefetch_lines(&bytes[i * p..(i + 1) * p]),
            None => prefetch_lines(self.row(i)),
        }
    }

    /// A new dataset holding the given rows, in the given order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let p = self.n_features;
        let mut features = crate::large::vec_with_capacity(rows.len() * p);
        for &r in rows {
            features.extend_from_slice(self.row(r));
        }
        let bytes = self.bytes.as_ref().map(|b| {
            let mut out = crate::large::vec_with_capacity(rows.len() * p);
            for &r in rows {
                out.extend_from_slice(&b[r * p..(r + 1) * p]);
            }
            out
        });
        Dataset {
            features,
            bytes,
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            n_features: p,
            n_classes: self.n_classes,
        }
    }

    /// The first `n` rows (all rows if `n` is larger).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n_samples());
        let len = n * self.n_features;
        Dataset {
            features: {
                let mut f = crate::large::vec_with_capacity(len);
                f.extend_from_slice(&self.features[..len]);
                f
            },
            bytes: self.bytes.as_ref().map(|b| b[..len].to_vec()),
            labels: self.labels[..n].to_vec(),
            n_features: self.n_features,
            n_classes: self.n_classes,
        }
    }

    /// Count of rows per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.n_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// Prefetches every cache line that `v` touches (into L1): a hint that never faults.
#[inline(always)]
fn prefetch_lines<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (start, bytes) = (v.as_ptr() as usize, size_of_val(v));
        if bytes == 0 {
            return;
        }
        let first = start & !63;
        for line in (first..start + bytes).step_by(64) {
            // SAFETY: a prefetch never faults, whatever the address, and writes nothing; every
            // line named here holds part of `v`.
            unsafe { std::arch::x86_64::_mm_prefetch::<3>(line as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
