//! A Sigstore instance for tests, generated fresh (no key is checked in): a Fulcio-like CA, a CT log, a
//! Rekor-like transparency log and an RFC 3161 timestamp authority, with the `trusted_root.json` naming them.
//!
//! It signs the way the real services and clients do, so that what it makes is verified by the same code as real
//! evidence:
//! - leaf certificates for a GitHub Actions identity ([`Identity`]) with Fulcio's OIDC extensions, a critical
//!   URI SAN, the code-signing EKU and an embedded SCT over the precertificate TBS (RFC 6962), valid ten minutes;
//! - `hashedrekord` (message signature) and `dsse` entries in a real Merkle tree, each with a signed entry
//!   timestamp and an inclusion proof against a signed checkpoint;
//! - RFC 3161 timestamps over the signature.
//!
//! [`Flavour::PublicGood`] evidence has an SCT and a log entry; [`Flavour::GitHub`] evidence (GitHub's instance)
//! has an RFC 3161 timestamp and neither. [`Signed`] gives the evidence as a Sigstore bundle v0.3 or as cosign's
//! signature-layer annotations. Defects are made by signing with another instance ([`TestSigstore::with_other_ca`],
//! [`TestSigstore::with_other_log`]) or by choosing which evidence to include ([`EvidenceKinds`]).

mod log;
pub mod oci;
mod tsa;
mod x509;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

pub use log::{audit_path, leaf_hash, root_hash, InclusionProof, LogEntry, Rekor};
pub use tsa::Tsa;
pub use x509::{now, parse as parse_certificate, pem, Authority, CtLog, Identity, Key, Leaf};

/// The bundle media type written.
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The in-toto statement payload type.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// Which instance's evidence to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Sigstore's public-good instance: SCT, log entry with SET and inclusion proof; no timestamp.
    PublicGood,
    /// GitHub's instance: RFC 3161 timestamp; no log, no SCT.
    GitHub,
}

impl Flavour {
    /// The evidence this flavour carries.
    pub fn evidence(self) -> EvidenceKinds {
        match self {
            Flavour::PublicGood => EvidenceKinds {
                sct: true,
                tlog: true,
                rfc3161: false,
                expired_certificate: false,
            },
            Flavour::GitHub => EvidenceKinds {
                sct: false,
                tlog: false,
                rfc3161: true,
                expired_certificate: false,
            },
        }
    }

    /// The registry entry's `sigstore_url` naming this instance.
    pub fn sigstore_url(self) -> &'static str {
        match self {
            Flavour::PublicGood => "tuf-repo-cdn.sigstore.dev",
            Flavour::GitHub => "tuf-repo.github.com",
        }
    }
}

/// Which pieces of evidence a signature gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceKinds {
    /// An SCT embedded in the certificate.
    pub sct: bool,
    /// A log entry (SET and inclusion proof).
    pub tlog: bool,
    /// An RFC 3161 timestamp.
    pub rfc3161: bool,
    /// The certificate expired before the signature was made (a defect).
    pub expired_certificate: bool,
}

/// The instance.
#[derive(Debug, Clone)]
pub struct TestSigstore {
    /// Fulcio's root.
    pub root: Arc<Authority>,
    /// Fulcio's intermediate, which issues the leaves.
    pub intermediate: Arc<Authority>,
    /// The CT log.
    pub ct: Arc<CtLog>,
    /// The transparency log.
    pub rekor: Arc<Rekor>,
    /// The timestamp authority.
    pub tsa: Arc<Tsa>,
    /// When the trust material starts to be valid (a day ago).
    pub epoch: u64,
}

impl Default for TestSigstore {
    fn default() -> Self {
        TestSigstore::new()
    }
}

/// What was signed: the signature and everything that vouches for it.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The leaf certificate, DER.
    pub cert: Vec<u8>,
    /// The chain above it (intermediate, root), DER.
    pub chain: Vec<Vec<u8>>,
    /// The signed content.
    pub content: Content,
    /// The log entry, if logged.
    pub tlog: Option<LogEntry>,
    /// The RFC 3161 `TimeStampResp`, if stamped.
    pub rfc3161: Option<Vec<u8>>,
}

/// A message signature or a DSSE envelope.
#[derive(Debug, Clone)]
pub enum Content {
    /// A signature over `payload` (a blob, or cosign's simple-signing payload).
    Message {
        /// What was signed.
        payload: Vec<u8>,
        /// ECDSA over SHA-256(payload), DER.
        signature: Vec<u8>,
    },
    /// A DSSE envelope.
    Dsse {
        /// The payload type.
        payload_type: String,
        /// The payload (an in-toto statement).
        payload: Vec<u8>,
        /// ECDSA over PAE(payload_type, payload), DER.
        signature: Vec<u8>,
    },
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// RFC 3339 for seconds since the epoch (UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// cosign's simple-signing payload for an image digest.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// An in-toto v1 statement of SLSA provenance v1 for `name` with digest `sha256:HEX`, built by `identity`'s
/// workflow (as actions/attest-build-provenance writes it).
pub fn slsa_statement(name: &str, digest: &str, identity: &Identity) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {
                    "ref": identity.git_ref,
                    "repository": identity.repository_uri(),
                    "path": identity.workflow_path,
                }},
                "internalParameters": {"github": {
                    "event_name": identity.trigger,
                    "runner_environment": identity.runner_environment,
                }},
                "resolvedDependencies": [{
                    "uri": format!("git+{}@{}", identity.repository_uri(), identity.git_ref),
                    "digest": {"gitCommit": identity.sha},
                }],
            },
            "runDetails": {
                "builder": {"id": identity.san()},
                "metadata": {"invocationId": format!("{}/actions/runs/4242/attempts/1", identity.repository_uri())},
            },
        },
    })
    .to_string()
    .into_bytes()
}

impl TestSigstore {
    /// A fresh instance: every key generated now.
    pub fn new() -> TestSigstore {
        let epoch = now() - 86400;
        let root = x509::root_ca("O=sigstore.test,CN=sigstore", epoch);
        let intermediate =
            x509::intermediate_ca(&root, "O=sigstore.test,CN=sigstore-intermediate", epoch);
        let tsa_root = x509::root_ca("O=sigstore.test,CN=tsa root", epoch);
        let tsa_leaf = x509::tsa_leaf(&tsa_root, "O=sigstore.test,CN=tsa", epoch);
        TestSigstore {
            root: Arc::new(root),
            intermediate: Arc::new(intermediate),
            ct: Arc::new(CtLog {
                key: Key::generate(),
            }),
            rekor: Arc::new(Rekor::new(5)),
            tsa: Arc::new(Tsa {
                root: tsa_root,
                leaf: tsa_leaf,
            }),
            epoch,
        }
    }

    /// The same logs and TSA, another CA (its certificates chain to nothing this instance's root trusts).
    pub fn with_other_ca(&self) -> TestSigstore {
        let fresh = TestSigstore::new();
        TestSigstore {
            root: fresh.root,
            intermediate: fresh.intermediate,
            ..self.clone()
        }
    }

    /// The same CA, CT log and TSA, another transparency log.
    pub fn with_other_log(&self) -> TestSigstore {
        TestSigstore {
            rekor: TestSigstore::new().rekor,
            ..self.clone()
        }
    }

    /// The same CA, transparency log and TSA, another CT log (the certificate's SCT is by a key the root does
    /// not name).
    pub fn with_other_ct_log(&self) -> TestSigstore {
        TestSigstore {
            ct: TestSigstore::new().ct,
            ..self.clone()
        }
    }

    /// The same CA and logs, another timestamp authority.
    pub fn with_other_tsa(&self) -> TestSigstore {
        TestSigstore {
            tsa: TestSigstore::new().tsa,
            ..self.clone()
        }
    }

    /// The `trusted_root.json` (media type v0.1) naming this instance's CA, log, CT log and TSA.
    pub fn trusted_root(&self) -> String {
        let valid_for = json!({"start": rfc3339(self.epoch)});
        let log = |key: &Key, url: &str| {
            json!({
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(key.spki()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": valid_for,
                },
                "logId": {"keyId": b64(&key.key_id())},
            })
        };
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor.key, "https://rekor.sigstore.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "sigstore"},
                "uri": "https://fulcio.sigstore.test",
                "certChain": {"certificates": [
                    {"rawBytes": b64(&self.intermediate.cert)},
                    {"rawBytes": b64(&self.root.cert)},
                ]},
                "validFor": valid_for,
            }],
            "ctlogs": [log(&self.ct.key, "https://ctfe.sigstore.test")],
            "timestampAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "tsa"},
                "uri": "https://tsa.sigstore.test",
                "certChain": {"certificates": [
                    {"rawBytes": b64(&self.tsa.leaf.cert)},
                    {"rawBytes": b64(&self.tsa.root.cert)},
                ]},
                "validFor": valid_for,
            }],
        })
        .to_string()
    }

    /// Writes [`TestSigstore::trusted_root`] to `path`.
    pub fn write_trusted_root(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.trusted_root())
    }

    /// A certificate for `identity` (with an SCT when `sct`), issued `age` seconds ago.
    pub fn issue(&self, identity: &Identity, sct: bool, age: u64) -> Leaf {
        x509::issue_leaf(
            &self.intermediate,
            identity,
            sct.then_some(&*self.ct),
            now() - age,
        )
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate.cert.clone(), self.root.cert.clone()]
    }

    fn leaf(&self, identity: &Identity, ev: EvidenceKinds) -> Leaf {
        // Signed a minute ago with a certificate issued two minutes ago (valid ten); an expired one was issued an
        // hour ago.
        self.issue(
            identity,
            ev.sct,
            if ev.expired_certificate { 3600 } else { 120 },
        )
    }

    /// A message signature over `payload` by `identity`, with `flavour`'s evidence.
    pub fn sign_message(&self, flavour: Flavour, identity: &Identity, payload: &[u8]) -> Signed {
        self.sign_message_with(flavour.evidence(), identity, payload)
    }

    /// A message signature with exactly the evidence asked for.
    pub fn sign_message_with(
        &self,
        ev: EvidenceKinds,
        identity: &Identity,
        payload: &[u8],
    ) -> Signed {
        let leaf = self.leaf(identity, ev);
        let signature = leaf.key.sign(payload);
        let signed_at = now() - 60;
        let tlog = ev.tlog.then(|| {
            let body = json!({
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": sha256_hex(payload)}},
                    "signature": {
                        "content": b64(&signature),
                        "publicKey": {"content": b64(pem(&leaf.cert).as_bytes())},
                    },
                },
            });
            self.rekor.append(body.to_string().into_bytes(), signed_at)
        });
        let rfc3161 = ev
            .rfc3161
            .then(|| self.tsa.timestamp(&signature, signed_at));
        Signed {
            cert: leaf.cert,
            chain: self.chain(),
            content: Content::Message {
                payload: payload.to_vec(),
                signature,
            },
            tlog,
            rfc3161,
        }
    }

    /// A DSSE attestation of `statement` (an in-toto statement) by `identity`, with `flavour`'s evidence.
    pub fn attest(&self, flavour: Flavour, identity: &Identity, statement: &[u8]) -> Signed {
        self.attest_with(flavour.evidence(), identity, statement)
    }

    /// A DSSE attestation with exactly the evidence asked for.
    pub fn attest_with(&self, ev: EvidenceKinds, identity: &Identity, statement: &[u8]) -> Signed {
        let leaf = self.leaf(identity, ev);
        let signature = leaf.key.sign(&pae(IN_TOTO, statement));
        let signed_at = now() - 60;
        let content = Content::Dsse {
            payload_type: IN_TOTO.into(),
            payload: statement.to_vec(),
            signature,
        };
        let tlog = ev.tlog.then(|| {
            let Content::Dsse { signature, .. } = &content else {
                unreachable!()
            };
            let envelope = dsse_envelope(&content);
            let body = json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": sha256_hex(envelope.to_string().as_bytes())},
                    "payloadHash": {"algorithm": "sha256", "value": sha256_hex(statement)},
                    "signatures": [{
                        "signature": b64(signature),
                        "verifier": b64(pem(&leaf.cert).as_bytes()),
                    }],
                },
            });
            self.rekor.append(body.to_string().into_bytes(), signed_at)
        });
        let rfc3161 = ev.rfc3161.then(|| {
            let Content::Dsse { signature, .. } = &content else {
                unreachable!()
            };
            self.tsa.timestamp(signature, signed_at)
        });
        Signed {
            cert: leaf.cert,
            chain: self.chain(),
            content,
            tlog,
            rfc3161,
        }
    }
}

fn dsse_envelope(content: &Content) -> Value {
    match content {
        Content::Dsse {
            payload_type,
            payload,
            signature,
        } => json!({
            "payload": b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": b64(signature), "keyid": ""}],
        }),
        Content::Message { .. } => Value::Null,
    }
}

impl Signed {
    /// The signature bytes (message signature, or the DSSE envelope's).
    pub fn signature(&self) -> &[u8] {
        match &self.content {
            Content::Message { signature, .. } | Content::Dsse { signature, .. } => signature,
        }
    }

    fn tlog_entry(&self) -> Option<Value> {
        let e = self.tlog.as_ref()?;
        let (kind, version) = match self.content {
            Content::Message { .. } => ("hashedrekord", "0.0.1"),
            Content::Dsse { .. } => ("dsse", "0.0.1"),
        };
        let proof = &e.proof;
        Some(json!({
            "logIndex": e.index.to_string(),
            "logId": {"keyId": b64(&e.log_id)},
            "kindVersion": {"kind": kind, "version": version},
            "integratedTime": e.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": b64(&e.set)},
            "inclusionProof": {
                "logIndex": e.index.to_string(),
                "rootHash": b64(&proof.root),
                "treeSize": proof.tree_size.to_string(),
                "hashes": proof.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": proof.checkpoint},
            },
            "canonicalizedBody": b64(&e.body),
        }))
    }

    /// The Sigstore bundle v0.3 (as a JSON value, for tests that alter it).
    pub fn bundle_value(&self) -> Value {
        let rfc3161: Vec<Value> = self
            .rfc3161
            .iter()
            .map(|t| json!({"signedTimestamp": b64(t)}))
            .collect();
        let mut doc = json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(&self.cert)},
                "tlogEntries": self.tlog_entry().into_iter().collect::<Vec<_>>(),
                "timestampVerificationData": {"rfc3161Timestamps": rfc3161},
            },
        });
        match &self.content {
            Content::Message { payload, signature } => {
                doc["messageSignature"] = json!({
                    "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha2::Sha256::digest(payload))},
                    "signature": b64(signature),
                });
            }
            Content::Dsse { .. } => doc["dsseEnvelope"] = dsse_envelope(&self.content),
        }
        doc
    }

    /// The Sigstore bundle v0.3, JSON.
    pub fn bundle(&self) -> String {
        self.bundle_value().to_string()
    }

    /// The DSSE envelope JSON (an attestation's `.att` layer blob); `None` for a message signature.
    pub fn dsse_envelope(&self) -> Option<String> {
        matches!(self.content, Content::Dsse { .. })
            .then(|| dsse_envelope(&self.content).to_string())
    }

    /// The cosign layer: its blob (the simple-signing payload, or the DSSE envelope of an attestation) and its
    /// annotations (signature, certificate, chain, Rekor bundle, RFC 3161 timestamp), as `cosign sign`/`attest`
    /// write them.
    pub fn cosign_layer(&self) -> (Vec<u8>, BTreeMap<String, String>) {
        let mut a = BTreeMap::new();
        let blob = match &self.content {
            Content::Message { payload, signature } => {
                a.insert("dev.cosignproject.cosign/signature".into(), b64(signature));
                payload.clone()
            }
            Content::Dsse { .. } => {
                a.insert("dev.cosignproject.cosign/signature".into(), String::new());
                dsse_envelope(&self.content).to_string().into_bytes()
            }
        };
        a.insert("dev.sigstore.cosign/certificate".into(), pem(&self.cert));
        a.insert(
            "dev.sigstore.cosign/chain".into(),
            self.chain.iter().map(|c| pem(c)).collect::<String>(),
        );
        if let Some(e) = &self.tlog {
            a.insert(
                "dev.sigstore.cosign/bundle".into(),
                json!({
                    "SignedEntryTimestamp": b64(&e.set),
                    "Payload": {
                        "body": b64(&e.body),
                        "integratedTime": e.integrated_time,
                        "logIndex": e.index,
                        "logID": hex::encode(e.log_id),
                    },
                })
                .to_string(),
            );
        }
        if let Some(t) = &self.rfc3161 {
            a.insert(
                "dev.sigstore.cosign/rfc3161timestamp".into(),
                json!({"SignedRFC3161Timestamp": b64(t)}).to_string(),
            );
        }
        (blob, a)
    }
}
