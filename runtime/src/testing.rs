//! Test support: run a test in a fresh process of the test binary, so it can enter namespaces, mount, change the
//! environment or the credentials of its process without touching the test runner's (whose other threads may hold
//! locks a forked child would inherit).
//!
//! The parent test calls [`run_child`] with the full path of an `#[ignore]`d child test; the child test starts
//! with `if !is_child() { return; }` and asserts as usual. Code that needs a single-threaded process (as
//! `unshare(CLONE_NEWUSER)` does; libtest runs even one test on a thread of its own) goes in [`forked`]: in the
//! child process nothing else runs that could hold a lock across the fork.

use std::process::Command;

/// Set in the child's environment: the child test's name.
pub const CHILD_VAR: &str = "THV_TESTING_CHILD";
const CHILD: &str = CHILD_VAR;

/// Runs the ignored test `name` (`module::tests::fn_name`) in a fresh process with `vars` set; `Ok` when it
/// passed, else its output.
pub fn run_child(name: &str, vars: &[(&str, String)]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, name)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.contains("1 passed") {
        return Err(format!("child test {name} did not pass:\n{text}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

/// Whether this process is a child started by [`run_child`] (child tests do nothing otherwise).
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs `f` in a forked, single-threaded copy of this (child test) process and panics unless it returned without
/// panicking. Only for use in a child test (see the module comment).
pub fn forked(f: impl FnOnce()) {
    forked_with(|_| {}, f)
}

/// [`forked`], with `parent` run here (with the copy's pid) while the copy runs `f`.
fn forked_with(parent: impl FnOnce(nix::unistd::Pid), f: impl FnOnce()) {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    assert!(is_child(), "forked() is only for child tests");
    // SAFETY: in a child test process the only other thread is libtest's main thread waiting for this test; the
    // forked copy runs `f` and leaves with `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
            // SAFETY: _exit ends the copy without running the harness's code.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            parent(child);
            let status = waitpid(child, None).expect("waitpid");
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "the forked check failed: {status:?}"
            );
        }
    }
}

/// Runs `f` (in a child test) in a forked copy of this process that has its own user namespace, where the
/// copy's uid and gid are 0: mapped to ours, or, when we are root, to the host ids `outside` (written from here,
/// since a process may map only its own ids into a namespace it created). With `mount`, also a mount namespace
/// whose mounts are private.
pub fn in_userns(outside: Option<(u32, u32)>, mount: bool, f: impl FnOnce()) {
    use nix::sched::{unshare, CloneFlags};
    use std::io::{Read, Write};
    let (uid, gid) = outside.unwrap_or((
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    ));
    let (ready_r, ready_w) = nix::unistd::pipe().expect("pipe");
    let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
    // The map writer runs here, in the child test process; the namespace is entered in the forked copy.
    let writer = |child: nix::unistd::Pid| {
        let mut r = std::fs::File::from(ready_r.try_clone().unwrap());
        let mut byte = [0u8];
        r.read_exact(&mut byte).expect("the copy's unshare");
        let w = |name: &str, t: String| {
            std::fs::write(format!("/proc/{child}/{name}"), t)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        if outside.is_none() {
            // Without privilege a gid map needs setgroups(2) denied first; root keeps it, to drop its groups.
            w("setgroups", "deny".into());
        }
        w("uid_map", format!("0 {uid} 1\n"));
        w("gid_map", format!("0 {gid} 1\n"));
        std::fs::File::from(go_w.try_clone().unwrap())
            .write_all(b"g")
            .unwrap();
    };
    forked_with(writer, move || {
        let mut flags = CloneFlags::CLONE_NEWUSER;
        if mount {
            flags |= CloneFlags::CLONE_NEWNS;
        }
        unshare(flags).expect("unshare");
        std::fs::File::from(ready_w).write_all(b"r").unwrap();
        let mut byte = [0u8];
        std::fs::File::from(go_r)
            .read_exact(&mut byte)
            .expect("maps written");
        if outside.is_some() {
            // Become the namespace's 0 (our host id is unmapped in it), without our host groups.
            nix::unistd::setgroups(&[]).expect("setgroups");
            let (g, u) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
            nix::unistd::setresgid(g, g, g).expect("setresgid");
            nix::unistd::setresuid(u, u, u).expect("setresuid");
        }
        if mount {
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
        }
        f()
    });
}

#[test]
fn a_child_runs_alone_and_its_failure_comes_back() {
    run_child(
        "testing::child_single_threaded",
        &[("THV_TESTING_FAIL", "0".into())],
    )
    .unwrap();
    let err = run_child(
        "testing::child_single_threaded",
        &[("THV_TESTING_FAIL", "1".into())],
    )
    .unwrap_err();
    assert!(err.contains("asked to fail"), "{err}");
    // The child's environment change stayed in the child.
    assert!(std::env::var_os("THV_TESTING_SET_IN_CHILD").is_none());
}

#[test]
#[ignore = "run by its parent test in a fresh process"]
fn child_single_threaded() {
    if !is_child() {
        return;
    }
    forked(|| {
        let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
        assert_eq!(threads, 1, "forked code runs on the only thread");
    });
    std::env::set_var("THV_TESTING_SET_IN_CHILD", "1");
    assert_ne!(
        std::env::var("THV_TESTING_FAIL").as_deref(),
        Ok("1"),
        "asked to fail"
    );
}
