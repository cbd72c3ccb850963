//! One file per command: each takes its parsed flags and returns the exit code; the helpers they share (the
//! configuration, the directories, the settings layer's notices) are here.

pub(crate) mod accept;
pub(crate) mod config;
pub(crate) mod doctor;
pub(crate) mod images;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod registry;
pub(crate) mod rmi;
pub(crate) mod run;
pub(crate) mod trust;
pub(crate) mod verify;
// Packaging: shell completions and the manual page, generated from the clap definition.
pub(crate) mod completions;
pub(crate) mod man;

use std::path::PathBuf;

use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::settings::request::{self};
use thv_sandbox_runtime::settings::{self, Config};
use thv_sandbox_runtime::trust::verification::TufSettings;
use thv_sandbox_runtime::{EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::args::*;
use crate::report::*;

/// The effective configuration: the file (`--config`, `THV_SANDBOX_CONFIG` or the default location), the
/// environment and the flags, combined by `settings::pick`.
pub(crate) fn load_config(file: Option<PathBuf>, settings: &SettingsArgs) -> Result<Config, i32> {
    let flags = settings::Flags {
        config: file,
        cache_dir: settings.cache_dir.clone(),
        insecure_registries: settings.insecure_registry.clone(),
        mirrors: settings.registry_mirror.clone(),
        ca_certs: settings.ca_cert.clone(),
    };
    Config::load(&flags).map_err(|e| report_error(&e, &[], e.hint(), EXIT_USAGE))
}

/// Configuration and directories for a subcommand.
pub(crate) fn setup(file: Option<PathBuf>, settings: &SettingsArgs) -> Result<(Config, Dirs), i32> {
    let config = load_config(file, settings)?;
    let dirs = Dirs::from_env(config.cache_dir.value.clone())
        .map_err(|e| report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR))?;
    Ok((config, dirs))
}

/// Refreshing trusted roots through TUF, as configured.
pub(crate) fn tuf_settings(config: &Config) -> Result<TufSettings, i32> {
    config
        .tuf_settings()
        .map_err(|e| report_error(&e, &[], e.hint(), EXIT_USAGE))
}

/// Says a notice of the settings layer on stderr.
pub(crate) fn say(n: request::Notice) {
    eprintln!("{n}");
}

/// The process environment, for the settings layer.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
