//! Check 11: `state dir`, `cache dir` — exist or can be created, owned by us, not writable by others.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use super::report::{Check, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirKind {
    State,
    Cache,
}

impl DirKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            DirKind::State => "state dir",
            DirKind::Cache => "cache dir",
        }
    }
}

/// What is at a directory path, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DirState {
    Present {
        uid: u32,
        mode: u32,
    },
    NotADirectory,
    /// Does not exist; `ancestor` is the nearest existing one and whether we may create entries in it.
    Missing {
        ancestor: Option<PathBuf>,
        creatable: bool,
    },
    Unreadable(String),
}

impl DirState {
    pub(super) fn inspect(path: &Path) -> Self {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => DirState::Present {
                uid: meta.uid(),
                mode: meta.mode() & 0o7777,
            },
            Ok(_) => DirState::NotADirectory,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let ancestor = path
                    .ancestors()
                    .skip(1)
                    .find(|a| a.is_dir() || a.as_os_str().is_empty());
                let ancestor = ancestor
                    .filter(|a| !a.as_os_str().is_empty())
                    .map(Path::to_path_buf);
                let creatable = ancestor
                    .as_deref()
                    .is_some_and(|a| access(a, AccessFlags::W_OK | AccessFlags::X_OK).is_ok());
                DirState::Missing {
                    ancestor,
                    creatable,
                }
            }
            Err(e) => DirState::Unreadable(e.to_string()),
        }
    }
}

pub(super) fn dir_check(kind: DirKind, path: &Path, state: &DirState, euid: u32) -> Check {
    let name = kind.name();
    let shown = path.display();
    let choose_other = "or point thv-sandbox at another directory";
    match state {
        DirState::Unreadable(e) => {
            Check::new(name, Status::Fail, format!("cannot inspect {shown}: {e}"))
                .with_fix(format!("fix the permissions of {shown}, {choose_other}"))
        }
        DirState::NotADirectory => Check::new(
            name,
            Status::Fail,
            format!("{shown} exists but is not a directory"),
        )
        .with_fix(format!("remove {shown}, {choose_other}")),
        DirState::Missing {
            creatable: true, ..
        } => Check::new(
            name,
            Status::Ok,
            format!("{shown} does not exist yet and will be created"),
        ),
        DirState::Missing {
            ancestor,
            creatable: false,
        } => {
            let under = ancestor
                .as_ref()
                .map_or("no existing parent".to_string(), |a| {
                    format!("{} is not writable by uid {euid}", a.display())
                });
            Check::new(name, Status::Fail, format!("{shown} does not exist and cannot be created: {under}"))
                .with_fix(format!("`mkdir -p -m 700 {shown}` as a user who may, then chown it to uid {euid}, {choose_other}"))
        }
        DirState::Present { uid, .. } if *uid != euid => Check::new(
            name,
            Status::Fail,
            format!("{shown} is owned by uid {uid}, not by uid {euid}"),
        )
        .with_fix(format!("`sudo chown {euid} {shown}`, {choose_other}")),
        DirState::Present { mode, .. } if mode & 0o022 != 0 => {
            let target = if kind == DirKind::State {
                "700"
            } else {
                "go-w"
            };
            Check::new(
                name,
                Status::Fail,
                format!("{shown} has mode {mode:04o}: others may write to it"),
            )
            .with_fix(format!("`chmod {target} {shown}`, {choose_other}"))
        }
        DirState::Present { mode, .. } if kind == DirKind::State && mode & 0o077 != 0 => {
            Check::new(
                name,
                Status::Warn,
                format!("{shown} has mode {mode:04o}: others may read sandbox state"),
            )
            .with_fix(format!("`chmod 700 {shown}`"))
        }
        DirState::Present { mode, .. } => Check::new(
            name,
            Status::Ok,
            format!("{shown} (mode {mode:04o}, owned by us)"),
        ),
    }
}
