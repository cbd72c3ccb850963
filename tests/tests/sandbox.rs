//! End-to-end: a real MCP client (rmcp) talks to the probe MCP server through `thv-sandbox run oci:…`, and the
//! probe reports what it can and cannot do inside.

mod common;

use std::os::fd::OwnedFd;
use std::process::Stdio;

use common::{code, fixture, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{
    call_tool, list_tools, mcp_client_over_command, mcp_client_over_stream, spawn_mcp, tool_json,
    tool_text, within, FINISH_TIMEOUT,
};

async fn probe_report(run: &Run, tag: &str, extra: &[&str]) -> Value {
    let server = spawn_mcp(run.cmd(tag, extra, &[]))
        .await
        .expect("initialize through the sandbox");
    let report = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    run.assert_nothing_left(report["namespaces"]["user"].as_str());
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_pipes_initializes_lists_and_calls() {
    let run = Run::new();
    let client = mcp_client_over_command(run.cmd("app", &[], &[]))
        .await
        .expect("initialize through the sandbox");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("sandbox-probe")
    );
    let tools = list_tools(&client).await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    let out = call_tool(
        &client,
        "echo",
        json!({"text": "hello through the sandbox"}),
    )
    .await
    .expect("echo");
    assert_eq!(tool_text(&out), "hello through the sandbox");
    client.cancel().await.ok();
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_a_socketpair_like_desktop_clients() {
    let run = Run::new();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let theirs_out = theirs.try_clone().expect("dup");
    let mut cmd = run.cmd("app", &[], &[]);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    ours.set_nonblocking(true).expect("nonblocking");
    let stream = tokio::net::UnixStream::from_std(ours).expect("tokio stream");
    let (read, write) = stream.into_split();
    let client = mcp_client_over_stream(read, write)
        .await
        .expect("initialize over the socketpair");
    let tools = list_tools(&client).await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "probe"));
    let out = call_tool(&client, "echo", json!({"text": "over a socket"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&out), "over a socket");
    client.cancel().await.ok();
    let status = within(FINISH_TIMEOUT, "the sandbox's exit", child.wait())
        .await
        .expect("wait");
    assert_eq!(code(status), 0);
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_holds() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));

    // Runs as the image's user (app = 1000:1000), with no capabilities, no_new_privs and a seccomp filter.
    assert_eq!(p["credentials"]["uid"], 1000, "{p}");
    assert_eq!(p["credentials"]["euid"], 1000);
    assert_eq!(p["credentials"]["gid"], 1000);
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(p["status"][set], "0000000000000000", "{set}");
    }
    assert_eq!(p["status"]["NoNewPrivs"], "1");
    assert_eq!(p["status"]["Seccomp"], "2");
    // Container root is never host root.
    let uid_map = p["uid_map"].as_str().unwrap();
    for line in uid_map.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(
            f[0] != 0 || f[1] != 0,
            "container root mapped to host root: {uid_map}"
        );
    }
    // Loopback, up, and the default route's device (`sandbox::unreachable`, answered by thv-sandbox with
    // "unreachable" only): its own dummy address and a link-local one, nothing that leads anywhere.
    let ifaces = p["interfaces"].as_object().unwrap();
    assert_eq!(
        ifaces.keys().collect::<Vec<_>>(),
        ["lo", "thv0"],
        "{ifaces:?}"
    );
    assert_eq!(ifaces["lo"]["up"], true);
    let thv0: Vec<&str> = ifaces["thv0"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        thv0.len() <= 2
            && thv0.contains(&"192.0.0.8")
            && thv0
                .iter()
                .all(|a| *a == "192.0.0.8" || a.starts_with("fe80:")),
        "{ifaces:?}"
    );
    assert_eq!(
        p["sys_class_net"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["lo", "thv0"]
    );
    // Its own pid namespace: it is pid 1 and sees nothing else.
    assert_eq!(p["pid"], 1);
    assert_eq!(p["visible_pids"], json!([1]));
    // The root is read-only; /tmp is writable.
    assert_eq!(p["root_writable"], "EROFS");
    assert_eq!(p["tmp_writable"], "ok");
    assert_eq!(p["rlimits"]["CORE"]["hard"], 0);
    assert!(p["rlimits"]["NPROC"]["hard"].as_u64().unwrap() <= 8192);
    // What the profile denies.
    let sys = &p["syscalls"];
    for call in [
        "mount",
        "umount2",
        "ptrace_traceme",
        "keyctl",
        "bpf",
        "perf_event_open",
        "init_module",
        "reboot",
        "unshare_newuser",
        "unshare_newns",
        "unshare_newnet",
        "clone_newuser",
        "setns",
        "pivot_root",
        "chroot",
        "mknod_char",
    ] {
        assert_eq!(sys[call], "EPERM", "{call}: {sys}");
    }
    // Becoming uid 0: EPERM (no CAP_SETUID), or EINVAL where uid 0 does not even exist (single-uid mode).
    assert!(
        sys["setresuid_0"] == "EPERM" || sys["setresuid_0"] == "EINVAL",
        "{sys}"
    );
    assert_eq!(sys["clone3_newuser"], "ENOSYS", "{sys}");
    // Only the native syscall ABI: a 32-bit entry into the kernel kills the caller.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(sys["compat_int80_getpid"], "killed:SIGSYS", "{sys}");
    }
    assert!(
        p["env_names"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n != "XDG_RUNTIME_DIR"),
        "host env leaked"
    );

    // Host files outside the image are not there.
    let secret = fixture().host_secret.to_string_lossy().into_owned();
    let r = tool_json(
        &server
            .call("read_file", json!({"path": secret}))
            .await
            .expect("read_file"),
    );
    assert_eq!(r["errno"], "ENOENT", "{r}");
    let r = tool_json(
        &server
            .call("read_file", json!({"path": "/etc/passwd"}))
            .await
            .expect("read_file"),
    );
    assert!(
        r.to_string().contains("app:x:1000"),
        "the image's own /etc/passwd: {r}"
    );
    let r = tool_json(
        &server
            .call("list_dir", json!({"path": "/"}))
            .await
            .expect("list_dir"),
    );
    // The listing must succeed: an error (or another shape) would leave nothing to check.
    let root: Vec<String> = serde_json::from_value(r["entries"].clone())
        .unwrap_or_else(|e| panic!("list_dir / gave no entries ({e}): {r}"));
    for image_dir in ["etc", "tmp", "usr"] {
        assert!(
            root.contains(&image_dir.to_string()),
            "the image's /{image_dir} missing from the listing: {root:?}"
        );
    }
    for host_only in ["work", "boot", "srv"] {
        assert!(
            !root.contains(&host_only.to_string()),
            "host dir /{host_only} visible: {root:?}"
        );
    }
    // Writes: not into the image, yes into /tmp.
    let w = tool_json(
        &server
            .call(
                "write_file",
                json!({"path": "/usr/local/bin/x", "text": "x"}),
            )
            .await
            .expect("write"),
    );
    assert_eq!(w["errno"], "EROFS", "{w}");
    let w = server
        .call("write_file", json!({"path": "/tmp/x", "text": "x"}))
        .await
        .expect("write");
    assert!(!w.is_error.unwrap_or(false), "{w:?}");

    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

/// README: each server gets its "own user, mount, pid, ipc, uts, cgroup and network namespaces". Each of the
/// probe's namespaces differs from this test process's (the host's, as far as the sandbox is concerned).
#[tokio::test(flavor = "multi_thread")]
async fn every_namespace_is_the_sandboxs_own() {
    let run = Run::new();
    let p = probe_report(&run, "app", &[]).await;
    for ns in ["user", "mnt", "pid", "ipc", "uts", "cgroup", "net"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap_or_else(|e| panic!("our {ns} namespace: {e}"));
        let ours = ours.to_string_lossy();
        let theirs = p["namespaces"][ns].as_str().unwrap_or_else(|| {
            panic!(
                "the probe could not read its {ns} namespace: {}",
                p["namespaces"]
            )
        });
        assert!(theirs.starts_with(&format!("{ns}:[")), "{ns}: {theirs}");
        assert_ne!(theirs, ours, "the sandbox shares the host's {ns} namespace");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_without_user_runs_as_container_root_which_is_not_host_root() {
    let run = Run::new();
    let p = probe_report(&run, "root", &[]).await;
    assert_eq!(p["credentials"]["uid"], 0);
    assert_eq!(p["status"]["CapEff"], "0000000000000000");
    let first = p["uid_map"]
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().next() == Some("0"))
        .unwrap()
        .to_owned();
    let host: u64 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(host, 0, "{first}");
    let lines = p["uid_map"].as_str().unwrap().lines().count();
    if let Ok(mode) = std::env::var("THV_E2E_EXPECT_MODE") {
        // The invoking user is the image user (here: root) in both modes; subids add the rest of the range.
        let me = nix::unistd::geteuid().as_raw() as u64;
        assert_eq!(host, me, "{first}");
        match mode.as_str() {
            "single" => assert_eq!(lines, 1, "{}", p["uid_map"]),
            "subids" => assert!(lines > 1, "{}", p["uid_map"]),
            other => panic!("unknown THV_E2E_EXPECT_MODE {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_only_what_is_named() {
    let run = Run::new();
    let mut cmd = run.cmd("app", &["-e", "GREETING=hi there"], &[]);
    cmd.env("HOST_ONLY_SECRET", "leak");
    let server = spawn_mcp(cmd).await.expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let names: Vec<&str> = p["env_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(names.contains(&"GREETING"), "{names:?}");
    assert!(!names.contains(&"HOST_ONLY_SECRET"), "{names:?}");
    server.finish().await.expect("finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn args_after_double_dash_replace_cmd_and_stdout_is_the_servers_alone() {
    let run = Run::new();
    // `--probe` makes the probe print its report on stdout and exit; stdin is /dev/null and stdout a file,
    // neither a pipe nor a socket, so both get a pipe interposed.
    let out = tempfile::NamedTempFile::new().expect("tmp");
    let mut cmd = run.cmd("app", &[], &["--probe"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().expect("reopen")));
    let status = within(FINISH_TIMEOUT, "thv-sandbox run --probe", cmd.status())
        .await
        .expect("run");
    assert_eq!(code(status), 0);
    let text = std::fs::read_to_string(out.path()).expect("read");
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("stdout is not only the report ({e}): {text:?}"));
    assert_eq!(report["credentials"]["uid"], 1000);
    run.assert_nothing_left(None);
}
