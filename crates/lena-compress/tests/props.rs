//! Conformance of every compressor: round trip, bit count, contraction / unbiasedness, EF.

use lena_compress::{
    Compressor, CompressorParams, ErrorFeedback, Identity, IndexCoding, Message, Qsgd, QsgdCoding,
    QsgdNorm, RandK, ScaledSign, TopK,
};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn all(d: usize) -> Vec<Box<dyn Compressor>> {
    let k = (d / 3).max(1);
    [
        CompressorParams::Identity,
        CompressorParams::qsgd(1, 0, QsgdNorm::L2),
        CompressorParams::qsgd(7, 5, QsgdNorm::Max),
        // Levels 8 to 12 have fields past 15, which the decoder's multi-code table leaves to
        // its one-code path: both paths within a window.
        CompressorParams::qsgd(12, 40, QsgdNorm::Max),
        CompressorParams::Qsgd {
            levels: 300,
            bucket: 7,
            norm: QsgdNorm::L2,
            coding: QsgdCoding::Fixed,
        },
        // Levels up to 2^16: Elias-gamma codes longer than 32 bits are split in two fields.
        CompressorParams::qsgd(1 << 16, 0, QsgdNorm::Max),
        CompressorParams::top_k(k),
        CompressorParams::TopK {
            k,
            index_coding: IndexCoding::U32,
        },
        CompressorParams::RandK { k, scaled: false },
        CompressorParams::RandK { k, scaled: true },
        CompressorParams::ScaledSign,
    ]
    .iter()
    .map(|p| p.check(d).unwrap())
    .collect()
}

fn norm2(x: &[f32]) -> f64 {
    x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum()
}

proptest! {
    #[test]
    fn decode_of_encode_is_exactly_the_compressed_vector(
        x in proptest::collection::vec(-100.0f32..100.0, 1..200), seed in any::<u64>()
    ) {
        let d = x.len();
        for c in all(d) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let (mut out, mut back) = (vec![0.0f32; d], vec![1.0f32; d]);
            let mut msg = Message::default();
            c.compress(&x, &mut rng, &mut out, &mut msg);
            prop_assert_eq!(msg.bytes().len() as u64, msg.bits().div_ceil(8), "{}", c.name());
            c.decode(&msg, &mut back).unwrap();
            for (a, b) in out.iter().zip(&back) {
                prop_assert_eq!(a.to_bits(), b.to_bits(), "{}", c.name());
            }
        }
    }

    #[test]
    fn deterministic_contraction_holds_on_every_input(x in proptest::collection::vec(-1e3f32..1e3, 1..300)) {
        let d = x.len();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        for p in [CompressorParams::top_k((d / 4).max(1)), CompressorParams::ScaledSign] {
            let c = p.check(d).unwrap();
            let mut out = vec![0.0f32; d];
            c.compress(&x, &mut rng, &mut out, &mut Message::default());
            let err: f64 = x.iter().zip(&out).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum();
            let bound = (1.0 - c.delta().unwrap()) * norm2(&x);
            prop_assert!(err <= bound * (1.0 + 1e-5) + 1e-9, "{}: {} > {}", c.name(), err, bound);
        }
    }

    #[test]
    fn top_k_keeps_the_largest(x in proptest::collection::vec(-1e3f32..1e3, 2..100), k in 1usize..50) {
        let d = x.len();
        let k = k.min(d);
        let c = CompressorParams::top_k(k).check(d).unwrap();
        let mut out = vec![0.0f32; d];
        c.compress(&x, &mut Xoshiro256PlusPlus::seed_from_u64(0), &mut out, &mut Message::default());
        let kept: Vec<usize> = (0..d).filter(|&i| out[i] != 0.0 || x[i] == 0.0 && out[i] == 0.0).collect();
        let min_kept = (0..d).filter(|&i| out[i] != 0.0).map(|i| x[i].abs()).fold(f32::INFINITY, f32::min);
        let max_dropped = (0..d).filter(|&i| out[i] == 0.0 && x[i] != 0.0).map(|i| x[i].abs()).fold(0.0f32, f32::max);
        prop_assert!(kept.len() >= k.min(x.iter().filter(|v| **v != 0.0).count()));
        prop_assert!(max_dropped <= min_kept || min_kept == f32::INFINITY);
    }

    /// e' = e + x - decode(msg), every step, for every compressor.
    #[test]
    fn error_feedback_identity(xs in proptest::collection::vec(proptest::collection::vec(-10.0f32..10.0, 16), 1..20)) {
        for c in all(16) {
            let mut ef = ErrorFeedback::new(16);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
            let (mut sent, mut total, mut mag) = (vec![0.0f64; 16], vec![0.0f64; 16], vec![0.0f64; 16]);
            for x in &xs {
                let (mut out, mut dec) = (vec![0.0f32; 16], vec![0.0f32; 16]);
                let mut msg = Message::default();
                ef.compress(c.as_ref(), x, &mut rng, &mut out, &mut msg);
                c.decode(&msg, &mut dec).unwrap();
                for i in 0..16 {
                    sent[i] += f64::from(dec[i]);
                    total[i] += f64::from(x[i]);
                    let e = f64::from(ef.memory()[i]);
                    mag[i] += f64::from(dec[i].abs()) + f64::from(x[i].abs()) + e.abs();
                    // f32 rounding of each step's e + x - C(m), accumulated.
                    let tol = 4.0 * f64::from(f32::EPSILON) * mag[i] + 1e-30;
                    prop_assert!((sent[i] + e - total[i]).abs() <= tol, "{}", c.name());
                }
            }
        }
    }

    /// Compressing `m` formed over the memory (`compress_held`, as LENA's scan forms it) is
    /// `compress_scaled` bit for bit, every step, for every compressor: what is sent, what the
    /// receiver decodes and the memory left.
    #[test]
    fn compressing_the_held_sum_is_compressing_the_scaled_one(xs in proptest::collection::vec(proptest::collection::vec(-10.0f32..10.0, 16), 1..12), alpha in 0.01f32..2.0) {
        let k = lena_kernels::Kernels::detect();
        for c in all(16) {
            let (mut scaled, mut held) = (ErrorFeedback::new(16), ErrorFeedback::new(16));
            let (mut rng_a, mut rng_b) = (Xoshiro256PlusPlus::seed_from_u64(5), Xoshiro256PlusPlus::seed_from_u64(5));
            for x in &xs {
                let (mut out_a, mut out_b, mut scratch) = (vec![0.0f32; 16], vec![f32::NAN; 16], vec![0.0f32; 16]);
                let (mut msg_a, mut msg_b) = (Message::default(), Message::default());
                scaled.compress_scaled(c.as_ref(), alpha, x, &mut rng_a, &mut scratch, &mut out_a, &mut msg_a);
                k.axpy(alpha, x, held.memory_mut());
                held.compress_held(c.as_ref(), &mut rng_b, &mut out_b, &mut msg_b);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&out_a), bits(&out_b), "{}", c.name());
                prop_assert_eq!(&msg_a, &msg_b, "{}", c.name());
                prop_assert_eq!(bits(scaled.memory()), bits(held.memory()), "{}", c.name());
            }
        }
    }

    #[test]
    fn decoders_reject_garbage_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..80), d in 1usize..40) {
        for c in all(d) {
            let bits = 8 * bytes.len() as u64;
            let msg = Message::from_bytes(bytes.clone(), bits).unwrap();
            let _ = c.decode(&msg, &mut vec![0.0f32; d]);
        }
    }
}

/// Unbiased compressors average to x, within a bound derived from their variance factor:
/// over n draws, the mean's squared error is at most omega ||x||^2 / n in expectation; we allow
/// 5x that (a fixed seed makes the test deterministic).
#[test]
fn unbiased_compressors_average_to_x_and_respect_omega() {
    let d = 50;
    let x: Vec<f32> = (0..d)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
        .collect();
    let n = 4000;
    for c in all(d).into_iter().filter(|c| c.unbiased()) {
        let omega = c.omega().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
        let (mut mean, mut var) = (vec![0.0f64; d], 0.0f64);
        let mut out = vec![0.0f32; d];
        for _ in 0..n {
            c.compress(&x, &mut rng, &mut out, &mut Message::default());
            for i in 0..d {
                mean[i] += f64::from(out[i]) / n as f64;
                var += (f64::from(out[i]) - f64::from(x[i])).powi(2) / n as f64;
            }
        }
        let nx = norm2(&x);
        assert!(
            var <= omega * nx * 1.05 + 1e-9,
            "{}: variance {var} > omega ||x||^2 = {}",
            c.name(),
            omega * nx
        );
        let err: f64 = mean
            .iter()
            .zip(&x)
            .map(|(m, v)| (m - f64::from(*v)).powi(2))
            .sum();
        assert!(
            err <= 5.0 * omega * nx / n as f64 + 1e-9,
            "{}: bias {err}",
            c.name()
        );
    }
}

#[test]
fn rand_k_contracts_in_expectation() {
    let d = 40;
    let x: Vec<f32> = (0..d).map(|i| (i as f32 - 20.0) * 0.1).collect();
    let c = CompressorParams::RandK {
        k: 10,
        scaled: false,
    }
    .check(d)
    .unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut out = vec![0.0f32; d];
    let n = 3000;
    let mut err = 0.0;
    for _ in 0..n {
        c.compress(&x, &mut rng, &mut out, &mut Message::default());
        err += x
            .iter()
            .zip(&out)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    let bound = (1.0 - c.delta().unwrap()) * norm2(&x);
    assert!(err <= bound * 1.03, "{err} vs {bound}");
}

#[test]
fn bit_counts_match_the_documented_encodings() {
    let d = 1000;
    let x: Vec<f32> = (0..d).map(|i| i as f32).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut out = vec![0.0f32; d];
    let bits = |p: CompressorParams, rng: &mut Xoshiro256PlusPlus, out: &mut [f32]| {
        let mut m = Message::default();
        p.check(d).unwrap().compress(&x, rng, out, &mut m);
        m.bits()
    };
    assert_eq!(bits(CompressorParams::Identity, &mut rng, &mut out), 32_000);
    // ceil(log2 1000) = 10 bits per index + 32 per value
    assert_eq!(
        bits(CompressorParams::top_k(10), &mut rng, &mut out),
        10 * 42
    );
    assert_eq!(
        bits(
            CompressorParams::RandK {
                k: 10,
                scaled: false
            },
            &mut rng,
            &mut out
        ),
        64 + 320
    );
    assert_eq!(
        bits(CompressorParams::ScaledSign, &mut rng, &mut out),
        32 + 1000
    );
    // Top-k with 32-bit indices, as many papers count.
    let t32 = CompressorParams::TopK {
        k: 10,
        index_coding: IndexCoding::U32,
    };
    assert_eq!(bits(t32, &mut rng, &mut out), 10 * 64);
    // Fixed-width QSGD, s = 4: 3 bits per level + sign; 2 buckets of 512 and 488 -> 2 norms.
    let fixed = CompressorParams::Qsgd {
        levels: 4,
        bucket: 512,
        norm: QsgdNorm::L2,
        coding: QsgdCoding::Fixed,
    };
    assert_eq!(bits(fixed, &mut rng, &mut out), 2 * 32 + 1000 * 4);
    // Elias-gamma QSGD: per coordinate 2 floor(log2(l + 1)) + 1 bits, plus a sign if l > 0.
    let q = CompressorParams::qsgd(4, 512, QsgdNorm::L2);
    let got = bits(q, &mut rng, &mut out);
    let mut want = 2 * 32;
    for (b, (xb, ob)) in x.chunks(512).zip(out.chunks(512)).enumerate() {
        let norm = xb.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        for &o in ob {
            let level = (f64::from(o.abs()) / (norm / 4.0)).round() as u64;
            assert!(level <= 4, "bucket {b}: level {level}");
            want += 2 * u64::from(63 - (level + 1).leading_zeros()) + 1 + u64::from(level > 0);
        }
    }
    assert_eq!(got, want);
    assert!(
        got < 2 * 32 + 1000 * 4,
        "Elias gamma is the shorter code here"
    );
}

#[test]
fn parameters_are_checked() {
    let e = CompressorParams::top_k(0)
        .check(10)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "compressor.k must be in 1..=10, got 0");
    assert!(CompressorParams::qsgd(0, 0, QsgdNorm::L2).check(3).is_err());
    assert!(
        CompressorParams::RandK {
            k: 11,
            scaled: true
        }
        .check(10)
        .is_err()
    );
}

/// Each compressor built directly is the one the parameters build: the same name, contract,
/// output and encoding on the same input and random stream; and the same errors.
#[test]
fn direct_constructors_match_the_params_route() {
    let d = 300;
    let direct: Vec<(Box<dyn Compressor>, CompressorParams)> = vec![
        (Box::new(Identity::new(d)), CompressorParams::Identity),
        (
            Box::new(Qsgd::new(d, 7, 5, QsgdNorm::Max, QsgdCoding::EliasGamma).unwrap()),
            CompressorParams::qsgd(7, 5, QsgdNorm::Max),
        ),
        (
            Box::new(Qsgd::new(d, 300, 0, QsgdNorm::L2, QsgdCoding::Fixed).unwrap()),
            CompressorParams::Qsgd {
                levels: 300,
                bucket: 0,
                norm: QsgdNorm::L2,
                coding: QsgdCoding::Fixed,
            },
        ),
        (
            Box::new(TopK::new(d, 17, IndexCoding::U32).unwrap()),
            CompressorParams::TopK {
                k: 17,
                index_coding: IndexCoding::U32,
            },
        ),
        (
            Box::new(RandK::new(d, 9, true).unwrap()),
            CompressorParams::RandK { k: 9, scaled: true },
        ),
        (Box::new(ScaledSign::new(d)), CompressorParams::ScaledSign),
    ];
    let x: Vec<f32> = (0..d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    for (a, p) in direct {
        let b = p.check(d).unwrap();
        assert_eq!(a.name(), b.name());
        assert_eq!(
            (a.unbiased(), a.omega(), a.delta()),
            (b.unbiased(), b.omega(), b.delta())
        );
        let run = |c: &dyn Compressor| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
            let (mut out, mut msg) = (vec![0.0; d], Message::default());
            c.compress(&x, &mut rng, &mut out, &mut msg);
            (out, msg)
        };
        assert_eq!(run(&*a), run(&*b), "{}", a.name());
    }
    let as_params = |r: Result<Box<dyn Compressor>, _>| r.err().unwrap();
    assert_eq!(
        TopK::new(10, 0, IndexCoding::Log2).err().unwrap(),
        as_params(CompressorParams::top_k(0).check(10))
    );
    assert_eq!(
        RandK::new(10, 11, false).err().unwrap(),
        as_params(
            CompressorParams::RandK {
                k: 11,
                scaled: false
            }
            .check(10)
        )
    );
    assert_eq!(
        Qsgd::new(10, 1 << 25, 0, QsgdNorm::L2, QsgdCoding::Fixed)
            .err()
            .unwrap(),
        as_params(CompressorParams::qsgd(1 << 25, 0, QsgdNorm::L2).check(10))
    );
}

/// Rand-k picks k distinct coordinates, ascending, each with probability k / d.
#[test]
fn rand_k_picks_uniform_k_subsets() {
    use rand::SeedableRng;
    let (d, k, trials) = (50usize, 7usize, 20_000);
    let c = CompressorParams::RandK { k, scaled: false }
        .check(d)
        .unwrap();
    let x: Vec<f32> = (0..d).map(|i| i as f32 + 1.0).collect();
    let mut out = vec![0.0f32; d];
    let mut msg = lena_compress::Message::default();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
    let mut counts = vec![0u32; d];
    for _ in 0..trials {
        c.compress(&x, &mut rng, &mut out, &mut msg);
        let picked: Vec<usize> = (0..d).filter(|&i| out[i] != 0.0).collect();
        assert_eq!(picked.len(), k);
        for i in picked {
            counts[i] += 1;
        }
    }
    let p = k as f64 / d as f64;
    let (mean, sd) = (trials as f64 * p, (trials as f64 * p * (1.0 - p)).sqrt());
    for (i, &n) in counts.iter().enumerate() {
        assert!(
            (f64::from(n) - mean).abs() < 5.0 * sd,
            "coordinate {i} picked {n} times, expected {mean:.0} +- {sd:.0}"
        );
    }
}

/// A composite upload (a dense part, then another encoding) splits back into that encoding bit
/// for bit; a message too short to hold the dense part is an error, and a received buffer
/// whose bit length does not fit it is refused without touching the message.
#[test]
fn composite_messages_split_back_and_received_buffers_are_checked() {
    let d = 37;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let head: Vec<f32> = (0..d).map(|i| i as f32 * 0.5 - 3.0).collect();
    for c in all(d) {
        let x: Vec<f32> = (0..d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let (mut cx, mut tail) = (vec![0.0; d], Message::default());
        c.compress(&x, &mut rng, &mut cx, &mut tail);
        let mut msg = Message::default();
        lena_compress::dense::encode(&head, &mut msg);
        msg.append_aligned(&tail);
        assert_eq!(msg.bits(), 32 * d as u64 + tail.bits(), "{}", c.name());
        let mut back = Message::default();
        msg.split_aligned(32 * d as u64, "test", &mut back).unwrap();
        assert_eq!(back, tail, "{}", c.name());
        let mut out = vec![0.0; d];
        c.decode(&back, &mut out).unwrap();
        assert_eq!(out, cx, "{}", c.name());
        let mut front = vec![0.0; d];
        lena_compress::dense::decode_at(&msg, 0, &mut front);
        assert_eq!(front, head, "{}", c.name());
    }
    let mut short = Message::default();
    lena_compress::dense::encode(&head[..3], &mut short);
    let e = short.split_aligned(32 * d as u64, "test", &mut Message::default());
    assert!(e.is_err());
    let mut m = short.clone();
    assert!(m.set_from(&[1, 2, 3], 25).is_err());
    assert_eq!(m, short, "a refused buffer leaves the message as it was");
    m.set_from(&[1, 2, 3], 17).unwrap();
    assert_eq!((m.bytes(), m.bits()), (&[1u8, 2, 3][..], 17));
}

/// A QSGD test case: a vector of up to `max_len - 1` coordinates (zeros, small and large
/// values), levels s (the byte-field and pair-table bounds, and past them), a bucket size (0:
/// one bucket), whether the norm is the max norm, whether fields are fixed-width, and a seed.
fn qsgd_case(max_len: usize) -> impl Strategy<Value = (Vec<f32>, u32, usize, bool, bool, u64)> {
    (
        proptest::collection::vec(
            prop_oneof![Just(0.0f32), -1.0f32..1.0, -1e3f32..1e3],
            1..max_len,
        ),
        prop_oneof![1u32..=8, Just(12), Just(126), Just(127), Just(300)],
        prop_oneof![Just(0usize), 1usize..40, Just(256), Just(300), Just(512)],
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
}

/// The QSGD compressor of a [`qsgd_case`], and its coding.
fn qsgd_of(d: usize, s: u32, bucket: usize, max_norm: bool, fixed: bool) -> (Qsgd, QsgdCoding) {
    let coding = if fixed {
        QsgdCoding::Fixed
    } else {
        QsgdCoding::EliasGamma
    };
    let norm = if max_norm {
        QsgdNorm::Max
    } else {
        QsgdNorm::L2
    };
    (Qsgd::new(d, s, bucket, norm, coding).unwrap(), coding)
}

/// QSGD's stream as ALGORITHMS.md writes it, bit by bit with bitvec: per bucket its norm's 32
/// bits, then per coordinate its level as the Elias-gamma code of `level + 1` and a sign bit
/// if the level is above 0, or (fixed width) a sign bit and the level in `width` bits. The levels and signs are read off the
/// compressed vector `out` and the norms off the stream itself at the offsets this reference
/// computes, so any bit the encoder writes differently shows.
fn qsgd_reference_stream(
    s: u32,
    bucket: usize,
    coding: QsgdCoding,
    out: &[f32],
    msg: &Message,
) -> bitvec::vec::BitVec<u8, bitvec::order::Lsb0> {
    use bitvec::prelude::*;
    let sent = msg.bytes().view_bits::<Lsb0>();
    let mut r: BitVec<u8, Lsb0> = BitVec::new();
    let push = |r: &mut BitVec<u8, Lsb0>, v: u64, width: u32| {
        for i in 0..width {
            r.push(v >> i & 1 == 1);
        }
    };
    let bucket = if bucket == 0 { out.len() } else { bucket };
    for ob in out.chunks(bucket) {
        let at = r.len();
        let norm_bits: u32 = sent[at..at + 32].load_le();
        push(&mut r, u64::from(norm_bits), 32);
        let unit = f32::from_bits(norm_bits) / s as f32;
        for &o in ob {
            let level = if unit > 0.0 {
                (f64::from(o.abs()) / f64::from(unit)).round() as u64
            } else {
                0
            };
            let negative = o.is_sign_negative() && level > 0;
            match coding {
                QsgdCoding::EliasGamma => {
                    let n = level + 1;
                    let big = 63 - n.leading_zeros();
                    push(&mut r, 0, big);
                    push(&mut r, 1, 1);
                    push(&mut r, n & ((1 << big) - 1), big);
                    if level > 0 {
                        push(&mut r, u64::from(negative), 1);
                    }
                }
                QsgdCoding::Fixed => {
                    let width = 64 - u64::from(s).leading_zeros();
                    push(&mut r, u64::from(negative), 1);
                    push(&mut r, level, width);
                }
            }
        }
    }
    r
}

proptest! {
    /// The encoder's every fast path (byte fields, pair tables, the packer, the four-field
    /// table, the one-code and split-code paths) writes the reference's stream.
    #[test]
    fn qsgd_writes_the_reference_stream(
        (x, s, bucket, max_norm, fixed, seed) in qsgd_case(700),
    ) {
        use bitvec::prelude::*;
        let d = x.len();
        let (c, coding) = qsgd_of(d, s, bucket, max_norm, fixed);
        let mut out = vec![0.0f32; d];
        let mut msg = Message::default();
        c.compress(&x, &mut Xoshiro256PlusPlus::seed_from_u64(seed), &mut out, &mut msg);
        let want = qsgd_reference_stream(s, bucket, coding, &out, &msg);
        prop_assert_eq!(msg.bits(), want.len() as u64);
        let got = &msg.bytes().view_bits::<Lsb0>()[..want.len()];
        prop_assert_eq!(got, &want[..]);
        // Whole bytes, zero past the last bit.
        prop_assert!(msg.bytes().view_bits::<Lsb0>()[want.len()..].not_any());
    }
}

proptest! {
    /// `Qsgd::quantize` given the draws `compress` takes from its stream (per bucket, a
    /// `fill_bytes` of four bytes per coordinate for every 256 coordinates, read little-endian)
    /// writes `compress`'s `C(x)`, bit for bit.
    #[test]
    fn qsgd_quantize_is_compress_without_its_coding(
        (x, s, bucket, max_norm, fixed, seed) in qsgd_case(700),
    ) {
        let d = x.len();
        let (c, _) = qsgd_of(d, s, bucket, max_norm, fixed);
        let mut out = vec![0.0f32; d];
        c.compress(&x, &mut Xoshiro256PlusPlus::seed_from_u64(seed), &mut out, &mut Message::default());
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut uniforms = Vec::with_capacity(d);
        for b in (0..d).step_by(if bucket == 0 { d } else { bucket }) {
            let end = if bucket == 0 { d } else { (b + bucket).min(d) };
            for c0 in (b..end).step_by(256) {
                let mut bytes = vec![0u8; 4 * (end - c0).min(256)];
                rng.fill_bytes(&mut bytes);
                uniforms.extend(bytes.chunks(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())));
            }
        }
        let mut quantized = vec![1.0f32; d];
        c.quantize(&x, &uniforms, &mut quantized);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&quantized), bits(&out));
    }
}

/// A message for [`qsgd_decodes_as_the_reference`]: `x`'s encoding as written (`kind` 0), cut
/// short (1), with zero bits appended (2), with a bit flipped (3), or bytes of the seed (4).
fn message_of(c: &dyn Compressor, x: &[f32], seed: u64, kind: u8) -> Message {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut msg = Message::default();
    c.compress(x, &mut rng, &mut vec![0.0f32; x.len()], &mut msg);
    let (mut bytes, bits) = (msg.bytes().to_vec(), msg.bits());
    let (bytes, bits) = match kind {
        0 => (bytes, bits),
        1 => {
            let bits = bits.saturating_sub(1 + seed % 40);
            bytes.truncate(bits.div_ceil(8) as usize);
            if bits % 8 != 0 {
                *bytes.last_mut().unwrap() &= (1u8 << (bits % 8)) - 1;
            }
            (bytes, bits)
        }
        2 => {
            let extra = 1 + seed % 20;
            bytes.resize((bits + extra).div_ceil(8) as usize, 0);
            (bytes, bits + extra)
        }
        3 if bits > 0 => {
            let at = seed % bits;
            bytes[(at / 8) as usize] ^= 1 << (at % 8);
            (bytes, bits)
        }
        _ => {
            let n = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..n).map(|i| (seed >> (i % 57)) as u8 ^ i as u8).collect();
            (bytes, 8 * n as u64)
        }
    };
    Message::from_bytes(bytes, bits).unwrap()
}

/// QSGD's decoder as ALGORITHMS.md states the encoding, one bit at a time: per bucket the norm
/// (a finite f32 >= 0), then per coordinate the Elias-gamma code of level + 1 (a prefix of at
/// most 31 zeros) and a sign bit if the level is not 0, or the fixed-width field
/// `level << 1 | sign`; every level at most s, and no bit left over. `None` for a malformed
/// message.
fn qsgd_reference_decode(
    s: u32,
    d: usize,
    bucket: usize,
    coding: QsgdCoding,
    msg: &Message,
) -> Option<Vec<f32>> {
    use bitvec::prelude::*;
    let bits = &msg.bytes().view_bits::<Lsb0>()[..msg.bits() as usize];
    let mut at = 0;
    let mut read = |width: u32| -> Option<u64> {
        let field = bits.get(at..at + width as usize)?;
        at += width as usize;
        Some(field.iter().rev().fold(0, |v, b| v << 1 | u64::from(*b)))
    };
    let width = 64 - u64::from(s).leading_zeros();
    let mut out = Vec::with_capacity(d);
    for b0 in (0..d).step_by(if bucket == 0 { d.max(1) } else { bucket }) {
        let norm = f32::from_bits(read(32)? as u32);
        if !(norm.is_finite() && norm >= 0.0) {
            return None;
        }
        let unit = norm / s as f32;
        for _ in b0..d.min(b0 + if bucket == 0 { d } else { bucket }) {
            let (level, negative) = match coding {
                QsgdCoding::EliasGamma => {
                    let mut zeros = 0;
                    while read(1)? == 0 {
                        zeros += 1;
                        if zeros > 31 {
                            return None;
                        }
                    }
                    let level = ((1u64 << zeros) | read(zeros)?) - 1;
                    (level, level > 0 && read(1)? == 1)
                }
                QsgdCoding::Fixed => {
                    let f = read(width + 1)?;
                    (f >> 1, f & 1 == 1)
                }
            };
            if level > u64::from(s) {
                return None;
            }
            let v = unit * level as f32;
            out.push(f32::from_bits(v.to_bits() | u32::from(negative) << 31));
        }
    }
    (at == bits.len()).then_some(out)
}

proptest! {
    /// The decoder's every path (the cursor's windows, the windows and codes near a chunk's or
    /// the message's end, the one-code and parsed paths, fixed fields) decodes as the reference:
    /// the same floats, or an error where the reference finds the message malformed.
    #[test]
    fn qsgd_decodes_as_the_reference(
        (x, s, bucket, max_norm, fixed, seed) in qsgd_case(1200),
        kind in 0u8..5,
    ) {
        let d = x.len();
        let (c, coding) = qsgd_of(d, s, bucket, max_norm, fixed);
        let msg = message_of(&c, &x, seed, kind);
        let mut out = vec![0.0f32; d];
        let decoded = c.decode(&msg, &mut out);
        let got = decoded.as_ref().ok().map(|()| out.clone());
        let want = qsgd_reference_decode(s, d, bucket, coding, &msg);
        let bits = |v: Option<Vec<f32>>| v.map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(bits(got.clone()), bits(want), "kind {}", kind);
        // The level form (byte fields only): the same values, or the same error.
        let (mut fields, mut steps) = (vec![0u8; d], vec![7.0f32]);
        match c.decode_levels(&msg, &mut fields, &mut steps) {
            None => prop_assert!(s > 126),
            Some(levels) => {
                prop_assert!(s <= 126);
                let values = levels.as_ref().ok().map(|&b| {
                    fields.iter().enumerate().map(|(i, &f)| Qsgd::level_value(steps[i / b], f)).collect()
                });
                prop_assert_eq!(bits(values), bits(got));
                prop_assert_eq!(levels.err().map(|e| e.to_string()), decoded.err().map(|e| e.to_string()));
                // Two at once, with a message of another kind in either order: each one's
                // fields, steps and error as decoded alone.
                let x2: Vec<f32> = x.iter().rev().copied().collect();
                let other = message_of(&c, &x2, seed ^ 0x5555, (kind + 2) % 5);
                let alone = |m: &Message| {
                    let (mut f, mut st) = (vec![0u8; d], vec![7.0f32]);
                    let r = c.decode_levels(m, &mut f, &mut st).expect("a level form");
                    (r.map_err(|e| e.to_string()), f, bits(Some(st)))
                };
                for pair in [[&msg, &other], [&other, &msg]] {
                    let (mut f0, mut f1) = (vec![1u8; d], vec![2u8; d]);
                    let (mut s0, mut s1) = (vec![3.0f32], Vec::new());
                    let [r0, r1] = c
                        .decode_levels_two(pair, [&mut f0, &mut f1], [&mut s0, &mut s1])
                        .expect("a level form");
                    let (want0, want1) = (alone(pair[0]), alone(pair[1]));
                    prop_assert_eq!(r0.map_err(|e| e.to_string()), want0.0.clone());
                    prop_assert_eq!(r1.map_err(|e| e.to_string()), want1.0.clone());
                    if want0.0.is_ok() {
                        prop_assert_eq!((&f0, bits(Some(s0))), (&want0.1, want0.2));
                    }
                    if want1.0.is_ok() {
                        prop_assert_eq!((&f1, bits(Some(s1))), (&want1.1, want1.2));
                    }
                }
            }
        }
    }
}

proptest! {
    /// Top-k keeps the k first coordinates under (magnitude descending, index ascending), NaN
    /// above infinity, whatever the ties, zeros of either sign, infinities and subnormals, and
    /// however a sample of the vector misleads its threshold (`spread`: the large values only
    /// where a stride-th sample does not look, or only where it does).
    #[test]
    fn top_k_keeps_the_first_k_by_magnitude_then_index(
        mut x in proptest::collection::vec(prop_oneof![
            Just(0.0f32), Just(-0.0f32), Just(1.0f32), Just(-1.0f32), Just(2.5f32),
            Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(1e-40f32), Just(f32::NAN),
            -1e3f32..1e3,
        ], 1..3000),
        k in prop_oneof![1usize..10, 1usize..200, 1usize..3000],
        spread in 0u8..3,
    ) {
        let d = x.len();
        let k = 1 + (k - 1) % d;
        let stride = d.div_ceil(256).max(1);
        if spread > 0 {
            for (i, v) in x.iter_mut().enumerate() {
                let sampled = i % stride == 0;
                *v = if sampled == (spread == 1) { v.abs().min(1.0) * 1e-3 } else { *v };
            }
        }
        let c = TopK::new(d, k, IndexCoding::U32).unwrap();
        let mut out = vec![1.0f32; d];
        let mut msg = Message::default();
        c.compress(&x, &mut Xoshiro256PlusPlus::seed_from_u64(0), &mut out, &mut msg);
        let mut want: Vec<usize> = (0..d).collect();
        want.sort_by(|&a, &b| x[b].abs().total_cmp(&x[a].abs()).then(a.cmp(&b)));
        want.truncate(k);
        want.sort_unstable();
        let mut want_out = vec![0.0f32; d];
        for &i in &want {
            want_out[i] = x[i];
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&out), bits(&want_out));
        let sent: Vec<usize> = msg.bytes()[..4 * k]
            .chunks(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        prop_assert_eq!(sent, want);
    }
}

proptest! {
    /// A compressor's sparse form (top-k, rand-k) is its decoding: the same success or error,
    /// pairs ascending by index, and the vector of the pairs (+0.0 elsewhere) bit for bit the
    /// one `decode` writes, on encodings and on garbage; the others have none.
    #[test]
    fn the_sparse_form_is_the_decoding(
        x in proptest::collection::vec(prop_oneof![Just(0.0f32), Just(-0.0f32), -1e3f32..1e3], 1..300),
        kind in 0u8..5,
        seed in any::<u64>(),
    ) {
        let d = x.len();
        for c in all(d) {
            let msg = message_of(c.as_ref(), &x, seed, kind);
            let mut pairs = vec![(7, 7.0)];
            let Some(sparse) = c.decode_sparse(&msg, &mut pairs) else {
                prop_assert!(!c.name().starts_with("top-") && !c.name().starts_with("rand-"), "{}", c.name());
                continue;
            };
            let mut dense = vec![1.0f32; d];
            let decoded = c.decode(&msg, &mut dense);
            prop_assert_eq!(sparse.is_ok(), decoded.is_ok(), "{}", c.name());
            if sparse.is_ok() {
                prop_assert!(pairs.windows(2).all(|p| p[0].0 < p[1].0), "{}", c.name());
                let mut from_pairs = vec![0.0f32; d];
                for &(i, v) in &pairs {
                    from_pairs[i as usize] = v;
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&from_pairs), bits(&dense), "{}", c.name());
            }
        }
    }
}
