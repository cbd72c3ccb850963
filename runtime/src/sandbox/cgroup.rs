//! The sandbox's own cgroup, where its resource limits ([`crate::sandbox::limits`]) are enforced.
//!
//! Which way a process gets a cgroup it may configure ([`choose`], a pure function of [`HostFacts`]):
//! - **root on cgroup v2**: `/sys/fs/cgroup/thv-sandbox/<id>` (the controllers enabled on the way down).
//! - **root on cgroup v1 or a v1 hybrid**: `<controller>/<our own cgroup>/thv-sandbox-<id>` in each of the
//!   `memory`, `pids` and `cpu` hierarchies.
//! - **a user on a cgroup v2 host with a systemd user manager**: the supervisor asks the user's own systemd
//!   manager over D-Bus for a transient scope `thv-sandbox-<id>.scope` with `Delegate=yes` holding the keeper
//!   (libcgroups' systemd manager, which speaks D-Bus itself), moves the keeper into the scope's `keeper` leaf
//!   (cgroup v2 lets only leaves hold processes once controllers are enabled), enables the controllers in the
//!   scope and makes the sandbox's cgroup `sandbox` beside the keeper. systemd removes the scope once it is empty.
//!   For the keeper `run` forks at its start, this is asked for in a thread as soon as the run directory is being
//!   written ([`begin_scope`]), so systemd's round trips overlap the rest of the start.
//! - **a user in a delegated cgroup v2** (one it owns, as CI gives each user): `<own>/thv-sandbox-<id>`. cgroup
//!   v2's no-internal-processes rule forbids enabling controllers in a cgroup that holds processes, and ours holds
//!   at least this process: this works only when the controllers are enabled there already, and otherwise is
//!   reported as unavailable with the rule named.
//!
//! The limits are written into the sandbox's cgroup before anything of the sandbox runs. The runner keeper opens
//! its `cgroup.procs` before it enters its namespaces, and the runner init (pid 1 of the sandbox) moves itself in
//! through that descriptor first thing, so everything of the sandbox is in it and nothing can leave it (the
//! server's cgroup namespace is rooted there, and its cgroupfs is read-only). On cgroup v2 the runner init then
//! moves on into the leaf [`INIT_LEAF`] of it (made beside libcontainer's cgroup): libcontainer enables the
//! available controllers in the cgroups above its own, and a cgroup that holds a process when the threaded
//! controllers (`cpu`, `pids`) are enabled in it becomes a thread root, below which no domain cgroup can take a
//! process (the kernel answers EOPNOTSUPP): that is how every run through the systemd scope failed in the test VM
//! before the leaf. The keeper stays outside, so it can remove the cgroup after the sandbox is gone, on every exit
//! path; if the keeper itself is killed the supervisor removes it, and if both are, the next run's collection of
//! stale run directories does (`runs::collect_stale`).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::limits::{self, Limits};

/// The controllers the limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Controllers {
    /// `memory`.
    pub memory: bool,
    /// `pids`.
    pub pids: bool,
    /// `cpu`.
    pub cpu: bool,
}

impl Controllers {
    /// From a list of controller names (`cgroup.controllers`, or the v1 hierarchies mounted).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Controllers {
        let mut c = Controllers::default();
        for n in names {
            match n {
                "memory" => c.memory = true,
                "pids" => c.pids = true,
                "cpu" => c.cpu = true,
                _ => {}
            }
        }
        c
    }

    /// The `+memory +pids +cpu` words for `cgroup.subtree_control`.
    fn enable_words(self) -> Vec<&'static str> {
        [
            (self.memory, "+memory"),
            (self.pids, "+pids"),
            (self.cpu, "+cpu"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect()
    }
}

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// cgroup2 on /sys/fs/cgroup.
    V2,
    /// v1 controllers, cgroup2 on /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 only.
    V1,
    /// Neither.
    Unknown,
}

/// What [`choose`] decides from. Gathered by [`HostFacts::gather`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// We run as root.
    pub root: bool,
    /// The cgroup layout.
    pub layout: Layout,
    /// Our own cgroup v2 directory on the host (the `0::` line under the cgroup2 mount), if any.
    pub own_v2: Option<PathBuf>,
    /// We may create cgroups in `own_v2`.
    pub own_v2_writable: bool,
    /// `cgroup.controllers` of `own_v2`.
    pub own_v2_controllers: Controllers,
    /// `cgroup.subtree_control` of `own_v2`.
    pub own_v2_subtree: Controllers,
    /// `cgroup.controllers` of the v2 root (what root may enable).
    pub root_v2_controllers: Controllers,
    /// v1 hierarchies mounted, with our own cgroup in each: `(controller, our directory)`.
    pub v1: Vec<(String, PathBuf)>,
    /// systemd runs the host (`/run/systemd/system`).
    pub systemd: bool,
    /// A user D-Bus to reach our systemd manager (`DBUS_SESSION_BUS_ADDRESS`, or `$XDG_RUNTIME_DIR/bus`).
    pub user_bus: bool,
    /// The controllers our systemd user manager may delegate (`cgroup.controllers` of `user@UID.service`).
    pub user_manager_controllers: Option<Controllers>,
}

/// The way the sandbox gets its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Root on cgroup v2: under this directory (`/sys/fs/cgroup/thv-sandbox`).
    RootV2 {
        /// The parent of every sandbox's cgroup.
        base: PathBuf,
    },
    /// Root on v1: in each of these hierarchies, under our own cgroup there: `(controller, our directory)`.
    RootV1 {
        /// One per controller.
        dirs: Vec<(String, PathBuf)>,
    },
    /// A transient scope of the user's systemd manager, with `Delegate=yes`.
    SystemdScope,
    /// Our own delegated cgroup v2.
    Delegated {
        /// Our cgroup.
        base: PathBuf,
    },
}

impl Route {
    /// How `doctor` and `inspect` name it.
    pub fn describe(&self) -> String {
        match self {
            Route::RootV2 { base } => {
                format!("as root, a cgroup v2 of its own under {}", base.display())
            }
            Route::RootV1 { dirs } => format!(
                "as root, cgroup v1 ({}) below thv-sandbox's own cgroups",
                dirs.iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Route::SystemdScope => {
                "a transient systemd scope with Delegate=yes from your user manager (over D-Bus)"
                    .into()
            }
            Route::Delegated { base } => format!("inside the delegated cgroup {}", base.display()),
        }
    }
}

/// The route and the controllers it offers, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// How the sandbox gets a cgroup; `None`: it gets none.
    pub route: Option<Route>,
    /// The controllers the route offers.
    pub controllers: Controllers,
    /// Why there is no route, or why a controller is missing (empty when everything is there).
    pub why: String,
}

/// The hint every refusal and warning points at.
pub const DOCTOR_HINT: &str = "`thv-sandbox doctor` says which limits apply on this host and why";

/// Chooses how the sandbox gets a cgroup.
pub fn choose(f: &HostFacts) -> Choice {
    let missing = |have: Controllers, where_: &str| {
        let names: Vec<&str> = [
            ("memory", have.memory),
            ("pids", have.pids),
            ("cpu", have.cpu),
        ]
        .into_iter()
        .filter_map(|(n, ok)| (!ok).then_some(n))
        .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!("no {} controller in {where_}", names.join(", "))
        }
    };
    if f.root {
        return match f.layout {
            Layout::V2 => Choice {
                route: Some(Route::RootV2 {
                    base: PathBuf::from("/sys/fs/cgroup/thv-sandbox"),
                }),
                controllers: f.root_v2_controllers,
                why: missing(f.root_v2_controllers, "the cgroup v2 root"),
            },
            Layout::Hybrid | Layout::V1 if !f.v1.is_empty() => {
                let have = Controllers::from_names(f.v1.iter().map(|(c, _)| c.as_str()));
                Choice {
                    route: Some(Route::RootV1 { dirs: f.v1.clone() }),
                    controllers: have,
                    why: missing(have, "the cgroup v1 hierarchies"),
                }
            }
            _ => none("no cgroup hierarchy with the memory, pids or cpu controller is mounted"),
        };
    }
    match f.layout {
        Layout::V2 if f.systemd && f.user_bus => {
            let have = f.user_manager_controllers.unwrap_or(Controllers {
                memory: true,
                pids: true,
                cpu: true,
            });
            Choice {
                route: Some(Route::SystemdScope),
                controllers: have,
                why: missing(have, "what your systemd user manager delegates"),
            }
        }
        Layout::V2 | Layout::Hybrid => {
            let Some(own) = &f.own_v2 else {
                return none("this process has no cgroup v2 (no 0:: line in /proc/self/cgroup)");
            };
            if !f.own_v2_writable {
                return none(&format!(
                    "your cgroup {} is not delegated to you (not writable){}",
                    own.display(),
                    if f.layout == Layout::V2 && f.systemd {
                        ", and no user D-Bus reaches your systemd manager (no DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus)"
                    } else {
                        ""
                    }
                ));
            }
            let usable = Controllers {
                memory: f.own_v2_controllers.memory && f.own_v2_subtree.memory,
                pids: f.own_v2_controllers.pids && f.own_v2_subtree.pids,
                cpu: f.own_v2_controllers.cpu && f.own_v2_subtree.cpu,
            };
            let mut why = missing(
                f.own_v2_controllers,
                &format!("your delegated cgroup {}", own.display()),
            );
            if f.layout == Layout::Hybrid && !f.own_v2_controllers.memory {
                why.push_str(" (a cgroup v1 hybrid host: memory, pids and cpu are v1 controllers, which only root may configure)");
            }
            if why.is_empty() && usable != f.own_v2_controllers {
                why = format!(
                    "cgroup v2's no-internal-processes rule: {} holds processes (this one among them), so controllers cannot be enabled below it",
                    own.display()
                );
            }
            Choice {
                route: Some(Route::Delegated { base: own.clone() }),
                controllers: usable,
                why,
            }
        }
        _ => none("the host has no cgroup v2 hierarchy, and only root may configure cgroup v1"),
    }
}

fn none(why: &str) -> Choice {
    Choice {
        route: None,
        controllers: Controllers::default(),
        why: why.to_owned(),
    }
}

/// What happens to the limits of one run: the route and the limits it enforces, and the warning for the defaults
/// it cannot.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// How the sandbox gets its cgroup; `None`: no cgroup (nothing to enforce).
    pub route: Option<Route>,
    /// The limits enforced (those that cannot be are `None`).
    pub enforced: Limits,
    /// One line for the user when a limit that is not explicit cannot be enforced.
    pub warning: Option<String>,
}

/// An explicit limit that cannot be enforced: the run is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot enforce {limits} on this host: {why}")]
pub struct Unenforceable {
    /// `--memory 512 MiB`, …
    pub limits: String,
    /// Why.
    pub why: String,
}

/// Decides, from the choice and the limits, what is enforced, what is warned about and what is refused.
pub fn decide(choice: &Choice, wanted: &Limits) -> Result<Decision, Unenforceable> {
    let mut enforced = *wanted;
    let mut refused = Vec::new();
    let mut dropped = Vec::new();
    let c = choice.controllers;
    let ok = choice.route.is_some();
    if wanted.memory.value.is_some() && !(ok && c.memory) {
        enforced.memory.value = None;
        let what = format!(
            "memory {}",
            limits::format_bytes(wanted.memory.value.unwrap_or(0))
        );
        if wanted.memory.source.explicit() {
            refused.push(what)
        } else {
            dropped.push("memory")
        }
    }
    if wanted.pids.value.is_some() && !(ok && c.pids) {
        enforced.pids.value = None;
        let what = format!("pids {}", wanted.pids.value.unwrap_or(0));
        if wanted.pids.source.explicit() {
            refused.push(what)
        } else {
            dropped.push("pids")
        }
    }
    if wanted.cpus.value.is_some() && !(ok && c.cpu) {
        enforced.cpus.value = None;
        let what = format!("cpus {}", wanted.cpus.value.unwrap_or(0.0));
        if wanted.cpus.source.explicit() {
            refused.push(what)
        } else {
            dropped.push("cpu")
        }
    }
    if !refused.is_empty() {
        return Err(Unenforceable {
            limits: refused.join(", "),
            why: choice.why.clone(),
        });
    }
    let warning = (!dropped.is_empty()).then(|| {
        format!(
            "no {} limit for this server: {}; {DOCTOR_HINT}",
            dropped.join("/"),
            choice.why
        )
    });
    Ok(Decision {
        route: if enforced.any() {
            choice.route.clone()
        } else {
            None
        },
        enforced,
        warning,
    })
}

impl HostFacts {
    /// Reads the facts of this host and process.
    pub fn gather() -> HostFacts {
        use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
        let fs_type = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
        let layout = match fs_type("/sys/fs/cgroup") {
            Some(t) if t == CGROUP2_SUPER_MAGIC => Layout::V2,
            Some(t) if t == TMPFS_MAGIC => {
                if fs_type("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
                    Layout::Hybrid
                } else {
                    Layout::V1
                }
            }
            _ => Layout::Unknown,
        };
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let v2_mount = match layout {
            Layout::V2 => Some(Path::new("/sys/fs/cgroup")),
            Layout::Hybrid => Some(Path::new("/sys/fs/cgroup/unified")),
            _ => None,
        };
        let own_v2 = v2_mount.and_then(|m| v2_dir(&proc_cgroup, m));
        let names = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        let ctl = |p: &Path| Controllers::from_names(names(p).split_whitespace());
        let (own_v2_writable, own_v2_controllers, own_v2_subtree) = match &own_v2 {
            Some(d) => (
                nix::unistd::access(
                    d,
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .is_ok(),
                ctl(&d.join("cgroup.controllers")),
                ctl(&d.join("cgroup.subtree_control")),
            ),
            None => (false, Controllers::default(), Controllers::default()),
        };
        let root_v2_controllers = v2_mount
            .map(|m| ctl(&m.join("cgroup.controllers")))
            .unwrap_or_default();
        let v1 = if matches!(layout, Layout::Hybrid | Layout::V1) {
            v1_dirs(&proc_cgroup, |c| {
                let p = Path::new("/sys/fs/cgroup").join(c);
                fs_type(&p.to_string_lossy()).is_some_and(|t| t.0 == 0x27e0eb) // CGROUP_SUPER_MAGIC
            })
        } else {
            Vec::new()
        };
        let uid = nix::unistd::getuid().as_raw();
        let user_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty())
            || std::env::var_os("XDG_RUNTIME_DIR")
                .is_some_and(|d| Path::new(&d).join("bus").exists());
        let manager = Path::new("/sys/fs/cgroup/user.slice")
            .join(format!("user-{uid}.slice"))
            .join(format!("user@{uid}.service/cgroup.controllers"));
        let user_manager_controllers = (layout == Layout::V2)
            .then(|| fs::read_to_string(&manager).ok())
            .flatten()
            .map(|s| Controllers::from_names(s.split_whitespace()));
        HostFacts {
            root: nix::unistd::geteuid().is_root(),
            layout,
            own_v2,
            own_v2_writable,
            own_v2_controllers,
            own_v2_subtree,
            root_v2_controllers,
            v1,
            systemd: Path::new("/run/systemd/system").is_dir(),
            user_bus,
            user_manager_controllers,
        }
    }
}

/// Our directory in each v1 hierarchy of `memory`, `pids` and `cpu` (from `/proc/self/cgroup`), where `mounted`
/// says the hierarchy is at `/sys/fs/cgroup/<controller>`.
pub fn v1_dirs(proc_cgroup: &str, mounted: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for want in ["memory", "pids", "cpu"] {
        let found = proc_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            names
                .split(',')
                .any(|n| n == want)
                .then(|| path.trim().to_owned())
        });
        if let Some(path) = found {
            if mounted(want) {
                out.push((
                    want.to_owned(),
                    Path::new("/sys/fs/cgroup")
                        .join(want)
                        .join(path.trim_start_matches('/')),
                ));
            }
        }
    }
    out
}

/// What the runner is told about the sandbox's cgroup (`RunnerPlan::cgroup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupPlan {
    /// The sandbox's cgroup directories on the host (one per v1 hierarchy, or one v2), made and limited already.
    Dirs(Vec<PathBuf>),
    /// The keeper is in the `keeper` leaf of a transient scope: the sandbox's cgroup is `sandbox` beside it.
    BesideKeeper,
}

/// The leaf of a cgroup v2 sandbox cgroup that the runner init moves into once its cgroup namespace is rooted at
/// the sandbox's cgroup, so that the sandbox's cgroup holds no process itself when libcontainer enables
/// controllers in it (see the module's documentation).
pub const INIT_LEAF: &str = "init";

/// Makes the [`INIT_LEAF`] of a cgroup v2 directory (nothing on cgroup v1, which has no such rule).
fn make_init_leaf(dir: &Path) -> io::Result<()> {
    if dir.join("cgroup.controllers").exists() {
        create_dir(&dir.join(INIT_LEAF))?;
    }
    Ok(())
}

/// The memory limit's size in the out-of-memory message, and the limits, for the runner plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCgroup {
    /// Where.
    pub plan: CgroupPlan,
    /// What.
    pub limits: Limits,
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// Writes the v2 limits into `dir`.
fn write_v2_limits(dir: &Path, l: &Limits) -> io::Result<()> {
    if let Some(m) = l.memory.value {
        write(dir, "memory.max", &m.to_string())?;
        // No swap beyond the limit (absent without swap accounting).
        if dir.join("memory.swap.max").exists() {
            write(dir, "memory.swap.max", "0")?;
        }
    }
    if let Some(p) = l.pids.value {
        write(dir, "pids.max", &p.to_string())?;
    }
    if let Some(c) = l.cpus.value {
        write(
            dir,
            "cpu.max",
            &format!("{} {}", limits::cpu_quota_us(c), limits::CPU_PERIOD_US),
        )?;
        // The burst (Linux ≥ 5.14; absent before): see `limits::cpu_burst_us`.
        if dir.join("cpu.max.burst").exists() {
            write(dir, "cpu.max.burst", &limits::cpu_burst_us(c).to_string())?;
        }
    }
    Ok(())
}

/// Enables `c` in `dir/cgroup.subtree_control` (each separately: one the parent lacks must not stop the others).
fn enable(dir: &Path, c: Controllers) -> io::Result<()> {
    for w in c.enable_words() {
        write(dir, "cgroup.subtree_control", w)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

/// Makes the sandbox's cgroup for `route` (not the systemd scope: see [`join_scope`]) and writes the limits.
/// Returns its directories (made so far, also on error, for the caller to remove).
pub fn prepare(
    route: &Route,
    id: &str,
    l: &Limits,
) -> Result<Vec<PathBuf>, (Vec<PathBuf>, io::Error)> {
    let mut made = Vec::new();
    let result = (|| -> io::Result<()> {
        let wanted = Controllers {
            memory: l.memory.value.is_some(),
            pids: l.pids.value.is_some(),
            cpu: l.cpus.value.is_some(),
        };
        match route {
            Route::RootV2 { base } => {
                let top = base.parent().unwrap_or(Path::new("/sys/fs/cgroup"));
                enable(top, wanted)?;
                create_dir(base)?;
                enable(base, wanted)?;
                let dir = base.join(id);
                create_dir(&dir)?;
                made.push(dir.clone());
                write_v2_limits(&dir, l)?;
                make_init_leaf(&dir)
            }
            Route::Delegated { base } => {
                let dir = base.join(format!("thv-sandbox-{id}"));
                create_dir(&dir)?;
                made.push(dir.clone());
                write_v2_limits(&dir, l)?;
                make_init_leaf(&dir)
            }
            Route::RootV1 { dirs } => {
                for (controller, own) in dirs {
                    let on = match controller.as_str() {
                        "memory" => wanted.memory,
                        "pids" => wanted.pids,
                        "cpu" => wanted.cpu,
                        _ => false,
                    };
                    if !on {
                        continue;
                    }
                    let dir = own.join(format!("thv-sandbox-{id}"));
                    create_dir(&dir)?;
                    made.push(dir.clone());
                    match controller.as_str() {
                        "memory" => {
                            let m = l.memory.value.unwrap_or(u64::MAX).to_string();
                            write(&dir, "memory.limit_in_bytes", &m)?;
                            // Memory + swap: no swap beyond the limit (present only with swap accounting).
                            if dir.join("memory.memsw.limit_in_bytes").exists() {
                                write(&dir, "memory.memsw.limit_in_bytes", &m)?;
                            }
                        }
                        "pids" => write(&dir, "pids.max", &l.pids.value.unwrap_or(0).to_string())?,
                        _ => {
                            let c = l.cpus.value.unwrap_or(1.0);
                            write(
                                &dir,
                                "cpu.cfs_period_us",
                                &limits::CPU_PERIOD_US.to_string(),
                            )?;
                            write(
                                &dir,
                                "cpu.cfs_quota_us",
                                &limits::cpu_quota_us(c).to_string(),
                            )?;
                            if dir.join("cpu.cfs_burst_us").exists() {
                                write(
                                    &dir,
                                    "cpu.cfs_burst_us",
                                    &limits::cpu_burst_us(c).to_string(),
                                )?;
                            }
                        }
                    }
                }
                Ok(())
            }
            Route::SystemdScope => Err(io::Error::other("a systemd scope is made by join_scope")),
        }
    })();
    match result {
        Ok(()) => Ok(made),
        Err(e) => Err((made, e)),
    }
}

/// Removes the sandbox's cgroup directories (empty by now), waiting up to two seconds for the last processes of
/// the sandbox to be gone.
pub fn remove(dirs: &[PathBuf], child: &str) {
    let inner: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| [d.join(child.trim_matches('/')), d.join(INIT_LEAF)])
        .collect();
    for d in inner.iter().chain(dirs) {
        for _ in 0..200 {
            match fs::remove_dir(d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

/// The systemd route, done by the supervisor for a keeper that exists (its pid is the scope's first process; see
/// [`begin_scope`] for when): a transient scope `thv-sandbox-<id>.scope` with `Delegate=yes` from the user's
/// manager, the keeper moved into its `keeper` leaf, the controllers enabled, and `sandbox` beside it with the
/// limits. Returns the scope's directory.
pub fn join_scope(id: &str, keeper: i32, l: &Limits) -> Result<PathBuf, String> {
    use libcgroups::common::CgroupManager;
    let manager = libcgroups::systemd::manager::Manager::new(
        PathBuf::from("/sys/fs/cgroup"),
        PathBuf::from(format!("thv-sandbox:{id}")),
        format!("thv-sandbox {id}"),
        false,
        // How long libcgroups waits for systemd to have put the keeper into the new scope. It returns as soon as
        // it has; 5 s once ran out in the emulated test VM with two sandboxes starting at once.
        std::time::Duration::from_secs(30),
    )
    .map_err(|e| format!("reach your systemd user manager over D-Bus: {}", chain(&e)))?;
    manager
        .add_task(nix::unistd::Pid::from_raw(keeper))
        .map_err(|e| {
            format!(
                "create the transient scope thv-sandbox-{id}.scope: {}",
                chain(&e)
            )
        })?;
    let own = fs::read_to_string(format!("/proc/{keeper}/cgroup")).map_err(|e| e.to_string())?;
    let scope = v2_dir(&own, Path::new("/sys/fs/cgroup")).ok_or("the keeper has no cgroup v2")?;
    if !scope.ends_with(format!("thv-sandbox-{id}.scope")) {
        return Err(format!(
            "the keeper is in {}, not in its scope",
            scope.display()
        ));
    }
    let setup = || -> io::Result<()> {
        let leaf = scope.join("keeper");
        create_dir(&leaf)?;
        write(&leaf, "cgroup.procs", &keeper.to_string())?;
        let available = Controllers::from_names(
            fs::read_to_string(scope.join("cgroup.controllers"))?.split_whitespace(),
        );
        let wanted = Controllers {
            memory: l.memory.value.is_some() && available.memory,
            pids: l.pids.value.is_some() && available.pids,
            cpu: l.cpus.value.is_some() && available.cpu,
        };
        // A limit the user set whose controller the manager does not delegate: refused, never dropped silently.
        for (set, have, explicit, name) in [
            (
                l.memory.value.is_some(),
                available.memory,
                l.memory.source.explicit(),
                "memory",
            ),
            (
                l.pids.value.is_some(),
                available.pids,
                l.pids.source.explicit(),
                "pids",
            ),
            (
                l.cpus.value.is_some(),
                available.cpu,
                l.cpus.source.explicit(),
                "cpu",
            ),
        ] {
            if set && !have && explicit {
                return Err(io::Error::other(format!(
                    "your systemd user manager does not delegate the {name} controller to the scope"
                )));
            }
        }
        enable(&scope, wanted)?;
        let sandbox = scope.join("sandbox");
        create_dir(&sandbox)?;
        let mut enforce = *l;
        if !wanted.memory {
            enforce.memory.value = None;
        }
        if !wanted.pids {
            enforce.pids.value = None;
        }
        if !wanted.cpu {
            enforce.cpus.value = None;
        }
        write_v2_limits(&sandbox, &enforce)?;
        make_init_leaf(&sandbox)
    };
    setup().map_err(|e| format!("set up the sandbox's cgroup in {}: {e}", scope.display()))?;
    Ok(scope)
}

/// A scope asked for before the keeper reported (see [`begin_scope`]).
struct EarlyScope {
    id: String,
    keeper: i32,
    asked: std::thread::JoinHandle<Result<PathBuf, String>>,
}

static EARLY_SCOPE: std::sync::Mutex<Option<EarlyScope>> = std::sync::Mutex::new(None);

/// The cgroup v2 directory under `mount` that a `/proc/PID/cgroup` text (`proc_cgroup`) names (its `0::` line).
fn v2_dir(proc_cgroup: &str, mount: &Path) -> Option<PathBuf> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| mount.join(p.trim().trim_start_matches('/')))
}

/// Takes the kernel's cgroup migration lock once, now, in a thread of its own, where the sandbox's cgroup is ours
/// to make (root's routes, a delegated cgroup). The first move of a process between cgroups after a quiet spell waits for an RCU grace
/// period (the lock is a per-CPU rw-semaphore whose writer waits until every reader uses the slow path: 11–14 ms on
/// this 2-core machine, measured; a second move right after takes 0.07 ms). The runner init's move into the
/// sandbox's cgroup comes ~2 ms after the run's preparation; begun at its end, that wait overlaps the runner's
/// start. Not earlier: the waiting move holds `cgroup_mutex`, which every mkdir in cgroupfs takes (measured: begun
/// at the limits decision, it held up the creation of the sandbox's directories by 10 ms). The move itself is of
/// this process into the cgroup it is in (writing `0` to its `cgroup.procs`): it changes nothing. Errors are
/// ignored: the runner init's move then pays the wait, as before. Returns the thread (nobody needs to wait for it).
pub fn warm_migration_lock(route: &Route) -> Option<std::thread::JoinHandle<()>> {
    let procs = match route {
        Route::RootV1 { dirs } => dirs.first().map(|(_, own)| own.join("cgroup.procs")),
        Route::RootV2 { base } => {
            let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            base.parent()
                .and_then(|mount| v2_dir(&own, mount))
                .map(|d| d.join("cgroup.procs"))
        }
        // Ours, and we are in it (a refused no-op move is only a warm-up missed).
        Route::Delegated { base } => Some(base.join("cgroup.procs")),
        // systemd moves the keeper into its scope, early already (`begin_scope`).
        Route::SystemdScope => None,
    };
    let procs = procs?;
    let warmed = crate::sandbox::spawn_with_signals_blocked("cgroup-lock", move || {
        if let Err(e) = fs::write(&procs, "0") {
            tracing::debug!("{}: {e}", procs.display());
        }
    });
    warmed
        .map_err(|e| tracing::debug!("cgroup-lock thread: {e}"))
        .ok()
}

/// Asks for the scope of run `id` now, in a thread, for a keeper that already exists (the one `run` forked at its
/// start, still waiting for its run): the round trips to the user's manager over D-Bus, and its wait for the keeper
/// to be moved, then overlap the writing of the run directory and the keeper's start instead of following them.
/// [`scope_for`] takes the answer. A run that fails before takes nothing: its keeper exits, the scope is empty,
/// and systemd removes an empty transient scope by itself.
pub fn begin_scope(id: &str, keeper: i32, l: &Limits) {
    if crate::trace::enabled() {
        crate::trace::mark(&format!("scope: asked early for thv-sandbox-{id}.scope"));
    }
    let (owned_id, limits) = (id.to_owned(), *l);
    // With every signal blocked: this thread runs while the supervisor takes SIGCHLD from a signalfd, and one it
    // took would be dropped (the supervisor then waited on a runner that had exited: the test VM).
    let asked = crate::sandbox::spawn_with_signals_blocked("thv-scope", move || {
        join_scope(&owned_id, keeper, &limits)
    });
    if let Ok(asked) = asked {
        *EARLY_SCOPE.lock().unwrap_or_else(|e| e.into_inner()) = Some(EarlyScope {
            id: id.to_owned(),
            keeper,
            asked,
        });
    }
}

/// The scope of run `id` with `keeper` in it: the answer [`begin_scope`] asked for, when it was for this run and
/// this keeper, else [`join_scope`] now.
pub fn scope_for(id: &str, keeper: i32, l: &Limits) -> Result<PathBuf, String> {
    let early = EARLY_SCOPE.lock().unwrap_or_else(|e| e.into_inner()).take();
    match early {
        Some(e) if e.id == id && e.keeper == keeper => {
            crate::trace::mark("scope: early answer taken");
            e.asked
                .join()
                .unwrap_or_else(|_| Err("the scope request panicked".to_owned()))
        }
        // Asked for another keeper (the forked one was gone and the runner was spawned instead): that answer is
        // waited for, so that the two requests do not race, and the scope asked for again.
        Some(e) => {
            let _ = e.asked.join();
            join_scope(id, keeper, l)
        }
        None => join_scope(id, keeper, l),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    crate::chain::messages(e).join(": ")
}

/// What the keeper holds of the sandbox's cgroup: opened before it enters its namespaces (host paths, host
/// credentials), used by the runner init to move in, and by the keeper to read the out-of-memory count and remove
/// the cgroup at the end.
#[derive(Debug)]
pub struct Held {
    /// `cgroup.procs` of each directory.
    procs: Vec<OwnedFd>,
    /// `cgroup.procs` of the [`INIT_LEAF`] of the cgroup v2 directory.
    leaf: Option<OwnedFd>,
    /// `(parent directory, name)` of each directory, for its removal.
    parents: Vec<(OwnedFd, String)>,
    /// Each directory itself, with the name of libcontainer's cgroup inside it (cgroup v2), removed first.
    selves: Vec<(OwnedFd, String)>,
    /// `memory.events` (v2) or `memory.oom_control` (v1).
    events: Option<OwnedFd>,
}

impl Held {
    /// Opens what the keeper needs for `plan`; `child` is libcontainer's cgroup inside ours (the spec's
    /// `cgroupsPath`, made there on cgroup v2).
    pub fn open(plan: &CgroupPlan, child: &str) -> io::Result<Held> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        let dirs = match plan {
            CgroupPlan::Dirs(d) => d.clone(),
            CgroupPlan::BesideKeeper => {
                let own = fs::read_to_string("/proc/self/cgroup")?;
                let here = v2_dir(&own, Path::new("/sys/fs/cgroup"))
                    .ok_or_else(|| io::Error::other("no cgroup v2"))?;
                let scope = here.parent().ok_or_else(|| io::Error::other("no scope"))?;
                vec![scope.join("sandbox")]
            }
        };
        let mut held = Held {
            procs: Vec::new(),
            leaf: None,
            parents: Vec::new(),
            selves: Vec::new(),
            events: None,
        };
        let ctx = |d: &Path, e: nix::Error| io::Error::other(format!("{}: {e}", d.display()));
        for d in &dirs {
            let procs = d.join("cgroup.procs");
            held.procs.push(
                open(&procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| ctx(&procs, e))
                    .map(owned)?,
            );
            let me = open(
                d.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ctx(d, e))
            .map(owned)?;
            let leaf = d.join(INIT_LEAF);
            let leaf_entry = if leaf.is_dir() {
                let procs = leaf.join("cgroup.procs");
                held.leaf = Some(
                    open(&procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(|e| ctx(&procs, e))
                        .map(owned)?,
                );
                let again = nix::unistd::dup(std::os::fd::AsRawFd::as_raw_fd(&me))
                    .map_err(|e| ctx(d, e))
                    .map(owned)?;
                Some((again, INIT_LEAF.to_owned()))
            } else {
                None
            };
            held.selves.push((me, child.trim_matches('/').to_owned()));
            held.selves.extend(leaf_entry);
            if let (Some(parent), Some(name)) = (d.parent(), d.file_name()) {
                let fd = open(
                    parent,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ctx(parent, e))
                .map(owned)?;
                held.parents.push((fd, name.to_string_lossy().into_owned()));
            }
            for f in ["memory.events", "memory.oom_control"] {
                if held.events.is_none() && d.join(f).exists() {
                    held.events = open(
                        &d.join(f),
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .ok()
                    .map(owned);
                }
            }
        }
        Ok(held)
    }

    /// In the runner init, first thing: moves this process into the sandbox's cgroup(s).
    pub fn enter(&self) -> io::Result<()> {
        for fd in &self.procs {
            nix::unistd::write(fd.as_fd(), b"0")?;
        }
        Ok(())
    }

    /// In the runner init, once its cgroup namespace is rooted at the sandbox's cgroup: on into the
    /// [`INIT_LEAF`], so that the sandbox's cgroup itself holds no process when libcontainer makes its own inside.
    pub fn enter_leaf(&self) -> io::Result<()> {
        if let Some(fd) = &self.leaf {
            nix::unistd::write(fd.as_fd(), b"0")?;
        }
        Ok(())
    }

    /// Whether there is anything to enter.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// How many processes of the sandbox the kernel killed for memory so far.
    pub fn oom_kills(&self) -> u64 {
        let Some(fd) = &self.events else { return 0 };
        let mut buf = [0u8; 512];
        let n = nix::sys::uio::pread(fd, &mut buf, 0).unwrap_or(0);
        parse_oom_kills(&String::from_utf8_lossy(&buf[..n]))
    }

    /// Removes the sandbox's cgroup(s), once the sandbox is gone (retrying while its last processes exit).
    pub fn remove(&self) {
        for (dir, name) in self.selves.iter().chain(&self.parents) {
            let parent = dir;
            for _ in 0..200 {
                match nix::unistd::unlinkat(
                    Some(std::os::fd::AsRawFd::as_raw_fd(parent)),
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::RemoveDir,
                ) {
                    Err(nix::errno::Errno::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The line a user reads when the kernel stopped the server for memory.
pub fn oom_message(limit: Option<u64>) -> String {
    match limit {
        Some(m) => format!(
            "stopped: out of memory at the {} limit (raise it with --memory, e.g. --memory {})",
            limits::format_bytes(m),
            suggest(m)
        ),
        None => "stopped: out of memory (the kernel killed the server)".into(),
    }
}

fn suggest(m: u64) -> String {
    let doubled = m.saturating_mul(2);
    if doubled.is_multiple_of(1 << 30) {
        format!("{}g", doubled >> 30)
    } else {
        format!("{}m", doubled >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_directory_is_the_0_line_under_the_mount() {
        let text = "12:pids:/a\n0::/user.slice/x.scope\n";
        assert_eq!(
            v2_dir(text, Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/x.scope"))
        );
        assert_eq!(v2_dir("0::/\n", Path::new("/m")), Some(PathBuf::from("/m")));
        assert_eq!(v2_dir("4:memory:/a\n", Path::new("/m")), None);
    }

    #[test]
    fn the_migration_warm_up_moves_nothing() {
        // This host's own route (root: v1 or v2 directories; a user: a delegated cgroup or none).
        let Some(route) = choose(&HostFacts::gather()).route else {
            return;
        };
        let before = fs::read_to_string("/proc/self/cgroup").unwrap();
        if let Some(t) = warm_migration_lock(&route) {
            t.join().unwrap();
        }
        assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), before);
    }
    use crate::sandbox::limits::{Limit, LimitSource};

    fn facts() -> HostFacts {
        HostFacts {
            root: false,
            layout: Layout::V2,
            own_v2: Some(PathBuf::from("/sys/fs/cgroup/user.slice/u.scope")),
            own_v2_writable: false,
            own_v2_controllers: Controllers::default(),
            own_v2_subtree: Controllers::default(),
            root_v2_controllers: Controllers::from_names(["memory", "pids", "cpu"]),
            v1: Vec::new(),
            systemd: true,
            user_bus: true,
            user_manager_controllers: Some(Controllers::from_names(["memory", "pids", "cpu"])),
        }
    }

    const ALL: Controllers = Controllers {
        memory: true,
        pids: true,
        cpu: true,
    };

    #[test]
    fn a_user_on_a_systemd_v2_host_gets_a_scope_and_root_a_cgroup_of_its_own() {
        let c = choose(&facts());
        assert_eq!(c.route, Some(Route::SystemdScope));
        assert_eq!((c.controllers, c.why.as_str()), (ALL, ""));
        let mut f = facts();
        f.user_manager_controllers = Some(Controllers::from_names(["memory", "pids"]));
        let c = choose(&f);
        assert!(c.why.contains("no cpu controller"), "{}", c.why);
        let mut f = facts();
        f.root = true;
        assert!(matches!(choose(&f).route, Some(Route::RootV2 { .. })));
        f.layout = Layout::Hybrid;
        f.v1 = v1_dirs("4:memory:/a/b\n8:pids:/\n1:cpu,cpuacct:/\n0::/\n", |_| true);
        assert_eq!(
            f.v1,
            [
                ("memory".into(), PathBuf::from("/sys/fs/cgroup/memory/a/b")),
                ("pids".into(), PathBuf::from("/sys/fs/cgroup/pids")),
                ("cpu".into(), PathBuf::from("/sys/fs/cgroup/cpu")),
            ]
        );
        let c = choose(&f);
        assert!(matches!(c.route, Some(Route::RootV1 { .. })));
        assert_eq!(c.controllers, ALL);
    }

    #[test]
    fn without_a_user_bus_the_delegated_cgroup_is_used_and_its_rules_named() {
        let mut f = facts();
        f.user_bus = false;
        let c = choose(&f);
        assert_eq!(c.route, None);
        assert!(
            c.why.contains("not delegated") && c.why.contains("D-Bus"),
            "{}",
            c.why
        );
        // This machine as a CI user: a chowned cgroup2 on a hybrid host with only hugetlb.
        f.layout = Layout::Hybrid;
        f.systemd = false;
        f.own_v2_writable = true;
        f.own_v2_controllers = Controllers::from_names(["hugetlb"]);
        let c = choose(&f);
        assert_eq!(c.controllers, Controllers::default());
        assert!(
            c.why.contains("no memory, pids, cpu controller") && c.why.contains("hybrid"),
            "{}",
            c.why
        );
        // Delegated with every controller but none enabled below it: the no-internal-processes rule.
        f.layout = Layout::V2;
        f.own_v2_controllers = ALL;
        let c = choose(&f);
        assert!(c.why.contains("no-internal-processes"), "{}", c.why);
        assert_eq!(c.controllers, Controllers::default());
        f.own_v2_subtree = ALL;
        let c = choose(&f);
        assert_eq!((c.controllers, c.why.as_str()), (ALL, ""));
        assert!(matches!(c.route, Some(Route::Delegated { .. })));
    }

    #[test]
    fn defaults_warn_and_explicit_limits_are_refused_where_they_cannot_be_enforced() {
        let nothing = Choice {
            route: None,
            controllers: Controllers::default(),
            why: "no cgroup".into(),
        };
        let d = decide(&nothing, &Limits::default()).unwrap();
        assert_eq!(d.route, None);
        assert!(!d.enforced.any());
        let w = d.warning.unwrap();
        assert!(
            w.contains("no memory/pids/cpu limit")
                && w.contains("no cgroup")
                && w.contains("doctor"),
            "{w}"
        );
        let mut l = Limits {
            memory: Limit {
                value: Some(512 << 20),
                source: LimitSource::Flag,
            },
            ..Default::default()
        };
        let e = decide(&nothing, &l).unwrap_err();
        assert_eq!(e.limits, "memory 512 MiB");
        assert!(e.to_string().contains("no cgroup"));
        // Registry proposals are not the user's: warned about, not refused.
        l.memory.source = LimitSource::Registry;
        assert!(decide(&nothing, &l).is_ok());
        // Unlimited everything: nothing to enforce, nothing to say.
        let free = Limits {
            memory: Limit {
                value: None,
                source: LimitSource::Flag,
            },
            cpus: Limit {
                value: None,
                source: LimitSource::Flag,
            },
            pids: Limit {
                value: None,
                source: LimitSource::Flag,
            },
        };
        assert_eq!(decide(&nothing, &free).unwrap().warning, None);
        // A route with only pids: memory and cpu defaults are warned about, pids enforced.
        let some = Choice {
            route: Some(Route::RootV2 { base: "/x".into() }),
            controllers: Controllers {
                pids: true,
                ..Default::default()
            },
            why: "no memory, cpu controller in x".into(),
        };
        let d = decide(&some, &Limits::default()).unwrap();
        assert_eq!(d.route, Some(Route::RootV2 { base: "/x".into() }));
        assert_eq!(d.enforced.pids.value, Some(limits::DEFAULT_PIDS));
        assert_eq!(d.enforced.memory.value, None);
        assert!(d.warning.unwrap().starts_with("no memory/cpu limit"));
    }

    #[test]
    fn the_systemd_scope_is_taken_for_the_defaults_and_for_limits_the_user_asked_for() {
        let scope = Choice {
            route: Some(Route::SystemdScope),
            controllers: ALL,
            why: String::new(),
        };
        // Defaults: the scope, every default enforced, no warning.
        let d = decide(&scope, &Limits::default()).unwrap();
        assert_eq!(d.route, Some(Route::SystemdScope));
        assert_eq!(d.enforced, Limits::default());
        assert_eq!(d.warning, None);
        // Asked for: the scope.
        let asked = Limits {
            memory: Limit {
                value: Some(512 << 20),
                source: LimitSource::Flag,
            },
            ..Default::default()
        };
        let d = decide(&scope, &asked).unwrap();
        assert_eq!(d.route, Some(Route::SystemdScope));
        assert_eq!(d.enforced.memory.value, Some(512 << 20));
    }

    #[test]
    fn oom_kills_are_read_from_v1_and_v2_files_and_told() {
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), 0);
        assert_eq!(
            oom_message(Some(512 << 20)),
            "stopped: out of memory at the 512 MiB limit (raise it with --memory, e.g. --memory 1g)"
        );
        assert!(oom_message(Some(300 << 20)).ends_with("--memory 600m)"));
    }
}
