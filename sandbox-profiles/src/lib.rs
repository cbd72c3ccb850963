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
//! duplicate syscalls, groups that merely repeat the default action and groups that allow
//! anything on [`NEVER_ALLOWED`] are rejected by [`parse_seccomp`].
//!
//! # Variants and the user's override
//!
//! A variant (`profiles/seccomp/variants/*.json`, listed in [`SECCOMP_VARIANTS`]) is a small,
//! reviewed overlay on a base profile, so a reviewer reads only the delta:
//!
//! ```json
//! {
//!   "name": "browser",
//!   "extends": "default",
//!   "description": "what it is for, and the risk it adds",
//!   "remove": [ { "syscalls": ["clone"], "reason": "why the base rule goes" } ],
//!   "groups": [ { "reason": "why", "action": "SCMP_ACT_ALLOW", "syscalls": ["chroot"] } ]
//! }
//! ```
//!
//! `remove` takes syscalls out of the base's groups (each must have a rule there; a group
//! left empty disappears), and they fall through to the default action. `groups` are added
//! in the format above; a syscall that keeps a rule in the base cannot be added again, so
//! replacing a rule means removing it first. Everything is validated as for a full profile
//! and errors are located (`seccomp variant `browser`: groups[1]: ...`). Variants cannot
//! change the default action or the architectures. [`seccomp_variant`] resolves one by
//! name; a registry entry may only select a variant by name.
//!
//! The user's own override file ([`apply_override`]) has the same format without `name` and
//! `extends`; it applies to the profile the server runs with and is the only place that adds
//! or removes rules beyond the reviewed variants. Nothing on [`NEVER_ALLOWED`] may be allowed
//! by any of them.

mod seccomp;
mod variant;

pub use seccomp::{
    default_seccomp, parse_seccomp, Location, ProfileError, Removal, SeccompProfile, SyscallGroup,
    NEVER_ALLOWED, SECCOMP_PROFILES,
};
pub use variant::{
    apply_override, resolve_variant, seccomp_variant, variant_names, OVERRIDE_ORIGIN,
    SECCOMP_VARIANTS,
};
