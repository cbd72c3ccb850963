//! The guard's flags of `run` (`--tools`, `--tools-override`, `--pin`, `--audit-log`) and `thv-sandbox pin
//! show|accept|reset`: the servers' pinned tool descriptions.

use std::io::Write;
use std::path::PathBuf;

use thv_sandbox_runtime::guard::pin::{Pin, PinStore};
use thv_sandbox_runtime::guard::{GuardFlags, PinMode};
use thv_sandbox_runtime::{EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::args::SettingsArgs;
use crate::commands::setup;

/// The guard of the MCP conversation (see SECURITY.md, "The MCP conversation").
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GuardArgs {
    /// Only these tools (comma-separated, repeatable; the names the client sees, after --tools-override) are
    /// listed to the client and callable; a call to another gets a JSON-RPC error.
    #[arg(long = "tools", value_name = "TOOL[,TOOL…]")]
    pub(crate) tools: Vec<String>,
    /// Rename and redescribe tools: a JSON file in ToolHive's format,
    /// {"toolsOverride": {"TOOL": {"name": "NEW_NAME", "description": "NEW DESCRIPTION"}}}.
    #[arg(long = "tools-override", value_name = "FILE")]
    pub(crate) tools_override: Option<PathBuf>,
    /// Pinned tool descriptions: `warn` (default: a server's tools, prompts and resources that differ from
    /// those pinned on its first run are shown on stderr), `enforce` (and new or changed tools are withheld until
    /// `thv-sandbox pin accept NAME`), `off` (and, with no filter and no audit log, no relay at all).
    #[arg(long = "pin", value_name = "MODE", env = "THV_SANDBOX_PIN", value_parser = parse_pin_mode)]
    pub(crate) pin: Option<PinMode>,
    /// Append one JSON line per MCP request and notification to FILE (time, server, image digest, method, tool,
    /// argument names but never values, status, duration); rotated at 10 MiB (FILE.1 … FILE.3).
    #[arg(long = "audit-log", value_name = "FILE", env = "THV_SANDBOX_AUDIT_LOG")]
    pub(crate) audit_log: Option<PathBuf>,
}

fn parse_pin_mode(s: &str) -> Result<PinMode, String> {
    s.parse()
}

impl GuardArgs {
    /// The flags as the settings layer takes them.
    pub(crate) fn flags(&self) -> GuardFlags {
        GuardFlags {
            tools: (!self.tools.is_empty()).then(|| self.tools.clone()),
            tools_override: self.tools_override.clone(),
            pin: self.pin,
            audit_log: self.audit_log.clone(),
        }
    }
}

/// `thv-sandbox pin`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PinCommand {
    /// The pins (one line each), or one server's pinned tools, prompts and resources and what waits for
    /// acceptance (`--json`: the pin file's JSON).
    Show {
        /// The server: its registry name, or its image reference without tag (as `run` says it).
        name: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Accept what a server now says (the difference the last run showed): it becomes the pin, and `enforce`
    /// lets those tools through.
    Accept {
        /// The server.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Forget a server's pin: its next run pins what it says then.
    Reset {
        /// The server.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

pub(crate) fn pin_cmd(file: Option<PathBuf>, cmd: PinCommand) -> i32 {
    let settings = match &cmd {
        PinCommand::Show { settings, .. }
        | PinCommand::Accept { settings, .. }
        | PinCommand::Reset { settings, .. } => settings,
    };
    let (_config, dirs) = match setup(file, settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let store = PinStore::new(&dirs.cache);
    let mut out = std::io::stdout().lock();
    match cmd {
        PinCommand::Show {
            name: None, json, ..
        } => {
            let pins = match store.list() {
                Ok(p) => p,
                Err(e) => return failed(&e),
            };
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&pins).unwrap_or_default()
                );
                return 0;
            }
            if pins.is_empty() {
                eprintln!("no pins yet: a server's tools are pinned on its first run (or by `client add`)");
            }
            for p in pins {
                let _ = writeln!(
                    out,
                    "{}\t{} tools\tpinned {}{}",
                    p.name,
                    p.lists.tools.as_ref().map_or(0, Vec::len),
                    p.pinned_at,
                    if p.pending.is_some() {
                        "\tdifference waiting: `thv-sandbox pin accept`"
                    } else {
                        ""
                    }
                );
            }
            0
        }
        PinCommand::Show {
            name: Some(name),
            json,
            ..
        } => {
            let pin = match find(&store, &name) {
                Ok(p) => p,
                Err(code) => return code,
            };
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&pin).unwrap_or_default()
                );
                return 0;
            }
            let _ = out.write_all(render(&pin).as_bytes());
            0
        }
        PinCommand::Accept { name, .. } => {
            let mut pin = match find(&store, &name) {
                Ok(p) => p,
                Err(code) => return code,
            };
            if !pin.accept() {
                eprintln!(
                    "{}: nothing waits for acceptance: what it said last matched its pin",
                    pin.name
                );
                return 0;
            }
            if let Err(e) = store.save(&pin) {
                return failed(&e);
            }
            eprintln!(
                "{}: accepted; its pin now holds what it said last",
                pin.name
            );
            0
        }
        PinCommand::Reset { name, .. } => {
            let pin = match find(&store, &name) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match store.remove(&pin.name) {
                Ok(_) => {
                    eprintln!(
                        "{}: pin removed; its next run pins what it says then",
                        pin.name
                    );
                    0
                }
                Err(e) => failed(&e),
            }
        }
    }
}

fn failed(e: &std::io::Error) -> i32 {
    eprintln!("error: the pins: {e}");
    EXIT_SANDBOX_ERROR
}

/// The pin of `name` (as written, or as an image reference without tag).
fn find(store: &PinStore, name: &str) -> Result<Pin, i32> {
    let alt = thv_sandbox_runtime::guard::pin::name_of_image(name);
    for n in [name, alt.as_str()] {
        match store.load(n) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(failed(&e)),
        }
    }
    eprintln!("error: no pin for `{name}`");
    eprintln!("hint: `thv-sandbox pin show` lists the pinned servers by the name `run` gives them");
    Err(EXIT_USAGE)
}

fn render(pin: &Pin) -> String {
    let mut s = format!(
        "{}\npinned: {}\ndigests: {}\n",
        pin.name,
        pin.pinned_at,
        pin.digests.join(", ")
    );
    let list = |s: &mut String, title: &str, entries: Option<&Vec<serde_json::Value>>| {
        if let Some(entries) = entries {
            s.push_str(&format!("{title}:\n"));
            for e in entries {
                let name = e
                    .get("name")
                    .or_else(|| e.get("uri"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?");
                let desc = e.get("description").and_then(|v| v.as_str()).unwrap_or("");
                s.push_str(&format!("  {name}: {}\n", desc.escape_debug()));
            }
        }
    };
    list(&mut s, "tools", pin.lists.tools.as_ref());
    list(&mut s, "prompts", pin.lists.prompts.as_ref());
    list(&mut s, "resources", pin.lists.resources.as_ref());
    if let Some(p) = &pin.pending {
        s.push_str(&format!(
            "waiting for `thv-sandbox pin accept {}` (seen {} at {}):\n",
            pin.name, p.seen_at, p.digest
        ));
        list(&mut s, "  tools", p.lists.tools.as_ref());
        list(&mut s, "  prompts", p.lists.prompts.as_ref());
        list(&mut s, "  resources", p.lists.resources.as_ref());
    }
    s
}
