//! SIMD f32 vector kernels for the hot loops of distributed learning algorithms.
//!
//! Must not depend on: any other `lena-*` crate. Everything else in the workspace builds on it.
//!
//! Every kernel takes a [`Kernels`] context first. [`Kernels::detect`] picks the widest
//! instruction set the CPU offers at run time (pulp's `Arch`), [`Kernels::scalar`] forces pulp's
//! one-lane fallback (the same code path with a lane width of one), and the environment variable
//! `LENA_SIMD=scalar` makes `detect` choose the fallback. Each kernel has a plain, obviously
//! correct twin in [`mod@reference`] that accumulates in f64; tests compare both paths against it.
//!
//! ```
//! use lena_kernels::Kernels;
//! let k = Kernels::detect();
//! let (e, g, v) = (vec![1.0f32; 10], vec![2.0f32; 10], vec![0.5f32; 10]);
//! // ||e + 0.25 g - v||^2 without a temporary vector
//! let d = k.lin_dist2_sq(&e, 0.25, &g, &v);
//! assert!((d - 10.0).abs() < 1e-5);
//! ```
//!
//! # Determinism
//! A kernel's result may depend on the instruction set (the lane count changes the summation
//! order) but never on the number of threads: kernels are single-threaded.

mod fused;
mod reduce;
pub mod reference;
mod special;
mod update;

pub use fused::{Ema, ScanNorms, SkipUpdate};
use pulp::{Simd, WithSimd};

/// Which instruction set a [`Kernels`] context dispatches to.
#[derive(Clone, Copy, Debug)]
enum Path {
    Detected(pulp::Arch),
    Scalar,
}

/// Kernel dispatch context: created once, passed by value to every kernel call.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    path: Path,
}

struct Lanes;
impl WithSimd for Lanes {
    type Output = usize;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        S::F32_LANES
    }
}

impl Kernels {
    /// The widest instruction set this CPU supports, unless `LENA_SIMD=scalar` is set.
    ///
    /// The choice is made once per process and cached, so calling this in a hot loop costs a
    /// load, not an environment lookup.
    pub fn detect() -> Self {
        static CHOICE: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var("LENA_SIMD").as_deref() {
            Ok("scalar") => Self::scalar(),
            _ => Self {
                path: Path::Detected(pulp::Arch::new()),
            },
        })
    }

    /// pulp's one-lane fallback: the same kernel bodies with scalar registers.
    pub fn scalar() -> Self {
        Self { path: Path::Scalar }
    }

    /// Number of f32 lanes of the chosen instruction set (1 for the scalar path).
    pub fn f32_lanes(self) -> usize {
        self.run(Lanes)
    }

    /// Human-readable name of the chosen path, for run metadata.
    pub fn name(self) -> &'static str {
        match (self.path, self.f32_lanes()) {
            (Path::Scalar, _) => "scalar",
            (_, 16) => "x86-64-v4 (AVX-512)",
            (_, 8) => "x86-64-v3 (AVX2+FMA)",
            (_, 4) => "128-bit SIMD",
            _ => "scalar (no SIMD detected)",
        }
    }

    /// Runs `f` compiled for the chosen instruction set, so that the compiler can
    /// auto-vectorise its plain loops (for element-wise code that has no kernel here, such as
    /// a quantizer's level computation). Float results are the same as a scalar build's: the
    /// compiler neither reassociates nor contracts float operations.
    #[inline(always)]
    pub fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        self.run(f)
    }

    #[inline(always)]
    fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self.path {
            Path::Detected(arch) => arch.dispatch(op),
            Path::Scalar => op.with_simd(pulp::Scalar),
        }
    }
}

impl Default for Kernels {
    fn default() -> Self {
        Self::detect()
    }
}

#[cfg(test)]
mod tests;
