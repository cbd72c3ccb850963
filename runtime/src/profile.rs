//! What a sandbox may touch beyond its own image: host paths bound in, and the network it sees.
//!
//! The inputs are the user's `-v HOST:CONTAINER[:ro]` flags and the `read`/`write` lists of a ToolHive permission
//! profile (each entry `PATH`, meaning the same path inside, or `HOST:CONTAINER`). Everything is checked before a
//! sandbox is made: host paths must exist (they are resolved once, here, so a symlink swapped later cannot redirect
//! the mount), container paths must be absolute, plain and outside the places the sandbox itself provides.

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
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<NetworkMode, ProfileError> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(ProfileError::Network(other.to_owned())),
        }
    }
}

/// Why a mount or network setting cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
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
}

impl ProfileError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            ProfileError::Syntax(_) => {
                "for example `-v ~/notes:/notes:ro`; the host path comes first".into()
            }
            ProfileError::HostPath { .. } => {
                "create the host path first, or fix the path in the flag or permission profile".into()
            }
            ProfileError::HostKind(_) => "only directories and regular files can be mounted".into(),
            ProfileError::ContainerPath(_) => {
                "write the container path in full, e.g. `/data`".into()
            }
            ProfileError::Reserved(_) => {
                "pick another container path; /, /proc, /sys, /dev and /etc/{hosts,hostname,resolv.conf} are the \
                 sandbox's own"
                    .into()
            }
            ProfileError::Duplicate(_) => "keep one mount per container path".into(),
            ProfileError::TargetKind { .. } => {
                "mount a directory on a directory and a file on a file, or pick another container path".into()
            }
            ProfileError::Network(_) => {
                "`--network none` (the default: loopback only) or `--network host` (the host's network)".into()
            }
        }
    }
}

/// Parses `-v HOST:CONTAINER[:ro|:rw]` (a bare absolute `PATH` mounts it at the same place, read-write).
pub fn parse_volume(spec: &str, home: Option<&Path>) -> Result<BindMount, ProfileError> {
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
) -> Result<Vec<BindMount>, ProfileError> {
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
pub fn merge(
    profile: Vec<BindMount>,
    user: Vec<BindMount>,
) -> Result<Vec<BindMount>, ProfileError> {
    let mut out: Vec<BindMount> = Vec::new();
    for m in profile {
        if out.iter().any(|o| o.container == m.container) {
            return Err(ProfileError::Duplicate(m.container));
        }
        out.push(m);
    }
    let mut seen_user: Vec<String> = Vec::new();
    for m in user {
        if seen_user.contains(&m.container) {
            return Err(ProfileError::Duplicate(m.container));
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
) -> Result<BindMount, ProfileError> {
    let (host, container) = match body.split_once(':') {
        Some((h, c)) => (h, c),
        None => (body, body),
    };
    if host.is_empty() || container.is_empty() || container.contains(':') {
        return Err(ProfileError::Syntax(original.to_owned()));
    }
    let host_path = expand_home(host, home).ok_or_else(|| ProfileError::HostPath {
        mount: original.to_owned(),
        path: host.to_owned(),
        reason: "`~` needs HOME to be set".into(),
    })?;
    if !host_path.is_absolute() {
        return Err(ProfileError::HostPath {
            mount: original.to_owned(),
            path: host.to_owned(),
            reason: "it is relative; write an absolute path".into(),
        });
    }
    let canonical = std::fs::canonicalize(&host_path).map_err(|e| ProfileError::HostPath {
        mount: original.to_owned(),
        path: host_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let meta = std::fs::metadata(&canonical).map_err(|e| ProfileError::HostPath {
        mount: original.to_owned(),
        path: canonical.display().to_string(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(ProfileError::HostKind(canonical.display().to_string()));
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
fn normalize_container(path: &str) -> Result<String, ProfileError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(ProfileError::ContainerPath(path.to_owned()));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => return Err(ProfileError::ContainerPath(path.to_owned())),
        }
    }
    let norm = format!("/{}", parts.join("/"));
    let under = |top: &str| norm == top || norm.starts_with(&format!("{top}/"));
    if norm == "/"
        || ["/proc", "/sys", "/dev"].iter().any(|t| under(t))
        || ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].contains(&norm.as_str())
    {
        return Err(ProfileError::Reserved(norm));
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
            Err(ProfileError::HostPath { .. })
        ));
    }

    #[test]
    fn bad_mounts_are_refused_with_the_reason() {
        let d = tmp();
        let hs = d.path().to_str().unwrap().to_owned();
        assert!(matches!(
            parse_volume(&format!("{hs}/missing:/x"), None),
            Err(ProfileError::HostPath { .. })
        ));
        assert!(matches!(
            parse_volume("relative:/x", None),
            Err(ProfileError::HostPath { .. })
        ));
        assert_eq!(
            parse_volume(&format!("{hs}:data"), None),
            Err(ProfileError::ContainerPath("data".into()))
        );
        assert_eq!(
            parse_volume(&format!("{hs}:/a/../etc"), None),
            Err(ProfileError::ContainerPath("/a/../etc".into()))
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
                Err(ProfileError::Reserved(reserved.into())),
                "{reserved}"
            );
        }
        assert_eq!(
            parse_volume(":/x", None),
            Err(ProfileError::Syntax(":/x".into()))
        );
        assert_eq!(
            parse_volume(&format!("{hs}:/x:/y"), None),
            Err(ProfileError::Syntax(format!("{hs}:/x:/y")))
        );
        assert!(matches!(
            parse_volume("/dev/null:/null", None),
            Err(ProfileError::HostKind(_))
        ));
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
            Err(ProfileError::Duplicate("/a".into()))
        );
        assert_eq!(
            merge(vec![], vec![bm("/a", true), bm("/a", false)]),
            Err(ProfileError::Duplicate("/a".into()))
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
