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
use crate::sandbox::runner::{RunnerPlan, FORWARDED, SYNC_FD};
use crate::sandbox::secret::SecretEnv;
use crate::sandbox::sync::{Channel, Message, RunnerFailure, StartTimings};

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server ran; its exit code (128+N if a signal ended it).
    Exited(i32),
    /// The sandbox could not be created or started.
    Failed(RunnerFailure),
}

/// Everything the supervisor needs.
pub struct Launch<'a> {
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
    /// Called with the socket factory into the sandbox's network namespace when the runner made one
    /// (`RunnerPlan::socket_factory`).
    pub on_factory: &'a mut dyn FnMut(crate::sandbox::sync::SocketFactory),
    /// Our stdin and stdout belong to a bridge (an HTTP-transport server): the server gets `/dev/null` as stdin
    /// and our stderr as its stdout, and the supervisor does not watch them.
    pub bridged: bool,
    /// With `bridged`: the server's stdin and stdout are these (pipes a `--port` server holds the other ends of),
    /// instead of `/dev/null` and our stderr.
    pub server_stdio: Option<(OwnedFd, OwnedFd)>,
}

impl std::fmt::Debug for Launch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("run_dir", &self.run_dir)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// Runs the sandbox to its end.
pub fn supervise(mut launch: Launch<'_>) -> io::Result<Outcome> {
    let (ours, theirs) = Channel::pair()?;
    let stderr = Stdio0::for_fd(2, false)?;
    let (stdin, stdout) = if launch.bridged {
        (None, None)
    } else {
        (
            Some(Stdio0::for_fd(0, true)?),
            Some(Stdio0::for_fd(1, false)?),
        )
    };

    // Signals are read from a signalfd; the runner unblocks them for the server.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;

    let mut cmd = Command::new(&launch.exe);
    cmd.arg("__runner").arg(launch.run_dir);
    cmd.env_clear();
    for keep in ["RUST_LOG", "PATH"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    match (&stdin, &stdout) {
        (Some(i), Some(o)) => {
            cmd.stdin(i.child_stdio()?).stdout(o.child_stdio()?);
        }
        // Whatever a bridged server prints on its stdout is a log for our stderr, never protocol for the client.
        _ => match launch.server_stdio.take() {
            Some((i, o)) => {
                cmd.stdin(Stdio::from(i)).stdout(Stdio::from(o));
            }
            None => {
                cmd.stdin(Stdio::null()).stdout(stderr.child_stdio()?);
            }
        },
    }
    cmd.stderr(stderr.child_stdio()?);
    let chan_fd = theirs.fd().as_raw_fd();
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
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            return Err(e);
        }
    };
    drop(theirs);
    let pid = Pid::from_raw(child.id() as i32);
    let mut watch = Watch::new(stdin, stdout, stderr, launch.stop_timeout);
    let result = watch.run(&ours, &sfd, pid, &mut launch);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    // The keeper normally removes the run directory; if it was killed, we do.
    let _ = std::fs::remove_dir_all(launch.run_dir);
    result
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

    fn child_stdio(&self) -> io::Result<Stdio> {
        match self {
            Stdio0::Direct(fd) => {
                // SAFETY: see for_fd; the duplicate is a new descriptor owned by the returned Stdio.
                let dup = unsafe { BorrowedFd::borrow_raw(*fd) }.try_clone_to_owned()?;
                Ok(Stdio::from(dup))
            }
            Stdio0::Pumped { theirs, .. } => Ok(Stdio::from(
                theirs
                    .as_ref()
                    .ok_or_else(|| io::Error::other("stdio already handed over"))?
                    .try_clone()?,
            )),
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
        }
    }

    /// The client is gone or asked us to stop: SIGTERM now (or after the grace period, when the server should
    /// exit by itself on EOF), then SIGKILL.
    fn begin_stop(&mut self, chan: &Channel, after_grace: bool) {
        if self.next.is_some() {
            return;
        }
        if after_grace {
            self.next = Some((Instant::now() + self.grace, Escalation::Term));
        } else {
            let _ = chan.send(&Message::Signal(Signal::SIGTERM as i32));
            self.next = Some((Instant::now() + self.grace, Escalation::Kill));
        }
    }

    fn run(
        &mut self,
        chan: &Channel,
        sfd: &SignalFd,
        runner: Pid,
        launch: &mut Launch<'_>,
    ) -> io::Result<Outcome> {
        let (idmap, secrets) = (launch.idmap, launch.secrets);
        let mut chan_open = true;
        loop {
            let timeout = match self.next {
                Some((at, _)) => PollTimeout::try_from(
                    at.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
                )
                .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            // Poll set: signalfd, channel, pumps, and the pass-through descriptors for hang-up.
            let mut raw: Vec<(RawFd, PollFlags, u8)> =
                vec![(sfd.as_fd().as_raw_fd(), PollFlags::POLLIN, 0)];
            if chan_open {
                raw.push((chan.as_fd().as_raw_fd(), PollFlags::POLLIN, 1));
            }
            for (i, p) in self.pumps.iter().enumerate() {
                if let Some((fd, ev)) = p.poll_fd() {
                    raw.push((fd, ev, 10 + i as u8));
                }
            }
            if let Some(fd) = self.direct_in {
                raw.push((fd, PollFlags::from_bits_retain(libc::POLLRDHUP), 2));
            }
            if let Some(fd) = self.direct_out {
                raw.push((fd, PollFlags::empty(), 3));
            }
            // SAFETY: every descriptor in `raw` stays open for this iteration (owned by us or by the pumps).
            let mut fds: Vec<PollFd> = raw
                .iter()
                .map(|(fd, ev, _)| PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, *ev))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<(u8, PollFlags)> = raw
                .iter()
                .zip(&fds)
                .map(|((_, _, tag), f)| (*tag, f.revents().unwrap_or(PollFlags::empty())))
                .collect();
            drop(fds);
            for (tag, rev) in ready {
                if rev.is_empty() {
                    continue;
                }
                match tag {
                    0 => {
                        while let Ok(Some(info)) = sfd.read_signal() {
                            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                                continue;
                            };
                            if sig == Signal::SIGCHLD {
                                continue;
                            }
                            let _ = chan.send(&Message::Signal(sig as i32));
                            if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)
                                && self.next.is_none()
                            {
                                self.next = Some((Instant::now() + self.grace, Escalation::Kill));
                            }
                        }
                    }
                    1 => match chan.recv_with_fd() {
                        Ok(Some((Message::EgressListener { .. }, Some(fd)))) => {
                            (launch.on_egress)(std::net::TcpListener::from(fd));
                        }
                        Ok(Some((Message::SocketFactory, Some(fd)))) => {
                            (launch.on_factory)(crate::sandbox::sync::SocketFactory::from_fd(fd));
                        }
                        Ok(Some((Message::UsernsReady, _))) => {
                            let reply = match idmap.write(runner.as_raw() as u32) {
                                Ok(()) => Message::Mapped(secrets.to_vec()),
                                Err(e) => {
                                    self.failure = Some(RunnerFailure {
                                        stage: "write user namespace id maps".into(),
                                        chain: crate::chain::messages(&e),
                                    });
                                    Message::MapFailed(e.to_string())
                                }
                            };
                            let _ = chan.send(&reply);
                        }
                        Ok(Some((Message::Started(t), _))) => (launch.on_started)(&t),
                        Ok(Some((Message::Failed(f), _))) => {
                            self.failure.get_or_insert(f);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => chan_open = false,
                    },
                    2 => {
                        // The client closed its end of our stdin: a well-behaved server exits on EOF by itself.
                        self.direct_in = None;
                        self.begin_stop(chan, true);
                    }
                    3 => {
                        // Nobody reads our stdout any more: the client is gone. On one socket that is also end
                        // of file for the server, which gets the grace period to exit by itself, as for stdin.
                        self.direct_out = None;
                        self.begin_stop(chan, self.one_socket);
                    }
                    t => {
                        let i = (t - 10) as usize;
                        self.pumps[i].step();
                        if self.pumps[i].done() && self.pumps[i].input {
                            self.begin_stop(chan, true);
                        } else if self.pumps[i].broken && self.pumps[i].dst == 1 {
                            // Writing to our stdout failed (terminal hung up, disk full): the client is gone.
                            self.begin_stop(chan, false);
                        }
                    }
                }
            }
            if let Some((at, what)) = self.next {
                if Instant::now() >= at {
                    match what {
                        Escalation::Term => {
                            let _ = chan.send(&Message::Signal(Signal::SIGTERM as i32));
                            self.next = Some((Instant::now() + self.grace, Escalation::Kill));
                        }
                        Escalation::Kill => {
                            let _ = chan.send(&Message::Kill);
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
                    while let Ok(Some(msg)) = recv_nonblocking(chan) {
                        match msg {
                            Message::Failed(f) => {
                                self.failure.get_or_insert(f);
                            }
                            Message::Started(t) => (launch.on_started)(&t),
                            _ => {}
                        }
                    }
                    if let Some(f) = self.failure.take() {
                        return Ok(Outcome::Failed(f));
                    }
                    return Ok(Outcome::Exited(match status {
                        WaitStatus::Exited(_, c) => c,
                        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                        _ => crate::EXIT_SANDBOX_ERROR,
                    }));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn recv_nonblocking(chan: &Channel) -> io::Result<Option<Message>> {
    let mut fds = [PollFd::new(chan.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO)? == 0 {
        return Ok(None);
    }
    chan.recv()
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
    use super::Escaper;

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
