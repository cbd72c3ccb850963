//! The guard: what the server tells the model, checked on its way (issue 17).
//!
//! The sandbox limits what a server can touch; the guard watches the MCP conversation itself. When one of its
//! features is on, `run` relays the client's stdio to the server's through [`relay`] instead of handing the
//! server the client's descriptors:
//! - [`pin`]: the server's tools (prompts, resources) recorded on first sight, compared on later runs and after
//!   `notifications/tools/list_changed`; differences shown, and under `enforce` withheld until accepted;
//! - [`filter`]: `--tools` and `--tools-override` (ToolHive's format);
//! - [`audit`]: one JSON line per request and notification, argument keys but never values.
//!
//! [`frame`] is the parser facing the server: bounded lines, a pure [`frame::parse_frame`] over bytes.
//! With every feature off (`--pin off`, no filter, no audit log) the server keeps the client's descriptors, as
//! before: no relay, no cost. The guard serves stdio servers on our stdio; with `--port`/`--socket` or for
//! servers speaking HTTP it is not available yet (its explicit features are refused there, pinning is skipped).

pub mod audit;
pub mod config;
pub mod filter;
pub mod frame;
pub mod pin;
pub mod relay;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::report::Reporter;

pub use pin::PinMode;

/// The guard's flags of `run`, as given (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct GuardFlags {
    /// `--tools a,b`.
    pub tools: Option<Vec<String>>,
    /// `--tools-override FILE`.
    pub tools_override: Option<PathBuf>,
    /// `--pin MODE`.
    pub pin: Option<PinMode>,
    /// `--audit-log FILE`.
    pub audit_log: Option<PathBuf>,
}

/// What the guard does for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardRequest {
    /// `--tools` and `--tools-override`.
    pub filter: filter::ToolFilter,
    /// Pinned descriptions.
    pub pin: PinMode,
    /// The audit log's file.
    pub audit_log: Option<PathBuf>,
    /// Its size cap.
    pub audit_max_bytes: u64,
}

impl Default for GuardRequest {
    fn default() -> Self {
        GuardRequest {
            filter: Default::default(),
            pin: PinMode::Warn,
            audit_log: None,
            audit_max_bytes: audit::DEFAULT_MAX_BYTES,
        }
    }
}

impl GuardRequest {
    /// Everything off: no relay.
    pub fn off() -> GuardRequest {
        GuardRequest {
            pin: PinMode::Off,
            ..GuardRequest::default()
        }
    }

    /// Whether a feature is on (and `run` relays stdio).
    pub fn active(&self) -> bool {
        !self.filter.is_empty() || self.pin != PinMode::Off || self.audit_log.is_some()
    }

    /// Whether a feature the user asked for explicitly (a filter, an audit log) is on.
    pub fn explicit(&self) -> bool {
        !self.filter.is_empty() || self.audit_log.is_some()
    }
}

/// Why the guard cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The override file.
    #[error("cannot use the tools override file {path}: {reason}")]
    Overrides {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--tools` names nothing.
    #[error("--tools names no tool")]
    NoTools,
    /// The audit log cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A feature asked for where the guard is not available.
    #[error("--tools, --tools-override and --audit-log work for stdio servers on thv-sandbox's stdio; not with --port/--socket or for servers speaking HTTP (yet)")]
    Unsupported,
    /// Pipes or threads.
    #[error("cannot start the guard's relay: {0}")]
    Io(#[from] std::io::Error),
}

impl GuardError {
    /// What the user can do.
    pub fn hint(&self) -> Option<String> {
        match self {
            GuardError::Overrides { .. } => Some(
                "the file is JSON in ToolHive's format: {\"toolsOverride\": {\"TOOL\": {\"name\": \"NEW_NAME\", \
                 \"description\": \"NEW DESCRIPTION\"}}}"
                    .into(),
            ),
            GuardError::NoTools => Some("give the tool names separated by commas: --tools read_file,list_dir".into()),
            GuardError::Audit { .. } => Some("name a file in a directory you can write to".into()),
            GuardError::Unsupported => Some("run the server on stdio (without --port/--socket) to use them".into()),
            GuardError::Io(_) => None,
        }
    }
}

/// The flags (and, under them, the configuration's values: `tools`, `tools_override`, `pin`, `audit_log`,
/// already chosen by the caller) → the guard's request. The override file is read here.
pub fn request(
    tools: Option<&[String]>,
    tools_override: Option<&std::path::Path>,
    pin: Option<PinMode>,
    audit_log: Option<PathBuf>,
    audit_max_bytes: Option<u64>,
) -> Result<GuardRequest, GuardError> {
    let allow = match tools {
        None => None,
        Some(list) => {
            let set: std::collections::BTreeSet<String> = list
                .iter()
                .flat_map(|t| t.split(','))
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
            if set.is_empty() {
                return Err(GuardError::NoTools);
            }
            Some(set)
        }
    };
    let overrides = match tools_override {
        None => Default::default(),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| GuardError::Overrides {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            filter::parse_overrides(&bytes).map_err(|reason| GuardError::Overrides {
                path: path.to_owned(),
                reason,
            })?
        }
    };
    Ok(GuardRequest {
        filter: filter::ToolFilter { allow, overrides },
        pin: pin.unwrap_or_default(),
        audit_log,
        audit_max_bytes: audit_max_bytes.unwrap_or(audit::DEFAULT_MAX_BYTES),
    })
}

/// The pin name of a server: its registry name, else the image reference without tag or digest.
pub fn server_name(registry_name: Option<&str>, image: &str) -> String {
    registry_name.map_or_else(|| pin::name_of_image(image), str::to_owned)
}

/// A relay started for a run: the server's ends of its pipes, until the supervisor takes them.
#[derive(Debug)]
pub struct Started {
    relay: relay::Running,
    server_ends: Option<(OwnedFd, OwnedFd, OwnedFd)>,
}

impl Started {
    /// The server's stdio for the supervisor (once).
    pub fn server_stdio<'a>(&mut self) -> crate::sandbox::supervise::ServerStdio<'a> {
        let (stdin, stdout, end) = self.server_ends.take().expect("server_stdio is taken once");
        crate::sandbox::supervise::ServerStdio::Port { stdin, stdout, end }
    }

    /// After the server is gone: see [`relay::Running::finish`]. Whether the client closed its input.
    pub fn finish(self) -> bool {
        self.relay.finish()
    }
}

/// Refuses the guard's explicit features where it is not available: `relayable` is false for `--port` and for
/// HTTP servers.
pub fn check_supported(guard: &GuardRequest, relayable: bool) -> Result<(), GuardError> {
    if !relayable && guard.explicit() {
        return Err(GuardError::Unsupported);
    }
    Ok(())
}

/// Starts the relay for a stdio server on our stdio (`relayable`), when a guard feature is on (`None`: the server
/// gets our descriptors). `server` is its pin name, `digest` the image's manifest digest; pins are kept under
/// `cache`.
pub fn start(
    guard: &GuardRequest,
    relayable: bool,
    server: String,
    digest: &str,
    cache: &std::path::Path,
    reporter: &Arc<dyn Reporter>,
) -> Result<Option<Started>, GuardError> {
    if !guard.active() || !relayable {
        return Ok(None);
    }
    let audit = match &guard.audit_log {
        None => None,
        Some(path) => Some(audit::AuditLog::open(path, guard.audit_max_bytes).map_err(
            |source| GuardError::Audit {
                path: path.clone(),
                source,
            },
        )?),
    };
    let guard = relay::Guard::new(relay::Setup {
        server,
        digest: digest.to_owned(),
        request: guard.clone(),
        pins: pin::PinStore::new(cache),
        audit,
        reporter: Arc::clone(reporter),
    });
    let (server_ends, ours) = crate::sandbox::bridge::session_pipes()?;
    let client_in = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let client_out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let pipes = relay::Pipes {
        to_server: ours.to_server,
        from_server: ours.from_server,
        end: ours
            .end
            .ok_or_else(|| std::io::Error::other("no end pipe"))?,
    };
    let relay = relay::start(guard, client_in, client_out, pipes)?;
    Ok(Some(Started {
        relay,
        server_ends: Some(server_ends),
    }))
}
