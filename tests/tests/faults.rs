//! End-to-end fault injection on the real registry path (issue 18): a scripted registry on loopback
//! ([`thv_sandbox_e2e::hostile`]) that is busy (429 with `Retry-After`, 503), fails (500), cuts a blob in the
//! middle, stalls, serves wrong bytes or a truncated manifest; a cache on a full file system (a small tmpfs in a
//! user and mount namespace of the test's own, around the real `thv-sandbox pull`), during the download and
//! during the unpack; a cache whose files were damaged before a pull. Each ends in a pull that succeeds (after
//! retries) or in an error that says what failed, and the cache afterwards holds nothing half-written: no
//! temporary file, no blob that is not its digest's, no unpacked root of a failed pull.
//!
//! `pull` runs its own tokio runtime, so the library cases are plain `#[test]`s.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thv_sandbox_e2e::hostile::{Body, HostileServer, ImageRoutes, Reply, Request};
use thv_sandbox_e2e::{require, sha256_digest, thv_sandbox_bin, BuiltImage, ImageBuilder, Layer};
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
