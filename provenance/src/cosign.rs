//! Legacy cosign image signatures (tag `sha256-HEX.sig`) as Sigstore bundles.
//!
//! A cosign signature layer is the simple-signing payload, with the signature, Fulcio certificate and Rekor SET
//! in annotations. It is turned into a bundle v0.1 (message signature over the payload, the leaf certificate,
//! the Rekor entry with its inclusion promise; v0.2 when there is no log entry, only an RFC 3161 timestamp),
//! which is then verified like any other bundle. The chain annotation is not used: intermediates come from the
//! trust root.

use base64::Engine as _;
use sha2::Digest as _;

use crate::error::Refusal;
use crate::Bundle;

/// One cosign signature layer.
#[derive(Debug, Clone, Copy)]
pub struct CosignSignature<'a> {
    /// The layer blob: the simple-signing payload.
    pub payload: &'a [u8],
    /// Annotation `dev.cosignproject.cosign/signature` (base64).
    pub signature: &'a str,
    /// Annotation `dev.sigstore.cosign/certificate` (PEM); absent for key-signed images.
    pub certificate: Option<&'a str>,
    /// Annotation `dev.sigstore.cosign/bundle` (JSON: SignedEntryTimestamp and the Rekor entry).
    pub rekor_bundle: Option<&'a str>,
    /// Annotation `dev.sigstore.cosign/rfc3161timestamp` (JSON: SignedRFC3161Timestamp).
    pub rfc3161_timestamp: Option<&'a str>,
    /// An attestation layer (tag `sha256-HEX.att`): the payload is a DSSE envelope carrying its own signature,
    /// and `signature` is ignored. Its subject binding is the in-toto statement's subject digest.
    pub dsse: bool,
}

/// The bundle equivalent of a cosign signature layer.
pub fn bundle_from_cosign_annotations(sig: &CosignSignature<'_>) -> Result<Bundle, Refusal> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let cert_pem = sig.certificate.ok_or_else(|| {
        Refusal::Untrusted(
            "the cosign signature has no certificate (signed with a key); key-signed images carry no identity".into(),
        )
    })?;
    let cert_der = pem_to_der(cert_pem)?;
    let mut tlog = Vec::new();
    if let Some(rb) = sig.rekor_bundle {
        let v: serde_json::Value = serde_json::from_str(rb)
            .map_err(|e| Refusal::Malformed(format!("cosign bundle annotation: {e}")))?;
        let set = v.get("SignedEntryTimestamp").and_then(|s| s.as_str());
        let p = v
            .get("Payload")
            .ok_or_else(|| Refusal::Malformed("cosign bundle annotation has no Payload".into()))?;
        let body = p.get("body").and_then(|s| s.as_str()).unwrap_or("");
        let body_json: serde_json::Value = b64
            .decode(body)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                Refusal::Malformed("cosign bundle annotation: Rekor body is not base64 JSON".into())
            })?;
        let kind = body_json.get("kind").and_then(|s| s.as_str()).unwrap_or("");
        let version = body_json
            .get("apiVersion")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        let log_id_hex = p.get("logID").and_then(|s| s.as_str()).unwrap_or("");
        let log_id = hex::decode(log_id_hex)
            .map_err(|_| Refusal::Malformed("cosign bundle annotation: logID is not hex".into()))?;
        let mut entry = serde_json::json!({
            "logIndex": p.get("logIndex").map(|n| n.to_string()).unwrap_or_default(),
            "logId": {"keyId": b64.encode(log_id)},
            "kindVersion": {"kind": kind, "version": version},
            "integratedTime": p.get("integratedTime").map(|n| n.to_string()).unwrap_or_default(),
            "canonicalizedBody": body,
        });
        if let Some(set) = set {
            entry["inclusionPromise"] = serde_json::json!({"signedEntryTimestamp": set});
        }
        tlog.push(entry);
    }
    let mut rfc3161 = Vec::new();
    if let Some(ts) = sig.rfc3161_timestamp {
        let v: serde_json::Value = serde_json::from_str(ts)
            .map_err(|e| Refusal::Malformed(format!("cosign rfc3161timestamp annotation: {e}")))?;
        if let Some(t) = v.get("SignedRFC3161Timestamp").and_then(|s| s.as_str()) {
            rfc3161.push(serde_json::json!({"signedTimestamp": t}));
        }
    }
    // A bundle v0.1 must carry an inclusion promise; a signature that was only timestamped (cosign with a TSA
    // and no transparency log, as on GitHub's instance) is a v0.2 bundle, which may have no log entry.
    let media_type = if tlog.is_empty() {
        "application/vnd.dev.sigstore.bundle+json;version=0.2"
    } else {
        "application/vnd.dev.sigstore.bundle+json;version=0.1"
    };
    let mut doc = serde_json::json!({
        "mediaType": media_type,
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": [{"rawBytes": b64.encode(cert_der)}]},
            "tlogEntries": tlog,
            "timestampVerificationData": {"rfc3161Timestamps": rfc3161},
        },
    });
    if sig.dsse {
        let envelope: serde_json::Value = serde_json::from_slice(sig.payload).map_err(|e| {
            Refusal::Malformed(format!("cosign attestation is not a DSSE envelope: {e}"))
        })?;
        doc["dsseEnvelope"] = envelope;
    } else {
        doc["messageSignature"] = serde_json::json!({
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(sha2::Sha256::digest(sig.payload))},
            "signature": sig.signature.trim(),
        });
    }
    Bundle::from_json(&doc.to_string())
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, Refusal> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem
        .find(begin)
        .ok_or_else(|| Refusal::Malformed("the cosign certificate annotation is not PEM".into()))?
        + begin.len();
    let stop = pem[start..]
        .find(end)
        .ok_or_else(|| Refusal::Malformed("the cosign certificate annotation is not PEM".into()))?
        + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| Refusal::Malformed(format!("cosign certificate: {e}")))
}
