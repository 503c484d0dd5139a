//! Integration tests of lena-data: every bad-input case named in the issue, splits, sampling.

use flate2::{Compression, write::GzEncoder};
use lena_data::{
    Dataset, Error, idx, libsvm, mnist, sampler::BatchSampler, split, split::Split, synthetic,
};
use proptest::prelude::*;
use rand::SeedableRng;
use std::io::Write;
use std::path::Path;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A tiny valid MNIST-like pair: `n` 2x3 images and labels `i % 10`.
fn tiny(n: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * 6).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (
        idx::encode_images(&pixels, n as u32, 2, 3),
        idx::encode_labels(&labels),
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn mnist_dir(train: (Vec<u8>, Vec<u8>), test: (Vec<u8>, Vec<u8>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), mnist::FILES[0], &gz(&train.0));
    write(dir.path(), mnist::FILES[1], &gz(&train.1));
    // The test pair raw (not gzipped): the loader accepts both.
    write(dir.path(), mnist::FILES[2].trim_end_matches(".gz"), &test.0);
    write(dir.path(), mnist::FILES[3].trim_end_matches(".gz"), &test.1);
    dir
}

#[test]
fn mnist_loads_gzipped_and_raw() {
    let dir = mnist_dir(tiny(20), tiny(10));
    let (train, test) = mnist::load(dir.path()).unwrap();
    assert_eq!((train.n_samples(), train.n_features), (20, 6));
    assert_eq!(test.n_samples(), 10);
    assert_eq!(train.labels[13], 3);
    assert_eq!(train.row(0)[1], 37.0 / 255.0);
    assert!(train.features().iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(train.has_pixel_bytes() && test.has_pixel_bytes());
}

/// A set of 8-bit images keeps its pixel bytes through subsets and heads, and every row copied
/// from them is the row of features, bit for bit (every byte value included); writing the
/// features drops the bytes, so a copy then reads the written values. Prefetching a row (any
/// row, from bytes or from features) changes nothing.
#[test]
fn pixel_bytes_copy_the_same_rows_and_are_dropped_when_features_change() {
    let n_features = 16;
    let bytes: Vec<u8> = (0..32 * n_features).map(|i| (i * 97 % 256) as u8).collect();
    assert!((0..=255u8).all(|b| bytes.contains(&b)));
    let labels: Vec<u32> = (0..32).map(|i| i % 3).collect();
    let d = Dataset::from_pixel_bytes(bytes.clone(), labels.clone(), n_features, 3).unwrap();
    let plain = Dataset::new(
        bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
        labels,
        n_features,
        3,
    )
    .unwrap();
    assert!(d.has_pixel_bytes() && !plain.has_pixel_bytes());
    assert_eq!(d, plain, "the same values, with or without bytes");
    let rows = [31, 0, 7, 7, 12];
    for set in [d.clone(), d.subset(&rows), d.head(9)] {
        assert!(set.has_pixel_bytes());
        let mut out = vec![f32::NAN; n_features];
        for i in 0..set.n_samples() {
            // A hint only: every row, the last included, and the copy is unchanged.
            set.prefetch_row(i);
            set.copy_row(i, &mut out);
            let same = out
                .iter()
                .zip(set.row(i))
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "row {i}");
        }
    }
    let mut changed = d.subset(&rows);
    changed.features_mut()[3] = 2.5;
    assert!(!changed.has_pixel_bytes());
    let mut out = vec![0.0; n_features];
    changed.prefetch_row(changed.n_samples() - 1);
    changed.copy_row(0, &mut out);
    assert_eq!(out[3], 2.5);
    assert!(Dataset::from_pixel_bytes(vec![0; 5], vec![0, 1], 3, 2).is_err());
}

/// A split's parts hold the values of the subsets of their rows (pixel bytes included, empty
/// parts and repeated rows too), each part starting on a cache line of the block they share;
/// writing one part's features changes that part alone, which then reads the written values
/// and no longer its bytes.
#[test]
fn split_parts_are_the_subsets_and_a_write_stays_in_its_part() {
    let n_features = 13;
    let n = 40;
    let bytes: Vec<u8> = (0..n * n_features).map(|i| (i * 89 % 256) as u8).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
    let pixels = Dataset::from_pixel_bytes(bytes, labels.clone(), n_features, 4).unwrap();
    let plain = Dataset::new(pixels.features().to_vec(), labels, n_features, 4).unwrap();
    let parts = vec![vec![3, 1, 4], vec![], vec![39, 0], vec![7, 7, 7, 2], vec![]];
    for d in [&pixels, &plain] {
        let split = d.split(&parts);
        assert_eq!(split.len(), parts.len());
        for (set, rows) in split.iter().zip(&parts) {
            let subset = d.subset(rows);
            assert_eq!(*set, subset);
            assert_eq!(set.labels, subset.labels);
            assert_eq!(set.has_pixel_bytes(), d.has_pixel_bytes());
            let mut out = vec![f32::NAN; n_features];
            for i in 0..set.n_samples() {
                set.prefetch_row(i);
                set.copy_row(i, &mut out);
                assert!(
                    out.iter()
                        .zip(set.row(i))
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                );
            }
        }
        let base = split[0].features().as_ptr() as usize;
        for set in split.iter().filter(|s| s.n_samples() > 0) {
            assert_eq!((set.features().as_ptr() as usize - base) % 64, 0);
        }
        let mut split = split;
        let before: Vec<Dataset> = split.clone();
        split[2].features_mut()[n_features] = 2.5;
        assert!(!split[2].has_pixel_bytes());
        let mut out = vec![0.0; n_features];
        split[2].copy_row(1, &mut out);
        assert_eq!(out[0], 2.5);
        assert_eq!(split[2].row(0), before[2].row(0));
        for i in [0, 1, 3, 4] {
            assert_eq!(split[i], before[i], "part {i} unchanged");
            assert_eq!(split[i].has_pixel_bytes(), d.has_pixel_bytes());
        }
    }
}

/// The validation hold-out is disjoint from the kept samples, covers all of them together,
/// keeps each class's share, and depends only on its seed.
#[test]
fn hold_out_is_disjoint_stratified_and_seeded() {
    let labels: Vec<u32> = (0..1000u32).map(|i| (i * 7 + i / 13) % 10).collect();
    let (kept, held) = split::hold_out(&labels, 10, 0.1, 3);
    let mut all: Vec<usize> = kept.iter().chain(&held).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert!(kept.windows(2).all(|w| w[0] < w[1]) && held.windows(2).all(|w| w[0] < w[1]));
    for c in 0..10u32 {
        let n = labels.iter().filter(|&&l| l == c).count();
        let h = held.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!(h, (0.1 * n as f64).round() as usize, "class {c}");
    }
    assert_eq!(
        split::hold_out(&labels, 10, 0.1, 3),
        (kept.clone(), held.clone())
    );
    assert_ne!(split::hold_out(&labels, 10, 0.1, 4).1, held);
    assert!(split::hold_out(&labels, 10, 0.0, 3).1.is_empty());
}

/// Any IDX set by file names, with the class count taken from the labels (EMNIST-style
/// names, 3 classes) or fixed by the caller.
#[test]
fn idx_sets_load_by_name_with_their_own_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let set = |n: usize, top: u8| {
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 11 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % (top as usize + 1)) as u8).collect();
        (
            idx::encode_images(&pixels, n as u32, 2, 2),
            idx::encode_labels(&labels),
        )
    };
    let (tr, te) = (set(12, 1), set(6, 2));
    write(d, "emnist-x-train-images-idx3-ubyte.gz", &gz(&tr.0));
    write(d, "emnist-x-train-labels-idx1-ubyte", &tr.1);
    write(d, "emnist-x-test-images-idx3-ubyte", &te.0);
    write(d, "emnist-x-test-labels-idx1-ubyte.gz", &gz(&te.1));
    let files = mnist::IdxFiles {
        train_images: d.join("emnist-x-train-images-idx3-ubyte.gz"),
        train_labels: d.join("emnist-x-train-labels-idx1-ubyte"),
        test_images: d.join("emnist-x-test-images-idx3-ubyte"),
        test_labels: d.join("emnist-x-test-labels-idx1-ubyte.gz"),
    };
    // Train labels go to 1, test labels to 2: three classes in both sets.
    let (train, test) = mnist::load_files(&files, None).unwrap();
    assert_eq!((train.n_classes, test.n_classes), (3, 3));
    assert_eq!(
        (train.n_samples(), train.n_features, test.n_samples()),
        (12, 4, 6)
    );
    let (train, _) = mnist::load_files(&files, Some(5)).unwrap();
    assert_eq!(train.n_classes, 5);
    let e = mnist::load_files(&files, Some(2)).unwrap_err().to_string();
    assert!(
        e.contains("emnist-x-test-labels-idx1-ubyte.gz: byte 10: label 2 out of range 0..2"),
        "{e}"
    );
}

#[test]
fn wrong_magic_names_file_and_offset() {
    let (mut im, _) = tiny(3);
    im[3] = 0x02;
    let e = idx::parse_images(&im, "x.idx").unwrap_err();
    assert!(matches!(e, Error::BadMagic { found: 0x0802, .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("x.idx: byte 0: bad magic number 0x00000802"),
        "{e}"
    );
    // A label file given as an image file is caught by its magic too.
    let (_, lb) = tiny(3);
    assert!(matches!(
        idx::parse_images(&lb, "l").unwrap_err(),
        Error::BadMagic { .. }
    ));
}

#[test]
fn truncated_file_reports_offset_and_sizes() {
    let (im, lb) = tiny(4);
    let e = idx::parse_images(&im[..im.len() - 5], "im").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 40,
                found: 35,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("truncated at byte 35"), "{e}");
    // Truncated inside the header.
    let e = idx::parse_labels(&lb[..6], "lb", 10).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    // A truncated gzip stream.
    let z = gz(&im);
    let e = idx::inflate_if_gz(z[..z.len() / 2].to_vec(), "im.gz").unwrap_err();
    assert!(matches!(e, Error::Gzip { .. }), "{e}");
    // A truncated file on disk, through the loader.
    let dir = mnist_dir(tiny(20), tiny(10));
    let p = dir.path().join(mnist::FILES[2].trim_end_matches(".gz"));
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = mnist::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let (mut im, _) = tiny(2);
    im.push(0);
    assert!(matches!(
        idx::parse_images(&im, "im").unwrap_err(),
        Error::TrailingBytes { .. }
    ));
}

#[test]
fn image_label_count_mismatch() {
    let (im, _) = tiny(20);
    let (_, lb) = tiny(19);
    let dir = mnist_dir((im, lb), tiny(10));
    let e = mnist::load(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CountMismatch {
                images: 20,
                labels: 19,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn label_out_of_range() {
    let lb = idx::encode_labels(&[1, 2, 10, 3]);
    let e = idx::parse_labels(&lb, "lb", 10).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                offset: 10,
                label: 10,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.idx");
    std::fs::write(&p, b"").unwrap();
    let e = idx::read_images(&p).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    assert!(e.to_string().contains("empty.idx: file is empty"), "{e}");
    let e = libsvm::read(&p, Default::default()).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
}

#[test]
fn missing_file_names_path() {
    let e = idx::read_images(Path::new("/nonexistent/lena/x.gz")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/lena/x.gz:"), "{e}");
}

#[test]
fn zero_dimension_header() {
    let im = idx::encode_images(&[], 0, 28, 28);
    let e = idx::parse_images(&im, "im").unwrap_err();
    assert!(matches!(e, Error::BadHeader { offset: 4, .. }), "{e}");
}

#[test]
fn libsvm_parses_to_csr_and_dense() {
    let text = "+1 1:0.5 3:2\n# comment\n\n-1 2:1.5\n+1 4:-1 # trailing comment\n";
    let csr = libsvm::parse(text, "t", Default::default()).unwrap();
    assert_eq!(csr.n_rows(), 3);
    assert_eq!(csr.n_features, 4);
    assert_eq!(csr.indptr, vec![0, 2, 3, 4]);
    assert_eq!(csr.indices, vec![0, 2, 1, 3]);
    let (ds, classes) = csr.to_dataset().unwrap();
    assert_eq!(classes, vec![-1.0, 1.0]);
    assert_eq!(ds.labels, vec![1, 0, 1]);
    assert_eq!(ds.row(0), &[0.5, 0.0, 2.0, 0.0]);
    assert_eq!(ds.row(2), &[0.0, 0.0, 0.0, -1.0]);
    let fixed = libsvm::parse(
        text,
        "t",
        libsvm::Options {
            n_features: Some(6),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fixed.n_features, 6);
}

#[test]
fn libsvm_malformed_lines_name_the_line() {
    let cases = [
        ("1 1:2\nx 1:2\n", 2, "expected a numeric label"),
        ("1 1:2\n1 2-3\n", 2, "expected index:value"),
        ("1 0:2\n", 1, "index 0"),
        ("1 3:2 2:1\n", 1, "strictly increasing"),
        ("1 1:abc\n", 1, "expected a finite value"),
        ("1 1:nan\n", 1, "expected a finite value"),
        ("1 a:1\n", 1, "positive integer index"),
    ];
    for (text, line, msg) in cases {
        let e = libsvm::parse(text, "f.svm", Default::default()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("f.svm:{line}: ")) && s.contains(msg),
            "{text:?}: {s}"
        );
    }
    let e = libsvm::parse(
        "1 7:1\n",
        "f",
        libsvm::Options {
            n_features: Some(5),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds n_features = 5"), "{e}");
}

/// A feature index of 4 000 000 000 used to allocate 176 GB and abort the process: now an error
/// naming the line, the index and the limit, before anything that size is allocated.
#[test]
fn libsvm_bounds_the_dense_matrix_a_file_asks_for() {
    let text = "1 1:0.5\n# comment\n\n-1 2:1 4000000000:1\n1 3:2\n";
    let e = libsvm::parse(text, "f.svm", Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "f.svm:4: feature index 4000000000 makes the dense matrix 3 rows x \
                       4000000000 features = 44.7 GiB, over the limit of 8.0 GiB"
        ),
        "{e}"
    );
    // Within a limit the caller sets, and past it by one row.
    let opts = libsvm::Options {
        n_features: None,
        max_dense_bytes: 3 * 3 * 4,
    };
    assert!(libsvm::parse("1 1:1\n1 3:1\n0 2:1\n", "f", opts).is_ok());
    let e = libsvm::parse("1 1:1\n1 3:1\n0 2:1\n1 1:1\n", "f", opts).unwrap_err();
    assert!(e.to_string().starts_with("f:2: feature index 3"), "{e}");
    // Densifying checks again (a caller may widen n_features after parsing).
    let mut csr = libsvm::parse("1 1:1\n0 2:1\n", "f", opts).unwrap();
    csr.n_features = usize::MAX / 2;
    let e = csr.to_dataset().unwrap_err().to_string();
    assert!(e.contains("is over the limit of"), "{e}");
}

/// An error quoting input shows at most about 80 characters of it, whatever its length.
#[test]
fn errors_quote_at_most_80_characters_of_input() {
    let long = "z".repeat(20_000_000);
    for text in [
        format!("{long} 1:1\n"),
        format!("1 {long}\n"),
        format!("1 {long}:1\n"),
        format!("1 1:{long}\n"),
    ] {
        let e = libsvm::parse(&text, "f", Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.len() < 200 && e.contains("(20000000 bytes)"),
            "{}",
            &e[..e.len().min(300)]
        );
    }
    let e = format!("dirichlet:{long}")
        .parse::<lena_data::split::Split>()
        .unwrap_err();
    assert!(e.len() < 200, "{}", &e[..300]);
}

#[test]
fn more_nodes_than_samples() {
    let labels = vec![0u32; 5];
    let e = split::partition(&labels, 1, 6, &Split::Iid, 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManyNodes {
                nodes: 6,
                samples: 5
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("6 nodes"), "{e}");
}

fn is_partition(parts: &[Vec<usize>], n: usize) -> bool {
    let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
    all.sort_unstable();
    all == (0..n).collect::<Vec<_>>()
}

#[test]
fn one_label_split_matches_the_paper() {
    let data = synthetic::classification(1000, 3, 10, 1.0, 3);
    for m in [10, 20, 50] {
        let parts = split::partition(&data.labels, 10, m, &Split::OneLabel, 0).unwrap();
        assert_eq!(parts.len(), m);
        assert!(is_partition(&parts, 1000));
        for (node, p) in parts.iter().enumerate() {
            let label = (node / (m / 10)) as u32;
            assert!(
                p.iter().all(|&i| data.labels[i] == label),
                "node {node} mixes labels"
            );
            assert!(p.len().abs_diff(1000 / m) <= 1);
        }
    }
    let e = split::partition(&data.labels, 10, 15, &Split::OneLabel, 0).unwrap_err();
    assert!(e.to_string().contains("multiple of the 10 classes"), "{e}");
}

#[test]
fn iid_and_dirichlet_splits_are_seeded_partitions() {
    let data = synthetic::classification(500, 3, 5, 1.0, 3);
    let iid = split::partition(&data.labels, 5, 7, &Split::Iid, 1).unwrap();
    assert!(is_partition(&iid, 500));
    assert!(iid.iter().all(|p| p.len() == 71 || p.len() == 72));
    assert_eq!(
        iid,
        split::partition(&data.labels, 5, 7, &Split::Iid, 1).unwrap()
    );
    assert_ne!(
        iid,
        split::partition(&data.labels, 5, 7, &Split::Iid, 2).unwrap()
    );

    let dir = Split::Dirichlet { alpha: 0.3 };
    let parts = split::partition(&data.labels, 5, 10, &dir, 4).unwrap();
    assert!(is_partition(&parts, 500));
    assert!(parts.iter().all(|p| !p.is_empty()));
    // Strong skew: most nodes are dominated by one class.
    let dominated = parts
        .iter()
        .filter(|p| {
            let mut c = [0usize; 5];
            p.iter().for_each(|&i| c[data.labels[i] as usize] += 1);
            *c.iter().max().unwrap() * 2 > p.len()
        })
        .count();
    assert!(
        dominated >= 6,
        "only {dominated} of 10 nodes are label-skewed"
    );
    let e = split::partition(&data.labels, 5, 10, &Split::Dirichlet { alpha: -1.0 }, 4);
    assert!(e.unwrap_err().to_string().contains("alpha must be"));
}

#[test]
fn split_names_parse() {
    assert_eq!("iid".parse::<Split>().unwrap(), Split::Iid);
    assert_eq!("one_label".parse::<Split>().unwrap(), Split::OneLabel);
    assert_eq!(
        "dirichlet:0.5".parse::<Split>().unwrap(),
        Split::Dirichlet { alpha: 0.5 }
    );
    let e = "skewed".parse::<Split>().unwrap_err();
    assert!(
        e.contains("expected one of: iid, one_label, dirichlet:ALPHA"),
        "{e}"
    );
}

#[test]
fn sampler_without_replacement_covers_each_epoch() {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
    let mut s = BatchSampler::new(10, false);
    let mut seen = Vec::new();
    let mut b = [0u32; 5];
    for _ in 0..2 {
        s.fill(&mut rng, &mut b);
        seen.extend_from_slice(&b);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // With replacement: in range, and the same stream gives the same batches.
    let mut a = BatchSampler::new(7, true);
    let mut r1 = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let mut r2 = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let (mut x, mut y) = ([0u32; 50], [0u32; 50]);
    a.fill(&mut r1, &mut x);
    BatchSampler::new(7, true).fill(&mut r2, &mut y);
    assert_eq!(x, y);
    assert!(x.iter().all(|&i| i < 7));
    // 50 draws from 7 values must repeat some value.
    assert!(x.iter().collect::<std::collections::HashSet<_>>().len() <= 7);
}

/// A peek names the rows the next fill draws, and changes nothing: with and without
/// replacement, batches of several sizes, through several passes; without replacement it
/// declines a batch that would start a new pass (a shuffle), and the fill after it is the same.
#[test]
fn a_peek_names_the_next_batch_and_changes_nothing() {
    for replacement in [false, true] {
        let mut s = BatchSampler::new(10, replacement);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(4);
        let (mut known, mut declined) = (0, 0);
        for round in 0..40 {
            let len = 1 + round % 4;
            let (mut next, mut drawn) = (vec![u32::MAX; len], vec![0u32; len]);
            let (before, state) = (s.clone(), rng.clone());
            let ok = s.peek(&rng, &mut next);
            assert_eq!(format!("{s:?}"), format!("{before:?}"));
            assert_eq!(rng, state);
            s.fill(&mut rng, &mut drawn);
            if ok {
                assert_eq!(next, drawn, "round {round}");
                known += 1;
            } else {
                declined += 1;
            }
        }
        assert!(known > 20);
        assert_eq!(declined > 0, !replacement);
    }
}

proptest! {
    #[test]
    fn idx_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = idx::parse_images(&bytes, "fuzz");
        let _ = idx::parse_labels(&bytes, "fuzz", 10);
        let _ = idx::inflate_if_gz(bytes, "fuzz");
    }

    #[test]
    fn idx_header_mutations_never_panic(n in 1usize..8, pos in 0usize..16, val in any::<u8>()) {
        let (mut im, mut lb) = tiny(n);
        im[pos] = val;
        let last = lb.len() - 1;
        lb[pos.min(last)] = val;
        let _ = idx::parse_images(&im, "m");
        let _ = idx::parse_labels(&lb, "m", 10);
    }

    #[test]
    fn libsvm_never_panics(text in "[-+0-9.: \\n#a-z]{0,200}") {
        if let Ok(csr) = libsvm::parse(&text, "fuzz", Default::default()) {
            prop_assert_eq!(csr.indptr.len(), csr.n_rows() + 1);
            let _ = csr.to_dataset();
        }
    }
}

/// A derived layout is built on the first call for its type and key only (`derived_if_built`
/// never builds), shared by clones, dropped once the features are handed out for writing; a
/// declined one is not asked again.
#[test]
fn derived_layouts_are_built_once_and_dropped_on_writes() {
    let mut ds = Dataset::new(vec![1.0, 2.0, 3.0, 4.0], vec![0, 1], 2, 2).unwrap();
    assert_eq!(ds.derived_if_built::<f32>(1), None);
    let calls = std::cell::Cell::new(0);
    let sum = |d: &Dataset| {
        calls.set(calls.get() + 1);
        Some(d.features().iter().sum::<f32>())
    };
    assert_eq!(ds.derived(1, sum).as_deref(), Some(&10.0));
    assert_eq!(ds.derived(1, sum).as_deref(), Some(&10.0));
    assert_eq!(calls.get(), 1, "built once");
    assert_eq!(ds.derived_if_built::<f32>(1).as_deref(), Some(&10.0));
    assert_eq!(ds.derived(2, sum).as_deref(), Some(&10.0));
    assert_eq!(calls.get(), 2, "another key, another layout");
    assert_eq!(ds.derived::<u8>(1, |_| None), None);
    assert_eq!(
        ds.derived::<u8>(1, |_| Some(1)),
        None,
        "a declined layout is kept"
    );
    let copy = ds.clone();
    assert_eq!(copy.derived(1, sum).as_deref(), Some(&10.0));
    assert_eq!(calls.get(), 2, "a clone shares the layouts");
    ds.features_mut()[0] = 5.0;
    assert_eq!(ds.derived(1, sum).as_deref(), Some(&14.0));
    assert_eq!(calls.get(), 3, "rebuilt after a write");
    assert_eq!(
        copy.derived(1, sum).as_deref(),
        Some(&10.0),
        "the clone keeps its own"
    );
}

/// Two first calls at once (the builder runs without the dataset's lock) both get the layout
/// stored first, and every later call that one.
#[test]
fn derived_layouts_built_at_once_agree() {
    let ds = Dataset::new(vec![1.0; 8], vec![0; 4], 2, 1).unwrap();
    let barrier = std::sync::Barrier::new(2);
    let build = |tag: u32| {
        let (ds, barrier) = (&ds, &barrier);
        move || {
            ds.derived(7, |_| {
                barrier.wait(); // both builders run before either stores
                Some(tag)
            })
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(build(1));
        let b = s.spawn(build(2));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let later = ds.derived(7, |_| Some(3u32)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &later));
}
