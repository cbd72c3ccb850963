//! Real OCI image layouts for tests: layers built from lists of entries, a config, a manifest, and an
//! `index.json` that names the image by tag (`org.opencontainers.image.ref.name`).
//!
//! The layout is the one the OCI image spec defines: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//! Configs carry correct `rootfs.diff_ids` (sha256 of each uncompressed layer) and the host's platform unless
//! told otherwise. Everything is deterministic: the same builder writes the same digests.
//!
//! Every I/O error names the path it concerns.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The tag annotation of a manifest in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// All entries get this modification time, so layers are reproducible.
const MTIME: u64 = 1_700_000_000;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd layers have only the OCI media type (Docker's tools use it in Docker manifests too).
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The host's platform in OCI terms: (`amd64` | `arm64` | ..., `linux`).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    (arch, std::env::consts::OS)
}

/// One thing in a layer. Paths are absolute or relative image paths ("/usr/bin/x" and "usr/bin/x" are the same
/// entry); they are written relative, as image builders do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    Fifo {
        path: String,
        mode: u32,
    },
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    /// A regular file whose name goes into the tar header as given, unchecked (at most 100 bytes): for hostile
    /// layers with `../x` or `/abs` names, which the tar crate refuses to write through its checked API.
    RawFile {
        name: Vec<u8>,
        data: Vec<u8>,
        mode: u32,
    },
}

/// How a layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

/// A layer: entries in the order they go into the tar (order matters for duplicates and whiteouts), or a
/// ready-made tar.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
    tar: Option<Vec<u8>>,
    compression: Compression,
}

fn relative(path: &str) -> &str {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        "."
    } else {
        trimmed
    }
}

impl Layer {
    /// An empty gzip layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty uncompressed layer.
    pub fn uncompressed() -> Self {
        Self::new().compression(Compression::None)
    }

    /// A layer made of a tar archive built elsewhere (uncompressed tar bytes).
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Self {
        Self {
            entries: Vec::new(),
            tar: Some(tar),
            compression,
        }
    }

    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// A file owned by root.
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.file_owned(path, data, mode, 0, 0)
    }

    pub fn file_owned(
        self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        self.entry(Entry::File {
            path: path.to_owned(),
            data: data.into(),
            mode,
            uid,
            gid,
        })
    }

    /// A directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.entry(Entry::Dir {
            path: path.to_owned(),
            mode,
            uid,
            gid,
        })
    }

    /// A symlink; the target is written as given (absolute and `..` targets allowed).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        })
    }

    /// A hardlink to `target`, an image path (made relative like entry paths, unless it contains `..`).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Hardlink {
            path: path.to_owned(),
            target: target.to_owned(),
        })
    }

    pub fn fifo(self, path: &str, mode: u32) -> Self {
        self.entry(Entry::Fifo {
            path: path.to_owned(),
            mode,
        })
    }

    pub fn char_device(self, path: &str, major: u32, minor: u32) -> Self {
        self.entry(Entry::CharDevice {
            path: path.to_owned(),
            major,
            minor,
            mode: 0o666,
        })
    }

    /// A whiteout deleting `path` from lower layers: an empty file `<dir>/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> Self {
        let rel = relative(path);
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), rel),
        };
        self.file(&format!("{dir}.wh.{name}"), Vec::new(), 0o644)
    }

    /// An opaque whiteout hiding everything lower layers have in `dir`: `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Self {
        let rel = relative(dir).trim_end_matches('/');
        self.file(&format!("{rel}/.wh..wh..opq"), Vec::new(), 0o644)
    }

    /// A regular file with an unchecked header name; see [`Entry::RawFile`].
    pub fn raw_file(self, name: &[u8], data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entry(Entry::RawFile {
            name: name.to_vec(),
            data: data.into(),
            mode,
        })
    }

    /// The layer as an uncompressed tar archive.
    pub fn tar_bytes(&self) -> io::Result<Vec<u8>> {
        if let Some(tar) = &self.tar {
            return Ok(tar.clone());
        }
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut builder, entry)?;
        }
        builder.into_inner()
    }

    /// The layer blob as stored: the tar, compressed as configured.
    fn blob(&self, tar: &[u8]) -> io::Result<Vec<u8>> {
        match self.compression {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar)?;
                encoder.finish()
            }
            Compression::Zstd => zstd::bulk::compress(tar, 3),
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_size(size);
    header.set_mtime(MTIME);
    header
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> io::Result<()> {
    let context =
        |e: io::Error, path: &str| io::Error::new(e.kind(), format!("layer entry {path:?}: {e}"));
    match entry {
        Entry::File {
            path,
            data,
            mode,
            uid,
            gid,
        } => {
            let mut h = header(
                tar::EntryType::Regular,
                *mode,
                *uid,
                *gid,
                data.len() as u64,
            );
            builder
                .append_data(&mut h, relative(path), data.as_slice())
                .map_err(|e| context(e, path))
        }
        Entry::Dir {
            path,
            mode,
            uid,
            gid,
        } => {
            let mut h = header(tar::EntryType::Directory, *mode, *uid, *gid, 0);
            builder
                .append_data(&mut h, relative(path), io::empty())
                .map_err(|e| context(e, path))
        }
        Entry::Symlink { path, target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
            builder
                .append_link(&mut h, relative(path), target)
                .map_err(|e| context(e, path))
        }
        Entry::Hardlink { path, target } => {
            let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
            let target = if target.contains("..") {
                target.as_str()
            } else {
                relative(target)
            };
            builder
                .append_link(&mut h, relative(path), target)
                .map_err(|e| context(e, path))
        }
        Entry::Fifo { path, mode } => {
            let mut h = header(tar::EntryType::Fifo, *mode, 0, 0, 0);
            builder
                .append_data(&mut h, relative(path), io::empty())
                .map_err(|e| context(e, path))
        }
        Entry::CharDevice {
            path,
            major,
            minor,
            mode,
        } => {
            let mut h = header(tar::EntryType::Char, *mode, 0, 0, 0);
            h.set_device_major(*major).map_err(|e| context(e, path))?;
            h.set_device_minor(*minor).map_err(|e| context(e, path))?;
            builder
                .append_data(&mut h, relative(path), io::empty())
                .map_err(|e| context(e, path))
        }
        Entry::RawFile { name, data, mode } => {
            let shown = String::from_utf8_lossy(name).into_owned();
            let mut h = header(tar::EntryType::Regular, *mode, 0, 0, data.len() as u64);
            let slot = &mut h.as_old_mut().name;
            if name.len() > slot.len() {
                return Err(context(
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "raw names are limited to 100 bytes",
                    ),
                    &shown,
                ));
            }
            slot[..name.len()].copy_from_slice(name);
            h.set_cksum();
            builder
                .append(&h, data.as_slice())
                .map_err(|e| context(e, &shown))
        }
    }
}

/// Media types to write: OCI (the default) or Docker's schema 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTypes {
    #[default]
    Oci,
    Docker,
}

impl MediaTypes {
    fn manifest(self) -> &'static str {
        match self {
            Self::Oci => OCI_MANIFEST,
            Self::Docker => DOCKER_MANIFEST,
        }
    }

    fn config(self) -> &'static str {
        match self {
            Self::Oci => OCI_CONFIG,
            Self::Docker => DOCKER_CONFIG,
        }
    }

    fn layer(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (Self::Oci, Compression::None) => OCI_LAYER,
            (Self::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
            (Self::Docker, Compression::None) => DOCKER_LAYER,
            (Self::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
            (_, Compression::Zstd) => OCI_LAYER_ZSTD,
        }
    }
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }

    fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    /// The file of this blob in a layout.
    pub fn blob_path(&self, layout: &Path) -> PathBuf {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        layout.join("blobs").join("sha256").join(hex)
    }
}

/// What [`ImageBuilder::write_blobs`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// `sha256:<hex>` of each uncompressed layer, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// The platform in the config: (architecture, os).
    pub platform: (String, String),
}

/// Builds an image and writes it into an OCI layout directory.
///
/// ```no_run
/// use thv_sandbox_e2e::{ImageBuilder, Layer};
/// let image = ImageBuilder::new()
///     .layer(Layer::new().dir("/etc", 0o755).file("/etc/motd", "hi\n", 0o644))
///     .entrypoint(["/bin/app"])
///     .env("PATH", "/bin")
///     .user("1000:1000");
/// image.write(std::path::Path::new("/tmp/layout"), "latest").unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    media_types: MediaTypes,
    platform: (String, String),
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    volumes: Vec<String>,
    labels: BTreeMap<String, String>,
    extra: Map<String, Value>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// No layers, no config fields, OCI media types, the host's platform.
    pub fn new() -> Self {
        let (arch, os) = host_platform();
        Self {
            layers: Vec::new(),
            media_types: MediaTypes::Oci,
            platform: (arch.to_owned(), os.to_owned()),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            volumes: Vec::new(),
            labels: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Stores every layer added so far with `compression`.
    pub fn compress_all(mut self, compression: Compression) -> Self {
        for layer in &mut self.layers {
            layer.compression = compression;
        }
        self
    }

    pub fn media_types(mut self, media_types: MediaTypes) -> Self {
        self.media_types = media_types;
        self
    }

    /// The config's `architecture` and `os`.
    pub fn platform(mut self, architecture: &str, os: &str) -> Self {
        self.platform = (architecture.to_owned(), os.to_owned());
        self
    }

    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds `KEY=value` to `Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_owned());
        self
    }

    /// `User`: a name, `uid`, `uid:gid` or `name:group`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.push(path.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets a top-level field of the config document as given (for odd or malformed configs).
    pub fn config_field(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The config document for the given diff_ids.
    fn config_json(&self, diff_ids: &[String]) -> Value {
        let mut config = Map::new();
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if !self.env.is_empty() {
            config.insert("Env".into(), json!(self.env));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if let Some(user) = &self.user {
            config.insert("User".into(), json!(user));
        }
        if !self.volumes.is_empty() {
            let volumes: Map<String, Value> = self
                .volumes
                .iter()
                .map(|v| (v.clone(), json!({})))
                .collect();
            config.insert("Volumes".into(), Value::Object(volumes));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| json!({"created": "2023-11-14T22:13:20Z", "created_by": format!("thv-sandbox-e2e layer {i}")}))
            .collect();
        let mut doc = Map::new();
        doc.insert("created".into(), json!("2023-11-14T22:13:20Z"));
        doc.insert("architecture".into(), json!(self.platform.0));
        doc.insert("os".into(), json!(self.platform.1));
        doc.insert("config".into(), Value::Object(config));
        doc.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        doc.insert("history".into(), json!(history));
        for (key, value) in &self.extra {
            doc.insert(key.clone(), value.clone());
        }
        Value::Object(doc)
    }

    /// Writes `oci-layout` and all blobs (layers, config, manifest) into `layout`, without naming the image in
    /// `index.json`. Use [`tag_manifest`] or [`write_platform_index`] to name it, or [`Self::write`].
    pub fn write_blobs(&self, layout: &Path) -> io::Result<BuiltImage> {
        init_layout(layout)?;
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &self.layers {
            let tar = layer.tar_bytes()?;
            let blob = layer.blob(&tar)?;
            diff_ids.push(sha256_digest(&tar));
            layers.push(write_blob(
                layout,
                self.media_types.layer(layer.compression),
                &blob,
            )?);
        }
        let config_bytes =
            serde_json::to_vec(&self.config_json(&diff_ids)).map_err(io::Error::other)?;
        let config = write_blob(layout, self.media_types.config(), &config_bytes)?;
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": self.media_types.manifest(),
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest_json).map_err(io::Error::other)?;
        let manifest = write_blob(layout, self.media_types.manifest(), &manifest_bytes)?;
        Ok(BuiltImage {
            manifest,
            config,
            layers,
            diff_ids,
            platform: self.platform.clone(),
        })
    }

    /// Writes the image into `layout` and names it `tag` in `index.json` (replacing an image of that tag).
    pub fn write(&self, layout: &Path, tag: &str) -> io::Result<BuiltImage> {
        let built = self.write_blobs(layout)?;
        tag_manifest(
            layout,
            tag,
            &built.manifest,
            Some((&built.platform.0, &built.platform.1)),
        )?;
        Ok(built)
    }
}

fn init_layout(layout: &Path) -> io::Result<()> {
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| with_path(&blobs, e))?;
    let marker = layout.join("oci-layout");
    fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|e| with_path(&marker, e))?;
    let index = layout.join("index.json");
    if !index.exists() {
        let empty = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        fs::write(&index, empty.to_string()).map_err(|e| with_path(&index, e))?;
    }
    Ok(())
}

fn write_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> io::Result<Descriptor> {
    let descriptor = Descriptor::of(media_type, bytes);
    let path = descriptor.blob_path(layout);
    fs::write(&path, bytes).map_err(|e| with_path(&path, e))?;
    Ok(descriptor)
}

/// Names a manifest (or nested index) `tag` in the layout's `index.json`, replacing any entry of that tag.
pub fn tag_manifest(
    layout: &Path,
    tag: &str,
    manifest: &Descriptor,
    platform: Option<(&str, &str)>,
) -> io::Result<()> {
    init_layout(layout)?;
    let path = layout.join("index.json");
    let text = fs::read(&path).map_err(|e| with_path(&path, e))?;
    let mut index: Value = serde_json::from_slice(&text)
        .map_err(|e| with_path(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut entry = manifest.to_json();
    entry["annotations"] = json!({ REF_NAME_ANNOTATION: tag });
    if let Some((architecture, os)) = platform {
        entry["platform"] = json!({"architecture": architecture, "os": os});
    }
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            with_path(
                &path,
                io::Error::new(io::ErrorKind::InvalidData, "no manifests array"),
            )
        })?;
    manifests.retain(|m| m["annotations"][REF_NAME_ANNOTATION] != tag);
    manifests.push(entry);
    fs::write(&path, serde_json::to_vec(&index).map_err(io::Error::other)?)
        .map_err(|e| with_path(&path, e))
}

/// Writes an image index blob listing per-platform images (a multi-arch image) and names it `tag`.
pub fn write_platform_index(
    layout: &Path,
    tag: &str,
    images: &[&BuiltImage],
) -> io::Result<Descriptor> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut entry = image.manifest.to_json();
            entry["platform"] = json!({"architecture": image.platform.0, "os": image.platform.1});
            entry
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let bytes = serde_json::to_vec(&index).map_err(io::Error::other)?;
    let descriptor = write_blob(layout, OCI_INDEX, &bytes)?;
    tag_manifest(layout, tag, &descriptor, None)?;
    Ok(descriptor)
}

/// The image a layout names `tag` (a manifest, not an index), as [`ImageBuilder::write`] would have returned it:
/// for pushing an image built elsewhere (by `oci-from-dirs`, say) with [`crate::registry::TestRegistry::push_image`].
pub fn read_image(layout: &Path, tag: &str) -> Result<BuiltImage, String> {
    let index = read_json(&layout.join("index.json"))?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["annotations"][REF_NAME_ANNOTATION] == tag)
        })
        .ok_or(format!("{}: no image tagged {tag:?}", layout.display()))?;
    let descriptor = |v: &Value| -> Result<Descriptor, String> {
        Ok(Descriptor {
            media_type: v["mediaType"]
                .as_str()
                .ok_or(format!("no mediaType: {v}"))?
                .to_owned(),
            digest: v["digest"]
                .as_str()
                .ok_or(format!("no digest: {v}"))?
                .to_owned(),
            size: v["size"].as_u64().ok_or(format!("no size: {v}"))?,
        })
    };
    let manifest = descriptor(entry)?;
    let doc: Value = serde_json::from_slice(&checked_blob(layout, entry)?)
        .map_err(|e| format!("manifest {}: {e}", manifest.digest))?;
    let config = descriptor(&doc["config"])?;
    let layers = doc["layers"]
        .as_array()
        .ok_or(format!("manifest {}: no layers", manifest.digest))?
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    let config_doc: Value = serde_json::from_slice(&checked_blob(layout, &doc["config"])?)
        .map_err(|e| format!("config {}: {e}", config.digest))?;
    let diff_ids = config_doc["rootfs"]["diff_ids"]
        .as_array()
        .ok_or(format!("config {}: no rootfs.diff_ids", config.digest))?
        .iter()
        .map(|d| d.as_str().map(str::to_owned).ok_or(format!("diff_id {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let field = |k: &str| config_doc[k].as_str().unwrap_or_default().to_owned();
    Ok(BuiltImage {
        manifest,
        config,
        layers,
        diff_ids,
        platform: (field("architecture"), field("os")),
    })
}

/// What [`check_layout`] found: per tag, the manifest digest and the number of layers it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSummary {
    pub images: BTreeMap<String, (String, usize)>,
}

/// Checks a layout from its files alone: every blob reachable from `index.json` exists, hashes to its digest
/// and has its descriptor's size; every image's config lists as `rootfs.diff_ids` the sha256 of its layers
/// uncompressed. Follows nested indexes.
pub fn check_layout(layout: &Path) -> Result<LayoutSummary, String> {
    let index_path = layout.join("index.json");
    let index = read_json(&index_path)?;
    let marker = read_json(&layout.join("oci-layout"))?;
    if marker["imageLayoutVersion"] != "1.0.0" {
        return Err(format!("oci-layout: unexpected {marker}"));
    }
    let mut images = BTreeMap::new();
    for entry in index["manifests"]
        .as_array()
        .ok_or("index.json: no manifests array")?
    {
        let tag = entry["annotations"][REF_NAME_ANNOTATION]
            .as_str()
            .unwrap_or("<untagged>")
            .to_owned();
        let layers = check_manifest_or_index(layout, entry)?;
        let digest = entry["digest"].as_str().unwrap_or_default().to_owned();
        images.insert(tag, (digest, layers));
    }
    Ok(LayoutSummary { images })
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the blob a descriptor names and checks its digest and size.
fn checked_blob(layout: &Path, descriptor: &Value) -> Result<Vec<u8>, String> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or(format!("descriptor without digest: {descriptor}"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or(format!("not a sha256 digest: {digest}"))?;
    let path = layout.join("blobs").join("sha256").join(hex);
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(format!("{}: content hashes to {actual}", path.display()));
    }
    if descriptor["size"].as_u64() != Some(bytes.len() as u64) {
        return Err(format!(
            "{}: size {} but descriptor says {}",
            path.display(),
            bytes.len(),
            descriptor["size"]
        ));
    }
    Ok(bytes)
}

/// Checks a manifest (or a nested index) and returns how many layers it checked.
fn check_manifest_or_index(layout: &Path, descriptor: &Value) -> Result<usize, String> {
    let bytes = checked_blob(layout, descriptor)?;
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", descriptor["digest"]))?;
    if descriptor["mediaType"] == OCI_INDEX {
        let mut count = 0;
        for child in doc["manifests"]
            .as_array()
            .ok_or("index without manifests")?
        {
            count += check_manifest_or_index(layout, child)?;
        }
        return Ok(count);
    }
    if doc["mediaType"] != descriptor["mediaType"] {
        return Err(format!(
            "manifest mediaType {} but descriptor says {}",
            doc["mediaType"], descriptor["mediaType"]
        ));
    }
    let config: Value = serde_json::from_slice(&checked_blob(layout, &doc["config"])?)
        .map_err(|e| format!("config {}: {e}", doc["config"]["digest"]))?;
    let layers = doc["layers"].as_array().ok_or("manifest without layers")?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or("config without rootfs.diff_ids")?;
    if layers.len() != diff_ids.len() {
        return Err(format!(
            "{} layers but {} diff_ids",
            layers.len(),
            diff_ids.len()
        ));
    }
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let blob = checked_blob(layout, layer)?;
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        let tar = if media_type.ends_with("gzip") {
            let mut out = Vec::new();
            GzDecoder::new(blob.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| format!("layer {}: {e}", layer["digest"]))?;
            out
        } else if media_type.ends_with("zstd") {
            zstd::stream::decode_all(blob.as_slice())
                .map_err(|e| format!("layer {}: {e}", layer["digest"]))?
        } else {
            blob
        };
        let actual = sha256_digest(&tar);
        if diff_id.as_str() != Some(actual.as_str()) {
            return Err(format!(
                "layer {}: uncompressed digest {actual} but diff_id {diff_id}",
                layer["digest"]
            ));
        }
    }
    Ok(layers.len())
}

/// The shared objects a dynamically linked binary needs, from `ldd`: absolute paths, the loader included.
/// Empty for a static binary.
pub fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running ldd on {}: {e}", binary.display()),
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(io::Error::other(format!(
            "ldd {} failed: {stderr}",
            binary.display()
        )));
    }
    Ok(parse_ldd(&stdout))
}

/// Parses `ldd` output lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; skips the vDSO and `statically linked`.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') && !out.iter().any(|p: &PathBuf| p == Path::new(path)) {
            out.push(PathBuf::from(path));
        }
    }
    out
}

/// The probe image as a builder, to extend before writing (more layers, env, labels...).
///
/// Layer 1 (gzip): `/etc/passwd` and `/etc/group` with `root` (0) and `app` (1000:1000, home `/home/app`),
/// `/tmp` (1777), `/home/app` (owned by app), and every shared library `ldd` lists for the probe, at the same
/// absolute path as on the host (the dynamic loader included). Layer 2 (gzip): the probe at
/// `/usr/local/bin/sandbox-probe`. Config: Entrypoint `["/usr/local/bin/sandbox-probe"]`, WorkingDir `/`,
/// `PATH`, and `User` when given (`"app"`, `"1000:1000"`...).
pub fn probe_image_builder(user: Option<&str>) -> io::Result<ImageBuilder> {
    binary_image_builder(&crate::probe_bin(), "sandbox-probe", user)
}

/// The `http-probe` image (an MCP server over HTTP, see [`crate::http_server`]) as a builder: laid out like
/// [`probe_image_builder`]'s, with `/usr/local/bin/http-probe` as the entrypoint. Give the transport and port
/// as the image's `cmd` (e.g. `["--transport", "streamable-http", "--port", "8080"]`) or as run arguments;
/// without them it serves streamable HTTP on 127.0.0.1:8080.
pub fn http_probe_image_builder(user: Option<&str>) -> io::Result<ImageBuilder> {
    binary_image_builder(&crate::http_probe_bin(), "http-probe", user)
}

/// An image holding one host binary at `/usr/local/bin/NAME` (its entrypoint) and the shared libraries it
/// needs; see [`probe_image_builder`].
pub fn binary_image_builder(
    binary: &Path,
    name: &str,
    user: Option<&str>,
) -> io::Result<ImageBuilder> {
    let probe = binary.to_path_buf();
    let mut base = Layer::new()
        .dir("/etc", 0o755)
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\napp:x:1000:1000:app:/home/app:/sbin/nologin\n",
            0o644,
        )
        .file("/etc/group", "root:x:0:\napp:x:1000:\n", 0o644)
        .dir("/tmp", 0o1777)
        .dir("/root", 0o700)
        .dir("/home", 0o755)
        .dir_owned("/home/app", 0o755, 1000, 1000);
    let mut dirs: Vec<String> = Vec::new();
    for lib in shared_libraries(&probe)? {
        // Parent directories first, once each, so the layer does not depend on the unpacker creating them.
        let mut parents: Vec<&Path> = lib
            .ancestors()
            .skip(1)
            .filter(|p| *p != Path::new("/"))
            .collect();
        parents.reverse();
        for parent in parents {
            let parent = parent.to_string_lossy().into_owned();
            if !dirs.contains(&parent) {
                base = base.dir(&parent, 0o755);
                dirs.push(parent);
            }
        }
        // fs::read follows symlinks (the loader's path is a symlink on merged-/usr systems): copy the content.
        let data = fs::read(&lib).map_err(|e| with_path(&lib, e))?;
        base = base.file(&lib.to_string_lossy(), data, 0o755);
    }
    let data = fs::read(&probe).map_err(|e| with_path(&probe, e))?;
    let app = Layer::new()
        .dir("/usr", 0o755)
        .dir("/usr/local", 0o755)
        .dir("/usr/local/bin", 0o755)
        .file(&format!("/usr/local/bin/{name}"), data, 0o755);
    let mut image = ImageBuilder::new()
        .layer(base)
        .layer(app)
        .entrypoint([format!("/usr/local/bin/{name}")])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .working_dir("/");
    if let Some(user) = user {
        image = image.user(user);
    }
    Ok(image)
}

/// Writes the probe image (see [`probe_image_builder`]) into the layout `dir` as `tag`.
pub fn probe_image(dir: &Path, tag: &str, user: Option<&str>) -> io::Result<()> {
    probe_image_builder(user)?.write(dir, tag).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(layer: &Layer) -> Vec<(String, tar::EntryType, Vec<u8>, Option<String>)> {
        let tar = layer.tar_bytes().expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let kind = e.header().entry_type();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("data");
                (path, kind, data, link)
            })
            .collect()
    }

    #[test]
    fn layers_keep_entry_order_and_kinds() {
        let long = format!("/{}/file", "d".repeat(150));
        let layer = Layer::new()
            .dir("/a", 0o755)
            .file("/a/f", "x", 0o644)
            .symlink("/a/s", "../../etc/passwd")
            .hardlink("/a/h", "/a/f")
            .fifo("/a/p", 0o600)
            .whiteout("/a/gone")
            .opaque("/b/")
            .file(&long, "long", 0o644)
            .raw_file(b"../escape", "evil", 0o644);
        let got = entries(&layer);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "a/f",
                "a/s",
                "a/h",
                "a/p",
                "a/.wh.gone",
                "b/.wh..wh..opq",
                &long[1..],
                "../escape"
            ]
        );
        assert_eq!(got[1].2, b"x");
        assert_eq!(got[2].1, tar::EntryType::Symlink);
        assert_eq!(got[2].3.as_deref(), Some("../../etc/passwd"));
        assert_eq!(got[3].1, tar::EntryType::Link);
        assert_eq!(got[3].3.as_deref(), Some("a/f"));
        assert_eq!(got[4].1, tar::EntryType::Fifo);
        assert_eq!(got[8].2, b"evil");
    }

    #[test]
    fn ldd_output_is_parsed_into_absolute_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc0b5f1000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c5d0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1c3ef000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1c66a000)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn config_carries_fields_platform_and_diff_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = ImageBuilder::new()
            .layer(Layer::new().file("/x", "1", 0o644))
            .layer(Layer::uncompressed().file("/y", "2", 0o644))
            .entrypoint(["/x"])
            .cmd(["a", "b"])
            .env("A", "1")
            .working_dir("/w")
            .user("app")
            .volume("/data")
            .label("k", "v")
            .write(dir.path(), "t1")
            .expect("write");
        let config = read_json(&built.config.blob_path(dir.path())).expect("config");
        assert_eq!(config["architecture"], host_platform().0);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"], json!(["/x"]));
        assert_eq!(config["config"]["Cmd"], json!(["a", "b"]));
        assert_eq!(config["config"]["Env"], json!(["A=1"]));
        assert_eq!(config["config"]["WorkingDir"], "/w");
        assert_eq!(config["config"]["User"], "app");
        assert_eq!(config["config"]["Volumes"], json!({"/data": {}}));
        assert_eq!(config["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(config["rootfs"]["diff_ids"], json!(built.diff_ids));
        assert_eq!(built.layers[0].media_type, OCI_LAYER_GZIP);
        assert_eq!(built.layers[1].media_type, OCI_LAYER);
        // The uncompressed layer's blob is its own diff_id.
        assert_eq!(built.layers[1].digest, built.diff_ids[1]);
        assert_ne!(built.layers[0].digest, built.diff_ids[0]);
        let summary = check_layout(dir.path()).expect("consistent layout");
        assert_eq!(summary.images["t1"], (built.manifest.digest.clone(), 2));
    }

    #[test]
    fn tags_accumulate_and_retagging_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = ImageBuilder::new().layer(Layer::new().file("/a", "1", 0o644));
        let two = ImageBuilder::new()
            .layer(Layer::new().file("/a", "2", 0o644))
            .media_types(MediaTypes::Docker);
        one.write(dir.path(), "one").expect("one");
        let built_two = two.write(dir.path(), "two").expect("two");
        assert_eq!(built_two.manifest.media_type, DOCKER_MANIFEST);
        let built_again = two.write(dir.path(), "one").expect("retag");
        let summary = check_layout(dir.path()).expect("consistent");
        assert_eq!(summary.images.len(), 2);
        assert_eq!(summary.images["one"].0, built_again.manifest.digest);
        // Deterministic: the same builder gives the same manifest digest.
        assert_eq!(built_two.manifest, built_again.manifest);
    }

    #[test]
    fn platform_indexes_are_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let amd = ImageBuilder::new()
            .platform("amd64", "linux")
            .layer(Layer::new().file("/a", "amd", 0o644))
            .write_blobs(dir.path())
            .expect("amd64");
        let arm = ImageBuilder::new()
            .platform("arm64", "linux")
            .layer(Layer::new().file("/a", "arm", 0o644))
            .write_blobs(dir.path())
            .expect("arm64");
        write_platform_index(dir.path(), "multi", &[&amd, &arm]).expect("index");
        let summary = check_layout(dir.path()).expect("consistent");
        assert_eq!(summary.images["multi"].1, 2);
    }

    #[test]
    fn read_image_gives_back_what_write_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = ImageBuilder::new()
            .layer(Layer::new().file("/a", "1", 0o644))
            .layer(Layer::uncompressed().file("/b", "2", 0o644))
            .write(dir.path(), "t")
            .expect("write");
        let read = read_image(dir.path(), "t").expect("read");
        assert_eq!(read.manifest, built.manifest);
        assert_eq!(read.config, built.config);
        assert_eq!(read.layers, built.layers);
        assert_eq!(read.diff_ids, built.diff_ids);
        assert_eq!(read.platform, built.platform);
        assert!(read_image(dir.path(), "other")
            .unwrap_err()
            .contains("no image tagged"));
    }

    #[test]
    fn check_layout_notices_a_wrong_diff_id_and_a_corrupt_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lie = ImageBuilder::new()
            .layer(Layer::new().file("/a", "1", 0o644))
            .config_field(
                "rootfs",
                json!({"type": "layers", "diff_ids": [sha256_digest(b"other")]}),
            );
        lie.write(dir.path(), "lie").expect("write");
        let err = check_layout(dir.path()).expect_err("a wrong diff_id");
        assert!(err.contains("diff_id"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let built = ImageBuilder::new()
            .layer(Layer::new().file("/a", "1", 0o644))
            .write(dir.path(), "t")
            .expect("write");
        fs::write(built.layers[0].blob_path(dir.path()), b"tampered").expect("tamper");
        let err = check_layout(dir.path()).expect_err("a corrupt blob");
        assert!(err.contains("hashes to"), "{err}");
    }
}
