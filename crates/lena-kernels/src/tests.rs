//! Every kernel against its reference, at every length 0..=67 and proptest lengths, under both
//! every instruction set this CPU runs (x86-64-v4, x86-64-v3, pulp's scalar fallback).

use crate::{Kernels, reference};
use proptest::prelude::*;

const EPS: f64 = f32::EPSILON as f64;
/// Magnitudes swept by the length tests; products stay inside f32's normal range.
const SCALES: [f32; 6] = [0.0, 1e-15, 1e-3, 1.0, 1e3, 1e15];

fn paths() -> Vec<Kernels> {
    Kernels::available()
}

/// Deterministic pseudo-random vector (splitmix64), values in [-scale, scale].
/// How many of two slices' floats differ in their bits.
fn differing_bits(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// A convolution's shape from `(cin, cout, k, h, w, samples)`.
fn conv_shape(
    (cin, cout, k, h, w, samples): (usize, usize, usize, usize, usize, usize),
) -> crate::ConvShape {
    crate::ConvShape {
        cin,
        cout,
        k,
        h,
        w,
        samples,
    }
}

/// Each float's bits, for comparing results bit for bit (NaN payloads and signed zeros included).
fn bits(s: &[f32]) -> Vec<u32> {
    s.iter().map(|f| f.to_bits()).collect()
}

fn vector(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// Error bound for an f32 sum of `n` terms whose absolute values add up to `abs_sum`.
fn sum_bound(n: usize, abs_sum: f64) -> f64 {
    2.0 * (n as f64 + 8.0) * EPS * abs_sum + f64::from(f32::MIN_POSITIVE)
}

fn check_reductions(k: Kernels, x: &[f32], y: &[f32], v: &[f32], alpha: f32) {
    let n = x.len();
    let abs_xy: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let got = k.dot(x, y) as f64;
    let want = reference::dot(x, y);
    assert!(
        (got - want).abs() <= sum_bound(n, abs_xy),
        "dot n={n} {got} vs {want} ({})",
        k.name()
    );

    // dot_rows over 0..=9 rows (groups of four), each against the reference dot.
    let pool = [x, y, v];
    for nrows in 0..=9usize {
        let rows: Vec<&[f32]> = (0..nrows).map(|r| pool[(r + 1) % 3]).collect();
        let mut got = vec![f32::NAN; nrows];
        k.dot_rows(&rows, x, &mut got);
        for (r, g) in rows.iter().zip(&got) {
            let abs: f64 = r
                .iter()
                .zip(x)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let want = reference::dot(r, x);
            assert!(
                (*g as f64 - want).abs() <= sum_bound(n, abs),
                "dot_rows n={n} rows={nrows} {g} vs {want} ({})",
                k.name()
            );
        }
        // dot_rows2: each result bit-identical to dot_rows against the same vector.
        let (mut got0, mut got1) = (vec![f32::NAN; nrows], vec![f32::NAN; nrows]);
        k.dot_rows2(&rows, [x, v], [&mut got0, &mut got1]);
        let mut want1 = vec![f32::NAN; nrows];
        k.dot_rows(&rows, v, &mut want1);
        assert_eq!(
            bits(&got0),
            bits(&got),
            "dot_rows2 first n={n} rows={nrows}"
        );
        assert_eq!(
            bits(&got1),
            bits(&want1),
            "dot_rows2 second n={n} rows={nrows}"
        );
        // dot_rows_classes: every class of a strided w (its last odd class included) as
        // dot_rows2 for the pairs and dot_rows for the odd one, bit for bit.
        let stride = n + 3;
        let classes = 5;
        let wc: Vec<f32> = (0..classes * stride)
            .map(|i| y.get(i % n.max(1)).copied().unwrap_or(0.5) * (1.0 + i as f32 * 1e-3))
            .collect();
        let mut all = vec![f32::NAN; nrows * classes];
        k.dot_rows_classes(&rows, &wc, stride, classes, &mut all);
        // No classes: nothing to write (and no chunk of zero length).
        k.dot_rows_classes(&rows, &wc, stride, 0, &mut []);
        let class = |c: usize| &wc[c * stride..c * stride + n];
        for c in (0..classes).step_by(2) {
            let (mut a, mut b) = (vec![f32::NAN; nrows], vec![f32::NAN; nrows]);
            if c + 1 < classes {
                k.dot_rows2(&rows, [class(c), class(c + 1)], [&mut a, &mut b]);
            } else {
                k.dot_rows(&rows, class(c), &mut a);
            }
            for r in 0..nrows {
                assert_eq!(
                    all[r * classes + c].to_bits(),
                    a[r].to_bits(),
                    "dot_rows_classes n={n} rows={nrows} class {c}"
                );
                if c + 1 < classes {
                    assert_eq!(
                        all[r * classes + c + 1].to_bits(),
                        b[r].to_bits(),
                        "dot_rows_classes n={n} rows={nrows} class {}",
                        c + 1
                    );
                }
            }
        }
    }

    let want = reference::norm2_sq(x);
    let got = k.norm2_sq(x) as f64;
    assert!(
        (got - want).abs() <= sum_bound(n, want),
        "norm2_sq n={n} {got} vs {want}"
    );

    let want = reference::dist2_sq(x, y);
    let abs: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a.abs() as f64 + b.abs() as f64).powi(2))
        .sum();
    let got = k.dist2_sq(x, y) as f64;
    assert!(
        (got - want).abs() <= sum_bound(n, abs),
        "dist2_sq n={n} {got} vs {want}"
    );

    let want = reference::lin_dist2_sq(x, alpha, y, v);
    let abs: f64 = (0..n)
        .map(|i| (x[i].abs() as f64 + (alpha * y[i]).abs() as f64 + v[i].abs() as f64).powi(2))
        .sum();
    let got = k.lin_dist2_sq(x, alpha, y, v) as f64;
    assert!(
        (got - want).abs() <= sum_bound(n, abs),
        "lin_dist2_sq n={n} {got} vs {want}"
    );
}

fn check_updates(k: Kernels, x: &[f32], y: &[f32], v: &[f32], a: f32, b: f32) {
    let close = |got: &[f32], want: &[f32], mag: &dyn Fn(usize) -> f64, what: &str| {
        for i in 0..got.len() {
            let tol = 4.0 * EPS * mag(i) + f64::from(f32::MIN_POSITIVE);
            assert!(
                (got[i] as f64 - want[i] as f64).abs() <= tol,
                "{what} [{i}] {} vs {} ({})",
                got[i],
                want[i],
                k.name()
            );
        }
    };
    let (mut got, mut want) = (y.to_vec(), y.to_vec());
    k.axpy(a, x, &mut got);
    reference::axpy(a, x, &mut want);
    close(
        &got,
        &want,
        &|i| (a * x[i]).abs() as f64 + y[i].abs() as f64,
        "axpy",
    );

    let (mut got, mut want) = (y.to_vec(), y.to_vec());
    k.axpby(a, x, b, &mut got);
    reference::axpby(a, x, b, &mut want);
    close(
        &got,
        &want,
        &|i| (a * x[i]).abs() as f64 + (b * y[i]).abs() as f64,
        "axpby",
    );

    let (mut got, mut want) = (x.to_vec(), x.to_vec());
    k.scale(a, &mut got);
    reference::scale(a, &mut want);
    close(&got, &want, &|i| (a * x[i]).abs() as f64, "scale");

    let (mut got, mut want) = (x.to_vec(), x.to_vec());
    let ng = k.ef_update(&mut got, a, y, v) as f64;
    let nw = reference::ef_update(&mut want, a, y, v);
    let mag = |i: usize| x[i].abs() as f64 + (a * y[i]).abs() as f64 + v[i].abs() as f64;
    close(&got, &want, &mag, "ef_update");
    let abs: f64 = (0..x.len()).map(|i| mag(i).powi(2)).sum();
    assert!(
        (ng - nw).abs() <= sum_bound(x.len(), abs),
        "ef_update norm {ng} vs {nw}"
    );

    // ef_scan: norms against the reference, averages bit-equal to axpby, t to axpy's e + a y,
    // and a memory owing v the same scan as the memory it owes (u - v rounded), every
    // combination.
    let owed: Vec<f32> = x.iter().zip(v).map(|(x, v)| x + v).collect();
    let owed_e: Vec<f32> = owed.iter().zip(v).map(|(u, v)| u - v).collect();
    let mut owing_norms = Vec::new();
    for case in 0..16 {
        let (with1, with2) = (case & 1 == 1, case & 2 == 2);
        let kind = case / 4; // 0: read, 1: into, 2: owing, 3: into from the owed memory
        let (mut m1, mut m2) = (v.to_vec(), x.to_vec());
        let (mut w1, mut w2) = (v.to_vec(), x.to_vec());
        let mut t = vec![f32::NAN; x.len()];
        let mut u = owed.clone();
        let memory = match kind {
            0 => crate::Memory::Read(x),
            1 => crate::Memory::Into { e: x, out: &mut t },
            2 => crate::Memory::Owing(&mut u),
            _ => crate::Memory::Into {
                e: &owed_e,
                out: &mut t,
            },
        };
        let r = k.ef_scan(
            memory,
            a,
            y,
            v,
            with1.then(|| crate::Ema {
                x: &mut m1,
                a: 0.3 * a,
                b: 0.7,
            }),
            with2.then(|| crate::Ema {
                x: &mut m2,
                a: b,
                b: 0.25,
            }),
        );
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        if kind == 1 {
            let mut want = x.to_vec();
            k.axpy(a, y, &mut want);
            assert_eq!(
                bits(&t),
                bits(&want),
                "ef_scan t ({}, case {case})",
                k.name()
            );
        }
        // Owing v, the scan is the one of the memory it owes: norms, averages and t.
        let scan = (r.g_sq, r.innovation_sq, r.ema_sq, bits(&m1), bits(&m2));
        if kind == 2 {
            owing_norms.push((scan, bits(&u)));
        } else if kind == 3 {
            let (owing, u) = &owing_norms[case % 4];
            assert_eq!(owing, &scan, "ef_scan owing v ({}, case {case})", k.name());
            assert_eq!(
                u,
                &bits(&t),
                "ef_scan owing v: t ({}, case {case})",
                k.name()
            );
            continue;
        }
        let e: &[f32] = if kind == 2 { &owed_e } else { x };
        let lin = reference::lin_dist2_sq(e, a, y, v);
        let lin_abs: f64 = (0..x.len()).map(|i| mag(i).powi(2)).sum();
        assert!((r.innovation_sq as f64 - lin).abs() <= sum_bound(x.len(), lin_abs));
        let gw = reference::norm2_sq(y);
        assert!((r.g_sq as f64 - gw).abs() <= sum_bound(x.len(), gw));
        if with1 {
            k.axpby(0.3 * a, y, 0.7, &mut w1);
            assert_eq!(m1, w1, "ef_scan average 1 ({})", k.name());
            let nw = reference::norm2_sq(&w1);
            assert!((r.ema_sq[0] as f64 - nw).abs() <= sum_bound(x.len(), nw));
        } else {
            assert_eq!(r.ema_sq[0], 0.0);
        }
        if with2 {
            k.axpby(b, y, 0.25, &mut w2);
            assert_eq!(m2, w2, "ef_scan average 2 ({})", k.name());
            let nw = reference::norm2_sq(&w2);
            assert!((r.ema_sq[1] as f64 - nw).abs() <= sum_bound(x.len(), nw));
        }
    }

    // A zero memory over v: the scan of the shared zeros into a vector of its own, with v
    // read from its own slice (norms, averages and t bit for bit), t written over v.
    for case in 0..4 {
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let scan = |over: bool| {
            let (mut m1, mut m2) = (v.to_vec(), x.to_vec());
            let (mut held, mut t) = (v.to_vec(), vec![f32::NAN; x.len()]);
            let (memory, v_arg) = if over {
                (crate::Memory::ZeroOver(&mut held), &[][..])
            } else {
                let e = crate::zeros(x.len());
                (crate::Memory::Into { e, out: &mut t }, v)
            };
            let ema = |x, a, b| crate::Ema { x, a, b };
            let e1 = (case & 1 == 1).then(|| ema(&mut m1[..], 0.3 * a, 0.7));
            let e2 = (case & 2 == 2).then(|| ema(&mut m2[..], b, 0.25));
            let r = k.ef_scan(memory, a, y, v_arg, e1, e2);
            let t = if over { held } else { t };
            let norms = [r.g_sq, r.innovation_sq, r.ema_sq[0], r.ema_sq[1]];
            (bits(&norms), bits(&m1), bits(&m2), bits(&t))
        };
        assert_eq!(
            scan(true),
            scan(false),
            "ef_scan over v ({}, case {case})",
            k.name()
        );
    }

    // Every row count 0..=9 crosses the groups of four the kernel takes rows in.
    let pool = [x, y, v];
    for nrows in 0..=9usize {
        let rows: Vec<&[f32]> = (0..nrows).map(|r| pool[r % 3]).collect();
        let c: Vec<f32> = (0..nrows).map(|r| a * (r as f32 - 3.5)).collect();
        let (mut got, mut want) = (vec![7.0; x.len()], vec![0.0; x.len()]);
        let base_sq = k.lin_comb(&mut got, b, y, &c, &rows);
        let nw = reference::norm2_sq(y);
        assert!(
            (base_sq as f64 - nw).abs() <= sum_bound(y.len(), nw),
            "lin_comb base norm {base_sq} vs {nw}"
        );
        reference::lin_comb(&mut want, b, y, &c, &rows);
        let mag = |i: usize| {
            (nrows as f64 + 1.0)
                * ((b * y[i]).abs() as f64
                    + c.iter()
                        .zip(&rows)
                        .map(|(ck, r)| (ck * r[i]).abs() as f64)
                        .sum::<f64>())
        };
        close(&got, &want, &mag, "lin_comb");
        if nrows <= 4 {
            // lin_comb2: each output bit-identical to lin_comb's with its base and coefficients.
            let c1: Vec<f32> = c.iter().map(|ck| 0.5 - ck).collect();
            let (mut o0, mut o1) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
            let sq = k.lin_comb2([&mut o0, &mut o1], b, [y, v], [&c, &c1], &rows);
            let mut want1 = vec![0.0; x.len()];
            k.lin_comb(&mut want1, b, v, &c1, &rows);
            assert_eq!(bits(&o0), bits(&got), "lin_comb2 first rows={nrows}");
            assert_eq!(bits(&o1), bits(&want1), "lin_comb2 second rows={nrows}");
            let (mut p0, mut p1) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
            k.lin_comb2_without_norms([&mut p0, &mut p1], b, [y, v], [&c, &c1], &rows);
            assert_eq!(
                bits(&p0),
                bits(&o0),
                "lin_comb2_without_norms first rows={nrows}"
            );
            assert_eq!(
                bits(&p1),
                bits(&o1),
                "lin_comb2_without_norms second rows={nrows}"
            );
            // Outputs starting at every offset from a vector boundary, as a gradient's class
            // rows of 785 floats do: the same bits wherever the stores' boundaries fall.
            // Nothing around them is written (the vector paths mask their first and last
            // elements' stores).
            for shift in 0..=16 {
                let mut buf = vec![f32::NAN; 2 * x.len() + 20];
                let (q0, q1) = buf[shift..].split_at_mut(x.len());
                let q1 = &mut q1[shift % 3..][..x.len()];
                k.lin_comb2_without_norms([&mut *q0, &mut *q1], b, [y, v], [&c, &c1], &rows);
                assert_eq!(bits(q0), bits(&o0), "first, shift {shift} rows={nrows}");
                assert_eq!(bits(q1), bits(&o1), "second, shift {shift} rows={nrows}");
                let (n, gap) = (x.len(), shift % 3);
                let outside = buf[..shift]
                    .iter()
                    .chain(&buf[shift + n..shift + n + gap])
                    .chain(&buf[shift + 2 * n + gap..]);
                assert!(
                    outside.into_iter().all(|f| f.is_nan()),
                    "written outside the outputs, shift {shift} rows={nrows}"
                );
            }
            for (s, base) in sq.iter().zip([y, v]) {
                let nw = reference::norm2_sq(base);
                assert!(
                    (*s as f64 - nw).abs() <= sum_bound(base.len(), nw),
                    "lin_comb2 norm"
                );
            }
        }
    }
}

#[test]
fn every_length_every_scale_both_paths() {
    for k in paths() {
        for n in 0..=67 {
            for (si, &s) in SCALES.iter().enumerate() {
                let seed = (n * 31 + si) as u64;
                let x = vector(n, seed, s);
                let y = vector(n, seed + 1000, s);
                let v = vector(n, seed + 2000, s);
                check_reductions(k, &x, &y, &v, 0.37);
                check_updates(k, &x, &y, &v, -1.25, 0.5);
            }
        }
    }
}

#[test]
fn all_equal_and_zero_vectors() {
    for k in paths() {
        for n in [0, 1, 7, 8, 63, 64, 65, 7850] {
            let x = vec![0.1f32; n];
            let z = vec![0.0f32; n];
            check_reductions(k, &x, &x, &x, 1.0);
            check_reductions(k, &z, &z, &z, 2.0);
            check_updates(k, &x, &x, &z, 1.0, 1.0);
            assert_eq!(k.norm2_sq(&z), 0.0);
            assert_eq!(k.dist2_sq(&x, &x), 0.0);
        }
    }
}

#[test]
fn detected_path_is_named() {
    let k = Kernels::detect();
    assert!(k.f32_lanes() >= 1);
    assert_eq!(Kernels::scalar().f32_lanes(), 1);
    assert_eq!(Kernels::scalar().name(), "scalar");
}

/// Each named path has its lane count, the widest the CPU runs is the one detected (unless
/// `LENA_SIMD` chose another), and on x86-64 every machine of this project runs v3.
#[test]
fn every_available_path_has_its_width() {
    let all = Kernels::available();
    assert_eq!(all.last().unwrap().f32_lanes(), 1);
    for (name, lanes) in [("x86-64-v4", 16), ("x86-64-v3", 8), ("scalar", 1)] {
        if let Some(k) = Kernels::named(name) {
            assert_eq!(k.f32_lanes(), lanes, "{name}");
            assert!(k.name().starts_with(name), "{name}: {}", k.name());
        }
    }
    if std::env::var_os("LENA_SIMD").is_none() {
        assert_eq!(Kernels::detect().f32_lanes(), all[0].f32_lanes());
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(Kernels::named("x86-64-v3").is_some());
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512cd")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
    {
        assert!(
            Kernels::named("x86-64-v4").is_some(),
            "AVX-512 CPU without the v4 path"
        );
    }
    assert!(Kernels::named("avx9").is_none());
}

#[test]
#[should_panic(expected = "length mismatch")]
fn mismatched_lengths_panic() {
    Kernels::detect().dot(&[1.0, 2.0], &[1.0]);
}

proptest! {
    #[test]
    fn random_lengths_match_reference(
        n in 0usize..3000,
        seed in any::<u64>(),
        log_scale in -10i32..10,
        a in -4.0f32..4.0,
        b in -4.0f32..4.0,
    ) {
        let s = 10f32.powi(log_scale);
        let x = vector(n, seed, s);
        let y = vector(n, seed ^ 1, s);
        let v = vector(n, seed ^ 2, s);
        for k in paths() {
            check_reductions(k, &x, &y, &v, a);
            check_updates(k, &x, &y, &v, a, b);
        }
    }
}

#[test]
fn special_functions_match_reference() {
    for k in paths() {
        for n in 0..=67 {
            for &scale in &[0.0f32, 1e-6, 0.1, 1.0, 5.0, 30.0, 100.0] {
                let t = vector(n, n as u64 + 77, scale);
                let mut got = t.clone();
                let loss = k.softplus_sigmoid(&mut got);
                let (rl, rs) = reference::softplus_sigmoid(&t);
                assert!(
                    (loss - rl).abs() <= 1e-6 * rl.abs() + 1e-30,
                    "softplus sum n={n} {loss} vs {rl}"
                );
                for i in 0..n {
                    let err = (got[i] as f64 - rs[i]).abs();
                    assert!(
                        err <= 4e-7 * rs[i].abs() + 1e-37,
                        "sigmoid({}) {} vs {}",
                        t[i],
                        got[i],
                        rs[i]
                    );
                }
                let mut e = t.clone();
                k.exp(&mut e);
                for (i, r) in reference::exp(&t).iter().enumerate() {
                    if t[i].abs() < 87.0 {
                        assert!(
                            (e[i] as f64 - r).abs() <= 4e-7 * r,
                            "exp({}) {} vs {r}",
                            t[i],
                            e[i]
                        );
                    }
                }
            }
        }
        // Tiny softplus values keep their relative precision (no log1p cancellation).
        let mut t = vec![-40.0f32, -80.0, -20.0];
        let loss = k.softplus_sigmoid(&mut t);
        let (rl, _) = reference::softplus_sigmoid(&[-40.0, -80.0, -20.0]);
        assert!((loss - rl).abs() <= 1e-6 * rl, "{loss} vs {rl}");
    }
}

#[test]
fn exp_is_bit_identical_to_the_cast_form_on_every_path() {
    let mut x: Vec<f32> = (-100 * 256..=100 * 256).map(|i| i as f32 / 256.0).collect();
    x.extend((0..4000).map(|i| -87.5 + i as f32 * 4.4e-4));
    x.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -0.0,
        f32::MIN_POSITIVE,
        -1e-40,
        f32::MAX,
        f32::MIN,
    ]);
    for k in paths() {
        let mut got = x.clone();
        k.exp(&mut got);
        for (&xi, &g) in x.iter().zip(&got) {
            let want = crate::special::exp_by_cast(xi);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{}: exp({xi}) = {g}, the cast form gives {want}",
                k.name()
            );
        }
    }
}

#[test]
fn axpy_into_zero_equals_scale() {
    for k in paths() {
        let g = vector(1000, 5, 3.0);
        let mut a = vec![0.0f32; 1000];
        k.axpy(0.3, &g, &mut a);
        let mut b = g.clone();
        k.scale(0.3, &mut b);
        let bad = differing_bits(&a, &b);
        assert_eq!(
            bad,
            0,
            "{}: fma(a, x, 0) != a * x in {bad} places",
            k.name()
        );
    }
}

/// The block products against their references, for row, class and column counts around
/// every tile edge (2 rows, 5 classes, 1-2 vectors of 8 or 16 lanes) on every path: the scores
/// within the dot's rounding bound, the accumulation bit-identical to row-order fused adds
/// (it does not depend on the lane count), with or without rows to prefetch meanwhile.
#[test]
fn block_products_match_reference_at_every_tile_edge() {
    for p in [1usize, 7, 8, 15, 16, 17, 31, 32, 33, 48, 64, 100, 784] {
        for c in [1usize, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 20] {
            for n in [0usize, 1, 2, 3, 5] {
                let stride = p + 1;
                let x = vector(n * p, (p * 31 + c * 7 + n) as u64, 1.0);
                let w = vector(c * stride, (p + c) as u64, 1.0);
                let d = vector(n * c, (n + 3 * c) as u64, 1.0);
                let g0 = vector(c * stride, 99, 1.0);
                let want_z = reference::dot_block(&x, p, &w, stride, c);
                let mut want_g = g0.clone();
                reference::add_outer_block(&mut want_g, stride, c, &d, &x, p);
                for k in paths() {
                    let mut z = vec![f32::NAN; n * c];
                    assert_eq!(
                        k.with_requests_ahead(true)
                            .dot_block(&x, p, &w, stride, c, &mut z, &x),
                        0
                    );
                    for (i, (got, want)) in z.iter().zip(&want_z).enumerate() {
                        let bound = 2.0 * p as f64 * EPS * (p as f64).sqrt() + 1e-6;
                        assert!(
                            (f64::from(*got) - want).abs() <= bound,
                            "{} p={p} c={c} n={n} z[{i}]: {got} vs {want}",
                            k.name()
                        );
                    }
                    let mut g = g0.clone();
                    k.add_outer_block(&mut g, stride, c, &d, &x, p, &[]);
                    assert_eq!(g, want_g, "{} p={p} c={c} n={n}", k.name());
                    // With rows to prefetch (a hint: the same result), shorter and longer
                    // than a cache line's floats.
                    for (ahead, on) in [
                        (&w[..w.len().min(5)], true),
                        (&w[..], true),
                        (&w[..], false),
                    ] {
                        let mut g = g0.clone();
                        k.with_requests_ahead(on)
                            .add_outer_block(&mut g, stride, c, &d, &x, p, ahead);
                        assert_eq!(g, want_g, "{} p={p} c={c} n={n} ahead {on}", k.name());
                    }
                }
            }
        }
    }
}

/// Ten accumulators summed at once (by a transposing tree on AVX-512) give each the
/// bits pulp's `reduce_sum_f32s` gives it, on every path; the lanes' magnitudes span 2^-20 to
/// 2^20, so that another order of the adds or a class read from the wrong lane shows.
#[test]
fn sums10_equals_reduce_sum_on_every_path() {
    struct Check(Vec<f32>);
    impl pulp::WithSimd for Check {
        type Output = ();
        fn with_simd<S: pulp::Simd>(self, simd: S) {
            let lanes = S::F32_LANES;
            let v = S::as_simd_f32s(&self.0[..10 * lanes]).0;
            let acc: [S::f32s; 10] = v.try_into().expect("ten vectors");
            let got = crate::block::sums10(simd, &acc);
            for (k, (g, a)) in got.iter().zip(&acc).enumerate() {
                let want = simd.reduce_sum_f32s(*a);
                assert_eq!(g.to_bits(), want.to_bits(), "class {k}, {lanes} lanes");
            }
        }
    }
    for seed in 0..50u64 {
        let mut x = vector(160, seed, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= 2f32.powi(((i * 7 + seed as usize) % 41) as i32 - 20);
        }
        for k in paths() {
            k.run(Check(x.clone()));
        }
    }
}

/// A block of rows scored at once (from 8 rows on, through the interleaved panel and in
/// passes over its columns, each row of the first half paired with the row half a block on and
/// an odd block's last row alone) gives the same bits as each row scored alone, on every path: for
/// one group of ten classes, two groups, and a group plus remainder classes, with rows of one
/// pass, several passes, and a tail past the last vector.
#[test]
fn dot_block_scores_a_block_as_its_rows_one_by_one() {
    for p in [7usize, 8, 100, 784, 1000, 2051] {
        for c in [9usize, 10, 11, 20, 23] {
            for n in [7usize, 8, 9, 30, 33, 83] {
                let stride = p + 3;
                let x = vector(n * p, (p + 5 * c + n) as u64, 1.0);
                let w = vector(c * stride, (2 * p + c) as u64, 1.0);
                let want_z = reference::dot_block(&x, p, &w, stride, c);
                for k in paths() {
                    let mut z = vec![f32::NAN; n * c];
                    k.dot_block(&x, p, &w, stride, c, &mut z, &[]);
                    // With rows to bring into L2 (a hint: the same bits), fewer and more than
                    // the block's pairs, and a part of a row: at most one whole row per pair,
                    // exactly that through the panel (8 rows, ten classes, a vector of columns).
                    // Without requests (`Kernels::requests_ahead` off), none brought.
                    for (ahead_rows, on) in
                        [(1, true), (n / 2, true), (n + 1, true), (n + 1, false)]
                    {
                        let ahead = &x[..(ahead_rows * p + p / 2).min(x.len())];
                        let mut again = vec![f32::NAN; n * c];
                        let brought = k
                            .with_requests_ahead(on)
                            .dot_block(&x, p, &w, stride, c, &mut again, ahead);
                        assert_eq!(differing_bits(&z, &again), 0, "{} ahead", k.name());
                        let most = (n / 2).min(ahead.len() / p) * p;
                        let panel = n >= 8 && c >= 10 && p >= k.f32_lanes();
                        let want = if panel && on { most } else { 0 };
                        assert_eq!(brought, want, "{} p={p} c={c} n={n}", k.name());
                    }
                    for (i, (zi, xi)) in z.chunks(c).zip(x.chunks(p)).enumerate() {
                        let mut one = vec![f32::NAN; c];
                        k.dot_block(xi, p, &w, stride, c, &mut one, &[]);
                        let same = zi.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{} p={p} c={c} n={n} row {i}: {zi:?} vs {one:?}",
                            k.name()
                        );
                    }
                    let bound = 2.0 * p as f64 * EPS * (p as f64).sqrt() + 1e-6;
                    for (got, want) in z.iter().zip(&want_z) {
                        assert!(
                            (f64::from(*got) - want).abs() <= bound,
                            "{} p={p}",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// The server's block sum is exact: the same rounded products and sums as the reference, bit
/// for bit, at every tile edge (lengths around 4 vectors of 16 and 8 lanes) and row count,
/// with and without a unit scale, on every path.
#[test]
fn sum_rows_is_bit_identical_to_the_reference() {
    for k in paths() {
        for n in [
            0, 1, 7, 8, 15, 16, 31, 63, 64, 65, 127, 128, 200, 1023, 1024,
        ] {
            for m in [0, 1, 2, 5, 17] {
                let rows: Vec<Vec<f32>> = (0..m).map(|r| vector(n, 11 + r as u64, 4.0)).collect();
                let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
                for scale in [1.0f32, 0.05, -0.3] {
                    let start = vector(n, 7, 1.0);
                    let (mut got, mut want) = (start.clone(), start);
                    k.sum_rows(&mut got, scale, &rows);
                    reference::sum_rows(&mut want, scale, &rows);
                    let bad = differing_bits(&got, &want);
                    assert_eq!(bad, 0, "{} n={n} m={m} scale={scale}", k.name());
                }
            }
        }
    }
}

/// The direct convolution is exact: the reference's fused sums in the same order, bit for bit,
/// on every path, for output widths around one and two vectors of 8 and 16 lanes, tile edges
/// in the output channels (1-11) and both networks' layer shapes.
#[test]
fn conv_valid_is_bit_identical_to_the_reference() {
    let shapes = [
        (1, 10, 5, 28, 28, 3),
        (10, 20, 5, 12, 12, 2),
        (1, 32, 3, 28, 28, 1),
        (32, 7, 3, 26, 26, 1),
        (2, 11, 3, 10, 19, 2),
        (3, 6, 2, 5, 9, 4),
        (1, 1, 1, 1, 1, 1),
        (2, 3, 4, 4, 40, 1),
        (1, 9, 1, 3, 17, 2),
    ];
    for k in paths() {
        for (i, &shape) in shapes.iter().enumerate() {
            let s = conv_shape(shape);
            let x = vector(s.input_len(), 3 + i as u64, 2.0);
            let wt = vector(s.cout * s.kk(), 5 + i as u64, 0.5);
            let bias = vector(s.cout, 7 + i as u64, 1.0);
            let (mut got, mut want) = (vec![f32::NAN; s.output_len()], vec![0.0; s.output_len()]);
            k.conv_valid(s, &x, &wt, &bias, &mut got);
            reference::conv_valid(s, &x, &wt, &bias, &mut want);
            let bad = differing_bits(&got, &want);
            assert_eq!(bad, 0, "{} {s:?}", k.name());
        }
    }
}

/// `dense` is the reference bit for bit on every path: rows 1-13 (tile edges at 6), outputs
/// around one and two vectors of 8 and 16 lanes, both networks' layer shapes, and sums longer
/// than one piece.
#[test]
fn dense_is_bit_identical_to_the_reference() {
    let shapes = [
        (320, 50),
        (50, 10),
        (128, 10),
        (9216, 3),
        (1, 1),
        (7, 8),
        (13, 9),
        (5, 16),
        (3, 17),
        (1030, 33),
    ];
    for k in paths() {
        for (i, &(input, output)) in shapes.iter().enumerate() {
            for rows in [1usize, 2, 5, 6, 7, 12, 13] {
                let x = vector(rows * input, 3 + i as u64, 2.0);
                let wt = vector(input * output, 5 + i as u64, 0.5);
                let bias = vector(output, 7 + i as u64, 1.0);
                let (mut got, mut want) = (vec![f32::NAN; rows * output], vec![0.0; rows * output]);
                k.dense(&x, input, &wt, &bias, &mut got);
                reference::dense(&x, input, &wt, &bias, &mut want);
                let bad = differing_bits(&got, &want);
                assert_eq!(bad, 0, "{} {rows} x {input} -> {output}", k.name());
            }
        }
    }
}

/// `conv_weight_grad` is the reference bit for bit on every path whose lanes hold a kernel
/// row: the paper's first layer over 1 to 7 samples (one piece of 512 positions and several),
/// channel and kernel-row counts off the tile edges, and outputs ending at the input's end;
/// on 16 lanes, side-5 kernels take the packed tiles (three kernel rows a vector, two vectors a
/// tile, the last alone when they are odd) in groups of 10, 5 and 1 channels, small planes among
/// them, the paper's second layer too.
#[test]
fn conv_weight_grad_is_bit_identical_to_the_reference() {
    let shapes = [
        (1, 10, 5, 28, 28, 1),
        (1, 10, 5, 28, 28, 7),
        (1, 17, 5, 28, 28, 2),
        (1, 3, 5, 9, 11, 3),
        (1, 6, 5, 5, 5, 40),
        (10, 20, 5, 12, 12, 3),
        (3, 7, 5, 9, 9, 2),
        (2, 3, 5, 12, 12, 2),
        (3, 5, 3, 7, 9, 3),
        (1, 1, 1, 1, 1, 1),
        (2, 4, 4, 6, 30, 1),
    ];
    for k in paths() {
        for (i, &shape) in shapes.iter().enumerate() {
            let s = conv_shape(shape);
            if s.k > k.f32_lanes() {
                continue;
            }
            let x = vector(s.input_len(), 3 + i as u64, 2.0);
            let dy = vector(s.output_len(), 5 + i as u64, 1.0);
            let g0 = vector(s.cout * s.kk(), 7 + i as u64, 1.0);
            let (mut got, mut want) = (g0.clone(), g0);
            k.conv_weight_grad(s, &x, &dy, &mut got);
            reference::conv_weight_grad(s, &x, &dy, &mut want);
            let bad = differing_bits(&got, &want);
            assert_eq!(bad, 0, "{} {s:?}", k.name());
        }
    }
}

/// `product_tn` is the reference bit for bit on every path: output rows around the tile edge
/// of 5, columns around one and two vectors of 8 and 16 lanes, depths 1 to a piece.
#[test]
fn product_tn_is_bit_identical_to_the_reference() {
    for k in paths() {
        for (i, &(depth, m, n)) in [
            (20, 250, 384),
            (20, 250, 64),
            (1, 1, 1),
            (3, 7, 9),
            (512, 6, 17),
            (10, 11, 33),
            (4, 5, 16),
        ]
        .iter()
        .enumerate()
        {
            let a = vector(depth * m, 3 + i as u64, 1.0);
            let b = vector(depth * n, 5 + i as u64, 2.0);
            let (mut got, mut want) = (vec![f32::NAN; m * n], vec![0.0; m * n]);
            k.product_tn(depth, &a, &b, &mut got);
            reference::product_tn(depth, &a, &b, &mut want);
            assert_eq!(
                differing_bits(&got, &want),
                0,
                "{} {depth} {m} {n}",
                k.name()
            );
        }
    }
}

/// Cache sizes as Linux's sysfs writes them; anything else is not a size.
#[test]
fn cache_sizes_parse_as_sysfs_writes_them() {
    use crate::block::parse_cache_size;
    assert_eq!(parse_cache_size("48K\n"), Some(48 << 10));
    assert_eq!(parse_cache_size("32K"), Some(32 << 10));
    assert_eq!(parse_cache_size("2M"), Some(2 << 20));
    assert_eq!(parse_cache_size("512"), Some(512));
    assert_eq!(parse_cache_size("K"), None);
    assert_eq!(parse_cache_size("big"), None);
}

/// `axpby(a, x, b, y)`, and `lin_comb(out, b, y, [a], [x])` into another output, are
/// `scale(b, y)` then `axpy(a, x, y)` bit for bit (the product `b y` rounded before the fused
/// multiply-add), on every path, the tail included: the models' gradient adds its penalty to
/// the scaled sum of its chunks in one pass on that ground.
#[test]
fn axpby_and_lin_comb_are_scale_then_axpy_bit_for_bit() {
    for k in paths() {
        for n in [0usize, 1, 7, 16, 33, 7850] {
            let x = vector(n, 5, 1.0);
            let y = vector(n, 6, 30.0);
            for (a, b) in [(1e-3f32, 1.0f32 / 30.0), (0.5, 1.0), (0.0, 1.0 / 3000.0)] {
                let mut fused = y.clone();
                k.axpby(a, &x, b, &mut fused);
                let mut two = y.clone();
                k.scale(b, &mut two);
                k.axpy(a, &x, &mut two);
                // One row into another output: lin_comb(out, b, y, [a], [x]).
                let mut apart = vec![f32::NAN; n];
                k.lin_comb(&mut apart, b, &y, &[a], &[&x]);
                for (what, got) in [("axpby", &fused), ("lin_comb", &apart)] {
                    let same = got
                        .iter()
                        .zip(&two)
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "{what}: {} n={n} a={a} b={b}", k.name());
                }
            }
        }
    }
}

/// `LineAligned` puts blocks of `MIN_SIZE` bytes or more on a line and smaller ones where the
/// system does, keeps a block's bytes through a realloc within and across `MIN_SIZE` (either
/// way), and zeroes what `alloc_zeroed` gives.
#[test]
fn line_aligned_places_large_blocks_on_a_line_and_keeps_bytes_through_realloc() {
    use crate::LineAligned;
    use std::alloc::{GlobalAlloc, Layout};
    let a = LineAligned;
    let on_line = |p: *mut u8| (p as usize).is_multiple_of(LineAligned::LINE);
    for size in [1, 100, 4095, 4096, 31_400, 1 << 20] {
        let layout = Layout::from_size_align(size, 4).unwrap();
        // SAFETY: a nonzero size; the block is freed with its layout below.
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(!p.is_null());
        if size >= LineAligned::MIN_SIZE {
            assert!(on_line(p), "{size} bytes at {p:?}");
        }
        // SAFETY: `p` holds `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        assert!(bytes.iter().all(|&b| b == 0), "{size} bytes zeroed");
        // SAFETY: from `alloc_zeroed` with `layout`.
        unsafe { a.dealloc(p, layout) };
    }
    // Sizes crossing MIN_SIZE up and down, and moving within it either side.
    let sizes = [100, 31_400, 200, 50_000, 8_000, 4_096, 4_095, 3, 70_000];
    let mut layout = Layout::from_size_align(sizes[0], 4).unwrap();
    // SAFETY: a nonzero size.
    let mut p = unsafe { a.alloc(layout) };
    let fill = |p: *mut u8, n: usize| {
        for i in 0..n {
            // SAFETY: `p` holds at least `n` bytes.
            unsafe { p.add(i).write((i % 251) as u8) };
        }
    };
    fill(p, layout.size());
    for &size in &sizes[1..] {
        let kept = layout.size().min(size);
        // SAFETY: `p` came from `a` with `layout`; `size` is nonzero.
        p = unsafe { a.realloc(p, layout, size) };
        assert!(!p.is_null());
        // SAFETY: `p` holds `size >= kept` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, kept) };
        assert!(
            bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
            "{} -> {size} bytes kept",
            layout.size()
        );
        if size >= LineAligned::MIN_SIZE {
            assert!(on_line(p), "{size} bytes after realloc at {p:?}");
        }
        layout = Layout::from_size_align(size, 4).unwrap();
        fill(p, size);
    }
    // SAFETY: `p` came from `a` with `layout`.
    unsafe { a.dealloc(p, layout) };
}

/// A kernel's floats do not depend on where its slices lie: the same values 0 to 15 floats
/// past a line give the same bits (so `LineAligned` never changes a result).
#[test]
fn kernels_give_the_same_bits_wherever_the_slices_lie() {
    let n = 7850;
    let (e, g, v, m) = (
        vector(n, 1, 1.0),
        vector(n, 2, 1.0),
        vector(n, 3, 1.0),
        vector(n, 4, 1.0),
    );
    for k in paths() {
        let mut first = None;
        for off in 0..16 {
            // Each vector at `off` floats past the start of its own buffer, itself on a line
            // or not as the allocator placed it: every offset mod 16 occurs for some `off`.
            let at = |x: &[f32]| {
                let mut buf = vec![0.0f32; n + 16];
                buf[off..off + n].copy_from_slice(x);
                buf
            };
            let (e, g, v, mut m, mut out) = (at(&e), at(&g), at(&v), at(&m), vec![0.0; n + 16]);
            let r = k.ef_scan(
                crate::Memory::Into {
                    e: &e[off..off + n],
                    out: &mut out[off..off + n],
                },
                0.05,
                &g[off..off + n],
                &v[off..off + n],
                Some(crate::Ema {
                    x: &mut m[off..off + n],
                    a: 0.05,
                    b: 0.9,
                }),
                None,
            );
            let dot = k.dot(&e[off..off + n], &g[off..off + n]);
            let got = (
                [r.g_sq, r.innovation_sq, r.ema_sq[0], dot].map(f32::to_bits),
                bits(&m[off..off + n]),
                bits(&out[off..off + n]),
            );
            match &first {
                None => first = Some(got),
                Some(want) => assert_eq!(&got, want, "{} at {off} floats", k.name()),
            }
        }
    }
}

/// `lin_comb_classes` writes every class's features bit for bit as `lin_comb` does class by
/// class, and leaves each class's slots past its features (a gradient's bias) untouched, on
/// every path: every row count 1..=16 (one pass where `lin_comb` takes four rows at a time),
/// row lengths either side of the lanes, strides that put each class anywhere on a line.
#[test]
fn lin_comb_classes_is_lin_comb_class_by_class() {
    for k in paths() {
        for n in 1..=16usize {
            for (p, stride, classes) in [
                (1, 2, 3),
                (7, 9, 2),
                (16, 17, 3),
                (33, 35, 4),
                (784, 785, 10),
            ] {
                let seed = (n * 1000 + p) as u64;
                let rows: Vec<Vec<f32>> = (0..n).map(|r| vector(p, seed + r as u64, 1.0)).collect();
                let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
                let d = (classes - 1) * stride + p + 1;
                let w = vector(d, seed + 100, 1e3);
                let coef = vector(classes * n, seed + 200, 1e-3);
                let b = 0.37;
                let mut got = vec![f32::NAN; d];
                k.lin_comb_classes(&mut got, stride, b, &w, &coef, &rows);
                for h in 0..classes {
                    let mut want = vec![0.0f32; p];
                    let at = h * stride;
                    k.lin_comb(
                        &mut want,
                        b,
                        &w[at..at + p],
                        &coef[h * n..(h + 1) * n],
                        &rows,
                    );
                    assert_eq!(
                        bits(&got[at..at + p]),
                        bits(&want),
                        "class {h}, {n} rows, p {p} ({})",
                        k.name()
                    );
                    let gap = (at + p..((h + 1) * stride).min(d)).map(|i| got[i]);
                    assert!(
                        gap.into_iter().all(f32::is_nan),
                        "a slot past the features written"
                    );
                }
            }
        }
    }
}

/// A linear gradient in factored form: `linear_gradient_into` writes each weight as one product
/// and fused multiply-adds in row order (the chain spelled out here in scalar code) and each
/// bias as given, and `ef_scan_linear` returns the norms, averages and `t` of `ef_scan`
/// on those values, bit for bit, on every path: 1-16 rows, feature counts either side of the
/// lanes (so vectors cross biases anywhere), one to ten classes, with and without a penalty,
/// with each combination of averages and memory kinds, and non-finite values passed through.
#[test]
fn a_linear_gradient_formed_in_the_scan_is_the_one_written() {
    for k in paths() {
        for n in 1..=16usize {
            for (p, classes) in [
                (1, 3),
                (7, 2),
                (15, 1),
                (16, 3),
                (17, 4),
                (33, 2),
                (784, 10),
            ] {
                let seed = (n * 1000 + p) as u64;
                let rows: Vec<Vec<f32>> = (0..n).map(|r| vector(p, seed + r as u64, 1.0)).collect();
                let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..]).collect();
                let d = classes * (p + 1);
                let w = vector(d, seed + 100, 1e2);
                let mut coef = vector(classes * n, seed + 200, 1e-2);
                if n == 5 && p == 17 {
                    coef[0] = f32::INFINITY;
                }
                let bias = vector(classes, seed + 300, 1.0);
                for lambda in [0.0, 1e-3] {
                    let lg = crate::LinearGradient {
                        lambda,
                        w: &w,
                        rows: &rows,
                        coef: &coef,
                        bias: &bias,
                    };
                    let mut g = vec![f32::NAN; d];
                    k.linear_gradient_into(&lg, &mut g);
                    let want: Vec<f32> = (0..d)
                        .map(|j| {
                            let (class, f) = (j / (p + 1), j % (p + 1));
                            if f == p {
                                return bias[class];
                            }
                            let mut acc = lambda * w[j];
                            for (i, x) in rows.iter().enumerate() {
                                acc = coef[class * n + i].mul_add(x[f], acc);
                            }
                            acc
                        })
                        .collect();
                    assert_eq!(bits(&g), bits(&want), "{n} rows, p {p} ({})", k.name());
                    let (e, v, m0) = (
                        vector(d, seed + 400, 1.0),
                        vector(d, seed + 500, 1.0),
                        vector(d, seed + 600, 1.0),
                    );
                    for case in 0..8 {
                        let scan = |formed: bool| {
                            let (mut m1, mut m2, mut out) = (m0.clone(), m0.clone(), vec![0.0; d]);
                            let (mut u, mut held) = (e.clone(), v.clone());
                            let ema = |x| crate::Ema { x, a: 0.05, b: 0.9 };
                            let e1 = (case & 1 == 1).then(|| ema(&mut m1[..]));
                            let e2 = (case == 2 || case == 5).then(|| ema(&mut m2[..]));
                            let memory = match case / 2 {
                                0 => crate::Memory::Read(&e),
                                1 => crate::Memory::Into {
                                    e: &e,
                                    out: &mut out,
                                },
                                2 => crate::Memory::Owing(&mut u),
                                _ => crate::Memory::ZeroOver(&mut held),
                            };
                            let v: &[f32] = if case / 2 == 3 { &[] } else { &v };
                            let r = if formed {
                                k.ef_scan_linear(memory, 0.05, &lg, v, e1, e2)
                            } else {
                                k.ef_scan(memory, 0.05, &g, v, e1, e2)
                            };
                            let norms = [r.g_sq, r.innovation_sq, r.ema_sq[0], r.ema_sq[1]];
                            let t = bits(&out);
                            let held = bits(&held);
                            (
                                norms.map(f32::to_bits),
                                bits(&m1),
                                bits(&m2),
                                t,
                                bits(&u),
                                held,
                            )
                        };
                        assert_eq!(
                            scan(true),
                            scan(false),
                            "{n} rows, p {p}, case {case} ({})",
                            k.name()
                        );
                    }
                }
            }
        }
    }
}

/// Intel family 6 model 167 told from its `cpuid` words (the requests ahead default off there
/// only, and the AVX-512 scan keeps its checked loop there only): its signature's model is the
/// extended model's high bits with the low ones, and the vendor counts.
#[test]
fn intel_model_167_told_from_cpuid() {
    let words = |s: &[u8; 12]| {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        // EBX, EDX, ECX: the string's first, second and third four bytes.
        [w(0), w(4), w(8)]
    };
    let (intel, amd) = (words(b"GenuineIntel"), words(b"AuthenticAMD"));
    // Family 6, model 0xA7 = 167 (extended model 0xA, model 7), stepping 1.
    assert!(crate::intel_model_167_on(intel, 0x000A_0671));
    // Model 0xCF = 207, model 7 without its extended bits, and the same signature on AMD.
    assert!(!crate::intel_model_167_on(intel, 0x000C_06F2));
    assert!(!crate::intel_model_167_on(intel, 0x0000_0671));
    assert!(!crate::intel_model_167_on(amd, 0x000A_0671));
    // AMD Zen 4: family 0xF + 0xA, model 0x11.
    assert!(!crate::intel_model_167_on(amd, 0x00A1_0F11));
    // A context's setting overrides the default either way.
    let k = Kernels::detect();
    assert!(k.with_requests_ahead(true).requests_ahead());
    assert!(!k.with_requests_ahead(false).requests_ahead());
}

/// Pooling and its adjoint on every path, bit for bit the reference's: values from a few
/// levels (ties common) with signed zeros and NaNs, random values, planes with odd rows and
/// columns and widths on either side of a vector's eight windows; nothing past the pooled
/// values written, every float of the adjoint's output written.
#[test]
fn pooling_and_its_adjoint_match_the_reference() {
    let levels = [-0.0f32, 0.0, 1.0, -1.0, 2.5, f32::NAN];
    let shapes = [
        (3, 24, 24),
        (5, 8, 8),
        (2, 5, 7),
        (1, 2, 3),
        (1, 1, 4),
        (4, 6, 10),
        (2, 2, 2),
        (1, 3, 34),
        (2, 4, 33),
        (1, 2, 16),
        (3, 0, 4),
    ];
    for k in paths() {
        for (s, &(planes, h, w)) in shapes.iter().enumerate() {
            for tied in [true, false] {
                let raw = vector(planes * h * w, 7 + s as u64, 1.0);
                let x: Vec<f32> = if tied {
                    raw.iter()
                        .map(|v| levels[((v + 1.0) * 2.99) as usize % levels.len()])
                        .collect()
                } else {
                    raw
                };
                let (want, want_am) = reference::max_pool2(planes, h, w, &x);
                let n = want.len();
                let (mut y, mut am) = (vec![7.0f32; n + 3], vec![9u8; n + 3]);
                k.max_pool2(planes, h, w, &x, &mut y, Some(&mut am));
                let case = format!("{planes} x {h} x {w} tied {tied} {}", k.name());
                assert_eq!(bits(&y[..n]), bits(&want), "maxima, {case}");
                assert_eq!(am[..n], want_am[..], "positions, {case}");
                assert!(
                    y[n..].iter().all(|&v| v == 7.0) && am[n..] == [9; 3],
                    "{case}"
                );
                let mut values = vec![7.0f32; n + 3];
                k.max_pool2(planes, h, w, &x, &mut values, None);
                assert_eq!(bits(&values[..n]), bits(&want), "maxima alone, {case}");

                let dy: Vec<f32> = vector(n, 11 + s as u64, 1.0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 7 == 3 { -0.0 } else { v })
                    .collect();
                let positions: Vec<u8> = (0..n).map(|i| (i * 5 % 4) as u8).collect();
                for am in [&want_am, &positions] {
                    let want = reference::max_pool2_adjoint(planes, h, w, &dy, am);
                    let mut dx = vec![f32::NAN; planes * h * w + 3];
                    k.max_pool2_adjoint(planes, h, w, &dy, am, &mut dx);
                    let end = want.len();
                    assert_eq!(bits(&dx[..end]), bits(&want), "adjoint, {case}");
                    assert!(
                        dx[end..].iter().all(|v| v.is_nan()),
                        "adjoint's end, {case}"
                    );
                }
            }
        }
    }
}

/// Row sums on every path are the reference's (`Iterator::sum`, from `-0.0` in order) bit for
/// bit: every row count up to 40 (groups of sixteen and eight and their remainders), lengths
/// around a block of sixteen columns, rows of signed zeros and accumulators of signed zeros.
#[test]
fn row_sums_match_the_reference() {
    for k in paths() {
        for rows in 0..41 {
            for len in [0, 1, 7, 15, 16, 17, 33, 64] {
                let mut m = vector(rows * len, (rows * 100 + len) as u64, 1e3);
                if rows > 2 && len > 0 {
                    m[..len].fill(-0.0);
                    m[len..2 * len].fill(0.0);
                }
                let start: Vec<f32> = (0..rows)
                    .map(|c| [-0.0, 0.0, 1.5][c % 3] * f32::from(u8::from(c % 5 != 4)))
                    .collect();
                let mut want = start.clone();
                reference::add_row_sums(&mut want, &m, len);
                let mut got = start;
                k.add_row_sums(&mut got, &m, len);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "rows {rows} len {len} {}",
                    k.name()
                );
            }
        }
    }
}

/// `cpu`'s text from `cpuid`'s words: the extended family added to family 15 (AMD Zen 4 is 25),
/// the extended model taken for families 6 and 15, and the brand string trimmed.
#[test]
fn cpu_description_reads_cpuid_words() {
    let words = crate::vendor;
    let brand = |s: &str| {
        let mut b = [0u8; 48];
        b[..s.len()].copy_from_slice(s.as_bytes());
        b
    };
    assert_eq!(
        crate::cpu_description(words(b"AuthenticAMD"), 0x00A1_0F11, &brand("AMD EPYC ")),
        "AMD EPYC (AuthenticAMD, family 25, model 17)"
    );
    assert_eq!(
        crate::cpu_description(
            words(b"GenuineIntel"),
            0x000C_06F2,
            &brand("  Intel(R) Xeon(R) Platinum")
        ),
        "Intel(R) Xeon(R) Platinum (GenuineIntel, family 6, model 207)"
    );
    // A family below 15 keeps its base model; no brand string names the architecture.
    assert_eq!(
        crate::cpu_description(words(b"AuthenticAMD"), 0x0001_0501, &[0; 48]),
        "x86-64 (AuthenticAMD, family 5, model 0)"
    );
    assert!(!crate::cpu().is_empty());
}
