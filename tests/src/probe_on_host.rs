//! The probe and the test-support library checked on the host, outside any sandbox.
//!
//! This is an integration-test target (declared in Cargo.toml) rather than unit tests in the library because
//! cargo builds the `sandbox-probe` binary only for integration tests: `cargo test --lib` would not have it.
//!
//! - The probe's server side, first with hand-written JSON-RPC lines, then with the real rmcp client over each
//!   transport the e2e tests use (child process, pipes with exit status, socketpair).
//! - Its signal behaviour on the host and as the init of a pid namespace (what it is inside a sandbox).
//! - The probe image: a self-consistent OCI layout holding the probe and every library it links.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use flate2::read::GzDecoder;
use serde_json::{json, Value};
use thv_sandbox_e2e::image::shared_libraries;
use thv_sandbox_e2e::{
    call_tool, check_layout, mcp_client_over_command, mcp_client_over_stream, probe_bin,
    probe_image, require, spawn_mcp, tool_json, tool_text,
};
use tokio::process::Command;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn probe_command() -> Command {
    let mut cmd = Command::new(probe_bin());
    cmd.env_remove("PROBE_IGNORE_SIGTERM");
    cmd
}

#[test]
fn probe_speaks_newline_delimited_json_rpc_on_stdio() {
    let mut child = std::process::Command::new(probe_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the probe");
    // Blocking reads: a watchdog kills a probe that hangs (the read then sees end of file), unless the test is
    // over first (the sender is dropped, before the probe is reaped).
    let (test_over, watchdog_wait) = std::sync::mpsc::channel::<()>();
    let probe_pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        let hung = watchdog_wait.recv_timeout(thv_sandbox_e2e::CALL_TIMEOUT)
            == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
        if hung {
            kill(probe_pid, nix::sys::signal::Signal::SIGKILL);
        }
        hung
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut send = |message: Value| writeln!(stdin, "{message}").expect("write a message");
    let mut receive = || -> Value {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a reply");
        assert!(
            !line.is_empty(),
            "the probe closed stdout without a reply (killed after {:?} without one?)",
            thv_sandbox_e2e::CALL_TIMEOUT
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}"))
    };

    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    let init = receive();
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        init["result"]["capabilities"],
        json!({"tools": {"listChanged": true}})
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "sandbox-probe");

    // A notification gets no reply: the next line must be the answer to the ping.
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}));
    assert_eq!(
        receive(),
        json!({"jsonrpc": "2.0", "id": "p", "result": {}})
    );

    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = receive();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("a tools array")
        .iter()
        .map(|t| t["name"].as_str().expect("a tool name"))
        .collect();
    for expected in [
        "echo",
        "probe",
        "read_file",
        "write_file",
        "list_dir",
        "spawn_sleeper",
        "exit",
        "sleep",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello, probe"}}}));
    let echo = receive();
    assert_eq!(echo["id"], 3);
    assert_eq!(
        echo["result"],
        json!({"content": [{"type": "text", "text": "hello, probe"}], "isError": false})
    );

    send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "probe"}}));
    let probe = receive();
    assert_eq!(probe["result"]["isError"], false);
    let report: Value = serde_json::from_str(
        probe["result"]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("the probe report is JSON");
    assert_eq!(report["pid"], child.id());
    assert_eq!(report["credentials"]["uid"], nix::unistd::getuid().as_raw());
    assert!(
        report["syscalls"]["unshare_newuser"].is_string(),
        "{report}"
    );
    assert!(report["status"]["CapEff"].is_string(), "{report}");

    send(json!({"jsonrpc": "2.0", "id": 5, "method": "no/such/method"}));
    assert_eq!(receive()["error"]["code"], -32601);

    drop(stdin);
    let status = child.wait().expect("wait for the probe");
    drop(test_over);
    assert!(
        !watchdog.join().expect("watchdog"),
        "the probe hung and was killed"
    );
    assert!(
        status.success(),
        "end of file on stdin must end the probe with 0, got {status}"
    );
}

#[test]
fn probe_cli_mode_prints_the_report() {
    let output = std::process::Command::new(probe_bin())
        .arg("--probe")
        .output()
        .expect("run the probe");
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(report["syscalls"].is_object());
    assert!(
        report["mounts"]["count"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
}

#[tokio::test]
async fn rmcp_client_talks_to_the_probe_and_sees_its_exit_status() {
    let process = spawn_mcp(probe_command()).await.expect("handshake");
    let info = process
        .client
        .peer_info()
        .expect("server info after the handshake");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("sandbox-probe")
    );

    let tools = thv_sandbox_e2e::list_tools(&process.client)
        .await
        .expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "probe"), "{tools:?}");

    let echo = process
        .call("echo", json!({"text": "over rmcp"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echo), "over rmcp");
    assert_eq!(echo.is_error, Some(false));

    let missing = process
        .call("read_file", json!({"path": "/nonexistent/probe"}))
        .await
        .expect("read_file");
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(tool_json(&missing), json!({"errno": "ENOENT"}));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    let path = file.to_str().expect("utf-8 path");
    let wrote = process
        .call("write_file", json!({"path": path, "text": "abc"}))
        .await
        .expect("write_file");
    assert_eq!(tool_json(&wrote), json!({"written": 3}));
    let read = process
        .call("read_file", json!({"path": path}))
        .await
        .expect("read_file");
    assert_eq!(tool_json(&read)["content"], "abc");
    let listed = process
        .call(
            "list_dir",
            json!({"path": dir.path().to_str().expect("utf-8 path")}),
        )
        .await
        .expect("list_dir");
    assert_eq!(tool_json(&listed), json!({"entries": ["f"]}));

    let bad = process.call("no_such_tool", Value::Null).await;
    assert!(bad.is_err(), "an unknown tool is a JSON-RPC error: {bad:?}");

    let exiting = process
        .call("exit", json!({"code": 7}))
        .await
        .expect("exit");
    assert_eq!(tool_json(&exiting), json!({"exiting": 7}));
    let finished = process.finish().await.expect("finish");
    assert_eq!(
        finished.status.code(),
        Some(7),
        "stderr: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("exiting with 7"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn closing_the_client_ends_the_probe_with_status_0() {
    let process = spawn_mcp(probe_command()).await.expect("handshake");
    process
        .call("echo", json!({"text": "x"}))
        .await
        .expect("echo");
    let finished = process.finish().await.expect("finish");
    assert!(
        finished.status.success(),
        "{:?}: {}",
        finished.status,
        finished.stderr
    );
    assert!(
        finished.stderr.contains("stdin closed"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn rmcp_child_process_transport_works_with_the_probe() {
    let client = mcp_client_over_command(probe_command())
        .await
        .expect("handshake");
    let echo = call_tool(&client, "echo", json!({"text": "child process"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echo), "child process");
    client.cancel().await.expect("cancel");
}

#[tokio::test]
async fn rmcp_client_works_over_a_socketpair() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let theirs_out: OwnedFd = theirs.try_clone().expect("dup").into();
    let theirs_in: OwnedFd = theirs.into();
    let mut child = probe_command()
        .stdin(Stdio::from(theirs_in))
        .stdout(Stdio::from(theirs_out))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the probe");
    ours.set_nonblocking(true).expect("nonblocking");
    let (read, write) = tokio::net::UnixStream::from_std(ours)
        .expect("tokio socket")
        .into_split();
    let client = mcp_client_over_stream(read, write)
        .await
        .expect("handshake");
    let echo = call_tool(&client, "echo", json!({"text": "socketpair"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echo), "socketpair");
    client.cancel().await.expect("cancel");
    let status = thv_sandbox_e2e::within(
        thv_sandbox_e2e::FINISH_TIMEOUT,
        "the probe's exit",
        child.wait(),
    )
    .await
    .expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn probe_image_is_a_consistent_layout_with_the_probe_and_its_libraries() {
    let dir = tempfile::tempdir().expect("tempdir");
    probe_image(dir.path(), "probe", Some("app")).expect("probe image");
    let summary = check_layout(dir.path()).expect("consistent layout");
    assert_eq!(summary.images["probe"].1, 2);

    let blob = |digest: &Value| {
        dir.path().join("blobs/sha256").join(
            digest
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:"),
        )
    };
    let index = read_json(&dir.path().join("index.json"));
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "probe"
    );
    let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let config = read_json(&blob(&manifest["config"]["digest"]));
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/sandbox-probe"])
    );
    assert_eq!(config["config"]["User"], "app");
    assert_eq!(config["config"]["WorkingDir"], "/");

    let mut files = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let compressed = fs::read(blob(&layer["digest"])).expect("layer blob");
        let mut archive = tar::Archive::new(GzDecoder::new(compressed.as_slice()));
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry data");
            files.insert(path, (entry.header().uid().expect("uid"), data));
        }
    }
    let probe = fs::read(probe_bin()).expect("the probe binary");
    assert!(
        files["usr/local/bin/sandbox-probe"].1 == probe,
        "the image must hold the built probe"
    );
    let passwd = String::from_utf8_lossy(&files["etc/passwd"].1).into_owned();
    assert!(
        passwd.contains("app:x:1000:1000:app:/home/app:"),
        "{passwd}"
    );
    assert_eq!(files["home/app"].0, 1000);
    let libraries = shared_libraries(&probe_bin()).expect("ldd");
    assert!(
        !libraries.is_empty(),
        "the probe is expected to be dynamically linked"
    );
    for lib in libraries {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_owned();
        let on_host = fs::read(&lib).expect("library on the host");
        assert!(
            files.get(&rel).is_some_and(|f| f.1 == on_host),
            "{rel} missing from the image or different"
        );
    }
}

/// The probe's host pid while it runs in `unshare`: read from its own status (NSpid lists outer pid first).
async fn outer_pid(process: &thv_sandbox_e2e::McpProcess) -> i32 {
    let report = tool_json(&process.call("probe", Value::Null).await.expect("probe"));
    let nspid = report["status"]["NSpid"]
        .as_str()
        .expect("NSpid in /proc/self/status");
    let pids: Vec<i32> = nspid
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(
        pids.last(),
        Some(&1),
        "the probe must be pid 1 of its namespace: {nspid}"
    );
    pids[0]
}

fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("kill");
}

/// A command running the probe as the init of new user and pid namespaces, or None (skip) where they are not
/// available. /proc is the host's, so the probe's NSpid shows its outer pid.
fn probe_as_namespace_init(env: Option<(&str, &str)>) -> Option<Command> {
    let works = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        works,
        "unshare --user --map-root-user --pid --fork (util-linux, user namespaces)",
    ) {
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--kill-child",
    ])
    .arg(probe_bin());
    cmd.env_remove("PROBE_IGNORE_SIGTERM");
    if let Some((key, value)) = env {
        cmd.env(key, value);
    }
    Some(cmd)
}

#[tokio::test]
async fn sigterm_ends_the_probe_on_the_host_and_as_a_namespace_init() {
    // On the host the handler re-raises: the probe dies by SIGTERM.
    let process = spawn_mcp(probe_command()).await.expect("handshake");
    kill(
        process.child.id().expect("pid") as i32,
        nix::sys::signal::Signal::SIGTERM,
    );
    let finished = process.finish().await.expect("finish");
    assert_eq!(
        finished.status.signal(),
        Some(libc::SIGTERM),
        "{:?}",
        finished.status
    );

    // As a pid namespace init the re-raise is dropped by the kernel; the handler exits 128+15.
    let Some(cmd) = probe_as_namespace_init(None) else {
        return;
    };
    let process = spawn_mcp(cmd).await.expect("handshake");
    kill(outer_pid(&process).await, nix::sys::signal::Signal::SIGTERM);
    let finished = process.finish().await.expect("finish");
    assert_eq!(
        finished.status.code(),
        Some(143),
        "{:?}: {}",
        finished.status,
        finished.stderr
    );
}

#[tokio::test]
async fn probe_ignore_sigterm_survives_sigterm_until_sigkill() {
    let Some(cmd) = probe_as_namespace_init(Some(("PROBE_IGNORE_SIGTERM", "1"))) else {
        return;
    };
    let process = spawn_mcp(cmd).await.expect("handshake");
    let pid = outer_pid(&process).await;
    kill(pid, nix::sys::signal::Signal::SIGTERM);
    // The signal is handled before the probe reads the next request, so this answer comes after it.
    let echo = process
        .call("echo", json!({"text": "still here"}))
        .await
        .expect("echo after SIGTERM");
    assert_eq!(tool_text(&echo), "still here");
    assert!(
        process.stderr_so_far().contains("ignoring SIGTERM"),
        "{}",
        process.stderr_so_far()
    );
    kill(pid, nix::sys::signal::Signal::SIGKILL);
    let finished = process.finish().await.expect("finish");
    // unshare reports its child's death by SIGKILL as a failure (util-linux cannot re-raise SIGKILL on itself);
    // the probe did not leave through end of file.
    assert!(!finished.status.success(), "{:?}", finished.status);
    assert!(
        !finished.stderr.contains("stdin closed"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn crash_kills_the_probe_by_sigill_even_as_a_namespace_init() {
    let process = spawn_mcp(probe_command()).await.expect("handshake");
    let reply = process
        .call("crash", Value::Null)
        .await
        .expect("crash replies first");
    assert_eq!(tool_json(&reply), json!({"crashing": "SIGILL"}));
    let finished = process.finish().await.expect("finish");
    assert_eq!(
        finished.status.signal(),
        Some(libc::SIGILL),
        "{:?}",
        finished.status
    );

    let Some(cmd) = probe_as_namespace_init(None) else {
        return;
    };
    let process = spawn_mcp(cmd).await.expect("handshake");
    process
        .call("crash", Value::Null)
        .await
        .expect("crash replies first");
    let finished = process.finish().await.expect("finish");
    assert_eq!(
        finished.status.signal(),
        Some(libc::SIGILL),
        "{:?}: {}",
        finished.status,
        finished.stderr
    );
}

#[tokio::test]
async fn a_sleeper_holding_stderr_dies_with_the_namespace_init() {
    let Some(cmd) = probe_as_namespace_init(None) else {
        return;
    };
    let process = spawn_mcp(cmd).await.expect("handshake");
    let sleeper = process
        .call(
            "spawn_sleeper",
            json!({"seconds": 3600, "hold_stdio": true}),
        )
        .await
        .expect("spawn_sleeper");
    let pid = tool_json(&sleeper)["pid"]
        .as_i64()
        .expect("the sleeper's pid");
    assert!(pid > 1, "{sleeper:?}");
    // finish() reads stderr to end of file, which needs the sleeper gone too. If it outlived the init this
    // would hang for an hour: the timeout only turns that hang into a failure.
    let finished = tokio::time::timeout(Duration::from_secs(120), process.finish())
        .await
        .expect("the sleeper must die with the namespace init")
        .expect("finish");
    assert!(
        finished.status.success(),
        "{:?}: {}",
        finished.status,
        finished.stderr
    );
}
