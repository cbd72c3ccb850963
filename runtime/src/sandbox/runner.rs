//! The runner: the processes between the supervisor and the server.
//!
//! ```text
//! thv-sandbox run (supervisor, host namespaces)          — talks to the MCP client, never calls libcontainer
//!  └─ runner keeper  (own user, mount, cgroup and net namespaces; host pid namespace)
//!      └─ runner init (pid 1 of its own pid namespace; calls libcontainer, which makes it non-dumpable)
//!          └─ server   (the container: its own pid, ipc, uts, mount and cgroup namespaces; joins the net namespace)
//! ```
//! Why each process exists:
//! - The keeper creates the user namespace (the supervisor writes its id maps from outside, with `newuidmap` when
//!   subordinate ids are used), mounts `cgroup2` in its private mount namespace (so libcontainer's cgroup v2 manager
//!   works on cgroup-v1-hybrid hosts too), brings `lo` up in a fresh network namespace and binds that namespace to
//!   a file the spec joins. It outlives everything under it, so it can clean up: the run directory and any cgroup.
//! - The runner init is pid 1 of a pid namespace that contains the whole sandbox. When it dies for any reason —
//!   including SIGKILL of the keeper, through its parent-death signal — the kernel kills every process in the
//!   sandbox. Nothing can outlive it.
//! - The keeper gets SIGTERM when the supervisor dies (parent-death signal): it stops the server, waits the grace
//!   period, then kills the runner init.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::sandbox::secret::SecretEnv;
use crate::sandbox::sync::{
    ChannelError, Mapping, Order, RunnerChannel, RunnerFailure, SocketFactory, StartTimings,
};

/// The descriptor number the supervisor hands the channel over on.
pub const SYNC_FD: i32 = 3;

/// What the supervisor tells the runner, as `plan.json` in the run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerPlan {
    /// Container id (unique).
    pub id: String,
    /// The bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The (empty) file the network namespace is bound to.
    pub netns: PathBuf,
    /// The spec's absolute cgroups path.
    pub cgroups_path: String,
    /// The cached root: bound read-only onto itself before libcontainer runs, so nothing in the sandbox's set-up
    /// can write into the cache.
    pub rootfs: PathBuf,
    /// The run directory, removed at the end.
    pub run_dir: PathBuf,
    /// The supervisor's pid; if the keeper's parent is not it any more, the supervisor is gone.
    pub supervisor_pid: i32,
    /// How long the server gets between SIGTERM and SIGKILL.
    pub stop_timeout_ms: u64,
    /// Share the host's network namespace instead of a fresh one with only `lo` (`--network host`).
    #[serde(default)]
    pub network_host: bool,
    /// A writable overlay over the cached root, made when a mount target is missing from the image.
    #[serde(default)]
    pub overlay: Option<OverlayPlan>,
    /// Bind the egress proxy's listening socket to `127.0.0.1:PORT` in the sandbox's network namespace and hand
    /// it to the supervisor.
    #[serde(default)]
    pub egress_port: Option<u16>,
    /// Hand the supervisor a socket factory (TCP sockets of the sandbox's network namespace, for bridging HTTP
    /// servers): see [`crate::sandbox::sync::SocketFactory`].
    #[serde(default)]
    pub socket_factory: bool,
    /// Bind `127.0.0.1:53` (UDP) in the sandbox's network namespace and hand it to the supervisor, which answers
    /// every name lookup with a refusal and reports it (a sandbox with its own network only); also route the
    /// namespace's default routes to a TUN device handed over the same way (`crate::sandbox::unreachable`).
    #[serde(default)]
    pub dns_stub: bool,
    /// Leave the root writable (not bound read-only onto itself): only for the staging root of a root being built,
    /// never for a cached one (see `crate::pipeline::bytecode`).
    #[serde(default)]
    pub writable_root: bool,
    /// Kill the sandbox this long after the keeper started, whatever it is doing.
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    /// The sandbox's own cgroup, where its resource limits apply (see `crate::sandbox::cgroup`); `None`: none.
    #[serde(default)]
    pub cgroup: Option<crate::sandbox::cgroup::PlannedCgroup>,
    /// The server's seccomp filter, compiled (`crate::sandbox::filter`): the spec has none. The runner refuses a
    /// plan whose program is missing or not well formed; missing still parses, for readers of other versions'
    /// plans (`runs::live_roots`: a root in use must not look unused).
    #[serde(default, with = "crate::sandbox::filter::as_base64")]
    pub seccomp: Vec<u8>,
}

/// An overlay whose lower layer is the sealed cached root and whose upper layer is a tmpfs of the runner's: the
/// mount points the image lacks are created in it, then libcontainer mounts it read-only as the server's root.
/// The cache is never written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayPlan {
    /// Where the tmpfs holding the upper and work directories is mounted.
    pub scratch: PathBuf,
    /// Where the merged root is mounted (the spec's root path).
    pub merged: PathBuf,
    /// Mount points to create in the merged root: `(absolute path inside, is_dir)`.
    pub points: Vec<(String, bool)>,
}

/// The signals the sandbox forwards to the server.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The forwarded signals whose default action ends a process: the ones that stop the server.
const STOPS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// The signals the keeper, the runner init and the supervisor take through a signalfd: the forwarded ones and
/// `SIGCHLD`.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Entry point of `thv-sandbox __runner RUN_DIR` (the keeper). Returns the process exit code. `userns_made`: it
/// is already in the user namespace it made for the sandbox (a prefork: see `prefork`), still unmapped.
pub fn keeper_main(run_dir: &Path, userns_made: bool) -> i32 {
    // SAFETY: descriptor 3 is handed over by the supervisor for exactly this purpose and owned by nothing else here.
    let keeper = RunnerChannel::from_fd(unsafe { OwnedFd::from_raw_fd(SYNC_FD) });
    crate::trace::mark("keeper: main");
    let fail = |stage: &str, err: &dyn std::error::Error| {
        let _ = keeper.failed(failure(stage, err));
        crate::EXIT_SANDBOX_ERROR
    };
    let plan: RunnerPlan = match std::fs::read(run_dir.join("plan.json"))
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.into()))
    {
        Ok(p) => p,
        Err(e) => return fail("read run plan", e.as_ref()),
    };
    // If the supervisor dies, we hear of it. It may already be gone: then there is nobody to serve.
    if let Err(e) = set_parent_death_signal(Signal::SIGTERM) {
        return fail("parent-death signal", &e);
    }
    if nix::unistd::getppid().as_raw() != plan.supervisor_pid {
        return crate::EXIT_SANDBOX_ERROR;
    }
    let t0 = Instant::now();
    if !userns_made {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
            return fail("create user namespace", &e);
        }
    }
    crate::trace::mark("keeper: user namespace");
    if let Err(e) = keeper.userns_ready() {
        return fail("runner channel", &e);
    }
    let secrets = match keeper.wait_for_mapping() {
        Ok(Mapping::Mapped(secrets)) => secrets,
        // The supervisor reports why; or it is gone.
        Ok(Mapping::Refused) | Err(ChannelError::Closed) => return crate::EXIT_SANDBOX_ERROR,
        // Stopped before anything ran (the client went away or sent a signal): nothing to clean but the run dir.
        Ok(Mapping::Stopped(signal)) => {
            let _ = std::fs::remove_dir_all(&plan.run_dir);
            return 128 + signal;
        }
        Err(e) => return fail("runner channel", &e),
    };

    crate::trace::mark("keeper: mapped");
    // The sandbox's cgroup is opened here, with the host's paths and our host credentials, before we enter our
    // namespaces; the runner init moves itself in through it.
    let held = match plan
        .cgroup
        .as_ref()
        .map(|c| crate::sandbox::cgroup::Held::open(&c.plan, &plan.cgroups_path))
    {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => return fail("open the sandbox's cgroup", &e),
    };
    if let Err((stage, e)) = enter_namespaces(&plan) {
        return fail(stage, &e);
    }
    crate::trace::mark("keeper: namespaces");
    if let Some(port) = plan.egress_port {
        // Bound here, in the sandbox's network namespace; served by the supervisor from the host's. Our copy is
        // closed before anything of the sandbox is started, so no process inside can accept on it.
        let sent = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(ChannelError::from)
            .and_then(|l| keeper.egress_listener(port, &l));
        if let Err(e) = sent {
            return fail("egress proxy socket", &e);
        }
    }
    if plan.dns_stub {
        // Bound here, in the sandbox's network namespace (we may bind port 53: the namespace is our user
        // namespace's); answered by the supervisor, which refuses every name and reports it. Our copy is closed
        // before anything of the sandbox is started.
        let sent = std::net::UdpSocket::bind(("127.0.0.1", 53))
            .map_err(ChannelError::from)
            .and_then(|s| keeper.dns_socket(&s));
        if let Err(e) = sent {
            return fail("name server socket", &e);
        }
        // The default route to a TUN device the supervisor answers: connections to addresses (no lookup) are
        // refused and reported too. Without /dev/net/tun they only fail, unreported, as without it.
        match crate::sandbox::unreachable::create() {
            Ok(device) => {
                if let Err(e) = keeper.unreachable_device(&device) {
                    return fail("unreachable device", &e);
                }
            }
            Err(e) => tracing::debug!("no {} device: {e}", crate::sandbox::unreachable::DEVICE),
        }
    }
    let factory = if plan.socket_factory {
        let made = crate::sandbox::sync::pair()
            .map_err(ChannelError::from)
            .and_then(|(theirs, ours)| {
                keeper.socket_factory(theirs)?;
                Ok(ours)
            });
        match made {
            Ok(f) => Some(f),
            Err(e) => return fail("socket factory", &e),
        }
    } else {
        None
    };
    let namespaces_us = t0.elapsed().as_micros() as u64;

    // Signals are taken through a signalfd; the runner init unblocks them again before libcontainer runs.
    let set = handled_signals();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        return fail("block signals", &e);
    }
    let sfd = match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return fail("signalfd", &e),
    };
    // SAFETY: the process is single-threaded here (no threads were started in the runner), so the child may run
    // arbitrary code.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            crate::trace::mark("init: forked");
            // Its name in `ps`/`top` (libcontainer names its own processes `youki:[…]`).
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which this is.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"thv-sbx-init".as_ptr(), 0, 0, 0) };
            drop(sfd);
            drop(factory);
            if let Some(held) = &held {
                if let Err((stage, e)) = enter_cgroup(held) {
                    let _ = keeper.failed(failure(stage, &e));
                    std::process::exit(crate::EXIT_SANDBOX_ERROR);
                }
            }
            std::process::exit(init_main(&plan, &keeper, namespaces_us, secrets));
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return fail("fork runner init", &e),
    };
    let code = keep(&plan, &keeper, &sfd, child, factory);
    if let Some(held) = &held {
        // The runner init is gone, and with it every process of the sandbox (its pid namespace's).
        let kills = held.oom_kills();
        if kills > 0 {
            let _ = keeper.out_of_memory(kills);
        }
        held.remove();
    }
    cleanup(&plan);
    code
}

/// The keeper's wait: relays signals and the supervisor's requests, enforces the grace period if the supervisor
/// dies, and returns the runner init's exit code.
fn keep(
    plan: &RunnerPlan,
    keeper: &RunnerChannel,
    sfd: &SignalFd,
    child: Pid,
    mut factory: Option<RunnerChannel>,
) -> i32 {
    // A time limit is a deadline from the start, at which the runner init (and with it the sandbox) is killed.
    let mut deadline: Option<Instant> = plan
        .time_limit_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut chan_open = true;
    let grace = Duration::from_millis(plan.stop_timeout_ms);
    loop {
        if let Some(code) = reap(child) {
            return code;
        }
        let timeout = match deadline {
            Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if chan_open {
            fds.push(PollFd::new(keeper.as_fd(), PollFlags::POLLIN));
        }
        let factory_at = fds.len();
        if let Some(f) = &factory {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) => {
                // Grace period over.
                let _ = kill(child, Signal::SIGKILL);
                deadline = None;
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => {
                let _ = kill(child, Signal::SIGKILL);
                continue;
            }
        }
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let factory_ready = fds
            .get(factory_at)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        let chan_ready = chan_open
            && fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
        drop(fds);
        if factory_ready {
            let gone = factory
                .as_ref()
                .is_some_and(|f| !matches!(SocketFactory::serve_one(f), Ok(true)));
            if gone {
                factory = None;
            }
        }
        if sig_ready {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                if let Some(sig) = sig.filter(|s| *s != Signal::SIGCHLD) {
                    let _ = kill(child, sig);
                    // SIGTERM without a supervisor (its parent-death signal) starts the grace period here.
                    if sig == Signal::SIGTERM && deadline.is_none() {
                        deadline = Some(Instant::now() + grace);
                    }
                }
            }
        }
        if chan_ready {
            match keeper.next_order() {
                Ok(Order::Signal(sig)) => {
                    let _ = kill(child, sig);
                }
                Ok(Order::Kill) => {
                    let _ = kill(child, Signal::SIGKILL);
                }
                // An order out of place is not obeyed; the supervisor is still there.
                Err(
                    e @ (ChannelError::UnexpectedMessage { .. } | ChannelError::UnknownSignal(_)),
                ) => {
                    tracing::debug!("{e}");
                }
                Err(_) => {
                    // The supervisor is gone: stop the server, kill everything after the grace period.
                    chan_open = false;
                    let _ = kill(child, Signal::SIGTERM);
                    deadline.get_or_insert(Instant::now() + grace);
                }
            }
        }
    }
}

/// Collects the runner init if it has exited; its code is ours.
fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Removes what the run left: its cgroup (if one could be made) and the run directory.
fn cleanup(plan: &RunnerPlan) {
    let _ = umount2(&plan.netns, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(
        Path::new("/sys/fs/cgroup").join(plan.cgroups_path.trim_start_matches('/')),
    );
    let _ = std::fs::remove_dir_all(&plan.run_dir);
}

/// In the runner init, before anything else: into the sandbox's cgroup, then a cgroup namespace rooted there with
/// its own cgroup2 view, so that libcontainer's cgroup (the spec's `cgroupsPath`) is made inside the sandbox's
/// cgroup and not beside it.
fn enter_cgroup(held: &crate::sandbox::cgroup::Held) -> Result<(), (&'static str, io::Error)> {
    if held.is_empty() {
        return Ok(());
    }
    held.enter()
        .map_err(|e| ("move into the sandbox's cgroup", e))?;
    unshare(CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWNS)
        .map_err(|e| ("create the sandbox's cgroup namespace", e.into()))?;
    let _ = umount2("/sys/fs/cgroup", MntFlags::MNT_DETACH);
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| ("mount the sandbox's cgroup2", e.into()))?;
    held.enter_leaf()
        .map_err(|e| ("move into the sandbox's init leaf cgroup", e))?;
    Ok(())
}

/// Mount, cgroup, network and pid namespaces for the sandbox, inside the (mapped) user namespace.
fn enter_namespaces(plan: &RunnerPlan) -> Result<(), (&'static str, io::Error)> {
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWPID;
    if !plan.network_host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| ("create mount/cgroup/network/pid namespaces", e.into()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ("make mounts private", e.into()))?;
    // Our own cgroup2 view, rooted at our cgroup: libcontainer then uses its v2 manager on every host. Where we may
    // not create a child cgroup (no delegation), it leaves the server in ours — the pid namespace still holds it.
    // On a pure cgroup v2 host /sys/fs/cgroup is the host's cgroup2 mount, and the kernel refuses (EBUSY) to
    // mount the same file system on the root of a mount of it; that mount, inherited from a more privileged mount
    // namespace, is locked and cannot be detached either (EINVAL). So a small tmpfs goes over it first, as on
    // hybrid hosts, where /sys/fs/cgroup is a tmpfs holding the v1 hierarchies (which stay).
    if nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    {
        mount(
            Some("tmpfs"),
            "/sys/fs/cgroup",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=755"),
        )
        .map_err(|e| ("cover the host's cgroup2 mount", e.into()))?;
    }
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| ("mount cgroup2", e.into()))?;
    if !plan.writable_root {
        seal_rootfs(&plan.rootfs).map_err(|e| ("seal the root read-only", e))?;
    }
    if let Some(overlay) = &plan.overlay {
        mount_overlay(&plan.rootfs, overlay)
            .map_err(|e| ("overlay the root for mount points", e))?;
    }
    if plan.network_host {
        return Ok(());
    }
    loopback_up().map_err(|e| ("bring up lo", e))?;
    mount(
        Some("/proc/self/ns/net"),
        &plan.netns,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| ("bind the network namespace", e.into()))?;
    Ok(())
}

/// Binds `root` onto itself read-only (keeping the flags the user namespace may not drop).
fn seal_rootfs(root: &Path) -> io::Result<()> {
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let st = nix::sys::statvfs::statvfs(root)?;
    let f = st.flags();
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (have, want) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            flags |= want;
        }
    }
    mount(None::<&str>, root, None::<&str>, flags, None::<&str>)?;
    Ok(())
}

/// Mounts the overlay of `plan` over the sealed `lower` root and creates the missing mount points in it.
fn mount_overlay(lower: &Path, plan: &OverlayPlan) -> io::Result<()> {
    mount(
        Some("tmpfs"),
        &plan.scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700,size=1m"),
    )?;
    let (upper, work) = (plan.scratch.join("upper"), plan.scratch.join("work"));
    std::fs::create_dir(&upper)?;
    std::fs::create_dir(&work)?;
    // `userxattr`: overlay's own bookkeeping in user.* attributes, the ones a user namespace may write.
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        overlay_escape(lower)?,
        overlay_escape(&upper)?,
        overlay_escape(&work)?
    );
    mount(
        Some("overlay"),
        &plan.merged,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )?;
    for (point, is_dir) in &plan.points {
        crate::rootfs::ensure_mountpoint(&plan.merged, point, *is_dir)?;
    }
    Ok(())
}

/// A path for overlay's option string, where `,` `:` and `\\` would be separators.
fn overlay_escape(p: &Path) -> io::Result<&str> {
    match p.to_str() {
        Some(s) if !s.contains([',', ':', '\\']) => Ok(s),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} cannot be named in overlay options", p.display()),
        )),
    }
}

/// In the container's init, just before `execve`: the forwarded signals go back to their default action. This
/// process is a copy of the runner init, whose handlers only note a signal (see `init_main`); the kernel resets
/// handlers at `execve` anyway, but doing it here makes the disposition the runner init reads in `/proc` the one the
/// server starts with from the moment the exec pipe closes (the order of those two steps inside `execve` is the
/// kernel's). The runner init sends nothing to this process before that: a stop that comes earlier is held by it.
fn reset_signals_before_exec() {
    for sig in FORWARDED {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(*sig, nix::sys::signal::SigHandler::SigDfl) };
    }
}

/// libcontainer's default executor, plus the secret environment variables: they are set in the container's init
/// process after the spec's environment and before `execve`, so they never pass through `config.json`.
#[derive(Clone)]
struct ServerExecutor {
    secrets: Vec<SecretEnv>,
    /// The seccomp filter, compiled ([`crate::sandbox::filter`]); the spec has none.
    filter: Vec<u8>,
}

impl libcontainer::workload::Executor for ServerExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        reset_signals_before_exec();
        crate::trace::mark("container: execve");
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        // Where libcontainer loads a spec's filter (right before this call): after the whole set-up, with
        // no_new_privs set and no capabilities left. A filter that cannot be loaded fails the start here, before
        // the container is reported ready: the server never runs.
        crate::sandbox::filter::load(&self.filter).map_err(|e| {
            libcontainer::workload::ExecutorValidationError::ArgValidationError(format!(
                "load the seccomp filter: {e}"
            ))
        })?;
        crate::trace::mark("container: seccomp loaded");
        // libcontainer calls this in the container's init after it switched to the server's user and groups and
        // before exec: the last point at which a server about to run as host root can be stopped, whatever the
        // planning said.
        // The spec sets the groups wherever the mode allows it; where it does not (single mode), the invoking
        // user's own groups stay, unmapped.
        let groups_set = spec
            .process()
            .as_ref()
            .is_some_and(|p| p.user().additional_gids().is_some());
        // libcontainer's validation error carries words only.
        crate::rootfs::idmap::check_not_host_root(!groups_set).map_err(|e| {
            libcontainer::workload::ExecutorValidationError::ArgValidationError(e.to_string())
        })?;
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), libcontainer::workload::ExecutorSetEnvsError> {
        // set_var panics on these; the pipeline refuses them before the run, this keeps a panic out of the init.
        let settable =
            |k: &str, v: &str| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0');
        let pairs = envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(self.secrets.iter().map(|s| (s.name.as_str(), s.expose())));
        for (k, v) in pairs.clone() {
            if !settable(k, v) {
                return Err(libcontainer::workload::ExecutorSetEnvsError::Other(
                    format!(
                        "environment variable `{}` cannot be set (empty name, `=` or NUL)",
                        k.escape_debug()
                    ),
                ));
            }
        }
        // The container's init process is single-threaded here (libcontainer calls this before exec).
        for (key, _) in std::env::vars_os() {
            std::env::remove_var(key);
        }
        for (key, value) in pairs {
            std::env::set_var(key, value);
        }
        Ok(())
    }
}

/// Sets `IFF_UP` on `lo` of the current network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into `req`; `req` outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`, which is valid for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The runner init: pid 1 of the sandbox's pid namespace. Creates and starts the container, relays signals to
/// the server and returns its exit code (128+N for a signal).
fn init_main(
    plan: &RunnerPlan,
    init: &RunnerChannel,
    namespaces_us: u64,
    secrets: Vec<SecretEnv>,
) -> i32 {
    let fail = |stage: &str, err: &dyn std::error::Error| {
        let _ = init.failed(failure(stage, err));
        crate::EXIT_SANDBOX_ERROR
    };
    // The keeper dying (even by SIGKILL) ends us, and with us the pid namespace: nothing outlives the keeper.
    if let Err(e) = set_parent_death_signal(Signal::SIGKILL) {
        return fail("parent-death signal", &e);
    }
    // The server inherits our signal mask and dispositions: hand it clean ones. While libcontainer creates the
    // container, signals are not blocked; but we are pid 1 of our pid namespace, and the kernel drops a signal
    // sent from outside to such an init when its disposition is the default: a SIGTERM from the keeper (a client
    // that hung up) would be lost and the server would run until the grace period's SIGKILL. So each forwarded
    // signal has a handler that only notes it (handlers become SIG_DFL again at the server's execve). A stop noted
    // before the start means the server is not started; other signals are passed on once it runs (see `Held`).
    for sig in FORWARDED {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(note_early_signal),
            nix::sys::signal::SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only does an atomic fetch_or, which is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(*sig, &action) };
    }
    let set = handled_signals();
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    // SAFETY: restoring the default disposition of SIGPIPE (the Rust runtime ignores it) installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }

    // Closed by the kernel when the container's init execs the server (or dies): until then a signal is held
    // here, not sent (see `Held`). libcontainer marks inherited descriptors close-on-exec; it does not close them.
    let (exec_seen, exec_pending) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail("exec pipe", &e),
    };
    if let Err(e) = crate::sandbox::filter::check(&plan.seccomp) {
        return fail("the seccomp filter", &e);
    }
    let filter = plan.seccomp.clone();
    let t0 = Instant::now();
    crate::trace::mark("init: build");
    let built = ContainerBuilder::new(plan.id.clone(), SyscallType::default())
        .with_root_path(&plan.state_root)
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.with_executor(ServerExecutor { secrets, filter })
                .as_init(&plan.bundle)
                .with_systemd(false)
                .with_detach(false)
                .build()
        });
    // The container's init holds its copy; ours would keep the pipe open past the exec.
    drop(exec_pending);
    let mut container = match built {
        Ok(c) => c,
        Err(e) => return fail("create the sandbox", &e),
    };
    let create_us = t0.elapsed().as_micros() as u64;
    crate::trace::mark("init: built");
    // From here every error must delete the container, or its init waits forever (libcontainer pitfall 5).
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        let _ = container.delete(true);
        return fail("block signals", &e);
    }
    let sfd = match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            let _ = container.delete(true);
            return fail("signalfd", &e);
        }
    };
    // Signals that came while the container was being created (signals are blocked now: later ones wait in the
    // signalfd).
    let mut held = Held(EARLY_SIGNALS.swap(0, std::sync::atomic::Ordering::SeqCst));
    if let Some(stop) = held.stop() {
        // Told to stop before the server ran: it is not started at all. Its init (still a copy of us, waiting for
        // the start) is killed and reaped first: libcontainer's delete of a container it finds alive freezes the
        // container's cgroup to kill it, and waits up to 10 s for the freeze.
        if let Some(pid) = container.pid() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        let _ = container.delete(true);
        return 128 + stop as i32;
    }
    let t1 = Instant::now();
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return fail("start the server", &e);
    }
    let start_us = t1.elapsed().as_micros() as u64;
    crate::trace::mark("init: started");
    let Some(server) = container.pid() else {
        let _ = container.delete(true);
        return fail(
            "start the server",
            &io::Error::other("libcontainer reported no pid"),
        );
    };
    let _ = init.started(StartTimings {
        namespaces_us,
        create_us,
        start_us,
    });

    // Until the exec pipe closes, the server is not running yet (the container's init is still a copy of us).
    let mut exec_seen = Some(exec_seen);
    // A terminating signal the server left at its default action, which we carried out with SIGKILL.
    let mut emulated: Option<Signal> = None;
    let code = loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &exec_seen {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break crate::EXIT_SANDBOX_ERROR,
        }
        let exec_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if exec_ready {
            // EOF: nothing is ever written. The server runs (or its start failed and the init is gone); what was
            // held is delivered now, with the disposition the server has.
            exec_seen = None;
            crate::trace::mark("init: exec seen");
            for sig in held.take() {
                deliver(server, sig, &mut emulated);
            }
        }
        if !sig_ready {
            continue;
        }
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap_server(server) {
                    // Killed for a signal it would have died of: its code is that signal's.
                    break match emulated {
                        Some(sig) if code == 128 + Signal::SIGKILL as i32 => 128 + sig as i32,
                        _ => code,
                    };
                }
            }
            Ok(sig) if exec_seen.is_some() => {
                held.add(sig);
                if let Some(stop) = held.stop() {
                    // A stop before the server ran: its init (a copy of us, not yet the server) is killed.
                    emulated.get_or_insert(stop);
                    let _ = kill(server, Signal::SIGKILL);
                }
            }
            Ok(sig) => deliver(server, sig, &mut emulated),
            Err(_) => {}
        }
    };
    // The server (pid 1 of the container's pid namespace) is gone, so the kernel has killed everything it left.
    if let Err(e) = container.delete(true) {
        tracing::debug!("deleting container state: {e}");
    }
    code
}

/// Sends `sig` to the server, which is pid 1 of its own pid namespace. The kernel drops a signal sent to such an
/// init when the init leaves it at the default action (pid_namespaces(7)): a server without a SIGTERM handler (a
/// Node.js or Python server, typically) would ignore SIGTERM, SIGINT and SIGHUP and run on until the stop timeout's
/// SIGKILL. For those three, whose default action is to terminate, a server that neither handles, ignores nor
/// blocks the signal gets SIGKILL instead: the end it would have had as an ordinary process, without the wait. A
/// server with a handler gets the signal and its grace period as before. `emulated` notes the signal, so that the
/// exit code is 128 + it, as for an ordinary process.
///
/// The disposition is read before the signal is sent, not after: a server that is just starting goes from the
/// default action to its own handler, and a check after the send could find the handler in place while the signal
/// had already been dropped (a stop lost, the server running on until the stop timeout; seen about one start in
/// fifteen on a loaded machine). Read first, a server caught in that step gets SIGKILL, as an ordinary process
/// would have died of the signal before its handler was there.
fn deliver(server: Pid, sig: Signal, emulated: &mut Option<Signal>) {
    if STOPS.contains(&sig) && dropped_by_the_kernel(server, sig) == Some(true) {
        emulated.get_or_insert(sig);
        let _ = kill(server, Signal::SIGKILL);
        return;
    }
    let _ = kill(server, sig);
}

/// Whether `sig` is at its default action in `server` (not handled, ignored or blocked by its main thread), read
/// from its `/proc/PID/status`. `None` when that cannot be read. Our `/proc` is the host's, whose pid numbers are
/// not our pid namespace's: a pidfd of the server tells its pid there (the server is our unreaped child, so the
/// number cannot be reused meanwhile).
fn dropped_by_the_kernel(server: Pid, sig: Signal) -> Option<bool> {
    let host_pid = host_pid(server)?;
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let bit = 1u64 << (sig as u32 - 1);
    let mut any = 0u64;
    for name in ["SigBlk:", "SigIgn:", "SigCgt:"] {
        any |= u64::from_str_radix(field(&status, name)?, 16).ok()?;
    }
    Some(any & bit == 0)
}

/// The pid of our child `server` (a pid of our pid namespace) in the host's `/proc`, which is the one we see:
/// read from a pidfd's fdinfo (the server is our unreaped child, so the number cannot be reused meanwhile).
fn host_pid(server: Pid) -> Option<i32> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (or -1), which we own at once.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, server.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a descriptor just returned to us and not owned elsewhere.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let fdinfo =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let pid: i32 = field(&fdinfo, "Pid:")?.parse().ok()?;
    (pid > 0).then_some(pid)
}

/// The value of the `name` line of a `/proc` status-like text.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// Forwarded signals that reached the runner init before the server ran (bit N: signal N).
static EARLY_SIGNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn note_early_signal(sig: libc::c_int) {
    if (0..64).contains(&sig) {
        EARLY_SIGNALS.fetch_or(1u64 << sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Forwarded signals received before the server runs, as a set (bit N: signal N). Sending one to the container's
/// init then could lose it: that process is a copy of the runner init until its `execve`, its dispositions change
/// twice on the way (the noting handler, the default action, the server's own handler), and the kernel drops a
/// signal that finds the init of a pid namespace at the default action. So nothing is sent before the exec, and a
/// stop (SIGTERM, SIGINT or SIGHUP) that comes first ends the start: the server never runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held(u64);

impl Held {
    fn add(&mut self, sig: Signal) {
        self.0 |= 1u64 << (sig as i32);
    }

    /// The first held signal that stops the server, in `FORWARDED`'s order.
    fn stop(&self) -> Option<Signal> {
        STOPS
            .into_iter()
            .find(|s| self.0 & (1u64 << (*s as i32)) != 0)
    }

    /// The held forwarded signals, in `FORWARDED`'s order; the set is emptied.
    fn take(&mut self) -> Vec<Signal> {
        let bits = std::mem::take(&mut self.0);
        FORWARDED
            .iter()
            .copied()
            .filter(|s| bits & (1u64 << (*s as i32)) != 0)
            .collect()
    }
}

/// Reaps every exited child (orphans of the sandbox become ours); returns the server's code once it is among them.
fn reap_server(server: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, c)) if pid == server => code = Some(c),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => code = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => continue,
        }
    }
}

fn set_parent_death_signal(sig: Signal) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only this process's attributes.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn failure(stage: &str, err: &dyn std::error::Error) -> RunnerFailure {
    RunnerFailure {
        stage: stage.to_owned(),
        chain: crate::chain::messages(err),
    }
}

/// `CString` of a path, for the few raw calls that need one.
pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{in_userns, is_child, run_child};

    #[test]
    fn held_signals_stop_on_a_terminating_one_and_come_out_in_order() {
        let mut held = Held::default();
        assert_eq!(held.stop(), None);
        held.add(Signal::SIGWINCH);
        held.add(Signal::SIGUSR1);
        assert_eq!(held.stop(), None, "neither ends the server");
        held.add(Signal::SIGHUP);
        held.add(Signal::SIGTERM);
        assert_eq!(held.stop(), Some(Signal::SIGTERM));
        assert_eq!(
            held.take(),
            [
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGUSR1,
                Signal::SIGWINCH
            ]
        );
        assert_eq!(held, Held::default(), "taken: nothing is held twice");
    }

    #[test]
    fn the_sealed_root_cannot_be_written_from_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("bin"), "original").unwrap();
        run_child(
            "sandbox::runner::tests::child_seal",
            &[("THV_TEST_ROOT", root.display().to_string())],
        )
        .unwrap();
        // Outside the namespace nothing changed, and the root is still the user's to manage.
        assert_eq!(
            std::fs::read_to_string(root.join("bin")).unwrap(),
            "original"
        );
        std::fs::write(root.join("after"), "ok").unwrap();
    }

    #[test]
    #[ignore = "run by its parent test in a fresh process"]
    fn child_seal() {
        if !is_child() {
            return;
        }
        let root = PathBuf::from(std::env::var("THV_TEST_ROOT").unwrap());
        in_userns(None, true, || {
            seal_rootfs(&root).expect("seal");
            for f in ["bin", "new"] {
                let e = std::fs::write(root.join(f), "changed")
                    .expect_err("the sealed root was written");
                assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{f}: {e}");
            }
        });
    }

    #[test]
    fn the_overlay_makes_mount_points_without_writing_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        std::fs::create_dir(dir.path().join("merged")).unwrap();
        run_child(
            "sandbox::runner::tests::child_overlay",
            &[("THV_TEST_DIR", dir.path().display().to_string())],
        )
        .unwrap();
        assert!(!root.join("data").exists());
        assert!(!root.join("etc/extra.conf").exists());
    }

    #[test]
    #[ignore = "run by its parent test in a fresh process"]
    fn child_overlay() {
        if !is_child() {
            return;
        }
        let dir = PathBuf::from(std::env::var("THV_TEST_DIR").unwrap());
        let root = dir.join("rootfs");
        let plan = OverlayPlan {
            scratch: dir.join("scratch"),
            merged: dir.join("merged"),
            points: vec![
                ("/data/deep".into(), true),
                ("/etc/extra.conf".into(), false),
            ],
        };
        in_userns(None, true, || {
            seal_rootfs(&root).expect("seal");
            mount_overlay(&root, &plan).expect("overlay");
            assert!(plan.merged.join("data/deep").is_dir());
            assert!(plan.merged.join("etc/extra.conf").is_file());
        });
    }

    #[test]
    fn overlay_options_cannot_be_smuggled_through_paths() {
        assert!(overlay_escape(Path::new("/a/b")).is_ok());
        for bad in ["/a,upperdir=/x", "/a:b", "/a\\b"] {
            assert!(overlay_escape(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_init_refuses_to_exec_as_host_root() {
        let root = nix::unistd::geteuid().is_root();
        // Mapped to a non-root host id: allowed (as any user).
        let outside = if root { "2147000000,2147000000" } else { "" };
        run_child(
            "sandbox::runner::tests::child_host_root_check",
            &[
                ("THV_TEST_OUTSIDE", outside.into()),
                ("THV_TEST_EXPECT", "ok".into()),
            ],
        )
        .unwrap();
        if !root {
            // Only root can map host root into a namespace; CI runs the unit tests as root.
            return;
        }
        for (outside, expect) in [("0,0", "is host uid 0"), ("2147000000,0", "is host gid 0")] {
            run_child(
                "sandbox::runner::tests::child_host_root_check",
                &[
                    ("THV_TEST_OUTSIDE", outside.into()),
                    ("THV_TEST_EXPECT", expect.into()),
                ],
            )
            .unwrap();
        }
    }

    #[test]
    #[ignore = "run by its parent test in a fresh process"]
    fn child_host_root_check() {
        if !is_child() {
            return;
        }
        let outside = std::env::var("THV_TEST_OUTSIDE").unwrap();
        let outside = outside
            .split_once(',')
            .map(|(u, g)| (u.parse().unwrap(), g.parse().unwrap()));
        in_userns(outside, false, || {
            let got = crate::rootfs::idmap::check_not_host_root(false);
            match std::env::var("THV_TEST_EXPECT").unwrap().as_str() {
                "ok" => got.unwrap(),
                want => assert!(got.unwrap_err().to_string().contains(want), "{want}"),
            }
        });
    }

    #[test]
    fn the_executor_sets_exactly_the_environment_and_refuses_what_it_cannot_set() {
        run_child("sandbox::runner::tests::child_executor_env", &[]).unwrap();
    }

    #[test]
    #[ignore = "run by its parent test in a fresh process"]
    fn child_executor_env() {
        use libcontainer::workload::Executor;
        if !is_child() {
            return;
        }
        for (name, value) in [("BAD", "a\0b"), ("", "x"), ("A=B", "x"), ("N\0", "x")] {
            let exec = ServerExecutor {
                secrets: vec![SecretEnv::new(name, value)],
                filter: Vec::new(),
            };
            let err = exec.setup_envs(Default::default()).unwrap_err().to_string();
            assert!(err.contains("cannot be set"), "{name:?}: {err}");
            // Refused before anything of the environment was touched.
            assert!(std::env::var_os(crate::testing::CHILD_VAR).is_some());
        }
        let exec = ServerExecutor {
            secrets: vec![SecretEnv::new("TOKEN", "s3cret")],
            filter: Vec::new(),
        };
        let envs = [("PATH".to_owned(), "/bin".to_owned())]
            .into_iter()
            .collect();
        exec.setup_envs(envs).unwrap();
        let mut got: Vec<(String, String)> = std::env::vars().collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("PATH".to_owned(), "/bin".to_owned()),
                ("TOKEN".to_owned(), "s3cret".to_owned())
            ]
        );
    }
}
