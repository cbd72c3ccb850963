//! Servers that ship as npm or PyPI packages (issue 16): `npx://PACKAGE[@VERSION]` and `uvx://PACKAGE[@VERSION]`
//! (also `uvx://PACKAGE[EXTRAS]==VERSION`).
//!
//! Pure parts live here; the install itself (a sandbox on the base image's staging root) is
//! `pipeline::packages`, which runs what these modules describe:
//! - [`spec`]: the package named on the command line, checked and normalized.
//! - [`index`]: where the package index is (the configured one, the usual npm/pip variables), the hosts the
//!   install sandbox may reach and the CA bundle it trusts; the default base images.
//! - [`lock`]: what the resolver chose (exact versions, tarball/wheel URLs and their integrity hashes), read from
//!   npm's `package-lock.json` or pip's installation report, and the lock committed inside the root.
//! - [`provenance`]: package provenance (npm attestations, PyPI PEP 740) verified before anything is installed.
//! - [`verdict`]: **the provenance seam**: [`verdict::check_before_install`] receives the resolved lock entries
//!   before anything is installed and returns the verdict (today: nothing checked).

pub mod index;
pub mod lock;
pub mod provenance;
pub mod spec;
pub mod verdict;

pub use spec::{Ecosystem, PackageSpec};

/// What `run npx://…`/`uvx://…` (and `pull`) installs, and from where: carried in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The package asked for.
    pub spec: PackageSpec,
    /// The index and the hosts the install sandbox may reach.
    pub index: index::Index,
    /// The CA bundle copied into the install sandbox.
    pub ca_file: Option<std::path::PathBuf>,
    /// The base image the package is installed onto (the request's image is this).
    pub base_image: String,
    /// The identity the package's provenance must name, when a registry entry pins one (then `enabled` is the
    /// default mode); `None`: the identity the index declares for it, under `warn`.
    pub provenance: Option<thv_sandbox_provenance::Provenance>,
}

impl Install {
    /// For `spec`: the base image (`--base-image`, else `THV_SANDBOX_NPX_BASE_IMAGE` /
    /// `THV_SANDBOX_UVX_BASE_IMAGE`, else the pinned default), the index (configured, else the usual variables,
    /// else the public one) and the CA bundle.
    pub fn new(
        spec: PackageSpec,
        base_image: Option<&str>,
        configured_index: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Install, index::IndexError> {
        let (var, default) = match spec.ecosystem {
            Ecosystem::Npm => ("THV_SANDBOX_NPX_BASE_IMAGE", index::DEFAULT_NODE_BASE),
            Ecosystem::Pypi => ("THV_SANDBOX_UVX_BASE_IMAGE", index::DEFAULT_PYTHON_BASE),
        };
        let base_image = base_image
            .map(str::to_owned)
            .or_else(|| env(var).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| default.to_owned());
        Ok(Install {
            index: index::index_for(spec.ecosystem, configured_index, env)?,
            ca_file: index::ca_file(spec.ecosystem, env),
            spec,
            base_image,
            provenance: None,
        })
    }

    /// What names the installed tree besides the base image: the key tag of its root (`pkg-` and 16 hex digits
    /// of the hash of the package as asked for and [`INSTALL_VERSION`]). The index is not in it: a root, once
    /// installed, is what every later run of the same package on the same base uses, whatever index is
    /// configured then or whether it is reachable (the lock inside the root records the index it came from;
    /// `rmi`/`prune` and a new install take another).
    pub fn key_tag(&self) -> String {
        use sha2::Digest;
        let text = format!("v{INSTALL_VERSION}\n{}\n", self.spec);
        let hash = sha2::Sha256::digest(text.as_bytes());
        format!("pkg-{}", &hex::encode(hash)[..16])
    }
}

/// Bumped whenever the install would produce a different tree from the same lock.
pub const INSTALL_VERSION: u32 = 1;
