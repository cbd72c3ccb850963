//! Support for thv-sandbox's end-to-end tests.
//!
//! - [`image`]: writes real OCI image layouts ([`ImageBuilder`], [`probe_image`]) and checks them
//!   ([`check_layout`]).
//! - [`hostile`]: a scripted hostile registry on loopback that records what it was asked and what it sent.
//! - [`registry`]: a real `docker-registry` on loopback to push test images to, and a proxy that cuts transfers.
//! - [`tuf_repo`]: a signed TUF repository with a `trusted_root.json` target, served on loopback.
//! - [`mcp`]: MCP clients (the real `rmcp` client) over a child process or any byte stream.
//! - [`probe_bin`], [`thv_sandbox_bin`]: where the built binaries are; [`require`]: skip locally, fail under CI.
//!
//! The in-sandbox probe itself is the binary `sandbox-probe` (src/bin/sandbox-probe.rs): an MCP server on stdio
//! whose tools report what it sees from inside a sandbox and try forbidden things.

use std::path::{Path, PathBuf};

pub mod hostile;
pub mod http_server;
pub mod image;
pub mod mcp;
pub mod registry;
pub mod sigstore;
pub mod tuf_repo;

pub use image::{
    binary_image_builder, check_layout, host_platform, http_probe_image_builder, probe_image,
    probe_image_builder, read_image, sha256_digest, shared_libraries, tag_manifest,
    write_platform_index, BuiltImage, Compression, Descriptor, Entry, ImageBuilder, Layer,
    LayoutSummary, MediaTypes,
};
pub use mcp::{
    call_tool, mcp_client_over_command, mcp_client_over_stream, spawn_mcp, tool_json, tool_text,
    Finished, McpClient, McpProcess, McpSetupError,
};

/// The `sandbox-probe` binary: `$SANDBOX_PROBE_BIN`, else next to the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn probe_bin() -> PathBuf {
    locate_bin(
        "SANDBOX_PROBE_BIN",
        "sandbox-probe",
        "cargo build -p thv-sandbox-e2e --bin sandbox-probe",
    )
}

/// The `http-probe` binary (an MCP server over HTTP, see [`http_server`]): `$HTTP_PROBE_BIN`, else next to
/// the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn http_probe_bin() -> PathBuf {
    locate_bin(
        "HTTP_PROBE_BIN",
        "http-probe",
        "cargo build -p thv-sandbox-e2e --bin http-probe",
    )
}

/// The `thv-sandbox` binary: `$THV_SANDBOX_BIN`, else next to the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn thv_sandbox_bin() -> PathBuf {
    if std::env::var_os("THV_SANDBOX_BIN").is_none() {
        build_cli_once();
    }
    locate_bin(
        "THV_SANDBOX_BIN",
        "thv-sandbox",
        "cargo build -p thv-sandbox --bin thv-sandbox",
    )
}

/// `cargo test` builds the binaries of the package under test only, and `thv-sandbox` lives in another package:
/// so that `cargo test --workspace` alone runs the end-to-end suite against the current code, the first test that
/// needs the binary builds it (same target directory and profile; a no-op when it is up to date). Skipped when
/// `$THV_SANDBOX_BIN` names a binary (CI's unprivileged runs) or when not started by cargo.
fn build_cli_once() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
            return;
        };
        let exe = std::env::current_exe().expect("the path of the running test executable");
        let Some(profile_dir) = exe.parent().and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        }) else {
            return;
        };
        let Some(target_dir) = profile_dir.parent() else {
            return;
        };
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(manifest_dir)
            .args([
                "build",
                "--quiet",
                "-p",
                "thv-sandbox",
                "--bin",
                "thv-sandbox",
                "--target-dir",
            ])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo to build thv-sandbox");
        assert!(
            status.success(),
            "building thv-sandbox for the end-to-end tests failed"
        );
    });
}

fn locate_bin(env: &str, name: &str, build: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env} points at {}, which is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let candidates = bin_candidates(&exe, name);
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        panic!(
            "{name} not found (looked at {}); build it with `{build}` (same profile and target dir as the \
             tests) or set ${env}",
            looked.join(", ")
        )
    })
}

/// Where cargo puts binaries relative to a test executable: `target/<profile>/deps/<test>-<hash>` has them in
/// `target/<profile>/`; an executable directly in `target/<profile>/` (a binary's own tests) has them beside it.
fn bin_candidates(exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.parent() {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(profile_dir) = dir.parent() {
                out.push(profile_dir.join(name));
            }
        }
        out.push(dir.join(name));
    }
    out
}

/// A prerequisite check for tests that need something of the machine (user namespaces, a registry binary...).
///
/// Returns `cond`. When it is false: under CI (`CI=true`) this panics, so a missing prerequisite fails the
/// run; elsewhere it prints a `SKIP` line to stderr and returns false, and the caller returns early:
/// `if !require(has_userns(), "unprivileged user namespaces") { return; }`.
///
/// # Panics
/// When `cond` is false and `CI` is `true`.
pub fn require(cond: bool, what: &str) -> bool {
    if cond {
        return true;
    }
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!under_ci, "prerequisite missing under CI: {what}");
    eprintln!("SKIP: prerequisite missing: {what}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_looked_for_in_the_profile_dir_of_a_test_executable() {
        let found = bin_candidates(
            Path::new("/t/target/debug/deps/e2e-0123abcd"),
            "sandbox-probe",
        );
        assert_eq!(found[0], Path::new("/t/target/debug/sandbox-probe"));
        let found = bin_candidates(
            Path::new("/t/target/debug/sandbox_probe-0123"),
            "thv-sandbox",
        );
        assert_eq!(found, vec![PathBuf::from("/t/target/debug/thv-sandbox")]);
    }

    #[test]
    fn require_passes_a_met_prerequisite() {
        assert!(require(true, "nothing"));
    }
}
