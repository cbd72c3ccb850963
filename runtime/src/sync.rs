//! The channel between the supervisor (`thv-sandbox run`) and the runner processes.
//!
//! A `SOCK_SEQPACKET` socketpair keeps message boundaries, so several processes (the runner keeper and the
//! runner init it forks) can write whole JSON messages to the same socket without interleaving.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
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
    Mapped(Vec<crate::secret::SecretEnv>),
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

    /// Receives one message; `Ok(None)` when the other side has closed.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
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
}
