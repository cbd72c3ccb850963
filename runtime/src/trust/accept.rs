//! Unverified images the user accepted knowingly (`thv-sandbox trust accept NAME`), by manifest digest.
//!
//! An image with no provenance to verify it against (a registry entry that declares none, or a plain image
//! reference without `--certificate-*` flags) runs under `warn` with an UNVERIFIED warning. Accepting it records
//! its manifest digest in `<cache>/verification/accepted.json`, next to the verification records: runs of that
//! very digest then say nothing (a line under `--verbose`), and any other digest — the tag moved, the registry
//! serves something else — warns again, naming the digest accepted before.
//!
//! What an acceptance is not (the reasoning is in SECURITY.md, "Accepting an unverified server"):
//! - not verification: under `image_verification = enabled` an accepted digest is still refused;
//! - not a way past failed verification: the gate consults acceptances only for images that have nothing to be
//!   verified against, never for an image whose declared provenance did not verify.
//!
//! The file is read and rewritten under a lock (`accepted.json.lock`), written aside and renamed, so concurrent
//! `accept`/`revoke` lose nothing and a run never reads half a file. An unreadable file accepts nothing (the
//! warning comes back), and `accept` refuses to overwrite it.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::digest::Digest;

/// The file under `<cache>/verification`.
pub const FILE: &str = "accepted.json";

/// One accepted image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The platform manifest accepted (what runs).
    pub manifest_digest: Digest,
    /// The image reference it was resolved from, e.g. `docker.io/mcp/time:latest`.
    pub image: String,
    /// The registry entry's full name, when accepted by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// When (seconds since the epoch).
    pub accepted_at: u64,
}

impl Acceptance {
    /// What it was accepted as, as users type it: the server's short name, else the image.
    pub fn subject(&self) -> &str {
        match &self.server {
            Some(s) => s.rsplit('/').next().unwrap_or(s),
            None => &self.image,
        }
    }

    /// The day it was accepted, `YYYY-MM-DD` (UTC).
    pub fn date(&self) -> String {
        jiff::Timestamp::from_second(self.accepted_at as i64)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Whether `what` names it: its server's full or short name (ASCII case ignored), its image, or its digest
    /// (`sha256:HEX`, or at least 12 leading hex digits).
    pub fn matches(&self, what: &str) -> bool {
        let short = |n: &str| n.rsplit('/').next().unwrap_or(n).to_owned();
        if let Some(s) = &self.server {
            if s.eq_ignore_ascii_case(what) || short(s).eq_ignore_ascii_case(what) {
                return true;
            }
        }
        let normalized = what
            .parse::<crate::image::reference::Reference>()
            .map(|r| r.to_string());
        if self.image == what || normalized.is_ok_and(|n| n == self.image) {
            return true;
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        hex.len() >= 12
            && hex.chars().all(|c| c.is_ascii_hexdigit())
            && self
                .manifest_digest
                .hex()
                .starts_with(&hex.to_ascii_lowercase())
    }
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    accepted: Vec<Acceptance>,
}

/// Failures reading or changing the acceptances.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Reading, locking or writing the file.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this version writes.
    #[error("{} is not a list of accepted images: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The acceptances kept under `<cache>/verification`.
#[derive(Debug, Clone)]
pub struct Acceptances {
    dir: PathBuf,
}

impl Acceptances {
    /// The acceptances of the cache at `cache_dir`.
    pub fn of_cache(cache_dir: &Path) -> Acceptances {
        Acceptances {
            dir: cache_dir.join("verification"),
        }
    }

    /// The acceptances in `dir` (`<cache>/verification`).
    pub fn in_dir(dir: &Path) -> Acceptances {
        Acceptances {
            dir: dir.to_owned(),
        }
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Every acceptance, oldest first (none when the file does not exist).
    pub fn list(&self) -> Result<Vec<Acceptance>, AcceptError> {
        Ok(self.read()?.accepted)
    }

    /// The acceptance of `manifest`, if any. An unreadable file accepts nothing.
    pub fn find(&self, manifest: &Digest) -> Option<Acceptance> {
        let doc = self.read().ok()?;
        doc.accepted
            .into_iter()
            .rev()
            .find(|a| &a.manifest_digest == manifest)
    }

    /// The latest acceptance of another digest for the same server (or, without one, the same image), to say
    /// that what runs now is not what was accepted.
    pub fn earlier_for(
        &self,
        server: Option<&str>,
        image: &str,
        manifest: &Digest,
    ) -> Option<Acceptance> {
        let doc = self.read().ok()?;
        doc.accepted.into_iter().rev().find(|a| {
            &a.manifest_digest != manifest
                && match (server, &a.server) {
                    (Some(s), Some(t)) => s == t,
                    (None, None) => a.image == image,
                    _ => false,
                }
        })
    }

    /// Records `acceptance` (replacing one of the same digest); returns whether it was new.
    pub fn add(&self, acceptance: Acceptance) -> Result<bool, AcceptError> {
        self.change(|doc| {
            let before = doc.accepted.len();
            doc.accepted
                .retain(|a| a.manifest_digest != acceptance.manifest_digest);
            let new = doc.accepted.len() == before;
            doc.accepted.push(acceptance);
            new
        })
    }

    /// Removes every acceptance `what` names ([`Acceptance::matches`]); returns them.
    pub fn revoke(&self, what: &str) -> Result<Vec<Acceptance>, AcceptError> {
        self.change(|doc| {
            let (gone, kept): (Vec<_>, Vec<_>) =
                doc.accepted.drain(..).partition(|a| a.matches(what));
            doc.accepted = kept;
            gone
        })
    }

    fn read(&self) -> Result<Doc, AcceptError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Doc::default()),
            Err(source) => return Err(AcceptError::Io { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| AcceptError::Malformed {
            path,
            reason: e.to_string(),
        })
    }

    /// Read, change and write back under the lock.
    fn change<T>(&self, f: impl FnOnce(&mut Doc) -> T) -> Result<T, AcceptError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AcceptError::Io { path, source }
        };
        crate::dirs::private_dir(&self.dir)
            .map_err(|e| io(&self.dir)(std::io::Error::other(e.to_string())))?;
        let lock_path = self.dir.join(format!("{FILE}.lock"));
        let lock = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(&lock_path)(e.into()))?;
        let mut doc = self.read()?;
        let out = f(&mut doc);
        let path = self.path();
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io(&self.dir))?;
        serde_json::to_writer_pretty(&mut tmp, &doc)
            .map_err(|e| io(&path)(std::io::Error::other(e)))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
        drop(lock);
        Ok(out)
    }
}

/// Now, in seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn acc(c: char, server: Option<&str>) -> Acceptance {
        Acceptance {
            manifest_digest: d(c),
            image: "docker.io/mcp/time:latest".into(),
            server: server.map(str::to_owned),
            accepted_at: 1_764_900_000,
        }
    }

    #[test]
    fn add_find_list_and_revoke_by_name_image_or_digest() {
        let dir = tempfile::tempdir().unwrap();
        let a = Acceptances::of_cache(dir.path());
        assert!(a.list().unwrap().is_empty());
        assert!(a.find(&d('a')).is_none());
        assert!(a.add(acc('a', Some("io.github.stacklok/time"))).unwrap());
        assert!(!a.add(acc('a', Some("io.github.stacklok/time"))).unwrap());
        assert!(a.add(acc('b', None)).unwrap());
        assert_eq!(a.list().unwrap().len(), 2);
        assert_eq!(a.find(&d('a')).unwrap().subject(), "time");
        assert_eq!(a.find(&d('a')).unwrap().date(), "2025-12-05");
        // Another digest of the same server: the one accepted before is named.
        let earlier = a
            .earlier_for(Some("io.github.stacklok/time"), "x", &d('c'))
            .unwrap();
        assert_eq!(earlier.manifest_digest, d('a'));
        assert!(a
            .earlier_for(Some("io.github.stacklok/time"), "x", &d('a'))
            .is_none());
        // By short name, case ignored.
        assert_eq!(a.revoke("TIME").unwrap().len(), 1);
        assert!(a.find(&d('a')).is_none());
        // By digest prefix (12 digits at least), not by a shorter one.
        assert!(a.revoke("bbbbbbbbbbb").unwrap().is_empty());
        assert_eq!(a.revoke("sha256:bbbbbbbbbbbb").unwrap().len(), 1);
        assert!(a.list().unwrap().is_empty());
        assert!(a.revoke("docker.io/mcp/time:latest").unwrap().is_empty());
        // An image by the name a user types (normalized).
        a.add(acc('c', None)).unwrap();
        assert_eq!(a.revoke("mcp/time").unwrap().len(), 1);
    }

    #[test]
    fn a_malformed_file_accepts_nothing_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let a = Acceptances::of_cache(dir.path());
        std::fs::create_dir_all(dir.path().join("verification")).unwrap();
        std::fs::write(a.path(), b"{not json").unwrap();
        assert!(a.find(&d('a')).is_none());
        assert!(matches!(a.list(), Err(AcceptError::Malformed { .. })));
        assert!(a.add(acc('a', None)).is_err());
        assert_eq!(std::fs::read(a.path()).unwrap(), b"{not json");
    }
}
