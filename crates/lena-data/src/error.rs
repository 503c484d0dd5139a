use std::path::PathBuf;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with a data file or a split request.
///
/// `source` fields name the file (or the in-memory name a caller gave) so messages point at it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {err}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        err: std::io::Error,
    },
    /// The gzip stream is corrupt or truncated.
    #[error("{source_name}: corrupt gzip stream: {err}")]
    Gzip {
        /// File name.
        source_name: String,
        /// Underlying error.
        #[source]
        err: std::io::Error,
    },
    /// The file holds no bytes at all.
    #[error("{source_name}: file is empty, expected {expected}")]
    Empty {
        /// File name.
        source_name: String,
        /// What the file should have held.
        expected: &'static str,
    },
    /// The IDX magic number is not the expected one.
    #[error(
        "{source_name}: byte 0: bad magic number 0x{found:08x}, expected 0x{expected:08x} ({what})"
    )]
    BadMagic {
        /// File name.
        source_name: String,
        /// Magic found.
        found: u32,
        /// Magic expected.
        expected: u32,
        /// Which kind of IDX file was expected.
        what: &'static str,
    },
    /// The file ends before the header says it should.
    #[error(
        "{source_name}: truncated at byte {offset}: header promises {expected} bytes, file has {found}"
    )]
    Truncated {
        /// File name.
        source_name: String,
        /// Offset where data ran out.
        offset: usize,
        /// Bytes expected in total (after decompression).
        expected: usize,
        /// Bytes found in total.
        found: usize,
    },
    /// More bytes than the header accounts for.
    #[error(
        "{source_name}: {extra} trailing bytes after byte {offset} that the header does not account for"
    )]
    TrailingBytes {
        /// File name.
        source_name: String,
        /// End of the data the header describes.
        offset: usize,
        /// Bytes beyond it.
        extra: usize,
    },
    /// A header dimension is unusable (zero, or too large to be real).
    #[error("{source_name}: byte {offset}: {what} is {found}, expected {expected}")]
    BadHeader {
        /// File name.
        source_name: String,
        /// Offset of the field.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// Value found.
        found: u64,
        /// What was expected.
        expected: String,
    },
    /// A label byte outside 0..n_classes.
    #[error("{source_name}: byte {offset}: label {label} out of range 0..{n_classes}")]
    LabelOutOfRange {
        /// File name.
        source_name: String,
        /// Offset of the label byte.
        offset: usize,
        /// Label found.
        label: u32,
        /// Number of classes.
        n_classes: usize,
    },
    /// Image and label files disagree on the sample count.
    #[error("{images_name} holds {images} images but {labels_name} holds {labels} labels")]
    CountMismatch {
        /// Image file.
        images_name: String,
        /// Image count.
        images: usize,
        /// Label file.
        labels_name: String,
        /// Label count.
        labels: usize,
    },
    /// A LIBSVM line that does not parse.
    #[error("{source_name}:{line}: {msg}")]
    Libsvm {
        /// File name.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// More nodes than samples to give them.
    #[error(
        "cannot split {samples} samples among {nodes} nodes: every node needs at least one sample"
    )]
    TooManyNodes {
        /// Nodes requested.
        nodes: usize,
        /// Samples available.
        samples: usize,
    },
    /// A split that cannot be made with these parameters.
    #[error("{0}")]
    BadSplit(String),
    /// Data would need more memory than allowed.
    #[error("{what} is over the limit of {limit}")]
    TooLarge {
        /// What would be allocated, and its size.
        what: String,
        /// The limit.
        limit: String,
    },
    /// Feature dimensions disagree (e.g. train and test sets).
    #[error("{what}: expected {expected} features, found {found}")]
    DimensionMismatch {
        /// What was compared.
        what: String,
        /// Expected dimension.
        expected: usize,
        /// Found dimension.
        found: usize,
    },
}
