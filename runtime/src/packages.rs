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
//!   before anything is installed and returns the verdict (verified, unverified, refused).

pub mod index;
pub mod lock;
pub mod provenance;
pub mod spec;
pub mod verdict;

pub use spec::{Ecosystem, PackageSpec};

use crate::trust::verification::{Mode, Verification};

/// What `run npx://…`/`uvx://…` (and `pull`) installs, and from where: carried in the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Install {
    /// The package asked for.
    pub spec: PackageSpec,
    /// The index and the hosts the install sandbox may reach.
    pub index: index::Index,
    /// The CA bundle copied into the install sandbox.
    pub ca_file: Option<std::path::PathBuf>,
    /// The base image the package is installed onto (the request's image is this).
    pub base_image: String,
    /// Where [`Install::base_image`] came from (`flag --base-image`, `environment NAME`, `file PATH`,
    /// `default`), for `inspect`.
    pub base_image_source: String,
    /// What the package's provenance is verified against (the base image gets its own: [`base_verification`]):
    /// the policy is the pin (the identity flags, else the registry entry's `provenance`; then `enabled` is the
    /// default mode), `None` the identity the index declares for the package, under `warn`; the mode, trust
    /// root and TUF settings are the run's.
    pub verification: Verification,
}

impl Install {
    /// For `spec`: the base image (`--base-image`, else `THV_SANDBOX_NPX_BASE_IMAGE` /
    /// `THV_SANDBOX_UVX_BASE_IMAGE`, else the configuration's `npm_base_image` / `pypi_base_image`, else the
    /// pinned default), the index (the configuration's, else the usual variables, else the public one) and the
    /// CA bundle. `configured` is what the configuration file says for this ecosystem (with where it came
    /// from).
    pub fn new(
        spec: PackageSpec,
        base_image: Option<&str>,
        configured: &index::Configured,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Install, index::IndexError> {
        let var = base_image_variable(spec.ecosystem);
        let default = match spec.ecosystem {
            Ecosystem::Npm => index::DEFAULT_NODE_BASE,
            Ecosystem::Pypi => index::DEFAULT_PYTHON_BASE,
        };
        let (base_image, base_image_source) = base_image
            .map(|b| (b.to_owned(), "flag --base-image".to_owned()))
            .or_else(|| {
                env(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (v, format!("environment {var}")))
            })
            .or_else(|| configured.base_image.clone())
            .unwrap_or_else(|| (default.to_owned(), "default".to_owned()));
        Ok(Install {
            index: index::index_for(spec.ecosystem, configured, env)?,
            ca_file: index::ca_file(spec.ecosystem, env),
            spec,
            base_image,
            base_image_source,
            verification: Verification::default(),
        })
    }

    /// What names the installed tree besides the base image: the key tag of its root (`pkg-` and 16 hex digits
    /// of the hash of the package as asked for, [`INSTALL_VERSION`] and the enforced pin). The index is not in
    /// it: a root, once installed, is what every later run of the same package on the same base uses, whatever
    /// index is configured then or whether it is reachable (the lock inside the root records the index it came
    /// from; `rmi`/`prune` and a new install take another).
    ///
    /// The pin is, when it is enforced (mode `enabled`): the install was admitted only because the package's
    /// provenance names that identity, and runs from the root do not check again (they are offline). So a root
    /// installed unpinned, or under `warn`, is never what a pinned entry runs, nor one installed under another
    /// pin.
    pub fn key_tag(&self) -> String {
        use sha2::Digest;
        let mut text = format!("v{INSTALL_VERSION}\n{}\n", self.spec);
        if let Some(pin) = self.enforced_pin() {
            text.push_str(&serde_json::to_string(pin).unwrap_or_default());
            text.push('\n');
        }
        let hash = sha2::Sha256::digest(text.as_bytes());
        format!("pkg-{}", &hex::encode(hash)[..16])
    }

    /// The pin the install is held to under `enabled` (nothing under `warn` or `disabled`, or without a pin).
    pub fn enforced_pin(&self) -> Option<&thv_sandbox_provenance::Policy> {
        let v = &self.verification;
        (v.effective_mode() == Mode::Enabled)
            .then_some(v.policy.as_ref())
            .flatten()
    }
}

/// What the base image a package is installed onto is verified against, from the package's verification: never
/// the package's pin (the base is another artifact, signed by other people, if at all). A base pinned by digest
/// (the defaults in the binary, or `--base-image IMAGE@sha256:…`) or an OCI layout on disk (`oci:`) is not
/// verified: the digest is its integrity, the layout is the user's own. A base named by tag is verified under
/// `warn` without an identity (`disabled` when the run's mode is `disabled`): its provenance is said, never
/// required. The trust root and TUF settings are the run's.
pub fn base_verification(base_image: &str, package: &Verification) -> Verification {
    let pinned = base_image.starts_with("oci:")
        || base_image
            .parse::<crate::image::reference::Reference>()
            .is_ok_and(|r| r.digest().is_some());
    let mode = match (pinned, package.mode) {
        (true, _) | (false, Some(Mode::Disabled)) => Mode::Disabled,
        (false, _) => Mode::Warn,
    };
    Verification {
        mode: Some(mode),
        policy: None,
        server: None,
        ..package.clone()
    }
}

/// The variable naming the base image of `eco`'s packages.
pub fn base_image_variable(eco: Ecosystem) -> &'static str {
    match eco {
        Ecosystem::Npm => "THV_SANDBOX_NPX_BASE_IMAGE",
        Ecosystem::Pypi => "THV_SANDBOX_UVX_BASE_IMAGE",
    }
}

/// Bumped whenever the install would produce a different tree from the same lock.
pub const INSTALL_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use thv_sandbox_provenance as prov;

    fn pin(repo: &str) -> prov::Policy {
        prov::Policy::Provenance(prov::Provenance {
            repository_uri: Some(format!("https://github.com/{repo}")),
            signer_identity: Some("/.github/workflows/release.yml".into()),
            cert_issuer: Some(prov::GITHUB_ACTIONS_ISSUER.into()),
            ..prov::Provenance::default()
        })
    }

    fn install(base: Option<&str>, verification: Verification) -> Install {
        let spec = spec::parse("npx://left-pad@1.3.0").unwrap().unwrap();
        let mut i = Install::new(spec, base, &index::Configured::default(), &|_| None).unwrap();
        i.verification = verification;
        i
    }

    /// A registry entry's pin is the package's: the base image is never held to it. A base pinned by digest (the
    /// default) or a layout is not verified; one named by tag is verified under `warn`, without an identity.
    #[test]
    fn the_pin_is_the_packages_and_the_base_image_gets_its_own() {
        let run = Verification {
            policy: Some(pin("stacklok/pkg")),
            trust_root: Some("/etc/thv/trusted_root.json".into()),
            server: Some("io.github.stacklok/pkg".into()),
            ..Verification::default()
        };
        for (base, mode) in [
            (None, Mode::Disabled),
            (Some("oci:/srv/bases:node"), Mode::Disabled),
            (
                Some("docker.io/library/node@sha256:f32b81066cde10a75dbac96646099533316d94bac4150c55da1636e1f0ffdc46"),
                Mode::Disabled,
            ),
            (Some("node:22-bookworm-slim"), Mode::Warn),
            (Some("ghcr.io/me/node-base:1"), Mode::Warn),
        ] {
            let i = install(base, run.clone());
            assert_eq!(i.verification.policy, Some(pin("stacklok/pkg")));
            assert_eq!(i.verification.effective_mode(), Mode::Enabled);
            let b = base_verification(&i.base_image, &i.verification);
            assert_eq!(b.policy, None, "{base:?}");
            assert_eq!(b.server, None, "{base:?}");
            assert_eq!(b.mode, Some(mode), "{base:?}");
            assert_eq!(b.trust_root, run.trust_root, "{base:?}");
        }
        // The run's `disabled` is the base's too; `enabled` (the user's, or by the pin) never reaches a tag base.
        for (mode, want) in [
            (Some(Mode::Disabled), Mode::Disabled),
            (Some(Mode::Enabled), Mode::Warn),
            (Some(Mode::Warn), Mode::Warn),
            (None, Mode::Warn),
        ] {
            let v = Verification {
                mode,
                ..run.clone()
            };
            assert_eq!(base_verification("node:22", &v).mode, Some(want));
        }
    }

    /// A root installed under an enforced pin is named by it: an unpinned or `warn` install (nothing checked
    /// against the pin) is never what a pinned entry runs from, nor an install under another pin.
    #[test]
    fn the_enforced_pin_names_the_root() {
        let unpinned = install(None, Verification::default()).key_tag();
        let pinned = |repo: &str, mode: Option<Mode>| {
            install(
                None,
                Verification {
                    mode,
                    policy: Some(pin(repo)),
                    ..Verification::default()
                },
            )
        };
        let a = pinned("stacklok/pkg", None);
        assert_eq!(a.enforced_pin(), Some(&pin("stacklok/pkg")));
        assert_ne!(a.key_tag(), unpinned);
        assert_eq!(
            a.key_tag(),
            pinned("stacklok/pkg", Some(Mode::Enabled)).key_tag()
        );
        assert_ne!(a.key_tag(), pinned("attacker/pkg", None).key_tag());
        // Under `warn` the pin decides nothing: the unpinned root.
        assert_eq!(pinned("stacklok/pkg", Some(Mode::Warn)).key_tag(), unpinned);
        assert_eq!(
            pinned("stacklok/pkg", Some(Mode::Disabled)).enforced_pin(),
            None
        );
        assert!(a.key_tag().starts_with("pkg-") && a.key_tag().len() == 20);
    }
}
