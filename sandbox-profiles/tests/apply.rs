//! The default profile applies: loaded in a forked child exactly the way the runtime loads it
//! (libcontainer's seccomp code, fed by `to_oci()`), ordinary calls work and the denied ones
//! fail with the profile's errno.
//!
//! Every probe uses arguments the kernel rejects or that change nothing outside the child, so
//! that the same probes can also run WITHOUT the filter (as root, too) as a control: that run
//! shows each deterministic probe answers differently without the filter, so a passing
//! filtered run really is the filter's doing.

mod common;

use libc::{c_long, EPERM};
use serde::{Deserialize, Serialize};

const ENOSYS: i32 = libc::ENOSYS;
/// A path that does not exist, so probes that slip through fail with ENOENT and change nothing.
const NOWHERE: &[u8] = b"/nonexistent-thv-sandbox-seccomp-probe\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Ok,
    Errno(i32),
}

/// What the unfiltered control run must show.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// Works without the filter too.
    AlsoOk,
    /// Gives a different answer without the filter on every host (checked).
    Differs,
    /// Depends on privileges or kernel configuration (not checked).
    HostDependent,
}

struct Probe {
    name: &'static str,
    run: fn() -> Outcome,
    filtered: Outcome,
    control: Control,
}

fn last_errno() -> Outcome {
    Outcome::Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A raw syscall with integer arguments; returns the outcome and closes an fd it created.
fn sys(nr: c_long, a: [usize; 6], returns_fd: bool) -> Outcome {
    // SAFETY: every caller passes integers, null pointers or pointers to live NUL-terminated
    // statics; the kernel validates them, and no call here writes into this process's memory.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if ret < 0 {
        return last_errno();
    }
    if returns_fd {
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        unsafe { libc::close(ret as i32) };
    }
    Outcome::Ok
}

/// clone(2) like fork: the child exits at once, the parent reaps it.
fn raw_clone(flags: usize) -> Outcome {
    // SAFETY: without CLONE_VM the child gets a copy of this address space and stack; it only
    // calls `_exit`, which needs neither locks nor heap.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if pid < 0 {
        return last_errno();
    }
    if pid == 0 {
        // SAFETY: see above; ends the cloned child immediately.
        unsafe { libc::_exit(0) }
    }
    let mut status = 0;
    // SAFETY: reaps the child created above; `status` is a live local.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::__WALL) };
    Outcome::Ok
}

fn socket(domain: i32, ty: i32, protocol: i32) -> Outcome {
    sys(
        libc::SYS_socket,
        [
            domain as usize,
            (ty | libc::SOCK_CLOEXEC) as usize,
            protocol as usize,
            0,
            0,
            0,
        ],
        true,
    )
}

fn ptr_of(path: &'static [u8]) -> usize {
    path.as_ptr() as usize
}

fn probes() -> Vec<Probe> {
    use Control::*;
    use Outcome::Errno;
    let ok = Outcome::Ok;
    let eperm = Errno(EPERM);
    vec![
        // What servers do.
        Probe {
            name: "getpid",
            run: || sys(libc::SYS_getpid, [0; 6], false),
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "fork via clone(SIGCHLD)",
            run: || raw_clone(libc::SIGCHLD as usize),
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "thread (glibc tries clone3, falls back to clone)",
            run: || match std::thread::spawn(|| 7).join() {
                Ok(7) => Outcome::Ok,
                _ => Errno(-1),
            },
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "spawn and exec /bin/true",
            run: || match std::process::Command::new("/bin/true").status() {
                Ok(status) if status.success() => Outcome::Ok,
                Ok(_) => Errno(-2),
                Err(err) => Errno(err.raw_os_error().unwrap_or(-3)),
            },
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "socket(AF_UNIX)",
            run: || socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "socket(AF_INET)",
            run: || socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "socket(AF_NETLINK, NETLINK_ROUTE)",
            run: || socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            filtered: ok,
            control: AlsoOk,
        },
        Probe {
            name: "personality(query)",
            run: || sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0], false),
            filtered: ok,
            control: AlsoOk,
        },
        // Denied: mounts, tracing, keyrings, BPF, perf, modules, clocks, swap, reboot.
        Probe {
            name: "mount",
            run: || {
                sys(
                    libc::SYS_mount,
                    [
                        ptr_of(b"none\0"),
                        ptr_of(NOWHERE),
                        ptr_of(b"tmpfs\0"),
                        0,
                        0,
                        0,
                    ],
                    false,
                )
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "umount2",
            // Unknown flags: EINVAL without the filter, before any permission check.
            run: || {
                sys(
                    libc::SYS_umount2,
                    [ptr_of(NOWHERE), 0xffff, 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "pivot_root",
            run: || {
                sys(
                    libc::SYS_pivot_root,
                    [ptr_of(NOWHERE), ptr_of(NOWHERE), 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "ptrace(PTRACE_ATTACH, 0)",
            run: || {
                sys(
                    libc::SYS_ptrace,
                    [libc::PTRACE_ATTACH as usize, 0, 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "process_vm_readv",
            // Flags must be 0: EINVAL without the filter.
            run: || sys(libc::SYS_process_vm_readv, [0, 0, 0, 0, 0, 1], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "process_vm_writev",
            run: || sys(libc::SYS_process_vm_writev, [0, 0, 0, 0, 0, 1], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "keyctl",
            run: || sys(libc::SYS_keyctl, [0xdead, 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "add_key",
            run: || sys(libc::SYS_add_key, [0; 6], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "request_key",
            run: || sys(libc::SYS_request_key, [0; 6], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "bpf",
            run: || sys(libc::SYS_bpf, [0xdead, 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "perf_event_open",
            run: || {
                sys(
                    libc::SYS_perf_event_open,
                    [0, 0, usize::MAX, usize::MAX, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "init_module",
            run: || sys(libc::SYS_init_module, [0, 0, ptr_of(b"\0"), 0, 0, 0], false),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "finit_module",
            run: || {
                sys(
                    libc::SYS_finit_module,
                    [usize::MAX, ptr_of(b"\0"), 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "delete_module",
            run: || {
                sys(
                    libc::SYS_delete_module,
                    [ptr_of(b"thv_no_such_module\0"), 0, 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "reboot (bad magic)",
            run: || sys(libc::SYS_reboot, [0, 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "swapoff",
            run: || sys(libc::SYS_swapoff, [ptr_of(NOWHERE), 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "clock_settime (invalid clock)",
            run: || sys(libc::SYS_clock_settime, [usize::MAX, 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "settimeofday(NULL, NULL)",
            run: || sys(libc::SYS_settimeofday, [0; 6], false),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "adjtimex (read-only)",
            run: || {
                // SAFETY: an all-zero timex is a valid "read only" request (modes = 0).
                let mut buf: libc::timex = unsafe { std::mem::zeroed() };
                // SAFETY: `buf` is a live, writable timex for the duration of the call.
                let ret =
                    unsafe { libc::syscall(libc::SYS_adjtimex, &mut buf as *mut libc::timex) };
                if ret < 0 {
                    last_errno()
                } else {
                    Outcome::Ok
                }
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "userfaultfd (invalid flags)",
            run: || sys(libc::SYS_userfaultfd, [0x7fff_0000, 0, 0, 0, 0, 0], true),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "open_by_handle_at",
            run: || {
                sys(
                    libc::SYS_open_by_handle_at,
                    [usize::MAX, 0, 0, 0, 0, 0],
                    true,
                )
            },
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "io_uring_setup",
            run: || sys(libc::SYS_io_uring_setup, [0, 0, 0, 0, 0, 0], true),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "setns(-1)",
            run: || sys(libc::SYS_setns, [usize::MAX, 0, 0, 0, 0, 0], false),
            filtered: eperm,
            control: Differs,
        },
        // Sockets outside the allowed families.
        Probe {
            name: "socket(AF_PACKET)",
            run: || socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "socket(AF_ALG)",
            run: || socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "socket(AF_VSOCK)",
            run: || socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "socket(AF_NETLINK, NETLINK_AUDIT)",
            run: || socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            filtered: eperm,
            control: HostDependent,
        },
        // clone3 answers ENOSYS; clone only without namespace flags.
        Probe {
            name: "clone3",
            run: || sys(libc::SYS_clone3, [0; 6], false),
            filtered: Errno(ENOSYS),
            control: Differs,
        },
        Probe {
            name: "clone(CLONE_NEWNET)",
            run: || raw_clone((libc::CLONE_NEWNET | libc::SIGCHLD) as usize),
            filtered: eperm,
            control: HostDependent,
        },
        Probe {
            name: "clone(CLONE_NEWUSER)",
            run: || raw_clone((libc::CLONE_NEWUSER | libc::SIGCHLD) as usize),
            filtered: eperm,
            control: HostDependent,
        },
        // Last: these change the calling process when they are not filtered.
        Probe {
            name: "personality(ADDR_NO_RANDOMIZE)",
            run: || {
                sys(
                    libc::SYS_personality,
                    [libc::ADDR_NO_RANDOMIZE as usize, 0, 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: Differs,
        },
        Probe {
            name: "unshare(CLONE_NEWUSER)",
            run: || {
                sys(
                    libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as usize, 0, 0, 0, 0, 0],
                    false,
                )
            },
            filtered: eperm,
            control: HostDependent,
        },
    ]
}

fn run_all() -> Vec<(String, Outcome)> {
    probes()
        .into_iter()
        .map(|probe| (probe.name.to_owned(), (probe.run)()))
        .collect()
}

#[test]
fn default_profile_applies() {
    let seccomp = sandbox_profiles::default_seccomp().to_oci();
    let control = common::in_child(None, run_all).expect("control run");
    let filtered = common::in_child(Some(&seccomp), run_all).expect("filtered run");

    let mut failures = Vec::new();
    for ((probe, (_, without)), (_, with)) in probes().iter().zip(&control).zip(&filtered) {
        if *with != probe.filtered {
            failures.push(format!(
                "{}: with the filter got {with:?}, expected {:?}",
                probe.name, probe.filtered
            ));
        }
        match probe.control {
            Control::AlsoOk if *without != Outcome::Ok => failures.push(format!(
                "{}: without the filter got {without:?}, expected Ok",
                probe.name
            )),
            Control::Differs if *without == probe.filtered => failures.push(format!(
                "{}: without the filter got {without:?} too, so the probe proves nothing",
                probe.name
            )),
            _ => {}
        }
    }
    let table: Vec<String> = probes()
        .iter()
        .zip(&control)
        .zip(&filtered)
        .map(|((probe, (_, without)), (_, with))| {
            format!(
                "  {:<50} filtered {:<14} unfiltered {:?}",
                probe.name,
                format!("{with:?}"),
                without
            )
        })
        .collect();
    // Shown with --nocapture, and on failure.
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n\nall probes:\n{}",
        failures.join("\n"),
        table.join("\n")
    );
}
