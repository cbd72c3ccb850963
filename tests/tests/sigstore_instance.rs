//! The test Sigstore instance (tests/src/sigstore) against the real verifier: its bundles and cosign signatures
//! verify through `Verifier::with_trust_root` under the right policy, and each deliberate defect is refused for
//! the right reason. No network, no registry: the evidence is made and verified in process.

use serde_json::Value;
use thv_sandbox_e2e::sigstore::{
    simple_signing_payload, slsa_statement, EvidenceKinds, Flavour, Identity, Signed, TestSigstore,
    SLSA_PROVENANCE_V1,
};
use thv_sandbox_runtime::provenance::{
    bundle_from_cosign_annotations, Attestation, Bundle, CosignSignature, Policy, Provenance,
    Refusal, Subject, TrustRoot, Verified, Verifier,
};

const DIGEST: &str = "sha256:4f2a6b1f0c1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbc";
const OTHER_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const REPO: &str = "stacklok/test-server";

fn verifier(instance: &TestSigstore) -> Verifier {
    Verifier::with_trust_root(
        TrustRoot::from_json(&instance.trusted_root(), "test instance").expect("trust root"),
    )
}

/// The registry-entry policy (ToolHive semantics) for `identity` on `flavour`'s instance.
fn policy(flavour: Flavour, identity: &Identity) -> Provenance {
    Provenance {
        sigstore_url: Some(flavour.sigstore_url().into()),
        repository_uri: Some(identity.repository_uri()),
        repository_ref: Some(identity.git_ref.clone()),
        signer_identity: Some(format!("/{}", identity.workflow_path)),
        runner_environment: Some("github-hosted".into()),
        cert_issuer: Some("https://token.actions.githubusercontent.com".into()),
        attestation: None,
    }
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

fn verify_bundle(
    v: &Verifier,
    signed: &Signed,
    subject: Subject<'_>,
    p: &Provenance,
) -> Result<Verified, Refusal> {
    let bundle = Bundle::from_json(&signed.bundle()).expect("bundle parses");
    v.verify(&[bundle], subject, &Policy::Provenance(p.clone()))
}

fn verify_attestation(v: &Verifier, signed: &Signed, p: &Provenance) -> Result<Verified, Refusal> {
    verify_bundle(v, signed, Subject::Sha256(hex(DIGEST)), p)
}

fn verify_cosign(
    v: &Verifier,
    signed: &Signed,
    digest: &str,
    p: &Provenance,
) -> Result<Verified, Refusal> {
    let (blob, a) = signed.cosign_layer();
    let get = |k: &str| a.get(k).map(String::as_str);
    let sig = CosignSignature {
        payload: &blob,
        signature: get("dev.cosignproject.cosign/signature").unwrap_or(""),
        certificate: get("dev.sigstore.cosign/certificate"),
        rekor_bundle: get("dev.sigstore.cosign/bundle"),
        rfc3161_timestamp: get("dev.sigstore.cosign/rfc3161timestamp"),
        dsse: matches!(
            signed.content,
            thv_sandbox_e2e::sigstore::Content::Dsse { .. }
        ),
    };
    let bundle = bundle_from_cosign_annotations(&sig)?;
    let subject = if sig.dsse {
        Subject::Sha256(hex(digest))
    } else {
        Subject::CosignPayload {
            payload: &blob,
            image_digest: digest,
        }
    };
    v.verify(&[bundle], subject, &Policy::Provenance(p.clone()))
}

#[test]
fn public_good_attestation_verifies_with_sct_log_and_proof() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let signed = sigstore.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("ghcr.io/stacklok/test-server", DIGEST, &id),
    );
    let mut p = policy(Flavour::PublicGood, &id);
    p.attestation = Some(Attestation {
        predicate_type: Some(SLSA_PROVENANCE_V1.into()),
        predicate: None,
    });
    let v = verify_attestation(&verifier(&sigstore), &signed, &p).expect("verified");
    assert_eq!(v.evidence.kind, "dsse");
    assert!(v.evidence.sct, "{v:?}");
    assert_eq!(v.evidence.tlog_entries, 1);
    assert_eq!(v.evidence.rfc3161_timestamps, 0);
    assert_eq!(v.claims.san.as_deref(), Some(id.san().as_str()));
    assert_eq!(
        v.signer_identity.as_deref(),
        Some("/.github/workflows/release.yml")
    );
    assert_eq!(
        v.claims.source_repository_ref.as_deref(),
        Some("refs/tags/v1.0.0")
    );
    assert_eq!(v.claims.workflow_repository.as_deref(), Some(REPO));
    assert_eq!(v.claims.predicate_type.as_deref(), Some(SLSA_PROVENANCE_V1));
}

#[test]
fn public_good_message_signature_verifies_as_a_bundle_and_as_a_cosign_signature() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let payload = simple_signing_payload("registry.test/stacklok/test-server", DIGEST);
    let signed = sigstore.sign_message(Flavour::PublicGood, &id, &payload);
    let p = policy(Flavour::PublicGood, &id);
    let v = verifier(&sigstore);
    let verified = verify_bundle(&v, &signed, Subject::Blob(&payload), &p).expect("bundle");
    assert_eq!(verified.evidence.kind, "message-signature");
    assert!(verified.evidence.sct);
    let verified = verify_cosign(&v, &signed, DIGEST, &p).expect("cosign .sig");
    assert_eq!(verified.evidence.tlog_entries, 1);
    // The same signature on another image's tag: bound to the digest in its payload, refused.
    let err = verify_cosign(&v, &signed, OTHER_DIGEST, &p).unwrap_err();
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");
    assert!(err.to_string().contains(DIGEST), "{err}");
}

#[test]
fn cosign_attestation_layer_verifies() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let signed = sigstore.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    verify_cosign(
        &verifier(&sigstore),
        &signed,
        DIGEST,
        &policy(Flavour::PublicGood, &id),
    )
    .expect(".att verified");
}

#[test]
fn github_flavour_verifies_with_an_rfc3161_timestamp_and_no_log() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let signed = sigstore.attest(Flavour::GitHub, &id, &slsa_statement("img", DIGEST, &id));
    assert!(signed.tlog.is_none());
    let v = verify_attestation(&verifier(&sigstore), &signed, &policy(Flavour::GitHub, &id))
        .expect("verified");
    assert_eq!(v.evidence.rfc3161_timestamps, 1);
    assert_eq!(v.evidence.tlog_entries, 0);
    assert!(!v.evidence.sct);

    // The cosign form of a timestamped, unlogged signature verifies too.
    let payload = simple_signing_payload("registry.test/x", DIGEST);
    let signed = sigstore.sign_message(Flavour::GitHub, &id, &payload);
    verify_cosign(
        &verifier(&sigstore),
        &signed,
        DIGEST,
        &policy(Flavour::GitHub, &id),
    )
    .expect("cosign .sig, GitHub's instance");
}

#[test]
fn a_reusable_workflow_keeps_its_full_url_as_signer_identity() {
    let sigstore = TestSigstore::new();
    let mut id = Identity::github(REPO);
    id.workflow_repository = Some("stacklok/shared-workflows".into());
    id.workflow_path = ".github/workflows/build.yml".into();
    id.workflow_ref = Some("refs/heads/main".into());
    let signed = sigstore.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    let mut p = policy(Flavour::PublicGood, &id);
    p.signer_identity =
        Some("https://github.com/stacklok/shared-workflows/.github/workflows/build.yml".into());
    let v = verify_attestation(&verifier(&sigstore), &signed, &p).expect("verified");
    assert!(v.claims.build_config_uri.unwrap().contains("caller.yml"));
}

/// Each identity defect: the evidence verifies, the policy field named refuses it, naming both values.
#[test]
fn identity_defects_are_refused_naming_the_field() {
    let sigstore = TestSigstore::new();
    let v = verifier(&sigstore);
    let good = Identity::github(REPO);
    let p = policy(Flavour::PublicGood, &good);
    type Defect = (&'static str, fn(&mut Identity), &'static str);
    let defects: [Defect; 5] = [
        (
            "repository_uri",
            |i| i.repository = "someone/fork".into(),
            "someone/fork",
        ),
        (
            "signer_identity",
            |i| i.workflow_path = ".github/workflows/ci.yml".into(),
            "ci.yml",
        ),
        (
            "repository_ref",
            |i| i.git_ref = "refs/heads/feature".into(),
            "refs/heads/feature",
        ),
        (
            "cert_issuer",
            |i| i.issuer = "https://accounts.google.com".into(),
            "accounts.google.com",
        ),
        (
            "runner_environment",
            |i| i.runner_environment = "self-hosted".into(),
            "self-hosted",
        ),
    ];
    for (field, mutate, actual) in defects {
        let mut id = good.clone();
        mutate(&mut id);
        let signed = sigstore.attest(
            Flavour::PublicGood,
            &id,
            &slsa_statement("img", DIGEST, &id),
        );
        match verify_attestation(&v, &signed, &p) {
            Err(Refusal::Mismatch { field: f, .. }) if f == field => {}
            // A fork's SAN no longer starts with the expected repository: signer_identity differs too, but
            // repository_uri is checked first.
            other => panic!("{field}: expected a mismatch of {field}, got {other:?}"),
        }
        let err = verify_attestation(&v, &signed, &p).unwrap_err();
        assert!(err.to_string().contains(actual), "{field}: {err}");
    }
}

/// Refused as untrusted, and the message says `says` (exactly, case included): the check that refused it, so a
/// refusal by another check (say the log's key where the CA's chain is expected) fails.
fn expect_untrusted(result: Result<Verified, Refusal>, says: &str) {
    let err = result.expect_err("must be refused");
    assert!(
        matches!(err, Refusal::Untrusted(_)),
        "expected untrusted, got {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(says), "{text} (expected it to say {says:?})");
}

/// Refused for a bad signature, and the message says `says`.
fn expect_bad_signature(result: Result<Verified, Refusal>, says: &str) {
    let err = result.expect_err("must be refused");
    assert!(
        matches!(err, Refusal::BadSignature(_)),
        "expected a bad signature, got {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(says), "{text} (expected it to say {says:?})");
}

#[test]
fn a_certificate_from_another_ca_is_untrusted() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let rogue = sigstore.with_other_ca();
    let signed = rogue.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    // It verifies with its own CA's root: the defect is only the CA.
    verify_attestation(
        &verifier(&rogue),
        &signed,
        &policy(Flavour::PublicGood, &id),
    )
    .expect("verifies under the rogue root");
    expect_untrusted(
        verify_attestation(
            &verifier(&sigstore),
            &signed,
            &policy(Flavour::PublicGood, &id),
        ),
        "certificate chain validation failed: InvalidSignatureForPublicKey",
    );
}

#[test]
fn an_entry_in_another_log_is_untrusted() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    // Same CA, another log and CT log: the SCT, SET and checkpoint are all by keys the root does not name.
    let rogue = sigstore.with_other_log().with_other_ct_log();
    let signed = rogue.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    expect_untrusted(
        verify_attestation(
            &verifier(&sigstore),
            &signed,
            &policy(Flavour::PublicGood, &id),
        ),
        // The SET is checked before the SCT.
        "invalid inclusion promise: No log key valid at integrated time",
    );
    // Only the transparency log foreign (the CT log trusted): the SET is refused.
    let only_log = sigstore.with_other_log();
    let signed = only_log.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    expect_untrusted(
        verify_attestation(
            &verifier(&sigstore),
            &signed,
            &policy(Flavour::PublicGood, &id),
        ),
        "invalid inclusion promise: No log key valid at integrated time",
    );
}

#[test]
fn a_certificate_logged_only_in_another_ct_log_has_an_untrusted_sct() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    // Same CA and transparency log, only the CT log foreign: the SET and the inclusion proof are good, the
    // certificate's SCT is by a key the root does not name.
    let signed = sigstore.with_other_ct_log().attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    expect_untrusted(
        verify_attestation(
            &verifier(&sigstore),
            &signed,
            &policy(Flavour::PublicGood, &id),
        ),
        "invalid signed certificate timestamp: SCT signature verification failed",
    );
}

#[test]
fn a_timestamp_from_another_tsa_is_untrusted() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let signed =
        sigstore
            .with_other_tsa()
            .attest(Flavour::GitHub, &id, &slsa_statement("img", DIGEST, &id));
    expect_untrusted(
        verify_attestation(&verifier(&sigstore), &signed, &policy(Flavour::GitHub, &id)),
        "invalid RFC 3161 timestamp: TSA timestamp verification failed: Failed to verify timestamp signature: CMS \
         signer does not match any trusted TSA certificate",
    );
}

#[test]
fn tampered_bundles_are_refused() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let v = verifier(&sigstore);
    let p = Policy::Provenance(policy(Flavour::PublicGood, &id));
    let signed = sigstore.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    let verify = |doc: &Value| {
        Bundle::from_json(&doc.to_string())
            .and_then(|b| v.verify(&[b], Subject::Sha256(hex(DIGEST)), &p))
    };
    verify(&signed.bundle_value()).expect("the untampered bundle verifies");

    // The statement altered (another subject): the DSSE signature no longer verifies.
    let mut doc = signed.bundle_value();
    let forged = slsa_statement("img", OTHER_DIGEST, &id);
    doc["dsseEnvelope"]["payload"] = base64_of(&forged).into();
    let err = verify(&doc).unwrap_err();
    assert!(matches!(err, Refusal::BadSignature(_)), "{err:?}");

    // A flipped bit in the signature.
    let mut doc = signed.bundle_value();
    doc["dsseEnvelope"]["signatures"][0]["sig"] = flip(
        doc["dsseEnvelope"]["signatures"][0]["sig"]
            .as_str()
            .unwrap(),
    )
    .into();
    expect_bad_signature(verify(&doc), "DSSE signature verification failed");

    // The integrated time moved (the SET covers it).
    let mut doc = signed.bundle_value();
    let t: u64 = doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = (t - 30).to_string().into();
    expect_untrusted(
        verify(&doc),
        "invalid inclusion promise: SET verification failed",
    );

    // A wrong inclusion proof (one path hash altered): refused although the SET is good.
    let mut doc = signed.bundle_value();
    let h = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0]
        .as_str()
        .unwrap()
        .to_string();
    doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0] = flip(&h).into();
    expect_untrusted(
        verify(&doc),
        "invalid inclusion proof: inclusion proof verification failed: root hash mismatch",
    );

    // The certificate swapped for another leaf of the same CA and identity: signature and log entry disagree.
    let mut doc = signed.bundle_value();
    let other = sigstore.issue(&id, true, 120);
    doc["verificationMaterial"]["certificate"]["rawBytes"] = base64_of(&other.cert).into();
    expect_bad_signature(verify(&doc), "DSSE signature verification failed");
}

#[test]
fn the_subject_binds_the_attestation() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let signed = sigstore.attest(
        Flavour::PublicGood,
        &id,
        &slsa_statement("img", DIGEST, &id),
    );
    let err = verify_bundle(
        &verifier(&sigstore),
        &signed,
        Subject::Sha256(hex(OTHER_DIGEST)),
        &policy(Flavour::PublicGood, &id),
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");
}

#[test]
fn each_instance_requires_its_own_evidence() {
    let sigstore = TestSigstore::new();
    let id = Identity::github(REPO);
    let v = verifier(&sigstore);
    let statement = slsa_statement("img", DIGEST, &id);

    // GitHub's evidence under a public-good policy: no log entry.
    let signed = sigstore.attest(Flavour::GitHub, &id, &statement);
    let err = verify_attestation(&v, &signed, &policy(Flavour::PublicGood, &id)).unwrap_err();
    assert!(matches!(err, Refusal::MissingEvidence(_)), "{err:?}");
    assert!(err.to_string().contains("transparency-log"), "{err}");

    // Public-good evidence under GitHub's policy: no RFC 3161 timestamp.
    let signed = sigstore.attest(Flavour::PublicGood, &id, &statement);
    let err = verify_attestation(&v, &signed, &policy(Flavour::GitHub, &id)).unwrap_err();
    assert!(matches!(err, Refusal::MissingEvidence(_)), "{err:?}");
    assert!(err.to_string().contains("RFC 3161"), "{err}");

    // A logged signature whose certificate has no SCT, under public-good: refused for the SCT.
    let no_sct = EvidenceKinds {
        sct: false,
        ..Flavour::PublicGood.evidence()
    };
    let signed = sigstore.attest_with(no_sct, &id, &statement);
    expect_untrusted(
        verify_attestation(&v, &signed, &policy(Flavour::PublicGood, &id)),
        "invalid signed certificate timestamp: certificate is missing SCT extension",
    );

    // A certificate that had expired when the signature was logged.
    let expired = EvidenceKinds {
        expired_certificate: true,
        ..Flavour::PublicGood.evidence()
    };
    let signed = sigstore.attest_with(expired, &id, &statement);
    expect_untrusted(
        verify_attestation(&v, &signed, &policy(Flavour::PublicGood, &id)),
        "certificate chain validation failed: CertExpired",
    );
}

#[test]
fn the_trusted_root_names_every_service_and_parses() {
    let sigstore = TestSigstore::new();
    let doc: Value = serde_json::from_str(&sigstore.trusted_root()).unwrap();
    assert_eq!(
        doc["mediaType"],
        "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    );
    for key in [
        "tlogs",
        "ctlogs",
        "certificateAuthorities",
        "timestampAuthorities",
    ] {
        assert_eq!(doc[key].as_array().map(Vec::len), Some(1), "{key}");
    }
    // Fresh keys every time: two instances share nothing.
    let other = TestSigstore::new();
    assert_ne!(
        doc["tlogs"][0]["logId"],
        serde_json::from_str::<Value>(&other.trusted_root()).unwrap()["tlogs"][0]["logId"]
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Flips one bit in the middle of base64-encoded bytes.
fn flip(b64: &str) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let mut bytes = e.decode(b64).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    e.encode(bytes)
}
