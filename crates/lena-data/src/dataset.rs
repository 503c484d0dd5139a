use crate::{Error, Result};

/// A dense, labelled dataset: `n_samples x n_features` row-major f32 features, class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Row-major features, `n_samples * n_features` values.
    pub features: Vec<f32>,
    /// Class label of each row, in `0..n_classes`.
    pub labels: Vec<u32>,
    /// Columns per row.
    pub n_features: usize,
    /// Number of classes; every label is below it.
    pub n_classes: usize,
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
            labels,
            n_features,
            n_classes,
        })
    }

    /// Number of rows.
    pub fn n_samples(&self) -> usize {
        self.labels.len()
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// A new dataset holding the given rows, in the given order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let mut features = crate::large::vec_with_capacity(rows.len() * self.n_features);
        for &r in rows {
            features.extend_from_slice(self.row(r));
        }
        Dataset {
            features,
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            n_features: self.n_features,
            n_classes: self.n_classes,
        }
    }

    /// The first `n` rows (all rows if `n` is larger).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n_samples());
        Dataset {
            features: {
                let mut f = crate::large::vec_with_capacity(n * self.n_features);
                f.extend_from_slice(&self.features[..n * self.n_features]);
                f
            },
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
