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
    assert!(
        stderr.starts_with("error: cannot reach the OCI registry"),
        "{stderr}"
    );
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
        // The one UNVERIFIED line, from its start to its last words.
        let short = &built.manifest.digest.trim_start_matches("sha256:")[..12];
        let start = joined
            .find("thv-sandbox: warning: UNVERIFIED ")
            .unwrap_or_else(|| panic!("width {width}: no UNVERIFIED warning:\n{screen}"));
        let line = &joined[start..];
        let whole = line
            .find(&format!("@sha256:{short}: "))
            .zip(line.find("; accept it: `thv-sandbox trust accept "))
            .is_some_and(|(a, b)| a < b);
        assert!(whole, "width {width}: the warning is not whole:\n{screen}");
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

/// `cmd` with stdin and stdout null, stderr captured: (exit code, stderr).
async fn quiet_output(mut c: tokio::process::Command) -> (i32, String) {
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("thv-sandbox");
    (
        code(out.status),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A legacy registry file: `probe` (no provenance) and `signed` (declares provenance), both the given image.
fn probe_registry(dir: &std::path::Path, image: &str) -> String {
    let doc = json!({
        "version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z",
        "servers": {
            "probe": {"description": "The sandbox probe", "image": image, "transport": "stdio",
                      "tools": ["probe"]},
            "signed": {"description": "Claims provenance", "image": image, "transport": "stdio",
                       "tools": ["probe"],
                       "provenance": {"sigstore_url": "tuf-repo-cdn.sigstore.dev",
                                      "repository_uri": "https://github.com/o/r",
                                      "signer_identity": "/.github/workflows/release.yml"}}
        }
    });
    let file = dir.join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    file.to_string_lossy().into_owned()
}

/// A registry server without provenance, from a real registry: one UNVERIFIED line that says the entry declares
/// none and how to accept it; after a cold start launched with stdin not a terminal (as an MCP client launches
/// it), one pre-pull hint, and only then. `trust accept` records the digest: runs of it say nothing (`--verbose`:
/// accepted on DATE), `enabled` still refuses it, a new digest on the same tag warns again naming the accepted
/// one; `trust accepted` lists it, `trust revoke` takes it back. A server that declares provenance is never
/// accepted.
#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_server_warns_once_and_can_be_accepted_by_digest() {
    let Some((registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let cache = dir.path().join("cache");
    let file = probe_registry(dir.path(), &image);
    // `thv-sandbox COMMAND… --cache-dir CACHE [--registry FILE] ARGS…`, in the test's environment.
    let cli = |args: &[&str]| {
        let words = if args[0] == "trust" { 2 } else { 1 };
        let mut rest: Vec<&str> = Vec::new();
        if !matches!(args[..words], ["trust", "accepted" | "revoke"]) {
            rest.extend(["--registry", file.as_str()]);
        }
        rest.extend_from_slice(&args[words..]);
        run.cli_sub(&cache, &args[..words], &rest)
    };
    let short = &built.manifest.digest[7..19];

    // Cold: the warning, one line; the pre-pull hint, one line.
    let (rc, stderr) = quiet_output(cli(&["run", "probe", "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("UNVERIFIED"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert_eq!(
        warnings[0],
        format!(
            "thv-sandbox: warning: UNVERIFIED `probe` ({image}@sha256:{short}): its registry entry declares no \
             provenance; accept it: `thv-sandbox trust accept probe`"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("no registry entry with provenance"),
        "{stderr}"
    );
    let hints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("thv-sandbox: hint: this start downloaded the image"))
        .collect();
    assert_eq!(hints.len(), 1, "{stderr}");
    assert!(hints[0].contains("`thv-sandbox pull probe`"), "{stderr}");
    // Warm: no download, no hint; still the warning.
    let (rc, stderr) = quiet_output(cli(&["run", "probe", "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    assert!(!stderr.contains("hint:"), "{stderr}");
    assert_eq!(stderr.matches("UNVERIFIED").count(), 1, "{stderr}");

    // A server that declares provenance is verified, never accepted.
    let (rc, stderr) = quiet_output(cli(&["trust", "accept", "signed"])).await;
    assert_eq!(rc, 2, "{stderr}");
    assert!(stderr.contains("declares provenance"), "{stderr}");
    assert!(!cache.join("verification/accepted.json").exists());

    // Accepted: runs of that digest say nothing about it, `--verbose` says when it was accepted.
    let (rc, stderr) = quiet_output(cli(&["trust", "accept", "probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    assert!(stderr.starts_with("accepted probe ("), "{stderr}");
    let out = cli(&["trust", "accepted", "--json"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(code(out.status), 0);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["manifest_digest"], built.manifest.digest.as_str());
    assert_eq!(list[0]["server"], "probe");
    let out = cli(&["trust", "accepted"]).output().await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("probe   ") && l.contains(short)),
        "{table}"
    );
    let (rc, stderr) = quiet_output(cli(&["run", "probe", "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    // (A host where no cgroup can be had warns that the default limits do not apply: not about the image.)
    assert!(
        !stderr.contains("UNVERIFIED")
            && !stderr
                .lines()
                .any(|l| l.contains("warning") && !l.contains("limit for this server")),
        "{stderr}"
    );
    let (rc, stderr) = quiet_output(cli(&["run", "--verbose", "probe", "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    assert!(stderr.contains("you accepted this digest on"), "{stderr}");

    // `enabled` runs verified images only: an acceptance is not verification.
    let (rc, stderr) = quiet_output(cli(&[
        "run",
        "--image-verification",
        "enabled",
        "probe",
        "--",
        "--probe",
    ]))
    .await;
    assert_eq!(rc, thv_sandbox_runtime::EXIT_REFUSED, "{stderr}");
    assert!(
        stderr.contains("but an acceptance is not verification"),
        "{stderr}"
    );

    // The tag now names another image: it warns again, and says which digest was accepted.
    let other_layout = tempfile::tempdir().unwrap();
    let other = thv_sandbox_e2e::probe_image_builder(None)
        .expect("builder")
        .write(other_layout.path(), "root")
        .expect("write image");
    assert_ne!(other.manifest.digest, built.manifest.digest);
    registry
        .push_image(other_layout.path(), &other, "tools/probe", "1.0")
        .expect("push");
    let (rc, stderr) =
        quiet_output(cli(&["run", "--pull", "always", "probe", "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("UNVERIFIED"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("not the digest accepted on ") && warnings[0].contains(short),
        "{stderr}"
    );

    // Revoked: the first digest warns again; revoking what is not accepted is an error.
    let (rc, stderr) = quiet_output(cli(&["trust", "revoke", "probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    assert!(stderr.starts_with("revoked probe ("), "{stderr}");
    let (rc, stderr) = quiet_output(cli(&["trust", "revoke", "probe"])).await;
    assert_eq!(rc, 1, "{stderr}");
    let out = cli(&["trust", "accepted", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let pinned = format!("{}/tools/probe@{}", registry.host(), built.manifest.digest);
    let (rc, stderr) =
        quiet_output(cli(&["run", "--pull", "never", &pinned, "--", "--probe"])).await;
    assert_eq!(rc, 0, "{stderr}");
    assert_eq!(stderr.matches("UNVERIFIED").count(), 1, "{stderr}");
    run.assert_nothing_left(None);
}

/// `pull NAME` pulls a registry server's image (what `run NAME` runs), and prints its pinned reference.
#[tokio::test(flavor = "multi_thread")]
async fn pull_by_server_name_pulls_its_image() {
    let Some((_registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let file = probe_registry(dir.path(), &image);
    let out = run
        .cli(&cache, &["pull", "--registry", &file, "probe"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = image.split('/').next().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{host}/tools/probe@{}", built.manifest.digest)
    );
}
