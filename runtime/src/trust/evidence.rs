//! Discovery of provenance evidence for an image digest, through the registry connection of the pull.
//!
//! For each digest (the index the reference resolved to, and the platform manifest) these are looked at, in this
//! order; everything found is kept, and any one item that verifies and satisfies the policy is enough:
//! 1. cosign signatures: tag `sha256-HEX.sig`, layers `application/vnd.dev.cosign.simplesigning.v1+json` (the
//!    payload, with signature, certificate and Rekor SET in annotations). The payload's
//!    `critical.image.docker-manifest-digest` binds it to an image; verification checks it equals the digest.
//! 2. cosign attestations: tag `sha256-HEX.att`, DSSE envelope layers `application/vnd.dsse.envelope.v1+json`.
//! 3. Sigstore bundles as OCI referrers: `GET /v2/NAME/referrers/DIGEST`; a registry without the referrers API
//!    (404, 400, 405, 406) is asked for the tag-schema index `sha256-HEX` instead. A manifest whose artifactType
//!    (or, for GHCR, which reports `application/vnd.oci.empty.v1+json` in the index, whose layer) is a bundle
//!    media type contributes its bundle layer.
//! 4. GitHub's attestations API, when configured: `GET BASE/repos/OWNER/REPO/attestations/DIGEST`, whose
//!    attestations carry the bundle inline (`bundle`) or by URL (`bundle_url`, snappy-compressed or plain JSON).
//!
//! Documents are bounded (manifests by [`MAX_MANIFEST_SIZE`], evidence blobs by [`MAX_EVIDENCE_BLOB`] and by their
//! descriptor's size) and blobs are checked against their digests. One discovery (all digests, all sources) is
//! bounded as a whole too: at most [`MAX_ITEMS_PER_SOURCE`] items from a source and [`MAX_ITEMS`] in all, each blob
//! fetched once, at most [`MAX_EVIDENCE_BYTES`] of evidence blobs read, at most [`MAX_CANDIDATES`] referrers
//! examined per index, [`MAX_PROBLEMS`] problems kept, and it stops after
//! [`crate::distribution::TransferLimits::discovery_deadline`]. Network and format problems are collected, not
//! fatal: missing evidence is decided by verification, which says where it looked.

use serde::{Deserialize, Serialize};

use crate::distribution::remote::Remote;
use crate::distribution::PullError;
use crate::image::digest::Digest;
use crate::image::document::{OCI_EMPTY, OCI_INDEX};
use crate::image::layout::MAX_MANIFEST_SIZE;

/// The largest evidence blob (bundle, payload, envelope) read.
pub const MAX_EVIDENCE_BLOB: u64 = 4 << 20;
/// At most this many items are taken from one source.
pub const MAX_ITEMS_PER_SOURCE: usize = 16;
/// At most this many items in one discovery.
pub const MAX_ITEMS: usize = 32;
/// At most this many bytes of evidence blobs are read in one discovery.
pub const MAX_EVIDENCE_BYTES: u64 = 32 << 20;
/// At most this many referrers of one index are examined (their manifests fetched).
pub const MAX_CANDIDATES: usize = 64;
/// At most this many problems are kept (the rest are counted).
pub const MAX_PROBLEMS: usize = 16;

/// Sigstore bundle media types seen as referrer artifact types and layer types.
pub const BUNDLE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// What a manifest request here accepts: the types of [`crate::image::document`], spelled out (a `const` cannot
/// join them).
const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                               application/vnd.docker.distribution.manifest.v2+json";

/// Where else to look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// GitHub's API base URL (`https://api.github.com`); `None` does not ask GitHub.
    pub github_api: Option<String>,
    /// The repository (`owner/repo`) whose attestations to ask for.
    pub github_repository: Option<String>,
    /// A token for the API (private repositories), sent only to `github_api`.
    pub github_token: Option<String>,
}

/// Everything found for an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The items.
    pub items: Vec<Item>,
    /// Where it was looked for (for "no evidence" messages).
    pub searched: Vec<String>,
    /// What went wrong while looking.
    pub problems: Vec<String>,
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The digest it was found for (the index or the platform manifest).
    pub subject: Digest,
    /// Where it came from, e.g. `tag sha256-….sig`, `referrer sha256:…`, `GitHub attestations API`.
    pub source: String,
    /// What it is.
    pub content: ItemContent,
}

/// The forms evidence comes in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ItemContent {
    /// A Sigstore bundle (JSON).
    Bundle {
        /// The bundle document.
        json: String,
    },
    /// A cosign signature or attestation layer.
    Cosign {
        /// The layer blob: a simple-signing payload, or a DSSE envelope when `dsse`.
        payload: String,
        /// `dev.cosignproject.cosign/signature`.
        signature: String,
        /// `dev.sigstore.cosign/certificate`.
        certificate: Option<String>,
        /// `dev.sigstore.cosign/bundle`.
        rekor_bundle: Option<String>,
        /// `dev.sigstore.cosign/rfc3161timestamp`.
        rfc3161_timestamp: Option<String>,
        /// An attestation (`.att`) rather than a signature (`.sig`).
        dsse: bool,
    },
}

/// Looks for evidence of `digests` in `reference`'s repository, connecting as a pull with `pull` would
/// (credentials, mirrors, proxies, plain HTTP for loopback). Creates its own runtime: not for async callers.
pub fn discover_blocking(
    reference: &crate::image::reference::Reference,
    digests: &[Digest],
    pull: &crate::distribution::PullOptions<'_>,
    opts: &DiscoveryOptions,
) -> Result<Evidence, PullError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PullError::Runtime)?;
    runtime.block_on(async {
        let remote = Remote::connect(reference, pull).await?;
        let digests: Vec<&Digest> = digests.iter().collect();
        Ok(discover(&remote, &digests, opts).await)
    })
}

/// Step 2 of the pipeline: the provenance evidence for the index and the manifest of `resolved`, found through
/// the registry connection of step 1. `None` for an image taken from the cache (no registry was contacted).
pub fn discover_for(
    resolved: &crate::distribution::Resolved,
    opts: &DiscoveryOptions,
) -> Option<Evidence> {
    let (runtime, remote) = resolved.connection()?;
    Some(runtime.block_on(discover(remote, &resolved.subject_digests(), opts)))
}

/// Looks for evidence of every digest in `digests`, within the bounds of the module documentation.
pub(crate) async fn discover(
    remote: &Remote,
    digests: &[&Digest],
    opts: &DiscoveryOptions,
) -> Evidence {
    let mut st = State::default();
    let budget = remote.limits().discovery_deadline;
    if tokio::time::timeout(budget, discover_all(remote, digests, opts, &mut st))
        .await
        .is_err()
    {
        st.problem(format!(
            "evidence discovery stopped after {}: the OCI registry is too slow",
            crate::distribution::remote::show(budget)
        ));
    }
    if st.dropped > 0 {
        st.ev
            .problems
            .push(format!("… and {} more problems", st.dropped));
    }
    st.ev
}

/// What one discovery found, and what it has spent.
#[derive(Default)]
struct State {
    ev: Evidence,
    /// Blob digests already taken.
    seen: std::collections::HashSet<String>,
    /// Bytes of evidence blobs read.
    bytes: u64,
    /// Problems not kept.
    dropped: usize,
}

impl State {
    fn problem(&mut self, p: String) {
        if self.ev.problems.len() < MAX_PROBLEMS {
            self.ev.problems.push(p);
        } else {
            self.dropped += 1;
        }
    }

    fn full(&self) -> bool {
        self.ev.items.len() >= MAX_ITEMS
    }
}

async fn discover_all(
    remote: &Remote,
    digests: &[&Digest],
    opts: &DiscoveryOptions,
    st: &mut State,
) {
    for digest in digests {
        let tag = format!("sha256-{}", digest.hex());
        for (suffix, dsse) in [(".sig", false), (".att", true)] {
            let t = format!("{tag}{suffix}");
            st.ev.searched.push(format!("tag {t}"));
            if let Err(e) = cosign_tag(remote, digest, &t, dsse, st).await {
                st.problem(format!("tag {t}: {e}"));
            }
        }
        st.ev.searched.push(format!("referrers of {digest}"));
        if let Err(e) = referrers(remote, digest, &tag, st).await {
            st.problem(format!("referrers of {digest}: {e}"));
        }
        if let (Some(api), Some(repo)) = (&opts.github_api, &opts.github_repository) {
            let url = format!(
                "{}/repos/{repo}/attestations/{digest}",
                api.trim_end_matches('/')
            );
            st.ev
                .searched
                .push(format!("GitHub attestations API ({url})"));
            if let Err(e) = github(remote, digest, &url, opts, st).await {
                st.problem(format!("{url}: {e}"));
            }
        }
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default, rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
struct Desc {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default, rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Why one source could not be read to its end: kept among [`Evidence::problems`], and discovery goes on.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    /// The registry (or GitHub) request failed.
    #[error("{}", crate::chain::one_line(.0))]
    Fetch(PullError),
    /// A descriptor claims a blob larger than [`MAX_EVIDENCE_BLOB`].
    #[error("blob {digest} is larger than {MAX_EVIDENCE_BLOB} bytes")]
    BlobTooLarge {
        /// The blob, as the descriptor names it.
        digest: String,
    },
    /// A descriptor's digest is not a sha256 digest.
    #[error("`{digest}` is not a sha256 digest")]
    NotADigest {
        /// What the descriptor says.
        digest: String,
    },
    /// Reading the blob would pass [`MAX_EVIDENCE_BYTES`].
    #[error(
        "evidence read reached its bound of {} MiB for this image; blob {digest} was not read",
        MAX_EVIDENCE_BYTES >> 20
    )]
    BlobOverBudget {
        /// The blob left unread.
        digest: Digest,
    },
    /// GitHub's answers passed [`MAX_EVIDENCE_BYTES`].
    #[error("evidence read reached its bound of {} MiB for this image", MAX_EVIDENCE_BYTES >> 20)]
    OverBudget,
    /// A blob that should be a document is not UTF-8.
    #[error("blob {digest} is not UTF-8 text")]
    NotText {
        /// The blob.
        digest: Digest,
    },
    /// The `.sig`/`.att` tag names something that is not a manifest.
    #[error("not a manifest: {0}")]
    NotManifest(serde_json::Error),
    /// The referrers answer (or tag-schema index) is not an image index.
    #[error("the referrers index is not an index: {0}")]
    NotIndex(serde_json::Error),
    /// A referrer manifest's bytes do not hash to the digest the index gives.
    #[error("referrer manifest {digest} does not match its digest")]
    ReferrerDigest {
        /// The digest in the index.
        digest: String,
    },
    /// A referrer is not a manifest.
    #[error("referrer {digest} is not a manifest: {error}")]
    ReferrerNotManifest {
        /// The referrer.
        digest: String,
        /// The parse error.
        error: serde_json::Error,
    },
    /// GitHub's attestations API answered with something other than JSON.
    #[error("the answer is not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// A blob as text: `Ok(None)` when the registry does not have it, or it was taken already (each blob once).
async fn blob_text(
    remote: &Remote,
    d: &Desc,
    st: &mut State,
) -> Result<Option<String>, SourceError> {
    if d.size > MAX_EVIDENCE_BLOB {
        return Err(SourceError::BlobTooLarge {
            digest: d.digest.clone(),
        });
    }
    let digest: Digest = d.digest.parse().map_err(|_| SourceError::NotADigest {
        digest: d.digest.clone(),
    })?;
    if !st.seen.insert(digest.to_string()) {
        return Ok(None);
    }
    // The descriptor's size bounds the read (a blob is exactly that long); without one, the cap.
    let limit = if d.size == 0 {
        MAX_EVIDENCE_BLOB
    } else {
        d.size
    };
    if st.bytes + limit > MAX_EVIDENCE_BYTES {
        return Err(SourceError::BlobOverBudget { digest });
    }
    let Some(bytes) = remote
        .fetch_small_blob(&digest, limit)
        .await
        .map_err(SourceError::Fetch)?
    else {
        return Ok(None);
    };
    st.bytes += bytes.len() as u64;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| SourceError::NotText { digest })
}

async fn cosign_tag(
    remote: &Remote,
    subject: &Digest,
    tag: &str,
    dsse: bool,
    st: &mut State,
) -> Result<(), SourceError> {
    if st.full() {
        return Ok(());
    }
    let Some(fetched) = remote
        .get_v2(
            &format!("manifests/{tag}"),
            MANIFEST_ACCEPT,
            MAX_MANIFEST_SIZE,
        )
        .await
        .map_err(SourceError::Fetch)?
    else {
        return Ok(());
    };
    let doc: Doc = serde_json::from_slice(&fetched.body).map_err(SourceError::NotManifest)?;
    let want = if dsse { DSSE_ENVELOPE } else { SIMPLESIGNING };
    for layer in doc
        .layers
        .iter()
        .filter(|l| l.media_type == want)
        .take(MAX_ITEMS_PER_SOURCE)
    {
        if st.full() {
            break;
        }
        let Some(payload) = blob_text(remote, layer, st).await? else {
            continue;
        };
        let a = |k: &str| layer.annotations.get(k).cloned();
        st.ev.items.push(Item {
            subject: subject.clone(),
            source: format!("tag {tag}"),
            content: ItemContent::Cosign {
                payload,
                signature: a("dev.cosignproject.cosign/signature").unwrap_or_default(),
                certificate: a("dev.sigstore.cosign/certificate"),
                rekor_bundle: a("dev.sigstore.cosign/bundle"),
                rfc3161_timestamp: a("dev.sigstore.cosign/rfc3161timestamp"),
                dsse,
            },
        });
    }
    Ok(())
}

fn is_bundle_type(t: Option<&str>) -> bool {
    t.is_some_and(|t| BUNDLE_MEDIA_TYPES.contains(&t))
}

async fn referrers(
    remote: &Remote,
    subject: &Digest,
    tag: &str,
    st: &mut State,
) -> Result<(), SourceError> {
    if st.full() {
        return Ok(());
    }
    let index = match remote
        .get_v2(
            &format!("referrers/{subject}"),
            OCI_INDEX,
            MAX_MANIFEST_SIZE,
        )
        .await
        .map_err(SourceError::Fetch)?
    {
        Some(f) => f,
        None => {
            // No referrers API: the tag schema.
            st.ev.searched.push(format!("tag {tag}"));
            match remote
                .get_v2(&format!("manifests/{tag}"), OCI_INDEX, MAX_MANIFEST_SIZE)
                .await
                .map_err(SourceError::Fetch)?
            {
                Some(f) => f,
                None => return Ok(()),
            }
        }
    };
    let doc: Doc = serde_json::from_slice(&index.body).map_err(SourceError::NotIndex)?;
    let candidates: Vec<&Desc> = doc
        .manifests
        .iter()
        .filter(|m| {
            let t = m.artifact_type.as_deref();
            // GHCR lists referrers with the empty artifact type; look inside those too.
            is_bundle_type(t) || t == Some(OCI_EMPTY) || t.is_none()
        })
        .collect();
    if candidates.len() > MAX_CANDIDATES {
        st.problem(format!(
            "the referrers index lists {} candidates; only the first {MAX_CANDIDATES} were examined",
            candidates.len()
        ));
    }
    let mut taken = 0;
    'candidates: for m in candidates.into_iter().take(MAX_CANDIDATES) {
        if taken == MAX_ITEMS_PER_SOURCE || st.full() {
            break;
        }
        let Some(f) = remote
            .get_v2(
                &format!("manifests/{}", m.digest),
                MANIFEST_ACCEPT,
                MAX_MANIFEST_SIZE,
            )
            .await
            .map_err(SourceError::Fetch)?
        else {
            continue;
        };
        if Digest::of_bytes(&f.body).to_string() != m.digest {
            return Err(SourceError::ReferrerDigest {
                digest: m.digest.clone(),
            });
        }
        let man: Doc =
            serde_json::from_slice(&f.body).map_err(|error| SourceError::ReferrerNotManifest {
                digest: m.digest.clone(),
                error,
            })?;
        if man.media_type.as_deref() == Some(OCI_INDEX) {
            continue;
        }
        let typed = is_bundle_type(man.artifact_type.as_deref());
        for layer in man
            .layers
            .iter()
            .filter(|l| typed || is_bundle_type(Some(&l.media_type)))
        {
            if !(is_bundle_type(Some(&layer.media_type)) || layer.media_type == "application/json")
            {
                continue;
            }
            if taken == MAX_ITEMS_PER_SOURCE || st.full() {
                break 'candidates;
            }
            let Some(json) = blob_text(remote, layer, st).await? else {
                continue;
            };
            st.ev.items.push(Item {
                subject: subject.clone(),
                source: format!("referrer {}", m.digest),
                content: ItemContent::Bundle { json },
            });
            taken += 1;
        }
    }
    Ok(())
}

async fn github(
    remote: &Remote,
    subject: &Digest,
    url: &str,
    opts: &DiscoveryOptions,
    st: &mut State,
) -> Result<(), SourceError> {
    if st.full() {
        return Ok(());
    }
    let auth = opts.github_token.as_ref().map(|t| format!("Bearer {t}"));
    let Some(f) = remote
        .get_url(
            url,
            "application/vnd.github+json",
            auth.as_deref(),
            MAX_EVIDENCE_BLOB,
            url.to_string(),
        )
        .await
        .map_err(SourceError::Fetch)?
    else {
        return Ok(());
    };
    let doc: serde_json::Value = serde_json::from_slice(&f.body).map_err(SourceError::NotJson)?;
    let list = doc
        .get("attestations")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    st.bytes += f.body.len() as u64;
    for att in list.iter().take(MAX_ITEMS_PER_SOURCE) {
        if st.full() {
            break;
        }
        if st.bytes > MAX_EVIDENCE_BYTES {
            return Err(SourceError::OverBudget);
        }
        let json = if let Some(b) = att.get("bundle").filter(|b| b.is_object()) {
            b.to_string()
        } else if let Some(u) = att.get("bundle_url").and_then(|u| u.as_str()) {
            // Pre-signed storage URLs: no token goes there.
            let Some(f) = remote
                .get_url(
                    u,
                    "application/json",
                    None,
                    MAX_EVIDENCE_BLOB,
                    u.to_string(),
                )
                .await
                .map_err(SourceError::Fetch)?
            else {
                continue;
            };
            st.bytes += f.body.len() as u64;
            match bundle_url_body(&f.body) {
                Some(j) => j,
                None => {
                    st.problem(format!("{u}: neither JSON nor snappy-compressed JSON"));
                    continue;
                }
            }
        } else {
            continue;
        };
        st.ev.items.push(Item {
            subject: subject.clone(),
            source: "GitHub attestations API".into(),
            content: ItemContent::Bundle { json },
        });
    }
    Ok(())
}

/// A `bundle_url` body: JSON, or snappy-compressed (raw snappy) JSON.
pub(crate) fn bundle_url_body(body: &[u8]) -> Option<String> {
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        return String::from_utf8(body.to_vec()).ok();
    }
    let raw = snappy_decompress(body, MAX_EVIDENCE_BLOB as usize)?;
    serde_json::from_slice::<serde_json::Value>(&raw).ok()?;
    String::from_utf8(raw).ok()
}

/// Decompresses raw (unframed) snappy, refusing output larger than `limit`.
pub(crate) fn snappy_decompress(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut pos = 0;
    // Preamble: the uncompressed length, a little-endian base-128 varint.
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *input.get(pos)?;
        pos += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
    let len = usize::try_from(len).ok().filter(|l| *l <= limit)?;
    let mut out = Vec::with_capacity(len);
    while pos < input.len() {
        let tag = input[pos];
        pos += 1;
        match tag & 3 {
            0 => {
                let mut n = usize::from(tag >> 2);
                if n >= 60 {
                    let extra = n - 59;
                    let bytes = input.get(pos..pos + extra)?;
                    n = bytes
                        .iter()
                        .rev()
                        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                    pos += extra;
                }
                let lit = input.get(pos..pos + n + 1)?;
                out.extend_from_slice(lit);
                pos += n + 1;
            }
            kind => {
                let (n, offset) = match kind {
                    1 => {
                        let b = usize::from(*input.get(pos)?);
                        pos += 1;
                        (
                            usize::from((tag >> 2) & 7) + 4,
                            (usize::from(tag >> 5) << 8) | b,
                        )
                    }
                    2 => {
                        let b = input.get(pos..pos + 2)?;
                        pos += 2;
                        (
                            usize::from(tag >> 2) + 1,
                            usize::from(b[0]) | (usize::from(b[1]) << 8),
                        )
                    }
                    _ => {
                        let b = input.get(pos..pos + 4)?;
                        pos += 4;
                        (
                            usize::from(tag >> 2) + 1,
                            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                        )
                    }
                };
                if offset == 0 || offset > out.len() {
                    return None;
                }
                let start = out.len() - offset;
                for i in 0..n {
                    let byte = out[start + i];
                    out.push(byte);
                }
            }
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_literals_and_copies() {
        // "abcabcabcX": literal "abc", copy (offset 3, length 6), literal "X".
        let data = [
            10u8,
            2 << 2,
            b'a',
            b'b',
            b'c',
            ((6 - 4) << 2) | 1,
            3,
            0,
            b'X',
        ];
        assert_eq!(snappy_decompress(&data, 100).unwrap(), b"abcabcabcX");
        // Copy with a 2-byte offset.
        let data = [6u8, 2 << 2, b'x', b'y', b'z', ((3 - 1) << 2) | 2, 3, 0];
        assert_eq!(snappy_decompress(&data, 100).unwrap(), b"xyzxyz");
        // Lies about its length, or copies from before the start: refused.
        assert!(snappy_decompress(&[11u8, 2 << 2, b'a', b'b', b'c'], 100).is_none());
        assert!(snappy_decompress(&[3u8, 1, 9], 100).is_none());
        assert!(snappy_decompress(&[200u8, 1], 100).is_none());
    }

    #[test]
    fn the_accept_header_names_the_document_types() {
        use crate::image::document::{DOCKER_MANIFEST, OCI_MANIFEST};
        let listed: Vec<&str> = MANIFEST_ACCEPT.split(',').map(str::trim).collect();
        assert_eq!(listed, [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST]);
    }

    #[test]
    fn source_errors_read_as_problems() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(
            SourceError::BlobTooLarge {
                digest: digest.to_string()
            }
            .to_string(),
            format!("blob {digest} is larger than 4194304 bytes")
        );
        assert_eq!(
            SourceError::NotADigest {
                digest: "md5:x".into()
            }
            .to_string(),
            "`md5:x` is not a sha256 digest"
        );
        assert_eq!(
            SourceError::BlobOverBudget {
                digest: digest.clone()
            }
            .to_string(),
            format!("evidence read reached its bound of 32 MiB for this image; blob {digest} was not read")
        );
        assert_eq!(
            SourceError::OverBudget.to_string(),
            "evidence read reached its bound of 32 MiB for this image"
        );
        let json = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        assert_eq!(
            SourceError::ReferrerNotManifest {
                digest: digest.to_string(),
                error: json,
            }
            .to_string(),
            format!("referrer {digest} is not a manifest: EOF while parsing an object at line 1 column 1")
        );
        assert_eq!(
            SourceError::ReferrerDigest {
                digest: digest.to_string()
            }
            .to_string(),
            format!("referrer manifest {digest} does not match its digest")
        );
    }

    #[test]
    fn bundle_url_bodies() {
        assert_eq!(
            bundle_url_body(br#"{"a":1}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        let compressed = [7u8, 6 << 2, b'{', b'"', b'a', b'"', b':', b'1', b'}'];
        assert_eq!(bundle_url_body(&compressed).as_deref(), Some(r#"{"a":1}"#));
        assert!(bundle_url_body(b"nonsense").is_none());
    }
}
