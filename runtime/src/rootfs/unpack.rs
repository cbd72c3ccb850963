//! Unpack step: apply OCI image layers onto a root directory, safely and without privileges.
//!
//! [`RootBuilder`] holds what must survive from one layer to the next (the root's
//! descriptor, deferred directory metadata, the byte and entry budgets). For each layer,
//! [`RootBuilder::apply_layer`] runs, in this order:
//! 1. decompress (gzip, zstd or none);
//! 2. count and hash the uncompressed stream: the byte budget must be enforced before
//!    the tar parser sees the bytes (zero-bombs), and the hash is the layer's diff_id,
//!    taken over every byte up to EOF, including what follows the end-of-archive marker;
//! 3. parse tar headers with bounded PAX / long-name records ([`tar`](self::tar));
//! 4. clean each entry path lexically: `..` that would climb above the root is an error,
//!    absolute paths are taken relative to the root;
//! 5. resolve the entry's parent directory inside the root (`openat2(RESOLVE_IN_ROOT)`,
//!    or a manual `O_NOFOLLOW` walk where openat2 is missing), creating missing parents;
//! 6. create the entry itself relative to that directory, never following its last
//!    component (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` without
//!    `AT_SYMLINK_FOLLOW`, `mkfifoat`); what already exists there is removed first
//!    (recursively for directories, without following symlinks), so the last entry wins;
//! 7. set owner, mode and mtime through the descriptor just created (`fchown`, `fchmod`,
//!    `futimens`), or with `AT_SYMLINK_NOFOLLOW` for symlinks, which get no chmod.
//!
//! Directories are created `0700` and get their real mode, owner and mtime only in
//! [`RootBuilder::finish`], deepest first, so that a `0555` directory can still receive
//! its children, in this layer or a later one.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are applied as the OCI image spec says: they
//! hide what lower layers put there, never what the same layer holds, and are resolved
//! without following any symlink.
//!
//! Not done in this slice: extended attributes (`SCHILY.xattr.*` PAX records, including
//! `security.capability`) are ignored; device nodes are skipped and counted (an
//! unprivileged process cannot `mknod`); sparse entries are refused (image builders do
//! not write them).

mod resolve;
pub mod tar;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{
    fchmod, fchown, futimens, linkat, mkdirat, mkfifoat, openat, statat, symlinkat, utimensat,
    AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use self::resolve::Resolver;
use self::tar::{Entry, EntryKind, Mtime, TarError, TarLimits, TarReader};

pub use crate::image::layout::Compression;

/// Bounds against hostile layers. Byte and entry budgets are shared by all the layers
/// applied through one [`RootBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Uncompressed bytes read over all layers (tar headers, data, padding and
    /// whatever trails the end-of-archive marker).
    pub max_total_bytes: u64,
    /// Tar entries over all layers (extension headers not counted).
    pub max_entries: u64,
    /// Longest entry path or link target, in bytes.
    pub max_path_len: usize,
    /// Largest PAX extended header, in bytes.
    pub max_pax_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_total_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_path_len: 4096,
            max_pax_bytes: 1 << 20,
        }
    }
}

/// What to do with the owners recorded in the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Everything is owned by the unpacking user (rootless without subordinate ids).
    #[default]
    Ignore,
    /// `chown` to the recorded uid/gid (inside a user namespace). `EINVAL` (id not
    /// mapped) and `EPERM` leave the owner as it is instead of failing the unpack.
    Chown,
    /// `chown` to the recorded ids moved into a host range: image id `n < count` becomes
    /// `uid + n` / `gid + n` (root unpacking for a sandbox whose ids live in that range).
    /// Ids outside the range keep the unpacking user as owner.
    Shift {
        /// First host uid of the range.
        uid: u32,
        /// First host gid of the range.
        gid: u32,
        /// Number of ids in the range.
        count: u32,
    },
}

impl Ownership {
    /// The host ids an entry recorded as `(uid, gid)` gets; `None` leaves that id unchanged.
    fn target(self, uid_raw: u64, gid_raw: u64) -> (Option<Uid>, Option<Gid>) {
        match self {
            Ownership::Ignore => (None, None),
            Ownership::Chown => (uid(uid_raw), gid(gid_raw)),
            Ownership::Shift {
                uid: ubase,
                gid: gbase,
                count,
            } => {
                let shift = |raw: u64, base: u32| {
                    u32::try_from(raw)
                        .ok()
                        .filter(|&n| n < count)
                        .and_then(|n| base.checked_add(n))
                };
                (
                    shift(uid_raw, ubase).map(Uid::from_raw),
                    shift(gid_raw, gbase).map(Gid::from_raw),
                )
            }
        }
    }
}

/// Options for [`RootBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackOptions {
    /// Resource bounds.
    pub limits: UnpackLimits,
    /// Owner handling.
    pub ownership: Ownership,
}

/// What one layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries processed (whiteouts and skipped devices included).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Character and block devices skipped (they cannot be created unprivileged).
    pub skipped_devices: u64,
    /// Whiteout entries processed (`.wh.NAME` and `.wh..wh..opq`).
    pub whiteouts: u64,
    /// `sha256:<hex>` of the whole uncompressed stream, to compare with the image
    /// config's `rootfs.diff_ids`.
    pub diff_id: String,
}

/// Errors of the unpack step.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The root directory could not be opened.
    #[error("cannot open the unpack root {path}")]
    Root {
        /// The root given by the caller.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar stream is malformed, truncated, unreadable or over a parsing limit.
    #[error("invalid layer archive")]
    Archive(#[from] TarError),
    /// The uncompressed layers are larger than [`UnpackLimits::max_total_bytes`].
    #[error("uncompressed layers exceed the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The layers hold more than [`UnpackLimits::max_entries`] entries.
    #[error("layers hold more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// An entry path climbs above the root with `..`.
    #[error("layer entry {entry:?} points outside the root directory")]
    Escape {
        /// The entry's path as stored.
        entry: String,
    },
    /// A hard link's target climbs above the root with `..`.
    #[error("layer entry {entry:?} is a hard link to {target:?}, outside the root directory")]
    HardlinkEscape {
        /// The entry's path as stored.
        entry: String,
        /// The link target as stored.
        target: String,
    },
    /// A whiteout names nothing (`.wh.`), the directory itself (`.wh..`) or its parent (`.wh...`).
    #[error("layer entry {entry:?} is an invalid whiteout")]
    InvalidWhiteout {
        /// The entry's path as stored.
        entry: String,
    },
    /// An entry that cannot be applied for a structural reason.
    #[error("layer entry {entry:?} is invalid: {reason}")]
    InvalidEntry {
        /// The entry's path as stored.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// A file-system operation failed while applying an entry.
    #[error("layer entry {entry:?}: cannot {op} {path}")]
    Fs {
        /// The entry's path as stored.
        entry: String,
        /// The operation.
        op: &'static str,
        /// The host path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file-system operation failed while applying deferred directory metadata.
    #[error("cannot {op} {path} while finishing the root")]
    Finish {
        /// The operation.
        op: &'static str,
        /// The host path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Directory metadata applied in [`RootBuilder::finish`].
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    /// `None` for directories created implicitly as parents.
    mtime: Option<Mtime>,
    owner: Option<(u64, u64)>,
}

/// Mode of directories that no entry describes (created as parents of entries).
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Mode directories have until [`RootBuilder::finish`]: ours, writable, searchable.
const WORK_DIR_MODE: u32 = 0o700;
/// Copy buffer for file data.
const COPY_BUF: usize = 1 << 20;
/// Read-ahead between the decompressor and the tar parser.
const READ_BUF: usize = 256 << 10;
/// Parent directories kept open; cleared whenever anything is removed.
const PARENT_CACHE: usize = 64;

/// Applies layers onto a root directory; see the module docs for the order of operations.
pub struct RootBuilder {
    root_path: PathBuf,
    root: OwnedFd,
    resolver: Resolver,
    opts: UnpackOptions,
    /// Directories whose metadata waits for `finish`, by cleaned relative path. In
    /// reverse order, descendants come before their ancestors.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    total_bytes: u64,
    total_entries: u64,
    /// Open parent directories by cleaned relative path. Entries come grouped by
    /// directory, so this saves most path resolutions. Only removals can make a cached
    /// path point elsewhere, and every removal clears it.
    parents: HashMap<Vec<u8>, Arc<OwnedFd>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for RootBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootBuilder")
            .field("root", &self.root_path)
            .field("resolver", &self.resolver)
            .field("opts", &self.opts)
            .field("deferred_dirs", &self.dirs.len())
            .field("total_bytes", &self.total_bytes)
            .field("total_entries", &self.total_entries)
            .finish_non_exhaustive()
    }
}

/// Per-layer bookkeeping.
#[derive(Default)]
struct LayerState {
    /// Paths this layer holds: entries it created, and their ancestors. Whiteouts
    /// never remove these (they only hide lower layers).
    present: HashSet<Vec<u8>>,
    /// Parent of the previous entry, to mark ancestors once per directory run.
    last_parent: Option<Vec<u8>>,
}

impl RootBuilder {
    /// Starts building into `root`, an existing directory that only the caller can write
    /// (for example `0700` inside a private staging directory). Its own mode becomes the
    /// one of the layers' `./` entry at [`finish`](Self::finish).
    pub fn new(root: &Path, opts: UnpackOptions) -> Result<Self, UnpackError> {
        let fd = Self::open_root(root)?;
        let resolver = Resolver::detect(fd.as_fd());
        Ok(Self::with_resolver(root, fd, opts, resolver))
    }

    fn open_root(root: &Path) -> Result<OwnedFd, UnpackError> {
        openat(
            rustix::fs::CWD,
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Root {
            path: root.to_owned(),
            source: e.into(),
        })
    }

    fn with_resolver(root: &Path, fd: OwnedFd, opts: UnpackOptions, resolver: Resolver) -> Self {
        tracing::debug!(root = %root.display(), ?resolver, "unpack root opened");
        RootBuilder {
            root_path: root.to_owned(),
            root: fd,
            resolver,
            opts,
            dirs: BTreeMap::new(),
            total_bytes: 0,
            total_entries: 0,
            parents: HashMap::new(),
            buf: vec![0; COPY_BUF],
        }
    }

    /// Applies one layer on top of what is already in the root. On error the root is
    /// left half-written: unpack into a staging directory and discard it on failure.
    pub fn apply_layer<R: Read>(
        &mut self,
        layer: R,
        compression: Compression,
    ) -> Result<LayerStats, UnpackError> {
        let limit = self.opts.limits.max_total_bytes;
        let decoder = match compression {
            Compression::None => Decoder::Plain(layer),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(layer))),
            // The decoder keeps zstd's default limit on the window (2^27 bytes): a frame asking for more is an
            // error, not an allocation.
            Compression::Zstd => Decoder::Zstd(Box::new(
                zstd::stream::read::Decoder::new(layer)
                    .map_err(|source| TarError::Io { offset: 0, source })?,
            )),
        };
        let tally = Tally {
            inner: decoder,
            hasher: Sha256::new(),
            bytes: 0,
            budget: limit.saturating_sub(self.total_bytes),
            exceeded: false,
        };
        let mut tar = TarReader::new(
            BufReader::with_capacity(READ_BUF, tally),
            TarLimits {
                max_path_len: self.opts.limits.max_path_len,
                max_pax_bytes: self.opts.limits.max_pax_bytes,
            },
        );
        let mut stats = LayerStats {
            entries: 0,
            bytes: 0,
            skipped_devices: 0,
            whiteouts: 0,
            diff_id: String::new(),
        };
        let mut state = LayerState::default();
        let result = self.apply_entries(&mut tar, &mut state, &mut stats);
        // Whatever failed, a stream over the budget is the error to report.
        if tar.get_ref().get_ref().exceeded {
            return Err(UnpackError::TooLarge { limit });
        }
        result?;

        // Read to EOF: the diff_id covers bytes after the end-of-archive marker too.
        let mut rest = tar.into_inner();
        let drained = io::copy(&mut rest, &mut io::sink());
        let tally = rest.into_inner();
        if tally.exceeded {
            return Err(UnpackError::TooLarge { limit });
        }
        if let Err(source) = drained {
            return Err(TarError::Io {
                offset: tally.bytes,
                source,
            }
            .into());
        }
        self.total_bytes += tally.bytes;
        stats.diff_id = format!("sha256:{}", hex::encode(tally.hasher.finalize()));
        tracing::debug!(?stats, "layer applied");
        Ok(stats)
    }

    /// Applies the deferred directory metadata (owner, mode, mtime), deepest first, and
    /// closes the root. Call once, after the last layer.
    pub fn finish(mut self) -> Result<(), UnpackError> {
        self.parents.clear();
        for (rel, meta) in self.dirs.iter().rev() {
            let path = self.host_path(rel);
            let fd = match self.open_deferred_dir(rel) {
                Ok(fd) => fd,
                // Gone, or now a symlink, through another path to it (a directory
                // created as `lib/sub` with `lib -> usr/lib`, then `usr/lib` removed):
                // nothing to apply, and a symlink is never followed.
                Err(e) if is_absent(&e) => continue,
                Err(source) => {
                    return Err(UnpackError::Finish {
                        op: "open directory",
                        path,
                        source,
                    })
                }
            };
            if let Some((uid, gid)) = meta.owner {
                chown_fd(fd.as_fd(), uid, gid, self.opts.ownership).map_err(|source| {
                    UnpackError::Finish {
                        op: "change the owner of",
                        path: path.clone(),
                        source,
                    }
                })?;
            }
            fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(|e| UnpackError::Finish {
                op: "change the mode of",
                path: path.clone(),
                source: e.into(),
            })?;
            if let Some(mtime) = meta.mtime {
                futimens(&fd, &timestamps(mtime)).map_err(|e| UnpackError::Finish {
                    op: "set the mtime of",
                    path,
                    source: e.into(),
                })?;
            }
        }
        Ok(())
    }

    /// Opens a directory recorded in `dirs` for `fchmod`. Like when it was created, its
    /// parents are resolved inside the root (they may be symlinks, such as `lib ->
    /// usr/lib`), and its own last component is not followed. Anything that replaced
    /// it or a parent since was a removal, which dropped it from `dirs`.
    fn open_deferred_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let (parent, base) = split(rel);
        if base.is_empty() {
            return self
                .resolver
                .open_dir(self.root.as_fd(), rel, OFlags::RDONLY, false);
        }
        let dir = self
            .resolver
            .open_dir(self.root.as_fd(), parent, OFlags::PATH, true)?;
        openat(
            &dir,
            base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }

    fn apply_entries<R: Read>(
        &mut self,
        tar: &mut TarReader<BufReader<Tally<Decoder<R>>>>,
        state: &mut LayerState,
        stats: &mut LayerStats,
    ) -> Result<(), UnpackError> {
        while let Some(entry) = tar.next_entry()? {
            self.total_entries += 1;
            if self.total_entries > self.opts.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.opts.limits.max_entries,
                });
            }
            stats.entries += 1;
            self.apply_entry(&entry, tar, state, stats)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &Entry,
        tar: &mut TarReader<BufReader<Tally<Decoder<R>>>>,
        state: &mut LayerState,
        stats: &mut LayerStats,
    ) -> Result<(), UnpackError> {
        let name = || lossy(&entry.path);
        let rel = clean(&entry.path).map_err(|e| match e {
            CleanError::Escape => UnpackError::Escape { entry: name() },
            CleanError::Nul => UnpackError::InvalidEntry {
                entry: name(),
                reason: "its path contains a NUL byte",
            },
        })?;
        let (parent, base) = split(&rel);
        if components(parent).any(|c| c.starts_with(WH_PREFIX)) {
            return Err(UnpackError::InvalidEntry {
                entry: name(),
                reason: "a parent directory has a whiteout name",
            });
        }

        if let Some(hidden) = base.strip_prefix(WH_PREFIX) {
            stats.whiteouts += 1;
            return self.whiteout(entry, parent, hidden, state);
        }

        // This layer holds the entry's ancestors: an opaque marker later in the layer
        // must keep them.
        if state.last_parent.as_deref() != Some(parent) {
            for (i, &b) in parent.iter().enumerate() {
                if b == b'/' {
                    state.present.insert(parent[..i].to_vec());
                }
            }
            if !parent.is_empty() {
                state.present.insert(parent.to_vec());
            }
            state.last_parent = Some(parent.to_vec());
        }

        if base.is_empty() {
            // The root itself (`./`): only its metadata can change.
            if entry.kind != EntryKind::Directory {
                return Err(UnpackError::InvalidEntry {
                    entry: name(),
                    reason: "it would replace the root directory",
                });
            }
            self.dirs.insert(Vec::new(), self.dir_meta(entry));
            return Ok(());
        }

        match entry.kind {
            EntryKind::Directory => self.make_dir(entry, &rel)?,
            EntryKind::File => self.make_file(entry, &rel, tar, stats)?,
            EntryKind::Symlink => self.make_symlink(entry, &rel)?,
            EntryKind::Hardlink => self.make_hardlink(entry, &rel)?,
            EntryKind::Fifo => self.make_fifo(entry, &rel)?,
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                // Cannot be created unprivileged. It still replaces whatever a lower layer
                // had at this path.
                stats.skipped_devices += 1;
                tracing::debug!(entry = %name(), "device node skipped");
                let dir = self.parent(entry, parent, true)?;
                match statat(&*dir, base, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => self.remove_at(entry, &dir, &rel)?,
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(self.fs_err(entry, "inspect", &rel, e.into())),
                }
                return Ok(());
            }
        }
        state.present.insert(rel);
        Ok(())
    }

    fn dir_meta(&self, entry: &Entry) -> DirMeta {
        DirMeta {
            mode: entry.mode,
            mtime: Some(entry.mtime),
            owner: Some((entry.uid, entry.gid)),
        }
    }

    fn make_dir(&mut self, entry: &Entry, rel: &[u8]) -> Result<(), UnpackError> {
        let (parent, base) = split(rel);
        let dir = self.parent(entry, parent, true)?;
        match mkdirat(&*dir, base, Mode::from_raw_mode(WORK_DIR_MODE)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing = statat(&*dir, base, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fs_err(entry, "inspect", rel, e.into()))?;
                // An existing directory is merged into; anything else is replaced.
                if FileType::from_raw_mode(existing.st_mode) != FileType::Directory {
                    self.remove_at(entry, &dir, rel)?;
                    mkdirat(&*dir, base, Mode::from_raw_mode(WORK_DIR_MODE))
                        .map_err(|e| self.fs_err(entry, "create directory", rel, e.into()))?;
                }
            }
            Err(e) => return Err(self.fs_err(entry, "create directory", rel, e.into())),
        }
        let meta = self.dir_meta(entry);
        self.dirs.insert(rel.to_vec(), meta);
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &Entry,
        rel: &[u8],
        tar: &mut TarReader<BufReader<Tally<Decoder<R>>>>,
        stats: &mut LayerStats,
    ) -> Result<(), UnpackError> {
        // Refuse a file that cannot fit before creating it (the stream count would
        // stop it anyway, later).
        let limit = self.opts.limits.max_total_bytes;
        let used = self.total_bytes + tar.get_ref().get_ref().bytes;
        if entry.size > limit.saturating_sub(used) {
            return Err(UnpackError::TooLarge { limit });
        }
        let (parent, _) = split(rel);
        let dir = self.parent(entry, parent, true)?;
        let fd = self.create(entry, &dir, rel, "create file", |at, name| {
            openat(
                at,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let mut file = File::from(fd);
        loop {
            let n = tar.read_data(&mut self.buf)?;
            if n == 0 {
                break;
            }
            if let Err(e) = file.write_all(&self.buf[..n]) {
                return Err(self.fs_err(entry, "write", rel, e));
            }
            stats.bytes += n as u64;
        }
        // After the data: writing clears setuid/setgid, and so does chown.
        self.set_meta(entry, file.as_fd(), rel)
    }

    fn make_symlink(&mut self, entry: &Entry, rel: &[u8]) -> Result<(), UnpackError> {
        if entry.link.contains(&0) {
            return Err(UnpackError::InvalidEntry {
                entry: lossy(&entry.path),
                reason: "its link target contains a NUL byte",
            });
        }
        let (parent, base) = split(rel);
        let dir = self.parent(entry, parent, true)?;
        // The target is stored as is: it is resolved inside the root when used.
        self.create(entry, &dir, rel, "create symlink", |at, name| {
            symlinkat(entry.link.as_slice(), at, name)
        })?;
        if self.opts.ownership != Ownership::Ignore {
            if let (Some(uid), Some(gid)) = self.opts.ownership.target(entry.uid, entry.gid) {
                match rustix::fs::chownat(
                    &*dir,
                    base,
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    Ok(()) | Err(Errno::INVAL) | Err(Errno::PERM) => {}
                    Err(e) => return Err(self.fs_err(entry, "change the owner of", rel, e.into())),
                }
            }
        }
        // No chmod: symlink modes mean nothing on Linux, and chmod would follow it.
        utimensat(
            &*dir,
            base,
            &timestamps(entry.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fs_err(entry, "set the mtime of", rel, e.into()))
    }

    fn make_hardlink(&mut self, entry: &Entry, rel: &[u8]) -> Result<(), UnpackError> {
        let target = clean(&entry.link).map_err(|e| match e {
            CleanError::Escape => UnpackError::HardlinkEscape {
                entry: lossy(&entry.path),
                target: lossy(&entry.link),
            },
            CleanError::Nul => UnpackError::InvalidEntry {
                entry: lossy(&entry.path),
                reason: "its link target contains a NUL byte",
            },
        })?;
        if target.is_empty() {
            return Err(UnpackError::InvalidEntry {
                entry: lossy(&entry.path),
                reason: "it is a hard link to the root directory",
            });
        }
        if target == rel {
            // A link to itself: nothing to do.
            return Ok(());
        }
        let (target_parent, target_base) = split(&target);
        // The target (possibly from a lower layer) is found inside the root; its last
        // component is linked as is, never followed.
        let target_dir = self.parent(entry, target_parent, false)?;
        let (parent, _) = split(rel);
        let dir = self.parent(entry, parent, true)?;
        self.create(entry, &dir, rel, "create hard link", |at, name| {
            linkat(&*target_dir, target_base, at, name, AtFlags::empty())
        })?;
        Ok(())
    }

    fn make_fifo(&mut self, entry: &Entry, rel: &[u8]) -> Result<(), UnpackError> {
        let (parent, base) = split(rel);
        let dir = self.parent(entry, parent, true)?;
        self.create(entry, &dir, rel, "create FIFO", |at, name| {
            mkfifoat(at, name, Mode::from_raw_mode(0o600))
        })?;
        // Opening a FIFO for reading without O_NONBLOCK would wait for a writer.
        let fd = openat(
            &*dir,
            base,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fs_err(entry, "open FIFO", rel, e.into()))?;
        self.set_meta(entry, fd.as_fd(), rel)
    }

    /// Owner, mode and mtime through a descriptor of the entry itself.
    fn set_meta(&self, entry: &Entry, fd: BorrowedFd<'_>, rel: &[u8]) -> Result<(), UnpackError> {
        chown_fd(fd, entry.uid, entry.gid, self.opts.ownership)
            .map_err(|e| self.fs_err(entry, "change the owner of", rel, e))?;
        fchmod(fd, Mode::from_raw_mode(entry.mode))
            .map_err(|e| self.fs_err(entry, "change the mode of", rel, e.into()))?;
        futimens(fd, &timestamps(entry.mtime))
            .map_err(|e| self.fs_err(entry, "set the mtime of", rel, e.into()))
    }

    /// Runs `make(dir, name)`; if the name is taken, removes what is there (without
    /// following it) and tries once more.
    fn create<T>(
        &mut self,
        entry: &Entry,
        dir: &OwnedFd,
        rel: &[u8],
        op: &'static str,
        make: impl Fn(BorrowedFd<'_>, &[u8]) -> rustix::io::Result<T>,
    ) -> Result<T, UnpackError> {
        let (_, base) = split(rel);
        match make(dir.as_fd(), base) {
            Ok(t) => Ok(t),
            Err(Errno::EXIST) => {
                self.remove_at(entry, dir, rel)?;
                make(dir.as_fd(), base).map_err(|e| self.fs_err(entry, op, rel, e.into()))
            }
            Err(e) => Err(self.fs_err(entry, op, rel, e.into())),
        }
    }

    /// Removes `rel` (whose parent is open as `dir`) and forgets what we knew about it.
    fn remove_at(&mut self, entry: &Entry, dir: &OwnedFd, rel: &[u8]) -> Result<(), UnpackError> {
        let (_, base) = split(rel);
        match resolve::remove(dir.as_fd(), base) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
            Err(e) => return Err(self.fs_err(entry, "remove", rel, e)),
        }
        self.forget(rel);
        Ok(())
    }

    /// After `rel` was removed: drop deferred metadata of it and everything below it,
    /// and the parent cache (a cached path may have gone through it).
    fn forget(&mut self, rel: &[u8]) {
        self.parents.clear();
        self.dirs.remove(rel);
        let mut prefix = rel.to_vec();
        prefix.push(b'/');
        let below: Vec<Vec<u8>> = self
            .dirs
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in below {
            self.dirs.remove(&k);
        }
    }

    /// The directory `rel` inside the root, following symlinks inside the root.
    /// With `create`, missing directories are made (`0700` now, `0755` at finish).
    fn parent(
        &mut self,
        entry: &Entry,
        rel: &[u8],
        create: bool,
    ) -> Result<Arc<OwnedFd>, UnpackError> {
        if let Some(fd) = self.parents.get(rel) {
            return Ok(fd.clone());
        }
        let fd = match self
            .resolver
            .open_dir(self.root.as_fd(), rel, OFlags::PATH, true)
        {
            Ok(fd) => fd,
            Err(e) if create && e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                self.create_parents(entry, rel)?
            }
            Err(e) => return Err(self.fs_err(entry, "open directory", rel, e)),
        };
        if self.parents.len() >= PARENT_CACHE {
            self.parents.clear();
        }
        let fd = Arc::new(fd);
        self.parents.insert(rel.to_vec(), fd.clone());
        Ok(fd)
    }

    fn create_parents(&mut self, entry: &Entry, rel: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut cur: Option<OwnedFd> = None;
        let mut creating = false;
        let mut end = 0;
        for comp in components(rel) {
            end += comp.len() + usize::from(end > 0);
            let prefix = &rel[..end];
            if !creating {
                match self
                    .resolver
                    .open_dir(self.root.as_fd(), prefix, OFlags::PATH, true)
                {
                    Ok(fd) => {
                        cur = Some(fd);
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                        creating = true
                    }
                    Err(e) => return Err(self.fs_err(entry, "open directory", prefix, e)),
                }
            }
            let at = cur.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
            // EEXIST here means a dangling symlink on the way: refused.
            mkdirat(at, comp, Mode::from_raw_mode(WORK_DIR_MODE))
                .map_err(|e| self.fs_err(entry, "create directory", prefix, e.into()))?;
            let fd = openat(
                at,
                comp,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.fs_err(entry, "open directory", prefix, e.into()))?;
            cur = Some(fd);
            self.dirs.entry(prefix.to_vec()).or_insert(DirMeta {
                mode: IMPLICIT_DIR_MODE,
                mtime: None,
                owner: None,
            });
        }
        match cur {
            Some(fd) => Ok(fd),
            // `rel` was the root: it cannot be missing.
            None => Err(self.fs_err(entry, "open directory", rel, Errno::NOENT.into())),
        }
    }

    /// `.wh.<hidden>` in `parent`.
    fn whiteout(
        &mut self,
        entry: &Entry,
        parent: &[u8],
        hidden: &[u8],
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        if hidden == OPAQUE {
            return self.opaque(entry, parent, state);
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::InvalidWhiteout {
                entry: lossy(&entry.path),
            });
        }
        if hidden.starts_with(WH_PREFIX) {
            // `.wh..wh.*` other than the opaque marker: aufs bookkeeping, nothing to do.
            tracing::debug!(entry = %lossy(&entry.path), "aufs metadata entry skipped");
            return Ok(());
        }
        let rel = join(parent, hidden);
        if state.present.contains(&rel) {
            // Whiteouts hide lower layers only.
            return Ok(());
        }
        // No symlink is followed on the way: a whiteout under a symlinked directory
        // names nothing a lower layer put there.
        let dir = match self
            .resolver
            .open_dir(self.root.as_fd(), parent, OFlags::PATH, false)
        {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(self.fs_err(entry, "open directory", parent, e)),
        };
        self.remove_at(entry, &dir, &rel)
    }

    /// `.wh..wh..opq` in `dir_rel`: remove everything lower layers put there, keep what
    /// this layer holds (entries may come before the marker).
    fn opaque(
        &mut self,
        entry: &Entry,
        dir_rel: &[u8],
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let dir = match self
            .resolver
            .open_dir(self.root.as_fd(), dir_rel, OFlags::RDONLY, false)
        {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(self.fs_err(entry, "open directory", dir_rel, e)),
        };
        self.opaque_dir(entry, dir, dir_rel, state)
    }

    fn opaque_dir(
        &mut self,
        entry: &Entry,
        dir: OwnedFd,
        dir_rel: &[u8],
        state: &LayerState,
    ) -> Result<(), UnpackError> {
        let (dir, children) = resolve::read_children(dir)
            .map_err(|e| self.fs_err(entry, "list directory", dir_rel, e))?;
        for (name, kind) in children {
            let child = join(dir_rel, &name);
            if !state.present.contains(&child) {
                match resolve::remove(dir.as_fd(), &name) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                    Err(e) => return Err(self.fs_err(entry, "remove", &child, e)),
                }
                self.forget(&child);
                continue;
            }
            let is_dir = match kind {
                FileType::Directory => true,
                FileType::Unknown => statat(&dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                    .map_err(|e| self.fs_err(entry, "inspect", &child, e.into()))?,
                _ => false,
            };
            if is_dir {
                // Kept, but what lower layers put inside it is hidden as well.
                let sub = openat(
                    &dir,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fs_err(entry, "open directory", &child, e.into()))?;
                self.opaque_dir(entry, sub, &child, state)?;
            }
        }
        Ok(())
    }

    fn host_path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root_path.clone()
        } else {
            self.root_path.join(OsStr::from_bytes(rel))
        }
    }

    fn fs_err(
        &self,
        entry: &Entry,
        op: &'static str,
        rel: &[u8],
        source: io::Error,
    ) -> UnpackError {
        UnpackError::Fs {
            entry: lossy(&entry.path),
            op,
            path: self.host_path(rel),
            source,
        }
    }
}

/// Name prefix of whiteout entries.
const WH_PREFIX: &[u8] = b".wh.";
/// What follows [`WH_PREFIX`] in the opaque marker `.wh..wh..opq`.
const OPAQUE: &[u8] = b".wh..opq";

/// `ENOENT`, `ENOTDIR` or `ELOOP`: the path does not name a real directory.
fn is_absent(e: &io::Error) -> bool {
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

fn chown_fd(
    fd: BorrowedFd<'_>,
    uid_raw: u64,
    gid_raw: u64,
    ownership: Ownership,
) -> io::Result<()> {
    let (uid, gid) = ownership.target(uid_raw, gid_raw);
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    match fchown(fd, uid, gid) {
        // EINVAL: the id has no mapping in our user namespace. EPERM: not allowed.
        Ok(()) | Err(Errno::INVAL) | Err(Errno::PERM) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A uid that `chown` can take (`-1` means "unchanged" to the kernel).
fn uid(raw: u64) -> Option<Uid> {
    u32::try_from(raw)
        .ok()
        .filter(|&u| u != u32::MAX)
        .map(Uid::from_raw)
}

fn gid(raw: u64) -> Option<Gid> {
    u32::try_from(raw)
        .ok()
        .filter(|&g| g != u32::MAX)
        .map(Gid::from_raw)
}

fn timestamps(m: Mtime) -> Timestamps {
    let t = Timespec {
        tv_sec: m.secs,
        tv_nsec: i64::from(m.nanos),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[derive(Debug, PartialEq, Eq)]
enum CleanError {
    Escape,
    Nul,
}

/// Lexically cleans a tar path into components joined by `/`: leading `/`, empty and
/// `.` components dropped, `..` removing the previous component. A `..` with nothing
/// left to remove means the path climbs above the root.
fn clean(raw: &[u8]) -> Result<Vec<u8>, CleanError> {
    if raw.contains(&0) {
        return Err(CleanError::Nul);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err(CleanError::Escape);
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out)
}

/// `(parent, last component)` of a cleaned path; `("", "")` for the root.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        out.extend_from_slice(parent);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

fn components(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// The decompressor in front of the tar parser.
enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<flate2::read::MultiGzDecoder<R>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Counts and hashes the uncompressed stream, failing once it exceeds the budget.
struct Tally<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    budget: u64,
    exceeded: bool,
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("uncompressed layer size limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.budget {
            self.exceeded = true;
            return Err(io::Error::other("uncompressed layer size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
