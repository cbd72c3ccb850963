//! User namespace id maps: which image uid/gid becomes which host id.
//!
//! The sandbox always runs in a user namespace, also when `thv-sandbox` is started by root, so container root is
//! never host root. Three modes:
//! - [`IdMapMode::Single`]: no subordinate ids. The invoking user's uid/gid become the image user's uid/gid; no other
//!   id exists in the sandbox. Files the user mounts in stay writable for the server.
//! - [`IdMapMode::SubIds`]: the user has `/etc/subuid` and `/etc/subgid` ranges and the setuid `newuidmap` /
//!   `newgidmap`. The invoking user is still the image user; every other image id lands in the subordinate range.
//! - [`IdMapMode::HostRoot`]: invoked as root. All image ids, the image user's included, land in a range of
//!   unprivileged host ids (root's `/etc/subuid` entry, else [`ROOT_DEFAULT_RANGE`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The range used for root's sandboxes when root has no `/etc/subuid` entry: high and unlikely to be allocated.
pub const ROOT_DEFAULT_RANGE: (u32, u32) = (2_147_000_000, 65_536);

/// One line of a `uid_map`/`gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (on the host).
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// How ids are mapped, as the cache key and `doctor` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdMapMode {
    /// The invoking user only.
    Single,
    /// The invoking user plus a subordinate range.
    SubIds,
    /// Invoked as root: an unprivileged range only.
    HostRoot,
}

impl fmt::Display for IdMapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdMapMode::Single => "single",
            IdMapMode::SubIds => "subids",
            IdMapMode::HostRoot => "host-root",
        })
    }
}

/// The complete plan for one sandbox's user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// Which mode produced the maps.
    pub mode: IdMapMode,
    /// uid_map lines.
    pub uids: Vec<IdMapping>,
    /// gid_map lines.
    pub gids: Vec<IdMapping>,
    /// Where `newuidmap`/`newgidmap` are, in [`IdMapMode::SubIds`].
    pub helpers: Option<(PathBuf, PathBuf)>,
}

/// What the planner needs to know about the host.
#[derive(Debug, Clone)]
pub struct HostIds {
    /// The invoking user's effective uid.
    pub uid: u32,
    /// The invoking user's effective gid.
    pub gid: u32,
    /// Subordinate uid and gid ranges `(start, count)`, with the helpers, when all four are usable.
    pub subids: Option<SubIds>,
}

/// Subordinate id ranges and the setuid helpers that may map them.
#[derive(Debug, Clone)]
pub struct SubIds {
    /// `/etc/subuid` range.
    pub uids: (u32, u32),
    /// `/etc/subgid` range.
    pub gids: (u32, u32),
    /// `newuidmap` path.
    pub newuidmap: PathBuf,
    /// `newgidmap` path.
    pub newgidmap: PathBuf,
}

/// Plans the maps for an image user `(uid, gid)`.
pub fn plan(host: &HostIds, image_uid: u32, image_gid: u32) -> IdMap {
    if host.uid == 0 {
        let (ustart, ucount) = host
            .subids
            .as_ref()
            .map(|s| s.uids)
            .unwrap_or(ROOT_DEFAULT_RANGE);
        let (gstart, gcount) = host
            .subids
            .as_ref()
            .map(|s| s.gids)
            .unwrap_or(ROOT_DEFAULT_RANGE);
        // Host root itself appears once, just past the range, as an id nobody in the sandbox runs as or can switch
        // to (no capabilities, no_new_privs): the runner keeps its access to root's files while building the
        // sandbox, and whatever it creates inside has a mapped owner.
        return IdMap {
            mode: IdMapMode::HostRoot,
            uids: vec![
                IdMapping {
                    inside: 0,
                    outside: ustart,
                    count: ucount,
                },
                IdMapping {
                    inside: ucount,
                    outside: 0,
                    count: 1,
                },
            ],
            gids: vec![
                IdMapping {
                    inside: 0,
                    outside: gstart,
                    count: gcount,
                },
                IdMapping {
                    inside: gcount,
                    outside: 0,
                    count: 1,
                },
            ],
            helpers: None,
        };
    }
    match &host.subids {
        None => IdMap {
            mode: IdMapMode::Single,
            uids: vec![IdMapping {
                inside: image_uid,
                outside: host.uid,
                count: 1,
            }],
            gids: vec![IdMapping {
                inside: image_gid,
                outside: host.gid,
                count: 1,
            }],
            helpers: None,
        },
        Some(sub) => IdMap {
            mode: IdMapMode::SubIds,
            uids: around(image_uid, host.uid, sub.uids),
            gids: around(image_gid, host.gid, sub.gids),
            helpers: Some((sub.newuidmap.clone(), sub.newgidmap.clone())),
        },
    }
}

/// `own` maps to `host`; the ids around it fill the subordinate range in order.
fn around(own: u32, host: u32, (start, count): (u32, u32)) -> Vec<IdMapping> {
    let mut lines = Vec::new();
    if own >= count {
        lines.push(IdMapping {
            inside: 0,
            outside: start,
            count,
        });
        lines.push(IdMapping {
            inside: own,
            outside: host,
            count: 1,
        });
        return lines;
    }
    if own > 0 {
        lines.push(IdMapping {
            inside: 0,
            outside: start,
            count: own,
        });
    }
    lines.push(IdMapping {
        inside: own,
        outside: host,
        count: 1,
    });
    let rest = count - own;
    if rest > 0 {
        lines.push(IdMapping {
            inside: own + 1,
            outside: start + own,
            count: rest,
        });
    }
    lines
}

impl IdMap {
    /// How the unpacker should own files for this mode. Root moves the image's owners into the range (so the
    /// image user owns its files inside); without root, files belong to the unpacking user, who is the image
    /// user inside (restoring owners in subids mode would need the unpack to run inside the user namespace).
    pub fn unpack_ownership(&self) -> crate::rootfs::unpack::Ownership {
        match (self.mode, self.uids.first(), self.gids.first()) {
            (IdMapMode::HostRoot, Some(u), Some(g)) => crate::rootfs::unpack::Ownership::Shift {
                uid: u.outside,
                gid: g.outside,
                count: u.count.min(g.count),
            },
            _ => crate::rootfs::unpack::Ownership::Ignore,
        }
    }

    /// Maps an id inside the namespace to the host, if it is mapped.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        lookup(&self.uids, inside)
    }

    /// Writes the maps of process `pid` (which must have just created its user namespace).
    pub fn write(&self, pid: u32) -> Result<(), IdMapError> {
        self.begin(pid).finish()
    }

    /// Starts writing the maps of process `pid` (see [`IdMap::write`]); [`MapWrite::finish`] waits for the
    /// set-uid helpers. Without helpers the maps are written here.
    pub fn begin(&self, pid: u32) -> MapWrite {
        let state = match &self.helpers {
            Some((newuidmap, newgidmap)) => {
                // The two set-uid helpers write different files and each checks the target on its own: started
                // together, a start waits for one helper's exec instead of two in a row (about 1.5 ms of 3).
                match start_helper(newuidmap, pid, &self.uids) {
                    Err(e) => Err(e),
                    Ok(uid_helper) => Ok(vec![
                        (newuidmap.clone(), Ok(uid_helper)),
                        (newgidmap.clone(), start_helper(newgidmap, pid, &self.gids)),
                    ]),
                }
            }
            None => {
                let proc = PathBuf::from(format!("/proc/{pid}"));
                let direct = || {
                    if self.mode == IdMapMode::Single {
                        // An unprivileged writer may only map its own gid, after giving up setgroups(2).
                        write_file(&proc.join("setgroups"), "deny")?;
                    }
                    write_file(&proc.join("uid_map"), &render(&self.uids))?;
                    write_file(&proc.join("gid_map"), &render(&self.gids))
                };
                direct().map(|()| Vec::new())
            }
        };
        MapWrite {
            map: self.clone(),
            pid,
            state: Some(state),
        }
    }
}

/// Maps being written ([`IdMap::begin`]): the helpers still running, or how the direct write went. Dropped
/// unfinished, it waits for its helpers (no zombie is left).
#[derive(Debug)]
pub struct MapWrite {
    map: IdMap,
    pid: u32,
    state: Option<Result<Helpers, IdMapError>>,
}

/// The helpers of a [`MapWrite`]: each one's path, and the started process or why it did not start.
type Helpers = Vec<(PathBuf, Result<std::process::Child, IdMapError>)>;

impl MapWrite {
    /// Whether these are `map`'s maps for process `pid`.
    pub fn is_for(&self, map: &IdMap, pid: u32) -> bool {
        self.map == *map && self.pid == pid
    }

    /// Waits for the helpers; the first failure, if any.
    pub fn finish(mut self) -> Result<(), IdMapError> {
        let helpers = match self.state.take() {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(helpers)) => helpers,
        };
        let mut first = Ok(());
        for (helper, child) in helpers {
            let r = child.and_then(|c| finish_helper(&helper, c));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for MapWrite {
    fn drop(&mut self) {
        for (_, child) in self.state.take().into_iter().flatten().flatten() {
            if let Ok(mut c) = child {
                let _ = c.wait();
            }
        }
    }
}

/// An image id the sandbox must not run as: it is not mapped, or it is host root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeId {
    /// The id has no host id in this mode's map.
    #[error("image {kind} {id} is outside the ids this sandbox maps ({mode} mode maps {range})")]
    Unmapped {
        /// `user` or `group`.
        kind: &'static str,
        /// The id inside the sandbox.
        id: u32,
        /// The mode.
        mode: IdMapMode,
        /// The ids that are mapped, for the message.
        range: String,
    },
    /// The id maps to host root (uid or gid 0).
    #[error("image {kind} {id} would be host {kind} 0 ({mode} mode)")]
    HostRoot {
        /// `user` or `group`.
        kind: &'static str,
        /// The id inside the sandbox.
        id: u32,
        /// The mode.
        mode: IdMapMode,
    },
}

impl IdMap {
    /// Maps a gid inside the namespace to the host, if it is mapped.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        lookup(&self.gids, inside)
    }

    /// Checks that the server's ids (`uid`, `gid` and supplementary groups) are ids this sandbox may run as: each
    /// maps to a host id, and none of them to host root. In host-root mode the runner's own id (host root, mapped
    /// just past the range) is the one an image could otherwise name.
    pub fn check_process(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), UnsafeId> {
        let ids = [("user", uid)]
            .into_iter()
            .chain([("group", gid)])
            .chain(groups.iter().map(|g| ("group", *g)));
        for (kind, id) in ids {
            let lines = if kind == "user" {
                &self.uids
            } else {
                &self.gids
            };
            // The runner's own line (host root) never counts as a range an image id may use.
            let usable: Vec<IdMapping> = lines.iter().copied().filter(|m| m.outside != 0).collect();
            match lookup(lines, id) {
                Some(0) => {
                    return Err(UnsafeId::HostRoot {
                        kind,
                        id,
                        mode: self.mode,
                    })
                }
                Some(_) => {}
                None => {
                    return Err(UnsafeId::Unmapped {
                        kind,
                        id,
                        mode: self.mode,
                        range: describe(&usable),
                    })
                }
            }
        }
        Ok(())
    }
}

fn describe(lines: &[IdMapping]) -> String {
    let parts: Vec<String> = lines
        .iter()
        .map(|m| match m.count {
            1 => m.inside.to_string(),
            n => format!("{}–{}", m.inside, u64::from(m.inside) + u64::from(n) - 1),
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Why [`check_not_host_root`] refuses to let the server start.
#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    /// `/proc/self/{uid,gid}_map` cannot be read.
    #[error("cannot read /proc/self/{map}: {error}")]
    ReadMap {
        /// `uid_map` or `gid_map`.
        map: &'static str,
        /// The cause (in the message: the runner passes this on as text).
        error: std::io::Error,
    },
    /// The map file does not parse.
    #[error("/proc/self/{map} is not a map: {text:?}")]
    BadMap {
        /// `uid_map` or `gid_map`.
        map: &'static str,
        /// What it holds.
        text: String,
    },
    /// getresuid, getresgid or getgroups failed.
    #[error("{call}: {errno}")]
    Ids {
        /// The system call.
        call: &'static str,
        /// Its error.
        errno: nix::errno::Errno,
    },
    /// An id of the process is host root.
    #[error("the server's {kind} {id} is host {kind} 0: refusing to start it")]
    HostRoot {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id inside the namespace.
        id: u32,
    },
    /// An id of the process has no mapping.
    #[error("the server's {kind} {id} is not mapped: refusing to start it")]
    Unmapped {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id inside the namespace.
        id: u32,
    },
}

/// Checks the calling process's real, effective and saved ids and its supplementary groups against its own user
/// namespace's maps (`/proc/self/uid_map`, `gid_map`, read from inside: the outside column is then the parent
/// namespace's id): none may be host root, none may be unmapped. The runner calls this in the container's init
/// process after libcontainer has switched to the server's user and before `execve`, so a planning mistake can
/// never start a server as host root. `unmapped_groups_ok`: supplementary groups may be unmapped (single mode,
/// where the spec sets none because setgroups(2) is denied).
pub fn check_not_host_root(unmapped_groups_ok: bool) -> Result<(), HostRootError> {
    let read = |map: &'static str| -> Result<Vec<IdMapping>, HostRootError> {
        let text = std::fs::read_to_string(format!("/proc/self/{map}"))
            .map_err(|error| HostRootError::ReadMap { map, error })?;
        parse_map(&text).ok_or(HostRootError::BadMap { map, text })
    };
    let (uids, gids) = (read("uid_map")?, read("gid_map")?);
    let ids = |call: &'static str| move |errno| HostRootError::Ids { call, errno };
    let r = nix::unistd::getresuid().map_err(ids("getresuid"))?;
    let g = nix::unistd::getresgid().map_err(ids("getresgid"))?;
    let groups = nix::unistd::getgroups().map_err(ids("getgroups"))?;
    let check = |kind: &'static str, lines: &[IdMapping], id: u32| match lookup(lines, id) {
        Some(0) => Err(HostRootError::HostRoot { kind, id }),
        None => Err(HostRootError::Unmapped { kind, id }),
        Some(_) => Ok(()),
    };
    for id in [r.real, r.effective, r.saved] {
        check("uid", &uids, id.as_raw())?;
    }
    for id in [g.real, g.effective, g.saved] {
        check("gid", &gids, id.as_raw())?;
    }
    // Where setgroups(2) is denied (single mode) the invoking user's own supplementary groups cannot be dropped:
    // they show as the overflow gid, unmapped, and are the user's own (`unmapped_groups_ok`). Elsewhere the
    // sandbox set the groups, and every one must be mapped.
    for id in groups {
        match check("gid", &gids, id.as_raw()) {
            Err(_) if unmapped_groups_ok && lookup(&gids, id.as_raw()).is_none() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Parses the text of a `uid_map`/`gid_map`.
pub fn parse_map(text: &str) -> Option<Vec<IdMapping>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<u32>());
            let (inside, outside, count) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
            f.next().is_none().then_some(IdMapping {
                inside,
                outside,
                count,
            })
        })
        .collect()
}

fn lookup(lines: &[IdMapping], inside: u32) -> Option<u32> {
    lines
        .iter()
        .find(|m| inside >= m.inside && inside - m.inside < m.count)
        .map(|m| m.outside + (inside - m.inside))
}

/// The `/proc/PID/uid_map` text for these lines.
pub fn render(lines: &[IdMapping]) -> String {
    lines
        .iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<(), IdMapError> {
    std::fs::write(path, text).map_err(|source| IdMapError::Write {
        path: path.to_owned(),
        source,
    })
}

fn start_helper(
    helper: &Path,
    pid: u32,
    lines: &[IdMapping],
) -> Result<std::process::Child, IdMapError> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for m in lines {
        cmd.arg(m.inside.to_string())
            .arg(m.outside.to_string())
            .arg(m.count.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| IdMapError::Spawn {
            helper: helper.to_owned(),
            source,
        })
}

fn finish_helper(helper: &Path, child: std::process::Child) -> Result<(), IdMapError> {
    let out = child
        .wait_with_output()
        .map_err(|source| IdMapError::Spawn {
            helper: helper.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(IdMapError::Helper {
            helper: helper.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Failures writing id maps.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// Writing a map file failed.
    #[error("cannot write {path}")]
    Write {
        /// The map file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The setuid helper could not be started.
    #[error("cannot run {helper}")]
    Spawn {
        /// newuidmap or newgidmap.
        helper: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The setuid helper refused.
    #[error("{helper} failed: {stderr}")]
    Helper {
        /// newuidmap or newgidmap.
        helper: PathBuf,
        /// What it said.
        stderr: String,
    },
    /// Maps begun early for the runner are not the run's (a bug: a namespace is mapped once).
    #[error("the id maps begun for the runner are not this run's")]
    Mismatch,
}

/// Detects subordinate ids usable by the invoking user: both ranges (≥ 65536 ids) and both setuid helpers.
pub fn detect_subids(uid: u32) -> Option<SubIds> {
    use std::os::unix::fs::PermissionsExt;
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let uids = subid_range(SubIdKind::Uid, &name, uid)?;
    let gids = subid_range(SubIdKind::Gid, &name, uid)?;
    let find = |bin: &str| {
        let dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        dirs.into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join(bin))
            .find(|p| {
                // Root needs no helper; anyone else needs it setuid root (or with file capabilities, which we then try).
                std::fs::metadata(p).is_ok_and(|m| {
                    m.is_file()
                        && (uid == 0
                            || m.permissions().mode() & 0o4000 != 0
                            || m.permissions().mode() & 0o111 != 0)
                })
            })
    };
    Some(SubIds {
        uids,
        gids,
        newuidmap: find("newuidmap")?,
        newgidmap: find("newgidmap")?,
    })
}

// ---------------------------------------------------------------------------------------------------
// Subordinate ids: /etc/subuid and /etc/subgid

/// The least number of subordinate ids an /etc/subuid or /etc/subgid entry needs to be used.
pub const MIN_SUBID_COUNT: u32 = 65536;
/// Which subordinate-id file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubIdKind {
    /// /etc/subuid
    Uid,
    /// /etc/subgid
    Gid,
}

impl SubIdKind {
    /// The file the ranges live in.
    pub fn path(self) -> &'static Path {
        match self {
            SubIdKind::Uid => Path::new("/etc/subuid"),
            SubIdKind::Gid => Path::new("/etc/subgid"),
        }
    }
}

/// The user's subordinate id range from /etc/subuid or /etc/subgid, as `(start, count)`: the first
/// entry for `user` (by name) or `uid` (by number) with at least [`MIN_SUBID_COUNT`] ids. `None` when
/// the file is missing or unreadable or has no such entry.
pub fn subid_range(kind: SubIdKind, user: &str, uid: u32) -> Option<(u32, u32)> {
    let content = std::fs::read_to_string(kind.path()).ok()?;
    parse_subid_file(&content, user, uid)
}

/// [`subid_range`] on the text of a subordinate-id file (`name-or-uid:start:count` lines; blank lines
/// and `#` comments ignored; malformed lines and ranges that overflow 32 bits skipped).
pub fn parse_subid_file(content: &str, user: &str, uid: u32) -> Option<(u32, u32)> {
    subid_entries(content, user, uid).find(|&(_, count)| count >= MIN_SUBID_COUNT)
}

/// All well-formed entries for the user, in file order.
pub(crate) fn subid_entries<'a>(
    content: &'a str,
    user: &'a str,
    uid: u32,
) -> impl Iterator<Item = (u32, u32)> + 'a {
    content.lines().filter_map(move |line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        let owner_matches = owner == user || owner.parse::<u32>() == Ok(uid);
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (owner_matches && count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> SubIds {
        SubIds {
            uids: (100_000, 65_536),
            gids: (200_000, 65_536),
            newuidmap: "/usr/bin/newuidmap".into(),
            newgidmap: "/usr/bin/newgidmap".into(),
        }
    }

    /// A fake set-uid helper: notes its arguments, says it started, and waits (up to 5 s) for `other` to start
    /// too, failing with `fail` on stderr if told to.
    fn fake_helper(dir: &Path, name: &str, other: &str, fail: Option<&str>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let d = dir.display();
        let end = match fail {
            Some(msg) => format!("echo '{msg}' >&2; exit 1"),
            None => "exit 0".to_owned(),
        };
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$@\" > {d}/{name}.args\ntouch {d}/{name}.started\n\
                 i=0; while [ ! -e {d}/{other}.started ]; do i=$((i+1)); [ $i -gt 500 ] && exit 3; sleep 0.01; done\n{end}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_two_id_map_helpers_run_together_and_a_failure_names_its_helper() {
        let host = |dir: &Path, gid_fail: Option<&str>| HostIds {
            uid: 1000,
            gid: 1001,
            subids: Some(SubIds {
                newuidmap: fake_helper(dir, "newuidmap", "newgidmap", None),
                newgidmap: fake_helper(dir, "newgidmap", "newuidmap", gid_fail),
                ..sub()
            }),
        };
        // Each helper waits for the other to have started: run one after the other, the first would give up.
        let dir = tempfile::tempdir().unwrap();
        let m = plan(&host(dir.path(), None), 0, 0);
        m.write(4242).expect("both helpers ran together");
        let args = |n: &str| std::fs::read_to_string(dir.path().join(format!("{n}.args"))).unwrap();
        assert_eq!(
            args("newuidmap").trim(),
            format!("4242 {}", render(&m.uids).replace('\n', " ").trim())
        );
        assert_eq!(
            args("newgidmap").trim(),
            format!("4242 {}", render(&m.gids).replace('\n', " ").trim())
        );

        let dir = tempfile::tempdir().unwrap();
        let m = plan(&host(dir.path(), Some("gid range not allowed")), 0, 0);
        let err = m.write(4242).unwrap_err().to_string();
        assert!(
            err.contains("newgidmap") && err.contains("gid range not allowed"),
            "{err}"
        );
        assert!(dir.path().join("newuidmap.started").exists());
    }

    #[test]
    fn a_map_write_begun_goes_on_while_the_caller_works_and_is_reaped_when_dropped() {
        // Both fake helpers wait for a file the caller makes only after `begin` returned: a `begin` that waited
        // for them would never return.
        // Fake helpers that each wait for `uid_waits` and `gid_waits` to have started.
        let fakes = |dir: &Path, uid_waits: &str, gid_waits: &str| HostIds {
            uid: 1000,
            gid: 1001,
            subids: Some(SubIds {
                newuidmap: fake_helper(dir, "newuidmap", uid_waits, None),
                newgidmap: fake_helper(dir, "newgidmap", gid_waits, None),
                ..sub()
            }),
        };
        let dir = tempfile::tempdir().unwrap();
        let host = fakes(dir.path(), "caller", "caller");
        let m = plan(&host, 0, 0);
        let w = m.begin(4242);
        assert!(w.is_for(&m, 4242) && !w.is_for(&m, 4243));
        assert!(!w.is_for(&plan(&host, 5, 5), 4242));
        std::fs::write(dir.path().join("caller.started"), "").unwrap();
        w.finish()
            .expect("the helpers finished after the caller's work");

        // Dropped unfinished: its helpers are waited for, none is left behind.
        let dir = tempfile::tempdir().unwrap();
        let w = plan(&fakes(dir.path(), "newgidmap", "newuidmap"), 0, 0).begin(4242);
        let pids: Vec<u32> = w
            .state
            .iter()
            .flatten()
            .flatten()
            .filter_map(|(_, c)| c.as_ref().ok().map(|c| c.id()))
            .collect();
        assert_eq!(pids.len(), 2);
        drop(w);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "helper {pid} left"
            );
        }
    }

    #[test]
    fn single_maps_the_user_onto_the_image_user() {
        let m = plan(
            &HostIds {
                uid: 1000,
                gid: 1000,
                subids: None,
            },
            65_532,
            65_532,
        );
        assert_eq!(m.mode, IdMapMode::Single);
        assert_eq!(render(&m.uids), "65532 1000 1\n");
        assert_eq!(m.host_uid(65_532), Some(1000));
        assert_eq!(
            m.host_uid(0),
            None,
            "container root must not exist in single mode"
        );
    }

    #[test]
    fn subids_surround_the_image_user() {
        let m = plan(
            &HostIds {
                uid: 1000,
                gid: 1001,
                subids: Some(sub()),
            },
            1000,
            1000,
        );
        assert_eq!(
            render(&m.uids),
            "0 100000 1000\n1000 1000 1\n1001 101000 64536\n"
        );
        assert_eq!(
            render(&m.gids),
            "0 200000 1000\n1000 1001 1\n1001 201000 64536\n"
        );
        assert_eq!(m.host_uid(0), Some(100_000));
        assert_eq!(m.host_uid(1000), Some(1000));
        assert_eq!(m.host_uid(65_535), Some(165_534));
        assert_eq!(m.host_uid(65_536), Some(165_535));
        assert_eq!(m.host_uid(65_537), None);
        // Every host id used exactly once, none outside the range or the user's own.
        let total: u32 = m.uids.iter().map(|l| l.count).sum();
        assert_eq!(total, 65_537);
    }

    #[test]
    fn subids_with_image_root() {
        let m = plan(
            &HostIds {
                uid: 1000,
                gid: 1000,
                subids: Some(sub()),
            },
            0,
            0,
        );
        assert_eq!(render(&m.uids), "0 1000 1\n1 100000 65536\n");
    }

    #[test]
    fn subids_with_image_user_beyond_the_range() {
        let m = plan(
            &HostIds {
                uid: 1000,
                gid: 1000,
                subids: Some(sub()),
            },
            70_000,
            70_000,
        );
        assert_eq!(render(&m.uids), "0 100000 65536\n70000 1000 1\n");
    }

    #[test]
    fn root_never_maps_to_host_root() {
        for image in [0, 1000, 65_534] {
            let m = plan(
                &HostIds {
                    uid: 0,
                    gid: 0,
                    subids: None,
                },
                image,
                image,
            );
            assert_eq!(m.mode, IdMapMode::HostRoot);
            for inside in [0, image, 65_535] {
                assert_ne!(m.host_uid(inside), Some(0));
            }
            // Host root is only the runner's id, outside every id an image user can have in the range.
            assert_eq!(m.host_uid(65_536), Some(0));
            assert_eq!(render(&m.uids), "0 2147000000 65536\n65536 0 1\n");
        }
    }

    #[test]
    fn image_ids_that_would_be_host_root_or_unmapped_are_refused() {
        let root = HostIds {
            uid: 0,
            gid: 0,
            subids: None,
        };
        let m = plan(&root, 1000, 1000);
        assert_eq!(m.check_process(1000, 1000, &[]), Ok(()));
        assert_eq!(m.check_process(0, 0, &[]), Ok(()));
        assert_eq!(m.check_process(65_535, 65_535, &[]), Ok(()));
        // The finding: 65536 is host root's own line.
        assert!(matches!(
            m.check_process(65_536, 0, &[]),
            Err(UnsafeId::HostRoot {
                kind: "user",
                id: 65_536,
                ..
            })
        ));
        assert!(matches!(
            m.check_process(1000, 65_536, &[]),
            Err(UnsafeId::HostRoot {
                kind: "group",
                id: 65_536,
                ..
            })
        ));
        assert!(matches!(
            m.check_process(1000, 1000, &[5, 65_536]),
            Err(UnsafeId::HostRoot { kind: "group", .. })
        ));
        let e = m.check_process(70_000, 0, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "image user 70000 is outside the ids this sandbox maps (host-root mode maps 0–65535)"
        );
        assert!(m.check_process(4_294_967_294, 0, &[]).is_err());
    }

    #[test]
    fn every_mode_refuses_ids_it_does_not_map() {
        let sub = SubIds {
            uids: (100_000, 65_536),
            gids: (100_000, 65_536),
            newuidmap: "/usr/bin/newuidmap".into(),
            newgidmap: "/usr/bin/newgidmap".into(),
        };
        let user = HostIds {
            uid: 1000,
            gid: 1000,
            subids: Some(sub),
        };
        let m = plan(&user, 1000, 1000);
        assert_eq!(m.check_process(1000, 1000, &[0, 65_535]), Ok(()));
        assert_eq!(m.check_process(65_536, 1000, &[]), Ok(()));
        assert!(m.check_process(65_537, 1000, &[]).is_err());
        // An image user past the range: itself mapped, the ids between it and the range not.
        let m = plan(&user, 70_000, 70_000);
        assert_eq!(m.check_process(70_000, 70_000, &[]), Ok(()));
        assert!(m.check_process(69_999, 70_000, &[]).is_err());
        let single = HostIds {
            uid: 1000,
            gid: 1000,
            subids: None,
        };
        let m = plan(&single, 0, 0);
        assert_eq!(m.check_process(0, 0, &[]), Ok(()));
        assert!(m.check_process(1, 0, &[]).is_err());
        assert!(m.check_process(0, 0, &[1]).is_err());
        // Even a subordinate range an administrator wrongly starts at 0 never lets an image id become host root.
        let bad = HostIds {
            uid: 1000,
            gid: 1000,
            subids: Some(SubIds {
                uids: (0, 65_536),
                gids: (0, 65_536),
                newuidmap: "/usr/bin/newuidmap".into(),
                newgidmap: "/usr/bin/newgidmap".into(),
            }),
        };
        let m = plan(&bad, 1000, 1000);
        assert!(matches!(
            m.check_process(0, 1000, &[]),
            Err(UnsafeId::HostRoot { .. })
        ));
    }

    #[test]
    fn host_root_refusals_name_the_id() {
        let cases = [
            (
                HostRootError::HostRoot { kind: "uid", id: 0 },
                "the server's uid 0 is host uid 0: refusing to start it",
            ),
            (
                HostRootError::Unmapped {
                    kind: "gid",
                    id: 65534,
                },
                "the server's gid 65534 is not mapped: refusing to start it",
            ),
            (
                HostRootError::BadMap {
                    map: "uid_map",
                    text: "x".into(),
                },
                "/proc/self/uid_map is not a map: \"x\"",
            ),
            (
                HostRootError::Ids {
                    call: "getgroups",
                    errno: nix::errno::Errno::EPERM,
                },
                "getgroups: EPERM: Operation not permitted",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn proc_maps_parse() {
        assert_eq!(
            parse_map("         0 2147000000      65536\n     65536          0          1\n"),
            Some(vec![
                IdMapping {
                    inside: 0,
                    outside: 2_147_000_000,
                    count: 65_536
                },
                IdMapping {
                    inside: 65_536,
                    outside: 0,
                    count: 1
                }
            ])
        );
        assert_eq!(parse_map("0 1 x\n"), None);
        assert_eq!(parse_map("0 1 2 3\n"), None);
    }
}
