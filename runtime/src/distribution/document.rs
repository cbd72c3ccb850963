//! Checking and reading what a registry returned: image indexes, manifests and configs.
//!
//! The checks of [`crate::image::document`] (the layout reader makes them too when it later reads the cache), made
//! here before anything is fetched on the strength of a document: a document is an index or a manifest and says so
//! consistently (CVE-2021-41190), every digest in it is a valid sha256 digest, `schemaVersion` is 2, the platform
//! entry is chosen exactly as the layout reader will choose it, the config describes the platform wanted and as
//! many layers as the manifest lists, and every layer's media type is one the unpacker handles.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::PullError;
use crate::image::digest::Digest;
use crate::image::document::{
    compression_of, PlatformError, Shape, ShapeConflict, DOCKER_CONFIG, DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use crate::image::layout::Platform;

/// The media types a manifest request accepts, best first.
pub(crate) const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

pub(crate) use crate::image::document::{kind_of, Kind};

fn bad(what: &'static str, digest: &Digest, reason: impl Into<String>) -> PullError {
    PullError::BadDocument {
        what,
        digest: digest.clone(),
        reason: reason.into(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Decide what a fetched document is: by the `Content-Type` the registry sent when that is an index or manifest
/// type, else by the document's own `mediaType`. Either way the document must agree with it.
pub(crate) fn classify(
    bytes: &[u8],
    content_type: Option<&str>,
    digest: &Digest,
) -> Result<(Kind, String), PullError> {
    let shape =
        Shape::parse(bytes).map_err(|e| bad("image manifest or index", digest, e.to_string()))?;
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_owned());
    let generic = |c: &String| {
        matches!(
            c.as_str(),
            "" | "application/json" | "application/octet-stream" | "text/plain"
        )
    };
    // The response's type when it is an index or manifest type; else the document's own; else a specific
    // response type (to name it in the error); else, as a last resort, the document's shape.
    let declared = content_type
        .clone()
        .filter(|c| kind_of(c).is_some())
        .or_else(|| shape.media_type.clone())
        .or_else(|| content_type.filter(|c| !generic(c)))
        .or_else(|| match (&shape.manifests, &shape.layers) {
            (Some(_), None) => Some(OCI_INDEX.to_owned()),
            (None, Some(_)) => Some(OCI_MANIFEST.to_owned()),
            _ => None,
        });
    let Some(declared) = declared else {
        return Err(bad(
            "image manifest or index",
            digest,
            "neither the response nor the document says what it is",
        ));
    };
    let Some(kind) = kind_of(&declared) else {
        let reason = if declared.contains("manifest.v1") {
            "Docker schema 1 manifests are not supported (push the image again with a current tool)"
        } else {
            "not an image index or image manifest"
        };
        return Err(PullError::UnsupportedMediaType {
            role: "image manifest or index",
            media_type: clip(&declared),
            digest: digest.clone(),
            reason,
        });
    };
    check_shape(&shape, kind, digest)?;
    Ok((kind, declared))
}

fn check_shape(shape: &Shape, kind: Kind, digest: &Digest) -> Result<(), PullError> {
    let what = kind.what();
    match shape.check(kind) {
        Ok(()) => {}
        Err(ShapeConflict::MediaType { media_type }) => {
            return Err(bad(
                what,
                digest,
                format!(
                    "served as {what}, but the document declares mediaType `{}`",
                    clip(&media_type)
                ),
            ));
        }
        Err(conflict) => return Err(bad(what, digest, conflict.to_string())),
    }
    if shape.schema_version != Some(2) {
        return Err(bad(what, digest, "schemaVersion is not 2"));
    }
    for text in shape.digests() {
        let Some(text) = text else {
            return Err(bad(what, digest, "a descriptor has no digest"));
        };
        text.parse::<Digest>()
            .map_err(|e| bad(what, digest, e.to_string()))?;
    }
    Ok(())
}

/// Parse an index already [`classify`]'d as one.
pub(crate) fn parse_index(bytes: &[u8], digest: &Digest) -> Result<ImageIndex, PullError> {
    serde_json::from_slice(bytes).map_err(|e| bad("image index", digest, e.to_string()))
}

/// Parse a manifest already [`classify`]'d as one.
pub(crate) fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<ImageManifest, PullError> {
    serde_json::from_slice(bytes).map_err(|e| bad("image manifest", digest, e.to_string()))
}

/// A descriptor's digest (validated while classifying, so this only fails on a bug).
pub(crate) fn digest_of(descriptor: &Descriptor, document: &Digest) -> Result<Digest, PullError> {
    Digest::try_from(descriptor.digest()).map_err(|e| bad("descriptor", document, e.to_string()))
}

/// The entry of `index` for `wanted`, chosen exactly as the layout reader chooses ([`layout::best_platform`]).
pub(crate) fn choose_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    index_digest: &Digest,
) -> Result<&'a Descriptor, PullError> {
    crate::image::layout::best_platform(index.manifests().iter(), wanted).map_err(|available| {
        PullError::Platform(PlatformError::NoMatch {
            wanted: wanted.to_string(),
            index: format!("image index {index_digest}"),
            available,
        })
    })
}

/// A layer to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerBlob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// The config descriptor of a manifest: digest, size; refused if it is not an image config.
pub(crate) fn config_blob(
    manifest: &ImageManifest,
    manifest_digest: &Digest,
) -> Result<LayerBlob, PullError> {
    let descriptor = manifest.config();
    let digest = digest_of(descriptor, manifest_digest)?;
    let media_type = descriptor.media_type().to_string();
    if !matches!(media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
        return Err(PullError::UnsupportedMediaType {
            role: "image config",
            media_type: clip(&media_type),
            digest,
            reason: "this is an artifact, not a container image",
        });
    }
    Ok(LayerBlob {
        digest,
        size: descriptor.size(),
    })
}

/// Check the config against the manifest and the platform wanted; return the layers to fetch.
pub(crate) fn check_image(
    manifest: &ImageManifest,
    manifest_digest: &Digest,
    config_bytes: &[u8],
    config_digest: &Digest,
    platform: &Platform,
) -> Result<(ImageConfiguration, Vec<LayerBlob>), PullError> {
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| bad("image config", config_digest, e.to_string()))?;
    crate::image::layout::check_config_platform(&config, platform, manifest_digest)?;
    if config.rootfs().typ() != "layers" {
        return Err(bad(
            "image config",
            config_digest,
            format!(
                "rootfs type is {:?}, not \"layers\"",
                clip(config.rootfs().typ())
            ),
        ));
    }
    for diff_id in config.rootfs().diff_ids() {
        diff_id
            .parse::<Digest>()
            .map_err(|e| bad("image config", config_digest, format!("diff_id: {e}")))?;
    }
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(bad(
            "image manifest",
            manifest_digest,
            format!(
                "lists {} layers, but its config {config_digest} lists {} diff_ids",
                manifest.layers().len(),
                config.rootfs().diff_ids().len()
            ),
        ));
    }
    let layers = manifest
        .layers()
        .iter()
        .map(|layer| {
            let digest = digest_of(layer, manifest_digest)?;
            check_layer_media_type(layer.media_type().as_ref(), &digest)?;
            Ok(LayerBlob {
                digest,
                size: layer.size(),
            })
        })
        .collect::<Result<Vec<_>, PullError>>()?;
    Ok((config, layers))
}

/// Layers the unpacker can apply: plain, gzip and zstd tars, OCI and Docker spellings (the same list as the layout
/// reader's); anything else is refused here, before anything is downloaded.
fn check_layer_media_type(media_type: &str, digest: &Digest) -> Result<(), PullError> {
    match compression_of(media_type) {
        Some(_) => Ok(()),
        None => Err(PullError::UnsupportedMediaType {
            role: "layer",
            media_type: clip(media_type),
            digest: digest.clone(),
            reason: "not a layer media type thv-sandbox can unpack",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(bytes: &[u8]) -> Digest {
        Digest::of_bytes(bytes)
    }

    fn hex_digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index(entries: &[(&str, &str, Option<&str>, char)]) -> Vec<u8> {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(os, arch, variant, c)| {
                let mut platform = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                json!({"mediaType": OCI_MANIFEST, "digest": hex_digest(*c), "size": 10, "platform": platform})
            })
            .collect();
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
        .unwrap()
    }

    #[test]
    fn classify_by_content_type_or_document() {
        let bytes = index(&[("linux", "amd64", None, 'a')]);
        let digest = d(&bytes);
        let (kind, mt) = classify(
            &bytes,
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            &digest,
        )
        .unwrap();
        assert_eq!((kind, mt.as_str()), (Kind::Index, OCI_INDEX));
        // A useless Content-Type: the document's mediaType decides.
        let (kind, _) = classify(&bytes, Some("application/octet-stream"), &digest).unwrap();
        assert_eq!(kind, Kind::Index);
        // Served as a manifest, but it is an index: refused.
        let err = classify(&bytes, Some(OCI_MANIFEST), &digest).unwrap_err();
        assert!(err.to_string().contains("declares mediaType"), "{err}");
    }

    #[test]
    fn classify_refuses_ambiguous_and_old_documents() {
        let both = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [], "layers": []}))
            .unwrap();
        let err = classify(&both, Some(OCI_INDEX), &d(&both)).unwrap_err();
        assert!(err.to_string().contains("like an image manifest"), "{err}");
        let none = serde_json::to_vec(&json!({"schemaVersion": 2})).unwrap();
        let err = classify(&none, None, &d(&none)).unwrap_err();
        assert!(err.to_string().contains("says what it is"), "{err}");
        // No media type anywhere: judged by its shape.
        let bare = serde_json::to_vec(&json!({"schemaVersion": 2, "config": {"digest": hex_digest('c'), "size": 1}, "layers": []})).unwrap();
        assert_eq!(
            classify(&bare, Some("application/json"), &d(&bare))
                .unwrap()
                .0,
            Kind::Manifest
        );
        let v1 = serde_json::to_vec(&json!({"schemaVersion": 1})).unwrap();
        let err = classify(
            &v1,
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            &d(&v1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
        let v3 =
            serde_json::to_vec(&json!({"schemaVersion": 3, "mediaType": OCI_MANIFEST})).unwrap();
        let err = classify(&v3, None, &d(&v3)).unwrap_err();
        assert!(err.to_string().contains("schemaVersion"), "{err}");
        let bad_digest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../etc", "size": 1}]}))
        .unwrap();
        let err = classify(&bad_digest, None, &d(&bad_digest)).unwrap_err();
        assert!(err.to_string().contains("invalid digest"), "{err}");
    }

    #[test]
    fn platform_choice_matches_the_layout_reader() {
        let bytes = index(&[
            ("linux", "arm64", None, 'a'),
            ("linux", "amd64", Some("v3"), 'b'),
            ("linux", "amd64", None, 'c'),
            ("linux", "arm", Some("v6"), 'e'),
            ("linux", "arm", Some("v7"), 'f'),
        ]);
        let digest = d(&bytes);
        let idx = parse_index(&bytes, &digest).unwrap();
        let pick = |p: &str| {
            choose_platform(&idx, &p.parse().unwrap(), &digest).map(|e| e.digest().to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), hex_digest('c'));
        assert_eq!(pick("linux/amd64/v3").unwrap(), hex_digest('b'));
        assert_eq!(pick("linux/arm64/v8").unwrap(), hex_digest('a'));
        assert_eq!(pick("linux/arm/v7").unwrap(), hex_digest('f'));
        let err = pick("linux/s390x").unwrap_err();
        assert!(
            err.to_string()
                .contains("linux/arm64, linux/amd64/v3, linux/amd64"),
            "{err}"
        );
    }

    fn manifest(config_media_type: &str, layer_media_type: &str) -> (ImageManifest, Digest) {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, "digest": hex_digest('c'), "size": 2},
            "layers": [{"mediaType": layer_media_type, "digest": hex_digest('1'), "size": 7}],
        }))
        .unwrap();
        let digest = d(&bytes);
        (parse_manifest(&bytes, &digest).unwrap(), digest)
    }

    fn config(os: &str, arch: &str, diff_ids: usize) -> Vec<u8> {
        let ids: Vec<_> = (0..diff_ids).map(|_| hex_digest('d')).collect();
        serde_json::to_vec(
            &json!({"os": os, "architecture": arch, "rootfs": {"type": "layers", "diff_ids": ids}}),
        )
        .unwrap()
    }

    #[test]
    fn image_checks() {
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let (m, md) = manifest(OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip");
        let cfg = config("linux", "amd64", 1);
        let (_, layers) = check_image(&m, &md, &cfg, &d(&cfg), &amd64).unwrap();
        assert_eq!(
            layers,
            vec![LayerBlob {
                digest: hex_digest('1').parse().unwrap(),
                size: 7
            }]
        );
        assert_eq!(config_blob(&m, &md).unwrap().size, 2);

        let other = config("linux", "arm64", 1);
        let err = check_image(&m, &md, &other, &d(&other), &amd64).unwrap_err();
        assert!(
            matches!(err, PullError::Platform(PlatformError::Mismatch { .. })),
            "{err}"
        );
        let two = config("linux", "amd64", 2);
        let err = check_image(&m, &md, &two, &d(&two), &amd64).unwrap_err();
        assert!(err.to_string().contains("lists 1 layers"), "{err}");

        let (m, md) = manifest(OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+zstd");
        assert!(check_image(&m, &md, &cfg, &d(&cfg), &amd64).is_ok());
        let (m, md) = manifest(OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+lz4");
        let err = check_image(&m, &md, &cfg, &d(&cfg), &amd64).unwrap_err();
        assert!(err.to_string().contains("not a layer media type"), "{err}");
        let (m, md) = manifest(
            "application/vnd.example.artifact+json",
            "application/vnd.oci.image.layer.v1.tar",
        );
        let err = config_blob(&m, &md).unwrap_err();
        assert!(err.to_string().contains("artifact"), "{err}");
    }
}
