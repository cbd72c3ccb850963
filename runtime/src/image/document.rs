//! What an OCI document must be, wherever it is read from: the layout reader ([`crate::image::layout`]) and the
//! registry client (`crate::distribution`) apply these same checks, so both accept and refuse the same documents.
//!
//! - The media types: one table ([`OCI_INDEX`] …, [`LAYER_MEDIA_TYPES`]).
//! - [`Kind`]: a document is an image index or an image manifest, by its media type ([`kind_of`]).
//! - [`Shape`]: enough of a document to see whether its own `mediaType` and its fields agree with the kind it is
//!   read as (CVE-2021-41190), and to check every descriptor digest before oci-spec parses it.
//! - [`PlatformError`]: an index without an entry for the platform wanted, or a config for another platform.

use serde::Deserialize;

use crate::image::digest::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list (an index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema-2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The empty descriptor's type (artifacts use it as their config; GHCR lists referrers with it).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The layer media types the unpacker handles, OCI and Docker spellings, each with its compression.
pub const LAYER_MEDIA_TYPES: [(&str, Compression); 9] = [
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Compression::Zstd,
    ),
];

/// How a layer blob is compressed: read from its media type ([`compression_of`]), undone by the unpacker
/// (`rootfs::unpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip-compressed tar (`…tar+gzip`; multi-member streams accepted).
    Gzip,
    /// zstd-compressed tar (`…tar+zstd`; several frames accepted; windows over 128 MiB refused, so the decoder's
    /// memory stays bounded).
    Zstd,
}

/// The compression of a layer media type; `None` for a type the unpacker does not handle.
pub fn compression_of(media_type: &str) -> Option<Compression> {
    LAYER_MEDIA_TYPES
        .iter()
        .find(|(t, _)| *t == media_type)
        .map(|(_, c)| *c)
}

/// Whether a document is an image index (OCI index, Docker manifest list) or an image manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// OCI image index or Docker manifest list.
    Index,
    /// OCI image manifest or Docker schema-2 manifest.
    Manifest,
}

impl Kind {
    /// "image index" or "image manifest", for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Kind::Index => "image index",
            Kind::Manifest => "image manifest",
        }
    }
}

/// What a media type is, if it is an index or a manifest.
pub(crate) fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        _ => None,
    }
}

/// Just enough of a manifest-or-index document to see which one it is, and to check its digests with [`Digest`]
/// (for a clearer error than the one oci-spec's parser gives).
#[derive(Deserialize)]
pub(crate) struct Shape {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    pub(crate) media_type: Option<String>,
    pub(crate) manifests: Option<Vec<RawDescriptor>>,
    pub(crate) layers: Option<Vec<RawDescriptor>>,
    pub(crate) config: Option<RawDescriptor>,
}

/// A descriptor, only its digest.
#[derive(Deserialize)]
pub(crate) struct RawDescriptor {
    pub(crate) digest: Option<String>,
}

/// How a document disagrees with the kind it is read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShapeConflict {
    /// Its own `mediaType` is of another kind (or none).
    #[error("declares mediaType `{}`", .media_type.chars().take(100).collect::<String>())]
    MediaType {
        /// The document's `mediaType`, as it is.
        media_type: String,
    },
    /// An index with manifest fields.
    #[error("has `layers`/`config` like an image manifest")]
    ManifestFields,
    /// A manifest with index fields.
    #[error("has `manifests` like an image index")]
    IndexFields,
}

impl Shape {
    /// Read from a document's bytes.
    pub(crate) fn parse(bytes: &[u8]) -> serde_json::Result<Shape> {
        serde_json::from_slice(bytes)
    }

    /// A document is an index or a manifest, never both, and its own `mediaType` (when present) says the same.
    pub(crate) fn check(&self, kind: Kind) -> Result<(), ShapeConflict> {
        if let Some(media_type) = &self.media_type {
            if kind_of(media_type) != Some(kind) {
                return Err(ShapeConflict::MediaType {
                    media_type: media_type.clone(),
                });
            }
        }
        match kind {
            Kind::Index if self.layers.is_some() || self.config.is_some() => {
                Err(ShapeConflict::ManifestFields)
            }
            Kind::Manifest if self.manifests.is_some() => Err(ShapeConflict::IndexFields),
            _ => Ok(()),
        }
    }

    /// Every descriptor's digest as written (`None`: the descriptor has none): index entries, config, layers.
    pub(crate) fn digests(&self) -> impl Iterator<Item = Option<&str>> {
        let descriptors = self.manifests.iter().flatten();
        let descriptors = descriptors.chain(self.config.iter());
        let descriptors = descriptors.chain(self.layers.iter().flatten());
        descriptors.map(|d| d.digest.as_deref())
    }
}

/// The image is not for the platform wanted: the layout reader's and the registry client's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// An image index has no entry for the platform wanted.
    #[error("no image for platform {wanted} in {index}; platforms available: {}", list(.available))]
    NoMatch {
        /// The platform wanted (`os/arch[/variant]`).
        wanted: String,
        /// Which index: "image index sha256:…" or the path of `index.json`.
        index: String,
        /// The platforms it lists.
        available: Vec<String>,
    },
    /// The image's config says it is for another platform.
    #[error("image {manifest} is built for {found}, which does not run on {wanted}")]
    Mismatch {
        /// The platform wanted (`os/arch[/variant]`).
        wanted: String,
        /// The platform in the image config.
        found: String,
        /// The image manifest.
        manifest: Digest,
    },
}

/// `a, b, c`, or `(none)`.
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_conflicts_say_what_the_document_is_instead() {
        let shape = |json: &str| Shape::parse(json.as_bytes()).unwrap();
        let index = shape(r#"{"schemaVersion": 2, "manifests": [], "layers": []}"#);
        assert_eq!(
            index.check(Kind::Index).unwrap_err().to_string(),
            "has `layers`/`config` like an image manifest"
        );
        let manifest = shape(
            r#"{"mediaType": "application/vnd.oci.image.manifest.v1+json", "manifests": []}"#,
        );
        assert_eq!(
            manifest.check(Kind::Manifest).unwrap_err().to_string(),
            "has `manifests` like an image index"
        );
        assert_eq!(
            manifest.check(Kind::Index).unwrap_err().to_string(),
            "declares mediaType `application/vnd.oci.image.manifest.v1+json`"
        );
        let long = shape(&format!(r#"{{"mediaType": "{}"}}"#, "x".repeat(300)));
        assert_eq!(
            long.check(Kind::Index).unwrap_err().to_string(),
            format!("declares mediaType `{}`", "x".repeat(100))
        );
        let digests = shape(r#"{"config": {"digest": "c"}, "layers": [{"digest": "l"}, {}]}"#);
        assert_eq!(
            digests.digests().collect::<Vec<_>>(),
            [Some("c"), Some("l"), None]
        );
    }

    #[test]
    fn platform_errors_list_what_there_is() {
        let none = PlatformError::NoMatch {
            wanted: "linux/riscv64".into(),
            index: "image index sha256:ab".into(),
            available: vec![],
        };
        assert_eq!(
            none.to_string(),
            "no image for platform linux/riscv64 in image index sha256:ab; platforms available: (none)"
        );
        let manifest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let other = PlatformError::Mismatch {
            wanted: "linux/amd64".into(),
            found: "linux/arm64".into(),
            manifest: manifest.clone(),
        };
        assert_eq!(
            other.to_string(),
            format!("image {manifest} is built for linux/arm64, which does not run on linux/amd64")
        );
    }

    #[test]
    fn every_layer_media_type_has_one_compression() {
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(compression_of(OCI_MANIFEST), None);
    }
}
