//! Editing one server entry in a client's file, leaving everything else as it was: JSONC through a concrete
//! syntax tree (jsonc-parser's `cst`: comments, blank lines, trailing commas and key order kept), TOML through
//! toml_edit (the same for Codex's config.toml).

use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use jsonc_parser::ParseOptions;
use serde_json::Value;

use super::Format;

/// A variable's value in the entry.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    /// Written as it is.
    Literal(String),
    /// VS Code: `${input:ID}`, with a `promptString` input asking for it when the server starts.
    Prompt {
        /// The input's id.
        id: String,
        /// What the prompt says.
        description: String,
        /// Typed as a password and kept in VS Code's secret storage.
        secret: bool,
    },
}

/// An entry to write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The file's layout.
    pub format: Format,
    /// The entry's name.
    pub key: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// `"type": "stdio"` in the entry.
    pub type_stdio: bool,
    /// The entry's `env`.
    pub env: Vec<(String, EnvValue)>,
}

/// An entry as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEntry {
    /// The entry's name.
    pub key: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The entry's `env`, as written (`${input:…}` not expanded).
    pub env: Vec<(String, String)>,
}

/// Why a file cannot be edited.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    /// Not JSON(C)/TOML.
    #[error("it does not parse: {0}")]
    Parse(String),
    /// A key that must hold an object (table) holds something else.
    #[error("`{0}` in it is not an object")]
    NotAnObject(String),
    /// The entry exists already.
    #[error("it has an entry `{0}` already")]
    Exists(String),
}

impl EditError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            EditError::Parse(_) | EditError::NotAnObject(_) => {
                "fix the file by hand (nothing was changed), or print the entry with --print and add it yourself"
            }
            EditError::Exists(_) => {
                "--force replaces it; --entry-name NAME adds the server under another name"
            }
        }
    }
}

fn servers_key(format: Format) -> &'static str {
    match format {
        Format::McpServers => "mcpServers",
        Format::VsCode => "servers",
        Format::Zed => "context_servers",
        Format::CodexToml => "mcp_servers",
    }
}

/// The entry's value, as the client's format lays it out.
fn entry_value(e: &Entry) -> Value {
    let mut m = serde_json::Map::new();
    match e.format {
        Format::VsCode => {
            m.insert("type".into(), "stdio".into());
        }
        Format::Zed => {
            m.insert("source".into(), "custom".into());
        }
        Format::McpServers if e.type_stdio => {
            m.insert("type".into(), "stdio".into());
        }
        _ => {}
    }
    m.insert("command".into(), e.command.clone().into());
    m.insert("args".into(), e.args.clone().into());
    if !e.env.is_empty() {
        let env: serde_json::Map<String, Value> = e
            .env
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    EnvValue::Literal(s) => s.clone(),
                    EnvValue::Prompt { id, .. } => format!("${{input:{id}}}"),
                };
                (k.clone(), Value::String(text))
            })
            .collect();
        m.insert("env".into(), Value::Object(env));
    }
    Value::Object(m)
}

fn input(v: &Value) -> CstInputValue {
    match v {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(a) => CstInputValue::Array(a.iter().map(input).collect()),
        Value::Object(o) => {
            CstInputValue::Object(o.iter().map(|(k, v)| (k.clone(), input(v))).collect())
        }
    }
}

fn parse_json(text: &str) -> Result<(CstRootNode, CstObject), EditError> {
    let text = if text.trim().is_empty() { "{}\n" } else { text };
    let root = CstRootNode::parse(text, &ParseOptions::default())
        .map_err(|e| EditError::Parse(e.to_string()))?;
    let obj = match root.value() {
        None => root.object_value_or_set(),
        Some(_) => root
            .object_value()
            .ok_or_else(|| EditError::NotAnObject("the top level".into()))?,
    };
    Ok((root, obj))
}

/// `text` with the entry added (or replaced, with `replace`).
pub fn add(text: &str, e: &Entry, replace: bool) -> Result<String, EditError> {
    if e.format == Format::CodexToml {
        return toml_add(text, e, replace);
    }
    let (root, obj) = parse_json(text)?;
    let key = servers_key(e.format);
    let servers = obj
        .object_value_or_create(key)
        .ok_or_else(|| EditError::NotAnObject(key.into()))?;
    let value = input(&entry_value(e));
    match servers.get(&e.key) {
        Some(_) if !replace => return Err(EditError::Exists(e.key.clone())),
        Some(prop) => prop.set_value(value),
        None => {
            servers.append(&e.key, value);
        }
    }
    let prompts: Vec<&EnvValue> = e
        .env
        .iter()
        .map(|(_, v)| v)
        .filter(|v| matches!(v, EnvValue::Prompt { .. }))
        .collect();
    if !prompts.is_empty() {
        let inputs = obj
            .array_value_or_create("inputs")
            .ok_or_else(|| EditError::NotAnObject("inputs".into()))?;
        let have: Vec<String> = inputs
            .elements()
            .iter()
            .filter_map(|n| n.to_serde_value())
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        for p in prompts {
            let EnvValue::Prompt {
                id,
                description,
                secret,
            } = p
            else {
                continue;
            };
            if !have.contains(id) {
                inputs.append(input(&serde_json::json!({
                    "type": "promptString",
                    "id": id,
                    "description": description,
                    "password": secret,
                })));
            }
        }
    }
    Ok(root.to_string())
}

/// `text` without the entry `key` (and, for VS Code, without the inputs thv-sandbox added for it); `None` when
/// there is no such entry.
pub fn remove(text: &str, format: Format, key: &str) -> Result<Option<String>, EditError> {
    if format == Format::CodexToml {
        return toml_remove(text, key);
    }
    let (root, obj) = parse_json(text)?;
    let Some(servers) = obj.object_value(servers_key(format)) else {
        return Ok(None);
    };
    let Some(prop) = servers.get(key) else {
        return Ok(None);
    };
    prop.remove();
    if format == Format::VsCode {
        if let Some(inputs) = obj.array_value("inputs") {
            let prefix = format!("thv-sandbox-{key}-");
            for n in inputs.elements() {
                let ours = n
                    .to_serde_value()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
                    .is_some_and(|id| id.starts_with(&prefix));
                if ours {
                    n.remove();
                }
            }
        }
    }
    Ok(Some(root.to_string()))
}

/// The entries of `text`, as the client reads them (entries that are not stdio commands are left out).
pub fn read(text: &str, format: Format) -> Result<Vec<ReadEntry>, EditError> {
    let servers: serde_json::Map<String, Value> = if format == Format::CodexToml {
        let v: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))?;
        let json = serde_json::to_value(
            toml_edit::de::from_document::<Value>(v)
                .map_err(|e| EditError::Parse(e.to_string()))?,
        )
        .map_err(|e| EditError::Parse(e.to_string()))?;
        json.get(servers_key(format))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    } else {
        let (root, _) = parse_json(text)?;
        root.to_serde_value()
            .and_then(|v| v.get(servers_key(format)).cloned())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    };
    Ok(servers
        .into_iter()
        .filter_map(|(key, v)| {
            let command = v.get("command")?.as_str()?.to_owned();
            let args = v
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let env = v
                .get("env")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            Some(ReadEntry {
                key,
                command,
                args,
                env,
            })
        })
        .collect())
}

fn toml_doc(text: &str) -> Result<toml_edit::DocumentMut, EditError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))
}

fn toml_add(text: &str, e: &Entry, replace: bool) -> Result<String, EditError> {
    use toml_edit::{value, Array, InlineTable, Item, Table};
    let mut doc = toml_doc(text)?;
    let key = servers_key(e.format);
    let servers = doc
        .entry(key)
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| EditError::NotAnObject(key.into()))?;
    if servers.contains_key(&e.key) && !replace {
        return Err(EditError::Exists(e.key.clone()));
    }
    let mut t = Table::new();
    t.insert("command", value(e.command.clone()));
    t.insert("args", value(e.args.iter().collect::<Array>()));
    if !e.env.is_empty() {
        let mut env = InlineTable::new();
        for (k, v) in &e.env {
            if let EnvValue::Literal(s) = v {
                env.insert(k, s.as_str().into());
            }
        }
        t.insert("env", value(env));
    }
    servers.insert(&e.key, Item::Table(t));
    Ok(doc.to_string())
}

fn toml_remove(text: &str, key: &str) -> Result<Option<String>, EditError> {
    let mut doc = toml_doc(text)?;
    let Some(servers) = doc
        .get_mut(servers_key(Format::CodexToml))
        .and_then(|i| i.as_table_like_mut())
    else {
        return Ok(None);
    };
    if servers.remove(key).is_none() {
        return Ok(None);
    }
    Ok(Some(doc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(format: Format, env: Vec<(String, EnvValue)>) -> Entry {
        Entry {
            format,
            key: "time".into(),
            command: "/usr/bin/thv-sandbox".into(),
            args: vec!["run".into(), "time".into()],
            type_stdio: false,
            env,
        }
    }

    #[test]
    fn adding_to_a_jsonc_file_keeps_comments_and_other_entries() {
        let before = "{\n  // my servers\n  \"mcpServers\": {\n    \"other\": {\"command\": \"x\"}, // keep\n  },\n  \"theme\": \"dark\"\n}\n";
        let after = add(before, &entry(Format::McpServers, vec![]), false).unwrap();
        assert!(after.contains("// my servers"), "{after}");
        assert!(after.contains("// keep"), "{after}");
        assert!(after.contains("\"theme\": \"dark\""), "{after}");
        let read = read(&after, Format::McpServers).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].key, "other");
        assert_eq!(read[1].command, "/usr/bin/thv-sandbox");
        assert_eq!(read[1].args, ["run", "time"]);
        // Added twice: refused, and --force replaces without duplicating.
        let e = entry(Format::McpServers, vec![]);
        assert_eq!(
            add(&after, &e, false).unwrap_err(),
            EditError::Exists("time".into())
        );
        let mut changed = e.clone();
        changed.args = vec!["run".into(), "time".into(), "--".into(), "x".into()];
        let replaced = add(&after, &changed, true).unwrap();
        let read = super::read(&replaced, Format::McpServers).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].args.len(), 4);
        // Removed: back to the other entry, comments still there.
        let removed = remove(&replaced, Format::McpServers, "time")
            .unwrap()
            .unwrap();
        assert!(removed.contains("// keep"), "{removed}");
        assert_eq!(super::read(&removed, Format::McpServers).unwrap().len(), 1);
        assert_eq!(remove(&removed, Format::McpServers, "time").unwrap(), None);
    }

    #[test]
    fn an_empty_or_missing_file_gets_a_complete_document() {
        for text in ["", "  \n", "{}"] {
            let out = add(text, &entry(Format::McpServers, vec![]), false).unwrap();
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["mcpServers"]["time"]["args"][1], "time");
        }
    }

    #[test]
    fn vs_code_entries_are_typed_and_prompt_for_secrets_once() {
        let env = vec![(
            "GITHUB_TOKEN".to_owned(),
            EnvValue::Prompt {
                id: "thv-sandbox-time-GITHUB_TOKEN".into(),
                description: "a token".into(),
                secret: true,
            },
        )];
        let e = entry(Format::VsCode, env);
        let out = add("{ \"servers\": {} }", &e, false).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["servers"]["time"]["type"], "stdio");
        assert_eq!(
            v["servers"]["time"]["env"]["GITHUB_TOKEN"],
            "${input:thv-sandbox-time-GITHUB_TOKEN}"
        );
        assert_eq!(v["inputs"][0]["type"], "promptString");
        assert_eq!(v["inputs"][0]["password"], true);
        let again = add(&out, &e, true).unwrap();
        let v: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v["inputs"].as_array().unwrap().len(), 1);
        let removed = remove(&again, Format::VsCode, "time").unwrap().unwrap();
        let v: Value = serde_json::from_str(&removed).unwrap();
        assert!(v["servers"].get("time").is_none());
        assert_eq!(v["inputs"].as_array().unwrap().len(), 0, "{removed}");
    }

    #[test]
    fn zed_and_codex_layouts() {
        let out = add("{}", &entry(Format::Zed, vec![]), false).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["context_servers"]["time"]["source"], "custom");
        let toml = "# codex\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"x\"\n";
        let out = add(
            toml,
            &entry(
                Format::CodexToml,
                vec![("A".into(), EnvValue::Literal("1".into()))],
            ),
            false,
        )
        .unwrap();
        assert!(out.starts_with("# codex\nmodel = \"o3\""), "{out}");
        let read = read(&out, Format::CodexToml).unwrap();
        assert_eq!(read.len(), 2);
        let time = read.iter().find(|r| r.key == "time").unwrap();
        assert_eq!(time.args, ["run", "time"]);
        assert_eq!(time.env, [("A".to_owned(), "1".to_owned())]);
        let removed = remove(&out, Format::CodexToml, "time").unwrap().unwrap();
        assert_eq!(removed, toml);
    }

    #[test]
    fn a_file_that_is_not_an_object_is_refused_unchanged() {
        assert!(matches!(
            add("[1, 2]", &entry(Format::McpServers, vec![]), false),
            Err(EditError::NotAnObject(_))
        ));
        assert!(matches!(
            add(
                "{\"mcpServers\": 3}",
                &entry(Format::McpServers, vec![]),
                false
            ),
            Err(EditError::NotAnObject(_))
        ));
        assert!(matches!(
            add("{,,", &entry(Format::McpServers, vec![]), false),
            Err(EditError::Parse(_))
        ));
    }
}
