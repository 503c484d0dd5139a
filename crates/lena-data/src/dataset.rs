use crate::idx::{pixel, pixel_fused};
use crate::{Error, Result};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A dense, labelled dataset: `n_samples x n_features` row-major f32 features, class labels.
///
/// A dataset of 8-bit images ([`Dataset::from_pixel_bytes`]) also keeps its pixels as bytes,
/// each feature being its byte over 255: [`Dataset::copy_row`] reads those, a quarter of the
/// memory, and writes the same floats.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Row-major features, `n_samples * n_features` values.
    features: Values<f32>,
    /// The features as pixel bytes (`features[i] == f32::from(bytes[i]) / 255.0`), if the
    /// dataset was made from them and its features have not been handed out for writing since.
    bytes: Option<Values<u8>>,
    /// Class label of each row, in `0..n_classes`.
    pub labels: Vec<u32>,
    /// Columns per row.
    pub n_features: usize,
    /// Number of classes; every label is below it.
    pub n_classes: usize,
    /// Layouts of the features that a consumer built once and keeps with them
    /// ([`Dataset::derived`]); dropped when the features are handed out for writing.
    derived: Derived,
}

/// A dataset's derived layouts, each keyed by its type and the consumer's key. A clone keeps
/// the same layouts (its features are the same).
#[derive(Default)]
struct Derived(std::sync::Mutex<Vec<DerivedEntry>>);

/// One layout (`None`: its builder declined, which is kept too, so it is not asked again).
type DerivedEntry = (std::any::TypeId, u64, Option<AnyLayout>);

/// A derived layout of any type.
type AnyLayout = Arc<dyn std::any::Any + Send + Sync>;

/// A layout as the type it was stored under.
fn downcast<T: std::any::Any + Send + Sync>(layout: AnyLayout) -> Arc<T> {
    layout
        .downcast::<T>()
        .expect("a layout is stored under its own type")
}

/// The entry for `T` and `key` in `entries`: `None` if no layout was built, `Some(None)` if
/// its builder declined.
fn find<T: std::any::Any>(entries: &[DerivedEntry], key: u64) -> Option<Option<AnyLayout>> {
    let id = std::any::TypeId::of::<T>();
    let (_, _, layout) = entries.iter().find(|(t, k, _)| *t == id && *k == key)?;
    Some(layout.clone())
}

impl Derived {
    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<DerivedEntry>> {
        // Nothing under the lock can leave the list half changed (a find, a clone, a push).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Self(std::sync::Mutex::new(self.entries().clone()))
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} derived layouts", self.entries().len())
    }
}

/// Datasets are equal when their values are: the byte form is another copy of the features.
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        *self.features == *other.features
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
            features: Values::Own(features),
            bytes: None,
            labels,
            n_features,
            n_classes,
            derived: Derived::default(),
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
        d.bytes = Some(Values::Own(bytes));
        Ok(d)
    }

    /// A dataset of no rows (a process of a multi-process run that hosts none of a node's).
    pub fn empty(n_features: usize, n_classes: usize) -> Self {
        Self {
            features: Values::Own(Vec::new()),
            bytes: None,
            labels: Vec::new(),
            n_features,
            n_classes,
            derived: Derived::default(),
        }
    }

    /// Row-major features, `n_samples * n_features` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The features, to be changed in place; the dataset stops keeping them as bytes too.
    /// (A part of a [`Dataset::split`] copies its rows out of the block it shares first.)
    pub fn features_mut(&mut self) -> &mut [f32] {
        self.bytes = None;
        self.derived = Derived::default();
        self.features.to_mut()
    }

    /// The layout [`Dataset::derived`] built for its type and `key`, if a call has built one
    /// (never builds).
    pub fn derived_if_built<T: std::any::Any + Send + Sync>(&self, key: u64) -> Option<Arc<T>> {
        find::<T>(&self.derived.entries(), key)?.map(downcast)
    }

    /// A layout of the features that `build` makes from this dataset, made on the first call
    /// for its type and `key` and kept with the dataset (shared by its clones, dropped when
    /// [`Dataset::features_mut`] hands the features out for writing). `None` where `build`
    /// declined (also kept: `build` is not called again). `build` runs without the dataset's
    /// lock held (it may use every thread): two first calls at once may both build, and both
    /// return the layout stored first.
    pub fn derived<T: std::any::Any + Send + Sync>(
        &self,
        key: u64,
        build: impl FnOnce(&Dataset) -> Option<T>,
    ) -> Option<Arc<T>> {
        if let Some(layout) = find::<T>(&self.derived.entries(), key) {
            return layout.map(downcast);
        }
        let built = build(self).map(|l| Arc::new(l) as AnyLayout);
        let mut entries = self.derived.entries();
        let layout = find::<T>(&entries, key).unwrap_or_else(|| {
            entries.push((std::any::TypeId::of::<T>(), key, built.clone()));
            built
        });
        layout.map(downcast)
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
        self.prefetch_row_into::<3>(i); // _MM_HINT_T0
    }

    /// As [`Dataset::prefetch_row`], into L2 only: for a row read after other work, which
    /// would push it out of L1 first.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline(always)]
    pub fn prefetch_row_l2(&self, i: usize) {
        self.prefetch_row_into::<2>(i); // _MM_HINT_T1
    }

    /// Row `i`'s lines (its bytes where the dataset keeps them) and its label's requested with
    /// x86's hint `HINT`.
    ///
    /// PERF: the label too, which a minibatch's copy reads with the row: without it, LENA-m's
    /// round at M = 200 spent a twentieth of its samples waiting on the labels' line (AMD EPYC
    /// Zen 4, whose L3 the nodes' state does not fit).
    #[inline(always)]
    fn prefetch_row_into<const HINT: i32>(&self, i: usize) {
        let p = self.n_features;
        match &self.bytes {
            Some(bytes) => prefetch_lines::<HINT, _>(&bytes[i * p..(i + 1) * p]),
            None => prefetch_lines::<HINT, _>(self.row(i)),
        }
        prefetch_lines::<HINT, _>(&self.labels[i..=i]);
    }

    /// A new dataset holding the given rows, in the given order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let p = self.n_features;
        let mut features = crate::large::vec_with_capacity(rows.len() * p);
        push_rows(&mut features, &self.features, rows, p);
        let bytes = self.bytes.as_ref().map(|b| {
            let mut out = crate::large::vec_with_capacity(rows.len() * p);
            push_rows(&mut out, b, rows, p);
            out
        });
        Dataset {
            features: Values::Own(features),
            bytes: bytes.map(Values::Own),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            n_features: p,
            n_classes: self.n_classes,
            derived: Derived::default(),
        }
    }

    /// The datasets of `parts` (each as [`Dataset::subset`] of its rows, the same values), cut
    /// from one allocation that they share: a split's nodes' rows, one part after another,
    /// each part starting on a cache line.
    ///
    /// PERF: parts of their own were allocations in 4 KiB pages (a node of MNIST's 200 holds
    /// 0.94 MB of features and 0.24 MB of bytes), and a node's minibatch rows are a few random
    /// reads a round between long passes over the nodes' state. In one block the kernel backs
    /// them with 2 MiB pages (`madvise`, as every large dataset): at M = 200 LENA's round took
    /// 1.5-3.3% less time and DGD's about 2.6% less (alternated, Intel Xeon family 6 model 167).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn split(&self, parts: &[Vec<usize>]) -> Vec<Dataset> {
        let p = self.n_features;
        let starts = |line: usize| {
            let mut at = 0;
            parts
                .iter()
                .map(|rows| {
                    let start = at;
                    at = (at + rows.len() * p).next_multiple_of(line);
                    start
                })
                .collect::<Vec<_>>()
        };
        fn cut<T: Copy + Default>(
            parts: &[Vec<usize>],
            starts: &[usize],
            p: usize,
            from: &[T],
        ) -> Arc<Vec<T>> {
            let total = match (parts.last(), starts.last()) {
                (Some(rows), Some(&s)) => s + rows.len() * p,
                _ => 0,
            };
            let mut block = crate::large::vec_with_capacity(total);
            for (rows, &s) in parts.iter().zip(starts) {
                block.resize(s, T::default());
                push_rows(&mut block, from, rows, p);
            }
            Arc::new(block)
        }
        // A cache line holds 16 features or 64 bytes.
        let (f_starts, b_starts) = (starts(16), starts(64));
        let features = cut(parts, &f_starts, p, &self.features);
        let bytes = self.bytes.as_ref().map(|b| cut(parts, &b_starts, p, b));
        parts
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let len = rows.len() * p;
                Dataset {
                    features: Values::Part(Arc::clone(&features), f_starts[i]..f_starts[i] + len),
                    bytes: bytes
                        .as_ref()
                        .map(|b| Values::Part(Arc::clone(b), b_starts[i]..b_starts[i] + len)),
                    labels: rows.iter().map(|&r| self.labels[r]).collect(),
                    n_features: p,
                    n_classes: self.n_classes,
                    derived: Derived::default(),
                }
            })
            .collect()
    }

    /// The first `n` rows (all rows if `n` is larger).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n_samples());
        let len = n * self.n_features;
        Dataset {
            features: Values::Own({
                let mut f = crate::large::vec_with_capacity(len);
                f.extend_from_slice(&self.features[..len]);
                f
            }),
            bytes: self.bytes.as_ref().map(|b| Values::Own(b[..len].to_vec())),
            labels: self.labels[..n].to_vec(),
            n_features: self.n_features,
            n_classes: self.n_classes,
            derived: Derived::default(),
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

/// Appends to `out` the listed `rows` of the row-major `from` (`p` values a row), in order.
fn push_rows<T: Copy>(out: &mut Vec<T>, from: &[T], rows: &[usize], p: usize) {
    for &r in rows {
        out.extend_from_slice(&from[r * p..(r + 1) * p]);
    }
}

/// A dataset's values: its own, or a range of a block that the parts of one
/// [`Dataset::split`] share.
#[derive(Clone)]
enum Values<T> {
    Own(Vec<T>),
    Part(Arc<Vec<T>>, Range<usize>),
}

impl<T> Deref for Values<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        match self {
            Self::Own(v) => v,
            Self::Part(block, range) => &block[range.start..range.end],
        }
    }
}

/// A part shows its own values, not its block's.
impl<T: std::fmt::Debug> std::fmt::Debug for Values<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Clone> Values<T> {
    /// The values to write, copied out of a shared block first.
    fn to_mut(&mut self) -> &mut Vec<T> {
        if let Self::Part(block, range) = self {
            *self = Self::Own(block[range.clone()].to_vec());
        }
        match self {
            Self::Own(v) => v,
            Self::Part(..) => unreachable!("a part was just copied out"),
        }
    }
}

/// Prefetches every cache line that `v` touches, with x86's hint `HINT` (3: into L1, 2: into
/// L2): a hint that never faults.
#[inline(always)]
fn prefetch_lines<const HINT: i32, T>(v: &[T]) {
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
            unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
