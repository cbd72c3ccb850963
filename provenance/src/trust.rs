//! Trust material: the embedded trusted roots of both instances (with their snapshot date), or a file.
//!
//! A trust root replaces trust material only. Which evidence is required comes from the policy's instance and is
//! not changed by whatever root is in use.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::Refusal;
use crate::policy::Instance;

/// Where the public-good snapshot came from: the `trusted_root.json` TUF target embedded in sigstore-trust-root
/// 0.15.1 (byte-identical to the one toolhive-core fetched through TUF on this date).
pub const PUBLIC_GOOD_SNAPSHOT: &str = "2026-07-24";
/// The GitHub instance's `trusted_root.json` embedded in sigstore-trust-root 0.15.1 (updated upstream on this date).
pub const GITHUB_SNAPSHOT: &str = "2026-06-29";

/// Which trust root verified something, precisely enough to decide whether a record may be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRootId {
    /// `embedded` or the file path.
    pub source: String,
    /// The snapshot date of an embedded root; `None` for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// sha256 of the trusted_root.json bytes.
    pub sha256: String,
}

/// A parsed trusted root, ready to verify with.
pub struct TrustRoot {
    pub(crate) verifier: sigstore_verify::Verifier,
    id: TrustRootId,
}

impl std::fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoot").field("id", &self.id).finish()
    }
}

impl TrustRoot {
    /// The trusted root embedded for `instance`.
    pub fn embedded(instance: Instance) -> Result<TrustRoot, Refusal> {
        let (json, snapshot) = match instance {
            Instance::PublicGood => (
                sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
                PUBLIC_GOOD_SNAPSHOT,
            ),
            Instance::GitHub => (
                sigstore_trust_root::SIGSTORE_GITHUB_TRUSTED_ROOT,
                GITHUB_SNAPSHOT,
            ),
        };
        Self::parse(
            json,
            TrustRootId {
                source: format!("embedded:{}", instance.sigstore_url()),
                snapshot: Some(snapshot.into()),
                sha256: sha256(json.as_bytes()),
            },
        )
    }

    /// A `trusted_root.json` file (`--trust-root FILE`).
    pub fn from_file(path: &std::path::Path) -> Result<TrustRoot, Refusal> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| Refusal::TrustRoot(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// A `trusted_root.json` document; `source` names it in records.
    pub fn from_json(json: &str, source: &str) -> Result<TrustRoot, Refusal> {
        Self::parse(
            json,
            TrustRootId {
                source: source.into(),
                snapshot: None,
                sha256: sha256(json.as_bytes()),
            },
        )
    }

    fn parse(json: &str, id: TrustRootId) -> Result<TrustRoot, Refusal> {
        let root = sigstore_trust_root::TrustedRoot::from_json(json)
            .map_err(|e| Refusal::TrustRoot(format!("{}: {e}", id.source)))?;
        let verifier = sigstore_verify::Verifier::new(&root)
            .map_err(|e| Refusal::TrustRoot(format!("{}: {e}", id.source)))?;
        Ok(TrustRoot { verifier, id })
    }

    /// What this root is.
    pub fn id(&self) -> &TrustRootId {
        &self.id
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
