//! Trusted roots through TUF at the library level, against a real TUF repository the test signs and serves on
//! loopback: refresh, offline fallback (also past the metadata's expiry, with the age warning), refused tampering
//! and bad signatures (the previous root stays), and half-written cache files that are never used. "Now" is
//! injected rather than waited for.

use thv_sandbox_e2e::tuf_repo::{StaticServer, TufRepo};
use thv_sandbox_provenance::tuf::{self, Repository, TufOptions};
use thv_sandbox_provenance::{embedded_json, Instance, TrustRoot};

const PG: Instance = Instance::PublicGood;

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The embedded public-good root in another layout: the same trust material, other bytes (so another sha256).
fn variant(n: usize) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(embedded_json(PG)).unwrap();
    let mut s = serde_json::to_string_pretty(&v).unwrap();
    s.push_str(&"\n".repeat(n));
    s.into_bytes()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn plus(t: jiff::Timestamp, hours: i64) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::from_hours(hours))
        .unwrap()
}

fn opts(cache: &std::path::Path, repo: &TufRepo, url: &str, at: jiff::Timestamp) -> TufOptions {
    TufOptions {
        public_good: Repository {
            url: Some(url.to_string()),
            bootstrap: Some(repo.root_json().to_vec()),
        },
        now: Some(at),
        ..TufOptions::new(cache.join("trust"))
    }
}

#[test]
fn refreshed_root_is_stored_used_and_survives_offline_and_expiry_with_its_age() {
    let cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    let t0 = now();
    let a = variant(1);
    repo.publish(&a, &plus(t0, 24 * 7).to_string());
    let mut server = StaticServer::start(repo.dir.path());

    // Online: refreshed, stored, used.
    let loaded = tuf::load(PG, &opts(cache.path(), &repo, &server.url, t0)).unwrap();
    let id = loaded.root.id().clone();
    assert_eq!(
        id.source,
        format!("tuf:{}", server.url),
        "{:?}",
        loaded.notes
    );
    assert_eq!(id.sha256, sha256(&a));
    assert_eq!(id.refreshed.as_deref(), Some(t0.to_string().as_str()));
    assert_eq!(id.age_days(t0), Some(0));
    assert!(id.age_warning(PG, t0).is_none());
    assert!(cache.path().join("trust/public-good/state.json").is_file());

    // Offline (the server is gone), the refresh is due (25 h later): the attempt fails, the cached root is used.
    server.stop();
    let t1 = plus(t0, 25);
    let loaded = tuf::load(PG, &opts(cache.path(), &repo, &server.url, t1)).unwrap();
    assert_eq!(loaded.root.id().sha256, sha256(&a));
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("refreshing through TUF failed")),
        "{:?}",
        loaded.notes
    );
    // Right after a failure no new attempt is made (no note about one).
    let loaded = tuf::load(PG, &opts(cache.path(), &repo, &server.url, plus(t1, 0))).unwrap();
    assert_eq!(loaded.root.id().sha256, sha256(&a));
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);

    // 45 days later: the timestamp metadata expired long ago; the newest verified root is still used, with its age
    // and the warning.
    let t45 = plus(t0, 24 * 45);
    let loaded = tuf::load(PG, &opts(cache.path(), &repo, &server.url, t45)).unwrap();
    let id = loaded.root.id();
    assert_eq!(id.sha256, sha256(&a), "{:?}", loaded.notes);
    assert_eq!(id.age_days(t45), Some(45));
    let warning = id.age_warning(PG, t45).expect("a warning past 30 days");
    assert!(
        warning.starts_with("trust root for public-good Sigstore is 45 days old (last refreshed"),
        "{warning}"
    );
    assert!(warning.contains("thv-sandbox trust refresh"), "{warning}");
    let status = tuf::status(PG, &opts(cache.path(), &repo, &server.url, t45)).unwrap();
    assert_eq!(status.age_days, Some(45));
    assert_eq!(status.warning.as_deref(), Some(warning.as_str()));
}

#[test]
fn a_new_root_replaces_the_old_one_on_the_next_due_refresh() {
    let cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    let t0 = now();
    repo.publish(&variant(1), "2999-01-01T00:00:00Z");
    let server = StaticServer::start(repo.dir.path());
    let first = tuf::load(PG, &opts(cache.path(), &repo, &server.url, t0)).unwrap();
    assert_eq!(first.root.id().sha256, sha256(&variant(1)));
    repo.publish(&variant(2), "2999-01-01T00:00:00Z");
    // Not due yet: the cached root, no network.
    let early = tuf::load(PG, &opts(cache.path(), &repo, &server.url, plus(t0, 1))).unwrap();
    assert_eq!(early.root.id().sha256, sha256(&variant(1)));
    // Due: the new one.
    let later = tuf::load(PG, &opts(cache.path(), &repo, &server.url, plus(t0, 25))).unwrap();
    assert_eq!(later.root.id().sha256, sha256(&variant(2)));
    assert!(!later.root.id().same_material(first.root.id()));
    // Only the current refresh is kept.
    let dirs: Vec<_> = std::fs::read_dir(cache.path().join("trust/public-good"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tuf-") || n.starts_with(".staging"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
}

#[test]
fn tampered_target_and_bad_signature_are_refused_and_the_previous_root_stays() {
    let cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    let t0 = now();
    repo.publish(&variant(1), "2999-01-01T00:00:00Z");
    let server = StaticServer::start(repo.dir.path());
    tuf::load(PG, &opts(cache.path(), &repo, &server.url, t0)).unwrap();

    // The mirror serves other bytes than the signed targets metadata pins.
    repo.publish(&variant(2), "2999-01-01T00:00:00Z");
    repo.tamper_target(&variant(3));
    let o = opts(cache.path(), &repo, &server.url, plus(t0, 25));
    let err = tuf::refresh(PG, &o).unwrap_err().to_string();
    assert!(err.contains("trusted_root.json"), "{err}");
    let loaded = tuf::load(PG, &o).unwrap();
    assert_eq!(loaded.root.id().sha256, sha256(&variant(1)));

    // Timestamp metadata whose signature does not verify.
    repo.publish(&variant(4), "2999-01-01T00:00:00Z");
    repo.break_timestamp_signature();
    let o = opts(cache.path(), &repo, &server.url, plus(t0, 50));
    let err = tuf::refresh(PG, &o).unwrap_err().to_string();
    assert!(
        err.contains("signature threshold not met for role timestamp: 0/1 valid signatures"),
        "{err}"
    );
    let loaded = tuf::load(PG, &o).unwrap();
    assert_eq!(loaded.root.id().sha256, sha256(&variant(1)));

    // A repository signed by keys the bootstrap root does not trust.
    let mut other = TufRepo::new();
    other.publish(&variant(5), "2999-01-01T00:00:00Z");
    let other_server = StaticServer::start(other.dir.path());
    let mut o = opts(cache.path(), &repo, &other_server.url, plus(t0, 75));
    o.public_good.url = Some(other_server.url.clone());
    let err = tuf::refresh(PG, &o).unwrap_err().to_string();
    // Its timestamp is signed by a key the trusted root does not name.
    assert!(
        err.contains("signature threshold not met for role timestamp: 0/1 valid signatures"),
        "{err}"
    );
    let loaded = tuf::load(PG, &o).unwrap();
    assert_eq!(loaded.root.id().sha256, sha256(&variant(1)));
}

#[test]
fn half_written_or_unverified_cache_files_are_never_used() {
    let cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    let t0 = now();
    repo.publish(&variant(1), "2999-01-01T00:00:00Z");
    let mut server = StaticServer::start(repo.dir.path());
    tuf::load(PG, &opts(cache.path(), &repo, &server.url, t0)).unwrap();
    server.stop();
    let inst = cache.path().join("trust/public-good");
    let current = std::fs::read_dir(&inst)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tuf-"))
        .unwrap();
    let embedded = TrustRoot::embedded(PG).unwrap().id().clone();
    let offline = || {
        let mut o = opts(cache.path(), &repo, &server.url, plus(t0, 1));
        o.refresh = false;
        tuf::load(PG, &o).unwrap()
    };

    // A leftover staging directory of an interrupted refresh, with a complete other root in it: not named by the
    // state, not used.
    let staging = inst.join(".staging-leftover/targets");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("trusted_root.json"), variant(7)).unwrap();
    assert_eq!(offline().root.id().sha256, sha256(&variant(1)));

    // The cached target cut short: it no longer matches the signed metadata, so the embedded root is used.
    let target = current.join("targets/trusted_root.json");
    let full = std::fs::read(&target).unwrap();
    std::fs::write(&target, &full[..full.len() / 2]).unwrap();
    let loaded = offline();
    assert_eq!(loaded.root.id(), &embedded, "{:?}", loaded.notes);
    assert!(
        loaded.notes.iter().any(|n| n.contains("does not verify")),
        "{:?}",
        loaded.notes
    );
    std::fs::write(&target, &full).unwrap();
    assert_eq!(offline().root.id().sha256, sha256(&variant(1)));

    // Cached timestamp metadata cut short.
    let ts = current.join("timestamp.json");
    let full_ts = std::fs::read(&ts).unwrap();
    std::fs::write(&ts, &full_ts[..full_ts.len() - 10]).unwrap();
    assert_eq!(offline().root.id(), &embedded);
    std::fs::write(&ts, &full_ts).unwrap();

    // A state file cut short: ignored, the embedded root.
    let state = inst.join("state.json");
    let full_state = std::fs::read(&state).unwrap();
    std::fs::write(&state, &full_state[..full_state.len() / 2]).unwrap();
    assert_eq!(offline().root.id(), &embedded);
    std::fs::write(&state, &full_state).unwrap();
    assert_eq!(offline().root.id().sha256, sha256(&variant(1)));
}

fn fixtures() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("THV_SANDBOX_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
        });
    let dir = base.join("sigstore");
    thv_sandbox_e2e::require(
        dir.join("cases.json").is_file(),
        &format!("Sigstore fixtures at {}", dir.display()),
    )
    .then_some(dir)
}

/// `thv-sandbox verify --json --bundle … --artifact …` of a real public-good bundle, with the TUF repository and
/// its bootstrap root from the environment and its own cache.
fn verify_json(
    cache: &std::path::Path,
    url: &str,
    bootstrap: &std::path::Path,
) -> (i32, serde_json::Value, String) {
    let dir = fixtures().expect("fixtures");
    let out = std::process::Command::new(thv_sandbox_e2e::thv_sandbox_bin())
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("THV_SANDBOX_CACHE_DIR", cache)
        .env("HOME", cache)
        .env("THV_SANDBOX_TUF_URL_PUBLIC_GOOD", url)
        .env("THV_SANDBOX_TUF_BOOTSTRAP_PUBLIC_GOOD", bootstrap)
        .args([
            "verify",
            "--json",
            "--bundle",
            "hashedrekord/rfc8785-0.1.2-py3-none-any.whl.v0.2.sigstore.json",
            "--artifact",
            "hashedrekord/rfc8785-0.1.2-py3-none-any.whl",
            "--certificate-oidc-issuer",
            "https://token.actions.githubusercontent.com",
        ])
        .output()
        .expect("run thv-sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_uses_the_root_refreshed_through_tuf_and_keeps_it_offline() {
    if fixtures().is_none() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let mut repo = TufRepo::new();
    let bootstrap = cache.path().join("bootstrap-root.json");
    repo.write_root(&bootstrap);
    let a = variant(3);
    repo.publish(&a, "2999-01-01T00:00:00Z");
    let mut server = StaticServer::start(repo.dir.path());

    let (code, doc, stderr) = verify_json(cache.path(), &server.url, &bootstrap);
    assert_eq!(code, 0, "{stderr}");
    let root = &doc["result"]["trust_root"];
    assert_eq!(root["source"], format!("tuf:{}", server.url), "{doc}");
    assert_eq!(root["sha256"], sha256(&a), "{doc}");
    assert!(root["refreshed"].is_string(), "{doc}");
    assert_eq!(doc["trust_root_age_days"], 0, "{doc}");
    assert!(!stderr.contains("warning: trust root"), "{stderr}");

    // The server is gone: the cached, TUF-verified root is used (verified again from the bootstrap root).
    server.stop();
    let url = server.url.clone();
    let (code, doc, stderr) = verify_json(cache.path(), &url, &bootstrap);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["result"]["trust_root"]["sha256"], sha256(&a), "{doc}");

    // A cached target that no longer matches the signed metadata is not used: the embedded root is, and its age
    // is warned about when it is over 180 days old (an embedded root's limit).
    let inst = cache.path().join("trust/public-good");
    let current = std::fs::read_dir(&inst)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tuf-"))
        .unwrap();
    std::fs::write(current.join("targets/trusted_root.json"), variant(9)).unwrap();
    let (code, doc, stderr) = verify_json(cache.path(), &url, &bootstrap);
    assert_eq!(code, 0, "{stderr}");
    let embedded = TrustRoot::embedded(PG).unwrap().id().clone();
    assert_eq!(
        doc["result"]["trust_root"]["sha256"], embedded.sha256,
        "{doc}"
    );
    let age = embedded.age_days(now()).unwrap();
    assert_eq!(doc["trust_root_age_days"], age, "{doc}");
    assert_eq!(
        stderr.contains("trust root for public-good Sigstore is"),
        age > thv_sandbox_provenance::EMBEDDED_WARN_AGE_DAYS,
        "{stderr}"
    );
}
