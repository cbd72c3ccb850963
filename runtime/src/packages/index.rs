//! Where packages come from, and what the install sandbox may reach: the index (the configured one, else the
//! usual npm/pip variables, else the public index), the hosts of that index as egress rules, and the CA bundle
//! the installer trusts. Also the default base images.

use super::spec::Ecosystem;

/// The official slim Node LTS image, pinned by digest (`node:22-bookworm-slim`). Not pulled on the machine this
/// was written on (it cannot reach Docker Hub): see README.
pub const DEFAULT_NODE_BASE: &str = "docker.io/library/node:22-bookworm-slim@sha256:f32b81066cde10a75dbac96646099533316d94bac4150c55da1636e1f0ffdc46";
/// The official slim Python image, pinned by digest (`python:3.12-slim-bookworm`); it has pip, not uv. Not
/// pulled on the machine this was written on: see README.
pub const DEFAULT_PYTHON_BASE: &str = "docker.io/library/python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254";

/// The public indexes.
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org/";
/// PyPI's simple index.
pub const PYPI_INDEX: &str = "https://pypi.org/simple";
/// Where PyPI's files are.
pub const PYPI_FILES_HOST: &str = "files.pythonhosted.org";

/// The index an install uses, and what its sandbox may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The index URL (npm registry, or pip's index URL).
    pub url: String,
    /// More pip indexes (`PIP_EXTRA_INDEX_URL`).
    pub extra: Vec<String>,
    /// `host:port` the install sandbox may reach (every index's, and PyPI's file host for PyPI).
    pub hosts: Vec<(String, u16)>,
}

/// An index URL that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("package index `{0}`: {1}")]
pub struct IndexError(pub String, pub String);

/// The index for `eco`: `configured` (the config file or flag) first, then the usual variables
/// (`npm_config_registry`/`NPM_CONFIG_REGISTRY`; `PIP_INDEX_URL`, `UV_INDEX_URL`, and `PIP_EXTRA_INDEX_URL`),
/// else the public index.
pub fn index_for(
    eco: Ecosystem,
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Index, IndexError> {
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (url, extra) = match eco {
        Ecosystem::Npm => (
            configured
                .map(str::to_owned)
                .or_else(|| nonempty("npm_config_registry"))
                .or_else(|| nonempty("NPM_CONFIG_REGISTRY"))
                .unwrap_or_else(|| NPM_REGISTRY.to_owned()),
            Vec::new(),
        ),
        Ecosystem::Pypi => (
            configured
                .map(str::to_owned)
                .or_else(|| nonempty("PIP_INDEX_URL"))
                .or_else(|| nonempty("UV_INDEX_URL"))
                .unwrap_or_else(|| PYPI_INDEX.to_owned()),
            nonempty("PIP_EXTRA_INDEX_URL")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        ),
    };
    let mut hosts = Vec::new();
    for u in std::iter::once(&url).chain(&extra) {
        let parsed: http::Uri = u
            .parse()
            .map_err(|e: http::uri::InvalidUri| IndexError(u.clone(), e.to_string()))?;
        let scheme = parsed.scheme_str().unwrap_or_default();
        if !matches!(scheme, "https" | "http") {
            return Err(IndexError(
                u.clone(),
                "only http(s) indexes can be reached".into(),
            ));
        }
        let authority = parsed
            .authority()
            .ok_or_else(|| IndexError(u.clone(), "no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(IndexError(
                u.clone(),
                "credentials in the index URL would be written into the install sandbox; private indexes \
                 with credentials are not supported yet"
                    .into(),
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let is_pypi = host == "pypi.org";
        hosts.push((host, port));
        if eco == Ecosystem::Pypi && is_pypi {
            hosts.push((PYPI_FILES_HOST.to_owned(), 443));
        }
    }
    hosts.dedup();
    Ok(Index { url, extra, hosts })
}

impl Index {
    /// The egress rules of the install sandbox: these hosts on these ports, nothing else.
    pub fn outbound(&self) -> crate::sandbox::egress::Outbound {
        crate::sandbox::egress::Outbound {
            allow: self
                .hosts
                .iter()
                .map(|(h, p)| crate::sandbox::egress::AllowRule {
                    host: Some(h.clone()),
                    port: Some(*p),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The host names of the index (which may lead to local addresses: see `Rules::with_local_names`).
    pub fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|(h, _)| h.clone()).collect()
    }
}

/// The CA bundle the installer trusts: `THV_SANDBOX_PACKAGE_CA_FILE`, else the ecosystem's usual variable
/// (`NODE_EXTRA_CA_CERTS`, `npm_config_cafile`; `PIP_CERT`, `REQUESTS_CA_BUNDLE`), else `SSL_CERT_FILE`, else
/// the host's system bundle. It is copied into the install sandbox (a public bundle, no secret), not the user's
/// files around it.
pub fn ca_file(eco: Ecosystem, env: &dyn Fn(&str) -> Option<String>) -> Option<std::path::PathBuf> {
    let vars: &[&str] = match eco {
        Ecosystem::Npm => &[
            "THV_SANDBOX_PACKAGE_CA_FILE",
            "NODE_EXTRA_CA_CERTS",
            "npm_config_cafile",
        ],
        Ecosystem::Pypi => &[
            "THV_SANDBOX_PACKAGE_CA_FILE",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
        ],
    };
    vars.iter()
        .chain(&["SSL_CERT_FILE"])
        .filter_map(|k| env(k))
        .map(std::path::PathBuf::from)
        .chain(std::iter::once(std::path::PathBuf::from(
            "/etc/ssl/certs/ca-certificates.crt",
        )))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_and_variables() {
        let none = env_of(&[]);
        let npm = index_for(Ecosystem::Npm, None, &none).unwrap();
        assert_eq!(npm.hosts, vec![("registry.npmjs.org".to_owned(), 443)]);
        let pypi = index_for(Ecosystem::Pypi, None, &none).unwrap();
        assert_eq!(
            pypi.names(),
            vec!["pypi.org".to_owned(), "files.pythonhosted.org".to_owned()]
        );
        let mirror = env_of(&[
            ("PIP_INDEX_URL", "http://mirror.lan:3141/root/pypi/+simple/"),
            ("PIP_EXTRA_INDEX_URL", "https://extra.example/simple"),
        ]);
        let p = index_for(Ecosystem::Pypi, None, &mirror).unwrap();
        assert_eq!(
            p.hosts,
            vec![
                ("mirror.lan".to_owned(), 3141),
                ("extra.example".to_owned(), 443)
            ]
        );
        // The configured index wins over the variables.
        let c = index_for(Ecosystem::Pypi, Some("https://idx.example/simple"), &mirror).unwrap();
        assert_eq!(c.url, "https://idx.example/simple");
        let npmvar = env_of(&[("npm_config_registry", "https://npm.corp:8443/")]);
        assert_eq!(
            index_for(Ecosystem::Npm, None, &npmvar).unwrap().hosts,
            vec![("npm.corp".to_owned(), 8443)]
        );
        assert!(index_for(Ecosystem::Npm, Some("https://u:p@npm.corp/"), &none).is_err());
        assert!(index_for(Ecosystem::Npm, Some("file:///x"), &none).is_err());
        let o = npm.outbound();
        assert_eq!(o.allow.len(), 1);
        assert!(o.allow_host.is_empty() && !o.insecure_allow_all);
    }
}
