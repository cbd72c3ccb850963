//! `thv-sandbox doctor`: can this host run thv-sandbox's rootless sandboxes?
//!
//! [`diagnose`] runs the checks below, in this order, and returns a [`Report`]. Every check carries a
//! status and, unless it passed, a fix the user can act on. The same report becomes the hint of the
//! error `run` gives when a sandbox cannot be created ([`hint_for_sandbox_failure`]).
//!
//! 1. `user` — who we run as. Root is fine: the sandbox always uses a user namespace.
//! 2. `user namespaces` — the kernel knobs (`user.max_user_namespaces`, Debian's
//!    `kernel.unprivileged_userns_clone`, Ubuntu's `kernel.apparmor_restrict_unprivileged_userns`),
//!    then a real attempt in the probe child. The knobs only explain a failure; the probe decides.
//! 3. `mount namespace` — a private mount namespace inside the user namespace, and a tmpfs in it.
//! 4. `cgroup namespace` — a cgroup namespace and a `cgroup2` mount on /sys/fs/cgroup, which makes
//!    libcontainer use its v2 cgroup manager even on v1-hybrid hosts.
//! 5. `pid namespace` — a pid namespace and a fresh `proc` mounted from inside it (containers that mask
//!    /proc paths forbid this).
//! 6. `overlayfs` — overlayfs in a user namespace (kernel >= 5.11). Optional: only a warning.
//! 7. `seccomp` — kernel support, whether we already run under a filter, and installing one for real.
//! 8. `cgroups` — v2, hybrid or v1, and whether our own cgroup is delegated to us (resource limits).
//!    `limits` — which limits a run gets here and how (a systemd scope, a delegated cgroup, root's own), and
//!    what explicit limits would meet.
//! 9. `subordinate ids` — /etc/subuid and /etc/subgid ranges for the user (several ids in the sandbox).
//! 10. `newuidmap/newgidmap` — the setuid helpers that write such ranges for unprivileged users.
//! 11. `state dir`, `cache dir` — exist or can be created, owned by us, not writable by others.
//!
//!
//! Checks 2–7 share one forked probe child (`doctor/probe.rs`), which does in its own namespaces what the
//! runner does when it builds a sandbox: the namespace steps come first because every mount depends on
//! them, and the seccomp filter comes last so it cannot get in the way of the others. Nothing the child
//! does outlives it except the empty temporary directory it mounts on, which the parent removes.
//!
//! One file per group of checks: `user.rs` (1), `namespaces.rs` (2–6), `apparmor_profile.rs` (Ubuntu's
//! userns restriction: whether an AppArmor profile lets this binary use user namespaces; the fix prints the
//! profile and the sysctl), `seccomp.rs` (7), `cgroups.rs` (8),
//! `subids.rs` (9–10), `dirs.rs` (11), and `trust.rs` (the trust roots, which `thv-sandbox doctor` adds); each
//! check is a function of facts gathered in [`diagnose`] returning a [`Check`]. The report and its text and
//! JSON forms are in `report.rs`. A new check is a function in one of these files (or a new one) and one line
//! in [`diagnose`]'s list.

mod apparmor_profile;
mod cgroups;
mod container;
mod dirs;
mod namespaces;
mod probe;
mod report;
mod seccomp;
mod subids;
#[cfg(test)]
mod tests;
mod trust;
mod user;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::Uid;

use cgroups::{cgroup_check, limits_check, CgroupFacts};
use container::detect_container;
use dirs::{dir_check, DirKind, DirState};
use namespaces::{
    cgroupns_check, mount_check, overlay_check, pidns_check, userns_check, UsernsKnobs,
};
use probe::run_probe;
pub use report::{Check, Report, Status};
use seccomp::{parse_seccomp_mode, seccomp_check};
use subids::{idmap_helpers_check, subid_check, IdMapHelper, SubIdLookup};
pub use trust::trust_root_checks;
use user::{user_check, user_name};

use crate::rootfs::idmap::SubIdKind;

/// The directories `diagnose` inspects, as resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorInputs {
    /// Where sandbox state lives (must be private: mode 0700).
    pub state_dir: PathBuf,
    /// Where images are cached.
    pub cache_dir: PathBuf,
}

/// Errors of the doctor's own machinery; they end up in a check's detail, never abort the diagnosis.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// Reading a file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the probe's temporary directory failed.
    #[error("cannot create the probe directory {}", path.display())]
    ProbeDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path cannot be passed to the kernel.
    #[error("path {} contains a NUL byte", path.display())]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
    /// Creating the probe's report pipe failed.
    #[error("cannot create a pipe for the probe")]
    Pipe(#[source] Errno),
    /// Forking the probe failed.
    #[error("cannot fork the probe process")]
    Fork(#[source] Errno),
    /// Waiting for the probe failed.
    #[error("cannot wait for the probe process {pid}")]
    Wait {
        /// The probe's pid.
        pid: i32,
        /// The cause.
        #[source]
        source: Errno,
    },
}

fn read_file(path: &Path) -> Result<String, DoctorError> {
    fs::read_to_string(path).map_err(|source| DoctorError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs every check (see the module documentation for the order and the reasons).
pub fn diagnose(inputs: &DoctorInputs) -> Report {
    let euid = Uid::effective().as_raw();
    let user = user_name(euid);
    let proc_cgroup = read_file(Path::new("/proc/self/cgroup")).ok();
    let container = detect_container(
        Path::new("/.dockerenv").exists(),
        Path::new("/run/.containerenv").exists(),
        proc_cgroup.as_deref().unwrap_or(""),
    );
    let knobs = UsernsKnobs::read();
    let probe = run_probe();
    let seccomp_mode = read_file(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| parse_seccomp_mode(&s));
    let cgroups = CgroupFacts::gather(proc_cgroup.as_deref());
    let subuid = SubIdLookup::read(SubIdKind::Uid, &user, euid);
    let subgid = SubIdLookup::read(SubIdKind::Gid, &user, euid);
    let subids_present =
        matches!((&subuid, &subgid), (Ok(u), Ok(g)) if u.usable.is_some() && g.usable.is_some());
    let newuidmap = IdMapHelper::find("newuidmap");
    let newgidmap = IdMapHelper::find("newgidmap");
    let helpers_needed = euid != 0 && (newuidmap.path.is_none() || newgidmap.path.is_none());

    let choice = crate::sandbox::cgroup::choose(&crate::sandbox::cgroup::HostFacts::gather());
    let checks = vec![
        user_check(euid, &user),
        userns_check(&knobs, &probe, container, euid),
        apparmor_profile::check(&apparmor_profile::Facts::read(euid)),
        mount_check(&probe, container),
        cgroupns_check(&probe, container),
        pidns_check(&probe, container),
        overlay_check(&probe),
        seccomp_check(seccomp_mode, &probe, container),
        cgroup_check(
            &cgroups,
            choice.route == Some(crate::sandbox::cgroup::Route::SystemdScope),
        ),
        limits_check(&choice),
        subid_check(&user, euid, &subuid, &subgid, helpers_needed),
        idmap_helpers_check(euid, subids_present, &newuidmap, &newgidmap),
        dir_check(
            DirKind::State,
            &inputs.state_dir,
            &DirState::inspect(&inputs.state_dir),
            euid,
        ),
        dir_check(
            DirKind::Cache,
            &inputs.cache_dir,
            &DirState::inspect(&inputs.cache_dir),
            euid,
        ),
    ];
    Report { checks }
}

/// The hint for `run` when the sandbox cannot be created: the failing checks' fixes, or a pointer to
/// `thv-sandbox doctor` when no check failed (the cause is then something the doctor does not test).
pub fn hint_for_sandbox_failure(report: &Report) -> String {
    let mut fixes: Vec<&str> = Vec::new();
    for check in report.failures() {
        if let Some(fix) = check.fix.as_deref() {
            if !fixes.contains(&fix) {
                fixes.push(fix);
            }
        }
    }
    if fixes.is_empty() {
        "run `thv-sandbox doctor` to check whether this host supports rootless sandboxes"
            .to_string()
    } else {
        format!("{} (details: `thv-sandbox doctor`)", fixes.join("; "))
    }
}
