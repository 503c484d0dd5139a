//! The convolutional networks against their f64 reference, finite differences and MNIST.

use crate::in_pool;
use lena_data::{Dataset, mnist, synthetic};
use lena_model::{Cnn, CnnArch, Error, Model, Objective, Rows, reference};
use lena_testkit::{close, directional_check};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

fn images(n: usize, seed: u64) -> Dataset {
    let mut d = synthetic::classification(n, 784, 10, 3.0, seed);
    // Image-like values in [0, 1].
    for v in d.features_mut() {
        *v = (*v * 0.25 + 0.5).clamp(0.0, 1.0);
    }
    d
}

fn net(arch: CnnArch, seed: u64) -> (Cnn, Vec<f32>) {
    let cnn = Cnn::new(arch, 0.5, 1e-3).unwrap();
    let mut w = vec![0.0; cnn.dim()];
    cnn.init(&mut Xoshiro256PlusPlus::seed_from_u64(seed), &mut w);
    (cnn, w)
}

fn assert_grad_close(g: &[f32], r: &[f64], what: &str) {
    let gmax = r.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    for (i, (a, b)) in g.iter().zip(r).enumerate() {
        assert!(
            (f64::from(*a) - b).abs() <= 2e-4 * gmax + 1e-6,
            "{what}: grad[{i}] {a} vs {b} (max {gmax})"
        );
    }
}

#[test]
fn parameter_counts() {
    assert_eq!(Cnn::new(CnnArch::Small, 0.5, 0.0).unwrap().dim(), 21_840);
    // Forward: 10 x 25 x 24^2 + 20 x 250 x 8^2 + 50 x 320 + 10 x 50; backward: every weight
    // gradient, and every input gradient but the first convolution's.
    assert_eq!(
        Cnn::new(CnnArch::Small, 0.5, 0.0).unwrap().multiply_adds(),
        (480_500, 480_500 + 480_500 - 144_000)
    );
    assert_eq!(Cnn::new(CnnArch::Wide, 0.5, 0.0).unwrap().dim(), 1_199_882);
}

#[test]
fn small_network_matches_reference_with_and_without_dropout() {
    // Sizes around the block (6 samples) and chunk (64) edges.
    for &n in &[1usize, 5, 6, 7, 64, 65, 131] {
        let ds = images(n, n as u64);
        let (cnn, w) = net(CnnArch::Small, n as u64);
        let mut ws = cnn.workspace(0);
        let mut g = vec![0.0; cnn.dim()];
        for dropout in [None, Some(77u64)] {
            let loss = cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, dropout);
            let (rl, rg) =
                reference::cnn_loss_grad(CnnArch::Small, &ds, &w, 1e-3, dropout.map(|s| (0.5, s)));
            assert!(
                close(loss, rl, 1e-5, 1e-6),
                "n={n} {dropout:?}: {loss} vs {rl}"
            );
            assert_grad_close(&g, &rg, &format!("n={n} {dropout:?}"));
        }
        let (rl, _) = reference::cnn_loss_grad(CnnArch::Small, &ds, &w, 1e-3, None);
        assert!(close(cnn.loss(&ds, Rows::All, &w, &mut ws), rl, 1e-5, 1e-6));
    }
}

#[test]
fn wide_network_matches_reference() {
    let ds = images(3, 5);
    let (cnn, w) = net(CnnArch::Wide, 5);
    let mut ws = cnn.workspace(3);
    let mut g = vec![0.0; cnn.dim()];
    for dropout in [None, Some(3u64)] {
        let loss = cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, dropout);
        let (rl, rg) =
            reference::cnn_loss_grad(CnnArch::Wide, &ds, &w, 1e-3, dropout.map(|s| (0.5, s)));
        assert!(close(loss, rl, 1e-5, 1e-6), "{dropout:?}: {loss} vs {rl}");
        assert_grad_close(&g, &rg, &format!("wide {dropout:?}"));
    }
}

#[test]
fn finite_difference_check_of_the_f32_network() {
    // Directional derivatives of the fast network itself (dropout masks fixed by the seed).
    let ds = images(20, 8);
    let (cnn, w) = net(CnnArch::Small, 8);
    let mut ws = cnn.workspace(20);
    let mut g = vec![0.0; cnn.dim()];
    cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, Some(4));
    for seed in 0..4 {
        let u = lena_testkit::pseudo_random(cnn.dim(), seed, 1.0);
        let mut f = |w: &[f32]| {
            let mut scratch = vec![0.0; w.len()];
            cnn.loss_grad(&ds, Rows::All, w, &mut scratch, &mut ws, Some(4))
        };
        let c = directional_check(&mut f, &w, &g, &u, 1e-3);
        assert!(c.rel_err(1e-3) < 2e-2, "direction {seed}: {c:?}");
    }
}

#[test]
fn dropout_is_a_function_of_the_seed_only() {
    let ds = images(150, 2);
    let (cnn, w) = net(CnnArch::Small, 2);
    let idx: Vec<u32> = (0..150).rev().map(|i| i as u32 % 140).collect();
    let run = |threads: usize, seed: u64| {
        in_pool(threads, || {
            let mut ws = cnn.workspace(0);
            let mut g = vec![0.0; cnn.dim()];
            let l = cnn.loss_grad(&ds, Rows::Subset(&idx), &w, &mut g, &mut ws, Some(seed));
            (l, g)
        })
    };
    let a = run(1, 10);
    assert_eq!(a, run(2, 10), "thread count changed the result");
    assert_eq!(a, run(3, 10));
    assert_ne!(a.0, run(1, 11).0, "another seed, the same masks");
    // A minibatch by index equals the gathered rows as a dataset.
    let sub = ds.subset(&idx.iter().map(|&i| i as usize).collect::<Vec<_>>());
    let mut ws = cnn.workspace(0);
    let mut g = vec![0.0; cnn.dim()];
    let l = cnn.loss_grad(&sub, Rows::All, &w, &mut g, &mut ws, Some(10));
    assert_eq!((l, g), a);
}

/// Images read from their pixel bytes give the floats of the same images without them.
#[test]
fn pixel_bytes_give_the_same_floats() {
    let bytes: Vec<u8> = (0..70 * 784u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let labels: Vec<u32> = (0..70).map(|i| i % 10).collect();
    let with = Dataset::from_pixel_bytes(bytes.clone(), labels.clone(), 784, 10).unwrap();
    let plain = Dataset::new(
        bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
        labels,
        784,
        10,
    )
    .unwrap();
    let (cnn, w) = net(CnnArch::Small, 4);
    let idx: Vec<u32> = (0..70).map(|i| (i * 37 % 70) as u32).collect();
    let run = |d: &Dataset| {
        let mut ws = cnn.workspace(0);
        let mut g = vec![0.0; cnn.dim()];
        let l = cnn.loss_grad(d, Rows::Subset(&idx), &w, &mut g, &mut ws, Some(3));
        (l, g, cnn.loss(d, Rows::Subset(&idx[..9]), &w, &mut ws))
    };
    assert!(with.has_pixel_bytes());
    assert_eq!(run(&with), run(&plain));
}

/// A loss without a gradient takes its chunks in turns through as many workspaces as threads;
/// it equals, bit for bit, the loss of a gradient call (one workspace per chunk) on the same
/// rows, whatever the thread count, and so do the accuracies.
#[test]
fn loss_over_many_chunks_does_not_depend_on_threads_or_workspaces() {
    let ds = images(333, 4);
    let (cnn, w) = net(CnnArch::Small, 4);
    let run = |threads: usize| {
        in_pool(threads, || {
            let mut ws = cnn.workspace(0);
            let loss = cnn.loss(&ds, Rows::All, &w, &mut ws);
            let mut g = vec![0.0; cnn.dim()];
            let with_grad = cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, None);
            // The same workspace again, now holding every chunk's buffers.
            let again = cnn.loss(&ds, Rows::All, &w, &mut ws);
            (loss, with_grad, again, cnn.accuracy(&ds, &w, &mut ws))
        })
    };
    let one = run(1);
    assert_eq!(
        one.0.to_bits(),
        one.1.to_bits(),
        "loss vs loss of a gradient call"
    );
    assert_eq!(
        one.0.to_bits(),
        one.2.to_bits(),
        "loss in a grown workspace"
    );
    for threads in [2, 3, 4] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
}

#[test]
fn dropout_changes_training_loss_only() {
    let ds = images(100, 1);
    let (cnn, w) = net(CnnArch::Small, 1);
    let mut ws = cnn.workspace(0);
    let mut g = vec![0.0; cnn.dim()];
    let clean = cnn.loss(&ds, Rows::All, &w, &mut ws);
    assert_eq!(
        cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, None),
        clean
    );
    let noisy = cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, Some(1));
    assert!(noisy != clean && noisy.is_finite());
    // Rate 0: the seed changes nothing.
    let plain = Cnn::new(CnnArch::Small, 0.0, 1e-3).unwrap();
    assert_eq!(
        plain.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, Some(1)),
        clean
    );
}

#[test]
fn he_initialisation() {
    let (cnn, w) = net(CnnArch::Small, 42);
    let (_, w2) = net(CnnArch::Small, 42);
    assert_eq!(w, w2);
    // conv1: 250 weights uniform on +-sqrt(6/25), variance 2/25; then 10 zero biases.
    let conv1 = &w[..250];
    let var = conv1.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 250.0;
    assert!((var - 0.08).abs() < 0.02, "variance {var}");
    assert!(conv1.iter().all(|v| v.abs() <= (6.0f32 / 25.0).sqrt()));
    assert!(w[250..260].iter().all(|&b| b == 0.0));
    // fc1 (320 -> 50): variance 2/320.
    let fc1 = &w[5280..5280 + 16_000];
    let var = fc1.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 16_000.0;
    assert!((var - 2.0 / 320.0).abs() < 0.0005, "variance {var}");
    assert!(w[21_280..21_330].iter().all(|&b| b == 0.0));
    assert_eq!(cnn.dim(), w.len());
}

#[test]
fn bad_input_is_rejected() {
    match Cnn::new(CnnArch::Small, 1.0, 0.0) {
        Err(Error::BadParam(p)) => assert_eq!(p.field, "model.dropout"),
        other => panic!("{other:?}"),
    }
    let cnn = Cnn::new(CnnArch::Small, 0.5, 0.0).unwrap();
    let err = cnn
        .check_data(&synthetic::classification(5, 20, 3, 1.0, 1))
        .unwrap_err();
    assert!(
        err.to_string().contains("28 x 28") && err.to_string().contains("784"),
        "{err}"
    );
    let mut twelve = images(5, 1);
    twelve.n_classes = 12;
    let err = cnn.check_data(&twelve).unwrap_err();
    assert!(err.to_string().contains("10 outputs"), "{err}");
    assert!("cnn_wide".parse::<Objective>().is_ok());
    assert!(
        "resnet"
            .parse::<Objective>()
            .unwrap_err()
            .contains("cnn, cnn_wide")
    );
}

#[test]
fn sgd_on_an_mnist_slice_learns() {
    // 300 minibatch-SGD steps (32 samples, dropout on) on 2000 real MNIST images.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/mnist-mini");
    let (train, test) = mnist::load(std::path::Path::new(dir)).unwrap();
    let model = Model::new(Objective::Cnn, 784, 10, 0.0, 0.5, &[]).unwrap();
    let mut w = vec![0.0; model.dim()];
    model.init(&mut Xoshiro256PlusPlus::seed_from_u64(0), &mut w);
    let mut ws = model.workspace(32);
    let mut g = vec![0.0; model.dim()];
    let before = model.accuracy(&test, &w, &mut ws);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut batch = vec![0u32; 32];
    use rand::Rng;
    for t in 0..300u64 {
        for b in &mut batch {
            *b = rng.random_range(0..train.n_samples() as u32);
        }
        model.loss_grad(&train, Rows::Subset(&batch), &w, &mut g, &mut ws, Some(t));
        for (wi, gi) in w.iter_mut().zip(&g) {
            *wi -= 0.1 * gi;
        }
    }
    let after = model.accuracy(&test, &w, &mut ws);
    eprintln!("test accuracy {before:.3} -> {after:.3}");
    assert!(after > 0.7, "test accuracy {before} -> {after}");
}

/// The MLP (`model.objective = "mlp"`) against the f64 reference, around the block and chunk
/// edges, with dropout on and off, one and two hidden layers; and its parameter count.
#[test]
fn mlp_matches_reference_with_and_without_dropout() {
    assert_eq!(
        Cnn::mlp(&[200], 0.0, 0.0).unwrap().dim(),
        784 * 200 + 200 + 200 * 10 + 10
    );
    for hidden in [&[64][..], &[32, 16]] {
        for &n in &[1usize, 7, 64, 65, 131] {
            let ds = images(n, n as u64);
            let cnn = Cnn::mlp(hidden, 0.5, 1e-3).unwrap();
            assert_eq!(cnn.arch(), CnnArch::Mlp);
            let mut w = vec![0.0; cnn.dim()];
            cnn.init(&mut Xoshiro256PlusPlus::seed_from_u64(n as u64), &mut w);
            let mut ws = cnn.workspace(0);
            let mut g = vec![0.0; cnn.dim()];
            for dropout in [None, Some(5u64)] {
                let loss = cnn.loss_grad(&ds, Rows::All, &w, &mut g, &mut ws, dropout);
                let (rl, rg) =
                    reference::network_loss_grad(&cnn, &ds, &w, 1e-3, dropout.map(|s| (0.5, s)));
                assert!(
                    close(loss, rl, 1e-5, 1e-6),
                    "{hidden:?} n={n}: {loss} vs {rl}"
                );
                assert_grad_close(&g, &rg, &format!("{hidden:?} n={n} {dropout:?}"));
            }
        }
    }
    // Bad shapes name the field.
    for bad in [&[][..], &[0], &[1, 2, 3, 4, 5, 6]] {
        let e = Cnn::mlp(bad, 0.0, 0.0).unwrap_err().to_string();
        assert!(e.starts_with("model.hidden must be"), "{e}");
    }
}
