//! Resolving the image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's own `/etc/passwd` and
//! `/etc/group`, read inside the unpacked root — never through a symlink that leaves it, and never more than a
//! bounded number of bytes (containers/storage CVE-2024-9676).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// The largest `/etc/passwd` or `/etc/group` we read.
pub const MAX_ACCOUNT_FILE: u64 = 1024 * 1024;

/// The user the server runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid inside the sandbox.
    pub uid: u32,
    /// Primary gid inside the sandbox.
    pub gid: u32,
    /// Home directory from `/etc/passwd`, if the user has an entry.
    pub home: Option<String>,
}

/// Failures resolving the image user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A named user has no passwd entry.
    #[error("image user `{0}` is not in the image's /etc/passwd")]
    UnknownUser(String),
    /// A named group has no group entry.
    #[error("image group `{0}` is not in the image's /etc/group")]
    UnknownGroup(String),
    /// Reading the account file failed.
    #[error("cannot read {path} inside the image")]
    Read {
        /// Path inside the image.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The account file is larger than we accept.
    #[error("{path} inside the image is larger than {MAX_ACCOUNT_FILE} bytes")]
    TooLarge {
        /// Path inside the image.
        path: String,
    },
}

/// One `/etc/passwd` entry (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// Resolves `spec` (the image config's `User`; empty means root) inside `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = read_inside(root, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(Passwd {
                name: String::new(),
                uid,
                gid: uid,
                home: String::new(),
            })),
        Err(_) => passwd.iter().find(|p| p.name == user_part).cloned(),
    }
    .ok_or_else(|| UserError::UnknownUser(user_part.to_owned()))?;
    // A numeric uid without a passwd entry gets gid = uid only when no entry says otherwise (Docker: gid 0).
    let default_gid = if entry.name.is_empty() { 0 } else { entry.gid };
    let gid = match group_part {
        None | Some("") => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_inside(root, "etc/group")?.unwrap_or_default();
                find_group(&groups, g).ok_or_else(|| UserError::UnknownGroup(g.to_owned()))?
            }
        },
    };
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        home: Some(entry.home).filter(|h| h.starts_with('/')),
    })
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Passwd {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

fn find_group(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// Reads `rel` (relative to `root`) with every symlink resolved as if `root` were `/`; `None` if it does not exist.
pub fn read_inside(root: &Path, rel: &str) -> Result<Option<String>, UserError> {
    let err = |source| UserError::Read {
        path: format!("/{rel}"),
        source,
    };
    let dir = open_dir(root).map_err(err)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_raw_fd(), rel, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    let file = std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        )));
    }
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(UserError::TooLarge {
            path: format!("/{rel}"),
        });
    }
    Ok(Some(text))
}

fn open_dir(root: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Whether `path` (absolute, inside the image) exists as a directory inside `root`.
pub fn dir_exists_inside(root: &Path, path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    let Ok(dir) = open_dir(root) else {
        return false;
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir.as_raw_fd(), rel, how) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            true
        }
        Err(_) => false,
    }
}

/// The path of a root-relative file, for messages.
pub fn display_inside(rel: &str) -> PathBuf {
    Path::new("/").join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(t.path().join("etc/group"), group).unwrap();
        t
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn resolves_names_numbers_and_groups() {
        let r = root_with(PASSWD, GROUP);
        let u = |s| resolve(r.path(), s).unwrap();
        assert_eq!(
            u(""),
            ResolvedUser {
                uid: 0,
                gid: 0,
                home: Some("/root".into())
            }
        );
        assert_eq!(
            u("app"),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                home: Some("/home/app".into())
            }
        );
        assert_eq!(u("1000").gid, 1001);
        assert_eq!(u("app:staff").gid, 50);
        assert_eq!(u("app:7").gid, 7);
        assert_eq!(
            u("4242"),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                home: None
            }
        );
        assert!(matches!(
            resolve(r.path(), "nobody"),
            Err(UserError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve(r.path(), "app:wheel"),
            Err(UserError::UnknownGroup(_))
        ));
    }

    #[test]
    fn passwd_symlink_cannot_leave_the_root() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // An absolute link resolves inside the root, a relative one cannot climb above it.
        std::os::unix::fs::symlink(outer.path().join("passwd"), root.join("etc/passwd")).unwrap();
        assert!(matches!(
            resolve(&root, "evil"),
            Err(UserError::UnknownUser(_))
        ));
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../passwd", root.join("etc/passwd")).unwrap();
        assert!(matches!(
            resolve(&root, "evil"),
            Err(UserError::UnknownUser(_))
        ));
    }

    #[test]
    fn oversized_passwd_is_refused() {
        let big = "x".repeat(MAX_ACCOUNT_FILE as usize + 10);
        let r = root_with(&big, GROUP);
        assert!(matches!(
            resolve(r.path(), "app"),
            Err(UserError::TooLarge { .. })
        ));
    }
}
