//! Why an image or blob was refused, each reason with a hint.

/// A refusal: the evidence did not verify, or verified but did not satisfy the policy, or there was none.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A claim of the validated certificate differs from the policy.
    #[error("{field}: the policy expects {expected:?}, the signer's certificate says {}", actual.as_deref().map_or("nothing".to_string(), |a| format!("{a:?}")))]
    Mismatch {
        /// The policy field.
        field: &'static str,
        /// What the policy asks for.
        expected: String,
        /// What the certificate (or statement) says.
        actual: Option<String>,
    },
    /// No evidence at all for the subject.
    #[error("no signature or attestation found for {subject}")]
    NoEvidence {
        /// The digest or file.
        subject: String,
        /// Where it was looked for.
        searched: Vec<String>,
    },
    /// The evidence lacks something the instance requires.
    #[error("missing evidence: {0}")]
    MissingEvidence(String),
    /// The certificate chain, log or timestamp authority is not trusted (or not valid at signing time).
    #[error("untrusted: {0}")]
    Untrusted(String),
    /// The evidence is about another artifact.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// The signature itself is bad.
    #[error("invalid signature: {0}")]
    BadSignature(String),
    /// The bundle cannot be read or is malformed.
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// A policy that would accept any signer without saying so.
    #[error("the policy constrains nothing")]
    EmptyPolicy,
    /// An unknown `sigstore_url`.
    #[error("unknown Sigstore instance {0:?}")]
    UnknownInstance(String),
    /// The trust root could not be loaded.
    #[error("trust root: {0}")]
    TrustRoot(String),
    /// Several bundles, each refused; the first reason of each.
    #[error("none of {} bundles was accepted: {}", .0.len(), .0.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
    AllRefused(Vec<Refusal>),
}

impl Refusal {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            Refusal::Mismatch { field, .. } => match *field {
                "signer_identity" | "certificate identity" =>
                    "the artifact was signed by a different workflow than the one expected; if the project moved its \
                     release workflow, update the expected identity after checking the change upstream"
                        .into(),
                "repository_uri" | "GitHub workflow repository" =>
                    "the artifact was built from a different repository than the one expected (a fork or a copy?)"
                        .into(),
                "repository_ref" | "GitHub workflow ref" =>
                    "the artifact was built from a different branch or tag than the one expected".into(),
                "runner_environment" =>
                    "the artifact was built on a runner the policy does not accept (self-hosted runners are \
                     controlled by the repository owner)"
                        .into(),
                "cert_issuer" | "certificate OIDC issuer" =>
                    "the signing certificate was issued for another identity provider".into(),
                _ => "the evidence is not of the kind the policy asks for".into(),
            },
            Refusal::NoEvidence { searched, .. } => format!(
                "the image is not signed where thv-sandbox looked ({}); check the reference, or use \
                 --image-verification=warn to run it unverified",
                searched.join(", ")
            ),
            Refusal::MissingEvidence(_) => {
                "the instance named by sigstore_url decides what evidence is required; check that the entry names \
                 the instance that signed (tuf-repo.github.com for GitHub's, tuf-repo-cdn.sigstore.dev for \
                 public-good)"
                    .into()
            }
            Refusal::Untrusted(_) => {
                "the signature does not chain to the trust root in use, or the certificate was not valid when it \
                 signed; check sigstore_url, or the --trust-root file"
                    .into()
            }
            Refusal::DigestMismatch(_) => {
                "the evidence is about another artifact: a signature copied from another image, or the wrong file"
                    .into()
            }
            Refusal::BadSignature(_) => "the evidence was altered or corrupted; do not use this artifact".into(),
            Refusal::Malformed(_) => "the file is not a Sigstore bundle (JSON, or one bundle per line)".into(),
            Refusal::EmptyPolicy => {
                "name an expected identity (--certificate-identity, --certificate-oidc-issuer, \
                 --certificate-github-workflow-repository, or a registry entry's provenance), or pass \
                 --insecure-any-identity to accept any signer"
                    .into()
            }
            Refusal::UnknownInstance(_) => {
                "sigstore_url must be tuf-repo-cdn.sigstore.dev (public-good) or tuf-repo.github.com (GitHub)".into()
            }
            Refusal::TrustRoot(_) => {
                "a trust root file is a Sigstore trusted_root.json (protobuf-specs TrustedRoot JSON)".into()
            }
            Refusal::AllRefused(all) => all
                .first()
                .map_or_else(|| "no bundle to verify".into(), Refusal::hint),
        }
    }

    /// A short machine-readable kind (for `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Mismatch { .. } => "identity-mismatch",
            Refusal::NoEvidence { .. } => "no-evidence",
            Refusal::MissingEvidence(_) => "missing-evidence",
            Refusal::Untrusted(_) => "untrusted",
            Refusal::DigestMismatch(_) => "digest-mismatch",
            Refusal::BadSignature(_) => "bad-signature",
            Refusal::Malformed(_) => "malformed",
            Refusal::EmptyPolicy => "empty-policy",
            Refusal::UnknownInstance(_) => "unknown-instance",
            Refusal::TrustRoot(_) => "trust-root",
            Refusal::AllRefused(_) => "all-refused",
        }
    }
}
