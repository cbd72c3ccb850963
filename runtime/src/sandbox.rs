//! The sandbox itself: the OCI runtime config ([`spec`]) built from the image and the permission profile
//! ([`profile`]), the supervisor ([`supervise`]) and the runner it starts ([`runner`]) with their protocol
//! ([`sync`]), run directories ([`runs`]), secrets ([`secret`]), the egress proxy ([`egress`]), the
//! sandbox's name server that refuses and reports lookups ([`nameserver`]) and the HTTP↔stdio bridge ([`bridge`]). Above [`crate::rootfs`]; knows nothing of registries or trust.

pub mod bridge;
pub mod cgroup;
pub mod egress;
pub mod limits;
pub mod nameserver;
pub mod profile;
pub mod runner;
pub mod runs;
pub mod secret;
pub mod spec;
pub mod supervise;
pub mod sync;
