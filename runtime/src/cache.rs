//! What the cache holds (`thv-sandbox images`) and removing what no cached image needs (`thv-sandbox prune`).
//!
//! The cache has two parts: `<cache>/oci/`, the blob store (an OCI image layout, see
//! [`crate::distribution`]), and `<cache>/roots-v1/`, the unpacked roots (see [`crate::rootfs`]).
//!
//! # What is reachable
//! Every entry of `index.json` is a root of the walk: an index reaches the manifests it lists (nested up to
//! [`MAX_INDEX_DEPTH`]), a manifest reaches its config and layers. Only documents present on disk and matching
//! their digest are read; the digests they list are reachable whether present or not. An unpacked root is
//! reachable when the manifest in its `meta.json` is a reachable manifest.
//!
//! # Prune and concurrent pulls and runs
//! [`prune`] holds the `index.json` lock for its whole run, so no pull can name an image meanwhile. That is not
//! enough on its own: a pull writes (or finds) its blobs first and names the image in `index.json` last, so for
//! a while its blobs are unreachable. Prune therefore never removes:
//! - a blob modified less than an hour ago ([`RECENT`]). A pull that finds a blob already present refreshes its
//!   modification time (`Store::has_blob`), so a blob a pull relies on is always recent. A pull slower than an
//!   hour between checking a blob and naming its image could lose that blob; the next run finds the image
//!   incomplete and pulls it again. (The window between prune's look at the time and its `unlink` is not
//!   closed: a pull checking that very blob in those microseconds would not fetch it.)
//! - a blob whose per-blob lock (`.locks/sha256-<hex>`) someone holds; prune holds that lock itself while it
//!   removes a blob, so a pull waiting for it then finds the blob missing and downloads it.
//! - a temporary file (`.tmp-*`) younger than an hour or locked by its writer.
//! - an unpacked root modified less than an hour ago (a run of an `oci:` layout, whose images are not in
//!   `index.json`, unpacks its root and then starts), a root a live run uses (see [`prune_keeping_runs`]), and a
//!   staging directory whose build still holds its lock.
//!
//! Roots unpacked from `oci:PATH` layouts are not reachable from `index.json`: prune removes them once they are
//! an hour old and no live run uses them; the next run of that layout unpacks it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::distribution::store::{ref_name, Store, ABANDONED_AFTER, TEMP_PREFIX};
use crate::distribution::PullError;
use crate::image::digest::Digest;
use crate::image::layout::{OciLayout, Platform, MAX_INDEX_DEPTH, MAX_MANIFEST_SIZE};
use crate::rootfs::{remove_tree, roots_dir, RootMeta};

/// Unreachable blobs, temporary files and roots modified more recently than this are kept.
pub const RECENT: Duration = ABANDONED_AFTER;

/// One image of the cache: the names of `index.json` that lead to one manifest for this platform (a pull names
/// an image twice, by its tag and pinned by digest), as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    /// Its name for people: the first tag name (`registry/repository:tag`), else the pinned `…@sha256:…` one.
    pub name: String,
    /// Every name of `index.json` that leads to it, in the file's order.
    pub names: Vec<String>,
    /// This platform's manifest, if the cache has it.
    pub manifest_digest: Option<Digest>,
    /// The image index the name points to, if it points to one.
    pub index_digest: Option<Digest>,
    /// Bytes of the image's blobs on disk: index, manifest(s) present, config(s) and layers.
    pub blob_bytes: u64,
    /// Bytes of the files in the roots unpacked from the manifest (all id-mapping modes).
    pub unpacked_bytes: u64,
    /// Whether any root is unpacked from the manifest.
    pub unpacked: bool,
}

/// What [`prune`] removed (or, dry, would remove).
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Nothing was removed; the report says what would have been.
    pub dry_run: bool,
    /// What was removed.
    pub removed: Vec<Removed>,
    /// Unreachable blobs and roots kept because they are recent, locked or in use.
    pub kept: u64,
    /// Removals that failed (the rest went on).
    pub failures: Vec<CacheError>,
    /// `--force`: unreachable things are removed whatever their age (never what is locked or in use).
    pub forced: bool,
    /// `--force` was asked, but a pull or unpack was in progress: recent things were kept all the same (that
    /// pull may need them).
    pub held_back: bool,
}

/// How [`prune_with`] prunes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    /// Remove nothing; report what would be removed.
    pub dry_run: bool,
    /// Remove unreachable blobs, temporary files and roots whatever their age (not those locked or in use;
    /// and while a pull is in progress, not the recent ones).
    pub force: bool,
}

/// One thing [`prune`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The file or directory.
    pub path: PathBuf,
    /// What it was.
    pub kind: RemovedKind,
    /// Bytes freed (file sizes; for directories, of the files in them).
    pub bytes: u64,
}

/// Kinds of things [`prune`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemovedKind {
    /// A blob no `index.json` entry reaches.
    Blob,
    /// An unpacked root of a manifest no entry reaches.
    Root,
    /// A temporary file of an interrupted pull.
    TempFile,
    /// A staging directory of an interrupted unpack.
    Staging,
}

impl PruneReport {
    /// How many things of `kind` were removed.
    pub fn count(&self, kind: RemovedKind) -> usize {
        self.removed.iter().filter(|r| r.kind == kind).count()
    }

    /// Bytes freed in all.
    pub fn bytes_freed(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }

    /// Whether something of this age is kept as possibly part of a pull in progress.
    fn recent(&self, meta: &fs::Metadata) -> bool {
        (self.held_back || !self.forced) && is_recent(meta)
    }
}

/// Failures reading or pruning the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or locking the blob store.
    #[error(transparent)]
    Store(#[from] PullError),
    /// A file or directory of the cache.
    #[error("cache: {}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cache as a whole, for the total line of `images`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Images.
    pub images: usize,
    /// Bytes of their blobs, each blob counted once (images share layers).
    pub blob_bytes: u64,
    /// Bytes of their unpacked roots.
    pub unpacked_bytes: u64,
}

/// The images of the cache (one per manifest; see [`CachedImage`]), in the order of their first name in
/// `index.json`, with their sizes. An empty or missing cache has none.
pub fn list(cache: &Path) -> Result<Vec<CachedImage>, CacheError> {
    Ok(list_with_totals(cache)?.0)
}

/// [`list`], and the totals (shared blobs counted once).
pub fn list_with_totals(cache: &Path) -> Result<(Vec<CachedImage>, Totals), CacheError> {
    let (images, walks) = list_walked(cache)?;
    let mut all: BTreeMap<&Digest, u64> = BTreeMap::new();
    for w in &walks {
        all.extend(w.present.iter().map(|(d, n)| (d, *n)));
    }
    let totals = Totals {
        images: images.len(),
        blob_bytes: all.values().sum(),
        unpacked_bytes: images.iter().map(|i| i.unpacked_bytes).sum(),
    };
    Ok((images, totals))
}

/// The images, each with the walk of its names.
fn list_walked(cache: &Path) -> Result<(Vec<CachedImage>, Vec<Walk>), CacheError> {
    let store = Store::existing(cache);
    if !store.dir().join("index.json").exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let entries = store.entries()?;
    let roots = committed_roots(&roots_dir(cache))?;
    let mut unpacked: HashMap<&str, u64> = HashMap::new();
    for root in &roots {
        if let Some(m) = &root.manifest {
            *unpacked.entry(m.as_str()).or_default() += tree_bytes(&root.path);
        }
    }
    let layout = OciLayout::open(store.dir()).ok();
    let platform = Platform::host();
    let mut images: Vec<CachedImage> = Vec::new();
    let mut walks: Vec<Walk> = Vec::new();
    for entry in &entries {
        let Some(name) = ref_name(entry) else {
            continue;
        };
        let mut walk = Walk::default();
        walk.entry(&store, entry);
        let resolved = layout
            .as_ref()
            .and_then(|l| l.resolve(Some(name), &platform).ok());
        let (manifest_digest, index_digest) = match resolved {
            Some(image) => (Some(image.manifest_digest), image.index_digest),
            None => {
                let top = Digest::try_from(entry.digest()).ok();
                if walk.indexes.is_empty() {
                    (top.filter(|t| walk.manifests.contains(t)), None)
                } else {
                    (walk.manifests.first().cloned(), top)
                }
            }
        };
        // Another name of an image listed already (same manifest): one image, the union of their blobs.
        if let Some(at) = manifest_digest.as_ref().and_then(|m| {
            images
                .iter()
                .position(|i| i.manifest_digest.as_ref() == Some(m))
        }) {
            let (image, seen) = (&mut images[at], &mut walks[at]);
            image.names.push(name.to_owned());
            if image.name.contains('@') && !name.contains('@') {
                image.name = name.to_owned();
            }
            image.index_digest = image.index_digest.take().or(index_digest);
            seen.absorb(walk);
            image.blob_bytes = seen.present.values().sum();
            continue;
        }
        let root_bytes = manifest_digest
            .as_ref()
            .and_then(|m| unpacked.get(m.to_string().as_str()).copied());
        images.push(CachedImage {
            name: name.to_owned(),
            names: vec![name.to_owned()],
            manifest_digest,
            index_digest,
            blob_bytes: walk.present.values().sum(),
            unpacked_bytes: root_bytes.unwrap_or(0),
            unpacked: root_bytes.is_some(),
        });
        walks.push(walk);
    }
    Ok((images, walks))
}

/// Whether `what` names `image`: one of its names as written, or as a reference normalizes (`alpine` is
/// `docker.io/library/alpine:latest`), or its manifest or index digest (`sha256:HEX`, or 12 hex digits or more
/// of its beginning).
pub fn names_image(image: &CachedImage, what: &str) -> bool {
    if image.names.iter().any(|n| n == what) {
        return true;
    }
    if let Ok(r) = what.parse::<crate::image::reference::Reference>() {
        let r = r.to_string();
        if image.names.contains(&r) {
            return true;
        }
    }
    let hex = what.strip_prefix("sha256:").unwrap_or(what);
    hex.len() >= 12
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && [&image.manifest_digest, &image.index_digest]
            .into_iter()
            .flatten()
            .any(|d| d.hex().starts_with(&hex.to_ascii_lowercase()))
}

/// Why `rmi` removed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RmiError {
    /// No image of the cache has that name or digest.
    #[error("no image in the cache is named `{0}`")]
    NotFound(String),
    /// More than one image matches (a short digest, say).
    #[error("`{what}` names more than one image in the cache: {}", candidates.join(", "))]
    Ambiguous {
        /// As given.
        what: String,
        /// The images' names.
        candidates: Vec<String>,
    },
    /// Reading or changing the cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl RmiError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RmiError::NotFound(_) => Some(
                "`thv-sandbox images` lists the cached images: give a name or a digest from it"
                    .into(),
            ),
            RmiError::Ambiguous { .. } => Some("give the full name, or more of the digest".into()),
            RmiError::Cache(_) => None,
        }
    }
}

impl From<PullError> for RmiError {
    fn from(e: PullError) -> RmiError {
        RmiError::Cache(CacheError::Store(e))
    }
}

/// What [`remove_image`] did (or, dry, would do).
#[derive(Debug, Default)]
pub struct RmiReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// The image.
    pub image: Option<CachedImage>,
    /// Blobs and roots removed.
    pub removed: Vec<Removed>,
    /// Blobs and roots of the image kept, and why (in use by a run, locked by a pull, …).
    pub kept: Vec<(PathBuf, &'static str)>,
    /// Removals that failed (the rest went on).
    pub failures: Vec<CacheError>,
}

/// Removes one image from the cache: every name of it in `index.json`, the blobs no other image reaches, and
/// its unpacked roots — except a root a live run in `runs` uses or a build holds, and a blob a pull holds locked
/// (or, while a pull or unpack is in progress, one it touched in the last hour: it may be about to name it).
/// `index.json` stays locked throughout, as in [`prune`], so no pull names an image meanwhile.
pub fn remove_image(
    cache: &Path,
    runs: Option<&Path>,
    what: &str,
    dry_run: bool,
) -> Result<RmiReport, RmiError> {
    let store = Store::existing(cache);
    if !store.dir().join("index.json").exists() {
        return Err(RmiError::NotFound(what.to_owned()));
    }
    let _index_lock = store.lock_index()?;
    let (images, _) = list_walked(cache)?;
    let chosen: Vec<&CachedImage> = images.iter().filter(|i| names_image(i, what)).collect();
    let image = match chosen.as_slice() {
        [] => return Err(RmiError::NotFound(what.to_owned())),
        [one] => (*one).clone(),
        many => {
            return Err(RmiError::Ambiguous {
                what: what.to_owned(),
                candidates: many.iter().map(|i| i.name.clone()).collect(),
            })
        }
    };
    let entries = store.entries()?;
    let (gone, rest): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| ref_name(e).is_some_and(|n| image.names.iter().any(|x| x == n)));
    let mut mine = Walk::default();
    for e in &gone {
        mine.entry(&store, e);
    }
    let mut others = Walk::default();
    for e in &rest {
        others.entry(&store, e);
    }
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    if !dry_run {
        store.write_index_locked(&rest)?;
    }
    let busy = pull_in_progress(cache);
    let mut kept = Vec::new();
    for digest in mine.referenced.difference(&others.referenced) {
        let path = store.blob_path(digest);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if busy && is_recent(&meta) {
            kept.push((path, "a pull in progress may use it"));
            continue;
        }
        let Some(_lock) =
            try_lock_existing(&store.locks_dir().join(format!("sha256-{}", digest.hex())))
        else {
            kept.push((path, "a pull holds it"));
            continue;
        };
        remove(&mut report, path, RemovedKind::Blob, meta.len());
    }
    let in_use = runs.map(roots_in_use).unwrap_or_default();
    let reachable: HashSet<String> = others.manifests.iter().map(Digest::to_string).collect();
    let manifest = image.manifest_digest.as_ref().map(Digest::to_string);
    for root in committed_roots(&roots_dir(cache))? {
        if root.manifest.is_none() || root.manifest != manifest {
            continue;
        }
        if root
            .manifest
            .as_ref()
            .is_some_and(|m| reachable.contains(m))
        {
            continue;
        }
        let Some(key) = root.path.file_name().map(ToOwned::to_owned) else {
            continue;
        };
        if in_use.contains(&key) {
            kept.push((root.path, "a running server uses it"));
            continue;
        }
        let Some(_lock) =
            try_lock_existing(&crate::rootfs::lock_path(cache, &key.to_string_lossy()))
        else {
            kept.push((root.path, "it is being unpacked"));
            continue;
        };
        let bytes = tree_bytes(&root.path);
        remove(&mut report, root.path, RemovedKind::Root, bytes);
    }
    Ok(RmiReport {
        dry_run,
        image: Some(image),
        removed: report.removed,
        kept,
        failures: report.failures,
    })
}

/// Whether a pull or an unpack is in progress in this cache: a blob lock, a root's build lock or a temporary
/// download file held by someone.
pub fn pull_in_progress(cache: &Path) -> bool {
    let store = Store::existing(cache);
    let held = |dir: &Path, only_temp: bool| {
        let Ok(entries) = fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            if only_temp && !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                return false;
            }
            e.file_type().is_ok_and(|t| t.is_file()) && try_lock_existing(&e.path()).is_none()
        })
    };
    held(&store.locks_dir(), false)
        || held(&store.blobs_dir(), true)
        || held(
            &cache
                .join("locks")
                .join(format!("roots-v{}", crate::rootfs::UNPACKER_VERSION)),
            false,
        )
}

/// Removes what no image in `index.json` needs (see the module docs for what is kept and why). With `dry_run`,
/// removes nothing and reports what it would remove.
pub fn prune(cache: &Path, dry_run: bool) -> Result<PruneReport, CacheError> {
    prune_keeping_runs(cache, None, dry_run)
}

/// [`prune`], also keeping the roots that the live runs in `runs` (the state directory's `runs/`) use.
pub fn prune_keeping_runs(
    cache: &Path,
    runs: Option<&Path>,
    dry_run: bool,
) -> Result<PruneReport, CacheError> {
    prune_with(
        cache,
        runs,
        PruneOptions {
            dry_run,
            force: false,
        },
    )
}

/// [`prune_keeping_runs`] with options: `force` removes unreachable things whatever their age, except while a
/// pull or unpack is in progress ([`pull_in_progress`]), when recent ones are kept as usual.
pub fn prune_with(
    cache: &Path,
    runs: Option<&Path>,
    opts: PruneOptions,
) -> Result<PruneReport, CacheError> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        forced: opts.force,
        ..PruneReport::default()
    };
    let store = Store::existing(cache);
    let has_store = store.dir().join("index.json").exists();
    // Held to the end: no pull names an image while we decide what is unreachable and remove it.
    let _index_lock = if has_store {
        Some(store.lock_index()?)
    } else {
        None
    };
    report.held_back = opts.force && pull_in_progress(cache);
    let mut walk = Walk::default();
    if has_store {
        for entry in &store.entries()? {
            walk.entry(&store, entry);
        }
        prune_blobs(&store, &walk, &mut report)?;
        prune_temp_files(store.dir(), &mut report);
    }
    let in_use = runs.map(roots_in_use).unwrap_or_default();
    prune_roots(&roots_dir(cache), &walk, &in_use, &mut report)?;
    Ok(report)
}

fn prune_blobs(store: &Store, walk: &Walk, report: &mut PruneReport) -> Result<(), CacheError> {
    let dir = store.blobs_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(&dir)(e)),
    };
    prune_temp_files(&dir, report);
    for entry in entries {
        let entry = entry.map_err(io_at(&dir))?;
        let Some(hex) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
            continue;
        };
        if walk.referenced.contains(&digest) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if report.recent(&meta) {
            report.kept += 1;
            continue;
        }
        // Held while removing: a pull of this blob waits, then finds it missing and downloads it.
        let Some(_lock) = try_lock_existing(&store.locks_dir().join(format!("sha256-{hex}")))
        else {
            report.kept += 1;
            continue;
        };
        remove(report, path, RemovedKind::Blob, meta.len());
    }
    Ok(())
}

/// `.tmp-*` files in `dir` that are old and that no writer holds locked.
fn prune_temp_files(dir: &Path, report: &mut PruneReport) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || report.recent(&meta) {
            continue;
        }
        let Ok(file) = open_nofollow(&path) else {
            continue;
        };
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
            remove(report, path, RemovedKind::TempFile, meta.len());
        }
    }
}

fn prune_roots(
    roots: &Path,
    walk: &Walk,
    in_use: &HashSet<OsString>,
    report: &mut PruneReport,
) -> Result<(), CacheError> {
    let entries = match fs::read_dir(roots) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(roots)(e)),
    };
    let reachable: HashSet<String> = walk.manifests.iter().map(Digest::to_string).collect();
    for entry in entries {
        let entry = entry.map_err(io_at(roots))?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            if crate::dirs::is_abandoned(&path) {
                let bytes = tree_bytes(&path);
                remove(report, path, RemovedKind::Staging, bytes);
            }
            continue;
        }
        // Not a root we committed (no readable meta.json): not ours to judge.
        let Some(manifest) = read_meta(&path).map(|m| m.manifest_digest) else {
            continue;
        };
        if reachable.contains(&manifest) {
            continue;
        }
        let recent = fs::symlink_metadata(&path).is_ok_and(|m| report.recent(&m));
        if recent || in_use.contains(&entry.file_name()) {
            report.kept += 1;
            continue;
        }
        let bytes = tree_bytes(&path);
        remove(report, path, RemovedKind::Root, bytes);
    }
    Ok(())
}

/// Records (and unless dry, performs) one removal.
fn remove(report: &mut PruneReport, path: PathBuf, kind: RemovedKind, bytes: u64) {
    if !report.dry_run {
        let result = match kind {
            RemovedKind::Blob | RemovedKind::TempFile => fs::remove_file(&path),
            RemovedKind::Root | RemovedKind::Staging => remove_tree(&path),
        };
        if let Err(source) = result {
            report.failures.push(CacheError::Io { path, source });
            return;
        }
    }
    report.removed.push(Removed { path, kind, bytes });
}

fn is_recent(meta: &fs::Metadata) -> bool {
    // A time in the future (clock moved back) counts as recent.
    meta.modified()
        .ok()
        .is_none_or(|t| t.elapsed().map_or(true, |age| age < RECENT))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// The lock at `path`, if nobody else holds it (a lock file that does not exist is nobody's). Never creates
/// the file: a lock file removed or created under a waiting holder would let two holders in.
fn try_lock_existing(path: &Path) -> Option<Option<File>> {
    match open_nofollow(path) {
        Ok(file) => rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
            .ok()
            .map(|()| Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
        Err(_) => None,
    }
}

/// What the walk from `index.json` entries found.
#[derive(Debug, Default)]
struct Walk {
    /// Every digest an entry, index or manifest lists (present or not).
    referenced: HashSet<Digest>,
    /// Blobs present (and, for documents, verified), with their sizes.
    present: BTreeMap<Digest, u64>,
    /// Manifests present, in the order found.
    manifests: Vec<Digest>,
    /// Indexes present.
    indexes: Vec<Digest>,
}

/// The parts of an index or manifest the walk follows (oci-spec's types would refuse documents the walk can
/// still follow; anything unrecognised reaches nothing further).
#[derive(Debug, Deserialize)]
struct Document {
    manifests: Option<Vec<Reference>>,
    config: Option<Reference>,
    #[serde(default)]
    layers: Vec<Reference>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    digest: String,
    size: u64,
}

impl Walk {
    /// Adds what another walk found.
    fn absorb(&mut self, other: Walk) {
        self.referenced.extend(other.referenced);
        self.present.extend(other.present);
        for m in other.manifests {
            if !self.manifests.contains(&m) {
                self.manifests.push(m);
            }
        }
        for i in other.indexes {
            if !self.indexes.contains(&i) {
                self.indexes.push(i);
            }
        }
    }

    fn entry(&mut self, store: &Store, entry: &oci_spec::image::Descriptor) {
        if let Ok(digest) = Digest::try_from(entry.digest()) {
            self.document(store, digest, entry.size(), 0);
        }
    }

    fn document(&mut self, store: &Store, digest: Digest, size: u64, depth: usize) {
        self.referenced.insert(digest.clone());
        if size > MAX_MANIFEST_SIZE || self.present.contains_key(&digest) {
            return;
        }
        let Ok(bytes) = store.read_blob(&digest, size) else {
            return;
        };
        self.present.insert(digest.clone(), size);
        let Ok(doc) = serde_json::from_slice::<Document>(&bytes) else {
            return;
        };
        if let Some(children) = doc.manifests {
            self.indexes.push(digest);
            if depth < MAX_INDEX_DEPTH {
                for child in children {
                    if let Ok(d) = child.digest.parse::<Digest>() {
                        self.document(store, d, child.size, depth + 1);
                    }
                }
            }
        } else if let Some(config) = doc.config {
            self.manifests.push(digest);
            for blob in std::iter::once(config).chain(doc.layers) {
                let Ok(d) = blob.digest.parse::<Digest>() else {
                    continue;
                };
                let path = store.blob_path(&d);
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    self.present.insert(d.clone(), blob.size);
                }
                self.referenced.insert(d);
            }
        }
    }
}

/// A committed root directory.
#[derive(Debug)]
struct RootDir {
    path: PathBuf,
    manifest: Option<String>,
}

fn committed_roots(roots: &Path) -> Result<Vec<RootDir>, CacheError> {
    let entries = match fs::read_dir(roots) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(roots)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at(roots))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let path = entry.path();
        found.push(RootDir {
            manifest: read_meta(&path).map(|m| m.manifest_digest),
            path,
        });
    }
    Ok(found)
}

fn read_meta(root: &Path) -> Option<RootMeta> {
    let bytes = fs::read(root.join("meta.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The names (under the roots directory) of the roots the live runs in `runs` use.
fn roots_in_use(runs: &Path) -> HashSet<OsString> {
    crate::sandbox::runs::live_roots(runs)
        .iter()
        // A run's root is `<roots>/<key>/rootfs`.
        .filter_map(|rootfs| rootfs.parent().and_then(Path::file_name))
        .map(ToOwned::to_owned)
        .collect()
}

/// Bytes of the regular files under `path` (symlinks not followed, each hard-linked file counted once;
/// unreadable parts skipped).
fn tree_bytes(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_file() {
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                return 0;
            }
            return meta.len();
        }
        if !meta.is_dir() {
            return 0;
        }
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        entries.flatten().map(|e| walk(&e.path(), seen)).sum()
    }
    walk(path, &mut HashSet::new())
}

/// `bytes` for people: `512 B`, `1.5 KiB`, `12.3 MiB`, `2.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `thv-sandbox images --json`: a JSON array of [`CachedImage`] objects (digests as `sha256:…` strings or
/// `null`), one line per field, ending in a newline.
pub fn render_json(images: &[CachedImage]) -> String {
    // Strings, numbers and booleans only: serialization cannot fail.
    let mut out = serde_json::to_string_pretty(images).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

/// The `thv-sandbox images` total line: `3 images: 65.2 MiB of blobs (shared layers counted once), 540.1 MiB
/// unpacked`.
pub fn render_total(t: &Totals) -> String {
    format!(
        "{} image{}: {} of blobs (shared layers counted once), {} unpacked\n",
        t.images,
        if t.images == 1 { "" } else { "s" },
        human_size(t.blob_bytes),
        human_size(t.unpacked_bytes)
    )
}

/// The `thv-sandbox images` table, one row per image: NAME (its tag names; the pinned name only when it has no
/// tag), DIGEST (the manifest's, 12 hex digits), SIZE, UNPACKED.
pub fn render_table(images: &[CachedImage]) -> String {
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|i| {
            let tags: Vec<&str> = i
                .names
                .iter()
                .filter(|n| !n.contains('@'))
                .map(String::as_str)
                .collect();
            [
                if tags.is_empty() {
                    i.name.clone()
                } else {
                    tags.join(", ")
                },
                i.manifest_digest
                    .as_ref()
                    .map_or("-".to_owned(), |d| d.hex().chars().take(12).collect()),
                human_size(i.blob_bytes),
                if i.unpacked {
                    human_size(i.unpacked_bytes)
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    let header = ["NAME", "DIGEST", "SIZE", "UNPACKED"].map(str::to_owned);
    columns(&header, &rows, [false, false, true, true])
}

/// Four columns of text, each as wide as its widest cell, two spaces apart; a column marked in `right` is aligned
/// right. Trailing spaces are trimmed. (`images` and `trust accepted`.)
pub fn columns(header: &[String; 4], rows: &[[String; 4]], right: [bool; 4]) -> String {
    let mut widths = [0usize; 4];
    for row in std::iter::once(header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(right)
            .map(|((cell, w), r)| {
                if r {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType};
    use std::time::SystemTime;

    /// A hand-made cache: image `reg/a:1` (a manifest) and `reg/b:1` (an index of one manifest) sharing a layer,
    /// a root unpacked from a's manifest, and garbage: an orphan blob, a root of a manifest nobody names, an
    /// abandoned staging directory and an abandoned temporary file.
    struct Fixture {
        tmp: tempfile::TempDir,
        store: Store,
        a_manifest: Digest,
        a_bytes: u64,
        a_root: PathBuf,
        b_index: Digest,
        b_manifest: Digest,
        b_bytes: u64,
        shared: Digest,
        orphan: Digest,
        orphan_root: PathBuf,
        staging: PathBuf,
        temp: PathBuf,
    }

    fn old() -> SystemTime {
        SystemTime::now() - RECENT * 2
    }

    fn age(path: &Path) {
        File::open(path).unwrap().set_modified(old()).unwrap();
    }

    fn put(store: &Store, bytes: &[u8]) -> (Digest, u64) {
        let digest = Digest::of_bytes(bytes);
        store.put_blob(&digest, bytes).unwrap();
        (digest, bytes.len() as u64)
    }

    fn reference(media_type: &str, (digest, size): &(Digest, u64)) -> serde_json::Value {
        serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
    }

    fn manifest(store: &Store, config: &(Digest, u64), layers: &[&(Digest, u64)]) -> (Digest, u64) {
        let layers: Vec<_> = layers
            .iter()
            .map(|l| reference("application/vnd.oci.image.layer.v1.tar", l))
            .collect();
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": reference("application/vnd.oci.image.config.v1+json", config),
            "layers": layers,
        });
        put(store, &serde_json::to_vec(&doc).unwrap())
    }

    fn root(cache: &Path, key: &str, manifest: &Digest, content: usize) -> PathBuf {
        let dir = roots_dir(cache).join(key);
        fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
        fs::write(dir.join("rootfs/etc/data"), vec![7u8; content]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("rootfs/link")).unwrap();
        let meta = RootMeta {
            manifest_digest: manifest.to_string(),
            home_in_image: true,
            skipped_devices: 0,
            tree: None,
        };
        fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        age(&dir);
        dir
    }

    fn descriptor(
        media_type: MediaType,
        (digest, size): &(Digest, u64),
    ) -> oci_spec::image::Descriptor {
        DescriptorBuilder::default()
            .media_type(media_type)
            .digest(
                digest
                    .to_string()
                    .parse::<oci_spec::image::Digest>()
                    .unwrap(),
            )
            .size(*size)
            .build()
            .unwrap()
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let store = Store::open(cache).unwrap();
        let shared = put(&store, b"the shared layer");
        let layer_a = put(&store, b"layer of a");
        let layer_b = put(&store, b"layer of b, a bit longer");
        let config_a = put(&store, br#"{"config a":1}"#);
        let config_b = put(&store, br#"{"config b":22}"#);
        let a = manifest(&store, &config_a, &[&shared, &layer_a]);
        let b = manifest(&store, &config_b, &[&shared, &layer_b]);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [reference("application/vnd.oci.image.manifest.v1+json", &b)],
        });
        let b_index = put(&store, &serde_json::to_vec(&index).unwrap());
        store
            .record(
                &["reg/a:1".into()],
                &descriptor(MediaType::ImageManifest, &a),
            )
            .unwrap();
        store
            .record(
                &["reg/b:1".into()],
                &descriptor(MediaType::ImageIndex, &b_index),
            )
            .unwrap();
        let orphan = put(&store, b"nobody needs me").0;
        let temp = store.blobs_dir().join(".tmp-dead");
        fs::write(&temp, b"half a download").unwrap();
        // Everything is old: only reachability protects what is kept.
        for e in fs::read_dir(store.blobs_dir()).unwrap() {
            age(&e.unwrap().path());
        }
        let a_root = root(cache, &format!("sha256-{}-single", a.0.hex()), &a.0, 100);
        let orphan_root = root(
            cache,
            &format!("sha256-{}-single", "f".repeat(64)),
            &"sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                .parse()
                .unwrap(),
            50,
        );
        let staging = roots_dir(cache).join(".tmp-killed");
        fs::create_dir_all(staging.join("rootfs")).unwrap();
        fs::write(staging.join("lock"), b"").unwrap();
        fs::write(staging.join("rootfs/partial"), [1u8; 10]).unwrap();
        Fixture {
            a_bytes: a.1 + config_a.1 + shared.1 + layer_a.1,
            b_bytes: b_index.1 + b.1 + config_b.1 + shared.1 + layer_b.1,
            a_manifest: a.0,
            b_index: b_index.0,
            b_manifest: b.0,
            shared: shared.0,
            a_root,
            orphan,
            orphan_root,
            staging,
            temp,
            store,
            tmp,
        }
    }

    #[test]
    fn list_shows_each_name_with_its_sizes() {
        let f = fixture();
        let images = list(f.tmp.path()).unwrap();
        let meta_len = fs::metadata(f.a_root.join("meta.json")).unwrap().len();
        assert_eq!(
            images,
            vec![
                CachedImage {
                    name: "reg/a:1".into(),
                    names: vec!["reg/a:1".into()],
                    manifest_digest: Some(f.a_manifest.clone()),
                    index_digest: None,
                    blob_bytes: f.a_bytes,
                    unpacked_bytes: 100 + meta_len,
                    unpacked: true,
                },
                CachedImage {
                    name: "reg/b:1".into(),
                    names: vec!["reg/b:1".into()],
                    manifest_digest: Some(f.b_manifest.clone()),
                    index_digest: Some(f.b_index.clone()),
                    blob_bytes: f.b_bytes,
                    unpacked_bytes: 0,
                    unpacked: false,
                },
            ]
        );
        let table = render_table(&images);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME     DIGEST"), "{table}");
        assert!(lines[1].starts_with(&format!("reg/a:1  {}", &f.a_manifest.hex()[..12])));
        assert!(lines[2].ends_with(" -"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&images)).unwrap();
        assert_eq!(json[1]["name"], "reg/b:1");
        assert_eq!(json[1]["index_digest"], f.b_index.to_string());
        assert_eq!(json[1]["blob_bytes"], f.b_bytes);
    }

    /// The names a pull gives an image (its tag, and pinned by digest) and a second tag: one image, one row,
    /// its blobs counted once; the total counts blobs shared between images once.
    #[test]
    fn names_of_one_image_are_one_row_and_the_total_counts_shared_blobs_once() {
        let f = fixture();
        let pinned = format!("reg/a@{}", f.a_manifest);
        let desc = |d: &Digest, size| descriptor(MediaType::ImageManifest, &(d.clone(), size));
        let a_size = fs::metadata(f.store.blob_path(&f.a_manifest))
            .unwrap()
            .len();
        f.store
            .record(
                &[pinned.clone(), "reg/a:latest".into()],
                &desc(&f.a_manifest, a_size),
            )
            .unwrap();
        let (images, totals) = list_with_totals(f.tmp.path()).unwrap();
        assert_eq!(images.len(), 2, "{images:?}");
        assert_eq!(
            images[0].names,
            ["reg/a:1", pinned.as_str(), "reg/a:latest"]
        );
        assert_eq!(images[0].name, "reg/a:1");
        assert_eq!(images[0].blob_bytes, f.a_bytes);
        let shared = b"the shared layer".len() as u64;
        assert_eq!(totals.images, 2);
        assert_eq!(totals.blob_bytes, f.a_bytes + f.b_bytes - shared);
        assert_eq!(totals.unpacked_bytes, images[0].unpacked_bytes);
        let table = render_table(&images);
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("reg/a:1, reg/a:latest  "),
            "{table}"
        );
        assert!(!table.contains('@'), "{table}");
        assert_eq!(
            render_total(&totals),
            format!(
                "2 images: {} of blobs (shared layers counted once), {} unpacked\n",
                human_size(totals.blob_bytes),
                human_size(totals.unpacked_bytes)
            )
        );
        // Any of its names, as a user types it, or its digest names it; a prefix too short does not.
        for what in [
            "reg/a:latest",
            pinned.as_str(),
            &f.a_manifest.to_string(),
            &f.a_manifest.hex()[..12],
        ] {
            assert!(names_image(&images[0], what), "{what}");
        }
        assert!(!names_image(&images[0], &f.a_manifest.hex()[..8]));
        assert!(!names_image(&images[1], "reg/a:1"));
    }

    #[test]
    fn rmi_removes_one_image_its_root_and_only_the_blobs_no_other_image_uses() {
        let f = fixture();
        let a_layer = Digest::of_bytes(b"layer of a");
        let err = remove_image(f.tmp.path(), None, "reg/zzz:1", false).unwrap_err();
        assert!(matches!(err, RmiError::NotFound(_)), "{err}");
        // A dry run changes nothing.
        let dry = remove_image(f.tmp.path(), None, "reg/a:1", true).unwrap();
        assert!(dry.removed.iter().any(|r| r.kind == RemovedKind::Root));
        assert_eq!(list(f.tmp.path()).unwrap().len(), 2);
        assert!(f.a_root.exists());
        let report = remove_image(f.tmp.path(), None, &f.a_manifest.hex()[..12], false).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.image.unwrap().name, "reg/a:1");
        assert!(!f.a_root.exists());
        assert!(!f.store.blob_path(&f.a_manifest).exists());
        assert!(!f.store.blob_path(&a_layer).exists());
        // What b needs stays, and so does what prune would judge (the orphan, the orphan root).
        assert!(f.store.blob_path(&f.shared).exists());
        assert!(f.store.blob_path(&f.orphan).exists() && f.orphan_root.exists());
        let images = list(f.tmp.path()).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name, "reg/b:1");
        assert_eq!(images[0].blob_bytes, f.b_bytes);
        assert!(matches!(
            remove_image(f.tmp.path(), None, "reg/a:1", false),
            Err(RmiError::NotFound(_))
        ));
    }

    #[test]
    fn rmi_keeps_a_root_in_use_and_blobs_a_pull_holds() {
        let f = fixture();
        let a_layer = Digest::of_bytes(b"layer of a");
        let runs = f.tmp.path().join("runs");
        fs::create_dir(&runs).unwrap();
        let run = crate::sandbox::runs::RunDir::create(&runs).unwrap();
        let plan = serde_json::json!({
            "id": run.id, "bundle": "/b", "state_root": "/s", "netns": "/n", "cgroups_path": "/c",
            "rootfs": f.a_root.join("rootfs"), "run_dir": run.path, "supervisor_pid": 1,
            "stop_timeout_ms": 1,
        });
        fs::write(run.path.join("plan.json"), plan.to_string()).unwrap();
        let lock = f.store.lock_blob(&a_layer).unwrap();
        let report = remove_image(f.tmp.path(), Some(&runs), "reg/a:1", false).unwrap();
        assert!(f.a_root.exists(), "a running server uses it");
        assert!(f.store.blob_path(&a_layer).exists(), "a pull holds it");
        assert_eq!(report.kept.len(), 2, "{:?}", report.kept);
        assert!(!f.store.blob_path(&f.a_manifest).exists());
        assert_eq!(
            list(f.tmp.path()).unwrap().len(),
            1,
            "the name is gone all the same"
        );
        drop(lock);
        drop(run);
    }

    #[test]
    fn prune_force_removes_recent_unreachable_things_unless_a_pull_is_in_progress() {
        let f = fixture();
        // A fresh orphan blob: kept by prune, removed by prune --force.
        let fresh = put(&f.store, b"just written").0;
        let report = prune(f.tmp.path(), false).unwrap();
        assert!(f.store.blob_path(&fresh).exists());
        assert_eq!(report.kept, 1);
        // While a pull holds a blob's lock, --force keeps recent things too.
        let lock = f.store.lock_blob(&f.shared).unwrap();
        let force = PruneOptions {
            dry_run: false,
            force: true,
        };
        let report = prune_with(f.tmp.path(), None, force).unwrap();
        assert!(report.held_back);
        assert!(f.store.blob_path(&fresh).exists());
        drop(lock);
        let report = prune_with(f.tmp.path(), None, force).unwrap();
        assert!(!report.held_back && report.forced);
        assert!(!f.store.blob_path(&fresh).exists());
        assert_eq!(report.count(RemovedKind::Blob), 1);
        // Reachable things stay, forced or not.
        assert_eq!(list(f.tmp.path()).unwrap()[0].blob_bytes, f.a_bytes);
        assert!(f.a_root.exists());
    }

    #[test]
    fn a_missing_cache_lists_nothing_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("none");
        assert!(list(&cache).unwrap().is_empty());
        assert!(prune(&cache, false).unwrap().removed.is_empty());
        assert!(!cache.exists());
    }

    fn blobs(f: &Fixture) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(f.store.blobs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn prune_removes_exactly_what_nothing_reaches() {
        let f = fixture();
        let before = blobs(&f);
        let report = prune(f.tmp.path(), false).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let mut removed: Vec<(PathBuf, RemovedKind)> = report
            .removed
            .iter()
            .map(|r| (r.path.clone(), r.kind))
            .collect();
        removed.sort();
        let mut expected = vec![
            (f.store.blob_path(&f.orphan), RemovedKind::Blob),
            (f.temp.clone(), RemovedKind::TempFile),
            (f.orphan_root.clone(), RemovedKind::Root),
            (f.staging.clone(), RemovedKind::Staging),
        ];
        expected.sort();
        assert_eq!(removed, expected);
        let meta_len = fs::metadata(f.a_root.join("meta.json")).unwrap().len();
        // 15 + 15 + (50 + meta.json) + 10.
        assert_eq!(report.bytes_freed(), 15 + 15 + 50 + meta_len + 10);
        assert_eq!(report.count(RemovedKind::Blob), 1);
        let mut kept = before;
        kept.retain(|n| *n != f.orphan.hex() && !n.starts_with(".tmp-"));
        assert_eq!(blobs(&f), kept);
        assert!(f.store.blob_path(&f.shared).exists());
        assert!(f.a_root.join("rootfs/etc/data").exists());
        // Both images are still complete.
        let images = list(f.tmp.path()).unwrap();
        assert_eq!(images[0].blob_bytes, f.a_bytes);
        assert_eq!(images[1].blob_bytes, f.b_bytes);
        // Nothing left to prune.
        assert!(prune(f.tmp.path(), false).unwrap().removed.is_empty());
    }

    #[test]
    fn a_dry_run_removes_nothing_and_reports_the_same() {
        let f = fixture();
        let before = blobs(&f);
        let dry = prune(f.tmp.path(), true).unwrap();
        assert!(dry.dry_run);
        assert_eq!(dry.removed.len(), 4);
        assert_eq!(blobs(&f), before);
        assert!(f.orphan_root.exists() && f.staging.exists());
        let real = prune(f.tmp.path(), false).unwrap();
        assert_eq!(real.bytes_freed(), dry.bytes_freed());
    }

    #[test]
    fn locked_recent_and_in_use_things_are_kept() {
        let f = fixture();
        // A pull holds the orphan's blob lock (it is downloading or committing it).
        let lock = f.store.lock_blob(&f.orphan).unwrap();
        // A build still holds its staging directory's lock.
        let live = roots_dir(f.tmp.path()).join(".tmp-live");
        fs::create_dir(&live).unwrap();
        let live_lock = File::create(live.join("lock")).unwrap();
        crate::dirs::try_lock(&live_lock).unwrap();
        // A live run uses the orphan root (an `oci:` layout image, say).
        let runs = f.tmp.path().join("runs");
        fs::create_dir(&runs).unwrap();
        let run = crate::sandbox::runs::RunDir::create(&runs).unwrap();
        let plan = serde_json::json!({
            "id": run.id, "bundle": "/b", "state_root": "/s", "netns": "/n", "cgroups_path": "/c",
            "rootfs": f.orphan_root.join("rootfs"), "run_dir": run.path, "supervisor_pid": 1,
            "stop_timeout_ms": 1,
        });
        fs::write(run.path.join("plan.json"), plan.to_string()).unwrap();
        let report = prune_keeping_runs(f.tmp.path(), Some(&runs), false).unwrap();
        let kinds: Vec<RemovedKind> = report.removed.iter().map(|r| r.kind).collect();
        assert_eq!(kinds.len(), 2, "{report:?}");
        assert!(kinds.contains(&RemovedKind::TempFile) && kinds.contains(&RemovedKind::Staging));
        assert_eq!(report.kept, 2);
        assert!(f.store.blob_path(&f.orphan).exists());
        assert!(f.orphan_root.exists() && live.exists());
        drop(lock);
        drop(run);
        // A pull that finds the blob present (and will name it) makes it recent: kept.
        assert!(f.store.has_blob(&f.orphan, 15).unwrap());
        let report = prune_keeping_runs(f.tmp.path(), Some(&runs), false).unwrap();
        assert_eq!(report.count(RemovedKind::Blob), 0);
        assert_eq!(report.count(RemovedKind::Root), 1, "the run is gone");
        assert!(f.store.blob_path(&f.orphan).exists());
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 20), "5.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
