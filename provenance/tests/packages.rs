//! Package provenance in the indexes' formats through the one verdict function: the real npm provenance of
//! sigstore-js 2.1.0 (bundles v0.1 and v0.3, as npm's attestations API serves them) against the tarball's bytes
//! and against the lock's sha512 alone.

use std::path::{Path, PathBuf};

use sha2::Digest as _;
use thv_sandbox_provenance::packages::{
    npm_attestations, npm_purl, statement_subjects, SLSA_PROVENANCE_V1,
};
use thv_sandbox_provenance::{
    Policy, Provenance, Refusal, Subject, TrustRoot, Verifier, GITHUB_ACTIONS_ISSUER,
};

fn fixtures() -> Option<PathBuf> {
    let base = std::env::var_os("THV_SANDBOX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let dir = base.join("sigstore");
    if dir.join("cases.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI: Sigstore fixtures at {}",
        dir.display()
    );
    eprintln!(
        "SKIP: prerequisite missing: Sigstore fixtures at {}",
        dir.display()
    );
    None
}

fn api_answer(dir: &Path, version: &str) -> String {
    let bundle = std::fs::read_to_string(dir.join(format!(
        "gh-attestations/public-good/sigstore-js-2.1.0.npm-provenance.{version}.sigstore.json"
    )))
    .unwrap();
    format!(r#"{{"attestations":[{{"predicateType":"{SLSA_PROVENANCE_V1}","bundle":{bundle}}}]}}"#)
}

#[test]
fn npm_bundles_verify_against_the_tarball_and_its_sha512_and_nothing_else() {
    let Some(dir) = fixtures() else { return };
    let verifier = Verifier::with_trust_root(
        TrustRoot::from_file(&dir.join("trusted_root/public-good.trusted_root.json")).unwrap(),
    );
    let tgz = std::fs::read(dir.join("gh-attestations/public-good/sigstore-js-2.1.0.tgz")).unwrap();
    let sha512 = hex::encode(sha2::Sha512::digest(&tgz));
    let policy = Policy::Provenance(Provenance {
        repository_uri: Some("https://github.com/sigstore/sigstore-js".into()),
        signer_identity: Some("/.github/workflows/release.yml".into()),
        cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
        ..Provenance::default()
    });
    for version in ["v0.1", "v0.3"] {
        let atts = npm_attestations(&api_answer(&dir, version)).unwrap();
        assert_eq!(atts.len(), 1);
        assert!(atts[0].is_provenance());
        let bundles = vec![atts[0].bundle.clone()];
        let subjects = statement_subjects(&bundles[0]);
        assert_eq!(subjects[0].name, npm_purl("sigstore", "2.1.0"));
        assert!(subjects[0]
            .digests
            .contains(&("sha512".into(), sha512.clone())));
        verifier
            .verify(&bundles, Subject::Blob(&tgz), &policy)
            .unwrap();
        let v = verifier
            .verify(&bundles, Subject::Sha512(&sha512), &policy)
            .unwrap();
        assert_eq!(
            v.signer_identity.as_deref(),
            Some("/.github/workflows/release.yml")
        );
        // Another digest: refused by the verifier itself.
        let mut other = sha512.clone().into_bytes();
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        let other = String::from_utf8(other).unwrap();
        let got = verifier.verify(&bundles, Subject::Sha512(&other), &policy);
        assert!(
            matches!(got, Err(Refusal::DigestMismatch(_))),
            "{version}: {got:?}"
        );
        let got = verifier.verify(&bundles, Subject::Sha512("zz"), &policy);
        assert!(matches!(got, Err(Refusal::DigestMismatch(_))), "{got:?}");
        // The sha256 of the tarball is not what npm attests.
        let sha256 = hex::encode(sha2::Sha256::digest(&tgz));
        let got = verifier.verify(&bundles, Subject::Sha256(&sha256), &policy);
        assert!(matches!(got, Err(Refusal::DigestMismatch(_))), "{got:?}");
    }
}
