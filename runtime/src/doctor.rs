//! `thv-sandbox doctor`: can this host run thv-sandbox's rootless sandboxes?
//!
//! [`diagnose`] runs the checks below, in this order, and returns a [`Report`]. Every check carries a
//! status and, unless it passed, a fix the user can act on. The same report becomes the hint of the
//! error `run` gives when a sandbox cannot be created ([`hint_for_sandbox_failure`]).
//!
//! 1. `user` — who we run as. Root is fine: the sandbox always uses a user namespace.
//! 2. `user namespaces` — the kernel knobs (`user.max_user_namespaces`, Debian's
//!    `kernel.unprivileged_userns_clone`, Ubuntu's `kernel.apparmor_restrict_unprivileged_userns`),
//!    then a real attempt in the probe child. The knobs only explain a failure; the probe decides.
//!    Then `apparmor userns` (doctor/apparmor_profile.rs): under Ubuntu's restriction, whether an AppArmor profile
//!    lets this binary use user namespaces; the fix prints the profile for this binary's path, and the sysctl.
//! 3. `mount namespace` — a private mount namespace inside the user namespace, and a tmpfs in it.
//! 4. `cgroup namespace` — a cgroup namespace and a `cgroup2` mount on /sys/fs/cgroup, which makes
//!    libcontainer use its v2 cgroup manager even on v1-hybrid hosts.
//! 5. `pid namespace` — a pid namespace and a fresh `proc` mounted from inside it (containers that mask
//!    /proc paths forbid this).
//! 6. `overlayfs` — overlayfs in a user namespace (kernel >= 5.11). Optional: only a warning.
//! 7. `seccomp` — kernel support, whether we already run under a filter, and installing one for real.
//! 8. `cgroups` — v2, hybrid or v1, and whether our own cgroup is delegated to us (resource limits).
//! 9. `subordinate ids` — /etc/subuid and /etc/subgid ranges for the user (several ids in the sandbox).
//! 10. `newuidmap/newgidmap` — the setuid helpers that write such ranges for unprivileged users.
//! 11. `state dir`, `cache dir` — exist or can be created, owned by us, not writable by others.
//!
//! Checks 2–7 share one forked probe child ([`run_probe`]), which does in its own namespaces what the
//! runner does when it builds a sandbox: the namespace steps come first because every mount depends on
//! them, and the seccomp filter comes last so it cannot get in the way of the others. Nothing the child
//! does outlives it except the empty temporary directory it mounts on, which the parent removes.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use libcontainer::oci_spec::runtime::LinuxSeccomp;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::statfs::{statfs, FsType, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{access, fork, pipe2, AccessFlags, ForkResult, Uid, User};

/// Compile-time proof that libcontainer is built with its `libseccomp` feature: without it the module
/// does not exist and the spec's seccomp section would be silently ignored at run time.
const _: fn(&LinuxSeccomp) -> bool = libcontainer::seccomp::is_notify;

use crate::rootfs::idmap::subid_entries;

mod apparmor_profile;
use crate::rootfs::idmap::{parse_subid_file, SubIdKind, MIN_SUBID_COUNT};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Sandboxes run, but with less isolation or fewer features than they could have.
    Warn,
    /// Sandboxes cannot be created.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One diagnosed aspect of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, for example `user namespaces`.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, in one or two sentences.
    pub detail: String,
    /// What the user can do about it; `None` when nothing needs doing (or another check's fix applies).
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The outcome of all checks, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checks, in the order of the module documentation.
    pub checks: Vec<Check>,
}

impl Report {
    /// No check failed: sandboxes can be created (possibly with warnings).
    pub fn ok(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// Human-readable text: one line per check, a `fix:` line under each check that has one, and a
    /// summary line. No colour; the caller decides where it goes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let tag = format!("[{}]", check.status);
            out.push_str(&format!("{tag:<7}{}: {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let (oks, warns, fails) = (count(Status::Ok), count(Status::Warn), count(Status::Fail));
        let verdict = if fails == 0 {
            "this host can run sandboxes"
        } else {
            "this host cannot run sandboxes"
        };
        out.push_str(&format!(
            "{oks} ok, {warns} {}, {fails} {}: {verdict}\n",
            plural(warns, "warning"),
            plural(fails, "failure"),
        ));
        out
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// One check per Sigstore instance: which trust root verification would use offline (embedded, or refreshed
/// through TUF), and its age; a warning past [`thv_sandbox_provenance::WARN_AGE_DAYS`]. Nothing is fetched.
pub fn trust_root_checks(opts: &thv_sandbox_provenance::tuf::TufOptions) -> Vec<Check> {
    use thv_sandbox_provenance::{tuf, Instance};
    let now = jiff::Timestamp::now();
    [
        (Instance::PublicGood, "trust root (public-good)"),
        (Instance::GitHub, "trust root (GitHub)"),
    ]
    .into_iter()
    .map(|(instance, name)| match tuf::status(instance, opts) {
        Ok(st) => {
            let mut detail = st.trust_root.describe(now);
            if !st.refresh {
                detail.push_str("; refreshing through TUF is off");
            }
            match st.warning {
                Some(_) => Check::new(name, Status::Warn, detail)
                    .with_fix("run online (refreshed when due) or `thv-sandbox trust refresh`"),
                None => Check::new(name, Status::Ok, detail),
            }
        }
        Err(e) => Check::new(name, Status::Warn, e.to_string()),
    })
    .collect()
}

/// The directories `diagnose` inspects, as resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorInputs {
    /// Where sandbox state lives (must be private: mode 0700).
    pub state_dir: PathBuf,
    /// Where images are cached.
    pub cache_dir: PathBuf,
}

/// Errors of the doctor's own machinery; they end up in a check's detail, never abort the diagnosis.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// Reading a file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the probe's temporary directory failed.
    #[error("cannot create the probe directory {}", path.display())]
    ProbeDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path cannot be passed to the kernel.
    #[error("path {} contains a NUL byte", path.display())]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
    /// Creating the probe's report pipe failed.
    #[error("cannot create a pipe for the probe")]
    Pipe(#[source] Errno),
    /// Forking the probe failed.
    #[error("cannot fork the probe process")]
    Fork(#[source] Errno),
    /// Waiting for the probe failed.
    #[error("cannot wait for the probe process {pid}")]
    Wait {
        /// The probe's pid.
        pid: i32,
        /// The cause.
        #[source]
        source: Errno,
    },
}

fn read_file(path: &Path) -> Result<String, DoctorError> {
    fs::read_to_string(path).map_err(|source| DoctorError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs every check (see the module documentation for the order and the reasons).
pub fn diagnose(inputs: &DoctorInputs) -> Report {
    let euid = Uid::effective().as_raw();
    let user = user_name(euid);
    let proc_cgroup = read_file(Path::new("/proc/self/cgroup")).ok();
    let container = detect_container(
        Path::new("/.dockerenv").exists(),
        Path::new("/run/.containerenv").exists(),
        proc_cgroup.as_deref().unwrap_or(""),
    );
    let knobs = UsernsKnobs::read();
    let probe = run_probe().map_err(|e| crate::chain::one_line(&e));
    let seccomp_mode = read_file(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| parse_seccomp_mode(&s));
    let cgroups = CgroupFacts::gather(proc_cgroup.as_deref());
    let subuid = SubIdLookup::read(SubIdKind::Uid, &user, euid);
    let subgid = SubIdLookup::read(SubIdKind::Gid, &user, euid);
    let subids_present =
        matches!((&subuid, &subgid), (Ok(u), Ok(g)) if u.usable.is_some() && g.usable.is_some());
    let newuidmap = IdMapHelper::find("newuidmap");
    let newgidmap = IdMapHelper::find("newgidmap");
    let helpers_needed = euid != 0 && (newuidmap.path.is_none() || newgidmap.path.is_none());

    let checks = vec![
        user_check(euid, &user),
        userns_check(&knobs, &probe, container, euid),
        apparmor_profile::check(&apparmor_profile::Facts::read(euid)),
        mount_check(&probe, container),
        cgroupns_check(&probe, container),
        pidns_check(&probe, container),
        overlay_check(&probe),
        seccomp_check(seccomp_mode, &probe, container),
        cgroup_check(&cgroups),
        subid_check(&user, euid, &subuid, &subgid, helpers_needed),
        idmap_helpers_check(euid, subids_present, &newuidmap, &newgidmap),
        dir_check(
            DirKind::State,
            &inputs.state_dir,
            &DirState::inspect(&inputs.state_dir),
            euid,
        ),
        dir_check(
            DirKind::Cache,
            &inputs.cache_dir,
            &DirState::inspect(&inputs.cache_dir),
            euid,
        ),
    ];
    Report { checks }
}

/// The hint for `run` when the sandbox cannot be created: the failing checks' fixes, or a pointer to
/// `thv-sandbox doctor` when no check failed (the cause is then something the doctor does not test).
pub fn hint_for_sandbox_failure(report: &Report) -> String {
    let mut fixes: Vec<&str> = Vec::new();
    for check in report.failures() {
        if let Some(fix) = check.fix.as_deref() {
            if !fixes.contains(&fix) {
                fixes.push(fix);
            }
        }
    }
    if fixes.is_empty() {
        "run `thv-sandbox doctor` to check whether this host supports rootless sandboxes"
            .to_string()
    } else {
        format!("{} (details: `thv-sandbox doctor`)", fixes.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. user

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn user_check(euid: u32, user: &str) -> Check {
    if euid == 0 {
        Check::new(
            "user",
            Status::Ok,
            "root (uid 0): the sandbox still uses a user namespace; container root is never host root",
        )
    } else {
        Check::new("user", Status::Ok, format!("uid {euid} ({user}): rootless"))
    }
}

// ---------------------------------------------------------------------------------------------------
// Container detection, for fixes that only make sense inside one.

/// Evidence that we run inside a container, if there is any. Only evidence, not proof: VM images
/// built from container images keep their `/.dockerenv`, so messages say "looks like".
fn detect_container(
    dockerenv: bool,
    containerenv: bool,
    proc_cgroup: &str,
) -> Option<&'static str> {
    if dockerenv {
        return Some("/.dockerenv exists");
    }
    if containerenv {
        return Some("/run/.containerenv exists");
    }
    let paths = proc_cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    for path in paths {
        for (marker, evidence) in [
            ("docker", "our cgroup names docker"),
            ("libpod", "our cgroup names libpod"),
            ("kubepods", "our cgroup names kubepods"),
            ("containerd", "our cgroup names containerd"),
            ("/lxc", "our cgroup names lxc"),
        ] {
            if path.contains(marker) {
                return Some(evidence);
            }
        }
    }
    None
}

const CONTAINER_USERNS_FIX: &str =
    "run with --privileged or --security-opt seccomp=unconfined, or on the host";
const CONTAINER_MOUNT_FIX: &str = "run with --privileged (or --security-opt seccomp=unconfined \
     --security-opt apparmor=unconfined --security-opt systempaths=unconfined), or on the host";

// ---------------------------------------------------------------------------------------------------
// The probe child.

/// The steps of the probe child, in the order it takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
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

const STEP_COUNT: usize = 13;

impl Step {
    const ALL: [Step; STEP_COUNT] = [
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

    fn describe(self) -> &'static str {
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
enum Outcome {
    /// Not attempted: a step it depends on failed, or the probe died first.
    NotRun,
    Ok,
    Failed(Errno),
}

/// The probe child's results.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    outcomes: [Outcome; STEP_COUNT],
    /// Set when the child did not exit normally (for example killed by a seccomp SIGSYS).
    died: Option<String>,
}

impl Probe {
    fn outcome(&self, step: Step) -> Outcome {
        self.outcomes[step as usize]
    }

    /// The first of `steps` that did not succeed, with its outcome.
    fn first_problem(&self, steps: &[Step]) -> Option<(Step, Outcome)> {
        steps
            .iter()
            .map(|&s| (s, self.outcome(s)))
            .find(|(_, o)| *o != Outcome::Ok)
    }

    /// Text for a step that did not succeed.
    fn explain(&self, step: Step, outcome: Outcome) -> String {
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
struct ProbeDir {
    path: PathBuf,
}

impl ProbeDir {
    fn create() -> Result<Self, DoctorError> {
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
struct ProbePlan {
    dir: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    filter: libc::sock_fprog,
}

/// A seccomp program that allows everything: `BPF_RET | BPF_K` with `SECCOMP_RET_ALLOW`.
static ALLOW_ALL: [libc::sock_filter; 1] = [libc::sock_filter {
    code: 0x06,
    jt: 0,
    jf: 0,
    k: libc::SECCOMP_RET_ALLOW,
}];

/// Forks the probe child in a fresh temporary directory, waits for it and collects what each step did.
fn run_probe() -> Result<Probe, DoctorError> {
    let dir = ProbeDir::create()?;
    probe_in(&dir.path)
}

/// [`run_probe`] with the directory the child mounts its tmpfs on.
fn probe_in(dir: &Path) -> Result<Probe, DoctorError> {
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
fn decode_probe(bytes: &[u8], died: Option<String>) -> Probe {
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
fn rc(ret: libc::c_int) -> Result<(), i32> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last_raw())
    }
}

/// Writes `data` to a file in one `write`, as /proc's map files require. Async-signal-safe.
fn write_once(path: &CStr, data: &[u8]) -> Result<(), i32> {
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

fn mount(
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

fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: unshare takes no pointers; it only changes this (single-threaded, forked) process.
    rc(unsafe { libc::unshare(flags) })
}

fn chdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    rc(unsafe { libc::chdir(path.as_ptr()) })
}

fn mkdir(path: &CStr) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    rc(unsafe { libc::mkdir(path.as_ptr(), 0o700) })
}

/// Forks once more (the new pid namespace only takes effect for children) and mounts `proc` on the
/// relative directory `proc` from inside it.
fn proc_in_new_pid_ns() -> Result<(), i32> {
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

fn install_allow_all_filter(prog: &libc::sock_fprog) -> Result<(), i32> {
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
fn probe_child(plan: &ProbePlan, report: RawFd) -> ! {
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
        let _ = record(Step::CgroupNs, unshare(libc::CLONE_NEWCGROUP))
            && record(
                Step::Cgroup2,
                mount(
                    c"cgroup2",
                    c"/sys/fs/cgroup",
                    Some(c"cgroup2"),
                    flags | libc::MS_NOEXEC,
                    None,
                ),
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

/// Shared shape of the probe-based checks: `prereq` must have worked for the check to mean anything;
/// the first problem among `steps` decides it.
fn probe_check(
    name: &'static str,
    probe: &Result<Probe, String>,
    prereq: &[Step],
    steps: &[Step],
    problem_status: Status,
    ok_detail: &str,
    fix_for: impl Fn(Step, Outcome) -> String,
) -> Check {
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => return Check::new(name, problem_status, format!("not tested: {e}")),
    };
    if let Some((step, outcome)) = probe.first_problem(prereq) {
        return Check::new(
            name,
            problem_status,
            format!("not tested: {}", probe.explain(step, outcome)),
        );
    }
    match probe.first_problem(steps) {
        None => Check::new(name, Status::Ok, ok_detail),
        Some((step, outcome)) => Check::new(name, problem_status, probe.explain(step, outcome))
            .with_fix(fix_for(step, outcome)),
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. user namespaces

const USERNS_STEPS: [Step; 4] = [Step::UserNs, Step::Setgroups, Step::UidMap, Step::GidMap];
const MOUNT_STEPS: [Step; 3] = [Step::MountNs, Step::Private, Step::Tmpfs];

/// The sysctls that govern user namespaces; `None` where the knob does not exist on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct UsernsKnobs {
    max_user_namespaces: Option<u64>,
    /// Debian <= 10.
    unprivileged_userns_clone: Option<u64>,
    /// Ubuntu >= 23.10.
    apparmor_restrict: Option<u64>,
}

impl UsernsKnobs {
    fn read() -> Self {
        let knob = |path: &str| {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        UsernsKnobs {
            max_user_namespaces: knob("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: knob("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

const APPARMOR_FIX: &str =
    "`sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` (persist it in \
     /etc/sysctl.d/), or an AppArmor profile for the thv-sandbox binary that allows `userns`";

fn userns_check(
    knobs: &UsernsKnobs,
    probe: &Result<Probe, String>,
    container: Option<&str>,
    euid: u32,
) -> Check {
    const NAME: &str = "user namespaces";
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => return Check::new(NAME, Status::Fail, format!("not tested: {e}")),
    };
    let Some((step, outcome)) = probe.first_problem(&USERNS_STEPS) else {
        let mut detail = "unshare(CLONE_NEWUSER) and a uid/gid map work".to_string();
        if let Some(max) = knobs.max_user_namespaces {
            detail.push_str(&format!(" (user.max_user_namespaces = {max})"));
        }
        if knobs.apparmor_restrict == Some(1) && euid == 0 {
            detail.push_str(
                "; note: kernel.apparmor_restrict_unprivileged_userns = 1 still stops unprivileged users",
            );
        }
        return Check::new(NAME, Status::Ok, detail);
    };
    let what = probe.explain(step, outcome);
    let errno = match outcome {
        Outcome::Failed(errno) => Some(errno),
        _ => None,
    };
    let (detail, fix) = if step == Step::UserNs
        && (knobs.max_user_namespaces == Some(0) || errno == Some(Errno::ENOSPC))
    {
        (
            format!(
                "{what}; user.max_user_namespaces is {}",
                knobs
                    .max_user_namespaces
                    .map_or("exhausted".to_string(), |m| m.to_string())
            ),
            "`sudo sysctl user.max_user_namespaces=15000` (persist it in /etc/sysctl.d/)"
                .to_string(),
        )
    } else if step == Step::UserNs && knobs.unprivileged_userns_clone == Some(0) && euid != 0 {
        (
            format!("{what}; kernel.unprivileged_userns_clone is 0"),
            "`sudo sysctl kernel.unprivileged_userns_clone=1` (persist it in /etc/sysctl.d/)"
                .to_string(),
        )
    } else if knobs.apparmor_restrict == Some(1) && euid != 0 {
        (
            format!("{what}; kernel.apparmor_restrict_unprivileged_userns is 1"),
            APPARMOR_FIX.to_string(),
        )
    } else if let (Some(evidence), Some(Errno::EPERM)) = (container, errno) {
        (
            format!(
                "{what}: this looks like a container ({evidence}) that forbids user namespaces"
            ),
            CONTAINER_USERNS_FIX.to_string(),
        )
    } else if errno == Some(Errno::EINVAL) && step == Step::UserNs {
        (
            format!("{what}: the kernel has no user namespace support"),
            "use a kernel built with CONFIG_USER_NS".to_string(),
        )
    } else if errno == Some(Errno::EUSERS) {
        (
            format!("{what}: user namespaces are nested too deeply"),
            "run thv-sandbox from a less deeply nested environment (on the host)".to_string(),
        )
    } else {
        (
            format!("{what}: a security policy (seccomp or an LSM) forbids it"),
            format!("if this runs in a container, {CONTAINER_USERNS_FIX}; otherwise check the host's seccomp/LSM policy"),
        )
    };
    Check::new(NAME, Status::Fail, detail).with_fix(fix)
}

// ---------------------------------------------------------------------------------------------------
// 3.–7. mount, cgroup and pid namespaces, overlayfs, seccomp

fn mount_fix(container: Option<&str>) -> String {
    match container {
        Some(evidence) => {
            format!("this looks like a container ({evidence}): {CONTAINER_MOUNT_FIX}")
        }
        None => "the kernel or an LSM (AppArmor, SELinux) forbids mounts in user namespaces; \
                 run on a host that allows them"
            .to_string(),
    }
}

fn mount_check(probe: &Result<Probe, String>, container: Option<&str>) -> Check {
    probe_check(
        "mount namespace",
        probe,
        &USERNS_STEPS,
        &MOUNT_STEPS,
        Status::Fail,
        "a private mount namespace with a tmpfs works",
        |_, _| mount_fix(container),
    )
}

fn cgroupns_check(probe: &Result<Probe, String>, container: Option<&str>) -> Check {
    let prereq = [&USERNS_STEPS[..], &[Step::MountNs, Step::Private]].concat();
    probe_check(
        "cgroup namespace",
        probe,
        &prereq,
        &[Step::CgroupNs, Step::Cgroup2],
        Status::Fail,
        "a cgroup namespace with its own cgroup2 mount on /sys/fs/cgroup works",
        |step, outcome| match (step, outcome) {
            (Step::CgroupNs, Outcome::Failed(Errno::EINVAL)) => {
                "use a kernel with cgroup namespaces (Linux >= 4.6, CONFIG_CGROUPS)".to_string()
            }
            _ => mount_fix(container),
        },
    )
}

fn pidns_check(probe: &Result<Probe, String>, container: Option<&str>) -> Check {
    let prereq = [&USERNS_STEPS[..], &MOUNT_STEPS[..]].concat();
    probe_check(
        "pid namespace",
        probe,
        &prereq,
        &[Step::PidNs, Step::Proc],
        Status::Fail,
        "a pid namespace with a fresh /proc works",
        |step, _| {
            match (step, container) {
            (Step::Proc, Some(evidence)) => format!(
                "this looks like a container ({evidence}), whose masked /proc paths forbid mounting a fresh proc: {CONTAINER_MOUNT_FIX}"
            ),
            _ => mount_fix(container),
        }
        },
    )
}

fn overlay_check(probe: &Result<Probe, String>) -> Check {
    let prereq = [&USERNS_STEPS[..], &MOUNT_STEPS[..]].concat();
    let mut check = probe_check(
        "overlayfs",
        probe,
        &prereq,
        &[Step::Overlay],
        Status::Warn,
        "overlayfs mounts in a user namespace",
        |_, _| "optional: Linux >= 5.11 allows overlayfs in user namespaces".to_string(),
    );
    if check.status == Status::Warn {
        check
            .detail
            .push_str(" (not required: image layers are unpacked into plain directories)");
    }
    check
}

/// The `Seccomp:` mode from /proc/self/status: 0 none, 1 strict, 2 filter; `None` without kernel support.
fn parse_seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

fn seccomp_check(
    mode: Option<u32>,
    probe: &Result<Probe, String>,
    container: Option<&str>,
) -> Check {
    const NAME: &str = "seccomp";
    let Some(mode) = mode else {
        return Check::new(
            NAME,
            Status::Fail,
            "the kernel has no seccomp support (no Seccomp: line in /proc/self/status)",
        )
        .with_fix("use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER");
    };
    if mode == 1 {
        return Check::new(
            NAME,
            Status::Fail,
            "this process runs in strict seccomp mode",
        )
        .with_fix("run thv-sandbox outside strict seccomp mode");
    }
    let check = probe_check(
        NAME,
        probe,
        &[],
        &[Step::Seccomp],
        Status::Fail,
        "",
        |_, _| match container {
            Some(evidence) => {
                format!("this looks like a container ({evidence}): {CONTAINER_USERNS_FIX}")
            }
            None => "use a kernel built with CONFIG_SECCOMP_FILTER".to_string(),
        },
    );
    if check.status != Status::Ok {
        return check;
    }
    let detail = if mode == 2 {
        "filters install; this process already runs under a seccomp filter (a container's?): \
         the sandbox's filter stacks on it, and the outer one may still deny some syscalls"
    } else {
        "filters install; libcontainer is built with libseccomp"
    };
    Check::new(NAME, Status::Ok, detail)
}

// ---------------------------------------------------------------------------------------------------
// 8. cgroups

/// How cgroups are mounted on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupLayout {
    /// cgroup2 on /sys/fs/cgroup.
    V2,
    /// A tmpfs on /sys/fs/cgroup with v1 controllers and an (empty) cgroup2 on /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
    V1,
}

impl CgroupLayout {
    /// The cgroup2 mount point, if the host has one.
    fn v2_mount(self) -> Option<&'static Path> {
        match self {
            CgroupLayout::V2 => Some(Path::new("/sys/fs/cgroup")),
            CgroupLayout::Hybrid => Some(Path::new("/sys/fs/cgroup/unified")),
            CgroupLayout::V1 => None,
        }
    }
}

/// Classifies from the filesystem types of /sys/fs/cgroup and /sys/fs/cgroup/unified (`None`: no
/// such mount or statfs failed).
fn classify_cgroups(root: Option<FsType>, unified: Option<FsType>) -> Option<CgroupLayout> {
    match root? {
        t if t == CGROUP2_SUPER_MAGIC => Some(CgroupLayout::V2),
        t if t == TMPFS_MAGIC => Some(if unified == Some(CGROUP2_SUPER_MAGIC) {
            CgroupLayout::Hybrid
        } else {
            CgroupLayout::V1
        }),
        _ => None,
    }
}

/// The cgroup v2 path of this process: the `0::` line of /proc/self/cgroup.
fn parse_proc_cgroup(content: &str) -> Option<&str> {
    content.lines().find_map(|l| l.strip_prefix("0::"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupFacts {
    layout: Option<CgroupLayout>,
    /// Our cgroup v2 directory on the host, if we have one.
    own_dir: Option<PathBuf>,
    writable: bool,
    /// `cgroup.controllers` of our cgroup: what we may enable for cgroups below it.
    controllers: Vec<String>,
    /// `cgroup.subtree_control` of our cgroup: what is enabled for cgroups below it.
    subtree: Vec<String>,
}

impl CgroupFacts {
    fn gather(proc_cgroup: Option<&str>) -> Self {
        let fs_type = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
        let layout = classify_cgroups(fs_type("/sys/fs/cgroup"), fs_type("/sys/fs/cgroup/unified"));
        let own_dir = match (
            layout.and_then(CgroupLayout::v2_mount),
            proc_cgroup.and_then(parse_proc_cgroup),
        ) {
            (Some(mount), Some(own)) => Some(mount.join(own.trim_start_matches('/'))),
            _ => None,
        };
        let words = |dir: &Path, file: &str| -> Vec<String> {
            fs::read_to_string(dir.join(file))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (writable, controllers, subtree) = match &own_dir {
            Some(dir) => (
                access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok(),
                words(dir, "cgroup.controllers"),
                words(dir, "cgroup.subtree_control"),
            ),
            None => (false, Vec::new(), Vec::new()),
        };
        CgroupFacts {
            layout,
            own_dir,
            writable,
            controllers,
            subtree,
        }
    }
}

const NO_CGROUP: &str =
    "the sandbox gets no cgroup of its own (no memory/pids limits); processes are still contained by the pid namespace";
const DELEGATE_FIX: &str = "on a systemd host: run from a user session, or \
     `systemd-run --user --scope -p Delegate=yes thv-sandbox …`";
const UNIFIED_FIX: &str = "switch the host to cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1); then, \
     on a systemd host: run from a user session, or `systemd-run --user --scope -p Delegate=yes thv-sandbox …`";

fn cgroup_check(facts: &CgroupFacts) -> Check {
    const NAME: &str = "cgroups";
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    match facts.layout {
        None => Check::new(NAME, Status::Warn, format!("unknown layout: /sys/fs/cgroup is neither cgroup2 nor tmpfs; {NO_CGROUP}"))
            .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::V1) => Check::new(NAME, Status::Warn, format!("v1 (no cgroup2 hierarchy mounted); {NO_CGROUP}"))
            .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::Hybrid) => Check::new(
            NAME,
            Status::Warn,
            format!("hybrid (v1 controllers, cgroup2 on /sys/fs/cgroup/unified has controllers: {}); {NO_CGROUP}", list(&facts.controllers)),
        )
        .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::V2) => {
            let Some(dir) = &facts.own_dir else {
                return Check::new(NAME, Status::Warn, format!("v2, but /proc/self/cgroup has no 0:: line; {NO_CGROUP}"))
                    .with_fix(DELEGATE_FIX);
            };
            if !facts.writable {
                return Check::new(
                    NAME,
                    Status::Warn,
                    format!("v2, own cgroup {} is not delegated to us (not writable); {NO_CGROUP}", dir.display()),
                )
                .with_fix(DELEGATE_FIX);
            }
            let missing: Vec<&str> = ["memory", "pids"]
                .into_iter()
                .filter(|c| !facts.controllers.iter().any(|have| have == c))
                .collect();
            let found = format!(
                "v2, own cgroup {} is delegated (controllers: {}; enabled below it: {})",
                dir.display(),
                list(&facts.controllers),
                list(&facts.subtree)
            );
            if missing.is_empty() {
                Check::new(NAME, Status::Ok, found)
            } else {
                Check::new(
                    NAME,
                    Status::Warn,
                    format!("{found}; without {} the sandbox has no such limits", missing.join(" and ")),
                )
                .with_fix(DELEGATE_FIX)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 9.–10. subordinate ids and the setuid map helpers

/// What a subordinate-id file says about the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubIdLookup {
    /// The range [`parse_subid_file`] picks.
    usable: Option<(u32, u32)>,
    /// The largest count among the user's entries, when none is usable.
    too_small: Option<u32>,
}

impl SubIdLookup {
    fn parse(content: &str, user: &str, uid: u32) -> Self {
        let usable = parse_subid_file(content, user, uid);
        let too_small = if usable.is_none() {
            subid_entries(content, user, uid)
                .map(|(_, count)| count)
                .max()
        } else {
            None
        };
        SubIdLookup { usable, too_small }
    }

    /// A missing file reads as "no entries".
    fn read(kind: SubIdKind, user: &str, uid: u32) -> Result<Self, String> {
        match fs::read_to_string(kind.path()) {
            Ok(content) => Ok(Self::parse(&content, user, uid)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SubIdLookup {
                usable: None,
                too_small: None,
            }),
            Err(source) => Err(crate::chain::one_line(&DoctorError::Read {
                path: kind.path().to_path_buf(),
                source,
            })),
        }
    }
}

/// `helpers_needed`: newuidmap/newgidmap are missing and we are not root, so the fix must install them.
fn subid_check(
    user: &str,
    uid: u32,
    subuid: &Result<SubIdLookup, String>,
    subgid: &Result<SubIdLookup, String>,
    helpers_needed: bool,
) -> Check {
    const NAME: &str = "subordinate ids";
    let describe = |kind: SubIdKind, lookup: &Result<SubIdLookup, String>| -> (bool, String) {
        let file = kind.path().display();
        match lookup {
            Err(e) => (false, e.clone()),
            Ok(SubIdLookup {
                usable: Some((start, count)),
                ..
            }) => (
                true,
                format!(
                    "{file}: {start}-{} ({count} ids)",
                    u64::from(*start) + u64::from(*count) - 1
                ),
            ),
            Ok(SubIdLookup {
                too_small: Some(count),
                ..
            }) => (
                false,
                format!("{file}: only {count} ids for {user} (need {MIN_SUBID_COUNT})"),
            ),
            Ok(_) => (false, format!("{file}: no entry for {user} (uid {uid})")),
        }
    };
    let (uid_ok, uid_text) = describe(SubIdKind::Uid, subuid);
    let (gid_ok, gid_text) = describe(SubIdKind::Gid, subgid);
    if uid_ok && gid_ok {
        return Check::new(NAME, Status::Ok, format!("{uid_text}; {gid_text}"));
    }
    Check::new(
        NAME,
        Status::Warn,
        format!(
            "{uid_text}; {gid_text}: runs in single-uid mode; images with several file owners see them as one user"
        ),
    )
    .with_fix(format!(
        "`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`{}",
        if helpers_needed {
            " and install `uidmap`"
        } else {
            ""
        }
    ))
}

/// One of newuidmap/newgidmap as found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IdMapHelper {
    name: &'static str,
    path: Option<PathBuf>,
    setuid_root: bool,
    file_caps: bool,
}

impl IdMapHelper {
    /// Looks in PATH, then /usr/bin.
    fn find(name: &'static str) -> Self {
        let dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let found = dirs
            .into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join(name))
            .find_map(|p| {
                fs::metadata(&p)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| (p, m))
            });
        let Some((path, meta)) = found else {
            return IdMapHelper {
                name,
                path: None,
                setuid_root: false,
                file_caps: false,
            };
        };
        let setuid_root = meta.uid() == 0 && meta.mode() & 0o4000 != 0;
        let file_caps = has_file_caps(&path);
        IdMapHelper {
            name,
            path: Some(path),
            setuid_root,
            file_caps,
        }
    }

    fn usable(&self) -> bool {
        self.path.is_some() && (self.setuid_root || self.file_caps)
    }

    fn describe(&self) -> String {
        match &self.path {
            None => format!("{} not found", self.name),
            Some(path) if self.setuid_root => format!("{} (setuid root)", path.display()),
            Some(path) if self.file_caps => format!("{} (file capabilities)", path.display()),
            Some(path) => format!(
                "{} (neither setuid root nor file capabilities)",
                path.display()
            ),
        }
    }
}

/// Whether the file has a `security.capability` extended attribute.
fn has_file_caps(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 only asks for the value's size.
    let size = unsafe {
        libc::getxattr(
            cpath.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

const UIDMAP_FIX: &str = "`sudo apt-get install uidmap` (Debian/Ubuntu; `shadow-utils` on Fedora)";

fn idmap_helpers_check(
    euid: u32,
    subids_present: bool,
    uidmap: &IdMapHelper,
    gidmap: &IdMapHelper,
) -> Check {
    const NAME: &str = "newuidmap/newgidmap";
    let found = format!("{}, {}", uidmap.describe(), gidmap.describe());
    if euid == 0 {
        return Check::new(
            NAME,
            Status::Ok,
            format!("not needed as root (root writes id maps itself); {found}"),
        );
    }
    if uidmap.usable() && gidmap.usable() {
        return Check::new(NAME, Status::Ok, found);
    }
    if uidmap.path.is_none() || gidmap.path.is_none() {
        return if subids_present {
            Check::new(
                NAME,
                Status::Warn,
                format!("{found}: the subordinate ids cannot be used, so the sandbox runs in single-uid mode"),
            )
            .with_fix(UIDMAP_FIX)
        } else {
            Check::new(
                NAME,
                Status::Ok,
                format!("{found} (needed only together with subordinate ids)"),
            )
        };
    }
    let broken: Vec<String> = [uidmap, gidmap]
        .into_iter()
        .filter(|h| !h.usable())
        .filter_map(|h| h.path.as_ref().map(|p| p.display().to_string()))
        .collect();
    Check::new(
        NAME,
        Status::Warn,
        format!("{found}: they cannot write id maps for you"),
    )
    .with_fix(format!(
        "`sudo apt-get install --reinstall uidmap`, or `sudo chmod u+s {}`",
        broken.join(" ")
    ))
}

// ---------------------------------------------------------------------------------------------------
// 11. state and cache directories

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirKind {
    State,
    Cache,
}

impl DirKind {
    fn name(self) -> &'static str {
        match self {
            DirKind::State => "state dir",
            DirKind::Cache => "cache dir",
        }
    }
}

/// What is at a directory path, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DirState {
    Present {
        uid: u32,
        mode: u32,
    },
    NotADirectory,
    /// Does not exist; `ancestor` is the nearest existing one and whether we may create entries in it.
    Missing {
        ancestor: Option<PathBuf>,
        creatable: bool,
    },
    Unreadable(String),
}

impl DirState {
    fn inspect(path: &Path) -> Self {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => DirState::Present {
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            },
            Ok(_) => DirState::NotADirectory,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let ancestor = path
                    .ancestors()
                    .skip(1)
                    .find(|a| a.is_dir() || a.as_os_str().is_empty());
                let ancestor = ancestor
                    .filter(|a| !a.as_os_str().is_empty())
                    .map(Path::to_path_buf);
                let creatable = ancestor
                    .as_deref()
                    .is_some_and(|a| access(a, AccessFlags::W_OK | AccessFlags::X_OK).is_ok());
                DirState::Missing {
                    ancestor,
                    creatable,
                }
            }
            Err(e) => DirState::Unreadable(e.to_string()),
        }
    }
}

fn dir_check(kind: DirKind, path: &Path, state: &DirState, euid: u32) -> Check {
    let name = kind.name();
    let shown = path.display();
    let choose_other = "or point thv-sandbox at another directory";
    match state {
        DirState::Unreadable(e) => {
            Check::new(name, Status::Fail, format!("cannot inspect {shown}: {e}"))
                .with_fix(format!("fix the permissions of {shown}, {choose_other}"))
        }
        DirState::NotADirectory => Check::new(
            name,
            Status::Fail,
            format!("{shown} exists but is not a directory"),
        )
        .with_fix(format!("remove {shown}, {choose_other}")),
        DirState::Missing {
            creatable: true, ..
        } => Check::new(
            name,
            Status::Ok,
            format!("{shown} does not exist yet and will be created"),
        ),
        DirState::Missing {
            ancestor,
            creatable: false,
        } => {
            let under = ancestor
                .as_ref()
                .map_or("no existing parent".to_string(), |a| {
                    format!("{} is not writable by uid {euid}", a.display())
                });
            Check::new(name, Status::Fail, format!("{shown} does not exist and cannot be created: {under}"))
                .with_fix(format!("`mkdir -p -m 700 {shown}` as a user who may, then chown it to uid {euid}, {choose_other}"))
        }
        DirState::Present { uid, .. } if *uid != euid => Check::new(
            name,
            Status::Fail,
            format!("{shown} is owned by uid {uid}, not by uid {euid}"),
        )
        .with_fix(format!("`sudo chown {euid} {shown}`, {choose_other}")),
        DirState::Present { mode, .. } if mode & 0o022 != 0 => {
            let target = if kind == DirKind::State {
                "700"
            } else {
                "go-w"
            };
            Check::new(
                name,
                Status::Fail,
                format!("{shown} has mode {mode:04o}: others may write to it"),
            )
            .with_fix(format!("`chmod {target} {shown}`, {choose_other}"))
        }
        DirState::Present { mode, .. } if kind == DirKind::State && mode & 0o077 != 0 => {
            Check::new(
                name,
                Status::Warn,
                format!("{shown} has mode {mode:04o}: others may read sandbox state"),
            )
            .with_fix(format!("`chmod 700 {shown}`"))
        }
        DirState::Present { mode, .. } => Check::new(
            name,
            Status::Ok,
            format!("{shown} (mode {mode:04o}, owned by us)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(outcomes: &[(Step, Outcome)]) -> Result<Probe, String> {
        let mut all = [Outcome::NotRun; STEP_COUNT];
        for &(step, outcome) in outcomes {
            all[step as usize] = outcome;
        }
        Ok(Probe {
            outcomes: all,
            died: None,
        })
    }

    fn all_ok() -> Result<Probe, String> {
        probe_with(&Step::ALL.map(|s| (s, Outcome::Ok)))
    }

    #[test]
    fn subid_parser_picks_first_big_enough_entry_by_name_or_uid() {
        let content = "\
# comment
alice:100000:65536

bob:200000:1000
bob:300000:65536
1001:400000:70000
";
        assert_eq!(
            parse_subid_file(content, "alice", 1000),
            Some((100000, 65536))
        );
        // The too-small first entry is skipped.
        assert_eq!(
            parse_subid_file(content, "bob", 2000),
            Some((300000, 65536))
        );
        // By number.
        assert_eq!(
            parse_subid_file(content, "carol", 1001),
            Some((400000, 70000))
        );
        assert_eq!(parse_subid_file(content, "dave", 1002), None);
    }

    #[test]
    fn subid_parser_skips_malformed_and_overflowing_lines() {
        let content = "alice:x:65536\nalice:1:2:3\nalice:4294967295:65536\n  # alice:1:65536\nalice\nalice:500000:65536\n";
        assert_eq!(
            parse_subid_file(content, "alice", 1000),
            Some((500000, 65536))
        );
        assert_eq!(parse_subid_file("", "alice", 1000), None);
    }

    #[test]
    fn subid_name_does_not_match_other_uid() {
        // A numeric owner only matches the uid, never a user whose name happens to differ.
        assert_eq!(parse_subid_file("1000:100000:65536\n", "bob", 1001), None);
    }

    #[test]
    fn subid_lookup_reports_too_small_ranges() {
        let lookup = SubIdLookup::parse("alice:1:10\nalice:100:1000\n", "alice", 1000);
        assert_eq!(
            lookup,
            SubIdLookup {
                usable: None,
                too_small: Some(1000)
            }
        );
        let check = subid_check("alice", 1000, &Ok(lookup), &Ok(lookup), true);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("only 1000 ids"), "{}", check.detail);
        assert_eq!(
            check.fix.as_deref(),
            Some(
                "`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice` \
                 and install `uidmap`"
            )
        );
        let usable = SubIdLookup::parse("alice:100000:65536\n", "alice", 1000);
        let check = subid_check("alice", 1000, &Ok(usable), &Ok(lookup), false);
        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.unwrap().ends_with("alice`"));
        let check = subid_check("alice", 1000, &Ok(usable), &Ok(usable), false);
        assert_eq!(check.status, Status::Ok);
        assert_eq!(
            check.detail,
            "/etc/subuid: 100000-165535 (65536 ids); /etc/subgid: 100000-165535 (65536 ids)"
        );
    }

    #[test]
    fn proc_cgroup_parser_finds_the_unified_line() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/user.slice/app.scope\n";
        assert_eq!(parse_proc_cgroup(hybrid), Some("/user.slice/app.scope"));
        assert_eq!(parse_proc_cgroup("0::/\n"), Some("/"));
        assert_eq!(parse_proc_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn cgroup_layout_classification() {
        assert_eq!(
            classify_cgroups(Some(CGROUP2_SUPER_MAGIC), None),
            Some(CgroupLayout::V2)
        );
        assert_eq!(
            classify_cgroups(Some(TMPFS_MAGIC), Some(CGROUP2_SUPER_MAGIC)),
            Some(CgroupLayout::Hybrid)
        );
        assert_eq!(
            classify_cgroups(Some(TMPFS_MAGIC), Some(TMPFS_MAGIC)),
            Some(CgroupLayout::V1)
        );
        assert_eq!(
            classify_cgroups(Some(TMPFS_MAGIC), None),
            Some(CgroupLayout::V1)
        );
        assert_eq!(classify_cgroups(None, None), None);
    }

    #[test]
    fn cgroup_check_distinguishes_delegation() {
        let delegated = CgroupFacts {
            layout: Some(CgroupLayout::V2),
            own_dir: Some(PathBuf::from("/sys/fs/cgroup/user.slice/x.scope")),
            writable: true,
            controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            subtree: vec![],
        };
        assert_eq!(cgroup_check(&delegated).status, Status::Ok);
        let not_writable = CgroupFacts {
            writable: false,
            ..delegated.clone()
        };
        let check = cgroup_check(&not_writable);
        assert_eq!(check.status, Status::Warn);
        assert_eq!(check.fix.as_deref(), Some(DELEGATE_FIX));
        let no_memory = CgroupFacts {
            controllers: vec!["pids".into()],
            ..delegated.clone()
        };
        let check = cgroup_check(&no_memory);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("without memory"), "{}", check.detail);
        let hybrid = CgroupFacts {
            layout: Some(CgroupLayout::Hybrid),
            ..delegated
        };
        let check = cgroup_check(&hybrid);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.starts_with("hybrid"));
        assert!(check.detail.contains(NO_CGROUP));
    }

    #[test]
    fn seccomp_mode_parser() {
        assert_eq!(
            parse_seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
            Some(2)
        );
        assert_eq!(parse_seccomp_mode("Seccomp:\t0\n"), Some(0));
        assert_eq!(parse_seccomp_mode("Name:\tx\n"), None);
    }

    #[test]
    fn seccomp_check_notes_an_outer_filter() {
        let check = seccomp_check(Some(2), &all_ok(), None);
        assert_eq!(check.status, Status::Ok);
        assert!(check.detail.contains("already runs under a seccomp filter"));
        assert_eq!(seccomp_check(None, &all_ok(), None).status, Status::Fail);
        let failed = probe_with(&[(Step::Seccomp, Outcome::Failed(Errno::EINVAL))]);
        assert_eq!(seccomp_check(Some(0), &failed, None).status, Status::Fail);
    }

    #[test]
    fn userns_eperm_in_a_container_says_so() {
        let probe = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::EPERM))]);
        let knobs = UsernsKnobs {
            max_user_namespaces: Some(1000),
            ..Default::default()
        };
        let check = userns_check(&knobs, &probe, Some("/.dockerenv exists"), 1000);
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.detail,
            "unshare(CLONE_NEWUSER) failed: EPERM: Operation not permitted: this looks like a container \
             (/.dockerenv exists) that forbids user namespaces"
        );
        assert_eq!(check.fix.as_deref(), Some(CONTAINER_USERNS_FIX));
    }

    #[test]
    fn userns_failures_point_at_the_responsible_knob() {
        let eperm_map = probe_with(&[
            (Step::UserNs, Outcome::Ok),
            (Step::Setgroups, Outcome::Ok),
            (Step::UidMap, Outcome::Failed(Errno::EPERM)),
        ]);
        let ubuntu = UsernsKnobs {
            max_user_namespaces: Some(1000),
            apparmor_restrict: Some(1),
            ..Default::default()
        };
        let check = userns_check(&ubuntu, &eperm_map, None, 1000);
        assert!(
            check
                .detail
                .starts_with("writing /proc/self/uid_map failed"),
            "{}",
            check.detail
        );
        assert_eq!(check.fix.as_deref(), Some(APPARMOR_FIX));

        let enospc = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::ENOSPC))]);
        let zero = UsernsKnobs {
            max_user_namespaces: Some(0),
            ..Default::default()
        };
        let check = userns_check(&zero, &enospc, None, 1000);
        assert!(check
            .fix
            .unwrap()
            .contains("user.max_user_namespaces=15000"));

        let debian = UsernsKnobs {
            max_user_namespaces: Some(1000),
            unprivileged_userns_clone: Some(0),
            ..Default::default()
        };
        let eperm = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::EPERM))]);
        let check = userns_check(&debian, &eperm, None, 1000);
        assert!(check
            .fix
            .unwrap()
            .contains("kernel.unprivileged_userns_clone=1"));
    }

    #[test]
    fn dependent_checks_are_not_tested_without_a_user_namespace() {
        let probe = probe_with(&[
            (Step::UserNs, Outcome::Failed(Errno::EPERM)),
            (Step::Seccomp, Outcome::Ok),
        ]);
        let check = mount_check(&probe, None);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .detail
                .starts_with("not tested: unshare(CLONE_NEWUSER) failed"),
            "{}",
            check.detail
        );
        assert_eq!(check.fix, None);
        assert_eq!(overlay_check(&probe).status, Status::Warn);
        assert_eq!(seccomp_check(Some(0), &probe, None).status, Status::Ok);
    }

    #[test]
    fn a_dead_probe_is_reported() {
        let probe = decode_probe(&[0, 0, 0, 0, 0, 0, 0, 0], Some("killed by SIGSYS".into()));
        assert_eq!(probe.outcome(Step::UserNs), Outcome::Ok);
        let check = userns_check(&UsernsKnobs::default(), &Ok(probe), None, 1000);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.detail.starts_with(
                "the probe died (killed by SIGSYS) before writing /proc/self/setgroups"
            ),
            "{}",
            check.detail
        );
    }

    #[test]
    fn proc_mount_failure_in_a_container_explains_masked_paths() {
        let mut outcomes: Vec<(Step, Outcome)> =
            Step::ALL.iter().map(|&s| (s, Outcome::Ok)).collect();
        outcomes[Step::Proc as usize].1 = Outcome::Failed(Errno::EPERM);
        let check = pidns_check(&probe_with(&outcomes), Some("/.dockerenv exists"));
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.unwrap().contains("masked /proc paths"));
    }

    #[test]
    fn container_detection() {
        assert_eq!(
            detect_container(true, false, ""),
            Some("/.dockerenv exists")
        );
        assert_eq!(
            detect_container(false, true, ""),
            Some("/run/.containerenv exists")
        );
        assert_eq!(
            detect_container(false, false, "0::/system.slice/docker-abc.scope\n"),
            Some("our cgroup names docker")
        );
        assert_eq!(
            detect_container(false, false, "0::/user.slice/user-1000.slice\n"),
            None
        );
    }

    #[test]
    fn dir_check_rules() {
        let p = Path::new("/s");
        let status = |state: DirState, kind| dir_check(kind, p, &state, 1000).status;
        assert_eq!(
            status(
                DirState::Present {
                    uid: 1000,
                    mode: 0o700
                },
                DirKind::State
            ),
            Status::Ok
        );
        assert_eq!(
            status(
                DirState::Present {
                    uid: 0,
                    mode: 0o700
                },
                DirKind::State
            ),
            Status::Fail
        );
        assert_eq!(
            status(
                DirState::Present {
                    uid: 1000,
                    mode: 0o777
                },
                DirKind::Cache
            ),
            Status::Fail
        );
        assert_eq!(
            status(
                DirState::Present {
                    uid: 1000,
                    mode: 0o755
                },
                DirKind::State
            ),
            Status::Warn
        );
        assert_eq!(
            status(
                DirState::Present {
                    uid: 1000,
                    mode: 0o755
                },
                DirKind::Cache
            ),
            Status::Ok
        );
        assert_eq!(
            status(DirState::NotADirectory, DirKind::Cache),
            Status::Fail
        );
        let missing = |creatable| DirState::Missing {
            ancestor: Some(PathBuf::from("/")),
            creatable,
        };
        assert_eq!(status(missing(true), DirKind::State), Status::Ok);
        assert_eq!(status(missing(false), DirKind::State), Status::Fail);
        let fix = dir_check(
            DirKind::State,
            p,
            &DirState::Present {
                uid: 1000,
                mode: 0o770,
            },
            1000,
        )
        .fix;
        assert_eq!(
            fix.as_deref(),
            Some("`chmod 700 /s`, or point thv-sandbox at another directory")
        );
    }

    #[test]
    fn dir_inspection_of_real_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let euid = Uid::effective().as_raw();
        let missing = tmp.path().join("a/b");
        assert_eq!(
            DirState::inspect(&missing),
            DirState::Missing {
                ancestor: Some(tmp.path().to_path_buf()),
                creatable: true
            }
        );
        fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        assert_eq!(
            DirState::inspect(tmp.path()),
            DirState::Present {
                uid: euid,
                mode: 0o700
            }
        );
    }

    #[test]
    fn render_snapshot() {
        let report = Report {
            checks: vec![
                Check::new("user", Status::Ok, "uid 1000 (alice): rootless"),
                Check::new("cgroups", Status::Warn, "hybrid").with_fix("switch to v2"),
                Check::new(
                    "user namespaces",
                    Status::Fail,
                    "unshare(CLONE_NEWUSER) failed: EPERM",
                )
                .with_fix("run on the host"),
            ],
        };
        assert_eq!(
            report.render(),
            "\
[ok]   user: uid 1000 (alice): rootless
[warn] cgroups: hybrid
       fix: switch to v2
[FAIL] user namespaces: unshare(CLONE_NEWUSER) failed: EPERM
       fix: run on the host
1 ok, 1 warning, 1 failure: this host cannot run sandboxes
"
        );
        assert!(!report.ok());
        assert_eq!(
            report.failures().map(|c| c.name).collect::<Vec<_>>(),
            ["user namespaces"]
        );
    }

    #[test]
    fn hint_joins_distinct_fixes_or_points_at_doctor() {
        let mut report = Report {
            checks: vec![
                Check::new("a", Status::Fail, "x").with_fix("do A"),
                Check::new("b", Status::Fail, "y").with_fix("do A"),
                Check::new("c", Status::Fail, "not tested"),
                Check::new("d", Status::Warn, "z").with_fix("do D"),
                Check::new("e", Status::Fail, "w").with_fix("do E"),
            ],
        };
        assert_eq!(
            hint_for_sandbox_failure(&report),
            "do A; do E (details: `thv-sandbox doctor`)"
        );
        report.checks.retain(|c| c.status != Status::Fail);
        assert_eq!(
            hint_for_sandbox_failure(&report),
            "run `thv-sandbox doctor` to check whether this host supports rootless sandboxes"
        );
    }

    /// This machine (Debian 12) allows user namespaces, and the real probe must say so; the cgroup
    /// check must name the layout statfs sees.
    #[test]
    fn diagnose_this_host() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = DoctorInputs {
            state_dir: tmp.path().join("state"),
            cache_dir: tmp.path().join("cache"),
        };
        let report = diagnose(&inputs);
        let get = |name: &str| {
            report
                .checks
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no check {name}"))
        };
        let text = report.render();
        for name in [
            "user namespaces",
            "mount namespace",
            "cgroup namespace",
            "pid namespace",
            "seccomp",
            "state dir",
            "cache dir",
        ] {
            assert_eq!(get(name).status, Status::Ok, "{name}:\n{text}");
        }
        let root = statfs("/sys/fs/cgroup").unwrap().filesystem_type();
        let expected = if root == CGROUP2_SUPER_MAGIC {
            "v2"
        } else {
            assert_eq!(root, TMPFS_MAGIC);
            assert_eq!(
                statfs("/sys/fs/cgroup/unified").unwrap().filesystem_type(),
                CGROUP2_SUPER_MAGIC
            );
            "hybrid"
        };
        assert!(get("cgroups").detail.starts_with(expected), "{text}");
        assert!(report.ok(), "{text}");
    }

    #[test]
    fn the_probe_leaves_its_directory_empty_and_unmounted() {
        let dir = ProbeDir::create().unwrap();
        let probe = probe_in(&dir.path).unwrap();
        assert_eq!(probe.died, None);
        // The child really mounted on it (in its own namespace) ...
        assert_eq!(probe.outcome(Step::Tmpfs), Outcome::Ok);
        // ... and on the host it is still an empty directory on the parent's filesystem.
        assert_eq!(fs::read_dir(&dir.path).unwrap().count(), 0);
        let dev = |p: &Path| fs::metadata(p).unwrap().dev();
        assert_eq!(dev(&dir.path), dev(dir.path.parent().unwrap()));
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists());
    }
}
