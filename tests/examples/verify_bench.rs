//! Verification time of a cached image, offline: from its verification record, and from its stored evidence
//! (the bundle verified again), each with the embedded trust root (refreshing through TUF off, nothing cached) and
//! with a trust root refreshed through TUF earlier and kept in the cache (verified again offline from its TUF
//! metadata by every new gate). Each iteration is what one warm `thv-sandbox run` of a cached image does at the
//! gate: a new gate (trust root loaded), one decision. The four cases are interleaved, their order rotated.
//!
//! The TUF repository is a real one (tests/src/tuf_repo.rs) served on loopback for the first, untimed refresh and
//! stopped before the timed runs; its `trusted_root.json` target is the embedded public-good root, byte for byte,
//! so the decision path is the same apart from where the root comes from.
//!
//! `cargo run --release -p thv-sandbox-e2e --example verify_bench -- FIXTURES_DIR [RUNS]`
//! (FIXTURES_DIR: `../shared/fixtures/sigstore`; the real cosign signature of salrashid123/server_image).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use thv_sandbox_e2e::tuf_repo::{StaticServer, TufRepo};
use thv_sandbox_runtime::provenance::{self as prov, Instance, Policy, Provenance};
use thv_sandbox_runtime::trust::evidence::{Evidence, Item, ItemContent};
use thv_sandbox_runtime::trust::verification::{Gate, Mode, Outcome, TufSettings, Verification};

const SIGNED: &str = "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321";

/// One measured case.
struct Case {
    name: &'static str,
    cfg: Verification,
    cache: PathBuf,
    /// The record to put in place before the decision; `None`: no record (the bundle is verified again).
    record: Option<Vec<u8>>,
    /// The trust root's source must start with this (`embedded`, `tuf:`).
    source: &'static str,
    times: Vec<f64>,
}

fn record_path(cache: &Path) -> PathBuf {
    cache
        .join("verification")
        .join(format!("{}.record.json", &SIGNED[7..]))
}

fn evidence(dir: &Path) -> Evidence {
    let d = dir.join("cosign-oci/salrashid123-server_image");
    let payload = std::fs::read_to_string(d.join("simplesigning-payload.json")).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("signature-manifest.json")).unwrap())
            .unwrap();
    let a = &m["layers"][0]["annotations"];
    let s = |k: &str| a[k].as_str().map(str::to_string);
    Evidence {
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
    }
}

/// The trust root a new gate for `cfg` uses (its `source`).
fn root_source(cfg: &Verification, cache: &Path) -> String {
    let g = Gate::new(cfg, cache).unwrap();
    g.verifier()
        .trust_root(Instance::PublicGood)
        .unwrap()
        .id()
        .source
        .clone()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("FIXTURES_DIR"));
    let runs: usize = args.next().map_or(50, |n| n.parse().expect("RUNS"));
    let ev = evidence(&dir);
    let base = Verification {
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
    let manifest = SIGNED.parse().unwrap();

    // Embedded root: refreshing off, no TUF state in the cache.
    let embedded_cache = tempfile::tempdir().unwrap();
    let embedded = Verification {
        tuf: TufSettings {
            refresh: false,
            ..TufSettings::default()
        },
        ..base.clone()
    };

    // Cached TUF root: one real refresh from a repository on loopback (refreshing on, as by default; the next
    // one is due in 24 h), then the repository goes away, so every timed gate verifies the cached metadata again
    // offline and never reaches the network.
    let tuf_cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    repo.publish(
        prov::embedded_json(Instance::PublicGood).as_bytes(),
        "2999-01-01T00:00:00Z",
    );
    let mut server = StaticServer::start(repo.dir.path());
    let tuf = Verification {
        tuf: TufSettings {
            refresh: true,
            public_good: prov::tuf::Repository {
                url: Some(server.url.clone()),
                bootstrap: Some(repo.root_json().to_vec()),
            },
            github: prov::tuf::Repository::default(),
        },
        ..base.clone()
    };
    let refreshed = root_source(&tuf, tuf_cache.path());
    server.stop();
    assert!(
        refreshed.starts_with("tuf:"),
        "the refresh from the loopback repository did not happen: {refreshed}"
    );
    let _ = writeln!(
        std::io::stdout(),
        "trust roots: embedded: {}; cached TUF: {} (server stopped)",
        root_source(&embedded, embedded_cache.path()),
        root_source(&tuf, tuf_cache.path())
    );

    // Store the evidence in each cache (first decision), which also writes the record.
    let mut records = Vec::new();
    for (cfg, cache) in [(&embedded, embedded_cache.path()), (&tuf, tuf_cache.path())] {
        Gate::new(cfg, cache)
            .unwrap()
            .decide("bench", None, &manifest, Some(&ev))
            .admit("bench")
            .unwrap();
        records.push(std::fs::read(record_path(cache)).unwrap());
    }
    let case = |name, cfg: &Verification, cache: &Path, record: Option<&Vec<u8>>, source| Case {
        name,
        cfg: cfg.clone(),
        cache: cache.to_path_buf(),
        record: record.cloned(),
        source,
        times: Vec::with_capacity(runs),
    };
    let mut cases = [
        case(
            "from record, embedded root",
            &embedded,
            embedded_cache.path(),
            Some(&records[0]),
            "embedded",
        ),
        case(
            "from record, cached TUF root",
            &tuf,
            tuf_cache.path(),
            Some(&records[1]),
            "tuf:",
        ),
        case(
            "from bundle, embedded root",
            &embedded,
            embedded_cache.path(),
            None,
            "embedded",
        ),
        case(
            "from bundle, cached TUF root",
            &tuf,
            tuf_cache.path(),
            None,
            "tuf:",
        ),
    ];

    let n = cases.len();
    for i in 0..runs {
        for k in 0..n {
            let c = &mut cases[(i + k) % n];
            let path = record_path(&c.cache);
            match &c.record {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let t = Instant::now();
            let g = Gate::new(&c.cfg, &c.cache).unwrap();
            let outcome = g.decide("bench", None, &manifest, None);
            c.times.push(t.elapsed().as_secs_f64() * 1e3);
            // Outside the clock: the decision took the intended path, with the intended root.
            let Outcome::Verified { record, reused } = outcome else {
                panic!("{}: not verified: {outcome:?}", c.name);
            };
            assert_eq!(reused, c.record.is_some(), "{}", c.name);
            let source = &record.verified.trust_root.source;
            assert!(source.starts_with(c.source), "{}: {source}", c.name);
        }
    }
    let mut out = std::io::stdout();
    for c in &mut cases {
        c.times.sort_by(f64::total_cmp);
        let v = &c.times;
        let _ = writeln!(
            out,
            "{:<30} median {:.3} ms, p90 {:.3} ms, min {:.3} ms, max {:.3} ms ({runs} runs)",
            format!("{}:", c.name),
            v[v.len() / 2],
            v[v.len() * 9 / 10],
            v[0],
            v[v.len() - 1]
        );
    }

    // For scale: one signature check as the TUF client makes it (the key parsed from its PEM, ECDSA P-256 over
    // SHA-256 of ~2 KB of canonical JSON). Sigstore's own repository needs more of them than this one-key
    // repository (root and targets are signed by five keys, threshold three; every signature is checked).
    let key = sigstore_crypto::KeyPair::generate_ecdsa_p256().unwrap();
    let tuf_key: sigstore_tuf::Key = serde_json::from_value(serde_json::json!({
        "keytype": "ecdsa",
        "scheme": "ecdsa-sha2-nistp256",
        "keyval": { "public": key.public_key_der().unwrap().to_pem() },
    }))
    .unwrap();
    let message = vec![b'x'; 2048];
    let sig = key.sign(&message).unwrap();
    let mut checks: Vec<f64> = (0..runs.max(100))
        .map(|_| {
            let t = Instant::now();
            tuf_key.verify(&message, &sig).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    checks.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "for scale, one TUF signature check (P-256): median {:.3} ms ({} runs)",
        checks[checks.len() / 2],
        checks.len()
    );
}
