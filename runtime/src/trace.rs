//! `THV_SANDBOX_TRACE=1`: a phase clock across every process of a start (supervisor, keeper, runner init, the
//! container's init up to the server's `execve`), for the warm-start benchmark (`bench/warm_start.py`).
//!
//! Each mark is one line on stderr, written with a single `write(2)`:
//! `thv-sandbox trace: <CLOCK_MONOTONIC ns> <pid> <label>`. All processes of a start share `CLOCK_MONOTONIC` (no
//! time namespace is made), so the lines of different processes, and a client's own `time.monotonic_ns()`, compare
//! directly. Off (one cached environment check) unless the variable is `1`; the supervisor passes it to the runner.

use std::sync::OnceLock;

/// The environment variable that turns the marks on.
pub const ENV: &str = "THV_SANDBOX_TRACE";

fn on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| v == "1"))
}

/// Writes one mark if tracing is on. Async-signal-safe apart from the first call's environment read and the
/// formatting into a stack buffer (no allocation), so it may be called between fork and exec once [`on`] was
/// evaluated before the fork.
pub fn mark(label: &str) {
    if !on() {
        return;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
    let mut buf = [0u8; 160];
    let cap = buf.len();
    let mut w = &mut buf[..];
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = std::io::Write::write_fmt(
        &mut w,
        format_args!("thv-sandbox trace: {ns} {pid} {label}\n"),
    );
    let len = cap - w.len();
    // SAFETY: writes `len` initialised bytes of `buf` to descriptor 2.
    let _ = unsafe { libc::write(2, buf.as_ptr().cast(), len) };
}

/// Whether tracing is on (the supervisor passes the variable on to the runner only then).
pub fn enabled() -> bool {
    on()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mark_without_the_variable_writes_nothing_and_does_not_panic() {
        // The variable is not set in the test environment; the call must be a no-op.
        if std::env::var_os(super::ENV).is_none() {
            assert!(!super::enabled());
        }
        super::mark("test");
    }
}
