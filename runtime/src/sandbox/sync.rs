//! The channel between the supervisor (`thv-sandbox run`) and the runner processes.
//!
//! A `SOCK_SEQPACKET` socketpair keeps message boundaries, so several processes (the runner keeper and the
//! runner init it forks) can write whole JSON messages to the same socket without interleaving.
//!
//! Each direction has its own message type ([`ToRunner`], [`ToSupervisor`]) and each side its own end
//! ([`SupervisorChannel`], [`RunnerChannel`]) whose methods are the protocol's steps. In order:
//!
//! ```text
//! keeper      userns_ready()                      ──▶  supervisor  next_event() = UsernsReady
//! keeper      wait_for_mapping() = Mapped(secrets) ◀── supervisor  mapped(secrets)   (or map_failed(reason))
//! keeper      egress_listener(port, listener)      ──▶  supervisor  next_event() = EgressListener   (if planned)
//! keeper      socket_factory(end)                  ──▶  supervisor  next_event() = SocketFactory    (if planned)
//! keeper      dns_socket(socket)                   ──▶  supervisor  next_event() = DnsSocket        (if planned)
//! init        started(timings)                     ──▶  supervisor  next_event() = Started
//! keeper      next_order() = Signal(sig) | Kill    ◀── supervisor  signal(sig) | kill()             (any time)
//! keeper/init failed(failure)                      ──▶  supervisor  next_event() = Failed           (any time)
//! ```
//! Before the id maps are answered the keeper also takes `signal`/`kill` (the run was stopped before anything
//! ran). A message out of this order is [`ChannelError::UnexpectedMessage`], naming what was expected and what
//! came.

use std::cell::Cell;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sandbox::secret::SecretEnv;

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Supervisor → runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToRunner {
    /// The id maps are written; here are the secret environment variables (never on disk).
    Mapped(Vec<SecretEnv>),
    /// The id maps could not be written (the runner exits).
    MapFailed(String),
    /// Deliver this signal to the server.
    Signal(i32),
    /// End the sandbox now (SIGKILL every process in it).
    Kill,
    /// On a socket factory: make one TCP socket of the sandbox's network namespace.
    MakeSocket,
}

impl ToRunner {
    /// The message's name, for errors (never its content: `Mapped` carries secrets).
    pub fn name(&self) -> &'static str {
        match self {
            ToRunner::Mapped(_) => "mapped",
            ToRunner::MapFailed(_) => "map_failed",
            ToRunner::Signal(_) => "signal",
            ToRunner::Kill => "kill",
            ToRunner::MakeSocket => "make_socket",
        }
    }
}

/// Runner (keeper or init) → supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToSupervisor {
    /// The keeper has created its user namespace; write its id maps now.
    UsernsReady,
    /// With the descriptor attached: the egress proxy's listening socket, bound to `127.0.0.1:port` inside the
    /// sandbox's network namespace. The supervisor serves it from the host side.
    EgressListener {
        /// The port it listens on.
        port: u16,
    },
    /// With a descriptor attached: the supervisor's end of a socket factory (see [`SocketFactory`]).
    SocketFactory,
    /// With the descriptor attached: a UDP socket bound to `127.0.0.1:53` inside the sandbox's network namespace,
    /// which the supervisor answers from the host side (every name refused, and reported).
    DnsSocket,
    /// The server process runs; phase durations in microseconds.
    Started(StartTimings),
    /// Creating the sandbox failed, before the server ran (or, on a socket factory, making a socket failed).
    Failed(RunnerFailure),
    /// On a socket factory, with the descriptor attached: the socket asked for.
    Socket,
    /// The sandbox is gone, and the kernel killed this many of its processes for memory (its cgroup's
    /// `oom_kill` count). Sent by the keeper at the end, only when not zero.
    OutOfMemory(u64),
}

impl ToSupervisor {
    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            ToSupervisor::UsernsReady => "userns_ready",
            ToSupervisor::EgressListener { .. } => "egress_listener",
            ToSupervisor::SocketFactory => "socket_factory",
            ToSupervisor::DnsSocket => "dns_socket",
            ToSupervisor::Started(_) => "started",
            ToSupervisor::Failed(_) => "failed",
            ToSupervisor::Socket => "socket",
            ToSupervisor::OutOfMemory(_) => "out_of_memory",
        }
    }
}

/// Per-phase timings of a start, reported by the runner (microseconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StartTimings {
    /// Namespaces of the runner itself (user, mount, cgroup, net, pid) and `lo` up.
    pub namespaces_us: u64,
    /// libcontainer `build()`: the container's namespaces, mounts, seccomp, up to the point before exec.
    pub create_us: u64,
    /// libcontainer `start()`: the server's exec.
    pub start_us: u64,
}

/// Why the runner could not create or start the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerFailure {
    /// Which step failed (e.g. "user namespace", "create container").
    pub stage: String,
    /// The error and its causes, outermost first.
    pub chain: Vec<String>,
}

/// What can go wrong on the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other side has closed its end (it exited).
    #[error("the other end of the runner channel is closed")]
    Closed,
    /// A message came out of the protocol's order.
    #[error("runner protocol: expected {expected}, received {received}")]
    UnexpectedMessage {
        /// What the protocol allows at this point.
        expected: &'static str,
        /// The message that came.
        received: &'static str,
    },
    /// A message that carries a descriptor came without one.
    #[error("runner protocol: `{message}` came without its descriptor")]
    MissingDescriptor {
        /// The message.
        message: &'static str,
    },
    /// The supervisor asked to deliver a signal number that is not a signal.
    #[error("runner protocol: {0} is not a signal number")]
    UnknownSignal(i32),
    /// The bytes are not a message of the protocol.
    #[error("runner protocol: a message could not be decoded")]
    Decode(#[source] serde_json::Error),
    /// Sending or receiving failed.
    #[error("the runner channel failed")]
    Io(#[from] io::Error),
}

impl From<ChannelError> for io::Error {
    fn from(e: ChannelError) -> io::Error {
        match e {
            ChannelError::Io(e) => e,
            ChannelError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, e),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A connected pair: the supervisor's end and the runner's. Both are close-on-exec; the spawner clears that flag
/// on the end it hands over.
pub fn pair() -> io::Result<(SupervisorChannel, RunnerChannel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((
        SupervisorChannel {
            wire: Wire { fd: a },
            phase: Cell::new(Phase::Userns),
        },
        RunnerChannel {
            wire: Wire { fd: b },
        },
    ))
}

/// Where the supervisor is in the protocol, for checking the order of what the runner sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the keeper's user namespace.
    Userns,
    /// The keeper waits for our answer: it sends nothing until then.
    Mapping,
    /// The id maps are written: the keeper hands over its sockets, the init reports the start.
    Setup,
    /// The server runs (or the id maps failed): only a failure can still come.
    Running,
}

impl Phase {
    fn expected(self) -> &'static str {
        match self {
            Phase::Userns => "userns_ready or failed",
            Phase::Mapping => "nothing before the id maps are answered",
            Phase::Setup => "egress_listener, socket_factory, dns_socket, started or failed",
            Phase::Running => "nothing once the server runs",
        }
    }
}

/// What the runner reported, with the descriptors that came along.
#[derive(Debug)]
pub enum RunnerEvent {
    /// The keeper's user namespace exists: answer with [`SupervisorChannel::mapped`] or
    /// [`SupervisorChannel::map_failed`].
    UsernsReady,
    /// The egress proxy's listening socket (inside the sandbox's network namespace).
    EgressListener(std::net::TcpListener),
    /// The socket factory into the sandbox's network namespace.
    SocketFactory(SocketFactory),
    /// The sandbox's name server socket (UDP, `127.0.0.1:53` inside its network namespace).
    DnsSocket(std::net::UdpSocket),
    /// The server runs.
    Started(StartTimings),
    /// Creating the sandbox failed.
    Failed(RunnerFailure),
    /// The kernel killed this many processes of the sandbox for memory.
    OutOfMemory(u64),
}

/// The supervisor's end: sends [`ToRunner`], receives [`ToSupervisor`] in the protocol's order.
#[derive(Debug)]
pub struct SupervisorChannel {
    wire: Wire,
    phase: Cell<Phase>,
}

impl SupervisorChannel {
    /// The id maps are written: the keeper goes on, with the secret environment.
    pub fn mapped(&self, secrets: Vec<SecretEnv>) -> Result<(), ChannelError> {
        self.phase.set(Phase::Setup);
        self.wire.send(&ToRunner::Mapped(secrets), None)
    }

    /// The id maps could not be written: the keeper exits.
    pub fn map_failed(&self, reason: String) -> Result<(), ChannelError> {
        self.phase.set(Phase::Running);
        self.wire.send(&ToRunner::MapFailed(reason), None)
    }

    /// Deliver `sig` to the server.
    pub fn signal(&self, sig: Signal) -> Result<(), ChannelError> {
        self.wire.send(&ToRunner::Signal(sig as i32), None)
    }

    /// End the sandbox now.
    pub fn kill(&self) -> Result<(), ChannelError> {
        self.wire.send(&ToRunner::Kill, None)
    }

    /// The runner's next report (blocks until one comes; poll [`SupervisorChannel::as_fd`] first).
    pub fn next_event(&self) -> Result<RunnerEvent, ChannelError> {
        let (msg, fd) = self.wire.recv::<ToSupervisor>()?;
        let phase = self.phase.get();
        let unexpected = |msg: &ToSupervisor| ChannelError::UnexpectedMessage {
            expected: phase.expected(),
            received: msg.name(),
        };
        let with_fd = |msg: &ToSupervisor, fd: Option<OwnedFd>| {
            fd.ok_or(ChannelError::MissingDescriptor {
                message: msg.name(),
            })
        };
        match (phase, msg) {
            (_, ToSupervisor::Failed(f)) => Ok(RunnerEvent::Failed(f)),
            (_, ToSupervisor::OutOfMemory(n)) => Ok(RunnerEvent::OutOfMemory(n)),
            (Phase::Userns, ToSupervisor::UsernsReady) => {
                self.phase.set(Phase::Mapping);
                Ok(RunnerEvent::UsernsReady)
            }
            (Phase::Setup, m @ ToSupervisor::EgressListener { .. }) => Ok(
                RunnerEvent::EgressListener(std::net::TcpListener::from(with_fd(&m, fd)?)),
            ),
            (Phase::Setup, m @ ToSupervisor::SocketFactory) => Ok(RunnerEvent::SocketFactory(
                SocketFactory::from_fd(with_fd(&m, fd)?),
            )),
            (Phase::Setup, m @ ToSupervisor::DnsSocket) => Ok(RunnerEvent::DnsSocket(
                std::net::UdpSocket::from(with_fd(&m, fd)?),
            )),
            (Phase::Setup, ToSupervisor::Started(t)) => {
                self.phase.set(Phase::Running);
                Ok(RunnerEvent::Started(t))
            }
            (_, m) => Err(unexpected(&m)),
        }
    }

    /// The runner's next report if one is waiting (`Ok(None)` if not, or if the runner's end is closed).
    pub fn try_next_event(&self) -> Result<Option<RunnerEvent>, ChannelError> {
        let mut fds = [nix::poll::PollFd::new(
            self.wire.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).map_err(io::Error::from)? == 0 {
            return Ok(None);
        }
        match self.next_event() {
            Ok(e) => Ok(Some(e)),
            Err(ChannelError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for SupervisorChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wire.fd.as_fd()
    }
}

/// How the supervisor answered the keeper's user namespace.
#[derive(Debug, PartialEq)]
pub enum Mapping {
    /// The id maps are written; the secret environment for the server.
    Mapped(Vec<SecretEnv>),
    /// The id maps could not be written (the supervisor reports why).
    Refused,
    /// The run was stopped before anything ran: by this signal (`SIGKILL` for a kill).
    Stopped(i32),
}

/// What the supervisor asks of the keeper once the sandbox is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Deliver this signal to the server.
    Signal(Signal),
    /// End the sandbox now.
    Kill,
}

/// The runner's end (the keeper's, inherited by the runner init): sends [`ToSupervisor`], receives [`ToRunner`].
#[derive(Debug)]
pub struct RunnerChannel {
    wire: Wire,
}

impl RunnerChannel {
    /// Wraps the inherited descriptor.
    pub fn from_fd(fd: OwnedFd) -> RunnerChannel {
        RunnerChannel { wire: Wire { fd } }
    }

    /// The user namespace exists: the supervisor may write its id maps.
    pub fn userns_ready(&self) -> Result<(), ChannelError> {
        self.wire.send(&ToSupervisor::UsernsReady, None)
    }

    /// Waits for the supervisor's answer to [`RunnerChannel::userns_ready`].
    pub fn wait_for_mapping(&self) -> Result<Mapping, ChannelError> {
        match self.wire.recv::<ToRunner>()?.0 {
            ToRunner::Mapped(secrets) => Ok(Mapping::Mapped(secrets)),
            ToRunner::MapFailed(_) => Ok(Mapping::Refused),
            ToRunner::Signal(n) => Ok(Mapping::Stopped(n)),
            ToRunner::Kill => Ok(Mapping::Stopped(libc::SIGKILL)),
            m @ ToRunner::MakeSocket => Err(ChannelError::UnexpectedMessage {
                expected: "mapped, map_failed, signal or kill",
                received: m.name(),
            }),
        }
    }

    /// Hands over the egress proxy's listening socket, bound to `127.0.0.1:port` in the sandbox's namespace.
    pub fn egress_listener(
        &self,
        port: u16,
        listener: &std::net::TcpListener,
    ) -> Result<(), ChannelError> {
        self.wire.send(
            &ToSupervisor::EgressListener { port },
            Some(listener.as_fd()),
        )
    }

    /// Hands over the sandbox's name server socket (UDP, bound to `127.0.0.1:53` in the sandbox's namespace).
    pub fn dns_socket(&self, socket: &std::net::UdpSocket) -> Result<(), ChannelError> {
        self.wire
            .send(&ToSupervisor::DnsSocket, Some(socket.as_fd()))
    }

    /// Hands over the supervisor's end of a socket factory (this process serves the other end with
    /// [`SocketFactory::serve_one`]).
    pub fn socket_factory(&self, theirs: SupervisorChannel) -> Result<(), ChannelError> {
        self.wire
            .send(&ToSupervisor::SocketFactory, Some(theirs.as_fd()))
    }

    /// The server runs.
    pub fn started(&self, timings: StartTimings) -> Result<(), ChannelError> {
        self.wire.send(&ToSupervisor::Started(timings), None)
    }

    /// The sandbox is gone and the kernel killed `kills` of its processes for memory.
    pub fn out_of_memory(&self, kills: u64) -> Result<(), ChannelError> {
        self.wire.send(&ToSupervisor::OutOfMemory(kills), None)
    }

    /// Creating the sandbox failed.
    pub fn failed(&self, failure: RunnerFailure) -> Result<(), ChannelError> {
        self.wire.send(&ToSupervisor::Failed(failure), None)
    }

    /// The descriptor, for handing over to the runner.
    pub fn fd(&self) -> &OwnedFd {
        &self.wire.fd
    }

    /// The supervisor's next order (blocks until one comes; poll [`RunnerChannel::as_fd`] first).
    pub fn next_order(&self) -> Result<Order, ChannelError> {
        match self.wire.recv::<ToRunner>()?.0 {
            ToRunner::Signal(n) => Signal::try_from(n)
                .map(Order::Signal)
                .map_err(|_| ChannelError::UnknownSignal(n)),
            ToRunner::Kill => Ok(Order::Kill),
            m => Err(ChannelError::UnexpectedMessage {
                expected: "signal or kill",
                received: m.name(),
            }),
        }
    }
}

impl AsFd for RunnerChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wire.fd.as_fd()
    }
}

/// TCP sockets made inside the sandbox's network namespace, for the host side: the runner keeper (which lives in
/// that namespace) answers each request on this SOCK_SEQPACKET socket with a fresh, unconnected TCP socket. A
/// socket belongs to the namespace it was created in, so connecting it from the supervisor reaches the server's
/// port inside the sandbox, while the supervisor stays in the host's namespace. No process of the sandbox holds
/// the factory.
#[derive(Debug)]
pub struct SocketFactory {
    wire: std::sync::Mutex<Wire>,
}

impl SocketFactory {
    fn from_fd(fd: OwnedFd) -> SocketFactory {
        SocketFactory {
            wire: std::sync::Mutex::new(Wire { fd }),
        }
    }

    /// A fresh TCP socket (IPv4) of the sandbox's network namespace.
    pub fn socket(&self) -> io::Result<OwnedFd> {
        let wire = self.wire.lock().unwrap_or_else(|e| e.into_inner());
        wire.send(&ToRunner::MakeSocket, None)?;
        match wire.recv::<ToSupervisor>() {
            Ok((ToSupervisor::Socket, Some(fd))) => Ok(fd),
            Ok((ToSupervisor::Failed(f), _)) => Err(io::Error::other(f.chain.join(": "))),
            Ok((m @ ToSupervisor::Socket, None)) => {
                Err(ChannelError::MissingDescriptor { message: m.name() }.into())
            }
            Ok((m, _)) => Err(ChannelError::UnexpectedMessage {
                expected: "socket or failed",
                received: m.name(),
            }
            .into()),
            Err(ChannelError::Closed) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the sandbox's socket factory is gone",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// A connection to `127.0.0.1:port` inside the sandbox.
    pub fn connect(&self, port: u16) -> io::Result<std::net::TcpStream> {
        let fd = self.socket()?;
        let addr = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, port);
        loop {
            match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(std::net::TcpStream::from(fd))
    }

    /// Serves one request on the runner's end: answers with a new socket of the current network namespace.
    /// `Ok(false)` when the other end is gone.
    pub fn serve_one(end: &RunnerChannel) -> Result<bool, ChannelError> {
        match end.wire.recv::<ToRunner>() {
            Err(ChannelError::Closed) => return Ok(false),
            Err(e) => return Err(e),
            Ok((ToRunner::MakeSocket, _)) => {}
            Ok((m, _)) => {
                return Err(ChannelError::UnexpectedMessage {
                    expected: "make_socket",
                    received: m.name(),
                })
            }
        }
        let made = nix::sys::socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        );
        match made {
            Ok(sock) => end.wire.send(&ToSupervisor::Socket, Some(sock.as_fd()))?,
            Err(e) => end.wire.send(
                &ToSupervisor::Failed(RunnerFailure {
                    stage: "make a socket in the sandbox".into(),
                    chain: vec![e.to_string()],
                }),
                None,
            )?,
        }
        Ok(true)
    }
}

/// One end of the socket: whole JSON messages, each with at most one descriptor (SCM_RIGHTS).
#[derive(Debug)]
struct Wire {
    fd: OwnedFd,
}

impl Wire {
    fn send(&self, msg: &impl Serialize, fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let fds = fd.map(|f| [f.as_raw_fd()]);
        let rights = fds.as_ref().map(|f| ControlMessage::ScmRights(f));
        let cmsgs = rights.as_slice();
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
    }

    /// One message and the descriptor sent with it, if any (close-on-exec); [`ChannelError::Closed`] when the
    /// other side has closed. Extra descriptors are closed.
    fn recv<T: DeserializeOwned>(&self) -> Result<(T, Option<OwnedFd>), ChannelError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fd = None;
                    for c in m.cmsgs().map_err(io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: the kernel just installed this descriptor in our table for us; nothing
                                // else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                if fd.is_none() {
                                    fd = Some(owned);
                                }
                            }
                        }
                    }
                    break (m.bytes, fd);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        };
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        serde_json::from_slice(&buf[..n])
            .map(|m| (m, fd))
            .map_err(ChannelError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_runs_in_order_and_keeps_message_boundaries() {
        let (supervisor, keeper) = pair().unwrap();
        keeper.userns_ready().unwrap();
        assert!(matches!(
            supervisor.next_event().unwrap(),
            RunnerEvent::UsernsReady
        ));
        supervisor
            .mapped(vec![SecretEnv::new("TOKEN", "s3cret")])
            .unwrap();
        supervisor.signal(Signal::SIGTERM).unwrap();
        supervisor.kill().unwrap();
        assert_eq!(
            keeper.wait_for_mapping().unwrap(),
            Mapping::Mapped(vec![SecretEnv::new("TOKEN", "s3cret")])
        );
        assert_eq!(keeper.next_order().unwrap(), Order::Signal(Signal::SIGTERM));
        assert_eq!(keeper.next_order().unwrap(), Order::Kill);
        keeper.started(StartTimings::default()).unwrap();
        assert!(matches!(
            supervisor.next_event().unwrap(),
            RunnerEvent::Started(_)
        ));
        drop(keeper);
        assert!(matches!(supervisor.next_event(), Err(ChannelError::Closed)));
    }

    #[test]
    fn a_message_out_of_order_names_what_was_expected_and_what_came() {
        // The init reports a start before the keeper's user namespace was mapped.
        let (supervisor, init) = pair().unwrap();
        init.started(StartTimings::default()).unwrap();
        let err = supervisor.next_event().unwrap_err();
        assert!(
            matches!(
                err,
                ChannelError::UnexpectedMessage {
                    expected: "userns_ready or failed",
                    received: "started"
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "runner protocol: expected userns_ready or failed, received started"
        );

        // A socket request where the keeper waits for its id maps.
        let (supervisor, keeper) = pair().unwrap();
        supervisor.wire.send(&ToRunner::MakeSocket, None).unwrap();
        assert_eq!(
            keeper.wait_for_mapping().unwrap_err().to_string(),
            "runner protocol: expected mapped, map_failed, signal or kill, received make_socket"
        );
        // The secrets again once the sandbox runs: never echoed, named only.
        supervisor
            .mapped(vec![SecretEnv::new("T", "s3cret")])
            .unwrap();
        let err = keeper.next_order().unwrap_err();
        assert_eq!(
            err.to_string(),
            "runner protocol: expected signal or kill, received mapped"
        );
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[test]
    fn a_failure_is_taken_in_every_phase_and_a_descriptor_is_required_where_one_belongs() {
        let (supervisor, keeper) = pair().unwrap();
        let failure = RunnerFailure {
            stage: "read run plan".into(),
            chain: vec!["gone".into()],
        };
        keeper.failed(failure.clone()).unwrap();
        assert!(matches!(supervisor.next_event().unwrap(), RunnerEvent::Failed(f) if f == failure));
        keeper.userns_ready().unwrap();
        supervisor.next_event().unwrap();
        supervisor.mapped(vec![]).unwrap();
        keeper
            .wire
            .send(&ToSupervisor::SocketFactory, None)
            .unwrap();
        assert_eq!(
            supervisor.next_event().unwrap_err().to_string(),
            "runner protocol: `socket_factory` came without its descriptor"
        );
        // After the start, a second start is out of order.
        keeper.started(StartTimings::default()).unwrap();
        supervisor.next_event().unwrap();
        keeper.started(StartTimings::default()).unwrap();
        assert_eq!(
            supervisor.next_event().unwrap_err().to_string(),
            "runner protocol: expected nothing once the server runs, received started"
        );
        keeper.failed(failure.clone()).unwrap();
        assert!(matches!(
            supervisor.next_event().unwrap(),
            RunnerEvent::Failed(_)
        ));
    }

    #[test]
    fn channel_errors_read_as_sentences() {
        for (e, want) in [
            (
                ChannelError::Closed,
                "the other end of the runner channel is closed",
            ),
            (
                ChannelError::UnknownSignal(99),
                "runner protocol: 99 is not a signal number",
            ),
            (
                ChannelError::Io(io::Error::other("x")),
                "the runner channel failed",
            ),
        ] {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn the_socket_factory_hands_out_sockets_that_connect() {
        let (ours, theirs) = pair().unwrap();
        let server =
            std::thread::spawn(move || while SocketFactory::serve_one(&theirs).unwrap() {});
        let factory = SocketFactory::from_fd(ours.wire.fd);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for _ in 0..3 {
            let c = factory.connect(port).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            assert_eq!(accepted.peer_addr().unwrap(), c.local_addr().unwrap());
        }
        drop(factory);
        server.join().unwrap();
    }

    #[test]
    fn a_descriptor_travels_with_its_message() {
        let (supervisor, keeper) = pair().unwrap();
        keeper.userns_ready().unwrap();
        supervisor.next_event().unwrap();
        supervisor.mapped(vec![]).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        keeper.egress_listener(port, &listener).unwrap();
        drop(listener);
        let RunnerEvent::EgressListener(got) = supervisor.next_event().unwrap() else {
            panic!("not the listener");
        };
        assert_eq!(got.local_addr().unwrap().port(), port);
        // It is the same socket: a connection to the port reaches it.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        got.accept().unwrap();
        // A plain message carries none.
        supervisor.kill().unwrap();
        assert!(keeper.wire.recv::<ToRunner>().unwrap().1.is_none());
    }
}
