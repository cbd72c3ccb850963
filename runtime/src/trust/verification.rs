//! Provenance verification of images: modes, the gate the pipeline consults between resolving an image and
//! fetching any of its layers, and the verification record kept with the cached image.
//!
//! # Modes
//! - `disabled`: nothing is checked.
//! - `warn`: verified; when verification fails (or there is no policy to verify against), stderr says so plainly
//!   and that the server runs unverified, and it runs.
//! - `enabled`: verified; refused on failure. An image without a policy (no declared provenance, no identity
//!   flags) is refused.
//!
//! Default ([`Verification::mode`] `None`): `enabled` when a policy is given (a claim that is made must hold),
//! `warn` when none is.
//!
//! # Evidence and records
//! Evidence is looked for at the registry ([`crate::trust::evidence`]) for the index the reference resolved to and for
//! the platform manifest. Evidence naming the index counts only because the manifest that runs was chosen from
//! that very index (the pull descends it by digest). What was found is stored in
//! `<cache>/verification/<manifest-hex>.evidence.json`; a positive verdict in
//! `<cache>/verification/<manifest-hex>.record.json` (digest, evidence used, signer identity, repository, ref,
//! workflow, time, trust root). A later run reuses the record only if the manifest digest, every policy field
//! and the trust root (source and sha256: an embedded root, a TUF-refreshed one and a file are told apart, and a
//! new root from TUF has another sha256) are the same; otherwise the stored evidence is verified again
//! (offline), and when there is none, the registry is asked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thv_sandbox_provenance as prov;

use crate::image::digest::Digest;
use crate::trust::evidence::{DiscoveryOptions, Evidence, ItemContent};

/// The default GitHub API (asked only for policies that name GitHub's Sigstore instance, unless configured).
pub const GITHUB_API: &str = "https://api.github.com";

/// How strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Not checked.
    Disabled,
    /// Checked; a failure is warned about and the server runs.
    Warn,
    /// Checked; a failure refuses the image.
    Enabled,
}

/// A mode that is not `disabled`, `warn` or `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not disabled, warn or enabled")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "disabled" => Ok(Mode::Disabled),
            "warn" => Ok(Mode::Warn),
            "enabled" => Ok(Mode::Enabled),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Disabled => "disabled",
            Mode::Warn => "warn",
            Mode::Enabled => "enabled",
        })
    }
}

/// What to verify an image against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verification {
    /// `None`: `enabled` with a policy, `warn` without.
    pub mode: Option<Mode>,
    /// The policy: a registry entry's provenance, or identity flags.
    pub policy: Option<prov::Policy>,
    /// A trusted_root.json replacing the embedded trust material.
    pub trust_root: Option<PathBuf>,
    /// GitHub's API base URL for attestations. `None`: [`GITHUB_API`] for policies naming GitHub's instance,
    /// not asked otherwise.
    pub github_api: Option<String>,
    /// A token for GitHub's API.
    pub github_token: Option<String>,
    /// Refreshing the trusted roots through TUF (unused with `trust_root`).
    pub tuf: TufSettings,
    /// The registry entry's full name when the image is a registry server's: the UNVERIFIED warning names it,
    /// says whether the entry declares provenance, and how to accept it (`trust accept NAME`).
    pub server: Option<String>,
}

/// Whether and from where trusted roots are refreshed through TUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TufSettings {
    /// Refresh when due (default); `false`: the cached TUF-verified and embedded roots only.
    pub refresh: bool,
    /// public-good's repository (URL, bootstrap root).
    pub public_good: prov::tuf::Repository,
    /// GitHub's repository.
    pub github: prov::tuf::Repository,
}

impl Default for TufSettings {
    fn default() -> Self {
        TufSettings {
            refresh: true,
            public_good: prov::tuf::Repository::default(),
            github: prov::tuf::Repository::default(),
        }
    }
}

impl TufSettings {
    /// The library's options, keeping the state under `<cache_dir>/trust`.
    pub fn options(&self, cache_dir: &Path) -> prov::tuf::TufOptions {
        prov::tuf::TufOptions {
            refresh: self.refresh,
            public_good: self.public_good.clone(),
            github: self.github.clone(),
            ..prov::tuf::TufOptions::new(cache_dir.join("trust"))
        }
    }
}

impl Verification {
    /// The mode in force.
    pub fn effective_mode(&self) -> Mode {
        self.mode.unwrap_or(if self.policy.is_some() {
            Mode::Enabled
        } else {
            Mode::Warn
        })
    }
}

/// A positive verdict, kept with the cached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The platform manifest that was verified (and runs).
    pub manifest_digest: Digest,
    /// The index it was chosen from, if any.
    pub index_digest: Option<Digest>,
    /// The digest the evidence names (the manifest, or the index).
    pub evidence_subject: Digest,
    /// Where the evidence came from.
    pub evidence_source: String,
    /// When it was verified (seconds since the epoch).
    pub verified_at: u64,
    /// The policy it satisfied, every field.
    pub policy: prov::Policy,
    /// The verdict: signer (SAN, issuer, repository, ref, workflow, runner), evidence, trust root.
    pub verified: prov::Verified,
}

impl Record {
    /// The workflow that signed: the build config (caller's workflow) if the certificate names one, else the SAN.
    pub fn workflow(&self) -> Option<&str> {
        self.verified
            .claims
            .build_config_uri
            .as_deref()
            .or(self.verified.claims.san.as_deref())
    }
}

/// What the gate decided: the verdict, a value (`thv-sandbox verify` reports it; the pipeline turns
/// [`Outcome::Refused`] into [`Refused`] before any layer is fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified now, or a matching record reused.
    Verified {
        /// The record.
        record: Box<Record>,
        /// Whether it was an earlier record.
        reused: bool,
    },
    /// Not verified, and running anyway (`warn`).
    Unverified {
        /// Why.
        reason: String,
    },
    /// Nothing to verify it against, and the user accepted this very digest (`trust accept`); running (`warn`).
    Accepted {
        /// The acceptance.
        acceptance: Box<crate::trust::accept::Acceptance>,
    },
    /// Refused (`enabled`).
    Refused {
        /// Why.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// `disabled`.
    Skipped,
}

impl Outcome {
    /// The gate's answer for a run: `Err` when the image must not be fetched or run.
    pub fn admit(self, reference: &str) -> Result<Outcome, Refused> {
        match self {
            Outcome::Refused { reason, hint } => Err(Refused {
                reference: reference.to_owned(),
                reason,
                hint,
            }),
            other => Ok(other),
        }
    }
}

/// An image the gate refused (`enabled`): nothing of it is fetched, unpacked or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference} was refused by verification: {reason}")]
pub struct Refused {
    /// The reference as named.
    pub reference: String,
    /// Why.
    pub reason: String,
    /// What to do.
    pub hint: String,
}

/// The verification gate for one image.
#[derive(Debug)]
pub struct Gate {
    cfg: Verification,
    mode: Mode,
    verifier: prov::Verifier,
    dir: PathBuf,
    trust_root_warning: Option<String>,
}

impl Gate {
    /// A gate for `cfg`, keeping records under `<cache_dir>/verification`. Fails on a trust root file that cannot
    /// be read and on an invalid policy (an unknown instance, or one that constrains nothing).
    pub fn new(cfg: &Verification, cache_dir: &Path) -> Result<Gate, prov::Refusal> {
        if let Some(p) = &cfg.policy {
            p.validate()?;
        }
        let verifier = match &cfg.trust_root {
            Some(path) => prov::Verifier::with_trust_root(prov::TrustRoot::from_file(path)?),
            None => prov::Verifier::with_tuf(cfg.tuf.options(cache_dir)),
        };
        let mut gate = Gate {
            mode: cfg.effective_mode(),
            cfg: cfg.clone(),
            verifier,
            dir: cache_dir.join("verification"),
            trust_root_warning: None,
        };
        // The trust root is needed only when something will be verified: loaded (refreshed when due) here, before
        // any network work of the pull; its age is for the caller to say ([`Gate::trust_root_warning`]).
        if let (Some(policy), true) = (&gate.cfg.policy, gate.mode != Mode::Disabled) {
            if let Ok(instance) = policy.instance() {
                if let Ok(root) = gate.verifier.trust_root(instance) {
                    gate.trust_root_warning =
                        root.id().age_warning(instance, jiff::Timestamp::now());
                }
            }
        }
        Ok(gate)
    }

    /// The warning about the age of the trust root in use, when it is old (said once per gate by the caller).
    pub fn trust_root_warning(&self) -> Option<&str> {
        self.trust_root_warning.as_deref()
    }

    /// The verifier (its trust roots are loaded on first use).
    pub fn verifier(&self) -> &prov::Verifier {
        &self.verifier
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Where to look for evidence; `None` when nothing will be verified.
    pub fn discovery(&self) -> Option<DiscoveryOptions> {
        let policy = self.cfg.policy.as_ref()?;
        if self.mode == Mode::Disabled {
            return None;
        }
        let github_repository = match policy {
            prov::Policy::Provenance(p) => p
                .repository_uri
                .as_deref()
                .and_then(|u| u.strip_prefix("https://github.com/"))
                .map(str::to_string),
            prov::Policy::Identity(i) => i.github_workflow_repository.clone(),
            prov::Policy::InsecureAnyIdentity { .. } => None,
        };
        let github_api = self.cfg.github_api.clone().or_else(|| {
            (policy.instance().ok() == Some(prov::Instance::GitHub)).then(|| GITHUB_API.to_string())
        });
        Some(DiscoveryOptions {
            github_api,
            github_repository,
            github_token: self.cfg.github_token.clone(),
        })
    }

    /// Whether a cached image with this manifest digest can be decided without the registry.
    pub fn on_hand(&self, manifest: &Digest) -> bool {
        self.reusable_record(manifest, None).is_some() || self.stored_evidence(manifest).is_some()
    }

    /// Whether deciding about a cached image needs the registry: the mode is `enabled`, something is to be
    /// verified, and neither a record nor stored evidence is on hand for `manifest`. (Under `warn` a cached image
    /// keeps running offline, with the warning.)
    pub fn needs_registry(&self, manifest: &Digest) -> bool {
        self.mode == Mode::Enabled && self.discovery().is_some() && !self.on_hand(manifest)
    }

    /// The decision for an image (a `warn` verdict's one line is [`Gate::unverified_line`], for the caller to say).
    pub fn decide(
        &self,
        name: &str,
        index: Option<&Digest>,
        manifest: &Digest,
        evidence: Option<&Evidence>,
    ) -> Outcome {
        let outcome = self.outcome_for(index, manifest, evidence);
        match &outcome {
            Outcome::Verified { record, reused } => {
                tracing::info!(
                    "{name}: provenance verified{}: {} ({})",
                    if *reused { " (record)" } else { "" },
                    record.verified.claims.san.as_deref().unwrap_or("?"),
                    record.evidence_source
                );
            }
            Outcome::Skipped | Outcome::Refused { .. } | Outcome::Unverified { .. } => {}
            Outcome::Accepted { acceptance } => {
                tracing::info!(
                    "{name} ({manifest}) is unverified; you accepted this digest on {} (`thv-sandbox trust revoke \
                     {}` undoes it)",
                    acceptance.date(),
                    acceptance.subject(),
                );
            }
        }
        outcome
    }

    /// The one line said for an image that runs unverified: what, why, and what the user can do.
    pub fn unverified_line(&self, name: &str, manifest: &Digest, reason: &str) -> String {
        let what = match &self.cfg.server {
            Some(s) => format!("`{}` ({name}@sha256:{})", short(s), &manifest.hex()[..12]),
            None => format!("{name}@sha256:{}", &manifest.hex()[..12]),
        };
        let next = if self.cfg.policy.is_some() {
            // Declared provenance that did not verify is never accepted: that is what an attack looks like.
            "--image-verification=enabled refuses it".to_owned()
        } else {
            let earlier =
                self.acceptances()
                    .earlier_for(self.cfg.server.as_deref(), name, manifest);
            let accept = format!(
                "accept it: `thv-sandbox trust accept {}`",
                self.cfg.server.as_deref().map_or(name, short)
            );
            match earlier {
                Some(a) => format!(
                    "not the digest accepted on {} (sha256:{}); {accept}",
                    a.date(),
                    &a.manifest_digest.hex()[..12]
                ),
                None => accept,
            }
        };
        format!("UNVERIFIED {what}: {reason}; {next}")
    }

    /// The user's acceptances (next to the records).
    fn acceptances(&self) -> crate::trust::accept::Acceptances {
        crate::trust::accept::Acceptances::in_dir(&self.dir)
    }

    fn outcome_for(
        &self,
        index: Option<&Digest>,
        manifest: &Digest,
        evidence: Option<&Evidence>,
    ) -> Outcome {
        if self.mode == Mode::Disabled {
            return Outcome::Skipped;
        }
        let Some(policy) = &self.cfg.policy else {
            // Said plainly when there is a registry entry: the entry is there, it carries no provenance.
            let reason = match &self.cfg.server {
                Some(_) => "its registry entry declares no provenance",
                None => "no provenance is declared (no registry entry, no --certificate-* flags)",
            }
            .to_string();
            return match self.mode {
                Mode::Enabled => {
                    // An acceptance is the user's word, not evidence: `enabled` runs verified images only.
                    let accepted = self.acceptances().find(manifest).map_or(String::new(), |a| {
                        format!(
                            " (you accepted this digest on {}, but an acceptance is not verification)",
                            a.date()
                        )
                    });
                    Outcome::Refused {
                        reason: format!(
                            "{reason}; --image-verification=enabled refuses it{accepted}"
                        ),
                        hint: "name the expected signer (--certificate-identity / --certificate-oidc-issuer / \
                               --certificate-github-workflow-repository), or use --image-verification=warn"
                            .into(),
                    }
                }
                _ => match self.acceptances().find(manifest) {
                    Some(acceptance) => Outcome::Accepted {
                        acceptance: Box::new(acceptance),
                    },
                    None => Outcome::Unverified { reason },
                },
            };
        };
        if let Some(record) = self.reusable_record(manifest, index) {
            return Outcome::Verified {
                record: Box::new(record),
                reused: true,
            };
        }
        let stored;
        let evidence = match evidence {
            Some(e) => {
                self.store_evidence(manifest, e);
                Some(e)
            }
            None => {
                stored = self.stored_evidence(manifest);
                stored.as_ref()
            }
        };
        let verdict = match evidence {
            Some(ev) => self.verify_evidence(ev, index, manifest, policy),
            None => Err(prov::Refusal::NoEvidence {
                subject: manifest.to_string(),
                searched: vec![
                    "the cache (no stored evidence; the OCI registry was not asked)".into(),
                ],
            }),
        };
        match verdict {
            Ok((verified, subject, source)) => {
                let record = Record {
                    manifest_digest: manifest.clone(),
                    index_digest: index.cloned(),
                    evidence_subject: subject,
                    evidence_source: source,
                    verified_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    policy: policy.clone(),
                    verified,
                };
                self.store_record(&record);
                Outcome::Verified {
                    record: Box::new(record),
                    reused: false,
                }
            }
            Err(refusal) => {
                let reason = format!("provenance verification failed: {refusal}");
                match self.mode {
                    Mode::Enabled => Outcome::Refused {
                        reason,
                        hint: refusal.hint(),
                    },
                    _ => {
                        // One line: the hint (often long: where evidence was looked for) under --verbose.
                        tracing::info!("{}", refusal.hint());
                        Outcome::Unverified { reason }
                    }
                }
            }
        }
    }

    /// Verifies every item that names the manifest, or the index it was chosen from; the first that verifies
    /// and satisfies the policy wins.
    pub fn verify_evidence(
        &self,
        ev: &Evidence,
        index: Option<&Digest>,
        manifest: &Digest,
        policy: &prov::Policy,
    ) -> Result<(prov::Verified, Digest, String), prov::Refusal> {
        let mut refusals = Vec::new();
        for item in &ev.items {
            if &item.subject != manifest && Some(&item.subject) != index {
                continue;
            }
            let subject_digest = item.subject.to_string();
            let verdict = match &item.content {
                ItemContent::Bundle { json } => prov::Bundle::parse_all(json).and_then(|bundles| {
                    self.verifier.verify(
                        &bundles,
                        prov::Subject::Sha256(item.subject.hex()),
                        policy,
                    )
                }),
                ItemContent::Cosign {
                    payload,
                    signature,
                    certificate,
                    rekor_bundle,
                    rfc3161_timestamp,
                    dsse,
                } => {
                    let sig = prov::CosignSignature {
                        payload: payload.as_bytes(),
                        signature,
                        certificate: certificate.as_deref(),
                        rekor_bundle: rekor_bundle.as_deref(),
                        rfc3161_timestamp: rfc3161_timestamp.as_deref(),
                        dsse: *dsse,
                    };
                    prov::bundle_from_cosign_annotations(&sig).and_then(|bundle| {
                        let subject = if *dsse {
                            prov::Subject::Sha256(item.subject.hex())
                        } else {
                            prov::Subject::CosignPayload {
                                payload: payload.as_bytes(),
                                image_digest: &subject_digest,
                            }
                        };
                        self.verifier.verify(&[bundle], subject, policy)
                    })
                }
            };
            match verdict {
                Ok(v) => return Ok((v, item.subject.clone(), item.source.clone())),
                Err(r) => {
                    tracing::debug!("{}: {r}", item.source);
                    refusals.push(r);
                }
            }
        }
        match refusals.len() {
            0 => {
                let mut searched = ev.searched.clone();
                searched.extend(ev.problems.iter().map(|p| format!("({p})")));
                Err(prov::Refusal::NoEvidence {
                    subject: manifest.to_string(),
                    searched,
                })
            }
            1 => Err(refusals.remove(0)),
            _ => Err(prov::Refusal::AllRefused(refusals)),
        }
    }

    fn record_path(&self, manifest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.record.json", manifest.hex()))
    }

    fn evidence_path(&self, manifest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.evidence.json", manifest.hex()))
    }

    /// The stored record for `manifest`, if it was made under this very policy and trust root.
    pub fn reusable_record(&self, manifest: &Digest, index: Option<&Digest>) -> Option<Record> {
        let policy = self.cfg.policy.as_ref()?;
        let record = read_record(&self.dir, manifest)?;
        let instance = policy.instance().ok()?;
        let root = self.verifier.trust_root(instance).ok()?;
        let same = &record.manifest_digest == manifest
            && &record.policy == policy
            && record.verified.policy == policy.fingerprint()
            && record.verified.trust_root.same_material(root.id())
            // Evidence about an index vouches only for a manifest chosen from that index.
            && (record.evidence_subject == record.manifest_digest
                || index.is_none_or(|i| *i == record.evidence_subject));
        same.then_some(record)
    }

    fn stored_evidence(&self, manifest: &Digest) -> Option<Evidence> {
        let text = std::fs::read_to_string(self.evidence_path(manifest)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn store_evidence(&self, manifest: &Digest, ev: &Evidence) {
        if ev.items.is_empty() {
            return;
        }
        write_json(&self.evidence_path(manifest), ev);
    }

    fn store_record(&self, record: &Record) {
        write_json(&self.record_path(&record.manifest_digest), record);
    }
}

/// A registry entry's short name (`io.github.stacklok/time` → `time`), as users type it.
fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The record stored for `manifest` in `dir` (`<cache>/verification`), whatever policy it was made under.
pub fn read_record(dir: &Path, manifest: &Digest) -> Option<Record> {
    let text = std::fs::read_to_string(dir.join(format!("{}.record.json", manifest.hex()))).ok()?;
    serde_json::from_str(&text).ok()
}

/// Written aside and renamed; a failure to write only costs a later re-verification, so it is logged, not fatal.
fn write_json(path: &Path, value: &impl Serialize) {
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::dirs::private_dir(dir).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, value)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!("cannot store {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn policy() -> prov::Policy {
        prov::Policy::Provenance(prov::Provenance {
            repository_uri: Some("https://github.com/o/r".into()),
            ..prov::Provenance::default()
        })
    }

    #[test]
    fn modes_parse_and_display_as_written() {
        for m in [Mode::Disabled, Mode::Warn, Mode::Enabled] {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert_eq!(
            "strict".parse::<Mode>().unwrap_err().to_string(),
            "`strict` is not disabled, warn or enabled"
        );
    }

    #[test]
    fn default_mode_depends_on_a_policy() {
        assert_eq!(Verification::default().effective_mode(), Mode::Warn);
        let v = Verification {
            policy: Some(policy()),
            ..Verification::default()
        };
        assert_eq!(v.effective_mode(), Mode::Enabled);
        let v = Verification {
            policy: Some(policy()),
            mode: Some(Mode::Warn),
            ..Verification::default()
        };
        assert_eq!(v.effective_mode(), Mode::Warn);
    }

    #[test]
    fn enabled_without_policy_refuses_warn_runs_disabled_skips() {
        let cache = tempfile::tempdir().unwrap();
        let gate = |mode| {
            Gate::new(
                &Verification {
                    mode: Some(mode),
                    ..Verification::default()
                },
                cache.path(),
            )
            .unwrap()
        };
        let g = gate(Mode::Enabled);
        let err = g.decide("x", None, &d('a'), None).admit("x").unwrap_err();
        assert!(err.reason.contains("no provenance is declared"), "{err}");
        assert!(err.reason.contains("no registry entry"), "{err}");
        assert!(
            err.to_string()
                .starts_with("x was refused by verification: "),
            "{err}"
        );
        let g = gate(Mode::Warn);
        assert!(matches!(
            g.decide("x", None, &d('a'), None),
            Outcome::Unverified { .. }
        ));
        let g = gate(Mode::Disabled);
        assert_eq!(g.decide("x", None, &d('a'), None), Outcome::Skipped);
    }

    #[test]
    fn an_accepted_digest_runs_without_warning_under_warn_and_is_still_refused_under_enabled() {
        let cache = tempfile::tempdir().unwrap();
        let cfg = |mode| Verification {
            mode: Some(mode),
            server: Some("io.example/time".into()),
            ..Verification::default()
        };
        let store = crate::trust::accept::Acceptances::of_cache(cache.path());
        store
            .add(crate::trust::accept::Acceptance {
                manifest_digest: d('a'),
                image: "reg/time:1".into(),
                server: Some("io.example/time".into()),
                accepted_at: 1_764_900_000,
            })
            .unwrap();
        let g = Gate::new(&cfg(Mode::Warn), cache.path()).unwrap();
        assert!(matches!(
            g.decide("reg/time:1", None, &d('a'), None),
            Outcome::Accepted { .. }
        ));
        // Another digest of the same server warns again, naming the one accepted.
        let Outcome::Unverified { reason } = g.decide("reg/time:1", None, &d('b'), None) else {
            panic!("not unverified");
        };
        assert!(
            reason.contains("its registry entry declares no provenance"),
            "{reason}"
        );
        let line = g.unverified_line("reg/time:1", &d('b'), &reason);
        assert_eq!(line.lines().count(), 1);
        assert!(
            line.starts_with("UNVERIFIED `time` (reg/time:1@sha256:bbbbbbbbbbbb): "),
            "{line}"
        );
        assert!(
            line.contains("not the digest accepted on 2025-12-05 (sha256:aaaaaaaaaaaa)"),
            "{line}"
        );
        assert!(
            line.ends_with("; accept it: `thv-sandbox trust accept time`"),
            "{line}"
        );
        assert!(line.len() <= 230, "{} chars: {line}", line.len());
        // `enabled` runs verified images only: an acceptance is not verification.
        let g = Gate::new(&cfg(Mode::Enabled), cache.path()).unwrap();
        let err = g
            .decide("reg/time:1", None, &d('a'), None)
            .admit("reg/time:1")
            .unwrap_err();
        assert!(
            err.reason
                .contains("you accepted this digest on 2025-12-05"),
            "{err}"
        );
        // Declared provenance that fails is never covered by an acceptance (under warn: the warning).
        let g = Gate::new(
            &Verification {
                policy: Some(policy()),
                mode: Some(Mode::Warn),
                tuf: offline(),
                ..cfg(Mode::Warn)
            },
            cache.path(),
        )
        .unwrap();
        assert!(matches!(
            g.decide("reg/time:1", None, &d('a'), Some(&Evidence::default())),
            Outcome::Unverified { .. }
        ));
    }

    /// No refresh through TUF in unit tests (no network): the embedded roots.
    fn offline() -> TufSettings {
        TufSettings {
            refresh: false,
            ..TufSettings::default()
        }
    }

    #[test]
    fn no_evidence_is_refused_under_enabled_and_says_where_it_looked() {
        let cache = tempfile::tempdir().unwrap();
        let g = Gate::new(
            &Verification {
                policy: Some(policy()),
                tuf: offline(),
                ..Verification::default()
            },
            cache.path(),
        )
        .unwrap();
        let ev = Evidence {
            searched: vec!["tag sha256-aaaa.sig".into()],
            ..Evidence::default()
        };
        let err = g
            .decide("x", None, &d('a'), Some(&ev))
            .admit("x")
            .unwrap_err();
        assert!(err.reason.contains("no signature or attestation"), "{err}");
        // Where it looked is in the hint, printed under the error.
        assert!(err.hint.contains("sha256-aaaa.sig"), "{}", err.hint);
    }

    #[test]
    fn an_empty_policy_is_an_error_up_front() {
        let cache = tempfile::tempdir().unwrap();
        let err = Gate::new(
            &Verification {
                policy: Some(prov::Policy::Provenance(prov::Provenance::default())),
                ..Verification::default()
            },
            cache.path(),
        )
        .unwrap_err();
        assert!(matches!(err, prov::Refusal::EmptyPolicy));
    }
}
