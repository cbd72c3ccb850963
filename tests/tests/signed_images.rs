//! End-to-end: images the tests build, sign with the test Sigstore instance (tests/src/sigstore) and push to a
//! real docker-registry, with the evidence in each layout (cosign `.sig` and `.att`, OCI referrers through a
//! loopback referrers shim, the tag-schema fallback, GitHub's attestations API on loopback), verified by the real
//! `thv-sandbox` binary with `--trust-root` set to the instance's trusted_root.json.
//!
//! The verdict matrix uses `thv-sandbox verify NAME` (exit status = verdict); `warn` and `disabled` go through
//! the pull gate in process; a few cases `run` a real container and prove that nothing of a refused image was
//! fetched or unpacked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
use thv_sandbox_e2e::sigstore::oci::{
    push_bundle_referrer, push_cosign, push_tag_schema_index, GitHubApi, ReferrersShim,
};
use thv_sandbox_e2e::sigstore::{
    simple_signing_payload, slsa_statement, Flavour, Identity, Signed, TestSigstore,
    SLSA_PROVENANCE_V1,
};
use thv_sandbox_e2e::{require, spawn_mcp, tool_text, BuiltImage, ImageBuilder, Layer};
use thv_sandbox_runtime::provenance as prov;
use thv_sandbox_runtime::trust::verification::{Mode, Outcome, Verification};

const REPO: &str = "stacklok/signed-server";

fn have_registry() -> bool {
    require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    )
}

/// The registry, the shim in front of it, GitHub's API, the instance and its trusted root on disk.
struct World {
    registry: TestRegistry,
    shim: ReferrersShim,
    github: GitHubApi,
    sigstore: TestSigstore,
    dir: tempfile::TempDir,
    trust_root: PathBuf,
    id: Identity,
}

/// An image pushed to the registry.
struct Pushed {
    /// `HOST/REPO:v1` (HOST: the registry, or the shim for referrer cases).
    reference: String,
    repo: String,
    built: BuiltImage,
    _layout: tempfile::TempDir,
}

impl Pushed {
    fn digest(&self) -> &str {
        &self.built.manifest.digest
    }
}

impl World {
    fn new() -> World {
        let registry = TestRegistry::start().expect("registry");
        let shim = ReferrersShim::start(registry.addr()).expect("shim");
        let github = GitHubApi::start().expect("GitHub API");
        let sigstore = TestSigstore::new();
        let dir = tempfile::tempdir().unwrap();
        let trust_root = dir.path().join("trusted_root.json");
        sigstore.write_trusted_root(&trust_root).unwrap();
        World {
            registry,
            shim,
            github,
            sigstore,
            dir,
            trust_root,
            id: Identity::github(REPO),
        }
    }

    /// Builds and pushes `builder`'s image as `repo:v1`.
    fn push(&self, repo: &str, builder: ImageBuilder) -> Pushed {
        let layout = tempfile::tempdir().unwrap();
        let built = builder.write(layout.path(), "v1").expect("image");
        self.registry
            .push_image(layout.path(), &built, repo, "v1")
            .expect("push");
        Pushed {
            reference: format!("{}/{repo}:v1", self.registry.host()),
            repo: repo.into(),
            built,
            _layout: layout,
        }
    }

    /// A small image whose content names `repo` (so every case has its own digest and layer).
    fn small(&self, repo: &str) -> Pushed {
        self.push(
            repo,
            ImageBuilder::new()
                .layer(Layer::new().dir("/etc", 0o755).file(
                    "/etc/case",
                    format!("{repo}\n"),
                    0o644,
                ))
                .cmd(["/hello"]),
        )
    }

    fn payload(&self, image: &Pushed) -> Vec<u8> {
        simple_signing_payload(
            &format!("{}/{}", self.registry.host(), image.repo),
            image.digest(),
        )
    }

    /// cosign `.sig` by `sigstore` for `identity`.
    fn sign_sig(&self, sigstore: &TestSigstore, identity: &Identity, image: &Pushed) -> Signed {
        let signed = sigstore.sign_message(Flavour::PublicGood, identity, &self.payload(image));
        push_cosign(&self.registry, &image.repo, image.digest(), &[&signed]).unwrap();
        signed
    }

    fn statement(&self, image: &Pushed, identity: &Identity) -> Vec<u8> {
        slsa_statement(&image.reference, image.digest(), identity)
    }

    /// The registry entry's provenance expecting this world's identity on `flavour`'s instance.
    fn provenance(&self, flavour: Flavour) -> Value {
        let mut p = json!({
            "sigstore_url": flavour.sigstore_url(),
            "repository_uri": self.id.repository_uri(),
            "repository_ref": self.id.git_ref,
            "signer_identity": format!("/{}", self.id.workflow_path),
            "runner_environment": "github-hosted",
            "cert_issuer": "https://token.actions.githubusercontent.com",
        });
        // GitHub's instance carries attestations only: ask for SLSA provenance.
        if flavour == Flavour::GitHub {
            p["attestation"] = json!({"predicate_type": SLSA_PROVENANCE_V1});
        }
        p
    }

    fn policy(&self, flavour: Flavour) -> prov::Policy {
        prov::Policy::Provenance(serde_json::from_value(self.provenance(flavour)).unwrap())
    }

    /// A legacy-format registry file with `servers` (name → entry).
    fn registry_file(&self, file: &str, servers: Value) -> PathBuf {
        let path = self.dir.path().join(file);
        let doc =
            json!({"version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": servers});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        path
    }
}

fn entry(image: &str, provenance: Value) -> Value {
    json!({
        "description": "a signed test server",
        "image": image,
        "transport": "stdio",
        "tools": ["probe"],
        "provenance": provenance,
    })
}

struct Output {
    code: i32,
    stderr: String,
}

async fn output(mut cmd: tokio::process::Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("thv-sandbox");
    Output {
        code: code(out.status),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a case expects of `thv-sandbox verify`.
enum Expect {
    Verified { source: &'static str },
    Refused { reason: &'static str },
}

struct Case {
    name: &'static str,
    image: Pushed,
    /// The image reference the entry names (through the shim for referrer cases).
    reference: String,
    flavour: Flavour,
    expect: Expect,
}

/// Sets up every case of the matrix: evidence in each layout, and each defect.
fn matrix(w: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    let direct = |image: Pushed, name, flavour, expect| Case {
        name,
        reference: image.reference.clone(),
        image,
        flavour,
        expect,
    };

    // Verified, one per layout.
    let img = w.small("e2e/sig");
    w.sign_sig(&w.sigstore, &w.id, &img);
    cases.push(direct(
        img,
        "sig",
        Flavour::PublicGood,
        Expect::Verified { source: ".sig" },
    ));

    let img = w.small("e2e/att");
    let att = w
        .sigstore
        .attest(Flavour::PublicGood, &w.id, &w.statement(&img, &w.id));
    push_cosign(&w.registry, &img.repo, img.digest(), &[&att]).unwrap();
    cases.push(direct(
        img,
        "att",
        Flavour::PublicGood,
        Expect::Verified { source: ".att" },
    ));

    let img = w.small("e2e/referrer");
    let att = w
        .sigstore
        .attest(Flavour::PublicGood, &w.id, &w.statement(&img, &w.id));
    let desc = push_bundle_referrer(
        &w.registry,
        &img.repo,
        img.digest(),
        img.built.manifest.size,
        &att.bundle(),
    )
    .unwrap();
    w.shim.add(&img.repo, img.digest(), desc);
    cases.push(Case {
        name: "referrer",
        reference: format!("{}/{}:v1", w.shim.host(), img.repo),
        image: img,
        flavour: Flavour::PublicGood,
        expect: Expect::Verified { source: "referrer" },
    });

    let img = w.small("e2e/tag-schema");
    let att = w
        .sigstore
        .attest(Flavour::PublicGood, &w.id, &w.statement(&img, &w.id));
    let desc = push_bundle_referrer(
        &w.registry,
        &img.repo,
        img.digest(),
        img.built.manifest.size,
        &att.bundle(),
    )
    .unwrap();
    push_tag_schema_index(&w.registry, &img.repo, img.digest(), &[desc]).unwrap();
    cases.push(direct(
        img,
        "tag-schema",
        Flavour::PublicGood,
        Expect::Verified { source: "referrer" },
    ));

    let img = w.small("e2e/github");
    let att = w
        .sigstore
        .attest(Flavour::GitHub, &w.id, &w.statement(&img, &w.id));
    w.github.add(REPO, img.digest(), &att.bundle());
    cases.push(direct(
        img,
        "github-api",
        Flavour::GitHub,
        Expect::Verified {
            source: "GitHub attestations API",
        },
    ));

    // Refused.
    let img = w.small("e2e/unsigned");
    cases.push(direct(
        img,
        "no-evidence",
        Flavour::PublicGood,
        Expect::Refused {
            reason: "no signature or attestation found",
        },
    ));

    // The signature of e2e/sig's image, by the same signer, copied to another image's .sig tag.
    let original = w.small("e2e/copied-from");
    let signed = w.sign_sig(&w.sigstore, &w.id, &original);
    let img = w.small("e2e/copied");
    push_cosign(&w.registry, &img.repo, img.digest(), &[&signed]).unwrap();
    cases.push(direct(
        img,
        "copied-signature",
        Flavour::PublicGood,
        Expect::Refused {
            reason: "digest mismatch",
        },
    ));

    type Defect = (&'static str, fn(&mut Identity), &'static str);
    let defects: [Defect; 5] = [
        (
            "wrong-repository",
            |i| i.repository = "someone/fork".into(),
            "repository_uri",
        ),
        (
            "wrong-workflow",
            |i| i.workflow_path = ".github/workflows/ci.yml".into(),
            "signer_identity",
        ),
        (
            "wrong-ref",
            |i| i.git_ref = "refs/heads/feature".into(),
            "repository_ref",
        ),
        (
            "wrong-issuer",
            |i| i.issuer = "https://accounts.google.com".into(),
            "cert_issuer",
        ),
        (
            "self-hosted",
            |i| i.runner_environment = "self-hosted".into(),
            "runner_environment",
        ),
    ];
    for (name, mutate, field) in defects {
        let mut id = w.id.clone();
        mutate(&mut id);
        let img = w.small(&format!("e2e/{name}"));
        w.sign_sig(&w.sigstore, &id, &img);
        cases.push(direct(
            img,
            name,
            Flavour::PublicGood,
            Expect::Refused { reason: field },
        ));
    }

    // A referrer bundle whose signature was altered.
    let img = w.small("e2e/tampered");
    let att = w
        .sigstore
        .attest(Flavour::PublicGood, &w.id, &w.statement(&img, &w.id));
    let mut doc = att.bundle_value();
    let forged = slsa_statement(
        "e2e/tampered",
        &format!("sha256:{}", "ab".repeat(32)),
        &w.id,
    );
    doc["dsseEnvelope"]["payload"] = base64(&forged).into();
    let desc = push_bundle_referrer(
        &w.registry,
        &img.repo,
        img.digest(),
        img.built.manifest.size,
        &doc.to_string(),
    )
    .unwrap();
    push_tag_schema_index(&w.registry, &img.repo, img.digest(), &[desc]).unwrap();
    cases.push(direct(
        img,
        "tampered-bundle",
        Flavour::PublicGood,
        Expect::Refused {
            reason: "invalid signature",
        },
    ));

    // Another CA; only the transparency log foreign (its SET refused); only the CT log foreign (the certificate's
    // SCT refused). Each names the check that refused it, so a refusal by another check does not pass.
    for (repo, name, rogue, reason) in [
        (
            "e2e/rogue-ca",
            "untrusted-ca",
            w.sigstore.with_other_ca(),
            "untrusted: certificate chain is invalid: certificate chain validation failed",
        ),
        (
            "e2e/rogue-log",
            "untrusted-log",
            w.sigstore.with_other_log(),
            "untrusted: invalid inclusion promise: No log key valid at integrated time",
        ),
        (
            "e2e/rogue-ct-log",
            "untrusted-ct-log",
            w.sigstore.with_other_ct_log(),
            "untrusted: invalid signed certificate timestamp: SCT signature verification failed",
        ),
    ] {
        let img = w.small(repo);
        w.sign_sig(&rogue, &w.id, &img);
        cases.push(direct(
            img,
            name,
            Flavour::PublicGood,
            Expect::Refused { reason },
        ));
    }
    cases
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_matrix_under_enabled() {
    if !have_registry() {
        return;
    }
    let w = World::new();
    let cases = matrix(&w);
    let servers: serde_json::Map<String, Value> = cases
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                entry(&c.reference, w.provenance(c.flavour)),
            )
        })
        .collect();
    let file = w.registry_file("signed.json", Value::Object(servers));
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let mut cmd = run.cli(
            cache.path(),
            &[
                "verify",
                "--registry",
                file.to_str().unwrap(),
                "--trust-root",
                w.trust_root.to_str().unwrap(),
                case.name,
            ],
        );
        cmd.env("THV_SANDBOX_GITHUB_API", w.github.url());
        let out = output(cmd).await;
        let ok = match &case.expect {
            Expect::Verified { source } => {
                out.code == 0
                    && out.stderr.contains(source)
                    && out.stderr.contains(&case.image.built.manifest.digest)
            }
            Expect::Refused { reason } => {
                out.code == thv_sandbox_runtime::EXIT_REFUSED
                    && out.stderr.contains(reason)
                    && out.stderr.contains("hint:")
            }
        };
        if !ok {
            failures.push(format!("{}: exit {}\n{}", case.name, out.code, out.stderr));
        }
        // `verify` fetches no layer, whatever the verdict.
        let layer = &case.image.built.layers[0].digest;
        if w.registry.blob_gets(layer) != 0 {
            failures.push(format!("{}: a layer was fetched", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert!(
        w.shim.referrers_served() > 0,
        "the referrers API was not asked"
    );
    assert!(w.github.requests() > 0, "GitHub's API was not asked");
    // The tag-schema case was found through the fallback tag (docker-registry has no referrers API).
    let fallback = cases.iter().find(|c| c.name == "tag-schema").unwrap();
    let tag = format!(
        "/manifests/sha256-{} ",
        fallback.image.digest().strip_prefix("sha256:").unwrap()
    );
    assert!(w.registry.log().contains(&tag), "{}", w.registry.log());

    // Identity flags instead of a registry entry: the exact SAN and issuer.
    let sig = &cases[0].image;
    let mut cmd = run.cli(
        cache.path(),
        &[
            "verify",
            &sig.reference,
            "--trust-root",
            w.trust_root.to_str().unwrap(),
            "--certificate-identity",
            &w.id.san(),
            "--certificate-oidc-issuer",
            "https://token.actions.githubusercontent.com",
        ],
    );
    cmd.env("THV_SANDBOX_GITHUB_API", w.github.url());
    let out = output(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut cmd = run.cli(
        cache.path(),
        &[
            "verify",
            &sig.reference,
            "--trust-root",
            w.trust_root.to_str().unwrap(),
            "--certificate-github-workflow-repository",
            "someone/fork",
        ],
    );
    cmd.env("THV_SANDBOX_GITHUB_API", w.github.url());
    let out = output(cmd).await;
    assert_eq!(
        out.code,
        thv_sandbox_runtime::EXIT_REFUSED,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("someone/fork") && out.stderr.contains(REPO),
        "{}",
        out.stderr
    );

    // Without --trust-root the embedded (real) roots do not know this instance: refused as untrusted.
    let mut cmd = run.cli(
        cache.path(),
        &["verify", "--registry", file.to_str().unwrap(), "sig"],
    );
    cmd.env("THV_SANDBOX_GITHUB_API", w.github.url());
    let out = output(cmd).await;
    assert_eq!(
        out.code,
        thv_sandbox_runtime::EXIT_REFUSED,
        "{}",
        out.stderr
    );
    // The real public-good root does not name the test log's key.
    assert!(
        out.stderr
            .contains("untrusted: invalid inclusion promise: No log key valid"),
        "{}",
        out.stderr
    );
}

/// `warn` pulls the refused images with the reason in the outcome; `disabled` does not look for evidence.
#[test]
fn warn_runs_the_refused_unverified_and_disabled_does_not_check() {
    if !have_registry() {
        return;
    }
    let w = World::new();
    let cases = matrix(&w);
    let cache = tempfile::tempdir().unwrap();
    let dirs = thv_sandbox_runtime::dirs::Dirs::from_env(Some(cache.path().to_owned())).unwrap();
    let verification = |mode, flavour| Verification {
        mode: Some(mode),
        policy: Some(w.policy(flavour)),
        trust_root: Some(w.trust_root.clone()),
        github_api: Some(w.github.url()),
        github_token: None,
        server: None,
        tuf: thv_sandbox_runtime::trust::verification::TufSettings {
            refresh: false,
            ..Default::default()
        },
    };
    let pull = |case: &Case, v: &Verification| {
        thv_sandbox_runtime::pull_verified(
            &case.reference,
            thv_sandbox_runtime::distribution::PullPolicy::Always,
            &thv_sandbox_runtime::RegistryAccess::default(),
            &thv_sandbox_runtime::report::Silent,
            &dirs,
            v,
        )
    };
    for case in cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refused { .. }))
    {
        let Expect::Refused { reason } = case.expect else {
            unreachable!()
        };
        // Enabled: refused, before any layer.
        let err = pull(case, &verification(Mode::Enabled, case.flavour))
            .err()
            .unwrap_or_else(|| panic!("{}: not refused", case.name));
        // As the user reads it: the error, then its hint.
        let text = format!("{err}\nhint: {}", err.hint().unwrap_or_default());
        assert!(text.contains(reason), "{}: {text}", case.name);
        assert_eq!(
            w.registry.blob_gets(&case.image.built.layers[0].digest),
            0,
            "{}",
            case.name
        );
        // Warn: pulled, unverified, saying why.
        let (pulled, outcome) = pull(case, &verification(Mode::Warn, case.flavour))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(pulled.manifest_digest.to_string(), case.image.digest());
        match outcome {
            Outcome::Unverified { reason: why } => {
                assert!(why.contains(reason), "{}: {why}", case.name)
            }
            other => panic!("{}: {other:?}", case.name),
        }
    }
    // Disabled: the evidence is not even looked for.
    let case = cases.iter().find(|c| c.name == "untrusted-ca").unwrap();
    let sig_tag = format!(
        "sha256-{}.sig",
        case.image.digest().strip_prefix("sha256:").unwrap()
    );
    let before = w.registry.log().matches(&sig_tag).count();
    let fresh = tempfile::tempdir().unwrap();
    let dirs = thv_sandbox_runtime::dirs::Dirs::from_env(Some(fresh.path().to_owned())).unwrap();
    let (_, outcome) = thv_sandbox_runtime::pull_verified(
        &case.reference,
        thv_sandbox_runtime::distribution::PullPolicy::Always,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &verification(Mode::Disabled, case.flavour),
    )
    .expect("disabled");
    assert_eq!(outcome, Outcome::Skipped);
    assert_eq!(
        w.registry.log().matches(&sig_tag).count(),
        before,
        "disabled looked for evidence"
    );
}

fn roots(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(thv_sandbox_runtime::rootfs::roots_dir(cache))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Real containers: a signed probe runs verified; a probe signed by the wrong workflow is refused before any
/// layer is fetched, runs with a warning under `warn` and without a check under `disabled`; a cached,
/// once-verified image is refused after the expected workflow changes.
#[tokio::test(flavor = "multi_thread")]
async fn signed_probe_runs_and_refusals_fetch_nothing() {
    if !have_registry() {
        return;
    }
    let w = World::new();
    let probe = || thv_sandbox_e2e::probe_image_builder(Some("app")).expect("probe image");
    // The same probe, as another release (a label), so that the two images have their own manifests.
    let good = w.push("e2e/probe", probe().label("release", "good"));
    w.sign_sig(&w.sigstore, &w.id, &good);
    let bad = w.push("e2e/probe-ci", probe().label("release", "ci"));
    let mut ci = w.id.clone();
    ci.workflow_path = ".github/workflows/ci.yml".into();
    w.sign_sig(&w.sigstore, &ci, &bad);
    let file = w.registry_file(
        "probe.json",
        json!({
            "probe": entry(&good.reference, w.provenance(Flavour::PublicGood)),
            "probe-ci": entry(&bad.reference, w.provenance(Flavour::PublicGood)),
        }),
    );
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let file_arg = file.to_str().unwrap().to_string();
    let root_arg = w.trust_root.to_str().unwrap().to_string();
    let cmd = |extra: &[&str], name: &str| {
        let mut args = vec!["run", "--registry", &file_arg, "--trust-root", &root_arg];
        args.extend_from_slice(extra);
        args.push(name);
        let mut c = run.cli(cache.path(), &args);
        c.kill_on_drop(true);
        c
    };

    // Refused under the default (enabled, the entry declares provenance): no layer fetched, nothing unpacked; the
    // exit code is the refusal's (not a broken sandbox's, not a server's), and stderr says why and what to do.
    let out = output(cmd(&[], "probe-ci")).await;
    assert_eq!(
        out.code,
        thv_sandbox_runtime::EXIT_REFUSED,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.starts_with("error: ")
            && out.stderr.contains("was refused by verification")
            && out.stderr.contains("\nhint: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("signer_identity") && out.stderr.contains("ci.yml"),
        "{}",
        out.stderr
    );
    for layer in &bad.built.layers {
        assert_eq!(
            w.registry.blob_gets(&layer.digest),
            0,
            "{}",
            w.registry.log()
        );
    }
    assert!(roots(cache.path()).is_empty(), "{:?}", roots(cache.path()));

    // Warn: it runs, and stderr says it is unverified and why.
    let server = spawn_mcp(cmd(&["--image-verification", "warn"], "probe-ci"))
        .await
        .expect("initialize under warn");
    let answer = server
        .call("echo", json!({"text": "warned"}))
        .await
        .expect("echo");
    let said = tool_text(&answer);
    assert_eq!(said, "warned");
    let done = server.finish().await.expect("finish");
    let stderr = done.stderr.clone();
    assert!(
        stderr.contains("UNVERIFIED") && stderr.contains("signer_identity"),
        "{stderr}"
    );

    // Disabled: runs, nothing checked, nothing said about provenance.
    let server = spawn_mcp(cmd(&["--image-verification", "disabled"], "probe-ci"))
        .await
        .expect("initialize under disabled");
    server
        .call("echo", json!({"text": "x"}))
        .await
        .expect("echo");
    let done = server.finish().await.expect("finish");
    let stderr = done.stderr.clone();
    assert!(
        !stderr.contains("UNVERIFIED") && !stderr.contains("provenance"),
        "{stderr}"
    );

    // The signed probe runs verified; its record is kept with the cached image.
    let server = spawn_mcp(cmd(&[], "probe"))
        .await
        .expect("initialize verified");
    let answer = server
        .call("echo", json!({"text": "verified"}))
        .await
        .expect("echo");
    let said = tool_text(&answer);
    assert_eq!(said, "verified");
    assert_eq!(code(server.finish().await.expect("finish").status), 0);
    let out = run
        .cli(
            cache.path(),
            &["inspect", "--json", "--registry", &file_arg, "probe"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("inspect");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        v["cached"]["verification"]["verified"]["claims"]["san"],
        w.id.san().as_str(),
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The expected workflow changes upstream: the cached, once-verified image is refused (no registry needed).
    let mut moved = w.provenance(Flavour::PublicGood);
    moved["signer_identity"] = "/.github/workflows/publish.yml".into();
    let changed = w.registry_file(
        "moved.json",
        json!({"probe": entry(&good.reference, moved)}),
    );
    let mut c = run.cli(
        cache.path(),
        &[
            "run",
            "--registry",
            changed.to_str().unwrap(),
            "--trust-root",
            &root_arg,
            "--pull",
            "never",
            "probe",
        ],
    );
    c.kill_on_drop(true);
    let out = output(c).await;
    assert_eq!(
        out.code,
        thv_sandbox_runtime::EXIT_REFUSED,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("publish.yml") && out.stderr.contains("/.github/workflows/release.yml"),
        "{}",
        out.stderr
    );
    run.assert_nothing_left(None);
}
