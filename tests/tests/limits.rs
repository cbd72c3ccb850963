//! End-to-end: resource limits (issue 15). Real sandboxes of the probe server: a memory hog is stopped at the
//! limit with the out-of-memory message, a fork bomb stops at the pids limit, a CPU hog gets its quota, and the
//! sandbox's cgroup (and a systemd scope) is gone after the run, also after SIGKILL of thv-sandbox.
//!
//! What each host is expected to do:
//! - root (any host): the limits apply (cgroup v1 on this development machine's hybrid layout, v2 elsewhere).
//! - an unprivileged user where `THV_E2E_EXPECT_CGROUP=v2-systemd` (the VM harness, `tests/vm/`, sets it: a pure
//!   cgroup v2 host with a systemd user session): the limits apply through a transient systemd scope.
//! - an unprivileged user on a cgroup v1 hybrid host (this machine's CI users, in a chowned cgroup2 without the
//!   memory controller): default limits give one warning and the server runs; an explicit limit is refused.
//! - an unprivileged user on a pure cgroup v2 host without the variable: under CI the test fails (say what the
//!   host is expected to do); locally it is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{code, Run};
use serde_json::json;
use thv_sandbox_e2e::{spawn_mcp, tool_json};

/// What this host is expected to do with limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Limits apply.
    Enforced,
    /// No cgroup can be had: defaults warn, explicit limits are refused.
    Unavailable,
}

fn expect() -> Option<Expect> {
    if nix::unistd::geteuid().is_root() {
        return Some(Expect::Enforced);
    }
    match std::env::var("THV_E2E_EXPECT_CGROUP").ok().as_deref() {
        Some("v2-systemd") => return Some(Expect::Enforced),
        Some("none") => return Some(Expect::Unavailable),
        Some(other) => panic!("THV_E2E_EXPECT_CGROUP={other}: expected v2-systemd or none"),
        None => {}
    }
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if !v2 {
        // cgroup v1 or hybrid: only root may configure the memory, pids and cpu controllers.
        return Some(Expect::Unavailable);
    }
    thv_sandbox_e2e::require(
        false,
        "a pure cgroup v2 host: set THV_E2E_EXPECT_CGROUP=v2-systemd (a systemd user session) or =none",
    );
    None
}

/// The limit tests of this binary run one at a time, so the cgroups seen during one are its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every cgroup directory on the host named `thv-sandbox…` (the sandbox's, libcontainer's inside it, a scope) and
/// those directly inside such a one (a scope's `keeper` and `sandbox`).
/// The cgroups of `run`'s sandboxes (named after its run directories), so that another test's sandbox — or a
/// cgroup some earlier, unrelated run left behind — is never counted as this test's.
fn sandbox_cgroups(run: &Run) -> Vec<PathBuf> {
    let ids: Vec<String> = std::fs::read_dir(run.runs_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    all_sandbox_cgroups()
        .into_iter()
        .filter(|p| {
            p.iter().any(|c| {
                let c = c.to_string_lossy();
                // Ours (root, delegated) or the systemd transient scope's (a user on cgroup v2 with systemd).
                ids.iter().any(|id| {
                    c == format!("thv-sandbox-{id}") || c == format!("thv-sandbox-{id}.scope")
                })
            })
        })
        .collect()
}

fn all_sandbox_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let in_ours = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("thv-sandbox-"));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if !t.is_dir() || t.is_symlink() {
                continue;
            }
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if in_ours || (name.starts_with("thv-sandbox") && name != "thv-sandbox") {
                out.push(p.clone());
            }
            if depth > 0 {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 9, &mut out);
    out.sort();
    out
}

/// Waits until none of `dirs` exists (up to 10 s); returns those still there.
fn gone(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<PathBuf> = dirs.iter().filter(|d| d.exists()).cloned().collect();
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn enforced_only() -> bool {
    expect() == Some(Expect::Enforced)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_stopped_at_the_limit_and_told_so() {
    if !enforced_only() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &["--memory", "128m"], &[]))
        .await
        .expect("initialize");
    // Within the limit: fine.
    let ok = tool_json(
        &server
            .call("allocate", json!({"mib": 32}))
            .await
            .expect("allocate 32"),
    );
    assert_eq!(ok["allocated_mib"], 32);
    let during = sandbox_cgroups(&run);
    assert!(!during.is_empty(), "the sandbox has no cgroup of its own");
    // Beyond it: the kernel kills the server.
    let _ = server.call("allocate", json!({"mib": 256})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 137, "{}", done.stderr);
    let told: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("out of memory"))
        .collect();
    assert_eq!(
        told,
        ["thv-sandbox: warning: stopped: out of memory at the 128 MiB limit (raise it with --memory, e.g. --memory 256m)"],
        "{}",
        done.stderr
    );
    assert_eq!(
        gone(&during),
        Vec::<PathBuf>::new(),
        "cgroups left after the run"
    );
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    if !enforced_only() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &["--pids-limit", "40"], &[]))
        .await
        .expect("initialize");
    let r = tool_json(
        &server
            .call("fork_many", json!({"n": 1000}))
            .await
            .expect("fork_many"),
    );
    let forked = r["forked"].as_u64().expect("forked");
    // The runner init and the probe count too.
    assert!((30..40).contains(&forked), "{r}");
    assert_eq!(r["error"], "EAGAIN", "{r}");
    // The server lives on, and can fork again once its children are gone.
    let again = tool_json(
        &server
            .call("fork_many", json!({"n": 5}))
            .await
            .expect("again"),
    );
    assert_eq!(again["forked"], 5, "{again}");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_hog_gets_its_quota() {
    if !enforced_only() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &["--cpus", "0.25"], &[]))
        .await
        .expect("initialize");
    let r = tool_json(
        &server
            .call("spin", json!({"threads": 2, "ms": 2000}))
            .await
            .expect("spin"),
    );
    let cpu_ms = r["cpu_ms"].as_u64().expect("cpu_ms");
    // The kernel throttled the sandbox's cgroup: the quota is what held it back (on this shared machine the load
    // alone may keep the spin below the bound).
    let throttled: u64 = sandbox_cgroups(&run)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nr_throttled "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    assert!(
        throttled > 0,
        "the sandbox's cgroup was never throttled: {r}; its cgroups and their cpu.max: {:?}",
        sandbox_cgroups(&run)
            .iter()
            .map(|d| (d.clone(), std::fs::read_to_string(d.join("cpu.max")).ok()))
            .collect::<Vec<_>>()
    );
    // The burst is the quota (25 ms per 100 ms period), where the kernel has the file (Linux ≥ 5.14).
    let bursts: Vec<String> = sandbox_cgroups(&run)
        .iter()
        .flat_map(|d| [d.join("cpu.cfs_burst_us"), d.join("cpu.max.burst")])
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|v| v.trim().to_owned())
        .collect();
    assert!(
        bursts.iter().any(|b| b == "25000"),
        "no CPU burst of 25000 µs in the sandbox's cgroups: {bursts:?}"
    );
    // A quarter of a CPU for 2 s is 500 ms; slack and start-up on top. In the test VM (emulated CPUs on a loaded
    // host) 852 and 1266 ms were seen: the guest charges the running task for the time its virtual CPU was not
    // scheduled on the host, in chunks larger than a quota period, so the quota overshoots there. Without the
    // quota two threads get up to 4000 ms (and there, where the guest counts host stalls as running, about that),
    // and at least one CPU's worth (2000 ms) on a shared machine, so a bound below that still tells the quota held
    // them back; `nr_throttled` above is the direct proof.
    assert!(cpu_ms <= 1500, "{r}");
    assert!(cpu_ms >= 200, "the spin hardly ran: {r}");
    server.finish().await.expect("finish");
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cgroup_is_gone_after_sigkill_of_thv_sandbox() {
    if !enforced_only() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let run = Run::new();
    let mut server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    let during = sandbox_cgroups(&run);
    assert!(!during.is_empty(), "the sandbox has no cgroup of its own");
    let pid = nix::unistd::Pid::from_raw(server.child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
    let _ = server.child.wait().await;
    assert_eq!(
        gone(&during),
        Vec::<PathBuf>::new(),
        "cgroups left after SIGKILL"
    );
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_delegation_defaults_warn_once_and_explicit_limits_are_refused() {
    if expect() != Some(Expect::Unavailable) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let run = Run::new();
    // Defaults: the server runs, with one line saying why there are no limits.
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let ok = server
        .call("echo", json!({"text": "hi"}))
        .await
        .expect("echo");
    assert_eq!(thv_sandbox_e2e::tool_text(&ok), "hi");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    let warned: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("limit for this server"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", done.stderr);
    assert!(
        warned[0].starts_with("thv-sandbox: warning: no memory/pids/cpu limit for this server: ")
            && warned[0].contains("thv-sandbox doctor"),
        "{}",
        warned[0]
    );
    // Explicit: refused before anything runs, with the doctor hint.
    for flags in [
        &["--memory", "512m"][..],
        &["--pids-limit", "100"],
        &["--cpus", "1"],
    ] {
        let out = run
            .cmd("app", flags, &[])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{flags:?}: {stderr}");
        assert!(stderr.contains("cannot enforce"), "{flags:?}: {stderr}");
        assert!(stderr.contains("doctor"), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // `unlimited` asks for nothing: no refusal, no warning for that limit.
    let server = spawn_mcp(run.cmd(
        "app",
        &[
            "--memory",
            "unlimited",
            "--cpus",
            "unlimited",
            "--pids-limit",
            "unlimited",
        ],
        &[],
    ))
    .await
    .expect("initialize");
    let done = server.finish().await.expect("finish");
    assert!(
        !done.stderr.contains("limit for this server"),
        "{}",
        done.stderr
    );
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_that_does_not_parse_is_a_usage_error() {
    let run = Run::new();
    let out = run
        .cmd("app", &["--memory", "lots"], &[])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--memory `lots`") && stderr.contains("512m"),
        "{stderr}"
    );
}
