//! Fused multi-output passes over a node's state, for the error-feedback trigger rules.

use crate::Kernels;
use pulp::{Simd, WithSimd};

/// An exponential moving average `x <- a * g + b * x` updated during an [`Kernels::ef_scan`].
#[derive(Debug)]
pub struct Ema<'a> {
    /// The average, updated in place.
    pub x: &'a mut [f32],
    /// Weight of the new gradient.
    pub a: f32,
    /// Weight of the old average.
    pub b: f32,
}

/// The norms an [`Kernels::ef_scan`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScanNorms {
    /// `||g||^2`.
    pub g_sq: f32,
    /// `||e + alpha g - v||^2`.
    pub innovation_sq: f32,
    /// `||x_new||^2` of each average (0 where none was given).
    pub ema_sq: [f32; 2],
}

/// The error-feedback memory an [`Kernels::ef_scan`] reads, and where it writes the sum
/// `t = e + alpha g` it forms: what a node uploads (before any compression), and its memory
/// after a skip once the drift the skip applies is taken off.
#[derive(Debug)]
pub enum Memory<'a> {
    /// `e`, only read.
    Read(&'a [f32]),
    /// `e` read, `t` written into `out` (of `e`'s length).
    Into {
        /// The memory.
        e: &'a [f32],
        /// Receives `t`.
        out: &'a mut [f32],
    },
    /// A memory that owes the scan's `v`: the slice holds `u`, and the memory is `u - v`,
    /// each element one rounded subtraction (a skip's `t` kept as it was formed, the drift
    /// the skip applied, this round's `v`, not yet taken off). `t` is written over `u`.
    Owing(&'a mut [f32]),
    /// A zero memory whose scan's `v` is this slice (the scan's `v` argument then empty): each
    /// element of `v` is read, then `t = alpha g` (formed as `0 + alpha g`, as a zero memory
    /// read gives it) is written over it. A node whose memory is zero after an upload and
    /// kept in the place of the upload, which is also the `v` it applied.
    ZeroOver(&'a mut [f32]),
}

impl Memory<'_> {
    /// The memory's length.
    pub fn len(&self) -> usize {
        match self {
            Memory::Read(e) | Memory::Into { e, .. } => e.len(),
            Memory::Owing(u) | Memory::ZeroOver(u) => u.len(),
        }
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A linear model's minibatch gradient in factored form, the values never written out:
/// class `k`'s weights `g[k (p + 1) + f] = lambda w[k (p + 1) + f] + sum_i coef[k n + i]
/// rows[i][f]` for the `p` features (each element one product, then fused multiply-adds in row
/// order, as [`Kernels::lin_comb`]) and its bias `g[k (p + 1) + p] = bias[k]`.
///
/// A scan that takes it ([`Kernels::ef_scan_linear`]) forms each vector of the gradient where
/// it reads it, so the gradient's second product costs no pass of its own and no store; where
/// the values are needed, [`Kernels::linear_gradient_into`] writes them.
#[derive(Clone, Copy, Debug)]
pub struct LinearGradient<'a> {
    /// The L2 penalty.
    pub lambda: f32,
    /// The parameters, class by class: `p` weights, then the bias.
    pub w: &'a [f32],
    /// The minibatch's `n` rows, `p` features each (1 to 16 rows).
    pub rows: &'a [&'a [f32]],
    /// The rows' coefficients, class by class (`n` a class).
    pub coef: &'a [f32],
    /// Each class's bias gradient.
    pub bias: &'a [f32],
}

impl LinearGradient<'_> {
    /// The number of features `p` after checking the shapes.
    ///
    /// # Panics
    /// If there are no classes or not 1-16 rows, or a length disagrees with the others.
    fn features(&self) -> usize {
        let (c, n) = (self.bias.len(), self.rows.len());
        assert!(c > 0 && (1..=16).contains(&n), "linear gradient: shape");
        let p = self.rows[0].len();
        assert!(
            self.w.len() == c * (p + 1)
                && self.coef.len() == c * n
                && self.rows.iter().all(|r| r.len() == p),
            "linear gradient: lengths"
        );
        p
    }
}

/// Where a scan reads its gradient: a vector of lanes at a time, in order from the first, then
/// the elements after the last whole vector.
trait Source {
    /// The reader of a run of vectors formed alike ([`Source::run`]).
    type Run: Run;
    /// The gradient's length.
    fn len(&self) -> usize;
    /// Vector `i` (lanes `i L .. (i + 1) L`); called for `i = 0, 1, ...` in order, with
    /// [`Source::run`]'s calls among them.
    fn vector<S: Simd>(&mut self, simd: S, i: usize) -> S::f32s;
    /// The vectors from `i` on that one reader forms, the same floats as [`Source::vector`]'s:
    /// the end of their run (from `i`, none, to `end`) and the reader. Called with `i`
    /// increasing, the vector at the end (if below `end`) then read by `vector`.
    fn run<S: Simd>(&mut self, i: usize, end: usize) -> (usize, Self::Run);
    /// Element `j`.
    fn element(&self, j: usize) -> f32;
}

/// Reads the vectors of a run ([`Source::run`]), with what they share (coefficients, pointers)
/// taken once for the run rather than vector by vector.
trait Run {
    /// Vector `i` of the gradient.
    ///
    /// # Safety
    /// `i` lies in the run this reader was returned for.
    unsafe fn vector<S: Simd>(&self, simd: S, i: usize) -> S::f32s;
}

impl<'a> Source for &'a [f32] {
    type Run = &'a [f32];
    #[inline(always)]
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    #[inline(always)]
    fn vector<S: Simd>(&mut self, _: S, i: usize) -> S::f32s {
        S::as_simd_f32s(self).0[i]
    }
    #[inline(always)]
    fn run<S: Simd>(&mut self, _: usize, end: usize) -> (usize, &'a [f32]) {
        (end, self)
    }
    #[inline(always)]
    fn element(&self, j: usize) -> f32 {
        self[j]
    }
}

impl Run for &[f32] {
    #[inline(always)]
    unsafe fn vector<S: Simd>(&self, _: S, i: usize) -> S::f32s {
        S::as_simd_f32s(self).0[i]
    }
}

/// Calls `step` with vectors `from..to` of `src` and their indices, in order: each run's
/// through its reader ([`Source::run`]), each vector after a run through [`Source::vector`].
///
/// PERF: `step` is taken by value, an `#[inline(always)]` closure: handed `&mut step`, the
/// calls went through `FnMut for &mut F`, outside the path's target features, and LENA-m's
/// round took 5.4 ms against 0.6 (45th session).
#[inline(always)]
fn each_vector<S: Simd, G: Source>(
    src: &mut G,
    simd: S,
    from: usize,
    to: usize,
    mut step: impl FnMut(usize, S::f32s),
) {
    let mut i = from;
    while i < to {
        let (end, reader) = src.run::<S>(i, to);
        for i in i..end {
            // SAFETY: `i` lies in the run `reader` was returned for.
            step(i, unsafe { reader.vector(simd, i) });
        }
        if end < to {
            step(end, src.vector(simd, end));
        }
        i = end + 1;
    }
}

/// A [`LinearGradient`] formed as a scan reads it: `N` rows (0: as many as it has, counted
/// at run time), the class the last vector started in, where it starts and its coefficients.
struct Formed<'a, const N: usize> {
    g: LinearGradient<'a>,
    p: usize,
    class: usize,
    start: usize,
    coef: *const f32,
    rows: [*const f32; 16],
}

impl<'a, const N: usize> Formed<'a, N> {
    /// # Panics
    /// If the gradient's shape is inconsistent or it has not `N` rows (`N` > 0).
    fn new(g: LinearGradient<'a>) -> Self {
        let p = g.features();
        assert!(N == 0 || g.rows.len() == N, "formed gradient: rows");
        let mut rows = [std::ptr::null(); 16];
        for (ptr, row) in rows.iter_mut().zip(g.rows) {
            *ptr = row.as_ptr();
        }
        Self {
            g,
            p,
            class: 0,
            start: 0,
            coef: g.coef.as_ptr(),
            rows,
        }
    }

    /// Steps the class the last vector started in to the one element `j` lies in (at or after
    /// it), and returns the number of rows.
    #[inline(always)]
    fn advance(&mut self, j: usize) -> usize {
        let (stride, n) = (self.p + 1, if N == 0 { self.g.rows.len() } else { N });
        while j >= self.start + stride {
            self.start += stride;
            self.class += 1;
            // Never read past the last class's (the loop ends within it).
            self.coef = self.coef.wrapping_add(n);
        }
        n
    }

    /// Element `j`, in the class the last vector started in or after it: the bias, or the
    /// product and the multiply-adds in row order of a vector's lane (the same float), its class
    /// found by stepping from that one rather than by a division.
    #[inline(always)]
    fn at(&self, j: usize) -> f32 {
        let n = if N == 0 { self.g.rows.len() } else { N };
        let stride = self.p + 1;
        let (mut start, mut class) = (self.start, self.class);
        while j >= start + stride {
            start += stride;
            class += 1;
        }
        let f = j - start;
        if f == self.p {
            return self.g.bias[class];
        }
        let mut acc = self.g.lambda * self.g.w[j];
        for (c, x) in self.g.coef[class * n..(class + 1) * n]
            .iter()
            .zip(&self.g.rows[..n])
        {
            acc = c.mul_add(x[f], acc);
        }
        acc
    }
}

/// The lanes of `s` from `at` on.
#[inline(always)]
fn lanes_at<S: Simd>(s: &[f32], at: usize) -> S::f32s {
    S::as_simd_f32s(&s[at..at + S::F32_LANES]).0[0]
}

impl<const N: usize> Source for Formed<'_, N> {
    type Run = FormedRun<N>;
    #[inline(always)]
    fn len(&self) -> usize {
        self.g.w.len()
    }
    #[inline(always)]
    fn vector<S: Simd>(&mut self, simd: S, i: usize) -> S::f32s {
        let lanes = S::F32_LANES;
        let j = i * lanes;
        let n = self.advance(j);
        let f = j - self.start;
        let load =
            |s: *const f32, at: usize| unsafe { s.add(at).cast::<S::f32s>().read_unaligned() };
        if f + lanes <= self.p {
            // Within one class's weights: the same product and multiply-adds as lin_comb's,
            // lane by lane.
            // SAFETY: `f + lanes <= p`, every row's length (checked by `new`, which set the
            // first `n` pointers to the rows), and `j + lanes <= start + p < w.len()`; the
            // loads are unaligned. `coef` points at this class's `n` coefficients (`j` lies
            // within the parameters, so the class is one of the gradient's).
            let mut acc = simd.mul_f32s(simd.splat_f32s(self.g.lambda), load(self.g.w.as_ptr(), j));
            for r in 0..n {
                let (x, c) = (load(self.rows[r], f), unsafe { *self.coef.add(r) });
                acc = simd.mul_add_f32s(simd.splat_f32s(c), x, acc);
            }
            acc
        } else if self.p >= lanes {
            // PERF: across a bias (one vector in 49 of MNIST's), the class's lanes, the bias and
            // the next class's lanes, each lane the chain above, from loads masked to its lanes
            // (element by element these vectors took 11-14% of the scan's samples). The registers
            // this code takes cost the AVX2 loop about 5% of LENA's round until that path took
            // [`TightScan`] (docs/PERFORMANCE.md, 31st and 32nd sessions).
            let lo = self.p - f;
            let lam = simd.mul_f32s(simd.splat_f32s(self.g.lambda), load(self.g.w.as_ptr(), j));
            let mask = simd.mask_between_m32s(0, lo as u32);
            let mut acc = lam;
            for r in 0..n {
                // SAFETY: the lanes below `lo` read features `f .. p` of a row of `p`; `coef`
                // is this class's, as above.
                let (x, c) = unsafe {
                    (
                        simd.mask_load_ptr_f32s(mask, self.rows[r].add(f)),
                        *self.coef.add(r),
                    )
                };
                acc = simd.mul_add_f32s(simd.splat_f32s(c), x, acc);
            }
            let mut out =
                simd.select_f32s(mask.mask(), acc, simd.splat_f32s(self.g.bias[self.class]));
            if lo + 1 < lanes {
                // The next class's features `0 .. lanes - lo - 1` (at most `p`) in the lanes
                // after the bias; it exists, as the vector ends within the parameters.
                let mask = simd.mask_between_m32s(lo as u32 + 1, lanes as u32);
                let (coef, mut acc) = (self.coef.wrapping_add(n), lam);
                for r in 0..n {
                    // SAFETY: lane `l` reads feature `l - lo - 1`, within the row; the next
                    // class's `n` coefficients follow this class's.
                    let (x, c) = unsafe {
                        let at = self.rows[r].wrapping_sub(lo + 1);
                        (simd.mask_load_ptr_f32s(mask, at), *coef.add(r))
                    };
                    acc = simd.mul_add_f32s(simd.splat_f32s(c), x, acc);
                }
                out = simd.select_f32s(mask.mask(), acc, out);
            }
            out
        } else {
            // Classes narrower than a vector: element by element.
            let mut buf = [0.0f32; 16];
            let buf = &mut buf[..lanes];
            for (l, b) in buf.iter_mut().enumerate() {
                *b = self.at(j + l);
            }
            lanes_at::<S>(buf, 0)
        }
    }
    #[inline(always)]
    fn run<S: Simd>(&mut self, i: usize, end: usize) -> (usize, FormedRun<N>) {
        let lanes = S::F32_LANES;
        let n = self.advance(i * lanes);
        // The vectors that end within this class's weights: `(i + 1) L <= start + p`.
        let last = ((self.start + self.p) / lanes).clamp(i, end);
        let mut run = FormedRun {
            lambda: self.g.lambda,
            w: self.g.w.as_ptr(),
            rows: [std::ptr::null(); 16],
            coef: [0.0; 16],
            n,
        };
        for r in 0..n {
            // Feature `f` of row `r` at `rows[r] + start + f`, the element's own index.
            run.rows[r] = self.rows[r].wrapping_sub(self.start);
            // SAFETY: `coef` points at this class's `n` coefficients (`advance`).
            run.coef[r] = unsafe { *self.coef.add(r) };
        }
        (last, run)
    }
    #[inline(always)]
    fn element(&self, j: usize) -> f32 {
        self.at(j)
    }
}

/// A run of a [`Formed`] gradient's vectors within one class's weights: the class's
/// coefficients and each row's pointer offset by the class's start, taken once for the run.
struct FormedRun<const N: usize> {
    lambda: f32,
    w: *const f32,
    rows: [*const f32; 16],
    coef: [f32; 16],
    n: usize,
}

impl<const N: usize> Run for FormedRun<N> {
    #[inline(always)]
    unsafe fn vector<S: Simd>(&self, simd: S, i: usize) -> S::f32s {
        let j = i * S::F32_LANES;
        let n = if N == 0 { self.n } else { N };
        // SAFETY: vector `i` lies within one class's weights (the caller's run): its lanes are
        // parameters `j .. j + L` and features `j - start ..` of each row, all within bounds
        // (`Formed::run`); the loads are unaligned.
        let load = |s: *const f32| unsafe { s.wrapping_add(j).cast::<S::f32s>().read_unaligned() };
        // The same product and multiply-adds as `Formed::vector`'s, lane by lane.
        let mut acc = simd.mul_f32s(simd.splat_f32s(self.lambda), load(self.w));
        for r in 0..n {
            acc = simd.mul_add_f32s(simd.splat_f32s(self.coef[r]), load(self.rows[r]), acc);
        }
        acc
    }
}

/// How far ahead of its position the tight scan requests each state vector's lines, where
/// [`Kernels::scan_requests_ahead`] says so: 16 lines. PERF: on AMD EPYC Zen 4 (family 25 model
/// 17) the scan of 200 nodes' state formed from three rows took 0.46-0.55 ms with these
/// requests against 0.64-0.72 ms without, two threads, and LENA-m's round at M = 200 0.79-0.83
/// ms against 0.95-1.04 ms, alternated (44th session; 8 and 32 lines ahead were no better, 4
/// worse). There the scan's arithmetic alone, one node's state in cache, takes 0.31 ms: without
/// the requests the state's loads and the arithmetic did not overlap. docs/PERFORMANCE.md.
const SCAN_AHEAD_BYTES: usize = 1024;

/// How far ahead the tight scan also requests each state vector's lines into L2, with the
/// requests of [`SCAN_AHEAD_BYTES`]: 64 lines. PERF: the state of a large M comes from memory,
/// whose latency the L1 requests' kilobyte does not cover: on AMD EPYC Zen 4 (family 25 model
/// 17) at M = 60 000 the scan of every node's state, formed from three rows, took 1.10-1.45x
/// the state-touch bound where a pass with its traffic alone (three vectors read, two written)
/// took 0.87-1.02x; with these requests 164-177 ms against 201-235 ms (fastest, alternated
/// processes), LENA-m's round written out 207-238 ms against 246-289 (`round_profile --
/// bare-large`); at M = 200, the state in L3, the scan of 200 nodes 0.76-0.88 of the bound
/// against 0.87-0.90 (`scan_profile`; 2048 and 8192 bytes no better; 51st session,
/// docs/PERFORMANCE.md).
const SCAN_AHEAD_L2_BYTES: usize = 4096;

/// The body of [`Scan`]'s and [`TightScan`]'s `with_simd`, `$tight` choosing the loop over the
/// vectors: `false` indexes the state's slices as they come (each index checked); `true` cuts
/// each slice to the loop's length first, so that no index is checked, and runs one of two
/// copies of the loop (the requests ahead on or off). The same floats either way (test
/// `the_tight_scan_is_the_scan`).
///
/// PERF: the two loops are written out apart, the checked one as it was before the tight one
/// came: one loop for both (the slices cut or not, then one closure) compiled the AVX-512
/// path's scan otherwise, and LENA's round at M = 60 000 took 333-341 ms against 315-318
/// (alternated; docs/PERFORMANCE.md, 32nd session).
macro_rules! scan_with_simd {
    ($this:ident, $simd:ident, $S:ident, $tight:literal) => {{
        let mut src = $this.g;
        let n = src.len();
        let v = $this.v;
        // The memory read (`e`), or owed (`u`, the memory `u - v`), and where `t` goes: `e`'s
        // `t_out`, or over `u`. The slices a kind does not use are empty.
        let (e, mut u, mut t_out): (&[f32], &mut [f32], &mut [f32]) = match $this.memory {
            Memory::Read(e) => (e, &mut [], &mut []),
            Memory::Into { e, out } => (e, &mut [], out),
            Memory::Owing(u) | Memory::ZeroOver(u) => (&[], u, &mut []),
        };
        let (es, _) = $S::as_simd_f32s(e);
        let (vs, _) = $S::as_simd_f32s(v);
        let chunks = n / $S::F32_LANES;
        let head = chunks * $S::F32_LANES;
        let [m1, m2] = $this.ema;
        let (mut x1, a1, b1) = m1.map_or((&mut [][..], 0.0, 0.0), |m| (m.x, m.a, m.b));
        let (mut x2, a2, b2) = m2.map_or((&mut [][..], 0.0, 0.0), |m| (m.x, m.a, m.b));
        let alpha = $simd.splat_f32s($this.alpha);
        let (sa1, sb1) = ($simd.splat_f32s(a1), $simd.splat_f32s(b1));
        let (sa2, sb2) = ($simd.splat_f32s(a2), $simd.splat_f32s(b2));
        let zero = $simd.splat_f32s(0.0);
        let (mut g_acc, mut d_acc, mut m1_acc, mut m2_acc) = (zero, zero, zero, zero);
        if $tight {
            {
                let cut = |on: bool| if on { chunks } else { 0 };
                let (es, vs) = (
                    &es[..cut(MEM == READ || MEM == INTO)],
                    &vs[..cut(MEM != ZERO_OVER)],
                );
                let us =
                    &mut $S::as_mut_simd_f32s(&mut *u).0[..cut(MEM == OWING || MEM == ZERO_OVER)];
                let outs = &mut $S::as_mut_simd_f32s(&mut *t_out).0[..cut(MEM == INTO)];
                let x1s =
                    &mut $S::as_mut_simd_f32s(if E1 { &mut *x1 } else { &mut [] }).0[..cut(E1)];
                let x2s =
                    &mut $S::as_mut_simd_f32s(if E2 { &mut *x2 } else { &mut [] }).0[..cut(E2)];
                // The lines `SCAN_AHEAD_BYTES` ahead of each state vector's into L1, and those
                // `SCAN_AHEAD_L2_BYTES` ahead into L2 (the gradient's are formed or in cache), once
                // per line, where `Kernels::scan_requests_ahead` says so.
                let per_line = (64 / (4 * $S::F32_LANES)).max(1);
                let distance = (SCAN_AHEAD_BYTES / (4 * $S::F32_LANES)).max(1);
                let distance_l2 = (SCAN_AHEAD_L2_BYTES / (4 * $S::F32_LANES)).max(1);
                // Inlined at the two calls below, each with its own constant: two loops.
                let mut run = std::convert::identity(
                    #[inline(always)]
                    |ahead: bool| {
                        let (split, split_l2) = if ahead {
                            (
                                chunks.saturating_sub(distance),
                                chunks.saturating_sub(distance_l2),
                            )
                        } else {
                            (0, 0)
                        };
                        // One vector's work, from its gradient's lanes.
                        let step = std::convert::identity(
                            #[inline(always)]
                            |i: usize, g: $S::f32s| {
                                if i % per_line == 0 {
                                    // Each state vector's line at vector j, into L1 or L2.
                                    let request = |j: usize, l2: bool| {
                                        let line = |x: &$S::f32s| {
                                            if l2 {
                                                crate::block::prefetch_l2(x);
                                            } else {
                                                crate::block::prefetch(x);
                                            }
                                        };
                                        if MEM == OWING || MEM == ZERO_OVER {
                                            line(&us[j]);
                                        } else {
                                            line(&es[j]);
                                        }
                                        if MEM != ZERO_OVER {
                                            line(&vs[j]);
                                        }
                                        if E1 {
                                            line(&x1s[j]);
                                        }
                                        if E2 {
                                            line(&x2s[j]);
                                        }
                                    };
                                    if i < split {
                                        request(i + distance, false);
                                    }
                                    if i < split_l2 {
                                        request(i + distance_l2, true);
                                    }
                                }
                                let vi = if MEM == ZERO_OVER { us[i] } else { vs[i] };
                                let e = if MEM == OWING {
                                    $simd.sub_f32s(us[i], vi)
                                } else if MEM == ZERO_OVER {
                                    zero
                                } else {
                                    es[i]
                                };
                                g_acc = $simd.mul_add_f32s(g, g, g_acc);
                                let t = $simd.mul_add_f32s(alpha, g, e);
                                let d = $simd.sub_f32s(t, vi);
                                d_acc = $simd.mul_add_f32s(d, d, d_acc);
                                if MEM == INTO {
                                    outs[i] = t;
                                }
                                if MEM == OWING || MEM == ZERO_OVER {
                                    us[i] = t;
                                }
                                if E1 {
                                    let x = $simd.mul_add_f32s(sa1, g, $simd.mul_f32s(sb1, x1s[i]));
                                    x1s[i] = x;
                                    m1_acc = $simd.mul_add_f32s(x, x, m1_acc);
                                }
                                if E2 {
                                    let x = $simd.mul_add_f32s(sa2, g, $simd.mul_f32s(sb2, x2s[i]));
                                    x2s[i] = x;
                                    m2_acc = $simd.mul_add_f32s(x, x, m2_acc);
                                }
                            },
                        );
                        // PERF: runs of vectors formed alike (a linear model's gradient within
                        // one class's weights), their coefficients and pointers taken once a
                        // run, each vector after a run (across a bias) formed on its own. Formed
                        // vector by vector, each vector broadcast its three coefficients again,
                        // tested its class and kept the loop's count and pointers on the stack
                        // (AVX-512, three rows); by runs, LENA-m's round at M = 200 took
                        // 0.60-0.62 ms against 0.86-0.97 and on the AVX2 path 0.62-0.86 against
                        // 0.99-1.19 (AMD EPYC Zen 4, processes alternated; 45th session).
                        each_vector(&mut src, $simd, 0, chunks, step);
                    },
                );
                if $this.ahead { run(true) } else { run(false) }
            }
        } else {
            {
                let (us, _) = $S::as_mut_simd_f32s(&mut *u);
                let (outs, _) = $S::as_mut_simd_f32s(&mut *t_out);
                let (x1s, _) = $S::as_mut_simd_f32s(if E1 { &mut *x1 } else { &mut [] });
                let (x2s, _) = $S::as_mut_simd_f32s(if E2 { &mut *x2 } else { &mut [] });
                for i in 0..chunks {
                    let g = src.vector($simd, i);
                    let vi = if MEM == ZERO_OVER { us[i] } else { vs[i] };
                    let e = if MEM == OWING {
                        $simd.sub_f32s(us[i], vi)
                    } else if MEM == ZERO_OVER {
                        zero
                    } else {
                        es[i]
                    };
                    g_acc = $simd.mul_add_f32s(g, g, g_acc);
                    let t = $simd.mul_add_f32s(alpha, g, e);
                    let d = $simd.sub_f32s(t, vi);
                    d_acc = $simd.mul_add_f32s(d, d, d_acc);
                    if MEM == INTO {
                        outs[i] = t;
                    }
                    if MEM == OWING || MEM == ZERO_OVER {
                        us[i] = t;
                    }
                    if E1 {
                        let x = $simd.mul_add_f32s(sa1, g, $simd.mul_f32s(sb1, x1s[i]));
                        x1s[i] = x;
                        m1_acc = $simd.mul_add_f32s(x, x, m1_acc);
                    }
                    if E2 {
                        let x = $simd.mul_add_f32s(sa2, g, $simd.mul_f32s(sb2, x2s[i]));
                        x2s[i] = x;
                        m2_acc = $simd.mul_add_f32s(x, x, m2_acc);
                    }
                }
            }
        }
        let mut out = ScanNorms {
            g_sq: $simd.reduce_sum_f32s(g_acc),
            innovation_sq: $simd.reduce_sum_f32s(d_acc),
            ema_sq: [$simd.reduce_sum_f32s(m1_acc), $simd.reduce_sum_f32s(m2_acc)],
        };
        for i in head..n {
            let g = src.element(i);
            out.g_sq = g.mul_add(g, out.g_sq);
            let vi = if MEM == ZERO_OVER { u[i] } else { v[i] };
            let ei = if MEM == OWING {
                u[i] - vi
            } else if MEM == ZERO_OVER {
                0.0
            } else {
                e[i]
            };
            let t = $this.alpha.mul_add(g, ei);
            let d = t - vi;
            out.innovation_sq = d.mul_add(d, out.innovation_sq);
            if MEM == INTO {
                t_out[i] = t;
            }
            if MEM == OWING || MEM == ZERO_OVER {
                u[i] = t;
            }
            if E1 {
                let x = a1.mul_add(g, b1 * x1[i]);
                x1[i] = x;
                out.ema_sq[0] = x.mul_add(x, out.ema_sq[0]);
            }
            if E2 {
                let x = a2.mul_add(g, b2 * x2[i]);
                x2[i] = x;
                out.ema_sq[1] = x.mul_add(x, out.ema_sq[1]);
            }
        }
        // Keep the borrow checker aware that the averages and memory were written.
        let _ = (&mut x1, &mut x2, &mut u, &mut t_out);
        out
    }};
}

/// [`Scan`]'s memory kinds ([`Memory`]'s variants), as its const parameter.
const READ: u8 = 0;
/// See [`READ`].
const INTO: u8 = 1;
/// See [`READ`].
const OWING: u8 = 2;
/// See [`READ`].
const ZERO_OVER: u8 = 3;

struct Scan<'a, G, const E1: bool, const E2: bool, const MEM: u8> {
    /// Whether the tight loop requests the state's lines ahead ([`Kernels::scan_requests_ahead`]).
    ahead: bool,
    memory: Memory<'a>,
    alpha: f32,
    g: G,
    v: &'a [f32],
    ema: [Option<Ema<'a>>; 2],
}

impl<G: Source, const E1: bool, const E2: bool, const MEM: u8> WithSimd
    for Scan<'_, G, E1, E2, MEM>
{
    type Output = ScanNorms;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> ScanNorms {
        scan_with_simd!(self, simd, S, false)
    }
}

/// [`Scan`] with the loop that checks no index (see [`scan_with_simd`]).
///
/// PERF: every path takes it, but on Intel model 167 only the AVX2 one does. With 8 lanes the
/// checked loop ran short of registers and kept its pointers, its count and q's test on the
/// stack, where this one keeps them in registers: LENA's round 0.864-1.024 -> 0.847-0.930 ms at
/// M = 200 and 406.6 -> 314.7 ms at M = 60 000 (Intel Xeon family 6 model 167,
/// `LENA_SIMD=x86-64-v3`, alternated; 32nd session). On AVX-512 the checked loop formed a linear model's gradient with
/// its pointers reloaded from the stack too: this loop made LENA's round at M = 200 1-6% faster
/// in six alternated runs and no slower at M = 60 000 (Intel model 207, 41st session), where on
/// model 167 it had read a node's state from memory more slowly (M = 60 000: 346-366 ms a round
/// against 306-323; 32nd session), so that kind keeps [`Scan`]. docs/PERFORMANCE.md.
struct TightScan<'a, G, const E1: bool, const E2: bool, const MEM: u8>(Scan<'a, G, E1, E2, MEM>);

impl<G: Source, const E1: bool, const E2: bool, const MEM: u8> WithSimd
    for TightScan<'_, G, E1, E2, MEM>
{
    type Output = ScanNorms;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> ScanNorms {
        let this = self.0;
        scan_with_simd!(this, simd, S, true)
    }
}

/// A linear model's gradient formed by `G`, written into `out` as it is formed where `WRITE`
/// (`out` empty otherwise), and its squared distance to `other` summed as
/// [`Kernels::dist2_sq`] sums it (see [`Kernels::linear_gradient_dist`]).
struct WriteDist<'a, G, const WRITE: bool> {
    src: G,
    other: &'a [f32],
    out: &'a mut [f32],
}

impl<G: Source, const WRITE: bool> WithSimd for WriteDist<'_, G, WRITE> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let Self {
            mut src,
            other,
            out,
        } = self;
        let n = src.len();
        let chunks = n / S::F32_LANES;
        let head = chunks * S::F32_LANES;
        // `dist2_sq` sums whole groups of four vectors into four accumulators, vector `i` into
        // accumulator `i % 4`, then the vectors after the last group into the first.
        let grouped = chunks / 4 * 4;
        let ys = &S::as_simd_f32s(other).0[..chunks];
        let outs = &mut S::as_mut_simd_f32s(&mut *out).0[..if WRITE { chunks } else { 0 }];
        let zero = simd.splat_f32s(0.0);
        let [mut a0, mut a1, mut a2, mut a3] = [zero; 4];
        // Vector `i` within the groups: into `a0`, which then holds accumulator `(i + 1) % 4`'s
        // sum (the four turned by one).
        each_vector(
            &mut src,
            simd,
            0,
            grouped,
            #[inline(always)]
            |i, g| {
                if WRITE {
                    outs[i] = g;
                }
                let d = simd.sub_f32s(g, ys[i]);
                let t = simd.mul_add_f32s(d, d, a0);
                (a0, a1, a2, a3) = (a1, a2, a3, t);
            },
        );
        // After whole groups the four are back in their places.
        each_vector(
            &mut src,
            simd,
            grouped,
            chunks,
            #[inline(always)]
            |i, g| {
                if WRITE {
                    outs[i] = g;
                }
                let d = simd.sub_f32s(g, ys[i]);
                a0 = simd.mul_add_f32s(d, d, a0);
            },
        );
        let sum = simd.add_f32s(simd.add_f32s(a0, a1), simd.add_f32s(a2, a3));
        let mut r = simd.reduce_sum_f32s(sum);
        for j in head..n {
            let g = src.element(j);
            if WRITE {
                out[j] = g;
            }
            let d = g - other[j];
            r = d.mul_add(d, r);
        }
        r
    }
}

impl Kernels {
    /// One pass over a node's state: `||g||^2`, the trigger norm `||e + alpha g - v||^2`, up to
    /// two exponential averages `x <- a g + b x` updated in place with their new squared norms,
    /// and, as `memory` says, `t = e + alpha g` written into a vector of its own, over a
    /// memory that owes `v`, or over `v` itself where the memory is zero ([`Memory`]; `v` is
    /// then the memory's slice, and the argument empty).
    ///
    /// This replaces six separate passes of LENA's node step (gradient norm, innovation,
    /// momentum drift, running average and its norm, and the memory's update). Each average is
    /// updated element-wise with the same operation as [`Kernels::axpby`], and `t` is
    /// [`Kernels::axpy`]'s `e + alpha g` (an owed memory's `e` is `u - v` rounded first), so
    /// both are bit-identical to those; the norms are summed in another order than
    /// [`Kernels::norm2_sq`] and may differ in the last bits.
    ///
    /// # Panics
    /// If any slice's length differs from `g`'s (`v` not empty with [`Memory::ZeroOver`]).
    pub fn ef_scan(
        self,
        memory: Memory<'_>,
        alpha: f32,
        g: &[f32],
        v: &[f32],
        ema1: Option<Ema<'_>>,
        ema2: Option<Ema<'_>>,
    ) -> ScanNorms {
        self.scan_from(memory, alpha, g, v, ema1, ema2)
    }

    /// [`Kernels::ef_scan`] with a linear model's gradient in factored form, each vector of it
    /// formed where the scan reads it: the same norms, averages and `t`, bit for bit, as
    /// `ef_scan` given the values [`Kernels::linear_gradient_into`] writes. Each element is
    /// one chain of a product and a multiply-add per row, vector after vector: with many rows
    /// the chains' latency exceeds what a scan waiting on memory hides (a linear model hands on
    /// at most 8).
    ///
    /// # Panics
    /// If the gradient's shape is inconsistent ([`LinearGradient`]) or a slice's length
    /// differs from its parameters'.
    pub fn ef_scan_linear(
        self,
        memory: Memory<'_>,
        alpha: f32,
        g: &LinearGradient<'_>,
        v: &[f32],
        ema1: Option<Ema<'_>>,
        ema2: Option<Ema<'_>>,
    ) -> ScanNorms {
        match g.rows.len() {
            1 => self.scan_from(memory, alpha, Formed::<1>::new(*g), v, ema1, ema2),
            2 => self.scan_from(memory, alpha, Formed::<2>::new(*g), v, ema1, ema2),
            3 => self.scan_from(memory, alpha, Formed::<3>::new(*g), v, ema1, ema2),
            4 => self.scan_from(memory, alpha, Formed::<4>::new(*g), v, ema1, ema2),
            _ => self.scan_from(memory, alpha, Formed::<0>::new(*g), v, ema1, ema2),
        }
    }

    /// Writes the values of a gradient in factored form into `out`: the weights by
    /// [`Kernels::lin_comb_classes`] for more than four rows, else by [`Kernels::lin_comb2`]
    /// for each pair of classes and [`Kernels::lin_comb`] for an odd last one (the same floats
    /// each way), the biases as given.
    ///
    /// # Panics
    /// If the gradient's shape is inconsistent or `out` is not as long as its parameters.
    pub fn linear_gradient_into(self, g: &LinearGradient<'_>, out: &mut [f32]) {
        let p = g.features();
        let (c, n) = (g.bias.len(), g.rows.len());
        assert_eq!(out.len(), g.w.len(), "linear_gradient_into: length");
        for (class, b) in g.bias.iter().enumerate() {
            out[class * (p + 1) + p] = *b;
        }
        if n > 4 {
            self.lin_comb_classes(out, p + 1, g.lambda, g.w, g.coef, g.rows);
            return;
        }
        let weights = |class: usize| &g.w[class * (p + 1)..class * (p + 1) + p];
        let coef = |class: usize| &g.coef[class * n..(class + 1) * n];
        let mut class = 0;
        while class < c {
            let range = class * (p + 1)..(class + 1) * (p + 1);
            if class + 1 < c {
                let (g0, g1) = out[range.start..range.end + p + 1].split_at_mut(p + 1);
                self.lin_comb2_without_norms(
                    [&mut g0[..p], &mut g1[..p]],
                    g.lambda,
                    [weights(class), weights(class + 1)],
                    [coef(class), coef(class + 1)],
                    g.rows,
                );
                class += 2;
            } else {
                self.lin_comb(
                    &mut out[range.start..range.start + p],
                    g.lambda,
                    weights(class),
                    coef(class),
                    g.rows,
                );
                class += 1;
            }
        }
    }

    /// [`Kernels::linear_gradient_into`]'s values written into `out` (where one is given) and,
    /// in the same pass, their squared distance to `other` as [`Kernels::dist2_sq`] returns it
    /// (either order: `d^2` is `(-d)^2`): the same floats as the two calls, without reading the
    /// values back (a lazy rule's innovation `||g - g_hat||^2` for a gradient that is also its
    /// upload, or LASG's distance between two points' gradients, the second never written).
    ///
    /// # Panics
    /// If the gradient's shape is inconsistent ([`LinearGradient`]) or `other` or `out` is not
    /// as long as its parameters.
    pub fn linear_gradient_dist(
        self,
        g: &LinearGradient<'_>,
        other: &[f32],
        out: Option<&mut [f32]>,
    ) -> f32 {
        let n = g.w.len();
        assert!(
            other.len() == n && out.as_ref().is_none_or(|o| o.len() == n),
            "linear_gradient_dist: length mismatch"
        );
        fn run<G: Source>(k: Kernels, src: G, other: &[f32], out: Option<&mut [f32]>) -> f32 {
            match out {
                Some(out) => k.run(WriteDist::<G, true> { src, other, out }),
                None => k.run(WriteDist::<G, false> {
                    src,
                    other,
                    out: &mut [],
                }),
            }
        }
        match g.rows.len() {
            1 => run(self, Formed::<1>::new(*g), other, out),
            2 => run(self, Formed::<2>::new(*g), other, out),
            3 => run(self, Formed::<3>::new(*g), other, out),
            4 => run(self, Formed::<4>::new(*g), other, out),
            _ => run(self, Formed::<0>::new(*g), other, out),
        }
    }

    fn scan_from<G: Source>(
        self,
        memory: Memory<'_>,
        alpha: f32,
        g: G,
        v: &[f32],
        ema1: Option<Ema<'_>>,
        ema2: Option<Ema<'_>>,
    ) -> ScanNorms {
        let n = g.len();
        // A memory over `v` holds it: the argument is then empty.
        let v_len = if matches!(memory, Memory::ZeroOver(_)) {
            0
        } else {
            n
        };
        assert!(
            memory.len() == n && v.len() == v_len,
            "ef_scan: length mismatch"
        );
        if let Memory::Into { out, .. } = &memory {
            assert_eq!(out.len(), n, "ef_scan: output length mismatch");
        }
        for m in [&ema1, &ema2].into_iter().flatten() {
            assert_eq!(m.x.len(), n, "ef_scan: average length mismatch");
        }
        fn scan<G: Source, const E1: bool, const E2: bool>(
            k: Kernels,
            memory: Memory<'_>,
            alpha: f32,
            g: G,
            v: &[f32],
            ema: [Option<Ema<'_>>; 2],
        ) -> ScanNorms {
            // The scan with the memory's kind as its constant.
            macro_rules! run {
                ($mem:ident) => {{
                    let scan = Scan::<G, E1, E2, $mem> {
                        ahead: k.scan_requests_ahead(),
                        memory,
                        alpha,
                        g,
                        v,
                        ema,
                    };
                    // The loop that checks no index, but on Intel model 167 the AVX2 path's
                    // alone (its AVX-512 and scalar paths keep the checked one; see
                    // `TightScan`).
                    if crate::intel_model_167_here() {
                        k.run_v3(TightScan(scan))
                            .unwrap_or_else(|TightScan(scan)| k.run(scan))
                    } else {
                        k.run(TightScan(scan))
                    }
                }};
            }
            match memory {
                Memory::Read(_) => run!(READ),
                Memory::Into { .. } => run!(INTO),
                Memory::Owing(_) => run!(OWING),
                Memory::ZeroOver(_) => run!(ZERO_OVER),
            }
        }
        let ema = [ema1, ema2];
        match (ema[0].is_some(), ema[1].is_some()) {
            (false, false) => scan::<G, false, false>(self, memory, alpha, g, v, ema),
            (true, false) => scan::<G, true, false>(self, memory, alpha, g, v, ema),
            (false, true) => scan::<G, false, true>(self, memory, alpha, g, v, ema),
            (true, true) => scan::<G, true, true>(self, memory, alpha, g, v, ema),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Ema, Formed, INTO, LinearGradient, Memory, OWING, READ, Scan, Source, TightScan, ZERO_OVER,
    };
    use crate::Kernels;

    /// `$check!(e1, e2, memory)` for every combination of averages and memory kinds.
    macro_rules! for_each_memory {
        ($check:ident) => {
            for_each_memory!($check, READ);
            for_each_memory!($check, INTO);
            for_each_memory!($check, OWING);
            for_each_memory!($check, ZERO_OVER);
        };
        ($check:ident, $mem:ident) => {
            $check!(false, false, $mem);
            $check!(true, false, $mem);
            $check!(false, true, $mem);
            $check!(true, true, $mem);
        };
    }

    /// Values in [-1, 1] from a seed (splitmix64), with a NaN and an infinity at `seed`-chosen
    /// places in long vectors.
    fn vector(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect();
        if n > 100 {
            v[(seed as usize * 7) % n] = f32::NAN;
            v[(seed as usize * 13) % n] = f32::INFINITY;
        }
        v
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// One scan of `g` by [`Scan`] or [`TightScan`]: its norms, averages and `t` (written into
    /// a vector of its own, over the owed memory, over `v`, or nowhere: then the memory as it
    /// was).
    fn run<G: Source, const E1: bool, const E2: bool, const MEM: u8>(
        k: Kernels,
        tight: bool,
        g: G,
    ) -> [Vec<u32>; 4] {
        let n = g.len();
        let (mut v, mut e) = (vector(n, 2), vector(n, 1));
        let (mut m1, mut m2, mut out) = (vector(n, 4), vector(n, 5), vec![0.0f32; n]);
        let memory = match MEM {
            READ => Memory::Read(&e),
            INTO => Memory::Into {
                e: &e,
                out: &mut out,
            },
            OWING => Memory::Owing(&mut e),
            _ => Memory::ZeroOver(&mut v),
        };
        let v_arg: &[f32] = if MEM == ZERO_OVER { &[] } else { &vector(n, 2) };
        let scan = Scan::<G, E1, E2, MEM> {
            ahead: k.scan_requests_ahead(),
            memory,
            alpha: 0.05,
            g,
            v: v_arg,
            ema: [
                E1.then(|| Ema {
                    x: &mut m1[..],
                    a: 0.05,
                    b: 0.9,
                }),
                E2.then(|| Ema {
                    x: &mut m2[..],
                    a: 0.5,
                    b: 0.25,
                }),
            ],
        };
        let r = if tight {
            k.run(TightScan(scan))
        } else {
            k.run(scan)
        };
        let norms = [r.g_sq, r.innovation_sq, r.ema_sq[0], r.ema_sq[1]];
        let t = match MEM {
            INTO => &out,
            ZERO_OVER => &v,
            _ => &e,
        };
        [bits(&norms), bits(&m1), bits(&m2), bits(t)]
    }

    /// Every combination of averages and memory kinds.
    fn both<G: Source>(k: Kernels, g: impl Fn() -> G, what: &str) {
        macro_rules! check {
            ($e1:literal, $e2:literal, $mem:ident) => {
                assert_eq!(
                    run::<G, $e1, $e2, $mem>(k, true, g()),
                    run::<G, $e1, $e2, $mem>(k, false, g()),
                    "{what}: averages {} {}, memory {} ({}, requests {})",
                    $e1,
                    $e2,
                    stringify!($mem),
                    k.name(),
                    k.scan_requests_ahead()
                );
            };
        }
        for_each_memory!(check);
    }

    /// Gradients in factored form, `(p, classes, rows)`: MNIST's shape, classes narrower than a
    /// vector, vectors that end in a group of four or not, with a tail or not, each count of
    /// rows compiled apart and one counted at run time (five).
    const FORMED_SHAPES: [(usize, usize, usize); 9] = [
        (784, 10, 3),
        (784, 10, 1),
        (17, 4, 3),
        (17, 4, 2),
        (5, 3, 2),
        (40, 5, 4),
        (33, 3, 5),
        (63, 2, 3),
        (64, 7, 2),
    ];

    /// `f` given a gradient in factored form of `rows` rows of `p` features and `classes`
    /// classes, its values from `seed` on (parameters, coefficients, biases, then the rows).
    fn with_formed(
        p: usize,
        classes: usize,
        rows: usize,
        seed: u64,
        f: impl FnOnce(LinearGradient<'_>),
    ) {
        let x: Vec<Vec<f32>> = (0..rows).map(|r| vector(p, seed + 3 + r as u64)).collect();
        let x: Vec<&[f32]> = x.iter().map(|r| &r[..]).collect();
        let (w, coef, bias) = (
            vector(classes * (p + 1), seed),
            vector(classes * rows, seed + 1),
            vector(classes, seed + 2),
        );
        f(LinearGradient {
            lambda: 1e-3,
            w: &w,
            rows: &x,
            coef: &coef,
            bias: &bias,
        });
    }

    /// `linear_gradient_dist` writes `linear_gradient_into`'s values (or writes nothing) and
    /// returns `dist2_sq`'s distance bit for bit, taken either way round, on every path, for shapes whose vectors end in a group of four or
    /// not, with a tail or not, classes wider and narrower than a vector, and each count of
    /// rows compiled apart and one counted at run time.
    #[test]
    fn the_formed_distance_is_the_written_gradient_s() {
        for k in Kernels::available() {
            for (p, classes, rows) in FORMED_SHAPES {
                let n = classes * (p + 1);
                let other = vector(n, 20);
                with_formed(p, classes, rows, 21, |lg| {
                    let mut written = vec![0.0f32; n];
                    k.linear_gradient_into(&lg, &mut written);
                    let expected = k.dist2_sq(&written, &other);
                    let mut out = vec![f32::NAN; n];
                    let got = k.linear_gradient_dist(&lg, &other, Some(&mut out));
                    let what = format!("{rows} rows of {p}, {classes} classes ({})", k.name());
                    assert_eq!(bits(&out), bits(&written), "values, {what}");
                    assert_eq!(got.to_bits(), expected.to_bits(), "distance, {what}");
                    // Not written, and the other way round: the same distance.
                    let alone = k.linear_gradient_dist(&lg, &other, None);
                    assert_eq!(alone.to_bits(), expected.to_bits(), "alone, {what}");
                    let reversed = k.dist2_sq(&other, &written);
                    assert_eq!(alone.to_bits(), reversed.to_bits(), "reversed, {what}");
                });
            }
        }
    }

    /// [`TightScan`] (the loop that checks no index, taken on the AVX2 path) gives [`Scan`]'s
    /// norms, averages and `t` bit for bit (each memory kind) on every path, with its requests ahead on
    /// and off, for a gradient in values of lengths either side of the lanes and of the
    /// requests' distance, and one formed from rows across classes' biases (the tight loop
    /// forms runs of vectors within a class by `Source::run`, the checked one each vector by
    /// `Source::vector`), with each count of rows compiled apart and one counted at run time.
    #[test]
    fn the_tight_scan_is_the_scan() {
        let paths = Kernels::available().into_iter();
        for k in paths.flat_map(|k| [false, true].map(|on| k.with_scan_requests_ahead(on))) {
            for n in [1, 7, 8, 9, 15, 16, 17, 33, 255, 256, 257, 300, 1000, 7850] {
                let g = vector(n, 6);
                both(k, || &g[..], &format!("values, {n}"));
            }
            for (p, classes, rows) in FORMED_SHAPES {
                with_formed(p, classes, rows, 7, |lg| {
                    let what = format!("formed, {rows} rows of {p}, {classes} classes");
                    match rows {
                        1 => both(k, || Formed::<1>::new(lg), &what),
                        2 => both(k, || Formed::<2>::new(lg), &what),
                        3 => both(k, || Formed::<3>::new(lg), &what),
                        4 => both(k, || Formed::<4>::new(lg), &what),
                        _ => both(k, || Formed::<0>::new(lg), &what),
                    }
                });
            }
        }
    }
}
