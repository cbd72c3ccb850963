//! Unpacked image roots, cached and immutable.
//!
//! A root is built aside in a fresh directory, every layer checked against its digest and diff_id, the mount
//! points the spec needs created, and only then committed by `rename(2)` under a name made of what determines its
//! content: the manifest digest, the id-mapping mode and the unpacker version. A half-built root never has that
//! name, so it is never used; leftovers of a killed build are removed by the next build. Builds of one root take
//! its lock ([`lock_root`]) first: a second run starting while the first is unpacking waits for it and uses the
//! root it committed instead of unpacking the image again.

pub mod bytecode;
pub mod idmap;
pub mod unpack;
pub mod user;

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::image::config::ImageRuntimeConfig;
use crate::image::digest::Digest;
use crate::image::layout::{LayerRef, LayoutError, OciLayout, ResolvedImage};
use crate::rootfs::idmap::IdMapMode;
use unpack::{UnpackError, UnpackOptions};
use user::{ResolvedUser, UserError};

/// Bumped whenever the unpacker would produce different trees from the same layers.
pub const UNPACKER_VERSION: u32 = 1;

/// What the cache remembers about a root beside the tree itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootMeta {
    /// The manifest the root was built from.
    pub manifest_digest: String,
    /// Whether the image itself has the user's home directory (else the run mounts a tmpfs there).
    pub home_in_image: bool,
    /// Device nodes skipped (rootless unpacking cannot create them).
    pub skipped_devices: u64,
    /// The tree's record at commit ([`tree_record`]): checked before every use, so that a root changed since
    /// (by anything: the files belong to the user) is refused rather than run. Roots committed before there was
    /// a record have none and are unpacked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

/// A committed root, ready to run.
#[derive(Debug, Clone)]
pub struct Root {
    /// The tree (mounted read-only as the server's `/`).
    pub path: PathBuf,
    /// Its metadata.
    pub meta: RootMeta,
    /// The image user, resolved inside the tree.
    pub user: ResolvedUser,
    /// Whether this run unpacked it (false: from the cache).
    pub unpacked_now: bool,
}

/// Failures building a root.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Reading the image failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A layer could not be applied.
    #[error("cannot unpack layer {digest}")]
    Unpack {
        /// The layer.
        digest: Digest,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// The uncompressed layer is not what the config says.
    #[error("layer {digest} does not match the image config: its content is {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        digest: Digest,
        /// From the config.
        expected: Digest,
        /// Computed.
        actual: String,
    },
    /// A streamed layer blob did not arrive whole and right (the pull says why).
    #[error("layer {digest} could not be downloaded")]
    Download {
        /// The layer.
        digest: Digest,
    },
    /// A layer of the cache's own blobs failed to unpack because the blob was damaged after it was downloaded
    /// and checked; it has been removed from the cache.
    #[error("the cached blob of layer {digest} is damaged (its content no longer matches its digest); it was removed from the cache ({})", path.display())]
    DamagedBlob {
        /// The layer.
        digest: Digest,
        /// Where the blob was.
        path: PathBuf,
        /// How the unpack failed.
        #[source]
        source: Box<RootfsError>,
    },
    /// The image user could not be resolved.
    #[error(transparent)]
    User(#[from] UserError),
    /// The root changed after it was committed.
    #[error("the cached root {path} was changed after it was unpacked; it will not be run")]
    Tampered {
        /// The root's directory.
        path: PathBuf,
    },
    /// Cache I/O.
    #[error("cache: {path}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RootfsError::Tampered { path } => Some(format!(
                "something wrote into the image cache (a sandbox given write access to it, or a process of yours): \
                 find out what, then remove the root (`chmod -R u+w {p} && rm -rf {p}`) and run again to unpack \
                 the image afresh",
                p = path.display()
            )),
            RootfsError::DamagedBlob { .. } => Some(
                "run again: the layer is downloaded afresh (with `--pull never`, pull the image first); if it \
                 happens again, something changes files in the image cache (a failing disk, another program)"
                    .to_owned(),
            ),
            RootfsError::Io { .. } | RootfsError::Unpack { .. }
                if crate::chain::has_io_kind(self, io::ErrorKind::NotFound) =>
            {
                Some(crate::chain::CACHE_VANISHED_HINT.to_owned())
            }
            _ => None,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cache directory of roots for this unpacker version.
pub fn roots_dir(cache: &Path) -> PathBuf {
    cache.join(format!("roots-v{UNPACKER_VERSION}"))
}

/// The committed name of a root.
pub fn root_key(manifest: &Digest, mode: IdMapMode, ownership: unpack::Ownership) -> String {
    // Root's unpacks move owners into its range: the range is part of what the tree looks like.
    let owners = match ownership {
        unpack::Ownership::Shift { uid, gid, .. } => format!("-{uid}-{gid}"),
        unpack::Ownership::Ignore | unpack::Ownership::Chown => String::new(),
    };
    format!(
        "{}-{}-{mode}{owners}",
        manifest.algorithm().as_str(),
        manifest.hex()
    )
}

/// The committed name of a root built with `finish` (none: the image's files exactly as its layers have them).
/// A root finished one way is never taken for one finished another way, or not at all.
pub fn root_key_with(
    manifest: &Digest,
    mode: IdMapMode,
    ownership: unpack::Ownership,
    finish: Option<&dyn Finish>,
) -> String {
    let key = root_key(manifest, mode, ownership);
    match finish {
        Some(f) => format!("{key}-{}", f.key_tag()),
        None => key,
    }
}

/// Work done on a root after its layers are applied and its mount points made, and before its record is taken
/// and it is committed (e.g. Python bytecode made valid: see [`bytecode`]). What it changes is covered by the
/// root's record like the rest of the tree.
pub trait Finish: Sync {
    /// What the keys of roots finished this way carry ([`root_key_with`]).
    fn key_tag(&self) -> &str;
    /// Runs on the staging tree `tree` of an image with `runtime` as its config.
    fn finish(&self, tree: &Path, runtime: &ImageRuntimeConfig) -> Result<(), RootfsError>;
}

/// Where the layers of a root being built come from, in order.
pub(crate) trait LayerSource {
    /// The blob of layer `index` (compressed as its media type says), to be read from the start.
    fn open(&mut self, index: usize, layer: &LayerRef) -> Result<Box<dyn Read + '_>, RootfsError>;
    /// Called once layer `index` is applied and its diff_id matched: returns only when the blob itself is known
    /// to match its digest (a streamed blob may still be arriving or being checked).
    fn settle(&mut self, index: usize, layer: &LayerRef) -> Result<(), RootfsError>;
}

/// Layers read from a layout (each blob checked against its digest while read).
struct FromLayout<'a>(&'a OciLayout);

impl LayerSource for FromLayout<'_> {
    fn open(&mut self, _: usize, layer: &LayerRef) -> Result<Box<dyn Read + '_>, RootfsError> {
        Ok(Box::new(self.0.open_blob(&layer.digest, layer.size)?))
    }

    fn settle(&mut self, _: usize, _: &LayerRef) -> Result<(), RootfsError> {
        Ok(())
    }
}

/// Returns the cached root of `image`, unpacking it first if needed.
pub fn ensure(
    cache: &Path,
    layout: &OciLayout,
    image: &ResolvedImage,
    runtime: &ImageRuntimeConfig,
    mode: IdMapMode,
    ownership: unpack::Ownership,
) -> Result<Root, RootfsError> {
    ensure_with(cache, layout, image, runtime, mode, ownership, None)
}

/// [`ensure`] for a root finished by `finish` before it is committed ([`root_key_with`] names it).
pub fn ensure_with(
    cache: &Path,
    layout: &OciLayout,
    image: &ResolvedImage,
    runtime: &ImageRuntimeConfig,
    mode: IdMapMode,
    ownership: unpack::Ownership,
    finish: Option<&dyn Finish>,
) -> Result<Root, RootfsError> {
    let key = root_key_with(&image.manifest_digest, mode, ownership, finish);
    if let Some(root) = load_root(cache, &key, runtime)? {
        return Ok(root);
    }
    // One build per root: a concurrent first run waits here for the one building it, then uses its root.
    let _build_lock = lock_root(cache, &key)?;
    if let Some(root) = load_root(cache, &key, runtime)? {
        tracing::debug!("{key}: unpacked meanwhile by another run");
        return Ok(root);
    }
    build_locked(
        cache,
        &key,
        &image.manifest_digest,
        &image.layers,
        runtime,
        ownership,
        &mut FromLayout(layout),
        finish,
    )
    .map_err(|e| discard_damaged_blob(cache, layout, &image.layers, e))
}

/// After a layer failed to unpack from the cache's own blobs (`<cache>/oci`): if its blob no longer matches its
/// digest (it was checked when it was downloaded, so it was damaged since), it is removed, so that the next pull
/// downloads it afresh, and the error says so. Blobs of any other layout (a user's `oci:` directory) are never
/// touched; any other failure is returned as it is.
pub(crate) fn discard_damaged_blob(
    cache: &Path,
    layout: &OciLayout,
    layers: &[LayerRef],
    e: RootfsError,
) -> RootfsError {
    let (RootfsError::Unpack { digest, .. } | RootfsError::DiffIdMismatch { digest, .. }) = &e
    else {
        return e;
    };
    let same_dir = |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b);
    if !layers.iter().any(|l| &l.digest == digest)
        || !same_dir(layout.dir(), &crate::dirs::cache_layout(cache))
    {
        return e;
    }
    let path = layout.blob_path(digest);
    let matches = std::fs::File::open(&path).and_then(|mut f| {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()) == digest.hex())
    });
    if !matches!(matches, Ok(false)) || std::fs::remove_file(&path).is_err() {
        return e;
    }
    tracing::warn!("removed the damaged cached blob {}", path.display());
    RootfsError::DamagedBlob {
        digest: digest.clone(),
        path,
        source: Box::new(e),
    }
}

/// The committed root named `key` ([`root_key`]), if there is one. Once a sandbox has had write access around
/// the cache ([`mark_exposed`]), the root is checked against its record first and refused if it changed.
pub fn load_root(
    cache: &Path,
    key: &str,
    runtime: &ImageRuntimeConfig,
) -> Result<Option<Root>, RootfsError> {
    load(&roots_dir(cache).join(key), runtime, is_exposed(cache))
}

/// The mark of a cache that a sandbox could write around: `<cache>/roots-v1/.exposed`.
fn exposed_mark(cache: &Path) -> PathBuf {
    roots_dir(cache).join(".exposed")
}

/// Marks the cache as exposed: a sandbox is given write access to a directory holding it. The cache itself is
/// masked inside such a sandbox, so this is the second line: from now on every root is checked against its
/// record before it is used (an `lstat` of every entry: 40–45 ms for the Debian + Python/Node test roots of
/// 8,700–10,500 entries on a 2-core machine, up to ~85 ms when it is busy; two to four times what starting the
/// sandbox costs, which is why it is not done on every run of every cache). thv-sandbox never removes the mark (deleting it by hand turns the checks off).
pub fn mark_exposed(cache: &Path) -> Result<(), RootfsError> {
    let roots = roots_dir(cache);
    crate::dirs::private_dir(&roots).map_err(|e| RootfsError::Io {
        path: roots.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let mark = exposed_mark(cache);
    std::fs::write(&mark, b"").map_err(io_at(&mark))
}

/// Whether the cache is marked exposed ([`mark_exposed`]).
pub(crate) fn is_exposed(cache: &Path) -> bool {
    std::fs::symlink_metadata(exposed_mark(cache)).is_ok()
}

/// Builds the root named `key` from `layers` (base first) and commits it; the caller holds its [`lock_root`].
/// Nothing is committed unless every layer applied, matched its diff_id and was settled by `source`; `finish`
/// runs last, before the tree's record is taken.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_locked(
    cache: &Path,
    key: &str,
    manifest_digest: &Digest,
    layers: &[LayerRef],
    runtime: &ImageRuntimeConfig,
    ownership: unpack::Ownership,
    source: &mut dyn LayerSource,
    finish: Option<&dyn Finish>,
) -> Result<Root, RootfsError> {
    let roots = roots_dir(cache);
    crate::dirs::private_dir(&roots).map_err(|e| RootfsError::Io {
        path: roots.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let entry = roots.join(key);
    remove_abandoned_builds(&roots);
    // Locked before it appears under its `.tmp-` name, and held until the build is committed or dropped, so a
    // concurrent build of another root never takes it for abandoned.
    let name = format!(
        ".tmp-{}",
        crate::dirs::random_hex(8).map_err(io_at(&roots))?
    );
    let (staged, lock) = crate::dirs::create_locked(&roots, &name).map_err(io_at(&roots))?;
    let staging = Staging(Some(staged));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_at(staging.path()))?;
    }
    let lock_path = staging.path().join("lock");
    let tree = staging.path().join("rootfs");
    std::fs::create_dir(&tree).map_err(io_at(&tree))?;
    let opts = UnpackOptions {
        ownership,
        ..UnpackOptions::default()
    };
    let mut skipped_devices = 0;
    let mut builder =
        unpack::RootBuilder::new(&tree, opts).map_err(|source| RootfsError::Unpack {
            digest: manifest_digest.clone(),
            source,
        })?;
    for (index, layer) in layers.iter().enumerate() {
        let blob = source.open(index, layer)?;
        let stats = builder
            .apply_layer(blob, layer.compression)
            .map_err(|source| RootfsError::Unpack {
                digest: layer.digest.clone(),
                source,
            })?;
        if stats.diff_id != layer.diff_id.to_string() {
            return Err(RootfsError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        source.settle(index, layer)?;
        skipped_devices += stats.skipped_devices;
    }
    builder.finish().map_err(|source| RootfsError::Unpack {
        digest: manifest_digest.clone(),
        source,
    })?;

    let resolved = user::resolve(&tree, &runtime.user)?;
    let home_in_image = resolved
        .home
        .as_deref()
        .is_none_or(|h| user::dir_exists_inside(&tree, h));
    for (point, is_dir) in mountpoints(runtime, &resolved, home_in_image) {
        ensure_mountpoint(&tree, &point, is_dir)
            .map_err(io_at(&tree.join(point.trim_start_matches('/'))))?;
    }
    if let Some(f) = finish {
        f.finish(&tree, runtime)?;
    }
    let meta = RootMeta {
        manifest_digest: manifest_digest.to_string(),
        home_in_image,
        skipped_devices,
        tree: Some(tree_record(&tree).map_err(io_at(&tree))?),
    };
    let meta_path = staging.path().join("meta.json");
    std::fs::write(
        &meta_path,
        serde_json::to_vec_pretty(&meta)
            .map_err(io::Error::other)
            .map_err(io_at(&meta_path))?,
    )
    .map_err(io_at(&meta_path))?;
    let _ = std::fs::remove_file(&lock_path);
    let staged = staging.keep();
    drop(lock);
    // A root committed before roots had a record, or whose meta.json was damaged since, is replaced (we hold its
    // build lock; a committed root always has a meta.json that parses).
    if std::fs::symlink_metadata(&entry).is_ok()
        && read_meta(&entry).is_none_or(|m| m.tree.is_none())
    {
        let aside = roots.join(format!(
            ".tmp-old-{}",
            crate::dirs::random_hex(8).map_err(io_at(&roots))?
        ));
        if std::fs::rename(&entry, &aside).is_ok() {
            let _ = remove_tree(&aside);
        }
    }
    match std::fs::rename(&staged, &entry) {
        Ok(()) => {}
        // Another run committed the same root first: theirs is as good as ours.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
            let _ = remove_tree(&staged);
        }
        Err(e) => {
            let _ = remove_tree(&staged);
            return Err(RootfsError::Io {
                path: entry,
                source: e,
            });
        }
    }
    let mut root = load(&entry, runtime, false)?.ok_or_else(|| RootfsError::Io {
        path: entry.clone(),
        source: io::Error::other("committed root vanished"),
    })?;
    root.unpacked_now = true;
    Ok(root)
}

/// The exclusive lock on building the root named `key`, held while it is built and committed (released when
/// dropped, or when its holder dies).
#[derive(Debug)]
pub struct RootLock {
    _file: std::fs::File,
}

/// Wait for, and take, the lock on building the root named `key` (`<cache>/locks/roots-vN/<key>`, created when
/// missing; these empty files are kept, so that a lock is never taken on a file about to be unlinked).
pub fn lock_root(cache: &Path, key: &str) -> Result<RootLock, RootfsError> {
    let path = lock_path(cache, key);
    let dir = path.parent().unwrap_or(cache);
    crate::dirs::private_dir(dir).map_err(|e| RootfsError::Io {
        path: dir.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    let file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_at(&path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        RootfsError::Io {
            path: path.clone(),
            source: e.into(),
        }
    })?;
    Ok(RootLock { _file: file })
}

/// The lock file of the root named `key`.
pub fn lock_path(cache: &Path, key: &str) -> PathBuf {
    cache
        .join("locks")
        .join(format!("roots-v{UNPACKER_VERSION}"))
        .join(key)
}

/// A build directory, removed (read-only directories included) unless committed.
struct Staging(Option<PathBuf>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_tree(&p);
        }
    }
}

/// Removes the staging directories of builds that were killed (nobody holds their lock any more).
fn remove_abandoned_builds(roots: &Path) {
    let Ok(entries) = std::fs::read_dir(roots) else {
        return;
    };
    for e in entries.flatten() {
        let is_staging = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-") || n.starts_with(crate::dirs::CREATING));
        if is_staging && crate::dirs::is_collectable(&e.path()) {
            let _ = remove_tree(&e.path());
        }
    }
}

/// Removes a tree we built, including read-only directories.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn open_up(dir: &Path) {
        // Directories without write or search permission (0555 ones from images) would stop remove_dir_all.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    if std::fs::symlink_metadata(path)?.is_dir() {
        open_up(path);
    }
    std::fs::remove_dir_all(path)
}

/// What [`check_roots`] found for one committed root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCheck {
    /// The tree is what was committed.
    Unchanged,
    /// The tree changed after it was committed: it is refused.
    Changed,
    /// Committed before roots had a record: the next run unpacks it again.
    NoRecord,
    /// It could not be read.
    Unreadable(String),
}

/// Checks every committed root in `cache` against its record (`thv-sandbox images --check`), whether or not the
/// cache was exposed.
pub fn check_roots(cache: &Path) -> Vec<(PathBuf, RootCheck)> {
    let Ok(entries) = std::fs::read_dir(roots_dir(cache)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, RootCheck)> = entries
        .flatten()
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| {
            let entry = e.path();
            let check = match read_meta(&entry) {
                None => RootCheck::Unreadable("no readable meta.json".into()),
                Some(RootMeta { tree: None, .. }) => RootCheck::NoRecord,
                Some(RootMeta {
                    tree: Some(record), ..
                }) => match tree_record(&entry.join("rootfs")) {
                    Ok(now) if now == record => RootCheck::Unchanged,
                    Ok(_) => RootCheck::Changed,
                    Err(e) => RootCheck::Unreadable(e.to_string()),
                },
            };
            (entry, check)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn read_meta(entry: &Path) -> Option<RootMeta> {
    serde_json::from_slice(&std::fs::read(entry.join("meta.json")).ok()?).ok()
}

/// A digest of what every entry of `tree` is: its path, type and permissions, size, link count, inode and
/// change time. Any write, chmod, rename, link or replacement changes the change time (which no unprivileged
/// process can set) or the inode, so a root that matches its record at commit is the tree that was unpacked.
/// Costs one `lstat` per entry.
pub fn tree_record(tree: &Path) -> io::Result<String> {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, rel: &mut Vec<u8>, h: &mut sha2::Sha256) -> io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let m = std::fs::symlink_metadata(&path)?;
            let len = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(name.as_bytes());
            entry(rel, &m, h);
            if m.is_dir() {
                walk(&path, rel, h)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }
    fn entry(rel: &[u8], m: &std::fs::Metadata, h: &mut sha2::Sha256) {
        h.update((rel.len() as u64).to_le_bytes());
        h.update(rel);
        for n in [
            u64::from(m.mode()),
            m.size(),
            m.nlink(),
            m.ino(),
            m.ctime() as u64,
            m.ctime_nsec() as u64,
            u64::from(m.uid()),
            u64::from(m.gid()),
        ] {
            h.update(n.to_le_bytes());
        }
    }
    let mut h = sha2::Sha256::new();
    entry(b"", &std::fs::symlink_metadata(tree)?, &mut h);
    walk(tree, &mut Vec::new(), &mut h)?;
    Ok(format!("v1:{}", hex::encode(h.finalize())))
}

fn load(
    entry: &Path,
    runtime: &ImageRuntimeConfig,
    check: bool,
) -> Result<Option<Root>, RootfsError> {
    let meta_path = entry.join("meta.json");
    let bytes = match std::fs::read(&meta_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RootfsError::Io {
                path: meta_path,
                source: e,
            })
        }
    };
    // A committed root always has its meta.json written whole (before the rename that commits it): one that does
    // not parse was damaged since, and nothing in the root can be trusted to match it. Not a root then: the
    // caller unpacks it again from the checked blobs, and the commit replaces the damaged one.
    let meta: RootMeta = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                "the cached root {} has a damaged meta.json ({e}); unpacking the image again",
                entry.display()
            );
            return Ok(None);
        }
    };
    let path = entry.join("rootfs");
    match &meta.tree {
        // Committed before roots had a record: unpacked again.
        None => return Ok(None),
        Some(_) if !check => {}
        Some(record) => {
            let now = tree_record(&path).map_err(io_at(&path))?;
            if now != *record {
                return Err(RootfsError::Tampered {
                    path: entry.to_owned(),
                });
            }
        }
    }
    let user = user::resolve(&path, &runtime.user)?;
    Ok(Some(Root {
        path,
        meta,
        user,
        unpacked_now: false,
    }))
}

/// Creates `path` (absolute, inside the root) as an empty directory or file unless something exists there. Every
/// component is resolved inside `root`: a symlink in the image cannot make us create anything outside it.
pub fn ensure_mountpoint(root: &Path, path: &str, is_dir: bool) -> io::Result<()> {
    let root_fd = open_path(libc::AT_FDCWD, root, OFlag::O_DIRECTORY, None)?;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`..` in mount point {path}"),
        ));
    }
    let Some((last, parents)) = comps.split_last() else {
        return Ok(());
    };
    let mut prefix = String::new();
    for c in parents {
        let parent = if prefix.is_empty() {
            ".".to_owned()
        } else {
            prefix.clone()
        };
        prefix = if prefix.is_empty() {
            (*c).to_owned()
        } else {
            format!("{prefix}/{c}")
        };
        match open_path(
            root_fd.as_raw_fd(),
            Path::new(&prefix),
            OFlag::O_DIRECTORY,
            Some(()),
        ) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let pfd = open_path(
                    root_fd.as_raw_fd(),
                    Path::new(&parent),
                    OFlag::O_DIRECTORY,
                    Some(()),
                )?;
                match nix::sys::stat::mkdirat(
                    Some(pfd.as_raw_fd()),
                    *c,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let parent = if prefix.is_empty() {
        ".".to_owned()
    } else {
        prefix
    };
    let pfd = open_path(
        root_fd.as_raw_fd(),
        Path::new(&parent),
        OFlag::O_DIRECTORY,
        Some(()),
    )?;
    let res = if is_dir {
        nix::sys::stat::mkdirat(
            Some(pfd.as_raw_fd()),
            *last,
            Mode::from_bits_truncate(0o755),
        )
        .map(|_| ())
    } else {
        nix::fcntl::openat(
            Some(pfd.as_raw_fd()),
            *last,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(|fd| {
            let _ = nix::unistd::close(fd);
        })
    };
    match res {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Opens `path` relative to `dirfd`; with `in_root`, resolved as if `dirfd` were `/`.
/// What is at `path` inside `root` (resolved inside it): `None` if nothing, else whether it is a directory.
pub fn mountpoint_kind(root: &Path, path: &str) -> io::Result<Option<bool>> {
    let root_fd = open_path(libc::AT_FDCWD, root, OFlag::O_DIRECTORY, None)?;
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(Some(true));
    }
    match open_path(root_fd.as_raw_fd(), Path::new(rel), OFlag::O_PATH, Some(())) {
        Ok(fd) => {
            let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
            Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_path(dirfd: i32, path: &Path, flags: OFlag, in_root: Option<()>) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(if in_root.is_some() {
            ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
        } else {
            ResolveFlag::empty()
        });
    let fd = openat2(dirfd, path, how)?;
    // SAFETY: openat2 returned a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The mount points the read-only root must already contain (the spec mounts there; the unpacker creates them before the root is
/// committed to the cache, so a run never writes into the cached root). `(path, is_dir)`.
pub fn mountpoints(
    image: &ImageRuntimeConfig,
    user: &ResolvedUser,
    home_in_image: bool,
) -> Vec<(String, bool)> {
    let mut points: Vec<(String, bool)> = ["/proc", "/sys", "/dev", "/tmp", "/run"]
        .iter()
        .map(|p| (p.to_string(), true))
        .collect();
    points.extend(
        ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
            .iter()
            .map(|p| (p.to_string(), false)),
    );
    if let Some(home) = user
        .home
        .as_ref()
        .filter(|h| !home_in_image && h.as_str() != "/")
    {
        points.push((home.clone(), true));
    }
    for v in &image.volumes {
        points.push((v.clone(), true));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_created_inside_the_root_even_through_symlinks() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // /run is a symlink that points outside the root, as an attacker's image might have it.
        std::os::unix::fs::symlink(outer.path().join("escape"), root.join("run")).unwrap();
        std::os::unix::fs::symlink("../../../escape2", root.join("tmp")).unwrap();
        ensure_mountpoint(&root, "/run", true).unwrap();
        // A dangling link resolves inside the root, to a place that does not exist: refused, nothing created.
        assert!(ensure_mountpoint(&root, "/tmp/x", true).is_err());
        ensure_mountpoint(&root, "/etc/hosts", false).unwrap();
        ensure_mountpoint(&root, "/home/app", true).unwrap();
        assert!(!outer.path().join("escape").exists());
        assert!(!outer.path().join("escape2").exists());
        assert!(root.join("etc/hosts").is_file());
        assert!(root.join("home/app").is_dir());
        assert!(ensure_mountpoint(&root, "/a/../../b", true).is_err());
    }

    #[test]
    fn the_tree_record_changes_with_any_change_to_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir_all(t.join("usr/bin")).unwrap();
        std::fs::write(t.join("usr/bin/server"), b"#!/bin/sh\necho ok\n").unwrap();
        let before = tree_record(t).unwrap();
        assert_eq!(
            tree_record(t).unwrap(),
            before,
            "stable while nothing changes"
        );
        // Rewritten with the same length and mtime: the change time still moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mtime = std::fs::metadata(t.join("usr/bin/server"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::write(t.join("usr/bin/server"), b"#!/bin/sh\necho no\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(t.join("usr/bin/server"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_ne!(tree_record(t).unwrap(), before);
        let before = tree_record(t).unwrap();
        // A file added (e.g. a sitecustomize.py) is seen too.
        std::fs::write(t.join("usr/new"), b"").unwrap();
        assert_ne!(tree_record(t).unwrap(), before);
    }

    #[test]
    fn check_roots_tells_changed_roots_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = roots_dir(tmp.path());
        let make = |name: &str, record: bool| {
            let entry = roots.join(name);
            std::fs::create_dir_all(entry.join("rootfs/etc")).unwrap();
            std::fs::write(entry.join("rootfs/etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
            let meta = RootMeta {
                manifest_digest: format!("sha256:{name}"),
                home_in_image: true,
                skipped_devices: 0,
                tree: record.then(|| tree_record(&entry.join("rootfs")).unwrap()),
            };
            std::fs::write(entry.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
            entry
        };
        let a = make("a", true);
        let b = make("b", true);
        let c = make("c", false);
        std::fs::write(b.join("rootfs/etc/planted"), b"").unwrap();
        assert_eq!(
            check_roots(tmp.path()),
            vec![
                (a, RootCheck::Unchanged),
                (b, RootCheck::Changed),
                (c, RootCheck::NoRecord)
            ]
        );
    }

    /// What checking a real root costs (run by hand: THV_TREE_RECORD_ROOT=<cache>/roots-v1/<key>/rootfs).
    #[test]
    #[ignore]
    fn tree_record_cost() {
        let Some(root) = std::env::var_os("THV_TREE_RECORD_ROOT") else {
            return;
        };
        for _ in 0..5 {
            let t = std::time::Instant::now();
            tree_record(Path::new(&root)).unwrap();
            eprintln!("tree_record: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
}
