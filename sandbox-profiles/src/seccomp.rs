//! Seccomp profiles: parsing and validating the reviewed JSON, and converting it to OCI.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::de::{IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Every embedded seccomp profile as `(name, JSON text)`. The name equals the profile's own
/// `name` field (a test checks it); the first entry is the default.
pub const SECCOMP_PROFILES: &[(&str, &str)] =
    &[("default", include_str!("../profiles/seccomp/default.json"))];

/// The default seccomp profile, parsed on first use.
///
/// # Panics
///
/// Panics if the embedded `profiles/seccomp/default.json` is invalid; the crate's tests parse
/// it, so a build that passed them never panics here.
pub fn default_seccomp() -> &'static SeccompProfile {
    static DEFAULT: OnceLock<SeccompProfile> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let (_, json) = SECCOMP_PROFILES[0];
        parse_seccomp(json)
            .unwrap_or_else(|err| panic!("embedded default seccomp profile is invalid: {err}"))
    })
}

/// Errno values a profile may name. These numbers are the same on every architecture the
/// sandbox supports (x86_64, i386, x32, aarch64, arm all use the asm-generic values).
const ERRNOS: &[(&str, u32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EACCES", 13),
    ("EINVAL", 22),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
];

/// The highest syscall argument index seccomp can inspect.
const MAX_ARG_INDEX: u32 = 5;

/// Where in a profile a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The profile's `default_action` / `default_errno`.
    Default,
    /// The group at this index of `groups`.
    Group(usize),
    /// The entry at this index of a variant's or override's `remove` list.
    Remove(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Default => f.write_str("default_action"),
            Location::Group(index) => write!(f, "groups[{index}]"),
            Location::Remove(index) => write!(f, "remove[{index}]"),
        }
    }
}

/// Why a seccomp profile was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The text is not JSON of the expected shape (includes unknown and duplicate fields).
    #[error("seccomp profile is not valid profile JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The profile has an empty `name`.
    #[error("seccomp profile has an empty name")]
    EmptyName,
    /// An action libseccomp does not know.
    #[error("{at}: unknown action `{action}`")]
    UnknownAction {
        /// Where the action was written.
        at: Location,
        /// The action as written.
        action: String,
    },
    /// An action that exists but needs machinery the sandbox does not provide.
    #[error("{at}: action `{action}` is not supported (it needs a tracer or a seccomp agent)")]
    UnsupportedAction {
        /// Where the action was written.
        at: Location,
        /// The action as written.
        action: String,
    },
    /// `SCMP_ACT_ERRNO` without an errno.
    #[error("{at}: action SCMP_ACT_ERRNO needs an errno")]
    MissingErrno {
        /// Where the action was written.
        at: Location,
    },
    /// An errno next to an action that does not return one.
    #[error("{at}: an errno is only allowed with SCMP_ACT_ERRNO, not with `{action}`")]
    UnexpectedErrno {
        /// Where the errno was written.
        at: Location,
        /// The action it was written next to.
        action: String,
    },
    /// An errno name outside the supported list.
    #[error("{at}: unknown errno `{errno}` (known: {known})", known = known_errnos())]
    UnknownErrno {
        /// Where the errno was written.
        at: Location,
        /// The errno as written.
        errno: String,
    },
    /// `architectures` is empty.
    #[error("seccomp profile lists no architectures")]
    NoArchitectures,
    /// A host appears twice in `architectures`.
    #[error("architectures: host `{host}` is listed twice")]
    DuplicateHost {
        /// The repeated host.
        host: String,
    },
    /// A host with no seccomp architectures.
    #[error("architectures: host `{host}` has an empty list")]
    EmptyArchitectureList {
        /// The host.
        host: String,
    },
    /// A seccomp architecture name libseccomp does not know.
    #[error("architectures: host `{host}` lists unknown architecture `{arch}`")]
    UnknownArchitecture {
        /// The host whose list holds it.
        host: String,
        /// The architecture as written.
        arch: String,
    },
    /// The same seccomp architecture twice, under one host or two.
    #[error("architectures: `{arch}` is listed more than once")]
    DuplicateArchitecture {
        /// The repeated architecture.
        arch: String,
    },
    /// `groups` is empty.
    #[error("seccomp profile has no groups")]
    NoGroups,
    /// A group without a reason.
    #[error("{at}: the reason is empty; every group must say why it exists", at = Location::Group(*.group))]
    EmptyReason {
        /// Index of the group.
        group: usize,
    },
    /// A group without syscalls.
    #[error("{at}: lists no syscalls", at = Location::Group(*.group))]
    EmptySyscalls {
        /// Index of the group.
        group: usize,
    },
    /// A syscall name that cannot be a syscall name.
    #[error("{at}: `{name}` is not a valid syscall name", at = Location::Group(*.group))]
    InvalidSyscallName {
        /// Index of the group.
        group: usize,
        /// The name as written.
        name: String,
    },
    /// A syscall named twice.
    #[error(
        "syscall `{name}` is duplicated: it appears in {first} and again in {second}",
        first = Location::Group(*.first), second = Location::Group(*.second)
    )]
    DuplicateSyscall {
        /// The syscall.
        name: String,
        /// The group that names it first.
        first: usize,
        /// The group that names it again (may equal `first`).
        second: usize,
    },
    /// `only_on` is present but empty.
    #[error("{at}: `only_on` is empty; leave it out to apply the group everywhere", at = Location::Group(*.group))]
    EmptyOnlyOn {
        /// Index of the group.
        group: usize,
    },
    /// `only_on` names a host `architectures` does not list.
    #[error("{at}: `only_on` names host `{host}`, which `architectures` does not list", at = Location::Group(*.group))]
    UnknownHost {
        /// Index of the group.
        group: usize,
        /// The host as written.
        host: String,
    },
    /// `when_any_of` is present but empty, or one of its alternatives is empty.
    #[error("{at}: `when_any_of` and each of its alternatives must hold at least one condition", at = Location::Group(*.group))]
    EmptyCondition {
        /// Index of the group.
        group: usize,
    },
    /// A condition on an argument seccomp cannot see.
    #[error("{at}: condition on argument {arg}, but syscalls have arguments 0 to 5", at = Location::Group(*.group))]
    ArgIndexOutOfRange {
        /// Index of the group.
        group: usize,
        /// The argument index as written.
        arg: u32,
    },
    /// Two conditions on the same argument in one alternative.
    #[error(
        "{at}: two conditions on argument {arg} in one alternative; OCI runtimes turn those into \
         separate rules (either may match), so write them as separate alternatives",
        at = Location::Group(*.group)
    )]
    RepeatedConditionArg {
        /// Index of the group.
        group: usize,
        /// The argument index.
        arg: u32,
    },
    /// An operator libseccomp does not know.
    #[error("{at}: unknown operator `{op}`", at = Location::Group(*.group))]
    UnknownOperator {
        /// Index of the group.
        group: usize,
        /// The operator as written.
        op: String,
    },
    /// `SCMP_CMP_MASKED_EQ` without a `mask`.
    #[error("{at}: SCMP_CMP_MASKED_EQ needs a `mask`", at = Location::Group(*.group))]
    MissingMask {
        /// Index of the group.
        group: usize,
    },
    /// A `mask` on an operator other than `SCMP_CMP_MASKED_EQ`.
    #[error("{at}: `mask` is only allowed with SCMP_CMP_MASKED_EQ, not with `{op}`", at = Location::Group(*.group))]
    UnexpectedMask {
        /// Index of the group.
        group: usize,
        /// The operator as written.
        op: String,
    },
    /// A number written as a string that is not `0x` followed by hex digits.
    #[error("{at}: `{text}` is not a number (write an integer or a \"0x…\" string)", at = Location::Group(*.group))]
    InvalidNumber {
        /// Index of the group.
        group: usize,
        /// The text as written.
        text: String,
    },
    /// A group whose action is the default action: it would change nothing.
    #[error("{at}: has the same action as the default, so it changes nothing", at = Location::Group(*.group))]
    RedundantGroup {
        /// Index of the group.
        group: usize,
    },
    /// A group lets through a syscall that no profile, variant or override may allow.
    #[error(
        "{at}: `{name}` may never be allowed (module loading, kexec, BPF, perf, keyrings, mounts, \
         swap, reboot, clock setting, raw I/O ports and the like stay denied in every profile); \
         a server that needs it cannot run in this sandbox",
        at = Location::Group(*.group)
    )]
    NeverAllowed {
        /// Index of the group.
        group: usize,
        /// The syscall.
        name: String,
    },
    /// [`crate::seccomp_variant`] was asked for a name no embedded variant has.
    #[error("unknown seccomp variant `{name}` (known: {known})")]
    UnknownVariant {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A variant's `extends` names no embedded base profile.
    #[error("`extends` names `{base}`, which is not an embedded base profile (known: {known})")]
    UnknownBase {
        /// The name as written.
        base: String,
        /// The known base profiles, comma-separated.
        known: String,
    },
    /// An override file tries to choose its own base profile.
    #[error(
        "an override applies to the profile the server already runs with and cannot name a base \
         (`extends`); select a variant by name instead and keep only `remove` and `groups` here"
    )]
    OverrideExtends,
    /// A variant or override with neither `remove` nor `groups`.
    #[error("changes nothing: it has neither `remove` entries nor `groups`")]
    EmptyOverlay,
    /// A `remove` entry without a reason.
    #[error("{at}: the reason is empty; every removal must say why", at = Location::Remove(*.entry))]
    EmptyRemoveReason {
        /// Index of the entry.
        entry: usize,
    },
    /// A `remove` entry without syscalls.
    #[error("{at}: lists no syscalls", at = Location::Remove(*.entry))]
    EmptyRemove {
        /// Index of the entry.
        entry: usize,
    },
    /// A `remove` entry names a syscall the base profile has no rule for.
    #[error(
        "{at}: `{name}` has no rule in base profile `{base}`, so there is nothing to remove \
         (syscalls without a rule are already denied)",
        at = Location::Remove(*.entry)
    )]
    RemoveNotInBase {
        /// Index of the entry.
        entry: usize,
        /// The syscall.
        name: String,
        /// The base profile's name.
        base: String,
    },
    /// A syscall removed twice.
    #[error("{at}: `{name}` is removed more than once", at = Location::Remove(*.entry))]
    RemovedTwice {
        /// Index of the entry that removes it again.
        entry: usize,
        /// The syscall.
        name: String,
    },
    /// An added group names a syscall the base profile keeps a rule for.
    #[error(
        "{at}: `{name}` already has a rule in base profile `{base}` ({base_at}); add it to \
         `remove` first to replace that rule",
        at = Location::Group(*.group), base_at = Location::Group(*.base_group)
    )]
    AlreadyInBase {
        /// Index of the added group.
        group: usize,
        /// The syscall.
        name: String,
        /// The base profile's name.
        base: String,
        /// Index of the base profile's group that names it.
        base_group: usize,
    },
    /// A problem inside a variant or an override, with where it came from.
    #[error("{origin}: {source}")]
    Overlay {
        /// `seccomp variant `browser``, `seccomp override`, ...
        origin: String,
        /// The problem.
        #[source]
        source: Box<ProfileError>,
    },
    /// [`SeccompProfile::to_oci_for_host`] was asked for a host the profile does not list.
    #[error("seccomp profile `{profile}` has no architectures for host `{host}`")]
    UnsupportedHost {
        /// The profile's name.
        profile: String,
        /// The host asked for.
        host: String,
    },
}

fn known_errnos() -> String {
    ERRNOS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Syscalls that no profile, variant or override may allow, under any condition: loading
/// kernel code (modules, kexec, BPF), tracing the kernel (perf), keyrings, every way of
/// mounting or moving file systems, swap, reboot, setting clocks, raw I/O ports, accounting,
/// quotas, the kernel log, file handles (the "shocker" container escape) and io_uring.
/// [`parse_seccomp`], variants and [`crate::apply_override`] reject a group that allows one.
pub const NEVER_ALLOWED: &[&str] = &[
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "add_key",
    "keyctl",
    "request_key",
    "mount",
    "umount",
    "umount2",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "pivot_root",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "iopl",
    "ioperm",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "open_by_handle_at",
    "lookup_dcookie",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "uselib",
    "nfsservctl",
    "_sysctl",
];

/// A validated seccomp profile.
#[derive(Debug, Clone)]
pub struct SeccompProfile {
    pub(crate) name: String,
    pub(crate) description: String,
    /// The profile this one was derived from (a variant's `extends`, an override's base).
    pub(crate) extends: Option<String>,
    /// Rules taken out of the base by variants and overrides, in order.
    pub(crate) removals: Vec<Removal>,
    pub(crate) default_action: LinuxSeccompAction,
    pub(crate) default_errno: Option<u32>,
    /// `(host, seccomp architectures)` in file order.
    pub(crate) architectures: Vec<(String, Vec<Arch>)>,
    pub(crate) groups: Vec<SyscallGroup>,
}

/// Syscalls a variant or an override took out of its base profile, and why. They fall
/// through to the default action unless a later group names them again.
#[derive(Debug, Clone)]
pub struct Removal {
    pub(crate) origin: String,
    pub(crate) syscalls: Vec<String>,
    pub(crate) reason: String,
}

impl Removal {
    /// The variant (or `override`) that removed them.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The syscall names.
    pub fn syscalls(&self) -> impl Iterator<Item = &str> {
        self.syscalls.iter().map(String::as_str)
    }

    /// Why they were removed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// One reviewed group of rules: syscalls that share an action, a reason and conditions.
#[derive(Debug, Clone)]
pub struct SyscallGroup {
    /// The profile or overlay that contributed the group (`default`, `browser`, `override`).
    pub(crate) origin: String,
    reason: String,
    pub(crate) action: LinuxSeccompAction,
    pub(crate) errno: Option<u32>,
    only_on: Option<Vec<String>>,
    pub(crate) syscalls: Vec<String>,
    /// Alternatives (any may match), each a set of conditions (all must hold). Empty: always.
    when_any_of: Vec<Vec<Condition>>,
}

#[derive(Debug, Clone, Copy)]
struct Condition {
    arg: u32,
    op: LinuxSeccompOperator,
    value: u64,
    /// Only for `SCMP_CMP_MASKED_EQ`.
    mask: Option<u64>,
}

impl SeccompProfile {
    /// The profile's name (`default`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile's description, for humans.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The name of the profile this one was derived from: the base a variant `extends`, or
    /// the profile an override was applied to. `None` for a base profile.
    pub fn extends(&self) -> Option<&str> {
        self.extends.as_deref()
    }

    /// What variants and overrides took out of the base profiles, oldest first.
    pub fn removals(&self) -> &[Removal] {
        &self.removals
    }

    /// The action for syscalls no group names.
    pub fn default_action(&self) -> LinuxSeccompAction {
        self.default_action
    }

    /// The errno returned by the default action, when it is `SCMP_ACT_ERRNO`.
    pub fn default_errno_ret(&self) -> Option<u32> {
        self.default_errno
    }

    /// The groups, in file order.
    pub fn groups(&self) -> &[SyscallGroup] {
        &self.groups
    }

    /// The group that names `syscall`, if any (a syscall appears in one group at most).
    pub fn group_of(&self, syscall: &str) -> Option<&SyscallGroup> {
        self.groups
            .iter()
            .find(|group| group.syscalls.iter().any(|name| name == syscall))
    }

    /// The host architectures (as in `std::env::consts::ARCH`) the profile has rules for.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.architectures.iter().map(|(host, _)| host.as_str())
    }

    /// The seccomp architectures the filter covers on `host`.
    pub fn architectures_for(&self, host: &str) -> Option<&[Arch]> {
        self.architectures
            .iter()
            .find(|(name, _)| name == host)
            .map(|(_, arches)| arches.as_slice())
    }

    /// Every syscall some group allows, on any host, unconditionally or under conditions.
    /// For review and inspection; use [`SyscallGroup::is_conditional`] to tell them apart.
    pub fn allowed_syscalls(&self) -> impl Iterator<Item = &str> {
        self.groups
            .iter()
            .filter(|group| group.allows())
            .flat_map(|group| group.syscalls())
    }

    /// The OCI `linux.seccomp` section for the host this code runs on.
    ///
    /// On a host the profile has no `architectures` entry for, the result covers the native
    /// ABI only (no `architectures` list) with the groups that are not host-specific; other
    /// ABIs are then killed by libseccomp's bad-architecture action.
    ///
    /// `SCMP_CMP_MASKED_EQ` conditions are written the way libcontainer 0.7 (youki) reads
    /// them: `value` is the expected result and `valueTwo` the mask. runc and crun read the two
    /// fields the other way round; see [`SeccompProfile::to_oci_for_host`].
    pub fn to_oci(&self) -> LinuxSeccomp {
        let host = std::env::consts::ARCH;
        match self.architectures_for(host) {
            Some(arches) => self.build_oci(host, Some(arches)),
            None => self.build_oci(host, None),
        }
    }

    /// The OCI `linux.seccomp` section for `host` (`x86_64`, `aarch64`, ...).
    ///
    /// Masked-equality conditions: libcontainer 0.7 passes `valueTwo` to libseccomp as the
    /// mask and `value` as the datum, while runc passes `value` as the mask. A field order
    /// read the wrong way gives mask 0, which matches every call, so the conversion has to
    /// follow the runtime that applies it: this crate targets libcontainer.
    ///
    /// # Errors
    ///
    /// [`ProfileError::UnsupportedHost`] if the profile lists no architectures for `host`.
    pub fn to_oci_for_host(&self, host: &str) -> Result<LinuxSeccomp, ProfileError> {
        let arches = self
            .architectures_for(host)
            .ok_or_else(|| ProfileError::UnsupportedHost {
                profile: self.name.clone(),
                host: host.to_owned(),
            })?;
        Ok(self.build_oci(host, Some(arches)))
    }

    fn build_oci(&self, host: &str, arches: Option<&[Arch]>) -> LinuxSeccomp {
        let mut syscalls = Vec::new();
        for group in &self.groups {
            let applies = match (&group.only_on, arches) {
                (None, _) => true,
                (Some(hosts), Some(_)) => hosts.iter().any(|h| h == host),
                // Unknown host: host-specific groups cannot be trusted to resolve there.
                (Some(_), None) => false,
            };
            if !applies {
                continue;
            }
            let mut base = LinuxSyscall::default();
            base.set_names(group.syscalls.clone());
            base.set_action(group.action);
            base.set_errno_ret(group.errno);
            if group.when_any_of.is_empty() {
                syscalls.push(base);
                continue;
            }
            for alternative in &group.when_any_of {
                let mut rule = base.clone();
                rule.set_args(Some(
                    alternative.iter().copied().map(Condition::to_oci).collect(),
                ));
                syscalls.push(rule);
            }
        }
        let mut seccomp = LinuxSeccomp::default();
        seccomp.set_default_action(self.default_action);
        seccomp.set_default_errno_ret(self.default_errno);
        seccomp.set_architectures(arches.map(<[Arch]>::to_vec));
        seccomp.set_syscalls(Some(syscalls));
        seccomp
    }
}

impl SyscallGroup {
    /// The profile or overlay the group comes from: the base profile's name, a variant's
    /// name, or `override` for the user's own override file.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Why the group exists.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// What happens to the group's syscalls (when its conditions hold).
    pub fn action(&self) -> LinuxSeccompAction {
        self.action
    }

    /// The errno returned, for `SCMP_ACT_ERRNO` groups.
    pub fn errno_ret(&self) -> Option<u32> {
        self.errno
    }

    /// The syscall names.
    pub fn syscalls(&self) -> impl Iterator<Item = &str> {
        self.syscalls.iter().map(String::as_str)
    }

    /// The hosts the group is limited to, or `None` when it applies on every host.
    pub fn only_on(&self) -> Option<&[String]> {
        self.only_on.as_deref()
    }

    /// Whether the group applies on `host`.
    pub fn applies_to(&self, host: &str) -> bool {
        self.only_on
            .as_ref()
            .is_none_or(|hosts| hosts.iter().any(|h| h == host))
    }

    /// Whether the action lets the syscall run (`SCMP_ACT_ALLOW` or `SCMP_ACT_LOG`).
    pub fn allows(&self) -> bool {
        matches!(
            self.action,
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        )
    }

    /// Whether the action depends on the syscall's arguments.
    pub fn is_conditional(&self) -> bool {
        !self.when_any_of.is_empty()
    }
}

impl Condition {
    fn to_oci(self) -> LinuxSeccompArg {
        let mut builder = LinuxSeccompArgBuilder::default()
            // Lossless: validated to be at most MAX_ARG_INDEX.
            .index(self.arg as usize)
            .op(self.op)
            .value(self.value);
        if let Some(mask) = self.mask {
            // libcontainer 0.7 reads `valueTwo` as the mask of SCMP_CMP_MASKED_EQ (see
            // `SeccompProfile::to_oci_for_host`).
            builder = builder.value_two(mask);
        }
        builder
            .build()
            .expect("LinuxSeccompArgBuilder has a default for every field")
    }
}

/// Parses and validates a seccomp profile in this crate's format (see the crate docs).
///
/// # Errors
///
/// A [`ProfileError`] naming the first problem found: malformed JSON or unknown fields,
/// unknown actions, errnos, operators or architectures, empty reasons, duplicate syscalls,
/// groups that repeat the default action, and the other checks listed on [`ProfileError`].
pub fn parse_seccomp(json: &str) -> Result<SeccompProfile, ProfileError> {
    let raw: RawProfile = serde_json::from_str(json)?;
    if raw.name.trim().is_empty() {
        return Err(ProfileError::EmptyName);
    }
    let (default_action, default_errno) = validate_action(
        Location::Default,
        &raw.default_action,
        raw.default_errno.as_deref(),
    )?;
    let architectures = validate_architectures(raw.architectures.0)?;
    if raw.groups.is_empty() {
        return Err(ProfileError::NoGroups);
    }

    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut groups = Vec::with_capacity(raw.groups.len());
    for (index, group) in raw.groups.into_iter().enumerate() {
        let group = validate_group(index, group, &architectures, &raw.name)?;
        check_group_against_default(index, &group, default_action, default_errno)?;
        for name in &group.syscalls {
            if let Some(&first) = first_seen.get(name) {
                return Err(ProfileError::DuplicateSyscall {
                    name: name.clone(),
                    first,
                    second: index,
                });
            }
            first_seen.insert(name.clone(), index);
        }
        groups.push(group);
    }

    Ok(SeccompProfile {
        name: raw.name,
        description: raw.description,
        extends: None,
        removals: Vec::new(),
        default_action,
        default_errno,
        architectures,
        groups,
    })
}

fn validate_action(
    at: Location,
    action: &str,
    errno: Option<&str>,
) -> Result<(LinuxSeccompAction, Option<u32>), ProfileError> {
    let parsed =
        parse_name::<LinuxSeccompAction>(action).ok_or_else(|| ProfileError::UnknownAction {
            at,
            action: action.to_owned(),
        })?;
    if matches!(
        parsed,
        LinuxSeccompAction::ScmpActNotify | LinuxSeccompAction::ScmpActTrace
    ) {
        return Err(ProfileError::UnsupportedAction {
            at,
            action: action.to_owned(),
        });
    }
    let errno = match (parsed, errno) {
        (LinuxSeccompAction::ScmpActErrno, None) => return Err(ProfileError::MissingErrno { at }),
        (LinuxSeccompAction::ScmpActErrno, Some(name)) => Some(
            ERRNOS
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, value)| *value)
                .ok_or_else(|| ProfileError::UnknownErrno {
                    at,
                    errno: name.to_owned(),
                })?,
        ),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ProfileError::UnexpectedErrno {
                at,
                action: action.to_owned(),
            })
        }
    };
    Ok((parsed, errno))
}

fn validate_architectures(
    raw: Vec<(String, Vec<String>)>,
) -> Result<Vec<(String, Vec<Arch>)>, ProfileError> {
    if raw.is_empty() {
        return Err(ProfileError::NoArchitectures);
    }
    let mut seen_arches: Vec<Arch> = Vec::new();
    let mut result: Vec<(String, Vec<Arch>)> = Vec::with_capacity(raw.len());
    for (host, names) in raw {
        if result.iter().any(|(known, _)| *known == host) {
            return Err(ProfileError::DuplicateHost { host });
        }
        if names.is_empty() {
            return Err(ProfileError::EmptyArchitectureList { host });
        }
        let mut arches = Vec::with_capacity(names.len());
        for name in names {
            let arch = match parse_name::<Arch>(&name) {
                Some(Arch::ScmpArchNative) | None => {
                    return Err(ProfileError::UnknownArchitecture { host, arch: name })
                }
                Some(arch) => arch,
            };
            if seen_arches.contains(&arch) {
                return Err(ProfileError::DuplicateArchitecture { arch: name });
            }
            seen_arches.push(arch);
            arches.push(arch);
        }
        result.push((host, arches));
    }
    Ok(result)
}

/// Checks that hold for a group within its profile: it changes something, and it lets through
/// nothing on [`NEVER_ALLOWED`].
pub(crate) fn check_group_against_default(
    index: usize,
    group: &SyscallGroup,
    default_action: LinuxSeccompAction,
    default_errno: Option<u32>,
) -> Result<(), ProfileError> {
    if group.action == default_action && group.errno == default_errno {
        return Err(ProfileError::RedundantGroup { group: index });
    }
    if group.allows() {
        if let Some(name) = group
            .syscalls
            .iter()
            .find(|name| NEVER_ALLOWED.contains(&name.as_str()))
        {
            return Err(ProfileError::NeverAllowed {
                group: index,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

pub(crate) fn validate_group(
    index: usize,
    raw: RawGroup,
    architectures: &[(String, Vec<Arch>)],
    origin: &str,
) -> Result<SyscallGroup, ProfileError> {
    if raw.reason.trim().is_empty() {
        return Err(ProfileError::EmptyReason { group: index });
    }
    let (action, errno) =
        validate_action(Location::Group(index), &raw.action, raw.errno.as_deref())?;
    if raw.syscalls.is_empty() {
        return Err(ProfileError::EmptySyscalls { group: index });
    }
    let mut seen: Vec<&str> = Vec::with_capacity(raw.syscalls.len());
    for name in &raw.syscalls {
        if !is_syscall_name(name) {
            return Err(ProfileError::InvalidSyscallName {
                group: index,
                name: name.clone(),
            });
        }
        if seen.contains(&name.as_str()) {
            return Err(ProfileError::DuplicateSyscall {
                name: name.clone(),
                first: index,
                second: index,
            });
        }
        seen.push(name);
    }
    if let Some(hosts) = &raw.only_on {
        if hosts.is_empty() {
            return Err(ProfileError::EmptyOnlyOn { group: index });
        }
        for host in hosts {
            if !architectures.iter().any(|(known, _)| known == host) {
                return Err(ProfileError::UnknownHost {
                    group: index,
                    host: host.clone(),
                });
            }
        }
    }
    let when_any_of = match raw.when_any_of {
        None => Vec::new(),
        Some(alternatives) if alternatives.is_empty() => {
            return Err(ProfileError::EmptyCondition { group: index })
        }
        Some(alternatives) => alternatives
            .into_iter()
            .map(|conditions| validate_conditions(index, conditions))
            .collect::<Result<_, _>>()?,
    };
    Ok(SyscallGroup {
        origin: origin.to_owned(),
        reason: raw.reason,
        action,
        errno,
        only_on: raw.only_on,
        syscalls: raw.syscalls,
        when_any_of,
    })
}

fn validate_conditions(
    group: usize,
    raw: Vec<RawCondition>,
) -> Result<Vec<Condition>, ProfileError> {
    if raw.is_empty() {
        return Err(ProfileError::EmptyCondition { group });
    }
    let mut conditions: Vec<Condition> = Vec::with_capacity(raw.len());
    for condition in raw {
        if condition.arg > MAX_ARG_INDEX {
            return Err(ProfileError::ArgIndexOutOfRange {
                group,
                arg: condition.arg,
            });
        }
        if conditions.iter().any(|c| c.arg == condition.arg) {
            return Err(ProfileError::RepeatedConditionArg {
                group,
                arg: condition.arg,
            });
        }
        let op = parse_name::<LinuxSeccompOperator>(&condition.op).ok_or_else(|| {
            ProfileError::UnknownOperator {
                group,
                op: condition.op.clone(),
            }
        })?;
        let mask = match (op, condition.mask) {
            (LinuxSeccompOperator::ScmpCmpMaskedEq, Some(mask)) => Some(mask.resolve(group)?),
            (LinuxSeccompOperator::ScmpCmpMaskedEq, None) => {
                return Err(ProfileError::MissingMask { group })
            }
            (_, Some(_)) => {
                return Err(ProfileError::UnexpectedMask {
                    group,
                    op: condition.op,
                })
            }
            (_, None) => None,
        };
        conditions.push(Condition {
            arg: condition.arg,
            op,
            value: condition.value.resolve(group)?,
            mask,
        });
    }
    Ok(conditions)
}

/// Lowercase letters, digits and `_`, not starting with a digit: what kernel syscall names are.
fn is_syscall_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses a libseccomp constant name (`SCMP_ACT_ALLOW`, `SCMP_ARCH_X86_64`, ...) the way the
/// OCI types deserialize it, so a name accepted here is one the runtime accepts.
fn parse_name<T: for<'de> Deserialize<'de>>(name: &str) -> Option<T> {
    let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    T::deserialize(deserializer).ok()
}

// ---- The file format as written, before validation. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    default_action: String,
    #[serde(default)]
    default_errno: Option<String>,
    architectures: OrderedMap,
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    reason: String,
    action: String,
    #[serde(default)]
    errno: Option<String>,
    #[serde(default)]
    only_on: Option<Vec<String>>,
    syscalls: Vec<String>,
    #[serde(default)]
    when_any_of: Option<Vec<Vec<RawCondition>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    arg: u32,
    op: String,
    value: RawNumber,
    #[serde(default)]
    mask: Option<RawNumber>,
    /// For reviewers only.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

/// A number written as a JSON integer or as a `"0x…"` string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawNumber {
    Int(u64),
    Text(String),
}

impl RawNumber {
    fn resolve(self, group: usize) -> Result<u64, ProfileError> {
        match self {
            RawNumber::Int(value) => Ok(value),
            RawNumber::Text(text) => text
                .strip_prefix("0x")
                .filter(|digits| !digits.is_empty())
                .and_then(|digits| u64::from_str_radix(digits, 16).ok())
                .ok_or(ProfileError::InvalidNumber { group, text }),
        }
    }
}

/// A JSON object kept in file order, with duplicate keys kept too (so validation can reject
/// them instead of serde_json silently keeping the last one).
struct OrderedMap(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedMapVisitor;
        impl<'de> Visitor<'de> for OrderedMapVisitor {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an object mapping host architectures to lists of seccomp architectures",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Vec<String>>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(OrderedMapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "name": "t",
        "default_action": "SCMP_ACT_ERRNO",
        "default_errno": "EPERM",
        "architectures": { "x86_64": ["SCMP_ARCH_X86_64"], "aarch64": ["SCMP_ARCH_AARCH64"] },
        "groups": [
            { "reason": "basic", "action": "SCMP_ACT_ALLOW", "syscalls": ["read", "write"] },
            { "reason": "no namespaces", "action": "SCMP_ACT_ALLOW", "syscalls": ["clone"],
              "when_any_of": [[{ "arg": 0, "op": "SCMP_CMP_MASKED_EQ", "mask": "0x7E020000", "value": 0 }]] },
            { "reason": "fall back", "action": "SCMP_ACT_ERRNO", "errno": "ENOSYS", "syscalls": ["clone3"] },
            { "reason": "x86 tls", "action": "SCMP_ACT_ALLOW", "only_on": ["x86_64"], "syscalls": ["arch_prctl"] }
        ]
    }"#;

    /// `MINIMAL` with one textual replacement, which must occur exactly once.
    fn variant(from: &str, to: &str) -> String {
        assert_eq!(MINIMAL.matches(from).count(), 1, "`{from}` must occur once");
        MINIMAL.replace(from, to)
    }

    fn rejected(json: &str) -> ProfileError {
        match parse_seccomp(json) {
            Ok(_) => panic!("profile was accepted:\n{json}"),
            Err(err) => err,
        }
    }

    #[test]
    fn minimal_profile_parses() {
        let profile = parse_seccomp(MINIMAL).unwrap();
        assert_eq!(profile.name(), "t");
        assert_eq!(profile.default_errno_ret(), Some(1));
        let allowed: Vec<&str> = profile.allowed_syscalls().collect();
        assert_eq!(allowed, ["read", "write", "clone", "arch_prctl"]);
        assert!(profile.group_of("clone").unwrap().is_conditional());
        assert_eq!(profile.group_of("clone3").unwrap().errno_ret(), Some(38));
    }

    #[test]
    fn unknown_action_is_named() {
        let err = rejected(&variant(
            r#""action": "SCMP_ACT_ALLOW", "syscalls": ["read""#,
            r#""action": "SCMP_ACT_PERMIT", "syscalls": ["read""#,
        ));
        assert!(matches!(
            err,
            ProfileError::UnknownAction {
                at: Location::Group(0),
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "groups[0]: unknown action `SCMP_ACT_PERMIT`"
        );
    }

    #[test]
    fn unknown_default_action_is_named() {
        let err = rejected(&variant(
            r#""default_action": "SCMP_ACT_ERRNO""#,
            r#""default_action": "SCMP_ACT_DENY""#,
        ));
        assert_eq!(
            err.to_string(),
            "default_action: unknown action `SCMP_ACT_DENY`"
        );
    }

    #[test]
    fn notify_and_trace_are_unsupported() {
        let err = rejected(&variant(
            r#""action": "SCMP_ACT_ALLOW", "only_on""#,
            r#""action": "SCMP_ACT_NOTIFY", "only_on""#,
        ));
        assert!(matches!(
            err,
            ProfileError::UnsupportedAction {
                at: Location::Group(3),
                ..
            }
        ));
    }

    #[test]
    fn empty_reason_is_named() {
        let err = rejected(&variant(r#""reason": "fall back""#, r#""reason": "  ""#));
        assert!(matches!(err, ProfileError::EmptyReason { group: 2 }));
        assert_eq!(
            err.to_string(),
            "groups[2]: the reason is empty; every group must say why it exists"
        );
    }

    #[test]
    fn missing_reason_is_rejected() {
        let err = rejected(&variant(r#""reason": "fall back", "#, ""));
        assert!(err.to_string().contains("missing field `reason`"), "{err}");
    }

    #[test]
    fn duplicate_syscall_across_groups_is_named() {
        let err = rejected(&variant(r#"["arch_prctl"]"#, r#"["arch_prctl", "read"]"#));
        assert!(matches!(
            err,
            ProfileError::DuplicateSyscall {
                first: 0,
                second: 3,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "syscall `read` is duplicated: it appears in groups[0] and again in groups[3]"
        );
    }

    #[test]
    fn duplicate_syscall_within_group_is_named() {
        let err = rejected(&variant(
            r#"["read", "write"]"#,
            r#"["read", "write", "read"]"#,
        ));
        assert_eq!(
            err.to_string(),
            "syscall `read` is duplicated: it appears in groups[0] and again in groups[0]"
        );
    }

    #[test]
    fn errno_rules() {
        let err = rejected(&variant(r#", "errno": "ENOSYS""#, ""));
        assert!(matches!(
            err,
            ProfileError::MissingErrno {
                at: Location::Group(2)
            }
        ));
        let err = rejected(&variant(r#""errno": "ENOSYS""#, r#""errno": "ENOSUCH""#));
        assert!(err
            .to_string()
            .starts_with("groups[2]: unknown errno `ENOSUCH` (known: EPERM"));
        let err = rejected(&variant(
            r#""action": "SCMP_ACT_ALLOW", "syscalls": ["read""#,
            r#""action": "SCMP_ACT_ALLOW", "errno": "EPERM", "syscalls": ["read""#,
        ));
        assert!(matches!(
            err,
            ProfileError::UnexpectedErrno {
                at: Location::Group(0),
                ..
            }
        ));
    }

    #[test]
    fn architecture_names_are_checked() {
        let err = rejected(&variant(
            r#"["SCMP_ARCH_AARCH64"]"#,
            r#"["SCMP_ARCH_ARM64"]"#,
        ));
        assert_eq!(
            err.to_string(),
            "architectures: host `aarch64` lists unknown architecture `SCMP_ARCH_ARM64`"
        );
        let err = rejected(&variant(
            r#"["SCMP_ARCH_AARCH64"]"#,
            r#"["SCMP_ARCH_X86_64"]"#,
        ));
        assert!(matches!(err, ProfileError::DuplicateArchitecture { .. }));
        let err = rejected(&variant(
            r#""aarch64": ["SCMP_ARCH_AARCH64"]"#,
            r#""x86_64": ["SCMP_ARCH_ARM"]"#,
        ));
        assert!(matches!(err, ProfileError::DuplicateHost { ref host } if host == "x86_64"));
        let err = rejected(&variant(r#"["SCMP_ARCH_AARCH64"]"#, "[]"));
        assert!(matches!(err, ProfileError::EmptyArchitectureList { .. }));
        let err = rejected(&variant(
            r#"["SCMP_ARCH_AARCH64"]"#,
            r#"["SCMP_ARCH_NATIVE"]"#,
        ));
        assert!(matches!(err, ProfileError::UnknownArchitecture { .. }));
    }

    #[test]
    fn only_on_must_name_a_listed_host() {
        let err = rejected(&variant(r#"["x86_64"]"#, r#"["riscv64"]"#));
        assert_eq!(
            err.to_string(),
            "groups[3]: `only_on` names host `riscv64`, which `architectures` does not list"
        );
    }

    #[test]
    fn condition_rules() {
        let err = rejected(&variant(r#""mask": "0x7E020000", "#, ""));
        assert!(matches!(err, ProfileError::MissingMask { group: 1 }));
        let err = rejected(&variant("SCMP_CMP_MASKED_EQ", "SCMP_CMP_EQ"));
        assert!(matches!(err, ProfileError::UnexpectedMask { group: 1, .. }));
        let err = rejected(&variant("SCMP_CMP_MASKED_EQ", "SCMP_CMP_SIMILAR"));
        assert!(matches!(
            err,
            ProfileError::UnknownOperator { group: 1, .. }
        ));
        let err = rejected(&variant(r#""arg": 0"#, r#""arg": 6"#));
        assert!(matches!(
            err,
            ProfileError::ArgIndexOutOfRange { group: 1, arg: 6 }
        ));
        let err = rejected(&variant(r#""0x7E020000""#, r#""7E020000""#));
        assert!(matches!(err, ProfileError::InvalidNumber { group: 1, .. }));
        let err = rejected(&variant(
            r#""value": 0 }]]"#,
            r#""value": 0 }, { "arg": 0, "op": "SCMP_CMP_EQ", "value": 1 }]]"#,
        ));
        assert!(matches!(
            err,
            ProfileError::RepeatedConditionArg { group: 1, arg: 0 }
        ));
        let err = rejected(&variant(
            r#"[[{ "arg": 0, "op": "SCMP_CMP_MASKED_EQ", "mask": "0x7E020000", "value": 0 }]]"#,
            "[[]]",
        ));
        assert!(matches!(err, ProfileError::EmptyCondition { group: 1 }));
    }

    #[test]
    fn group_repeating_default_is_rejected() {
        let err = rejected(&variant(r#""errno": "ENOSYS""#, r#""errno": "EPERM""#));
        assert!(matches!(err, ProfileError::RedundantGroup { group: 2 }));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = rejected(&variant(
            r#""reason": "basic","#,
            r#""reason": "basic", "comment": "x","#,
        ));
        assert!(err.to_string().contains("unknown field `comment`"), "{err}");
    }

    #[test]
    fn invalid_syscall_name_is_rejected() {
        let err = rejected(&variant(r#"["read", "write"]"#, r#"["read", "Write"]"#));
        assert!(matches!(
            err,
            ProfileError::InvalidSyscallName { group: 0, .. }
        ));
    }

    #[test]
    fn oci_for_host_selects_arches_and_groups() {
        let profile = parse_seccomp(MINIMAL).unwrap();
        let x86 = profile.to_oci_for_host("x86_64").unwrap();
        assert_eq!(
            x86.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64][..])
        );
        let names = |seccomp: &LinuxSeccomp| -> Vec<String> {
            seccomp
                .syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        assert!(names(&x86).contains(&"arch_prctl".to_owned()));
        let arm = profile.to_oci_for_host("aarch64").unwrap();
        assert!(!names(&arm).contains(&"arch_prctl".to_owned()));
        assert!(matches!(
            profile.to_oci_for_host("riscv64"),
            Err(ProfileError::UnsupportedHost { .. })
        ));
    }

    #[test]
    fn oci_masked_eq_uses_libcontainer_field_order() {
        let profile = parse_seccomp(MINIMAL).unwrap();
        let oci = profile.to_oci_for_host("x86_64").unwrap();
        let clone = oci
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone".to_owned()])
            .unwrap();
        let args = clone.args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0, "datum");
        assert_eq!(args[0].value_two(), Some(0x7E02_0000), "mask");
    }

    #[test]
    fn oci_json_shape() {
        let profile = parse_seccomp(MINIMAL).unwrap();
        let json = serde_json::to_value(profile.to_oci_for_host("x86_64").unwrap()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64"])
        );
        let clone3 = json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == serde_json::json!(["clone3"]))
            .unwrap();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
    }
}
