//! End-to-end: evidence discovery through a real docker-registry, verified with real Sigstore evidence from the
//! fixtures, and the verification gate of the pull (nothing of a refused image is fetched).

use std::path::PathBuf;

use serde_json::{json, Value};
use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
use thv_sandbox_e2e::{require, sha256_digest, thv_sandbox_bin, ImageBuilder, Layer};
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::distribution::{PullOptions, PullPolicy};
use thv_sandbox_runtime::image::reference::Reference;
use thv_sandbox_runtime::provenance::{Policy, Provenance, Refusal};
use thv_sandbox_runtime::trust::evidence::{discover_blocking, DiscoveryOptions, ItemContent};
use thv_sandbox_runtime::trust::verification::{Gate, Mode, Outcome, TufSettings, Verification};

fn fixtures() -> Option<PathBuf> {
    let base = std::env::var_os("THV_SANDBOX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let dir = base.join("sigstore");
    require(
        dir.join("cases.json").is_file(),
        &format!("Sigstore fixtures at {}", dir.display()),
    )
    .then_some(dir)
}

fn have_registry() -> bool {
    require(
        registry_available(),
        "docker-registry (apt install docker-registry)",
    )
}

const SIGNED_INDEX: &str =
    "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes the real cosign signature of salrashid123/server_image (payload, cosign's config, the manifest with
/// its annotations) under `tag`.
fn push_cosign_signature(registry: &TestRegistry, repo: &str, tag: &str, dir: &std::path::Path) {
    let d = dir.join("cosign-oci/salrashid123-server_image");
    let payload = std::fs::read(d.join("simplesigning-payload.json")).unwrap();
    registry.push_blob(repo, &payload).unwrap();
    // cosign's config for a one-layer signature image (reconstructed; its digest is the one the manifest names).
    let config = format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
        sha256_digest(&payload)
    );
    let config_digest = registry.push_blob(repo, config.as_bytes()).unwrap();
    let manifest = std::fs::read(d.join("signature-manifest.json")).unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["config"]["digest"], config_digest.as_str());
    registry
        .push_manifest(repo, tag, OCI_MANIFEST, &manifest)
        .unwrap();
}

fn salrashid_policy() -> Policy {
    Policy::Provenance(Provenance {
        repository_uri: Some("https://github.com/salrashid123/go-bazel-github-workflow".into()),
        repository_ref: Some("refs/tags/v0.0.30".into()),
        signer_identity: Some("/.github/workflows/release.yaml".into()),
        runner_environment: Some("github-hosted".into()),
        cert_issuer: Some("https://token.actions.githubusercontent.com".into()),
        ..Provenance::default()
    })
}

/// The defaults, hermetic: the embedded trust roots, never a TUF refresh from the network (the library does not
/// read `THV_SANDBOX_TUF_REFRESH`; `TufSettings::default()` refreshes from the real Sigstore CDN).
fn hermetic() -> Verification {
    Verification {
        tuf: TufSettings {
            refresh: false,
            ..TufSettings::default()
        },
        ..Verification::default()
    }
}

/// No TUF refresh was attempted under `cache` (a refresh, failed or not, writes `trust/<instance>/state.json`).
fn assert_no_tuf_refresh(cache: &std::path::Path) {
    let states: Vec<_> = walk(cache)
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| n == "state.json")
                && p.ancestors()
                    .nth(2)
                    .and_then(|d| d.file_name())
                    .is_some_and(|n| n == "trust")
        })
        .collect();
    assert!(states.is_empty(), "a TUF refresh was attempted: {states:?}");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

fn gate(policy: Policy, cache: &std::path::Path) -> Gate {
    Gate::new(
        &Verification {
            policy: Some(policy),
            mode: Some(Mode::Enabled),
            ..hermetic()
        },
        cache,
    )
    .unwrap()
}

#[test]
fn a_cosign_signature_is_found_at_its_tag_and_binds_only_its_digest() {
    let Some(dir) = fixtures() else { return };
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let repo = "salrashid123/server_image";
    let hex = SIGNED_INDEX.strip_prefix("sha256:").unwrap();
    push_cosign_signature(&registry, repo, &format!("sha256-{hex}.sig"), &dir);
    // The same signature, copied to another image's signature tag (same signer, different image).
    let other = format!("sha256:{}", "ab".repeat(32));
    push_cosign_signature(
        &registry,
        repo,
        &format!("sha256-{}.sig", "ab".repeat(32)),
        &dir,
    );

    let cache = tempfile::tempdir().unwrap();
    let reference: Reference = format!("{}/{repo}:v1", registry.host()).parse().unwrap();
    let opts = PullOptions::new(cache.path());
    let signed = SIGNED_INDEX.parse().unwrap();
    let ev = discover_blocking(
        &reference,
        std::slice::from_ref(&signed),
        &opts,
        &DiscoveryOptions::default(),
    )
    .expect("discover");
    assert_eq!(ev.items.len(), 1, "{ev:?}");
    assert!(matches!(
        ev.items[0].content,
        ItemContent::Cosign { dsse: false, .. }
    ));
    assert!(
        ev.searched.iter().any(|s| s.ends_with(".att")),
        "{:?}",
        ev.searched
    );

    let g = gate(salrashid_policy(), cache.path());
    // As the index the platform manifest was chosen from.
    let manifest = format!("sha256:{}", "cd".repeat(32)).parse().unwrap();
    let (verified, subject, source) = g
        .verify_evidence(&ev, Some(&signed), &manifest, &salrashid_policy())
        .expect("verified");
    assert_eq!(subject, signed);
    assert!(source.ends_with(".sig"), "{source}");
    assert_eq!(
        verified.signer_identity.as_deref(),
        Some("/.github/workflows/release.yaml")
    );
    // Evidence about an index does not vouch for a manifest from nowhere.
    let err = g
        .verify_evidence(&ev, None, &manifest, &salrashid_policy())
        .unwrap_err();
    assert!(matches!(err, Refusal::NoEvidence { .. }), "{err:?}");

    // A wrong expected workflow, or ref: refused, naming both.
    let Policy::Provenance(mut p) = salrashid_policy() else {
        unreachable!()
    };
    p.signer_identity = Some("/.github/workflows/ci.yaml".into());
    let err = g
        .verify_evidence(&ev, None, &signed, &Policy::Provenance(p.clone()))
        .unwrap_err();
    assert!(
        err.to_string().contains("/.github/workflows/release.yaml"),
        "{err}"
    );
    p.signer_identity = None;
    p.repository_ref = Some("refs/heads/main".into());
    let err = g
        .verify_evidence(&ev, None, &signed, &Policy::Provenance(p))
        .unwrap_err();
    assert!(
        matches!(&err, Refusal::Mismatch { field, .. } if *field == "repository_ref"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("refs/heads/main")
            && err.to_string().contains("refs/tags/v0.0.30"),
        "{err}"
    );

    // The copied signature is found for the other digest, and refused: its payload names the signed image.
    let other_digest = other.parse().unwrap();
    let ev = discover_blocking(
        &reference,
        std::slice::from_ref(&other_digest),
        &opts,
        &DiscoveryOptions::default(),
    )
    .expect("discover");
    assert_eq!(ev.items.len(), 1);
    let err = g
        .verify_evidence(&ev, None, &other_digest, &salrashid_policy())
        .unwrap_err();
    assert!(matches!(err, Refusal::DigestMismatch(_)), "{err:?}");
    assert!(err.to_string().contains(SIGNED_INDEX), "{err}");
    assert_no_tuf_refresh(cache.path());
}

#[test]
fn a_bundle_is_found_through_the_tag_schema_fallback_with_ghcr_empty_artifact_type() {
    let Some(dir) = fixtures() else { return };
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let repo = "malancas/attest-demo";
    // The subject of this real attestation (a wheel's sha256), standing in for an image digest.
    let subject = "sha256:49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25";
    let bundle =
        std::fs::read(dir.join("gh-attestations/public-good/reusable-workflow.sigstore.json"))
            .unwrap();
    let bundle_digest = registry.push_blob(repo, &bundle).unwrap();
    let empty_digest = registry.push_blob(repo, b"{}").unwrap();
    let bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": bundle_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": bundle_type, "digest": bundle_digest, "size": bundle.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1234},
    })
    .to_string();
    let artifact_digest = registry
        .push_manifest(
            repo,
            &sha256_digest(artifact.as_bytes()),
            OCI_MANIFEST,
            artifact.as_bytes(),
        )
        .unwrap();
    // docker-registry 2.8 has no referrers API: the tag schema, listing the referrer as GHCR does (empty type).
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": artifact_digest, "size": artifact.len(),
            "artifactType": "application/vnd.oci.empty.v1+json",
        }],
    })
    .to_string();
    let hex = subject.strip_prefix("sha256:").unwrap();
    registry
        .push_manifest(repo, &format!("sha256-{hex}"), OCI_INDEX, index.as_bytes())
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let reference: Reference = format!("{}/{repo}:v1", registry.host()).parse().unwrap();
    let d = subject.parse().unwrap();
    let ev = discover_blocking(
        &reference,
        std::slice::from_ref(&d),
        &PullOptions::new(cache.path()),
        &DiscoveryOptions::default(),
    )
    .expect("discover");
    assert_eq!(ev.items.len(), 1, "{ev:?}");
    assert!(
        ev.items[0].source.starts_with("referrer "),
        "{}",
        ev.items[0].source
    );
    assert!(
        ev.searched
            .iter()
            .any(|s| s == &format!("tag sha256-{hex}")),
        "{:?}",
        ev.searched
    );

    // ToolHive semantics, the reusable-workflow case: the signer identity is the full reusable workflow URL.
    let policy = Policy::Provenance(Provenance {
        repository_uri: Some("https://github.com/malancas/attest-demo".into()),
        signer_identity: Some(
            "https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml".into(),
        ),
        runner_environment: Some("github-hosted".into()),
        attestation: Some(thv_sandbox_runtime::provenance::Attestation {
            predicate_type: Some("https://slsa.dev/provenance/v1".into()),
            predicate: None,
        }),
        ..Provenance::default()
    });
    let g = gate(policy.clone(), cache.path());
    g.verify_evidence(&ev, None, &d, &policy).expect("verified");
    // A self-hosted-runner policy or another repository: refused.
    let Policy::Provenance(mut p) = policy else {
        unreachable!()
    };
    p.runner_environment = Some("self-hosted".into());
    let err = g
        .verify_evidence(&ev, None, &d, &Policy::Provenance(p.clone()))
        .unwrap_err();
    assert!(
        matches!(&err, Refusal::Mismatch { field, .. } if *field == "runner_environment"),
        "{err:?}"
    );
    assert!(err.to_string().contains("github-hosted"), "{err}");
    p.runner_environment = None;
    p.repository_uri = Some("https://github.com/malancas/other".into());
    let err = g
        .verify_evidence(&ev, None, &d, &Policy::Provenance(p))
        .unwrap_err();
    assert!(
        matches!(&err, Refusal::Mismatch { field, .. } if *field == "repository_uri"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("https://github.com/malancas/attest-demo"),
        "{err}"
    );
    assert_no_tuf_refresh(cache.path());
}

fn unsigned_image(
    registry: &TestRegistry,
    repo: &str,
) -> (tempfile::TempDir, thv_sandbox_e2e::BuiltImage) {
    let layout = tempfile::tempdir().unwrap();
    let built = ImageBuilder::new()
        .layer(
            Layer::new()
                .dir("/etc", 0o755)
                .file("/etc/marker", "unsigned\n", 0o644),
        )
        .cmd(["/hello"])
        .write(layout.path(), "v1")
        .expect("image");
    registry
        .push_image(layout.path(), &built, repo, "v1")
        .expect("push");
    (layout, built)
}

#[test]
fn an_unsigned_image_is_refused_before_any_layer_under_enabled_and_pulled_with_a_warning_under_warn(
) {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = unsigned_image(&registry, "e2e/unsigned");
    let image = format!("{}/e2e/unsigned:v1", registry.host());
    let cache = tempfile::tempdir().unwrap();
    let dirs = Dirs::from_env(Some(cache.path().to_owned())).unwrap();
    let policy = Some(salrashid_policy());

    let enabled = Verification {
        policy: policy.clone(),
        ..hermetic()
    };
    let err = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &enabled,
    )
    .unwrap_err();
    assert!(
        matches!(err, thv_sandbox_runtime::Error::Refused(_)),
        "a typed refusal: {err:?}"
    );
    // As the user reads it: the error, then its hint (which says where it looked).
    let text = format!("{err}\nhint: {}", err.hint().unwrap_or_default());
    assert!(text.contains("no signature or attestation found"), "{text}");
    assert!(text.contains(".sig"), "says where it looked: {text}");
    assert_eq!(
        registry.blob_gets(&built.layers[0].digest),
        0,
        "{}",
        registry.log()
    );

    // Enabled without any policy: refused too, before any layer.
    let no_policy = Verification {
        mode: Some(Mode::Enabled),
        ..hermetic()
    };
    let err = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &no_policy,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no provenance is declared"),
        "{err}"
    );
    assert_eq!(registry.blob_gets(&built.layers[0].digest), 0);

    // Warn: pulled, and the outcome says unverified.
    let warn = Verification {
        policy,
        mode: Some(Mode::Warn),
        ..hermetic()
    };
    let (pulled, outcome) = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &warn,
    )
    .expect("pull");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    assert!(matches!(outcome, Outcome::Unverified { .. }), "{outcome:?}");

    // Now cached: `enabled` still refuses it (no record, no evidence; the registry is asked again).
    let err = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &enabled,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no signature or attestation found"),
        "{err}"
    );
    // And with --pull never it is refused without the registry.
    let err = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Never,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &enabled,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no signature or attestation found"),
        "{err}"
    );

    // Offline, `warn` still runs the cached image (unverified); `enabled` cannot check it and says so.
    let mut registry = registry;
    registry.stop();
    let (_, outcome) = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &warn,
    )
    .expect("offline");
    assert!(matches!(outcome, Outcome::Unverified { .. }), "{outcome:?}");
    let err = thv_sandbox_runtime::pull_verified(
        &image,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &enabled,
    )
    .unwrap_err();
    // Not the verdict on the image: the registry is gone, so the evidence cannot be looked up.
    assert!(
        err.to_string().contains("cannot reach the OCI registry"),
        "{err}"
    );
    assert_no_tuf_refresh(cache.path());
}

#[test]
fn verify_image_command_exit_status_is_the_verdict() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = unsigned_image(&registry, "e2e/unsigned");
    let image = format!("{}/e2e/unsigned:v1", registry.host());
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(thv_sandbox_bin())
            .arg("verify")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("THV_SANDBOX_CACHE_DIR", cache.path())
            // Hermetic: the embedded trust roots, no refresh through TUF.
            .env("THV_SANDBOX_TUF_REFRESH", "0")
            .output()
            .expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[
        &image,
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ]);
    assert_eq!(code, thv_sandbox_runtime::EXIT_REFUSED, "{stderr}");
    assert!(
        stderr.contains("no signature or attestation found") && stderr.contains("hint:"),
        "{stderr}"
    );
    // No identity to check against: refused, as for a registry entry without provenance (`verify time`).
    let (code, stderr) = run(&[&image]);
    assert_eq!(code, thv_sandbox_runtime::EXIT_REFUSED, "{stderr}");
    assert!(stderr.contains("--insecure-any-identity"), "{stderr}");
    assert_eq!(
        registry.blob_gets(&built.layers[0].digest),
        0,
        "verify fetches no layer"
    );
}

/// The salrashid123 signature as evidence found for `subject`.
fn cosign_evidence(
    dir: &std::path::Path,
    subject: &str,
) -> thv_sandbox_runtime::trust::evidence::Evidence {
    let d = dir.join("cosign-oci/salrashid123-server_image");
    let payload = std::fs::read_to_string(d.join("simplesigning-payload.json")).unwrap();
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("signature-manifest.json")).unwrap())
            .unwrap();
    let a = &m["layers"][0]["annotations"];
    let s = |k: &str| a[k].as_str().map(str::to_string);
    thv_sandbox_runtime::trust::evidence::Evidence {
        items: vec![thv_sandbox_runtime::trust::evidence::Item {
            subject: subject.parse().unwrap(),
            source: "tag sha256-….sig".into(),
            content: ItemContent::Cosign {
                payload,
                signature: s("dev.cosignproject.cosign/signature").unwrap(),
                certificate: s("dev.sigstore.cosign/certificate"),
                rekor_bundle: s("dev.sigstore.cosign/bundle"),
                rfc3161_timestamp: None,
                dsse: false,
            },
        }],
        ..Default::default()
    }
}

/// The text of a refusal (reason and hint), panicking on any other verdict.
fn refusal(outcome: Outcome) -> String {
    match outcome {
        Outcome::Refused { reason, hint } => format!("{reason}\nhint: {hint}"),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_record_is_reused_only_under_the_same_policy_and_trust_root() {
    let Some(dir) = fixtures() else { return };
    let cache = tempfile::tempdir().unwrap();
    // The signed digest, taken here as the platform manifest (no index).
    let manifest = SIGNED_INDEX.parse().unwrap();
    let ev = cosign_evidence(&dir, SIGNED_INDEX);

    let g = gate(salrashid_policy(), cache.path());
    let Outcome::Verified {
        record,
        reused: false,
    } = g.decide("img", None, &manifest, Some(&ev))
    else {
        panic!("not verified from the evidence")
    };
    assert_eq!(record.manifest_digest.to_string(), SIGNED_INDEX);
    assert_eq!(
        record.verified.claims.source_repository_uri.as_deref(),
        Some("https://github.com/salrashid123/go-bazel-github-workflow")
    );
    assert_eq!(
        record.verified.trust_root.snapshot.as_deref(),
        Some(thv_sandbox_runtime::provenance::PUBLIC_GOOD_SNAPSHOT)
    );
    assert!(record.workflow().unwrap().contains("release.yaml"));

    // A warm run, same policy: the record, no evidence needed.
    let g = gate(salrashid_policy(), cache.path());
    assert!(g.on_hand(&manifest));
    assert!(matches!(
        g.decide("img", None, &manifest, None),
        Outcome::Verified { reused: true, .. }
    ));

    // Another policy field (runner unset): not the record; the stored evidence is verified again, offline.
    let Policy::Provenance(mut p) = salrashid_policy() else {
        unreachable!()
    };
    p.runner_environment = None;
    let g = gate(Policy::Provenance(p.clone()), cache.path());
    assert!(matches!(
        g.decide("img", None, &manifest, None),
        Outcome::Verified { reused: false, .. }
    ));

    // A changed expected workflow: the cached, once-verified image is refused.
    p.signer_identity = Some("/.github/workflows/other.yaml".into());
    let g = gate(Policy::Provenance(p), cache.path());
    let err = refusal(g.decide("img", None, &manifest, None));
    assert!(
        err.contains("/.github/workflows/release.yaml") && err.contains("other.yaml"),
        "{err}"
    );

    // Another trust root (the same material, from a file): not the record; verified again.
    let v = Verification {
        policy: Some(salrashid_policy()),
        trust_root: Some(dir.join("trusted_root/public-good.trusted_root.json")),
        ..hermetic()
    };
    let g = Gate::new(&v, cache.path()).unwrap();
    assert!(g.reusable_record(&manifest, None).is_none());
    assert!(matches!(
        g.decide("img", None, &manifest, None),
        Outcome::Verified { reused: false, .. }
    ));
    // An unrelated root: refused.
    let v = Verification {
        trust_root: Some(dir.join("trusted_root/staging.trusted_root.json")),
        ..v
    };
    let g = Gate::new(&v, cache.path()).unwrap();
    let err = refusal(g.decide("img", None, &manifest, None));
    assert!(
        err.contains("untrusted:") && err.contains("No log key valid"),
        "{err}"
    );
    assert_no_tuf_refresh(cache.path());
}
