//! SIMD f32 vector kernels for the hot loops of distributed learning algorithms.
//!
//! Must not depend on: any other `lena-*` crate. Everything else in the workspace builds on it.
//!
//! Every kernel takes a [`Kernels`] context first. [`Kernels::detect`] picks the widest
//! instruction set the CPU offers at run time (pulp's `Arch`), [`Kernels::scalar`] forces pulp's
//! one-lane fallback (the same code path with a lane width of one), and the environment variable
//! `LENA_SIMD` (`scalar`, `x86-64-v3`, `x86-64-v4`) makes `detect` choose a narrower path, e.g.
//! to repeat on an AVX-512 machine a result measured with AVX2. [`Kernels::available`] lists every
//! path the CPU runs. Each kernel has a plain, obviously correct twin in [`mod@reference`] that
//! accumulates in f64; tests compare every available path against it.
//!
//! Besides the f32 kernels, [`Kernels::xoshiro256pp_lanes`] advances several xoshiro256++ streams
//! together, one per 64-bit lane (eight with AVX-512, four with AVX2), with exactly the words of
//! [`xoshiro256pp_next`] on each stream alone.
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

mod alloc;
mod block;
mod conv;
mod dense;
mod fused;
mod pool;
mod prefix;
mod random;
mod reduce;
pub mod reference;
mod rowsum;
mod sparse;
mod special;
mod update;

pub use alloc::LineAligned;
pub use conv::ConvShape;
pub use dense::DENSE_PIECE;
pub use fused::{Ema, LinearGradient, Memory, ScanNorms};
use pulp::{Simd, WithSimd};
pub use random::{xoshiro256pp_back, xoshiro256pp_next};
pub use sparse::{ClassPanel, ClassVector, NonzeroRows};

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
    /// Whether the full-batch products bring the caller's next block into L2 while they work.
    ahead: bool,
    /// Whether the fused node scan requests its state's lines ahead of its position.
    scan_ahead: bool,
}

struct Lanes;
impl WithSimd for Lanes {
    type Output = usize;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        S::F32_LANES
    }
}

/// A parameter outside its allowed range: the one shape in which every lena crate that checks
/// parameters reports one (each crate's error wraps it with `#[from]`).
///
/// `field` is the parameter's path in a config file as far as the crate that checked it knows
/// it (`levels`, `drift.gamma`); a crate that nests another's parameters prefixes its own table
/// with [`BadParam::within`] (`algorithm.compressor.levels`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {expected}, got {found}")]
pub struct BadParam {
    /// The parameter's path, e.g. `algorithm.beta`.
    pub field: std::borrow::Cow<'static, str>,
    /// What it must be, e.g. `in (0, 1]`.
    pub expected: std::borrow::Cow<'static, str>,
    /// The value given, as written.
    pub found: String,
}

impl BadParam {
    /// `field` must be `expected`; `found` was given.
    pub fn new(
        field: impl Into<std::borrow::Cow<'static, str>>,
        expected: impl Into<std::borrow::Cow<'static, str>>,
        found: impl ToString,
    ) -> Self {
        Self {
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// The same error with `table.` before the field (`within("algorithm")`: `beta` becomes
    /// `algorithm.beta`).
    pub fn within(mut self, table: &str) -> Self {
        self.field = format!("{table}.{}", self.field).into();
        self
    }
}

/// `LENA_SIMD` names a path this CPU does not run.
#[derive(Debug, thiserror::Error)]
#[error("LENA_SIMD={value:?}: expected one of {PATH_NAMES:?} that this CPU runs ({runs})")]
pub struct UnknownPath {
    /// The variable's value.
    pub value: String,
    /// The paths this CPU runs, comma-separated.
    pub runs: String,
}

/// The names [`Kernels::named`] accepts, widest first.
pub const PATH_NAMES: [&str; 3] = ["x86-64-v4", "x86-64-v3", "scalar"];

impl Kernels {
    /// The widest instruction set this CPU supports, or the one `LENA_SIMD` names if the CPU
    /// runs it (an unknown or unsupported `LENA_SIMD` is ignored here: binaries check it up
    /// front with [`Kernels::from_env`]).
    ///
    /// The choice is made once per process and cached, so calling this in a hot loop costs a
    /// load, not an environment lookup.
    pub fn detect() -> Self {
        static CHOICE: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| {
            Self::from_env().ok().flatten().unwrap_or(Self {
                path: Path::Detected(pulp::Arch::new()),
                ahead: requests_ahead_here(),
                scan_ahead: scan_requests_here(),
            })
        })
    }

    /// The path `LENA_SIMD` asks for: `None` if unset or empty, an error naming the value and
    /// what this CPU runs if the name is unknown or the CPU lacks the instruction set.
    pub fn from_env() -> Result<Option<Self>, UnknownPath> {
        match std::env::var("LENA_SIMD") {
            Ok(v) if !v.is_empty() => Self::named(&v).map(Some).ok_or_else(|| UnknownPath {
                runs: PATH_NAMES
                    .into_iter()
                    .filter(|n| Self::named(n).is_some())
                    .collect::<Vec<_>>()
                    .join(", "),
                value: v,
            }),
            _ => Ok(None),
        }
    }

    /// The path called `name` (one of [`PATH_NAMES`]), if this CPU runs it.
    pub fn named(name: &str) -> Option<Self> {
        let path = match name {
            "scalar" => Path::Scalar,
            #[cfg(target_arch = "x86_64")]
            "x86-64-v3" => Path::Detected(pulp::Arch::V3(pulp::x86::V3::try_new()?)),
            #[cfg(target_arch = "x86_64")]
            "x86-64-v4" => Path::Detected(pulp::Arch::V4(pulp::x86::V4::try_new()?)),
            _ => return None,
        };
        Some(Self {
            path,
            ahead: requests_ahead_here(),
            scan_ahead: scan_requests_here(),
        })
    }

    /// Every path this CPU runs, widest first, the scalar fallback last: tests run each
    /// kernel on all of them.
    pub fn available() -> Vec<Self> {
        PATH_NAMES.into_iter().filter_map(Self::named).collect()
    }

    /// pulp's one-lane fallback: the same kernel bodies with scalar registers.
    pub fn scalar() -> Self {
        Self {
            path: Path::Scalar,
            ahead: requests_ahead_here(),
            scan_ahead: scan_requests_here(),
        }
    }

    /// Whether [`Self::dot_block`] and [`Self::add_outer_block`] bring the caller's next block of
    /// rows into L2 while they work (a hint: no result depends on it). The default depends on the
    /// CPU, as measured: off on Intel family 6 model 167, where it made the full-batch gradient 4%
    /// slower, on elsewhere (10-13% faster on Intel family 6 model 207, and helpful on AMD Zen 5).
    pub fn requests_ahead(self) -> bool {
        self.ahead
    }

    /// The same path with the full-batch products' requests ahead on or off, to measure both on
    /// one machine (`gradient_profile` does).
    #[must_use]
    pub fn with_requests_ahead(self, on: bool) -> Self {
        Self { ahead: on, ..self }
    }

    /// Whether [`Self::ef_scan`] and [`Self::ef_scan_linear`] request the lines of the node's
    /// state (memory, last v, q, averages) a kilobyte ahead of where they read into L1, and four
    /// kilobytes ahead into L2 (hints: no result depends on them). The default depends on the
    /// CPU, as measured: on for AMD, where it made LENA-m's round at M = 200 about a sixth faster
    /// on Zen 4 (the scan's loads and arithmetic overlap), and the L2 requests its scan at
    /// M = 60 000, from memory, about a fifth faster; off elsewhere (Intel, where requests in
    /// the scan were measured without a gain).
    /// `LENA_SCAN_REQUESTS=on` or `off` sets it for a process, to measure both.
    pub fn scan_requests_ahead(self) -> bool {
        self.scan_ahead
    }

    /// The same path with the scan's requests ahead on or off.
    #[must_use]
    pub fn with_scan_requests_ahead(self, on: bool) -> Self {
        Self {
            scan_ahead: on,
            ..self
        }
    }

    /// Whether the chosen path is x86-64-v4: its proof of the CPU's features covers AVX-512 F,
    /// BW, CD, DQ and VL (and everything x86-64-v3 has), so code written in those intrinsics
    /// (here and in crates built on these kernels) may run when this is true.
    pub fn is_x86_64_v4(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return matches!(self.path, Path::Detected(pulp::Arch::V4(_)));
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Whether the chosen path is x86-64-v3: its proof of the CPU's features covers AVX2 and
    /// FMA (among others), so code written in those intrinsics may run when this is true.
    pub fn is_x86_64_v3(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return matches!(self.path, Path::Detected(pulp::Arch::V3(_)));
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Runs `op` if the chosen path is x86-64-v3, else hands it back: for an operation whose
    /// body for that path alone differs (so that no other path's code is compiled for it).
    #[inline(always)]
    fn run_v3<Op: WithSimd>(self, op: Op) -> std::result::Result<Op::Output, Op> {
        #[cfg(target_arch = "x86_64")]
        if let Path::Detected(pulp::Arch::V3(simd)) = self.path {
            return Ok(Simd::vectorize(simd, op));
        }
        Err(op)
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

/// The default of [`Kernels::requests_ahead`] on this CPU: on, except on Intel family 6 model
/// 167, where it was measured slower.
fn requests_ahead_here() -> bool {
    !intel_model_167_here()
}

/// The default of [`Kernels::scan_requests_ahead`]: `LENA_SCAN_REQUESTS` if it says `on` or
/// `off`, else on for AMD's CPUs only. Read once per process.
fn scan_requests_here() -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("LENA_SCAN_REQUESTS").as_deref() {
        Ok("on") => true,
        Ok("off") => false,
        _ => amd_here(),
    })
}

/// Whether this CPU's vendor string (`cpuid` leaf 0) is AMD's.
fn amd_here() -> bool {
    cpu_vendor() == vendor(b"AuthenticAMD")
}

/// This CPU's vendor string as `cpuid` leaf 0 gives it (EBX, EDX, ECX); zeros off x86-64.
fn cpu_vendor() -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        let v = std::arch::x86_64::__cpuid(0);
        [v.ebx, v.edx, v.ecx]
    }
    #[cfg(not(target_arch = "x86_64"))]
    [0; 3]
}

/// A vendor string ("GenuineIntel", "AuthenticAMD") as [`cpu_vendor`] gives it.
fn vendor(name: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
    [w(0), w(4), w(8)]
}

/// Whether this CPU is Intel family 6 model 167 ([`intel_model_167_on`] of its `cpuid`), the
/// one kind where two kernels keep other defaults (their requests ahead, [`requests_ahead_here`],
/// and the checked scan loop of its AVX-512 and scalar paths, `fused::scan_from`), as measured
/// there. Read once per process (`cpuid` traps to the hypervisor on a virtual machine).
fn intel_model_167_here() -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        return intel_model_167_on(cpu_vendor(), std::arch::x86_64::__cpuid(1).eax);
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Whether a CPU whose `cpuid` leaf 0 gives the vendor string in `vendor` (EBX, EDX, ECX) and
/// leaf 1 the signature `signature` (EAX) is Intel, family 6, model 167.
fn intel_model_167_on(vendor: [u32; 3], signature: u32) -> bool {
    let intel = vendor == self::vendor(b"GenuineIntel");
    intel && family_model(signature) == (6, 167)
}

/// The family and model a `cpuid` leaf 1 signature (EAX) gives: the extended family added to
/// family 15 (AMD Zen 4 is 15 + 10 = 25), the extended model (bits 16-19) extending families 6
/// and 15.
fn family_model(signature: u32) -> (u32, u32) {
    let base = (signature >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((signature >> 20) & 0xff)
    } else {
        base
    };
    let mut model = (signature >> 4) & 0xf;
    if base == 6 || base == 0xf {
        model |= (signature >> 12) & 0xf0;
    }
    (family, model)
}

/// The CPU this process runs on, for a run's record (`meta.json`) beside its wall-clock
/// figures: its brand string, vendor, family and model as `cpuid` gives them, e.g.
/// "AMD EPYC (AuthenticAMD, family 25, model 17)"; off x86-64, the architecture's name. Read
/// once per process.
pub fn cpu() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid;
            let mut brand = [0u8; 48];
            // The brand string's three leaves, where the CPU has them.
            if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
                let words = (0x8000_0002u32..=0x8000_0004).flat_map(|leaf| {
                    let r = __cpuid(leaf);
                    [r.eax, r.ebx, r.ecx, r.edx]
                });
                for (bytes, w) in brand.chunks_exact_mut(4).zip(words) {
                    bytes.copy_from_slice(&w.to_le_bytes());
                }
            }
            cpu_description(cpu_vendor(), __cpuid(1).eax, &brand)
        }
        #[cfg(not(target_arch = "x86_64"))]
        String::from(std::env::consts::ARCH)
    })
}

/// [`cpu`]'s text for the vendor words of `cpuid` leaf 0 (EBX, EDX, ECX), the signature of
/// leaf 1 (EAX) and the brand string of leaves 0x8000_0002-4 (NUL-padded; all NULs if absent).
fn cpu_description(vendor: [u32; 3], signature: u32, brand: &[u8; 48]) -> String {
    let vendor: Vec<u8> = vendor.iter().flat_map(|w| w.to_le_bytes()).collect();
    let vendor = String::from_utf8_lossy(&vendor)
        .trim_matches('\0')
        .trim()
        .to_string();
    let (family, model) = family_model(signature);
    let brand = String::from_utf8_lossy(brand);
    let brand = brand.trim_matches('\0').trim();
    let brand = if brand.is_empty() { "x86-64" } else { brand };
    format!("{brand} ({vendor}, family {family}, model {model})")
}

impl Default for Kernels {
    fn default() -> Self {
        Self::detect()
    }
}

/// Zeros shared by every thread: a read-only vector of at least `dim` zeros.
///
/// PERF: a node whose state vector is known to be zero reads this instead of its own copy,
/// which then need not be written or even allocated (LENA's memory after an upload, a drift
/// before the first): the shared zeros stay in cache where a node's own zeros would be
/// written back to memory and read again next round.
/// Grows by leaking a larger vector, once per new largest `dim` in the process.
pub fn zeros(dim: usize) -> &'static [f32] {
    static ZEROS: std::sync::RwLock<&'static [f32]> = std::sync::RwLock::new(&[]);
    let z = *ZEROS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if z.len() >= dim {
        return &z[..dim];
    }
    let mut w = ZEROS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if w.len() < dim {
        *w = Vec::leak(vec![0.0; dim]);
    }
    &w[..dim]
}

#[cfg(test)]
mod tests;

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
