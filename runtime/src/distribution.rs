//! Pulling images from OCI registries (the distribution API) into the blob cache.
//!
//! The steps are separate functions; the caller orders them (as rust-oci-client's `pull_manifest_and_config` and
//! `pull_blob` are). [`crate::run`] puts the verification gate between [`resolve`] and
//! [`Resolved::fetch_and_unpack`]; [`pull`] runs them back to back, without verification. The order is what
//! verification needs:
//! 1. **resolve** ([`resolve`]) — with [`PullPolicy::Missing`] (the default) or [`PullPolicy::Never`], an image the
//!    cache holds completely under the reference's name is used without any network. `Never` fails when it is not
//!    there. Otherwise the manifest or index is fetched by tag (or by digest), at most 4 MiB of it, and its sha256
//!    becomes the pinned digest. A digest reference must match it. From here on only digests are used: the
//!    platform manifest, the config and the layers are all requested by digest. For an index (or Docker manifest
//!    list), the entry for the platform wanted is chosen by os/architecture/variant exactly as the layout reader
//!    chooses, and fetched by digest, its size bounded by its descriptor and by 4 MiB; then the config (≤ 8 MiB).
//!    Each document is checked (index or manifest, consistent media type, schemaVersion 2, valid digests, config
//!    platform, layer count, layer media types) before anything is fetched on its strength. No layer is fetched.
//!    [`resolve_at_registry`] does the same without looking in the cache.
//! 2. **discover evidence** ([`crate::trust::evidence::discover_for`]) — through the same registry connection
//!    ([`Resolved::connection`]); distribution knows nothing of evidence.
//! 3. **decide** — the caller's: distribution calls no verification. A refused [`Resolved`] is dropped, and no
//!    layer of it is ever requested.
//! 4. **fetch layers** ([`Resolved::fetch_and_unpack`]) — up to [`MAX_PARALLEL_BLOBS`] at once, each streamed into
//!    a temporary file, counted (never more than its descriptor's size) and hashed; renamed into
//!    `blobs/sha256/<hex>` only when size and digest are right. Blobs already present are not fetched again. With
//!    [`PullOptions::unpack`] the layers are unpacked while they download, into the root a run uses ([`stream`]):
//!    it is committed only when every blob and every diff_id matched. The root's lock is taken before any layer is
//!    requested, so concurrent first pulls share one download and one unpack.
//! 5. **commit** ([`Fetched::commit`]) — `index.json` names the image, under an exclusive lock, written aside and
//!    renamed. Until this step nothing names the image, so a pull that dies earlier leaves nothing a later run
//!    would use.
//!
//! # The cache is an OCI image layout
//! `<cache>/oci/` has `oci-layout`, `blobs/sha256/<hex>` and `index.json`, so [`crate::image::layout::OciLayout`]
//! reads pulled images like any layout, and `rootfs::ensure` unpacks them. `index.json` names each pulled image
//! twice with `org.opencontainers.image.ref.name`: by the normalized reference (`docker.io/library/alpine:3.20`)
//! and by its pinned form (`docker.io/library/alpine@sha256:…`, also in the [`ANNOTATION_PINNED`] annotation of
//! both entries). The entry's descriptor is what the tag resolved to: the index for multi-platform images (only
//! this platform's manifest, config and layers are fetched), else the manifest. [`Pulled::tag_ref`] is the
//! pinned name, so what runs is exactly what was resolved even if another pull moves the tag meanwhile.
//!
//! # Pull policies
//! - `Missing`: a tag in the cache is used as it is, with no network; otherwise it is pulled.
//! - `Always`: a tag is resolved again at the registry; when it now names another digest than the cached one,
//!   a warning says so (stderr, via `tracing`). Blobs already present are still not downloaded again.
//! - `Never`: the cache only; no network at all.
//!
//! A digest reference names immutable content: whatever the policy, it is used from the cache when complete.
//!
//! # Registries
//! HTTPS (the system's roots plus the CAs of [`PullOptions::ca_certs`]), except plain HTTP for loopback hosts (`localhost`, 127.0.0.0/8, `::1`) and the hosts in
//! [`PullOptions::insecure`]. [`PullOptions::mirrors`] maps a registry to a mirror host that is contacted instead
//! (same repository path, no fallback to the original); the image keeps its original name everywhere else.
//! Authentication: anonymous, bearer tokens (the challenge flow), basic auth with [`PullOptions::credential`] or
//! Docker's config file (`auths`, and `credHelpers` / `credsStore` through `docker-credential-*` helpers); identity
//! tokens (OAuth2 refresh tokens) from either are exchanged for an access token at the registry's token server. Foreign-layer `urls` are never
//! followed. Layers may be uncompressed, gzip or zstd tars; other layer media types are refused before anything
//! is downloaded.
//!
//! [`resolve`] creates its own single-threaded tokio runtime (kept in [`Resolved`] for the later steps, which use
//! the same connection), so callers stay synchronous; it must not be called from inside a tokio runtime (use
//! `spawn_blocking` there).

pub(crate) mod auth;
pub(crate) mod document;
pub(crate) mod remote;
pub(crate) mod store;
pub(crate) mod stream;

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageConfiguration, ImageManifest, MediaType,
};

pub use auth::{
    default_docker_config, from_docker_config, Credential, ENV_PASSWORD, ENV_USER,
    IDENTITY_TOKEN_USER,
};

use crate::dirs::DirsError;
use crate::image::digest::{Digest, DigestError};
use crate::image::layout::{
    LayoutError, OciLayout, Platform, ResolvedImage, MAX_CONFIG_SIZE, MAX_INDEX_DEPTH,
    MAX_MANIFEST_SIZE,
};
use crate::image::reference::Reference;
use crate::report::Reporter;
use document::{Kind, LayerBlob};
use remote::Remote;
pub use remote::TransferLimits;
use store::Store;

/// Annotation on cache `index.json` entries: the pinned reference (`registry/repository@sha256:…`).
pub const ANNOTATION_PINNED: &str = "dev.thv-sandbox.pinned";
/// How many blobs are downloaded at once.
pub const MAX_PARALLEL_BLOBS: usize = 3;

/// How registries are reached: the settings of the configuration file and the flags that override them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAccess {
    /// Registries (`HOST[:PORT]`) that may be reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// `(registry, mirror)`: pull what is named as being on `registry` from `mirror`.
    pub mirrors: Vec<(String, String)>,
    /// PEM files with CA certificates trusted besides the system's.
    pub ca_certs: Vec<PathBuf>,
}

/// When to contact the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Resolve tags at the registry every time.
    Always,
    /// Use the cache when it has the image; pull otherwise.
    #[default]
    Missing,
    /// Use the cache only.
    Never,
}

/// Proxies for reaching registries (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy URL for HTTPS registries.
    pub https: Option<String>,
    /// Proxy URL for plain-HTTP registries.
    pub http: Option<String>,
    /// Hosts to reach directly (the usual comma-separated `NO_PROXY` list).
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// From `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `NO_PROXY`/`no_proxy`.
    pub fn from_env() -> ProxySettings {
        let var = |upper: &str, lower: &str| {
            std::env::var(upper)
                .ok()
                .or_else(|| std::env::var(lower).ok())
                .filter(|v| !v.is_empty())
        };
        ProxySettings {
            https: var("HTTPS_PROXY", "https_proxy"),
            http: var("HTTP_PROXY", "http_proxy"),
            no_proxy: var("NO_PROXY", "no_proxy"),
        }
    }
}

/// How to pull.
#[derive(Clone)]
pub struct PullOptions<'a> {
    /// The cache directory; blobs go to `<cache_dir>/oci`.
    pub cache_dir: PathBuf,
    /// When to contact the registry.
    pub policy: PullPolicy,
    /// The platform to pull for.
    pub platform: Platform,
    /// `host[:port]` entries that may be spoken to over plain HTTP (loopback hosts always may).
    pub insecure: Vec<String>,
    /// `(registry, mirror)` pairs: pull from `mirror` what is named as being on `registry`.
    pub mirrors: Vec<(String, String)>,
    /// PEM files with CA certificates to trust besides the system's (for private registries).
    pub ca_certs: Vec<PathBuf>,
    /// Credentials for the registry contacted; when `None`, [`PullOptions::docker_config`] is consulted.
    pub credential: Option<Credential>,
    /// Docker's `config.json` to look credentials up in (`auths`), if any.
    pub docker_config: Option<PathBuf>,
    /// Proxies.
    pub proxy: ProxySettings,
    /// Told about downloads ([`Event`]s of blobs and layers, for a progress display); `None`: nobody.
    pub reporter: Option<&'a dyn Reporter>,
    /// Unpack the image while its layers download (see [`stream`]), into the cached root these settings name
    /// (the root a run with them uses); `None`: download only.
    pub unpack: Option<UnpackTarget>,
    /// What finishes the root a streaming pull builds before it is committed (see [`crate::rootfs::Finish`]); it
    /// is part of the root's name.
    pub finish: Option<&'a dyn crate::rootfs::Finish>,
    /// Deadlines and the minimum download rate (see [`TransferLimits`]); tests lower them.
    pub limits: TransferLimits,
}

/// The root a streaming pull builds: what [`crate::rootfs::root_key`] needs besides the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackTarget {
    /// The id-mapping mode of the runs that will use it.
    pub mode: crate::rootfs::idmap::IdMapMode,
    /// What the unpacker does with owners.
    pub ownership: crate::rootfs::unpack::Ownership,
}

impl std::fmt::Debug for PullOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("cache_dir", &self.cache_dir)
            .field("policy", &self.policy)
            .field("platform", &self.platform)
            .field("insecure", &self.insecure)
            .field("mirrors", &self.mirrors)
            .field("ca_certs", &self.ca_certs)
            .field("credential", &self.credential)
            .field("docker_config", &self.docker_config)
            .field("proxy", &self.proxy)
            .field("reporter", &self.reporter.map(|_| "<reporter>"))
            .field("unpack", &self.unpack)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PullOptions<'static> {
    /// Defaults: policy `Missing`, this machine's platform, no insecure registries, no mirrors, no credentials,
    /// no proxies.
    pub fn new(cache_dir: impl Into<PathBuf>) -> PullOptions<'static> {
        PullOptions {
            cache_dir: cache_dir.into(),
            policy: PullPolicy::Missing,
            platform: Platform::host(),
            insecure: Vec::new(),
            mirrors: Vec::new(),
            ca_certs: Vec::new(),
            credential: None,
            docker_config: None,
            proxy: ProxySettings::default(),
            reporter: None,
            unpack: None,
            finish: None,
            limits: TransferLimits::default(),
        }
    }

    /// [`PullOptions::new`] plus what the environment says: credentials from `THV_SANDBOX_REGISTRY_USER` /
    /// `THV_SANDBOX_REGISTRY_PASSWORD`, Docker's config file ([`default_docker_config`]), proxies.
    pub fn from_env(cache_dir: impl Into<PathBuf>) -> PullOptions<'static> {
        PullOptions {
            credential: Credential::from_env(),
            docker_config: default_docker_config(),
            proxy: ProxySettings::from_env(),
            ..PullOptions::new(cache_dir)
        }
    }
}

/// A pulled image, ready for [`OciLayout::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The reference asked for (normalized).
    pub reference: Reference,
    /// The platform manifest.
    pub manifest_digest: Digest,
    /// The index the reference resolved to, if it resolved to one.
    pub index_digest: Option<Digest>,
    /// The OCI layout holding the image: `<cache>/oci`.
    pub layout_dir: PathBuf,
    /// The image's name in that layout: the pinned `registry/repository@sha256:…` of what the reference resolved
    /// to. Pass it to [`OciLayout::resolve`] (or use [`Pulled::open`]).
    pub tag_ref: String,
    /// True when no registry was contacted.
    pub from_cache: bool,
    /// With [`PullPolicy::Always`]: the digest the cache had for the tag, when the tag now resolves to another.
    pub replaced: Option<Digest>,
    /// With [`PullOptions::unpack`]: whether this pull unpacked the root (while downloading); false when the root
    /// was there already, or nothing was unpacked.
    pub unpacked: bool,
}

impl Pulled {
    /// Open the layout and resolve the image for `platform`, checking it is the manifest that was pulled.
    pub fn open(&self, platform: &Platform) -> Result<(OciLayout, ResolvedImage), PullError> {
        let layout = OciLayout::open(&self.layout_dir)?;
        let image = layout.resolve(Some(&self.tag_ref), platform)?;
        if image.manifest_digest != self.manifest_digest {
            return Err(PullError::Internal(
                "the cache resolved the pinned name to another manifest",
            ));
        }
        Ok((layout, image))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which time limit of [`TransferLimits`] a transfer broke.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SlowReason {
    /// A document (or a config blob) was not whole by its deadline.
    #[error("did not arrive whole within {}", remote::show(*.limit))]
    Deadline {
        /// [`TransferLimits::document_deadline`].
        limit: std::time::Duration,
    },
    /// A blob averaged less than the minimum rate over a window.
    #[error("arrived at {rate:.0} bytes/s over {}, below the minimum of {min} bytes/s", remote::show(*.over))]
    BelowRate {
        /// Bytes per second over the window.
        rate: f64,
        /// How long the window was.
        over: std::time::Duration,
        /// [`TransferLimits::min_blob_rate`].
        min: u64,
    },
}

/// Everything a pull can fail with. I/O errors carry their path; registry errors the registry (or mirror) host.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The cache directory cannot be used.
    #[error("cannot use the cache directory {}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DirsError,
    },
    /// A file in the cache.
    #[error("cache: {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the cached image as a layout.
    #[error(transparent)]
    Cache(#[from] LayoutError),
    /// `--pull never`, and the cache does not have the image.
    #[error("{reference} is not in the cache, and pulling is off")]
    NotInCache {
        /// The reference.
        reference: String,
    },
    /// Docker's config file is malformed.
    #[error("cannot use the credentials in {}: {reason}", path.display())]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A Docker credential helper could not give the credentials.
    #[error("the credential helper {helper} failed for {registry}: {reason}")]
    CredentialHelper {
        /// The helper program.
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry could not be reached at all.
    #[error("cannot reach the OCI registry {registry} at {origin}")]
    Unreachable {
        /// The registry (or mirror).
        registry: String,
        /// `scheme://host` tried.
        origin: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The registry's TLS certificate is not trusted (or not valid for its name).
    #[error("the TLS certificate of the OCI registry {registry} ({origin}) is not trusted")]
    UntrustedCertificate {
        /// The registry (or mirror).
        registry: String,
        /// `https://host` tried.
        origin: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A CA certificate file cannot be used.
    #[error("cannot use the CA certificate file {}: {reason}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The connection failed during a transfer.
    #[error("the transfer from {registry} failed")]
    Transfer {
        /// The registry (or mirror).
        registry: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The connection broke in the middle of a blob (nothing of it is kept).
    #[error("the transfer of {what} from {registry} broke after {received} of {size} bytes (nothing of it was kept)")]
    TransferCut {
        /// The registry (or mirror).
        registry: String,
        /// Which blob: `layer sha256:…`.
        what: String,
        /// Bytes received before it broke.
        received: u64,
        /// The blob's size.
        size: u64,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The registry (or its token server) refused the credentials.
    #[error("the OCI registry {registry} refused the credentials of user `{username}` (wrong user name or password?)")]
    WrongCredentials {
        /// The registry (or mirror).
        registry: String,
        /// The user name tried.
        username: String,
        /// What the registry said.
        detail: String,
    },
    /// The token server did not exchange the identity token (an OAuth2 refresh token) for an access token.
    #[error("the OCI registry {registry} did not accept the identity token (OAuth2 refresh token): {detail}")]
    IdentityTokenRefused {
        /// The registry (or mirror).
        registry: String,
        /// What went wrong, or what the token server said.
        detail: String,
    },
    /// The registry's challenge sends clients to a token server that credentials must not go to.
    #[error("the OCI registry {registry} names the token server {realm}, which is not reached over HTTPS: the credentials were not sent there")]
    InsecureTokenServer {
        /// The registry (or mirror).
        registry: String,
        /// The token server (the challenge's realm).
        realm: String,
    },
    /// The token server gave no usable token.
    #[error("the token server {realm} of the OCI registry {registry} gave no token: {detail}")]
    TokenServer {
        /// The registry (or mirror).
        registry: String,
        /// The token server.
        realm: String,
        /// What was wrong with its answer.
        detail: String,
    },
    /// A document that did not arrive within its deadline, or a blob slower than the minimum rate.
    #[error("{what} from {registry} {reason}; gave up")]
    TooSlow {
        /// The registry (or mirror).
        registry: String,
        /// What was being fetched.
        what: String,
        /// Which limit it broke.
        reason: SlowReason,
    },
    /// Anonymous access was refused.
    #[error("the OCI registry {registry} wants credentials for {repository} (or the repository does not exist)")]
    AuthenticationRequired {
        /// The registry (or mirror).
        registry: String,
        /// The repository.
        repository: String,
    },
    /// The credentials are valid but do not allow pulling.
    #[error("the OCI registry {registry} denies pulling {repository}")]
    Denied {
        /// The registry (or mirror).
        registry: String,
        /// The repository.
        repository: String,
    },
    /// The registry has no such tag, digest or blob.
    #[error("not found in the OCI registry: {what}")]
    NotFound {
        /// The manifest (`registry/repository:tag`) or blob asked for.
        what: String,
    },
    /// Any other error status.
    #[error("the OCI registry {registry} answered HTTP {status} for {what}: {message}")]
    RegistryStatus {
        /// The registry (or mirror).
        registry: String,
        /// The HTTP status.
        status: u16,
        /// What was asked for.
        what: String,
        /// The start of the response body.
        message: String,
    },
    /// The HTTP client failed in some other way.
    #[error("talking to the OCI registry {registry} failed")]
    Client {
        /// The registry (or mirror).
        registry: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A manifest, index or config larger than its cap.
    #[error("{what} {name} is larger than {limit} bytes; refusing it")]
    TooLarge {
        /// "image manifest or index", "image config".
        what: &'static str,
        /// The reference or digest.
        name: String,
        /// The cap.
        limit: u64,
    },
    /// Content that does not match its digest or size; nothing of it was stored.
    #[error("the {what} the OCI registry sent does not match its digest")]
    Digest {
        /// "layer", "image config", "image manifest", "image index".
        what: &'static str,
        /// The mismatch.
        #[source]
        source: DigestError,
    },
    /// A document that is malformed or inconsistent.
    #[error("{what} {digest} is not valid: {reason}")]
    BadDocument {
        /// "image index", "image manifest", "image config".
        what: &'static str,
        /// The document.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// A media type thv-sandbox does not handle there.
    #[error("{role} {digest} has media type `{media_type}`: {reason}")]
    UnsupportedMediaType {
        /// "image manifest or index", "image config", "layer".
        role: &'static str,
        /// The media type.
        media_type: String,
        /// The blob.
        digest: Digest,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The index has nothing for this platform, or the image's config names another platform.
    #[error(transparent)]
    Platform(#[from] crate::image::layout::PlatformError),
    /// Indexes nested deeper than the layout reader follows.
    #[error("image index {digest} is nested more than {MAX_INDEX_DEPTH} levels deep")]
    NestingTooDeep {
        /// The index too deep.
        digest: Digest,
    },
    /// The image could not be unpacked while it was pulled (nothing was committed).
    #[error(transparent)]
    Unpack(Box<crate::rootfs::RootfsError>),
    /// A download stopped because another part of the pull failed (never the error reported).
    #[error("the download was stopped because another part of the pull failed")]
    Abandoned,
    /// The async runtime could not be created.
    #[error("cannot start the network runtime")]
    Runtime(#[source] std::io::Error),
    /// A bug: an internal invariant did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl PullError {
    /// What the user can do about it, if there is something.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            PullError::NotInCache { reference } => format!(
                "pull it first (`thv-sandbox pull {reference}`) or allow pulling with `--pull missing`"
            ),
            PullError::CacheDir { source, .. } => source.hint(),
            PullError::Unreachable { origin, .. } if origin.starts_with("https://") => {
                "check the OCI registry address and the network (HTTPS_PROXY / NO_PROXY); if the OCI registry serves \
                 plain HTTP, allow it with `--insecure-registry HOST[:PORT]`; images already in the cache run \
                 with `--pull never`"
                    .to_owned()
            }
            PullError::Unreachable { .. } => "check that the OCI registry is running and the address is right; \
                                              images already in the cache run with `--pull never`"
                .to_owned(),
            PullError::UntrustedCertificate { .. } => "if the OCI registry's certificate comes from a private CA, \
                trust that CA with `--ca-cert FILE` (PEM) or `ca_certs` in the configuration file; check that the \
                certificate names the host you use"
                .to_owned(),
            PullError::CaCert { .. } => "give a PEM file of CA certificates (`-----BEGIN CERTIFICATE-----`) to \
                `--ca-cert` / `ca_certs`"
                .to_owned(),
            PullError::CredentialHelper { helper, .. } => format!(
                "install {helper} where thv-sandbox finds it (on PATH) or fix it, or remove it from `credsStore` / \
                 `credHelpers` in Docker's config.json, or give the credentials with {ENV_USER} / {ENV_PASSWORD}"
            ),
            PullError::WrongCredentials { registry, .. } => format!(
                "check {ENV_USER} / {ENV_PASSWORD}, or the `auths` entry for {registry} in Docker's config.json"
            ),
            PullError::IdentityTokenRefused { registry, .. } => format!(
                "the token may have expired or been revoked: log in again (`docker login {registry}`), or fix the \
                 `identitytoken` in Docker's config.json / the credential helper's answer, or give a user name and \
                 password with {ENV_USER} / {ENV_PASSWORD}"
            ),
            PullError::InsecureTokenServer { .. } => "registry credentials go only to token servers reached over \
                HTTPS, or over plain HTTP when both the OCI registry and the token server are loopback hosts or allowed \
                with `--insecure-registry HOST[:PORT]` (see SECURITY.md, \"Registry credentials\"); ask the OCI registry's \
                operator to serve the token server over HTTPS, or pull anonymously"
                .to_owned(),
            PullError::TooSlow { .. } => "the OCI registry, a proxy or the network is stalled or very slow; try again \
                                          later"
                .to_owned(),
            PullError::AuthenticationRequired { registry, .. } => format!(
                "check the image name; for a private image set {ENV_USER} and {ENV_PASSWORD}, or log in with \
                 `docker login {registry}`"
            ),
            PullError::NotFound { .. } => "check the image name and tag".to_owned(),
            PullError::Digest { .. } => "nothing was stored; the OCI registry, a mirror or a proxy on the way served \
                                         wrong content. Try again; if it persists, tell the OCI registry's operator"
                .to_owned(),
            PullError::Platform(_) => {
                "this image is not built for this machine; use an image built for it".to_owned()
            }
            PullError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                crate::chain::CACHE_VANISHED_HINT.to_owned()
            }
            PullError::Unpack(e) => return e.hint(),
            PullError::UnsupportedMediaType { role: "layer", .. } => {
                "rebuild or re-push the image with gzip- or zstd-compressed (or uncompressed) tar layers".to_owned()
            }
            _ => return None,
        })
    }
}

/// Pull `reference` into the cache (or find it there), following `opts.policy`, without verification:
/// [`resolve`], [`Resolved::fetch_and_unpack`] and [`Fetched::commit`] back to back. See the module documentation
/// for the steps and their order.
pub fn pull(reference: &Reference, opts: &PullOptions<'_>) -> Result<Pulled, PullError> {
    resolve(reference, opts)?.fetch_and_unpack(opts)?.commit()
}

/// Step 1: the image `reference` names, from the cache when `opts.policy` allows and it is there completely, else
/// from the registry. Manifest and config are fetched and checked; no layer is fetched.
pub fn resolve(reference: &Reference, opts: &PullOptions<'_>) -> Result<Resolved, PullError> {
    let store = Store::open(&opts.cache_dir)?;
    let cached = store.find(&reference.cache_name())?;
    let cache_first = opts.policy != PullPolicy::Always || reference.digest().is_some();
    if cache_first {
        if let Some(entry) = &cached {
            if let Some(resolved) = from_cache(store.clone(), reference, entry, opts)? {
                return Ok(resolved);
            }
        }
        if opts.policy == PullPolicy::Never {
            return Err(PullError::NotInCache {
                reference: reference.to_string(),
            });
        }
    }
    at_registry(store, reference, opts, cached)
}

/// Step 1 at the registry, whatever the cache holds (its blobs are not downloaded again): for a cached image whose
/// provenance evidence is not on hand, so that it can be found. With [`PullPolicy::Never`] it is [`resolve`].
pub fn resolve_at_registry(
    reference: &Reference,
    opts: &PullOptions<'_>,
) -> Result<Resolved, PullError> {
    if opts.policy == PullPolicy::Never {
        return resolve(reference, opts);
    }
    let store = Store::open(&opts.cache_dir)?;
    let cached = store.find(&reference.cache_name())?;
    at_registry(store, reference, opts, cached)
}

fn at_registry(
    store: Store,
    reference: &Reference,
    opts: &PullOptions<'_>,
    cached: Option<Descriptor>,
) -> Result<Resolved, PullError> {
    let cached_digest = cached
        .as_ref()
        .and_then(|entry| Digest::try_from(entry.digest()).ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    let prepared = runtime.block_on(from_registry(&store, reference, opts, cached_digest))?;
    Ok(Resolved {
        reference: reference.clone(),
        index_digest: prepared.index_digest.clone(),
        manifest_digest: prepared.manifest_digest.clone(),
        manifest: prepared.manifest.clone(),
        config_digest: prepared.config_digest.clone(),
        config: prepared.config.clone(),
        from_cache: false,
        replaced: prepared.replaced.clone(),
        store,
        origin: Origin::Registry {
            runtime: Box::new(runtime),
            prepared: Box::new(prepared),
        },
    })
}

/// An image resolved to its platform manifest (step 1): what identifies it, checked, before any layer is fetched.
/// The later steps use these digests only: the tag is not resolved again.
pub struct Resolved {
    /// The reference asked for (normalized).
    pub reference: Reference,
    /// The index the reference resolved to, if it resolved to one.
    pub index_digest: Option<Digest>,
    /// The platform manifest.
    pub manifest_digest: Digest,
    /// The manifest, parsed and checked.
    pub manifest: ImageManifest,
    /// The config blob.
    pub config_digest: Digest,
    /// The config, parsed and checked.
    pub config: ImageConfiguration,
    /// True when no registry was contacted.
    pub from_cache: bool,
    /// With [`PullPolicy::Always`]: the digest the cache had for the tag, when the tag now resolves to another.
    pub replaced: Option<Digest>,
    store: Store,
    origin: Origin,
}

/// Where a resolved image comes from, and what the later steps need of it.
#[allow(clippy::large_enum_variant)] // one per pull, moved a few times
enum Origin {
    /// Complete in the cache under `entry`.
    Cache { entry: Descriptor },
    /// At the registry: the connection (on its runtime) and the documents.
    Registry {
        runtime: Box<tokio::runtime::Runtime>,
        prepared: Box<Prepared>,
    },
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("reference", &self.reference)
            .field("index_digest", &self.index_digest)
            .field("manifest_digest", &self.manifest_digest)
            .field("config_digest", &self.config_digest)
            .field("from_cache", &self.from_cache)
            .field("replaced", &self.replaced)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// The registry connection of step 1 and the runtime it runs on; `None` for an image taken from the cache (no
    /// registry was contacted). Step 2 discovers evidence through it ([`crate::trust::evidence::discover_for`]).
    pub(crate) fn connection(&self) -> Option<(&tokio::runtime::Runtime, &remote::Remote)> {
        match &self.origin {
            Origin::Registry { runtime, prepared } => Some((runtime, &prepared.remote)),
            Origin::Cache { .. } => None,
        }
    }

    /// The digests provenance evidence may be attached to: the index's (if the reference named one), then the
    /// platform manifest's.
    pub fn subject_digests(&self) -> Vec<&Digest> {
        let mut digests: Vec<&Digest> = self.index_digest.iter().collect();
        digests.push(&self.manifest_digest);
        digests
    }

    /// Step 4: the layers, fetched by digest (a few at once), and with [`PullOptions::unpack`] unpacked while they
    /// stream. Nothing names the image yet: [`Fetched::commit`] does. An image taken from the cache has its layers
    /// already (and its root is made by [`crate::rootfs::ensure`]).
    pub fn fetch_and_unpack(self, opts: &PullOptions<'_>) -> Result<Fetched, PullError> {
        let unpacked = match &self.origin {
            Origin::Cache { .. } => false,
            Origin::Registry { runtime, prepared } => match opts.unpack {
                Some(target) => fetch_streaming(runtime, &self.store, prepared, target, opts)?,
                None => {
                    runtime.block_on(fetch_layers(
                        &prepared.remote,
                        &self.store,
                        &prepared.layers,
                        opts.reporter,
                        None,
                    ))?;
                    false
                }
            },
        };
        Ok(Fetched {
            resolved: self,
            unpacked,
        })
    }
}

/// An image whose layers are all in the cache (step 4), not yet named there.
#[derive(Debug)]
pub struct Fetched {
    resolved: Resolved,
    /// Whether step 4 unpacked the root (while downloading); false when the root was there already, or nothing
    /// was unpacked.
    pub unpacked: bool,
}

impl Fetched {
    /// Step 5: only now does anything name the image.
    pub fn commit(self) -> Result<Pulled, PullError> {
        let Fetched { resolved, unpacked } = self;
        let Resolved {
            reference,
            index_digest,
            manifest_digest,
            from_cache,
            replaced,
            store,
            origin,
            ..
        } = resolved;
        let (entry, top_digest) = match origin {
            Origin::Cache { entry } => {
                let top = Digest::try_from(entry.digest())
                    .map_err(|_| PullError::Internal("a cached entry without a sha256 digest"))?;
                let pinned = reference.pinned(&top);
                if store.find(&pinned)?.is_none() {
                    store.record(std::slice::from_ref(&pinned), &entry)?;
                }
                tracing::debug!("{reference}: using {manifest_digest} from the cache");
                return Ok(Pulled {
                    reference,
                    manifest_digest,
                    index_digest,
                    layout_dir: store.dir().to_owned(),
                    tag_ref: pinned,
                    from_cache,
                    replaced,
                    unpacked,
                });
            }
            Origin::Registry { prepared, .. } => (prepared.top, prepared.top_digest),
        };
        let pinned = reference.pinned(&top_digest);
        let mut names = vec![pinned.clone()];
        if reference.digest().is_none() {
            names.push(reference.cache_name());
        }
        let mut entry = entry;
        entry.set_annotations(Some(
            [(ANNOTATION_PINNED.to_owned(), pinned.clone())]
                .into_iter()
                .collect(),
        ));
        store.record(&names, &entry)?;
        tracing::info!("pulled {reference} ({manifest_digest})");
        Ok(Pulled {
            reference,
            manifest_digest,
            index_digest,
            layout_dir: store.dir().to_owned(),
            tag_ref: pinned,
            from_cache: false,
            replaced,
            unpacked,
        })
    }
}

/// Everything known once the documents are checked, before any layer is fetched.
struct Prepared {
    remote: Remote,
    top: Descriptor,
    top_digest: Digest,
    index_digest: Option<Digest>,
    manifest_digest: Digest,
    manifest: ImageManifest,
    config_digest: Digest,
    config: ImageConfiguration,
    layers: Vec<LayerBlob>,
    replaced: Option<Digest>,
}

/// Step 4 streamed: the layers download (a few at once) while one thread applies them in order to a staging
/// root, which is committed only when every blob matched its digest and every layer its diff_id. When the root
/// is there already (or another pull builds it meanwhile: its lock is waited for), the layers are only downloaded.
/// Returns whether this pull unpacked the root.
fn fetch_streaming(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    prepared: &Prepared,
    target: UnpackTarget,
    opts: &PullOptions<'_>,
) -> Result<bool, PullError> {
    let unpack_error = |e| PullError::Unpack(Box::new(e));
    let image_runtime = crate::image::config::ImageRuntimeConfig::from_image(&prepared.config);
    let key = crate::rootfs::root_key_with(
        &prepared.manifest_digest,
        target.mode,
        target.ownership,
        opts.finish,
    );
    let download_only = || {
        runtime.block_on(fetch_layers(
            &prepared.remote,
            store,
            &prepared.layers,
            opts.reporter,
            None,
        ))
    };
    if crate::rootfs::load_root(&opts.cache_dir, &key, &image_runtime)
        .map_err(unpack_error)?
        .is_some()
    {
        download_only()?;
        return Ok(false);
    }
    // One unpack per root: a concurrent first pull waits here, then finds the root (and the blobs) in place.
    let _lock = crate::rootfs::lock_root(&opts.cache_dir, &key).map_err(unpack_error)?;
    if crate::rootfs::load_root(&opts.cache_dir, &key, &image_runtime)
        .map_err(unpack_error)?
        .is_some()
    {
        download_only()?;
        return Ok(false);
    }
    let layer_refs = stream::layer_refs(
        &prepared.manifest,
        &prepared.config,
        &prepared.manifest_digest,
    )?;
    let feed = stream::Feed::new(layer_refs.len());
    let layout = OciLayout::open(store.dir())?;
    let cache_dir = opts.cache_dir.as_path();
    let reporter = opts.reporter;
    let (downloaded, built) = std::thread::scope(|s| {
        let unpacker = s.spawn(|| {
            let mut source = stream::Streamed {
                feed: &feed,
                layout,
                reporter,
                total: layer_refs.len(),
            };
            let built = crate::rootfs::build_locked(
                cache_dir,
                &key,
                &prepared.manifest_digest,
                &layer_refs,
                &image_runtime,
                target.ownership,
                &mut source,
                opts.finish,
            );
            if let Err(e) = &built {
                let failed_at = match e {
                    crate::rootfs::RootfsError::Unpack { digest, .. }
                    | crate::rootfs::RootfsError::DiffIdMismatch { digest, .. }
                    | crate::rootfs::RootfsError::Download { digest } => {
                        layer_refs.iter().position(|l| &l.digest == digest)
                    }
                    _ => None,
                };
                source.abandon(failed_at);
            }
            built
        });
        let downloaded = runtime.block_on(fetch_layers(
            &prepared.remote,
            store,
            &prepared.layers,
            opts.reporter,
            Some(&feed),
        ));
        feed.close();
        (downloaded, unpacker.join())
    });
    // A download's own failure (a digest mismatch, a cut) is the cause to report; then the unpacker's (downloads it
    // stopped are not a cause).
    match (downloaded, built) {
        (Err(e), _) if !matches!(e, PullError::Abandoned) => Err(e),
        (_, Err(_)) => Err(PullError::Internal("the unpacking thread panicked")),
        (_, Ok(Err(e))) => Err(unpack_error(match OciLayout::open(store.dir()) {
            // A blob that was in the cache already and failed to unpack: removed if it was damaged.
            Ok(layout) => crate::rootfs::discard_damaged_blob(cache_dir, &layout, &layer_refs, e),
            Err(_) => e,
        })),
        (Err(e), Ok(Ok(_))) => Err(e),
        (Ok(()), Ok(Ok(root))) => {
            tracing::debug!("{key}: unpacked while pulling ({})", root.path.display());
            Ok(true)
        }
    }
}

/// The image named `entry` in the cache, if every blob it needs is there.
fn from_cache(
    store: Store,
    reference: &Reference,
    entry: &Descriptor,
    opts: &PullOptions<'_>,
) -> Result<Option<Resolved>, PullError> {
    if Digest::try_from(entry.digest()).is_err() {
        return Ok(None);
    }
    let layout = OciLayout::open(store.dir())?;
    let image = match layout.resolve(Some(&reference.cache_name()), &opts.platform) {
        Ok(image) => image,
        // Pulled for another platform, or a blob went missing: pull again.
        Err(LayoutError::BlobMissing { .. } | LayoutError::Platform(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for layer in &image.layers {
        if !store.has_blob(&layer.digest, layer.size)? {
            return Ok(None);
        }
    }
    Ok(Some(Resolved {
        reference: reference.clone(),
        index_digest: image.index_digest,
        manifest_digest: image.manifest_digest,
        manifest: image.manifest,
        config_digest: image.config_digest,
        config: image.config,
        from_cache: true,
        replaced: None,
        store,
        origin: Origin::Cache {
            entry: entry.clone(),
        },
    }))
}

/// Check fetched bytes against the digest they were asked by (or, for a tag, take their digest), and against
/// the digest the registry claims in `Docker-Content-Digest`.
fn check_fetched(
    fetched: &remote::FetchedDocument,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
    what: &'static str,
) -> Result<Digest, PullError> {
    let actual = Digest::of_bytes(&fetched.body);
    let mismatch = |expected: &Digest| PullError::Digest {
        what,
        source: DigestError::Mismatch {
            expected: expected.clone(),
            actual: actual.clone(),
        },
    };
    if let Some(expected) = expected {
        if *expected != actual {
            return Err(mismatch(expected));
        }
        if let Some(size) = expected_size {
            if size != fetched.body.len() as u64 {
                return Err(PullError::Digest {
                    what,
                    source: DigestError::SizeMismatch {
                        digest: expected.clone(),
                        expected: size,
                        actual: fetched.body.len() as u64,
                    },
                });
            }
        }
    }
    if let Some(claimed) = fetched
        .digest_header
        .as_deref()
        .and_then(|h| h.parse::<Digest>().ok())
    {
        if claimed != actual {
            return Err(mismatch(&claimed));
        }
    }
    Ok(actual)
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor, PullError> {
    let oci_digest: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .map_err(|_| PullError::Internal("a sha256 digest oci-spec does not accept"))?;
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(oci_digest)
        .size(size)
        .build()
        .map_err(|_| PullError::Internal("cannot build a descriptor"))
}

async fn from_registry(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions<'_>,
    cached_digest: Option<Digest>,
) -> Result<Prepared, PullError> {
    store.remove_abandoned();
    let remote = Remote::connect(reference, opts).await?;

    // Resolve: the top document, by digest if pinned, else by tag; its sha256 is the pinned digest.
    let asked = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let fetched = remote.fetch_manifest(&asked, MAX_MANIFEST_SIZE).await?;
    let top_digest = check_fetched(
        &fetched,
        reference.digest(),
        None,
        "image manifest or index",
    )?;
    let (mut kind, mut media_type) =
        document::classify(&fetched.body, fetched.content_type.as_deref(), &top_digest)?;
    let top = descriptor(&media_type, &top_digest, fetched.body.len() as u64)?;
    let replaced = cached_digest.filter(|old| *old != top_digest);
    if let Some(old) = &replaced {
        tracing::warn!(
            "{} now resolves to {top_digest}; the cache had {old}",
            reference.cache_name()
        );
    }
    store.put_blob(&top_digest, &fetched.body)?;

    // Then the manifest: descend indexes by platform, by digest only.
    let index_digest = (kind == Kind::Index).then(|| top_digest.clone());
    let mut digest = top_digest.clone();
    let mut body = fetched.body;
    let mut depth = 0;
    while kind == Kind::Index {
        if depth == MAX_INDEX_DEPTH {
            return Err(PullError::NestingTooDeep { digest });
        }
        depth += 1;
        let index = document::parse_index(&body, &digest)?;
        let entry = document::choose_platform(&index, &opts.platform, &digest)?;
        let entry_digest = document::digest_of(entry, &digest)?;
        if entry.size() > MAX_MANIFEST_SIZE {
            return Err(PullError::TooLarge {
                what: "image manifest or index",
                name: entry_digest.to_string(),
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let fetched = remote
            .fetch_manifest(&entry_digest.to_string(), entry.size())
            .await?;
        check_fetched(
            &fetched,
            Some(&entry_digest),
            Some(entry.size()),
            "image manifest",
        )?;
        let declared = entry.media_type().to_string();
        let (next_kind, next_type) =
            document::classify(&fetched.body, Some(&declared), &entry_digest)?;
        if next_type != declared {
            return Err(PullError::BadDocument {
                what: "image manifest",
                digest: entry_digest,
                reason: format!("its index entry says `{declared}`, the document `{next_type}`"),
            });
        }
        store.put_blob(&entry_digest, &fetched.body)?;
        (kind, media_type, digest, body) = (next_kind, next_type, entry_digest, fetched.body);
    }
    let manifest_digest = digest;
    let manifest = document::parse_manifest(&body, &manifest_digest)?;
    tracing::debug!("{reference}: manifest {manifest_digest} ({media_type})");

    let config_blob = document::config_blob(&manifest, &manifest_digest)?;
    if config_blob.size > MAX_CONFIG_SIZE {
        return Err(PullError::TooLarge {
            what: "image config",
            name: config_blob.digest.to_string(),
            limit: MAX_CONFIG_SIZE,
        });
    }
    remote
        .fetch_blob(store, &config_blob, "image config", opts.reporter)
        .await?;
    let config_bytes = store.read_blob(&config_blob.digest, config_blob.size)?;
    let (config, layers) = document::check_image(
        &manifest,
        &manifest_digest,
        &config_bytes,
        &config_blob.digest,
        &opts.platform,
    )?;

    Ok(Prepared {
        remote,
        top,
        top_digest,
        index_digest,
        manifest_digest,
        manifest,
        config_digest: config_blob.digest.clone(),
        config,
        layers,
        replaced,
    })
}

/// Step 4: the layers, a few at once, base layer first. Without `feed`, the first failure stops the others (their
/// temporary files go with them). With it, every download tells the feed how it goes, and ends (they stop early
/// when the feed says so); the error returned is then the first that was not [`PullError::Abandoned`].
async fn fetch_layers(
    remote: &Remote,
    store: &Store,
    layers: &[LayerBlob],
    reporter: Option<&dyn Reporter>,
    feed: Option<&stream::Feed>,
) -> Result<(), PullError> {
    let Some(feed) = feed else {
        return futures_util::stream::iter(layers.iter())
            .map(|layer| remote.fetch_blob(store, layer, "layer", reporter))
            .buffer_unordered(MAX_PARALLEL_BLOBS)
            .try_for_each(|_| async { Ok(()) })
            .await;
    };
    let results: Vec<Result<bool, PullError>> =
        futures_util::stream::iter(layers.iter().enumerate())
            .map(|(i, layer)| {
                remote.fetch_blob_feeding(store, layer, "layer", reporter, Some((feed, i)))
            })
            .buffer_unordered(MAX_PARALLEL_BLOBS)
            .collect()
            .await;
    let mut abandoned = false;
    for result in results {
        match result {
            Ok(_) => {}
            Err(PullError::Abandoned) => abandoned = true,
            Err(e) => return Err(e),
        }
    }
    if abandoned {
        return Err(PullError::Abandoned);
    }
    Ok(())
}

/// The cache's layout directory for a cache directory (`<cache>/oci`).
pub fn layout_dir(cache_dir: &Path) -> PathBuf {
    Store::layout_dir(cache_dir)
}
