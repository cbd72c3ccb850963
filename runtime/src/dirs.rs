//! Where thv-sandbox keeps per-run state and its cache, and the checks that make them safe to use.
//!
//! MCP clients start servers with a minimal environment, so nothing here may depend on more than `HOME` and, when
//! present, the XDG variables. A directory we did not create is checked, not trusted: it must be owned by us and
//! not writable by anyone else.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The resolved directories.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Per-run state (bundles, libcontainer state, locks): `$XDG_RUNTIME_DIR/thv-sandbox`, else
    /// `/run/user/UID/thv-sandbox` when that is the user's own runtime directory (see [`session_runtime_dir`]),
    /// else `$XDG_STATE_HOME/thv-sandbox/run`, else `~/.local/state/thv-sandbox/run`; `/tmp/thv-sandbox-UID` only
    /// when there is no home either. Never a predictable name in a shared directory when a private place exists: any
    /// local user could create `/tmp/thv-sandbox-UID` first and so stop every run (F8).
    pub state: PathBuf,
    /// Cache of blobs and unpacked roots: `$XDG_CACHE_HOME/thv-sandbox`, else `~/.cache/thv-sandbox`.
    pub cache: PathBuf,
}

/// Failures preparing our directories.
#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    /// Creating or inspecting a directory failed.
    #[error("cannot use directory {path}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory is someone else's.
    #[error("directory {path} is owned by uid {owner}, not by us (uid {me})")]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// Others may write into the directory.
    #[error("directory {path} has mode {mode:o}; others could change what we run")]
    TooOpen {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A parent of the directory can be changed by another user (who could swap the directory itself).
    #[error("directory {path} is inside {parent}, which {why}")]
    OpenParent {
        /// The directory.
        path: PathBuf,
        /// The parent at fault.
        parent: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Neither HOME nor XDG_CACHE_HOME is set.
    #[error("no cache directory: neither XDG_CACHE_HOME nor HOME is set")]
    NoHome,
}

impl DirsError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            DirsError::NotOurs { path, .. } => format!(
                "remove {} (or let its owner remove it), or set XDG_RUNTIME_DIR / XDG_CACHE_HOME to a directory of yours",
                path.display()
            ),
            DirsError::TooOpen { path, .. } => format!("run `chmod 700 {}`", path.display()),
            DirsError::OpenParent { parent, .. } => format!(
                "use a directory whose parents only you (or root) can change, or run `chmod go-w {}` if it is yours",
                parent.display()
            ),
            DirsError::NoHome => "set HOME or XDG_CACHE_HOME in the MCP client's environment for this server".into(),
            DirsError::Io { .. } => "set XDG_RUNTIME_DIR / XDG_CACHE_HOME to a writable directory of yours".into(),
        }
    }
}

impl Dirs {
    /// Resolves the directories from the environment (`cache_override` wins for the cache).
    pub fn from_env(cache_override: Option<PathBuf>) -> Result<Dirs, DirsError> {
        Dirs::from_lookup(cache_override, &non_empty_env, &session_runtime_dir)
    }

    /// [`Dirs::from_env`] with the environment given as a lookup of non-empty variables, and the user's runtime
    /// directory as found without it.
    fn from_lookup(
        cache_override: Option<PathBuf>,
        non_empty_env: &dyn Fn(&str) -> Option<PathBuf>,
        session_runtime_dir: &dyn Fn(u32) -> Option<PathBuf>,
    ) -> Result<Dirs, DirsError> {
        let uid = nix::unistd::geteuid().as_raw();
        // A relative path in these variables is invalid and ignored (the XDG base directory specification).
        let non_empty_env = |k: &str| non_empty_env(k).filter(|p| p.is_absolute());
        let state = match non_empty_env("XDG_RUNTIME_DIR").or_else(|| session_runtime_dir(uid)) {
            Some(dir) => dir.join("thv-sandbox"),
            None => match non_empty_env("XDG_STATE_HOME") {
                Some(dir) => dir.join("thv-sandbox/run"),
                None => match non_empty_env("HOME") {
                    Some(home) => home.join(".local/state/thv-sandbox/run"),
                    None => PathBuf::from(format!("/tmp/thv-sandbox-{uid}")),
                },
            },
        };
        let cache = match cache_override {
            // Relative to where the user stands (`--cache-dir ./cache`): made absolute now, because the sandbox's
            // root is later opened from other working directories (libcontainer refused a relative root).
            Some(dir) => std::path::absolute(&dir).unwrap_or(dir),
            None => match non_empty_env("XDG_CACHE_HOME") {
                Some(dir) => dir.join("thv-sandbox"),
                None => non_empty_env("HOME")
                    .ok_or(DirsError::NoHome)?
                    .join(".cache/thv-sandbox"),
            },
        };
        Ok(Dirs { state, cache })
    }

    /// Creates (0700) or checks the state directory and returns its `runs/` subdirectory.
    pub fn runs(&self) -> Result<PathBuf, DirsError> {
        private_root(&self.state)?;
        let runs = self.state.join("runs");
        private_dir(&runs)?;
        Ok(runs)
    }
}

/// The cache's own OCI image layout (pulled blobs), `<cache>/oci`: made and filled by the distribution step, read by
/// the rootfs step (which must tell it from a user's `oci:` layout).
pub fn cache_layout(cache: &Path) -> PathBuf {
    cache.join("oci")
}

/// The user's runtime directory when the environment does not name it: `/run/user/UID`, if it is a directory of
/// `uid`'s that nobody else may enter. On systemd hosts pam_systemd makes it (a tmpfs of the user's) and sets
/// `XDG_RUNTIME_DIR` to it, but MCP clients start servers with a minimal environment (the MCP SDKs pass on
/// `HOME`, `LOGNAME`, `PATH`, `SHELL`, `TERM` and `USER`), so a server started from a desktop session usually
/// does not see the variable. Per-run state belongs there rather than in the home directory: a run's dozen files
/// and directories are created and removed by every start (0.12 ms on tmpfs, 0.6–1.4 ms on this project's ext4
/// test host: BENCHMARKS.md), and a reboot clears what a crash left.
pub fn session_runtime_dir(uid: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/run/user/{uid}"));
    is_own_private_dir(&dir, uid).then_some(dir)
}

/// Sets `XDG_RUNTIME_DIR` to [`session_runtime_dir`] when the environment names none, as pam_systemd would have.
/// Then the run's state lives there ([`Dirs::from_env`]), and the user's D-Bus at `$XDG_RUNTIME_DIR/bus` is
/// found: the transient scope that carries a user's limits on a systemd host is asked for over it, and
/// libcgroups and `busctl` look for it through that variable only. Call it first thing in `main`, while the
/// process is one thread (setting a variable races with any other thread reading the environment).
pub fn adopt_session_runtime_dir() {
    if non_empty_env("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    if let Some(dir) = session_runtime_dir(nix::unistd::geteuid().as_raw()) {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

/// `path` is a directory (not a link to one) owned by `uid` with no permission for group or others.
fn is_own_private_dir(path: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
}

fn non_empty_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Creates `path` (and parents) with mode 0700, or checks that the existing directory is ours and private.
pub fn private_dir(path: &Path) -> Result<(), DirsError> {
    let io_err = |source| DirsError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(io_err(io::Error::other("not a directory")));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(DirsError::NotOurs {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirsError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// [`private_dir`] for a directory we keep things in (the cache, the state dir): also no parent of it, as
/// written or as resolved, may be changed by another user. A parent must belong to us or to root and be writable
/// by nobody else, except a sticky directory owned by root (such as `/tmp`) whose entry on the way is ours.
pub fn private_root(path: &Path) -> Result<(), DirsError> {
    private_dir(path)?;
    let io_err = |source| DirsError::Io {
        path: path.to_owned(),
        source,
    };
    let absolute = std::path::absolute(path).map_err(io_err)?;
    let canonical = std::fs::canonicalize(path).map_err(io_err)?;
    let me = nix::unistd::geteuid().as_raw();
    for chain in [&absolute, &canonical] {
        let mut child: &Path = chain;
        while let Some(parent) = child.parent() {
            if let Some(why) = open_parent(parent, child, me) {
                return Err(DirsError::OpenParent {
                    path: path.to_owned(),
                    parent: parent.to_owned(),
                    why,
                });
            }
            child = parent;
        }
    }
    Ok(())
}

/// Why another user could change `parent` (the directory holding `child` on our way), if they could.
fn open_parent(parent: &Path, child: &Path, me: u32) -> Option<String> {
    let Ok(meta) = std::fs::metadata(parent) else {
        return Some("cannot be inspected".into());
    };
    let owner = meta.uid();
    if owner != me && owner != 0 {
        return Some(format!("belongs to uid {owner}"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 == 0 {
        return None;
    }
    // In a sticky directory only an entry's owner (or the directory's) may rename or remove it.
    let child_ours = std::fs::symlink_metadata(child).is_ok_and(|m| m.uid() == me);
    if mode & 0o1000 != 0 && owner == 0 && child_ours {
        return None;
    }
    Some(format!("others may write to (mode {mode:o})"))
}

// Locked directories: run directories and staged roots are made visible only once locked (see sandbox::runs).

/// The prefix of directories being created by [`create_locked`].
pub(crate) const CREATING: &str = ".creating-";

/// Creates `parent/name` holding a `lock` file, locked (exclusive `flock`) before the directory appears under
/// `name`: it is built as `parent/.creating-<name>` and renamed into place. Returns the path and the locked file.
pub(crate) fn create_locked(parent: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let staging = parent.join(format!("{CREATING}{name}"));
    std::fs::create_dir(&staging)?;
    let made = (|| {
        let lock = File::options()
            .write(true)
            .create_new(true)
            .open(staging.join("lock"))?;
        #[cfg(test)]
        test_hooks::scheduling_delay();
        try_lock(&lock)?;
        let path = parent.join(name);
        std::fs::rename(&staging, &path)?;
        Ok((path, lock))
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made
}

/// Whether `dir` (an entry of a directory whose entries [`create_locked`] makes) may be removed: abandoned, and
/// if still being created, abandoned for more than a minute.
pub(crate) fn is_collectable(dir: &Path) -> bool {
    let creating = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(CREATING));
    if creating && !older_than(dir, 60) {
        return false;
    }
    is_abandoned(dir)
}

fn older_than(dir: &Path, secs: u64) -> bool {
    std::fs::symlink_metadata(dir)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map(|d| d.as_secs() > secs).unwrap_or(false))
        .unwrap_or(false)
}

/// Whether `dir` (holding a `lock` file its owners keep locked) has been abandoned: nobody holds the lock, or the
/// directory never got one and is not brand new (its creation was interrupted).
pub(crate) fn is_abandoned(dir: &Path) -> bool {
    match File::options().write(true).open(dir.join("lock")) {
        Ok(f) => try_lock(&f).is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => older_than(dir, 60),
        Err(_) => false,
    }
}

/// Takes an exclusive `flock` without waiting.
pub(crate) fn try_lock(f: &File) -> io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `n` random bytes as hex, from the kernel.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(hex::encode(buf))
}

/// Test hooks of the locked directories.
#[cfg(test)]
pub(crate) mod test_hooks {
    /// A delay between creating a lock file and locking it, as a busy machine's scheduler may make (set by the
    /// test that needs it, so that the window is hit on every run rather than once in a while).
    pub(crate) static DELAY_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    pub(crate) fn scheduling_delay() {
        let us = DELAY_US.load(std::sync::atomic::Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_made_absolute_or_ignored() {
        let env = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some(PathBuf::from("run")),
            "XDG_CACHE_HOME" => Some(PathBuf::from("cache")),
            "HOME" => Some(PathBuf::from("/home/u")),
            _ => None,
        };
        let d = Dirs::from_lookup(Some(PathBuf::from("c")), &env, &|_| None).unwrap();
        assert_eq!(d.cache, std::env::current_dir().unwrap().join("c"));
        let d = Dirs::from_lookup(None, &env, &|_| None).unwrap();
        assert_eq!(d.cache, PathBuf::from("/home/u/.cache/thv-sandbox"));
        assert_eq!(
            d.state,
            PathBuf::from("/home/u/.local/state/thv-sandbox/run")
        );
    }

    #[test]
    fn creates_private_and_refuses_open_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&d).unwrap_err();
        assert!(matches!(err, DirsError::TooOpen { .. }), "{err}");
        assert!(err.hint().contains("chmod 700"));
    }

    #[test]
    fn a_root_in_a_directory_others_may_change_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // tempdir is under /tmp: root-owned, sticky, and the entry on the way is ours.
        let good = tmp.path().join("cache");
        private_root(&good).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_root(&open.join("cache")).unwrap_err();
        assert!(matches!(err, DirsError::OpenParent { .. }), "{err}");
        assert!(err.hint().contains("chmod go-w"), "{}", err.hint());
        // Reached through a symlink in a private directory: the directory the link resolves into counts too.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(matches!(
            private_root(&link.join("cache2")),
            Err(DirsError::OpenParent { .. })
        ));
        // Sticky, but not root's: its owner could still move our entry.
        if nix::unistd::geteuid().is_root() {
            let sticky = tmp.path().join("sticky");
            std::fs::create_dir(&sticky).unwrap();
            std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
            nix::unistd::chown(&sticky, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
            assert!(private_root(&sticky.join("cache")).is_err());
        }
    }

    #[test]
    fn the_state_dir_is_not_predictable_when_there_is_a_home() {
        let state = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, PathBuf)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
                .collect();
            let get =
                move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            Dirs::from_lookup(Some("/c".into()), &get, &|_| None)
                .unwrap()
                .state
        };
        assert_eq!(
            state(&[("XDG_RUNTIME_DIR", "/run/user/7"), ("HOME", "/h")]),
            Path::new("/run/user/7/thv-sandbox")
        );
        assert_eq!(
            state(&[("HOME", "/h")]),
            Path::new("/h/.local/state/thv-sandbox/run")
        );
        assert_eq!(
            state(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]),
            Path::new("/s/thv-sandbox/run")
        );
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(state(&[]), PathBuf::from(format!("/tmp/thv-sandbox-{uid}")));
    }

    #[test]
    fn without_xdg_runtime_dir_the_users_runtime_directory_is_used() {
        let uid = nix::unistd::geteuid().as_raw();
        let home = |k: &str| (k == "HOME").then(|| PathBuf::from("/h"));
        let session = |u: u32| (u == uid).then(|| PathBuf::from(format!("/run/user/{u}")));
        let d = Dirs::from_lookup(Some("/c".into()), &home, &session).unwrap();
        assert_eq!(
            d.state,
            PathBuf::from(format!("/run/user/{uid}/thv-sandbox"))
        );
        // The variable, when the client passes it on, still decides.
        let both = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some(PathBuf::from("/r")),
            _ => home(k),
        };
        let d = Dirs::from_lookup(Some("/c".into()), &both, &session).unwrap();
        assert_eq!(d.state, Path::new("/r/thv-sandbox"));
    }

    #[test]
    fn a_runtime_directory_others_may_enter_or_a_link_is_not_the_users() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let dir = tmp.path().join("1000");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_own_private_dir(&dir, uid));
        assert!(!is_own_private_dir(&dir, uid + 1), "someone else's");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(!is_own_private_dir(&link, uid), "a link");
        for mode in [0o750, 0o705, 0o711] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(!is_own_private_dir(&dir, uid), "mode {mode:o}");
        }
        assert!(!is_own_private_dir(&tmp.path().join("missing"), uid));
    }

    #[test]
    fn refuses_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(private_dir(&link).is_err());
    }
}
