//! End-to-end: pulling from a real registry (Debian's `docker-registry` on loopback, started per test and
//! stopped by PID) images the tests build and push, into a cache that the layout reader and the unpacker then
//! use as they are.
//!
//! `pull` runs its own tokio runtime, so these are plain `#[test]`s.

use std::path::{Path, PathBuf};

use serde_json::json;
use thv_sandbox_e2e::registry::{
    htpasswd_available, openssl_available, read_blob, registry_available, CutProxy, TestRegistry,
    TokenServer,
};
use thv_sandbox_e2e::{
    host_platform, require, BuiltImage, Compression, ImageBuilder, Layer, MediaTypes,
};
use thv_sandbox_runtime::distribution::{
    self, Credential, PullError, PullOptions, PullPolicy, Pulled, UnpackTarget,
};
use thv_sandbox_runtime::image::config::ImageRuntimeConfig;
use thv_sandbox_runtime::image::digest::{Digest, DigestError};
use thv_sandbox_runtime::image::layout::Platform;
use thv_sandbox_runtime::image::reference::Reference;
use thv_sandbox_runtime::rootfs;
use thv_sandbox_runtime::rootfs::idmap::IdMapMode;
use thv_sandbox_runtime::rootfs::unpack::Ownership;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn have_registry() -> bool {
    require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    )
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn pull(r: &str, opts: &PullOptions<'_>) -> Result<Pulled, PullError> {
    distribution::pull(&reference(r), opts)
}

/// Build `builder` into a fresh layout and push it to `repo:tag`.
fn push(
    registry: &TestRegistry,
    builder: &ImageBuilder,
    repo: &str,
    tag: &str,
) -> (tempfile::TempDir, BuiltImage) {
    let layout = tempdir("thv-e2e-layout-");
    let built = builder.write(layout.path(), tag).expect("write image");
    registry
        .push_image(layout.path(), &built, repo, tag)
        .expect("push image");
    (layout, built)
}

fn blob_in_cache(cache: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    distribution::layout_dir(cache)
        .join("blobs/sha256")
        .join(hex)
        .exists()
}

fn temp_files(cache: &Path) -> Vec<PathBuf> {
    let dir = distribution::layout_dir(cache).join("blobs/sha256");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names in the cache's `index.json`.
fn cache_names(cache: &Path) -> Vec<String> {
    let path = distribution::layout_dir(cache).join("index.json");
    let Ok(text) = std::fs::read(&path) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&text).expect("index.json");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Resolve the pulled image in the cache and unpack it; returns the root directory.
fn unpack(pulled: &Pulled, cache: &Path) -> PathBuf {
    let (layout, image) = pulled
        .open(&Platform::host())
        .expect("resolve pulled image");
    let root = rootfs::ensure(
        cache,
        &layout,
        &image,
        &ImageRuntimeConfig::default(),
        IdMapMode::Single,
        Ownership::Ignore,
    )
    .expect("unpack pulled image");
    root.path
}

/// Deterministic bytes that gzip cannot shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn app_image(marker: &str) -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            Layer::new()
                .dir("/etc", 0o755)
                .file("/etc/marker", marker, 0o644),
        )
        .entrypoint(["/bin/app"])
}

#[test]
fn a_single_layer_oci_image_is_pulled_resolved_and_unpacked() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &app_image("single\n"), "e2e/single", "v1");
    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/single:v1", registry.host());

    let pulled = pull(&r, &PullOptions::new(cache.path())).expect("pull");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(pulled.index_digest, None);
    assert!(!pulled.from_cache);
    let pinned = format!("{}/e2e/single@{}", registry.host(), built.manifest.digest);
    assert_eq!(pulled.tag_ref, pinned);
    let mut names = cache_names(cache.path());
    names.sort();
    assert_eq!(names, vec![r.clone(), pinned]);
    assert!(temp_files(cache.path()).is_empty());

    let root = unpack(&pulled, cache.path());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/marker")).unwrap(),
        "single\n"
    );

    // Again: from the cache, no registry request for any blob.
    let gets_before = registry.blob_gets(&built.layers[0].digest);
    assert_eq!(gets_before, 1, "{}", registry.log());
    let again = pull(&r, &PullOptions::new(cache.path())).expect("pull again");
    assert!(again.from_cache);
    assert_eq!(again.manifest_digest, pulled.manifest_digest);
    assert_eq!(registry.blob_gets(&built.layers[0].digest), 1);
}

#[test]
fn multi_layer_docker_images_keep_layer_order() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .media_types(MediaTypes::Docker)
        .layer(
            Layer::new()
                .dir("/data", 0o755)
                .file("/data/a", "base a\n", 0o644)
                .file("/data/gone", "deleted later\n", 0o644),
        )
        .layer(
            Layer::uncompressed()
                .file("/data/a", "second a\n", 0o644)
                .whiteout("/data/gone"),
        )
        .layer(Layer::new().file("/data/b", "third b\n", 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/docker", "latest");
    assert_eq!(
        built.manifest.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let cache = tempdir("thv-e2e-cache-");
    // No tag means `latest`.
    let pulled = pull(
        &format!("{}/e2e/docker", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .expect("pull");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    for layer in &built.layers {
        assert!(blob_in_cache(cache.path(), &layer.digest));
    }
    let root = unpack(&pulled, cache.path());
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("data/a"), "second a\n");
    assert_eq!(read("data/b"), "third b\n");
    assert!(!root.join("data/gone").exists());
}

/// An image for an architecture that is not this machine's.
fn foreign_arch() -> &'static str {
    if host_platform().0 == "amd64" {
        "arm64"
    } else {
        "amd64"
    }
}

#[test]
fn a_multi_arch_index_gives_the_host_platform_and_remembers_both_digests() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let layout = tempdir("thv-e2e-layout-");
    let host = app_image("host\n")
        .write_blobs(layout.path())
        .expect("host image");
    let foreign = app_image("foreign\n")
        .platform(foreign_arch(), "linux")
        .write_blobs(layout.path())
        .expect("foreign image");
    for image in [&foreign, &host] {
        registry
            .push_image(layout.path(), image, "e2e/multi", &image.manifest.digest)
            .expect("push by digest");
    }
    let (arch, os) = host_platform();
    // The foreign entry first, and a second host entry with a variant that does not fit: the exact one wins.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": foreign.manifest.media_type, "digest": foreign.manifest.digest,
             "size": foreign.manifest.size, "platform": {"architecture": foreign_arch(), "os": "linux"}},
            {"mediaType": host.manifest.media_type, "digest": host.manifest.digest,
             "size": host.manifest.size, "platform": {"architecture": arch, "os": os}},
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = registry
        .push_manifest("e2e/multi", "v1", OCI_INDEX, &index_bytes)
        .expect("push index");

    let cache = tempdir("thv-e2e-cache-");
    let opts = PullOptions::new(cache.path());
    let r = format!("{}/e2e/multi:v1", registry.host());
    // What the verification gate is given: the digests step 1 resolved.
    let resolved = distribution::resolve(&reference(&r), &opts).expect("resolve");
    let seen = Some((
        resolved.index_digest.as_ref().map(ToString::to_string),
        resolved.manifest_digest.to_string(),
    ));
    let pulled = resolved
        .fetch_and_unpack(&opts)
        .and_then(distribution::Fetched::commit)
        .expect("pull");
    assert_eq!(pulled.manifest_digest.to_string(), host.manifest.digest);
    assert_eq!(
        pulled.index_digest.as_ref().map(ToString::to_string),
        Some(index_digest.clone())
    );
    assert_eq!(
        seen,
        Some((Some(index_digest.clone()), host.manifest.digest.clone()))
    );
    assert_eq!(
        pulled.tag_ref,
        format!("{}/e2e/multi@{index_digest}", registry.host())
    );
    // Only this platform's blobs were fetched.
    assert!(blob_in_cache(cache.path(), &host.layers[0].digest));
    assert!(!blob_in_cache(cache.path(), &foreign.layers[0].digest));
    assert!(!blob_in_cache(cache.path(), &foreign.manifest.digest));
    assert_eq!(registry.blob_gets(&foreign.layers[0].digest), 0);
    let root = unpack(&pulled, cache.path());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/marker")).unwrap(),
        "host\n"
    );

    // A Docker manifest list naming no image for this machine: refused, with the platforms it has.
    let docker_list = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": foreign.manifest.media_type, "digest": foreign.manifest.digest,
             "size": foreign.manifest.size, "platform": {"architecture": foreign_arch(), "os": "linux"}},
        ],
    });
    registry
        .push_manifest(
            "e2e/multi",
            "foreign-only",
            DOCKER_LIST,
            &serde_json::to_vec(&docker_list).unwrap(),
        )
        .expect("push list");
    let err = pull(
        &format!("{}/e2e/multi:foreign-only", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Platform(thv_sandbox_runtime::image::layout::PlatformError::NoMatch { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("platforms available: linux/{}", foreign_arch())),
        "{err}"
    );
}

#[test]
fn pulling_by_digest_and_by_tag_with_digest() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let layout = tempdir("thv-e2e-layout-");
    let built = app_image("by digest\n")
        .write_blobs(layout.path())
        .expect("image");
    // Pushed untagged: only its digest names it.
    registry
        .push_image(layout.path(), &built, "e2e/pinned", &built.manifest.digest)
        .expect("push");
    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/pinned@{}", registry.host(), built.manifest.digest);
    let pulled = pull(&r, &PullOptions::new(cache.path())).expect("pull by digest");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(pulled.tag_ref, r);
    assert_eq!(cache_names(cache.path()), vec![r.clone()]);
    unpack(&pulled, cache.path());

    // `tag@digest`: the digest decides; the tag need not exist.
    let cache2 = tempdir("thv-e2e-cache-");
    let with_tag = format!(
        "{}/e2e/pinned:nosuchtag@{}",
        registry.host(),
        built.manifest.digest
    );
    let pulled = pull(&with_tag, &PullOptions::new(cache2.path())).expect("pull tag@digest");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);

    // A digest the registry does not have.
    let missing = format!("{}/e2e/pinned@sha256:{}", registry.host(), "0".repeat(64));
    let err = pull(&missing, &PullOptions::new(cache2.path())).unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().starts_with("not found in the OCI registry"),
        "{err}"
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_not_stored() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::uncompressed().file("/data", noise(64 * 1024, 7), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/corrupt", "v1");
    // Same size, different bytes, on the registry's disk.
    let data = registry.blob_data_path(&built.layers[0].digest);
    let mut bytes = std::fs::read(&data).expect("blob on registry disk");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt blob");

    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/corrupt:v1", registry.host());
    let err = pull(&r, &PullOptions::new(cache.path())).unwrap_err();
    let PullError::Digest { what, source } = &err else {
        panic!("expected a digest error, got {err}");
    };
    assert_eq!(*what, "layer");
    let expected: Digest = built.layers[0].digest.parse().unwrap();
    assert!(
        matches!(source, DigestError::Mismatch { expected: e, .. } if *e == expected),
        "{source}"
    );
    assert_eq!(
        err.to_string(),
        "the layer the OCI registry sent does not match its digest"
    );
    assert!(err.hint().unwrap().contains("nothing was stored"));
    assert!(!blob_in_cache(cache.path(), &built.layers[0].digest));
    assert!(temp_files(cache.path()).is_empty());
    assert!(cache_names(cache.path()).is_empty());
}

#[test]
fn basic_auth_credentials_are_used_and_a_wrong_password_is_reported_as_such() {
    if !have_registry()
        || !require(
            htpasswd_available(),
            "htpasswd (apt-get install apache2-utils)",
        )
    {
        return;
    }
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret").expect("registry");
    let (_layout, built) = push(&registry, &app_image("private\n"), "e2e/private", "v1");
    let r = format!("{}/e2e/private:v1", registry.host());
    let cache = tempdir("thv-e2e-cache-");

    let err = pull(&r, &PullOptions::new(cache.path())).unwrap_err();
    assert!(
        matches!(err, PullError::AuthenticationRequired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("wants credentials"), "{err}");

    let mut opts = PullOptions::new(cache.path());
    opts.credential = Some(Credential {
        username: "alice".into(),
        password: "wrong".into(),
    });
    let err = pull(&r, &opts).unwrap_err();
    assert!(matches!(err, PullError::WrongCredentials { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the OCI registry {} refused the credentials of user `alice` (wrong user name or password?)",
            registry.host()
        )
    );
    assert!(err.hint().unwrap().contains("THV_SANDBOX_REGISTRY_USER"));

    opts.credential = Some(Credential {
        username: "alice".into(),
        password: "s3cret".into(),
    });
    let pulled = pull(&r, &opts).expect("pull with credentials");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);

    // From Docker's config file: `auths` with base64 `user:password`.
    let docker = tempdir("thv-e2e-docker-");
    let config = docker.path().join("config.json");
    std::fs::write(
        &config,
        json!({"auths": {registry.host(): {"auth": "YWxpY2U6czNjcmV0"}}}).to_string(),
    )
    .unwrap();
    let cache2 = tempdir("thv-e2e-cache-");
    let mut opts = PullOptions::new(cache2.path());
    opts.docker_config = Some(config);
    let pulled = pull(&r, &opts).expect("pull with docker config");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
}

#[test]
fn pull_never_runs_from_the_cache_with_no_registry_at_all() {
    if !have_registry() {
        return;
    }
    let mut registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &app_image("offline\n"), "e2e/offline", "v1");
    let r = format!("{}/e2e/offline:v1", registry.host());
    let cache = tempdir("thv-e2e-cache-");
    let first = pull(&r, &PullOptions::new(cache.path())).expect("pull");
    registry.stop();

    let mut never = PullOptions::new(cache.path());
    never.policy = PullPolicy::Never;
    let offline = pull(&r, &never).expect("pull never, registry stopped");
    assert!(offline.from_cache);
    assert_eq!(offline.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(offline.tag_ref, first.tag_ref);
    unpack(&offline, cache.path());
    // `missing` needs no registry either when the image is cached.
    let missing =
        pull(&r, &PullOptions::new(cache.path())).expect("pull missing, registry stopped");
    assert!(missing.from_cache);

    // `always` has to ask the registry, which is gone.
    let mut always = PullOptions::new(cache.path());
    always.policy = PullPolicy::Always;
    let err = pull(&r, &always).unwrap_err();
    assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
    assert!(
        err.hint().unwrap().contains("--pull never"),
        "{:?}",
        err.hint()
    );

    // `never` for something not cached.
    let other = format!("{}/e2e/offline:v2", registry.host());
    let err = pull(&other, &never).unwrap_err();
    assert!(matches!(err, PullError::NotInCache { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{other} is not in the cache, and pulling is off")
    );
}

#[test]
fn a_cut_transfer_leaves_nothing_a_later_pull_would_use_and_the_next_pull_succeeds() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::uncompressed().file("/big", noise(512 * 1024, 11), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/cut", "v1");
    let layer = &built.layers[0].digest;
    // Cut the connection carrying the layer's GET after 100 KB of the response.
    let proxy =
        CutProxy::start(registry.addr(), &format!("/blobs/{layer}"), 100_000).expect("proxy");
    let r = format!("{}/e2e/cut:v1", proxy.host());
    let cache = tempdir("thv-e2e-cache-");

    let err = pull(&r, &PullOptions::new(cache.path())).unwrap_err();
    assert_eq!(proxy.cuts(), 1, "the proxy cut nothing: {err}");
    assert!(
        matches!(
            err,
            PullError::Transfer { .. } | PullError::TransferCut { .. } | PullError::Digest { .. }
        ),
        "{err}"
    );
    assert!(!blob_in_cache(cache.path(), layer));
    assert!(temp_files(cache.path()).is_empty());
    assert!(cache_names(cache.path()).is_empty());
    // Nothing is cached under the name, so even `never` finds nothing.
    let mut never = PullOptions::new(cache.path());
    never.policy = PullPolicy::Never;
    assert!(matches!(
        pull(&r, &never),
        Err(PullError::NotInCache { .. })
    ));

    let pulled = pull(&r, &PullOptions::new(cache.path())).expect("second pull");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    let cached = distribution::layout_dir(cache.path())
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    assert_eq!(
        std::fs::read(cached).unwrap(),
        read_blob(_layout.path(), &built.layers[0]).unwrap()
    );
}

#[test]
fn a_mirror_serves_the_image_which_keeps_its_original_name() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &app_image("mirrored\n"), "org/tool", "1.0");
    let cache = tempdir("thv-e2e-cache-");
    let mut opts = PullOptions::new(cache.path());
    opts.mirrors = vec![("ghcr.io".into(), registry.host())];
    let pulled = pull("ghcr.io/org/tool:1.0", &opts).expect("pull through mirror");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(
        pulled.tag_ref,
        format!("ghcr.io/org/tool@{}", built.manifest.digest)
    );
    assert!(cache_names(cache.path()).contains(&"ghcr.io/org/tool:1.0".to_owned()));
    unpack(&pulled, cache.path());
}

#[test]
fn a_moved_tag_is_noticed_only_when_resolving_again() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_a_layout, a) = push(&registry, &app_image("first\n"), "e2e/moving", "v1");
    let r = format!("{}/e2e/moving:v1", registry.host());
    let cache = tempdir("thv-e2e-cache-");
    pull(&r, &PullOptions::new(cache.path())).expect("pull first");
    let (_b_layout, b) = push(&registry, &app_image("second\n"), "e2e/moving", "v1");
    assert_ne!(a.manifest.digest, b.manifest.digest);

    // `missing`: the cached digest, no network.
    let cached = pull(&r, &PullOptions::new(cache.path())).expect("pull missing");
    assert!(cached.from_cache);
    assert_eq!(cached.manifest_digest.to_string(), a.manifest.digest);

    // `always`: the new digest, and the old one is reported.
    let mut always = PullOptions::new(cache.path());
    always.policy = PullPolicy::Always;
    let moved = pull(&r, &always).expect("pull always");
    assert_eq!(moved.manifest_digest.to_string(), b.manifest.digest);
    assert_eq!(
        moved.replaced.as_ref().map(ToString::to_string),
        Some(a.manifest.digest.clone())
    );
    // The tag now names the new image; the old one stays reachable by its pinned name.
    let now = pull(&r, &PullOptions::new(cache.path())).expect("pull missing again");
    assert_eq!(now.manifest_digest.to_string(), b.manifest.digest);
    let old = format!("{}/e2e/moving@{}", registry.host(), a.manifest.digest);
    assert!(cache_names(cache.path()).contains(&old));
}

/// Step 1 fetches no layer: what the gate decides on (both digests, manifest and config) is known before any layer
/// is asked for, and an image the gate refuses (not passed on to `fetch_and_unpack`) leaves no layer fetched and
/// nothing named in the cache.
#[test]
fn resolve_fetches_no_layer_and_a_refusal_leaves_nothing() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &app_image("unverified\n"), "e2e/verify", "v1");
    let cache = tempdir("thv-e2e-cache-");
    let opts = PullOptions::new(cache.path());
    let r = format!("{}/e2e/verify:v1", registry.host());
    let resolved = distribution::resolve(&reference(&r), &opts).expect("resolve");
    assert_eq!(resolved.manifest_digest.to_string(), built.manifest.digest);
    assert_eq!(resolved.config_digest.to_string(), built.config.digest);
    assert!(!resolved.from_cache);
    assert_eq!(
        registry.blob_gets(&built.layers[0].digest),
        0,
        "{}",
        registry.log()
    );
    // Refused: dropped without fetching.
    drop(resolved);
    assert_eq!(registry.blob_gets(&built.layers[0].digest), 0);
    assert!(!blob_in_cache(cache.path(), &built.layers[0].digest));
    assert!(cache_names(cache.path()).is_empty());

    // The pipeline's gate (`enabled` without a policy refuses every image): a typed refusal, the same text as
    // before, and still no layer requested, nothing named.
    let dirs = thv_sandbox_runtime::dirs::Dirs::from_env(Some(cache.path().to_owned())).unwrap();
    let err = thv_sandbox_runtime::pull_verified(
        &r,
        PullPolicy::Missing,
        &thv_sandbox_runtime::RegistryAccess::default(),
        &thv_sandbox_runtime::report::Silent,
        &dirs,
        &thv_sandbox_runtime::Verification {
            mode: Some(thv_sandbox_runtime::Mode::Enabled),
            ..Default::default()
        },
    )
    .unwrap_err();
    let thv_sandbox_runtime::Error::Refused(refused) = &err else {
        panic!("not a refusal: {err:?}");
    };
    assert_eq!(refused.reference, r);
    assert!(
        err.to_string().starts_with(&format!(
            "{r} was refused by verification: no provenance is declared"
        )),
        "{err}"
    );
    assert!(
        refused.hint.contains("--image-verification=warn"),
        "{}",
        refused.hint
    );
    assert_eq!(
        registry.blob_gets(&built.layers[0].digest),
        0,
        "{}",
        registry.log()
    );
    assert!(!blob_in_cache(cache.path(), &built.layers[0].digest));
    assert!(cache_names(cache.path()).is_empty());
}

#[test]
fn zstd_layers_are_pulled_and_unpacked_and_still_checked() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(
            Layer::new()
                .dir("/data", 0o755)
                .file("/data/a", "zstd base\n", 0o644)
                .file("/data/noise", noise(256 * 1024, 3), 0o644)
                .file("/data/gone", "deleted later\n", 0o644),
        )
        .layer(
            Layer::new()
                .whiteout("/data/gone")
                .file("/data/b", "zstd top\n", 0o600),
        )
        .compress_all(Compression::Zstd)
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/zstd", "v1");
    assert!(built
        .layers
        .iter()
        .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let cache = tempdir("thv-e2e-cache-");
    let pulled = pull(
        &format!("{}/e2e/zstd:v1", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .expect("pull a zstd image");
    let root = unpack(&pulled, cache.path());
    assert_eq!(
        std::fs::read_to_string(root.join("data/a")).unwrap(),
        "zstd base\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("data/b")).unwrap(),
        "zstd top\n"
    );
    assert_eq!(
        std::fs::read(root.join("data/noise")).unwrap(),
        noise(256 * 1024, 3)
    );
    assert!(!root.join("data/gone").exists());

    // A config whose diff_id does not match the (correctly transferred) zstd layer: pulled, never unpacked.
    let wrong = format!("sha256:{}", "2".repeat(64));
    let lying = ImageBuilder::new()
        .layer(Layer::new().file("/x", "x\n", 0o644))
        .compress_all(Compression::Zstd)
        .config_field("rootfs", json!({"type": "layers", "diff_ids": [wrong]}))
        .entrypoint(["/bin/app"]);
    let (_layout, lying_built) = push(&registry, &lying, "e2e/zstd-lying", "v1");
    let pulled = pull(
        &format!("{}/e2e/zstd-lying:v1", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .expect("pull");
    let (layout, resolved) = pulled.open(&Platform::host()).expect("resolve");
    let err = rootfs::ensure(
        cache.path(),
        &layout,
        &resolved,
        &ImageRuntimeConfig::default(),
        IdMapMode::Single,
        Ownership::Ignore,
    )
    .unwrap_err();
    assert!(
        matches!(&err, rootfs::RootfsError::DiffIdMismatch { digest, .. } if digest.to_string() == lying_built.layers[0].digest),
        "{err}"
    );
    let roots: Vec<_> = std::fs::read_dir(rootfs::roots_dir(cache.path()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(lying_built.manifest.digest.trim_start_matches("sha256:")))
        .collect();
    assert!(roots.is_empty(), "{roots:?}");

    // A zstd blob that does not match its digest: refused, not stored.
    let corrupt = ImageBuilder::new()
        .layer(Layer::new().file("/data", noise(64 * 1024, 11), 0o644))
        .compress_all(Compression::Zstd)
        .entrypoint(["/bin/app"]);
    let (_layout, corrupt_built) = push(&registry, &corrupt, "e2e/zstd-corrupt", "v1");
    let data = registry.blob_data_path(&corrupt_built.layers[0].digest);
    let mut bytes = std::fs::read(&data).expect("blob on registry disk");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt blob");
    let err = pull(
        &format!("{}/e2e/zstd-corrupt:v1", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .unwrap_err();
    assert!(
        matches!(err, PullError::Digest { what: "layer", .. }),
        "{err}"
    );
    assert!(!blob_in_cache(
        cache.path(),
        &corrupt_built.layers[0].digest
    ));
}

#[test]
fn concurrent_pulls_of_one_image_share_one_download() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::uncompressed().file("/a", noise(2 << 20, 3), 0o644))
        .layer(Layer::uncompressed().file("/b", noise(2 << 20, 5), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/concurrent", "v1");
    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/concurrent:v1", registry.host());
    let results: Vec<Result<Pulled, PullError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| pull(&r, &PullOptions::new(cache.path()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for result in &results {
        let pulled = result.as_ref().expect("concurrent pull");
        assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    }
    // However the two interleaved, each blob crossed the network once.
    for layer in &built.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", registry.log());
    }
    assert_eq!(cache_names(cache.path()).len(), 2);
    let pulled = results.into_iter().next().unwrap().unwrap();
    unpack(&pulled, cache.path());
}

#[test]
fn bearer_tokens_anonymous_and_with_a_password_and_a_refused_password() {
    if !have_registry() || !require(openssl_available(), "the openssl command") {
        return;
    }
    let tokens = TokenServer::start("bob", "t0ken-pw").expect("token server");
    let registry = TestRegistry::start_with_token_auth(&tokens).expect("registry");
    let (_public_layout, public) = push(&registry, &app_image("public\n"), "public/tool", "v1");
    let (_private_layout, private) = push(&registry, &app_image("private\n"), "team/tool", "v1");
    let cache = tempdir("thv-e2e-cache-");
    let before = tokens.requests();

    // Anonymous: the challenge sends us to the token server, which grants pull on public/.
    let pulled = pull(
        &format!("{}/public/tool:v1", registry.host()),
        &PullOptions::new(cache.path()),
    )
    .expect("anonymous pull with a bearer token");
    assert_eq!(pulled.manifest_digest.to_string(), public.manifest.digest);
    assert!(tokens.requests() > before, "no token was requested");

    // Anonymous on a private repository: the token grants nothing, the registry says 401.
    let private_ref = format!("{}/team/tool:v1", registry.host());
    let err = pull(&private_ref, &PullOptions::new(cache.path())).unwrap_err();
    assert!(
        matches!(err, PullError::AuthenticationRequired { .. }),
        "{err}"
    );

    // A wrong password: the token server refuses it, and that is what is reported.
    let mut opts = PullOptions::new(cache.path());
    opts.credential = Some(Credential {
        username: "bob".into(),
        password: "nope".into(),
    });
    let err = pull(&private_ref, &opts).unwrap_err();
    let PullError::WrongCredentials { detail, .. } = &err else {
        panic!("expected refused credentials, got {err}");
    };
    assert!(
        detail.contains("incorrect username or password"),
        "{detail}"
    );

    opts.credential = Some(Credential {
        username: "bob".into(),
        password: "t0ken-pw".into(),
    });
    let pulled = pull(&private_ref, &opts).expect("pull with a password");
    assert_eq!(pulled.manifest_digest.to_string(), private.manifest.digest);
    unpack(&pulled, cache.path());
}

const KILLED_PULL_CACHE: &str = "THV_E2E_KILLED_PULL_CACHE";
const KILLED_PULL_REF: &str = "THV_E2E_KILLED_PULL_REF";

/// The pull that `a_killed_pull_leaves_only_an_unused_temporary_file` runs in a child process and kills.
#[test]
#[ignore = "run in a child process by a_killed_pull_leaves_only_an_unused_temporary_file"]
fn killed_pull_child() {
    let (Ok(cache), Ok(r)) = (
        std::env::var(KILLED_PULL_CACHE),
        std::env::var(KILLED_PULL_REF),
    ) else {
        return;
    };
    let _ = pull(&r, &PullOptions::new(cache));
}

#[test]
fn a_killed_pull_leaves_only_an_unused_temporary_file() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::uncompressed().file("/big", noise(512 * 1024, 13), 0o644))
        .entrypoint(["/bin/app"]);
    let (layout, built) = push(&registry, &image, "e2e/killed", "v1");
    let layer = &built.layers[0].digest;
    let proxy = CutProxy::start_stalling(registry.addr(), &format!("/blobs/{layer}"), 100_000)
        .expect("proxy");
    let r = format!("{}/e2e/killed:v1", proxy.host());
    let cache = tempdir("thv-e2e-cache-");

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_pull_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(KILLED_PULL_CACHE, cache.path())
        .env(KILLED_PULL_REF, &r)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the pull to kill");
    // Wait (bounded) until the transfer of the layer hangs mid-way and the pull has its temporary file (on a
    // loaded machine the proxy can have sent its bytes before the pulling process created the file), then kill the
    // pulling process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.cuts() == 0 || temp_files(cache.path()).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the layer transfer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill the pull");
    child.wait().expect("reap the pull");

    // What it leaves: one temporary file, no blob under the layer's name, nothing in index.json.
    let leftovers = temp_files(cache.path());
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(!blob_in_cache(cache.path(), layer));
    assert!(cache_names(cache.path()).is_empty());
    let mut never = PullOptions::new(cache.path());
    never.policy = PullPolicy::Never;
    assert!(matches!(
        pull(&r, &never),
        Err(PullError::NotInCache { .. })
    ));

    // The next pull (the proxy no longer interferes) succeeds and does not use the leftover.
    let pulled = pull(&r, &PullOptions::new(cache.path())).expect("pull after the kill");
    assert_eq!(pulled.manifest_digest.to_string(), built.manifest.digest);
    let cached = distribution::layout_dir(cache.path())
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    assert_eq!(
        std::fs::read(cached).unwrap(),
        read_blob(layout.path(), &built.layers[0]).unwrap()
    );
    assert!(leftovers[0].exists(), "a recent leftover is left alone");
    unpack(&pulled, cache.path());
}

/// Whether `/proc/locks` lists a process waiting for a lock on the file with inode `ino`.
fn lock_waiter_on(ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let suffix = format!(":{ino}");
    locks.lines().any(|l| {
        l.contains("->")
            && l.split_whitespace()
                .any(|field| field.ends_with(&suffix) && field.matches(':').count() == 2)
    })
}

#[test]
fn a_second_first_run_waits_for_the_first_unpack_and_uses_its_root() {
    use std::os::unix::fs::MetadataExt;
    let layout = tempdir("thv-e2e-layout-");
    app_image("shared\n")
        .write(layout.path(), "v1")
        .expect("write image");
    let oci = thv_sandbox_runtime::image::layout::OciLayout::open(layout.path()).unwrap();
    let image = oci.resolve(Some("v1"), &Platform::host()).unwrap();
    let cache = tempdir("thv-e2e-cache-");
    let key = rootfs::root_key(&image.manifest_digest, IdMapMode::Single, Ownership::Ignore);
    thv_sandbox_runtime::dirs::private_dir(&rootfs::roots_dir(cache.path())).unwrap();

    // The first run is building: it holds the lock.
    let first_lock = rootfs::lock_root(cache.path(), &key).unwrap();
    let ino = std::fs::metadata(rootfs::lock_path(cache.path(), &key))
        .unwrap()
        .ino();
    let second = {
        let (cache, layout, image) = (
            cache.path().to_owned(),
            layout.path().to_owned(),
            image.clone(),
        );
        std::thread::spawn(move || {
            let oci = thv_sandbox_runtime::image::layout::OciLayout::open(&layout).unwrap();
            rootfs::ensure(
                &cache,
                &oci,
                &image,
                &ImageRuntimeConfig::default(),
                IdMapMode::Single,
                Ownership::Ignore,
            )
        })
    };
    // The second run waits for that lock (it is listed as a waiter) instead of unpacking on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !lock_waiter_on(ino) {
        assert!(
            !second.is_finished(),
            "the second run did not wait for the first one's unpack: {:?}",
            second.join().unwrap().map(|r| r.unpacked_now)
        );
        assert!(std::time::Instant::now() < deadline, "no waiter appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The first run commits its root (built aside, moved under the root's name), then lets go.
    let aside = tempdir("thv-e2e-cache-");
    let built = rootfs::ensure(
        aside.path(),
        &oci,
        &image,
        &ImageRuntimeConfig::default(),
        IdMapMode::Single,
        Ownership::Ignore,
    )
    .unwrap();
    let entry = rootfs::roots_dir(cache.path()).join(&key);
    std::fs::rename(built.path.parent().unwrap(), &entry).unwrap();
    drop(first_lock);

    let second = second.join().unwrap().expect("second run's root");
    assert!(!second.unpacked_now, "the second run unpacked again");
    assert_eq!(second.path, entry.join("rootfs"));
    assert_eq!(
        std::fs::read_to_string(second.path.join("etc/marker")).unwrap(),
        "shared\n"
    );
    let staging: Vec<_> = std::fs::read_dir(rootfs::roots_dir(cache.path()))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
}

/// The image that is unpacked is the digest that was verified, even when the tag moves to another image between
/// resolving and fetching (while the gate decides: another image is pushed to the tag then).
#[test]
fn the_verified_digest_is_what_is_unpacked_even_if_the_tag_moves_meanwhile() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_la, a) = push(&registry, &app_image("first\n"), "e2e/racing", "v1");
    let (lb, b_image) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = app_image("second\n")
            .write(dir.path(), "v1")
            .expect("write");
        (dir, built)
    };
    let cache = tempdir("thv-e2e-cache-");
    let opts = PullOptions::new(cache.path());
    let resolved = distribution::resolve(
        &reference(&format!("{}/e2e/racing:v1", registry.host())),
        &opts,
    )
    .expect("resolve");
    let verified = resolved.manifest_digest.to_string();
    registry
        .push_image(lb.path(), &b_image, "e2e/racing", "v1")
        .expect("move the tag");
    let pulled = resolved
        .fetch_and_unpack(&opts)
        .and_then(distribution::Fetched::commit)
        .expect("pull");
    assert_eq!(verified, a.manifest.digest);
    assert_eq!(pulled.manifest_digest.to_string(), a.manifest.digest);
    let root = unpack(&pulled, cache.path());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/marker")).unwrap(),
        "first\n",
        "the verified image's files"
    );
    // The second image's layers were never needed.
    assert_eq!(
        registry.blob_gets(&b_image.layers[0].digest),
        0,
        "{}",
        registry.log()
    );
}

// ---- Streaming: layers unpacked while they download (`PullOptions::unpack`), as `run` and `pull` do.

const STREAM_MODE: IdMapMode = IdMapMode::Single;
const STREAM_OWNERS: Ownership = Ownership::Ignore;

fn streaming(cache: &Path) -> PullOptions<'static> {
    let mut opts = PullOptions::new(cache);
    opts.unpack = Some(UnpackTarget {
        mode: STREAM_MODE,
        ownership: STREAM_OWNERS,
    });
    opts
}

/// Where the committed root of `manifest` is (or would be).
fn root_entry(cache: &Path, manifest: &str) -> PathBuf {
    let digest: Digest = manifest.parse().unwrap();
    rootfs::roots_dir(cache).join(rootfs::root_key(&digest, STREAM_MODE, STREAM_OWNERS))
}

/// Everything in the roots directory: committed roots and staging directories alike.
fn roots_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(rootfs::roots_dir(cache))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A tree as (relative path, kind and content) lines, sorted; hard links are shown by which paths share an inode.
fn describe_tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String, u64)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.is_dir() {
                format!("dir {:o}", meta.mode() & 0o7777)
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let data = std::fs::read(&path).unwrap();
                format!(
                    "file {:o} {} bytes {}",
                    meta.mode() & 0o7777,
                    data.len(),
                    Digest::of_bytes(&data)
                )
            };
            out.push((rel, kind, meta.ino()));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    let mut lines: Vec<String> = found
        .iter()
        .map(|(rel, kind, ino)| {
            let mut shared: Vec<&str> = found
                .iter()
                .filter(|(other, k, i)| i == ino && other != rel && !k.starts_with("dir"))
                .map(|(other, _, _)| other.as_str())
                .collect();
            shared.sort();
            format!("{rel}: {kind} links {shared:?}")
        })
        .collect();
    lines.sort();
    lines
}

fn layered_image() -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            Layer::new()
                .dir("/data", 0o755)
                .file("/data/a", "base a\n", 0o644)
                .file("/data/gone", "deleted later\n", 0o644)
                .dir("/opq", 0o755)
                .file("/opq/old", "hidden by the opaque marker\n", 0o644)
                .dir("/lib", 0o755)
                .file("/lib/target", noise(300 * 1024, 21), 0o755)
                .dir("/ro", 0o555)
                .file("/ro/inside", "in a read-only dir\n", 0o444),
        )
        .layer(
            Layer::uncompressed()
                .file("/data/a", "second a\n", 0o600)
                .whiteout("/data/gone")
                .opaque("/opq")
                .file("/opq/new", "after the opaque marker\n", 0o644)
                // A hard link into the lower layer, and one within this layer.
                .hardlink("/data/link-to-lower", "/lib/target")
                .file("/data/big", noise(1024 * 1024, 22), 0o644)
                .hardlink("/data/big-again", "/data/big")
                .symlink("/data/sym", "../lib/target"),
        )
        .layer(
            Layer::new()
                .compression(Compression::Zstd)
                .file("/data/b", "third b\n", 0o644)
                .file("/ro/later", "added to a 0555 dir by a later layer\n", 0o644),
        )
        .entrypoint(["/bin/app"])
}

#[test]
fn a_streamed_pull_unpacks_while_downloading_into_the_root_a_run_uses() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &layered_image(), "e2e/stream", "v1");
    let r = format!("{}/e2e/stream:v1", registry.host());
    let cache = tempdir("thv-e2e-cache-");

    let pulled = pull(&r, &streaming(cache.path())).expect("streamed pull");
    assert!(pulled.unpacked, "the pull did not unpack");
    assert!(!pulled.from_cache);
    for layer in &built.layers {
        assert!(blob_in_cache(cache.path(), &layer.digest));
        assert_eq!(registry.blob_gets(&layer.digest), 1);
    }
    assert!(temp_files(cache.path()).is_empty());
    let entry = root_entry(cache.path(), &built.manifest.digest);
    assert_eq!(
        roots_entries(cache.path()),
        vec![entry.file_name().unwrap().to_string_lossy().into_owned()],
        "exactly the committed root, no staging left"
    );

    // What a run does next: the same root, found, not unpacked again.
    let (layout, image) = pulled.open(&Platform::host()).unwrap();
    let root = rootfs::ensure(
        cache.path(),
        &layout,
        &image,
        &ImageRuntimeConfig::default(),
        STREAM_MODE,
        STREAM_OWNERS,
    )
    .expect("root");
    assert!(!root.unpacked_now);
    assert_eq!(root.path, entry.join("rootfs"));
    let tree = &root.path;
    let read = |p: &str| std::fs::read_to_string(tree.join(p)).unwrap();
    assert_eq!(read("data/a"), "second a\n");
    assert_eq!(read("data/b"), "third b\n");
    assert_eq!(read("opq/new"), "after the opaque marker\n");
    assert_eq!(read("ro/later"), "added to a 0555 dir by a later layer\n");
    assert!(!tree.join("data/gone").exists());
    assert!(!tree.join("opq/old").exists());
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(tree.join(p)).unwrap().ino();
        assert_eq!(ino("data/link-to-lower"), ino("lib/target"));
        assert_eq!(ino("data/big-again"), ino("data/big"));
    }

    // The same image pulled without streaming and unpacked from the cache gives the same tree.
    let plain_cache = tempdir("thv-e2e-cache-");
    let plain = pull(&r, &PullOptions::new(plain_cache.path())).expect("plain pull");
    assert!(!plain.unpacked);
    assert!(roots_entries(plain_cache.path()).is_empty());
    let plain_root = unpack(&plain, plain_cache.path());
    assert_eq!(describe_tree(tree), describe_tree(&plain_root));

    // Pulled again (`--pull always`): the root is there, nothing is downloaded or unpacked.
    let mut always = streaming(cache.path());
    always.policy = PullPolicy::Always;
    let again = pull(&r, &always).expect("pull again");
    assert!(!again.unpacked);
    for layer in &built.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 2, "{}", registry.log());
    }
}

#[test]
fn a_tampered_layer_refuses_the_streamed_pull_and_keeps_nothing_and_a_good_registry_works_after() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::new().file("/first", noise(200 * 1024, 31), 0o644))
        .layer(Layer::new().file("/second", noise(600 * 1024, 32), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/tampered", "v1");
    let bad = &built.layers[1].digest;
    // Same size, other bytes, on the registry's disk: the gzip stream breaks mid-way, after the unpacker started.
    let data = registry.blob_data_path(bad);
    let good_bytes = std::fs::read(&data).expect("blob on registry disk");
    let mut bytes = good_bytes.clone();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bytes).expect("tamper");

    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/tampered:v1", registry.host());
    let err = pull(&r, &streaming(cache.path())).unwrap_err();
    // Reported as what it is: the blob does not match its digest (not as what its bytes did to the unpacker).
    let PullError::Digest { what, source } = &err else {
        panic!("expected a digest error, got {err:?}");
    };
    assert_eq!(*what, "layer");
    let expected: Digest = bad.parse().unwrap();
    assert!(
        matches!(source, DigestError::Mismatch { expected: e, .. } if *e == expected),
        "{source}"
    );
    assert!(!blob_in_cache(cache.path(), bad));
    assert!(temp_files(cache.path()).is_empty());
    assert!(cache_names(cache.path()).is_empty());
    assert!(
        roots_entries(cache.path()).is_empty(),
        "a root or staging directory was left: {:?}",
        roots_entries(cache.path())
    );

    // The registry serves the right bytes again: the next pull works and builds the root.
    std::fs::write(&data, &good_bytes).expect("repair");
    let pulled = pull(&r, &streaming(cache.path())).expect("pull from a good registry");
    assert!(pulled.unpacked);
    let entry = root_entry(cache.path(), &built.manifest.digest);
    assert_eq!(
        std::fs::read(entry.join("rootfs/second")).unwrap(),
        noise(600 * 1024, 32)
    );
}

#[test]
fn a_cut_mid_layer_while_unpacking_leaves_nothing_and_the_next_pull_succeeds() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::uncompressed().file("/base", "base\n", 0o644))
        .layer(Layer::uncompressed().file("/big", noise(2 * 1024 * 1024, 41), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/streamcut", "v1");
    let layer = &built.layers[1].digest;
    // An uncompressed layer: the unpacker has written part of /big by the time the connection is cut.
    let proxy =
        CutProxy::start(registry.addr(), &format!("/blobs/{layer}"), 700_000).expect("proxy");
    let r = format!("{}/e2e/streamcut:v1", proxy.host());
    let cache = tempdir("thv-e2e-cache-");

    let err = pull(&r, &streaming(cache.path())).unwrap_err();
    assert_eq!(proxy.cuts(), 1, "the proxy cut nothing: {err}");
    assert!(
        matches!(
            err,
            PullError::Transfer { .. } | PullError::TransferCut { .. } | PullError::Digest { .. }
        ),
        "{err:?}"
    );
    assert!(!blob_in_cache(cache.path(), layer));
    assert!(temp_files(cache.path()).is_empty());
    assert!(cache_names(cache.path()).is_empty());
    assert!(
        roots_entries(cache.path()).is_empty(),
        "{:?}",
        roots_entries(cache.path())
    );

    let pulled = pull(&r, &streaming(cache.path())).expect("second pull");
    assert!(pulled.unpacked);
    let entry = root_entry(cache.path(), &built.manifest.digest);
    assert_eq!(
        std::fs::read(entry.join("rootfs/big")).unwrap(),
        noise(2 * 1024 * 1024, 41)
    );
}

#[test]
fn concurrent_streamed_pulls_share_one_download_and_one_unpack() {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let (_layout, built) = push(&registry, &layered_image(), "e2e/streamrace", "v1");
    let r = format!("{}/e2e/streamrace:v1", registry.host());
    let cache = tempdir("thv-e2e-cache-");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| pull(&r, &streaming(cache.path()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unpacked: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().expect("concurrent streamed pull").unpacked)
        .collect();
    assert_eq!(
        unpacked.iter().filter(|u| **u).count(),
        1,
        "one pull unpacks, the other uses its root: {unpacked:?}"
    );
    for layer in &built.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", registry.log());
    }
    assert_eq!(roots_entries(cache.path()).len(), 1);
}

#[test]
fn a_layer_the_unpacker_refuses_fails_the_streamed_pull_with_the_unpackers_reason_and_commits_no_root(
) {
    if !have_registry() {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let image = ImageBuilder::new()
        .layer(Layer::new().file("/base", "base\n", 0o644))
        // Right digest, right diff_id, hostile content.
        .layer(Layer::uncompressed().raw_file(b"../escape", "out\n", 0o644))
        .layer(Layer::uncompressed().file("/big", noise(4 * 1024 * 1024, 51), 0o644))
        .entrypoint(["/bin/app"]);
    let (_layout, built) = push(&registry, &image, "e2e/hostile", "v1");
    let cache = tempdir("thv-e2e-cache-");
    let r = format!("{}/e2e/hostile:v1", registry.host());
    let err = pull(&r, &streaming(cache.path())).unwrap_err();
    let PullError::Unpack(cause) = &err else {
        panic!("expected the unpacker's refusal, got {err:?}");
    };
    assert!(
        matches!(**cause, rootfs::RootfsError::Unpack { ref digest, .. } if digest.to_string() == built.layers[1].digest),
        "{cause:?}"
    );
    let chain = format!("{:?}", cause);
    assert!(chain.contains("Escape"), "{chain}");
    assert!(
        roots_entries(cache.path()).is_empty(),
        "{:?}",
        roots_entries(cache.path())
    );
    assert!(cache_names(cache.path()).is_empty());
    assert!(temp_files(cache.path()).is_empty());
}
