//! thv-sandbox runtime: runs an MCP server from an OCI image in a rootless sandbox.
//!
//! [`run`] is the pipeline: it calls these steps itself, in this order, each result computed once and passed on
//! (the steps of a registry pull are separate functions of [`distribution`], which the pipeline orders):
//! 1. **resolve** — the reference names an image (a registry reference, or an OCI layout on disk,
//!    `oci:PATH[:TAG]`); the tag is resolved to this platform's manifest digest, and manifest and config are
//!    fetched (or read from the cache or the layout) and checked against their digests and sizes. No layer is
//!    fetched. Everything after uses that digest: no tag is resolved again.
//! 2. **discover evidence** — provenance evidence for the index and the manifest is looked for at the registry,
//!    through the connection of step 1 ([`trust::evidence`]).
//! 3. **decide** — the verification gate ([`trust::verification`]: verified with Sigstore against the policy,
//!    per the mode), before any layer is fetched or decompressed. A refusal ends the run here
//!    ([`trust::verification::Refused`]); `thv-sandbox verify` is steps 1 to 3 and reports the verdict
//!    ([`trust::verification::Outcome`]).
//! 4. **fetch layers and unpack** — the layers are downloaded by digest and unpacked while they stream into an
//!    immutable root, keyed by manifest digest, id-mapping mode and unpacker version; each layer checked against
//!    its digest and diff_id. The root's lock is taken before any download: concurrent first pulls share one
//!    download and one unpack. Before the root is sealed, the bytecode step (`pipeline::bytecode`, unless
//!    `--no-bytecode`) makes its Python bytecode valid, compiling what lacks it with the image's interpreter in a
//!    sandbox; the root's key says whether it ran.
//! 5. **commit** — only now does the cache name the image (by its pinned digest); the root is loaded (or, for an
//!    image that was in the cache already, unpacked from it).
//! 6. **spec** — the OCI runtime config, a pure function of image config, profile and options.
//! 7. **network** — the runner gives the sandbox a network namespace with only `lo`, up.
//! 8. **supervise** — the supervisor starts the runner, which creates the container with libcontainer; stdio is
//!    the server's; the exit code is the server's.

//! ## Layout: one way down
//!
//! The modules are grouped by subsystem, and each group imports only groups below it (runtime/tests/module_graph.rs
//! fails on an import that goes up, or on any cycle):
//!
//! | group | what it is |
//! |---|---|
//! | [`chain`], [`dirs`] | error chains; where state lives and locked directories |
//! | [`image`] | digests, references, OCI layouts, the image's runtime config |
//! | [`report`] | what the library tells the user (warnings, pull progress, timings): [`report::Reporter`], which the caller implements; the library never writes to the terminal |
//! | [`rootfs`] | unpacking ([`rootfs::unpack`]), id mapping ([`rootfs::idmap`]), the image's user, cached roots |
//! | [`distribution`] | the registry client: resolve, fetch layers (streamed into [`rootfs`]), the blob store |
//! | [`trust`] | provenance evidence and the verification gate |
//! | [`sandbox`] | spec, permission profile, supervisor, runner, secrets, egress proxy, HTTP bridge |
//! | [`packages`] | `npx://` and `uvx://` packages: the reference, the index, the lock, the provenance seam (the install runs in `pipeline::packages`) |
//! | [`catalog`] | the registry of servers (ToolHive's formats) and launch plans |
//! | [`doctor`] | the host checks |
//! | [`cache`] | the cache's images |
//! | [`settings`] | the config file, and flags + environment + file + defaults → the request ([`RunRequest`]) |
//! | `pipeline`, [`inspect`] | the pipeline, and `inspect` (what the request would give the server) |

#![deny(missing_docs)]

pub mod cache;
pub mod catalog;
pub mod chain;
pub mod dirs;
pub mod distribution;
pub mod doctor;
pub mod image;
pub mod inspect;
pub mod packages;
pub mod report;
pub mod rootfs;
pub mod sandbox;
pub mod settings;
pub mod trust;

mod pipeline;
#[cfg(test)]
mod testing;

pub use distribution::RegistryAccess;
pub use pipeline::packages::pull_package;
pub use pipeline::{
    pull, pull_verified, pull_verified_with, pull_with, run, verify, Error, RunSummary,
};
pub use settings::RunRequest;
pub use thv_sandbox_provenance as provenance;
pub use trust::verification::{Mode, Verification};

/// Exit code for failures of thv-sandbox itself (the server never ran, or the sandbox broke), as Docker uses it.
pub const EXIT_SANDBOX_ERROR: i32 = 125;
/// Exit code for an image refused by provenance verification (`run` under `enabled`, and `verify`): nothing of it
/// was fetched or run. Servers exit 0, 1, 2 or 128+N (signal N) in practice and Docker's own codes are 125–127, so
/// 124 is neither a server's nor a broken sandbox's.
pub const EXIT_REFUSED: i32 = 124;
/// Exit code for bad usage (unknown flags, malformed references).
pub const EXIT_USAGE: i32 = 2;
