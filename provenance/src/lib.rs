//! Provenance verification for thv-sandbox: Sigstore bundles checked against a policy.
//!
//! One function gives a verdict: [`Verifier::verify`]. It verifies the evidence with any identity (chain to a
//! Fulcio CA of the trust root, valid at signing time; signing time from a signed entry timestamp or an RFC 3161
//! timestamp; the evidence the instance requires; the signature and its binding to the subject), then checks the
//! claims of the certificate it has just validated against the [`Policy`]. No function here returns "verified"
//! without a policy, and no policy constrains nothing unless it says so ([`Policy::InsecureAnyIdentity`]).
//!
//! sigstore-verify, sigstore-trust-root, sigstore-tuf and sigstore-types are pinned `=0.15.1` and used only in
//! `engine.rs`, `trust.rs` and `tuf.rs`, so a breaking upgrade touches those files.

#![deny(missing_docs)]

mod cosign;
mod engine;
mod error;
pub mod packages;
mod policy;
mod trust;
pub mod tuf;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use cosign::{bundle_from_cosign_annotations, CosignSignature};
pub use error::Refusal;
pub use policy::{
    check, signer_identity, Attestation, Claims, IdentityPolicy, Instance, Policy, Provenance,
    GITHUB_ACTIONS_ISSUER,
};
pub use trust::{
    embedded_json, TrustRoot, TrustRootId, EMBEDDED_WARN_AGE_DAYS, GITHUB_SNAPSHOT,
    PUBLIC_GOOD_SNAPSHOT, WARN_AGE_DAYS,
};

/// A Sigstore bundle (any version 0.1–0.3), parsed.
#[derive(Debug, Clone)]
pub struct Bundle(pub(crate) sigstore_types::Bundle);

impl Bundle {
    /// Parses one bundle, or several (JSON Lines, one bundle per line).
    pub fn parse_all(text: &str) -> Result<Vec<Bundle>, Refusal> {
        engine::parse_bundles(text)
    }

    /// Parses exactly one bundle.
    pub fn from_json(text: &str) -> Result<Bundle, Refusal> {
        sigstore_types::Bundle::from_json(text)
            .map(Bundle)
            .map_err(|e| Refusal::Malformed(e.to_string()))
    }
}

/// The check that binds a cosign simple-signing payload to an image digest, for the fuzz harness in `fuzz/`
/// (the payload is read before any signature is checked). Not an API.
#[doc(hidden)]
pub fn check_cosign_payload(payload: &[u8], image_digest: &str) -> Result<(), Refusal> {
    engine::check_cosign_payload(payload, image_digest)
}

/// What the evidence is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A file's bytes (blob mode).
    Blob(&'a [u8]),
    /// A sha256 digest, as 64 hex digits (an image manifest digest, or `--digest`).
    Sha256(&'a str),
    /// A sha512 digest, as 128 hex digits (an npm tarball's `integrity` from a lock). Only in-toto statements
    /// (DSSE) can be checked against a digest of this kind.
    Sha512(&'a str),
    /// A cosign simple-signing payload: the signature covers the payload, and the payload must name
    /// `image_digest` (`sha256:…`) in `critical.image.docker-manifest-digest`.
    CosignPayload {
        /// The payload blob's bytes.
        payload: &'a [u8],
        /// The image digest it must name.
        image_digest: &'a str,
    },
}

/// What evidence the verdict rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceSummary {
    /// `message-signature` or `dsse`.
    pub kind: String,
    /// Transparency-log entries checked.
    pub tlog_entries: usize,
    /// The first entry's log index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<String>,
    /// Whether the certificate's SCT was verified.
    pub sct: bool,
    /// RFC 3161 timestamps checked.
    pub rfc3161_timestamps: usize,
    /// The earliest verified signing time (RFC 3339).
    pub signing_time: String,
}

/// A positive verdict: the evidence verified and the signer satisfies the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The instance whose requirements were applied.
    pub instance: Instance,
    /// The trust root that verified it.
    pub trust_root: TrustRootId,
    /// The validated certificate's claims.
    pub claims: Claims,
    /// ToolHive's signer identity derived from the claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_identity: Option<String>,
    /// The evidence.
    pub evidence: EvidenceSummary,
    /// [`Policy::fingerprint`] of the policy it satisfied.
    pub policy: String,
}

/// Verifies evidence with the embedded trust roots, roots refreshed through TUF, or one trust root file that
/// replaces them. An instance's root is loaded (and, through TUF, refreshed when due) the first time it is needed.
#[derive(Debug, Default)]
pub struct Verifier {
    public_good: OnceLock<Result<TrustRoot, Refusal>>,
    github: OnceLock<Result<TrustRoot, Refusal>>,
    replacement: Option<TrustRoot>,
    tuf: Option<tuf::TufOptions>,
}

impl Verifier {
    /// Verifies with the embedded trusted roots (the instance is chosen by the policy).
    pub fn embedded() -> Verifier {
        Verifier::default()
    }

    /// Verifies with each instance's root refreshed through TUF when due, else the newest TUF-verified one in the
    /// cache, else the embedded one ([`tuf::load`]).
    pub fn with_tuf(opts: tuf::TufOptions) -> Verifier {
        Verifier {
            tuf: Some(opts),
            ..Verifier::default()
        }
    }

    /// Verifies with `root` for every instance. Only trust material is replaced: the instance named by the
    /// policy still decides which evidence is required.
    pub fn with_trust_root(root: TrustRoot) -> Verifier {
        Verifier {
            replacement: Some(root),
            ..Verifier::default()
        }
    }

    /// The trust root used for `instance`.
    pub fn trust_root(&self, instance: Instance) -> Result<&TrustRoot, Refusal> {
        if let Some(r) = &self.replacement {
            return Ok(r);
        }
        let cell = match instance {
            Instance::PublicGood => &self.public_good,
            Instance::GitHub => &self.github,
        };
        cell.get_or_init(|| match &self.tuf {
            Some(opts) => tuf::load(instance, opts).map(|l| l.root),
            None => TrustRoot::embedded(instance),
        })
        .as_ref()
        .map_err(|e| Refusal::TrustRoot(e.to_string()))
    }

    /// The verdict. Any one bundle that verifies and satisfies the policy is enough; otherwise every refusal is
    /// returned (a single bundle's refusal as itself).
    pub fn verify(
        &self,
        bundles: &[Bundle],
        subject: Subject<'_>,
        policy: &Policy,
    ) -> Result<Verified, Refusal> {
        policy.validate()?;
        let instance = policy.instance()?;
        let root = self.trust_root(instance)?;
        let mut refusals = Vec::new();
        for bundle in bundles {
            match Self::verify_one(root, instance, bundle, &subject, policy) {
                Ok(v) => return Ok(v),
                Err(r) => refusals.push(r),
            }
        }
        match refusals.len() {
            0 => Err(Refusal::Malformed("no bundle to verify".into())),
            1 => Err(refusals.remove(0)),
            _ => Err(Refusal::AllRefused(refusals)),
        }
    }

    fn verify_one(
        root: &TrustRoot,
        instance: Instance,
        bundle: &Bundle,
        subject: &Subject<'_>,
        policy: &Policy,
    ) -> Result<Verified, Refusal> {
        let (claims, evidence) = engine::verify_crypto(root, instance, bundle, subject)?;
        check(policy, &claims)?;
        Ok(Verified {
            instance,
            trust_root: root.id().clone(),
            signer_identity: signer_identity(&claims),
            claims,
            evidence,
            policy: policy.fingerprint(),
        })
    }
}
