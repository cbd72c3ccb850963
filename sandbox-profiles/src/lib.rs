//! Reviewed security profiles of thv-sandbox, embedded at build time and validated.
//!
//! For now this crate holds the seccomp profiles. Each one is a JSON file under
//! `profiles/seccomp/`, compiled into the binary with `include_str!` and listed in
//! [`SECCOMP_PROFILES`]; [`default_seccomp`] parses the default one once, and
//! [`SeccompProfile::to_oci`] turns a profile into the OCI runtime config's `linux.seccomp`.
//!
//! # The seccomp profile format
//!
//! ```json
//! {
//!   "name": "default",
//!   "description": "what the profile is for",
//!   "default_action": "SCMP_ACT_ERRNO",
//!   "default_errno": "EPERM",
//!   "architectures": {
//!     "x86_64":  ["SCMP_ARCH_X86_64"],
//!     "aarch64": ["SCMP_ARCH_AARCH64"]
//!   },
//!   "groups": [
//!     { "reason": "why these are allowed", "action": "SCMP_ACT_ALLOW",
//!       "syscalls": ["read", "write"] },
//!     { "reason": "why only in this form", "action": "SCMP_ACT_ALLOW",
//!       "syscalls": ["clone"],
//!       "when_any_of": [[{ "arg": 0, "op": "SCMP_CMP_MASKED_EQ", "mask": "0x7E020000", "value": 0 }]] },
//!     { "reason": "why this answer", "action": "SCMP_ACT_ERRNO", "errno": "ENOSYS",
//!       "syscalls": ["clone3"] },
//!     { "reason": "why only on this host", "action": "SCMP_ACT_ALLOW", "only_on": ["x86_64"],
//!       "syscalls": ["arch_prctl"] }
//!   ]
//! }
//! ```
//!
//! - `default_action` applies to every syscall no group names. Actions and operators use
//!   libseccomp's names. `SCMP_ACT_ERRNO` needs an errno by name (`EPERM`, `ENOSYS`, ...).
//! - `architectures` maps a host architecture (as in `std::env::consts::ARCH`) to the seccomp
//!   ABIs the filter covers on that host; ABIs not listed are killed by libseccomp.
//! - Each group carries a non-empty `reason`. A syscall may appear in one group only.
//! - `when_any_of` makes a group conditional: it is a list of alternatives, each a list of
//!   conditions on distinct arguments that must all hold. `SCMP_CMP_MASKED_EQ` takes a `mask`
//!   and matches when `(arg & mask) == value`. Numbers may be written as `"0x…"` strings, and
//!   a condition may carry a `note` for reviewers.
//! - `only_on` restricts a group to some hosts (for architecture-specific syscalls).
//!
//! Unknown fields, unknown actions, operators, errnos or architectures, empty reasons,
//! duplicate syscalls and groups that merely repeat the default action are rejected by
//! [`parse_seccomp`].

mod seccomp;

pub use seccomp::{
    default_seccomp, parse_seccomp, Location, ProfileError, SeccompProfile, SyscallGroup,
    SECCOMP_PROFILES,
};
