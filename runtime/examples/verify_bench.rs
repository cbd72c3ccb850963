//! Verification time of a cached image, offline: from its verification record, and from its stored evidence
//! (the bundle verified again). Each iteration is what one `thv-sandbox run` of a cached image does: a new gate
//! (trust root loaded), one decision.
//!
//! `cargo run --release -p thv-sandbox-runtime --example verify_bench -- FIXTURES_DIR [RUNS]`
//! (FIXTURES_DIR: `../shared/fixtures/sigstore`; the real cosign signature of salrashid123/server_image).

use std::time::Instant;

use thv_sandbox_runtime::evidence::{Evidence, Item, ItemContent};
use thv_sandbox_runtime::provenance::{Policy, Provenance};
use thv_sandbox_runtime::verification::{Gate, Mode, Outcome, Verification};

const SIGNED: &str = "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("FIXTURES_DIR"));
    let runs: usize = args.next().map_or(50, |n| n.parse().expect("RUNS"));
    let d = dir.join("cosign-oci/salrashid123-server_image");
    let payload = std::fs::read_to_string(d.join("simplesigning-payload.json")).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("signature-manifest.json")).unwrap())
            .unwrap();
    let a = &m["layers"][0]["annotations"];
    let s = |k: &str| a[k].as_str().map(str::to_string);
    let ev = Evidence {
        items: vec![Item {
            subject: SIGNED.parse().unwrap(),
            source: "tag .sig".into(),
            content: ItemContent::Cosign {
                payload,
                signature: s("dev.cosignproject.cosign/signature").unwrap(),
                certificate: s("dev.sigstore.cosign/certificate"),
                rekor_bundle: s("dev.sigstore.cosign/bundle"),
                rfc3161_timestamp: None,
                dsse: false,
            },
        }],
        ..Evidence::default()
    };
    let cfg = Verification {
        mode: Some(Mode::Enabled),
        policy: Some(Policy::Provenance(Provenance {
            repository_uri: Some("https://github.com/salrashid123/go-bazel-github-workflow".into()),
            signer_identity: Some("/.github/workflows/release.yaml".into()),
            runner_environment: Some("github-hosted".into()),
            cert_issuer: Some("https://token.actions.githubusercontent.com".into()),
            ..Provenance::default()
        })),
        ..Verification::default()
    };
    let cache = tempfile::tempdir().unwrap();
    let manifest = SIGNED.parse().unwrap();
    // Store the evidence (first decision), which also writes the record.
    Gate::new(&cfg, cache.path())
        .unwrap()
        .decide("bench", None, &manifest, Some(&ev))
        .unwrap();
    let record = cache
        .path()
        .join("verification")
        .join(format!("{}.record.json", &SIGNED[7..]));
    let saved = std::fs::read(&record).unwrap();

    let mut from_record = Vec::new();
    let mut from_bundle = Vec::new();
    for _ in 0..runs {
        // Interleaved: from the record, then from the stored bundle (record removed).
        std::fs::write(&record, &saved).unwrap();
        let t = Instant::now();
        let g = Gate::new(&cfg, cache.path()).unwrap();
        g.decide("bench", None, &manifest, None).unwrap();
        from_record.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(matches!(
            g.outcome(),
            Some(Outcome::Verified { reused: true, .. })
        ));

        std::fs::remove_file(&record).unwrap();
        let t = Instant::now();
        let g = Gate::new(&cfg, cache.path()).unwrap();
        g.decide("bench", None, &manifest, None).unwrap();
        from_bundle.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(matches!(
            g.outcome(),
            Some(Outcome::Verified { reused: false, .. })
        ));
    }
    for (name, mut v) in [("from record", from_record), ("from bundle", from_bundle)] {
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "{name}: median {median:.3} ms, min {:.3} ms, max {:.3} ms ({runs} runs)",
            v[0],
            v[v.len() - 1]
        );
    }
}
