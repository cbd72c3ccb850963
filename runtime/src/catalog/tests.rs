//! Loading the real registries (the fixtures beside the repository and the embedded copy), names, errors.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::*;

/// `../shared/fixtures` relative to the repository root.
fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.join("toolhive-registry.json").is_file() {
        return Some(dir);
    }
    // The same rule as the end-to-end suite's `require`: skip locally, fail under CI.
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !under_ci,
        "prerequisite missing under CI: registry fixtures at {}",
        dir.display()
    );
    eprintln!(
        "SKIP: prerequisite missing: registry fixtures at {}",
        dir.display()
    );
    None
}

fn load_fixture(name: &str) -> Option<(Catalog, serde_json::Value)> {
    let path = fixtures()?.join(name);
    let bytes = std::fs::read(&path).unwrap();
    let catalog = Catalog::parse(&bytes, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Some((catalog, serde_json::from_slice(&bytes).unwrap()))
}

#[test]
fn every_entry_of_the_legacy_fixture_loads() {
    let Some((c, raw)) = load_fixture("toolhive-registry.json") else {
        return;
    };
    assert_eq!(c.format, Format::Legacy);
    let n_servers = raw["servers"].as_object().unwrap().len();
    let n_remote = raw["remote_servers"].as_object().unwrap().len();
    assert_eq!(c.servers.len(), n_servers + n_remote);
    // The counts the design notes measured: 79 container servers (60 stdio, 14 streamable-http, 5 sse), 23 remote.
    let containers: Vec<_> = c.servers.iter().filter(|s| !s.is_remote()).collect();
    assert_eq!(containers.len(), 79);
    let count = |t: Transport| containers.iter().filter(|s| s.transport == t).count();
    assert_eq!(
        (
            count(Transport::Stdio),
            count(Transport::StreamableHttp),
            count(Transport::Sse)
        ),
        (60, 14, 5)
    );
    assert_eq!(c.servers.iter().filter(|s| s.is_remote()).count(), 23);
    assert_eq!(c.last_updated.as_deref(), Some("2026-02-18T00:24:11Z"));

    // Every field of every container entry made it into the model.
    for (name, e) in raw["servers"].as_object().unwrap() {
        let s = c.get(name).unwrap();
        assert_eq!(s.image.as_deref(), e["image"].as_str(), "{name}");
        assert_eq!(
            s.transport.as_str(),
            e["transport"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            s.target_port.map(u64::from),
            e["target_port"].as_u64(),
            "{name}"
        );
        assert_eq!(
            s.tools.len(),
            e["tools"].as_array().unwrap().len(),
            "{name}"
        );
        let env = e["env_vars"].as_array().map_or(0, Vec::len);
        assert_eq!(s.env_vars.len(), env, "{name}");
        assert_eq!(
            s.provenance.is_some(),
            e.get("provenance").is_some(),
            "{name}"
        );
        if let Some(p) = e.get("permissions") {
            let back = serde_json::to_value(s.permissions.as_ref().unwrap()).unwrap();
            for k in ["read", "write"] {
                assert_eq!(
                    back[k].as_array().map_or(0, Vec::len),
                    p[k].as_array().map_or(0, Vec::len),
                    "{name} {k}"
                );
            }
        }
    }

    // The servers the design notes call out.
    let fetch = c.get("fetch").unwrap();
    assert_eq!(fetch.transport, Transport::StreamableHttp);
    assert_eq!(fetch.target_port, Some(8080));
    let time = c.get("time").unwrap();
    assert_eq!(time.image.as_deref(), Some("docker.io/mcp/time:latest"));
    assert!(!time.permissions.as_ref().unwrap().wants_network());
    let github = c.get("github").unwrap();
    let token = github
        .env_vars
        .iter()
        .find(|v| v.name == "GITHUB_PERSONAL_ACCESS_TOKEN")
        .unwrap();
    assert!(token.required && token.secret);
    assert_eq!(github.verifiability(), Verifiability::Sigstore);
    assert!(github.permissions.as_ref().unwrap().wants_network());
}

#[test]
fn every_entry_of_the_upstream_fixture_loads() {
    let Some((c, raw)) = load_fixture("toolhive-registry-upstream.example.json") else {
        return;
    };
    assert_eq!(c.format, Format::Upstream);
    assert_eq!(
        c.servers.len(),
        raw["data"]["servers"].as_array().unwrap().len()
    );
    for e in raw["data"]["servers"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let s = c.get(name).unwrap();
        let pkg = &e["packages"][0];
        assert_eq!(s.image.as_deref(), pkg["identifier"].as_str(), "{name}");
        assert_eq!(
            s.transport.as_str(),
            pkg["transport"]["type"].as_str().unwrap()
        );
        assert_eq!(
            s.env_vars.len(),
            pkg["environmentVariables"].as_array().map_or(0, Vec::len),
            "{name}"
        );
        let ext = &e["_meta"]["io.modelcontextprotocol.registry/publisher-provided"]
            ["io.github.stacklok"][pkg["identifier"].as_str().unwrap()];
        assert_eq!(
            s.tools.len(),
            ext["tools"].as_array().unwrap().len(),
            "{name}"
        );
        assert_eq!(s.provenance.is_some(), ext.get("provenance").is_some());
        assert_eq!(s.permissions.is_some(), ext.get("permissions").is_some());
        assert_eq!(s.args.len(), ext["args"].as_array().map_or(0, Vec::len));
    }
    // Short names answer when unambiguous.
    let fetch = c.get("fetch").unwrap();
    assert_eq!(fetch.name, "io.github.stacklok/fetch");
    assert_eq!(fetch.transport, Transport::StreamableHttp);
    assert_eq!(fetch.target_port, Some(8080));
    assert!(fetch.provenance.is_some());
    let gh = c.get("github").unwrap();
    assert_eq!(
        gh.image.as_deref(),
        Some("ghcr.io/github/github-mcp-server:v0.22.0")
    );
    let fs = c.get("filesystem").unwrap();
    assert_eq!(fs.args, ["/projects"]);
    let adb = c.get("adb-mysql-mcp-server").unwrap();
    let pw = adb
        .env_vars
        .iter()
        .find(|v| v.name == "ADB_MYSQL_PASSWORD")
        .unwrap();
    assert!(pw.required && pw.secret);
    assert_eq!(adb.status.as_deref(), Some("Active"));
}

/// The embedded registry is the fixture, byte for byte (SHA-256 as recorded in shared/fixtures/SOURCES.md).
#[test]
fn the_embedded_registry_is_the_recorded_snapshot_and_loads() {
    assert_eq!(
        hex::encode(Sha256::digest(source::EMBEDDED)),
        "5e640b5fc2deca0d82d7d1676d4889b58cd00e7bc7fdc5d9b42cb04faff409b7"
    );
    let c = Catalog::parse(source::EMBEDDED, "embedded").unwrap();
    assert_eq!(c.servers.len(), 102);
    let mut names: Vec<_> = c.servers.iter().map(|s| s.name.clone()).collect();
    names.dedup();
    assert_eq!(names.len(), 102);
}

fn upstream_doc(servers: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0.0",
        "meta": {"last_updated": "2026-01-01T00:00:00Z"},
        "data": {"servers": servers}
    }))
    .unwrap()
}

fn oci(name: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "description": "a test server",
        "packages": [{"registryType": "oci", "identifier": image, "transport": {"type": "stdio"}}],
        "_meta": {"io.modelcontextprotocol.registry/publisher-provided": {"io.github.stacklok": {
            image: {"status": "active", "tools": ["t"], "seccomp_profile": "default", "future_field": {"x": 1}}
        }}}
    })
}

#[test]
fn resources_are_a_proposal_read_from_legacy_and_upstream_entries() {
    let mut up = oci("io.github.x/big", "x/big:1");
    up["_meta"]["io.modelcontextprotocol.registry/publisher-provided"]["io.github.stacklok"]
        ["x/big:1"]["resources"] = serde_json::json!({"memory": "4g", "cpus": 2, "pids": 2048});
    let c = Catalog::parse(&upstream_doc(serde_json::json!([up])), "u.json").unwrap();
    let r = c.get("big").unwrap().resources.clone().unwrap();
    assert_eq!(
        (r.memory.as_deref(), r.cpus.as_deref(), r.pids.as_deref()),
        (Some("4g"), Some("2"), Some("2048"))
    );
    let doc = serde_json::json!({"servers": {"small": {"image": "a/b:1", "description": "d",
        "resources": {"memory": "256m"}}}});
    let c = Catalog::parse(&serde_json::to_vec(&doc).unwrap(), "r.json").unwrap();
    let r = c.get("small").unwrap().resources.clone().unwrap();
    assert_eq!((r.memory.as_deref(), r.cpus), (Some("256m"), None));
}

#[test]
fn a_colliding_short_name_is_an_error_listing_the_full_names() {
    let doc = upstream_doc(serde_json::json!([
        oci("io.github.a/fetch", "a/fetch:1"),
        oci("io.github.b/fetch", "b/fetch:1"),
        oci("io.github.b/other", "b/other:1"),
    ]));
    let c = Catalog::parse(&doc, "test").unwrap();
    let e = c.get("fetch").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`fetch` matches several servers of the MCP server registry: io.github.a/fetch, io.github.b/fetch; use the full name"
    );
    assert_eq!(
        c.get("io.github.b/fetch").unwrap().image.as_deref(),
        Some("b/fetch:1")
    );
    assert_eq!(c.get("other").unwrap().name, "io.github.b/other");
    // Regardless of case, after an exact match is looked for.
    assert_eq!(c.get("Other").unwrap().name, "io.github.b/other");
    assert_eq!(
        c.get("IO.github.B/Fetch").unwrap().name,
        "io.github.b/fetch"
    );
    assert!(c.get("FETCH").is_err());
    assert!(c.find("nothing").unwrap().is_none());
    let e = c.get("fetc").unwrap_err();
    assert!(
        e.to_string()
            .contains("did you mean io.github.a/fetch, io.github.b/fetch?"),
        "{e}"
    );
    // Unknown fields were tolerated; the proposed field was read.
    assert_eq!(
        c.get("other").unwrap().seccomp_profile.as_deref(),
        Some("default")
    );
}

#[test]
fn an_invalid_entry_names_the_entry_and_the_field() {
    let legacy = |entry: serde_json::Value| {
        let doc = serde_json::json!({"version": "1.0.0", "servers": {"good": {"image": "a/b:1"}, "bad": entry}});
        Catalog::parse(&serde_json::to_vec(&doc).unwrap(), "r.json")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        legacy(serde_json::json!({"image": "a/b:1", "env_vars": [{"name": "X", "required": "yes"}]})),
        "MCP server registry r.json: entry `bad`: field `env_vars[0].required`: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        legacy(serde_json::json!({"image": "a/b:1", "transport": "websocket"})),
        "MCP server registry r.json: entry `bad`: field `transport`: unknown variant `websocket`, expected one of `stdio`, `sse`, `streamable-http`"
    );
    assert_eq!(
        legacy(serde_json::json!({"description": "no image"})),
        "MCP server registry r.json: entry `bad`: field `image`: missing"
    );
    let msg = legacy(serde_json::json!({"image": "a/b:1",
        "permissions": {"network": {"outbound": {"allow_port": [70000]}}}}));
    assert!(
        msg.starts_with(
            "MCP server registry r.json: entry `bad`: field `permissions.network.outbound.allow_port[0]`:"
        ),
        "{msg}"
    );
    let msg = legacy(serde_json::json!({"image": "a/b:no spaces allowed"}));
    assert!(
        msg.starts_with("MCP server registry r.json: entry `bad`: field `image`:"),
        "{msg}"
    );
    let msg = legacy(serde_json::json!({"image": "a/b:1", "env_vars": [{"name": "NOT-VALID"}]}));
    assert!(msg.contains("field `env_vars[0].name`"), "{msg}");
    let msg = legacy(serde_json::json!({"image": "a/b:1", "seccomp_profile": "../../etc/x"}));
    assert!(msg.contains("field `seccomp_profile`"), "{msg}");
    let msg = legacy(serde_json::json!({"image": "a/b:1", "resources": {"memory": "lots"}}));
    assert!(msg.contains("field `resources.memory`"), "{msg}");
    let msg = legacy(serde_json::json!({"image": "a/b:1", "resources": {"pids": 1}}));
    assert!(msg.contains("field `resources.pids`"), "{msg}");

    let mut bad = oci("io.github.x/y", "x/y:1");
    bad["packages"][0]["environmentVariables"] = serde_json::json!([{"name": "A", "isSecret": 1}]);
    let e = Catalog::parse(&upstream_doc(serde_json::json!([bad])), "u.json").unwrap_err();
    assert_eq!(
        e.to_string(),
        "MCP server registry u.json: entry `io.github.x/y`: field `packages[0].environmentVariables[0].isSecret`: invalid type: integer `1`, expected a boolean"
    );
    let mut bad = oci("io.github.x/y", "x/y:1");
    bad["_meta"]["io.modelcontextprotocol.registry/publisher-provided"]["io.github.stacklok"]
        ["x/y:1"]["tools"] = serde_json::json!("t");
    let e = Catalog::parse(&upstream_doc(serde_json::json!([bad])), "u.json").unwrap_err();
    assert!(
        e.to_string().contains(
            "field `_meta.io.modelcontextprotocol.registry/publisher-provided.io.github.stacklok[x/y:1].tools`"
        ),
        "{e}"
    );
    let e = Catalog::parse(
        &upstream_doc(serde_json::json!([{"description": "no name"}])),
        "u.json",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "MCP server registry u.json: entry `data.servers[0]`: field `name`: missing"
    );
}

#[test]
fn remote_servers_and_skipped_entries_in_the_upstream_format() {
    let doc = upstream_doc(serde_json::json!([
        {
            "name": "io.example/remote",
            "description": "remote",
            "remotes": [{"type": "streamable-http", "url": "https://mcp.example/mcp"}],
            "_meta": {"io.modelcontextprotocol.registry/publisher-provided": {"io.github.stacklok": {
                "https://mcp.example/mcp": {"status": "Active", "tools": ["a"],
                    "env_vars": [{"name": "K", "description": "key", "required": true}]}
            }}}
        },
        {"name": "io.example/nuget-only", "packages": [{"registryType": "nuget", "identifier": "x", "transport": {"type": "stdio"}}]}
    ]));
    let c = Catalog::parse(&doc, "u").unwrap();
    assert_eq!(c.servers.len(), 1);
    let r = c.get("remote").unwrap();
    assert!(r.is_remote());
    assert_eq!(r.url.as_deref(), Some("https://mcp.example/mcp"));
    assert_eq!(r.tools, ["a"]);
    assert_eq!(r.env_vars[0].name, "K");
}

#[test]
fn neither_format_and_duplicates_are_errors() {
    let e = Catalog::parse(b"{\"items\": []}", "x").unwrap_err();
    assert!(e.to_string().contains("neither `servers`"), "{e}");
    assert!(e.hint().is_some());
    let e = Catalog::parse(b"not json", "x").unwrap_err();
    assert!(matches!(e, CatalogError::Json { .. }));
    let doc = upstream_doc(serde_json::json!([
        oci("io.a/x", "a/x:1"),
        oci("io.a/x", "a/x:2")
    ]));
    let e = Catalog::parse(&doc, "u").unwrap_err();
    assert_eq!(
        e.to_string(),
        "MCP server registry u: `io.a/x` is listed more than once"
    );
}

#[test]
fn search_matches_every_word_in_names_descriptions_tags_and_tools() {
    let c = Catalog::parse(source::EMBEDDED, "embedded").unwrap();
    let hits: Vec<_> = c
        .search("TIMEZONE")
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(hits.contains(&"time".to_owned()), "{hits:?}");
    let hits = c.search("get_current_time");
    assert!(hits.iter().any(|s| s.name == "time"));
    assert!(c.search("no-such-word-anywhere").is_empty());
    let e = c.get("tiime").unwrap_err();
    assert!(e.to_string().ends_with("(did you mean time?)"), "{e}");
    // A bare word two edits from an entry is a typo; an image-looking reference or a short word is not.
    assert_eq!(c.typo_of("tiime"), vec!["time".to_owned()]);
    assert!(c.typo_of("time").is_empty());
    assert!(c.typo_of("alpine").is_empty(), "{:?}", c.typo_of("alpine"));
    assert!(c.typo_of("ghcr.io/x/tiime").is_empty());
    assert!(c.typo_of("tim").is_empty());
    assert!(c.search("github pull").iter().all(|s| {
        let t = serde_json::to_string(s).unwrap().to_lowercase();
        t.contains("github") && t.contains("pull")
    }));
}

#[test]
fn npm_and_pypi_packages_in_the_upstream_format() {
    let doc = upstream_doc(serde_json::json!([
        {
            "name": "io.github.modelcontextprotocol/everything",
            "description": "everything",
            "packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                "version": "2026.8.31", "runtimeHint": "npx", "transport": {"type": "stdio"},
                "packageArguments": [{"type": "positional", "value": "stdio"},
                                     {"type": "named", "name": "--level", "default": "debug"},
                                     {"type": "positional", "valueHint": "path"}],
                "environmentVariables": [{"name": "API_KEY", "isSecret": true, "isRequired": true}]}]
        },
        {
            "name": "io.github.modelcontextprotocol/time",
            "packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": "2026.10.19",
                "runtimeHint": "uvx", "transport": {"type": "stdio"}}]
        },
        {
            "name": "io.example/bad-npm",
            "packages": [{"registryType": "npm", "identifier": "Not Valid", "transport": {"type": "stdio"}}]
        }
    ]));
    let e = Catalog::parse(&doc, "u").unwrap_err();
    assert!(e.to_string().contains("bad-npm"), "{e}");
    let mut fixed: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    fixed["data"]["servers"].as_array_mut().unwrap().pop();
    let c = Catalog::parse(&serde_json::to_vec(&fixed).unwrap(), "u").unwrap();
    let npm = c.get("io.github.modelcontextprotocol/everything").unwrap();
    assert_eq!(
        npm.image.as_deref(),
        Some("npx://@modelcontextprotocol/server-everything@2026.8.31")
    );
    assert_eq!(npm.args, ["stdio", "--level", "debug"]);
    assert_eq!(npm.env_vars[0].name, "API_KEY");
    assert!(npm.env_vars[0].secret);
    let py = c.get("io.github.modelcontextprotocol/time").unwrap();
    assert_eq!(
        py.image.as_deref(),
        Some("uvx://mcp-server-time==2026.10.19")
    );
}

/// The legacy format read straight from the text gives the very catalog the general way gives, for the embedded
/// registry and the real fixtures; what it does not take (the upstream format, an entry that is not right) goes
/// the general way, so the errors stay the general way's.
#[test]
fn the_legacy_format_read_from_the_text_is_the_general_ways_catalog() {
    let mut docs = vec![("embedded".to_owned(), source::EMBEDDED.to_vec())];
    if let Some(dir) = fixtures() {
        for name in [
            "toolhive-registry.json",
            "toolhive-registry-upstream.example.json",
        ] {
            docs.push((name.to_owned(), std::fs::read(dir.join(name)).unwrap()));
        }
    }
    for (name, bytes) in &docs {
        let general = Catalog::parse_values(bytes, name)
            .and_then(|c| c.sorted(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = Catalog::parse(bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{parsed:?}"), format!("{general:?}"), "{name}");
        let text = legacy::parse_text(bytes, name);
        assert_eq!(
            text.is_some(),
            general.format == Format::Legacy,
            "{name}: read from the text exactly when legacy"
        );
        if let Some(t) = text {
            let t = t.sorted(name).unwrap();
            assert_eq!(format!("{t:?}"), format!("{general:?}"), "{name}");
        }
    }
    // An entry that is not right: not taken from the text; the general way names the entry and the field.
    let bad = br#"{"servers": {"a": {"image": "x", "target_port": "http"}}}"#;
    assert!(legacy::parse_text(bad, "bad").is_none());
    let err = Catalog::parse(bad, "bad").unwrap_err().to_string();
    assert!(err.contains("target_port"), "{err}");
}
