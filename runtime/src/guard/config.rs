//! The guard's table of the configuration file:
//!
//! ```toml
//! [guard]
//! pin = "warn"                    # warn | enforce | off
//! audit_log = "~/.local/state/thv-sandbox/audit.log"
//! audit_log_max_mib = 10
//! tools = ["read_file"]           # for every server
//! tools_override = "overrides.json"
//!
//! [guard.servers."io.github.stacklok/fetch"]   # per server (its registry name or pin name)
//! tools = ["fetch"]
//! tools_override = "fetch-overrides.json"
//! pin = "enforce"
//! ```
//!
//! A flag wins over the server's table, which wins over `[guard]`. Paths are taken relative to the file's
//! directory; `~/` is the home directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pin::PinMode;

/// Settings for one server (or, at the top of `[guard]`, for all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerGuard {
    /// Like `--tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Like `--tools-override`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_override: Option<PathBuf>,
    /// Like `--pin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinMode>,
}

/// The `[guard]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// For every server: like `--tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// For every server: like `--tools-override`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_override: Option<PathBuf>,
    /// For every server: like `--pin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinMode>,
    /// Like `--audit-log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    /// The audit log's size cap, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log_max_mib: Option<u64>,
    /// Per server, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, ServerGuard>,
}

impl GuardConfig {
    /// Paths made absolute with `expand` (the configuration's rule: `~/`, relative to the file).
    pub fn expanded(mut self, expand: &dyn Fn(&Path) -> PathBuf) -> GuardConfig {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut() {
                *path = expand(path);
            }
        };
        fix(&mut self.tools_override);
        fix(&mut self.audit_log);
        for s in self.servers.values_mut() {
            fix(&mut s.tools_override);
        }
        self
    }

    /// What applies to `server` (its table over `[guard]`'s keys).
    pub fn for_server(&self, names: &[&str]) -> ServerGuard {
        let own = names.iter().find_map(|n| self.servers.get(*n));
        ServerGuard {
            tools: own
                .and_then(|s| s.tools.clone())
                .or_else(|| self.tools.clone()),
            tools_override: own
                .and_then(|s| s.tools_override.clone())
                .or_else(|| self.tools_override.clone()),
            pin: own.and_then(|s| s.pin).or(self.pin),
        }
    }

    /// The audit log's cap in bytes, if set.
    pub fn audit_max_bytes(&self) -> Option<u64> {
        self.audit_log_max_mib.map(|m| m.saturating_mul(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read_and_a_servers_keys_win() {
        let c: GuardConfig = toml::from_str(
            r#"
pin = "warn"
tools = ["a"]
audit_log = "audit.log"
[servers."x/fetch"]
pin = "enforce"
tools_override = "o.json"
"#,
        )
        .unwrap();
        let c = c.expanded(&|p| Path::new("/cfg").join(p));
        assert_eq!(c.audit_log.as_deref(), Some(Path::new("/cfg/audit.log")));
        let fetch = c.for_server(&["x/fetch"]);
        assert_eq!(fetch.pin, Some(PinMode::Enforce));
        assert_eq!(fetch.tools, Some(vec!["a".to_string()]));
        assert_eq!(
            fetch.tools_override.as_deref(),
            Some(Path::new("/cfg/o.json"))
        );
        assert_eq!(c.for_server(&["other"]).pin, Some(PinMode::Warn));
        assert!(toml::from_str::<GuardConfig>("pins = \"warn\"").is_err());
        assert!(toml::from_str::<GuardConfig>("pin = \"maybe\"").is_err());
    }
}
