//! Reading OCI image layouts from disk: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! [`OciLayout::resolve`] runs these steps in order; each checks what it read before the next
//! step uses it:
//! 1. `oci-layout` must declare version 1.0.0 — checked once, in [`OciLayout::open`], which also
//!    pins the directory (later reads go through that directory handle, not the path).
//! 2. `index.json` (at most 4 MiB) → the descriptor(s) carrying the tag (see `resolve` for how a
//!    missing tag is treated).
//! 3. An image index (OCI index or Docker manifest list; nesting allowed up to
//!    [`MAX_INDEX_DEPTH`]) → this platform's entry. Index blobs are read like manifests (step 4).
//! 4. The manifest blob: refused unread when its descriptor claims more than 4 MiB; digest and size
//!    verified before parsing; its own `mediaType`/shape must agree with the descriptor, so a
//!    document cannot be read as a manifest by one tool and as an index by another
//!    (CVE-2021-41190).
//! 5. The config blob: same, with an 8 MiB cap (containerd CVE-2023-25153); its platform must
//!    fit the one wanted.
//! 6. Layers: media type → compression; count matched against `rootfs.diff_ids`, which are parsed
//!    as digests. Layer blobs are not read here: [`OciLayout::open_blob`] streams them through a
//!    [`VerifyingReader`] for the unpacker.
//!
//! Blob paths are built only from a validated [`Digest`] (CVE-2024-3727), each path component is
//! opened with `O_NOFOLLOW` relative to the pinned directory, and a blob must be a regular file
//! of exactly the size its descriptor states.
//!
//! The image types are oci-spec's (`ImageIndex`, `ImageManifest`, `ImageConfiguration`): they
//! accept Docker schema-2 documents as well, and oci-spec validates digest syntax while parsing.
//! Digests are converted to [`Digest`], which accepts sha256 only.

mod platform;
mod reference;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use serde::Deserialize;

use crate::image::digest::{Digest, DigestError, VerifyingReader};
use crate::image::document::{compression_of, list, Shape, DOCKER_CONFIG, OCI_CONFIG};
pub(crate) use crate::image::document::{kind_of, Kind};
pub use crate::image::document::{Compression, PlatformError};

pub use platform::Platform;
pub(crate) use reference::is_valid_tag;
pub use reference::parse_oci_ref;

/// Largest image index or manifest blob read (containerd CVE-2023-25153 read them unbounded).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config blob read.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;
/// Largest `index.json` read.
pub const MAX_INDEX_JSON_SIZE: u64 = 4 << 20;
/// Largest `oci-layout` file read.
const MAX_OCI_LAYOUT_SIZE: u64 = 4 << 10;
/// How deep image indexes may nest below `index.json`.
pub const MAX_INDEX_DEPTH: usize = 4;

/// The annotation on `index.json` entries that names them (the tag).
const REF_NAME: &str = oci_spec::image::ANNOTATION_REF_NAME;

/// Everything that can go wrong reading an image layout. Each variant names the path, digest,
/// or tag concerned; the cause, where there is one, is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The directory has no `oci-layout` file.
    #[error("{} is not an OCI image layout: it has no `oci-layout` file", dir.display())]
    NotALayout {
        /// The directory.
        dir: PathBuf,
    },
    /// `oci-layout` declares a version other than 1.0.0.
    #[error("{} declares image layout version {version:?}; only 1.0.0 is supported", path.display())]
    UnsupportedLayoutVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version it declares.
        version: String,
    },
    /// Opening or reading a file failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file that is not a blob (`oci-layout`, `index.json`) is over its size limit.
    #[error("{} is larger than {limit} bytes; refusing to read it", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// `oci-layout`, `index.json`, or a blob is not a symbolic-link-free regular file.
    #[error("{} is a symbolic link or not a regular file; refusing to read it", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A JSON document does not parse as what it should be.
    #[error("cannot parse {what} {}", path.display())]
    Parse {
        /// "image index", "image manifest", "image config", …
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A digest in a document is malformed or not sha256.
    #[error("invalid digest in {}", path.display())]
    InvalidDigest {
        /// The document the digest appeared in.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DigestError,
    },
    /// A blob the image needs is not in the layout.
    #[error("blob {digest} is missing from the layout (looked for {})", path.display())]
    BlobMissing {
        /// The blob.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob's file size differs from its descriptor's.
    #[error("blob {} is {actual} bytes, but its descriptor says {expected}", path.display())]
    BlobSizeMismatch {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// Size per descriptor.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// Reading a blob failed; its content not matching the digest shows up here (the source is
    /// an `InvalidData` `io::Error` carrying a [`DigestError`]).
    #[error("cannot read blob {}", path.display())]
    BlobRead {
        /// The blob.
        digest: Digest,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A descriptor claims a metadata blob larger than its cap: refused before opening it.
    #[error("{what} {digest} claims to be {size} bytes; refusing anything over {limit}")]
    BlobTooLarge {
        /// "image manifest or index", "image config".
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The size its descriptor states.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// `index.json` lists nothing.
    #[error("{} lists no images", path.display())]
    EmptyIndex {
        /// `index.json`.
        path: PathBuf,
    },
    /// No `index.json` entry carries the tag asked for.
    #[error("tag `{tag}` not found in {}; tags present: {}", path.display(), list(.available))]
    TagNotFound {
        /// The tag asked for.
        tag: String,
        /// `index.json`.
        path: PathBuf,
        /// The tags that are there.
        available: Vec<String>,
    },
    /// No tag given, and the layout holds several images, none tagged `latest`.
    #[error(
        "{} holds several images and none is tagged `latest`; name one as oci:DIR:TAG (tags present: {})",
        path.display(), list(.available)
    )]
    NoDefaultImage {
        /// `index.json`.
        path: PathBuf,
        /// The tags that are there.
        available: Vec<String>,
    },
    /// No entry for the platform wanted, or a config for another platform.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// A descriptor's media type is not one this reader handles in that place.
    #[error("{digest} has media type `{media_type}`, which is not a supported {role}")]
    UnsupportedMediaType {
        /// What the blob was expected to be: "image manifest or index", "image config", "layer".
        role: &'static str,
        /// The media type found.
        media_type: String,
        /// The blob.
        digest: Digest,
    },
    /// The document does not agree with the descriptor that pointed to it.
    #[error("blob {digest}: the descriptor says `{declared}`, but the document {found}")]
    MediaTypeConflict {
        /// The blob.
        digest: Digest,
        /// The descriptor's media type.
        declared: String,
        /// What the document turned out to be.
        found: String,
    },
    /// A manifest or index with `schemaVersion` other than 2.
    #[error("{what} {digest} has schemaVersion {version}; only 2 is supported")]
    UnsupportedSchemaVersion {
        /// "image manifest", "image index".
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The version found.
        version: u32,
    },
    /// Image indexes nested deeper than [`MAX_INDEX_DEPTH`].
    #[error("image index {digest} is nested more than {MAX_INDEX_DEPTH} levels deep")]
    NestingTooDeep {
        /// The index that would have gone too deep.
        digest: Digest,
    },
    /// `rootfs.type` in the config is not `layers`.
    #[error("image config {config} has rootfs type {found:?}; expected \"layers\"")]
    InvalidRootfsType {
        /// The config blob.
        config: Digest,
        /// The type found.
        found: String,
    },
    /// The manifest and the config disagree on the number of layers.
    #[error(
        "image manifest {manifest} lists {layers} layers, but its config {config} lists {diff_ids} diff_ids"
    )]
    LayerCountMismatch {
        /// The manifest.
        manifest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// The config.
        config: Digest,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A platform string that is not `os/arch[/variant]`.
    #[error(
        "invalid platform {input:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64/v8"
    )]
    InvalidPlatform {
        /// The input.
        input: String,
    },
    /// An image reference that is not `oci:PATH[:TAG]`.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidOciRef {
        /// The input.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One layer of a resolved image, base layer first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// Size of the blob as stored.
    pub size: u64,
    /// The descriptor's media type.
    pub media_type: String,
    /// Derived from the media type.
    pub compression: Compression,
    /// Digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// An image resolved for one platform; its manifest and config have been verified and parsed.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The image index the tag pointed to, if it pointed to one (the digest an index-level
    /// signature covers). `None` when the tag named a manifest directly, or when `index.json`
    /// itself served as the platform index.
    pub index_digest: Option<Digest>,
    /// The platform-specific image manifest.
    pub manifest_digest: Digest,
    /// The manifest, parsed.
    pub manifest: ImageManifest,
    /// The config blob's digest (the image ID).
    pub config_digest: Digest,
    /// The config, parsed.
    pub config: ImageConfiguration,
    /// The layers, base first, each paired with its diff_id.
    pub layers: Vec<LayerRef>,
}

/// An OCI image layout directory, opened and checked.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    /// The directory as opened: every later read is relative to this handle.
    root: OwnedFd,
}

/// Every descriptor digest in the document must be a valid sha256 digest (a missing one is left to oci-spec's
/// parser).
fn check_digests(shape: &Shape, path: &Path) -> Result<(), LayoutError> {
    for digest in shape.digests().flatten() {
        digest
            .parse::<Digest>()
            .map_err(|source| LayoutError::InvalidDigest {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct LayoutHeader {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

pub(crate) fn descriptor_platform(descriptor: &Descriptor) -> Option<Platform> {
    descriptor.platform().as_ref().map(|p| {
        Platform::from_parts(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    })
}

impl OciLayout {
    /// Open the layout at `dir` and check its `oci-layout` file says
    /// `{"imageLayoutVersion": "1.0.0"}`.
    pub fn open(dir: &Path) -> Result<OciLayout, LayoutError> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| LayoutError::Io {
            path: dir.to_owned(),
            source: errno.into(),
        })?;
        let layout = OciLayout {
            dir: dir.to_owned(),
            root,
        };
        let path = dir.join("oci-layout");
        let bytes = match layout.read_small_file("oci-layout", MAX_OCI_LAYOUT_SIZE) {
            Err(LayoutError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout {
                    dir: dir.to_owned(),
                })
            }
            other => other?,
        };
        let header: LayoutHeader =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Parse {
                what: "layout header",
                path: path.clone(),
                source,
            })?;
        if header.image_layout_version != "1.0.0" {
            return Err(LayoutError::UnsupportedLayoutVersion {
                path,
                version: header.image_layout_version.chars().take(100).collect(),
            });
        }
        Ok(layout)
    }

    /// The directory this layout was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives. Built only from a validated [`Digest`].
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The tags (`org.opencontainers.image.ref.name` annotations) in `index.json`, in order.
    pub fn tags(&self) -> Result<Vec<String>, LayoutError> {
        Ok(tags_of(&self.read_index_json()?))
    }

    /// Resolve `tag` to the image for `platform`.
    ///
    /// The tag is matched exactly against the `org.opencontainers.image.ref.name` annotation of
    /// the entries in `index.json` (so a layout written with full references as names needs the
    /// full reference). Without a tag:
    /// - a layout with a single entry means that entry, whatever its name;
    /// - a layout whose entries carry no names at all is treated as one multi-platform image
    ///   (`index.json` itself is the platform index);
    /// - otherwise the entry tagged `latest`; if there is none, an error lists the tags.
    ///
    /// Several entries with the same name are treated as the platforms of one image. An entry that
    /// is an image index (OCI or Docker manifest list) is descended into by platform: the exact
    /// variant is preferred, an entry without variant is accepted when `platform` has one, amd64
    /// ignores variants; the first of equally good entries wins. The chosen config's platform
    /// must fit `platform` as well.
    pub fn resolve(
        &self,
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<ResolvedImage, LayoutError> {
        let index_path = self.dir.join("index.json");
        let index = self.read_index_json()?;
        let candidates = select_tagged(&index, tag, &index_path)?;

        // One candidate: the tag names an image (a manifest, or an index to descend into).
        // Several: `index.json` acts as the platform index.
        let (start, index_digest) = match candidates.as_slice() {
            [only] => {
                let digest = digest_of(only, &index_path)?;
                let index_digest = match kind_of(only.media_type().as_ref()) {
                    Some(Kind::Index) => Some(digest),
                    _ => None,
                };
                ((*only).clone(), index_digest)
            }
            _ => {
                let origin = index_path.display().to_string();
                let chosen = choose_platform(candidates.iter().copied(), platform, origin)?;
                (chosen.clone(), None)
            }
        };
        let (manifest_descriptor, document) = self.descend(start, platform)?;
        self.load_image(&manifest_descriptor, &document, platform, index_digest)
    }

    /// Open a blob for streaming. The file must be a regular file (the last path component is
    /// never followed if it is a symbolic link) of exactly `size` bytes; the reader checks digest
    /// and size again while reading, so the content is only proven once it has been read to its
    /// end (or [`VerifyingReader::finish`] returned `Ok`).
    pub fn open_blob(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<VerifyingReader<File>, LayoutError> {
        let path = self.blob_path(digest);
        let missing_or_io = |errno: Errno| {
            if errno == Errno::NOENT {
                LayoutError::BlobMissing {
                    digest: digest.clone(),
                    path: path.clone(),
                }
            } else if errno == Errno::LOOP {
                LayoutError::NotRegularFile { path: path.clone() }
            } else {
                LayoutError::Io {
                    path: path.clone(),
                    source: errno.into(),
                }
            }
        };
        // Directories: O_PATH|O_NOFOLLOW opens a symbolic link itself, which then fails
        // O_DIRECTORY with ENOTDIR, so neither `blobs` nor `blobs/sha256` may be a link.
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let blobs = rustix::fs::openat(&self.root, "blobs", dir_flags, Mode::empty())
            .map_err(missing_or_io)?;
        let algorithm = rustix::fs::openat(
            &blobs,
            digest.algorithm().as_str(),
            dir_flags,
            Mode::empty(),
        )
        .map_err(missing_or_io)?;
        let file = open_regular(&algorithm, digest.hex()).map_err(missing_or_io)?;
        let file = check_regular(file, &path)?;
        let actual = file
            .metadata()
            .map_err(|source| LayoutError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        if actual != size {
            return Err(LayoutError::BlobSizeMismatch {
                digest: digest.clone(),
                path,
                expected: size,
                actual,
            });
        }
        Ok(VerifyingReader::new(file, digest.clone(), size))
    }

    /// Follow index entries down to a manifest descriptor.
    /// Follow index entries down to a manifest descriptor. Returns it with the path of the
    /// document it appeared in.
    fn descend(
        &self,
        start: Descriptor,
        platform: &Platform,
    ) -> Result<(Descriptor, PathBuf), LayoutError> {
        let mut current = start;
        let mut document = self.dir.join("index.json");
        for _ in 0..=MAX_INDEX_DEPTH {
            let media_type = current.media_type().to_string();
            let digest = digest_of(&current, &document)?;
            match kind_of(&media_type) {
                Some(Kind::Manifest) => return Ok((current, document)),
                Some(Kind::Index) => {
                    let index: ImageIndex =
                        self.read_document(&digest, current.size(), &media_type, Kind::Index)?;
                    let origin = format!("image index {digest}");
                    current = choose_platform(index.manifests().iter(), platform, origin)?.clone();
                    document = self.blob_path(&digest);
                }
                None => {
                    return Err(LayoutError::UnsupportedMediaType {
                        role: "image manifest or index",
                        media_type,
                        digest,
                    })
                }
            }
        }
        Err(LayoutError::NestingTooDeep {
            digest: digest_of(&current, &document)?,
        })
    }

    /// Steps 4–6: manifest, config, layers.
    fn load_image(
        &self,
        descriptor: &Descriptor,
        document: &Path,
        platform: &Platform,
        index_digest: Option<Digest>,
    ) -> Result<ResolvedImage, LayoutError> {
        let manifest_digest = digest_of(descriptor, document)?;
        let manifest_path = self.blob_path(&manifest_digest);
        let manifest: ImageManifest = self.read_document(
            &manifest_digest,
            descriptor.size(),
            descriptor.media_type().as_ref(),
            Kind::Manifest,
        )?;

        let config_descriptor = manifest.config();
        let config_digest = digest_of(config_descriptor, &manifest_path)?;
        let config_media_type = config_descriptor.media_type().to_string();
        if !matches!(config_media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
            return Err(LayoutError::UnsupportedMediaType {
                role: "image config (is this an artifact rather than a container image?)",
                media_type: config_media_type,
                digest: config_digest,
            });
        }
        let config_path = self.blob_path(&config_digest);
        let bytes = self.read_metadata_blob(
            &config_digest,
            config_descriptor.size(),
            MAX_CONFIG_SIZE,
            "image config",
        )?;
        let config: ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Parse {
                what: "image config",
                path: config_path.clone(),
                source,
            })?;

        check_config_platform(&config, platform, &manifest_digest)?;

        let rootfs = config.rootfs();
        if rootfs.typ() != "layers" {
            return Err(LayoutError::InvalidRootfsType {
                config: config_digest,
                found: rootfs.typ().chars().take(100).collect(),
            });
        }
        let diff_ids = rootfs
            .diff_ids()
            .iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|source| LayoutError::InvalidDigest {
                        path: config_path.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(LayoutError::LayerCountMismatch {
                manifest: manifest_digest,
                layers: manifest.layers().len(),
                config: config_digest,
                diff_ids: diff_ids.len(),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                let digest = digest_of(layer, &manifest_path)?;
                let media_type = layer.media_type().to_string();
                let compression = layer_compression(&media_type, &digest)?;
                Ok(LayerRef {
                    digest,
                    size: layer.size(),
                    media_type,
                    compression,
                    diff_id,
                })
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;

        Ok(ResolvedImage {
            index_digest,
            manifest_digest,
            manifest,
            config_digest,
            config,
            layers,
        })
    }

    /// Read a manifest or index blob: size cap, digest+size check, shape check, then parse.
    fn read_document<T: serde::de::DeserializeOwned + SchemaVersion>(
        &self,
        digest: &Digest,
        size: u64,
        declared: &str,
        kind: Kind,
    ) -> Result<T, LayoutError> {
        let what = kind.what();
        let path = self.blob_path(digest);
        let bytes =
            self.read_metadata_blob(digest, size, MAX_MANIFEST_SIZE, "image manifest or index")?;
        let parse_error = |source| LayoutError::Parse {
            what,
            path: path.clone(),
            source,
        };
        let shape = Shape::parse(&bytes).map_err(parse_error)?;
        shape
            .check(kind)
            .map_err(|found| LayoutError::MediaTypeConflict {
                digest: digest.clone(),
                declared: declared.to_owned(),
                found: found.to_string(),
            })?;
        check_digests(&shape, &path)?;
        let document: T = serde_json::from_slice(&bytes).map_err(parse_error)?;
        if document.schema_version() != 2 {
            return Err(LayoutError::UnsupportedSchemaVersion {
                what,
                digest: digest.clone(),
                version: document.schema_version(),
            });
        }
        Ok(document)
    }

    /// Read a whole metadata blob, refusing unread a descriptor that claims more than `limit`.
    fn read_metadata_blob(
        &self,
        digest: &Digest,
        size: u64,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, LayoutError> {
        if size > limit {
            return Err(LayoutError::BlobTooLarge {
                what,
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut reader = self.open_blob(digest, size)?;
        // `size <= limit`, a few MiB: fits in usize.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| LayoutError::BlobRead {
                digest: digest.clone(),
                path: self.blob_path(digest),
                source,
            })?;
        Ok(bytes)
    }

    fn read_index_json(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.dir.join("index.json");
        let bytes = self.read_small_file("index.json", MAX_INDEX_JSON_SIZE)?;
        let parse_error = |source| LayoutError::Parse {
            what: "image index",
            path: path.clone(),
            source,
        };
        let shape = Shape::parse(&bytes).map_err(parse_error)?;
        if let Err(found) = shape.check(Kind::Index) {
            return Err(LayoutError::Parse {
                what: "image index",
                path,
                source: serde::de::Error::custom(format!("index.json {found}")),
            });
        }
        check_digests(&shape, &path)?;
        serde_json::from_slice(&bytes).map_err(parse_error)
    }

    /// Read a file at the top of the layout (not a blob: nothing to verify it against), capped.
    fn read_small_file(&self, name: &str, limit: u64) -> Result<Vec<u8>, LayoutError> {
        let path = self.dir.join(name);
        let file = open_regular(&self.root, name).map_err(|errno| {
            if errno == Errno::LOOP {
                LayoutError::NotRegularFile { path: path.clone() }
            } else {
                LayoutError::Io {
                    path: path.clone(),
                    source: errno.into(),
                }
            }
        })?;
        let file = check_regular(file, &path)?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| LayoutError::Io {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(LayoutError::FileTooLarge { path, limit });
        }
        Ok(bytes)
    }
}

fn check_regular(file: File, path: &Path) -> Result<File, LayoutError> {
    let metadata = file.metadata().map_err(|source| LayoutError::Io {
        path: path.to_owned(),
        source,
    })?;
    if metadata.is_file() {
        Ok(file)
    } else {
        Err(LayoutError::NotRegularFile {
            path: path.to_owned(),
        })
    }
}

/// A descriptor's digest as a validated sha256 [`Digest`]; `document` is where it appeared.
fn digest_of(descriptor: &Descriptor, document: &Path) -> Result<Digest, LayoutError> {
    Digest::try_from(descriptor.digest()).map_err(|source| LayoutError::InvalidDigest {
        path: document.to_owned(),
        source,
    })
}

/// Open a file for reading without following a final symbolic link; O_NONBLOCK so that a FIFO
/// planted in the layout cannot block the open (the caller then refuses non-regular files).
fn open_regular(dir: &OwnedFd, name: &str) -> Result<File, Errno> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map(File::from)
}

/// `schemaVersion`, common to manifests and indexes.
trait SchemaVersion {
    fn schema_version(&self) -> u32;
}

impl SchemaVersion for ImageIndex {
    fn schema_version(&self) -> u32 {
        ImageIndex::schema_version(self)
    }
}

impl SchemaVersion for ImageManifest {
    fn schema_version(&self) -> u32 {
        ImageManifest::schema_version(self)
    }
}

pub(crate) fn layer_compression(
    media_type: &str,
    digest: &Digest,
) -> Result<Compression, LayoutError> {
    compression_of(media_type).ok_or_else(|| LayoutError::UnsupportedMediaType {
        role: "layer",
        media_type: media_type.chars().take(200).collect(),
        digest: digest.clone(),
    })
}

fn tags_of(index: &ImageIndex) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for name in index.manifests().iter().filter_map(ref_name) {
        if !tags.iter().any(|t| t == name) {
            tags.push(name.to_owned());
        }
    }
    tags
}

/// The `index.json` entries `tag` selects (see [`OciLayout::resolve`]).
fn select_tagged<'a>(
    index: &'a ImageIndex,
    tag: Option<&str>,
    index_path: &Path,
) -> Result<Vec<&'a Descriptor>, LayoutError> {
    let all = index.manifests();
    if all.is_empty() {
        return Err(LayoutError::EmptyIndex {
            path: index_path.to_owned(),
        });
    }
    let named = |name: &str| -> Vec<&'a Descriptor> {
        all.iter().filter(|d| ref_name(d) == Some(name)).collect()
    };
    match tag {
        Some(tag) => {
            let found = named(tag);
            if found.is_empty() {
                return Err(LayoutError::TagNotFound {
                    tag: tag.to_owned(),
                    path: index_path.to_owned(),
                    available: tags_of(index),
                });
            }
            Ok(found)
        }
        None if all.len() == 1 => Ok(all.iter().collect()),
        None if all.iter().all(|d| ref_name(d).is_none()) => Ok(all.iter().collect()),
        None => {
            let latest = named("latest");
            if latest.is_empty() {
                return Err(LayoutError::NoDefaultImage {
                    path: index_path.to_owned(),
                    available: tags_of(index),
                });
            }
            Ok(latest)
        }
    }
}

/// The best entry for `wanted` among manifests and indexes that declare a platform; the first
/// of equally good ones. `origin` names the index in the error.
fn choose_platform<'a>(
    entries: impl Iterator<Item = &'a Descriptor>,
    wanted: &Platform,
    origin: String,
) -> Result<&'a Descriptor, LayoutError> {
    best_platform(entries, wanted).map_err(|available| {
        LayoutError::Platform(PlatformError::NoMatch {
            wanted: wanted.to_string(),
            index: origin,
            available,
        })
    })
}

/// The image config must describe a platform that runs where `wanted` does (shared by the layout reader and the
/// registry client).
pub(crate) fn check_config_platform(
    config: &ImageConfiguration,
    wanted: &Platform,
    manifest: &Digest,
) -> Result<(), PlatformError> {
    let found = Platform::from_parts(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    );
    match wanted.match_rank(&found) {
        Some(_) => Ok(()),
        None => Err(PlatformError::Mismatch {
            wanted: wanted.to_string(),
            found: found.to_string(),
            manifest: manifest.clone(),
        }),
    }
}

/// The platform choice shared by the layout reader and the registry client, so both pick the same manifest:
/// only index and manifest entries with a platform count; the best [`Platform::match_rank`] wins; the first of
/// equally good ones. `Err` lists the platforms the entries offer.
pub(crate) fn best_platform<'a>(
    entries: impl Iterator<Item = &'a Descriptor>,
    wanted: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let mut best: Option<(u8, &Descriptor)> = None;
    let mut available = Vec::new();
    for entry in entries {
        if kind_of(entry.media_type().as_ref()).is_none() {
            continue;
        }
        let Some(platform) = descriptor_platform(entry) else {
            continue;
        };
        let name = platform.to_string();
        if !available.contains(&name) {
            available.push(name);
        }
        if let Some(rank) = wanted.match_rank(&platform) {
            if best.is_none_or(|(best_rank, _)| rank > best_rank) {
                best = Some((rank, entry));
            }
        }
    }
    best.map(|(_, entry)| entry).ok_or(available)
}
