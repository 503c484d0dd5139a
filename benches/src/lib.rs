//! Benchmarks live in `benches/` and `examples/`; this library holds what they share.

use lena_kernels::Kernels;
use lena_sim::ExperimentConfig;

/// The `lena` binary's allocator (large blocks on a cache line) in every bench and profiling
/// example (each links this crate, with `use lena_benches as _` where it uses nothing of it),
/// so that they measure what a run does.
#[global_allocator]
static ALLOC: lena_kernels::LineAligned = lena_kernels::LineAligned;

/// The environment variable that asks the profiling examples for their figures as data: when
/// it names a file, each appends one JSON line to it ([`report`]). `cargo xtask targets` reads
/// issue 14's targets from these lines.
pub const REPORT_VAR: &str = "LENA_REPORT";

/// Appends `{"example": example, ..fields}` as one line to the file [`REPORT_VAR`] names, if it
/// is set; does nothing otherwise.
///
/// # Panics
/// If the file cannot be opened or written: the figures were asked for and would be lost.
pub fn report(example: &str, fields: serde_json::Value) {
    use std::io::Write;
    let Some(path) = std::env::var_os(REPORT_VAR) else {
        return;
    };
    let mut line = serde_json::Map::new();
    line.insert("example".into(), example.into());
    if let serde_json::Value::Object(fields) = fields {
        line.extend(fields);
    }
    let text = format!("{}\n", serde_json::Value::Object(line));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{REPORT_VAR}: cannot append to {}: {e}", path.display()));
}

/// The per-round setting of issue 3 and the paper's figure 2b: M = 200 nodes, minibatch 3,
/// one label per node, d = 7850, step 0.05, all threads, with `algorithm` as the body of the
/// `[algorithm]` table. Uses MNIST from `data/mnist` if present (`cargo xtask data mnist`),
/// else synthetic data of MNIST's shape (a round's cost does not depend on the pixel values).
pub fn round_config(algorithm: &str) -> ExperimentConfig {
    round_config_with_batch(algorithm, 3)
}

/// [`round_config`] with minibatches of `batch` rows per node (figure 4 takes 30).
pub fn round_config_with_batch(algorithm: &str, batch: usize) -> ExperimentConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mnist = root.join("data/mnist");
    let source = if mnist.join("train-images-idx3-ubyte.gz").exists() {
        format!("kind = \"mnist\"\ndir = {:?}", mnist)
    } else {
        "kind = \"synthetic\"\nsamples = 60000\ntest_samples = 1000\nfeatures = 784\nclasses = 10"
            .into()
    };
    let text = format!(
        "[data]\nsplit = \"one_label\"\nnodes = 200\nbatch = {batch}\n[data.source]\n{source}\n\
         [algorithm]\nstep_size = 0.05\n{algorithm}\n[run]\nthreads = 0\nseed = 1\n"
    );
    ExperimentConfig::from_toml(&text, "round setting").expect("the round setting is valid")
}

/// The algorithms of the round measurements, by name and `[algorithm]` table body.
pub const ROUND_ALGORITHMS: [(&str, &str); 5] = [
    ("dgd", "name = \"dgd\""),
    ("lena", "name = \"lena\""),
    ("lag_wk", "name = \"lag_wk\""),
    ("diana_qsgd", "name = \"diana\""),
    (
        "diana_qsgd_fixed",
        "name = \"diana\"\n[algorithm.compressor]\nkind = \"qsgd\"\nlevels = 4\nbucket = 512\ncoding = \"fixed\"",
    ),
];

/// `op` on `k`'s instruction set (the examples' own SIMD loops, on the path the kernels take,
/// `LENA_SIMD` included).
pub fn on_path<Op: pulp::WithSimd>(k: Kernels, op: Op) -> Op::Output {
    use pulp::Simd;
    #[cfg(target_arch = "x86_64")]
    {
        if k.is_x86_64_v4()
            && let Some(simd) = pulp::x86::V4::try_new()
        {
            return Simd::vectorize(simd, op);
        }
        if k.is_x86_64_v3()
            && let Some(simd) = pulp::x86::V3::try_new()
        {
            return Simd::vectorize(simd, op);
        }
    }
    op.with_simd(pulp::Scalar::new())
}

/// Values in [-6, 6] times `scale`, varied along the vector (the scan probes' state and rows).
pub fn varied(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * scale)
        .collect()
}

/// One LENA-m node's state as its scan reads it after a skip (`scan_profile`,
/// `fusion_profile`): its memory owing q, its momentum and its drift q.
pub struct ScanNode {
    /// The memory, owing q (`Memory::Owing`).
    pub u: Vec<f32>,
    /// The momentum.
    pub mom: Vec<f32>,
    /// The drift q (in the node's last upload).
    pub q: Vec<f32>,
}

impl ScanNode {
    /// A node's state of `d` coordinates, each vector [`varied`] at scale 1e-3.
    pub fn new(d: usize) -> Self {
        Self {
            u: varied(d, 1e-3),
            mom: varied(d, 1e-3),
            q: varied(d, 1e-3),
        }
    }
}

/// Every node's state for the state-touch bound: four vectors of 7850 f32 per node, 200
/// nodes (25 MB, inside the 32 MiB L3).
pub fn bound_state() -> Vec<Vec<f32>> {
    bound_state_for(200)
}

/// [`bound_state`] for `nodes` nodes.
pub fn bound_state_for(nodes: usize) -> Vec<Vec<f32>> {
    (0..nodes * 4)
        .map(|i| vec![i as f32 * 1e-6; 7850])
        .collect()
}

/// The bound of issue 3: reads the four vectors of every node once and writes one of them
/// (`e += 0.1 g - v` and `||mom||^2`), on one thread or split in two halves on two.
pub fn touch_state_once(k: Kernels, state: &mut [Vec<f32>], threads: usize) -> f32 {
    let part = |part: &mut [Vec<f32>]| {
        let mut acc = 0.0f32;
        for node in part.chunks_mut(4) {
            let (e, rest) = node.split_first_mut().expect("four vectors per node");
            acc += k.ef_update(e, 0.1, &rest[0], &rest[1]);
            acc += k.norm2_sq(&rest[2]);
        }
        acc
    };
    in_halves(state, threads, part)
}

/// LENA-m's node scan's traffic without its arithmetic, over [`bound_state_for`]'s state:
/// per node, three vectors read and two of them written (`e += 0.1 g`, then `x = g + 0.9 x`;
/// `g` is still in cache for the second), as the scan reads the memory, q and the momentum and
/// writes the memory and the momentum; on one thread or split in two halves on two. At a large
/// M it is the scan's floor in memory traffic, beside the bound's four vectors read and one
/// written.
pub fn own_traffic_once(k: Kernels, state: &mut [Vec<f32>], threads: usize) -> f32 {
    let part = |part: &mut [Vec<f32>]| {
        let mut acc = 0.0f32;
        for node in part.chunks_mut(4) {
            let [e, g, x, _] = node else {
                unreachable!("four vectors per node")
            };
            k.axpy(0.1, g, e);
            k.axpby(1.0, g, 0.9, x);
            acc += e[0] + x[0];
        }
        acc
    };
    in_halves(state, threads, part)
}

/// `part` over all of `items` on one thread, or over its two halves on two (joined), the
/// results added.
fn in_halves<T: Send>(
    items: &mut [T],
    threads: usize,
    part: impl Fn(&mut [T]) -> f32 + Sync,
) -> f32 {
    if threads <= 1 {
        part(items)
    } else {
        let (a, b) = items.split_at_mut(items.len() / 2);
        let (x, y) = rayon::join(|| part(a), || part(b));
        x + y
    }
}

/// LENA-m's node scan alone, as a node that skipped runs it each round: for every node, one
/// [`Kernels::ef_scan`] over its memory, which owes its drift q ([`Memory::Owing`]: the memory
/// is `u - q`, and `t = e + alpha g` is written over `u`), q (the update it applied, the scan's
/// `v`) and its momentum (updated in place), with a gradient `g` that stays in cache, as LENA's
/// worker does. `state` holds three vectors per node (u, q, momentum); one thread, or the
/// nodes split in two halves on two. What a LENA-m round cannot do without whatever its
/// gradient and server cost.
///
/// [`Memory::Owing`]: lena_kernels::Memory::Owing
pub fn lena_scan_once(k: Kernels, state: &mut [Vec<f32>], g: &[f32], threads: usize) -> f32 {
    let part = |part: &mut [Vec<f32>]| {
        let mut acc = 0.0f32;
        for node in part.chunks_mut(3) {
            let [u, q, mom] = node else {
                unreachable!("three vectors per node")
            };
            let momentum = lena_kernels::Ema {
                x: mom,
                a: 0.05,
                b: 0.9,
            };
            let memory = lena_kernels::Memory::Owing(u);
            let norms = k.ef_scan(memory, 0.05, g, q, Some(momentum), None);
            acc += norms.innovation_sq;
        }
        acc
    };
    if threads <= 1 {
        part(state)
    } else {
        let half = state.len() / 6 * 3;
        let (a, b) = state.split_at_mut(half);
        let (x, y) = rayon::join(|| part(a), || part(b));
        x + y
    }
}

/// DIANA's shifts alone: every node's shift h read and written once (`h += a q`, with a `q`
/// that stays in cache), as a DIANA node must each round (it forms `g - h`, then moves h); one
/// thread, or the nodes split in two halves on two. With QSGD's draws and DGD's round, what a
/// DIANA round cannot do without whatever its codec costs.
pub fn diana_shift_once(k: Kernels, shifts: &mut [Vec<f32>], q: &[f32], threads: usize) -> f32 {
    let part = |part: &mut [Vec<f32>]| {
        part.iter_mut().fold(0.0f32, |acc, h| {
            k.axpy(0.5, q, h);
            acc + h[h.len() / 2]
        })
    };
    in_halves(shifts, threads, part)
}

/// QSGD's levels alone, as DIANA's nodes round their vectors each round: `nodes` times, the
/// bucket norms and every coordinate's stochastic level of `x` given its draws `uniforms`
/// ([`lena_compress::Qsgd::quantize`], the encoder's own loop), with `x`, the draws and the
/// output in cache; one thread, or the nodes split in two halves on two (`outs`: an output
/// vector per thread). With DGD's round, QSGD's draws and the shifts, what a DIANA round
/// cannot do without whatever its coding and decoding cost.
pub fn qsgd_levels_once(
    q: &lena_compress::Qsgd,
    x: &[f32],
    uniforms: &[u32],
    outs: &mut [Vec<f32>; 2],
    nodes: usize,
    threads: usize,
) -> f32 {
    // Both outputs: all the nodes, into the first; one of them: half the nodes.
    let part = |outs: &mut [Vec<f32>]| {
        let count = nodes * outs.len() / 2;
        let out = &mut outs[0];
        (0..count).fold(0.0f32, |acc, _| {
            q.quantize(x, uniforms, out);
            acc + out[out.len() / 2]
        })
    };
    in_halves(outs, threads, part)
}

/// Bytes handed out again and again as a random stream: a node's pre-drawn words, copied into
/// the compressor's chunks as the simulator's draws drawn ahead are (`fill_bytes` a memcpy).
pub struct Replay<'a> {
    /// The bytes, replayed from the start when they run out.
    pub bytes: &'a [u8],
    /// The next byte to hand out.
    pub at: usize,
}

impl rand::RngCore for Replay<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        assert!(
            !self.bytes.is_empty() || dst.is_empty(),
            "Replay: no bytes to replay"
        );
        let mut done = 0;
        while done < dst.len() {
            if self.at == self.bytes.len() {
                self.at = 0;
            }
            let n = (dst.len() - done).min(self.bytes.len() - self.at);
            dst[done..done + n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            (done, self.at) = (done + n, self.at + n);
        }
    }
}

/// QSGD's whole encoder alone, as DIANA's nodes run it each round: `nodes` times,
/// [`lena_compress::Compressor::compress_shifted`] of `x` against a shift (bucket norms of
/// `x - h`, levels, `h`'s move, with `a = 0` so that h stays put and the messages alike; the
/// draws copied from `words` as a node copies its words drawn ahead; the Elias-gamma packing),
/// everything in cache; one thread, or the nodes split in two halves on two (`hs`, `msgs`: a
/// shift and a message per thread). Its message's bits are returned.
pub fn qsgd_compress_once(
    k: Kernels,
    q: &lena_compress::Qsgd,
    x: &[f32],
    words: &[u8],
    hs: &mut [Vec<f32>; 2],
    msgs: &mut [lena_compress::Message; 2],
    nodes: usize,
    threads: usize,
) -> u64 {
    use lena_compress::Compressor;
    let part = |h: &mut Vec<f32>, msg: &mut lena_compress::Message, count: usize| {
        let mut g = x.to_vec();
        let mut scratch = vec![0.0f32; x.len()];
        for _ in 0..count {
            let mut rng = Replay {
                bytes: words,
                at: 0,
            };
            let shift = lena_compress::Shift { h, a: 0.0 };
            q.compress_shifted(k, &mut g, shift, &mut rng, &mut scratch, msg);
        }
        msg.bits()
    };
    let [h0, h1] = hs;
    let [m0, m1] = msgs;
    if threads <= 1 {
        part(h0, m0, nodes)
    } else {
        let (a, b) = rayon::join(
            || part(h0, m0, nodes / 2),
            || part(h1, m1, nodes - nodes / 2),
        );
        a + b
    }
}

/// The server's sum of QSGD uploads alone, as DIANA's node phase forms it each round: `nodes`
/// messages decoded two at a time into their level form
/// ([`lena_compress::Compressor::decode_levels_two`], the message in cache, as just encoded)
/// and each added into a sum row (`Qsgd::add_level_values`, as the round adds them); one thread, or the nodes
/// split in two halves on two (`sums`: a row per thread).
pub fn qsgd_decode_once(
    k: Kernels,
    q: &lena_compress::Qsgd,
    msgs: &[lena_compress::Message; 2],
    sums: &mut [Vec<f32>; 2],
    nodes: usize,
    threads: usize,
) -> f32 {
    let part = |sum: &mut Vec<f32>, count: usize| {
        let d = sum.len();
        let mut levels = Levels::default();
        for _ in 0..count.div_ceil(2) {
            levels.add_two(k, q, [&msgs[0], &msgs[1]], 2, sum);
        }
        sum[d / 2]
    };
    let [a, b] = sums;
    if threads <= 1 {
        part(a, nodes)
    } else {
        let (x, y) = rayon::join(|| part(a, nodes / 2), || part(b, nodes - nodes / 2));
        x + y
    }
}

/// Two QSGD messages' level form, as the server's sum decodes them: fields and bucket steps.
#[derive(Default)]
struct Levels {
    fields: [Vec<u8>; 2],
    steps: [Vec<f32>; 2],
}

impl Levels {
    /// Decodes `msgs` two at a time into their level form
    /// ([`lena_compress::Compressor::decode_levels_two`]) and adds the first `count` (1 or 2)
    /// into `sum` bucket by bucket (`Qsgd::add_level_values`), as the simulator's node phase
    /// sums DIANA's uploads.
    fn add_two(
        &mut self,
        k: Kernels,
        q: &lena_compress::Qsgd,
        msgs: [&lena_compress::Message; 2],
        count: usize,
        sum: &mut [f32],
    ) {
        use lena_compress::Compressor;
        let [f0, f1] = &mut self.fields;
        f0.resize(sum.len(), 0);
        f1.resize(sum.len(), 0);
        let [s0, s1] = &mut self.steps;
        let decoded = q.decode_levels_two(msgs, [f0, f1], [s0, s1]);
        let [Ok(bucket), Ok(_)] = decoded.expect("QSGD has a level form") else {
            panic!("QSGD's level form of its own messages");
        };
        for (f, steps) in self.fields.iter().zip(&self.steps).take(count) {
            for ((sum, f), &step) in sum.chunks_mut(bucket).zip(f.chunks(bucket)).zip(steps) {
                lena_compress::Qsgd::add_level_values(k, sum, f, step);
            }
        }
    }
}

/// The MNIST training set if `data/mnist` holds it (`cargo xtask data mnist`), else random
/// data of its shape (60 000 x 784, 10 classes).
pub fn mnist_or_random() -> lena_data::Dataset {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist");
    match lena_data::mnist::load(&dir) {
        Ok((train, _)) => train,
        Err(_) => {
            let features: Vec<f32> = (0..60_000 * 784)
                .map(|i| ((i * 7919) % 256) as f32 / 255.0)
                .collect();
            let labels = (0..60_000).map(|i| (i % 10) as u32).collect();
            lena_data::Dataset::new(features, labels, 784, 10).unwrap()
        }
    }
}

/// The full-batch gradient's two products with plain faer GEMMs on `threads` threads:
/// `z = x w^T` (`n x c`), then `gw = z^T x` (`c x p`): the reference shape for the linear
/// model's own kernels.
pub fn two_faer_gemms(
    x: faer::MatRef<'_, f32>,
    w: faer::MatRef<'_, f32>,
    z: &mut [f32],
    gw: &mut [f32],
    threads: usize,
) {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, MatMut, MatRef, Par};
    let (n, p, c) = (x.nrows(), x.ncols(), w.nrows());
    matmul(
        MatMut::from_row_major_slice_mut(z, n, c),
        Accum::Replace,
        x,
        w.transpose(),
        1.0f32,
        Par::rayon(threads),
    );
    matmul(
        MatMut::from_row_major_slice_mut(gw, c, p),
        Accum::Replace,
        MatRef::from_row_major_slice(z, n, c).transpose(),
        x,
        1.0f32,
        Par::rayon(threads),
    );
}

/// Twelve independent chains of vector fused multiply-adds, `iters` steps each.
struct FmaChains {
    iters: usize,
}

impl pulp::WithSimd for FmaChains {
    type Output = (f64, f32, usize);
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> (f64, f32, usize) {
        let m = simd.splat_f32s(std::hint::black_box(0.999_999));
        let c = simd.splat_f32s(std::hint::black_box(1e-7));
        let mut a: [S::f32s; 12] = std::array::from_fn(|k| simd.splat_f32s(0.5 + k as f32 * 1e-3));
        let t = std::time::Instant::now();
        for _ in 0..self.iters {
            for v in &mut a {
                *v = simd.mul_add_f32s(*v, m, c);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let sum: f32 = a.iter().map(|v| simd.reduce_sum_f32s(*v)).sum();
        (
            (12 * S::F32_LANES * self.iters) as f64 / secs / 1e9,
            sum,
            S::F32_LANES,
        )
    }
}

/// This thread's rate of f32 fused multiply-adds on the CPU's widest vectors (pulp's `Arch`),
/// in G a second, and the vectors' lanes: twelve independent chains of `iters` steps (enough
/// chains to cover the FMA latency on the project's x86 machines). An FMA-bound workload's
/// compute floor is its multiply-add count over this rate.
pub fn fma_rate(iters: usize) -> (f64, usize) {
    let (rate, sum, lanes) = pulp::Arch::new().dispatch(FmaChains { iters });
    std::hint::black_box(sum);
    (rate, lanes)
}

/// The best of three [`fma_rate`]s of `iters` steps (50 M take about a third of a second on AVX2
/// at 2.5 GHz): the peak to set a measurement beside in the same run.
pub fn fma_peak(iters: usize) -> f64 {
    (0..3).map(|_| fma_rate(iters).0).fold(0.0, f64::max)
}

/// LENA-m's round written out by hand, with none of the simulator's machinery, every one of
/// M nodes skipping (as most do in a round). Each node draws three rows of its shard of a
/// dataset of MNIST's shape (60 000 images of 784 pixel bytes, 300 a node), copies them out as
/// the simulator does ([`lena_data::Dataset::copy_row`]) while the next node's rows are
/// requested, forms their scores against the ten classes' weights and the logistic loss's
/// coefficients, and runs LENA's scan over its memory owing its drift q, q and its momentum
/// with the gradient formed in the scan ([`Kernels::ef_scan_linear`], as LENA's worker runs it
/// after a skip); the server sums the silent nodes' drifts eight rows at a time in node order
/// (on each thread) and moves the parameters. The same kernels and state (three vectors of d
/// a node) as the simulator's LENA-m: against its round, the difference is the framework's
/// (the sampler, the trigger, the worker, the chain of sums, an upload's copy). With parts left
/// out ([`BareParts`]), what each part costs.
pub struct BareLena {
    data: lena_data::Dataset,
    nodes: Vec<BareNode>,
    w: Vec<f32>,
    sums: [Vec<f32>; 2],
}

/// One node of [`BareLena`]: its state as its scan reads it, and its row stream.
struct BareNode {
    state: ScanNode,
    seed: u64,
}

/// Which parts of a [`BareLena`] round run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BareParts {
    /// Each node's rows drawn at random from its shard (else its first three: in cache).
    pub random_rows: bool,
    /// The next node's rows requested (into L2) while a node works.
    pub request_next: bool,
    /// The rows' scores against the classes' weights.
    pub scores: bool,
    /// The node's scan over its state.
    pub scan: bool,
    /// The server's sum of the nodes' drifts.
    pub sum: bool,
}

impl BareParts {
    /// Every part.
    pub const ALL: Self = Self {
        random_rows: true,
        request_next: true,
        scores: true,
        scan: true,
        sum: true,
    };
}

/// [`BareLena`]'s shape: MNIST's features and classes, 300 rows a node, three a minibatch.
const BARE_FEATURES: usize = 784;
const BARE_CLASSES: usize = 10;
const BARE_SHARD: usize = 300;
/// The written-out rounds' shards: node `m` draws from shard `m % BARE_SHARDS`.
const BARE_SHARDS: usize = 200;
const BARE_BATCH: usize = 3;

/// The written-out rounds' parameter count: MNIST's ten classes of 784 weights and a bias.
const BARE_D: usize = BARE_CLASSES * (BARE_FEATURES + 1);

/// A vector of the written-out rounds' state: small values of both signs, none zero (a
/// momentum decaying into subnormals would time those), varied by `s`.
fn bare_vector(s: usize) -> Vec<f32> {
    (0..BARE_D)
        .map(|i| (((i * 31 + s * 17) % 97) as f32 - 48.5) * 1e-5)
        .collect()
}

/// The written-out rounds' dataset: 60 000 images of MNIST's shape as pixel bytes (the
/// features are their floats, copied out of the bytes as the simulator's rows are), 300 a
/// node, each node's of one label.
fn bare_dataset() -> lena_data::Dataset {
    let rows = 60_000;
    let bytes = (0..rows * BARE_FEATURES)
        .map(|i| ((i * 7919) % 256) as u8)
        .collect();
    let labels = (0..rows)
        .map(|r| (r / BARE_SHARD % BARE_CLASSES) as u32)
        .collect();
    lena_data::Dataset::from_pixel_bytes(bytes, labels, BARE_FEATURES, BARE_CLASSES)
        .expect("the written-out rounds' dataset is well formed")
}

/// The `r`-th of a node's next rows, from its stream's state `seed` (advanced).
#[inline(always)]
fn bare_pick(seed: &mut u64, m: usize, r: usize, random: bool) -> usize {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407 + r as u64);
    m % BARE_SHARDS * BARE_SHARD
        + if random {
            (*seed >> 33) as usize % BARE_SHARD
        } else {
            r
        }
}

impl BareLena {
    /// `nodes` nodes, their state filled with small values of both signs (no zero: a momentum
    /// decaying into subnormals would time those). The dataset's 60 000 rows make 200 shards of
    /// 300; past 200 nodes, node `m` draws from shard `m % 200` (at M = 60 000, 300 nodes a
    /// shard, each drawing its own rows).
    pub fn new(nodes: usize) -> Self {
        let (d, vector) = (BARE_D, bare_vector);
        let data = bare_dataset();
        let nodes = (0..nodes)
            .map(|m| BareNode {
                state: ScanNode {
                    u: vector(3 * m),
                    q: vector(3 * m + 1),
                    mom: vector(3 * m + 2),
                },
                seed: 0x9E37_79B9_7F4A_7C15 ^ m as u64,
            })
            .collect();
        Self {
            data,
            nodes,
            w: vector(1 << 20),
            sums: [vec![0.0; d], vec![0.0; d]],
        }
    }

    /// One round of `parts` on one thread, or with the nodes split in two halves on two;
    /// returns a value that depends on every node's norms.
    pub fn round(&mut self, k: Kernels, threads: usize, parts: BareParts) -> f32 {
        let (data, w) = (&self.data, &self.w[..]);
        let front = BareFront {
            data,
            w,
            random_rows: parts.random_rows,
            request_next: parts.request_next,
            scores: parts.scores,
        };
        let part = |nodes: &mut [BareNode], base: usize, sum: &mut Vec<f32>| -> f32 {
            sum.fill(0.0);
            let mut acc = 0.0f32;
            let mut batch = BareBatch::default();
            for (group, nodes) in nodes.chunks_mut(8).enumerate() {
                for i in 0..nodes.len() {
                    let m = base + 8 * group + i;
                    let next = nodes.get(i + 1).map(|n| n.seed);
                    let node = &mut nodes[i];
                    acc += front.node(k, m, &mut node.seed, next, &mut batch);
                    let rows = batch.rows();
                    let (coef, bias) = (&batch.coef, &batch.bias);
                    if parts.scan {
                        let lg = lena_kernels::LinearGradient {
                            lambda: 1e-3,
                            w,
                            rows: &rows,
                            coef,
                            bias,
                        };
                        let ScanNode { u, mom, q } = &mut node.state;
                        let momentum = lena_kernels::Ema {
                            x: mom,
                            a: 0.05 * 0.1,
                            b: 0.9,
                        };
                        let memory = lena_kernels::Memory::Owing(u);
                        let norms = k.ef_scan_linear(memory, 0.05, &lg, q, Some(momentum), None);
                        acc += norms.innovation_sq + norms.ema_sq[0];
                    }
                }
                if parts.sum {
                    let mut rows: [&[f32]; 8] = [&[]; 8];
                    for (r, n) in rows.iter_mut().zip(nodes.iter()) {
                        *r = &n.state.q;
                    }
                    k.sum_rows(sum, 1.0, &rows[..nodes.len()]);
                }
            }
            acc
        };
        let acc = if threads <= 1 {
            part(&mut self.nodes, 0, &mut self.sums[0])
        } else {
            let half = self.nodes.len() / 2;
            let (a, b) = self.nodes.split_at_mut(half);
            let [s0, s1] = &mut self.sums;
            let (x, y) = rayon::join(|| part(a, 0, s0), || part(b, half, s1));
            x + y
        };
        // A step too small to move the parameters far in thousands of rounds.
        let scale = -1e-9 / self.nodes.len() as f32;
        k.vectorize(
            #[inline(always)]
            || {
                for ((wi, a), b) in self.w.iter_mut().zip(&self.sums[0]).zip(&self.sums[1]) {
                    *wi += scale * (a + b);
                }
            },
        );
        acc
    }
}

/// A node's minibatch in [`BareLena`] and [`BareDiana`]: its rows, scores, and the logistic
/// loss's coefficients and bias gradients.
struct BareBatch {
    x: [f32; BARE_BATCH * BARE_FEATURES],
    z: [f32; BARE_BATCH * BARE_CLASSES],
    coef: [f32; BARE_BATCH * BARE_CLASSES],
    bias: [f32; BARE_CLASSES],
}

impl Default for BareBatch {
    fn default() -> Self {
        Self {
            x: [0.0; BARE_BATCH * BARE_FEATURES],
            z: [0.0; BARE_BATCH * BARE_CLASSES],
            coef: [0.0; BARE_BATCH * BARE_CLASSES],
            bias: [0.0; BARE_CLASSES],
        }
    }
}

impl BareBatch {
    /// The minibatch's rows.
    fn rows(&self) -> [&[f32]; BARE_BATCH] {
        let (a, rest) = self.x.split_at(BARE_FEATURES);
        let (b, c) = rest.split_at(BARE_FEATURES);
        [a, b, c]
    }
}

/// The part of a node's step that every written-out round shares: the next node's rows
/// requested, this node's rows drawn and copied out, their scores, the logistic coefficients.
struct BareFront<'a> {
    data: &'a lena_data::Dataset,
    w: &'a [f32],
    random_rows: bool,
    request_next: bool,
    scores: bool,
}

impl BareFront<'_> {
    /// Node `m`'s minibatch into `batch` (its row stream `seed` advanced; `next`: the next
    /// node's stream, whose rows are requested); returns the minibatch's loss.
    fn node(
        &self,
        k: Kernels,
        m: usize,
        seed: &mut u64,
        next: Option<u64>,
        batch: &mut BareBatch,
    ) -> f32 {
        let (data, w) = (self.data, self.w);
        if self.request_next
            && let Some(mut next) = next
        {
            for r in 0..BARE_BATCH {
                data.prefetch_row_l2(bare_pick(&mut next, m + 1, r, self.random_rows));
            }
        }
        let mut y = [0u32; BARE_BATCH];
        k.vectorize(
            #[inline(always)]
            || {
                for (r, (xr, yr)) in batch
                    .x
                    .chunks_exact_mut(BARE_FEATURES)
                    .zip(&mut y)
                    .enumerate()
                {
                    let row = bare_pick(seed, m, r, self.random_rows);
                    data.copy_row(row, xr);
                    *yr = data.labels[row];
                }
            },
        );
        if self.scores {
            let rows = batch.rows();
            let mut z = [0.0f32; BARE_BATCH * BARE_CLASSES];
            k.dot_rows_classes(&rows, w, BARE_FEATURES + 1, BARE_CLASSES, &mut z);
            batch.z = z;
        }
        for zr in batch.z.chunks_exact_mut(BARE_CLASSES) {
            for (c, zc) in zr.iter_mut().enumerate() {
                *zc += w[c * (BARE_FEATURES + 1) + BARE_FEATURES];
            }
        }
        let loss = k.softplus_sigmoid(&mut batch.z) as f32;
        for (c, (cc, b)) in batch
            .coef
            .chunks_exact_mut(BARE_BATCH)
            .zip(&mut batch.bias)
            .enumerate()
        {
            *b = 1e-3 * w[c * (BARE_FEATURES + 1) + BARE_FEATURES];
            for (r, (ci, &yr)) in cc.iter_mut().zip(&y).enumerate() {
                let target = f32::from(u8::from(yr as usize == c));
                *ci = (batch.z[r * BARE_CLASSES + c] - target) / BARE_BATCH as f32;
                *b += *ci;
            }
        }
        loss
    }
}

/// DIANA-QSGD's round written out by hand, as [`BareLena`] is LENA-m's: every one of M nodes
/// draws its minibatch (the step it shares with [`BareLena`]: rows from memory, the next node's
/// requested, scores, coefficients), writes its gradient ([`Kernels::linear_gradient_into`], as DIANA's
/// oracle call does), and compresses it against its shift with DIANA's default QSGD (s = 4,
/// buckets of 512, L2 norms, Elias-gamma levels; `compress_shifted`: bucket norms of `g - h`,
/// stochastic levels, `h += a Q`, the packing), its uniforms copied from words drawn ahead
/// eight streams at a time in a vector's lanes (`xoshiro256pp_lanes`, as the simulator's
/// chunks draw them); after every eight nodes, their messages are decoded two at a time into
/// their level form and added in node order (`decode_levels_two`, `add_level_values`, as the
/// simulator's node phase sums them); the server then forms the mean and moves the parameters
/// and its shift. The same kernels, codec and state (a shift and a message a node) as the
/// simulator's DIANA, none of its machinery. With parts left out ([`DianaParts`]), what each
/// costs.
pub struct BareDiana {
    data: lena_data::Dataset,
    q: lena_compress::Qsgd,
    nodes: Vec<DianaNode>,
    w: Vec<f32>,
    h: Vec<f32>,
    sums: [Vec<f32>; 2],
    /// A gradient of the right shape, copied in where the gradient part is left out.
    g0: Vec<f32>,
    /// Each thread's buffers, kept from round to round as the simulator's per-thread ones are.
    threads: [DianaThread; 2],
}

/// A [`BareDiana`] thread's buffers: the words drawn for a group of eight nodes (the round
/// before's used again where the draws are left out), the gradient, the compressor's scratch
/// and two messages' level form.
#[derive(Default)]
struct DianaThread {
    words: Vec<u64>,
    g: Vec<f32>,
    scratch: Vec<f32>,
    levels: Levels,
}

/// One node of [`BareDiana`]: its shift, its message, its QSGD stream and its row stream.
struct DianaNode {
    h: Vec<f32>,
    msg: lena_compress::Message,
    stream: [u64; 4],
    seed: u64,
}

/// Which parts of a [`BareDiana`] round run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DianaParts {
    /// Each node's rows drawn at random from its shard (else its first three: in cache).
    pub random_rows: bool,
    /// The next node's rows requested (into L2) while a node works.
    pub request_next: bool,
    /// The rows' scores against the classes' weights.
    pub scores: bool,
    /// The gradient written out (else a fixed one copied in).
    pub gradient: bool,
    /// The uniforms drawn (else the words of the round before are used again).
    pub draws: bool,
    /// QSGD's compression against the shift, the shift's move and the packing.
    pub compress: bool,
    /// The messages decoded and summed.
    pub sum: bool,
}

impl DianaParts {
    /// Every part.
    pub const ALL: Self = Self {
        random_rows: true,
        request_next: true,
        scores: true,
        gradient: true,
        draws: true,
        compress: true,
        sum: true,
    };
}

/// A node's words drawn ahead as its random stream: whole words copied eight bytes at a time
/// (little-endian), as the simulator's drawn-ahead stream hands them to a compressor.
struct Words<'a> {
    words: &'a [u64],
    taken: usize,
}

impl rand::RngCore for Words<'_> {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let w = self.words[self.taken];
        self.taken += 1;
        w
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut chunks = dest.chunks_exact_mut(8);
        for d in &mut chunks {
            d.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let w = self.next_u64().to_le_bytes();
            tail.copy_from_slice(&w[..tail.len()]);
        }
    }
}

/// DIANA's default shift step with QSGD of s = 4 and buckets of 512: `1 / (1 + omega)`,
/// `omega = min(512 / 16, sqrt(512) / 4)`.
const BARE_DIANA_A: f32 = 0.15;

impl BareDiana {
    /// `nodes` nodes (at most 200), their shifts filled with small values of both signs.
    ///
    /// # Panics
    /// If `nodes` is over 200.
    pub fn new(nodes: usize) -> Self {
        assert!(nodes * BARE_SHARD <= 60_000, "at most 200 nodes");
        let (d, vector) = (BARE_D, bare_vector);
        let q = lena_compress::Qsgd::new(
            d,
            4,
            512,
            lena_compress::QsgdNorm::L2,
            lena_compress::QsgdCoding::EliasGamma,
        )
        .expect("DIANA's default QSGD");
        let nodes = (0..nodes)
            .map(|m| DianaNode {
                h: vector(m),
                msg: lena_compress::Message::default(),
                stream: [2 * m as u64 + 1, 0x9E37_79B9_7F4A_7C15 ^ m as u64, 3, 4],
                seed: 0x9E37_79B9_7F4A_7C15 ^ m as u64,
            })
            .collect();
        Self {
            data: bare_dataset(),
            q,
            nodes,
            w: vector(1 << 20),
            h: vec![0.0; d],
            sums: [vec![0.0; d], vec![0.0; d]],
            g0: vector(1 << 21),
            threads: Default::default(),
        }
    }

    /// One round of `parts` on one thread, or with the nodes split in two halves on two;
    /// returns a value that depends on every node's loss and message.
    pub fn round(&mut self, k: Kernels, threads: usize, parts: DianaParts) -> f32 {
        use lena_compress::Compressor;
        let d = self.w.len();
        // The words QSGD takes a node: four bytes a coordinate, a draw per 256 coordinates.
        let n: usize = (0..d)
            .step_by(256)
            .map(|c| (d - c).min(256).div_ceil(2))
            .sum();
        let (data, w, q, g0) = (&self.data, &self.w[..], &self.q, &self.g0[..]);
        let front = BareFront {
            data,
            w,
            random_rows: parts.random_rows,
            request_next: parts.request_next,
            scores: parts.scores,
        };
        let part =
            |nodes: &mut [DianaNode], base: usize, sum: &mut Vec<f32>, t: &mut DianaThread| {
                sum.fill(0.0);
                let mut acc = 0.0f32;
                let mut batch = BareBatch::default();
                if t.words.len() != 8 * n {
                    // Drawn once whatever the parts, so that a round without draws reads real words.
                    t.words = vec![0u64; 8 * n];
                    let mut states = [[0u64; 4]; 8];
                    for (l, s) in states.iter_mut().enumerate() {
                        *s = [l as u64 + 1, 0x9E37_79B9_7F4A_7C15, 5, 7];
                    }
                    k.xoshiro256pp_lanes(&mut states, &mut t.words);
                    t.g = vec![0.0; d];
                    t.scratch = vec![0.0; d];
                }
                let words = &mut t.words;
                for (group, nodes) in nodes.chunks_mut(8).enumerate() {
                    if parts.draws {
                        let mut states = [[0u64; 4]; 8];
                        for (s, node) in states.iter_mut().zip(nodes.iter()) {
                            *s = node.stream;
                        }
                        let count = nodes.len();
                        k.xoshiro256pp_lanes(&mut states[..count], &mut words[..count * n]);
                        for (s, node) in states.iter().zip(nodes.iter_mut()) {
                            node.stream = *s;
                        }
                    }
                    for i in 0..nodes.len() {
                        let m = base + 8 * group + i;
                        let next = nodes.get(i + 1).map(|n| n.seed);
                        let node = &mut nodes[i];
                        acc += front.node(k, m, &mut node.seed, next, &mut batch);
                        if parts.gradient {
                            let rows = batch.rows();
                            let lg = lena_kernels::LinearGradient {
                                lambda: 1e-3,
                                w,
                                rows: &rows,
                                coef: &batch.coef,
                                bias: &batch.bias,
                            };
                            k.linear_gradient_into(&lg, &mut t.g);
                        } else {
                            t.g.copy_from_slice(g0);
                        }
                        if parts.compress {
                            let mut rng = Words {
                                words: &words[i * n..(i + 1) * n],
                                taken: 0,
                            };
                            let shift = lena_compress::Shift {
                                h: &mut node.h,
                                a: BARE_DIANA_A,
                            };
                            q.compress_shifted(
                                k,
                                &mut t.g,
                                shift,
                                &mut rng,
                                &mut t.scratch,
                                &mut node.msg,
                            );
                            acc += (node.msg.bits() % 7) as f32;
                        }
                    }
                    if parts.sum {
                        for pair in nodes.chunks(2) {
                            let [a, b] = [&pair[0], pair.last().expect("one or two")];
                            t.levels.add_two(k, q, [&a.msg, &b.msg], pair.len(), sum);
                        }
                    }
                }
                acc + sum[d / 2]
            };
        let [t0, t1] = &mut self.threads;
        let acc = if threads <= 1 {
            part(&mut self.nodes, 0, &mut self.sums[0], t0)
        } else {
            let half = self.nodes.len() / 2;
            let (a, b) = self.nodes.split_at_mut(half);
            let [s0, s1] = &mut self.sums;
            let (x, y) = rayon::join(|| part(a, 0, s0, t0), || part(b, half, s1, t1));
            x + y
        };
        // The server: the mean of the differences, the parameters' step (too small to move
        // them far in thousands of rounds) and its shift's.
        let inv_m = 1.0 / self.nodes.len() as f32;
        k.vectorize(
            #[inline(always)]
            || {
                for (((wi, hi), a), b) in self
                    .w
                    .iter_mut()
                    .zip(&mut self.h)
                    .zip(&self.sums[0])
                    .zip(&self.sums[1])
                {
                    let mean = inv_m * (a + b);
                    *wi -= 1e-9 * (*hi + mean);
                    *hi += BARE_DIANA_A * mean;
                }
            },
        );
        acc
    }
}
