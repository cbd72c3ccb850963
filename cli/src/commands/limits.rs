//! The resource-limit flags of `run` and `inspect` (`--memory`, `--cpus`, `--pids-limit`): parsed here only as
//! text, checked by the runtime (`thv_sandbox_runtime::sandbox::limits`) together with the configuration file's
//! and the registry entry's values, so every source gets the same rules and messages.

#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct LimitArgs {
    /// The server's memory limit, swap included: `512m`, `2g`, `1.5g` (binary units) or `unlimited`. Default 2g
    /// (config `memory`; a registry entry may propose another). Refused where it cannot be enforced; see
    /// `thv-sandbox doctor`.
    #[arg(long, value_name = "SIZE", env = "THV_SANDBOX_MEMORY")]
    pub(crate) memory: Option<String>,
    /// The server's CPU quota in CPUs: `1`, `0.5`, `2.5` or `unlimited`. Default 1 (config `cpus`).
    #[arg(long, value_name = "CPUS", env = "THV_SANDBOX_CPUS")]
    pub(crate) cpus: Option<String>,
    /// The most processes and threads the server may have: `512` or `unlimited`. Default 1024 (config
    /// `pids_limit`).
    #[arg(long = "pids-limit", value_name = "N", env = "THV_SANDBOX_PIDS_LIMIT")]
    pub(crate) pids_limit: Option<String>,
}

impl LimitArgs {
    /// Sets the limit fields of the settings layer's flags.
    pub(crate) fn apply(&self, flags: &mut thv_sandbox_runtime::settings::request::RunFlags) {
        flags.memory = self.memory.clone();
        flags.cpus = self.cpus.clone();
        flags.pids_limit = self.pids_limit.clone();
    }
}
