//! The runner keeper forked before the supervisor does anything else, so that a start needs one start of the
//! binary, not two (issue 14: the exec of `thv-sandbox __runner`, the dynamic loader's relocation of the binary
//! and its argument parsing were ~2.6 ms of a warm start).
//!
//! `thv-sandbox run` calls [`start`] first thing, while it is one thread (checked: a fork of a process with other
//! threads could inherit a lock one of them holds). The child — the *prefork* — keeps nothing of the supervisor
//! it does not need: it puts `/dev/null` on 0–2, closes every other descriptor but its end of a socket, blocks the
//! signals the keeper takes through its signalfd (as the supervisor blocks them before it spawns a runner), clears
//! its environment but the variables the spawner passes to a runner, and waits. Where the supervisor would spawn
//! `thv-sandbox __runner RUN_DIR`, it sends the run directory and the four descriptors a runner gets (stdin,
//! stdout, stderr, its end of the runner channel); the prefork puts them in place and becomes the keeper
//! ([`crate::sandbox::runner::keeper_main`]), from then on exactly the runner an exec would have started.
//!
//! A prefork nobody tells (the run fails before its sandbox, or `--port` serves a second session: each prefork
//! serves one run) sees its socket close when the supervisor drops it or exits, and exits.
//!
//! The prefork also creates its user namespace at once and says so (one byte on the socket), so that the
//! supervisor can start writing its id maps as soon as the run's maps are known ([`begin_mapping`]), while it
//! still writes the run's spec: for a user with subordinate ids the maps take a set-uid helper's start (~3 ms),
//! which then overlaps the supervisor's own work instead of following it.

use std::ffi::OsStr;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::{sigprocmask, SigmaskHow};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::rootfs::idmap::{IdMap, MapWrite};
use crate::sandbox::runner::{handled_signals, SYNC_FD};

/// The environment variables a runner keeps (the spawner clears the rest: `supervise`).
pub const KEPT_ENV: [&str; 3] = ["RUST_LOG", "PATH", crate::trace::ENV];

/// A forked keeper waiting for its run.
#[derive(Debug)]
pub struct Prefork {
    pid: Pid,
    socket: OwnedFd,
    /// Whether it made its user namespace (read from the socket once: `None` until then).
    userns: Option<bool>,
    /// Its id maps, when [`begin_mapping`] started writing them.
    mapping: Option<MapWrite>,
}

/// This process's prefork, if [`start`] made one and no run has taken it.
static PREFORK: Mutex<Option<Prefork>> = Mutex::new(None);

/// Forks the prefork, if this process is still one thread. Returns whether it did; without one, runs spawn their
/// runner by exec as before.
pub fn start() -> bool {
    if threads() != Some(1) {
        return false;
    }
    let Ok((ours, theirs)) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) else {
        return false;
    };
    // SAFETY: the process is one thread (checked above), so the child may run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            child_main(theirs)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            *PREFORK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Prefork {
                pid: child,
                socket: ours,
                userns: None,
                mapping: None,
            });
            true
        }
        Err(_) => false,
    }
}

/// Takes this process's prefork for a run (a later run spawns its runner by exec).
pub(crate) fn take() -> Option<Prefork> {
    PREFORK.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The pid of this process's prefork, if one is still waiting for its run.
pub(crate) fn pid() -> Option<i32> {
    PREFORK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|p| p.pid.as_raw())
}

/// Starts writing `map` as the id maps of this process's prefork, if one is waiting and made its user namespace.
/// The run that takes the prefork next finishes the write ([`Prefork::take_mapping`]). A prefork whose maps were
/// begun for other maps (a run that began them failed before it took the prefork) cannot serve: it is dismissed,
/// and the next run starts its runner by exec.
pub(crate) fn begin_mapping(map: &IdMap) {
    let mut slot = PREFORK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = slot.as_mut() else { return };
    let pid = p.pid.as_raw() as u32;
    match &p.mapping {
        Some(w) if w.is_for(map, pid) => {}
        Some(_) => {
            if let Some(p) = slot.take() {
                p.dismiss();
            }
        }
        None => {
            if p.userns_made() {
                crate::trace::mark("id maps begun");
                p.mapping = Some(map.begin(pid));
            }
        }
    }
}

/// Ends this process's prefork, if one is still waiting: its socket is closed, it exits and is reaped.
pub fn dismiss() {
    if let Some(p) = take() {
        p.dismiss();
    }
}

impl Prefork {
    /// The id maps [`begin_mapping`] started writing for it, if any: the caller finishes them.
    pub(crate) fn take_mapping(&mut self) -> Option<MapWrite> {
        self.mapping.take()
    }

    /// Whether it made its user namespace: the byte it sends first (`u`: made; anything else, or nothing: not).
    fn userns_made(&mut self) -> bool {
        if let Some(made) = self.userns {
            return made;
        }
        let mut b = [0u8; 1];
        let made = loop {
            match nix::sys::socket::recv(self.socket.as_raw_fd(), &mut b, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(1) => break b[0] == b'u',
                _ => break false,
            }
        };
        self.userns = Some(made);
        made
    }

    /// Makes the prefork the runner keeper of `run_dir`, with these descriptors as its stdin, stdout, stderr and
    /// runner channel (`SYNC_FD`). Returns its pid. On an error (the prefork is gone) nothing was started.
    pub(crate) fn launch(self, run_dir: &Path, fds: [BorrowedFd<'_>; 4]) -> io::Result<Pid> {
        let raw = fds.map(|f| f.as_raw_fd());
        let rights = [ControlMessage::ScmRights(&raw)];
        let sent = loop {
            match sendmsg::<()>(
                self.socket.as_raw_fd(),
                &[IoSlice::new(run_dir.as_os_str().as_bytes())],
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r,
            }
        };
        match sent {
            Ok(_) => Ok(self.pid),
            Err(e) => {
                self.dismiss();
                Err(e.into())
            }
        }
    }

    fn dismiss(self) {
        drop(self.socket);
        let _ = waitpid(self.pid, None);
    }
}

/// The number of threads of this process (`/proc/self/status`).
fn threads() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The prefork: made clean, it waits for its run and becomes the keeper; told nothing, it exits.
fn child_main(socket: OwnedFd) -> ! {
    let mut userns = false;
    let ready = prepare(&socket).and_then(|()| {
        // As the keeper would, first thing (it skips it then): the supervisor may map it from now on. Without
        // (user namespaces refused here) the keeper tries again and reports why.
        userns = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
        let said = [if userns { b'u' } else { b'-' }];
        loop {
            match nix::sys::socket::send(socket.as_raw_fd(), &said, MsgFlags::MSG_NOSIGNAL) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map(|_| ()).map_err(io::Error::from),
            }
        }
    });
    // While it waits: std's CPU feature detection, which libcontainer's container init would otherwise run on the
    // start's path (its first string search). It executes `cpuid`, a VM exit under virtualisation (12.6 µs each on
    // the benchmark host); the runner init and libcontainer's processes, all forked from here, inherit the result.
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("sse4.2");
    let code = match ready.and_then(|()| wait_for_run(&socket)) {
        Ok(Some(run_dir)) => {
            drop(socket);
            crate::sandbox::runner::keeper_main(&run_dir, userns)
        }
        Ok(None) | Err(_) => 0,
    };
    std::process::exit(code)
}

/// What the spawner's exec would have given the runner: signals blocked, no descriptor but 0–2 and our socket,
/// the kept environment only; also the parent-death signal.
fn prepare(socket: &OwnedFd) -> io::Result<()> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)?;
    // SAFETY: prctl with PR_SET_PDEATHSIG reads no memory of ours.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..=2 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    drop(null);
    let s = socket.as_raw_fd() as libc::c_uint;
    for (first, last) in [(3, s.saturating_sub(1)), (s + 1, libc::c_uint::MAX)] {
        if first <= last {
            // SAFETY: close_range only closes descriptors; the one we own (the socket) is outside the range.
            if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    scrub_environment();
    Ok(())
}

/// Clears the environment but [`KEPT_ENV`], as the spawner's `env_clear` does for an exec'd runner; and zeroes
/// the block the kernel gave the supervisor its environment in, which `remove_var` leaves as it was (it is what
/// `/proc/PID/environ` shows, and it would be copied on into the runner init and the container's init).
fn scrub_environment() {
    let kept: Vec<_> = KEPT_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)))
        .collect();
    let all: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    // One thread (a fork of a one-thread process), so changing the environment is sound.
    for k in all {
        std::env::remove_var(k);
    }
    for (k, v) in kept {
        // Copied to the heap: nothing points into the original block any more.
        std::env::set_var(k, v);
    }
    if let Some((start, end)) = environment_block() {
        // SAFETY: [start, end) is this process's original environment block (the kernel's `env_start`/`env_end`),
        // writable stack memory that nothing refers to any more (see above).
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
}

/// `env_start` and `env_end` of this process (`/proc/self/stat`, fields 50 and 51).
fn environment_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces and parentheses), fields 3, 4, … follow.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start: usize = fields.get(50 - 3)?.parse().ok()?;
    let end: usize = fields.get(51 - 3)?.parse().ok()?;
    (start > 0 && end > start && end - start < 1 << 24).then_some((start, end))
}

/// Waits for the run: its directory, and the descriptors put in place as 0, 1, 2 and `SYNC_FD`. `None`: the
/// supervisor closed the socket without a run (or sent something else).
fn wait_for_run(socket: &OwnedFd) -> io::Result<Option<PathBuf>> {
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        // SAFETY: the kernel just installed these descriptors in our table; nothing else owns
                        // them.
                        fds.extend(got.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
                break (m.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 || fds.len() != 4 {
        return Ok(None);
    }
    let run_dir = PathBuf::from(OsStr::from_bytes(&buf[..n]));
    // Moved above the targets first (one of them may have been given SYNC_FD's number), then put in place: the
    // copies dup2 makes are not close-on-exec; the moved originals are closed when `high` is dropped.
    let mut high = Vec::with_capacity(4);
    for fd in &fds {
        let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: fcntl just made this descriptor for us.
        high.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    drop(fds);
    for (target, fd) in [0, 1, 2, SYNC_FD].into_iter().zip(&high) {
        nix::unistd::dup2(fd.as_raw_fd(), target)?;
    }
    drop(high);
    // Told apart from the supervisor it is a copy of: its name (`ps`, `top`) and its working directory, the run's
    // (an exec'd runner shows the run directory in its command line).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which this is.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"thv-sbx-keeper".as_ptr(), 0, 0, 0) };
    std::env::set_current_dir(&run_dir)?;
    Ok(Some(run_dir))
}
