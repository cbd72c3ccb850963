//! ToolHive's legacy registry format: `{"version", "last_updated", "servers": {NAME: entry},
//! "remote_servers": {NAME: entry}}` (schema: `toolhive-legacy-registry.schema.json`).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    entry_field, null_default, validate, Catalog, CatalogError, EnvVarSpec, Format,
    PermissionProfile, Provenance, Server, Transport,
};

#[derive(Deserialize)]
struct RawServer {
    #[serde(default, deserialize_with = "null_default")]
    title: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, deserialize_with = "null_default")]
    image: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    url: Option<String>,
    #[serde(default)]
    transport: Option<Transport>,
    #[serde(default, deserialize_with = "null_default")]
    target_port: Option<u16>,
    #[serde(default, deserialize_with = "null_default")]
    args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    tools: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    env_vars: Vec<RawEnvVar>,
    #[serde(default, deserialize_with = "null_default")]
    permissions: Option<PermissionProfile>,
    #[serde(default, deserialize_with = "null_default")]
    provenance: Option<Provenance>,
    #[serde(default, deserialize_with = "null_default")]
    seccomp_profile: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    resources: Option<super::Resources>,
    #[serde(default, deserialize_with = "null_default")]
    status: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    tier: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    repository_url: Option<String>,
}

/// An environment variable in the legacy field names (also used by the upstream format's extension object).
#[derive(Deserialize)]
pub(super) struct RawEnvVar {
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    description: String,
    #[serde(default, deserialize_with = "null_default")]
    required: bool,
    #[serde(default, deserialize_with = "null_default")]
    secret: bool,
    #[serde(default, deserialize_with = "null_default")]
    default: Option<String>,
}

impl From<RawEnvVar> for EnvVarSpec {
    fn from(v: RawEnvVar) -> EnvVarSpec {
        EnvVarSpec {
            name: v.name,
            description: v.description,
            required: v.required,
            secret: v.secret,
            default: v.default,
        }
    }
}

pub(super) fn parse(doc: &Map<String, Value>, origin: &str) -> Result<Catalog, CatalogError> {
    let mut servers = Vec::new();
    for (key, remote) in [("servers", false), ("remote_servers", true)] {
        let entries = match doc.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(CatalogError::Format {
                    origin: origin.to_owned(),
                    detail: format!("`{key}` is not an object of NAME: entry"),
                })
            }
        };
        for (name, value) in entries {
            servers.push(server(name, value, remote, origin)?);
        }
    }
    Ok(Catalog {
        format: Format::Legacy,
        last_updated: doc
            .get("last_updated")
            .and_then(Value::as_str)
            .map(str::to_owned),
        servers,
    })
}

/// [`parse`] straight from the text, with no `serde_json::Value` of the whole document: each entry is read from
/// its own slice of it. The general way took ~2.5 ms for the embedded registry on the benchmark host, on every
/// `run NAME`; this one a fraction (BENCHMARKS.md). `None` when the document is not plainly a legacy one, or an
/// entry is not right: [`super::Catalog::parse`] then takes the general way, which also words the error.
pub(super) fn parse_text(bytes: &[u8], origin: &str) -> Option<Catalog> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(default)]
        last_updated: Option<String>,
        #[serde(borrow, default)]
        servers: Option<BTreeMap<String, &'a RawValue>>,
        #[serde(borrow, default)]
        remote_servers: Option<BTreeMap<String, &'a RawValue>>,
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    let doc: Doc = serde_json::from_slice(bytes).ok()?;
    if doc.data.is_some() || (doc.servers.is_none() && doc.remote_servers.is_none()) {
        return None;
    }
    let mut servers = Vec::new();
    for (entries, remote) in [(doc.servers, false), (doc.remote_servers, true)] {
        for (name, text) in entries.into_iter().flatten() {
            let raw: RawServer = serde_json::from_str(text.get()).ok()?;
            servers.push(from_raw(&name, raw, remote, origin).ok()?);
        }
    }
    Some(Catalog {
        format: Format::Legacy,
        last_updated: doc.last_updated,
        servers,
    })
}

fn server(name: &str, value: &Value, remote: bool, origin: &str) -> Result<Server, CatalogError> {
    let raw: RawServer = entry_field(value, origin, name, "")?;
    from_raw(name, raw, remote, origin)
}

fn from_raw(
    name: &str,
    raw: RawServer,
    remote: bool,
    origin: &str,
) -> Result<Server, CatalogError> {
    let missing = |field: &str| CatalogError::Entry {
        origin: origin.to_owned(),
        entry: name.to_owned(),
        field: field.to_owned(),
        problem: "missing".to_owned(),
    };
    let (image, url) = if remote {
        (None, Some(raw.url.ok_or_else(|| missing("url"))?))
    } else {
        (Some(raw.image.ok_or_else(|| missing("image"))?), None)
    };
    // The schema's defaults: `stdio` for container servers, `sse` for remote ones.
    let transport = raw.transport.unwrap_or(if remote {
        Transport::Sse
    } else {
        Transport::Stdio
    });
    let s = Server {
        name: name.to_owned(),
        title: raw.title,
        description: raw.description,
        image,
        url,
        transport,
        target_port: raw.target_port,
        args: raw.args,
        tools: raw.tools,
        tags: raw.tags,
        env_vars: raw.env_vars.into_iter().map(EnvVarSpec::from).collect(),
        permissions: raw.permissions,
        provenance: raw.provenance,
        seccomp_profile: raw.seccomp_profile,
        resources: raw.resources,
        status: raw.status,
        tier: raw.tier,
        repository_url: raw.repository_url,
    };
    validate(&s, origin, "env_vars")?;
    Ok(s)
}
