//! Datasets for distributed learning: readers, synthetic data, node splits, batch sampling.
//!
//! Must not depend on: any `lena-*` crate (it is a leaf beside `lena-kernels`).
//!
//! - [`idx`] reads MNIST's IDX files (raw or gzipped) and [`mnist`] loads the four of them;
//! - [`libsvm`] reads LIBSVM-format text into CSR rows or a dense [`Dataset`];
//! - [`synthetic`] makes seeded Gaussian-cluster classification data for tests;
//! - [`split`] partitions samples among M nodes (IID, one label per node, Dirichlet label skew);
//! - [`sampler`] draws minibatches from a caller's seeded RNG stream.
//!
//! Every reader works on bytes in memory first (so fuzz targets and tests need no files) and
//! reports bad input as an [`Error`] naming the source, the byte offset or line, and what was
//! expected. No reader panics on any input.
//!
//! ```
//! use lena_data::{synthetic, split::{self, Split}};
//! let data = synthetic::classification(200, 5, 4, 1.0, 7);
//! let parts = split::partition(&data.labels, 4, 8, &Split::Iid, 7).unwrap();
//! assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 200);
//! ```

mod dataset;
mod error;
pub mod idx;
mod large;
pub mod libsvm;
pub mod mnist;
pub mod sampler;
pub mod split;
pub mod synthetic;

pub use dataset::Dataset;
pub use error::{Error, Result};

/// Characters of quoted input an error message shows at most.
pub const QUOTE_CHARS: usize = 80;

/// Where a text of more than `max` characters is cut (after three quarters of `max`), or
/// `None` if it fits.
fn cut(text: &str, max: usize) -> Option<usize> {
    text.char_indices().nth(max)?;
    Some(
        text.char_indices()
            .nth(max * 3 / 4)
            .map_or(text.len(), |(i, _)| i),
    )
}

/// `text` cut for an error message to about `max` characters: a long text shows its start
/// and its length in bytes, never all of it.
///
/// ```
/// assert_eq!(lena_data::clip("short", 80), "short");
/// assert_eq!(lena_data::clip("abcdefghij", 4), "abc... (10 bytes)");
/// ```
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match cut(text, max) {
        None => text.into(),
        Some(end) => format!("{}... ({} bytes)", &text[..end], text.len()).into(),
    }
}

/// `text` quoted for an error message, as `{:?}` would, but cut to about [`QUOTE_CHARS`]
/// characters as [`clip`] cuts.
///
/// ```
/// assert_eq!(lena_data::quote("a:b"), "\"a:b\"");
/// let long = "x".repeat(20_000_000);
/// let q = lena_data::quote(&long);
/// assert!(q.len() < 100 && q.ends_with("\"... (20000000 bytes)"), "{q}");
/// ```
pub fn quote(text: &str) -> String {
    match cut(text, QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some(end) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
