//! Package provenance over HTTP, before anything is installed: a loopback index (tests/src/package_index.rs) speaks
//! npm's attestations API and PyPI's integrity API and PEP 691 simple index in front of real package files (the
//! sigstore-js 2.1.0 tarball, the rfc8785 0.1.2 wheel); the attestations are signed by the tests' own Sigstore
//! instance. The gate (`thv_sandbox_runtime::packages::provenance`) fetches, verifies with the one verdict
//! function, and decides: verified, refused for a wrong repository or workflow, refused under `enabled` when
//! absent, refused when the file's digest differs from the attested subject; records make a second check
//! offline. And through the binary: `thv-sandbox pull NAME` of a registry entry whose server is an npm package
//! and which pins an identity installs it (the real npm, in the install sandbox, from the loopback index) only
//! when the package's provenance names that identity.

mod common;

use std::path::{Path, PathBuf};

use thv_sandbox_e2e::package_index::{
    npm_attestations, npm_provenance_statement, npm_tarball, pep740_provenance,
    pypi_publish_statement, sri512, PackageIndex,
};
use thv_sandbox_e2e::sigstore::{Flavour, Identity, TestSigstore};
use thv_sandbox_runtime::packages::provenance::{
    Ecosystem, Indexes, Integrity, Package, PackageGate, Status,
};
use thv_sandbox_runtime::provenance::{Policy, Provenance, GITHUB_ACTIONS_ISSUER};
use thv_sandbox_runtime::trust::verification::{Mode, Verification};

const REPO: &str = "stacklok/pkg-server";
const WHEEL: &str = "rfc8785-0.1.2-py3-none-any.whl";

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
        "prerequisite missing under CI: package files in the Sigstore fixtures at {}",
        dir.display()
    );
    eprintln!(
        "SKIP: prerequisite missing: Sigstore fixtures at {}",
        dir.display()
    );
    None
}

struct World {
    sigstore: TestSigstore,
    identity: Identity,
    index: PackageIndex,
    tgz: Vec<u8>,
    wheel: Vec<u8>,
    root: tempfile::TempDir,
}

impl World {
    fn new() -> Option<World> {
        let dir = fixtures()?;
        let root = tempfile::tempdir().unwrap();
        let sigstore = TestSigstore::new();
        sigstore
            .write_trusted_root(&root.path().join("trusted_root.json"))
            .unwrap();
        Some(World {
            sigstore,
            identity: Identity::github(REPO),
            index: PackageIndex::start().unwrap(),
            tgz: std::fs::read(dir.join("gh-attestations/public-good/sigstore-js-2.1.0.tgz"))
                .unwrap(),
            wheel: std::fs::read(dir.join(format!("hashedrekord/{WHEEL}"))).unwrap(),
            root,
        })
    }

    /// A gate with the test instance's trust root; `pin`: the registry entry's provenance.
    fn gate(&self, mode: Option<Mode>, pin: Option<Provenance>, cache: &str) -> PackageGate {
        let cfg = Verification {
            mode,
            policy: pin.map(Policy::Provenance),
            trust_root: Some(self.root.path().join("trusted_root.json")),
            ..Verification::default()
        };
        let indexes = Indexes {
            npm_registry: self.index.npm_registry(),
            pypi_index: self.index.pypi_index(),
        };
        PackageGate::new(&cfg, &self.root.path().join(cache), indexes).unwrap()
    }

    fn npm_attestation(
        &self,
        identity: &Identity,
        name: &str,
        version: &str,
        tgz: &[u8],
        v02: bool,
    ) -> String {
        let st = npm_provenance_statement(name, version, tgz, identity);
        let signed = self.sigstore.attest(Flavour::PublicGood, identity, &st);
        npm_attestations(&[&signed], v02)
    }

    fn pypi_provenance(
        &self,
        identity: &Identity,
        bytes: &[u8],
        publisher_workflow: &str,
    ) -> String {
        let st = pypi_publish_statement(WHEEL, bytes);
        let signed = self.sigstore.attest(Flavour::PublicGood, identity, &st);
        pep740_provenance(&[&signed], &identity.repository, publisher_workflow)
    }

    /// What the installer's lock gives for an npm package (integrity as the packument states it).
    fn npm_package(
        &self,
        name: &str,
        version: &str,
        tgz: &[u8],
        repository: Option<&str>,
    ) -> Package {
        Package {
            ecosystem: Ecosystem::Npm,
            name: name.into(),
            version: version.into(),
            filename: format!("{}-{version}.tgz", name.rsplit('/').next().unwrap()),
            integrity: Integrity::from_sri(&sri512(tgz)).unwrap(),
            attestations_url: None,
            repository: repository.map(str::to_string),
        }
    }

    fn wheel_package(&self, bytes: &[u8]) -> Package {
        Package {
            ecosystem: Ecosystem::Pypi,
            name: "rfc8785".into(),
            version: "0.1.2".into(),
            filename: WHEEL.into(),
            integrity: Integrity::of(Ecosystem::Pypi, bytes),
            attestations_url: None,
            repository: None,
        }
    }
}

fn pin(repo: &str, workflow: &str) -> Provenance {
    Provenance {
        repository_uri: Some(format!("https://github.com/{repo}")),
        signer_identity: Some(format!("/.github/workflows/{workflow}")),
        cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
        ..Provenance::default()
    }
}

/// A fresh cache directory with mode 0711 (others may pass through it, not list it), as these tests use.
fn cache_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    cache
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn npm_provenance_verified_then_reused_offline() {
    let Some(w) = World::new() else { return };
    let att = w.npm_attestation(&w.identity, "sigstore", "2.1.0", &w.tgz, false);
    let repo = format!("https://github.com/{REPO}");
    w.index
        .publish_npm("sigstore", "2.1.0", &w.tgz, Some(&repo), Some(&att));
    let pkg = w.npm_package("sigstore", "2.1.0", &w.tgz, Some(&repo));
    let gate = w.gate(None, Some(pin(REPO, "release.yml")), "c1");
    assert_eq!(gate.mode(), Mode::Enabled);
    let report = rt().block_on(gate.check_tree(&pkg, &[])).expect("verified");
    assert_eq!(report.package.status, Status::Verified, "{report:?}");
    assert!(!report.package.reused);
    let record = report.package.record.as_ref().unwrap();
    assert!(record.pinned);
    assert_eq!(
        record.verified.claims.san.as_deref(),
        Some(w.identity.san().as_str())
    );
    assert!(record
        .evidence_source
        .ends_with("/-/npm/v1/attestations/sigstore@2.1.0"));
    assert!(w
        .index
        .requests()
        .contains(&"/-/npm/v1/attestations/sigstore@2.1.0".to_string()));
    // Second check: the record, no request to the index.
    let before = w.index.requests().len();
    let again = rt().block_on(gate.check_tree(&pkg, &[])).unwrap();
    assert_eq!(again.package.status, Status::Verified);
    assert!(again.package.reused);
    assert_eq!(w.index.requests().len(), before);
}

#[test]
fn npm_v02_bundles_and_the_packuments_attestations_url_and_repository() {
    let Some(w) = World::new() else { return };
    let name = "@stacklok/pkg-server";
    let att = w.npm_attestation(&w.identity, name, "1.0.0", &w.tgz, true);
    let repo = format!("https://github.com/{REPO}");
    w.index
        .publish_npm(name, "1.0.0", &w.tgz, Some(&repo), Some(&att));
    let mut pkg = w.npm_package(name, "1.0.0", &w.tgz, Some(&repo));
    pkg.attestations_url = Some(format!(
        "{}/-/npm/v1/attestations/@stacklok%2fpkg-server@1.0.0",
        w.index.url()
    ));
    // No pin: held to the packument's repository, under warn.
    let gate = w.gate(None, None, "c2");
    assert_eq!(gate.mode(), Mode::Warn);
    let report = rt().block_on(gate.check_tree(&pkg, &[])).unwrap();
    assert_eq!(report.package.status, Status::Verified, "{report:?}");
    assert!(!report.package.record.as_ref().unwrap().pinned);
    // A packument naming another repository than the one that signed: not verified, a warning.
    pkg.repository = Some("https://github.com/someone/else".into());
    let gate = w.gate(None, None, "c2b");
    let report = rt().block_on(gate.check_tree(&pkg, &[])).unwrap();
    assert_eq!(report.package.status, Status::Unverified, "{report:?}");
    assert!(
        report.summary_line().contains("UNVERIFIED"),
        "{}",
        report.summary_line()
    );
}

#[test]
fn npm_wrong_repository_or_workflow_refused() {
    let Some(w) = World::new() else { return };
    let repo = format!("https://github.com/{REPO}");
    // Signed by the right repository's other workflow, and by another repository.
    let mut other_workflow = Identity::github(REPO);
    other_workflow.workflow_path = ".github/workflows/ci.yml".into();
    let other_repo = Identity::github("attacker/pkg-server");
    for (i, signer) in [other_workflow, other_repo].iter().enumerate() {
        let att = w.npm_attestation(signer, "sigstore", "2.1.0", &w.tgz, false);
        w.index
            .publish_npm("sigstore", "2.1.0", &w.tgz, Some(&repo), Some(&att));
        let pkg = w.npm_package("sigstore", "2.1.0", &w.tgz, Some(&repo));
        let gate = w.gate(None, Some(pin(REPO, "release.yml")), &format!("c3-{i}"));
        let err = rt().block_on(gate.check_tree(&pkg, &[])).unwrap_err();
        assert_eq!(err.package, "sigstore@2.1.0");
        let field = if i == 0 {
            "signer_identity"
        } else {
            "repository_uri"
        };
        assert!(err.reason.contains(field), "{err:?}");
    }
}

#[test]
fn absent_provenance_refused_under_enabled_only() {
    let Some(w) = World::new() else { return };
    let repo = format!("https://github.com/{REPO}");
    w.index
        .publish_npm("sigstore", "2.1.0", &w.tgz, Some(&repo), None);
    w.index
        .publish_pypi("rfc8785", "0.1.2", WHEEL, &w.wheel, None, false);
    let npm = w.npm_package("sigstore", "2.1.0", &w.tgz, Some(&repo));
    let whl = w.wheel_package(&w.wheel);
    for pkg in [&npm, &whl] {
        let gate = w.gate(None, Some(pin(REPO, "release.yml")), "c4");
        let err = rt().block_on(gate.check_tree(pkg, &[])).unwrap_err();
        assert!(err.reason.contains("serves no provenance"), "{err:?}");
        let gate = w.gate(None, None, "c4w");
        let report = rt().block_on(gate.check_tree(pkg, &[])).unwrap();
        assert_eq!(report.package.status, Status::NoProvenance);
    }
    // The integrity API was asked (a 404: no provenance), after the project page.
    let reqs = w.index.requests();
    assert!(reqs.contains(&"/simple/rfc8785/".to_string()), "{reqs:?}");
    assert!(
        reqs.contains(&format!("/integrity/rfc8785/0.1.2/{WHEEL}/provenance")),
        "{reqs:?}"
    );
}

#[test]
fn a_file_whose_digest_differs_from_the_attested_subject_is_refused() {
    let Some(w) = World::new() else { return };
    let repo = format!("https://github.com/{REPO}");
    // The attestation is for the real tarball; the index serves another one under the same version.
    let att = w.npm_attestation(&w.identity, "sigstore", "2.1.0", &w.tgz, false);
    let mut swapped = w.tgz.clone();
    let n = swapped.len();
    swapped[n / 2] ^= 0x40;
    w.index
        .publish_npm("sigstore", "2.1.0", &swapped, Some(&repo), Some(&att));
    let pkg = w.npm_package("sigstore", "2.1.0", &swapped, Some(&repo));
    let gate = w.gate(None, Some(pin(REPO, "release.yml")), "c5");
    let err = rt().block_on(gate.check_tree(&pkg, &[])).unwrap_err();
    assert!(err.reason.contains("digest mismatch"), "{err:?}");
    // The same for a wheel.
    let prov = w.pypi_provenance(&w.identity, &w.wheel, "release.yml");
    let mut other = w.wheel.clone();
    let third = other.len() / 3;
    other[third] ^= 1;
    w.index
        .publish_pypi("rfc8785", "0.1.2", WHEEL, &other, Some(&prov), true);
    let gate = w.gate(None, Some(pin(REPO, "release.yml")), "c5p");
    let err = rt()
        .block_on(gate.check_tree(&w.wheel_package(&other), &[]))
        .unwrap_err();
    assert!(err.reason.contains("digest mismatch"), "{err:?}");
}

#[test]
fn pypi_pep740_through_the_simple_index_link_and_the_integrity_api() {
    let Some(w) = World::new() else { return };
    let prov = w.pypi_provenance(&w.identity, &w.wheel, "release.yml");
    let whl = w.wheel_package(&w.wheel);
    for link in [true, false] {
        w.index
            .publish_pypi("rfc8785", "0.1.2", WHEEL, &w.wheel, Some(&prov), link);
        // Unpinned: held to the Trusted Publisher PyPI recorded.
        let gate = w.gate(None, None, &format!("p-{link}"));
        let report = rt().block_on(gate.check_tree(&whl, &[])).unwrap();
        assert_eq!(report.package.status, Status::Verified, "{report:?}");
        let source = &report.package.record.as_ref().unwrap().evidence_source;
        let want = if link {
            format!("/links/{WHEEL}.provenance")
        } else {
            format!("/integrity/rfc8785/0.1.2/{WHEEL}/provenance")
        };
        assert!(source.ends_with(&want), "{source} {:?}", w.index.requests());
        // Pinned by the registry entry.
        let gate = w.gate(None, Some(pin(REPO, "release.yml")), &format!("pp-{link}"));
        let report = rt().block_on(gate.check_tree(&whl, &[])).unwrap();
        assert_eq!(report.package.status, Status::Verified, "{report:?}");
        assert!(report.package.record.as_ref().unwrap().pinned);
        let gate = w.gate(
            None,
            Some(pin("attacker/x", "release.yml")),
            &format!("pw-{link}"),
        );
        let err = rt().block_on(gate.check_tree(&whl, &[])).unwrap_err();
        assert!(err.reason.contains("repository_uri"), "{err:?}");
    }
    // The publisher PyPI recorded says another workflow than the certificate: not verified.
    let prov = w.pypi_provenance(&w.identity, &w.wheel, "publish.yml");
    w.index
        .publish_pypi("rfc8785", "0.1.2", WHEEL, &w.wheel, Some(&prov), true);
    let gate = w.gate(None, None, "p-wf");
    let report = rt().block_on(gate.check_tree(&whl, &[])).unwrap();
    assert_eq!(report.package.status, Status::Unverified, "{report:?}");
    assert!(
        report
            .package
            .reason
            .as_deref()
            .unwrap()
            .contains("signer_identity"),
        "{report:?}"
    );
    let gate = w.gate(Some(Mode::Enabled), Some(pin(REPO, "publish.yml")), "p-wf2");
    assert!(rt().block_on(gate.check_tree(&whl, &[])).is_err());
}

#[test]
fn dependencies_each_verified_and_counted() {
    let Some(w) = World::new() else { return };
    let repo = format!("https://github.com/{REPO}");
    let att = w.npm_attestation(&w.identity, "sigstore", "2.1.0", &w.tgz, false);
    w.index
        .publish_npm("sigstore", "2.1.0", &w.tgz, Some(&repo), Some(&att));
    let dep_repo = "https://github.com/stacklok/dep-a";
    let dep_signer = Identity::github("stacklok/dep-a");
    let dep_att = w.npm_attestation(&dep_signer, "dep-a", "0.1.0", &w.wheel, false);
    w.index
        .publish_npm("dep-a", "0.1.0", &w.wheel, Some(dep_repo), Some(&dep_att));
    w.index.publish_npm("dep-b", "2.0.0", b"plain", None, None);
    let top = w.npm_package("sigstore", "2.1.0", &w.tgz, Some(&repo));
    let deps = [
        w.npm_package("dep-a", "0.1.0", &w.wheel, Some(dep_repo)),
        w.npm_package("dep-b", "2.0.0", b"plain", None),
    ];
    let gate = w.gate(None, Some(pin(REPO, "release.yml")), "t1");
    let report = rt().block_on(gate.check_tree(&top, &deps)).unwrap();
    assert_eq!(
        (report.total(), report.with_provenance(), report.verified()),
        (3, 2, 2),
        "{report:?}"
    );
    let line = report.summary_line();
    assert!(
        line.contains("1 of 2 dependencies carry provenance, 1 verified"),
        "{line}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["dependencies"][0]["status"], "verified");
    assert_eq!(json["dependencies"][1]["status"], "no-provenance");
    // A dependency whose attested digest is not the locked one: refused under enabled, warned under warn.
    let mut bad = deps.clone();
    bad[0].integrity = Integrity::of(Ecosystem::Npm, b"swapped");
    let err = rt().block_on(gate.check_tree(&top, &bad)).unwrap_err();
    assert_eq!(err.package, "dep-a@0.1.0");
    let warn = w.gate(Some(Mode::Warn), Some(pin(REPO, "release.yml")), "t2");
    let report = rt().block_on(warn.check_tree(&top, &bad)).unwrap();
    assert_eq!(report.dependencies[0].status, Status::Unverified);
    assert!(
        report.summary_line().contains("1 did not verify"),
        "{}",
        report.summary_line()
    );
}

/// The install flow's seam (`packages::verdict::check_before_install`) with what the resolver wrote: an npm
/// `package-lock.json` and a pip installation report naming the loopback index's files. The npm packument is
/// read for the repository and the attestations URL; the verdict admits or refuses before anything is installed.
#[test]
fn the_install_seam_admits_or_refuses_a_resolved_tree() {
    use thv_sandbox_runtime::packages::provenance::Checks;
    use thv_sandbox_runtime::packages::{lock, spec, verdict};
    let Some(w) = World::new() else { return };
    let repo = format!("https://github.com/{REPO}");
    let att = w.npm_attestation(&w.identity, "sigstore", "2.1.0", &w.tgz, false);
    w.index
        .publish_npm("sigstore", "2.1.0", &w.tgz, Some(&repo), Some(&att));
    w.index.publish_npm("dep-b", "2.0.0", b"plain", None, None);
    let npm_lock = serde_json::json!({
        "name": "x", "lockfileVersion": 3,
        "packages": {
            "": {"dependencies": {"sigstore": "2.1.0"}},
            "node_modules/sigstore": {"version": "2.1.0",
                "resolved": format!("{}/sigstore/-/sigstore-2.1.0.tgz", w.index.url()), "integrity": sri512(&w.tgz)},
            "node_modules/dep-b": {"version": "2.0.0",
                "resolved": format!("{}/dep-b/-/dep-b-2.0.0.tgz", w.index.url()), "integrity": sri512(b"plain")},
        },
    });
    let entries = lock::from_npm_lock(npm_lock.to_string().as_bytes()).unwrap();
    let top = spec::parse("npx://sigstore@2.1.0").unwrap().unwrap();
    let checks = |pin: Option<Provenance>, index: String, cache: &str| Checks {
        verification: Verification {
            policy: pin.map(Policy::Provenance),
            trust_root: Some(w.root.path().join("trusted_root.json")),
            ..Verification::default()
        },
        cache_dir: w.root.path().join(cache),
        index_url: index,
    };
    let ok = checks(Some(pin(REPO, "release.yml")), w.index.npm_registry(), "s1");
    match verdict::check_before_install(&top, &entries, Some(&ok)) {
        verdict::Verdict::Checked {
            verified,
            total,
            report,
        } => {
            assert_eq!((verified, total), (1, 2), "{report:?}");
            let line = verdict::Verdict::Checked {
                verified,
                total,
                report,
            }
            .line(&top)
            .unwrap();
            assert!(line.contains("sigstore@2.1.0 verified"), "{line}");
            assert!(
                line.contains("0 of 1 dependencies carry provenance"),
                "{line}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(w.index.requests().contains(&"/sigstore/2.1.0".to_string()));
    // Unpinned (warn): verified against the packument's repository.
    let unpinned = checks(None, w.index.npm_registry(), "s1u");
    assert!(matches!(
        verdict::check_before_install(&top, &entries, Some(&unpinned)),
        verdict::Verdict::Checked {
            verified: 1,
            total: 2,
            ..
        }
    ));
    let wrong = checks(
        Some(pin("attacker/x", "release.yml")),
        w.index.npm_registry(),
        "s2",
    );
    match verdict::check_before_install(&top, &entries, Some(&wrong)) {
        verdict::Verdict::Refused { reason } => {
            assert!(reason.contains("repository_uri"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        verdict::check_before_install(&top, &entries, None),
        verdict::Verdict::NotChecked
    );

    // PyPI: pip's report.
    let prov = w.pypi_provenance(&w.identity, &w.wheel, "release.yml");
    w.index
        .publish_pypi("rfc8785", "0.1.2", WHEEL, &w.wheel, Some(&prov), false);
    let report = serde_json::json!({"version": "1", "install": [{
        "metadata": {"name": "rfc8785", "version": "0.1.2"},
        "download_info": {"url": format!("{}/files/{WHEEL}", w.index.url()),
            "archive_info": {"hashes": {"sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&w.wheel))}}},
    }]});
    let entries = lock::from_pip_report(report.to_string().as_bytes()).unwrap();
    let top = spec::parse("uvx://rfc8785==0.1.2").unwrap().unwrap();
    let ok = checks(Some(pin(REPO, "release.yml")), w.index.pypi_index(), "s3");
    assert!(matches!(
        verdict::check_before_install(&top, &entries, Some(&ok)),
        verdict::Verdict::Checked {
            verified: 1,
            total: 1,
            ..
        }
    ));
    let wrong = checks(Some(pin(REPO, "other.yml")), w.index.pypi_index(), "s4");
    assert!(matches!(
        verdict::check_before_install(&top, &entries, Some(&wrong)),
        verdict::Verdict::Refused { .. }
    ));
}

/// An npm package tarball whose `bin` prints a line and exits.
fn tiny_npm_package(name: &str, version: &str) -> Vec<u8> {
    tiny_npm_package_with_deps(name, version, &[])
}

/// [`tiny_npm_package`] depending on `deps` (`NAME`, `RANGE`).
fn tiny_npm_package_with_deps(name: &str, version: &str, deps: &[(&str, &str)]) -> Vec<u8> {
    npm_tarball(
        name,
        version,
        "#!/usr/bin/env node\nconsole.log('pin probe ran');\n",
        deps,
    )
}

/// `thv-sandbox pull NAME` of a registry entry whose server is an npm package and which pins an identity: the
/// real npm resolves it in the install sandbox from the loopback index, and the package's attestation (the tests'
/// Sigstore instance) is checked against the entry's pin under `enabled` before anything is installed. Signed
/// by another repository or another workflow: refused with the field that differs, nothing installed or cached
/// (the tarball never fetched). Signed by the pinned identity: installed, and `run NAME` starts from that root
/// (the base image, an `oci:` layout, is not held to the package's pin).
#[tokio::test(flavor = "multi_thread")]
async fn pull_of_a_pinned_package_entry_checks_the_entrys_pin() {
    use common::{code, package_roots, Run};
    let Some(w) = World::new() else { return };
    let Some(layout) = common::package_bases() else {
        return;
    };
    let base = format!("oci:{}:node", layout.display());
    let name = "thv-pin-probe";
    let tgz = tiny_npm_package(name, "1.0.0");
    let repo = format!("https://github.com/{REPO}");
    let att = w.npm_attestation(&w.identity, name, "1.0.0", &tgz, false);
    w.index
        .publish_npm(name, "1.0.0", &tgz, Some(&repo), Some(&att));
    let tarball = format!("/{name}/-/{name}-1.0.0.tgz");

    let entry = |pin: Provenance| {
        serde_json::json!({
            "image": format!("npx://{name}@1.0.0"),
            "description": "an npm package whose registry entry pins its provenance",
            "provenance": {
                "repository_uri": pin.repository_uri,
                "signer_identity": pin.signer_identity,
                "cert_issuer": pin.cert_issuer,
            },
        })
    };
    let registry = w.root.path().join("registry.json");
    let doc = serde_json::json!({"version": "1.0.0", "servers": {
        "pin-probe": entry(pin(REPO, "release.yml")),
        "pin-probe-other-repo": entry(pin("attacker/pkg-server", "release.yml")),
        "pin-probe-other-workflow": entry(pin(REPO, "ci.yml")),
    }});
    std::fs::write(&registry, doc.to_string()).unwrap();
    let trust_root = w.root.path().join("trusted_root.json");
    let cache = cache_dir("thv-e2e-pkgprov-cache-");
    let run = Run::new();
    let pull = |entry: &str| {
        let mut c = run.cli(
            cache.path(),
            &[
                "pull",
                "--registry",
                registry.to_str().unwrap(),
                "--base-image",
                &base,
                "--trust-root",
                trust_root.to_str().unwrap(),
                entry,
            ],
        );
        c.env("npm_config_registry", w.index.npm_registry())
            .stdin(std::process::Stdio::null());
        c
    };

    for (entry, field) in [
        ("pin-probe-other-repo", "repository_uri"),
        ("pin-probe-other-workflow", "signer_identity"),
    ] {
        let out = pull(entry).output().await.expect("pull");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 124, "{entry}: {stderr}");
        assert!(
            stderr.contains(&format!("npx://{name}@1.0.0")) && stderr.contains(field),
            "{entry}: {stderr}"
        );
        assert!(
            stderr.contains("nothing of the package was installed"),
            "{entry}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{entry}");
        assert!(package_roots(cache.path()).is_empty(), "{entry}");
        let reqs = w.index.requests();
        assert!(
            reqs.contains(&format!("/{name}")),
            "npm resolved from the loopback index: {reqs:?}"
        );
        assert!(!reqs.contains(&tarball), "{entry}: {reqs:?}");
    }

    // The pinned identity: verified, installed, the pinned version on stdout.
    let out = pull("pin-probe").output().await.expect("pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("npx://{name}@1.0.0\n")
    );
    assert!(
        stderr.contains(&format!("{name}@1.0.0 verified")),
        "{stderr}"
    );
    assert_eq!(package_roots(cache.path()).len(), 1);
    assert!(w.index.requests().contains(&tarball));

    // `run NAME` starts from that root, offline: the base image (a layout) is not held to the package's pin.
    let before = w.index.requests().len();
    let mut cmd = run.cmd_in(
        cache.path(),
        "pin-probe",
        &[
            "--registry",
            registry.to_str().unwrap(),
            "--base-image",
            &base,
            "--trust-root",
            trust_root.to_str().unwrap(),
            "--pull",
            "never",
        ],
        &[],
    );
    cmd.env("npm_config_registry", w.index.npm_registry())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = cmd.output().await.expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pin probe ran\n");
    assert_eq!(w.index.requests().len(), before, "no second install");
    assert_eq!(package_roots(cache.path()).len(), 1);
    run.assert_nothing_left(None);
}

/// The configuration file's `[packages]` table is what an install really uses: `pull npx://…` with no flag for
/// them installs onto the file's `npm_base_image` (an `oci:` layout, relative to the file) from the file's
/// `npm_index` (the loopback index), though npm's own `npm_config_registry` names an unreachable one (the file
/// wins over npm's variables). `config show` and `inspect` say where each came from. The provenance verdict of
/// every package of the tree is recorded with the committed root, next to its lock, and `inspect` (text and
/// `--json`) and `images --json` show it: the package verified against the identity its packument declares,
/// its dependency without provenance.
#[tokio::test(flavor = "multi_thread")]
async fn the_config_files_packages_table_is_what_the_install_uses() {
    use common::{code, package_roots, Run};
    let Some(w) = World::new() else { return };
    let Some(layout) = common::package_bases() else {
        return;
    };
    let (name, dep) = ("thv-cfg-probe", "thv-cfg-dep");
    let repo = format!("https://github.com/{REPO}");
    let tgz = tiny_npm_package_with_deps(name, "1.0.0", &[(dep, "^2.0.0")]);
    let att = w.npm_attestation(&w.identity, name, "1.0.0", &tgz, false);
    w.index.publish_npm_with_deps(
        name,
        "1.0.0",
        &tgz,
        Some(&repo),
        Some(&att),
        &[(dep, "^2.0.0")],
    );
    let dep_tgz = tiny_npm_package(dep, "2.0.1");
    w.index.publish_npm(dep, "2.0.1", &dep_tgz, None, None);

    // The file: the base layout named relative to it (a symlink beside it), the index by URL.
    let config_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&layout, config_dir.path().join("bases")).unwrap();
    let config = config_dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[packages]\nnpm_base_image = \"oci:bases:node\"\nnpm_index = \"{}\"\n",
            w.index.npm_registry()
        ),
    )
    .unwrap();
    let trust_root = w.root.path().join("trusted_root.json");
    let cache = cache_dir("thv-e2e-pkgcfg-cache-");
    let run = Run::new();
    let package = format!("npx://{name}@1.0.0");
    let cli = |args: &[&str]| {
        let mut c = match args {
            ["config", sub, rest @ ..] => run.cli_sub(cache.path(), &["config", sub], rest),
            _ => run.cli(cache.path(), args),
        };
        c.env("THV_SANDBOX_CONFIG", &config)
            // npm's own variable names an index nothing listens on: the file's must win.
            .env("npm_config_registry", "http://127.0.0.1:9/")
            .stdin(std::process::Stdio::null());
        c
    };

    // `config show`: the file's values and where they came from.
    let out = cli(&["config", "show", "--json"])
        .output()
        .await
        .expect("config show");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pk = &shown["settings"]["packages"];
    assert_eq!(pk["npm_index"]["value"], w.index.npm_registry(), "{pk}");
    let from_file = format!("file {}", config.display());
    assert_eq!(pk["npm_index"]["source"], from_file.as_str(), "{pk}");
    let base = format!("oci:{}:node", config_dir.path().join("bases").display());
    assert_eq!(pk["npm_base_image"]["value"], base.as_str(), "{pk}");

    let out = cli(&[
        "pull",
        "--trust-root",
        trust_root.to_str().unwrap(),
        &package,
    ])
    .output()
    .await
    .expect("pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{package}\n"));
    assert!(
        stderr.contains(&format!("{name}@1.0.0 verified")),
        "{stderr}"
    );
    assert!(
        stderr.contains("0 of 1 dependencies carry provenance"),
        "{stderr}"
    );
    let reqs = w.index.requests();
    for path in [
        format!("/{name}/-/{name}-1.0.0.tgz"),
        format!("/{dep}/-/{dep}-2.0.1.tgz"),
    ] {
        assert!(
            reqs.contains(&path),
            "installed from the file's index: {reqs:?}"
        );
    }
    let roots = package_roots(cache.path());
    assert_eq!(roots.len(), 1, "{roots:?}");
    // The verdicts are committed inside the root, next to the lock.
    let recorded: serde_json::Value = serde_json::from_slice(
        &std::fs::read(roots[0].join("rootfs/opt/thv-package/thv-sandbox-provenance.json"))
            .expect("the recorded verdicts"),
    )
    .unwrap();
    assert_eq!(recorded["verdict"], "checked", "{recorded}");

    // `inspect --json`: the base and the index with their origins, and every package's verdict.
    let out = cli(&[
        "inspect",
        "--json",
        "--trust-root",
        trust_root.to_str().unwrap(),
        &package,
    ])
    .output()
    .await
    .expect("inspect");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let p = &profile["package"];
    assert_eq!(p["base_image"], base.as_str(), "{p}");
    assert_eq!(p["base_image_source"], from_file.as_str(), "{p}");
    assert_eq!(p["index"], w.index.npm_registry(), "{p}");
    assert_eq!(p["index_source"], from_file.as_str(), "{p}");
    let installed = p["installed"].as_array().expect("installed");
    assert_eq!(installed.len(), 1, "{p}");
    let report = &installed[0]["provenance"]["report"];
    assert_eq!(report["package"]["package"]["name"], name, "{report}");
    assert_eq!(report["package"]["status"], "verified", "{report}");
    assert_eq!(
        report["package"]["record"]["verified"]["claims"]["source_repository_uri"],
        repo.as_str(),
        "{report}"
    );
    let deps = report["dependencies"].as_array().expect("dependencies");
    assert_eq!(deps.len(), 1, "{report}");
    assert_eq!(deps[0]["package"]["name"], dep, "{report}");
    assert_eq!(deps[0]["package"]["version"], "2.0.1", "{report}");
    assert_eq!(deps[0]["status"], "no-provenance", "{report}");

    // `inspect` for people: the same, a line per package.
    let out = cli(&[
        "inspect",
        "--trust-root",
        trust_root.to_str().unwrap(),
        &package,
    ])
    .output()
    .await
    .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("base image: {base} ({from_file})")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "index:     {} ({from_file})",
            w.index.npm_registry()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("    {name}@1.0.0 verified ({repo}, ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("    {dep}@2.0.1 no provenance")),
        "{text}"
    );

    // `images --json` lists the package root, with its verdicts.
    let out = cli(&["images", "--json"]).output().await.expect("images");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pkgs: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter(|i| i["kind"] == "package")
        .collect();
    assert_eq!(pkgs.len(), 1, "{listed}");
    assert_eq!(pkgs[0]["name"], package.as_str(), "{listed}");
    assert_eq!(pkgs[0]["index"], w.index.npm_registry(), "{listed}");
    assert_eq!(pkgs[0]["pinned_packages"], 2, "{listed}");
    assert_eq!(pkgs[0]["root"], roots[0].to_str().unwrap(), "{listed}");
    assert!(
        pkgs[0]["base_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71),
        "{listed}"
    );
    assert_eq!(
        pkgs[0]["provenance"]["report"]["package"]["status"], "verified",
        "{listed}"
    );

    // `enabled` without a pin: refused before anything, although the root this (unpinned, `warn`) install left
    // is there to run from — runs from a root do not check again, so it must not stand in for the refused install.
    for verb in ["pull", "run"] {
        let before = w.index.requests().len();
        let out = cli(&[
            verb,
            "--image-verification",
            "enabled",
            "--trust-root",
            trust_root.to_str().unwrap(),
            &package,
        ])
        .output()
        .await
        .expect(verb);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 124, "{verb}: {stderr}");
        assert!(
            stderr.contains("pins no provenance identity"),
            "{verb}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{verb}: the server ran");
        assert_eq!(
            w.index.requests().len(),
            before,
            "{verb}: the index was asked"
        );
    }
    assert_eq!(package_roots(cache.path()), roots);
    run.assert_nothing_left(None);
}
