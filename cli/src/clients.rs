//! MCP clients' configuration files: which clients this machine has, and an entry that starts a server through
//! thv-sandbox, written in each client's own format.
//!
//! Each client keeps its servers in a JSON (or JSONC, or TOML) file of its own, under a key of its own
//! (`mcpServers` for most, `servers` for VS Code, `context_servers` for Zed, `[mcp_servers]` for Codex). An
//! entry is edited in place: comments, formatting and every other entry and setting stay as they were
//! ([`edit`]), and the file is replaced atomically, the previous version kept beside it as `FILE.bak`
//! ([`write_atomic`]).
//!
//! The paths are the ones the clients use on Linux; `.config/…` paths follow `XDG_CONFIG_HOME`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub mod edit;

/// How a client's file lays out its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"mcpServers": {NAME: {"command", "args", "env"}}}` (Claude, Cursor, Windsurf, Cline, Gemini…).
    McpServers,
    /// `{"servers": {NAME: {"type": "stdio", …}}, "inputs": [...]}`: VS Code, whose `${input:ID}` prompts the
    /// user for a secret when the server starts and keeps it in its secret storage.
    VsCode,
    /// `{"context_servers": {NAME: {"source": "custom", "command", "args", "env"}}}`: Zed's settings.json.
    Zed,
    /// `[mcp_servers.NAME]` tables in Codex's config.toml.
    CodexToml,
}

/// One MCP client.
#[derive(Debug)]
pub struct Client {
    /// The `--client` name.
    pub id: &'static str,
    /// What the user calls it.
    pub name: &'static str,
    /// How its file lays out servers.
    pub format: Format,
    /// Its user-level file, relative to the home directory.
    user_file: &'static str,
    /// Its project-level file, relative to the project directory, where it has one.
    project_file: Option<&'static str>,
    /// Paths (relative to the home directory) whose existence says the client is installed.
    markers: &'static [&'static str],
    /// Whether entries carry `"type": "stdio"` (clients that require or document it).
    type_stdio: bool,
    /// A note shown beside the client (what is special on Linux).
    pub note: &'static str,
}

/// The clients `client` knows, with their Linux paths.
pub const CLIENTS: &[Client] = &[
    Client {
        id: "vscode",
        name: "VS Code",
        format: Format::VsCode,
        user_file: ".config/Code/User/mcp.json",
        project_file: Some(".vscode/mcp.json"),
        markers: &[".config/Code"],
        type_stdio: true,
        note: "secrets are prompted for with ${input:…} and kept in VS Code's secret storage",
    },
    Client {
        id: "vscode-insiders",
        name: "VS Code Insiders",
        format: Format::VsCode,
        user_file: ".config/Code - Insiders/User/mcp.json",
        project_file: Some(".vscode/mcp.json"),
        markers: &[".config/Code - Insiders"],
        type_stdio: true,
        note: "",
    },
    Client {
        id: "cursor",
        name: "Cursor",
        format: Format::McpServers,
        user_file: ".cursor/mcp.json",
        project_file: Some(".cursor/mcp.json"),
        markers: &[".cursor", ".config/Cursor"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "claude-code",
        name: "Claude Code",
        format: Format::McpServers,
        user_file: ".claude.json",
        project_file: Some(".mcp.json"),
        markers: &[".claude.json", ".claude"],
        type_stdio: true,
        note: "",
    },
    Client {
        id: "claude-desktop",
        name: "Claude Desktop",
        format: Format::McpServers,
        user_file: ".config/Claude/claude_desktop_config.json",
        project_file: None,
        markers: &[".config/Claude"],
        type_stdio: false,
        note: "no official Linux build: the path of the community builds",
    },
    Client {
        id: "windsurf",
        name: "Windsurf",
        format: Format::McpServers,
        user_file: ".codeium/windsurf/mcp_config.json",
        project_file: None,
        markers: &[".codeium/windsurf"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "cline",
        name: "Cline (VS Code extension)",
        format: Format::McpServers,
        user_file: ".config/Code/User/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json",
        project_file: None,
        markers: &[".config/Code/User/globalStorage/saoudrizwan.claude-dev"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "roo-code",
        name: "Roo Code (VS Code extension)",
        format: Format::McpServers,
        user_file: ".config/Code/User/globalStorage/rooveterinaryinc.roo-cline/settings/mcp_settings.json",
        project_file: Some(".roo/mcp.json"),
        markers: &[".config/Code/User/globalStorage/rooveterinaryinc.roo-cline"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "gemini-cli",
        name: "Gemini CLI",
        format: Format::McpServers,
        user_file: ".gemini/settings.json",
        project_file: Some(".gemini/settings.json"),
        markers: &[".gemini"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "amazon-q",
        name: "Amazon Q Developer CLI",
        format: Format::McpServers,
        user_file: ".aws/amazonq/mcp.json",
        project_file: Some(".amazonq/mcp.json"),
        markers: &[".aws/amazonq"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "lm-studio",
        name: "LM Studio",
        format: Format::McpServers,
        user_file: ".lmstudio/mcp.json",
        project_file: None,
        markers: &[".lmstudio"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "zed",
        name: "Zed",
        format: Format::Zed,
        user_file: ".config/zed/settings.json",
        project_file: Some(".zed/settings.json"),
        markers: &[".config/zed"],
        type_stdio: false,
        note: "",
    },
    Client {
        id: "codex",
        name: "OpenAI Codex CLI",
        format: Format::CodexToml,
        user_file: ".codex/config.toml",
        project_file: None,
        markers: &[".codex"],
        type_stdio: false,
        note: "",
    },
];

/// The client named `id`.
pub fn find(id: &str) -> Option<&'static Client> {
    CLIENTS.iter().find(|c| c.id.eq_ignore_ascii_case(id))
}

/// The `--client` names, for messages.
pub fn ids() -> String {
    CLIENTS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
}

/// Where a client's files are looked for: the home directory and `XDG_CONFIG_HOME`.
#[derive(Debug, Clone)]
pub struct Places {
    /// `$HOME`.
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME`, when set to an absolute path.
    pub xdg_config: Option<PathBuf>,
}

impl Places {
    /// From the environment.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Places> {
        let home = env("HOME").filter(|h| h.starts_with('/'))?;
        let xdg_config = env("XDG_CONFIG_HOME")
            .filter(|x| x.starts_with('/'))
            .map(PathBuf::from);
        Some(Places {
            home: PathBuf::from(home),
            xdg_config,
        })
    }

    fn under_home(&self, rel: &str) -> PathBuf {
        match (rel.strip_prefix(".config/"), &self.xdg_config) {
            (Some(rest), Some(xdg)) => xdg.join(rest),
            _ => self.home.join(rel),
        }
    }
}

impl Client {
    /// The user-level file.
    pub fn user_file(&self, places: &Places) -> PathBuf {
        places.under_home(self.user_file)
    }

    /// The project-level file in `project`, where the client has one.
    pub fn project_file(&self, project: &Path) -> Option<PathBuf> {
        self.project_file.map(|f| project.join(f))
    }

    /// Whether the client looks installed for this user.
    pub fn found(&self, places: &Places) -> bool {
        self.markers.iter().any(|m| places.under_home(m).exists())
            || self.user_file(places).exists()
    }

    /// The entry `server` gets in this client's file.
    pub fn entry(&self, server: &ServerEntry) -> edit::Entry {
        edit::Entry {
            format: self.format,
            key: server.key.clone(),
            command: server.command.clone(),
            args: server.args.clone(),
            type_stdio: self.type_stdio,
            env: server
                .env
                .iter()
                .filter_map(|v| {
                    let value = if let Some(given) = &v.value {
                        edit::EnvValue::Literal(given.clone())
                    } else if self.format == Format::VsCode {
                        edit::EnvValue::Prompt {
                            id: format!("thv-sandbox-{}-{}", server.key, v.name),
                            description: v.description.clone(),
                            secret: v.secret,
                        }
                    } else {
                        return None;
                    };
                    Some((v.name.clone(), value))
                })
                .collect(),
        }
    }
}

/// A server's variable, as the entry declares it.
#[derive(Debug, Clone)]
pub struct EntryVar {
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Whether it is a secret.
    pub secret: bool,
    /// A value given with `client add -e NAME=VALUE`.
    pub value: Option<String>,
}

/// What a client needs to start a server through thv-sandbox.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    /// The entry's name in the client's file.
    pub key: String,
    /// The program: thv-sandbox's own path.
    pub command: String,
    /// `run NAME [-- ARGS]`, with the flags given.
    pub args: Vec<String>,
    /// The required variables, and those given values.
    pub env: Vec<EntryVar>,
}

/// A server checked (and its image pulled) for `client add`.
#[derive(Debug, Clone)]
pub struct PreparedServer {
    /// The entry's default name.
    pub short_name: String,
    /// The variables the registry entry declares.
    pub declared: Vec<thv_sandbox_runtime::catalog::EnvVarSpec>,
    /// Whether `client add` takes the server's pin, and under which name.
    pub pin: PinPlan,
    /// Required variables the pin run would not get (from the entry's values or this environment).
    pub unset_for_pin: Vec<String>,
    /// The cache directory (where pins are kept).
    pub cache: PathBuf,
}

/// Whether a server's tools can be pinned by `client add` (see `client_pin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinPlan {
    /// Yes: the pin's name (`pin show NAME`).
    Take(String),
    /// No, and why (a note for the user).
    Skip(String),
}

/// An entry name for a server given as an image reference: the repository's last path component, without tag
/// or digest (`ghcr.io/org/mcp-time:1.2` → `mcp-time`; `oci:/p/layout:tag` → `layout`).
pub fn entry_name_for_image(image: &str) -> String {
    let image = image.strip_prefix("oci:").unwrap_or(image);
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let name = last.split(':').next().unwrap_or(last);
    if name.is_empty() {
        "server".to_owned()
    } else {
        name.to_owned()
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, synced, renamed over the file.
/// An existing file is kept as `FILE.bak` first and its permissions carried over; a new one is `0600` (these
/// files hold tokens). A symbolic link (a dotfiles manager's) is followed: the file it names is replaced.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(e),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let (mode, backup) = match std::fs::metadata(&path) {
        Ok(m) => {
            let mut bak = path.clone().into_os_string();
            bak.push(".bak");
            let bak = PathBuf::from(bak);
            std::fs::copy(&path, &bak)?;
            (m.permissions().mode() & 0o7777, Some(bak))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (0o600, None),
        Err(e) => return Err(e),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".thv-sandbox-")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(home: &Path) -> Places {
        Places {
            home: home.to_owned(),
            xdg_config: None,
        }
    }

    #[test]
    fn every_client_has_a_distinct_id_and_an_absolute_free_user_path() {
        let mut ids: Vec<&str> = CLIENTS.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CLIENTS.len());
        for c in CLIENTS {
            assert!(!c.user_file.starts_with('/'), "{}", c.id);
            assert!(find(&c.id.to_uppercase()).is_some());
        }
    }

    #[test]
    fn image_references_give_short_entry_names() {
        assert_eq!(entry_name_for_image("ghcr.io/org/mcp-time:1.2"), "mcp-time");
        assert_eq!(entry_name_for_image("docker.io/mcp/time@sha256:ab"), "time");
        assert_eq!(entry_name_for_image("localhost:5000/probe"), "probe");
        assert_eq!(entry_name_for_image("oci:/p/layout:tag"), "layout");
    }

    #[test]
    fn config_paths_follow_xdg_config_home() {
        let p = Places {
            home: "/home/u".into(),
            xdg_config: Some("/xdg".into()),
        };
        assert_eq!(
            find("vscode").unwrap().user_file(&p),
            Path::new("/xdg/Code/User/mcp.json")
        );
        assert_eq!(
            find("cursor").unwrap().user_file(&p),
            Path::new("/home/u/.cursor/mcp.json")
        );
        let env = |n: &str| match n {
            "HOME" => Some("/home/u".to_owned()),
            "XDG_CONFIG_HOME" => Some("relative".to_owned()),
            _ => None,
        };
        assert_eq!(Places::from_env(&env).unwrap().xdg_config, None);
    }

    #[test]
    fn a_client_is_found_by_its_directory_or_its_file() {
        let home = tempfile::tempdir().unwrap();
        let p = places(home.path());
        let cursor = find("cursor").unwrap();
        assert!(!cursor.found(&p));
        std::fs::create_dir(home.path().join(".cursor")).unwrap();
        assert!(cursor.found(&p));
        let claude = find("claude-code").unwrap();
        assert!(!claude.found(&p));
        std::fs::write(home.path().join(".claude.json"), "{}").unwrap();
        assert!(claude.found(&p));
    }

    #[test]
    fn the_atomic_write_keeps_a_backup_and_the_mode_and_follows_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b/mcp.json");
        assert_eq!(write_atomic(&new, "{}\n").unwrap(), None);
        assert_eq!(
            std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let real = dir.path().join("real.json");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let bak = write_atomic(&link, "new").unwrap().unwrap();
        assert_eq!(bak, dir.path().join("real.json.bak"));
        assert_eq!(std::fs::read_to_string(&bak).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".thv-sandbox-")),
            "{names:?}"
        );
    }
}
