//! Checks 2–6: user, mount, cgroup and pid namespaces, and overlayfs: the knobs that explain a failure, and the
//! probe's outcomes, which decide.

use std::fs;

use nix::errno::Errno;

use super::container::{CONTAINER_MOUNT_FIX, CONTAINER_USERNS_FIX};
use super::probe::{Outcome, Probe, Step};
use super::report::{Check, Status};
use super::DoctorError;

/// Shared shape of the probe-based checks: `prereq` must have worked for the check to mean anything;
/// the first problem among `steps` decides it.
pub(super) fn probe_check(
    name: &'static str,
    probe: &Result<Probe, DoctorError>,
    prereq: &[Step],
    steps: &[Step],
    problem_status: Status,
    ok_detail: &str,
    fix_for: impl Fn(Step, Outcome) -> String,
) -> Check {
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            let e = crate::chain::one_line(e);
            return Check::new(name, problem_status, format!("not tested: {e}"));
        }
    };
    if let Some((step, outcome)) = probe.first_problem(prereq) {
        return Check::new(
            name,
            problem_status,
            format!("not tested: {}", probe.explain(step, outcome)),
        );
    }
    match probe.first_problem(steps) {
        None => Check::new(name, Status::Ok, ok_detail),
        Some((step, outcome)) => Check::new(name, problem_status, probe.explain(step, outcome))
            .with_fix(fix_for(step, outcome)),
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. user namespaces

pub(super) const USERNS_STEPS: [Step; 4] =
    [Step::UserNs, Step::Setgroups, Step::UidMap, Step::GidMap];
pub(super) const MOUNT_STEPS: [Step; 3] = [Step::MountNs, Step::Private, Step::Tmpfs];

/// The sysctls that govern user namespaces; `None` where the knob does not exist on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct UsernsKnobs {
    pub(super) max_user_namespaces: Option<u64>,
    /// Debian <= 10.
    pub(super) unprivileged_userns_clone: Option<u64>,
    /// Ubuntu >= 23.10.
    pub(super) apparmor_restrict: Option<u64>,
}

impl UsernsKnobs {
    pub(super) fn read() -> Self {
        let knob = |path: &str| {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        UsernsKnobs {
            max_user_namespaces: knob("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: knob("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

pub(super) const APPARMOR_FIX: &str =
    "`sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` (persist it in \
     /etc/sysctl.d/), or an AppArmor profile for the thv-sandbox binary that allows `userns`";

pub(super) fn userns_check(
    knobs: &UsernsKnobs,
    probe: &Result<Probe, DoctorError>,
    container: Option<&str>,
    euid: u32,
) -> Check {
    const NAME: &str = "user namespaces";
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            let e = crate::chain::one_line(e);
            return Check::new(NAME, Status::Fail, format!("not tested: {e}"));
        }
    };
    let Some((step, outcome)) = probe.first_problem(&USERNS_STEPS) else {
        let mut detail = "unshare(CLONE_NEWUSER) and a uid/gid map work".to_string();
        if let Some(max) = knobs.max_user_namespaces {
            detail.push_str(&format!(" (user.max_user_namespaces = {max})"));
        }
        if knobs.apparmor_restrict == Some(1) && euid == 0 {
            detail.push_str(
                "; note: kernel.apparmor_restrict_unprivileged_userns = 1 still stops unprivileged users",
            );
        }
        return Check::new(NAME, Status::Ok, detail);
    };
    let what = probe.explain(step, outcome);
    let errno = match outcome {
        Outcome::Failed(errno) => Some(errno),
        _ => None,
    };
    let (detail, fix) = if step == Step::UserNs
        && (knobs.max_user_namespaces == Some(0) || errno == Some(Errno::ENOSPC))
    {
        (
            format!(
                "{what}; user.max_user_namespaces is {}",
                knobs
                    .max_user_namespaces
                    .map_or("exhausted".to_string(), |m| m.to_string())
            ),
            "`sudo sysctl user.max_user_namespaces=15000` (persist it in /etc/sysctl.d/)"
                .to_string(),
        )
    } else if step == Step::UserNs && knobs.unprivileged_userns_clone == Some(0) && euid != 0 {
        (
            format!("{what}; kernel.unprivileged_userns_clone is 0"),
            "`sudo sysctl kernel.unprivileged_userns_clone=1` (persist it in /etc/sysctl.d/)"
                .to_string(),
        )
    } else if knobs.apparmor_restrict == Some(1) && euid != 0 {
        (
            format!("{what}; kernel.apparmor_restrict_unprivileged_userns is 1"),
            APPARMOR_FIX.to_string(),
        )
    } else if let (Some(evidence), Some(Errno::EPERM)) = (container, errno) {
        (
            format!(
                "{what}: this looks like a container ({evidence}) that forbids user namespaces"
            ),
            CONTAINER_USERNS_FIX.to_string(),
        )
    } else if errno == Some(Errno::EINVAL) && step == Step::UserNs {
        (
            format!("{what}: the kernel has no user namespace support"),
            "use a kernel built with CONFIG_USER_NS".to_string(),
        )
    } else if errno == Some(Errno::EUSERS) {
        (
            format!("{what}: user namespaces are nested too deeply"),
            "run thv-sandbox from a less deeply nested environment (on the host)".to_string(),
        )
    } else {
        (
            format!("{what}: a security policy (seccomp or an LSM) forbids it"),
            format!("if this runs in a container, {CONTAINER_USERNS_FIX}; otherwise check the host's seccomp/LSM policy"),
        )
    };
    Check::new(NAME, Status::Fail, detail).with_fix(fix)
}

// ---------------------------------------------------------------------------------------------------
// 3.–7. mount, cgroup and pid namespaces, overlayfs, seccomp

pub(super) fn mount_fix(container: Option<&str>) -> String {
    match container {
        Some(evidence) => {
            format!("this looks like a container ({evidence}): {CONTAINER_MOUNT_FIX}")
        }
        None => "the kernel or an LSM (AppArmor, SELinux) forbids mounts in user namespaces; \
                 run on a host that allows them"
            .to_string(),
    }
}

pub(super) fn mount_check(probe: &Result<Probe, DoctorError>, container: Option<&str>) -> Check {
    probe_check(
        "mount namespace",
        probe,
        &USERNS_STEPS,
        &MOUNT_STEPS,
        Status::Fail,
        "a private mount namespace with a tmpfs works",
        |_, _| mount_fix(container),
    )
}

pub(super) fn cgroupns_check(probe: &Result<Probe, DoctorError>, container: Option<&str>) -> Check {
    let prereq = [&USERNS_STEPS[..], &[Step::MountNs, Step::Private]].concat();
    probe_check(
        "cgroup namespace",
        probe,
        &prereq,
        &[Step::CgroupNs, Step::Cgroup2],
        Status::Fail,
        "a cgroup namespace with its own cgroup2 mount on /sys/fs/cgroup works",
        |step, outcome| match (step, outcome) {
            (Step::CgroupNs, Outcome::Failed(Errno::EINVAL)) => {
                "use a kernel with cgroup namespaces (Linux >= 4.6, CONFIG_CGROUPS)".to_string()
            }
            _ => mount_fix(container),
        },
    )
}

pub(super) fn pidns_check(probe: &Result<Probe, DoctorError>, container: Option<&str>) -> Check {
    let prereq = [&USERNS_STEPS[..], &MOUNT_STEPS[..]].concat();
    probe_check(
        "pid namespace",
        probe,
        &prereq,
        &[Step::PidNs, Step::Proc],
        Status::Fail,
        "a pid namespace with a fresh /proc works",
        |step, _| {
            match (step, container) {
            (Step::Proc, Some(evidence)) => format!(
                "this looks like a container ({evidence}), whose masked /proc paths forbid mounting a fresh proc: {CONTAINER_MOUNT_FIX}"
            ),
            _ => mount_fix(container),
        }
        },
    )
}

pub(super) fn overlay_check(probe: &Result<Probe, DoctorError>) -> Check {
    let prereq = [&USERNS_STEPS[..], &MOUNT_STEPS[..]].concat();
    let mut check = probe_check(
        "overlayfs",
        probe,
        &prereq,
        &[Step::Overlay],
        Status::Warn,
        "overlayfs mounts in a user namespace",
        |_, _| "optional: Linux >= 5.11 allows overlayfs in user namespaces".to_string(),
    );
    if check.status == Status::Warn {
        check
            .detail
            .push_str(" (not required: image layers are unpacked into plain directories)");
    }
    check
}
