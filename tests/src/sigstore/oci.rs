//! Where signed evidence lives for an image, pushed to a real registry as cosign and the Sigstore clients do:
//! cosign's `sha256-HEX.sig` / `.att` tags, Sigstore bundles as OCI 1.1 referrer artifacts (listed by a
//! [`ReferrersShim`] or by the tag-schema index `sha256-HEX`), and GitHub's attestations API ([`GitHubApi`]).
//!
//! docker-registry 2.8 has no referrers API; the shim answers `GET /v2/NAME/referrers/DIGEST` from what the test
//! registered and forwards every other request to the registry, one request per connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::{Content, Signed, BUNDLE_V03};
use crate::registry::TestRegistry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";

fn tag_of(digest: &str) -> String {
    format!(
        "sha256-{}",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    )
}

/// Pushes cosign's signature image for `subject` (tag `sha256-HEX.sig`, or `.att` for attestations): one layer
/// per signature, the blob and annotations from [`Signed::cosign_layer`]. Returns the tag.
pub fn push_cosign(
    registry: &TestRegistry,
    repo: &str,
    subject: &str,
    signatures: &[&Signed],
) -> io::Result<String> {
    let attestation = signatures
        .first()
        .is_some_and(|s| matches!(s.content, Content::Dsse { .. }));
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for s in signatures {
        let (blob, annotations) = s.cosign_layer();
        let digest = registry.push_blob(repo, &blob)?;
        diff_ids.push(digest.clone());
        layers.push(json!({
            "mediaType": if attestation { DSSE_ENVELOPE } else { SIMPLESIGNING },
            "size": blob.len(),
            "digest": digest,
            "annotations": annotations,
        }));
    }
    // cosign's config for a signature image.
    let config = json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {},
    })
    .to_string();
    let config_digest = registry.push_blob(repo, config.as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": layers,
    })
    .to_string();
    let tag = format!(
        "{}{}",
        tag_of(subject),
        if attestation { ".att" } else { ".sig" }
    );
    registry.push_manifest(repo, &tag, OCI_MANIFEST, manifest.as_bytes())?;
    Ok(tag)
}

/// Pushes `bundle` (JSON) as an OCI 1.1 referrer artifact of `subject` (a manifest of `subject_size` bytes), as
/// actions/attest-build-provenance does with push-to-registry. Returns its descriptor as a referrers index lists
/// it.
pub fn push_bundle_referrer(
    registry: &TestRegistry,
    repo: &str,
    subject: &str,
    subject_size: u64,
    bundle: &str,
) -> io::Result<Value> {
    let bundle_digest = registry.push_blob(repo, bundle.as_bytes())?;
    let empty_digest = registry.push_blob(repo, b"{}")?;
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_V03,
        "config": {"mediaType": OCI_EMPTY, "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": BUNDLE_V03, "digest": bundle_digest, "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": super::SLSA_PROVENANCE_V1},
    })
    .to_string();
    let digest = crate::sha256_digest(artifact.as_bytes());
    registry.push_manifest(repo, &digest, OCI_MANIFEST, artifact.as_bytes())?;
    Ok(json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": artifact.len(),
        "artifactType": BUNDLE_V03,
    }))
}

/// The referrers index listing `descriptors`.
pub fn referrers_index(descriptors: &[Value]) -> Value {
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
}

/// Pushes the tag-schema fallback index (tag `sha256-HEX`) listing `descriptors` as referrers of `subject`.
pub fn push_tag_schema_index(
    registry: &TestRegistry,
    repo: &str,
    subject: &str,
    descriptors: &[Value],
) -> io::Result<String> {
    let index = referrers_index(descriptors).to_string();
    registry.push_manifest(repo, &tag_of(subject), OCI_INDEX, index.as_bytes())?;
    Ok(tag_of(subject))
}

/// A request as the small servers here see it.
struct Request {
    method: String,
    path: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("request head too large"));
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut parts = head.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        head: buf,
        body,
    }))
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8], head_only: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let _ = stream.write_all(body);
    }
}

/// A loopback HTTP server running `handle` for each connection (one request each) until dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handle: impl Fn(Request, TcpStream) + Send + Sync + 'static) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = conn else { continue };
                let handle = handle.clone();
                std::thread::spawn(move || {
                    if let Ok(Some(req)) = read_request(&mut stream) {
                        handle(req, stream);
                    }
                });
            }
        });
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Listing = Arc<Mutex<HashMap<(String, String), Vec<Value>>>>;

/// The referrers API in front of a registry that lacks it.
pub struct ReferrersShim {
    server: Server,
    listing: Listing,
    served: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ReferrersShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferrersShim")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl ReferrersShim {
    /// A shim forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<ReferrersShim> {
        let listing: Listing = Arc::default();
        let served = Arc::new(AtomicUsize::new(0));
        let (l, s) = (listing.clone(), served.clone());
        let server = Server::start(move |req, mut stream| {
            let path = req.path.split('?').next().unwrap_or("");
            if let Some((name, digest)) = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split_once("/referrers/"))
            {
                s.fetch_add(1, Ordering::SeqCst);
                let found = l
                    .lock()
                    .unwrap()
                    .get(&(name.to_string(), digest.to_string()))
                    .cloned()
                    .unwrap_or_default();
                let body = referrers_index(&found).to_string();
                respond(
                    &mut stream,
                    "200 OK",
                    OCI_INDEX,
                    body.as_bytes(),
                    req.method == "HEAD",
                );
                return;
            }
            forward(&req, &mut stream, upstream);
        })?;
        Ok(ReferrersShim {
            server,
            listing,
            served,
        })
    }

    /// `127.0.0.1:PORT`: the registry part of references that go through the shim.
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    /// Lists `descriptor` as a referrer of `subject` in `repo`.
    pub fn add(&self, repo: &str, subject: &str, descriptor: Value) {
        self.listing
            .lock()
            .unwrap()
            .entry((repo.to_string(), subject.to_string()))
            .or_default()
            .push(descriptor);
    }

    /// How many referrers requests were answered.
    pub fn referrers_served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Forwards one request (with `Connection: close`) and copies the answer back until the upstream closes.
fn forward(req: &Request, client: &mut TcpStream, upstream: SocketAddr) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        respond(
            client,
            "502 Bad Gateway",
            "text/plain",
            b"upstream unreachable",
            false,
        );
        return;
    };
    let head = String::from_utf8_lossy(&req.head);
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).is_err() || up.write_all(&req.body).is_err() {
        return;
    }
    let _ = io::copy(&mut up, client);
    let _ = client.shutdown(Shutdown::Both);
}

/// GitHub's attestations API on loopback: `GET /repos/OWNER/REPO/attestations/DIGEST` answers the bundles
/// registered for it (inline `bundle` shape), 404 otherwise.
pub struct GitHubApi {
    server: Server,
    bundles: Listing,
    requests: Arc<AtomicUsize>,
}

impl std::fmt::Debug for GitHubApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApi")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl GitHubApi {
    /// A fresh API with no attestations.
    pub fn start() -> io::Result<GitHubApi> {
        let bundles: Listing = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (bundles.clone(), requests.clone());
        let server = Server::start(move |req, mut stream| {
            r.fetch_add(1, Ordering::SeqCst);
            let path = req.path.split('?').next().unwrap_or("");
            let found = path
                .strip_prefix("/repos/")
                .and_then(|p| p.split_once("/attestations/"))
                .and_then(|(repo, digest)| {
                    b.lock()
                        .unwrap()
                        .get(&(repo.to_string(), digest.to_string()))
                        .cloned()
                });
            match found {
                Some(list) if req.method == "GET" => {
                    let atts: Vec<Value> = list
                        .into_iter()
                        .map(|bundle| json!({"bundle": bundle, "repository_id": 1}))
                        .collect();
                    let body = json!({"attestations": atts}).to_string();
                    respond(
                        &mut stream,
                        "200 OK",
                        "application/json",
                        body.as_bytes(),
                        false,
                    );
                }
                _ => respond(
                    &mut stream,
                    "404 Not Found",
                    "application/json",
                    br#"{"message":"Not Found"}"#,
                    false,
                ),
            }
        })?;
        Ok(GitHubApi {
            server,
            bundles,
            requests,
        })
    }

    /// The base URL (`THV_SANDBOX_GITHUB_API`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Serves `bundle` (JSON) as an attestation of `digest` in `repository` (`owner/repo`).
    pub fn add(&self, repository: &str, digest: &str, bundle: &str) {
        let v: Value = serde_json::from_str(bundle).expect("bundle JSON");
        self.bundles
            .lock()
            .unwrap()
            .entry((repository.to_string(), digest.to_string()))
            .or_default()
            .push(v);
    }

    /// How many requests it answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
