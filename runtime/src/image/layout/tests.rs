//! Layouts written by hand into temporary directories: JSON documents and blobs, with their
//! sha256 computed here.

use std::error::Error as _;
use std::fs;
use std::io::Read;

use serde_json::{json, Value};

use super::*;
use crate::image::digest::DigestError;
use crate::image::document::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

struct Fixture {
    dir: tempfile::TempDir,
}

/// A descriptor for `blob` as `(digest, size)`, with a media type.
fn desc(media_type: &str, (digest, size): &(Digest, u64)) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

fn with(mut descriptor: Value, key: &str, value: Value) -> Value {
    descriptor[key] = value;
    descriptor
}

fn tagged(descriptor: Value, tag: &str) -> Value {
    with(descriptor, "annotations", json!({ REF_NAME: tag }))
}

fn on(descriptor: Value, platform: &Platform) -> Value {
    let mut p = json!({"os": platform.os, "architecture": platform.architecture});
    if let Some(variant) = &platform.variant {
        p["variant"] = json!(variant);
    }
    with(descriptor, "platform", p)
}

fn platform(s: &str) -> Platform {
    s.parse().unwrap()
}

/// How to build one image.
struct ImageSpec<'a> {
    platform: Platform,
    docker: bool,
    layer_media_type: &'a str,
    /// Distinguishes images with otherwise identical content.
    label: &'a str,
}

impl Default for ImageSpec<'_> {
    fn default() -> Self {
        ImageSpec {
            platform: Platform::host(),
            docker: false,
            layer_media_type: OCI_LAYER_GZIP,
            label: "one",
        }
    }
}

/// What `Fixture::image` wrote.
struct Image {
    manifest: (Digest, u64),
    config: (Digest, u64),
    layers: Vec<(Digest, u64)>,
    diff_ids: Vec<Digest>,
    descriptor: Value,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        Fixture { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, bytes: &[u8]) -> (Digest, u64) {
        let digest = Digest::of_bytes(bytes);
        fs::write(self.blob_file(&digest), bytes).unwrap();
        (digest, bytes.len() as u64)
    }

    fn json_blob(&self, value: &Value) -> (Digest, u64) {
        self.blob(&serde_json::to_vec(value).unwrap())
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.path().join("blobs/sha256").join(digest.hex())
    }

    /// Two layers (content is arbitrary: nothing here decompresses), a config, a manifest.
    fn image(&self, spec: ImageSpec<'_>) -> Image {
        let layers: Vec<_> = (0..2)
            .map(|i| self.blob(format!("{} layer {i}", spec.label).as_bytes()))
            .collect();
        let diff_ids: Vec<Digest> = (0..2)
            .map(|i| Digest::of_bytes(format!("{} tar {i}", spec.label).as_bytes()))
            .collect();
        let mut config = json!({
            "architecture": spec.platform.architecture,
            "os": spec.platform.os,
            "config": {"Entrypoint": ["/bin/server"], "Labels": {"label": spec.label}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        });
        if let Some(variant) = &spec.platform.variant {
            config["variant"] = json!(variant);
        }
        let config = self.json_blob(&config);
        let (manifest_type, config_type) = if spec.docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = self.json_blob(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": desc(config_type, &config),
            "layers": layers.iter().map(|l| desc(spec.layer_media_type, l)).collect::<Vec<_>>(),
        }));
        let descriptor = desc(manifest_type, &manifest);
        Image {
            manifest,
            config,
            layers,
            diff_ids,
            descriptor,
        }
    }

    /// An image index blob listing `manifests`.
    fn index_blob(&self, media_type: &str, manifests: Vec<Value>) -> Value {
        let blob = self.json_blob(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }));
        desc(media_type, &blob)
    }

    fn write_index_json(&self, manifests: Vec<Value>) {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    fn open(&self) -> OciLayout {
        OciLayout::open(self.path()).unwrap()
    }

    fn resolve(&self, tag: Option<&str>) -> Result<ResolvedImage, LayoutError> {
        self.open().resolve(tag, &Platform::host())
    }
}

/// Another platform than the host's, for indexes that must not pick it.
fn foreign_platform() -> Platform {
    if Platform::host().architecture == "s390x" {
        platform("linux/riscv64")
    } else {
        platform("linux/s390x")
    }
}

fn read_all(layout: &OciLayout, digest: &Digest, size: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    layout
        .open_blob(digest, size)
        .unwrap()
        .read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn single_manifest() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![tagged(image.descriptor.clone(), "v1")]);

    // No tag, one entry: that entry, whatever its name. By name: the same.
    for tag in [None, Some("v1")] {
        let resolved = fx.resolve(tag).unwrap();
        assert_eq!(resolved.index_digest, None);
        assert_eq!(resolved.manifest_digest, image.manifest.0);
        assert_eq!(resolved.config_digest, image.config.0);
        assert_eq!(
            resolved.config.config().as_ref().unwrap().entrypoint(),
            &Some(vec!["/bin/server".to_owned()])
        );
        let expected: Vec<LayerRef> = image
            .layers
            .iter()
            .zip(&image.diff_ids)
            .map(|((digest, size), diff_id)| LayerRef {
                digest: digest.clone(),
                size: *size,
                media_type: OCI_LAYER_GZIP.to_owned(),
                compression: Compression::Gzip,
                diff_id: diff_id.clone(),
            })
            .collect();
        assert_eq!(resolved.layers, expected);
    }

    // The layer blobs stream and verify.
    let layout = fx.open();
    let (digest, size) = &image.layers[1];
    assert_eq!(read_all(&layout, digest, *size).unwrap(), b"one layer 1");
    assert_eq!(layout.tags().unwrap(), vec!["v1".to_owned()]);
}

#[test]
fn nested_index_with_two_platforms_picks_host() {
    let fx = Fixture::new();
    let foreign = fx.image(ImageSpec {
        platform: foreign_platform(),
        label: "foreign",
        ..Default::default()
    });
    let host = fx.image(ImageSpec {
        label: "host",
        ..Default::default()
    });
    let windows = fx.image(ImageSpec {
        platform: Platform {
            os: "windows".into(),
            ..Platform::host()
        },
        label: "windows",
        ..Default::default()
    });
    let index = fx.index_blob(
        OCI_INDEX,
        vec![
            on(foreign.descriptor, &foreign_platform()),
            on(
                windows.descriptor,
                &Platform {
                    os: "windows".into(),
                    ..Platform::host()
                },
            ),
            on(host.descriptor, &Platform::host()),
        ],
    );
    let index_digest: Digest = index["digest"].as_str().unwrap().parse().unwrap();
    fx.write_index_json(vec![tagged(index, "latest")]);

    let resolved = fx.resolve(None).unwrap();
    assert_eq!(resolved.index_digest, Some(index_digest));
    assert_eq!(resolved.manifest_digest, host.manifest.0);
    assert_eq!(resolved.layers[0].digest, host.layers[0].0);
}

#[test]
fn arm64_v8_accepts_entry_without_variant_and_prefers_exact() {
    let fx = Fixture::new();
    let arm64 = platform("linux/arm64/v8");
    let plain = fx.image(ImageSpec {
        platform: platform("linux/arm64"),
        label: "plain",
        ..Default::default()
    });
    let v8 = fx.image(ImageSpec {
        platform: arm64.clone(),
        label: "v8",
        ..Default::default()
    });
    let v7 = fx.image(ImageSpec {
        platform: platform("linux/arm/v7"),
        label: "v7",
        ..Default::default()
    });
    // Only a variant-less arm64 entry: accepted.
    let index = fx.index_blob(
        OCI_INDEX,
        vec![
            on(v7.descriptor.clone(), &platform("linux/arm/v7")),
            on(plain.descriptor.clone(), &platform("linux/arm64")),
        ],
    );
    fx.write_index_json(vec![index]);
    let resolved = fx.open().resolve(None, &arm64).unwrap();
    assert_eq!(resolved.manifest_digest, plain.manifest.0);

    // arm/v7 wanted, only arm64 and arm/v6 offered: nothing fits.
    let v6 = fx.image(ImageSpec {
        platform: platform("linux/arm/v6"),
        label: "v6",
        ..Default::default()
    });
    let index = fx.index_blob(
        OCI_INDEX,
        vec![
            on(plain.descriptor.clone(), &platform("linux/arm64")),
            on(v6.descriptor, &platform("linux/arm/v6")),
            on(v8.descriptor.clone(), &arm64),
        ],
    );
    fx.write_index_json(vec![index]);
    let err = fx
        .open()
        .resolve(None, &platform("linux/arm/v7"))
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("platforms available: linux/arm64, linux/arm/v6, linux/arm64/v8"),
        "{err}"
    );
    // Wanted with its variant, a variant-less and an exact entry offered: the exact one, even
    // though it comes later.
    let arm_plain = fx.image(ImageSpec {
        platform: platform("linux/arm"),
        label: "arm",
        ..Default::default()
    });
    let index = fx.index_blob(
        OCI_INDEX,
        vec![
            on(arm_plain.descriptor.clone(), &platform("linux/arm")),
            on(v7.descriptor, &platform("linux/arm/v7")),
        ],
    );
    let index_digest: Digest = index["digest"].as_str().unwrap().parse().unwrap();
    fx.write_index_json(vec![index]);
    let resolved = fx.open().resolve(None, &platform("linux/arm/v7")).unwrap();
    assert_eq!(resolved.index_digest, Some(index_digest));
    assert_eq!(resolved.manifest_digest, v7.manifest.0);
    // And with only the variant-less one, that one.
    fx.write_index_json(vec![on(arm_plain.descriptor, &platform("linux/arm"))]);
    let resolved = fx.open().resolve(None, &platform("linux/arm/v7")).unwrap();
    assert_eq!(resolved.manifest_digest, arm_plain.manifest.0);
}

#[test]
fn docker_media_types() {
    let fx = Fixture::new();
    let host = fx.image(ImageSpec {
        docker: true,
        layer_media_type: DOCKER_LAYER_GZIP,
        ..Default::default()
    });
    let list = fx.index_blob(
        DOCKER_MANIFEST_LIST,
        vec![on(host.descriptor, &Platform::host())],
    );
    fx.write_index_json(vec![tagged(list, "latest")]);

    let resolved = fx.resolve(Some("latest")).unwrap();
    assert_eq!(resolved.manifest_digest, host.manifest.0);
    assert_eq!(
        resolved.manifest.media_type().as_ref().unwrap().as_ref(),
        DOCKER_MANIFEST
    );
    assert!(resolved
        .layers
        .iter()
        .all(|l| l.compression == Compression::Gzip && l.media_type == DOCKER_LAYER_GZIP));
}

#[test]
fn uncompressed_and_zstd_layers() {
    let fx = Fixture::new();
    let plain = fx.image(ImageSpec {
        layer_media_type: "application/vnd.oci.image.layer.v1.tar",
        ..Default::default()
    });
    fx.write_index_json(vec![plain.descriptor]);
    assert!(fx
        .resolve(None)
        .unwrap()
        .layers
        .iter()
        .all(|l| l.compression == Compression::None));

    let zstd = fx.image(ImageSpec {
        layer_media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        label: "zstd",
        ..Default::default()
    });
    fx.write_index_json(vec![zstd.descriptor]);
    assert!(fx
        .resolve(None)
        .unwrap()
        .layers
        .iter()
        .all(|l| l.compression == Compression::Zstd));
}

#[test]
fn tag_selection() {
    let fx = Fixture::new();
    let v1 = fx.image(ImageSpec {
        label: "v1",
        ..Default::default()
    });
    let v2 = fx.image(ImageSpec {
        label: "v2",
        ..Default::default()
    });
    fx.write_index_json(vec![
        tagged(v1.descriptor.clone(), "v1"),
        tagged(v2.descriptor.clone(), "v2"),
    ]);
    assert_eq!(
        fx.resolve(Some("v2")).unwrap().manifest_digest,
        v2.manifest.0
    );
    assert_eq!(
        fx.resolve(Some("v1")).unwrap().manifest_digest,
        v1.manifest.0
    );

    // Several images, none `latest`, no tag given: an error naming the tags.
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} holds several images and none is tagged `latest`; name one as oci:DIR:TAG \
             (tags present: v1, v2)",
            fx.path().join("index.json").display()
        )
    );

    // With a `latest`, no tag means that one.
    fx.write_index_json(vec![
        tagged(v1.descriptor.clone(), "v1"),
        tagged(v2.descriptor.clone(), "latest"),
    ]);
    assert_eq!(fx.resolve(None).unwrap().manifest_digest, v2.manifest.0);
}

#[test]
fn untagged_index_json_is_a_platform_index() {
    let fx = Fixture::new();
    let foreign = fx.image(ImageSpec {
        platform: foreign_platform(),
        label: "foreign",
        ..Default::default()
    });
    let host = fx.image(ImageSpec {
        label: "host",
        ..Default::default()
    });
    fx.write_index_json(vec![
        on(foreign.descriptor, &foreign_platform()),
        on(host.descriptor.clone(), &Platform::host()),
    ]);
    let resolved = fx.resolve(None).unwrap();
    assert_eq!(resolved.manifest_digest, host.manifest.0);
    assert_eq!(resolved.index_digest, None);

    // Two entries equally good for this host: the first one listed.
    let second = fx.image(ImageSpec {
        label: "second",
        ..Default::default()
    });
    fx.write_index_json(vec![
        on(host.descriptor.clone(), &Platform::host()),
        on(second.descriptor.clone(), &Platform::host()),
    ]);
    assert_eq!(fx.resolve(None).unwrap().manifest_digest, host.manifest.0);
    fx.write_index_json(vec![
        on(second.descriptor, &Platform::host()),
        on(host.descriptor, &Platform::host()),
    ]);
    assert_eq!(fx.resolve(None).unwrap().manifest_digest, second.manifest.0);
}

#[test]
fn missing_tag_lists_the_tags_present() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![
        tagged(image.descriptor.clone(), "latest"),
        tagged(image.descriptor.clone(), "v1"),
    ]);
    let err = fx.resolve(Some("v2")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "tag `v2` not found in {}; tags present: latest, v1",
            fx.path().join("index.json").display()
        )
    );

    fx.write_index_json(vec![image.descriptor]);
    let err = fx.resolve(Some("v2")).unwrap_err();
    assert!(err.to_string().ends_with("tags present: (none)"), "{err}");
}

#[test]
fn layer_content_not_matching_its_digest_fails_at_read() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![image.descriptor]);
    // Same length, different bytes.
    let (digest, size) = &image.layers[0];
    fs::write(fx.blob_file(digest), b"ONE LAYER 0").unwrap();

    let layout = fx.open();
    let resolved = layout.resolve(None, &Platform::host()).unwrap();
    let err = read_all(&layout, digest, *size).unwrap_err();
    let actual = Digest::of_bytes(b"ONE LAYER 0");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        err.get_ref().unwrap().downcast_ref::<DigestError>(),
        Some(&DigestError::Mismatch {
            expected: digest.clone(),
            actual: actual.clone()
        })
    );
    assert_eq!(
        err.to_string(),
        format!("content does not match its digest: expected {digest}, actual {actual}")
    );
    assert_eq!(resolved.layers[0].digest, *digest);
}

#[test]
fn metadata_blob_not_matching_its_digest_is_refused() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![image.descriptor]);
    let (digest, size) = &image.config;
    let mut bytes = fs::read(fx.blob_file(digest)).unwrap();
    // Same length, one byte changed.
    let at = bytes.len() - 2;
    bytes[at] ^= 1;
    fs::write(fx.blob_file(digest), &bytes).unwrap();
    assert_eq!(bytes.len() as u64, *size);

    let err = fx.resolve(None).unwrap_err();
    assert!(
        matches!(&err, LayoutError::BlobRead { digest: d, .. } if d == digest),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot read blob {}", fx.blob_file(digest).display())
    );
    assert!(err.source().unwrap().to_string().starts_with(&format!(
        "content does not match its digest: expected {digest}"
    )));
}

#[test]
fn size_mismatch_is_refused() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    // The descriptor claims one byte more than the manifest has.
    let descriptor = with(image.descriptor, "size", json!(image.manifest.1 + 1));
    fx.write_index_json(vec![descriptor]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob {} is {} bytes, but its descriptor says {}",
            fx.blob_file(&image.manifest.0).display(),
            image.manifest.1,
            image.manifest.1 + 1
        )
    );

    // Same for a layer, at open_blob.
    let (digest, size) = &image.layers[0];
    let err = fx.open().open_blob(digest, size - 1).unwrap_err();
    assert!(
        matches!(err, LayoutError::BlobSizeMismatch { expected, actual, .. } if expected == size - 1 && actual == *size),
        "{err:?}"
    );
}

#[test]
fn oversize_metadata_descriptors_are_refused_unread() {
    let fx = Fixture::new();
    // No blob behind this digest at all: the claim alone must be refused, before any open.
    let absent = Digest::of_bytes(b"not written");
    fx.write_index_json(vec![desc(
        OCI_MANIFEST,
        &(absent.clone(), MAX_MANIFEST_SIZE + 1),
    )]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("image manifest or index {absent} claims to be 4194305 bytes; refusing anything over 4194304")
    );

    fx.write_index_json(vec![desc(OCI_INDEX, &(absent.clone(), u64::MAX))]);
    assert!(matches!(
        fx.resolve(None).unwrap_err(),
        LayoutError::BlobTooLarge { .. }
    ));

    // A config descriptor over 8 MiB.
    let manifest = fx.json_blob(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &(absent.clone(), MAX_CONFIG_SIZE + 1)),
        "layers": [],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &manifest)]);
    let err = fx.resolve(None).unwrap_err();
    assert!(
        matches!(err, LayoutError::BlobTooLarge { what: "image config", size, .. } if size == MAX_CONFIG_SIZE + 1),
        "{err:?}"
    );
}

#[test]
fn invalid_digest_refused_before_any_path_is_built() {
    assert!("sha256:../../etc".parse::<Digest>().is_err());

    let fx = Fixture::new();
    // Something a traversal would reach, to show it is not what the error is about.
    fs::write(fx.path().join("etc"), b"{}").unwrap();
    fx.write_index_json(vec![json!({
        "mediaType": OCI_MANIFEST, "digest": "sha256:../../etc", "size": 2
    })]);
    let err = fx.resolve(None).unwrap_err();
    assert!(matches!(&err, LayoutError::InvalidDigest { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid digest in {}",
            fx.path().join("index.json").display()
        )
    );
    assert_eq!(
        err.source().unwrap().to_string(),
        "invalid digest \"sha256:../../etc\": a sha256 digest has exactly 64 hex digits"
    );

    // The same inside a manifest blob (a layer descriptor).
    let image = fx.image(ImageSpec::default());
    let bad_manifest = fx.json_blob(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &image.config),
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:/etc/passwd", "size": 1}],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &bad_manifest)]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid digest in {}",
            fx.blob_file(&bad_manifest.0).display()
        )
    );

    // Well-formed but not sha256: refused by our own Digest.
    fx.write_index_json(vec![json!({
        "mediaType": OCI_MANIFEST, "digest": format!("sha512:{}", "0".repeat(128)), "size": 2
    })]);
    let err = fx.resolve(None).unwrap_err();
    assert!(matches!(&err, LayoutError::InvalidDigest { .. }), "{err:?}");
    assert!(err
        .source()
        .unwrap()
        .to_string()
        .contains("only sha256 is supported"));
}

#[test]
fn invalid_diff_id_in_config_is_refused() {
    let fx = Fixture::new();
    let layer = fx.blob(b"layer");
    let config = fx.json_blob(&json!({
        "architecture": Platform::host().architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:../../../../etc/passwd"]},
    }));
    let manifest = fx.json_blob(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &config),
        "layers": [desc(OCI_LAYER_GZIP, &layer)],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &manifest)]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid digest in {}", fx.blob_file(&config.0).display())
    );
}

#[test]
fn no_matching_platform_lists_the_available_ones() {
    let fx = Fixture::new();
    let arm = fx.image(ImageSpec {
        platform: platform("linux/arm64/v8"),
        label: "arm",
        ..Default::default()
    });
    let s390x = fx.image(ImageSpec {
        platform: platform("linux/s390x"),
        label: "s390x",
        ..Default::default()
    });
    let index = fx.index_blob(
        OCI_INDEX,
        vec![
            on(arm.descriptor, &platform("linux/arm64/v8")),
            on(s390x.descriptor, &platform("linux/s390x")),
        ],
    );
    let index_digest = index["digest"].as_str().unwrap().to_owned();
    fx.write_index_json(vec![tagged(index, "latest")]);
    let err = fx
        .open()
        .resolve(None, &platform("linux/amd64"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no image for platform linux/amd64 in image index {index_digest}; \
             platforms available: linux/arm64/v8, linux/s390x"
        )
    );
}

#[test]
fn single_manifest_for_another_platform_is_refused() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec {
        platform: platform("windows/amd64"),
        ..Default::default()
    });
    fx.write_index_json(vec![image.descriptor]);
    let err = fx
        .open()
        .resolve(None, &platform("linux/amd64"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "image {} is built for windows/amd64, which does not run on linux/amd64",
            image.manifest.0
        )
    );
}

#[test]
fn manifest_that_is_really_an_index_is_refused() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    // An index document (mediaType omitted, as older tools do) behind a manifest descriptor.
    let index = fx.json_blob(&json!({
        "schemaVersion": 2,
        "manifests": [on(image.descriptor, &Platform::host())],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &index)]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob {}: the descriptor says `{OCI_MANIFEST}`, but the document has `manifests` \
             like an image index",
            index.0
        )
    );

    // A manifest declaring itself an index.
    let manifest = fx.json_blob(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "config": desc(OCI_CONFIG, &image.config), "layers": [],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &manifest)]);
    assert!(matches!(
        fx.resolve(None).unwrap_err(),
        LayoutError::MediaTypeConflict { .. }
    ));
}

#[test]
fn layer_count_must_match_diff_ids() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    let manifest = fx.json_blob(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &image.config),
        "layers": [desc(OCI_LAYER_GZIP, &image.layers[0])],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &manifest)]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "image manifest {} lists 1 layers, but its config {} lists 2 diff_ids",
            manifest.0, image.config.0
        )
    );
}

#[test]
fn artifact_config_is_not_an_image() {
    let fx = Fixture::new();
    let config = fx.blob(b"{}");
    let manifest = fx.json_blob(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.empty.v1+json", &config),
        "layers": [],
    }));
    fx.write_index_json(vec![desc(OCI_MANIFEST, &manifest)]);
    assert!(matches!(
        fx.resolve(None).unwrap_err(),
        LayoutError::UnsupportedMediaType { role, .. } if role.starts_with("image config")
    ));
}

#[test]
fn symlinked_or_special_blobs_are_refused() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![image.descriptor]);
    // A symlink with the right content behind it is still refused.
    let (digest, size) = image.layers[0].clone();
    let target = fx.path().join("elsewhere");
    fs::rename(fx.blob_file(&digest), &target).unwrap();
    std::os::unix::fs::symlink(&target, fx.blob_file(&digest)).unwrap();
    let err = fx.open().open_blob(&digest, size).unwrap_err();
    assert!(matches!(err, LayoutError::NotRegularFile { .. }), "{err:?}");

    // A FIFO does not block the open; it is refused.
    fs::remove_file(fx.blob_file(&digest)).unwrap();
    nix::unistd::mkfifo(&fx.blob_file(&digest), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = fx.open().open_blob(&digest, size).unwrap_err();
    assert!(matches!(err, LayoutError::NotRegularFile { .. }), "{err:?}");

    // `blobs/sha256` as a symlink to a directory holding the right blobs: refused too.
    let real = fx.path().join("real-sha256");
    fs::rename(fx.path().join("blobs/sha256"), &real).unwrap();
    std::os::unix::fs::symlink(&real, fx.path().join("blobs/sha256")).unwrap();
    let err = fx.resolve(None).unwrap_err();
    assert!(
        matches!(&err, LayoutError::Io { path, .. } if path.ends_with(image.manifest.0.hex())),
        "{err:?}"
    );
}

#[test]
fn missing_blob_is_named() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    fx.write_index_json(vec![image.descriptor]);
    fs::remove_file(fx.blob_file(&image.config.0)).unwrap();
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob {} is missing from the layout (looked for {})",
            image.config.0,
            fx.blob_file(&image.config.0).display()
        )
    );
}

#[test]
fn open_checks_the_layout_header() {
    let dir = tempfile::tempdir().unwrap();
    let err = OciLayout::open(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not an OCI image layout: it has no `oci-layout` file",
            dir.path().display()
        )
    );

    fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = OciLayout::open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("declares image layout version \"2.0.0\"; only 1.0.0 is supported"),
        "{err}"
    );

    fs::write(dir.path().join("oci-layout"), vec![b' '; 1 << 20]).unwrap();
    assert!(matches!(
        OciLayout::open(dir.path()).unwrap_err(),
        LayoutError::FileTooLarge { .. }
    ));

    let missing = dir.path().join("nope");
    assert!(matches!(
        OciLayout::open(&missing).unwrap_err(),
        LayoutError::Io { path, .. } if path == missing
    ));
}

#[test]
fn nesting_depth_is_bounded() {
    let fx = Fixture::new();
    let image = fx.image(ImageSpec::default());
    let mut descriptor = on(image.descriptor, &Platform::host());
    for _ in 0..=MAX_INDEX_DEPTH {
        descriptor = on(
            fx.index_blob(OCI_INDEX, vec![descriptor]),
            &Platform::host(),
        );
    }
    fx.write_index_json(vec![descriptor.clone()]);
    assert!(matches!(
        fx.resolve(None).unwrap_err(),
        LayoutError::NestingTooDeep { .. }
    ));
    // One level less is fine.
    let inner: Digest = descriptor["digest"].as_str().unwrap().parse().unwrap();
    let outer: Value = serde_json::from_slice(&fs::read(fx.blob_file(&inner)).unwrap()).unwrap();
    fx.write_index_json(vec![outer["manifests"][0].clone()]);
    assert_eq!(fx.resolve(None).unwrap().manifest_digest, image.manifest.0);
}

#[test]
fn empty_index_json() {
    let fx = Fixture::new();
    fx.write_index_json(vec![]);
    let err = fx.resolve(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} lists no images", fx.path().join("index.json").display())
    );
}
