//! What a sandbox may touch beyond its own image: host paths bound in, and the network it sees.
//!
//! The inputs are the user's `-v HOST:CONTAINER[:ro]` flags and the `read`/`write` lists of a ToolHive permission
//! profile (each entry `PATH`, meaning the same path inside, or `HOST:CONTAINER`). Everything is checked before a
//! sandbox is made: host paths must exist (they are resolved once, here, so a symlink swapped later cannot redirect
//! the mount), container paths must be absolute, plain and outside the places the sandbox itself provides.
//!
//! Some host paths are never mounted: `/proc`, `/sys` and `/dev` (every host process and its command line, the
//! host's devices) and anything inside thv-sandbox's own cache or state directory (a sandbox that could write a
//! cached root would change what every later run executes). A mount of a directory that *holds* the cache or
//! state directory (`-v ~:/w` is common) gets those directories masked inside it with an empty read-only
//! directory, and every directory between the mount and them pinned as a mount point of its own, so the sandbox
//! can neither see them nor rename a parent away to plant a cache where the next run would look ([`shield`]).
//! A permission profile (registry entry or `--permission-profile`) may not mount `/`, the home directory or a
//! directory holding the cache or state directory unless the user opts in ([`check_profile_mounts`]).

use std::path::{Component, Path, PathBuf};

/// A host path bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// The host path, canonical.
    pub host: PathBuf,
    /// Where it appears inside the sandbox (absolute, normalized).
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The network a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with only loopback: nothing outside the sandbox is reachable.
    #[default]
    None,
    /// The host's network namespace: everything the user can reach, host loopback services included.
    Host,
}

impl NetworkMode {
    /// The name used on the command line and in `inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = MountError;
    fn from_str(s: &str) -> Result<NetworkMode, MountError> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(MountError::Network(other.to_owned())),
        }
    }
}

/// Why a mount (a `-v` flag or a permission profile's `read`/`write` entry), or the network mode, cannot be used.
/// (sandbox-profiles' `ProfileError` is another thing: a seccomp profile that does not validate.)
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    /// `-v` or a permission entry is not `PATH`, `HOST:CONTAINER` or `HOST:CONTAINER:ro|rw`.
    #[error("`{0}` is not a mount (write HOST:CONTAINER, HOST:CONTAINER:ro or PATH)")]
    Syntax(String),
    /// The host side does not exist or cannot be resolved.
    #[error("host path `{path}` of mount `{mount}` cannot be used: {reason}")]
    HostPath {
        /// The mount as written.
        mount: String,
        /// The host path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The host side is neither a directory nor a regular file.
    #[error("host path `{0}` is neither a directory nor a regular file")]
    HostKind(String),
    /// The container side is not absolute or has `.`/`..` parts.
    #[error("container path `{0}` must be absolute, without `.` or `..`")]
    ContainerPath(String),
    /// The container side is a place the sandbox provides itself.
    #[error("container path `{0}` is provided by the sandbox itself and cannot be mounted over")]
    Reserved(String),
    /// The image has a file where a directory is mounted, or the other way round.
    #[error("`{path}` is a {in_image} in the image, but the host path mounted there is a {host}")]
    TargetKind {
        /// The container path.
        path: String,
        /// `file` or `directory`.
        in_image: &'static str,
        /// `file` or `directory`.
        host: &'static str,
    },
    /// Two mounts for one container path.
    #[error("two mounts target `{0}`")]
    Duplicate(String),
    /// Unknown network mode.
    #[error("`{0}` is not a network mode (none, host)")]
    Network(String),
    /// The host side is (under) `/proc`, `/sys` or `/dev`.
    #[error(
        "host path `{0}` is the kernel's view of the host and is never mounted into a sandbox"
    )]
    HostReserved(String),
    /// The host side is (inside) thv-sandbox's own cache or state directory.
    #[error("host path `{path}` is inside thv-sandbox's own directory {private}, which no sandbox may see")]
    Private {
        /// The host path.
        path: String,
        /// The cache or state directory it is in.
        private: String,
    },
    /// A permission profile asks for a mount that needs the user's explicit consent.
    #[error("the permission profile asks to mount `{path}`, which is {why}")]
    BroadProfileMount {
        /// The host path.
        path: String,
        /// What it is.
        why: String,
    },
}

impl MountError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            MountError::Syntax(_) => {
                "for example `-v ~/notes:/notes:ro`; the host path comes first".into()
            }
            MountError::HostPath { .. } => {
                "create the host path first, or fix the path in the flag or permission profile".into()
            }
            MountError::HostKind(_) => "only directories and regular files can be mounted".into(),
            MountError::ContainerPath(_) => {
                "write the container path in full, e.g. `/data`".into()
            }
            MountError::Reserved(_) => {
                "pick another container path; /, /proc, /sys, /dev and /etc/{hosts,hostname,resolv.conf} are the \
                 sandbox's own"
                    .into()
            }
            MountError::Duplicate(_) => "keep one mount per container path".into(),
            MountError::TargetKind { .. } => {
                "mount a directory on a directory and a file on a file, or pick another container path".into()
            }
            MountError::Network(_) => {
                "`--network none` (the default: loopback only) or `--network host` (the host's network)".into()
            }
            MountError::HostReserved(_) => {
                "/proc, /sys and /dev show every host process (with its command line) and the host's devices; mount \
                 the file or directory the server needs from elsewhere"
                    .into()
            }
            MountError::Private { .. } => {
                "the image cache and the run state are thv-sandbox's own: a server that could change them could \
                 change what other servers run. Mount another directory"
                    .into()
            }
            MountError::BroadProfileMount { .. } => {
                "check the MCP server registry entry or the permission profile; if you do want this mount, pass \
                 --allow-profile-mounts (the cache and state directories stay masked)"
                    .into()
            }
        }
    }
}

/// Parses `-v HOST:CONTAINER[:ro|:rw]` (a bare absolute `PATH` mounts it at the same place, read-write).
pub fn parse_volume(spec: &str, home: Option<&Path>) -> Result<BindMount, MountError> {
    let (body, read_only) = match spec.rsplit_once(':') {
        Some((body, "ro"))
            if body.contains(':') || body.starts_with('/') || body.starts_with('~') =>
        {
            (body, true)
        }
        Some((body, "rw"))
            if body.contains(':') || body.starts_with('/') || body.starts_with('~') =>
        {
            (body, false)
        }
        _ => (spec, false),
    };
    mount_entry(spec, body, read_only, home)
}

/// The mounts of a ToolHive permission profile: `read` entries read-only, `write` entries read-write.
pub fn permission_mounts(
    read: &[String],
    write: &[String],
    home: Option<&Path>,
) -> Result<Vec<BindMount>, MountError> {
    let mut out = Vec::new();
    for (list, ro) in [(read, true), (write, false)] {
        for entry in list {
            out.push(mount_entry(entry, entry, ro, home)?);
        }
    }
    Ok(out)
}

/// The permission profile's mounts, then the user's: a user mount replaces a profile mount with the same target;
/// two mounts with one target from the same source are an error.
pub fn merge(profile: Vec<BindMount>, user: Vec<BindMount>) -> Result<Vec<BindMount>, MountError> {
    let mut out: Vec<BindMount> = Vec::new();
    for m in profile {
        if out.iter().any(|o| o.container == m.container) {
            return Err(MountError::Duplicate(m.container));
        }
        out.push(m);
    }
    let mut seen_user: Vec<String> = Vec::new();
    for m in user {
        if seen_user.contains(&m.container) {
            return Err(MountError::Duplicate(m.container));
        }
        seen_user.push(m.container.clone());
        out.retain(|o| o.container != m.container);
        out.push(m);
    }
    Ok(out)
}

fn mount_entry(
    original: &str,
    body: &str,
    read_only: bool,
    home: Option<&Path>,
) -> Result<BindMount, MountError> {
    let (host, container) = match body.split_once(':') {
        Some((h, c)) => (h, c),
        None => (body, body),
    };
    if host.is_empty() || container.is_empty() || container.contains(':') {
        return Err(MountError::Syntax(original.to_owned()));
    }
    let host_path = expand_home(host, home).ok_or_else(|| MountError::HostPath {
        mount: original.to_owned(),
        path: host.to_owned(),
        reason: "`~` needs HOME to be set".into(),
    })?;
    if !host_path.is_absolute() {
        return Err(MountError::HostPath {
            mount: original.to_owned(),
            path: host.to_owned(),
            reason: "it is relative; write an absolute path".into(),
        });
    }
    let canonical = std::fs::canonicalize(&host_path).map_err(|e| MountError::HostPath {
        mount: original.to_owned(),
        path: host_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let meta = std::fs::metadata(&canonical).map_err(|e| MountError::HostPath {
        mount: original.to_owned(),
        path: canonical.display().to_string(),
        reason: e.to_string(),
    })?;
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|top| canonical.starts_with(top))
    {
        return Err(MountError::HostReserved(canonical.display().to_string()));
    }
    if !meta.is_dir() && !meta.is_file() {
        return Err(MountError::HostKind(canonical.display().to_string()));
    }
    // `PATH` alone means the same path inside; `~/x` inside means the host's expansion too.
    let container = if container == host {
        host_path.to_string_lossy().into_owned()
    } else {
        container.to_owned()
    };
    let container = normalize_container(&container)?;
    Ok(BindMount {
        host: canonical,
        container,
        read_only,
    })
}

/// thv-sandbox's own directories, which no sandbox may see: the state and cache directories in use, and the
/// ones a run with the default environment would use (an MCP client may start us with another environment than
/// the user's shell, so a sandbox must not plant a cache where such a run looks).
pub fn private_paths(dirs: &crate::dirs::Dirs, home: Option<&Path>) -> Vec<PathBuf> {
    // The state directory's `thv-sandbox/run` fallback: all of `thv-sandbox` is ours.
    let state_top = |p: &Path| {
        if p.ends_with("thv-sandbox/run") {
            p.parent().unwrap_or(p).to_owned()
        } else {
            p.to_owned()
        }
    };
    let mut out = vec![state_top(&dirs.state), dirs.cache.clone()];
    if let Ok(default) = crate::dirs::Dirs::from_env(None) {
        out.push(state_top(&default.state));
        out.push(default.cache);
    }
    // The state directory of a run whose client passed on no XDG_RUNTIME_DIR, when this one names another.
    if let Some(session) = crate::dirs::session_runtime_dir(nix::unistd::geteuid().as_raw()) {
        out.push(session.join("thv-sandbox"));
    }
    if let Some(h) = home {
        out.push(h.join(".cache/thv-sandbox"));
        out.push(h.join(".local/state/thv-sandbox"));
    }
    let mut seen = Vec::new();
    out.retain(|p| {
        let key = resolve_lexically(p);
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    out
}

/// `path` with its longest existing prefix resolved (symlinks followed) and the rest appended as written.
fn resolve_lexically(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

/// Refuses mounts whose host path is inside (or is) one of `private` ([`private_paths`]).
pub fn check_private(mounts: &[BindMount], private: &[PathBuf]) -> Result<(), MountError> {
    for m in mounts {
        for p in private {
            let resolved = resolve_lexically(p);
            if m.host.starts_with(&resolved) {
                return Err(MountError::Private {
                    path: m.host.display().to_string(),
                    private: p.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// What a permission profile may not mount without the user's consent (`--allow-profile-mounts`): `/`, the home
/// directory itself, and any directory that holds one of `private`.
pub fn check_profile_mounts(
    mounts: &[BindMount],
    home: Option<&Path>,
    private: &[PathBuf],
) -> Result<(), MountError> {
    let home = home.and_then(|h| std::fs::canonicalize(h).ok());
    for m in mounts {
        let why = if m.host == Path::new("/") {
            Some("the host's whole file system".to_owned())
        } else if home.as_deref() == Some(m.host.as_path()) {
            Some("your whole home directory".to_owned())
        } else {
            private
                .iter()
                .find(|p| resolve_lexically(p).starts_with(&m.host))
                .map(|p| format!("a directory holding thv-sandbox's own {}", p.display()))
        };
        if let Some(why) = why {
            return Err(MountError::BroadProfileMount {
                path: m.host.display().to_string(),
                why,
            });
        }
    }
    Ok(())
}

/// A mount as one line for the user: `HOST -> CONTAINER (read-only|READ-WRITE)`.
pub fn describe(m: &BindMount) -> String {
    format!(
        "{} -> {} ({})",
        m.host.display(),
        m.container,
        if m.read_only {
            "read-only"
        } else {
            "READ-WRITE"
        }
    )
}

/// Whether a read-write mount holds one of `private` (masked by [`shield`], but the sandbox writes around it).
pub fn writes_around(mounts: &[BindMount], private: &[PathBuf]) -> bool {
    mounts.iter().any(|m| {
        !m.read_only
            && m.host.is_dir()
            && private
                .iter()
                .any(|p| resolve_lexically(p).starts_with(&m.host))
    })
}

/// `mounts` plus what keeps `private` ([`private_paths`]) out of the sandbox's reach: for each directory mount
/// that holds one of them, `empty` (an empty directory of ours) bound read-only over it, and every directory
/// between the mount and it bound onto itself. A mount point cannot be renamed or removed (`EBUSY`) by the
/// sandbox, so it can neither uncover the directory nor move a parent aside and plant a cache of its own where a
/// later run looks. A private directory that does not exist yet is created first, so that it can be masked.
/// Mounts inside a private directory are refused ([`check_private`]).
pub fn shield(
    mounts: &[BindMount],
    private: &[PathBuf],
    empty: &Path,
) -> Result<Vec<BindMount>, MountError> {
    check_private(mounts, private)?;
    let mut added: Vec<BindMount> = Vec::new();
    for m in mounts.iter().filter(|m| m.host.is_dir()) {
        for p in private {
            let resolved = resolve_lexically(p);
            if !resolved.starts_with(&m.host) {
                continue;
            }
            let not_usable = |reason: String| MountError::HostPath {
                mount: m.host.display().to_string(),
                path: p.display().to_string(),
                reason,
            };
            crate::dirs::private_dir(p).map_err(|e| not_usable(e.to_string()))?;
            let real = std::fs::canonicalize(p).map_err(|e| not_usable(e.to_string()))?;
            let Ok(rel) = real.strip_prefix(&m.host) else {
                continue;
            };
            let mut host = m.host.clone();
            let mut container = m.container.trim_end_matches('/').to_owned();
            let parts: Vec<_> = rel.components().collect();
            for (i, part) in parts.iter().enumerate() {
                host.push(part);
                container = format!("{container}/{}", part.as_os_str().to_string_lossy());
                let last = i + 1 == parts.len();
                let b = BindMount {
                    host: if last { empty.to_owned() } else { host.clone() },
                    container: container.clone(),
                    read_only: last || m.read_only,
                };
                match added.iter_mut().find(|a| a.container == b.container) {
                    // A mask wins over a pin of the same place.
                    Some(a) if last => *a = b,
                    Some(_) => {}
                    None => added.push(b),
                }
            }
        }
    }
    // Parents before what is inside them.
    added.sort_by_key(|b| b.container.matches('/').count());
    let mut out = mounts.to_vec();
    out.extend(added);
    Ok(out)
}

fn expand_home(path: &str, home: Option<&Path>) -> Option<PathBuf> {
    if path == "~" {
        return home.map(Path::to_path_buf);
    }
    match path.strip_prefix("~/") {
        Some(rest) => home.map(|h| h.join(rest)),
        None => Some(PathBuf::from(path)),
    }
}

/// An absolute container path without `.`/`..`, trailing slashes removed; reserved places refused.
fn normalize_container(path: &str) -> Result<String, MountError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(MountError::ContainerPath(path.to_owned()));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => return Err(MountError::ContainerPath(path.to_owned())),
        }
    }
    let norm = format!("/{}", parts.join("/"));
    let under = |top: &str| norm == top || norm.starts_with(&format!("{top}/"));
    if norm == "/"
        || ["/proc", "/sys", "/dev"].iter().any(|t| under(t))
        || ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].contains(&norm.as_str())
    {
        return Err(MountError::Reserved(norm));
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn volume_forms() {
        let d = tmp();
        let h = d.path().canonicalize().unwrap();
        let hs = h.to_str().unwrap();
        let m = parse_volume(&format!("{hs}:/data:ro"), None).unwrap();
        assert_eq!(
            (m.host.as_path(), m.container.as_str(), m.read_only),
            (h.as_path(), "/data", true)
        );
        let m = parse_volume(&format!("{hs}:/data/"), None).unwrap();
        assert_eq!((m.container.as_str(), m.read_only), ("/data", false));
        let m = parse_volume(&format!("{hs}:/data:rw"), None).unwrap();
        assert!(!m.read_only);
        let m = parse_volume(hs, None).unwrap();
        assert_eq!(m.container, hs);
        let m = parse_volume(&format!("{hs}:ro"), None).unwrap();
        assert_eq!((m.container.as_str(), m.read_only), (hs, true));
    }

    #[test]
    fn home_is_expanded_on_both_sides() {
        let d = tmp();
        std::fs::create_dir(d.path().join("notes")).unwrap();
        let home = d.path().canonicalize().unwrap();
        let m = parse_volume("~/notes:/notes:ro", Some(&home)).unwrap();
        assert_eq!(m.host, home.join("notes"));
        let m = permission_mounts(&["~/notes".into()], &[], Some(&home)).unwrap();
        assert_eq!(m[0].container, home.join("notes").to_str().unwrap());
        assert!(m[0].read_only);
        assert!(matches!(
            parse_volume("~/notes:/n", None),
            Err(MountError::HostPath { .. })
        ));
    }

    #[test]
    fn bad_mounts_are_refused_with_the_reason() {
        let d = tmp();
        let hs = d.path().to_str().unwrap().to_owned();
        assert!(matches!(
            parse_volume(&format!("{hs}/missing:/x"), None),
            Err(MountError::HostPath { .. })
        ));
        assert!(matches!(
            parse_volume("relative:/x", None),
            Err(MountError::HostPath { .. })
        ));
        assert_eq!(
            parse_volume(&format!("{hs}:data"), None),
            Err(MountError::ContainerPath("data".into()))
        );
        assert_eq!(
            parse_volume(&format!("{hs}:/a/../etc"), None),
            Err(MountError::ContainerPath("/a/../etc".into()))
        );
        for reserved in [
            "/",
            "/proc",
            "/proc/self",
            "/dev/shm",
            "/sys",
            "/etc/hosts",
            "/etc/resolv.conf",
        ] {
            assert_eq!(
                parse_volume(&format!("{hs}:{reserved}"), None),
                Err(MountError::Reserved(reserved.into())),
                "{reserved}"
            );
        }
        assert_eq!(
            parse_volume(":/x", None),
            Err(MountError::Syntax(":/x".into()))
        );
        assert_eq!(
            parse_volume(&format!("{hs}:/x:/y"), None),
            Err(MountError::Syntax(format!("{hs}:/x:/y")))
        );
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            parse_volume(&format!("{}:/f", fifo.display()), None),
            Err(MountError::HostKind(_))
        ));
    }

    #[test]
    fn the_kernels_view_of_the_host_is_never_mounted() {
        for host in [
            "/proc",
            "/proc/1",
            "/sys",
            "/sys/kernel",
            "/dev",
            "/dev/null",
            "/dev/shm",
        ] {
            for spec in [format!("{host}:/x:ro"), format!("{host}:/x")] {
                assert!(
                    matches!(parse_volume(&spec, None), Err(MountError::HostReserved(_))),
                    "{spec}: {:?}",
                    parse_volume(&spec, None)
                );
            }
            assert!(matches!(
                permission_mounts(&[format!("{host}:/x")], &[], None),
                Err(MountError::HostReserved(_))
            ));
        }
        assert!(MountError::HostReserved("/proc".into())
            .hint()
            .contains("every host process"));
    }

    #[test]
    fn our_own_dirs_are_refused_inside_and_masked_and_pinned_below_a_mount() {
        let d = tmp();
        let home = d.path().canonicalize().unwrap();
        let cache = home.join(".cache/thv-sandbox");
        let state = home.join("run/thv-sandbox");
        std::fs::create_dir_all(cache.join("roots-v1")).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let empty = home.join("empty");
        std::fs::create_dir(&empty).unwrap();
        let private = vec![cache.clone(), state.clone()];
        let bm = |host: &Path, c: &str, ro| BindMount {
            host: host.to_owned(),
            container: c.into(),
            read_only: ro,
        };
        // Inside: refused, whatever the mode.
        for inside in [cache.clone(), cache.join("roots-v1"), state.clone()] {
            assert!(matches!(
                shield(&[bm(&inside, "/x", true)], &private, &empty),
                Err(MountError::Private { .. })
            ));
        }
        // Around: masked, and the directories on the way pinned.
        let out = shield(&[bm(&home, "/w", false)], &private, &empty).unwrap();
        assert_eq!(
            out,
            vec![
                bm(&home, "/w", false),
                bm(&home.join(".cache"), "/w/.cache", false),
                bm(&home.join("run"), "/w/run", false),
                bm(&empty, "/w/.cache/thv-sandbox", true),
                bm(&empty, "/w/run/thv-sandbox", true),
            ]
        );
        // A private dir that does not exist yet is created, so that it can be masked.
        let later = home.join(".local/state/thv-sandbox");
        let out = shield(
            &[bm(&home, "/w", true)],
            std::slice::from_ref(&later),
            &empty,
        )
        .unwrap();
        assert!(later.is_dir());
        assert!(out.contains(&bm(&empty, "/w/.local/state/thv-sandbox", true)));
        assert!(out.contains(&bm(&home.join(".local"), "/w/.local", true)));
        // Elsewhere: unchanged.
        let other = home.join("notes");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(
            shield(&[bm(&other, "/n", false)], &private, &empty).unwrap(),
            vec![bm(&other, "/n", false)]
        );
    }

    #[test]
    fn broad_profile_mounts_need_consent() {
        let d = tmp();
        let home = d.path().canonicalize().unwrap();
        let cache = home.join("c/thv-sandbox");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::create_dir_all(home.join("notes")).unwrap();
        let bm = |host: &Path| BindMount {
            host: host.to_owned(),
            container: "/x".into(),
            read_only: true,
        };
        let private = vec![cache.clone()];
        for broad in [Path::new("/"), home.as_path(), &home.join("c")] {
            let err = check_profile_mounts(&[bm(broad)], Some(&home), &private).unwrap_err();
            assert!(
                matches!(err, MountError::BroadProfileMount { .. }),
                "{broad:?}"
            );
            assert!(err.hint().contains("--allow-profile-mounts"));
        }
        check_profile_mounts(&[bm(&home.join("notes"))], Some(&home), &private).unwrap();
        assert_eq!(
            describe(&bm(&home.join("notes"))),
            format!("{} -> /x (read-only)", home.join("notes").display())
        );
    }

    #[test]
    fn user_mounts_replace_profile_mounts_of_the_same_target() {
        let d = tmp();
        let h = d.path().canonicalize().unwrap();
        let bm = |c: &str, ro| BindMount {
            host: h.clone(),
            container: c.into(),
            read_only: ro,
        };
        let merged = merge(vec![bm("/a", true), bm("/b", false)], vec![bm("/a", false)]).unwrap();
        assert_eq!(merged, vec![bm("/b", false), bm("/a", false)]);
        assert_eq!(
            merge(vec![bm("/a", true), bm("/a", false)], vec![]),
            Err(MountError::Duplicate("/a".into()))
        );
        assert_eq!(
            merge(vec![], vec![bm("/a", true), bm("/a", false)]),
            Err(MountError::Duplicate("/a".into()))
        );
    }

    #[test]
    fn network_modes() {
        assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
        assert_eq!("host".parse::<NetworkMode>(), Ok(NetworkMode::Host));
        assert!("bridge".parse::<NetworkMode>().is_err());
        assert_eq!(NetworkMode::default(), NetworkMode::None);
    }
}
