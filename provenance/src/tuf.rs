//! Trusted roots refreshed through TUF, kept in the cache, with an offline fallback.
//!
//! Each instance's `trusted_root.json` is a target of its TUF repository (public-good:
//! `https://tuf-repo-cdn.sigstore.dev`, GitHub's: `https://tuf-repo.github.com`). Trust in the repository starts at
//! the TUF `root.json` embedded in sigstore-trust-root; sigstore-tuf walks the root chain, checks signature
//! thresholds, versions (no rollback), expiry and the target's length and hash.
//!
//! # Cache layout (`<cache>/trust/<instance>/`)
//! - `state.json`: which directory holds the last complete, verified refresh, when it was verified (the TUF
//!   metadata was fresh at that time), the repository URL and the target's sha256; and when a refresh last failed.
//! - `tuf-<unix time>-<sha>/`: the TUF metadata and the target of one successful refresh. A refresh works in a
//!   `.staging-*` directory seeded with the previous one (version floors), and only a complete, verified refresh is
//!   renamed into place and named by `state.json` (written aside and renamed). A half-written directory or state is
//!   never used.
//!
//! # Which root is used
//! A refresh is attempted only when it is due: refreshing is on, the last verified refresh is older than
//! [`REFRESH_INTERVAL`], and no attempt failed in the last [`RETRY_AFTER_FAILURE`]. Its network time is bounded
//! ([`CONNECT_TIMEOUT`], [`TOTAL_TIMEOUT`]). A failed refresh is not an error. Otherwise the cached refresh is
//! verified again from the embedded TUF root, entirely offline, with the metadata's expiry evaluated at the time it
//! was refreshed (recorded by us), so an expired timestamp does not throw away the newest root we verified; the
//! root's age says how stale it is. The newer of that root and the embedded snapshot is used; when the cache fails
//! verification, the embedded one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigstore_tuf::{FileStore, MetadataStore, StoreRepository, Updater};

use crate::policy::Instance;
use crate::trust::{sha256, TrustRoot, TrustRootId};

/// The TUF target that is the trusted root.
pub const TARGET: &str = "trusted_root.json";
/// A root verified through TUF more recently than this is not refreshed again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// After a failed refresh, the next attempt waits this long (an offline host does not try on every start).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);
/// Connecting to the TUF repository.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A stalled read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole refresh.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a TUF refresh, or the offline check of the cached one, failed. A failed refresh is not fatal: the cached or
/// embedded root stays in use, and the text of this error is one of [`LoadedRoot::notes`].
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// The instance's cache directory cannot be created.
    #[error("cannot create {}: {error}", dir.display())]
    CreateDir {
        /// `<cache>/trust/<instance>`.
        dir: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The staging directory cannot be created.
    #[error("cannot create a directory in {}: {error}", dir.display())]
    Staging {
        /// Where it was to be made.
        dir: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The target is not text.
    #[error("{TARGET} is not UTF-8")]
    NotUtf8,
    /// The target verified through TUF but is not a trusted root.
    #[error("{0}")]
    Root(crate::Refusal),
    /// The verified refresh cannot be renamed into place.
    #[error("cannot store the refresh in {}: {error}", target.display())]
    Store {
        /// The directory it was to become.
        target: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// `state.json` cannot be written.
    #[error("cannot write {}: {error}", path.display())]
    WriteState {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The HTTP client for the repository cannot be built.
    #[error("HTTP client: {0}")]
    HttpClient(sigstore_tuf::reqwest::Error),
    /// The embedded (or configured) TUF root does not start a chain.
    #[error("bootstrap root: {}", chain(.0))]
    Bootstrap(sigstore_tuf::Error),
    /// The TUF workflow refused the metadata or the target, or could not fetch them.
    #[error("{}", chain(.0))]
    Tuf(sigstore_tuf::Error),
    /// No async runtime for the refresh.
    #[error("async runtime: {0}")]
    Runtime(std::io::Error),
    /// The refresh took longer than [`TOTAL_TIMEOUT`].
    #[error("no answer within {TOTAL_TIMEOUT:?}")]
    Timeout,
    /// The refresh thread panicked.
    #[error("the refresh thread panicked")]
    Panicked,
    /// A refresh over the network failed; which repository.
    #[error("{url}: {error}")]
    Online {
        /// The repository.
        url: String,
        /// What failed.
        error: Box<TufError>,
    },
    /// `state.json` names a directory that is not one of ours.
    #[error("bad directory name {name:?}")]
    BadDirName {
        /// The name.
        name: String,
    },
    /// Reading the cache did not complete at once (it would have waited for I/O).
    #[error("the cache read did not complete")]
    CacheReadIncomplete,
}

/// The TUF repository of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repository {
    /// Its URL (a mirror); `None`: the instance's own.
    pub url: Option<String>,
    /// The TUF `root.json` trust starts at; `None`: the one embedded for the instance. Tests (and sites running
    /// their own repository) name another one.
    pub bootstrap: Option<Vec<u8>>,
}

/// Where and whether to refresh trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TufOptions {
    /// `<cache>/trust`.
    pub dir: PathBuf,
    /// Whether a due refresh goes to the network (`false`: cached and embedded roots only).
    pub refresh: bool,
    /// public-good's repository.
    pub public_good: Repository,
    /// GitHub's repository.
    pub github: Repository,
    /// The time to act at; `None`: the clock. For tests.
    pub now: Option<jiff::Timestamp>,
}

impl TufOptions {
    /// Refreshing on, the instances' own repositories, the state under `dir`.
    pub fn new(dir: PathBuf) -> TufOptions {
        TufOptions {
            dir,
            refresh: true,
            public_good: Repository::default(),
            github: Repository::default(),
            now: None,
        }
    }

    fn repository(&self, instance: Instance) -> &Repository {
        match instance {
            Instance::PublicGood => &self.public_good,
            Instance::GitHub => &self.github,
        }
    }

    /// The repository URL used for `instance`.
    pub fn url(&self, instance: Instance) -> String {
        self.repository(instance)
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{}", instance.sigstore_url()))
    }

    fn bootstrap(&self, instance: Instance) -> Vec<u8> {
        self.repository(instance)
            .bootstrap
            .clone()
            .unwrap_or_else(|| embedded_tuf_root(instance).to_vec())
    }

    fn now(&self) -> jiff::Timestamp {
        self.now.unwrap_or_else(jiff::Timestamp::now)
    }

    fn instance_dir(&self, instance: Instance) -> PathBuf {
        self.dir.join(match instance {
            Instance::PublicGood => "public-good",
            Instance::GitHub => "github",
        })
    }
}

/// The TUF root.json embedded for `instance` (from sigstore-trust-root).
pub fn embedded_tuf_root(instance: Instance) -> &'static [u8] {
    match instance {
        Instance::PublicGood => sigstore_trust_root::SigstoreInstance::PublicGood.tuf_root(),
        Instance::GitHub => sigstore_trust_root::SigstoreInstance::GitHub.tuf_root(),
    }
}

/// The last complete, verified refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Current {
    /// Its directory (a name inside the instance directory).
    dir: String,
    /// The repository it came from.
    url: String,
    /// When it was verified against fresh metadata.
    refreshed: jiff::Timestamp,
    /// sha256 of the target.
    sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<Current>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<jiff::Timestamp>,
}

/// Why this root and not another: for `doctor`, `trust show` and debug logs.
#[derive(Debug)]
pub struct LoadedRoot {
    /// The root to verify with.
    pub root: TrustRoot,
    /// What happened on the way (a refresh that failed, a cache that did not verify), in words.
    pub notes: Vec<String>,
}

/// The trust root for `instance`: refreshed when due (and allowed), else the newest TUF-verified one in the cache,
/// else the embedded one. Never fails for lack of network; fails only if the embedded root cannot be parsed.
pub fn load(instance: Instance, opts: &TufOptions) -> Result<LoadedRoot, crate::Refusal> {
    let now = opts.now();
    let dir = opts.instance_dir(instance);
    let mut state = read_state(&dir);
    let mut notes = Vec::new();
    if opts.refresh && refresh_due(&state, now) {
        match refresh_with_state(instance, opts, &dir, &mut state, now) {
            Ok(root) => return Ok(LoadedRoot { root, notes }),
            Err(e) => {
                notes.push(format!("refreshing through TUF failed: {e}"));
                state.failed = Some(now);
                if let Err(e) = write_state(&dir, &state) {
                    tracing::debug!("cannot record the failed refresh: {e}");
                }
            }
        }
    }
    // The embedded root is parsed only when it is the one used.
    let embedded = TrustRoot::embedded_id(instance);
    let cached = match &state.current {
        Some(cur) => match cached_root(instance, opts, &dir, cur) {
            Ok(root) => Some(root),
            Err(e) => {
                notes.push(format!("the cached TUF refresh does not verify: {e}"));
                None
            }
        },
        None => None,
    };
    let root = match cached {
        Some(c) if c.id().as_of() >= embedded.as_of() => c,
        Some(c) => {
            notes.push(format!(
                "the embedded root is newer than the cached one ({})",
                c.id().describe(now)
            ));
            TrustRoot::embedded(instance)?
        }
        None => TrustRoot::embedded(instance)?,
    };
    for n in &notes {
        tracing::info!("trust root for {instance}: {n}");
    }
    Ok(LoadedRoot { root, notes })
}

/// Refreshes now (whatever the interval; `thv-sandbox trust refresh`). The previous root stays in use when this
/// fails.
pub fn refresh(instance: Instance, opts: &TufOptions) -> Result<TrustRoot, TufError> {
    let now = opts.now();
    let dir = opts.instance_dir(instance);
    let mut state = read_state(&dir);
    let result = refresh_with_state(instance, opts, &dir, &mut state, now);
    if result.is_err() {
        state.failed = Some(now);
        let _ = write_state(&dir, &state);
    }
    result
}

fn refresh_due(state: &State, now: jiff::Timestamp) -> bool {
    let older_than = |t: jiff::Timestamp, d: Duration| {
        now.as_second().saturating_sub(t.as_second()) >= d.as_secs() as i64
            // A time in the future (a clock set back) does not block refreshing.
            || t > now
    };
    let stale = state
        .current
        .as_ref()
        .is_none_or(|c| older_than(c.refreshed, REFRESH_INTERVAL));
    let may_retry = state
        .failed
        .is_none_or(|f| older_than(f, RETRY_AFTER_FAILURE));
    stale && may_retry
}

fn refresh_with_state(
    instance: Instance,
    opts: &TufOptions,
    dir: &Path,
    state: &mut State,
    now: jiff::Timestamp,
) -> Result<TrustRoot, TufError> {
    let url = opts.url(instance);
    std::fs::create_dir_all(dir).map_err(|error| TufError::CreateDir {
        dir: dir.to_owned(),
        error,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(dir)
        .map_err(|error| TufError::Staging {
            dir: dir.to_owned(),
            error,
        })?;
    // The previous refresh's metadata: version floors (no rollback) and fewer downloads.
    if let Some(cur) = &state.current {
        let _ = copy_tree(&dir.join(&cur.dir), staging.path());
    }
    let bootstrap = opts.bootstrap(instance);
    let bytes = online(&url, &bootstrap, staging.path(), now)?;
    let json = String::from_utf8(bytes).map_err(|_| TufError::NotUtf8)?;
    let sha = sha256(json.as_bytes());
    let root = TrustRoot::parse(
        &json,
        TrustRootId {
            source: format!("tuf:{url}"),
            snapshot: None,
            refreshed: Some(now.to_string()),
            sha256: sha.clone(),
        },
    )
    .map_err(TufError::Root)?;
    let name = format!(
        "tuf-{}-{}",
        now.as_second(),
        sha.trim_start_matches("sha256:").get(..12).unwrap_or("")
    );
    let kept = staging.keep();
    let target = dir.join(&name);
    if target.exists() {
        let _ = std::fs::remove_dir_all(&target);
    }
    std::fs::rename(&kept, &target).map_err(|error| {
        let _ = std::fs::remove_dir_all(&kept);
        TufError::Store {
            target: target.clone(),
            error,
        }
    })?;
    let previous = state.current.replace(Current {
        dir: name.clone(),
        url,
        refreshed: now,
        sha256: sha,
    });
    state.failed = None;
    write_state(dir, state).map_err(|error| TufError::WriteState {
        path: dir.join("state.json"),
        error,
    })?;
    if let Some(prev) = previous.filter(|p| p.dir != name) {
        let _ = std::fs::remove_dir_all(dir.join(prev.dir));
    }
    Ok(root)
}

/// The TUF refresh over the network, on a thread of its own (callers may be inside an async runtime), bounded in
/// time. Verified metadata and the target are written to `store`.
fn online(
    url: &str,
    bootstrap: &[u8],
    store: &Path,
    now: jiff::Timestamp,
) -> Result<Vec<u8>, TufError> {
    let work = async {
        let client = sigstore_tuf::reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .user_agent(concat!("thv-sandbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TufError::HttpClient)?;
        let repo = sigstore_tuf::HttpRepository::new(url)
            .map_err(TufError::Tuf)?
            .with_http_client(client);
        let mut updater = Updater::new(repo, bootstrap)
            .map_err(TufError::Bootstrap)?
            .with_store(FileStore::new(store));
        updater.refresh(now).await.map_err(TufError::Tuf)?;
        updater.get_target(TARGET, now).await.map_err(TufError::Tuf)
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(TufError::Runtime)?;
            let result = rt.block_on(async {
                tokio::time::timeout(TOTAL_TIMEOUT, work)
                    .await
                    .unwrap_or(Err(TufError::Timeout))
            });
            // A name lookup still running on a blocking thread must not hold us up.
            rt.shutdown_background();
            result
        })
        .join()
        .unwrap_or(Err(TufError::Panicked))
    })
    .map_err(|error| TufError::Online {
        url: url.to_owned(),
        error: Box::new(error),
    })
}

/// The cached refresh `cur`, verified again from the bootstrap root without the network, at the time it was
/// refreshed.
fn cached_root(
    instance: Instance,
    opts: &TufOptions,
    dir: &Path,
    cur: &Current,
) -> Result<TrustRoot, TufError> {
    if cur.dir.contains('/') || cur.dir.starts_with('.') {
        return Err(TufError::BadDirName {
            name: cur.dir.clone(),
        });
    }
    let bytes = offline(
        &opts.bootstrap(instance),
        &dir.join(&cur.dir),
        cur.refreshed,
    )?;
    let json = String::from_utf8(bytes).map_err(|_| TufError::NotUtf8)?;
    let sha = sha256(json.as_bytes());
    TrustRoot::parse(
        &json,
        TrustRootId {
            source: format!("tuf:{}", cur.url),
            snapshot: None,
            refreshed: Some(cur.refreshed.to_string()),
            sha256: sha,
        },
    )
    .map_err(TufError::Root)
}

/// A store that is only read (verifying the cache must not rewrite it).
#[derive(Debug, Clone)]
struct ReadOnly(FileStore);

impl MetadataStore for ReadOnly {
    fn load(&self, name: &str) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        self.0.load(name)
    }
    fn store(&self, _: &str, _: &[u8]) -> sigstore_tuf::Result<()> {
        Ok(())
    }
}

/// The full TUF workflow over the files in `dir`, expiry evaluated at `at`; the target's bytes.
fn offline(bootstrap: &[u8], dir: &Path, at: jiff::Timestamp) -> Result<Vec<u8>, TufError> {
    let store = ReadOnly(FileStore::new(dir));
    let mut updater = Updater::new(StoreRepository::new(store.clone()), bootstrap)
        .map_err(TufError::Bootstrap)?
        .with_store(store);
    // Every read from the store is ready at once: the future completes on its first poll.
    ready(async {
        updater.refresh(at).await.map_err(TufError::Tuf)?;
        updater.get_target(TARGET, at).await.map_err(TufError::Tuf)
    })
    .unwrap_or(Err(TufError::CacheReadIncomplete))
}

/// Polls `f` once; `None` if it is not ready (it would wait for I/O).
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

fn read_state(dir: &Path) -> State {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_state(dir: &Path, state: &State) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, state)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join("state.json")).map_err(|e| e.error)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// What `doctor` and `trust show` say about an instance's trust root without touching the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootStatus {
    /// The instance.
    pub instance: Instance,
    /// The root that would be used offline.
    pub trust_root: TrustRootId,
    /// Its age in days.
    pub age_days: Option<i64>,
    /// The warning line, when it is too old.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The repository refreshes go to.
    pub repository: String,
    /// Whether refreshing is on.
    pub refresh: bool,
    /// When a refresh last failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Notes from choosing the root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The offline status of `instance`: which root would be used without refreshing, and how old it is.
pub fn status(instance: Instance, opts: &TufOptions) -> Result<RootStatus, crate::Refusal> {
    let offline = TufOptions {
        refresh: false,
        ..opts.clone()
    };
    let now = opts.now();
    let loaded = load(instance, &offline)?;
    let state = read_state(&opts.instance_dir(instance));
    let id = loaded.root.id().clone();
    Ok(RootStatus {
        instance,
        age_days: id.age_days(now),
        warning: id.age_warning(instance, now),
        trust_root: id,
        repository: opts.url(instance),
        refresh: opts.refresh,
        last_failure: state.failed.map(|f| f.to_string()),
        notes: loaded.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_errors_say_what_failed_where() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (
                TufError::CreateDir {
                    dir: "/c/trust/github".into(),
                    error: io(),
                },
                "cannot create /c/trust/github: permission denied",
            ),
            (TufError::NotUtf8, "trusted_root.json is not UTF-8"),
            (
                TufError::Online {
                    url: "https://tuf.example".into(),
                    error: Box::new(TufError::Timeout),
                },
                "https://tuf.example: no answer within 15s",
            ),
            (
                TufError::BadDirName {
                    name: "../x".into(),
                },
                "bad directory name \"../x\"",
            ),
            (
                TufError::WriteState {
                    path: "/c/state.json".into(),
                    error: io(),
                },
                "cannot write /c/state.json: permission denied",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn refresh_is_due_after_the_interval_and_not_right_after_a_failure() {
        let now = ts("2026-11-27T12:00:00Z");
        assert!(refresh_due(&State::default(), now));
        let fresh = |t: &str| State {
            current: Some(Current {
                dir: "d".into(),
                url: "u".into(),
                refreshed: ts(t),
                sha256: "s".into(),
            }),
            failed: None,
        };
        assert!(!refresh_due(&fresh("2026-11-27T00:00:00Z"), now));
        assert!(refresh_due(&fresh("2026-11-26T11:59:59Z"), now));
        // A refresh time in the future (the clock went back) does not stop refreshing.
        assert!(refresh_due(&fresh("2027-01-01T00:00:00Z"), now));
        let mut failed = fresh("2026-11-01T00:00:00Z");
        failed.failed = Some(ts("2026-11-27T11:30:00Z"));
        assert!(!refresh_due(&failed, now));
        failed.failed = Some(ts("2026-11-27T10:59:00Z"));
        assert!(refresh_due(&failed, now));
    }

    #[test]
    fn the_embedded_tuf_roots_are_the_instances_roots() {
        for instance in [Instance::PublicGood, Instance::GitHub] {
            let v: serde_json::Value = serde_json::from_slice(embedded_tuf_root(instance)).unwrap();
            assert_eq!(v["signed"]["_type"], "root");
        }
    }

    #[test]
    fn without_cache_or_network_the_embedded_root_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = TufOptions::new(dir.path().to_path_buf());
        opts.refresh = false;
        let loaded = load(Instance::GitHub, &opts).unwrap();
        assert_eq!(
            loaded.root.id(),
            TrustRoot::embedded(Instance::GitHub).unwrap().id()
        );
    }

    #[test]
    fn a_garbled_state_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TufOptions {
            refresh: false,
            ..TufOptions::new(dir.path().to_path_buf())
        };
        let inst = opts.instance_dir(Instance::PublicGood);
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::write(inst.join("state.json"), b"{\"current\": {\"dir\": \"tu").unwrap();
        let loaded = load(Instance::PublicGood, &opts).unwrap();
        assert!(loaded.root.id().source.starts_with("embedded:"));
    }
}
