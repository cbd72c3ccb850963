//! The channel between the supervisor (`thv-sandbox run`) and the runner processes.
//!
//! A `SOCK_SEQPACKET` socketpair keeps message boundaries, so several processes (the runner keeper and the
//! runner init it forks) can write whole JSON messages to the same socket without interleaving.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What travels between supervisor and runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Runner → supervisor: the runner has created its user namespace; write its id maps now.
    UsernsReady,
    /// Supervisor → runner: the id maps are written; here are the secret environment variables (never on disk).
    Mapped(Vec<crate::sandbox::secret::SecretEnv>),
    /// Supervisor → runner: the id maps could not be written (the runner exits).
    MapFailed(String),
    /// Runner → supervisor: the server process runs; phase durations in microseconds.
    Started(StartTimings),
    /// Runner → supervisor: creating the sandbox failed, before the server ran.
    Failed(RunnerFailure),
    /// Supervisor → runner: deliver this signal to the server.
    Signal(i32),
    /// Supervisor → runner: end the sandbox now (SIGKILL every process in it).
    Kill,
    /// Runner → supervisor, with the descriptor attached: the egress proxy's listening socket, bound to
    /// `127.0.0.1:port` inside the sandbox's network namespace. The supervisor serves it from the host side.
    EgressListener {
        /// The port it listens on.
        port: u16,
    },
    /// Runner → supervisor, with a descriptor attached: one end of a socket factory (see [`SocketFactory`]).
    SocketFactory,
}

/// TCP sockets made inside the sandbox's network namespace, for the host side: the runner keeper (which lives in
/// that namespace) answers each request on this SOCK_SEQPACKET socket with a fresh, unconnected TCP socket. A
/// socket belongs to the namespace it was created in, so connecting it from the supervisor reaches the server's
/// port inside the sandbox, while the supervisor stays in the host's namespace. No process of the sandbox holds
/// the factory.
#[derive(Debug)]
pub struct SocketFactory {
    fd: OwnedFd,
    lock: std::sync::Mutex<()>,
}

impl SocketFactory {
    /// Wraps the descriptor the runner sent.
    pub fn from_fd(fd: OwnedFd) -> SocketFactory {
        SocketFactory {
            fd,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// A fresh TCP socket (IPv4) of the sandbox's network namespace.
    pub fn socket(&self) -> io::Result<OwnedFd> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let chan = Channel {
            fd: self.fd.try_clone()?,
        };
        chan.send(&Message::SocketFactory)?;
        match chan.recv_with_fd()? {
            Some((_, Some(fd))) => Ok(fd),
            Some((Message::Failed(f), None)) => Err(io::Error::other(f.chain.join(": "))),
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the sandbox's socket factory is gone",
            )),
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
    pub fn serve_one(end: &Channel) -> io::Result<bool> {
        match end.recv()? {
            None => Ok(false),
            Some(_) => {
                let made = nix::sys::socket::socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                );
                match made {
                    Ok(sock) => end.send_with_fd(&Message::SocketFactory, &sock)?,
                    Err(e) => end.send(&Message::Failed(RunnerFailure {
                        stage: "make a socket in the sandbox".into(),
                        chain: vec![e.to_string()],
                    }))?,
                }
                Ok(true)
            }
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

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair. Both ends are close-on-exec; the spawner clears that flag on the end it hands over.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Wraps an inherited descriptor.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Sends one message.
    pub fn send(&self, msg: &Message) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        loop {
            match send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends one message with a descriptor attached (SCM_RIGHTS).
    pub fn send_with_fd(&self, msg: &Message, fd: &impl AsRawFd) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message; `Ok(None)` when the other side has closed. A descriptor sent along is closed: use
    /// [`Channel::recv_with_fd`] where one is expected.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    /// Receives one message and the descriptor sent with it, if any (close-on-exec).
    pub fn recv_with_fd(&self) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
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
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(|m| Some((m, fd)))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The descriptor, for poll loops and for handing over to a child.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Message::UsernsReady).unwrap();
        a.send(&Message::Signal(15)).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Message::UsernsReady));
        assert_eq!(b.recv().unwrap(), Some(Message::Signal(15)));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn the_socket_factory_hands_out_sockets_that_connect() {
        let (ours, theirs) = Channel::pair().unwrap();
        let server =
            std::thread::spawn(move || while SocketFactory::serve_one(&theirs).unwrap() {});
        let factory = SocketFactory::from_fd(ours.fd);
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
        let (a, b) = Channel::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        a.send_with_fd(&Message::EgressListener { port }, &listener)
            .unwrap();
        drop(listener);
        let (msg, fd) = b.recv_with_fd().unwrap().unwrap();
        assert_eq!(msg, Message::EgressListener { port });
        let got = std::net::TcpListener::from(fd.expect("fd"));
        assert_eq!(got.local_addr().unwrap().port(), port);
        // It is the same socket: a connection to the port reaches it.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        got.accept().unwrap();
        // A plain message carries none.
        a.send(&Message::Kill).unwrap();
        assert!(b.recv_with_fd().unwrap().unwrap().1.is_none());
    }
}
