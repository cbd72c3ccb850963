//! Check 8: `cgroups` — v2, hybrid or v1, and whether our own cgroup is delegated to us (resource limits).

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, FsType, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use nix::unistd::{access, AccessFlags};

use super::report::{Check, Status};

/// How cgroups are mounted on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CgroupLayout {
    /// cgroup2 on /sys/fs/cgroup.
    V2,
    /// A tmpfs on /sys/fs/cgroup with v1 controllers and an (empty) cgroup2 on /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
    V1,
}

impl CgroupLayout {
    /// The cgroup2 mount point, if the host has one.
    pub(super) fn v2_mount(self) -> Option<&'static Path> {
        match self {
            CgroupLayout::V2 => Some(Path::new("/sys/fs/cgroup")),
            CgroupLayout::Hybrid => Some(Path::new("/sys/fs/cgroup/unified")),
            CgroupLayout::V1 => None,
        }
    }
}

/// Classifies from the filesystem types of /sys/fs/cgroup and /sys/fs/cgroup/unified (`None`: no
/// such mount or statfs failed).
pub(super) fn classify_cgroups(
    root: Option<FsType>,
    unified: Option<FsType>,
) -> Option<CgroupLayout> {
    match root? {
        t if t == CGROUP2_SUPER_MAGIC => Some(CgroupLayout::V2),
        t if t == TMPFS_MAGIC => Some(if unified == Some(CGROUP2_SUPER_MAGIC) {
            CgroupLayout::Hybrid
        } else {
            CgroupLayout::V1
        }),
        _ => None,
    }
}

/// The cgroup v2 path of this process: the `0::` line of /proc/self/cgroup.
pub(super) fn parse_proc_cgroup(content: &str) -> Option<&str> {
    content.lines().find_map(|l| l.strip_prefix("0::"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupFacts {
    pub(super) layout: Option<CgroupLayout>,
    /// Our cgroup v2 directory on the host, if we have one.
    pub(super) own_dir: Option<PathBuf>,
    pub(super) writable: bool,
    /// `cgroup.controllers` of our cgroup: what we may enable for cgroups below it.
    pub(super) controllers: Vec<String>,
    /// `cgroup.subtree_control` of our cgroup: what is enabled for cgroups below it.
    pub(super) subtree: Vec<String>,
}

impl CgroupFacts {
    pub(super) fn gather(proc_cgroup: Option<&str>) -> Self {
        let fs_type = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
        let layout = classify_cgroups(fs_type("/sys/fs/cgroup"), fs_type("/sys/fs/cgroup/unified"));
        let own_dir = match (
            layout.and_then(CgroupLayout::v2_mount),
            proc_cgroup.and_then(parse_proc_cgroup),
        ) {
            (Some(mount), Some(own)) => Some(mount.join(own.trim_start_matches('/'))),
            _ => None,
        };
        let words = |dir: &Path, file: &str| -> Vec<String> {
            fs::read_to_string(dir.join(file))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let (writable, controllers, subtree) = match &own_dir {
            Some(dir) => (
                access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok(),
                words(dir, "cgroup.controllers"),
                words(dir, "cgroup.subtree_control"),
            ),
            None => (false, Vec::new(), Vec::new()),
        };
        CgroupFacts {
            layout,
            own_dir,
            writable,
            controllers,
            subtree,
        }
    }
}

pub(super) const NO_CGROUP: &str =
    "an unprivileged run's sandbox gets no cgroup of its own here (no memory/pids/cpu limits: see `limits`); processes are still contained by the pid namespace";
pub(super) const DELEGATE_FIX: &str = "on a systemd host: run from a user session, or \
     `systemd-run --user --scope -p Delegate=yes thv-sandbox …`";
pub(super) const UNIFIED_FIX: &str = "switch the host to cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1); then, \
     on a systemd host: run from a user session, or `systemd-run --user --scope -p Delegate=yes thv-sandbox …`";

/// `scope`: runs get a transient systemd scope of their own (`sandbox::cgroup::Route::SystemdScope`), so our own
/// cgroup not being delegated costs nothing.
pub(super) fn cgroup_check(facts: &CgroupFacts, scope: bool) -> Check {
    const NAME: &str = "cgroups";
    const SCOPE: &str =
        "each run gets a transient systemd scope of its own from your user manager (see `limits`)";
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    match facts.layout {
        None => Check::new(NAME, Status::Warn, format!("unknown layout: /sys/fs/cgroup is neither cgroup2 nor tmpfs; {NO_CGROUP}"))
            .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::V1) => Check::new(NAME, Status::Warn, format!("v1 (no cgroup2 hierarchy mounted); {NO_CGROUP}"))
            .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::Hybrid) => Check::new(
            NAME,
            Status::Warn,
            format!("hybrid (v1 controllers, cgroup2 on /sys/fs/cgroup/unified has controllers: {}); {NO_CGROUP}", list(&facts.controllers)),
        )
        .with_fix(UNIFIED_FIX),
        Some(CgroupLayout::V2) => {
            let Some(dir) = &facts.own_dir else {
                if scope {
                    return Check::new(NAME, Status::Ok, format!("v2, no 0:: line in /proc/self/cgroup; {SCOPE}"));
                }
                return Check::new(NAME, Status::Warn, format!("v2, but /proc/self/cgroup has no 0:: line; {NO_CGROUP}"))
                    .with_fix(DELEGATE_FIX);
            };
            if !facts.writable && scope {
                return Check::new(
                    NAME,
                    Status::Ok,
                    format!("v2, own cgroup {} is not delegated to us, and need not be: {SCOPE}", dir.display()),
                );
            }
            if !facts.writable {
                return Check::new(
                    NAME,
                    Status::Warn,
                    format!("v2, own cgroup {} is not delegated to us (not writable); {NO_CGROUP}", dir.display()),
                )
                .with_fix(DELEGATE_FIX);
            }
            let missing: Vec<&str> = ["memory", "pids"]
                .into_iter()
                .filter(|c| !facts.controllers.iter().any(|have| have == c))
                .collect();
            let found = format!(
                "v2, own cgroup {} is delegated (controllers: {}; enabled below it: {})",
                dir.display(),
                list(&facts.controllers),
                list(&facts.subtree)
            );
            if missing.is_empty() {
                Check::new(NAME, Status::Ok, found)
            } else {
                Check::new(
                    NAME,
                    Status::Warn,
                    format!("{found}; without {} the sandbox has no such limits", missing.join(" and ")),
                )
                .with_fix(DELEGATE_FIX)
            }
        }
    }
}

/// Check 8b: `limits` — which resource limits a run gets here, and how (see `crate::sandbox::cgroup`): the
/// defaults, enforced or not, and what an explicit `--memory`/`--cpus`/`--pids-limit` would meet.
pub(super) fn limits_check(choice: &crate::sandbox::cgroup::Choice) -> Check {
    use crate::sandbox::cgroup::decide;
    use crate::sandbox::limits::Limits;
    const NAME: &str = "limits";
    let defaults = Limits::default();
    let decision = match decide(choice, &defaults) {
        Ok(d) => d,
        // Defaults are never refused.
        Err(e) => return Check::new(NAME, Status::Warn, e.to_string()),
    };
    let how = choice
        .route
        .as_ref()
        .map(|r| r.describe())
        .unwrap_or_else(|| "no cgroup".into());
    let enforced = decision.enforced.describe_set();
    if decision.warning.is_none() {
        return Check::new(
            NAME,
            Status::Ok,
            format!("{enforced} by default, and any --memory/--cpus/--pids-limit ({how})"),
        );
    }
    let mut missing = Vec::new();
    if decision.enforced.memory.value.is_none() {
        missing.push("--memory");
    }
    if decision.enforced.cpus.value.is_none() {
        missing.push("--cpus");
    }
    if decision.enforced.pids.value.is_none() {
        missing.push("--pids-limit");
    }
    let fix = match &choice.route {
        Some(crate::sandbox::cgroup::Route::RootV1 { .. })
        | Some(crate::sandbox::cgroup::Route::RootV2 { .. }) => {
            "mount the missing cgroup controllers".to_string()
        }
        _ => UNIFIED_FIX.to_string(),
    };
    Check::new(
        NAME,
        Status::Warn,
        format!(
            "enforced: {enforced}{}; not: {} ({}): runs warn once, and {} given explicitly are refused",
            if choice.route.is_some() { format!(" ({how})") } else { String::new() },
            missing.iter().map(|m| m.trim_start_matches("--").trim_end_matches("-limit")).collect::<Vec<_>>().join(", "),
            choice.why,
            missing.join("/"),
        ),
    )
    .with_fix(fix)
}
