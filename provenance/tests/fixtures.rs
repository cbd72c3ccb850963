//! Every case of `../shared/fixtures/sigstore/cases.json` (real bundles, real trust roots) gives its expected
//! result, offline, through the one verdict function.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thv_sandbox_provenance::{
    bundle_from_cosign_annotations, Bundle, CosignSignature, IdentityPolicy, Instance, Policy,
    Provenance, Refusal, Subject, TrustRoot, Verified, Verifier, GITHUB_ACTIONS_ISSUER,
};

/// The fixtures directory: `$THV_SANDBOX_FIXTURES/sigstore`, or `../shared/fixtures/sigstore` next to the repository.
/// Missing fixtures fail the test under `CI=true` and skip it elsewhere.
fn fixtures() -> Option<PathBuf> {
    let base = std::env::var_os("THV_SANDBOX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let dir = base.join("sigstore");
    if dir.join("cases.json").is_file() {
        return Some(dir);
    }
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !under_ci,
        "prerequisite missing under CI: Sigstore fixtures at {}",
        dir.display()
    );
    eprintln!(
        "SKIP: prerequisite missing: Sigstore fixtures at {}",
        dir.display()
    );
    None
}

fn s(case: &Value, key: &str) -> Option<String> {
    case.get(key).and_then(Value::as_str).map(str::to_string)
}

fn instance_of(root_file: &str) -> Instance {
    if root_file.contains("github.trusted_root") {
        Instance::GitHub
    } else {
        Instance::PublicGood
    }
}

fn run_case(
    dir: &Path,
    case: &Value,
    verifier: &Verifier,
    policy: &Policy,
) -> Result<Verified, Refusal> {
    let text = std::fs::read_to_string(dir.join(s(case, "bundle").unwrap())).unwrap();
    let bundles = Bundle::parse_all(&text)?;
    if let Some(artifact) = s(case, "artifact") {
        let bytes = std::fs::read(dir.join(artifact)).unwrap();
        verifier.verify(&bundles, Subject::Blob(&bytes), policy)
    } else {
        let digest = s(case, "artifact_digest").unwrap();
        verifier.verify(
            &bundles,
            Subject::Sha256(digest.strip_prefix("sha256:").unwrap()),
            policy,
        )
    }
}

fn identity_policy(case: &Value, url: Option<&str>) -> Policy {
    Policy::Identity(IdentityPolicy {
        sigstore_url: url.map(str::to_string),
        certificate_identity: s(case, "san"),
        certificate_oidc_issuer: s(case, "issuer"),
        ..IdentityPolicy::default()
    })
}

fn provenance_policy(case: &Value, url: Option<&str>) -> Option<Policy> {
    let repo = s(case, "source_repository_uri")?;
    Some(Policy::Provenance(Provenance {
        sigstore_url: url.map(str::to_string),
        repository_uri: Some(repo),
        repository_ref: s(case, "source_repository_ref"),
        signer_identity: s(case, "toolhive_signer_identity"),
        runner_environment: s(case, "runner_environment"),
        cert_issuer: s(case, "issuer"),
        attestation: None,
    }))
}

/// Why an expected-fail case must be refused: its `failure_reason` in cases.json, as the refusal's kind and a
/// fragment of its message. A refusal for any other reason (a parse error, a trust problem where a bad signature
/// is expected...) fails the case.
struct ExpectedRefusal {
    /// The case's `failure_reason`, verbatim: the table must follow the fixtures.
    failure_reason: &'static str,
    /// [`Refusal::kind`].
    kind: &'static str,
    /// In the refusal's message.
    says: &'static str,
    /// For the two cross-instance cases: under the case's trust root *and its instance's* evidence requirements
    /// the refusal comes before any trust check (GitHub requires a timestamp, public-good a log entry), which is
    /// `kind`/`says`. Their documented reason (the bundle's log key or TSA is not in this root) shows only under
    /// the bundle's own instance's requirements: that instance, and the kind and fragment expected then.
    documented_under: Option<(Instance, &'static str, &'static str)>,
}

fn expected_refusal(name: &str) -> Option<ExpectedRefusal> {
    let e = |failure_reason, kind, says| ExpectedRefusal {
        failure_reason,
        kind,
        says,
        documented_under: None,
    };
    Some(match name {
        "gh-attestation-reusable-workflow-wrong-san" => e(
            "identity mismatch (policy expects the caller workflow, cert SAN is the reusable workflow)",
            "identity-mismatch",
            "the signer's certificate says \"https://github.com/github/artifact-attestations-workflows/",
        ),
        "public-good-bundle-vs-github-root" => ExpectedRefusal {
            documented_under: Some((Instance::PublicGood, "untrusted", "No log key")),
            ..e(
                "no Rekor key / Fulcio CA for public-good in GitHub trusted root",
                "missing-evidence",
                "requires an RFC 3161 timestamp",
            )
        },
        "hashedrekord-wrong-artifact" => e(
            "message digest does not match artifact",
            "digest-mismatch",
            "message digest in bundle does not match artifact hash",
        ),
        "github-instance-bundle-vs-public-good-root" => ExpectedRefusal {
            documented_under: Some((
                Instance::GitHub,
                "untrusted",
                "CMS signer does not match any trusted TSA certificate",
            )),
            ..e(
                "TSA / Fulcio not trusted by public-good root",
                "missing-evidence",
                "requires a transparency-log entry",
            )
        },
        "conformance-signature-mismatch" => e(
            "bad signature",
            "bad-signature",
            "signature verification failed",
        ),
        "conformance-dsse-mismatch-sig" => e(
            "DSSE signature differs from the one logged in Rekor",
            "bad-signature",
            "DSSE signature in bundle does not match any signature in Rekor entry",
        ),
        "conformance-checkpoint-wrong-roothash" => e(
            "inclusion proof root != checkpoint root",
            "untrusted",
            "inclusion proof root hash does not match checkpoint root hash",
        ),
        "conformance-wrong-instance" => e(
            "staging-signed bundle vs production root",
            "untrusted",
            "No log key valid at integrated time",
        ),
        "conformance-integrated-time-in-future" => e(
            "integratedTime after cert notAfter",
            "untrusted",
            "CertExpired",
        ),
        "conformance-expired-certificate" => e(
            "cert not valid at integrated time",
            "untrusted",
            "CertNotValidYet",
        ),
        _ => return None,
    })
}

/// `Ok(())` when `got` is the refusal `kind` whose message has `says`; else what was wrong.
fn refused_for(got: &Result<Verified, Refusal>, kind: &str, says: &str) -> Result<(), String> {
    match got {
        Ok(_) => Err(format!(
            "verified, expected a {kind} refusal saying {says:?}"
        )),
        Err(e) if e.kind() == kind && e.to_string().contains(says) => Ok(()),
        Err(e) => Err(format!(
            "refused for another reason: {} ({e}), expected {kind} saying {says:?}",
            e.kind()
        )),
    }
}

#[test]
fn every_fixture_case_gives_its_expected_result() {
    let Some(dir) = fixtures() else { return };
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 23,
        "expected at least 23 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = s(case, "name").unwrap();
        let expect_pass = s(case, "expect").unwrap() == "pass";
        let root_file = s(case, "trusted_root").unwrap();
        let instance = instance_of(&root_file);
        let url = Some(instance.sigstore_url());
        let verifier =
            Verifier::with_trust_root(TrustRoot::from_file(&dir.join(&root_file)).unwrap());

        let mut policies = vec![("identity", identity_policy(case, url))];
        if let Some(p) = provenance_policy(case, url) {
            policies.push(("provenance", p));
        }
        for (label, policy) in &policies {
            let got = run_case(&dir, case, &verifier, policy);
            match (&got, expect_pass) {
                (Ok(v), true) => {
                    // The claims reported are the certificate's, as the fixture table lists them.
                    let c = &v.claims;
                    let checks = [
                        ("san", c.san.clone()),
                        ("issuer", c.issuer.clone()),
                        ("source_repository_uri", c.source_repository_uri.clone()),
                        ("source_repository_ref", c.source_repository_ref.clone()),
                        ("runner_environment", c.runner_environment.clone()),
                        ("toolhive_signer_identity", v.signer_identity.clone()),
                    ];
                    for (key, actual) in checks {
                        if let Some(want) = s(case, key) {
                            if actual.as_deref() != Some(want.as_str()) {
                                failures.push(format!(
                                    "{name} [{label}]: {key} = {actual:?}, want {want:?}"
                                ));
                            }
                        }
                    }
                    if v.evidence.signing_time.is_empty() {
                        failures.push(format!("{name} [{label}]: no signing time reported"));
                    }
                }
                (_, false) => {
                    let Some(want) = expected_refusal(&name) else {
                        failures.push(format!(
                            "{name}: an expected-fail case with no expected reason in this test (its \
                             failure_reason: {:?})",
                            s(case, "failure_reason")
                        ));
                        continue;
                    };
                    if s(case, "failure_reason").as_deref() != Some(want.failure_reason) {
                        failures.push(format!(
                            "{name}: cases.json now says {:?}, this test expects {:?}",
                            s(case, "failure_reason"),
                            want.failure_reason
                        ));
                    }
                    match refused_for(&got, want.kind, want.says) {
                        Ok(()) => eprintln!(
                            "{name} [{label}]: refused as expected: {}",
                            got.unwrap_err()
                        ),
                        Err(why) => failures.push(format!("{name} [{label}]: {why}")),
                    }
                    if let Some((bundle_instance, kind, says)) = want.documented_under {
                        let policy = identity_policy(case, Some(bundle_instance.sigstore_url()));
                        let got = run_case(&dir, case, &verifier, &policy);
                        if let Err(why) = refused_for(&got, kind, says) {
                            failures.push(format!(
                                "{name} [{label}, the bundle's own instance's requirements]: {why}"
                            ));
                        }
                    }
                }
                (Err(e), true) => failures.push(format!(
                    "{name} [{label}]: refused ({e}), expected to verify"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn case<'a>(cases: &'a Value, name: &str) -> &'a Value {
    cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn load() -> Option<(PathBuf, Value)> {
    let dir = fixtures()?;
    let cases =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    Some((dir, cases))
}

#[test]
fn refusals_say_why() {
    let Some((dir, cases)) = load() else { return };
    let v = Verifier::embedded();

    let c = case(&cases, "hashedrekord-wrong-artifact");
    let err = run_case(&dir, c, &v, &identity_policy(c, None)).unwrap_err();
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");

    let c = case(&cases, "gh-attestation-reusable-workflow-wrong-san");
    let err = run_case(&dir, c, &v, &identity_policy(c, None)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Refusal::Mismatch { .. }), "{err:?}");
    assert!(
        text.contains("malancas/attest-demo/.github/workflows/shared.yml"),
        "{text}"
    );
    assert!(text.contains("artifact-attestations-workflows"), "{text}");

    let c = case(&cases, "conformance-signature-mismatch");
    let err = run_case(&dir, c, &v, &identity_policy(c, None)).unwrap_err();
    assert!(matches!(err, Refusal::BadSignature(_)), "{err:?}");

    let c = case(&cases, "conformance-wrong-instance");
    let err = run_case(&dir, c, &v, &identity_policy(c, None)).unwrap_err();
    assert!(matches!(err, Refusal::Untrusted(_)), "{err:?}");
    assert!(!err.hint().is_empty());
}

#[test]
fn release_attestation_fails_a_github_actions_policy() {
    let Some((dir, cases)) = load() else { return };
    let c = case(&cases, "github-instance-release-attestation");
    let v = Verifier::embedded();
    let gh = Some("tuf-repo.github.com");
    run_case(&dir, c, &v, &identity_policy(c, gh)).unwrap();
    let policy = Policy::Provenance(Provenance {
        sigstore_url: gh.map(str::to_string),
        cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
        ..Provenance::default()
    });
    let err = run_case(&dir, c, &v, &policy).unwrap_err();
    assert!(
        matches!(
            err,
            Refusal::Mismatch {
                field: "cert_issuer",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn trust_root_override_does_not_relax_requirements() {
    let Some((dir, cases)) = load() else { return };
    // GitHub's bundle (TSA, no log), GitHub's trust material, but the policy names public-good: refused for the
    // missing log entry, not accepted because the trust material happens to fit.
    let c = case(&cases, "github-instance-private-provenance");
    let gh_root =
        || TrustRoot::from_file(&dir.join("trusted_root/github.trusted_root.json")).unwrap();
    let v = Verifier::with_trust_root(gh_root());
    let err = run_case(
        &dir,
        c,
        &v,
        &identity_policy(c, Some("tuf-repo-cdn.sigstore.dev")),
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::MissingEvidence(_)), "{err:?}");
    run_case(
        &dir,
        c,
        &v,
        &identity_policy(c, Some("tuf-repo.github.com")),
    )
    .unwrap();

    // A public-good bundle (log, SCT, no TSA) under GitHub's requirements: no RFC 3161 timestamp, refused, even
    // with the public-good trust material.
    let c = case(&cases, "conda-publish-attestation");
    let pg = Verifier::with_trust_root(
        TrustRoot::from_file(&dir.join("trusted_root/public-good.trusted_root.json")).unwrap(),
    );
    let err = run_case(
        &dir,
        c,
        &pg,
        &identity_policy(c, Some("tuf-repo.github.com")),
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::MissingEvidence(_)), "{err:?}");
}

#[test]
fn embedded_roots_match_the_fixture_roots() {
    let Some((dir, cases)) = load() else { return };
    let embedded = Verifier::embedded();
    for c in cases["cases"].as_array().unwrap() {
        let root = s(c, "trusted_root").unwrap();
        if !root.ends_with("/public-good.trusted_root.json")
            && !root.ends_with("/github.trusted_root.json")
        {
            continue;
        }
        let url = Some(instance_of(&root).sigstore_url());
        let got = run_case(&dir, c, &embedded, &identity_policy(c, url));
        if c["expect"] == "pass" {
            let v = got.unwrap_or_else(|e| panic!("{}: {e:?}", c["name"]));
            assert!(v.trust_root.snapshot.is_some());
        } else {
            let name = s(c, "name").unwrap();
            let want =
                expected_refusal(&name).unwrap_or_else(|| panic!("{name}: no expected reason"));
            if let Err(why) = refused_for(&got, want.kind, want.says) {
                panic!("{name} (embedded roots): {why}");
            }
        }
    }
}

fn cosign_layer(dir: &Path) -> (Vec<u8>, Value) {
    let d = dir.join("cosign-oci/salrashid123-server_image");
    let payload = std::fs::read(d.join("simplesigning-payload.json")).unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("signature-manifest.json")).unwrap())
            .unwrap();
    (payload, manifest["layers"][0]["annotations"].clone())
}

const SIGNED_IMAGE: &str =
    "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";

#[test]
fn cosign_signature_binds_the_image_digest() {
    let Some(dir) = fixtures() else { return };
    let (payload, ann) = cosign_layer(&dir);
    let sig = CosignSignature {
        payload: &payload,
        signature: ann["dev.cosignproject.cosign/signature"].as_str().unwrap(),
        certificate: ann["dev.sigstore.cosign/certificate"].as_str(),
        rekor_bundle: ann["dev.sigstore.cosign/bundle"].as_str(),
        rfc3161_timestamp: None,
        dsse: false,
    };
    let bundle = bundle_from_cosign_annotations(&sig).unwrap();
    let policy = Policy::Provenance(Provenance {
        repository_uri: Some("https://github.com/salrashid123/go-bazel-github-workflow".into()),
        signer_identity: Some("/.github/workflows/release.yaml".into()),
        ..Provenance::default()
    });
    let v = Verifier::embedded();
    let ok = v
        .verify(
            std::slice::from_ref(&bundle),
            Subject::CosignPayload {
                payload: &payload,
                image_digest: SIGNED_IMAGE,
            },
            &policy,
        )
        .unwrap();
    assert_eq!(
        ok.claims.source_repository_ref.as_deref(),
        Some("refs/tags/v0.0.30")
    );

    // The same valid signature, presented for another image by the same signer: refused.
    let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let err = v
        .verify(
            std::slice::from_ref(&bundle),
            Subject::CosignPayload {
                payload: &payload,
                image_digest: other,
            },
            &policy,
        )
        .unwrap_err();
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");
    assert!(err.to_string().contains(SIGNED_IMAGE), "{err}");

    // A signature whose SET is stripped has no signed time: refused for missing evidence.
    let stripped = CosignSignature {
        rekor_bundle: None,
        ..sig
    };
    let bundle = bundle_from_cosign_annotations(&stripped).unwrap();
    let err = v
        .verify(
            &[bundle],
            Subject::CosignPayload {
                payload: &payload,
                image_digest: SIGNED_IMAGE,
            },
            &policy,
        )
        .unwrap_err();
    assert!(matches!(err, Refusal::MissingEvidence(_)), "{err:?}");

    // The tampered payload: the signature no longer covers it.
    let mut tampered = payload.clone();
    let at = tampered.iter().position(|b| *b == b'c').unwrap();
    tampered[at] = b'C';
    let t = CosignSignature {
        payload: &tampered,
        ..sig
    };
    let bundle = bundle_from_cosign_annotations(&t).unwrap();
    let err = v
        .verify(
            &[bundle],
            Subject::CosignPayload {
                payload: &tampered,
                image_digest: SIGNED_IMAGE,
            },
            &policy,
        )
        .unwrap_err();
    assert!(matches!(err, Refusal::BadSignature(_)), "{err:?}");
}

#[test]
fn any_one_matching_bundle_is_enough() {
    let Some((dir, cases)) = load() else { return };
    let good = case(&cases, "hashedrekord-release-tag");
    let bad = std::fs::read_to_string(
        dir.join("conformance/signature-mismatch_fail/bundle.sigstore.json"),
    )
    .unwrap();
    let goodb = std::fs::read_to_string(dir.join(s(good, "bundle").unwrap())).unwrap();
    let bundles = vec![
        Bundle::from_json(&bad).unwrap(),
        Bundle::from_json(&goodb).unwrap(),
    ];
    let bytes = std::fs::read(dir.join(s(good, "artifact").unwrap())).unwrap();
    let v = Verifier::embedded();
    v.verify(
        &bundles,
        Subject::Blob(&bytes),
        &identity_policy(good, None),
    )
    .unwrap();
    let err = v
        .verify(
            &bundles[..1],
            Subject::Blob(&bytes),
            &identity_policy(good, None),
        )
        .unwrap_err();
    // One bundle: its own reason, not wrapped (it is about another artifact than `good`'s).
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");
    let err = v
        .verify(
            &[bundles[0].clone(), bundles[0].clone()],
            Subject::Blob(&bytes),
            &identity_policy(good, None),
        )
        .unwrap_err();
    assert!(
        matches!(err, Refusal::AllRefused(ref all)
            if all.len() == 2 && all.iter().all(|r| matches!(r, Refusal::DigestMismatch(_)))),
        "{err:?}"
    );
}

#[test]
fn no_verdict_without_a_policy() {
    let Some((dir, cases)) = load() else { return };
    let c = case(&cases, "hashedrekord-release-tag");
    let v = Verifier::embedded();
    let err = run_case(&dir, c, &v, &Policy::Identity(IdentityPolicy::default())).unwrap_err();
    assert!(matches!(err, Refusal::EmptyPolicy), "{err:?}");
    run_case(
        &dir,
        c,
        &v,
        &Policy::InsecureAnyIdentity { sigstore_url: None },
    )
    .unwrap();
}
