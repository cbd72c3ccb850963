//! End-to-end (issue 16): MCP servers that ship as packages, `npx://` and `uvx://`, installed from the real npm
//! registry and PyPI by the ecosystem's own installer inside the install sandbox (its only egress the index),
//! onto base images the tests build, driven with rmcp; then run again from the cached root with the index
//! unreachable and `--pull never`; and a cached root whose lock was changed is refused.
//!
//! The base images are built once per machine by `tests/images/build-package-bases.sh` (as root; CI does it),
//! found in `$THV_E2E_PACKAGE_BASES/layout`, default `/var/cache/thv-e2e-packages/layout`. Without them, or
//! without the indexes, a test skips (fails under CI).

mod common;

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use common::{code, package_roots, Run};
use serde_json::json;
use thv_sandbox_e2e::tool_text;

const NPM_PACKAGE: &str = "npx://@modelcontextprotocol/server-everything@2026.8.31";
const PYPI_PACKAGE: &str = "uvx://mcp-server-time==2026.10.19";

/// Whether `host:443` accepts a TCP connection from here (the install sandbox reaches it the same way, through
/// the egress proxy on the host's side).
fn reachable(host: &str) -> bool {
    let ok = (host, 443)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(10)).is_ok());
    thv_sandbox_e2e::require(
        ok,
        &format!("{host}:443 reachable (the real package index)"),
    )
}

/// A cache of the test's own (the installed roots go when the test ends), reachable by the sandbox's ids.
fn own_cache() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::Builder::new()
        .prefix("thv-e2e-packages-cache-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    cache
}

/// `run … PACKAGE [-- args]` on `base`, in `cache`, with `extra` flags and `env`.
fn package_cmd(
    run: &Run,
    cache: &Path,
    base: &str,
    package: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    args: &[&str],
) -> tokio::process::Command {
    let mut all = vec!["--base-image", base];
    all.extend_from_slice(extra);
    let mut cmd = run.cmd_in(cache, package, &all, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Changes the committed lock of the package root in `cache` (as anything of the user's could).
fn tamper_lock(cache: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let roots = package_roots(cache);
    assert_eq!(roots.len(), 1, "{roots:?}");
    let dir = roots[0].join("rootfs/opt/thv-package");
    let lock = dir.join("thv-sandbox-lock.json");
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644));
    let text = std::fs::read_to_string(&lock).expect("the committed lock");
    assert!(text.contains("\"entries\""), "{text}");
    std::fs::write(&lock, text.replacen("\"entries\"", "\"entries\" ", 1)).expect("write the lock");
}

/// A run from a tampered root is refused with the tamper error, before the server starts.
async fn assert_refused_tampered(mut cmd: tokio::process::Command) {
    cmd.stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null());
    let out = cmd.output().await.expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 125, "{stderr}");
    assert!(
        stderr.contains("was changed after it was unpacked"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn npx_server_everything_installed_in_the_sandbox_then_offline() {
    let Some(layout) = common::package_bases() else {
        return;
    };
    if !reachable("registry.npmjs.org") {
        return;
    }
    let base = format!("oci:{}:node", layout.display());
    let run = Run::new();
    let cache = own_cache();

    // First run: resolved, pinned and installed by npm in the install sandbox, then run.
    let cmd = package_cmd(&run, cache.path(), &base, NPM_PACKAGE, &[], &[], &["stdio"]);
    let server = thv_sandbox_e2e::spawn_mcp(cmd)
        .await
        .expect("install and initialize server-everything");
    let tools = thv_sandbox_e2e::list_tools(&server.client)
        .await
        .expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"echo") && names.contains(&"get-sum"),
        "{names:?}"
    );
    let out = server
        .call("echo", json!({"message": "first"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&out), "Echo: first");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    assert!(
        done.stderr.contains("has no provenance")
            && done.stderr.contains("dependencies carry provenance"),
        "{}",
        done.stderr
    );
    let roots = package_roots(cache.path());
    assert_eq!(roots.len(), 1, "{roots:?}");
    let lock: serde_json::Value = serde_json::from_slice(
        &std::fs::read(roots[0].join("rootfs/opt/thv-package/thv-sandbox-lock.json"))
            .expect("lock"),
    )
    .expect("lock json");
    assert_eq!(lock["top_version"], "2026.8.31", "{lock}");
    let entries = lock["entries"].as_array().expect("entries");
    assert!(entries.len() > 10, "{lock}");
    assert!(
        entries.iter().all(|e| e["algorithm"] == "sha512"
            && e["url"].as_str().is_some_and(|u| u.starts_with("https://"))),
        "{lock}"
    );
    // Nothing of the install is left in the root: no cache, no CA copy, no home.
    assert!(!roots[0].join("rootfs/.thv-install").exists());

    // Again, with the index unreachable and `--pull never`: from the cached root, no network at all.
    let offline = [("npm_config_registry", "http://127.0.0.1:9/")];
    let cmd = package_cmd(
        &run,
        cache.path(),
        &base,
        NPM_PACKAGE,
        &["--pull", "never"],
        &offline,
        &["stdio"],
    );
    let server = thv_sandbox_e2e::spawn_mcp(cmd)
        .await
        .expect("initialize from the cached root");
    let out = server
        .call("get-sum", json!({"a": 20, "b": 22}))
        .await
        .expect("get-sum");
    assert_eq!(tool_text(&out), "The sum of 20 and 22 is 42.");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    assert!(
        !done.stderr.contains("not checked"),
        "no second install: {}",
        done.stderr
    );
    assert_eq!(package_roots(cache.path()).len(), 1);

    // A changed lock (anything in the root) is refused.
    tamper_lock(cache.path());
    assert_refused_tampered(package_cmd(
        &run,
        cache.path(),
        &base,
        NPM_PACKAGE,
        &["--pull", "never"],
        &offline,
        &["stdio"],
    ))
    .await;
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn uvx_mcp_server_time_pulled_then_run_offline() {
    let Some(layout) = common::package_bases() else {
        return;
    };
    if !reachable("pypi.org") || !reachable("files.pythonhosted.org") {
        return;
    }
    let base = format!("oci:{}:python", layout.display());
    let run = Run::new();
    let cache = own_cache();

    // `pull` installs (nothing runs) and prints the pinned package.
    let out = run
        .cli(
            cache.path(),
            &[
                "pull",
                "--base-image",
                &base,
                "uvx://mcp-server-time@2026.10.19",
            ],
        )
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "uvx://mcp-server-time==2026.10.19\n"
    );
    assert!(
        stderr.contains("has no provenance") && stderr.contains("dependencies carry provenance"),
        "{stderr}"
    );
    let roots = package_roots(cache.path());
    assert_eq!(roots.len(), 1, "{roots:?}");
    let lock: serde_json::Value = serde_json::from_slice(
        &std::fs::read(roots[0].join("rootfs/opt/thv-package/thv-sandbox-lock.json"))
            .expect("lock"),
    )
    .expect("lock json");
    assert_eq!(lock["top_version"], "2026.10.19", "{lock}");
    let entries = lock["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == "mcp" && e["algorithm"] == "sha256"),
        "{lock}"
    );
    // `images` lists it; `inspect` says what is installed and from where.
    let out = run
        .cli(cache.path(), &["images"])
        .output()
        .await
        .expect("images");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("uvx://mcp-server-time==2026.10.19  "),
        "{table}"
    );
    let out = run
        .cli(
            cache.path(),
            &["inspect", "--base-image", &base, PYPI_PACKAGE],
        )
        .output()
        .await
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(out.status), 0, "{text}");
    assert!(
        text.contains("install egress: pypi.org:443, files.pythonhosted.org:443 only"),
        "{text}"
    );
    assert!(
        text.contains("installed: 2026.10.19 from https://pypi.org/simple"),
        "{text}"
    );

    // Run after `pull`: the index unreachable, `--pull never`, from the installed root.
    let offline = [("PIP_INDEX_URL", "http://127.0.0.1:9/simple")];
    let cmd = package_cmd(
        &run,
        cache.path(),
        &base,
        PYPI_PACKAGE,
        &["--pull", "never"],
        &offline,
        &[],
    );
    let server = thv_sandbox_e2e::spawn_mcp(cmd)
        .await
        .expect("initialize from the pulled root");
    let tools = thv_sandbox_e2e::list_tools(&server.client)
        .await
        .expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"get_current_time"), "{names:?}");
    let out = server
        .call("get_current_time", json!({"timezone": "Asia/Kathmandu"}))
        .await
        .expect("get_current_time");
    assert!(tool_text(&out).contains("+05:45"), "{out:?}");
    let out = server
        .call(
            "convert_time",
            json!({"source_timezone": "Asia/Kathmandu", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        )
        .await
        .expect("convert_time");
    assert!(tool_text(&out).contains("T15:15:00+09:00"), "{out:?}");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    assert!(
        !done.stderr.contains("not checked"),
        "no second install: {}",
        done.stderr
    );

    tamper_lock(cache.path());
    assert_refused_tampered(package_cmd(
        &run,
        cache.path(),
        &base,
        PYPI_PACKAGE,
        &["--pull", "never"],
        &offline,
        &[],
    ))
    .await;
    run.assert_nothing_left(None);
}

/// A package reference that is not one is a usage error with a hint, before anything runs.
#[tokio::test(flavor = "multi_thread")]
async fn bad_package_reference_is_a_usage_error() {
    let run = Run::new();
    let cache = own_cache();
    for bad in ["npx://Not_Lower", "uvx://x>=1"] {
        let mut cmd = run.cmd_in(cache.path(), bad, &[], &[]);
        cmd.stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        let out = cmd.output().await.expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 2, "{bad}: {stderr}");
        assert!(stderr.contains("is not a package reference"), "{stderr}");
        assert!(stderr.contains("npx://NAME[@VERSION]"), "{stderr}");
    }
}
