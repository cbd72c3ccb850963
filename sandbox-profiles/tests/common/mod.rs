//! Fork isolation for tests that load a seccomp filter (a filter can never be removed again).
//!
//! Each test file that uses this holds exactly one `#[test]`, so the process is effectively
//! single-threaded when it forks and the child cannot inherit a lock another thread held.

use std::fs::File;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};
use oci_spec::runtime::LinuxSeccomp;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Runs `body` in a forked child. With `filter`, the child first sets no_new_privs and loads the
/// filter through libcontainer's own seccomp code (what the runtime does inside the
/// container). The child's result comes back as JSON through a pipe.
pub fn in_child<T: Serialize + DeserializeOwned>(
    filter: Option<&LinuxSeccomp>,
    body: impl FnOnce() -> T,
) -> Result<T, String> {
    let (read_end, write_end) = pipe().expect("pipe");
    // SAFETY: one test per binary, so no other thread holds a lock the child could need; the
    // child never returns into the test harness: it leaves through `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(read_end);
            let result: Result<T, String> = (|| {
                if let Some(seccomp) = filter {
                    nix::sys::prctl::set_no_new_privs()
                        .map_err(|err| format!("set no_new_privs: {err}"))?;
                    libcontainer::seccomp::initialize_seccomp(seccomp)
                        .map_err(|err| format!("load the seccomp filter: {err:?}"))?;
                }
                catch_unwind(AssertUnwindSafe(body))
                    .map_err(|_| "the probe panicked in the child (see stderr)".to_owned())
            })();
            let mut out = File::from(write_end);
            let written = serde_json::to_writer(&mut out, &result).is_ok();
            drop(out);
            // SAFETY: `_exit` ends the forked child without running the harness's exit path.
            unsafe { libc::_exit(if written { 0 } else { 3 }) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut text = String::new();
            File::from(read_end)
                .read_to_string(&mut text)
                .expect("read the child's report");
            let status = waitpid(child, None).expect("waitpid");
            if status != WaitStatus::Exited(child, 0) {
                return Err(format!("child ended with {status:?}; report: {text:?}"));
            }
            serde_json::from_str::<Result<T, String>>(&text)
                .map_err(|err| format!("unreadable child report {text:?}: {err}"))?
        }
    }
}
