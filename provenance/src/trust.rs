//! Trust material: the embedded trusted roots of both instances (with their snapshot date), a root refreshed
//! through TUF ([`crate::tuf`]), or a file.
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

/// Past this age a root refreshed through TUF is warned about: refreshing (done when due, online) has failed
/// for a month, and the root may lack keys rotated in since.
pub const WARN_AGE_DAYS: i64 = 30;

/// Past this age an embedded root is warned about. It is as new as the sigstore-trust-root release this build
/// uses, so its age on a freshly built binary is not the user's to fix: only when it is half a year old (Sigstore
/// has likely added keys or log shards since) is it worth a warning.
pub const EMBEDDED_WARN_AGE_DAYS: i64 = 180;

/// Which trust root verified something, precisely enough to decide whether a record may be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRootId {
    /// `embedded:<instance host>`, `tuf:<repository URL>` (verified through TUF) or the file path.
    pub source: String,
    /// The snapshot date of an embedded root; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When a TUF root was last verified online against fresh TUF metadata (RFC 3339); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<String>,
    /// sha256 of the trusted_root.json bytes.
    pub sha256: String,
}

impl TrustRootId {
    /// Whether a verdict made with `other` holds for this root: the same trust material from the same source.
    /// (The refresh date is not compared: a TUF refresh that brings the same bytes changes nothing.)
    pub fn same_material(&self, other: &TrustRootId) -> bool {
        self.source == other.source && self.sha256 == other.sha256
    }

    /// The time the material is known to be current as of: a TUF root's last refresh, an embedded root's snapshot
    /// date; `None` for a file.
    pub fn as_of(&self) -> Option<jiff::Timestamp> {
        if let Some(r) = &self.refreshed {
            return r.parse().ok();
        }
        let date: jiff::civil::Date = self.snapshot.as_deref()?.parse().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    }

    /// Whole days between [`TrustRootId::as_of`] and `now` (never negative); `None` for a file.
    pub fn age_days(&self, now: jiff::Timestamp) -> Option<i64> {
        let since = self.as_of()?;
        Some(((now.as_second() - since.as_second()) / 86_400).max(0))
    }

    /// Where it comes from and how old it is, in words: `embedded snapshot of 2026-07-24, 126 days old`.
    pub fn describe(&self, now: jiff::Timestamp) -> String {
        let age = self
            .age_days(now)
            .map(|d| format!(", {d} day{} old", if d == 1 { "" } else { "s" }))
            .unwrap_or_default();
        match (&self.refreshed, &self.snapshot) {
            (Some(r), _) => format!(
                "verified through TUF from {}, last refreshed {r}{age}",
                self.source.strip_prefix("tuf:").unwrap_or(&self.source)
            ),
            (None, Some(s)) => format!("embedded snapshot of {s}{age}"),
            (None, None) => format!("file {}", self.source),
        }
    }

    /// The one warning line for a root older than [`WARN_AGE_DAYS`] (refreshed through TUF) or
    /// [`EMBEDDED_WARN_AGE_DAYS`] (embedded) at `now`; none for a file, which the user chose.
    pub fn age_warning(&self, instance: Instance, now: jiff::Timestamp) -> Option<String> {
        let days = self.age_days(now)?;
        let limit = match self.refreshed {
            Some(_) => WARN_AGE_DAYS,
            None => EMBEDDED_WARN_AGE_DAYS,
        };
        if days <= limit {
            return None;
        }
        let since = match (&self.refreshed, &self.snapshot) {
            (Some(r), _) => format!("last refreshed through TUF {}", r.get(..10).unwrap_or(r)),
            (None, Some(s)) => format!("embedded snapshot of {s}, never refreshed through TUF"),
            (None, None) => return None,
        };
        Some(format!(
            "trust root for {instance} is {days} days old ({since}); run online or `thv-sandbox trust refresh` \
             to refresh"
        ))
    }
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

/// The `trusted_root.json` embedded for `instance`.
pub fn embedded_json(instance: Instance) -> &'static str {
    match instance {
        Instance::PublicGood => sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
        Instance::GitHub => sigstore_trust_root::SIGSTORE_GITHUB_TRUSTED_ROOT,
    }
}

impl TrustRoot {
    /// The trusted root embedded for `instance`.
    pub fn embedded(instance: Instance) -> Result<TrustRoot, Refusal> {
        Self::parse(embedded_json(instance), Self::embedded_id(instance))
    }

    /// What the embedded root for `instance` is, without parsing it.
    pub fn embedded_id(instance: Instance) -> TrustRootId {
        let snapshot = match instance {
            Instance::PublicGood => PUBLIC_GOOD_SNAPSHOT,
            Instance::GitHub => GITHUB_SNAPSHOT,
        };
        TrustRootId {
            source: format!("embedded:{}", instance.sigstore_url()),
            snapshot: Some(snapshot.into()),
            refreshed: None,
            sha256: sha256(embedded_json(instance).as_bytes()),
        }
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
                refreshed: None,
                sha256: sha256(json.as_bytes()),
            },
        )
    }

    pub(crate) fn parse(json: &str, id: TrustRootId) -> Result<TrustRoot, Refusal> {
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

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn embedded(snapshot: &str) -> TrustRootId {
        TrustRootId {
            source: "embedded:tuf-repo-cdn.sigstore.dev".into(),
            snapshot: Some(snapshot.into()),
            refreshed: None,
            sha256: "sha256:aa".into(),
        }
    }

    fn refreshed(at: &str) -> TrustRootId {
        TrustRootId {
            source: "tuf:https://tuf-repo-cdn.sigstore.dev".into(),
            snapshot: None,
            refreshed: Some(at.into()),
            sha256: "sha256:aa".into(),
        }
    }

    #[test]
    fn age_counts_whole_days_from_the_snapshot_or_the_refresh() {
        let now = ts("2026-11-27T12:00:00Z");
        assert_eq!(embedded("2026-11-27").age_days(now), Some(0));
        assert_eq!(embedded("2026-10-28").age_days(now), Some(30));
        assert_eq!(refreshed("2026-10-13T13:00:00Z").age_days(now), Some(44));
        assert_eq!(refreshed("2026-10-13T11:00:00Z").age_days(now), Some(45));
        // A date after now (a clock set back) is no age, not a negative one.
        assert_eq!(refreshed("2027-01-01T00:00:00Z").age_days(now), Some(0));
        let file = TrustRootId {
            source: "/etc/root.json".into(),
            snapshot: None,
            refreshed: None,
            sha256: "sha256:aa".into(),
        };
        assert_eq!(file.age_days(now), None);
        assert_eq!(file.age_warning(Instance::PublicGood, now), None);
    }

    #[test]
    fn warning_only_past_thirty_days_refreshed_or_half_a_year_embedded_and_it_says_how_to_refresh()
    {
        let now = ts("2026-11-27T12:00:00Z");
        // The embedded roots of a binary built today (ux review: 133 and 158 days old) are no warning.
        for snapshot in ["2026-10-27", "2026-06-30", "2026-05-31"] {
            assert_eq!(
                embedded(snapshot).age_warning(Instance::PublicGood, now),
                None,
                "{snapshot}"
            );
        }
        let w = embedded("2026-05-30")
            .age_warning(Instance::PublicGood, now)
            .unwrap();
        assert_eq!(
            w,
            "trust root for public-good Sigstore is 181 days old (embedded snapshot of 2026-05-30, never \
             refreshed through TUF); run online or `thv-sandbox trust refresh` to refresh"
        );
        assert_eq!(
            refreshed("2026-10-28T12:00:00Z").age_warning(Instance::GitHub, now),
            None
        );
        let w = refreshed("2026-10-13T11:00:00Z")
            .age_warning(Instance::GitHub, now)
            .unwrap();
        assert!(
            w.starts_with(
                "trust root for GitHub's Sigstore is 45 days old (last refreshed through TUF 2026-10-13)"
            ),
            "{w}"
        );
    }

    #[test]
    fn records_match_on_source_and_material_not_on_the_refresh_date() {
        let a = refreshed("2026-10-13T11:00:00Z");
        let later = refreshed("2026-11-13T11:00:00Z");
        assert!(a.same_material(&later));
        let mut other = later.clone();
        other.sha256 = "sha256:bb".into();
        assert!(!a.same_material(&other));
        // The same bytes embedded and through TUF are told apart.
        assert!(!a.same_material(&embedded("2026-07-24")));
        let old: TrustRootId = serde_json::from_str(
            r#"{"source":"embedded:tuf-repo-cdn.sigstore.dev","snapshot":"2026-07-24","sha256":"sha256:aa"}"#,
        )
        .unwrap();
        assert_eq!(old, embedded("2026-07-24"));
    }
}
