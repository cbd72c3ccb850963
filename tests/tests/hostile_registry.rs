//! End-to-end: pulls and evidence discovery against hostile registries (the findings HR1–HR8 of
//! `design/hostile-registry-review.md`). A scripted server ([`thv_sandbox_e2e::hostile`]) on loopback plays the
//! registry and its token server and records what it was asked and how many bytes it got out before the client
//! hung up; bounded reads are shown by those counts, never by timing or memory. HR1 needs a registry over HTTPS:
//! a real `docker-registry` with a certificate from a test CA, under a loopback host name.
//!
//! `pull` runs its own tokio runtime, so these are plain `#[test]`s.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use thv_sandbox_e2e::hostile::{Body, HostileServer, ImageRoutes, Reply, Request};
use thv_sandbox_e2e::registry::{
    loopback_hostname, openssl_available, registry_available, TestCa, TestRegistry,
};
use thv_sandbox_e2e::{require, sha256_digest, thv_sandbox_bin, BuiltImage, ImageBuilder, Layer};
use thv_sandbox_runtime::distribution::{
    self, Credential, PullError, PullOptions, Pulled, TransferLimits,
};
use thv_sandbox_runtime::image::digest::Digest;
use thv_sandbox_runtime::image::reference::Reference;
use thv_sandbox_runtime::trust::evidence::{discover_blocking, DiscoveryOptions, Evidence};

const USER: &str = "reguser";
const PASSWORD: &str = "REG-PASSWORD-SECRET";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// What a hostile body may get out before a bounded reader hangs up: the bound itself plus what the kernel
/// buffers on both sides of a loopback connection.
const SOCKET_SLACK: u64 = 16 << 20;

fn credential() -> Credential {
    Credential {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("thv-e2e-hostile-")
        .tempdir()
        .unwrap()
}

fn pull(r: &str, opts: &PullOptions<'_>) -> Result<Pulled, PullError> {
    distribution::pull(&r.parse::<Reference>().unwrap(), opts)
}

/// The error, its causes and its hint, as `thv-sandbox` prints them.
fn report(e: &PullError) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    if let Some(h) = e.hint() {
        s.push_str(&format!("\nhint: {h}"));
    }
    s
}

/// A small image, written to a layout, and its routes as `r:t`.
fn image(layer_bytes: usize) -> (tempfile::TempDir, BuiltImage, ImageRoutes) {
    let layout = tempdir();
    // Incompressible, so the layer blob is as large as asked.
    let mut data = Vec::with_capacity(layer_bytes);
    let mut x: u32 = 0x1234_5678;
    while data.len() < layer_bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let built = ImageBuilder::new()
        .layer(Layer::new().file("/data", data, 0o644))
        .entrypoint(["/bin/app"])
        .write(layout.path(), "t")
        .unwrap();
    let routes = ImageRoutes::new(layout.path(), &built, "r", "t").unwrap();
    (layout, built, routes)
}

/// A server whose port its handler needs (for challenges naming it).
fn start_with_port(
    handler: impl Fn(&Request, u16) -> Reply + Send + Sync + 'static,
) -> HostileServer {
    let port: Arc<OnceLock<u16>> = Arc::default();
    let p = port.clone();
    let server = HostileServer::start(move |req| handler(req, *p.get().unwrap())).unwrap();
    port.set(server.addr().port()).unwrap();
    server
}

fn challenge(realm: &str) -> Reply {
    Reply::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header(
        "WWW-Authenticate",
        &format!(r#"Bearer realm="{realm}",service="hostile""#),
    )
}

/// HR1: an HTTPS registry whose challenge names a plain-HTTP token server (on another name, or on a loopback
/// address) does not get the user's password sent there; the refusal says why and what to do. Identity tokens
/// follow the same rule.
#[test]
fn hr1_credentials_never_go_to_a_plain_http_token_server_of_an_https_registry() {
    if !require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) || !require(openssl_available(), "the openssl command")
    {
        return;
    }
    let Some(host) = loopback_hostname() else {
        require(
            false,
            "a host name other than localhost resolving to 127.0.0.1",
        );
        return;
    };
    let tokens =
        HostileServer::start(|_| Reply::json(&json!({"token": "t", "access_token": "t"}))).unwrap();
    let ca = TestCa::new(&host).expect("CA");
    let port = tokens.addr().port();
    for realm in [
        format!("http://{host}:{port}/token"),
        format!("http://127.0.0.1:{port}/token"),
    ] {
        let registry = TestRegistry::start_tls_with_token_realm(
            &ca.server_cert,
            &ca.server_key,
            &realm,
            &ca.ca_cert,
        )
        .expect("TLS registry");
        let image = format!("{host}:{}/r:t", registry.addr().port());
        for cred in [credential(), Credential::identity_token("REFRESH-SECRET")] {
            let cache = tempdir();
            let mut opts = PullOptions::new(cache.path());
            opts.ca_certs = vec![ca.ca_cert.clone()];
            opts.credential = Some(cred);
            let err = pull(&image, &opts).unwrap_err();
            let secrets: Vec<String> = tokens
                .requests()
                .iter()
                .filter(|s| {
                    s.request.header("authorization").is_some()
                        || String::from_utf8_lossy(&s.request.body).contains("SECRET")
                })
                .map(|s| format!("{:?}", s.request))
                .collect();
            assert!(
                secrets.is_empty(),
                "credentials went to {realm} in cleartext: {secrets:?}"
            );
            let text = report(&err);
            assert!(
                text.contains(&format!("token server {realm}"))
                    && text.contains("not sent")
                    && text.contains("hint: ")
                    && text.contains("HTTPS"),
                "{text}"
            );
        }
    }
    assert!(tokens.requests().is_empty(), "{:?}", tokens.requests());
}

/// HR5: a plain-HTTP (loopback) registry naming a token server on another host: the password goes there only
/// when plain HTTP to that host is allowed (`--insecure-registry`); HTTPS token servers always may get it.
#[test]
fn hr5_credentials_go_to_a_plain_http_token_server_only_when_plain_http_to_it_is_allowed() {
    let Some(host) = loopback_hostname() else {
        require(
            false,
            "a host name other than localhost resolving to 127.0.0.1",
        );
        return;
    };
    let (_layout, _built, routes) = image(1000);
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        )
    };
    let h = host.clone();
    let server = start_with_port(move |req, port| {
        if req.path() == "/token" {
            return if req.header("authorization") == Some(basic.as_str()) {
                Reply::json(&json!({"token": "granted"}))
            } else {
                Reply::new(401, "no")
            };
        }
        if req.header("authorization") != Some("Bearer granted") {
            return challenge(&format!("http://{h}:{port}/token"));
        }
        routes.reply_or_404(req)
    });
    let image = format!("{}/r:t", server.host());

    let cache = tempdir();
    let mut opts = PullOptions::new(cache.path());
    opts.credential = Some(credential());
    let err = pull(&image, &opts).unwrap_err();
    assert!(
        server.requests_to("/token").is_empty(),
        "the password went to a plain-HTTP token server on another host: {:?}",
        server.requests_to("/token")
    );
    let text = report(&err);
    assert!(
        text.contains("not sent") && text.contains("--insecure-registry"),
        "{text}"
    );

    // Allowed: plain HTTP to that host is what the user said.
    opts.insecure = vec![host.clone()];
    pull(&image, &opts).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert_eq!(server.requests_to("/token").len(), 1);
}

/// HR2: a token server's answer is read to at most 64 KiB, with or without a `Content-Length`.
#[test]
fn hr2_a_huge_token_answer_is_read_only_to_its_bound() {
    for with_length in [true, false] {
        let server = start_with_port(move |req, port| {
            if req.path() == "/token" {
                let reply = Reply::body(
                    200,
                    Body::Repeat {
                        byte: b'a',
                        len: 128 << 20,
                    },
                );
                return if with_length {
                    reply
                } else {
                    reply.without_length()
                };
            }
            challenge(&format!("http://127.0.0.1:{port}/token"))
        });
        let cache = tempdir();
        let err = pull(
            &format!("{}/r:t", server.host()),
            &PullOptions::new(cache.path()),
        )
        .unwrap_err();
        let token = server.requests_to("/token");
        assert_eq!(token.len(), 1);
        assert!(
            token[0].sent() < SOCKET_SLACK,
            "the client read {} bytes of the token answer",
            token[0].sent()
        );
        let text = report(&err);
        assert!(
            text.contains("token server") && text.contains("larger than 65536 bytes"),
            "{text}"
        );
    }
}

/// HR3: an error answer to a blob GET is read to at most 4 KiB and reported with its status.
#[test]
fn hr3_the_error_body_of_a_blob_is_read_only_to_its_bound() {
    let (_layout, built, routes) = image(1000);
    let layer = format!("/v2/r/blobs/{}", built.layers[0].digest);
    let l = layer.clone();
    let server = HostileServer::start(move |req| {
        if req.path() == l {
            return Reply::body(
                500,
                Body::Repeat {
                    byte: b'e',
                    len: 128 << 20,
                },
            )
            .without_length();
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let err = pull(
        &format!("{}/r:t", server.host()),
        &PullOptions::new(cache.path()),
    )
    .unwrap_err();
    // A 500 is retried three times (distribution's `Remote::send`); every answer is read only to its bound.
    let gets = server.requests_to(&layer);
    assert_eq!(gets.len(), 4);
    for g in &gets {
        assert!(
            g.sent() < SOCKET_SLACK,
            "the client read {} bytes of the error answer",
            g.sent()
        );
    }
    assert!(
        matches!(err, PullError::RegistryStatus { status: 500, .. }),
        "{}",
        report(&err)
    );
}

/// A referrer manifest with `layers` (digest, size) as bundle layers.
fn referrer_manifest(layers: &[(String, usize)]) -> Vec<u8> {
    let empty = "{}";
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(empty.as_bytes()), "size": 2},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": BUNDLE, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// A JSON text of about `size` bytes, different for each `n`.
fn bundle_text(n: usize, size: usize) -> Vec<u8> {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(size)).into_bytes()
}

fn discover(server: &HostileServer, subject: &str, opts: &PullOptions<'_>) -> Evidence {
    let reference: Reference = format!("{}/r:t", server.host()).parse().unwrap();
    discover_blocking(
        &reference,
        &[subject.parse::<Digest>().unwrap()],
        opts,
        &DiscoveryOptions::default(),
    )
    .unwrap()
}

/// HR4: one referrer with 300 bundle layers naming the same blob, another with 40 different 3 MiB bundles: each
/// blob is fetched once and at most 32 MiB of evidence is read in all; for a second subject, one referrer with
/// 40 small bundles gives exactly 16 items (the cap of a source, checked for each layer).
#[test]
fn hr4_a_referrer_with_many_bundle_layers_is_taken_only_to_the_caps() {
    let (_layout, built, mut routes) = image(1000);
    let subject = built.manifest.digest.clone();
    let same = bundle_text(0, 1 << 20);
    let same_digest = sha256_digest(&same);
    routes.insert(
        format!("/v2/r/blobs/{same_digest}"),
        "application/octet-stream",
        same.clone(),
    );
    let repeated = referrer_manifest(&vec![(same_digest.clone(), same.len()); 300]);
    let mut distinct = Vec::new();
    for n in 1..=40 {
        let text = bundle_text(n, 3 << 20);
        let d = sha256_digest(&text);
        distinct.push((d.clone(), text.len()));
        routes.insert(format!("/v2/r/blobs/{d}"), "application/octet-stream", text);
    }
    let distinct = referrer_manifest(&distinct);
    let mut listed = Vec::new();
    for m in [&repeated, &distinct] {
        let d = sha256_digest(m);
        routes.insert(format!("/v2/r/manifests/{d}"), OCI_MANIFEST, m.clone());
        listed.push(json!({"mediaType": OCI_MANIFEST, "digest": d, "size": m.len(), "artifactType": BUNDLE}));
    }
    referrers_index(&mut routes, &subject, listed);
    let other_subject = sha256_digest(b"another subject");
    let mut small = Vec::new();
    for n in 100..140 {
        let text = bundle_text(n, 1000);
        let d = sha256_digest(&text);
        small.push((d.clone(), text.len()));
        routes.insert(format!("/v2/r/blobs/{d}"), "application/octet-stream", text);
    }
    let small = referrer_manifest(&small);
    let small_digest = sha256_digest(&small);
    routes.insert(
        format!("/v2/r/manifests/{small_digest}"),
        OCI_MANIFEST,
        small.clone(),
    );
    routes.insert(
        format!("/v2/r/referrers/{other_subject}"),
        OCI_INDEX,
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": small_digest, "size": small.len(), "artifactType": BUNDLE}
        ]}))
        .unwrap(),
    );
    let server = HostileServer::start(move |req| routes.reply_or_404(req)).unwrap();
    let cache = tempdir();
    let reference: Reference = format!("{}/r:t", server.host()).parse().unwrap();
    let ev = discover_blocking(
        &reference,
        &[subject.parse().unwrap(), other_subject.parse().unwrap()],
        &PullOptions::new(cache.path()),
        &DiscoveryOptions::default(),
    )
    .unwrap();
    let other_items = ev
        .items
        .iter()
        .filter(|i| i.subject.to_string() == other_subject)
        .count();
    assert_eq!(other_items, 16, "items from one referrer with 40 bundles");
    let ev_first: Vec<_> = ev
        .items
        .iter()
        .filter(|i| i.subject.to_string() == subject)
        .collect();

    let same_gets = server
        .requests_to(&format!("/v2/r/blobs/{same_digest}"))
        .len();
    assert_eq!(same_gets, 1, "the same blob was fetched {same_gets} times");
    assert!(ev_first.len() <= 16, "{} items", ev_first.len());
    let served: u64 = server
        .requests_under("/v2/r/blobs/")
        .iter()
        .map(|s| s.sent())
        .sum();
    assert!(
        served <= (32 << 20) + (4 << 20),
        "{served} bytes of evidence read"
    );
    assert!(
        ev.problems.iter().any(|p| p.contains("32 MiB")) || ev.items.len() == 16,
        "{:?}",
        ev.problems
    );
}

/// HR6: a referrers index listing 3,000 candidates (none of them with a bundle): only a bounded number of
/// candidate manifests is fetched.
#[test]
fn hr6_a_referrers_index_with_many_candidates_is_examined_only_to_its_cap() {
    let (_layout, built, mut routes) = image(1000);
    let subject = built.manifest.digest.clone();
    let listed = unknown_manifests(3000);
    referrers_index(&mut routes, &subject, listed);
    let server = HostileServer::start(move |req| routes.reply_or_404(req)).unwrap();
    let cache = tempdir();
    let ev = discover(&server, &subject, &PullOptions::new(cache.path()));
    let fetched = server
        .requests_under("/v2/r/manifests/sha256:")
        .into_iter()
        .filter(|s| s.request.path() != format!("/v2/r/manifests/{subject}"))
        .count();
    assert!(fetched <= 64, "{fetched} candidate manifests fetched");
    assert!(
        ev.problems.iter().any(|p| p.contains("candidates")),
        "{:?}",
        ev.problems
    );
}

/// `f` on another thread; fails the test when it has not returned after `secs` seconds (a transfer without a
/// deadline would never return).
fn within_secs<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("still transferring after {secs} s: no deadline"))
}

/// Serves `listed` as the referrers index of `subject`.
fn referrers_index(routes: &mut ImageRoutes, subject: &str, listed: Vec<serde_json::Value>) {
    routes.insert(
        format!("/v2/r/referrers/{subject}"),
        OCI_INDEX,
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}),
        )
        .unwrap(),
    );
}

/// `n` referrer candidates that name manifests the registry does not have.
fn unknown_manifests(n: u32) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!({"mediaType": OCI_MANIFEST, "digest": sha256_digest(&i.to_le_bytes()), "size": 500}))
        .collect()
}

/// Pulls `image_ref` under [`fast_limits`] (40 s at most): the refusal and its report.
fn slow_pull_refused(image_ref: String) -> (PullError, String) {
    let err = within_secs(40, move || {
        let cache = tempdir();
        let mut opts = PullOptions::new(cache.path());
        opts.limits = fast_limits();
        pull(&image_ref, &opts).unwrap_err()
    });
    let text = report(&err);
    (err, text)
}

fn fast_limits() -> TransferLimits {
    TransferLimits {
        document_deadline: Duration::from_secs(2),
        min_blob_rate: 1024,
        rate_window: Duration::from_secs(2),
        discovery_deadline: Duration::from_secs(3),
    }
}

/// HR7: a manifest at 20 bytes/s misses the document deadline; a layer at 100 bytes/s is below the minimum
/// rate; a referrers index whose candidates each take 400 ms exhausts the discovery deadline. The limits are
/// lowered to seconds here; the defaults are 60 s, 1 KiB/s over 30 s, and 120 s.
#[test]
fn hr7_slow_documents_blobs_and_discovery_are_given_up_on() {
    // The manifest, 1 byte every 50 ms.
    let (_layout, built, routes) = image(64 << 10);
    let manifest = routes
        .reply(&Request {
            method: "GET".into(),
            target: "/v2/r/manifests/t".into(),
            headers: Vec::new(),
            body: Vec::new(),
        })
        .unwrap();
    let Body::Bytes(manifest_bytes) = manifest.body else {
        unreachable!()
    };
    let slow_manifest = manifest_bytes.clone();
    let server = HostileServer::start(move |req| {
        if req.path() == "/v2/r/manifests/t" {
            return Reply::body(
                200,
                Body::Slow {
                    data: slow_manifest.clone(),
                    chunk: 1,
                    every: Duration::from_millis(50),
                },
            )
            .header("Content-Type", &built.manifest.media_type);
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let image_ref = format!("{}/r:t", server.host());
    let started = Instant::now();
    let (err, text) = slow_pull_refused(image_ref);
    assert!(
        matches!(err, PullError::TooSlow { .. })
            && text.contains("did not arrive whole within 2 s"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(server);

    // A layer at 100 bytes/s.
    let (_layout, built, routes) = image(64 << 10);
    let layer_path = format!("/v2/r/blobs/{}", built.layers[0].digest);
    let lp = layer_path.clone();
    let server = HostileServer::start(move |req| {
        if req.path() == lp {
            let Some(Reply {
                body: Body::Bytes(data),
                ..
            }) = routes.reply(req)
            else {
                unreachable!()
            };
            return Reply::body(
                200,
                Body::Slow {
                    data,
                    chunk: 10,
                    every: Duration::from_millis(100),
                },
            );
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let image_ref = format!("{}/r:t", server.host());
    let (err, text) = slow_pull_refused(image_ref);
    assert!(
        matches!(err, PullError::TooSlow { .. })
            && text.contains("below the minimum of 1024 bytes/s"),
        "{text}"
    );
    let sent = server.requests_to(&layer_path)[0].sent();
    assert!(sent < 2000, "{sent} bytes of the layer sent");
    drop(server);

    // Discovery: 50 candidates, each answered after 400 ms.
    let (_layout, built, mut routes) = image(1000);
    let subject = built.manifest.digest.clone();
    let listed = unknown_manifests(50);
    referrers_index(&mut routes, &subject, listed);
    let server = Arc::new(
        HostileServer::start(move |req| {
            if req.path().starts_with("/v2/r/manifests/sha256:") {
                std::thread::sleep(Duration::from_millis(400));
            }
            routes.reply_or_404(req)
        })
        .unwrap(),
    );
    let s = server.clone();
    let started = Instant::now();
    let ev = within_secs(40, move || {
        let cache = tempdir();
        let mut opts = PullOptions::new(cache.path());
        opts.limits = fast_limits();
        discover(&s, &subject, &opts)
    });
    assert!(
        ev.problems
            .iter()
            .any(|p| p.contains("discovery stopped after 3 s")),
        "{:?}",
        ev.problems
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// `thv-sandbox pull IMAGE` with a fresh cache; stderr.
fn cli_pull(image: &str) -> String {
    let cache = tempdir();
    let home = tempdir();
    let out = std::process::Command::new(thv_sandbox_bin())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .args(["pull", "--cache-dir"])
        .arg(cache.path())
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// HR8: refusals say why, through `thv-sandbox pull` as users see them: a redirect loop, a redirect to `file:`,
/// a token server answer that is not JSON, a token server that is a `file:` URL.
#[test]
fn hr8_refusals_name_their_cause() {
    // Every case runs; the ones whose message lacks its cause are listed at the end.
    let mut missing = Vec::new();
    let mut expect = |case: &str, out: String, causes: &[&str]| {
        if !causes.iter().all(|c| out.contains(c)) {
            missing.push(format!("{case}: wanted {causes:?} in:\n{out}"));
        }
    };
    // A token server whose answer is not JSON.
    let tokens = start_with_port(|req, port| match req.path() {
        "/token" => Reply::new(200, "<html>not a token</html>"),
        _ => challenge(&format!("http://127.0.0.1:{port}/token")),
    });
    expect(
        "token answer not JSON",
        cli_pull(&format!("{}/r:t", tokens.host())),
        &["token server", "gave no token", "not the JSON expected"],
    );

    // A token server that is a file.
    let file_realm = HostileServer::start(|_| challenge("file:///etc/passwd")).unwrap();
    expect(
        "file: token server",
        cli_pull(&format!("{}/r:t", file_realm.host())),
        &["file:///etc/passwd", "only http and https"],
    );

    // A manifest that redirects in a loop; a layer that redirects to a file.
    let (_layout, built, routes) = image(1000);
    let layer = format!("/v2/r/blobs/{}", built.layers[0].digest);
    let server = HostileServer::start(move |req| {
        let path = req.path();
        if path == "/v2/loop/manifests/t" || path.starts_with("/loop") {
            let next = if path.ends_with('a') {
                "/loopb"
            } else {
                "/loopa"
            };
            return Reply::new(302, "").header("Location", next);
        }
        if path == layer {
            return Reply::new(307, "").header("Location", "file:///etc/shadow");
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    expect(
        "redirect loop",
        cli_pull(&format!("{}/loop:t", server.host())),
        &["too many redirects"],
    );
    expect(
        "redirect to file:",
        cli_pull(&format!("{}/r:t", server.host())),
        &["file:///etc/shadow", "not followed"],
    );
    assert!(missing.is_empty(), "{}", missing.join("\n\n"));
}
