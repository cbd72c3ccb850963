//! The curated server registry ("catalog"): which image a server name means, what it needs and what it may touch.
//!
//! Two formats are read, the two ToolHive has used:
//! - **legacy** ([`legacy`]): `{"servers": {NAME: entry}, "remote_servers": {NAME: entry}}`, the format of the
//!   registry ToolHive shipped embedded until February 2026 (our embedded default is a copy of its last version);
//! - **upstream** ([`upstream`]): the MCP registry's `server.json` list under `data.servers`, ToolHive's own fields
//!   under `_meta["io.modelcontextprotocol.registry/publisher-provided"]["io.github.stacklok"][IMAGE or URL]`.
//!
//! Both become the same [`Server`] model. Unknown fields are ignored; a field of the wrong type or value is an
//! error naming the entry and the field ([`CatalogError::Entry`]).
//!
//! Names: legacy names are the object keys (`time`); upstream names are reverse-DNS (`io.github.stacklok/fetch`)
//! and also answer to the part after the last `/` (`fetch`) when no other entry has the same short name
//! ([`Catalog::find`]).
//!
//! # Proposed field: `seccomp_profile`
//! A registry entry (legacy entry, or the upstream `io.github.stacklok` extension object) may carry
//! `"seccomp_profile": "NAME"`: the name of one of the reviewed seccomp variants shipped in `sandbox-profiles/`
//! (for example a variant for runtimes that need extra syscalls). It is only a name, never rules: a registry can
//! choose among profiles we reviewed, not write its own. A name this build does not ship refuses the run. Absent
//! means the default profile. ToolHive itself ignores the field.
//!
//! # Proposed field: `resources`
//! `"resources": {"memory": "4g", "cpus": "2", "pids": "2048"}` (each optional, strings or numbers): the limits
//! the server's maintainers propose for it (see `crate::sandbox::limits`): a browser-driving server needs more
//! memory than the default. They replace the defaults only: the user's `--memory`/`--cpus`/`--pids-limit` and the
//! configuration file win. ToolHive itself ignores the field.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

pub mod env;
pub mod launch;
pub mod legacy;
pub mod source;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use env::{EnvArg, EnvError, EnvValue, ResolvedVar};
pub use launch::{Launch, LaunchError, NetworkMode};
pub use source::{Loaded, RegistrySource};

/// How a server speaks MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// JSON-RPC over the process's stdin/stdout.
    Stdio,
    /// HTTP with server-sent events (the older MCP HTTP transport).
    Sse,
    /// Streamable HTTP.
    StreamableHttp,
}

impl Transport {
    /// The name as registries write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Sse => "sse",
            Transport::StreamableHttp => "streamable-http",
        }
    }

    /// The HTTP transport the sandbox's bridge speaks to such a server; `None` for a stdio server.
    pub fn over_http(self) -> Option<crate::sandbox::bridge::HttpTransport> {
        match self {
            Transport::Stdio => None,
            Transport::Sse => Some(crate::sandbox::bridge::HttpTransport::Sse),
            Transport::StreamableHttp => {
                Some(crate::sandbox::bridge::HttpTransport::StreamableHttp)
            }
        }
    }
}

impl From<crate::sandbox::bridge::HttpTransport> for Transport {
    fn from(t: crate::sandbox::bridge::HttpTransport) -> Transport {
        match t {
            crate::sandbox::bridge::HttpTransport::Sse => Transport::Sse,
            crate::sandbox::bridge::HttpTransport::StreamableHttp => Transport::StreamableHttp,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An environment variable a server takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVarSpec {
    /// The variable's name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The server does not work without it.
    pub required: bool,
    /// Its value is sensitive: never logged, never written to a file.
    pub secret: bool,
    /// The value used when none is given (only for variables that are not required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// ToolHive's permission profile: host paths to mount, network egress, privilege.
///
/// `read` and `write` entries are `PATH` (the same path inside) or `HOST:CONTAINER`; `read` ones are mounted
/// read-only. The built-in profiles are [`PermissionProfile::none`] and [`PermissionProfile::network`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionProfile {
    /// The profile's name, when it has one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_default"
    )]
    pub name: Option<String>,
    /// Paths mounted read-only.
    #[serde(default, deserialize_with = "null_default")]
    pub read: Vec<String>,
    /// Paths mounted read-write.
    #[serde(default, deserialize_with = "null_default")]
    pub write: Vec<String>,
    /// Network rules.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_default"
    )]
    pub network: Option<NetworkPermissions>,
    /// Run privileged (never granted by thv-sandbox; see [`launch`]).
    #[serde(default, deserialize_with = "null_default")]
    pub privileged: bool,
}

/// The `network` part of a permission profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPermissions {
    /// Outbound connections.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "null_default"
    )]
    pub outbound: Option<OutboundPermissions>,
}

/// Outbound connections a server may make.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundPermissions {
    /// Anything anywhere.
    #[serde(default, deserialize_with = "null_default")]
    pub insecure_allow_all: bool,
    /// Host names; a leading `.` means the domain and all its subdomains.
    #[serde(default, deserialize_with = "null_default")]
    pub allow_host: Vec<String>,
    /// Ports (alone: any host on these ports).
    #[serde(default, deserialize_with = "null_default")]
    pub allow_port: Vec<u16>,
}

impl PermissionProfile {
    /// The built-in `none`: no mounts, no egress.
    pub fn none() -> PermissionProfile {
        PermissionProfile {
            name: Some("none".into()),
            ..PermissionProfile::default()
        }
    }

    /// The built-in `network`: no mounts, all egress.
    pub fn network() -> PermissionProfile {
        PermissionProfile {
            name: Some("network".into()),
            network: Some(NetworkPermissions {
                outbound: Some(OutboundPermissions {
                    insecure_allow_all: true,
                    ..OutboundPermissions::default()
                }),
            }),
            ..PermissionProfile::default()
        }
    }

    /// The outbound rules, if there are any.
    pub fn outbound(&self) -> Option<&OutboundPermissions> {
        self.network.as_ref()?.outbound.as_ref()
    }

    /// Whether the profile asks for any outbound network access.
    pub fn wants_network(&self) -> bool {
        self.outbound().is_some_and(|o| {
            o.insecure_allow_all || !o.allow_host.is_empty() || !o.allow_port.is_empty()
        })
    }

    /// The network access asked for, in words (`None` when none is asked for).
    pub fn describe_network(&self) -> Option<String> {
        let o = self.outbound()?;
        if o.insecure_allow_all {
            return Some("all outbound connections (insecure_allow_all)".into());
        }
        let ports = o
            .allow_port
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match (o.allow_host.is_empty(), o.allow_port.is_empty()) {
            (true, true) => None,
            (false, true) => Some(format!(
                "outbound to {} (any port)",
                o.allow_host.join(", ")
            )),
            (true, false) => Some(format!("outbound to any host on port {ports}")),
            (false, false) => Some(format!(
                "outbound to {} on port {ports}",
                o.allow_host.join(", ")
            )),
        }
    }
}

/// Where and how an image was built, as the registry states it: what Sigstore verification checks the image's
/// signature against. Field names and meanings are ToolHive's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The Sigstore TUF repository host (`tuf-repo-cdn.sigstore.dev`, `tuf-repo.github.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_url: Option<String>,
    /// The source repository the image must have been built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_uri: Option<String>,
    /// The repository ref it must have been built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_ref: Option<String>,
    /// The signer identity (for GitHub Actions: the workflow path, `/.github/workflows/release.yml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_identity: Option<String>,
    /// Where the build ran (`github-hosted`, `self-hosted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
    /// The OIDC issuer of the signing certificate (`https://token.actions.githubusercontent.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issuer: Option<String>,
    /// An attestation the image carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
}

/// A verified attestation (in-toto predicate) named by the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The predicate type (`https://slsa.dev/provenance/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    /// The predicate itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<serde_json::Value>,
}

/// Whether an entry's image can be verified, from what the registry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifiability {
    /// Sigstore keyless: identity and issuer are known.
    Sigstore,
    /// Provenance is given but lacks fields keyless verification needs (named).
    Incomplete(Vec<&'static str>),
    /// No provenance: the image cannot be verified.
    NoProvenance,
}

impl Provenance {
    /// What keyless verification can do with this provenance.
    pub fn verifiability(&self) -> Verifiability {
        let mut missing = Vec::new();
        if self.signer_identity.as_deref().is_none_or(str::is_empty) {
            missing.push("signer_identity");
        }
        if self.cert_issuer.as_deref().is_none_or(str::is_empty) {
            missing.push("cert_issuer");
        }
        if self.repository_uri.as_deref().is_none_or(str::is_empty) {
            missing.push("repository_uri");
        }
        if missing.is_empty() {
            Verifiability::Sigstore
        } else {
            Verifiability::Incomplete(missing)
        }
    }
}

/// The verification policy of a registry entry's declared provenance (ToolHive semantics; never "any identity").
impl From<&Provenance> for thv_sandbox_provenance::Policy {
    fn from(p: &Provenance) -> Self {
        use thv_sandbox_provenance as prov;
        prov::Policy::Provenance(prov::Provenance {
            sigstore_url: p.sigstore_url.clone(),
            repository_uri: p.repository_uri.clone(),
            repository_ref: p.repository_ref.clone(),
            signer_identity: p.signer_identity.clone(),
            runner_environment: p.runner_environment.clone(),
            cert_issuer: p.cert_issuer.clone(),
            attestation: p.attestation.as_ref().map(|a| prov::Attestation {
                predicate_type: a.predicate_type.clone(),
                predicate: a.predicate.clone(),
            }),
        })
    }
}

/// One server of the registry, in either format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// Full name (`time`, `io.github.stacklok/fetch`).
    pub name: String,
    /// Display name, if the registry gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What it does.
    pub description: String,
    /// The container image (container servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The endpoint (remote servers: a URL to connect to, not a container to run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How it speaks MCP.
    pub transport: Transport,
    /// The port it listens on inside the container (HTTP transports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// Arguments for the server (they replace the image's Cmd; the user's are appended).
    pub args: Vec<String>,
    /// Tool names.
    pub tools: Vec<String>,
    /// Search tags.
    pub tags: Vec<String>,
    /// Environment variables it takes.
    pub env_vars: Vec<EnvVarSpec>,
    /// What it may touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionProfile>,
    /// How its image can be verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// A reviewed seccomp variant (see the module documentation); `None` is the default profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<String>,
    /// Proposed resource limits (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// `Active` or `Deprecated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Official` or `Community`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Source repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
}

impl Server {
    /// A remote server: an endpoint, not something thv-sandbox runs.
    pub fn is_remote(&self) -> bool {
        self.image.is_none()
    }

    /// The name after the last `/` (the whole name for legacy names).
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }

    /// Whether the image can be verified.
    pub fn verifiability(&self) -> Verifiability {
        self.provenance
            .as_ref()
            .map_or(Verifiability::NoProvenance, Provenance::verifiability)
    }
}

fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Which format a registry file was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `servers` + `remote_servers` objects.
    Legacy,
    /// MCP registry `server.json` list.
    Upstream,
}

/// A loaded registry.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The format it was read from.
    pub format: Format,
    /// When the registry says it was last updated.
    pub last_updated: Option<String>,
    /// Its servers, sorted by name.
    pub servers: Vec<Server>,
}

/// Everything loading or looking up a registry can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not JSON.
    #[error("MCP server registry {origin} is not valid JSON")]
    Json {
        /// Where it came from.
        origin: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but in neither format.
    #[error("MCP server registry {origin} is in no format thv-sandbox knows: {detail}")]
    Format {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// One entry is invalid.
    #[error("MCP server registry {origin}: entry `{entry}`: field `{field}`: {problem}")]
    Entry {
        /// Where it came from.
        origin: String,
        /// The entry's name (or position, for an upstream entry without a name).
        entry: String,
        /// The field, as a path (`env_vars[0].required`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two entries have the same full name.
    #[error("MCP server registry {origin}: `{name}` is listed more than once")]
    Duplicate {
        /// Where it came from.
        origin: String,
        /// The name.
        name: String,
    },
    /// A registry file cannot be read.
    #[error("cannot read the MCP server registry file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A registry URL is not acceptable.
    #[error("MCP server registry URL `{url}` is not allowed: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A remote registry could not be fetched and no copy is cached.
    #[error("cannot fetch the MCP server registry {url} ({detail}), and no copy of it is cached")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: source::FetchError,
    },
    /// No entry has this name.
    #[error("no MCP server named `{name}` in the MCP server registry{}", suggest(.suggestions))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Names that look similar.
        suggestions: Vec<String>,
    },
    /// A short name matches several entries.
    #[error("`{name}` matches several servers of the MCP server registry: {}; use the full name", .candidates.join(", "))]
    Ambiguous {
        /// The short name asked for.
        name: String,
        /// The full names it matches.
        candidates: Vec<String>,
    },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

impl CatalogError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            CatalogError::Json { .. } | CatalogError::Format { .. } => {
                "point --registry (or THV_SANDBOX_REGISTRY) at a ToolHive registry: the legacy format \
                 (`servers`/`remote_servers`) or the upstream MCP-registry format (`data.servers`)"
                    .into()
            }
            CatalogError::Entry { .. } | CatalogError::Duplicate { .. } => {
                "fix the entry in the MCP server registry file, or use another MCP server registry with --registry".into()
            }
            CatalogError::Read { .. } => {
                "check the path given with --registry or THV_SANDBOX_REGISTRY".into()
            }
            CatalogError::BadUrl { .. } => {
                "registries are fetched over https (plain http only from loopback)".into()
            }
            CatalogError::Fetch { .. } => {
                "check the URL and the network; once fetched, an MCP server registry is cached for offline use".into()
            }
            CatalogError::NotFound { .. } => {
                "`thv-sandbox registry search WORD` finds servers; `registry list` lists them all".into()
            }
            CatalogError::Ambiguous { .. } => return None,
        })
    }
}

impl Catalog {
    /// Parses a registry document in either format; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Catalog, CatalogError> {
        let catalog = match legacy::parse_text(bytes, origin) {
            Some(c) => c,
            None => Catalog::parse_values(bytes, origin)?,
        };
        catalog.sorted(origin)
    }

    /// [`Catalog::parse`] the general way: the whole document as a `serde_json::Value` first (either format; the
    /// errors are worded here).
    fn parse_values(bytes: &[u8], origin: &str) -> Result<Catalog, CatalogError> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| CatalogError::Json {
                origin: origin.to_owned(),
                source,
            })?;
        let format_err = |detail: &str| CatalogError::Format {
            origin: origin.to_owned(),
            detail: detail.to_owned(),
        };
        let obj = doc
            .as_object()
            .ok_or_else(|| format_err("the document is not a JSON object"))?;
        if obj.get("data").is_some_and(|d| d.get("servers").is_some()) {
            upstream::parse(obj, origin)
        } else if obj.contains_key("servers") || obj.contains_key("remote_servers") {
            legacy::parse(obj, origin)
        } else {
            Err(format_err(
                "it has neither `servers` (legacy format) nor `data.servers` (upstream format)",
            ))
        }
    }

    /// Sorted by name; two entries of one name are refused.
    fn sorted(mut self, origin: &str) -> Result<Catalog, CatalogError> {
        self.servers.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = self.servers.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(CatalogError::Duplicate {
                origin: origin.to_owned(),
                name: w[0].name.clone(),
            });
        }
        Ok(self)
    }

    /// The entry `name` answers to: its full name, or a short name (the part after the last `/`) that only one
    /// entry has. `Ok(None)` when no entry matches; [`CatalogError::Ambiguous`] when several do.
    ///
    /// Names are matched exactly first, then regardless of case (`run Time` is `time`; an image reference is
    /// never uppercase, so no image is shadowed).
    pub fn find(&self, name: &str) -> Result<Option<&Server>, CatalogError> {
        let exact = |a: &str, b: &str| a == b;
        let folded = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        for same in [&exact as &dyn Fn(&str, &str) -> bool, &folded] {
            if let Some(s) = self.servers.iter().find(|s| same(&s.name, name)) {
                return Ok(Some(s));
            }
            let matches: Vec<&Server> = self
                .servers
                .iter()
                .filter(|s| same(s.short_name(), name))
                .collect();
            match matches.as_slice() {
                [] => continue,
                [one] => return Ok(Some(one)),
                many => {
                    return Err(CatalogError::Ambiguous {
                        name: name.to_owned(),
                        candidates: many.iter().map(|s| s.name.clone()).collect(),
                    })
                }
            }
        }
        Ok(None)
    }

    /// [`Catalog::find`], with [`CatalogError::NotFound`] (and suggestions) when nothing matches.
    pub fn get(&self, name: &str) -> Result<&Server, CatalogError> {
        self.find(name)?.ok_or_else(|| CatalogError::NotFound {
            name: name.to_owned(),
            suggestions: self.similar(name),
        })
    }

    /// Entries whose short name is one or two edits away from `name` (a likely typo), for a bare word that is not
    /// in the registry: `run tiime` should not quietly become a pull of `docker.io/library/tiime`.
    pub fn typo_of(&self, name: &str) -> Vec<String> {
        let q = name.to_lowercase();
        let bare = !q.is_empty()
            && q.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !bare || q.len() < 4 {
            return Vec::new();
        }
        self.servers
            .iter()
            .filter(|s| {
                let short = s.short_name().to_lowercase();
                short != q && edit_distance(&q, &short) <= 2
            })
            .map(|s| s.name.clone())
            .take(5)
            .collect()
    }

    /// Names containing `name`, contained in it, or within two edits of it (case-insensitive), at most five.
    fn similar(&self, name: &str) -> Vec<String> {
        let q = name.to_lowercase();
        if q.is_empty() {
            return Vec::new();
        }
        self.servers
            .iter()
            .filter(|s| {
                let short = s.short_name().to_lowercase();
                short.contains(&q)
                    || (q.contains(&short) && short.len() >= 3)
                    || (q.len() >= 3 && edit_distance(&q, &short) <= 2)
            })
            .map(|s| s.name.clone())
            .take(5)
            .collect()
    }

    /// Servers whose name, title, description, tags or tools contain every word of `query` (case-insensitive).
    pub fn search(&self, query: &str) -> Vec<&Server> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        self.servers
            .iter()
            .filter(|s| {
                let mut hay = format!(
                    "{} {} {}",
                    s.name,
                    s.title.as_deref().unwrap_or(""),
                    s.description
                );
                for t in s.tags.iter().chain(&s.tools) {
                    hay.push(' ');
                    hay.push_str(t);
                }
                let hay = hay.to_lowercase();
                words.iter().all(|w| hay.contains(w.as_str()))
            })
            .collect()
    }
}

/// Levenshtein distance (small inputs: names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Treats JSON `null` like an absent field.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Deserializes `value` as `T`, reporting a failure as an entry error with the field's path.
fn entry_field<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    origin: &str,
    entry: &str,
    prefix: &str,
) -> Result<T, CatalogError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (path, problem) = path_and_problem(e);
        let field = match (prefix.is_empty(), path.is_empty()) {
            (true, _) => path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{path}"),
        };
        CatalogError::Entry {
            origin: origin.to_owned(),
            entry: entry.to_owned(),
            field,
            problem,
        }
    })
}

/// The failing field's path (`""` for the value itself) and the problem. A missing field is reported at its
/// parent by serde; here it is named itself.
fn path_and_problem(e: serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let problem = strip_position(&e.into_inner().to_string());
    if let Some(field) = problem
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        let full = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return (full, "missing".to_owned());
    }
    (path, problem)
}

/// serde_json appends ` at line L column C` (positions within the re-serialized value, meaningless here).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Checks shared by both formats, after mapping; errors name the entry and field.
fn validate(server: &Server, origin: &str, env_field: &str) -> Result<(), CatalogError> {
    let err = |field: String, problem: String| CatalogError::Entry {
        origin: origin.to_owned(),
        entry: server.name.clone(),
        field,
        problem,
    };
    if server.name.is_empty()
        || server
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            "name".into(),
            "a name must be non-empty, without spaces".into(),
        ));
    }
    if let Some(image) = &server.image {
        if crate::packages::spec::is_package_ref(image) {
            if let Err(e) = crate::packages::spec::parse(image) {
                return Err(err("image".into(), e.why));
            }
        } else if let Err(e) = image.parse::<crate::image::reference::Reference>() {
            return Err(err("image".into(), e.to_string()));
        }
    }
    for (i, v) in server.env_vars.iter().enumerate() {
        if !env::valid_name(&v.name) {
            return Err(err(
                format!("{env_field}[{i}].name"),
                format!("`{}` is not a valid environment variable name", v.name),
            ));
        }
    }
    if let Some(o) = server.permissions.as_ref().and_then(|p| p.outbound()) {
        if let Some(i) = o.allow_port.iter().position(|p| *p == 0) {
            return Err(err(
                format!("permissions.network.outbound.allow_port[{i}]"),
                "port 0 is not a port".into(),
            ));
        }
    }
    if let Some(name) = &server.seccomp_profile {
        if !launch::valid_variant_name(name) {
            return Err(err(
                "seccomp_profile".into(),
                format!("`{name}` is not a profile name (lowercase letters, digits and `-`)"),
            ));
        }
    }
    if let Some(r) = &server.resources {
        use crate::sandbox::limits;
        for (field, value, parse) in [
            (
                "resources.memory",
                &r.memory,
                (|s| limits::parse_memory(s).map(|_| ())) as fn(&str) -> Result<(), String>,
            ),
            ("resources.cpus", &r.cpus, |s| {
                limits::parse_cpus(s).map(|_| ())
            }),
            ("resources.pids", &r.pids, |s| {
                limits::parse_pids(s).map(|_| ())
            }),
        ] {
            if let Some(v) = value {
                parse(v).map_err(|reason| err(field.into(), format!("`{v}`: {reason}")))?;
            }
        }
    }
    if server.target_port == Some(0) {
        return Err(err("target_port".into(), "port 0 is not a port".into()));
    }
    Ok(())
}

/// Resource limits a registry entry proposes (see the module documentation); numbers are read as their text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory: `512m`, `4g`.
    #[serde(
        default,
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<String>,
    /// CPUs: `2`, `0.5`.
    #[serde(
        default,
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpus: Option<String>,
    /// Processes and threads: `2048`.
    #[serde(
        default,
        deserialize_with = "text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids: Option<String>,
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(serde::de::Error::custom("expected a string or a number")),
    }
}
