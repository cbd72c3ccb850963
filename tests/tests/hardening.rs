//! End-to-end: the red-team findings about ids, groups, tmpfs sizes, limits, secrets on disk, terminal escapes
//! and bad input (SECURITY.md), each against a real sandbox. Run as root, they check host-root mode; run by the CI
//! users, the subids and single modes.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{code, Run};
use serde_json::json;
use thv_sandbox_e2e::{probe_image_builder, spawn_mcp, tool_json, tool_text};
use tokio::io::AsyncWriteExt;

/// A layout (readable by the unprivileged ids root's sandboxes run as) holding the probe under each `(tag, User)`.
fn probe_layout(users: &[(&str, &str)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    for (tag, user) in users {
        probe_image_builder(Some(user))
            .expect("builder")
            .write(dir.path(), tag)
            .expect("write image");
    }
    dir
}

fn image(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

/// The host id `inside` maps to, from a `uid_map`/`gid_map` text.
fn host_id(map: &str, inside: u64) -> Option<u64> {
    map.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        (f.len() == 3 && inside >= f[0] && inside - f[0] < f[2]).then(|| f[1] + (inside - f[0]))
    })
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// F1: as root, image ids 65536 (host root's own line in the map) and beyond were reachable; now every id the
/// server holds is checked against the map before the run, and again by the container's init before exec.
#[tokio::test(flavor = "multi_thread")]
async fn image_ids_outside_the_map_never_become_host_ids_0() {
    let layout = probe_layout(&[
        ("u65536", "65536"),
        ("g65536", "1000:65536"),
        ("u70000", "70000:70000"),
    ]);
    let cache = tempfile::tempdir().unwrap();
    for tag in ["u65536", "g65536", "u70000"] {
        let run = Run::new();
        let mut cmd = run.cmd_in(cache.path(), &image(layout.path(), tag), &["-q"], &[]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if is_root() {
            let out = cmd.output().await.expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(code(out.status), 125, "{tag}: {err}");
            assert!(err.contains("refusing to run this image"), "{tag}: {err}");
            let why = if tag == "u70000" {
                "outside the ids"
            } else {
                "would be host"
            };
            assert!(err.contains(why), "{tag}: {err}");
            assert!(err.contains("hint:"), "{tag}: {err}");
            run.assert_nothing_left(None);
        } else {
            // Without root every image id is the invoking user or a subordinate id: it runs, as neither.
            let server = spawn_mcp(cmd).await.expect("initialize");
            let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
            let creds = &p["credentials"];
            let uid = host_id(
                p["uid_map"].as_str().unwrap(),
                creds["uid"].as_u64().unwrap(),
            );
            let gid = host_id(
                p["gid_map"].as_str().unwrap(),
                creds["gid"].as_u64().unwrap(),
            );
            assert!(uid.is_some_and(|u| u != 0), "{tag}: {p}");
            assert!(gid.is_some_and(|g| g != 0), "{tag}: {p}");
            server.finish().await.expect("finish");
            run.assert_nothing_left(None);
        }
    }
}

/// The server's groups: where the mode lets the sandbox set them (root, subids), exactly its own group, so root's
/// group 0 or the user's other groups do not follow it in; no group of it is ever host gid 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_holds_only_its_own_group() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &["-q"], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    server.finish().await.expect("finish");
    let creds = &p["credentials"];
    let groups: Vec<u64> = serde_json::from_value(creds["groups"].clone()).expect("groups");
    let gid_map = p["gid_map"].as_str().unwrap();
    let single = gid_map.lines().filter(|l| !l.trim().is_empty()).count() == 1
        && host_id(gid_map, 1000).is_some()
        && gid_map.split_whitespace().nth(2) == Some("1");
    if single {
        // setgroups(2) is denied in single mode: the user's own groups stay (shown as the overflow gid), and they
        // are only the user's own.
        for g in &groups {
            assert!(*g == 1000 || *g == 65534, "{p}");
        }
    } else {
        assert_eq!(groups, vec![1000], "{p}");
    }
    for g in groups {
        assert_ne!(host_id(gid_map, g), Some(0), "{p}");
    }
}

/// F5 and F11: every writable tmpfs has a size and an inode cap; RLIMIT_NPROC is the documented per-sandbox cap.
#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_mounts_are_sized_and_processes_capped() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &["-q", "--tmp-size", "40"], &[]))
        .await
        .expect("initialize");
    let read = |path: &'static str| {
        let server = &server;
        async move {
            let r = server
                .call("read_file", json!({"path": path}))
                .await
                .expect("read");
            tool_json(&r)["content"]
                .as_str()
                .expect("content")
                .to_owned()
        }
    };
    let mountinfo = read("/proc/self/mountinfo").await;
    let limits = read("/proc/self/limits").await;
    // Fill /tmp past its size: the write fails instead of taking host memory.
    let big = "x".repeat(1024 * 1024);
    let mut written = 0;
    for i in 0..60 {
        let r = server
            .call(
                "write_file",
                json!({"path": format!("/tmp/f{i}"), "text": big}),
            )
            .await
            .expect("call");
        if r.is_error == Some(true) {
            assert!(tool_text(&r).contains("ENOSPC"), "{}", tool_text(&r));
            break;
        }
        written += 1;
    }
    server.finish().await.expect("finish");
    assert!(written < 41, "wrote {written} MiB into a 40 MiB /tmp");
    let options = |dest: &str| {
        mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(dest))
            .unwrap_or_else(|| panic!("{dest} not mounted: {mountinfo}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    // read_file returns the first 4 KiB: /tmp and /run come early in the mount table.
    assert!(
        options("/tmp").contains("size=40960k"),
        "{}",
        options("/tmp")
    );
    assert!(
        options("/tmp").contains("nr_inodes="),
        "{}",
        options("/tmp")
    );
    assert!(
        options("/run").contains("size=65536k"),
        "{}",
        options("/run")
    );
    let nproc = limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .expect("Max processes");
    let soft: Vec<&str> = nproc.split_whitespace().collect();
    assert_eq!(&soft[2..4], &["2048", "2048"], "{nproc}");
}

/// F9: values given with `-e NAME` (from thv-sandbox's environment) and `--env-file` reach the server and are on
/// no file of the run (config.json included); a `-e NAME=VALUE` value is on the command line anyway.
#[tokio::test(flavor = "multi_thread")]
async fn values_from_the_environment_and_env_files_never_touch_disk() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("server.env");
    std::fs::write(&env_file, "FROM_FILE=file-value-8c1d2e\n").unwrap();
    let mut cmd = run.cmd(
        "app",
        &[
            "-q",
            "-e",
            "FROM_HOST",
            "--env-file",
            env_file.to_str().unwrap(),
        ],
        &[],
    );
    cmd.env("FROM_HOST", "host-value-5f0a3b");
    let server = spawn_mcp(cmd).await.expect("initialize");
    for (name, want) in [
        ("FROM_HOST", "host-value-5f0a3b"),
        ("FROM_FILE", "file-value-8c1d2e"),
    ] {
        let v = tool_json(
            &server
                .call("getenv", json!({"name": name}))
                .await
                .expect("getenv"),
        );
        assert_eq!(v["value"], json!(want), "{name}");
    }
    // While the server runs, its run directory (bundle, config.json, plan) holds neither value.
    let mut files = 0;
    let mut stack = vec![run.runs_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files += 1;
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("host-value-5f0a3b") && !text.contains("file-value-8c1d2e"),
                    "{} holds a value",
                    e.path().display()
                );
            }
        }
    }
    assert!(files > 0, "no run files were scanned");
    let done = server.finish().await.expect("finish");
    assert!(!done.stderr.contains("value-"), "{}", done.stderr);
}

/// F10: what a server writes to stderr reaches a terminal with its control characters shown, not obeyed.
#[tokio::test(flavor = "multi_thread")]
async fn server_stderr_on_a_terminal_cannot_drive_it() {
    use std::io::Read;
    let run = Run::new();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd = run.cmd("app", &["-q"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let screen = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    });
    // The probe logs each request's method to stderr: a method made of terminal controls (window title, clear
    // screen, clipboard write, a C1 CSI).
    let method = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}]52;c;cHduZWQ=\u{7}\u{9b}6n";
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string() + "\n";
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(msg.as_bytes()).await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait())
        .await
        .expect("the sandbox exits once stdin closes")
        .unwrap();
    let screen = screen.await.unwrap();
    let text = String::from_utf8_lossy(&screen);
    assert_eq!(code(status), 0, "{text}");
    assert!(
        text.contains("^[]0;PWNED^G^[[2J^[]52;c;cHduZWQ=^G^[[6n"),
        "{text:?}"
    );
    assert!(
        !screen.contains(&0x1b),
        "a raw ESC reached the terminal: {text:?}"
    );
    assert!(
        !text.contains('\u{9b}'),
        "a raw CSI reached the terminal: {text:?}"
    );
}

/// Runs `cmd` with no stdin; its exit code and stderr.
async fn refused(mut cmd: tokio::process::Command) -> (i32, String) {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run");
    (
        code(out.status),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// F12: inputs that panicked or were read without bound now end with a clear error, before anything runs.
#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_are_refused_with_a_reason() {
    let run = Run::new();
    for extra in [
        vec!["--stop-timeout", "1e20"],
        vec!["--stop-timeout", "-1"],
        vec!["--env-file", "/dev/zero"],
    ] {
        let (status, err) = refused(run.cmd("app", &extra, &[])).await;
        assert_eq!(status, 2, "{extra:?}: {err}");
        assert!(err.starts_with("error:"), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    // Image configs: an Env value with a NUL, Volumes under /proc, at / and with `..`.
    let layout = tempfile::tempdir().unwrap();
    let variants = ["nul", "vproc", "vroot", "vdotdot"];
    for tag in variants {
        let b = probe_image_builder(Some("app")).unwrap();
        let b = match tag {
            "nul" => b.env("A", "\n\u{0}B"),
            "vproc" => b.volume("/proc/x"),
            "vroot" => b.volume("/"),
            _ => b.volume("/data/../../etc"),
        };
        b.write(layout.path(), tag).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    for tag in variants {
        let (status, err) =
            refused(run.cmd_in(cache.path(), &image(layout.path(), tag), &["-q"], &[])).await;
        assert_eq!(status, 125, "{tag}: {err}");
        let why = if tag == "nul" { "NUL" } else { "Volume" };
        assert!(err.contains(why), "{tag}: {err}");
        assert!(!err.contains("panicked"), "{tag}: {err}");
        run.assert_nothing_left(None);
    }
}
