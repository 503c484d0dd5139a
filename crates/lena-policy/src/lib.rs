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
    /// A parameter outside its allowed range.
    #[error("{field} must be {expected}, got {found}")]
    BadParam {
        /// Config field.
        field: &'static str,
        /// Allowed range.
        expected: &'static str,
        /// Value found.
        found: String,
    },
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
        Err(Error::BadParam {
            field,
            expected,
            found: v.to_string(),
        })
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
