//! Where the registry comes from: the embedded snapshot (default), a file, or a URL.
//!
//! A URL is fetched on every load (https; plain http only from loopback; redirects held to the same rule; at most
//! [`MAX_REGISTRY_SIZE`] bytes) and, once it parses, cached under `<cache>/registries/` (temp file + rename). When
//! the fetch fails, the cached copy is used and [`Loaded::notice`] says so.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{Catalog, CatalogError};

/// The embedded default: ToolHive's last registry in the legacy format (see vendor-notes.md).
pub const EMBEDDED: &[u8] = include_bytes!("../../registry/toolhive-registry.json");

/// A registry is read at most this far (ToolHive's full upstream catalog is ~3.5 MB).
pub const MAX_REGISTRY_SIZE: usize = 32 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a registry URL could not be fetched (or what it served could not be used); the cached copy, if there is
/// one, is used instead.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No async runtime for the request.
    #[error("{0}")]
    Runtime(std::io::Error),
    /// A proxy from the environment is not a usable URL.
    #[error("{0}")]
    Proxy(reqwest::Error),
    /// The HTTP client cannot be built.
    #[error("{0}")]
    Client(reqwest::Error),
    /// The request or the read of the answer failed (connection, TLS, redirect, timeout).
    #[error("{}", crate::chain::one_line(.0))]
    Request(reqwest::Error),
    /// The server answered with an error status.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The answer is larger than [`MAX_REGISTRY_SIZE`].
    #[error("larger than {} MiB", MAX_REGISTRY_SIZE >> 20)]
    TooLarge,
    /// The answer is not a registry.
    #[error("{0}")]
    Invalid(Box<CatalogError>),
}

/// Why a fetched registry could not be cached (it is used all the same, but not available offline).
#[derive(Debug, thiserror::Error)]
enum StoreError {
    /// The cache path has no directory.
    #[error("no parent directory")]
    NoParent,
    /// The cache directory cannot be made private.
    #[error("{0}")]
    Dir(crate::dirs::DirsError),
    /// Writing the temporary file failed.
    #[error("{0}")]
    Write(std::io::Error),
    /// Renaming it into place failed.
    #[error("{}", .0.error)]
    Persist(tempfile::PersistError),
}

/// Where the registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// The snapshot compiled into thv-sandbox.
    Embedded,
    /// A file.
    File(PathBuf),
    /// A URL (`https://…`, or `http://` on loopback).
    Url(String),
}

impl RegistrySource {
    /// `embedded`, a URL (`http://`/`https://`), or a file path.
    pub fn parse(s: &str) -> Result<RegistrySource, CatalogError> {
        if s == "embedded" {
            return Ok(RegistrySource::Embedded);
        }
        if s.contains("://") {
            check_url(s)?;
            return Ok(RegistrySource::Url(s.to_owned()));
        }
        Ok(RegistrySource::File(PathBuf::from(s)))
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            RegistrySource::Embedded => "embedded (ToolHive registry snapshot)".into(),
            RegistrySource::File(p) => p.display().to_string(),
            RegistrySource::Url(u) => u.clone(),
        }
    }
}

/// https anywhere; http only to loopback.
fn check_url(url: &str) -> Result<(), CatalogError> {
    let bad = |reason: &str| CatalogError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(bad(
            "plain http is only allowed to loopback addresses; use https",
        )),
        other => Err(bad(&format!(
            "the scheme `{other}` is not supported (https only)"
        ))),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A loaded registry and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The registry.
    pub catalog: Catalog,
    /// Where it came from, for messages.
    pub origin: String,
    /// Something the user should know (a cached copy used because the fetch failed), for stderr.
    pub notice: Option<String>,
}

/// Loads the registry from `source`; `cache_dir` holds cached copies of URL registries.
pub fn load(source: &RegistrySource, cache_dir: &Path) -> Result<Loaded, CatalogError> {
    match source {
        RegistrySource::Embedded => Ok(Loaded {
            catalog: Catalog::parse(EMBEDDED, "embedded")?,
            origin: source.describe(),
            notice: None,
        }),
        RegistrySource::File(path) => {
            let bytes = read_bounded(path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            Ok(Loaded {
                catalog: Catalog::parse(&bytes, &path.display().to_string())?,
                origin: source.describe(),
                notice: None,
            })
        }
        RegistrySource::Url(url) => load_url(url, cache_dir),
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_REGISTRY_SIZE as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_REGISTRY_SIZE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_REGISTRY_SIZE >> 20
        )));
    }
    Ok(buf)
}

/// `<cache>/registries/<sha256 of the URL>.json`.
pub fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let hash = hex::encode(Sha256::digest(url.as_bytes()));
    cache_dir
        .join("registries")
        .join(format!("{}.json", &hash[..32]))
}

fn load_url(url: &str, cache_dir: &Path) -> Result<Loaded, CatalogError> {
    check_url(url)?;
    let cached = cache_path(cache_dir, url);
    let fetched = fetch(url).and_then(|bytes| {
        Catalog::parse(&bytes, url)
            .map(|c| (c, bytes))
            .map_err(|e| FetchError::Invalid(Box::new(e)))
    });
    match fetched {
        Ok((catalog, bytes)) => {
            let notice = store(&cached, &bytes).err().map(|e| {
                format!(
                    "could not cache the MCP server registry {url} at {}: {e} (it will not be available offline)",
                    cached.display()
                )
            });
            Ok(Loaded {
                catalog,
                origin: url.to_owned(),
                notice,
            })
        }
        Err(detail) => {
            let Ok(bytes) = read_bounded(&cached) else {
                return Err(CatalogError::Fetch {
                    url: url.to_owned(),
                    detail,
                });
            };
            let catalog = Catalog::parse(&bytes, &cached.display().to_string())?;
            let age = std::fs::metadata(&cached)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map_or_else(String::new, |d| format!(", fetched {} ago", human_age(d)));
            Ok(Loaded {
                catalog,
                origin: format!("{url} (cached copy)"),
                notice: Some(format!(
                    "cannot fetch the MCP server registry {url} ({detail}); using the cached copy{age}"
                )),
            })
        }
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Writes `bytes` to `path` atomically (a temp file in the same directory, then rename).
fn store(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().ok_or(StoreError::NoParent)?;
    crate::dirs::private_dir(dir).map_err(StoreError::Dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".registry-")
        .tempfile_in(dir)
        .map_err(StoreError::Write)?;
    tmp.write_all(bytes).map_err(StoreError::Write)?;
    tmp.as_file().sync_all().map_err(StoreError::Write)?;
    tmp.persist(path).map_err(StoreError::Persist)?;
    Ok(())
}

/// GETs `url`, bounded.
fn fetch(url: &str) -> Result<Vec<u8>, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    runtime.block_on(fetch_async(url))
}

async fn fetch_async(url: &str) -> Result<Vec<u8>, FetchError> {
    let proxies = crate::distribution::ProxySettings::from_env();
    // Redirects are followed only where a URL given directly would be allowed.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if check_url(attempt.url().as_str()).is_err() {
            attempt.error("redirected to a plain-http URL that is not on loopback")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("thv-sandbox/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .redirect(policy);
    let no_proxy = proxies
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    for (proxy_url, https) in [(&proxies.https, true), (&proxies.http, false)] {
        let Some(proxy_url) = proxy_url else { continue };
        let proxy = if https {
            reqwest::Proxy::https(proxy_url.as_str())
        } else {
            reqwest::Proxy::http(proxy_url.as_str())
        }
        .map_err(FetchError::Proxy)?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    let client = builder.build().map_err(FetchError::Client)?;
    let mut resp = client.get(url).send().await.map_err(FetchError::Request)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(FetchError::Request)? {
        if body.len() + chunk.len() > MAX_REGISTRY_SIZE {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_and_store_errors_read_as_before() {
        assert_eq!(
            FetchError::Status(reqwest::StatusCode::NOT_FOUND).to_string(),
            "HTTP 404 Not Found"
        );
        assert_eq!(FetchError::TooLarge.to_string(), "larger than 32 MiB");
        let invalid = FetchError::Invalid(Box::new(CatalogError::Duplicate {
            origin: "u".into(),
            name: "n".into(),
        }));
        assert_eq!(
            invalid.to_string(),
            "MCP server registry u: `n` is listed more than once"
        );
        let fetch = CatalogError::Fetch {
            url: "https://r.example/r.json".into(),
            detail: FetchError::TooLarge,
        };
        assert_eq!(
            fetch.to_string(),
            "cannot fetch the MCP server registry https://r.example/r.json (larger than 32 MiB), and no copy of it is cached"
        );
        assert_eq!(StoreError::NoParent.to_string(), "no parent directory");
    }

    #[test]
    fn sources_and_url_rules() {
        assert_eq!(
            RegistrySource::parse("embedded").unwrap(),
            RegistrySource::Embedded
        );
        assert_eq!(
            RegistrySource::parse("./r.json").unwrap(),
            RegistrySource::File("./r.json".into())
        );
        for ok in [
            "https://example.com/r.json",
            "http://127.0.0.1:8080/r.json",
            "http://localhost/r.json",
            "http://[::1]:9/r",
        ] {
            assert!(RegistrySource::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/r.json",
            "http://10.0.0.1/r.json",
            "ftp://example.com/r.json",
            "file:///etc/passwd",
        ] {
            let e = RegistrySource::parse(bad).unwrap_err();
            assert!(matches!(e, CatalogError::BadUrl { .. }), "{bad}: {e}");
        }
    }

    /// A one-shot HTTP server on loopback answering every request with `body` (or closing at once).
    fn serve(body: Option<&'static [u8]>) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/registry.json", listener.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            if let Some(body) = body {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            }
        });
        (url, h)
    }

    #[test]
    fn a_url_registry_is_cached_and_used_offline_when_the_fetch_fails() {
        let cache = tempfile::tempdir().unwrap();
        let (url, h) = serve(Some(EMBEDDED));
        let loaded = load(&RegistrySource::Url(url.clone()), cache.path()).unwrap();
        h.join().unwrap();
        assert!(loaded.notice.is_none(), "{:?}", loaded.notice);
        assert!(loaded.catalog.find("time").unwrap().is_some());
        let cached = cache_path(cache.path(), &url);
        assert_eq!(std::fs::read(&cached).unwrap(), EMBEDDED);
        // No stray temp files beside it.
        let names: Vec<_> = std::fs::read_dir(cached.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // The server now closes without answering: the cached copy is used, and said so.
        let (url2, h) = serve(None);
        std::fs::copy(&cached, cache_path(cache.path(), &url2)).unwrap();
        let loaded = load(&RegistrySource::Url(url2.clone()), cache.path()).unwrap();
        h.join().unwrap();
        let notice = loaded.notice.expect("a notice");
        assert!(
            notice.starts_with(&format!("cannot fetch the MCP server registry {url2}"))
                && notice.contains("cached copy"),
            "{notice}"
        );
        assert!(loaded.catalog.find("time").unwrap().is_some());
    }

    #[test]
    fn a_url_registry_that_was_never_fetched_is_an_error() {
        let cache = tempfile::tempdir().unwrap();
        // Bind then drop: a loopback port with nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/r.json");
        let e = load(&RegistrySource::Url(url.clone()), cache.path()).unwrap_err();
        assert!(matches!(e, CatalogError::Fetch { .. }), "{e}");
        assert!(e.to_string().contains("no copy of it is cached"), "{e}");
    }

    #[test]
    fn an_invalid_fetched_registry_is_not_cached() {
        let cache = tempfile::tempdir().unwrap();
        let (url, h) = serve(Some(b"{\"servers\": 1}"));
        let e = load(&RegistrySource::Url(url.clone()), cache.path()).unwrap_err();
        h.join().unwrap();
        assert!(e.to_string().contains("is not an object"), "{e}");
        assert!(!cache_path(cache.path(), &url).exists());
    }
}
