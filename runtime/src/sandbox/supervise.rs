//! The supervisor: the `thv-sandbox run` process the MCP client talks to.
//!
//! It starts the runner (see `runner`), writes its user namespace's id maps, and then only watches: signals to
//! forward, the client hanging up, the runner's messages and its exit. It never calls libcontainer, so it stays
//! dumpable and keeps no privileges. Stdin and stdout that are pipes or sockets are handed to the server as they
//! are (no copy, no added latency); anything else — a TTY, `/dev/null`, a file — gets a pipe interposed, because
//! libcontainer reopens `/dev/null` read-only and a server must not hold our terminal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{fstat, SFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::rootfs::idmap::IdMap;
use crate::sandbox::runner::{handled_signals, RunnerPlan, SYNC_FD};
use crate::sandbox::secret::SecretEnv;
use crate::sandbox::sync::{
    ChannelError, RunnerChannel, RunnerEvent, RunnerFailure, SocketFactory, StartTimings,
    SupervisorChannel,
};

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    /// The server ran; its exit code (128+N if a signal ended it).
    Exited(i32),
    /// The server ran and was stopped because we were asked to stop (SIGTERM, SIGINT or SIGHUP); its exit code.
    Stopped(i32),
    /// The sandbox could not be created or started.
    Failed(RunnerFailure),
    /// The server ran and the kernel killed it (or a process of it) for memory at the sandbox's limit; its exit
    /// code.
    OutOfMemory(i32),
}

/// What the server's stdin and stdout are, and who talks to it.
pub enum ServerStdio<'a> {
    /// A stdio server speaking to the MCP client: it gets our stdin and stdout (passed through, or through a
    /// pipe we copy: see the module documentation), and the client hanging up stops it.
    Inherit,
    /// A stdio server serving one session on `--port`/`--socket`: its stdin and stdout are these pipes, whose
    /// other ends the HTTP server holds. Our stdin and stdout are not watched; `end` is: when the HTTP server
    /// closes its end, the session is over and the server is stopped (it gets the grace period to exit on the
    /// end of its stdin, which the HTTP server closed too).
    Port {
        /// The read end of the server's stdin pipe.
        stdin: OwnedFd,
        /// The write end of the server's stdout pipe.
        stdout: OwnedFd,
        /// The read end of the session's end pipe.
        end: OwnedFd,
    },
    /// A server speaking HTTP inside the sandbox (bridged to our stdio, or exposed on `--port`): it gets
    /// `/dev/null` as stdin and our stderr as stdout (whatever it prints there is a log, never protocol for the
    /// client). Our stdin and stdout are not watched. The runner makes a socket factory
    /// (`RunnerPlan::socket_factory`), handed to `on_factory`.
    Http {
        /// Called with the socket factory into the sandbox's network namespace.
        on_factory: &'a mut dyn FnMut(SocketFactory),
    },
}

impl std::fmt::Debug for ServerStdio<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerStdio::Inherit => "Inherit",
            ServerStdio::Port { .. } => "Port",
            ServerStdio::Http { .. } => "Http",
        })
    }
}

/// Everything the supervisor needs.
pub struct SupervisorArgs<'a> {
    /// The `thv-sandbox` executable to run as the runner.
    pub exe: PathBuf,
    /// The run directory (holds plan.json).
    pub run_dir: &'a Path,
    /// The runner's plan.
    pub plan: &'a RunnerPlan,
    /// The id maps to write for the runner's user namespace.
    pub idmap: &'a IdMap,
    /// Secret environment variables, handed to the runner in memory (never written to the run directory).
    pub secrets: &'a [SecretEnv],
    /// Grace period between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// Called once the server runs.
    pub on_started: &'a mut dyn FnMut(&StartTimings),
    /// Called with the egress proxy's listening socket (inside the sandbox's network namespace) when the runner
    /// made one (`RunnerPlan::egress_port`); serving it is the caller's.
    pub on_egress: &'a mut dyn FnMut(std::net::TcpListener),
    /// Called with the sandbox's name server socket when the runner made one (`RunnerPlan::dns_stub`); answering
    /// it is the caller's.
    pub on_dns: &'a mut dyn FnMut(std::net::UdpSocket),
    /// Called with the sandbox's default route, a TUN device, when the runner made one (with the name server
    /// socket, where the host has `/dev/net/tun`); answering it is the caller's (`crate::sandbox::unreachable`).
    pub on_unreachable: &'a mut dyn FnMut(std::fs::File),
    /// The server's stdin and stdout.
    pub server_stdio: ServerStdio<'a>,
}

impl std::fmt::Debug for SupervisorArgs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorArgs")
            .field("run_dir", &self.run_dir)
            .field("plan", &self.plan)
            .field("server_stdio", &self.server_stdio)
            .finish_non_exhaustive()
    }
}

/// What the event loop calls out to.
struct Hooks<'a> {
    plan: &'a RunnerPlan,
    idmap: &'a IdMap,
    /// The prefork's maps, begun while the run was prepared (`prefork::begin_mapping`).
    early_maps: Option<crate::rootfs::idmap::MapWrite>,
    secrets: &'a [SecretEnv],
    on_started: &'a mut dyn FnMut(&StartTimings),
    on_egress: &'a mut dyn FnMut(std::net::TcpListener),
    on_dns: &'a mut dyn FnMut(std::net::UdpSocket),
    on_unreachable: &'a mut dyn FnMut(std::fs::File),
    on_factory: Option<&'a mut dyn FnMut(SocketFactory)>,
}

/// Runs the sandbox to its end.
pub fn supervise(args: SupervisorArgs<'_>) -> io::Result<RunEnd> {
    let SupervisorArgs {
        exe,
        run_dir,
        plan,
        idmap,
        secrets,
        stop_timeout,
        on_started,
        on_egress,
        on_dns,
        on_unreachable,
        server_stdio,
    } = args;
    let (supervisor, runner) = crate::sandbox::sync::pair()?;
    let stderr = Stdio0::for_fd(2, false)?;
    let (stdin, stdout) = match server_stdio {
        ServerStdio::Inherit => (
            Some(Stdio0::for_fd(0, true)?),
            Some(Stdio0::for_fd(1, false)?),
        ),
        ServerStdio::Port { .. } | ServerStdio::Http { .. } => (None, None),
    };

    // Signals are read from a signalfd; the runner unblocks them for the server.
    let set = handled_signals();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;

    // What the runner gets as its stdin, stdout and stderr.
    let mut session_end = None;
    let (child_in, child_out, on_factory) = match server_stdio {
        ServerStdio::Inherit => match (&stdin, &stdout) {
            (Some(i), Some(o)) => (i.child_fd()?, o.child_fd()?, None),
            _ => return Err(io::Error::other("stdio already handed over")),
        },
        ServerStdio::Port {
            stdin: i,
            stdout: o,
            end,
        } => {
            session_end = Some(end);
            (i, o, None)
        }
        ServerStdio::Http { on_factory } => (
            OwnedFd::from(std::fs::File::open("/dev/null")?),
            stderr.child_fd()?,
            Some(on_factory),
        ),
    };
    let child_err = stderr.child_fd()?;
    crate::trace::mark("runner spawn");
    let mut early_maps = None;
    let launched = match crate::sandbox::prefork::take() {
        // The keeper forked when this process started (see `prefork`): told its run, it is the runner. Its id
        // maps may already be being written (`prefork::begin_mapping`); if it cannot be launched, they are dropped
        // (the helpers are waited for) and an exec'd runner is mapped as usual.
        Some(mut prefork) => {
            let maps = prefork.take_mapping();
            let launched = prefork
                .launch(
                    run_dir,
                    [
                        child_in.as_fd(),
                        child_out.as_fd(),
                        child_err.as_fd(),
                        runner.fd().as_fd(),
                    ],
                )
                .ok();
            if launched.is_some() {
                early_maps = maps;
            }
            launched
        }
        None => None,
    };
    let pid = match launched {
        Some(pid) => pid,
        None => match spawn_runner(&exe, run_dir, &runner, [child_in, child_out, child_err]) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                return Err(e);
            }
        },
    };
    drop(runner);
    crate::trace::mark("runner spawned");
    let mut watch = Watch::new(stdin, stdout, stderr, stop_timeout);
    watch.session_end = session_end;
    let mut hooks = Hooks {
        plan,
        idmap,
        early_maps,
        secrets,
        on_started,
        on_egress,
        on_dns,
        on_unreachable,
        on_factory,
    };
    let result = watch.run(&supervisor, &sfd, pid, &mut hooks);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    // The keeper normally removes the sandbox's cgroup and the run directory; if it was killed, we do.
    if let Some(crate::sandbox::cgroup::CgroupPlan::Dirs(dirs)) =
        plan.cgroup.as_ref().map(|c| &c.plan)
    {
        crate::sandbox::cgroup::remove(dirs, &plan.cgroups_path);
    }
    let _ = std::fs::remove_dir_all(run_dir);
    result
}

/// Starts `exe __runner RUN_DIR` with these descriptors as its stdin, stdout and stderr and `runner` as its
/// `SYNC_FD`, its environment cleared but [`crate::sandbox::prefork::KEPT_ENV`].
fn spawn_runner(
    exe: &Path,
    run_dir: &Path,
    runner: &RunnerChannel,
    [stdin, stdout, stderr]: [OwnedFd; 3],
) -> io::Result<Pid> {
    let mut cmd = Command::new(exe);
    cmd.arg("__runner").arg(run_dir);
    cmd.env_clear();
    for keep in crate::sandbox::prefork::KEPT_ENV {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let chan_fd = runner.fd().as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe calls
    // (dup2, fcntl, prctl) on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            if chan_fd == SYNC_FD {
                let flags = libc::fcntl(SYNC_FD, libc::F_GETFD);
                if flags < 0 || libc::fcntl(SYNC_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(chan_fd, SYNC_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The runner learns of our death even if we are SIGKILLed.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// One of our standard descriptors, as the server will get it.
#[derive(Debug)]
enum Stdio0 {
    /// A pipe or socket: passed through.
    Direct(RawFd),
    /// Anything else: a pipe; we copy between `ours` (our end of the pipe) and `fd`.
    Pumped {
        fd: RawFd,
        ours: OwnedFd,
        theirs: Option<OwnedFd>,
        input: bool,
    },
}

impl Stdio0 {
    fn for_fd(fd: RawFd, input: bool) -> io::Result<Stdio0> {
        // SAFETY: 0, 1 and 2 are open for the life of the process (Rust reopens closed ones on /dev/null).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let kind = fstat(borrowed.as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)?;
        if kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK {
            return Ok(Stdio0::Direct(fd));
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (ours, theirs) = if input { (w, r) } else { (r, w) };
        fcntl(ours.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(Stdio0::Pumped {
            fd,
            ours,
            theirs: Some(theirs),
            input,
        })
    }

    fn child_fd(&self) -> io::Result<OwnedFd> {
        match self {
            Stdio0::Direct(fd) => {
                // SAFETY: see for_fd; the duplicate is a new descriptor owned by the caller.
                unsafe { BorrowedFd::borrow_raw(*fd) }.try_clone_to_owned()
            }
            Stdio0::Pumped { theirs, .. } => theirs
                .as_ref()
                .ok_or_else(|| io::Error::other("stdio already handed over"))?
                .try_clone(),
        }
    }
}

/// A copy between one of our descriptors and the server's pipe.
#[derive(Debug)]
struct Pump {
    src: RawFd,
    dst: RawFd,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Owned pipe end (closed when the pump finishes, which gives the server EOF on stdin).
    pipe: Option<OwnedFd>,
    input: bool,
    /// Writing to the destination failed for good.
    broken: bool,
    /// The destination is our stderr and a terminal: the server's control characters are shown, not obeyed.
    escape: Option<Escaper>,
}

/// Makes a byte stream safe to show on a terminal: C0 controls (but `\n` and `\t`), DEL and the C1 controls
/// (U+0080–U+009F, as UTF-8) become visible caret notation (`ESC` → `^[`, CSI → `^[[`), so a server cannot set the
/// window title, clear the screen, move the cursor over thv-sandbox's own lines or write the clipboard (OSC 52).
/// Everything else, UTF-8 text included, passes unchanged.
#[derive(Debug, Default)]
pub struct Escaper {
    /// The previous chunk ended with 0xC2, which starts a C1 control when the next byte is 0x80–0x9F.
    pending_c2: bool,
}

impl Escaper {
    /// Appends `input`, escaped, to `out` (at most twice as long as `input`, plus one byte held back).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if std::mem::take(&mut self.pending_c2) {
                if (0x80..=0x9f).contains(&b) {
                    out.extend_from_slice(&[b'^', b'[', b - 0x40]);
                    continue;
                }
                out.push(0xc2);
            }
            match b {
                b'\n' | b'\t' => out.push(b),
                0x00..=0x1f => out.extend_from_slice(&[b'^', b + 0x40]),
                0x7f => out.extend_from_slice(b"^?"),
                0xc2 => self.pending_c2 = true,
                _ => out.push(b),
            }
        }
    }

    /// What is held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_c2) {
            out.push(0xc2);
        }
    }
}

impl Pump {
    fn from(s: &mut Stdio0) -> Option<Pump> {
        match s {
            Stdio0::Direct(_) => None,
            Stdio0::Pumped {
                fd,
                ours,
                theirs,
                input,
            } => {
                *theirs = None;
                let pipe = ours.try_clone().ok()?;
                let (src, dst) = if *input {
                    (*fd, pipe.as_raw_fd())
                } else {
                    (pipe.as_raw_fd(), *fd)
                };
                let tty = *fd == 2 && nix::unistd::isatty(2).unwrap_or(false);
                Some(Pump {
                    src,
                    dst,
                    buf: vec![0; 64 * 1024],
                    start: 0,
                    end: 0,
                    eof: false,
                    pipe: Some(pipe),
                    input: *input,
                    broken: false,
                    escape: tty.then(Escaper::default),
                })
            }
        }
    }

    fn done(&self) -> bool {
        self.pipe.is_none()
    }

    /// Moves what it can without blocking on the pipe side.
    fn step(&mut self) {
        if self.done() {
            return;
        }
        if self.start == self.end && !self.eof {
            // Escaped output may be twice the input (plus a held-back byte): read at most a third of the buffer.
            let room = if self.escape.is_some() {
                self.buf.len() / 3
            } else {
                self.buf.len()
            };
            // SAFETY: buf is a valid writable buffer of at least `room` bytes.
            let n = unsafe { libc::read(self.src, self.buf.as_mut_ptr().cast(), room) };
            match n {
                0 => {
                    self.eof = true;
                    if let Some(esc) = &mut self.escape {
                        let mut out = Vec::new();
                        esc.finish(&mut out);
                        self.buf[..out.len()].copy_from_slice(&out);
                        self.start = 0;
                        self.end = out.len();
                    }
                }
                n if n > 0 => {
                    self.start = 0;
                    self.end = n as usize;
                    if let Some(esc) = &mut self.escape {
                        let mut out = Vec::with_capacity(2 * self.end + 1);
                        esc.push(&self.buf[..self.end], &mut out);
                        self.end = out.len();
                        self.buf[..self.end].copy_from_slice(&out);
                    }
                }
                _ => {
                    let e = Errno::last();
                    if e != Errno::EAGAIN && e != Errno::EINTR {
                        self.eof = true;
                    }
                }
            }
        }
        while self.start < self.end {
            // SAFETY: the range start..end lies within buf.
            let n = unsafe {
                libc::write(
                    self.dst,
                    self.buf[self.start..].as_ptr().cast(),
                    self.end - self.start,
                )
            };
            if n > 0 {
                self.start += n as usize;
            } else {
                let e = Errno::last();
                if e == Errno::EAGAIN || e == Errno::EINTR {
                    return;
                }
                // The other side is gone: stop pumping.
                self.start = self.end;
                self.eof = true;
                self.broken = true;
            }
        }
        if self.eof && self.start == self.end {
            self.pipe = None;
        }
    }

    fn poll_fd(&self) -> Option<(RawFd, PollFlags)> {
        if self.done() {
            return None;
        }
        if self.start < self.end {
            Some((self.dst, PollFlags::POLLOUT))
        } else {
            Some((self.src, PollFlags::POLLIN))
        }
    }
}

/// The supervisor's event loop state.
struct Watch {
    pumps: Vec<Pump>,
    /// Our stdin when it is passed through: watched for hang-up only.
    direct_in: Option<RawFd>,
    /// Our stdout when passed through: watched for the reader going away.
    direct_out: Option<RawFd>,
    /// stdin and stdout are one socket (a client that hands the server a socketpair end): its hang-up is the
    /// client closing the connection, which the server sees as end of file on stdin too.
    one_socket: bool,
    grace: Duration,
    /// When to escalate next, and to what.
    next: Option<(Instant, Escalation)>,
    failure: Option<RunnerFailure>,
    /// `--port`: the read end of the session's end pipe, until the HTTP server closes the other end.
    session_end: Option<OwnedFd>,
    /// We were asked to stop (SIGTERM, SIGINT or SIGHUP).
    stop_requested: bool,
    /// A signal or kill order went to the runner. Before its user namespace is mapped the keeper takes any such
    /// order as the end (it exits with 128 + the signal, `runner::run`), so it is not mapped, nor moved into a
    /// systemd scope, after that: systemd cannot move a keeper that has exited, and waiting for it to (the
    /// scope's 30 s) turned a client's hang-up at start into exit 125 on every systemd host (the test VM).
    runner_told: bool,
    /// Processes of the sandbox the kernel killed for memory (reported by the keeper at the end).
    oom_kills: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Escalation {
    Term,
    Kill,
    KillRunner,
}

impl Watch {
    fn new(
        mut stdin: Option<Stdio0>,
        mut stdout: Option<Stdio0>,
        mut stderr: Stdio0,
        grace: Duration,
    ) -> Watch {
        let direct_in = matches!(stdin, Some(Stdio0::Direct(_))).then_some(0);
        let direct_out = matches!(stdout, Some(Stdio0::Direct(_))).then_some(1);
        let one_socket = direct_in.is_some() && direct_out.is_some() && same_socket(0, 1);
        let pumps = [stdin.as_mut(), stdout.as_mut(), Some(&mut stderr)]
            .into_iter()
            .flatten()
            .filter_map(Pump::from)
            .collect();
        Watch {
            pumps,
            direct_in,
            direct_out,
            one_socket,
            grace,
            next: None,
            failure: None,
            session_end: None,
            stop_requested: false,
            runner_told: false,
            oom_kills: 0,
        }
    }

    /// The client is gone or asked us to stop: SIGTERM now (or after the grace period, when the server should
    /// exit by itself on EOF), then SIGKILL.
    fn begin_stop(&mut self, supervisor: &SupervisorChannel, after_grace: bool) {
        if self.next.is_some() {
            return;
        }
        if after_grace {
            self.next = Some((Instant::now() + self.grace, Escalation::Term));
        } else {
            self.runner_told = true;
            let _ = supervisor.signal(Signal::SIGTERM);
            self.next = Some((Instant::now() + self.grace, Escalation::Kill));
        }
    }

    fn run(
        &mut self,
        supervisor: &SupervisorChannel,
        sfd: &SignalFd,
        runner: Pid,
        hooks: &mut Hooks<'_>,
    ) -> io::Result<RunEnd> {
        let mut chan_open = true;
        loop {
            let timeout = match self.next {
                Some((at, _)) => PollTimeout::try_from(
                    at.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
                )
                .unwrap_or(PollTimeout::MAX),
                // The channel closed: the runner is exiting. Its SIGCHLD may go to another thread of ours (one
                // that does not block it, so our signalfd never sees it), so its exit is polled for.
                None if !chan_open => PollTimeout::from(20u8),
                None => PollTimeout::NONE,
            };
            // Poll set: signalfd, channel, pumps, and the pass-through descriptors for hang-up.
            let mut set = PollSet::default();
            set.add(sfd.as_fd().as_raw_fd(), PollFlags::POLLIN, Tag::Signals);
            if chan_open {
                set.add(
                    supervisor.as_fd().as_raw_fd(),
                    PollFlags::POLLIN,
                    Tag::Runner,
                );
            }
            for (i, p) in self.pumps.iter().enumerate() {
                if let Some((fd, ev)) = p.poll_fd() {
                    set.add(fd, ev, Tag::Pump(i));
                }
            }
            if let Some(fd) = self.direct_in {
                set.add(
                    fd,
                    PollFlags::from_bits_retain(libc::POLLRDHUP),
                    Tag::ClientStdin,
                );
            }
            if let Some(fd) = self.direct_out {
                set.add(fd, PollFlags::empty(), Tag::ClientStdout);
            }
            if let Some(fd) = &self.session_end {
                set.add(fd.as_raw_fd(), PollFlags::POLLIN, Tag::SessionEnd);
            }
            for (tag, _) in set.wait(timeout)? {
                match tag {
                    Tag::Signals => {
                        while let Ok(Some(info)) = sfd.read_signal() {
                            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                                continue;
                            };
                            if sig == Signal::SIGCHLD {
                                continue;
                            }
                            self.runner_told = true;
                            let _ = supervisor.signal(sig);
                            if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) {
                                self.stop_requested = true;
                                if self.next.is_none() {
                                    self.next =
                                        Some((Instant::now() + self.grace, Escalation::Kill));
                                }
                            }
                        }
                    }
                    Tag::Runner => match supervisor.next_event() {
                        Ok(event) => self.on_event(event, supervisor, runner, hooks),
                        Err(ChannelError::Closed | ChannelError::Io(_)) => chan_open = false,
                        Err(e) => {
                            // A runner out of protocol is a broken sandbox: say so, and stop it.
                            self.failure.get_or_insert(RunnerFailure {
                                stage: "runner protocol".into(),
                                chain: crate::chain::messages(&e),
                            });
                            self.begin_stop(supervisor, false);
                        }
                    },
                    Tag::ClientStdin => {
                        // The client closed its end of our stdin: a well-behaved server exits on EOF by itself.
                        self.direct_in = None;
                        self.begin_stop(supervisor, true);
                    }
                    Tag::SessionEnd => {
                        // The HTTP server ended the session (and closed the server's stdin): end of file. A byte
                        // instead is the guard's relay saying the client is gone without closing its input: the
                        // server is stopped at once, as when our stdout hangs up.
                        let mut byte = [0u8; 1];
                        let said = self.session_end.as_ref().is_some_and(|fd| {
                            matches!(nix::unistd::read(fd.as_raw_fd(), &mut byte), Ok(1))
                        });
                        self.session_end = None;
                        self.begin_stop(supervisor, !said);
                    }
                    Tag::ClientStdout => {
                        // Nobody reads our stdout any more: the client is gone. On one socket that is also end
                        // of file for the server, which gets the grace period to exit by itself, as for stdin.
                        self.direct_out = None;
                        self.begin_stop(supervisor, self.one_socket);
                    }
                    Tag::Pump(i) => {
                        self.pumps[i].step();
                        if self.pumps[i].done() && self.pumps[i].input {
                            self.begin_stop(supervisor, true);
                        } else if self.pumps[i].broken && self.pumps[i].dst == 1 {
                            // Writing to our stdout failed (terminal hung up, disk full): the client is gone.
                            self.begin_stop(supervisor, false);
                        }
                    }
                }
            }
            if let Some((at, what)) = self.next {
                if Instant::now() >= at {
                    match what {
                        Escalation::Term => {
                            self.runner_told = true;
                            let _ = supervisor.signal(Signal::SIGTERM);
                            self.next = Some((Instant::now() + self.grace, Escalation::Kill));
                        }
                        Escalation::Kill => {
                            self.runner_told = true;
                            let _ = supervisor.kill();
                            self.next = Some((
                                Instant::now() + Duration::from_secs(2),
                                Escalation::KillRunner,
                            ));
                        }
                        Escalation::KillRunner => {
                            // The runner does not answer: its death takes the whole sandbox with it.
                            let _ = kill(runner, Signal::SIGKILL);
                            self.next = None;
                        }
                    }
                }
            }
            match waitpid(runner, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => continue,
                Ok(status) => {
                    // Drain what the server wrote before it exited.
                    for p in &mut self.pumps {
                        if !p.input {
                            let _ = fcntl(p.src, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                            while !p.done() {
                                p.step();
                                if !p.done() && p.start == p.end && !p.eof {
                                    break;
                                }
                            }
                        }
                    }
                    // What the runner said last: a failure, or the start (the server ran and exited quickly).
                    while let Ok(Some(event)) = supervisor.try_next_event() {
                        match event {
                            RunnerEvent::Failed(f) => {
                                self.failure.get_or_insert(f);
                            }
                            RunnerEvent::Started(t) => (hooks.on_started)(&t),
                            RunnerEvent::OutOfMemory(n) => self.oom_kills += n,
                            _ => {}
                        }
                    }
                    if let Some(f) = self.failure.take() {
                        return Ok(RunEnd::Failed(f));
                    }
                    let oom = self.oom_kills > 0;
                    let code = match status {
                        WaitStatus::Exited(_, c) => c,
                        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                        _ => crate::EXIT_SANDBOX_ERROR,
                    };
                    return Ok(if oom && code != 0 {
                        RunEnd::OutOfMemory(code)
                    } else if self.stop_requested {
                        RunEnd::Stopped(code)
                    } else {
                        RunEnd::Exited(code)
                    });
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One report of the runner, in the protocol's order (checked by the channel).
    fn on_event(
        &mut self,
        event: RunnerEvent,
        supervisor: &SupervisorChannel,
        runner: Pid,
        hooks: &mut Hooks<'_>,
    ) {
        match event {
            RunnerEvent::UsernsReady => {
                if self.runner_told {
                    // Stopped before it was mapped: the keeper reads the order we sent and exits by itself.
                    return;
                }
                // The systemd route: the keeper goes into a transient scope of the user's manager, where the
                // sandbox's cgroup is made beside it, before it may go on.
                let scoped = match hooks.plan.cgroup.as_ref() {
                    Some(c) if c.plan == crate::sandbox::cgroup::CgroupPlan::BesideKeeper => {
                        crate::sandbox::cgroup::scope_for(
                            &hooks.plan.id,
                            runner.as_raw(),
                            &c.limits,
                        )
                        .map(|_| ())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = scoped {
                    self.failure = Some(RunnerFailure {
                        stage: "create the sandbox's cgroup".into(),
                        chain: vec![e.clone(), crate::sandbox::cgroup::DOCTOR_HINT.into()],
                    });
                    if let Err(e) = supervisor.map_failed(e) {
                        tracing::debug!("answering the runner: {e}");
                    }
                    return;
                }
                let pid = runner.as_raw() as u32;
                let written = match hooks.early_maps.take() {
                    Some(w) if w.is_for(hooks.idmap, pid) => w.finish(),
                    Some(w) => w
                        .finish()
                        .and(Err(crate::rootfs::idmap::IdMapError::Mismatch)),
                    None => hooks.idmap.write(pid),
                };
                let answered = match written {
                    Ok(()) => {
                        crate::trace::mark("id maps written");
                        supervisor.mapped(hooks.secrets.to_vec())
                    }
                    Err(e) => {
                        self.failure = Some(RunnerFailure {
                            stage: "write user namespace id maps".into(),
                            chain: crate::chain::messages(&e),
                        });
                        supervisor.map_failed(e.to_string())
                    }
                };
                if let Err(e) = answered {
                    tracing::debug!("answering the runner: {e}");
                }
            }
            RunnerEvent::EgressListener(listener) => (hooks.on_egress)(listener),
            RunnerEvent::DnsSocket(socket) => (hooks.on_dns)(socket),
            RunnerEvent::UnreachableDevice(device) => (hooks.on_unreachable)(device),
            RunnerEvent::SocketFactory(factory) => match &mut hooks.on_factory {
                Some(on_factory) => on_factory(factory),
                // Made only for an HTTP server (`RunnerPlan::socket_factory`); nobody to give it to.
                None => drop(factory),
            },
            RunnerEvent::Started(t) => (hooks.on_started)(&t),
            RunnerEvent::Failed(f) => {
                self.failure.get_or_insert(f);
            }
            RunnerEvent::OutOfMemory(n) => self.oom_kills += n,
        }
    }
}

/// What a descriptor in the supervisor's poll set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// The signalfd.
    Signals,
    /// The runner channel.
    Runner,
    /// Our stdin, passed through: watched for the client hanging up.
    ClientStdin,
    /// Our stdout, passed through: watched for the reader going away.
    ClientStdout,
    /// `--port`: the session's end pipe (closed by the HTTP server when the session ends).
    SessionEnd,
    /// The pump at this index of `Watch::pumps`.
    Pump(usize),
}

/// The descriptors of one `poll`, each with its tag.
#[derive(Debug, Default)]
struct PollSet {
    entries: Vec<(RawFd, PollFlags, Tag)>,
}

impl PollSet {
    fn add(&mut self, fd: RawFd, events: PollFlags, tag: Tag) {
        self.entries.push((fd, events, tag));
    }

    /// Waits up to `timeout`; the tags of the descriptors with events, in the order they were added (none when a
    /// signal interrupted the wait).
    fn wait(&self, timeout: PollTimeout) -> io::Result<Vec<(Tag, PollFlags)>> {
        // SAFETY: every descriptor in the set stays open while it is polled (owned by the caller or by its pumps,
        // which outlive this call).
        let mut fds: Vec<PollFd> = self
            .entries
            .iter()
            .map(|(fd, ev, _)| PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, *ev))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(self
            .entries
            .iter()
            .zip(&fds)
            .map(|((_, _, tag), f)| (*tag, f.revents().unwrap_or(PollFlags::empty())))
            .filter(|(_, rev)| !rev.is_empty())
            .collect())
    }
}

/// Whether two descriptors are the same socket (same device and inode).
fn same_socket(a: RawFd, b: RawFd) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => {
            x.st_mode & libc::S_IFMT == libc::S_IFSOCK
                && x.st_dev == y.st_dev
                && x.st_ino == y.st_ino
        }
        _ => false,
    }
}

/// Sends SIGKILL to a pid, ignoring a process that is already gone.
pub fn kill_quietly(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::{Escaper, PollSet, Tag};
    use nix::poll::{PollFlags, PollTimeout};
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn each_ready_descriptor_comes_back_with_its_tag() {
        // Four pipes: the ones written to (and only they) come back, under the tag they were added with.
        let pipes: Vec<_> = (0..4).map(|_| std::io::pipe().unwrap()).collect();
        let tags = [Tag::Signals, Tag::Runner, Tag::Pump(0), Tag::Pump(7)];
        let mut set = PollSet::default();
        for ((r, _), tag) in pipes.iter().zip(tags) {
            set.add(r.as_raw_fd(), PollFlags::POLLIN, tag);
        }
        assert!(set.wait(PollTimeout::ZERO).unwrap().is_empty());
        for i in [1, 3] {
            (&pipes[i].1).write_all(b"x").unwrap();
        }
        let ready = set.wait(PollTimeout::ZERO).unwrap();
        assert_eq!(
            ready,
            vec![
                (Tag::Runner, PollFlags::POLLIN),
                (Tag::Pump(7), PollFlags::POLLIN)
            ]
        );
        // A pump index is not squeezed into a byte: the 300th pump is still the 300th.
        let (r, w) = std::io::pipe().unwrap();
        let mut set = PollSet::default();
        set.add(r.as_raw_fd(), PollFlags::POLLIN, Tag::Pump(300));
        (&w).write_all(b"x").unwrap();
        assert_eq!(set.wait(PollTimeout::ZERO).unwrap()[0].0, Tag::Pump(300));
    }

    fn escaped(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = Escaper::default();
        let mut out = Vec::new();
        for c in chunks {
            e.push(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn terminal_controls_from_the_server_are_shown_not_obeyed() {
        // Window title (OSC 0), clear screen, clipboard write (OSC 52), a carriage return over our own line.
        let attack = b"\x1b]0;PWNED\x07\x1b[2J\x1b]52;c;cHduZWQ=\x07x\rthv-sandbox: fine\n";
        let out = escaped(&[attack]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "^[]0;PWNED^G^[[2J^[]52;c;cHduZWQ=^Gx^Mthv-sandbox: fine\n"
        );
        assert_eq!(escaped(&[b"tab\tnew\nline\x7f\x00"]), b"tab\tnew\nline^?^@");
    }

    #[test]
    fn c1_controls_are_escaped_even_split_across_reads_and_utf8_text_passes() {
        // U+009B (CSI) is C2 9B in UTF-8; U+00E9 (é) is C3 A9; U+00A0 is C2 A0 (not a control).
        assert_eq!(escaped(&[b"a\xc2\x9b2Jb"]), b"a^[[2Jb");
        assert_eq!(escaped(&[b"a\xc2", b"\x9d0;t"]), b"a^[]0;t");
        assert_eq!(escaped(&["é\u{a0}ü→".as_bytes()]), "é\u{a0}ü→".as_bytes());
        assert_eq!(escaped(&[b"end\xc2"]), b"end\xc2");
        assert_eq!(escaped(&[b"\xc2", b"\xa0"]), "\u{a0}".as_bytes());
    }
}
