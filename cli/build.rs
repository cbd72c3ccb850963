//! Build script: `THV_SANDBOX_COMMIT`, the commit `--version` names.
//!
//! From `git rev-parse` when the source is a git checkout; else from the environment variable
//! `THV_SANDBOX_COMMIT` (a build from a source tarball: the packager knows the commit); else `unknown`. Rebuilt when
//! HEAD moves (the files git changes on checkout and commit are watched), not on every edit.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=THV_SANDBOX_COMMIT");
    // Where git looks (a build outside any checkout behaves as GIT_DIR=/nonexistent does).
    println!("cargo:rerun-if-env-changed=GIT_DIR");
    let from_env = std::env::var("THV_SANDBOX_COMMIT")
        .ok()
        .filter(|s| !s.is_empty());
    let commit = from_env
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Watch what a checkout or a commit changes: HEAD (the branch or detached commit), the branch's ref file and
    // packed-refs. In a worktree HEAD is per worktree and the refs are in the common directory; `--git-path` knows.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            watch(p);
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            watch(p);
        }
    }
    println!("cargo:rustc-env=THV_SANDBOX_COMMIT={commit}");
}

/// Rerun when the file changes; a relative path from git is relative to the crate directory.
fn watch(p: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
