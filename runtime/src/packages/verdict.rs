//! **The provenance seam.** [`check_before_install`] is called by the install flow (`pipeline::packages`) once the
//! resolver has pinned every package of the tree (name, exact version, tarball or wheel URL, its sha512/sha256)
//! and before the installer downloads or runs anything of them. Its verdict decides whether the install goes on.
//!
//! Today it checks nothing and says so ([`Verdict::NotChecked`]); package provenance (npm Sigstore attestations,
//! PyPI PEP 740) is wired in here by `packages::provenance`.

use super::lock::LockEntry;
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
            Verdict::Checked { verified, total } => Some(format!(
                "{top}: provenance verified for {verified} of {total} packages of the tree"
            )),
            Verdict::Refused { .. } => None,
        }
    }
}

/// What the install flow calls with the resolved lock `entries` of `top` (the package asked for is among them)
/// before anything is installed. Returns the verdict; [`Verdict::Refused`] stops the install.
pub fn check_before_install(top: &PackageSpec, entries: &[LockEntry]) -> Verdict {
    let _ = (top, entries);
    Verdict::NotChecked
}
