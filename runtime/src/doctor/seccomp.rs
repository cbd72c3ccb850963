//! Check 7: `seccomp` — kernel support, whether we already run under a filter, and installing one for real.

use libcontainer::oci_spec::runtime::LinuxSeccomp;

use super::container::CONTAINER_USERNS_FIX;
use super::namespaces::probe_check;
use super::probe::{Probe, Step};
use super::report::{Check, Status};
use super::DoctorError;

/// Compile-time proof that libcontainer is built with its `libseccomp` feature: without it the module
/// does not exist and the spec's seccomp section would be silently ignored at run time.
const _: fn(&LinuxSeccomp) -> bool = libcontainer::seccomp::is_notify;

/// The `Seccomp:` mode from /proc/self/status: 0 none, 1 strict, 2 filter; `None` without kernel support.
pub(super) fn parse_seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn seccomp_check(
    mode: Option<u32>,
    probe: &Result<Probe, DoctorError>,
    container: Option<&str>,
) -> Check {
    const NAME: &str = "seccomp";
    let Some(mode) = mode else {
        return Check::new(
            NAME,
            Status::Fail,
            "the kernel has no seccomp support (no Seccomp: line in /proc/self/status)",
        )
        .with_fix("use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER");
    };
    if mode == 1 {
        return Check::new(
            NAME,
            Status::Fail,
            "this process runs in strict seccomp mode",
        )
        .with_fix("run thv-sandbox outside strict seccomp mode");
    }
    let check = probe_check(
        NAME,
        probe,
        &[],
        &[Step::Seccomp],
        Status::Fail,
        "",
        |_, _| match container {
            Some(evidence) => {
                format!("this looks like a container ({evidence}): {CONTAINER_USERNS_FIX}")
            }
            None => "use a kernel built with CONFIG_SECCOMP_FILTER".to_string(),
        },
    );
    if check.status != Status::Ok {
        return check;
    }
    let detail = if mode == 2 {
        "filters install; this process already runs under a seccomp filter (a container's?): \
         the sandbox's filter stacks on it, and the outer one may still deny some syscalls"
    } else {
        "filters install; libcontainer is built with libseccomp"
    };
    Check::new(NAME, Status::Ok, detail)
}
