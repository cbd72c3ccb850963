//! End-to-end: exit codes, signals, clients that go away, and what is left afterwards (nothing).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{code, Run};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use thv_sandbox_e2e::{spawn_mcp, tool_json};

fn pid_of(child: &tokio::process::Child) -> Pid {
    Pid::from_raw(child.id().expect("running") as i32)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_exit_code_is_ours() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let _ = server.call("exit", json!({"code": 7})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 7, "{}", done.stderr);
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_by_a_signal_gives_128_plus_n() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let _ = server.call("crash", json!({})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 128 + libc::SIGILL, "{}", done.stderr);
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reaches_the_server() {
    let run = Run::new();
    let mut server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    kill(pid_of(&server.child), Signal::SIGTERM).expect("kill");
    let status = server.child.wait().await.expect("wait");
    // The probe handles SIGTERM by exiting 128+15.
    assert_eq!(code(status), 143);
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let run = Run::new();
    let mut server = spawn_mcp(run.cmd(
        "app",
        &["-e", "PROBE_IGNORE_SIGTERM=1", "--stop-timeout", "0.3"],
        &[],
    ))
    .await
    .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    kill(pid_of(&server.child), Signal::SIGTERM).expect("kill");
    let status = server.child.wait().await.expect("wait");
    assert_eq!(code(status), 128 + libc::SIGKILL);
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn background_processes_die_with_the_server() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    // The sleeper holds our stderr: finish() reads stderr to its end, which needs the sleeper gone.
    let s = server
        .call(
            "spawn_sleeper",
            json!({"seconds": 3600, "hold_stdio": true}),
        )
        .await
        .expect("spawn");
    assert!(!s.is_error.unwrap_or(false), "{s:?}");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_thv_sandbox_leaves_nothing_behind() {
    let run = Run::new();
    let mut server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let s = server
        .call("spawn_sleeper", json!({"seconds": 3600}))
        .await
        .expect("spawn");
    assert!(!s.is_error.unwrap_or(false), "{s:?}");
    assert!(
        !run.runner_processes().is_empty(),
        "the runner should be running"
    );
    kill(pid_of(&server.child), Signal::SIGKILL).expect("kill");
    let status = server.child.wait().await.expect("wait");
    assert_eq!(code(status), 128 + libc::SIGKILL);
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_sandbox_leaves_the_other_running() {
    let run_a = Run::new();
    let run_b = Run::new();
    let mut a = spawn_mcp(run_a.cmd("app", &[], &[]))
        .await
        .expect("initialize a");
    let b = spawn_mcp(run_b.cmd("app", &[], &[]))
        .await
        .expect("initialize b");
    let pa = tool_json(&a.call("probe", json!({})).await.expect("probe a"));
    kill(pid_of(&a.child), Signal::SIGKILL).expect("kill a");
    a.child.wait().await.expect("wait a");
    run_a.assert_nothing_left(pa["namespaces"]["user"].as_str());
    // b still answers, and we (the test process) are alive to ask.
    let out = b
        .call("echo", json!({"text": "still here"}))
        .await
        .expect("b answers");
    assert_eq!(thv_sandbox_e2e::tool_text(&out), "still here");
    let done = b.finish().await.expect("finish b");
    assert_eq!(code(done.status), 0);
    run_b.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_ends_the_sandbox() {
    let run = Run::new();
    let mut cmd = run.cmd("app", &[], &[]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    // Keep stdin open (no EOF), but close our end of its stdout: the client is gone.
    let stdin = child.stdin.take();
    drop(child.stdout.take());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    drop(stdin);
    // The supervisor sees nobody reads its stdout and sends SIGTERM at once; the probe exits 128+15 on SIGTERM,
    // and that is passed through (not 125, our own error; not 137, the escalation to SIGKILL).
    assert_eq!(
        code(status),
        128 + libc::SIGTERM,
        "a client hang-up ends the server with SIGTERM"
    );
    run.assert_nothing_left(None);
}

/// A client that hangs up while the sandbox is still being made: the stop reaches the server however early it comes.
/// The hang-ups are spread over the whole start, 0 to 200 ms after the spawn, so that some land while the server is
/// being exec'd and installs its handler. (Two ways a stop was lost there, each leaving the server running until
/// its stop timeout: a SIGTERM noted in the container's init before `execve` stayed in that copy of the runner init;
/// and one that found the new server at the default action, dropped by the kernel, was checked for after the
/// server's handler was in place. On a loaded machine that was about one start in seven, then one in fifteen.)
#[tokio::test(flavor = "multi_thread")]
async fn a_hang_up_during_the_start_stops_the_server_at_once_every_time() {
    let run = Run::new();
    for i in 0..40u64 {
        let mut cmd = run.cmd("app", &["--stop-timeout", "30"], &[]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        tokio::time::sleep(Duration::from_millis(i * 5)).await;
        drop(stdout);
        let pid = child.id().expect("running") as i32;
        let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "start {i}: still running 10 s after the client hung up {} ms into the start; its processes:\n{}",
                i * 5,
                process_tree(pid)
            ),
        };
        drop(stdin);
        assert_eq!(code(status), 128 + libc::SIGTERM, "start {i}");
    }
    run.assert_nothing_left(None);
}

/// `pid` and its descendants, a line each: pid, name, state, where it sleeps in the kernel (for a failure message).
fn process_tree(pid: i32) -> String {
    let read =
        |p: i32, f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
    let parent = |p: i32| -> Option<i32> {
        let stat = read(p, "stat");
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(common::processes_where(|q| parent(q) == Some(p)));
        i += 1;
    }
    tree.iter()
        .map(|p| {
            let stat = read(*p, "stat");
            let state = stat
                .rfind(')')
                .and_then(|e| stat.get(e + 2..e + 3))
                .unwrap_or("?")
                .to_owned();
            format!(
                "  {p} {} {state} wchan={}",
                read(*p, "comm").trim(),
                read(*p, "wchan")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_stdin_ends_a_server_that_exits_on_eof() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0);
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_state_and_abandoned_unpacks_are_collected_at_the_next_start() {
    use std::os::unix::fs::PermissionsExt;
    let run = Run::new();
    // What a crashed run leaves: a run directory whose lock nobody holds.
    let runs = run.runs_dir();
    let stale = runs.join("thv-000000000000000000000000");
    std::fs::create_dir_all(stale.join("state/thv-000000000000000000000000")).unwrap();
    std::fs::write(stale.join("lock"), b"").unwrap();
    std::fs::write(stale.join("plan.json"), b"{}").unwrap();
    // What a killed unpack leaves: a staging directory, with a read-only directory in it, whose lock nobody holds.
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let roots = cache.path().join("roots-v1");
    let killed = roots.join(".tmp-killed");
    std::fs::create_dir_all(killed.join("rootfs/usr/share")).unwrap();
    std::fs::write(killed.join("lock"), b"").unwrap();
    std::fs::set_permissions(
        killed.join("rootfs/usr"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o700)).unwrap();

    let mut cmd = tokio::process::Command::new(thv_sandbox_e2e::thv_sandbox_bin());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        )
        .env("XDG_RUNTIME_DIR", run.xdg.path())
        .args(["run", "--cache-dir"])
        .arg(cache.path())
        .arg(run.image("app"))
        .args(["--", "--probe"])
        .stdout(Stdio::null());
    let status = cmd.status().await.expect("run");
    assert_eq!(code(status), 0);
    assert!(!stale.exists(), "stale run directory not collected");
    assert!(!killed.exists(), "abandoned unpack not collected");
    run.assert_nothing_left(None);
}

/// Our own cgroup directory on the cgroup2 hierarchy (the unified one on hybrid hosts), if we may create cgroups
/// below it — that is, if it is delegated to us (or we are root).
fn delegated_cgroup() -> Option<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })?;
    let dir = std::path::Path::new(&mount).join(rel.trim_start_matches('/'));
    nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).ok()?;
    Some(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_delegated_cgroup_the_sandbox_gets_its_own_and_it_goes_away() {
    let Some(parent) = delegated_cgroup() else {
        thv_sandbox_e2e::require(
            false,
            "a cgroup v2 directory delegated to the test user (see .ci/run)",
        );
        return;
    };
    for how in ["exit", "sigkill"] {
        let run = Run::new();
        let mut server = spawn_mcp(run.cmd("app", &[], &[]))
            .await
            .expect("initialize");
        let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
        // The run directory records the sandbox's cgroup; it exists, below ours, and holds the server.
        let runs: Vec<_> = std::fs::read_dir(run.runs_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        // Its first line is libcontainer's cgroup (the limits' own cgroups, if any, follow it).
        let cg = std::path::PathBuf::from(
            std::fs::read_to_string(runs[0].join("cgroup"))
                .expect("cgroup recorded")
                .lines()
                .next()
                .unwrap_or_default(),
        );
        assert!(
            cg.starts_with(&parent),
            "{} not below {}",
            cg.display(),
            parent.display()
        );
        let procs =
            std::fs::read_to_string(cg.join("cgroup.procs")).expect("the sandbox's own cgroup");
        assert!(!procs.trim().is_empty(), "no process in {}", cg.display());
        // The probe sees itself at the root of its cgroup namespace (exactly `0::/`: from outside it, its
        // cgroup would show as `0::/<path>`), and that namespace is not ours.
        let unified: Vec<&str> = p["cgroup"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("0::"))
            .collect();
        assert_eq!(unified, ["0::/"], "{}", p["cgroup"]);
        let ours = std::fs::read_link("/proc/self/ns/cgroup").expect("our cgroup namespace");
        assert_ne!(
            p["namespaces"]["cgroup"].as_str(),
            Some(ours.to_string_lossy().as_ref()),
            "the sandbox shares our cgroup namespace"
        );
        assert!(
            p["namespaces"]["cgroup"]
                .as_str()
                .is_some_and(|ns| ns.starts_with("cgroup:[")),
            "{}",
            p["namespaces"]
        );
        if how == "exit" {
            let done = server.finish().await.expect("finish");
            assert_eq!(code(done.status), 0);
        } else {
            kill(pid_of(&server.child), Signal::SIGKILL).expect("kill");
            server.child.wait().await.expect("wait");
        }
        run.assert_nothing_left(p["namespaces"]["user"].as_str());
        assert!(!cg.exists(), "{how}: cgroup {} left behind", cg.display());
    }
}

/// `THV_SANDBOX_TRACE=1` (the warm-start benchmark's phase clock): every process of a start leaves its marks on
/// stderr, in the order of the start, from the process that does the step; without the variable, none.
#[tokio::test(flavor = "multi_thread")]
async fn the_trace_marks_each_process_of_a_start_in_order_and_is_off_by_default() {
    let run = Run::new();
    let mut cmd = run.cmd("app", &[], &[]);
    cmd.env("THV_SANDBOX_TRACE", "1");
    let server = spawn_mcp(cmd).await.expect("initialize");
    let done = server.finish().await.expect("finish");
    let marks: Vec<(u128, i32, String)> = done
        .stderr
        .lines()
        // A mark is one write, but the server's own stderr shares the pipe and may be cut around it (a line
        // printed in several writes): found anywhere in a line, not only at its start.
        .filter_map(|l| {
            l.find("thv-sandbox trace: ")
                .map(|i| &l[i + "thv-sandbox trace: ".len()..])
        })
        .map(|rest| {
            let mut it = rest.splitn(3, ' ');
            let ns = it.next().unwrap().parse().expect("ns");
            let pid = it.next().unwrap().parse().expect("pid");
            (ns, pid, it.next().expect("label").to_string())
        })
        .collect();
    let find = |label: &str| {
        marks
            .iter()
            .find(|m| m.2 == label)
            .unwrap_or_else(|| panic!("no `{label}` mark in {:?}", done.stderr))
            .clone()
    };
    let chain = [
        "main",
        "pipeline",
        "root found",
        "spec written",
        "runner spawn",
        "keeper: main",
        "id maps written",
        "keeper: namespaces",
        "init: forked",
        "init: build",
        "container: seccomp loaded",
        "container: execve",
    ];
    let got: Vec<_> = chain.iter().map(|l| find(l)).collect();
    for w in got.windows(2) {
        assert!(
            w[0].0 <= w[1].0,
            "`{}` after `{}`: {marks:?}",
            w[0].2,
            w[1].2
        );
    }
    // The supervisor hears of the start from the runner init, after it told the container's init to exec: those
    // two are not ordered (two messages race), so the supervisor's mark is checked against its cause only.
    assert!(
        find("init: started").0 <= find("supervisor: started").0,
        "{marks:?}"
    );
    // Who marks what: the supervisor its steps, the keeper, the runner init and the container's init their own.
    let pid = |l: &str| find(l).1;
    let supervisor = pid("pipeline");
    for l in [
        "main",
        "spec written",
        "runner spawn",
        "id maps written",
        "supervisor: started",
    ] {
        assert_eq!(pid(l), supervisor, "{l}: {marks:?}");
    }
    // (pids as each process sees its own: the runner init and the container's init are both pid 1 of their
    // pid namespaces, so only the processes in the host's pid namespace are told apart by pid.)
    let (keeper, init, container) = (
        pid("keeper: main"),
        pid("init: build"),
        pid("container: execve"),
    );
    assert!(
        keeper != supervisor && init != keeper && container != keeper,
        "{marks:?}"
    );
    assert_eq!(pid("keeper: namespaces"), keeper);
    assert_eq!(pid("init: forked"), init);
    assert_eq!(pid("container: seccomp loaded"), container);

    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let done = server.finish().await.expect("finish");
    assert!(
        !done.stderr.contains("thv-sandbox trace:"),
        "{}",
        done.stderr
    );
}

/// `run` forks its runner keeper first thing instead of starting the binary a second time (issue 14), and the
/// keeper keeps nothing of the supervisor an exec'd runner would not have had: it is the supervisor's child, never
/// exec'd as `__runner`; its environment (what `/proc/PID/environ` shows, the block its children copy) holds
/// none of the client's variables; it holds no descriptor of the supervisor's but its stdio and the runner
/// channel. A run that fails before its sandbox leaves no such process.
#[tokio::test(flavor = "multi_thread")]
async fn the_runner_keeper_is_forked_at_start_and_keeps_nothing_of_the_supervisor() {
    const SECRET: &str = "client-secret-value-3f9a";
    let run = Run::new();
    let mut cmd = run.cmd("app", &[], &[]);
    cmd.env("THV_TEST_CLIENT_TOKEN", SECRET);
    let server = spawn_mcp(cmd).await.expect("initialize");
    let supervisor = pid_of(&server.child).as_raw();
    let children: Vec<i32> =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .unwrap()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let keeper = *children
        .iter()
        .find(|&&p| comm(p).trim() == "thv-sbx-keeper")
        .unwrap_or_else(|| panic!("no keeper among the supervisor's children {children:?}"));
    let cmdline = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("__runner"),
        "the keeper was exec'd: {cmdline:?}"
    );
    assert_eq!(
        cmdline,
        std::fs::read(format!("/proc/{supervisor}/cmdline")).unwrap()
    );
    let environ = std::fs::read(format!("/proc/{keeper}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(SECRET),
        "the client's environment is still in the keeper"
    );
    assert!(
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{supervisor}/environ")).unwrap())
            .contains(SECRET),
        "the test did not give the supervisor the variable"
    );
    // Its descriptors: 0–2 and the channel (sockets, pipes, /dev/null), and what the keeper opens itself
    // (signalfd, cgroup files); never a file the supervisor opened (its run directory's lock, the cache).
    for fd in std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        assert!(
            t.starts_with("socket:")
                || t.starts_with("pipe:")
                || t.starts_with("anon_inode:")
                || t == "/dev/null"
                || t.starts_with("/sys/fs/cgroup"),
            "the keeper holds {:?} -> {t}",
            fd.file_name()
        );
    }
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(None);

    // A run refused before its sandbox (no such image): its prefork is gone with it.
    let out = run
        .cmd_image("oci:/nonexistent-layout-for-prefork:app", &[], &[])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let left = common::processes_where(|pid| {
        comm(pid).trim() == "thv-sbx-keeper"
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains("nonexistent-layout-for-prefork")
            })
    });
    assert!(left.is_empty(), "a prefork outlived its run: {left:?}");
}
