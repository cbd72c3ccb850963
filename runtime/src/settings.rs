//! Settings: the one place where flags, environment, the configuration file and defaults are combined.
//!
//! - [`file`]: the configuration file, each of its settings resolved against its flag and environment variable
//!   ([`Config`]: flag > environment > file > default, and where each value came from).
//! - [`request`]: a [`Config`], the flags of `run` (or `verify`) and the registry entry they name → the complete
//!   [`RunRequest`] (registry source, verification mode and policy, TUF settings, permission profile, mounts,
//!   secrets, `--port`/`--socket`). The CLI parses flags into plain structs and renders; it decides nothing.

pub mod file;
pub mod request;

pub use file::*;
pub use request::RunRequest;
