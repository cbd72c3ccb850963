//! A package index on loopback, in front of real package files: it speaks enough of npm's registry (the
//! packument and the version document with `dist.integrity` / `dist.attestations`, the tarball, the attestations API
//! `/-/npm/v1/attestations/NAME@VERSION`) and of PyPI (the PEP 691 JSON simple index with PEP 740 `provenance`
//! links, the integrity API `/integrity/PROJECT/VERSION/FILENAME/provenance`, the file) for provenance to be
//! fetched and checked by the same code that asks the public indexes. A real HTTP/1.1 server on a thread; every
//! request path is logged.
//!
//! Attestations are made by the tests' own Sigstore instance ([`crate::sigstore`]) in the formats the indexes
//! serve: npm's answer holds Sigstore bundles (v0.3 as made, or re-encoded as v0.2); PyPI's is a PEP 740
//! provenance object ([`pep740_provenance`]).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::sigstore::{Identity, Signed};

/// npm's SLSA provenance predicate.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// PyPI's PEP 740 publish predicate.
pub const PYPI_PUBLISH_V1: &str = "https://docs.pypi.org/attestations/publish/v1";

type Routes = Arc<Mutex<HashMap<String, (u16, String, Vec<u8>)>>>;

/// The running index.
#[derive(Debug)]
pub struct PackageIndex {
    addr: SocketAddr,
    routes: Routes,
    log: Arc<Mutex<Vec<String>>>,
}

impl PackageIndex {
    /// Starts on `127.0.0.1` at a free port (the thread lives as long as the test process).
    pub fn start() -> io::Result<PackageIndex> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let routes: Routes = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &r, &l);
                });
            }
        });
        Ok(PackageIndex { addr, routes, log })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The npm registry base URL.
    pub fn npm_registry(&self) -> String {
        self.url()
    }

    /// The PyPI simple index URL.
    pub fn pypi_index(&self) -> String {
        format!("{}/simple", self.url())
    }

    /// Serves `body` at `path` with `status`.
    pub fn put(&self, path: &str, status: u16, content_type: &str, body: Vec<u8>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, content_type.to_string(), body));
    }

    /// Removes what `path` serves (it answers 404 then).
    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    /// Every request path, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The npm attestations API path of `name@version`, a scope's `/` escaped as the npm client does.
    pub fn npm_attestations_path(name: &str, version: &str) -> String {
        format!(
            "/-/npm/v1/attestations/{}@{version}",
            name.replace('/', "%2f")
        )
    }

    /// Publishes an npm package version: the tarball, its packument (with `repository`, `dist.integrity`, and
    /// `dist.attestations` when `attestations` is given) and the attestations API answer.
    pub fn publish_npm(
        &self,
        name: &str,
        version: &str,
        tarball: &[u8],
        repository: Option<&str>,
        attestations: Option<&str>,
    ) {
        self.publish_npm_with_deps(name, version, tarball, repository, attestations, &[]);
    }

    /// [`PackageIndex::publish_npm`] of a version that depends on `dependencies` (`NAME`, `RANGE`), as its
    /// packument says (npm's resolver reads them there).
    pub fn publish_npm_with_deps(
        &self,
        name: &str,
        version: &str,
        tarball: &[u8],
        repository: Option<&str>,
        attestations: Option<&str>,
        dependencies: &[(&str, &str)],
    ) {
        let base = name.rsplit('/').next().unwrap_or(name);
        let file = format!("/{name}/-/{base}-{version}.tgz");
        self.put(&file, 200, "application/octet-stream", tarball.to_vec());
        let att_path = Self::npm_attestations_path(name, version);
        let mut dist = json!({
            "tarball": format!("{}{file}", self.url()),
            "integrity": sri512(tarball),
            "shasum": hex::encode(sha1ish(tarball)),
        });
        match attestations {
            Some(a) => {
                dist["attestations"] = json!({
                    "url": format!("{}{att_path}", self.url()),
                    "provenance": {"predicateType": SLSA_PROVENANCE_V1},
                });
                self.put(&att_path, 200, "application/json", a.as_bytes().to_vec());
            }
            None => self.remove(&att_path),
        }
        let mut doc = json!({"name": name, "version": version, "dist": dist});
        if !dependencies.is_empty() {
            doc["dependencies"] = dependencies
                .iter()
                .map(|(n, r)| (n.to_string(), json!(r)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(r) = repository {
            doc["repository"] = json!({"type": "git", "url": format!("git+{r}.git")});
        }
        self.put(
            &format!("/{}/{version}", name.replace('/', "%2f")),
            200,
            "application/json",
            doc.to_string().into_bytes(),
        );
        // The packument npm's resolver asks for (this one version, `latest`).
        let packument = json!({
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {version: doc},
        });
        self.put(
            &format!("/{}", name.replace('/', "%2f")),
            200,
            "application/json",
            packument.to_string().into_bytes(),
        );
    }

    /// Publishes a PyPI file: the file, the PEP 691 project page (with a `provenance` link when `link` and
    /// `provenance` are given) and the integrity API answer (when `provenance` is given).
    pub fn publish_pypi(
        &self,
        project: &str,
        version: &str,
        filename: &str,
        bytes: &[u8],
        provenance: Option<&str>,
        link: bool,
    ) {
        let file = format!("/files/{filename}");
        self.put(&file, 200, "application/octet-stream", bytes.to_vec());
        let integrity = format!("/integrity/{project}/{version}/{filename}/provenance");
        match provenance {
            Some(p) => self.put(
                &integrity,
                200,
                "application/vnd.pypi.integrity.v1+json",
                p.as_bytes().to_vec(),
            ),
            None => self.remove(&integrity),
        }
        let mut entry = json!({
            "filename": filename,
            "url": format!("{}{file}", self.url()),
            "hashes": {"sha256": hex::encode(sha2::Sha256::digest(bytes))},
        });
        let linked = format!("/links/{filename}.provenance");
        match (link, provenance) {
            (true, Some(p)) => {
                // Served at a path of its own, so that a test can tell the link was followed.
                self.put(&linked, 200, "application/json", p.as_bytes().to_vec());
                entry["provenance"] = json!(format!("{}{linked}", self.url()));
            }
            _ => self.remove(&linked),
        }
        let page = json!({
            "meta": {"api-version": "1.1"},
            "name": project,
            "versions": [version],
            "files": [entry],
        });
        self.put(
            &format!("/simple/{project}/"),
            200,
            "application/vnd.pypi.simple.v1+json",
            page.to_string().into_bytes(),
        );
    }
}

/// An npm package tarball (`package/…`, as `npm pack` makes it) whose `bin` (named as the package) is
/// `index_js`, depending on `deps` (`NAME`, `RANGE`).
pub fn npm_tarball(name: &str, version: &str, index_js: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    let deps: serde_json::Map<String, Value> = deps
        .iter()
        .map(|(n, r)| (n.to_string(), json!(r)))
        .collect();
    let manifest = json!({
        "name": name, "version": version, "bin": {name: "index.js"}, "license": "MIT",
        "dependencies": deps,
    })
    .to_string();
    let files: [(&str, &[u8], u32); 2] = [
        ("package/package.json", manifest.as_bytes(), 0o644),
        ("package/index.js", index_js.as_bytes(), 0o755),
    ];
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, body, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_mtime(499_162_500);
        h.set_cksum();
        tar.append_data(&mut h, path, body).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The `index.js` of a minimal MCP server over stdio (newline-delimited JSON-RPC) with one tool, `echo`, that
/// answers `echo: TEXT`.
pub const ECHO_MCP_SERVER_JS: &str = r#"#!/usr/bin/env node
const rl = require('readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + '\n');
rl.on('line', (line) => {
  let m;
  try { m = JSON.parse(line); } catch (e) { return; }
  if (m.id === undefined || typeof m.method !== 'string') return;
  const ok = (result) => send({ jsonrpc: '2.0', id: m.id, result });
  switch (m.method) {
    case 'initialize':
      return ok({ protocolVersion: m.params.protocolVersion, capabilities: { tools: {} },
                  serverInfo: { name: 'thv-echo', version: '1.0.0' } });
    case 'ping':
      return ok({});
    case 'tools/list':
      return ok({ tools: [{ name: 'echo', description: 'Answers its text',
                            inputSchema: { type: 'object', properties: { text: { type: 'string' } },
                                           required: ['text'] } }] });
    case 'tools/call':
      return ok({ content: [{ type: 'text', text: 'echo: ' + m.params.arguments.text }] });
    default:
      return send({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'no such method' } });
  }
});
rl.on('close', () => process.exit(0));
"#;

/// npm's `integrity` of `bytes`: `sha512-BASE64`.
pub fn sri512(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

// The legacy `shasum` is informative only; a sha256 prefix keeps this free of another hash crate.
fn sha1ish(bytes: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(bytes)[..20].to_vec()
}

/// The in-toto statement npm's provenance is: SLSA provenance v1 about `pkg:npm/NAME@VERSION` with the tarball's
/// sha512, built by `identity`'s workflow.
pub fn npm_provenance_statement(
    name: &str,
    version: &str,
    tarball: &[u8],
    identity: &Identity,
) -> Vec<u8> {
    let purl_name = name
        .strip_prefix('@')
        .map_or_else(|| name.to_string(), |n| format!("%40{n}"));
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": format!("pkg:npm/{purl_name}@{version}"),
            "digest": {"sha512": hex::encode(sha2::Sha512::digest(tarball))},
        }],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
                "externalParameters": {"workflow": {
                    "ref": identity.git_ref,
                    "repository": identity.repository_uri(),
                    "path": identity.workflow_path,
                }},
            },
            "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}},
        },
    })
    .to_string()
    .into_bytes()
}

/// The in-toto statement of a PEP 740 publish attestation: the distribution file name and its sha256.
pub fn pypi_publish_statement(filename: &str, bytes: &[u8]) -> Vec<u8> {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": hex::encode(sha2::Sha256::digest(bytes))}}],
        "predicateType": PYPI_PUBLISH_V1,
        "predicate": null,
    })
    .to_string()
    .into_bytes()
}

/// npm's attestations answer holding `signed` as a bundle v0.3, or (`v02`) re-encoded as the v0.2 bundle npm
/// served before (`x509CertificateChain`, media type `application/vnd.dev.sigstore.bundle+json;version=0.2`).
pub fn npm_attestations(signed: &[&Signed], v02: bool) -> String {
    let list: Vec<Value> = signed
        .iter()
        .map(|s| {
            let mut b = s.bundle_value();
            if v02 {
                b["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.2");
                let cert = b["verificationMaterial"]["certificate"].take();
                let vm = b["verificationMaterial"].as_object_mut().unwrap();
                vm.remove("certificate");
                vm.insert(
                    "x509CertificateChain".into(),
                    json!({"certificates": [cert]}),
                );
            }
            json!({"predicateType": SLSA_PROVENANCE_V1, "bundle": b})
        })
        .collect();
    json!({"attestations": list}).to_string()
}

/// A PEP 740 provenance object: one attestation bundle whose Trusted Publisher is `repository` (`owner/repo`)
/// with `workflow` (a file name), holding each of `signed` re-encoded as a PEP 740 attestation.
pub fn pep740_provenance(signed: &[&Signed], repository: &str, workflow: &str) -> String {
    let attestations: Vec<Value> = signed.iter().map(|s| pep740_attestation(s)).collect();
    json!({
        "version": 1,
        "attestation_bundles": [{
            "publisher": {"kind": "GitHub", "repository": repository, "workflow": workflow, "environment": null},
            "attestations": attestations,
        }],
    })
    .to_string()
}

/// One PEP 740 attestation: the DER certificate, the transparency-log entries and the DSSE statement and
/// signature, as PyPI stores them (the inverse of the bundle a verifier rebuilds).
pub fn pep740_attestation(signed: &Signed) -> Value {
    let b = signed.bundle_value();
    let env = &b["dsseEnvelope"];
    json!({
        "version": 1,
        "verification_material": {
            "certificate": b["verificationMaterial"]["certificate"]["rawBytes"],
            "transparency_entries": b["verificationMaterial"]["tlogEntries"],
        },
        "envelope": {
            "statement": env["payload"],
            "signature": env["signatures"][0]["sig"],
        },
    })
}

fn serve(stream: TcpStream, routes: &Routes, log: &Mutex<Vec<String>>) -> io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        log.lock().unwrap().push(path.clone());
        let found = routes.lock().unwrap().get(&path).cloned();
        let (status, ctype, body) =
            found.unwrap_or((404, "text/plain".into(), b"not found".to_vec()));
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            _ => "Error",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        if method != "HEAD" {
            stream.write_all(&body)?;
        }
        stream.flush()?;
    }
}
