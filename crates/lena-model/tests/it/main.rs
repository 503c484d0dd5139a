//! lena-model against its f64 reference and finite differences.

use lena_data::{Dataset, synthetic};
use lena_kernels::{Kernels, Memory};
use lena_model::{Linear, LinearKind, Rows, reference};
use lena_testkit::{close, directional_check, pseudo_random};

const KINDS: [LinearKind; 2] = [LinearKind::LogisticOva, LinearKind::Softmax];

fn data(n: usize, d: usize, c: usize) -> Dataset {
    synthetic::classification(n, d, c, 3.0, 11)
}

#[test]
fn matches_reference_across_block_and_chunk_edges() {
    // Sizes around SMALL = 16 (the minibatch path), BLOCK = 256 and CHUNK = 2048 boundaries.
    // Ten classes take `dot_block`'s 1 x 10 tile and the per-row loops' fixed length; twenty
    // take two tiles and the loops' general length; 37 features leave columns past the last
    // vector on every path.
    for ((&n, features), classes) in [1usize, 3, 15, 16, 17, 255, 256, 257, 2047, 2049, 4500]
        .iter()
        .flat_map(|n| [(n, 13), (n, 37)])
        .zip([4, 10, 20].into_iter().cycle())
    {
        let ds = data(n, features, classes);
        for kind in KINDS {
            for kernels in Kernels::available() {
                let m = Linear::new(kind, features, classes, 1e-2)
                    .unwrap()
                    .with_kernels(kernels);
                let w = pseudo_random(m.dim(), n as u64, 0.5);
                let mut ws = m.workspace(0);
                let mut g = vec![0.0; m.dim()];
                let loss = m.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws);
                let (rl, rg) = reference::linear_loss_grad(kind, &ds, &w, 1e-2);
                assert!(
                    close(loss, rl, 1e-5, 1e-6),
                    "{kind:?} n={n}: {loss} vs {rl}"
                );
                assert!(close(m.loss(&ds, Rows::All, &w, &mut ws), rl, 1e-5, 1e-6));
                let gmax = rg.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                for (i, (a, b)) in g.iter().zip(&rg).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() <= 1e-4 * gmax + 1e-6,
                        "{kind:?} n={n} grad[{i}] {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn minibatch_equals_gathered_full_batch() {
    // Listed rows (repeats included) give the floats of the same rows copied into a dataset
    // of their own: on the small path (3 rows: classes in pairs; 5 rows) and through the blocks the rows are gathered
    // into (218 rows per block at 300 features, 256 at 7), across chunks (2048 rows), with a
    // workspace made for fewer rows (it grows) and one made for them.
    for (n, features, rows) in [
        (300, 7, 3),
        (300, 7, 5),
        (300, 7, 300),
        (900, 300, 2100),
        (5000, 7, 4500),
    ] {
        let ds = data(n, features, 3);
        let idx: Vec<u32> = (0..rows as u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 % n as u32)
            .collect();
        let sub = ds.subset(&idx.iter().map(|&i| i as usize).collect::<Vec<_>>());
        for kernels in Kernels::available() {
            let m = Linear::new(LinearKind::LogisticOva, features, 3, 1e-3)
                .unwrap()
                .with_kernels(kernels);
            let w = pseudo_random(m.dim(), 5, 0.3);
            for mut ws in [m.workspace(2), m.workspace(rows)] {
                let (mut g1, mut g2) = (vec![0.0; m.dim()], vec![0.0; m.dim()]);
                let l1 = m.loss_grad(&ds, Rows::Subset(&idx), &w, &mut g1, &mut ws);
                let l2 = m.loss_grad(&sub, Rows::All, &w, &mut g2, &mut ws);
                assert_eq!(l1.to_bits(), l2.to_bits(), "{} rows: loss", rows);
                assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
                // The gradient without the loss's value: the same floats.
                let mut g3 = vec![f32::NAN; m.dim()];
                m.gradient(&ds, Rows::Subset(&idx), &w, &mut g3, &mut ws);
                assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()));
                // The loss alone sums ||w||^2 in its own pass (loss_grad sums it with the
                // gradient's), so it is compared with the loss alone of the gathered rows.
                assert_eq!(
                    m.loss(&ds, Rows::Subset(&idx), &w, &mut ws).to_bits(),
                    m.loss(&sub, Rows::All, &w, &mut ws).to_bits(),
                    "{} rows: loss alone",
                    rows
                );
            }
        }
    }
}

/// A set of 8-bit images read from its pixel bytes gives the floats of the same set without
/// them: minibatches on the small path (5 rows) and gathered in blocks (700 rows), every
/// instruction-set path.
#[test]
fn pixel_bytes_give_the_same_floats() {
    let (n, features) = (400, 49);
    let bytes: Vec<u8> = (0..n * features)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56)
        .map(|b| b as u8)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let with = Dataset::from_pixel_bytes(bytes.clone(), labels.clone(), features, 3).unwrap();
    let plain = Dataset::new(
        bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
        labels,
        features,
        3,
    )
    .unwrap();
    assert!(with.has_pixel_bytes() && !plain.has_pixel_bytes());
    for rows in [5, 700] {
        let idx: Vec<u32> = (0..rows as u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 % n as u32)
            .collect();
        for kind in KINDS {
            for kernels in Kernels::available() {
                let m = Linear::new(kind, features, 3, 1e-3)
                    .unwrap()
                    .with_kernels(kernels);
                let w = pseudo_random(m.dim(), 9, 0.3);
                let mut ws = m.workspace(rows);
                let (mut g1, mut g2) = (vec![0.0; m.dim()], vec![0.0; m.dim()]);
                let l1 = m.loss_grad(&with, Rows::Subset(&idx), &w, &mut g1, &mut ws);
                let l2 = m.loss_grad(&plain, Rows::Subset(&idx), &w, &mut g2, &mut ws);
                assert_eq!(l1.to_bits(), l2.to_bits(), "{kind:?} {rows} rows: loss");
                assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}

/// A minibatch's gradient in factored form describes the floats `gradient` and `loss_grad`
/// write: `linear_gradient_into` gives them bit for bit, and `ef_scan_linear` the norms of
/// `ef_scan` on them, for 1-8 rows read from floats and from pixel bytes, both kinds, every
/// instruction-set path; more rows (up to the small path's 16 and one past), or all of them,
/// are not handed on.
#[test]
fn factored_minibatch_gradients_are_the_written_ones() {
    let (n, features, classes) = (300, 37, 4);
    let bytes: Vec<u8> = (0..n * features)
        .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
    let pixels = Dataset::from_pixel_bytes(bytes, labels, features, classes).unwrap();
    let floats = data(n, features, classes);
    for set in [&pixels, &floats] {
        for rows in 1..=17usize {
            let idx: Vec<u32> = (0..rows as u32).map(|i| (i * 37 + 11) % n as u32).collect();
            for kind in KINDS {
                for k in Kernels::available() {
                    let m = Linear::new(kind, features, classes, 1e-3)
                        .unwrap()
                        .with_kernels(k);
                    let w = pseudo_random(m.dim(), 5, 0.3);
                    let mut ws = m.workspace(rows);
                    let (mut want, mut with_value) = (vec![0.0; m.dim()], vec![0.0; m.dim()]);
                    m.gradient(set, Rows::Subset(&idx), &w, &mut want, &mut ws);
                    m.loss_grad(set, Rows::Subset(&idx), &w, &mut with_value, &mut ws);
                    let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&want), bits(&with_value), "{kind:?}, {rows} rows");
                    let mut got = vec![f32::NAN; m.dim()];
                    let mut norms = None;
                    let e = pseudo_random(m.dim(), 6, 1.0);
                    let handed =
                        m.factored_gradient(set, Rows::Subset(&idx), &w, &mut ws, &mut |lg| {
                            k.linear_gradient_into(lg, &mut got);
                            norms =
                                Some(k.ef_scan_linear(Memory::Read(&e), 0.1, lg, &e, None, None));
                        });
                    assert_eq!(handed, rows <= 8, "{rows} rows");
                    if handed {
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{kind:?}, {rows} rows ({})",
                            k.name()
                        );
                        let scan = k.ef_scan(Memory::Read(&e), 0.1, &want, &e, None, None);
                        assert_eq!(norms, Some(scan), "{kind:?}, {rows} rows ({})", k.name());
                    }
                }
            }
        }
    }
    let m = Linear::new(LinearKind::Softmax, features, classes, 0.0).unwrap();
    let w = vec![0.0; m.dim()];
    let mut ws = m.workspace(0);
    assert!(!m.factored_gradient(&floats, Rows::All, &w, &mut ws, &mut |_| {}));
}

#[test]
fn finite_difference_gradient_check() {
    // 12 rows take the minibatch path, 120 the blocked matrix-product path.
    for (kind, n) in KINDS.into_iter().flat_map(|k| [(k, 12), (k, 120)]) {
        let ds = data(n, 9, 5);
        let m = Linear::new(kind, 9, 5, 1e-2).unwrap();
        let mut ws = m.workspace(n);
        for seed in 0..5 {
            let w = pseudo_random(m.dim(), seed, 0.5);
            let mut g = vec![0.0; m.dim()];
            m.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws);
            let u = pseudo_random(m.dim(), seed + 100, 1.0);
            let mut f = |x: &[f32]| reference::linear_loss_grad(kind, &ds, x, 1e-2).0;
            let chk = directional_check(&mut f, &w, &g, &u, 1e-2);
            assert!(chk.rel_err(1e-8) < 1e-3, "{kind:?} seed {seed}: {chk:?}");
            // And one coordinate at a time, bias included.
            for i in [0, 9, m.dim() - 1] {
                let mut e = vec![0.0; m.dim()];
                e[i] = 1.0;
                let chk = directional_check(&mut f, &w, &g, &e, 1e-2);
                assert!(chk.rel_err(1e-4) < 1e-3, "{kind:?} coord {i}: {chk:?}");
            }
        }
    }
}

#[test]
fn zero_parameters_give_known_loss_and_accuracy_counts() {
    let ds = data(50, 4, 10);
    let m = Linear::new(LinearKind::LogisticOva, 4, 10, 0.0).unwrap();
    let mut ws = m.workspace(50);
    let w = vec![0.0; m.dim()];
    let loss = m.loss(&ds, Rows::All, &w, &mut ws);
    assert!((loss - 10.0 * std::f64::consts::LN_2).abs() < 1e-6);
    // All scores tie: argmax is class 0, so accuracy is class 0's share.
    let share = ds.labels.iter().filter(|&&l| l == 0).count() as f64 / 50.0;
    assert_eq!(m.accuracy(&ds, &w, &mut ws), share);
    let s = Linear::new(LinearKind::Softmax, 4, 10, 0.0).unwrap();
    assert!((s.loss(&ds, Rows::All, &w, &mut ws) - 10f64.ln()).abs() < 1e-6);
}

#[test]
fn smoothness_bounds_gradient_lipschitz_ratio() {
    for kind in KINDS {
        let ds = data(400, 6, 3);
        let m = Linear::new(kind, 6, 3, 1e-3).unwrap();
        let l = m.smoothness(&ds, 200);
        let mut ws = m.workspace(400);
        let mut worst = 0.0f64;
        for seed in 0..20 {
            let a = pseudo_random(m.dim(), seed, 1.0);
            let b: Vec<f32> = a
                .iter()
                .zip(pseudo_random(m.dim(), seed + 50, 0.1))
                .map(|(x, y)| x + y)
                .collect();
            let (mut ga, mut gb) = (vec![0.0; m.dim()], vec![0.0; m.dim()]);
            m.loss_grad(&ds, Rows::All, &a, &mut ga, &mut ws);
            m.loss_grad(&ds, Rows::All, &b, &mut gb, &mut ws);
            let k = Kernels::detect();
            let ratio = (k.dist2_sq(&ga, &gb) as f64).sqrt() / (k.dist2_sq(&a, &b) as f64).sqrt();
            worst = worst.max(ratio);
        }
        assert!(
            worst <= l * 1.001,
            "{kind:?}: ratio {worst} exceeds L = {l}"
        );
        // The bound is not vacuous: within a factor 20 of what random pairs show.
        assert!(
            worst > l / 20.0,
            "{kind:?}: L = {l} is loose against {worst}"
        );
    }
}

#[test]
fn smoothness_matches_dense_eigenvalue() {
    // lambda_max of X~^T X~ / n computed independently with faer's self-adjoint eigensolver.
    let ds = data(200, 5, 2);
    let m = Linear::new(LinearKind::LogisticOva, 5, 2, 0.0).unwrap();
    let p = 6;
    let mut gram = faer::Mat::<f64>::zeros(p, p);
    for i in 0..ds.n_samples() {
        let mut x: Vec<f64> = ds.row(i).iter().map(|&v| v as f64).collect();
        x.push(1.0);
        for a in 0..p {
            for b in 0..p {
                gram[(a, b)] += x[a] * x[b] / 200.0;
            }
        }
    }
    let eig = gram.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
    let top = eig.iter().cloned().fold(f64::MIN, f64::max);
    let l = m.smoothness(&ds, 1000);
    assert!(close(l, 0.25 * top, 1e-4, 0.0), "{l} vs {}", 0.25 * top);
}

#[test]
fn bad_lambda_is_rejected_with_field_name() {
    let e = Linear::new(LinearKind::Softmax, 3, 2, -1.0)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "lambda must be a finite number >= 0, got -1");
    let e = Linear::new(LinearKind::Softmax, 3, 2, f32::NAN)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("lambda must be"), "{e}");
    assert!(
        "hinge"
            .parse::<LinearKind>()
            .unwrap_err()
            .contains("logistic_ova, softmax")
    );
}

/// `f` run in a pool of its own with `threads` threads.
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(f)
}

#[test]
fn result_independent_of_thread_count() {
    let ds = data(5000, 20, 10);
    let m = Linear::new(LinearKind::LogisticOva, 20, 10, 1e-3).unwrap();
    let w = pseudo_random(m.dim(), 1, 0.2);
    let run = |threads: usize| {
        in_pool(threads, || {
            let mut ws = m.workspace(0);
            let mut g = vec![0.0; m.dim()];
            let l = m.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws);
            (l, g)
        })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}
mod cnn;

/// Sparse rows like MNIST's (a multiple of 16 features, most of them 0), over more than one
/// chunk of rows: the full-batch loss and gradient from the nonzero values are the dense
/// kernels' bit for bit, for both kinds and 10 and 16 classes, with weights that make sums of
/// `-0.0`, with a weight that is not finite and with scores that overflow (redone densely);
/// the layout is built by a gradient's call and kept with the dataset; denser data is declined,
/// its floats the same.
#[test]
fn nonzero_products_give_the_dense_floats() {
    let (n, p) = (4500, 32);
    let make = |share: u64, c: usize| {
        let x: Vec<f32> = (0..n * p)
            .map(|i| {
                let r = (i as u64 ^ 0x5555).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                if r % 100 < share {
                    ((r >> 8) % 255 + 1) as f32 / 255.0
                } else {
                    0.0
                }
            })
            .collect();
        let labels = (0..n as u32).map(|i| i % c as u32).collect();
        Dataset::new(x, labels, p, c).unwrap()
    };
    // Only a gradient's call builds the layout; an evaluation uses it once built.
    let small = make(18, 10).head(40);
    let m = Linear::new(LinearKind::Softmax, p, 10, 1e-3).unwrap();
    let w = pseudo_random(m.dim(), 5, 0.2);
    let mut ws = m.workspace(0);
    m.loss(&small, Rows::All, &w, &mut ws);
    assert!(format!("{small:?}").contains("0 derived layouts"));
    m.loss_grad(&small, Rows::All, &w, &mut vec![0.0; m.dim()], &mut ws);
    let built = usize::from(Kernels::detect().has_nonzero_products());
    assert!(format!("{small:?}").contains(&format!("{built} derived layouts")));
    for c in [10, 16] {
        for (share, built) in [(18, true), (60, false)] {
            let ds = make(share, c);
            for kind in KINDS {
                let sparse = Linear::new(kind, p, c, 1e-3).unwrap();
                let dense = sparse.with_nonzero_products(false);
                let mut w = pseudo_random(sparse.dim(), 3, 0.2);
                for (round, tweak) in ["plain", "negative zeros", "infinite weight"]
                    .iter()
                    .enumerate()
                {
                    match round {
                        // Class 0's first sixteen weights: each lane's first product rounds to
                        // -0.0 for a row whose first values are tiny.
                        1 => w[..16].fill(-1e-38),
                        2 => w[p + 1 + 5] = f32::INFINITY,
                        _ => {}
                    }
                    let mut ds = ds.clone();
                    if round == 1 {
                        ds.features_mut()[..16].fill(1e-8);
                    }
                    let (mut ga, mut gb) = (vec![0.0; sparse.dim()], vec![0.0; sparse.dim()]);
                    let mut ws = sparse.workspace(0);
                    let la = sparse.loss_grad(&ds, Rows::All, &w, &mut ga, &mut ws);
                    let lb = dense.loss_grad(&ds, Rows::All, &w, &mut gb, &mut ws);
                    let what = format!("{kind:?}, {c} classes, {share}% nonzero, {tweak}");
                    assert_eq!(la.to_bits(), lb.to_bits(), "{what}: loss");
                    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{what}: gradient {i}");
                    }
                    let lv = sparse.loss(&ds, Rows::All, &w, &mut ws);
                    assert_eq!(
                        lv.to_bits(),
                        dense.loss(&ds, Rows::All, &w, &mut ws).to_bits()
                    );
                }
                let bytes = sparse.nonzero_layout_bytes(&ds);
                let taken = built && Kernels::detect().has_nonzero_products();
                assert_eq!(bytes.is_some(), taken, "{kind:?}, {share}%: layout");
                assert_eq!(dense.nonzero_layout_bytes(&ds), None);
                // One row's score overflows: its softmax derivatives are NaN, which the dense sum
                // carries into every column (a NaN times a zero value), so the chunk is redone
                // densely.
                let mut ds = ds.clone();
                for (i, row) in ds.features_mut().chunks_exact_mut(p).enumerate() {
                    row[..2].fill(if i == 7 { 1.0 } else { 0.0 });
                }
                let mut big = pseudo_random(sparse.dim(), 4, 0.2);
                big[..2].fill(f32::MAX);
                let (mut ga, mut gb) = (vec![0.0; sparse.dim()], vec![0.0; sparse.dim()]);
                let mut ws = sparse.workspace(0);
                let la = sparse.loss_grad(&ds, Rows::All, &big, &mut ga, &mut ws);
                let lb = dense.loss_grad(&ds, Rows::All, &big, &mut gb, &mut ws);
                if kind == LinearKind::Softmax {
                    assert!(
                        gb.iter().all(|v| v.is_nan()),
                        "softmax: NaN everywhere densely"
                    );
                }
                assert_eq!(la.to_bits(), lb.to_bits());
                assert!(ga.iter().zip(&gb).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}
