//! Upload policies: [`trigger`]s decide when a node uploads, [`drift`]s give the update the
//! server applies for a node that stays silent.
//!
//! Must not depend on: `lena-compress`, `lena-model`, `lena-algo` (a trigger needs norms, not a
//! quantizer; an algorithm that needs both composes them).
//!
//! Both are plain state machines over norms and vectors, so the same object runs on a node and,
//! for drifts the server can rebuild, on the server, with identical float operations.

pub mod drift;
pub mod trigger;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A parameter outside its allowed range (fields named as in an algorithm's table:
    /// `beta`, `drift.gamma`).
    #[error(transparent)]
    BadParam(#[from] lena_kernels::BadParam),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn check_range(
    field: &'static str,
    v: f64,
    ok: bool,
    expected: &'static str,
) -> Result<()> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        Err(lena_kernels::BadParam::new(field, expected, v).into())
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
