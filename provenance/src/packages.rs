//! Package provenance in the formats the indexes serve it: npm's attestations (Sigstore bundles v0.1–v0.3 from
//! `/-/npm/v1/attestations/NAME@VERSION`) and PyPI's PEP 740 provenance objects (from the integrity API or a
//! simple-index `provenance` link), turned into [`Bundle`]s for the one verdict function, [`crate::Verifier::verify`].
//!
//! Pure parsing only: nothing here fetches, and nothing here says "verified". What the statement's subjects name
//! is read back from the bundle ([`statement_subjects`]) so that a caller can also hold the subject's *name* to
//! the package (the digest binding itself is checked by the verifier).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sigstore_types::SignatureContent;

use crate::error::Refusal;
use crate::policy::{Provenance, GITHUB_ACTIONS_ISSUER};
use crate::Bundle;

/// SLSA provenance v1, the predicate npm's `--provenance` publishes.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// SLSA provenance v0.2 (npm provenance published before mid-2023).
pub const SLSA_PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";
/// npm's publish attestation, signed by the registry's own key (not by a Fulcio identity).
pub const NPM_PUBLISH_V01: &str = "https://github.com/npm/attestation/tree/main/specs/publish/v0.1";
/// The PEP 740 publish attestation predicate.
pub const PYPI_PUBLISH_V1: &str = "https://docs.pypi.org/attestations/publish/v1";

/// One attestation npm serves for a package version.
#[derive(Debug, Clone)]
pub struct NpmAttestation {
    /// `predicateType` as the registry lists it.
    pub predicate_type: String,
    /// The bundle, parsed.
    pub bundle: Bundle,
}

impl NpmAttestation {
    /// Whether this is build provenance (SLSA), as opposed to the registry's publish attestation.
    pub fn is_provenance(&self) -> bool {
        self.predicate_type == SLSA_PROVENANCE_V1 || self.predicate_type == SLSA_PROVENANCE_V02
    }
}

/// Parses the npm attestations API's answer: `{"attestations":[{"predicateType":…,"bundle":{…}}]}`. Bundles of
/// every version npm serves (v0.1 `application/vnd.dev.sigstore.bundle+json;version=0.1`, v0.2, v0.3) are accepted.
pub fn npm_attestations(text: &str) -> Result<Vec<NpmAttestation>, Refusal> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::Malformed(format!("npm attestations: {e}")))?;
    let list = doc
        .get("attestations")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::Malformed("npm attestations: no `attestations` list".into()))?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let bundle = item.get("bundle").ok_or_else(|| {
            Refusal::Malformed(format!("npm attestations: entry {i} has no `bundle`"))
        })?;
        let bundle = Bundle::from_json(&bundle.to_string())
            .map_err(|e| Refusal::Malformed(format!("npm attestations: entry {i}: {e}")))?;
        let predicate_type = item
            .get("predicateType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                statement(&bundle)
                    .and_then(|s| s.get("predicateType")?.as_str().map(str::to_string))
            })
            .unwrap_or_default();
        out.push(NpmAttestation {
            predicate_type,
            bundle,
        });
    }
    Ok(out)
}

/// The package URL npm's provenance names as the subject: `pkg:npm/NAME@VERSION`, a scope's `@` written `%40`.
pub fn npm_purl(name: &str, version: &str) -> String {
    let name = name
        .strip_prefix('@')
        .map_or_else(|| name.to_string(), |n| format!("%40{n}"));
    format!("pkg:npm/{name}@{version}")
}

/// The source repository a packument's `repository` names, as a certificate's source repository claim writes
/// it (`https://github.com/OWNER/REPO`), when it is a GitHub or GitLab repository; `None` otherwise.
pub fn repository_uri(repository: &Value) -> Option<String> {
    let raw = match repository {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("url")?.as_str()?.to_string(),
        _ => return None,
    };
    let raw = raw.trim();
    // npm's shorthand: `github:owner/repo`, `owner/repo`.
    if let Some(rest) = raw.strip_prefix("github:") {
        return Some(format!(
            "https://github.com/{}",
            rest.trim_end_matches(".git")
        ));
    }
    // A plain `owner/repo` is npm's GitHub shorthand.
    if !raw.contains(':') && raw.matches('/').count() == 1 {
        return Some(format!(
            "https://github.com/{}",
            raw.trim_end_matches(".git")
        ));
    }
    let url = raw
        .strip_prefix("git+")
        .unwrap_or(raw)
        .replace("git://", "https://")
        .replace("ssh://git@", "https://")
        .replace("git@github.com:", "https://github.com/");
    let url = url.trim_end_matches('/').trim_end_matches(".git");
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let mut parts = rest.split('/');
    let host = parts.next()?;
    let (owner, repo) = (parts.next()?, parts.next()?);
    if !matches!(host, "github.com" | "gitlab.com") || owner.is_empty() || repo.is_empty() {
        return None;
    }
    Some(format!("https://{host}/{owner}/{repo}"))
}

/// A PEP 740 Trusted Publisher, as PyPI records it next to the attestations it verified at upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    /// `GitHub`, `GitLab`, `Google`, `ActiveState`.
    pub kind: String,
    /// `owner/repo` (GitHub, GitLab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The workflow file name (GitHub: `release.yml`; GitLab: the CI file path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The deployment environment, if the publisher was bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl Publisher {
    /// The policy this publisher stands for: the certificate's source repository is the publisher's repository,
    /// and its SAN is the publisher's workflow in that repository, issued by GitHub Actions. `None` for a kind
    /// that is not GitHub or that names no repository or workflow (nothing is guessed for those).
    pub fn policy(&self) -> Option<Provenance> {
        if !self.kind.eq_ignore_ascii_case("github") {
            return None;
        }
        let repo = self.repository.as_deref().filter(|r| !r.is_empty())?;
        let workflow = self.workflow.as_deref().filter(|w| !w.is_empty())?;
        let workflow = workflow.rsplit('/').next().unwrap_or(workflow);
        Some(Provenance {
            repository_uri: Some(format!("https://github.com/{repo}")),
            signer_identity: Some(format!("/.github/workflows/{workflow}")),
            cert_issuer: Some(GITHUB_ACTIONS_ISSUER.into()),
            ..Provenance::default()
        })
    }
}

/// One attestation bundle of a PEP 740 provenance object: a publisher and what it signed.
#[derive(Debug, Clone)]
pub struct PypiBundle {
    /// The Trusted Publisher PyPI associated with these attestations.
    pub publisher: Option<Publisher>,
    /// The attestations, converted to Sigstore bundles v0.3.
    pub attestations: Vec<Bundle>,
}

/// Parses a PEP 740 provenance object (`{"version":1,"attestation_bundles":[{"publisher":…,"attestations":[…]}]}`)
/// and converts each attestation to a Sigstore bundle.
pub fn pypi_provenance(text: &str) -> Result<Vec<PypiBundle>, Refusal> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::Malformed(format!("PEP 740 provenance: {e}")))?;
    if let Some(v) = doc.get("version").and_then(Value::as_u64) {
        if v != 1 {
            return Err(Refusal::Malformed(format!(
                "PEP 740 provenance version {v} is not 1"
            )));
        }
    }
    let list = doc
        .get("attestation_bundles")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Refusal::Malformed("PEP 740 provenance: no `attestation_bundles` list".into())
        })?;
    let mut out = Vec::new();
    for entry in list {
        let publisher = match entry.get("publisher") {
            Some(p) if !p.is_null() => Some(
                serde_json::from_value::<Publisher>(p.clone())
                    .map_err(|e| Refusal::Malformed(format!("PEP 740 publisher: {e}")))?,
            ),
            _ => None,
        };
        let attestations = entry
            .get("attestations")
            .and_then(Value::as_array)
            .ok_or_else(|| Refusal::Malformed("PEP 740: a bundle without `attestations`".into()))?
            .iter()
            .map(pep740_to_bundle)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(PypiBundle {
            publisher,
            attestations,
        });
    }
    Ok(out)
}

/// A PEP 740 attestation as the Sigstore bundle v0.3 it is a re-encoding of: the DER certificate, the
/// transparency-log entries as they are (protobuf JSON), and the DSSE envelope of the in-toto statement.
pub fn pep740_to_bundle(att: &Value) -> Result<Bundle, Refusal> {
    let bad = |what: &str| Refusal::Malformed(format!("PEP 740 attestation: {what}"));
    if let Some(v) = att.get("version").and_then(Value::as_u64) {
        if v != 1 {
            return Err(bad(&format!("version {v} is not 1")));
        }
    }
    let vm = att
        .get("verification_material")
        .ok_or_else(|| bad("no verification_material"))?;
    let cert = vm
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no certificate"))?;
    let entries = vm
        .get("transparency_entries")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let env = att.get("envelope").ok_or_else(|| bad("no envelope"))?;
    let statement = env
        .get("statement")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no envelope.statement"))?;
    let signature = env
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no envelope.signature"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (what, v) in [
        ("certificate", cert),
        ("statement", statement),
        ("signature", signature),
    ] {
        b64.decode(v)
            .map_err(|e| bad(&format!("{what} is not base64: {e}")))?;
    }
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": cert},
            "tlogEntries": entries,
            "timestampVerificationData": {},
        },
        "dsseEnvelope": {
            "payload": statement,
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": signature}],
        },
    });
    Bundle::from_json(&bundle.to_string())
}

/// The in-toto statement a DSSE bundle carries, if it carries one.
fn statement(bundle: &Bundle) -> Option<Value> {
    match &bundle.0.content {
        SignatureContent::DsseEnvelope(env)
            if env.payload_type == "application/vnd.in-toto+json" =>
        {
            serde_json::from_slice(env.payload.as_bytes()).ok()
        }
        _ => None,
    }
}

/// A subject of an in-toto statement: its name and digests (algorithm → hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementSubject {
    /// `name`.
    pub name: String,
    /// `digest`, e.g. `sha512` → hex.
    pub digests: Vec<(String, String)>,
}

/// The subjects of the in-toto statement in `bundle` (empty for a message signature).
pub fn statement_subjects(bundle: &Bundle) -> Vec<StatementSubject> {
    let Some(st) = statement(bundle) else {
        return Vec::new();
    };
    st.get("subject")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|s| StatementSubject {
                    name: s
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    digests: s
                        .get("digest")
                        .and_then(Value::as_object)
                        .map(|d| {
                            d.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_lowercase())))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The predicate type of the statement in `bundle`, if any.
pub fn predicate_type(bundle: &Bundle) -> Option<String> {
    statement(bundle)?
        .get("predicateType")?
        .as_str()
        .map(str::to_string)
}

/// Whether one of `bundle`'s subjects is named `name` (a distribution file name is compared the way PEP 740
/// asks: case-insensitively, `-`/`_` alike is not assumed; names must be equal after lowercasing).
pub fn names_subject(bundle: &Bundle, name: &str) -> bool {
    statement_subjects(bundle)
        .iter()
        .any(|s| s.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_of_scoped_and_plain_packages() {
        assert_eq!(npm_purl("sigstore", "2.1.0"), "pkg:npm/sigstore@2.1.0");
        assert_eq!(
            npm_purl("@modelcontextprotocol/server-everything", "1.0.0"),
            "pkg:npm/%40modelcontextprotocol/server-everything@1.0.0"
        );
    }

    #[test]
    fn repository_uri_from_packument_forms() {
        let want = Some("https://github.com/sigstore/sigstore-js".to_string());
        for v in [
            json!({"type": "git", "url": "git+https://github.com/sigstore/sigstore-js.git"}),
            json!({"url": "git://github.com/sigstore/sigstore-js.git"}),
            json!({"url": "git+ssh://git@github.com/sigstore/sigstore-js.git"}),
            json!({"url": "https://github.com/sigstore/sigstore-js/tree/main/packages/client"}),
            json!("github:sigstore/sigstore-js"),
            json!("sigstore/sigstore-js"),
            json!("git@github.com:sigstore/sigstore-js.git"),
        ] {
            assert_eq!(repository_uri(&v), want, "{v}");
        }
        assert_eq!(
            repository_uri(&json!({"url": "https://example.com/x/y"})),
            None
        );
        assert_eq!(repository_uri(&json!(42)), None);
    }

    #[test]
    fn github_publisher_policy() {
        let p = Publisher {
            kind: "GitHub".into(),
            repository: Some("trailofbits/rfc8785.py".into()),
            workflow: Some("release.yml".into()),
            environment: None,
        };
        let pol = p.policy().unwrap();
        assert_eq!(
            pol.repository_uri.as_deref(),
            Some("https://github.com/trailofbits/rfc8785.py")
        );
        assert_eq!(
            pol.signer_identity.as_deref(),
            Some("/.github/workflows/release.yml")
        );
        let gitlab = Publisher {
            kind: "GitLab".into(),
            ..p.clone()
        };
        assert!(gitlab.policy().is_none());
        let no_workflow = Publisher {
            workflow: None,
            ..p
        };
        assert!(no_workflow.policy().is_none());
    }

    #[test]
    fn malformed_documents_are_refused() {
        assert!(npm_attestations("{}").is_err());
        assert!(npm_attestations("not json").is_err());
        assert!(npm_attestations(r#"{"attestations":[{"predicateType":"x"}]}"#).is_err());
        assert!(npm_attestations(r#"{"attestations":[]}"#)
            .unwrap()
            .is_empty());
        assert!(pypi_provenance(r#"{"version":2,"attestation_bundles":[]}"#).is_err());
        assert!(pypi_provenance(r#"{"version":1}"#).is_err());
        let att = json!({"version":1,"verification_material":{"certificate":"!!","transparency_entries":[]},
            "envelope":{"statement":"e30=","signature":"AA=="}});
        assert!(pep740_to_bundle(&att).is_err());
    }
}
