//! A real TUF repository made by the tests: signed root, targets, snapshot and timestamp metadata (ECDSA P-256,
//! canonical JSON as TUF signs it, consistent snapshots like Sigstore's), with `trusted_root.json` as a target,
//! served over HTTP on loopback by [`StaticServer`].

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use sigstore_crypto::KeyPair;

/// The target name.
pub const TARGET: &str = "trusted_root.json";

/// A TUF repository on disk with one key for every role; [`TufRepo::publish`] writes a new version.
pub struct TufRepo {
    /// The directory served (metadata at the top, targets under `targets/`).
    pub dir: tempfile::TempDir,
    key: KeyPair,
    keyid: String,
    version: u64,
    root_bytes: Vec<u8>,
}

impl TufRepo {
    /// A new repository (root version 1, nothing published yet).
    pub fn new() -> TufRepo {
        let key = KeyPair::generate_ecdsa_p256().expect("key");
        let pem = key.public_key_der().expect("der").to_pem();
        let key_json = json!({
            "keytype": "ecdsa",
            "scheme": "ecdsa-sha2-nistp256",
            "keyval": { "public": pem },
        });
        let keyid = serde_json::from_value::<sigstore_tuf::Key>(key_json.clone())
            .expect("key")
            .key_id()
            .expect("key id");
        let role = json!({ "keyids": [keyid.clone()], "threshold": 1 });
        let root = json!({
            "_type": "root",
            "spec_version": "1.0.0",
            "version": 1,
            "expires": "2999-01-01T00:00:00Z",
            "consistent_snapshot": true,
            "keys": { keyid.clone(): key_json },
            "roles": { "root": role, "timestamp": role, "snapshot": role, "targets": role },
        });
        let dir = tempfile::Builder::new()
            .prefix("thv-e2e-tuf-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("targets")).expect("mkdir");
        let mut repo = TufRepo {
            dir,
            key,
            keyid,
            version: 0,
            root_bytes: Vec::new(),
        };
        repo.root_bytes = repo.envelope(&root);
        std::fs::write(repo.dir.path().join("1.root.json"), &repo.root_bytes).expect("write");
        repo
    }

    /// The root.json clients bootstrap from.
    pub fn root_json(&self) -> &[u8] {
        &self.root_bytes
    }

    /// Writes the bootstrap root to `path` (for `THV_SANDBOX_TUF_BOOTSTRAP_*`).
    pub fn write_root(&self, path: &Path) {
        std::fs::write(path, &self.root_bytes).expect("write root");
    }

    fn envelope(&self, signed: &Value) -> Vec<u8> {
        let canonical =
            sigstore_tuf::canonical_json::to_canonical_bytes(signed).expect("canonical");
        let sig = self.key.sign(&canonical).expect("sign");
        serde_json::to_vec(&json!({
            "signed": signed,
            "signatures": [{ "keyid": self.keyid, "sig": hex::encode(sig.as_bytes()) }],
        }))
        .expect("json")
    }

    /// Publishes `content` as the target in a new version of targets, snapshot and timestamp; the timestamp
    /// expires at `timestamp_expires` (RFC 3339).
    pub fn publish(&mut self, content: &[u8], timestamp_expires: &str) {
        self.version += 1;
        let v = self.version;
        let hash = sha256_hex(content);
        let targets = json!({
            "_type": "targets",
            "spec_version": "1.0.0",
            "version": v,
            "expires": "2999-01-01T00:00:00Z",
            "targets": { TARGET: { "length": content.len(), "hashes": { "sha256": hash } } },
        });
        let targets_bytes = self.envelope(&targets);
        let snapshot = json!({
            "_type": "snapshot",
            "spec_version": "1.0.0",
            "version": v,
            "expires": "2999-01-01T00:00:00Z",
            "meta": { "targets.json": meta(&targets_bytes, v) },
        });
        let snapshot_bytes = self.envelope(&snapshot);
        let timestamp = json!({
            "_type": "timestamp",
            "spec_version": "1.0.0",
            "version": v,
            "expires": timestamp_expires,
            "meta": { "snapshot.json": meta(&snapshot_bytes, v) },
        });
        let d = self.dir.path();
        std::fs::write(d.join(format!("{v}.targets.json")), &targets_bytes).expect("write");
        std::fs::write(d.join(format!("{v}.snapshot.json")), &snapshot_bytes).expect("write");
        std::fs::write(d.join("timestamp.json"), self.envelope(&timestamp)).expect("write");
        std::fs::write(d.join("targets").join(format!("{hash}.{TARGET}")), content).expect("write");
    }

    /// Replaces the served bytes of the current target without re-signing (an attacker at the mirror).
    pub fn tamper_target(&self, content: &[u8]) {
        let targets = self.dir.path().join("targets");
        for entry in std::fs::read_dir(&targets).expect("read targets") {
            let path = entry.expect("entry").path();
            std::fs::write(path, content).expect("write");
        }
    }

    /// Corrupts the signature of the current timestamp metadata.
    pub fn break_timestamp_signature(&self) {
        let path = self.dir.path().join("timestamp.json");
        let mut doc: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let sig = doc["signatures"][0]["sig"]
            .as_str()
            .expect("sig")
            .to_string();
        let flipped = if sig.ends_with('0') { "1" } else { "0" };
        doc["signatures"][0]["sig"] = Value::String(format!("{}{flipped}", &sig[..sig.len() - 1]));
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
    }
}

impl std::fmt::Debug for TufRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TufRepo")
            .field("dir", &self.dir.path())
            .field("version", &self.version)
            .finish()
    }
}

impl Default for TufRepo {
    fn default() -> Self {
        TufRepo::new()
    }
}

fn meta(bytes: &[u8], version: u64) -> Value {
    json!({
        "version": version,
        "length": bytes.len(),
        "hashes": { "sha256": sha256_hex(bytes) },
    })
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// Serves the files of a directory over HTTP/1.1 on loopback (GET only; 404 for anything absent); stopped on drop.
#[derive(Debug)]
pub struct StaticServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    /// Serves `dir`.
    pub fn start(dir: &Path) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let root: PathBuf = dir.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let _ = serve(stream, &root);
                }
            }
        });
        StaticServer {
            url: format!("http://{addr}"),
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops serving; the port is closed when this returns.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            let _ = t.join();
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let rel = path.trim_start_matches('/');
    let body = if rel.split('/').any(|c| c == ".." || c.is_empty()) {
        None
    } else {
        std::fs::read(root.join(rel)).ok()
    };
    let mut out = stream;
    match body {
        Some(b) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            out.write_all(&b)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}
