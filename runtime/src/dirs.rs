//! Where thv-sandbox keeps per-run state and its cache, and the checks that make them safe to use.
//!
//! MCP clients start servers with a minimal environment, so nothing here may depend on more than `HOME` and, when
//! present, the XDG variables. A directory we did not create is checked, not trusted: it must be owned by us and
//! not writable by anyone else.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The resolved directories.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Per-run state (bundles, libcontainer state, locks): `$XDG_RUNTIME_DIR/thv-sandbox`, else
    /// `/tmp/thv-sandbox-UID`.
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
            DirsError::NoHome => "set HOME or XDG_CACHE_HOME in the MCP client's environment for this server".into(),
            DirsError::Io { .. } => "set XDG_RUNTIME_DIR / XDG_CACHE_HOME to a writable directory of yours".into(),
        }
    }
}

impl Dirs {
    /// Resolves the directories from the environment (`cache_override` wins for the cache).
    pub fn from_env(cache_override: Option<PathBuf>) -> Result<Dirs, DirsError> {
        let uid = nix::unistd::geteuid().as_raw();
        let state = match non_empty_env("XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("thv-sandbox"),
            None => PathBuf::from(format!("/tmp/thv-sandbox-{uid}")),
        };
        let cache = match cache_override {
            Some(dir) => dir,
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
        private_dir(&self.state)?;
        let runs = self.state.join("runs");
        private_dir(&runs)?;
        Ok(runs)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn refuses_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(private_dir(&link).is_err());
    }
}
