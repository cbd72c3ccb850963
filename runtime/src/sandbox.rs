//! The sandbox itself: the OCI runtime config ([`spec`]) built from the image and the permission profile
//! ([`profile`]), the supervisor ([`supervise`]) and the runner it starts ([`runner`]; forked early as a [`prefork`] by `run`) with their protocol
//! ([`sync`]), run directories ([`runs`]), secrets ([`secret`]), the egress proxy ([`egress`]), the
//! sandbox's name server that refuses and reports lookups ([`nameserver`]), the default route that refuses and reports connections
//! ([`unreachable`]), what both share ([`refusals`]) and the HTTP↔stdio bridge ([`bridge`]). Above [`crate::rootfs`]; knows nothing of registries or trust.

pub mod bridge;
pub mod cgroup;
pub mod egress;
pub mod limits;
pub mod nameserver;
pub mod prefork;
pub mod profile;
pub mod refusals;
pub mod runner;
pub mod runs;
pub mod secret;
pub mod spec;
pub mod supervise;
pub mod sync;
pub mod unreachable;
