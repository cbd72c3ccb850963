//! The probe child: in its own namespaces, what the runner does when it builds a sandbox (checks 2–7 read
//! its outcomes).

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Uid};

use super::DoctorError;

/// The steps of the probe child, in the order it takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    UserNs,
    Setgroups,
    UidMap,
    GidMap,
    MountNs,
    Private,
    Tmpfs,
    CgroupNs,
    Cgroup2,
    PidNs,
    Proc,
    Overlay,
    Seccomp,
}

pub(super) const STEP_COUNT: usize = 13;

impl Step {
    pub(super) const ALL: [Step; STEP_COUNT] = [
        Step::UserNs,
        Step::Setgroups,
        Step::UidMap,
        Step::GidMap,
        Step::MountNs,
        Step::Private,
        Step::Tmpfs,
        Step::CgroupNs,
        Step::Cgroup2,
        Step::PidNs,
        Step::Proc,
        Step::Overlay,
        Step::Seccomp,
    ];

    /// The probe's exit code when this is the first step that failed (0 means none failed).
    const fn exit_code(self) -> i32 {
        self as i32 + 1
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::UserNs => "unshare(CLONE_NEWUSER)",
            Step::Setgroups => "writing /proc/self/setgroups",
            Step::UidMap => "writing /proc/self/uid_map",
            Step::GidMap => "writing /proc/self/gid_map",
            Step::MountNs => "unshare(CLONE_NEWNS)",
            Step::Private => "making / a private mount (MS_REC|MS_PRIVATE)",
            Step::Tmpfs => "mounting a tmpfs",
            Step::CgroupNs => "unshare(CLONE_NEWCGROUP)",
            Step::Cgroup2 => "mounting cgroup2 on /sys/fs/cgroup",
            Step::PidNs => "unshare(CLONE_NEWPID)",
            Step::Proc => "mounting a fresh proc in a new pid namespace",
            Step::Overlay => "mounting overlayfs",
            Step::Seccomp => "installing a seccomp filter",
        }
    }
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not attempted: a step it depends on failed, or the probe died first.
    NotRun,
    Ok,
    Failed(Errno),
}

/// The probe child's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) outcomes: [Outcome; STEP_COUNT],
    /// Set when the child did not exit normally (for example killed by a seccomp SIGSYS).
    pub(super) died: Option<String>,
}

impl Probe {
    pub(super) fn outcome(&self, step: Step) -> Outcome {
        self.outcomes[step as usize]
    }

    /// The first of `steps` that did not succeed, with its outcome.
    pub(super) fn first_problem(&self, steps: &[Step]) -> Option<(Step, Outcome)> {
        steps
            .iter()
            .map(|&s| (s, self.outcome(s)))
            .find(|(_, o)| *o != Outcome::Ok)
    }

    /// Text for a step that did not succeed.
    pub(super) fn explain(&self, step: Step, outcome: Outcome) -> String {
        match outcome {
            Outcome::Failed(errno) => format!("{} failed: {errno}", step.describe()),
            Outcome::NotRun => match &self.died {
                Some(how) => format!("the probe died ({how}) before {}", step.describe()),
                None => format!("{} was not attempted", step.describe()),
            },
            Outcome::Ok => format!("{} worked", step.describe()),
        }
    }
}

/// A temporary directory the probe mounts its tmpfs on; removed on drop. It stays empty on the host:
/// the mount lives only in the child's private mount namespace.
#[derive(Debug)]
pub(super) struct ProbeDir {
    pub(super) path: PathBuf,
}

impl ProbeDir {
    pub(super) fn create() -> Result<Self, DoctorError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let mut attempt = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("thv-sandbox-doctor-{}-{n}", std::process::id()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ProbeDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(source) => return Err(DoctorError::ProbeDir { path, source }),
            }
        }
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the doctor's probe directory");
        }
    }
}

/// Everything the child needs, prepared before forking: after `fork` in a possibly multi-threaded
/// process the child may not allocate.
pub(super) struct ProbePlan {
    pub(super) dir: CString,
    pub(super) uid_map: Vec<u8>,
    pub(super) gid_map: Vec<u8>,
    pub(super) filter: libc::sock_fprog,
}

/// A seccomp program that allows everything: `BPF_RET | BPF_K` with `SECCOMP_RET_ALLOW`.
pub(super) static ALLOW_ALL: [libc::sock_filter; 1] = [libc::sock_filter {
    code: 0x06,
    jt: 0,
    jf: 0,
    k: libc::SECCOMP_RET_ALLOW,
}];

/// Forks the probe child in a fresh temporary directory, waits for it and collects what each step did.
pub(super) fn run_probe() -> Result<Probe, DoctorError> {
    let dir = ProbeDir::create()?;
    probe_in(&dir.path)
}

/// [`run_probe`] with the directory the child mounts its tmpfs on.
pub(super) fn probe_in(dir: &Path) -> Result<Probe, DoctorError> {
    let plan = ProbePlan {
        dir: CString::new(dir.as_os_str().as_bytes()).map_err(|_| DoctorError::NulInPath {
            path: dir.to_path_buf(),
        })?,
        uid_map: format!("0 {} 1\n", Uid::effective()).into_bytes(),
        gid_map: format!("0 {} 1\n", nix::unistd::Gid::effective()).into_bytes(),
        filter: libc::sock_fprog {
            len: 1,
            // The kernel only reads the program.
            filter: ALLOW_ALL.as_ptr().cast_mut(),
        },
    };
    // Non-blocking read end: once the child has exited, everything it wrote is in the pipe, and a write
    // end leaked into some other thread's fork must not make us wait.
    let (read_end, write_end) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(DoctorError::Pipe)?;
    // SAFETY: the child runs only `probe_child`, which makes nothing but async-signal-safe raw system
    // calls on data prepared above, and leaves with `_exit` without returning or unwinding.
    let child = match unsafe { fork() }.map_err(DoctorError::Fork)? {
        ForkResult::Child => probe_child(&plan, write_end.as_raw_fd()),
        ForkResult::Parent { child } => child,
    };
    drop(write_end);
    let status = loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => {
                break other.map_err(|source| DoctorError::Wait {
                    pid: child.as_raw(),
                    source,
                })?
            }
        }
    };
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8 * STEP_COUNT];
    loop {
        match nix::unistd::read(read_end.as_raw_fd(), &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading the probe's report");
                break;
            }
        }
    }
    let died = match status {
        WaitStatus::Exited(_, code) if (0..=STEP_COUNT as i32).contains(&code) => None,
        WaitStatus::Exited(_, code) => Some(format!("exit code {code}")),
        WaitStatus::Signaled(_, signal, _) => Some(format!("killed by {signal}")),
        other => Some(format!("{other:?}")),
    };
    Ok(decode_probe(&bytes, died))
}

/// Decodes the child's records: pairs of native-endian `i32`s, step index and result (0 or an errno).
pub(super) fn decode_probe(bytes: &[u8], died: Option<String>) -> Probe {
    let mut outcomes = [Outcome::NotRun; STEP_COUNT];
    for record in bytes.chunks_exact(8) {
        let step = i32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
        let result = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
        if let Some(&step) = Step::ALL.iter().find(|s| **s as i32 == step) {
            outcomes[step as usize] = if result == 0 {
                Outcome::Ok
            } else {
                Outcome::Failed(Errno::from_raw(result))
            };
        }
    }
    Probe { outcomes, died }
}

/// `Ok` if a libc call returned 0, else the errno it left.
pub(super) fn rc(ret: libc::c_int) -> Result<(), i32> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last_raw())
    }
}

/// Writes `data` to a file in one `write`, as /proc's map files require. Async-signal-safe.
pub(super) fn write_once(path: &CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last_raw());
    }
    // SAFETY: `data` is valid for `data.len()` bytes; `fd` was just opened by us.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let errno = Errno::last_raw();
    // SAFETY: `fd` is ours and closed exactly once.
    unsafe { libc::close(fd) };
    match usize::try_from(written) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(_) => Err(errno),
    }
}

pub(super) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    rc(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    })
}

/// Covers /sys/fs/cgroup with a small tmpfs where it is a cgroup2 mount (pure cgroup v2 hosts; see the runner),
/// nothing elsewhere (hybrid and v1 hosts, where it is a tmpfs already).
fn cover_cgroup2(flags: libc::c_ulong) -> Result<(), i32> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs only writes into `st`, a plain struct of this frame; the path is NUL-terminated.
    rc(unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) })?;
    if st.f_type != libc::CGROUP2_SUPER_MAGIC {
        return Ok(());
    }
    mount(
        c"tmpfs",
        c"/sys/fs/cgroup",
        Some(c"tmpfs"),
        flags | libc::MS_NOEXEC,
        Some(c"size=4k,mode=755"),
    )
}

pub(super) fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: unshare takes no pointers; it only changes this (single-threaded, forked) process.
    rc(unsafe { libc::unshare(flags) })
}

pub(super) fn chdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    rc(unsafe { libc::chdir(path.as_ptr()) })
}

pub(super) fn mkdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    rc(unsafe { libc::mkdir(path.as_ptr(), 0o700) })
}

/// Forks once more (the new pid namespace only takes effect for children) and mounts `proc` on the
/// relative directory `proc` from inside it.
pub(super) fn proc_in_new_pid_ns() -> Result<(), i32> {
    // SAFETY: a raw clone with only SIGCHLD is a plain fork that skips the C library's atfork handlers;
    // the grandchild makes one mount call and leaves with _exit, touching no shared state.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(libc::SIGCHLD),
            0,
            0,
            0,
            0,
        )
    };
    if pid < 0 {
        return Err(Errno::last_raw());
    }
    if pid == 0 {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let code = match mount(c"proc", c"proc", Some(c"proc"), flags, None) {
            Ok(()) => 0,
            Err(errno) => errno.clamp(1, 255),
        };
        // SAFETY: leaves the grandchild without running destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our own child.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let errno = Errno::last_raw();
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code => Err(code),
        }
    } else {
        // Killed: there is no errno for that; ECHILD is the closest "the child went wrong".
        Err(libc::ECHILD)
    }
}

pub(super) fn install_allow_all_filter(prog: &libc::sock_fprog) -> Result<(), i32> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    rc(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: `prog` points to a valid one-instruction program that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            prog as *const libc::sock_fprog,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last_raw())
    }
}

/// The probe child. Runs right after `fork`: only raw system calls, no allocation, no locks, never
/// returns. Each step's result goes to `report` as a record; the exit code is the first failed
/// required step's [`Step::exit_code`] (overlayfs is optional and never sets it).
pub(super) fn probe_child(plan: &ProbePlan, report: RawFd) -> ! {
    let mut first_failure = 0;
    let mut record = |step: Step, result: Result<(), i32>| -> bool {
        let value = match result {
            Ok(()) => 0,
            Err(errno) => errno.max(1),
        };
        if value != 0 && first_failure == 0 && step != Step::Overlay {
            first_failure = step.exit_code();
        }
        let bytes = [step as i32, value];
        // SAFETY: `bytes` is valid for its size; a short or failed write only loses the record.
        unsafe { libc::write(report, bytes.as_ptr().cast(), std::mem::size_of_val(&bytes)) };
        value == 0
    };

    'namespaces: {
        if !(record(Step::UserNs, unshare(libc::CLONE_NEWUSER))
            && record(
                Step::Setgroups,
                write_once(c"/proc/self/setgroups", b"deny"),
            )
            && record(
                Step::UidMap,
                write_once(c"/proc/self/uid_map", &plan.uid_map),
            )
            && record(
                Step::GidMap,
                write_once(c"/proc/self/gid_map", &plan.gid_map),
            ))
        {
            break 'namespaces;
        }
        if !(record(Step::MountNs, unshare(libc::CLONE_NEWNS))
            && record(
                Step::Private,
                mount(c"none", c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
            ))
        {
            break 'namespaces;
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        // Everything after the tmpfs works inside it, by relative paths (so the temporary path
        // needs no escaping in overlayfs options): entering it is part of this step.
        let tmpfs = record(
            Step::Tmpfs,
            mount(
                c"tmpfs",
                &plan.dir,
                Some(c"tmpfs"),
                flags,
                Some(c"size=1m,mode=0700"),
            )
            .and_then(|()| chdir(&plan.dir)),
        );
        // As the runner does: on a pure cgroup v2 host /sys/fs/cgroup is the host's (locked) cgroup2 mount, on
        // whose root the kernel refuses another cgroup2 mount (EBUSY), so a small tmpfs covers it first.
        let _ = record(Step::CgroupNs, unshare(libc::CLONE_NEWCGROUP))
            && record(
                Step::Cgroup2,
                cover_cgroup2(flags).and_then(|()| {
                    mount(
                        c"cgroup2",
                        c"/sys/fs/cgroup",
                        Some(c"cgroup2"),
                        flags | libc::MS_NOEXEC,
                        None,
                    )
                }),
            );
        if !tmpfs {
            break 'namespaces;
        }
        if record(Step::PidNs, unshare(libc::CLONE_NEWPID)) {
            let result = mkdir(c"proc").and_then(|()| proc_in_new_pid_ns());
            record(Step::Proc, result);
        }
        let overlay = mkdir(c"lower")
            .and_then(|()| mkdir(c"upper"))
            .and_then(|()| mkdir(c"work"))
            .and_then(|()| mkdir(c"merged"))
            .and_then(|()| {
                mount(
                    c"overlay",
                    c"merged",
                    Some(c"overlay"),
                    0,
                    Some(c"lowerdir=lower,upperdir=upper,workdir=work"),
                )
            });
        record(Step::Overlay, overlay);
    }
    // Last: a filter cannot be removed, and it must not disturb the steps above.
    record(Step::Seccomp, install_allow_all_filter(&plan.filter));
    // SAFETY: leaves the forked child without running destructors, atexit handlers or stdio flushes.
    unsafe { libc::_exit(first_failure) }
}
