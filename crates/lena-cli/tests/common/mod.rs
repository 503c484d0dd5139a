//! Helpers shared by the `lena` binary's tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `lena ARGS` in `dir`.
pub fn lena(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lena"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The command succeeded (else its exit code and error are shown).
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit 1 with `want` in the error.
pub fn fails_with(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}
