//! End-to-end: `thv-sandbox pull` and `thv-sandbox run REGISTRY/REPO:TAG` against a real `docker-registry`, with a
//! real MCP client; then the same image from the cache with `--pull never` and no registry at all.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{code, Run};
use serde_json::json;
use thv_sandbox_e2e::{spawn_mcp, tool_json};

fn cmd(run: &Run, cache: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut c = run.cli(cache, args);
    c.stderr(Stdio::inherit());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn run_by_registry_reference_then_offline_from_the_cache() {
    let Some((mut registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };

    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    // `pull` prints the pinned reference (and nothing else) on stdout.
    let out = cmd(&run, cache.path(), &["pull", &image])
        .stdout(Stdio::piped())
        .output()
        .await
        .expect("pull");
    assert_eq!(code(out.status), 0);
    let pinned = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        pinned.trim(),
        format!("{}/tools/probe@{}", registry.host(), built.manifest.digest)
    );
    // `pull` left the image ready to run: its root is unpacked (while it downloaded), and `run` uses that root
    // as it is, without unpacking again.
    let committed_root = || {
        let roots = thv_sandbox_runtime::rootfs::roots_dir(cache.path());
        let names: Vec<_> = std::fs::read_dir(&roots)
            .expect("roots dir after pull")
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].join("rootfs").is_dir());
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(names[0].join("meta.json")).unwrap())
    };
    let root_after_pull = committed_root();

    // `run` by reference, over MCP.
    let server = spawn_mcp(cmd(&run, cache.path(), &["run", &image]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    assert_eq!(p["credentials"]["uid"], 1000);
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0);
    assert_eq!(
        committed_root(),
        root_after_pull,
        "run unpacked the image again"
    );

    // No registry at all: `--pull never` (and the default `missing`) run from the cache.
    registry.stop();
    for policy in ["never", "missing"] {
        let server = spawn_mcp(cmd(&run, cache.path(), &["run", "--pull", policy, &image]))
            .await
            .expect("offline");
        let out = server
            .call("echo", json!({"text": "offline"}))
            .await
            .expect("echo");
        assert_eq!(thv_sandbox_e2e::tool_text(&out), "offline");
        server.finish().await.expect("finish");
    }
    // `inspect` finds the cached image without a registry: its digest, and no verification record (it ran
    // unverified, under `warn`).
    let out = cmd(&run, cache.path(), &["inspect", "--json", &image])
        .stdout(Stdio::piped())
        .output()
        .await
        .expect("inspect");
    assert_eq!(code(out.status), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["cached"]["manifest_digest"],
        built.manifest.digest.as_str(),
        "{v}"
    );
    assert!(v["cached"]["verification"].is_null(), "{v}");
    // `always` needs the registry, and says so.
    let out = cmd(&run, cache.path(), &["run", "--pull", "always", &image])
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run");
    assert_eq!(code(out.status), 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_registry_reference_is_a_usage_error() {
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let out = cmd(&run, cache.path(), &["run", "Registry.Example/UPPER:tag"])
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run");
    assert_eq!(code(out.status), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("hint: write an OCI image reference"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_with_zstd_layers_runs_from_the_registry() {
    use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
    if !thv_sandbox_e2e::require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) {
        return;
    }
    let registry = TestRegistry::start().expect("start registry");
    let layout = tempfile::tempdir().unwrap();
    let built = thv_sandbox_e2e::probe_image_builder(Some("app"))
        .expect("builder")
        .compress_all(thv_sandbox_e2e::Compression::Zstd)
        .write(layout.path(), "zstd")
        .expect("write image");
    assert!(built.layers.iter().all(|l| l.media_type.ends_with("+zstd")));
    registry
        .push_image(layout.path(), &built, "tools/probe-zstd", "1.0")
        .expect("push");
    let image = format!("{}/tools/probe-zstd:1.0", registry.host());

    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let server = spawn_mcp(cmd(&run, cache.path(), &["run", &image]))
        .await
        .expect("initialize");
    let out = server
        .call("echo", json!({"text": "zstd"}))
        .await
        .expect("echo");
    assert_eq!(thv_sandbox_e2e::tool_text(&out), "zstd");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0);
    for layer in &built.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1);
    }
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_says_one_line_on_a_pipe_and_nothing_when_quiet() {
    let Some((registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let pull = |cache: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["pull"];
        args.extend_from_slice(extra);
        args.push(&image);
        let mut c = run.cli(cache, &args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let pinned = format!("{}/tools/probe@{}", registry.host(), built.manifest.digest);

    // stderr is a pipe: no progress lines, no escape sequences, one line for the pulled image.
    let cache = tempfile::tempdir().unwrap();
    let out = pull(cache.path(), &[]).output().await.unwrap();
    assert_eq!(code(out.status), 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let blobs = built.layers.len() + 1;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "pulled {image} ({}): {blobs} blobs (",
            built.manifest.digest
        )),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    // From the cache: nothing was pulled, nothing is said.
    let out = pull(cache.path(), &[]).output().await.unwrap();
    assert_eq!(code(out.status), 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --quiet: nothing on stderr, the pinned reference on stdout.
    let cache = tempfile::tempdir().unwrap();
    let out = pull(cache.path(), &["--quiet"]).output().await.unwrap();
    assert_eq!(code(out.status), 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);
}

/// On a terminal, `pull` draws per-layer download lines and, while it unpacks, how many layers are in the root;
/// stdout still carries only the pinned reference.
#[tokio::test(flavor = "multi_thread")]
async fn pull_on_a_terminal_shows_downloads_and_the_unpack() {
    use std::io::Read;
    let Some((registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut c = run.cli(cache.path(), &["pull", &image]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave));
    let child = c.spawn().expect("spawn");
    // Our copy of the terminal's slave side went into the command (and is closed with it): reading the master
    // ends (EIO) once the child has exited.
    drop(c);
    let mut master = std::fs::File::from(pty.master);
    let screen = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let out = child.wait_with_output().await.expect("wait");
    let screen = screen.await.unwrap();
    assert_eq!(code(out.status), 0, "{screen}");
    let pinned = format!("{}/tools/probe@{}", registry.host(), built.manifest.digest);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pinned);
    let n = built.layers.len();
    let first_layer: String = built.layers[0].digest.trim_start_matches("sha256:")[..12].to_owned();
    assert!(screen.contains('\x1b'), "drawn in place: {screen:?}");
    assert!(screen.contains(&first_layer), "a download line: {screen:?}");
    assert!(
        screen.contains(&format!(
            "unpacked {n} of {n} layer{}",
            if n == 1 { "" } else { "s" }
        )),
        "the unpack's count: {screen:?}"
    );
    assert!(
        screen.contains(&format!("pulled {image} ({})", built.manifest.digest)),
        "{screen:?}"
    );
}

/// ux-review item 7: on a first `run` in a terminal, the UNVERIFIED warning is said while the config blob's
/// progress line is on the screen. It must stay whole (the progress display used to go back over its last
/// wrapped row), and no progress line may be left over once the pull is done. The terminal is a real pty of
/// the given width; what reaches it is read back as a screen (vt100).
#[tokio::test(flavor = "multi_thread")]
async fn warnings_are_never_overwritten_by_the_progress_display() {
    use std::io::Read;
    let Some((_registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    for width in [80u16, 100, 160] {
        let cache = tempfile::tempdir().unwrap();
        let size = nix::pty::Winsize {
            ws_row: 100,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let mut c = run.cli(cache.path(), &["run", &image]);
        // The server's stdin ends at once: it exits when the pull and the warnings are behind us.
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(pty.slave));
        let child = c.spawn().expect("spawn");
        drop(c);
        let mut master = std::fs::File::from(pty.master);
        let bytes = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                }
            }
            bytes
        });
        let out = child.wait_with_output().await.expect("wait");
        let bytes = bytes.await.unwrap();
        // The pty turns "\n" into "\r\n", as a terminal sees it.
        let mut parser = vt100::Parser::new(100, width, 0);
        parser.process(&bytes);
        let screen = parser.screen().contents();
        assert_eq!(code(out.status), 0, "{screen}");
        // Rows joined back (wrapped ones are joined already): each line said reads whole, in one piece.
        let joined: String = screen.replace('\n', "");
        let warning = format!(
            "({}) UNVERIFIED: its provenance was not checked successfully (--image-verification=enabled refuses \
             such images)",
            built.manifest.digest
        );
        let start = joined
            .find("thv-sandbox: warning: running ")
            .unwrap_or_else(|| panic!("width {width}: no UNVERIFIED warning:\n{screen}"));
        assert!(
            joined[start..].contains(&warning),
            "width {width}: the warning is not whole:\n{screen}"
        );
        // No progress line is left: the config blob's line (`<12 hex>  1.2 KiB done`) is gone.
        let config_short = &built.config.digest.trim_start_matches("sha256:")[..12];
        assert!(
            !screen.contains(&format!("{config_short}  ")),
            "width {width}: a stale progress line:\n{screen}"
        );
        assert!(
            joined.contains(&format!("pulled {image} ({})", built.manifest.digest)),
            "width {width}:\n{screen}"
        );
    }
}
