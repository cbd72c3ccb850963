//! End-to-end fault injection on the real registry path (issue 18): a scripted registry on loopback
//! ([`thv_sandbox_e2e::hostile`]) that is busy (429 with `Retry-After`, 503), fails (500), cuts a blob in the
//! middle, stalls, serves wrong bytes or a truncated manifest; a cache on a full file system (a small tmpfs in a
//! user and mount namespace of the test's own, around the real `thv-sandbox pull`), during the download and
//! during the unpack; a cache whose files were damaged before a pull. Each ends in a pull that succeeds (after
//! retries) or in an error that says what failed, and the cache afterwards holds nothing half-written: no
//! temporary file, no blob that is not its digest's, no unpacked root of a failed pull.
//!
//! `pull` runs its own tokio runtime, so the library cases are plain `#[test]`s.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thv_sandbox_e2e::hostile::{Body, HostileServer, ImageRoutes, Reply, Request};
use thv_sandbox_e2e::{
    probe_image_builder, require, sha256_digest, thv_sandbox_bin, BuiltImage, ImageBuilder, Layer,
};
use thv_sandbox_runtime::distribution::{self, PullError, PullOptions, Pulled, TransferLimits};
use thv_sandbox_runtime::image::reference::Reference;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("thv-e2e-faults-")
        .tempdir()
        .unwrap()
}

/// A one-layer image (`data` at `/data`, gzip) written to a layout, and its routes as `r:t`.
fn image(data: Vec<u8>) -> (tempfile::TempDir, BuiltImage, ImageRoutes) {
    let layout = tempdir();
    let built = ImageBuilder::new()
        .layer(Layer::new().file("/data", data, 0o644))
        .entrypoint(["/bin/app"])
        .write(layout.path(), "t")
        .unwrap();
    let routes = ImageRoutes::new(layout.path(), &built, "r", "t").unwrap();
    (layout, built, routes)
}

/// `n` bytes that gzip does not shrink.
fn noise(n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(n + 4);
    let mut x: u32 = 0x9e37_79b9;
    while data.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(n);
    data
}

fn layer_path(built: &BuiltImage) -> String {
    format!("/v2/r/blobs/{}", built.layers[0].digest)
}

fn pull_lib(server: &HostileServer, cache: &Path) -> Result<Pulled, PullError> {
    let opts = PullOptions::new(cache);
    pull_with(server, opts)
}

fn pull_with(server: &HostileServer, opts: PullOptions<'_>) -> Result<Pulled, PullError> {
    let r: Reference = format!("{}/r:t", server.host()).parse().unwrap();
    distribution::pull(&r, &opts)
}

/// The error with its causes, as `thv-sandbox` prints them.
fn report(e: &PullError) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}

/// Every file under `cache`: no temporary file anywhere, and every blob is what its name says. Returns the blob
/// digests present.
fn check_cache(cache: &Path) -> Vec<String> {
    let mut blobs = Vec::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "a temporary file is left: {}",
                e.path().display()
            );
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && dir.ends_with("blobs/sha256") {
                let bytes = std::fs::read(e.path()).unwrap();
                assert_eq!(
                    sha256_digest(&bytes),
                    format!("sha256:{name}"),
                    "blob {} is not its digest's",
                    e.path().display()
                );
                blobs.push(format!("sha256:{name}"));
            }
        }
    }
    blobs
}

/// 429 with `Retry-After: 1` twice on the layer and a 503 on the manifest: the pull waits as asked and succeeds.
#[test]
fn a_busy_registry_is_waited_for_as_retry_after_says() {
    let (_layout, built, routes) = image(noise(64 << 10));
    let layer = layer_path(&built);
    let layer_hits = Arc::new(AtomicUsize::new(0));
    let manifest_hits = Arc::new(AtomicUsize::new(0));
    let (lh, mh) = (layer_hits.clone(), manifest_hits.clone());
    let server = HostileServer::start(move |req: &Request| {
        if req.path() == layer && lh.fetch_add(1, Ordering::SeqCst) < 2 {
            return Reply::new(429, r#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#)
                .header("Retry-After", "1");
        }
        if req.path() == "/v2/r/manifests/t" && mh.fetch_add(1, Ordering::SeqCst) < 1 {
            return Reply::new(503, "busy");
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let started = Instant::now();
    let pulled = pull_lib(&server, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(server.requests_to(&layer_path(&built)).len(), 3);
    assert_eq!(server.requests_to("/v2/r/manifests/t").len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not waited for: {:?}",
        started.elapsed()
    );
    assert!(check_cache(cache.path()).contains(&built.layers[0].digest));
}

/// A 500 once is retried; a 500 every time is reported with the status after a bounded number of tries, and
/// nothing of the layer is in the cache. A `Retry-After` longer than thv-sandbox waits is reported at once.
#[test]
fn server_errors_are_retried_a_bounded_number_of_times_then_reported() {
    let (_layout, built, routes) = image(noise(32 << 10));
    let layer = layer_path(&built);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let routes2 = routes.clone();
    let once = HostileServer::start(move |req: &Request| {
        if req.path() == layer && h.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::new(500, "internal error");
        }
        routes2.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    pull_lib(&once, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert_eq!(once.requests_to(&layer_path(&built)).len(), 2);

    let layer = layer_path(&built);
    let routes2 = routes.clone();
    let always = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            return Reply::new(500, "the storage backend is down");
        }
        routes2.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let err = pull_lib(&always, cache.path()).unwrap_err();
    let text = report(&err);
    assert!(
        text.contains("HTTP 500") && text.contains("the storage backend is down"),
        "{text}"
    );
    assert_eq!(
        always.requests_to(&layer_path(&built)).len(),
        4,
        "1 + 3 retries"
    );
    assert!(!check_cache(cache.path()).contains(&built.layers[0].digest));

    let layer = layer_path(&built);
    let long = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            return Reply::new(429, "slow down").header("Retry-After", "3600");
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let started = Instant::now();
    let text = report(&pull_lib(&long, cache.path()).unwrap_err());
    assert!(text.contains("HTTP 429"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(long.requests_to(&layer_path(&built)).len(), 1);
    assert!(!check_cache(cache.path()).contains(&built.layers[0].digest));
}

/// The connection closes in the middle of the layer (half of it sent, `Content-Length` says all): an error
/// naming the transfer, no blob, no temporary file; the next pull from a sound registry fetches it whole.
#[test]
fn a_blob_cut_in_the_middle_is_never_kept_and_the_next_pull_succeeds() {
    let (layout, built, routes) = image(noise(512 << 10));
    let layer = layer_path(&built);
    let bytes = std::fs::read(built.layers[0].blob_path(layout.path())).unwrap();
    let full = bytes.len();
    let half = bytes[..full / 2].to_vec();
    let routes2 = routes.clone();
    let cut = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            return Reply::new(200, half.clone())
                .without_length()
                .header("Content-Length", &full.to_string());
        }
        routes2.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let text = report(&pull_lib(&cut, cache.path()).unwrap_err());
    assert!(
        text.contains(&built.layers[0].digest) || text.contains("layer"),
        "the error does not say which transfer failed: {text}"
    );
    assert!(!check_cache(cache.path()).contains(&built.layers[0].digest));

    let sound = HostileServer::start(move |req: &Request| routes.reply_or_404(req)).unwrap();
    pull_lib(&sound, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert!(check_cache(cache.path()).contains(&built.layers[0].digest));
}

/// The registry resets the connection in the middle of the layer (a real TCP RST: `SO_LINGER` 0, then close),
/// half of it sent and `Content-Length` saying all; then right after the head, before any of the body. Unlike
/// the clean close above, the client's read fails with "connection reset". Each time: an error naming the layer
/// and the reset, no blob, no temporary file; `thv-sandbox pull` (which unpacks as the layer arrives) fails the
/// same way and commits no root; the next pull, the registry sound again, succeeds.
#[test]
fn a_connection_reset_mid_blob_names_the_layer_keeps_nothing_and_the_next_pull_succeeds() {
    let (layout, built, routes) = image(noise(512 << 10));
    let layer = layer_path(&built);
    let bytes = std::fs::read(built.layers[0].blob_path(layout.path())).unwrap();
    let half = bytes.len() as u64 / 2;
    // The layer's first three requests are reset (after half, after nothing, after half); later ones served.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            match h.fetch_add(1, Ordering::SeqCst) {
                0 | 2 => return Reply::new(200, bytes.clone()).reset_after(half),
                1 => return Reply::new(200, bytes.clone()).reset_after(0),
                _ => {}
            }
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let layer = layer_path(&built);
    let digest = &built.layers[0].digest;
    let cache = tempdir();
    for sent in [half, 0] {
        let err = pull_lib(&server, cache.path()).unwrap_err();
        let text = report(&err);
        assert!(
            matches!(err, PullError::TransferCut { .. }),
            "after {sent} bytes: {text}"
        );
        assert!(
            text.contains(&format!("layer {digest}")),
            "after {sent} bytes, the error does not name the layer: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection reset"),
            "after {sent} bytes, not a reset (a clean close?): {text}"
        );
        assert!(text.contains(&format!("after {sent} of")), "{text}");
        assert_eq!(server.requests_to(&layer).last().unwrap().sent(), sent);
        assert!(!check_cache(cache.path()).contains(digest));
    }

    let pull = |cache: &Path| {
        Command::new(thv_sandbox_bin())
            .env("THV_SANDBOX_TUF_REFRESH", "0")
            .args(["pull", "--cache-dir"])
            .arg(cache)
            .arg(format!("{}/r:t", server.host()))
            .output()
            .unwrap()
    };
    let cli_cache = tempdir();
    let out = pull(cli_cache.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the pull succeeded: {stderr}");
    assert!(
        stderr.contains("error:")
            && stderr.contains(digest.as_str())
            && stderr.to_ascii_lowercase().contains("connection reset"),
        "{stderr}"
    );
    assert!(!check_cache(cli_cache.path()).contains(digest));
    assert!(
        committed_roots(cli_cache.path()).is_empty(),
        "a root was committed from a reset download"
    );

    // The registry sound again: both caches complete, and the CLI's has its root.
    pull_lib(&server, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert!(check_cache(cache.path()).contains(digest));
    let out = pull(cli_cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(check_cache(cli_cache.path()).contains(digest));
    assert_eq!(committed_roots(cli_cache.path()).len(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 5);
}

/// The committed roots in `cache` (`roots-v*/<key>`, not the `.tmp-` staging ones).
fn committed_roots(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("roots-"))
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

/// A registry that stops sending in the middle of the layer: given up on by the rate limit, with a reason.
#[test]
fn a_stalled_blob_is_given_up_on_with_a_reason() {
    let (layout, built, routes) = image(noise(256 << 10));
    let layer = layer_path(&built);
    let bytes = std::fs::read(built.layers[0].blob_path(layout.path())).unwrap();
    let server = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            // 64 KiB at once, then a byte every 3 s.
            let mut data = bytes[..64 << 10].to_vec();
            data.extend_from_slice(&bytes[64 << 10..(64 << 10) + 4]);
            return Reply::body(
                200,
                Body::Slow {
                    data,
                    chunk: 64 << 10,
                    every: Duration::from_secs(3),
                },
            )
            .without_length()
            .header("Content-Length", &bytes.len().to_string());
        }
        routes.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let mut opts = PullOptions::new(cache.path());
    opts.limits = TransferLimits {
        min_blob_rate: 16 << 10,
        rate_window: Duration::from_secs(2),
        ..TransferLimits::default()
    };
    let started = Instant::now();
    let err = pull_with(&server, opts).unwrap_err();
    let text = report(&err);
    assert!(matches!(err, PullError::TooSlow { .. }), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    assert!(!check_cache(cache.path()).contains(&built.layers[0].digest));
}

/// Wrong bytes for the layer, and a manifest cut short (whole by its `Content-Length`): refused with the
/// digest or the document named; the cache names no image and holds no wrong blob.
#[test]
fn wrong_bytes_and_truncated_manifests_are_refused_and_nothing_is_recorded() {
    let (layout, built, routes) = image(noise(16 << 10));
    let layer = layer_path(&built);
    let mut wrong = std::fs::read(built.layers[0].blob_path(layout.path())).unwrap();
    let last = wrong.len() - 1;
    wrong[last] ^= 0xff;
    let routes2 = routes.clone();
    let server = HostileServer::start(move |req: &Request| {
        if req.path() == layer {
            return Reply::new(200, wrong.clone());
        }
        routes2.reply_or_404(req)
    })
    .unwrap();
    let cache = tempdir();
    let err = pull_lib(&server, cache.path()).unwrap_err();
    let text = report(&err);
    assert!(
        matches!(err, PullError::Digest { .. }) && text.contains("digest"),
        "{text}"
    );
    assert!(!check_cache(cache.path()).contains(&built.layers[0].digest));
    assert!(!index_names_an_image(cache.path()));

    let manifest = std::fs::read(built.manifest.blob_path(layout.path())).unwrap();
    let truncated = manifest[..manifest.len() / 2].to_vec();
    for by in [
        "/v2/r/manifests/t".to_owned(),
        format!("/v2/r/manifests/{}", built.manifest.digest),
    ] {
        let routes2 = routes.clone();
        let truncated = truncated.clone();
        let path = by.clone();
        let server = HostileServer::start(move |req: &Request| {
            if req.path() == path {
                return Reply::new(200, truncated.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
            }
            routes2.reply_or_404(req)
        })
        .unwrap();
        let cache = tempdir();
        let r: Reference = if by.ends_with("/t") {
            format!("{}/r:t", server.host()).parse().unwrap()
        } else {
            format!("{}/r@{}", server.host(), built.manifest.digest)
                .parse()
                .unwrap()
        };
        let err = distribution::pull(&r, &PullOptions::new(cache.path())).unwrap_err();
        let text = report(&err);
        assert!(
            text.contains("manifest") && (text.contains("EOF") || text.contains("digest")),
            "{by}: {text}"
        );
        assert!(!index_names_an_image(cache.path()), "{by}");
        check_cache(cache.path());
    }
}

fn index_names_an_image(cache: &Path) -> bool {
    std::fs::read_to_string(cache.join("oci/index.json"))
        .map(|t| t.contains("org.opencontainers.image.ref.name"))
        .unwrap_or(false)
}

/// A cache damaged before a pull: a layer blob overwritten with other bytes of the same size, `index.json` not
/// JSON, the blobs directory gone. The pull notices each, fetches again or says what is wrong, and never unpacks
/// the damaged blob.
#[test]
fn a_damaged_cache_is_noticed_before_anything_from_it_is_used() {
    let (_layout, built, routes) = image(noise(64 << 10));
    let server = HostileServer::start(move |req: &Request| routes.reply_or_404(req)).unwrap();
    let cache = tempdir();
    pull_lib(&server, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    let hex = built.layers[0].digest.strip_prefix("sha256:").unwrap();
    let blob = cache.path().join("oci/blobs/sha256").join(hex);

    // The blobs directory deleted: fetched again.
    std::fs::remove_dir_all(cache.path().join("oci/blobs")).unwrap();
    let before = server.requests_to(&layer_path(&built)).len();
    pull_lib(&server, cache.path()).unwrap_or_else(|e| panic!("{}", report(&e)));
    assert_eq!(server.requests_to(&layer_path(&built)).len(), before + 1);
    check_cache(cache.path());

    // index.json garbage: an error naming the file, or a pull that rewrites it; never a panic.
    std::fs::write(cache.path().join("oci/index.json"), b"{\"manifests\": [tru").unwrap();
    match pull_lib(&server, cache.path()) {
        Ok(_) => {
            let text = std::fs::read_to_string(cache.path().join("oci/index.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).expect("index.json rewritten as JSON");
        }
        Err(e) => {
            let text = report(&e);
            assert!(text.contains("index.json"), "{text}");
        }
    }
    std::fs::remove_file(cache.path().join("oci/index.json")).unwrap();

    // The layer overwritten in place with other bytes (same size): the pull with an unpack notices it.
    let mut bytes = std::fs::read(&blob).unwrap();
    for b in bytes.iter_mut().skip(100).take(100) {
        *b ^= 0x55;
    }
    std::fs::write(&blob, &bytes).unwrap();
    let out = Command::new(thv_sandbox_bin())
        .args(["pull", "--cache-dir"])
        .arg(cache.path())
        .arg(format!("{}/r:t", server.host()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let blob_now = std::fs::read(&blob).ok();
    let fetched_again =
        blob_now.as_deref().map(sha256_digest) == Some(built.layers[0].digest.clone());
    // Either the blob was fetched again, or the pull fails naming the layer; never a root from it.
    assert!(
        out.status.success() && fetched_again
            || !out.status.success()
                && stderr.contains("error:")
                && stderr.contains(&built.layers[0].digest),
        "a damaged blob was used: exit {:?}\n{stderr}",
        out.status
    );
    let roots: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("roots-"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        out.status.success() || roots.is_empty(),
        "a root was committed from a damaged blob: {roots:?}"
    );
}

/// Whether `unshare --user --map-root-user --mount` works here (it needs unprivileged user namespaces, as the
/// sandbox does).
fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `thv-sandbox pull` with its cache on a tmpfs of `size` in a namespace of its own; then a listing of the cache
/// (`find`), made inside the namespace before the tmpfs goes. Returns (exit code, stderr, listing).
fn pull_on_full_disk(server: &HostileServer, size: &str) -> (i32, String, String) {
    let dir = tempdir();
    let script = r#"set -u
mount -t tmpfs -o "size=$SIZE" tmpfs "$DIR" || exit 99
"$BIN" pull --cache-dir "$DIR/cache" "$REF" 2>"$DIR/err"
rc=$?
echo "rc=$rc"
find "$DIR/cache" -mindepth 1 -printf '%y %s %P\n'
echo "--stderr--"
cat "$DIR/err"
"#;
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env("SIZE", size)
        .env("DIR", dir.path())
        .env("BIN", thv_sandbox_bin())
        .env("REF", format!("{}/r:t", server.host()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the namespace failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, stderr) = text.split_once("--stderr--\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let rc: i32 = lines
        .next()
        .and_then(|l| l.strip_prefix("rc="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exit code in {text}"));
    (rc, stderr.to_owned(), lines.collect::<Vec<_>>().join("\n"))
}

/// The disk fills up during the download (a 1 MiB tmpfs, a 4 MiB incompressible layer) and during the unpack (a
/// layer of 32 MiB of zeros, a few KiB as gzip): `pull` fails with the file system's "No space left", and what
/// is left in the cache is no temporary file, no layer blob that is not whole, and no unpacked root.
#[test]
fn a_full_disk_during_download_and_during_unpack_leaves_nothing_half_written() {
    // Only as root. An unprivileged user can mount a tmpfs only inside a user namespace of its own, where `/`
    // (owned by the real root) shows as the overflow uid; thv-sandbox then refuses its state directory under a
    // parent it cannot trust ("inside /, which belongs to uid 65534") before any download. That refusal is right,
    // so there is no full disk to reach there; CI's root run covers this case.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the full-disk case runs as root only (see the comment)");
        return;
    }
    if !require(
        unshare_works(),
        "unshare --user --map-root-user --mount (user namespaces)",
    ) {
        return;
    }
    for (what, data, size) in [
        ("download", noise(4 << 20), "1m"),
        ("unpack", vec![0u8; 32 << 20], "2m"),
    ] {
        let (_layout, built, routes) = image(data);
        let server = HostileServer::start(move |req: &Request| routes.reply_or_404(req)).unwrap();
        let (rc, stderr, listing) = pull_on_full_disk(&server, size);
        assert_ne!(
            rc, 0,
            "{what}: the pull succeeded on a full disk\n{listing}"
        );
        assert!(
            stderr.contains("No space left on device") || stderr.contains("no space"),
            "{what}: the error does not say the disk is full (exit {rc}):\n{stderr}"
        );
        assert!(stderr.contains("error:"), "{what}: {stderr}");
        let layer_hex = built.layers[0].digest.strip_prefix("sha256:").unwrap();
        for line in listing.lines() {
            let mut f = line.splitn(3, ' ');
            let (kind, size, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            let name = path.rsplit('/').next().unwrap_or("");
            assert!(
                !name.starts_with(".tmp-"),
                "{what}: temporary file left: {line}\n{listing}"
            );
            if kind == "f" && name == layer_hex {
                assert_eq!(
                    size.parse::<u64>().unwrap(),
                    built.layers[0].size,
                    "{what}: a partial layer blob is kept: {line}"
                );
            }
            assert!(
                !(path.starts_with("roots-") && path.matches('/').count() == 1 && kind == "d"),
                "{what}: an unpacked root of the failed pull is left: {line}\n{listing}"
            );
        }
    }
}

/// The probe image (user app) served by a hostile server as `tools/probe:1.0`; while `slow` is set its layers
/// trickle (64 KiB every 40 ms), so that a test can act on the cache while a run downloads and unpacks them.
struct ProbeRegistry {
    server: HostileServer,
    built: BuiltImage,
    slow: Arc<AtomicBool>,
    _layout: tempfile::TempDir,
}

impl ProbeRegistry {
    fn start() -> ProbeRegistry {
        let layout = tempdir();
        let built = probe_image_builder(Some("app"))
            .unwrap()
            .write(layout.path(), "app")
            .unwrap();
        let routes = ImageRoutes::new(layout.path(), &built, "tools/probe", "1.0").unwrap();
        let layers: Vec<String> = built
            .layers
            .iter()
            .map(|l| format!("/v2/tools/probe/blobs/{}", l.digest))
            .collect();
        let slow = Arc::new(AtomicBool::new(true));
        let s = slow.clone();
        let server = HostileServer::start(move |req: &Request| {
            let reply = routes.reply_or_404(req);
            match reply.body {
                Body::Bytes(data)
                    if s.load(Ordering::SeqCst) && layers.iter().any(|l| l == req.path()) =>
                {
                    Reply {
                        body: Body::Slow {
                            data,
                            chunk: 64 << 10,
                            every: Duration::from_millis(40),
                        },
                        ..reply
                    }
                }
                _ => reply,
            }
        })
        .unwrap();
        ProbeRegistry {
            server,
            built,
            slow,
            _layout: layout,
        }
    }

    fn image(&self) -> String {
        format!("{}/tools/probe:1.0", self.server.host())
    }

    /// Layer bytes sent so far, over every request.
    fn layer_bytes_sent(&self) -> u64 {
        self.built
            .layers
            .iter()
            .flat_map(|l| {
                self.server
                    .requests_to(&format!("/v2/tools/probe/blobs/{}", l.digest))
            })
            .map(|s| s.sent())
            .sum()
    }

    fn layer_requests(&self) -> usize {
        self.built
            .layers
            .iter()
            .map(|l| {
                self.server
                    .requests_to(&format!("/v2/tools/probe/blobs/{}", l.digest))
                    .len()
            })
            .sum()
    }
}

/// A cache directory under a directory the sandbox's ids may pass through (as the shared fixture's).
fn run_cache() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let cache = dir.path().join("cache");
    (dir, cache)
}

/// `thv-sandbox run --cache-dir CACHE IMAGE -- --probe` (the probe prints its report and exits), with `run`'s
/// state dir and a minimal environment; stdout and stderr piped.
fn spawn_probe_run(run: &common::Run, cache: &Path, image: &str) -> std::process::Child {
    Command::new(thv_sandbox_bin())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        )
        .env("XDG_RUNTIME_DIR", run.xdg.path())
        .envs(common::session_bus_var())
        .env("THV_SANDBOX_TUF_REFRESH", "0")
        .args(["run", "--cache-dir"])
        .arg(cache)
        .args(["--stop-timeout", "60", image, "--", "--probe"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most 3 minutes) for the run to end: (exit code, stdout, stderr).
fn finish(child: std::process::Child) -> (i32, String, String) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the run {pid} did not end within 3 minutes")
        })
        .unwrap();
    (
        common::code(out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A run that succeeded printed the probe's report (the server ran, as user app).
fn assert_probe_ran(rc: i32, stdout: &str, stderr: &str) {
    assert_eq!(rc, 0, "the run failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("no probe report on stdout ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(report["credentials"]["uid"], 1000, "{stdout}");
}

/// A run that failed did so as thv-sandbox's own error (exit 125, an `error:` line), not a panic.
fn assert_clear_failure(what: &str, rc: i32, stdout: &str, stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "{what}: thv-sandbox panicked:\n{stderr}"
    );
    assert_eq!(rc, 125, "{what}: not thv-sandbox's own error:\n{stderr}");
    assert!(stderr.contains("error:"), "{what}: {stderr}");
    assert!(stdout.is_empty(), "{what}: the server ran: {stdout}");
}

/// Nothing of the runs is left: no run directory or runner process (as the lifecycle tests check), no mount of
/// ours naming the cache, and in the cache no temporary file or staging directory, no blob that is not its
/// digest's, no root but committed ones.
fn assert_nothing_half_written_or_left(what: &str, run: &common::Run, cache: &Path) {
    run.assert_nothing_left(None);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cache_text = cache.to_string_lossy();
    assert!(
        !mounts.lines().any(|l| l.contains(cache_text.as_ref())),
        "{what}: a mount of the cache is left:\n{mounts}"
    );
    check_cache(cache);
    for root in committed_roots(cache) {
        let meta = std::fs::read(root.join("meta.json"))
            .unwrap_or_else(|e| panic!("{what}: {} without meta.json: {e}", root.display()));
        serde_json::from_slice::<serde_json::Value>(&meta)
            .unwrap_or_else(|e| panic!("{what}: {}/meta.json: {e}", root.display()));
    }
}

/// The cache, its blobs directory, or the layer's partial file deleted while a real `thv-sandbox run`
/// downloads (and unpacks, as the layers arrive) the image from a registry that trickles the layers. The run
/// ends with thv-sandbox's own error naming what went missing, never a panic and never a root of its
/// half-written tree; nothing of it is left (run directory, runner process, mount, temporary file or staging
/// directory); the next run, the registry fast again, fetches what is missing and serves.
#[test]
fn the_cache_deleted_while_a_run_downloads_ends_in_a_clear_error_and_the_next_run_serves() {
    let registry = ProbeRegistry::start();
    for what in [
        "the cache directory",
        "the blobs directory",
        "the partial layer file",
    ] {
        registry.slow.store(true, Ordering::SeqCst);
        let run = common::Run::new();
        let (_dir, cache) = run_cache();
        let before = registry.layer_bytes_sent();
        let child = spawn_probe_run(&run, &cache, &registry.image());
        let blobs = cache.join("oci/blobs");
        let deadline = Instant::now() + Duration::from_secs(60);
        // Under way: some of a layer sent, and its partial file there.
        let partial = loop {
            let partial: Vec<_> = std::fs::read_dir(blobs.join("sha256"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".tmp-")
                })
                .collect();
            if registry.layer_bytes_sent() > before + (256 << 10) && !partial.is_empty() {
                break partial;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the download never got under way"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        match what {
            "the cache directory" => std::fs::remove_dir_all(&cache).unwrap(),
            "the blobs directory" => std::fs::remove_dir_all(&blobs).unwrap(),
            _ => {
                for p in &partial {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        let (rc, stdout, stderr) = finish(child);
        assert_clear_failure(what, rc, &stdout, &stderr);
        assert!(
            stderr.contains("No such file or directory")
                && stderr.contains(cache.to_string_lossy().as_ref())
                && stderr.contains("hint: part of the image cache went missing"),
            "{what}: the error does not say what went missing:\n{stderr}"
        );
        if what == "the partial layer file" {
            // The file that went missing is named, not the blob it was to become.
            assert!(
                partial
                    .iter()
                    .any(|p| stderr.contains(p.to_string_lossy().as_ref())),
                "{what}: {partial:?}\n{stderr}"
            );
        }
        assert_nothing_half_written_or_left(what, &run, &cache);
        assert!(
            committed_roots(&cache).is_empty(),
            "{what}: a root was committed by the failed run"
        );

        registry.slow.store(false, Ordering::SeqCst);
        let (rc, stdout, stderr) = finish(spawn_probe_run(&run, &cache, &registry.image()));
        assert_probe_ran(rc, &stdout, &stderr);
        assert_nothing_half_written_or_left(what, &run, &cache);
        assert_eq!(committed_roots(&cache).len(), 1, "{what}");
        for layer in &registry.built.layers {
            assert!(check_cache(&cache).contains(&layer.digest), "{what}");
        }
    }
}

/// Between two starts of a run: the committed root's `meta.json` made garbage, then emptied; a committed layer
/// blob overwritten in place with other bytes of its size, while its root is there (the run uses the root and
/// never reads the blob) and with the root gone (the run must unpack again, from that blob); a layer blob cut
/// short. Each start either serves from a sound root or ends with thv-sandbox's own error naming the damaged
/// file; no root is ever made from the damaged blob, and nothing is left behind.
#[test]
fn a_root_or_blob_corrupted_between_two_starts_is_never_used() {
    let registry = ProbeRegistry::start();
    registry.slow.store(false, Ordering::SeqCst);
    let run = common::Run::new();
    let (_dir, cache) = run_cache();
    let start = || finish(spawn_probe_run(&run, &cache, &registry.image()));
    let (rc, stdout, stderr) = start();
    assert_probe_ran(rc, &stdout, &stderr);
    let roots = committed_roots(&cache);
    assert_eq!(roots.len(), 1);
    let root = roots[0].clone();
    let meta_path = root.join("meta.json");
    let meta = std::fs::read(&meta_path).unwrap();
    let requests = registry.layer_requests();

    for (what, garbage) in [
        ("meta.json cut short", meta[..meta.len() / 2].to_vec()),
        ("meta.json empty", Vec::new()),
    ] {
        std::fs::write(&meta_path, &garbage).unwrap();
        let (rc, stdout, stderr) = start();
        // Not a root any more: unpacked again from the cached blobs (nothing downloaded), and replaced.
        assert_probe_ran(rc, &stdout, &stderr);
        assert!(!stderr.contains("error:"), "{what}: {stderr}");
        assert_nothing_half_written_or_left(what, &run, &cache);
        assert_eq!(
            committed_roots(&cache),
            std::slice::from_ref(&root),
            "{what}"
        );
        // A new meta.json, of a new unpack (its tree record has the times of this unpack's files).
        let now: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        let was: serde_json::Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(now["manifest_digest"], was["manifest_digest"], "{what}");
        assert!(
            now["tree"].as_str().is_some_and(|t| t.starts_with("v1:")),
            "{what}: {now}"
        );
        assert_eq!(
            registry.layer_requests(),
            requests,
            "{what}: downloaded again"
        );
    }

    // The biggest layer (the probe binary's) overwritten in place, same size.
    let layer = registry
        .built
        .layers
        .iter()
        .max_by_key(|l| l.size)
        .unwrap()
        .clone();
    let blob = cache
        .join("oci/blobs/sha256")
        .join(layer.digest.strip_prefix("sha256:").unwrap());
    let sound = std::fs::read(&blob).unwrap();
    let mut damaged = sound.clone();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&blob, &damaged).unwrap();
    // The root is there: used as it is (it was made from the blob when it was sound); the blob is not read.
    let (rc, stdout, stderr) = start();
    assert_probe_ran(rc, &stdout, &stderr);
    assert_eq!(std::fs::read(&blob).unwrap(), damaged);
    // The root gone: the unpack from the damaged blob fails; the error names the layer and says the blob was
    // damaged and removed, with a hint; no root is committed.
    thv_sandbox_runtime::rootfs::remove_tree(&root).unwrap();
    let (rc, stdout, stderr) = start();
    assert_clear_failure("damaged blob", rc, &stdout, &stderr);
    assert!(
        stderr.contains(&format!(
            "the cached blob of layer {} is damaged",
            layer.digest
        )) && stderr.contains("it was removed from the cache")
            && stderr.contains("hint: run again"),
        "{stderr}"
    );
    assert!(!blob.exists(), "the damaged blob is still in the cache");
    assert!(
        committed_roots(&cache).is_empty(),
        "a root from a damaged blob"
    );
    assert_nothing_half_written_or_left("damaged blob", &run, &cache);
    assert_eq!(registry.layer_requests(), requests);
    // The next start downloads that layer again (only it) and serves.
    let (rc, stdout, stderr) = start();
    assert_probe_ran(rc, &stdout, &stderr);
    assert_eq!(registry.layer_requests(), requests + 1);
    assert_eq!(std::fs::read(&blob).unwrap(), sound);
    assert_eq!(committed_roots(&cache).len(), 1);
    assert_nothing_half_written_or_left("damaged blob, next start", &run, &cache);

    // The blob cut short and the root gone: not taken for the blob (its size is wrong), downloaded again.
    std::fs::write(&blob, &sound[..sound.len() / 3]).unwrap();
    thv_sandbox_runtime::rootfs::remove_tree(&committed_roots(&cache)[0]).unwrap();
    let (rc, stdout, stderr) = start();
    assert_probe_ran(rc, &stdout, &stderr);
    assert_eq!(registry.layer_requests(), requests + 2);
    assert_eq!(std::fs::read(&blob).unwrap(), sound);
    assert_nothing_half_written_or_left("damaged blob", &run, &cache);
}
