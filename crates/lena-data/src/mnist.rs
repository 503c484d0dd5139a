//! MNIST: the four original IDX files, raw or gzipped, as train and test [`Dataset`]s.

use crate::{Dataset, Error, Result, idx};
use std::path::{Path, PathBuf};

/// File names of the four original MNIST files (gzipped, as distributed).
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// MNIST has ten classes.
pub const N_CLASSES: usize = 10;

/// Finds `name` in `dir`, gzipped or with the `.gz` stripped.
fn locate(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(name);
    if gz.exists() {
        return gz;
    }
    let raw = dir.join(name.trim_end_matches(".gz"));
    if raw.exists() { raw } else { gz }
}

/// The four files of an IDX image-classification set (MNIST and the sets shipped in its
/// format under other names: Fashion-MNIST, KMNIST, EMNIST), each raw or gzipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    /// Training images (IDX, magic 0x00000803).
    pub train_images: PathBuf,
    /// Training labels (IDX, magic 0x00000801).
    pub train_labels: PathBuf,
    /// Test images.
    pub test_images: PathBuf,
    /// Test labels.
    pub test_labels: PathBuf,
}

impl IdxFiles {
    /// MNIST's four file names in `dir` (gzipped, or with `.gz` stripped).
    pub fn mnist(dir: &Path) -> Self {
        let p = |i: usize| locate(dir, FILES[i]);
        Self {
            train_images: p(0),
            train_labels: p(1),
            test_images: p(2),
            test_labels: p(3),
        }
    }
}

/// Loads one image file and its label file into a dataset of `n_classes` classes.
fn load_pair_with(images: &Path, labels: &Path, n_classes: usize) -> Result<Dataset> {
    let im = idx::read_image_bytes(images)?;
    let lb = idx::read_labels(labels, n_classes)?;
    if im.count != lb.len() {
        return Err(Error::CountMismatch {
            images_name: images.display().to_string(),
            images: im.count,
            labels_name: labels.display().to_string(),
            labels: lb.len(),
        });
    }
    Dataset::from_pixel_bytes(im.bytes, lb, im.rows * im.cols, n_classes)
}

/// Loads `(train, test)` from four IDX files. The class count is `n_classes` (a label past it
/// is an error naming the file and byte) or, if `None`, the largest label of either set plus
/// one (at least 2).
pub fn load_files(files: &IdxFiles, n_classes: Option<usize>) -> Result<(Dataset, Dataset)> {
    // Labels are bytes: 256 classes at most.
    let k = n_classes.unwrap_or(256);
    let mut train = load_pair_with(&files.train_images, &files.train_labels, k)?;
    let mut test = load_pair_with(&files.test_images, &files.test_labels, k)?;
    if train.n_features != test.n_features {
        return Err(Error::DimensionMismatch {
            what: format!("the test images {}", files.test_images.display()),
            expected: train.n_features,
            found: test.n_features,
        });
    }
    if n_classes.is_none() {
        let top = train
            .labels
            .iter()
            .chain(&test.labels)
            .max()
            .copied()
            .unwrap_or(0);
        let k = (top as usize + 1).max(2);
        train.n_classes = k;
        test.n_classes = k;
    }
    Ok((train, test))
}

/// Loads one image file and its label file into a dataset of MNIST's ten classes.
pub fn load_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    load_pair_with(images, labels, N_CLASSES)
}

/// Loads `(train, test)` from a directory holding MNIST's four files (gzipped or raw), with
/// MNIST's ten classes.
pub fn load(dir: &Path) -> Result<(Dataset, Dataset)> {
    load_files(&IdxFiles::mnist(dir), Some(N_CLASSES))
}
