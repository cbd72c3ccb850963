//! thv-sandbox runtime: runs an MCP server from an OCI image in a rootless sandbox.
//!
//! [`run`] is the pipeline, step by step, in the order the steps must happen:
//! 1. **resolve** — the reference names an image (a registry reference, pulled into the cache, or an OCI layout on
//!    disk, `oci:PATH[:TAG]`); the tag is resolved to this platform's manifest digest. Everything after uses that
//!    digest.
//! 2. **fetch manifest** — manifest and config are read and checked against their digests and sizes.
//! 3. **verify** — provenance is checked here, before any layer is fetched or decompressed ([`verification`]:
//!    evidence discovered at the registry, verified with Sigstore against the policy, per the mode).
//! 4. **unpack** — layers are unpacked (or found in the cache) into an immutable root, keyed by manifest digest,
//!    id-mapping mode and unpacker version; each layer checked against its digest and diff_id.
//! 5. **spec** — the OCI runtime config, a pure function of image config, profile and options.
//! 6. **network** — the runner gives the sandbox a network namespace with only `lo`, up.
//! 7. **run** — the supervisor starts the runner, which creates the container with libcontainer; stdio is the
//!    server's; the exit code is the server's.

#![deny(missing_docs)]

pub mod bridge;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod digest;
pub mod dirs;
pub mod distribution;
pub mod doctor;
pub mod egress;
pub mod evidence;
pub mod idmap;
pub mod inspect;
pub mod layout;
pub mod profile;
pub mod progress;
pub mod reference;
pub mod rootfs;
pub mod runner;
pub mod runs;
pub mod secret;
pub mod spec;
pub mod supervise;
pub mod sync;
pub mod unpack;
pub mod user;
pub mod verification;

mod pipeline;
#[cfg(test)]
mod testing;

pub use pipeline::{pull, pull_verified, run, Error, RegistryAccess, RunRequest, RunSummary};
pub use thv_sandbox_provenance as provenance;
pub use verification::{Mode, Verification};

/// Exit code for failures of thv-sandbox itself (the server never ran, or the sandbox broke), as Docker uses it.
pub const EXIT_SANDBOX_ERROR: i32 = 125;
/// Exit code for bad usage (unknown flags, malformed references).
pub const EXIT_USAGE: i32 = 2;
