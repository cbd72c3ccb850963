//! A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1, on a free
//! port, with its storage in a temporary directory; stopped by its PID when dropped.
//!
//! Images built with [`crate::ImageBuilder`] are pushed to it over plain HTTP with the distribution API
//! (`POST` + `PUT` of each blob, `PUT` of the manifest), so the bytes in the registry are exactly the bytes of
//! the layout. [`CutProxy`] sits between a client and the registry and cuts one connection after a number of
//! bytes of a chosen response, to test interrupted transfers.
//!
//! Every I/O error names what it concerns.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::image::{BuiltImage, Descriptor};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to answer `GET /v2/` after starting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `docker-registry` is installed.
pub fn registry_available() -> bool {
    Path::new(REGISTRY_BIN).is_file()
}

/// Whether `htpasswd` (apache2-utils) is installed.
pub fn htpasswd_available() -> bool {
    Command::new("htpasswd")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn ctx(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A running `docker-registry`.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    auth: Auth,
}

/// How the registry authenticates, and so how the push helpers authenticate to it.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    Token {
        server: SocketAddr,
        user: String,
        password: String,
    },
}

impl TestRegistry {
    /// Start a registry without authentication.
    pub fn start() -> io::Result<TestRegistry> {
        TestRegistry::start_with(Auth::None, String::new())
    }

    /// Start a registry that wants HTTP basic auth from `user` with `password` (an htpasswd file made with
    /// `htpasswd -B`).
    pub fn start_with_basic_auth(user: &str, password: &str) -> io::Result<TestRegistry> {
        let auth = Auth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        TestRegistry::start_with(auth, String::new())
    }

    /// Start a registry that wants bearer tokens from `server` (the flow of ghcr.io and Docker Hub: a 401 with
    /// a `Bearer realm=…` challenge, a token from the realm, requests with that token).
    pub fn start_with_token_auth(server: &TokenServer) -> io::Result<TestRegistry> {
        let config = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
             rootcertbundle: {}\n",
            server.realm(),
            server.cert_path().display()
        );
        let auth = Auth::Token {
            server: server.addr,
            user: server.user.clone(),
            password: server.password.clone(),
        };
        TestRegistry::start_with(auth, config)
    }

    /// Start a second registry that serves this one's storage (what is pushed to this one) over HTTPS with the
    /// certificate `cert` and its key `key` (PEM files, e.g. from [`TestCa`]); no authentication.
    pub fn start_tls_view(&self, cert: &Path, key: &Path) -> io::Result<TestRegistry> {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        TestRegistry::start_in(
            Auth::None,
            String::new(),
            Some(self.dir.path().join("storage")),
            tls,
        )
    }

    /// An empty registry over HTTPS (`cert`, `key`) that wants bearer tokens from the token server `realm`
    /// (any URL: the test decides where the challenge points); tokens are checked against `root_cert`.
    pub fn start_tls_with_token_realm(
        cert: &Path,
        key: &Path,
        realm: &str,
        root_cert: &Path,
    ) -> io::Result<TestRegistry> {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        let auth = format!(
            "auth:\n  token:\n    realm: \"{realm}\"\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
             rootcertbundle: {}\n",
            root_cert.display()
        );
        TestRegistry::start_in(Auth::None, auth, None, tls)
    }

    fn start_with(auth_kind: Auth, auth: String) -> io::Result<TestRegistry> {
        TestRegistry::start_in(auth_kind, auth, None, String::new())
    }

    /// `http_extra` goes under the config's `http:` section (indented by two spaces); with `shared_storage` the
    /// registry serves that directory instead of a fresh one.
    fn start_in(
        auth_kind: Auth,
        mut auth: String,
        shared_storage: Option<PathBuf>,
        http_extra: String,
    ) -> io::Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("thv-e2e-registry-")
            .tempdir()
            .map_err(ctx("registry temp dir"))?;
        let storage = match shared_storage {
            Some(path) => path,
            None => {
                let storage = dir.path().join("storage");
                std::fs::create_dir(&storage).map_err(ctx(storage.display()))?;
                storage
            }
        };
        if let Auth::Basic { user, password } = &auth_kind {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(ctx("htpasswd (apt-get install apache2-utils)"))?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout).map_err(ctx(path.display()))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: thv-e2e\n    path: {}\n",
                path.display()
            );
        }
        let mut last_error = None;
        // A free port can be taken between finding it and the registry binding it: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let config = dir.path().join("config.yml");
            let text = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}{auth}",
                storage.display()
            );
            std::fs::write(&config, text).map_err(ctx(config.display()))?;
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).map_err(ctx(log_path.display()))?;
            let log2 = log.try_clone().map_err(ctx(log_path.display()))?;
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(ctx(REGISTRY_BIN))?;
            match wait_ready(&mut child, addr, &log_path, !http_extra.is_empty()) {
                Ok(()) => {
                    return Ok(TestRegistry {
                        child,
                        addr,
                        dir,
                        auth: auth_kind,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("registry did not start")))
    }

    /// Stop the registry (SIGKILL by its PID) and wait for it. Dropping does this too.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// `127.0.0.1:PORT`, the registry part of references to images in it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry's log so far (its access log records every request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many `GET`s of this blob the registry has answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = "\"GET /v2/";
        let blob = format!("/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains(&blob))
            .count()
    }

    /// Where the registry stores a blob's bytes (distribution's filesystem driver layout).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn auth_header(&self, repo: &str) -> io::Result<Vec<(&'static str, String)>> {
        Ok(match &self.auth {
            Auth::None => Vec::new(),
            Auth::Basic { user, password } => {
                vec![("Authorization", basic(user, password))]
            }
            Auth::Token {
                server,
                user,
                password,
            } => {
                let path =
                    format!("/token?service={TOKEN_SERVICE}&scope=repository:{repo}:pull,push");
                let response = http_request(
                    *server,
                    "GET",
                    &path,
                    &[("Authorization", basic(user, password))],
                    &[],
                )?;
                response.expect(200, "push token")?;
                let body: serde_json::Value = serde_json::from_slice(&response.body)
                    .map_err(|e| io::Error::other(format!("push token: {e}")))?;
                let token = body["token"]
                    .as_str()
                    .ok_or_else(|| io::Error::other("push token: no token"))?;
                vec![("Authorization", format!("Bearer {token}"))]
            }
        })
    }

    /// One HTTP/1.1 request to the registry.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        http_request(self.addr, method, path, headers, body)
    }

    /// Upload a blob to `repo` (monolithic: `POST` an upload, `PUT` the bytes with their digest).
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> io::Result<String> {
        let digest = crate::sha256_digest(bytes);
        let auth = self.auth_header(repo)?;
        let started = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &auth, &[])?;
        started.expect(202, "start blob upload")?;
        let location = started
            .header("location")
            .ok_or_else(|| io::Error::other("upload response has no Location"))?;
        let path = location
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap_or(location)
            .to_owned();
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut headers = auth.clone();
        headers.push(("Content-Type", "application/octet-stream".to_owned()));
        let done = self.request(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            &headers,
            bytes,
        )?;
        done.expect(201, &format!("upload blob {digest}"))?;
        Ok(digest)
    }

    /// Put a manifest or index under `reference` (a tag or a digest) in `repo`.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> io::Result<String> {
        let mut headers = self.auth_header(repo)?;
        headers.push(("Content-Type", media_type.to_owned()));
        let response = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &headers,
            bytes,
        )?;
        response.expect(201, &format!("put manifest {repo}:{reference}"))?;
        Ok(crate::sha256_digest(bytes))
    }

    /// Push an image written into the layout `layout` (by [`crate::ImageBuilder::write`] or `write_blobs`):
    /// its layers and config, then its manifest as `reference` (a tag, or its digest to push it untagged).
    pub fn push_image(
        &self,
        layout: &Path,
        image: &BuiltImage,
        repo: &str,
        reference: &str,
    ) -> io::Result<()> {
        for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
            self.push_blob(repo, &read_blob(layout, blob)?)?;
        }
        let manifest = read_blob(layout, &image.manifest)?;
        self.push_manifest(repo, reference, &image.manifest.media_type, &manifest)?;
        Ok(())
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The bytes of a blob of a layout.
pub fn read_blob(layout: &Path, descriptor: &Descriptor) -> io::Result<Vec<u8>> {
    let path = descriptor.blob_path(layout);
    std::fs::read(&path).map_err(ctx(path.display()))
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the registry answers `GET /v2/`; a TLS registry answers our plain request with a 400, which is
/// enough to know it listens.
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path, tls: bool) -> io::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().map_err(ctx("registry process"))? {
            return Err(io::Error::other(format!(
                "docker-registry exited ({status}) before answering; log:\n{}",
                log()
            )));
        }
        if let Ok(response) = http_request(addr, "GET", "/v2/", &[], &[]) {
            if response.status == 200 || response.status == 401 || (tls && response.status == 400) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "docker-registry did not answer GET /v2/ within {START_TIMEOUT:?}; log:\n{}",
                log()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// docker-registry binds its port by number: one that no concurrent `bind(…:0)` can take first.
fn free_port() -> io::Result<u16> {
    Ok(crate::port_for_a_server())
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn expect(&self, status: u16, what: &str) -> io::Result<()> {
        if self.status == status {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{what}: HTTP {} (wanted {status}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )))
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let what = format!("{method} http://{addr}{path}");
    let mut stream = TcpStream::connect(addr).map_err(ctx(&what))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(ctx(&what))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(ctx(&what))?;
    stream.write_all(body).map_err(ctx(&what))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(ctx(&what))?;
    parse_response(&raw).ok_or_else(|| io::Error::other(format!("{what}: malformed response")))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A TCP proxy in front of a server that, once, cuts the connection carrying a request that contains
/// `trigger` after forwarding `cut_after` bytes of what the server sent back after that request. Every other
/// connection, and everything after the cut, passes through untouched.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct ProxyShared {
    trigger: Vec<u8>,
    cut_after: u64,
    stall: bool,
    /// Cleared by the one cut (or stall).
    armed: AtomicBool,
    cuts: AtomicUsize,
    stop: AtomicBool,
}

impl CutProxy {
    /// Listen on a free loopback port and forward to `target`; cut the chosen response after `cut_after` bytes.
    pub fn start(target: SocketAddr, trigger: &str, cut_after: u64) -> io::Result<CutProxy> {
        CutProxy::start_with(target, trigger, cut_after, false)
    }

    /// Like [`CutProxy::start`], but instead of cutting, stop forwarding after `cut_after` bytes and hold the
    /// connection open until the proxy is dropped: the client hangs mid-transfer (to be killed).
    pub fn start_stalling(
        target: SocketAddr,
        trigger: &str,
        cut_after: u64,
    ) -> io::Result<CutProxy> {
        CutProxy::start_with(target, trigger, cut_after, true)
    }

    fn start_with(
        target: SocketAddr,
        trigger: &str,
        cut_after: u64,
        stall: bool,
    ) -> io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(ctx("bind proxy"))?;
        let addr = listener.local_addr().map_err(ctx("proxy address"))?;
        let shared = Arc::new(ProxyShared {
            trigger: trigger.as_bytes().to_vec(),
            cut_after,
            stall,
            armed: AtomicBool::new(true),
            cuts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let shared = shared.clone();
                    std::thread::spawn(move || proxy_connection(client, server, &shared));
                }
            })
        };
        Ok(CutProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections were cut or stalled (0 or 1).
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn proxy_connection(client: TcpStream, server: TcpStream, shared: &ProxyShared) {
    let (trigger, cut_after) = (shared.trigger.as_slice(), shared.cut_after);
    let (armed, cuts) = (&shared.armed, &shared.cuts);
    let triggered = Arc::new(AtomicBool::new(false));
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let upstream = {
        let triggered = triggered.clone();
        let trigger = trigger.to_vec();
        std::thread::spawn(move || {
            let mut seen: Vec<u8> = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Mark the connection before the request reaches the server, so the whole response is counted.
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(trigger.len()).any(|w| w == trigger.as_slice()) {
                    triggered.store(true, Ordering::SeqCst);
                }
                let keep = seen.len().saturating_sub(trigger.len());
                seen.drain(..keep);
                if server_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = server_write.shutdown(Shutdown::Write);
        })
    };
    let (mut server_read, mut client_write) = (server, client);
    let mut buf = [0u8; 16 * 1024];
    let mut counted: u64 = 0;
    loop {
        let n = match server_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        let cutting = triggered.load(Ordering::SeqCst) && armed.load(Ordering::SeqCst);
        if cutting {
            let left = cut_after.saturating_sub(counted);
            if (chunk.len() as u64) >= left {
                chunk = &chunk[..left as usize];
                let _ = client_write.write_all(chunk);
                armed.store(false, Ordering::SeqCst);
                cuts.fetch_add(1, Ordering::SeqCst);
                while shared.stall && !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = client_write.shutdown(Shutdown::Both);
                let _ = server_read.shutdown(Shutdown::Both);
                break;
            }
            counted += chunk.len() as u64;
        }
        if client_write.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// The `service` a token-auth registry names in its challenge.
pub const TOKEN_SERVICE: &str = "thv-e2e-registry";
/// The issuer the registry expects in tokens.
const TOKEN_ISSUER: &str = "thv-e2e-token-server";

/// A token server for a registry's `auth.token` (the Docker token protocol): `GET /token?service=…&scope=…`
/// answers `{"token": JWT}`, an RS256 JWT signed with a key whose self-signed certificate the registry trusts
/// (sent in the `x5c` header). Anonymous requests get `pull` on repositories under `public/` and nothing else;
/// requests with the right basic-auth user and password get what they ask for; a wrong password gets 401. With
/// [`TokenServer::start_with_refresh_token`] it also answers the OAuth2 refresh-token `POST`. Keys and certificate are made with the `openssl` command.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    user: String,
    password: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    refresh_grants: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

/// Whether the `openssl` command is installed.
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command, what: &str) -> io::Result<Vec<u8>> {
    let out = command.output().map_err(ctx(what))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// A certificate authority made for a test, and a server certificate it signed for a host name (and 127.0.0.1),
/// all made with the `openssl` command in a temporary directory.
#[derive(Debug)]
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): what clients must trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
}

impl TestCa {
    /// A fresh CA and a server certificate for `host`.
    pub fn new(host: &str) -> io::Result<TestCa> {
        let dir = tempfile::Builder::new()
            .prefix("thv-e2e-ca-")
            .tempdir()
            .map_err(ctx("CA temp dir"))?;
        let p = |name: &str| dir.path().join(name);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2", "-subj", "/CN=thv-e2e test CA"])
                .args(ec)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.pem")),
            "openssl req (CA)",
        )?;
        run(
            Command::new("openssl")
                .args(["req", "-subj", &format!("/CN={host}")])
                .args(ec)
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl req (server)",
        )?;
        let ext = p("server.ext");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{host},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .map_err(ctx(ext.display()))?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .args(["-CAcreateserial", "-extfile"])
                .arg(&ext)
                .arg("-out")
                .arg(p("server.pem")),
            "openssl x509 (sign)",
        )?;
        Ok(TestCa {
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            _dir: dir,
        })
    }
}

/// A name of this machine other than `localhost` that resolves to loopback addresses only (the host name, when
/// `/etc/hosts` maps it to 127.0.0.1, as Debian does): registries under such a name are reached over HTTPS,
/// while `localhost` and IP literals get plain HTTP.
pub fn loopback_hostname() -> Option<String> {
    use std::net::ToSocketAddrs;
    let resolves_to_loopback = |name: &str| {
        (name, 0)
            .to_socket_addrs()
            .map(|a| {
                let a: Vec<SocketAddr> = a.collect();
                !a.is_empty() && a.iter().all(|a| a.ip().is_loopback())
            })
            .unwrap_or(false)
    };
    // The name CI adds to /etc/hosts, else the machine's own name when it resolves to the loopback.
    if resolves_to_loopback("thv-sandbox-tls.test") {
        return Some("thv-sandbox-tls.test".to_owned());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() || name == "localhost" || name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    resolves_to_loopback(&name).then_some(name)
}

impl TokenServer {
    /// Start a token server on a free loopback port that knows one user.
    pub fn start(user: &str, password: &str) -> io::Result<TokenServer> {
        Self::start_inner(user, password, None)
    }

    /// Like [`TokenServer::start`], and it also exchanges `refresh_token` (an identity token, as `docker login`
    /// stores for OAuth2 registries) for an access token with everything `user` may do: the distribution spec's
    /// `POST` of `grant_type=refresh_token&refresh_token=…&service=…&scope=…&client_id=…`. Another refresh token,
    /// or a form without a `client_id`, gets 400 `invalid_grant`.
    pub fn start_with_refresh_token(
        user: &str,
        password: &str,
        refresh_token: &str,
    ) -> io::Result<TokenServer> {
        Self::start_inner(user, password, Some(refresh_token.to_owned()))
    }

    fn start_inner(
        user: &str,
        password: &str,
        refresh_token: Option<String>,
    ) -> io::Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("thv-e2e-tokens-")
            .tempdir()
            .map_err(ctx("token server temp dir"))?;
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=thv-e2e-token-server", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req",
        )?;
        let der = run(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert),
            "openssl x509",
        )?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(ctx("bind token server"))?;
        let addr = listener.local_addr().map_err(ctx("token server address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let refresh_grants = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stop, requests) = (stop.clone(), requests.clone());
            let signer = Signer {
                key,
                x5c,
                user: user.to_owned(),
                password: password.to_owned(),
                refresh_token,
                refresh_grants: refresh_grants.clone(),
            };
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    requests.fetch_add(1, Ordering::SeqCst);
                    let _ = signer.serve(stream);
                }
            })
        };
        Ok(TokenServer {
            addr,
            dir,
            user: user.to_owned(),
            password: password.to_owned(),
            stop,
            requests,
            refresh_grants,
            accept: Some(accept),
        })
    }

    /// How many refresh tokens were exchanged for access tokens.
    pub fn refresh_grants(&self) -> usize {
        self.refresh_grants.load(Ordering::SeqCst)
    }

    /// The realm URL registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// How many token requests were made.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

struct Signer {
    key: PathBuf,
    x5c: String,
    user: String,
    password: String,
    refresh_token: Option<String>,
    refresh_grants: Arc<AtomicUsize>,
}

impl Signer {
    fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 || head.len() > 64 * 1024 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let split = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(head.len());
        let mut body = head[(split + 4).min(head.len())..].to_vec();
        let head = String::from_utf8_lossy(&head[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("GET").to_owned();
        let target = request_line.next().unwrap_or("/");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let authorization = header("authorization");
        let form = |text: &str| -> Vec<(String, String)> {
            text.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect()
        };
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let mut params = form(query);
        if method == "POST" {
            // The OAuth2 refresh-token grant: a form in the body.
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
                .min(64 * 1024);
            while body.len() < length {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            params = form(&String::from_utf8_lossy(&body));
            let field = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let granted = field("grant_type") == Some("refresh_token")
                && self.refresh_token.is_some()
                && field("refresh_token") == self.refresh_token.as_deref()
                && field("client_id").is_some_and(|c| !c.is_empty());
            if !granted {
                return respond(
                    &mut stream,
                    400,
                    br#"{"error":"invalid_grant","error_description":"unknown refresh token"}"#,
                );
            }
            self.refresh_grants.fetch_add(1, Ordering::SeqCst);
        }
        let authenticated = method == "POST"
            || match authorization {
                Some(header) => {
                    if header != basic(&self.user, &self.password) {
                        return respond(
                            &mut stream,
                            401,
                            br#"{"details":"incorrect username or password"}"#,
                        );
                    }
                    true
                }
                None => false,
            };
        let mut access = Vec::new();
        for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
            // repository:NAME:ACTIONS
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || (*a == "pull" && name.starts_with("public/")))
                .collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
        }
        let service = params
            .iter()
            .find(|(k, _)| k == "service")
            .map_or(TOKEN_SERVICE.to_owned(), |(_, v)| v.clone());
        let token = self.sign(&service, authenticated, access)?;
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
        respond(&mut stream, 200, body.to_string().as_bytes())
    }

    fn sign(
        &self,
        service: &str,
        authenticated: bool,
        access: Vec<serde_json::Value>,
    ) -> io::Result<String> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(io::Error::other)?
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": if authenticated { self.user.as_str() } else { "" },
            "aud": service,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": format!("{now}-{}", std::process::id()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ctx("openssl dgst"))?;
        child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("openssl stdin"))?
            .write_all(signing_input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl dgst failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(format!("{signing_input}.{}", b64(&out.stdout)))
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Unauthorized",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 201 Created\r\nLocation: /v2/x\r\nContent-Length: 2\r\n\r\nok";
        let r = parse_response(plain).unwrap();
        assert_eq!(
            (r.status, r.header("location"), r.body.as_slice()),
            (201, Some("/v2/x"), &b"ok"[..])
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, b"abcde");
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("repository%3Apublic%2Fx%3Apull%2Cpush"),
            "repository:public/x:pull,push"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
