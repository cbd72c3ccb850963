//! Tool filters: `--tools a,b` (only these are listed and callable) and `--tools-override FILE` (ToolHive's
//! format: rename and redescribe tools). Names in `--tools` are the names the client sees, after renaming, as in
//! ToolHive.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tool's override: a new name, a new description, or both (ToolHive's `ToolOverride`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// The name the client sees instead of the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The description the client sees instead of the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    #[serde(rename = "toolsOverride")]
    tools_override: BTreeMap<String, ToolOverride>,
}

/// Reads a `--tools-override` file: `{"toolsOverride": {"SERVER_NAME": {"name": "…", "description": "…"}}}`
/// (ToolHive's format). Two tools renamed to one name, or a rename onto another tool's name, are errors.
pub fn parse_overrides(bytes: &[u8]) -> Result<BTreeMap<String, ToolOverride>, String> {
    let file: OverrideFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::new();
    for (original, o) in &file.tools_override {
        if original.is_empty() {
            return Err("an empty tool name".into());
        }
        if let Some(name) = &o.name {
            if name.is_empty() {
                return Err(format!("`{original}` is renamed to an empty name"));
            }
            if !seen.insert(name.clone()) {
                return Err(format!("two tools are renamed to `{name}`"));
            }
        }
    }
    Ok(file.tools_override)
}

/// What the client may see and call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFilter {
    /// `--tools`: the client-visible names allowed; `None`: all.
    pub allow: Option<BTreeSet<String>>,
    /// `--tools-override`, by the server's tool name.
    pub overrides: BTreeMap<String, ToolOverride>,
}

impl ToolFilter {
    /// Whether the filter changes nothing.
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.overrides.is_empty()
    }

    /// The name the client sees for the server's tool `original`.
    pub fn exposed<'a>(&'a self, original: &'a str) -> &'a str {
        self.overrides
            .get(original)
            .and_then(|o| o.name.as_deref())
            .unwrap_or(original)
    }

    /// The server's name for the tool the client calls `exposed`, if the client may call it: `None` for a tool
    /// not in `--tools`, and for a server name that was renamed away.
    pub fn callable(&self, exposed: &str) -> Option<String> {
        if self.allow.as_ref().is_some_and(|a| !a.contains(exposed)) {
            return None;
        }
        if let Some((original, _)) = self
            .overrides
            .iter()
            .find(|(_, o)| o.name.as_deref() == Some(exposed))
        {
            return Some(original.clone());
        }
        match self.overrides.get(exposed).and_then(|o| o.name.as_ref()) {
            Some(_) => None,
            None => Some(exposed.to_owned()),
        }
    }

    /// Applies the filter to a `tools/list` result's `tools`: tools not allowed (or in `withheld`, by the
    /// server's name, or shadowed by another tool renamed to their name) go, the others are renamed and redescribed. Entries that are not objects with a string
    /// `name` go too.
    pub fn apply(&self, tools: &mut Vec<Value>, withheld: &BTreeSet<String>) {
        tools.retain_mut(|tool| {
            let Some(original) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
                return false;
            };
            if withheld.contains(&original) {
                return false;
            }
            // Shown only under a name whose calls reach this very tool: not when `--tools` leaves the name out,
            // nor when another tool is renamed to it (a server tool `say` next to `probe` renamed `say`: calls
            // of `say` go to `probe`, and the list must not show the server's `say` under that name).
            let exposed = self.exposed(&original).to_owned();
            if self.callable(&exposed).as_deref() != Some(original.as_str()) {
                return false;
            }
            if let (Some(o), Some(obj)) = (self.overrides.get(&original), tool.as_object_mut()) {
                if let Some(name) = &o.name {
                    obj.insert("name".into(), Value::String(name.clone()));
                }
                if let Some(d) = &o.description {
                    obj.insert("description".into(), Value::String(d.clone()));
                }
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(allow: Option<&[&str]>, file: &str) -> ToolFilter {
        ToolFilter {
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            overrides: parse_overrides(file.as_bytes()).expect("overrides"),
        }
    }

    #[test]
    fn toolhive_override_files_are_read_and_bad_ones_refused() {
        let o = parse_overrides(
            br#"{"toolsOverride": {"fetch": {"name": "web_fetch", "description": "Fetch a page."}, "x": {"description": "d"}}}"#,
        )
        .unwrap();
        assert_eq!(o["fetch"].name.as_deref(), Some("web_fetch"));
        assert_eq!(o["x"].name, None);
        assert!(parse_overrides(b"{}").is_err());
        assert!(parse_overrides(br#"{"toolsOverride": {"a": {"nam": "b"}}}"#).is_err());
        assert!(
            parse_overrides(br#"{"toolsOverride": {"a": {"name": "c"}, "b": {"name": "c"}}}"#)
                .is_err()
        );
        assert!(parse_overrides(br#"{"toolsOverride": {"a": {"name": ""}}}"#).is_err());
    }

    #[test]
    fn lists_are_filtered_renamed_and_redescribed() {
        let f = filter(
            Some(&["say", "probe"]),
            r#"{"toolsOverride": {"echo": {"name": "say", "description": "Says it."}}}"#,
        );
        let mut tools = vec![
            json!({"name": "echo", "description": "Returns its text.", "inputSchema": {}}),
            json!({"name": "probe", "description": "p"}),
            json!({"name": "crash"}),
            json!({"nameless": true}),
            json!("junk"),
        ];
        f.apply(&mut tools, &BTreeSet::new());
        assert_eq!(
            tools,
            vec![
                json!({"name": "say", "description": "Says it.", "inputSchema": {}}),
                json!({"name": "probe", "description": "p"})
            ]
        );
        // A server tool with the name another tool is renamed to: calls of `say` go to `echo`, so the server's
        // own `say` is not shown under it (with or without --tools).
        let mut shadowed = vec![
            json!({"name": "say", "description": "The server's own."}),
            json!({"name": "echo"}),
        ];
        f.apply(&mut shadowed, &BTreeSet::new());
        assert_eq!(
            shadowed,
            vec![json!({"name": "say", "description": "Says it."})]
        );
        let open = filter(None, r#"{"toolsOverride": {"echo": {"name": "say"}}}"#);
        let mut shadowed = vec![
            json!({"name": "say", "description": "The server's own."}),
            json!({"name": "echo"}),
        ];
        open.apply(&mut shadowed, &BTreeSet::new());
        assert_eq!(shadowed, vec![json!({"name": "say"})]);
        let mut again = vec![json!({"name": "probe"})];
        f.apply(&mut again, &BTreeSet::from(["probe".to_string()]));
        assert!(again.is_empty());
    }

    #[test]
    fn calls_map_to_the_server_name_or_are_refused() {
        let f = filter(
            Some(&["say", "probe"]),
            r#"{"toolsOverride": {"echo": {"name": "say"}}}"#,
        );
        assert_eq!(f.callable("say").as_deref(), Some("echo"));
        assert_eq!(f.callable("probe").as_deref(), Some("probe"));
        assert_eq!(f.callable("echo"), None, "renamed away");
        assert_eq!(f.callable("crash"), None, "not in --tools");
        let open = filter(None, r#"{"toolsOverride": {"echo": {"name": "say"}}}"#);
        assert_eq!(open.callable("crash").as_deref(), Some("crash"));
        assert_eq!(open.callable("echo"), None);
    }
}
