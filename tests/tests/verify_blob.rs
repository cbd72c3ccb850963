//! End-to-end: `thv-sandbox verify --bundle … (--artifact … | --digest …)` over real fixture bundles. The exit
//! status is the verdict: 0 verified, 1 refused, 2 usage.

use std::path::PathBuf;
use std::process::Command;

use thv_sandbox_e2e::{require, thv_sandbox_bin};

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

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify(args: &[&str]) -> Out {
    let dir = fixtures().expect("fixtures");
    let out = Command::new(thv_sandbox_bin())
        .arg("verify")
        .args(args)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        // Hermetic: the embedded trust roots, no refresh through TUF (tests/tests/trust_tuf.rs covers that).
        .env("THV_SANDBOX_TUF_REFRESH", "0")
        .output()
        .expect("run thv-sandbox");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const WHL_BUNDLE: &str = "hashedrekord/rfc8785-0.1.2-py3-none-any.whl.v0.2.sigstore.json";
const WHL: &str = "hashedrekord/rfc8785-0.1.2-py3-none-any.whl";
const GH_ISSUER: &str = "https://token.actions.githubusercontent.com";
const WHL_SAN: &str =
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2";

#[test]
fn identity_or_issuer_alone_verifies() {
    if fixtures().is_none() {
        return;
    }
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--certificate-identity",
        WHL_SAN,
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("verified:"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--certificate-oidc-issuer",
        GH_ISSUER,
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--certificate-github-workflow-repository",
        "trailofbits/rfc8785.py",
        "--certificate-github-workflow-ref",
        "refs/tags/v0.1.2",
        "--json",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["result"]["claims"]["san"], WHL_SAN);
    assert_eq!(
        doc["result"]["signer_identity"],
        "/.github/workflows/release.yml"
    );
}

#[test]
fn wrong_identity_wrong_artifact_and_tampering_are_refused() {
    if fixtures().is_none() {
        return;
    }
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--certificate-identity",
        "https://github.com/trailofbits/rfc8785.py/.github/workflows/ci.yml@refs/heads/main",
        "--json",
    ]);
    assert_eq!(o.code, thv_sandbox_runtime::EXIT_REFUSED, "{}", o.stderr);
    assert!(
        o.stderr.contains("refused:") && o.stderr.contains("hint:"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(WHL_SAN),
        "names the actual signer: {}",
        o.stderr
    );
    let doc: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(doc["reason"], "identity-mismatch");

    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        "conformance/a.txt",
        "--certificate-oidc-issuer",
        GH_ISSUER,
    ]);
    assert_eq!(o.code, thv_sandbox_runtime::EXIT_REFUSED, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "digest mismatch: artifact mismatch: message digest in bundle does not match artifact hash"
        ),
        "{}",
        o.stderr
    );

    let o = verify(&[
        "--bundle",
        "conformance/checkpoint-wrong-roothash_fail/bundle.sigstore.json",
        "--artifact",
        "conformance/a.txt",
        "--certificate-oidc-issuer",
        GH_ISSUER,
        "--json",
    ]);
    assert_eq!(o.code, thv_sandbox_runtime::EXIT_REFUSED, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("inclusion proof root hash does not match checkpoint root hash"),
        "{}",
        o.stderr
    );
    let doc: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(doc["reason"], "untrusted", "{doc}");
}

#[test]
fn instance_and_trust_root_flags() {
    if fixtures().is_none() {
        return;
    }
    let private = [
        "--bundle",
        "gh-attestations/github-instance/attest-demo-private.provenance.jsonl",
        "--artifact",
        "gh-attestations/github-instance/github_provenance_demo-0.0.12-py3-none-any.whl",
        "--certificate-github-workflow-repository",
        "actions/attest-demo",
    ];
    // Public-good requirements (the default) refuse GitHub's evidence.
    let o = verify(&private);
    assert_eq!(o.code, thv_sandbox_runtime::EXIT_REFUSED, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("missing evidence: public-good Sigstore requires a transparency-log entry"),
        "{}",
        o.stderr
    );
    let mut gh = private.to_vec();
    gh.extend(["--sigstore-url", "tuf-repo.github.com"]);
    let o = verify(&gh);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // A trust root file replaces material: the staging-signed bundle verifies with the staging root only.
    let staging = [
        "--bundle",
        "conformance/bundle-from-wrong-instance_fail/bundle.sigstore.json",
        "--artifact",
        "conformance/a.txt",
        "--certificate-oidc-issuer",
        GH_ISSUER,
    ];
    let o = verify(&staging);
    assert_eq!(o.code, thv_sandbox_runtime::EXIT_REFUSED, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("untrusted: invalid inclusion promise: No log key valid at integrated time"),
        "{}",
        o.stderr
    );
    let mut with_root = staging.to_vec();
    with_root.extend(["--trust-root", "trusted_root/staging.trusted_root.json"]);
    let o = verify(&with_root);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // A digest instead of the file.
    let o = verify(&[
        "--bundle",
        "gh-attestations/github-instance/release-attestation-communique.sigstore.json",
        "--digest",
        "sha256:76f1fe8593bf227cca2c089e3c16dc95014a8d3e89c5dd220530469ca043c428",
        "--certificate-identity",
        "https://dotcom.releases.github.com",
        "--sigstore-url",
        "tuf-repo.github.com",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn usage_errors() {
    if fixtures().is_none() {
        return;
    }
    // Neither identity nor issuer: demands --insecure-any-identity.
    let o = verify(&["--bundle", WHL_BUNDLE, "--artifact", WHL]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--insecure-any-identity"), "{}", o.stderr);
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--insecure-any-identity",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--digest",
        "sha256:xyz",
        "--insecure-any-identity",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = verify(&["--bundle", WHL_BUNDLE, "--insecure-any-identity"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = verify(&[
        "--bundle",
        WHL_BUNDLE,
        "--artifact",
        WHL,
        "--insecure-any-identity",
        "--certificate-oidc-issuer",
        GH_ISSUER,
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

/// ux review (a) 8: `--bundle` and `--artifact` take `~` as the home directory, like every path flag.
#[test]
fn bundle_and_artifact_paths_expand_the_home_directory() {
    let Some(dir) = fixtures() else {
        return;
    };
    let out = Command::new(thv_sandbox_bin())
        .args(["verify", "--bundle"])
        .arg(format!("~/{WHL_BUNDLE}"))
        .arg("--artifact")
        .arg(format!("~/{WHL}"))
        .args(["--certificate-identity", WHL_SAN])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .env("THV_SANDBOX_TUF_REFRESH", "0")
        .output()
        .expect("run thv-sandbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("verified:"), "{stderr}");
}
