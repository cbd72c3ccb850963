//! The blob cache, which is an OCI image layout: `<cache>/oci/{oci-layout,index.json,blobs/sha256/<hex>}`.
//!
//! Writes are atomic: a blob is streamed into `blobs/sha256/.tmp-*`, synced, checked, and only then renamed to
//! its digest; `index.json` is rewritten into a temporary file and renamed, under an exclusive `flock` on
//! `index.json.lock` so that concurrent pulls never lose each other's entries. A pull that dies leaves at most
//! `.tmp-*` files, which no reader ever opens. Per-blob locks (`.locks/sha256-<hex>`) make a second pull of the
//! same blob wait for the first and then find it present instead of downloading it again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use rustix::fs::FlockOperation;

use super::PullError;
use crate::image::digest::{Digest, VerifyingReader};
use crate::image::layout::MAX_INDEX_JSON_SIZE;

/// The layout's `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Temporary files (blobs being downloaded, `index.json` being rewritten) start with this.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file untouched this long and not locked belongs to a pull that died.
pub(crate) const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// The `org.opencontainers.image.ref.name` annotation.
pub(crate) const REF_NAME: &str = oci_spec::image::ANNOTATION_REF_NAME;

/// The blob cache: an OCI image layout directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// An exclusive `flock`, released when dropped (the file closes).
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_owned(),
        source,
    }
}

fn private_dir(path: &Path) -> Result<(), PullError> {
    crate::dirs::private_dir(path).map_err(|e| PullError::CacheDir {
        path: path.to_owned(),
        source: e,
    })
}

impl Store {
    /// The layout directory inside a cache directory.
    pub(crate) fn layout_dir(cache: &Path) -> PathBuf {
        crate::dirs::cache_layout(cache)
    }

    /// Create (or check) `<cache>/oci` as a layout: private directories, `oci-layout`, an `index.json`.
    pub(crate) fn open(cache: &Path) -> Result<Store, PullError> {
        private_dir(cache)?;
        let dir = Store::layout_dir(cache);
        private_dir(&dir)?;
        let store = Store { dir };
        for sub in [store.blobs_dir(), store.locks_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&sub)
                .map_err(io_err(&sub))?;
        }
        if !store.dir.join("index.json").exists() || !store.dir.join("oci-layout").exists() {
            let _lock = store.lock_index()?;
            let layout = store.dir.join("oci-layout");
            if !layout.exists() {
                store.write_atomically(&layout, OCI_LAYOUT)?;
            }
            let index = store.dir.join("index.json");
            if !index.exists() {
                store.write_index(&[])?;
            }
        }
        Ok(store)
    }

    /// The layout of an existing cache, without creating or checking anything (for readers such as
    /// `crate::cache` that must not create a cache that is not there).
    pub(crate) fn existing(cache: &Path) -> Store {
        Store {
            dir: Store::layout_dir(cache),
        }
    }

    /// The layout directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.dir.join(".locks")
    }

    /// Where a blob lives. Built only from a validated [`Digest`].
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Whether the blob is present as a regular file of exactly `size` bytes. Anything else at its name (which
    /// this store never writes) is removed so that it gets fetched again.
    ///
    /// A blob found present has its modification time set to now: a pull that relies on it has not named it in
    /// `index.json` yet, and `crate::cache::prune` keeps blobs modified within [`ABANDONED_AFTER`].
    pub(crate) fn has_blob(&self, digest: &Digest, size: u64) -> Result<bool, PullError> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == size => {
                touch(&path);
                Ok(true)
            }
            Ok(meta) => {
                tracing::warn!(
                    "cached blob {} is {} bytes, not {size}; fetching it again",
                    path.display(),
                    meta.len()
                );
                fs::remove_file(&path).map_err(io_err(&path))?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Read a whole (small) blob, verifying digest and size while reading.
    pub(crate) fn read_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, PullError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut reader = VerifyingReader::new(file, digest.clone(), size);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.read_to_end(&mut bytes).map_err(io_err(&path))?;
        Ok(bytes)
    }

    /// A temporary file beside the blobs (same file system, so it can be renamed into place). Removed when
    /// dropped uncommitted.
    /// The file stays locked (`flock`) while it is open, which tells [`Store::remove_abandoned`] it is in use.
    pub(crate) fn temp_blob(&self) -> Result<tempfile::NamedTempFile, PullError> {
        let dir = self.blobs_dir();
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        rustix::fs::flock(temp.as_file(), FlockOperation::LockExclusive)
            .map_err(|e| io_err(temp.path())(e.into()))?;
        Ok(temp)
    }

    /// Remove temporary files that pulls killed mid-way left behind: those older than [`ABANDONED_AFTER`] that
    /// no live pull holds locked. (They are never read in any case; this only frees the space.)
    pub(crate) fn remove_abandoned(&self) {
        for dir in [self.blobs_dir(), self.dir.clone()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
                    continue;
                }
                let old = entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED_AFTER);
                if !old {
                    continue;
                }
                let path = entry.path();
                let Ok(file) = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&path)
                else {
                    continue;
                };
                if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    tracing::debug!("removing {}, left by an interrupted pull", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// Make a verified temporary file the blob `digest`: sync its data, rename it into place, sync the
    /// directory. Replacing an existing blob is harmless: it has the same content.
    pub(crate) fn commit_blob(
        &self,
        temp: tempfile::NamedTempFile,
        digest: &Digest,
    ) -> Result<(), PullError> {
        let path = self.blob_path(digest);
        temp.as_file().sync_all().map_err(io_err(temp.path()))?;
        temp.persist(&path).map_err(|e| {
            // The download's file gone from under it (the cache, or a part of it, removed meanwhile): say so,
            // rather than name the blob that was never there.
            let gone = e.error.kind() == io::ErrorKind::NotFound
                && fs::symlink_metadata(e.file.path()).is_err();
            io_err(if gone { e.file.path() } else { &path })(e.error)
        })?;
        self.sync_blobs_dir()
    }

    /// Store bytes already checked against `digest` (manifests and indexes fetched whole).
    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        if Digest::of_bytes(bytes) != *digest {
            // The callers verify first; this keeps a wrong blob out even if one forgets.
            return Err(PullError::Internal(
                "put_blob called with content of another digest",
            ));
        }
        if self.has_blob(digest, bytes.len() as u64)? {
            return Ok(());
        }
        let mut temp = self.temp_blob()?;
        temp.write_all(bytes).map_err(io_err(temp.path()))?;
        self.commit_blob(temp, digest)
    }

    fn sync_blobs_dir(&self) -> Result<(), PullError> {
        let dir = self.blobs_dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }

    fn lock(&self, path: PathBuf) -> Result<Lock, PullError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| io_err(&path)(e.into()))?;
        Ok(Lock { _file: file })
    }

    /// Wait for and take the lock of one blob (blocking: run it off the async thread).
    pub(crate) fn lock_blob(&self, digest: &Digest) -> Result<Lock, PullError> {
        let name = format!("{}-{}", digest.algorithm(), digest.hex());
        self.lock(self.locks_dir().join(name))
    }

    /// Wait for and take the lock of `index.json`.
    pub(crate) fn lock_index(&self) -> Result<Lock, PullError> {
        self.lock(self.dir.join("index.json.lock"))
    }

    /// The entries of `index.json`.
    pub(crate) fn entries(&self) -> Result<Vec<Descriptor>, PullError> {
        let path = self.dir.join("index.json");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_INDEX_JSON_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 > MAX_INDEX_JSON_SIZE {
            return Err(PullError::Io {
                path,
                source: io::Error::other(format!("larger than {MAX_INDEX_JSON_SIZE} bytes")),
            });
        }
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| PullError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        Ok(index.manifests().clone())
    }

    /// The entry named `name` (`org.opencontainers.image.ref.name`), if any.
    pub(crate) fn find(&self, name: &str) -> Result<Option<Descriptor>, PullError> {
        Ok(self
            .entries()?
            .into_iter()
            .rev()
            .find(|d| ref_name(d) == Some(name)))
    }

    /// Name `descriptor` by each of `names` in `index.json`, replacing entries of those names. This is the
    /// commit point of a pull: call it only once every blob the image needs is in place.
    pub(crate) fn record(
        &self,
        names: &[String],
        descriptor: &Descriptor,
    ) -> Result<(), PullError> {
        let _lock = self.lock_index()?;
        let mut entries = self.entries()?;
        entries.retain(|d| !ref_name(d).is_some_and(|n| names.iter().any(|x| x == n)));
        for name in names {
            let mut entry = descriptor.clone();
            let mut annotations = entry.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME.to_owned(), name.clone());
            entry.set_annotations(Some(annotations));
            entries.push(entry);
        }
        self.write_index(&entries)
    }

    /// Rewrite `index.json` with `entries` (`rmi`; the caller holds [`Store::lock_index`]).
    pub(crate) fn write_index_locked(&self, entries: &[Descriptor]) -> Result<(), PullError> {
        self.write_index(entries)
    }

    /// Rewrite `index.json` (caller holds the index lock).
    fn write_index(&self, entries: &[Descriptor]) -> Result<(), PullError> {
        let path = self.dir.join("index.json");
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(entries.to_vec())
            .build()
            .map_err(|_| PullError::Internal("cannot build index.json"))?;
        let bytes = serde_json::to_vec(&index).map_err(|e| PullError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        self.write_atomically(&path, &bytes)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), PullError> {
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        temp.write_all(bytes).map_err(io_err(temp.path()))?;
        temp.as_file().sync_all().map_err(io_err(temp.path()))?;
        temp.persist(path).map_err(|e| io_err(path)(e.error))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

/// Sets the modification time of `path` (not following a symlink) to now; best effort (a read-only cache
/// still works, it only loses prune's protection of recently used blobs).
fn touch(path: &Path) {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    if let Err(e) = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &now,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        tracing::debug!("cannot touch {}: {e}", path.display());
    }
}

/// The `org.opencontainers.image.ref.name` of an entry.
pub(crate) fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::DescriptorBuilder;

    fn descriptor(bytes: &[u8]) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(
                Digest::of_bytes(bytes)
                    .to_string()
                    .parse::<oci_spec::image::Digest>()
                    .unwrap(),
            )
            .size(bytes.len() as u64)
            .build()
            .unwrap()
    }

    #[test]
    fn a_new_store_is_a_layout_the_reader_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("cache")).unwrap();
        let layout = crate::image::layout::OciLayout::open(store.dir()).unwrap();
        assert!(layout.tags().unwrap().is_empty());
        // Opening again keeps what is there.
        store.record(&["a".into()], &descriptor(b"x")).unwrap();
        let again = Store::open(&tmp.path().join("cache")).unwrap();
        assert_eq!(again.entries().unwrap().len(), 1);
    }

    #[test]
    fn blobs_are_committed_by_rename_and_leftovers_are_never_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let digest = Digest::of_bytes(b"hello");
        assert!(!store.has_blob(&digest, 5).unwrap());
        let temp = store.temp_blob().unwrap();
        let temp_path = temp.path().to_owned();
        assert!(temp_path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".tmp-"));
        drop(temp);
        assert!(!temp_path.exists(), "an uncommitted temp file is removed");
        store.put_blob(&digest, b"hello").unwrap();
        assert!(store.has_blob(&digest, 5).unwrap());
        assert_eq!(store.read_blob(&digest, 5).unwrap(), b"hello");
        // Wrong size at a blob's name: removed and reported missing.
        assert!(!store.has_blob(&digest, 6).unwrap());
        assert!(!store.blob_path(&digest).exists());
        assert!(matches!(
            store.put_blob(&digest, b"other"),
            Err(PullError::Internal(_))
        ));
    }

    #[test]
    fn only_old_unlocked_temp_files_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let old = std::time::SystemTime::now() - ABANDONED_AFTER * 2;
        // In use (locked by its writer), even if old: kept.
        let live = store.temp_blob().unwrap();
        live.as_file().set_modified(old).unwrap();
        // Abandoned: old, unlocked.
        let dead = store.blobs_dir().join(".tmp-dead");
        File::create(&dead).unwrap().set_modified(old).unwrap();
        // Recent and unlocked (maybe a writer that has not locked it yet): kept.
        let fresh = store.blobs_dir().join(".tmp-fresh");
        File::create(&fresh).unwrap();
        // Not a temporary file: never touched.
        let blob = store.blobs_dir().join("0".repeat(64));
        File::create(&blob).unwrap().set_modified(old).unwrap();
        store.remove_abandoned();
        assert!(live.path().exists());
        assert!(!dead.exists());
        assert!(fresh.exists());
        assert!(blob.exists());
    }

    #[test]
    fn record_replaces_entries_of_the_same_names_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store
            .record(&["r:1".into(), "r@a".into()], &descriptor(b"one"))
            .unwrap();
        store
            .record(&["other".into()], &descriptor(b"two"))
            .unwrap();
        store
            .record(&["r:1".into()], &descriptor(b"three"))
            .unwrap();
        let found = store.find("r:1").unwrap().unwrap();
        assert_eq!(found.size(), 5);
        assert_eq!(store.find("r@a").unwrap().unwrap().size(), 3);
        assert_eq!(store.find("other").unwrap().unwrap().size(), 3);
        assert_eq!(store.entries().unwrap().len(), 3);
        assert!(store.find("missing").unwrap().is_none());
    }

    #[test]
    fn concurrent_records_lose_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        store
                            .record(&[format!("t{t}-{i}")], &descriptor(b"x"))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.entries().unwrap().len(), 40);
    }
}
