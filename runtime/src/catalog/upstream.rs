//! The upstream MCP-registry format ToolHive uses now: `{"version", "meta": {"last_updated"}, "data": {"servers":
//! [server.json, …]}}`. Per server, the first `packages[]` entry with `registryType: "oci"` is the container
//! (its `identifier` the image, its `transport` the transport, its `environmentVariables` the env vars); without
//! one, the first `remotes[]` entry makes it a remote server. ToolHive's own fields (permissions, provenance,
//! args, tools, tier, status, tags, `seccomp_profile`) come from
//! `_meta["io.modelcontextprotocol.registry/publisher-provided"]["io.github.stacklok"][IMAGE or URL]`.
//! Servers with neither an OCI package nor a remote (npm- or PyPI-only entries) are skipped with a warning.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    entry_field, null_default, validate, Catalog, CatalogError, EnvVarSpec, Format,
    PermissionProfile, Provenance, Server, Transport,
};

const PUBLISHER_PROVIDED: &str = "io.modelcontextprotocol.registry/publisher-provided";
const STACKLOK: &str = "io.github.stacklok";

#[derive(Deserialize)]
struct RawServer {
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    title: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, deserialize_with = "null_default")]
    repository: Option<RawRepository>,
    #[serde(default, deserialize_with = "null_default")]
    packages: Vec<Value>,
    #[serde(default, deserialize_with = "null_default")]
    remotes: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct RawRepository {
    #[serde(default, deserialize_with = "null_default")]
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawPackage {
    identifier: String,
    #[serde(default, deserialize_with = "null_default")]
    version: Option<String>,
    transport: RawTransport,
    #[serde(
        default,
        rename = "environmentVariables",
        deserialize_with = "null_default"
    )]
    environment_variables: Vec<RawEnvVar>,
}

#[derive(Deserialize)]
struct RawTransport {
    #[serde(rename = "type")]
    kind: Transport,
    #[serde(default, deserialize_with = "null_default")]
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawRemote {
    #[serde(rename = "type")]
    kind: Transport,
    url: String,
}

#[derive(Deserialize)]
struct RawEnvVar {
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, rename = "isRequired", deserialize_with = "null_default")]
    is_required: bool,
    #[serde(default, rename = "isSecret", deserialize_with = "null_default")]
    is_secret: bool,
    #[serde(default, deserialize_with = "null_default")]
    default: Option<String>,
}

/// ToolHive's extension object (publisher-provided.schema.json `server_extensions`).
#[derive(Deserialize, Default)]
struct RawExtensions {
    #[serde(default, deserialize_with = "null_default")]
    status: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    tier: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    tools: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    permissions: Option<PermissionProfile>,
    #[serde(default, deserialize_with = "null_default")]
    provenance: Option<Provenance>,
    /// Env vars in the extension object (remote servers) use the legacy field names.
    #[serde(default, deserialize_with = "null_default")]
    env_vars: Vec<super::legacy::RawEnvVar>,
    #[serde(default, deserialize_with = "null_default")]
    seccomp_profile: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    resources: Option<super::Resources>,
}

pub(super) fn parse(doc: &Map<String, Value>, origin: &str) -> Result<Catalog, CatalogError> {
    let list = doc
        .get("data")
        .and_then(|d| d.get("servers"))
        .and_then(Value::as_array)
        .ok_or_else(|| CatalogError::Format {
            origin: origin.to_owned(),
            detail: "`data.servers` is not an array".into(),
        })?;
    let mut servers = Vec::new();
    for (i, value) in list.iter().enumerate() {
        if let Some(s) = server(i, value, origin)? {
            servers.push(s);
        }
    }
    Ok(Catalog {
        format: Format::Upstream,
        last_updated: doc
            .get("meta")
            .and_then(|m| m.get("last_updated"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        servers,
    })
}

fn server(index: usize, value: &Value, origin: &str) -> Result<Option<Server>, CatalogError> {
    // Until the name is known, the entry is named by its position.
    let position = value
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("data.servers[{index}]"), str::to_owned);
    let raw: RawServer = entry_field(value, origin, &position, "")?;
    let name = raw.name;

    let oci = raw
        .packages
        .iter()
        .position(|p| p.get("registryType").and_then(Value::as_str) == Some("oci"));
    let (image, url, transport, target_port, env_vars, key) = if let Some(i) = oci {
        let prefix = format!("packages[{i}]");
        let p: RawPackage = entry_field(&raw.packages[i], origin, &name, &prefix)?;
        let image = image_ref(&p.identifier, p.version.as_deref());
        let port = p.transport.url.as_deref().and_then(url_port);
        let env = p
            .environment_variables
            .into_iter()
            .map(|v| EnvVarSpec {
                name: v.name,
                description: v.description,
                required: v.is_required,
                secret: v.is_secret,
                default: v.default,
            })
            .collect::<Vec<_>>();
        (Some(image), None, p.transport.kind, port, env, p.identifier)
    } else if let Some(first) = raw.remotes.first() {
        let r: RawRemote = entry_field(first, origin, &name, "remotes[0]")?;
        (None, Some(r.url.clone()), r.kind, None, Vec::new(), r.url)
    } else {
        tracing::warn!(
            "MCP server registry {origin}: `{name}` has no OCI package and no remote endpoint; skipped"
        );
        return Ok(None);
    };

    let ext_path = format!("_meta.{PUBLISHER_PROVIDED}.{STACKLOK}");
    let ext_obj = value
        .get("_meta")
        .and_then(|m| m.get(PUBLISHER_PROVIDED))
        .and_then(|m| m.get(STACKLOK))
        .and_then(Value::as_object);
    let ext: RawExtensions = match ext_obj {
        None => RawExtensions::default(),
        Some(m) => {
            // Keyed by the image reference (or URL); a lone entry under another key is taken as this one's.
            let found = m.get(&key).map(|v| (key.clone(), v)).or_else(|| {
                (m.len() == 1).then(|| m.iter().next().map(|(k, v)| (k.clone(), v)))?
            });
            match found {
                Some((k, v)) => entry_field(v, origin, &name, &format!("{ext_path}[{k}]"))?,
                None => RawExtensions::default(),
            }
        }
    };
    let mut env_vars = env_vars;
    if image.is_none() {
        env_vars.extend(ext.env_vars.into_iter().map(EnvVarSpec::from));
    }
    let s = Server {
        name,
        title: raw.title,
        description: raw.description,
        image,
        url,
        transport,
        target_port,
        args: ext.args,
        tools: ext.tools,
        tags: ext.tags,
        env_vars,
        permissions: ext.permissions,
        provenance: ext.provenance,
        seccomp_profile: ext.seccomp_profile,
        resources: ext.resources,
        status: ext.status.map(|s| capitalize(&s)),
        tier: ext.tier,
        repository_url: raw.repository.and_then(|r| r.url),
    };
    let env_field = match oci {
        Some(i) => format!("packages[{i}].environmentVariables"),
        None => format!("{ext_path}.env_vars"),
    };
    validate(&s, origin, &env_field)?;
    Ok(Some(s))
}

/// The image reference: `identifier` as it is, or `identifier:version` for the older form that kept the
/// version apart (an identifier without tag or digest).
fn image_ref(identifier: &str, version: Option<&str>) -> String {
    let last = identifier.rsplit('/').next().unwrap_or(identifier);
    let has_tag = last.contains(':') || identifier.contains('@');
    match version {
        Some(v) if !has_tag && !v.is_empty() => format!("{identifier}:{v}"),
        _ => identifier.to_owned(),
    }
}

/// The port of `http://host:PORT[/…]` (`None` without one, or for a templated `{port}`).
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let port = authority.rsplit_once(':')?.1;
    port.parse().ok()
}

/// `active` → `Active` (the upstream schema allows both spellings).
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_transport_url() {
        assert_eq!(url_port("http://localhost:8080"), Some(8080));
        assert_eq!(url_port("http://localhost:3002/mcp"), Some(3002));
        assert_eq!(url_port("http://localhost/mcp"), None);
        assert_eq!(url_port("http://localhost:{port}/mcp"), None);
        assert_eq!(url_port("nonsense"), None);
    }

    #[test]
    fn a_separate_version_becomes_the_tag() {
        assert_eq!(image_ref("ghcr.io/a/b", Some("1.0")), "ghcr.io/a/b:1.0");
        assert_eq!(image_ref("ghcr.io/a/b:2.0", Some("1.0")), "ghcr.io/a/b:2.0");
        assert_eq!(
            image_ref("localhost:5000/a/b", Some("1.0")),
            "localhost:5000/a/b:1.0"
        );
        assert_eq!(image_ref("a/b@sha256:00", Some("1.0")), "a/b@sha256:00");
        assert_eq!(image_ref("a/b", None), "a/b");
    }
}
