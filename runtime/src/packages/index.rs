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
    /// Where [`Index::url`] came from (`file PATH`, `environment NAME`, `default`), for `inspect`.
    pub source: String,
    /// More pip indexes (`pypi_extra_indexes`, `PIP_EXTRA_INDEX_URL`).
    pub extra: Vec<String>,
    /// Where [`Index::extra`] came from.
    pub extra_source: String,
    /// `host:port` the install sandbox may reach (every index's, and PyPI's file host for PyPI).
    pub hosts: Vec<(String, u16)>,
}

/// An index URL that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("package index `{0}`: {1}")]
pub struct IndexError(pub String, pub String);

/// What the configuration (the file, resolved by `settings`) says for one ecosystem: each value with where it
/// came from (`file PATH`, `environment NAME`). `None`: not set there (the usual variables, then the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configured {
    /// The base image.
    pub base_image: Option<(String, String)>,
    /// The index URL.
    pub index: Option<(String, String)>,
    /// More pip indexes (replacing `PIP_EXTRA_INDEX_URL` as a whole).
    pub extra_indexes: Option<(Vec<String>, String)>,
}

/// The ecosystem's usual variables naming its index, in the order they are read.
pub fn index_variables(eco: Ecosystem) -> &'static [&'static str] {
    match eco {
        Ecosystem::Npm => &["npm_config_registry", "NPM_CONFIG_REGISTRY"],
        Ecosystem::Pypi => &["PIP_INDEX_URL", "UV_INDEX_URL"],
    }
}

/// The variable naming more pip indexes.
pub const PIP_EXTRA_INDEX_URL: &str = "PIP_EXTRA_INDEX_URL";

/// The public index of `eco`.
pub fn public_index(eco: Ecosystem) -> &'static str {
    match eco {
        Ecosystem::Npm => NPM_REGISTRY,
        Ecosystem::Pypi => PYPI_INDEX,
    }
}

/// The index for `eco`: `configured` (the config file) first, then the usual variables
/// (`npm_config_registry`/`NPM_CONFIG_REGISTRY`; `PIP_INDEX_URL`, `UV_INDEX_URL`, and `PIP_EXTRA_INDEX_URL`),
/// else the public index. Every URL is checked ([`check_url`]).
pub fn index_for(
    eco: Ecosystem,
    configured: &Configured,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Index, IndexError> {
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (url, source) = configured
        .index
        .clone()
        .or_else(|| {
            index_variables(eco)
                .iter()
                .find_map(|k| nonempty(k).map(|v| (v, format!("environment {k}"))))
        })
        .unwrap_or_else(|| (public_index(eco).to_owned(), "default".to_owned()));
    let (extra, extra_source) = match eco {
        Ecosystem::Npm => (Vec::new(), "default".to_owned()),
        Ecosystem::Pypi => configured
            .extra_indexes
            .clone()
            .or_else(|| {
                nonempty(PIP_EXTRA_INDEX_URL).map(|v| {
                    (
                        v.split_whitespace().map(str::to_owned).collect(),
                        format!("environment {PIP_EXTRA_INDEX_URL}"),
                    )
                })
            })
            .unwrap_or_else(|| (Vec::new(), "default".to_owned())),
    };
    let mut hosts = Vec::new();
    for (u, from) in
        std::iter::once((&url, &source)).chain(extra.iter().map(|u| (u, &extra_source)))
    {
        hosts.extend(
            check_url(eco, u)
                .map_err(|IndexError(u, why)| IndexError(u, format!("{why} (set by {from})")))?,
        );
    }
    hosts.dedup();
    Ok(Index {
        url,
        source,
        extra,
        extra_source,
        hosts,
    })
}

/// Checks an index URL of `eco` (http or https, a host, no credentials: nothing of the user's is written into the
/// install sandbox) and returns the `host:port` the install sandbox must reach for it (PyPI's adds its file host).
pub fn check_url(eco: Ecosystem, u: &str) -> Result<Vec<(String, u16)>, IndexError> {
    let parsed: http::Uri = u
        .parse()
        .map_err(|e: http::uri::InvalidUri| IndexError(u.to_owned(), e.to_string()))?;
    let scheme = parsed.scheme_str().unwrap_or_default();
    if !matches!(scheme, "https" | "http") {
        return Err(IndexError(
            u.to_owned(),
            "only http(s) indexes can be reached".into(),
        ));
    }
    let authority = parsed
        .authority()
        .ok_or_else(|| IndexError(u.to_owned(), "no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(IndexError(
            u.to_owned(),
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
    if host.is_empty() {
        return Err(IndexError(u.to_owned(), "no host".into()));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    let is_pypi = host == "pypi.org";
    let mut hosts = vec![(host, port)];
    if eco == Ecosystem::Pypi && is_pypi {
        hosts.push((PYPI_FILES_HOST.to_owned(), 443));
    }
    Ok(hosts)
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

    fn conf(url: &str) -> Configured {
        Configured {
            index: Some((url.to_owned(), "file /etc/thv.toml".to_owned())),
            ..Configured::default()
        }
    }

    #[test]
    fn defaults_and_variables() {
        let none = env_of(&[]);
        let npm = index_for(Ecosystem::Npm, &Configured::default(), &none).unwrap();
        assert_eq!(npm.hosts, vec![("registry.npmjs.org".to_owned(), 443)]);
        let pypi = index_for(Ecosystem::Pypi, &Configured::default(), &none).unwrap();
        assert_eq!(
            pypi.names(),
            vec!["pypi.org".to_owned(), "files.pythonhosted.org".to_owned()]
        );
        let mirror = env_of(&[
            ("PIP_INDEX_URL", "http://mirror.lan:3141/root/pypi/+simple/"),
            ("PIP_EXTRA_INDEX_URL", "https://extra.example/simple"),
        ]);
        let p = index_for(Ecosystem::Pypi, &Configured::default(), &mirror).unwrap();
        assert_eq!(
            p.hosts,
            vec![
                ("mirror.lan".to_owned(), 3141),
                ("extra.example".to_owned(), 443)
            ]
        );
        // The configured index wins over the variables.
        let c = index_for(
            Ecosystem::Pypi,
            &conf("https://idx.example/simple"),
            &mirror,
        )
        .unwrap();
        assert_eq!(c.url, "https://idx.example/simple");
        assert_eq!(c.source, "file /etc/thv.toml");
        let npmvar = env_of(&[("npm_config_registry", "https://npm.corp:8443/")]);
        assert_eq!(
            index_for(Ecosystem::Npm, &Configured::default(), &npmvar)
                .unwrap()
                .hosts,
            vec![("npm.corp".to_owned(), 8443)]
        );
        assert!(index_for(Ecosystem::Npm, &conf("https://u:p@npm.corp/"), &none).is_err());
        assert!(index_for(Ecosystem::Npm, &conf("file:///x"), &none).is_err());
        let o = npm.outbound();
        assert_eq!(o.allow.len(), 1);
        assert!(o.allow_host.is_empty() && !o.insecure_allow_all);
    }
}
