//! Policies and the pure logic that checks the claims of a validated certificate against them.
//!
//! Nothing here verifies cryptography: [`check`] only ever sees [`Claims`] that the engine read from a certificate
//! it has just validated (chain, signing time, evidence). Keeping the matching pure makes it testable on its own.

use serde::{Deserialize, Serialize};

use crate::error::Refusal;

/// The OIDC issuer of GitHub Actions tokens.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// A registry entry's provenance, with ToolHive's field names and semantics: every field that is set must match.
///
/// `sigstore_url` names the Sigstore instance (and so the evidence that is required): empty or
/// `tuf-repo-cdn.sigstore.dev` is the public-good instance, `tuf-repo.github.com` is GitHub's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The TUF repository of the Sigstore instance that signed (`tuf-repo-cdn.sigstore.dev`, `tuf-repo.github.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_url: Option<String>,
    /// Source repository URI claim (`1.3.6.1.4.1.57264.1.12`), e.g. `https://github.com/org/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_uri: Option<String>,
    /// Source repository ref claim (`.1.14`), e.g. `refs/tags/v1.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_ref: Option<String>,
    /// The SAN without the repository URI prefix and the `@ref` suffix, e.g. `/.github/workflows/release.yml`;
    /// a reusable workflow in another repository keeps its full URL (see [`signer_identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_identity: Option<String>,
    /// Runner environment claim (`.1.11`), e.g. `github-hosted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
    /// OIDC issuer (`.1.8`, falling back to `.1.1`), e.g. `https://token.actions.githubusercontent.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issuer: Option<String>,
    /// An in-toto attestation the evidence must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
}

/// The attestation a [`Provenance`] asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// The in-toto statement's `predicateType`, e.g. `https://slsa.dev/provenance/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    /// The statement's `predicate`, compared as a whole (as ToolHive does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<serde_json::Value>,
}

/// An explicit identity, as cosign's `--certificate-*` flags give it. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityPolicy {
    /// The Sigstore instance, as in [`Provenance::sigstore_url`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_url: Option<String>,
    /// The exact SAN (`--certificate-identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_identity: Option<String>,
    /// The OIDC issuer (`--certificate-oidc-issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_oidc_issuer: Option<String>,
    /// `owner/repo` (`--certificate-github-workflow-repository`; claim `.1.5`, or `.1.12` without the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_repository: Option<String>,
    /// `refs/…` (`--certificate-github-workflow-ref`; claim `.1.6`, or `.1.14`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_ref: Option<String>,
    /// Commit (`--certificate-github-workflow-sha`; claim `.1.3`, or `.1.13`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_sha: Option<String>,
    /// Trigger event (`--certificate-github-workflow-trigger`; claim `.1.2`, or `.1.20`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_trigger: Option<String>,
    /// Workflow display name (`--certificate-github-workflow-name`; claim `.1.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_name: Option<String>,
}

/// What a verified signature must also say about its signer. There is no default and no "empty" policy:
/// [`Policy::validate`] refuses a policy that constrains nothing, except the explicit [`Policy::InsecureAnyIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// A registry entry's provenance (ToolHive semantics).
    Provenance(Provenance),
    /// An explicit identity and/or issuer.
    Identity(IdentityPolicy),
    /// Any signer the instance's CA certified. Only on explicit request (`--insecure-any-identity`); the
    /// instance is still named (the evidence it requires is not relaxed).
    InsecureAnyIdentity {
        /// The Sigstore instance, as in [`Provenance::sigstore_url`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sigstore_url: Option<String>,
    },
}

/// The Sigstore instance a policy names; it decides which evidence is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instance {
    /// Sigstore's public-good instance: Fulcio certificate with an SCT, and a Rekor entry whose time is signed
    /// (an inclusion promise, or an RFC 3161 timestamp for Rekor v2 entries).
    PublicGood,
    /// GitHub's instance (private repositories, release attestations): an RFC 3161 timestamp, no log.
    /// Serialized as `github`, the name `trust refresh --instance` takes (`git-hub`, what kebab-case made of it
    /// before, is still read from older records).
    #[serde(rename = "github", alias = "git-hub")]
    GitHub,
}

impl Instance {
    /// The TUF repository host that names this instance in a registry entry.
    pub fn sigstore_url(self) -> &'static str {
        match self {
            Instance::PublicGood => "tuf-repo-cdn.sigstore.dev",
            Instance::GitHub => "tuf-repo.github.com",
        }
    }

    /// The instance a `sigstore_url` names. Empty or absent is the public-good instance; the scheme and a
    /// trailing slash are ignored. Anything else is refused rather than guessed.
    pub fn from_sigstore_url(url: Option<&str>) -> Result<Instance, Refusal> {
        let Some(raw) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Instance::PublicGood);
        };
        let host = raw
            .strip_prefix("https://")
            .unwrap_or(raw)
            .trim_end_matches('/');
        match host {
            "tuf-repo-cdn.sigstore.dev" => Ok(Instance::PublicGood),
            "tuf-repo.github.com" => Ok(Instance::GitHub),
            _ => Err(Refusal::UnknownInstance(raw.to_string())),
        }
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Instance::PublicGood => "public-good Sigstore",
            Instance::GitHub => "GitHub's Sigstore",
        })
    }
}

impl Policy {
    /// The instance this policy names.
    pub fn instance(&self) -> Result<Instance, Refusal> {
        Instance::from_sigstore_url(match self {
            Policy::Provenance(p) => p.sigstore_url.as_deref(),
            Policy::Identity(i) => i.sigstore_url.as_deref(),
            Policy::InsecureAnyIdentity { sigstore_url } => sigstore_url.as_deref(),
        })
    }

    /// Refuses a policy that would accept any signer without saying so, and an unknown instance.
    pub fn validate(&self) -> Result<(), Refusal> {
        self.instance()?;
        let constrains = match self {
            Policy::Provenance(p) => {
                set(&p.repository_uri)
                    || set(&p.repository_ref)
                    || set(&p.signer_identity)
                    || set(&p.runner_environment)
                    || set(&p.cert_issuer)
                    || p.attestation
                        .as_ref()
                        .is_some_and(|a| set(&a.predicate_type) || a.predicate.is_some())
            }
            Policy::Identity(i) => {
                set(&i.certificate_identity)
                    || set(&i.certificate_oidc_issuer)
                    || set(&i.github_workflow_repository)
                    || set(&i.github_workflow_ref)
                    || set(&i.github_workflow_sha)
                    || set(&i.github_workflow_trigger)
                    || set(&i.github_workflow_name)
            }
            Policy::InsecureAnyIdentity { .. } => true,
        };
        if constrains {
            Ok(())
        } else {
            Err(Refusal::EmptyPolicy)
        }
    }

    /// A stable fingerprint of everything this policy asks (for reusing a verification record only under the
    /// very same policy).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(json)))
    }
}

fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// The claims of a validated signing certificate (and of the statement it signed, for attestations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The SAN (URI or email).
    pub san: Option<String>,
    /// OIDC issuer (`.1.8`, falling back to `.1.1`).
    pub issuer: Option<String>,
    /// `.1.12`
    pub source_repository_uri: Option<String>,
    /// `.1.14`
    pub source_repository_ref: Option<String>,
    /// `.1.13`
    pub source_repository_digest: Option<String>,
    /// `.1.11`
    pub runner_environment: Option<String>,
    /// `.1.18`: the workflow file that ran (the caller's, for a reusable workflow).
    pub build_config_uri: Option<String>,
    /// `.1.20`
    pub build_trigger: Option<String>,
    /// `.1.5` (deprecated GitHub claim, `owner/repo`)
    pub workflow_repository: Option<String>,
    /// `.1.6`
    pub workflow_ref: Option<String>,
    /// `.1.3`
    pub workflow_sha: Option<String>,
    /// `.1.2`
    pub workflow_trigger: Option<String>,
    /// `.1.4`
    pub workflow_name: Option<String>,
    /// The in-toto statement's predicate type, when the evidence is a DSSE attestation.
    pub predicate_type: Option<String>,
    /// The in-toto statement's predicate (not serialised into records: it can be large).
    #[serde(skip)]
    pub predicate: Option<serde_json::Value>,
}

/// ToolHive's signer identity: for a certificate issued to a GitHub Actions token, the SAN without its `@ref`
/// suffix and without the source repository URI prefix; otherwise the SAN verbatim.
///
/// A reusable workflow in another repository does not start with the source repository URI, so its full URL
/// remains. Unlike ToolHive's plain prefix trim, the prefix is only removed at a path boundary, so that
/// `https://github.com/org/repo-evil/...` is not shortened by the repository `https://github.com/org/repo`.
pub fn signer_identity(claims: &Claims) -> Option<String> {
    let san = claims.san.as_deref()?;
    if claims.issuer.as_deref() != Some(GITHUB_ACTIONS_ISSUER) {
        return Some(san.to_string());
    }
    let without_ref = san.split_once('@').map_or(san, |(before, _)| before);
    let repo = claims.source_repository_uri.as_deref()?;
    let repo = repo.trim_end_matches('/');
    match without_ref.strip_prefix(repo) {
        Some(rest) if rest.starts_with('/') => Some(rest.to_string()),
        _ => Some(without_ref.to_string()),
    }
}

/// Checks `claims` against `policy`; the first field that does not match is the refusal.
pub fn check(policy: &Policy, claims: &Claims) -> Result<(), Refusal> {
    match policy {
        Policy::InsecureAnyIdentity { .. } => Ok(()),
        Policy::Provenance(p) => {
            expect("cert_issuer", &p.cert_issuer, claims.issuer.as_deref())?;
            expect(
                "repository_uri",
                &p.repository_uri,
                claims.source_repository_uri.as_deref(),
            )?;
            expect(
                "repository_ref",
                &p.repository_ref,
                claims.source_repository_ref.as_deref(),
            )?;
            if set(&p.signer_identity) {
                let actual = signer_identity(claims);
                expect("signer_identity", &p.signer_identity, actual.as_deref())?;
            }
            expect(
                "runner_environment",
                &p.runner_environment,
                claims.runner_environment.as_deref(),
            )?;
            if let Some(att) = &p.attestation {
                expect(
                    "attestation.predicate_type",
                    &att.predicate_type,
                    claims.predicate_type.as_deref(),
                )?;
                if let Some(want) = &att.predicate {
                    if claims.predicate.as_ref() != Some(want) {
                        return Err(Refusal::Mismatch {
                            field: "attestation.predicate",
                            expected: want.to_string(),
                            actual: claims.predicate.as_ref().map(|v| truncate(&v.to_string())),
                        });
                    }
                }
                if claims.predicate_type.is_none() {
                    return Err(Refusal::Mismatch {
                        field: "attestation",
                        expected: "an in-toto attestation".into(),
                        actual: Some("a plain signature".into()),
                    });
                }
            }
            Ok(())
        }
        Policy::Identity(i) => {
            expect(
                "certificate identity",
                &i.certificate_identity,
                claims.san.as_deref(),
            )?;
            expect(
                "certificate OIDC issuer",
                &i.certificate_oidc_issuer,
                claims.issuer.as_deref(),
            )?;
            let repo_short = claims.workflow_repository.clone().or_else(|| {
                claims
                    .source_repository_uri
                    .as_deref()
                    .and_then(|u| u.strip_prefix("https://github.com/"))
                    .map(str::to_string)
            });
            expect(
                "GitHub workflow repository",
                &i.github_workflow_repository,
                repo_short.as_deref(),
            )?;
            expect(
                "GitHub workflow ref",
                &i.github_workflow_ref,
                claims
                    .workflow_ref
                    .as_deref()
                    .or(claims.source_repository_ref.as_deref()),
            )?;
            expect(
                "GitHub workflow sha",
                &i.github_workflow_sha,
                claims
                    .workflow_sha
                    .as_deref()
                    .or(claims.source_repository_digest.as_deref()),
            )?;
            expect(
                "GitHub workflow trigger",
                &i.github_workflow_trigger,
                claims
                    .workflow_trigger
                    .as_deref()
                    .or(claims.build_trigger.as_deref()),
            )?;
            expect(
                "GitHub workflow name",
                &i.github_workflow_name,
                claims.workflow_name.as_deref(),
            )?;
            Ok(())
        }
    }
}

fn expect(field: &'static str, want: &Option<String>, actual: Option<&str>) -> Result<(), Refusal> {
    match want.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if actual != Some(w) => Err(Refusal::Mismatch {
            field,
            expected: w.to_string(),
            actual: actual.map(str::to_string),
        }),
        _ => Ok(()),
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_github_instance_is_serialized_as_github() {
        assert_eq!(
            serde_json::to_string(&Instance::GitHub).unwrap(),
            "\"github\""
        );
        assert_eq!(
            serde_json::to_string(&Instance::PublicGood).unwrap(),
            "\"public-good\""
        );
        for old_or_new in ["\"git-hub\"", "\"github\""] {
            let i: Instance = serde_json::from_str(old_or_new).unwrap();
            assert_eq!(i, Instance::GitHub);
        }
    }

    fn gh(san: &str, repo: &str) -> Claims {
        Claims {
            san: Some(san.into()),
            issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
            source_repository_uri: Some(repo.into()),
            source_repository_ref: Some("refs/tags/v1".into()),
            runner_environment: Some("github-hosted".into()),
            ..Claims::default()
        }
    }

    #[test]
    fn signer_identity_strips_repo_and_ref() {
        let c = gh(
            "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1",
            "https://github.com/o/r",
        );
        assert_eq!(
            signer_identity(&c).as_deref(),
            Some("/.github/workflows/release.yml")
        );
    }

    #[test]
    fn signer_identity_keeps_reusable_workflow_url() {
        let c = gh(
            "https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml@09b495c3",
            "https://github.com/malancas/attest-demo",
        );
        assert_eq!(
            signer_identity(&c).as_deref(),
            Some("https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml")
        );
    }

    #[test]
    fn signer_identity_prefix_only_at_path_boundary() {
        let c = gh(
            "https://github.com/o/r-evil/.github/workflows/release.yml@refs/tags/v1",
            "https://github.com/o/r",
        );
        assert_eq!(
            signer_identity(&c).as_deref(),
            Some("https://github.com/o/r-evil/.github/workflows/release.yml")
        );
    }

    #[test]
    fn signer_identity_verbatim_for_other_issuers() {
        let c = Claims {
            san: Some("someone@example.com".into()),
            issuer: Some("https://accounts.google.com".into()),
            ..Claims::default()
        };
        assert_eq!(signer_identity(&c).as_deref(), Some("someone@example.com"));
        // A GitHub certificate without a repository claim has no derivable identity.
        let c = Claims {
            san: Some("https://github.com/o/r/.github/workflows/x.yml@refs/heads/main".into()),
            issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
            ..Claims::default()
        };
        assert_eq!(signer_identity(&c), None);
    }

    fn prov() -> Provenance {
        Provenance {
            repository_uri: Some("https://github.com/o/r".into()),
            repository_ref: Some("refs/tags/v1".into()),
            signer_identity: Some("/.github/workflows/release.yml".into()),
            runner_environment: Some("github-hosted".into()),
            cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
            ..Provenance::default()
        }
    }

    #[test]
    fn every_set_field_must_match() {
        let claims = gh(
            "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1",
            "https://github.com/o/r",
        );
        check(&Policy::Provenance(prov()), &claims).unwrap();

        type Mutation = fn(&mut Provenance);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |p| p.repository_uri = Some("https://github.com/o/other".into()),
                "repository_uri",
            ),
            (
                |p| p.repository_ref = Some("refs/heads/main".into()),
                "repository_ref",
            ),
            (
                |p| p.signer_identity = Some("/.github/workflows/ci.yml".into()),
                "signer_identity",
            ),
            (
                |p| p.runner_environment = Some("self-hosted".into()),
                "runner_environment",
            ),
            (
                |p| p.cert_issuer = Some("https://accounts.google.com".into()),
                "cert_issuer",
            ),
            (
                |p| {
                    p.attestation = Some(Attestation {
                        predicate_type: Some("https://slsa.dev/provenance/v1".into()),
                        predicate: None,
                    })
                },
                "attestation.predicate_type",
            ),
        ];
        for (mutate, field) in cases {
            let mut p = prov();
            mutate(&mut p);
            match check(&Policy::Provenance(p), &claims) {
                Err(Refusal::Mismatch { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a mismatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn self_hosted_runner_refused() {
        let mut claims = gh(
            "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1",
            "https://github.com/o/r",
        );
        claims.runner_environment = Some("self-hosted".into());
        let err = check(&Policy::Provenance(prov()), &claims).unwrap_err();
        assert!(err.to_string().contains("self-hosted"), "{err}");
        assert!(err.to_string().contains("github-hosted"), "{err}");
    }

    #[test]
    fn unset_fields_do_not_constrain_but_empty_policies_are_refused() {
        let p = Provenance {
            repository_uri: Some("https://github.com/o/r".into()),
            ..Provenance::default()
        };
        let claims = gh(
            "https://github.com/o/r/.github/workflows/a.yml@refs/heads/x",
            "https://github.com/o/r",
        );
        check(&Policy::Provenance(p.clone()), &claims).unwrap();
        Policy::Provenance(p).validate().unwrap();
        assert!(matches!(
            Policy::Provenance(Provenance {
                sigstore_url: Some("tuf-repo.github.com".into()),
                ..Provenance::default()
            })
            .validate(),
            Err(Refusal::EmptyPolicy)
        ));
        assert!(matches!(
            Policy::Identity(IdentityPolicy::default()).validate(),
            Err(Refusal::EmptyPolicy)
        ));
    }

    #[test]
    fn predicate_type_demands_an_attestation() {
        let p = Provenance {
            attestation: Some(Attestation {
                predicate_type: None,
                predicate: None,
            }),
            cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
            ..Provenance::default()
        };
        let claims = gh(
            "https://github.com/o/r/.github/workflows/a.yml@refs/heads/x",
            "https://github.com/o/r",
        );
        assert!(check(&Policy::Provenance(p.clone()), &claims).is_err());
        let mut with = claims.clone();
        with.predicate_type = Some("https://slsa.dev/provenance/v1".into());
        check(&Policy::Provenance(p), &with).unwrap();
    }

    #[test]
    fn identity_policy_github_flags() {
        let mut claims = gh(
            "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1",
            "https://github.com/o/r",
        );
        let p = |repo: &str| {
            Policy::Identity(IdentityPolicy {
                github_workflow_repository: Some(repo.into()),
                ..IdentityPolicy::default()
            })
        };
        check(&p("o/r"), &claims).unwrap();
        assert!(check(&p("o/other"), &claims).is_err());
        // The deprecated .1.5 claim wins when present.
        claims.workflow_repository = Some("o/r".into());
        check(&p("o/r"), &claims).unwrap();
        let issuer_only = Policy::Identity(IdentityPolicy {
            certificate_oidc_issuer: Some("https://accounts.google.com".into()),
            ..IdentityPolicy::default()
        });
        let err = check(&issuer_only, &claims).unwrap_err();
        assert!(err.to_string().contains(GITHUB_ACTIONS_ISSUER), "{err}");
    }

    #[test]
    fn instances_from_sigstore_url() {
        assert_eq!(
            Instance::from_sigstore_url(None).unwrap(),
            Instance::PublicGood
        );
        assert_eq!(
            Instance::from_sigstore_url(Some("")).unwrap(),
            Instance::PublicGood
        );
        assert_eq!(
            Instance::from_sigstore_url(Some("https://tuf-repo.github.com/")).unwrap(),
            Instance::GitHub
        );
        assert!(Instance::from_sigstore_url(Some("tuf.example.com")).is_err());
    }

    #[test]
    fn provenance_uses_toolhive_field_names() {
        let p: Provenance = serde_json::from_str(
            r#"{"sigstore_url":"tuf-repo-cdn.sigstore.dev","repository_uri":"https://github.com/o/r",
                "repository_ref":"refs/tags/v1","signer_identity":"/.github/workflows/release.yml",
                "runner_environment":"github-hosted","cert_issuer":"https://token.actions.githubusercontent.com",
                "attestation":{"predicate_type":"https://slsa.dev/provenance/v1"}}"#,
        )
        .unwrap();
        assert_eq!(
            p.signer_identity.as_deref(),
            Some("/.github/workflows/release.yml")
        );
        assert_eq!(
            p.attestation.unwrap().predicate_type.as_deref(),
            Some("https://slsa.dev/provenance/v1")
        );
    }

    #[test]
    fn fingerprint_changes_with_any_field() {
        let a = Policy::Provenance(prov());
        let mut p = prov();
        p.signer_identity = Some("/.github/workflows/other.yml".into());
        assert_ne!(a.fingerprint(), Policy::Provenance(p).fingerprint());
        assert_eq!(a.fingerprint(), Policy::Provenance(prov()).fingerprint());
    }
}
