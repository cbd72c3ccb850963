//! **The provenance seam.** [`check_before_install`] is called by the install flow (`pipeline::packages`) once the
//! resolver has pinned every package of the tree (name, exact version, tarball or wheel URL, its sha512/sha256)
//! and before the installer downloads or runs anything of them. Its verdict decides whether the install goes on.
//!
//! With [`Checks`] it verifies package provenance (npm Sigstore attestations, PyPI PEP 740) through
//! [`crate::packages::provenance::check_lock`]; without, it checks nothing and says so ([`Verdict::NotChecked`]).

use super::lock::LockEntry;
use super::provenance::{check_lock, CheckError, Checks, TreeReport};
use super::spec::PackageSpec;

/// The verdict on a resolved tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No provenance was checked: the install goes on, and the run says so.
    NotChecked,
    /// Provenance checked: `verified` of `total` entries carry provenance that verified (the others none).
    Checked {
        /// Entries whose provenance verified.
        verified: usize,
        /// Entries in the tree.
        total: usize,
        /// Every package's verdict (for `inspect` / `--json`).
        report: Box<TreeReport>,
    },
    /// Refused: nothing is installed; the reason is said to the user.
    Refused {
        /// Why, naming the package.
        reason: String,
    },
}

impl Verdict {
    /// The line said on stderr for this verdict (none for a refusal: that is the error).
    pub fn line(&self, top: &PackageSpec) -> Option<String> {
        match self {
            Verdict::NotChecked => Some(format!(
                "{top}: package provenance was not checked (the package and its dependencies are pinned by \
                 their integrity hashes only)"
            )),
            Verdict::Checked { report, .. } => Some(format!("{top}: {}", report.summary_line())),
            Verdict::Refused { .. } => None,
        }
    }
}

/// The verdict on the installed tree as the install records it, committed inside the root next to the lock
/// ([`super::lock::PROVENANCE_PATH`]), for `inspect` of an installed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Recorded {
    /// No provenance was checked (`disabled`): the tree is pinned by its integrity hashes only.
    NotChecked,
    /// Every package's verdict.
    Checked {
        /// How many of the tree carry provenance, and each one's verdict.
        report: Box<TreeReport>,
    },
}

impl Verdict {
    /// What the install records of this verdict (`None` for a refusal: nothing is installed).
    pub fn recorded(&self) -> Option<Recorded> {
        match self {
            Verdict::NotChecked => Some(Recorded::NotChecked),
            Verdict::Checked { report, .. } => Some(Recorded::Checked {
                report: report.clone(),
            }),
            Verdict::Refused { .. } => None,
        }
    }
}

/// What the install flow calls with the resolved lock `entries` of `top` (the package asked for is among them)
/// before anything is installed. Returns the verdict; [`Verdict::Refused`] stops the install.
/// `checks`: `None` checks nothing ([`Verdict::NotChecked`]).
pub fn check_before_install(
    top: &PackageSpec,
    entries: &[LockEntry],
    checks: Option<&Checks>,
) -> Verdict {
    let Some(checks) = checks else {
        return Verdict::NotChecked;
    };
    match check_lock(top, entries, checks) {
        Ok(report) if report.mode == crate::trust::verification::Mode::Disabled => {
            Verdict::NotChecked
        }
        Ok(report) => Verdict::Checked {
            verified: report.verified(),
            total: report.total(),
            report: Box::new(report),
        },
        Err(CheckError::Refused(r)) => Verdict::Refused {
            reason: format!("{r} ({})", r.hint),
        },
        Err(e @ CheckError::Setup(_)) => Verdict::Refused {
            reason: e.to_string(),
        },
    }
}
