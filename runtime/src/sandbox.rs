//! The sandbox itself: the OCI runtime config ([`spec`]) built from the image and the permission profile
//! ([`profile`]), its seccomp filter compiled once and kept ([`filter`]), the supervisor ([`supervise`]) and the runner it starts ([`runner`]; forked early as a [`prefork`] by `run`) with their protocol
//! ([`sync`]), run directories ([`runs`]), secrets ([`secret`]), the egress proxy ([`egress`]), the
//! sandbox's name server that refuses and reports lookups ([`nameserver`]), the default route that refuses and reports connections
//! ([`unreachable`]), what both share ([`refusals`]) and the HTTP↔stdio bridge ([`bridge`]). Above [`crate::rootfs`]; knows nothing of registries or trust.

pub mod bridge;
pub mod cgroup;
pub mod egress;
pub mod filter;
pub mod limits;
pub mod nameserver;
pub mod prefork;
pub mod profile;
pub mod refusals;
pub mod runner;
pub mod runs;
pub mod secret;
pub mod spec;
pub mod supervise;
pub mod sync;
pub mod unreachable;

/// Starts `f` on a thread named `name` that is born with every signal blocked. The supervisor takes its signals
/// (`SIGCHLD` among them) from a signalfd in its main thread; a thread with them unblocked takes a process-directed
/// signal in its stead, where `SIGCHLD`'s default action drops it (the supervisor then never hears that its runner
/// exited) and a SIGTERM ends the process at once. Threads started before the supervisor blocks its signals must
/// be started this way.
pub(crate) fn spawn_with_signals_blocked<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old));
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    spawned
}

#[cfg(test)]
mod tests {
    /// The calling thread's blocked signals (`SigBlk` of `/proc/thread-self/status`).
    fn blocked_here() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    }

    #[test]
    fn a_thread_for_the_supervisor_is_born_with_every_signal_blocked() {
        let chld = 1u64 << (libc::SIGCHLD - 1);
        let term = 1u64 << (libc::SIGTERM - 1);
        let mask = super::spawn_with_signals_blocked("t", blocked_here)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            mask & (chld | term),
            chld | term,
            "SIGCHLD and SIGTERM are blocked in the new thread"
        );
        assert_eq!(
            blocked_here() & chld,
            0,
            "the caller's own mask is as it was"
        );
    }
}
