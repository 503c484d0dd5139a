//! Records the git commit the binary was built from (run metadata), if git knows it.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LENA_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves. The files are where git says they are: in a worktree `.git` is
    // a file, and a path that does not exist would make cargo rebuild the binary every time.
    println!("cargo:rerun-if-changed=build.rs");
    // Outside a repository (a packaged crate) there is nothing to watch.
    for file in ["HEAD", "refs/heads"] {
        if let Some(path) =
            git(&["rev-parse", "--git-path", file]).and_then(|p| std::fs::canonicalize(p).ok())
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
