//! Opening directories inside the root without ever leaving it, and removing entries
//! without following symlinks.
//!
//! Paths here are relative, already cleaned (no `.`, `..` or empty components, see
//! `super::clean`), components joined by `/`; the empty path is the root itself.
//! Symlinks met while resolving are interpreted as if the root were `/`
//! (`RESOLVE_IN_ROOT`): an absolute target or a `..` that would climb above the root
//! lands on the root instead. Only directories are opened this way; an entry's own
//! (last) component is always handled by the caller with `*at` calls that do not follow it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{
    openat, openat2, readlinkat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags,
};
use rustix::io::Errno;

/// Most symlinks followed while resolving one path (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// How directories inside the root are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// One `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` call (Linux 5.6+).
    Openat2,
    /// A component-by-component walk with `O_NOFOLLOW`, reading symlinks ourselves and
    /// clamping them to the root. Used when `openat2` is unavailable (old kernels, or a
    /// seccomp filter that refuses it).
    Manual,
}

impl Resolver {
    /// Picks `Openat2` when the kernel accepts it on `root`.
    pub(crate) fn detect(root: BorrowedFd<'_>) -> Resolver {
        match openat2(
            root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(_) => Resolver::Openat2,
            // ENOSYS: kernel before 5.6; EPERM: seccomp profiles that deny unknown
            // syscalls that way. Anything else odd: the walk is always correct.
            Err(_) => Resolver::Manual,
        }
    }

    /// Opens the directory `rel` inside `root` with `flags` (`O_DIRECTORY | O_CLOEXEC`
    /// are added). With `follow == false` any symlink on the way fails with `ELOOP`.
    pub(crate) fn open_dir(
        self,
        root: BorrowedFd<'_>,
        rel: &[u8],
        flags: OFlags,
        follow: bool,
    ) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match self {
            Resolver::Openat2 => {
                let path: &[u8] = if rel.is_empty() { b"." } else { rel };
                let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
                if !follow {
                    resolve |= ResolveFlags::NO_SYMLINKS;
                }
                // EAGAIN only happens when something renames inside the root while we
                // resolve; nothing else should be writing there, but retry briefly.
                let mut tries = 0;
                loop {
                    match openat2(root, path, flags, Mode::empty(), resolve) {
                        Err(Errno::AGAIN) if tries < 8 => tries += 1,
                        other => return other.map_err(io::Error::from),
                    }
                }
            }
            Resolver::Manual => walk(root, rel, flags, follow),
        }
    }
}

/// The manual resolver: keeps the stack of directories from the root to where we are,
/// so `..` is a pop (and a no-op at the root), and an absolute symlink target restarts
/// at the root.
fn walk(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags, follow: bool) -> io::Result<OwnedFd> {
    let mut stack: Vec<OwnedFd> = Vec::new();
    // Components still to visit, last one first.
    let mut todo: Vec<Vec<u8>> = components(rel).rev().map(<[u8]>::to_vec).collect();
    let mut links = 0;
    while let Some(comp) = todo.pop() {
        match comp.as_slice() {
            b"" | b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let cur = stack.last().map_or(root, AsFd::as_fd);
        match openat(
            cur,
            comp.as_slice(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => stack.push(fd),
            // A symlink (opened with O_PATH|O_NOFOLLOW it is not a directory) or a
            // non-directory: tell them apart by reading it as a link.
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                let target = match readlinkat(cur, comp.as_slice(), Vec::new()) {
                    Ok(t) => t.into_bytes(),
                    Err(Errno::INVAL) => return Err(Errno::NOTDIR.into()),
                    Err(e) => return Err(e.into()),
                };
                if !follow {
                    return Err(Errno::LOOP.into());
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::LOOP.into());
                }
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                todo.extend(components(&target).rev().map(<[u8]>::to_vec));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let cur = stack.last().map_or(root, AsFd::as_fd);
    openat(cur, ".", flags, Mode::empty()).map_err(io::Error::from)
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Removes `name` from the directory `dir`, recursively if it is a directory. Never
/// follows a symlink: a symlink is unlinked, not what it points to.
pub(crate) fn remove(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR) => remove_tree(dir, name),
        Err(e) => Err(e.into()),
    }
}

/// Removes the directory `name` and everything below it. Each level holds one open
/// descriptor, so depth is bounded by the process's descriptor limit (paths are
/// bounded by `UnpackLimits::max_path_len` anyway).
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (fd, children) = read_children(fd)?;
    for (child, kind) in children {
        if kind == FileType::Directory {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            remove(fd.as_fd(), &child)?;
        }
    }
    drop(fd);
    unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io::Error::from)
}

/// Names and `d_type`s of a directory's entries.
pub(crate) type Children = Vec<(Vec<u8>, FileType)>;

/// Lists a directory opened for reading: names (without `.` and `..`) and types as
/// `getdents` reports them (`Unknown` on file systems without `d_type`). Gives the
/// descriptor back for `*at` calls on the children.
pub(crate) fn read_children(fd: OwnedFd) -> io::Result<(OwnedFd, Children)> {
    let keep = fd.try_clone()?;
    let mut children = Vec::new();
    for entry in Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        children.push((name.to_vec(), entry.file_type()));
    }
    Ok((keep, children))
}
