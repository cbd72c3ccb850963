//! Checks 9 and 10: `subordinate ids` — /etc/subuid and /etc/subgid ranges for the user; `newuidmap/newgidmap` — the
//! setuid helpers that write such ranges for unprivileged users.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::rootfs::idmap::{parse_subid_file, subid_entries, SubIdKind, MIN_SUBID_COUNT};

use super::report::{Check, Status};
use super::DoctorError;

/// What a subordinate-id file says about the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SubIdLookup {
    /// The range [`parse_subid_file`] picks.
    pub(super) usable: Option<(u32, u32)>,
    /// The largest count among the user's entries, when none is usable.
    pub(super) too_small: Option<u32>,
}

impl SubIdLookup {
    pub(super) fn parse(content: &str, user: &str, uid: u32) -> Self {
        let usable = parse_subid_file(content, user, uid);
        let too_small = if usable.is_none() {
            subid_entries(content, user, uid)
                .map(|(_, count)| count)
                .max()
        } else {
            None
        };
        SubIdLookup { usable, too_small }
    }

    /// A missing file reads as "no entries".
    pub(super) fn read(kind: SubIdKind, user: &str, uid: u32) -> Result<Self, DoctorError> {
        match fs::read_to_string(kind.path()) {
            Ok(content) => Ok(Self::parse(&content, user, uid)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(SubIdLookup {
                usable: None,
                too_small: None,
            }),
            Err(source) => Err(DoctorError::Read {
                path: kind.path().to_path_buf(),
                source,
            }),
        }
    }
}

/// `helpers_needed`: newuidmap/newgidmap are missing and we are not root, so the fix must install them.
pub(super) fn subid_check(
    user: &str,
    uid: u32,
    subuid: &Result<SubIdLookup, DoctorError>,
    subgid: &Result<SubIdLookup, DoctorError>,
    helpers_needed: bool,
) -> Check {
    const NAME: &str = "subordinate ids";
    let describe = |kind: SubIdKind, lookup: &Result<SubIdLookup, DoctorError>| -> (bool, String) {
        let file = kind.path().display();
        match lookup {
            Err(e) => (false, crate::chain::one_line(e)),
            Ok(SubIdLookup {
                usable: Some((start, count)),
                ..
            }) => (
                true,
                format!(
                    "{file}: {start}-{} ({count} ids)",
                    u64::from(*start) + u64::from(*count) - 1
                ),
            ),
            Ok(SubIdLookup {
                too_small: Some(count),
                ..
            }) => (
                false,
                format!("{file}: only {count} ids for {user} (need {MIN_SUBID_COUNT})"),
            ),
            Ok(_) => (false, format!("{file}: no entry for {user} (uid {uid})")),
        }
    };
    let (uid_ok, uid_text) = describe(SubIdKind::Uid, subuid);
    let (gid_ok, gid_text) = describe(SubIdKind::Gid, subgid);
    if uid_ok && gid_ok {
        return Check::new(NAME, Status::Ok, format!("{uid_text}; {gid_text}"));
    }
    Check::new(
        NAME,
        Status::Warn,
        format!(
            "{uid_text}; {gid_text}: runs in single-uid mode; images with several file owners see them as one user"
        ),
    )
    .with_fix(format!(
        "`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`{}",
        if helpers_needed {
            " and install `uidmap`"
        } else {
            ""
        }
    ))
}

/// One of newuidmap/newgidmap as found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdMapHelper {
    pub(super) name: &'static str,
    pub(super) path: Option<PathBuf>,
    pub(super) setuid_root: bool,
    pub(super) file_caps: bool,
}

impl IdMapHelper {
    /// Looks in PATH, then /usr/bin.
    pub(super) fn find(name: &'static str) -> Self {
        let dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let found = dirs
            .into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join(name))
            .find_map(|p| {
                fs::metadata(&p)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| (p, m))
            });
        let Some((path, meta)) = found else {
            return IdMapHelper {
                name,
                path: None,
                setuid_root: false,
                file_caps: false,
            };
        };
        let setuid_root = meta.uid() == 0 && meta.mode() & 0o4000 != 0;
        let file_caps = has_file_caps(&path);
        IdMapHelper {
            name,
            path: Some(path),
            setuid_root,
            file_caps,
        }
    }

    pub(super) fn usable(&self) -> bool {
        self.path.is_some() && (self.setuid_root || self.file_caps)
    }

    pub(super) fn describe(&self) -> String {
        match &self.path {
            None => format!("{} not found", self.name),
            Some(path) if self.setuid_root => format!("{} (setuid root)", path.display()),
            Some(path) if self.file_caps => format!("{} (file capabilities)", path.display()),
            Some(path) => format!(
                "{} (neither setuid root nor file capabilities)",
                path.display()
            ),
        }
    }
}

/// Whether the file has a `security.capability` extended attribute.
pub(super) fn has_file_caps(path: &Path) -> bool {
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 only asks for the value's size.
    let size = unsafe {
        libc::getxattr(
            cpath.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

pub(super) const UIDMAP_FIX: &str =
    "`sudo apt-get install uidmap` (Debian/Ubuntu; `shadow-utils` on Fedora)";

pub(super) fn idmap_helpers_check(
    euid: u32,
    subids_present: bool,
    uidmap: &IdMapHelper,
    gidmap: &IdMapHelper,
) -> Check {
    const NAME: &str = "newuidmap/newgidmap";
    let found = format!("{}, {}", uidmap.describe(), gidmap.describe());
    if euid == 0 {
        return Check::new(
            NAME,
            Status::Ok,
            format!("not needed as root (root writes id maps itself); {found}"),
        );
    }
    if uidmap.usable() && gidmap.usable() {
        return Check::new(NAME, Status::Ok, found);
    }
    if uidmap.path.is_none() || gidmap.path.is_none() {
        return if subids_present {
            Check::new(
                NAME,
                Status::Warn,
                format!("{found}: the subordinate ids cannot be used, so the sandbox runs in single-uid mode"),
            )
            .with_fix(UIDMAP_FIX)
        } else {
            Check::new(
                NAME,
                Status::Ok,
                format!("{found} (needed only together with subordinate ids)"),
            )
        };
    }
    let broken: Vec<String> = [uidmap, gidmap]
        .into_iter()
        .filter(|h| !h.usable())
        .filter_map(|h| h.path.as_ref().map(|p| p.display().to_string()))
        .collect();
    Check::new(
        NAME,
        Status::Warn,
        format!("{found}: they cannot write id maps for you"),
    )
    .with_fix(format!(
        "`sudo apt-get install --reinstall uidmap`, or `sudo chmod u+s {}`",
        broken.join(" ")
    ))
}
