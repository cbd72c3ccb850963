//! The one place that talks to sigstore-verify (pinned `=0.15.1`; its minor releases break the API).
//!
//! Order of a verdict: (1) cryptographic verification with any identity against the trust root — chain to a
//! Fulcio CA valid at signing time, signing time from verified evidence, signature, subject binding; (2) the
//! evidence the instance requires, which is never relaxed; (3) the claims of the certificate just validated,
//! against the policy.

use sigstore_types::bundle::VerificationMaterialContent;
use sigstore_types::{Artifact, KindVersion, SignatureContent};
use sigstore_verify::{
    CertificateError, Error as SvError, TimestampError, TransparencyLogError, VerificationPolicy,
};

use crate::error::Refusal;
use crate::policy::{Claims, Instance};
use crate::trust::TrustRoot;
use crate::{Bundle, EvidenceSummary, Subject};

/// Cryptographic verification and the instance's evidence requirements; returns the validated claims.
pub(crate) fn verify_crypto(
    root: &TrustRoot,
    instance: Instance,
    bundle: &Bundle,
    subject: &Subject<'_>,
) -> Result<(Claims, EvidenceSummary), Refusal> {
    let b = &bundle.0;
    if !matches!(
        b.verification_material.content,
        VerificationMaterialContent::Certificate(_)
            | VerificationMaterialContent::X509CertificateChain { .. }
    ) {
        return Err(Refusal::Untrusted(
            "the bundle is signed with a bare key, not a Sigstore certificate; key-signed evidence carries no \
             identity to check"
                .into(),
        ));
    }
    // Requirements by instance. The library's defaults (any identity) verify the chain, SCT and log; GitHub's
    // instance has neither log nor CT, and its signing time must come from an RFC 3161 timestamp instead.
    let policy = match instance {
        Instance::PublicGood => VerificationPolicy::any_identity(),
        Instance::GitHub => VerificationPolicy::any_identity()
            .skip_tlog_unsafe()
            .skip_sct(),
    };
    let tlog_entries = &b.verification_material.tlog_entries;
    let rfc3161 = b
        .verification_material
        .timestamp_verification_data
        .rfc3161_timestamps
        .len();
    // Checked before the cryptography so that the refusal names the missing piece rather than a consequence.
    match instance {
        Instance::PublicGood => {
            if tlog_entries.is_empty() {
                return Err(Refusal::MissingEvidence(
                    "public-good Sigstore requires a transparency-log entry; the bundle has none"
                        .into(),
                ));
            }
            for e in tlog_entries {
                let v2 = e.kind_version == KindVersion::HashedRekordV002;
                if !v2 && e.inclusion_promise.is_none() {
                    return Err(Refusal::MissingEvidence(
                        "the transparency-log entry has no signed entry timestamp (inclusion promise)".into(),
                    ));
                }
                if v2 && rfc3161 == 0 {
                    return Err(Refusal::MissingEvidence(
                        "a Rekor v2 entry carries no signed time and the bundle has no RFC 3161 timestamp".into(),
                    ));
                }
            }
        }
        Instance::GitHub => {
            if rfc3161 == 0 {
                return Err(Refusal::MissingEvidence(
                    "GitHub's Sigstore requires an RFC 3161 timestamp; the bundle has none".into(),
                ));
            }
        }
    }

    let artifact: Artifact<'_> = match subject {
        Subject::Blob(bytes) => Artifact::from_blob(bytes),
        Subject::CosignPayload { payload, .. } => Artifact::from_blob(payload),
        Subject::Sha256(hex) => {
            let h = sigstore_types::Sha256Hash::from_hex(hex)
                .map_err(|e| Refusal::DigestMismatch(format!("not a sha256 digest: {e}")))?;
            Artifact::from(h)
        }
        Subject::Sha512(hex) => {
            let bytes = hex::decode(hex)
                .map_err(|e| Refusal::DigestMismatch(format!("not a sha512 digest: {e}")))?;
            let d =
                sigstore_types::ArtifactDigest::new(sigstore_types::HashAlgorithm::Sha2512, bytes)
                    .map_err(|e| Refusal::DigestMismatch(format!("not a sha512 digest: {e}")))?;
            Artifact::from_digest(d)
        }
    };
    let result = root
        .verifier
        .verify(artifact, b, &policy)
        .map_err(map_error)?;

    // The library reports what it checked; hold it to the instance's requirements once more.
    if !result.certificate_verified() {
        return Err(Refusal::Untrusted(
            "the signing certificate was not verified".into(),
        ));
    }
    if result.verified_timestamps().is_empty() {
        return Err(Refusal::MissingEvidence("no verified signing time".into()));
    }
    if instance == Instance::PublicGood && !(result.sct_verified() && result.tlog_verified()) {
        return Err(Refusal::MissingEvidence(
            "public-good Sigstore requires a verified SCT and transparency-log entry".into(),
        ));
    }
    let cert = result
        .certificate()
        .ok_or_else(|| Refusal::Untrusted("no signing certificate".into()))?;
    let ci = &cert.ci_claims;
    let dep = &ci.deprecated_github;
    let mut claims = Claims {
        san: result.identity().map(|s| s.as_str().to_string()),
        issuer: result.issuer().map(str::to_string),
        source_repository_uri: ci.source_repository_uri.clone(),
        source_repository_ref: ci.source_repository_ref.clone(),
        source_repository_digest: ci.source_repository_digest.clone(),
        runner_environment: ci.runner_environment.clone(),
        build_config_uri: ci.build_config_uri.clone(),
        build_trigger: ci.build_trigger.clone(),
        workflow_repository: dep.workflow_repository.clone(),
        workflow_ref: dep.workflow_ref.clone(),
        workflow_sha: dep.workflow_sha.clone(),
        workflow_trigger: dep.workflow_trigger.clone(),
        workflow_name: dep.workflow_name.clone(),
        predicate_type: None,
        predicate: None,
    };
    let kind = match &b.content {
        SignatureContent::DsseEnvelope(env) => {
            if env.payload_type == "application/vnd.in-toto+json" {
                let statement: serde_json::Value =
                    serde_json::from_slice(env.payload.as_bytes())
                        .map_err(|e| Refusal::Malformed(format!("in-toto statement: {e}")))?;
                claims.predicate_type = statement
                    .get("predicateType")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                claims.predicate = statement.get("predicate").cloned();
            }
            "dsse"
        }
        SignatureContent::MessageSignature(_) => "message-signature",
        _ => return Err(Refusal::Malformed("unsupported bundle content".into())),
    };

    if let Subject::CosignPayload {
        payload,
        image_digest,
    } = subject
    {
        check_cosign_payload(payload, image_digest)?;
    }

    let evidence = EvidenceSummary {
        kind: kind.into(),
        tlog_entries: tlog_entries.len(),
        log_index: tlog_entries.first().map(|e| e.log_index.to_string()),
        sct: result.sct_verified(),
        rfc3161_timestamps: rfc3161,
        signing_time: result
            .verified_timestamps()
            .iter()
            .min()
            .map(|t| t.to_string())
            .unwrap_or_default(),
    };
    Ok((claims, evidence))
}

/// The signature covers the payload; only `critical.image.docker-manifest-digest` binds it to an image.
pub(crate) fn check_cosign_payload(payload: &[u8], image_digest: &str) -> Result<(), Refusal> {
    let doc: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Refusal::Malformed(format!("cosign simple-signing payload: {e}")))?;
    let critical = doc
        .get("critical")
        .ok_or_else(|| Refusal::Malformed("cosign payload has no `critical` section".into()))?;
    let ty = critical.get("type").and_then(|v| v.as_str()).unwrap_or("");
    if ty != "cosign container image signature" {
        return Err(Refusal::Malformed(format!(
            "cosign payload type is {ty:?}, not \"cosign container image signature\""
        )));
    }
    let signed = critical
        .pointer("/image/docker-manifest-digest")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if signed != image_digest {
        return Err(Refusal::DigestMismatch(format!(
            "the signature is for image {signed}, not {image_digest}"
        )));
    }
    Ok(())
}

fn map_error(e: SvError) -> Refusal {
    let text = e.to_string();
    match e {
        SvError::ArtifactMismatch(_) | SvError::UnsupportedArtifact(_) => {
            Refusal::DigestMismatch(text)
        }
        SvError::SignatureInvalid(_) => Refusal::BadSignature(text),
        SvError::Certificate(CertificateError::Malformed(_)) => Refusal::Malformed(text),
        SvError::Certificate(_) | SvError::TrustedCertificate(_) | SvError::InvalidTrustRoot(_) => {
            Refusal::Untrusted(text)
        }
        SvError::TransparencyLog(TransparencyLogError::EntryMismatch(_)) => {
            Refusal::BadSignature(text)
        }
        SvError::TransparencyLog(TransparencyLogError::MalformedEntry(_)) => {
            Refusal::Malformed(text)
        }
        SvError::TransparencyLog(_) => Refusal::Untrusted(text),
        SvError::Timestamp(TimestampError::NoVerifiedTimestamp(_)) => {
            Refusal::MissingEvidence(text)
        }
        SvError::Timestamp(_) => Refusal::Untrusted(text),
        SvError::InvalidBundle(_) | SvError::UnsupportedBundle(_) | SvError::Types(_) => {
            Refusal::Malformed(text)
        }
        // Checkpoint and proof errors surface from the bundle and crypto layers.
        SvError::Bundle(_) | SvError::Crypto(_) | SvError::TrustRoot(_) => Refusal::Untrusted(text),
        _ => Refusal::Untrusted(text),
    }
}

/// Parses one bundle, or several (one per line, as GitHub's `.jsonl` downloads).
pub(crate) fn parse_bundles(text: &str) -> Result<Vec<Bundle>, Refusal> {
    let trimmed = text.trim();
    if let Ok(b) = sigstore_types::Bundle::from_json(trimmed) {
        return Ok(vec![Bundle(b)]);
    }
    let mut out = Vec::new();
    for (i, line) in trimmed.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let b = sigstore_types::Bundle::from_json(line)
            .map_err(|e| Refusal::Malformed(format!("bundle on line {}: {e}", i + 1)))?;
        out.push(Bundle(b));
    }
    if out.is_empty() {
        return Err(Refusal::Malformed("no bundle in the input".into()));
    }
    Ok(out)
}
