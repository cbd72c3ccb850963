//! The variants apply: each probe runs in its own forked child under `default`, `browser` and
//! `strict`, loaded the way the runtime loads a profile (libcontainer's seccomp code, fed by
//! `to_oci()`). The browser variant lets exactly Chromium's namespace calls through
//! (unshare(CLONE_NEWUSER) succeeds there and fails with EPERM under the default) and still
//! refuses the other namespace flags and mounts; strict refuses what it removes.
//!
//! Probes that need unprivileged user namespaces accept ENOSPC/EPERM from the kernel only in
//! the unfiltered control run, never as the filtered answer: a host where the browser probes
//! cannot succeed fails this test rather than passing it vacuously.

mod common;

use libc::{c_long, EFAULT, EINVAL, ENOSYS, EPERM};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Ok,
    Errno(i32),
}

fn last_errno() -> Outcome {
    Outcome::Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn sys(nr: c_long, a: [usize; 6]) -> Outcome {
    // SAFETY: callers pass integers, null pointers or pointers to live NUL-terminated statics;
    // the kernel validates them. Every probe runs in its own forked child.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if ret < 0 {
        last_errno()
    } else {
        Outcome::Ok
    }
}

/// clone(2) like fork: the child exits at once, the parent reaps it.
fn raw_clone(flags: i32) -> Outcome {
    // SAFETY: without CLONE_VM the child gets a copy of this address space; it only calls
    // `_exit`.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as usize,
            0,
            0,
            0,
            0,
        )
    };
    if pid < 0 {
        return last_errno();
    }
    if pid == 0 {
        // SAFETY: ends the cloned child immediately.
        unsafe { libc::_exit(0) }
    }
    let mut status = 0;
    // SAFETY: reaps the child created above.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::__WALL) };
    Outcome::Ok
}

fn unshare(flags: i32) -> Outcome {
    sys(libc::SYS_unshare, [flags as usize, 0, 0, 0, 0, 0])
}

/// What Chromium's layer-1 sandbox does: a new user namespace, then chroot into a directory.
fn unshare_user_then_chroot() -> Outcome {
    match unshare(libc::CLONE_NEWUSER) {
        Outcome::Ok => sys(libc::SYS_chroot, [c"/".as_ptr() as usize, 0, 0, 0, 0, 0]),
        denied => denied,
    }
}

/// In a nested user namespace (full capabilities there), try to mount a tmpfs on a path that
/// does not exist: the kernel looks the path up before it checks privileges, so without a
/// filter the answer is ENOENT, and EPERM can only come from the filter.
fn unshare_user_then_mount() -> Outcome {
    match unshare(libc::CLONE_NEWUSER) {
        Outcome::Ok => sys(
            libc::SYS_mount,
            [
                c"none".as_ptr() as usize,
                c"/nonexistent-thv-sandbox-probe".as_ptr() as usize,
                c"tmpfs".as_ptr() as usize,
                0,
                0,
                0,
            ],
        ),
        denied => denied,
    }
}

struct Probe {
    name: &'static str,
    run: fn() -> Outcome,
    /// Expected without a filter: where it differs from a filtered answer, the filter is what
    /// made the difference. `None`: depends on the host's privileges.
    control: Option<Outcome>,
    /// Expected under `default`, `browser`, `strict`.
    expect: [Outcome; 3],
}

const PROFILES: [&str; 3] = ["default", "browser", "strict"];

fn probes() -> Vec<Probe> {
    use Outcome::{Errno, Ok};
    let eperm = Errno(EPERM);
    vec![
        Probe {
            name: "thread (clone3 -> ENOSYS -> clone)",
            run: || match std::thread::spawn(|| 7).join() {
                std::result::Result::Ok(7) => Ok,
                _ => Errno(-1),
            },
            control: Some(Ok),
            expect: [Ok, Ok, Ok],
        },
        Probe {
            name: "spawn /bin/true",
            run: || match std::process::Command::new("/bin/true").status() {
                std::result::Result::Ok(status) if status.success() => Ok,
                std::result::Result::Ok(_) => Errno(-2),
                Err(err) => Errno(err.raw_os_error().unwrap_or(-3)),
            },
            control: Some(Ok),
            expect: [Ok, Ok, Ok],
        },
        Probe {
            name: "unshare(CLONE_NEWUSER)",
            run: || unshare(libc::CLONE_NEWUSER),
            control: Some(Ok),
            expect: [eperm, Ok, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER)",
            run: || raw_clone(libc::CLONE_NEWUSER),
            control: Some(Ok),
            expect: [eperm, Ok, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET)",
            run: || raw_clone(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET),
            control: Some(Ok),
            expect: [eperm, Ok, eperm],
        },
        Probe {
            name: "unshare(CLONE_NEWUSER) + chroot(/)",
            run: unshare_user_then_chroot,
            control: Some(Ok),
            expect: [eperm, Ok, eperm],
        },
        Probe {
            name: "unshare(CLONE_NEWUSER) + mount(tmpfs)",
            run: unshare_user_then_mount,
            control: Some(Errno(libc::ENOENT)),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER|CLONE_NEWNS)",
            run: || raw_clone(libc::CLONE_NEWUSER | libc::CLONE_NEWNS),
            control: Some(Ok),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER|CLONE_NEWUTS)",
            run: || raw_clone(libc::CLONE_NEWUSER | libc::CLONE_NEWUTS),
            control: Some(Ok),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER|CLONE_NEWIPC)",
            run: || raw_clone(libc::CLONE_NEWUSER | libc::CLONE_NEWIPC),
            control: Some(Ok),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "clone(CLONE_NEWUSER|CLONE_NEWCGROUP)",
            run: || raw_clone(libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP),
            control: Some(Ok),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
            run: || unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS),
            control: Some(Ok),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "unshare(CLONE_NEWNET)",
            run: || unshare(libc::CLONE_NEWNET),
            control: None,
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "setns(-1)",
            run: || sys(libc::SYS_setns, [usize::MAX, 0, 0, 0, 0, 0]),
            control: Some(Errno(libc::EBADF)),
            expect: [eperm, eperm, eperm],
        },
        Probe {
            name: "clone3",
            run: || sys(libc::SYS_clone3, [0; 6]),
            control: Some(Errno(EINVAL)),
            expect: [Errno(ENOSYS), Errno(ENOSYS), Errno(ENOSYS)],
        },
        Probe {
            name: "io_setup(0, NULL)",
            // A NULL context pointer: EFAULT when the call reaches the kernel.
            run: || sys(libc::SYS_io_setup, [0; 6]),
            control: Some(Errno(EFAULT)),
            expect: [Errno(EFAULT), Errno(EFAULT), eperm],
        },
        Probe {
            name: "msgsnd(-1)",
            run: || sys(libc::SYS_msgsnd, [usize::MAX, 0, 0, 0, 0, 0]),
            control: Some(Errno(EFAULT)),
            expect: [Errno(EFAULT), Errno(EFAULT), eperm],
        },
    ]
}

#[test]
fn variants_apply() {
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (index, probe) in probes().iter().enumerate() {
        let control = common::in_child(None, move || (probes()[index].run)())
            .unwrap_or_else(|err| panic!("{}: control run: {err}", probe.name));
        if let Some(expected) = probe.control {
            if control != expected {
                failures.push(format!(
                    "{} without a filter: got {control:?}, expected {expected:?} (for the namespace \
                     probes: are unprivileged user namespaces disabled on this host?)",
                    probe.name
                ));
            }
        }
        let mut row = format!(
            "  {:<50} unfiltered {:<12}",
            probe.name,
            format!("{control:?}")
        );
        for (profile_name, expected) in PROFILES.iter().zip(probe.expect) {
            let seccomp = sandbox_profiles::seccomp_variant(profile_name)
                .unwrap()
                .to_oci();
            let got = common::in_child(Some(&seccomp), move || (probes()[index].run)())
                .unwrap_or_else(|err| panic!("{}: under {profile_name}: {err}", probe.name));
            row.push_str(&format!(" {profile_name} {:<12}", format!("{got:?}")));
            if got != expected {
                failures.push(format!(
                    "{} under {profile_name}: got {got:?}, expected {expected:?} (unfiltered: {control:?})",
                    probe.name
                ));
            }
        }
        table.push(row);
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n\nall probes:\n{}",
        failures.join("\n"),
        table.join("\n")
    );
}
