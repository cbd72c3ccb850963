//! End-to-end: what a sandbox may touch beyond its image — host paths bound in (`-v`), the host's network
//! (`--network host`), secret environment variables (`--secret`) — checked from inside by the probe through a
//! real MCP client, and from outside on the host.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{code, fixture, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{spawn_mcp, tool_json};

/// A directory every sandbox user may enter (sandboxes of root run as unprivileged ids), writable by all if asked.
fn shared_dir(writable: bool) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("thv-e2e-mount-")
        .tempdir()
        .expect("tempdir");
    let mode = if writable { 0o777 } else { 0o755 };
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
    d
}

fn errno(v: &Value) -> &str {
    v["errno"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn read_mounts_are_read_only_write_mounts_reach_the_host_and_nothing_else_is_there() {
    let run = Run::new();
    let ro = shared_dir(false);
    std::fs::write(ro.path().join("hello.txt"), "from the host").expect("write");
    let rw = shared_dir(true);
    let under_tmp = shared_dir(true);
    let ro_arg = format!("{}:/data/in:ro", ro.path().display());
    // /out is not in the image: the sandbox overlays its root to make the mount point, without touching the cache.
    let rw_arg = format!("{}:/out", rw.path().display());
    let tmp_arg = format!("{}:/tmp/w", under_tmp.path().display());
    let server = spawn_mcp(run.cmd("app", &["-v", &ro_arg, "-v", &rw_arg, "-v", &tmp_arg], &[]))
        .await
        .expect("initialize through the sandbox");

    let r = tool_json(
        &server
            .call("read_file", json!({"path": "/data/in/hello.txt"}))
            .await
            .expect("read"),
    );
    assert_eq!(r["content"], "from the host", "{r}");
    let w = tool_json(
        &server
            .call(
                "write_file",
                json!({"path": "/data/in/new.txt", "text": "x"}),
            )
            .await
            .expect("write"),
    );
    assert_eq!(errno(&w), "EROFS", "a read mount must not be writable: {w}");
    assert!(!ro.path().join("new.txt").exists());

    for (inside, host) in [
        ("/out/made-inside.txt", rw.path()),
        ("/tmp/w/made-inside.txt", under_tmp.path()),
    ] {
        let w = server
            .call(
                "write_file",
                json!({"path": inside, "text": "written in the sandbox"}),
            )
            .await
            .expect("write");
        assert!(!w.is_error.unwrap_or(false), "{inside}: {w:?}");
        assert_eq!(
            std::fs::read_to_string(host.join("made-inside.txt"))
                .expect("the write is on the host"),
            "written in the sandbox"
        );
    }
    // The root is still read-only next to the new mount point, and host paths not named stay invisible.
    let w = tool_json(
        &server
            .call("write_file", json!({"path": "/elsewhere", "text": "x"}))
            .await
            .expect("write"),
    );
    assert_eq!(errno(&w), "EROFS", "{w}");
    for hidden in [
        fixture().host_secret.to_string_lossy().into_owned(),
        ro.path().join("hello.txt").to_string_lossy().into_owned(),
    ] {
        let r = tool_json(
            &server
                .call("read_file", json!({"path": hidden}))
                .await
                .expect("read"),
        );
        assert_eq!(errno(&r), "ENOENT", "{hidden}: {r}");
    }
    let report = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    run.assert_nothing_left(report["namespaces"]["user"].as_str());

    // The cached root did not gain the mount point.
    let roots = fixture().cache.join("roots-v1");
    for entry in std::fs::read_dir(&roots).expect("roots").flatten() {
        assert!(
            !entry.path().join("rootfs/out").exists() && !entry.path().join("out").exists(),
            "a run wrote into the cached root {}",
            entry.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_mounts_are_refused_before_anything_runs() {
    let run = Run::new();
    let missing = format!("{}/no-such-dir:/x", fixture().dir.path().display());
    for (arg, expect) in [
        (missing.as_str(), "cannot be used"),
        ("/etc:/proc/x", "provided by the sandbox"),
        ("/etc:relative", "must be absolute"),
    ] {
        let out = run
            .cmd("app", &["-v", arg], &[])
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 2, "{arg}: {stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains("hint:"),
            "{arg}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    // A directory over a file of the image.
    let d = shared_dir(false);
    let arg = format!("{}:/etc/passwd", d.path().display());
    let out = run
        .cmd("app", &["-v", &arg], &[])
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code(out.status), 0, "{stderr}");
    assert!(stderr.contains("is a file in the image"), "{stderr}");
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_server_and_no_file_argv_or_log() {
    let run = Run::new();
    // Unique per run, so a match anywhere can only come from this test.
    let value = format!("s3cr3t-{}-{}", std::process::id(), rand_hex());
    let mut cmd = run.cmd(
        "app",
        &[
            "--verbose",
            "--verbose",
            "--secret",
            "PROBE_TOKEN",
            "-e",
            "PLAIN=visible",
        ],
        &[],
    );
    // A HOME and TMPDIR of the test's own, scanned below with the state and the cache.
    let (home, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    cmd.env("PROBE_TOKEN", &value)
        .env("RUST_LOG", "debug")
        .env("HOME", home.path())
        .env("TMPDIR", tmp.path());
    let server = spawn_mcp(cmd)
        .await
        .expect("initialize through the sandbox");
    let got = tool_json(
        &server
            .call("getenv", json!({"name": "PROBE_TOKEN"}))
            .await
            .expect("getenv"),
    );
    assert_eq!(got["value"], value.as_str(), "the server sees the secret");
    let plain = tool_json(
        &server
            .call("getenv", json!({"name": "PLAIN"}))
            .await
            .expect("getenv"),
    );
    assert_eq!(plain["value"], "visible");

    // While it runs: no process's command line, no file of ours (state, bundle, plan, cache) holds the value.
    let argv_hits = common::processes_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&value))
            .unwrap_or(false)
    });
    assert!(
        argv_hits.is_empty(),
        "secret on the command line of {argv_hits:?}"
    );
    let mut files = 0;
    for dir in [
        run.xdg.path(),
        fixture().cache.as_path(),
        home.path(),
        tmp.path(),
    ] {
        files += assert_not_in_files(dir, &value);
    }
    assert!(
        files > 3,
        "the scan must have seen the run's files (bundle, plan); saw {files}"
    );
    let report = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    assert!(!done.stderr.contains(&value), "secret in our stderr");
    // Nor anything written on the way out.
    for dir in [fixture().cache.as_path(), home.path(), tmp.path()] {
        assert_not_in_files(dir, &value);
    }
    run.assert_nothing_left(report["namespaces"]["user"].as_str());
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts no regular file under `dir` contains `needle`; returns how many files were read.
fn assert_not_in_files(dir: &Path, needle: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    n += 1;
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(needle),
                        "secret found in {}",
                        e.path().display()
                    );
                }
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_is_loopback_only_and_host_reaches_host_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr").to_string();
    let host_netns = std::fs::read_link("/proc/self/ns/net").expect("netns");
    for (mode, reachable) in [("none", false), ("host", true)] {
        let run = Run::new();
        let server = spawn_mcp(run.cmd("app", &["--network", mode], &[]))
            .await
            .unwrap_or_else(|e| panic!("--network {mode}: {e}"));
        let c = server
            .call("connect", json!({"address": addr, "timeout_ms": 3000}))
            .await
            .expect("connect");
        assert_eq!(
            !c.is_error.unwrap_or(false),
            reachable,
            "--network {mode}: {c:?}"
        );
        let report = tool_json(&server.call("probe", json!({})).await.expect("probe"));
        assert_eq!(
            report["namespaces"]["net"].as_str() == Some(&*host_netns.to_string_lossy()),
            reachable,
            "--network {mode}: {}",
            report["namespaces"]
        );
        let done = server.finish().await.expect("finish");
        assert_eq!(code(done.status), 0, "--network {mode}: {}", done.stderr);
        run.assert_nothing_left(report["namespaces"]["user"].as_str());
    }
    let out = Run::new()
        .cmd("app", &["--network", "bridge"], &[])
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run");
    assert_eq!(code(out.status), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bridge") && stderr.contains("none") && stderr.contains("host"),
        "{stderr}"
    );
}

/// A registry entry's permission profile, secret variable and seccomp variant all apply when the server is run by
/// name; the user's override file changes the variant's rules.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_entry_brings_its_mounts_secret_and_seccomp_variant() {
    let Some((_registry, _layout, _built, image)) = common::registry_with_probe() else {
        return;
    };
    let ro = shared_dir(false);
    std::fs::write(ro.path().join("notes.txt"), "entry's read path").expect("write");
    let dir = shared_dir(false);
    let doc = json!({"servers": {"probe-browser": {
        "description": "The sandbox probe, as a browser server would be",
        "image": image,
        "transport": "stdio",
        "tier": "Community",
        "status": "Active",
        "tools": ["probe"],
        "seccomp_profile": "browser",
        "permissions": {"read": [ro.path().to_string_lossy()], "write": []},
        "env_vars": [{"name": "API_TOKEN", "description": "A token", "required": true, "secret": true}],
    }}});
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let removal = dir.path().join("override.json");
    std::fs::write(
        &removal,
        r#"{"description": "no nested user namespaces for me", "remove": [{"syscalls": ["unshare"], "reason": "not needed here"}]}"#,
    )
    .unwrap();
    let removal = removal.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");
    let token = format!("tok-{}", rand_hex());

    for (extra, unshare_expected) in [
        (vec![], "ok"),
        (vec!["--seccomp-override", removal.as_str()], "EPERM"),
    ] {
        let run = Run::new();
        let mut args = vec!["run", "--registry", &file, "-e", "API_TOKEN"];
        args.extend(extra.iter().copied());
        args.push("probe-browser");
        let mut cmd = run.cli(&cache, &args);
        let (home, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        cmd.env("API_TOKEN", &token)
            .env("HOME", home.path())
            .env("TMPDIR", tmp.path())
            .stderr(std::process::Stdio::piped());
        let server = spawn_mcp(cmd).await.expect("initialize");
        let got = tool_json(
            &server
                .call("getenv", json!({"name": "API_TOKEN"}))
                .await
                .expect("getenv"),
        );
        assert_eq!(got["value"], token.as_str());
        assert!(
            assert_not_in_files(run.xdg.path(), &token) > 3,
            "the scan saw the run's files"
        );
        // The entry's own cache (the pulled image and its root), and the run's HOME and TMPDIR.
        assert!(
            assert_not_in_files(&cache, &token) > 3,
            "the scan saw the cache's files"
        );
        assert_not_in_files(home.path(), &token);
        assert_not_in_files(tmp.path(), &token);
        let path = ro.path().join("notes.txt").to_string_lossy().into_owned();
        let r = tool_json(
            &server
                .call("read_file", json!({"path": path}))
                .await
                .expect("read"),
        );
        assert_eq!(r["content"], "entry's read path", "{r}");
        let w = tool_json(
            &server
                .call(
                    "write_file",
                    json!({"path": ro.path().join("x").to_string_lossy(), "text": "x"}),
                )
                .await
                .expect("write"),
        );
        assert_eq!(errno(&w), "EROFS", "{w}");
        let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
        let outcome = p["syscalls"]["unshare_newuser"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            outcome, unshare_expected,
            "{extra:?}: unshare(CLONE_NEWUSER)"
        );
        // What the browser variant does not add stays refused.
        assert_eq!(p["syscalls"]["mount"], "EPERM", "{}", p["syscalls"]);
        let done = server.finish().await.expect("finish");
        assert_eq!(code(done.status), 0, "{}", done.stderr);
        assert!(!done.stderr.contains(&token));
        run.assert_nothing_left(p["namespaces"]["user"].as_str());
    }
}

/// `inspect` shows what `run` would do, from the same request: here the configuration file's default permission
/// profile (a read path and network egress), which applies to a plain image, and the flag that overrides it.
#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_default_permission_profile_is_what_inspect_shows() {
    let run = Run::new();
    let dir = shared_dir(false);
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        serde_json::to_vec(&json!({"read": [dir.path().join("docs")], "network": {"outbound": {"allow_host": [".example.com"], "allow_port": [443]}}})).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("permission_profile = {:?}\n", profile.to_string_lossy()),
    )
    .unwrap();
    let image = run.image("app");
    let inspect = |extra: &'static [&'static str]| {
        let mut args = vec!["inspect", "--json"];
        args.extend_from_slice(extra);
        args.push(&image);
        let mut cmd = run.cli(&fixture().cache, &args);
        cmd.env("THV_SANDBOX_CONFIG", &config);
        cmd
    };
    let out = inspect(&[]).output().await.expect("inspect");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["egress"]["allow_host"], json!([".example.com"]), "{v}");
    assert_eq!(v["mounts"][0]["mode"], "ro", "{v}");
    assert_eq!(v["network"], "none");
    // The flag wins over the configuration's default.
    let out = inspect(&["--permission-profile", "none"])
        .output()
        .await
        .expect("inspect");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["egress"].is_null() && v["mounts"].as_array().unwrap().is_empty(),
        "{v}"
    );
}
