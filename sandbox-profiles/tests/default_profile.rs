//! The embedded default profile: it parses, it is an EPERM allowlist, it denies what the issue
//! lists, and it is at least as strict as Docker's default profile for a container without
//! capabilities.

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use sandbox_profiles::{default_seccomp, parse_seccomp, SECCOMP_PROFILES};

/// Syscalls Docker's default profile (moby/profiles `seccomp/default_linux.go`) does not allow
/// a container without capabilities: the ones it allows only with a capability (CAP_SYS_ADMIN,
/// CAP_SYS_BOOT, CAP_SYS_CHROOT, CAP_SYS_MODULE, CAP_SYS_PACCT, CAP_SYS_PTRACE, CAP_SYS_RAWIO,
/// CAP_SYS_TIME, CAP_SYS_TTY_CONFIG, CAP_SYS_NICE, CAP_SYSLOG, CAP_BPF, CAP_PERFMON,
/// CAP_DAC_READ_SEARCH), and ones it never lists. Written from reading the profile, not copied.
const DOCKER_DENIES: &[&str] = &[
    // CAP_SYS_ADMIN
    "bpf",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    // CAP_SYS_BOOT, CAP_SYS_CHROOT, CAP_SYS_MODULE, CAP_SYS_PACCT
    "reboot",
    "chroot",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    // CAP_SYS_PTRACE (ptrace and process_vm_* Docker allows on kernels >= 4.8)
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    // CAP_SYS_RAWIO, CAP_SYS_TIME, CAP_SYS_TTY_CONFIG, CAP_SYS_NICE, CAP_DAC_READ_SEARCH
    "iopl",
    "ioperm",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "vhangup",
    "get_mempolicy",
    "mbind",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "open_by_handle_at",
    // Never allowed.
    "add_key",
    "keyctl",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "pivot_root",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "move_pages",
    "migrate_pages",
    "vm86",
    "vm86old",
    "nice",
    "afs_syscall",
    "tuxcall",
    "security",
    "putpmsg",
    "getpmsg",
    "idle",
    "oldfstat",
    "oldlstat",
    "oldstat",
    "oldolduname",
    "olduname",
    "sgetmask",
    "ssetmask",
    "signal",
    "sigaction",
    "sigpending",
    "sigsuspend",
    "bdflush",
    "break",
    "ftime",
    "gtty",
    "stty",
    "lock",
    "mpx",
    "prof",
    "profil",
    "ulimit",
    "readdir",
    "sys_debug_setcontext",
    "subpage_prot",
    "spu_create",
    "spu_run",
    "switch_endian",
    "sysmips",
    "s390_guarded_storage",
    "s390_sthyi",
    "pciconfig_iobase",
    "pciconfig_read",
    "pciconfig_write",
    "rtas",
    "kern_features",
];

/// Allowed by Docker only when arguments match; ours must not allow them unconditionally.
const DOCKER_CONDITIONAL: &[&str] = &["clone", "socket", "personality"];

/// Denied by the issue on top of Docker's list (Docker allows these without capabilities).
const DENIED_BEYOND_DOCKER: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "name_to_handle_at",
    "modify_ldt",
    "fanotify_mark",
    "remap_file_pages",
    "memfd_secret",
    "process_mrelease",
    "epoll_ctl_old",
    "epoll_wait_old",
    "breakpoint",
];

/// The issue's explicit list; each must fall through to the default (EPERM).
const ISSUE_DENIES: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "add_key",
    "keyctl",
    "request_key",
    "bpf",
    "perf_event_open",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "open_by_handle_at",
    "userfaultfd",
    "unshare",
    "setns",
];

const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

#[test]
fn every_embedded_profile_parses_under_its_name() {
    assert!(!SECCOMP_PROFILES.is_empty());
    assert_eq!(
        SECCOMP_PROFILES[0].0, "default",
        "the first profile is the default"
    );
    for (name, json) in SECCOMP_PROFILES {
        let profile = parse_seccomp(json).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(profile.name(), *name);
    }
    assert_eq!(default_seccomp().name(), "default");
}

#[test]
fn default_is_an_eperm_allowlist_for_x86_64_and_aarch64() {
    let profile = default_seccomp();
    assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(profile.default_errno_ret(), Some(libc::EPERM as u32));
    let hosts: Vec<&str> = profile.hosts().collect();
    assert_eq!(hosts, ["x86_64", "aarch64"]);
    for group in profile.groups() {
        assert!(!group.reason().trim().is_empty());
    }
    let oci = profile.to_oci();
    assert_eq!(oci.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(oci.default_errno_ret(), Some(1));
}

#[test]
fn nothing_docker_denies_is_allowed() {
    let profile = default_seccomp();
    let allowed: Vec<&str> = profile.allowed_syscalls().collect();
    let offending: Vec<&&str> = DOCKER_DENIES
        .iter()
        .chain(DENIED_BEYOND_DOCKER)
        .filter(|name| allowed.contains(name))
        .collect();
    assert!(
        offending.is_empty(),
        "allowed, but must be denied: {offending:?}"
    );
}

#[test]
fn what_docker_allows_conditionally_is_conditional() {
    let profile = default_seccomp();
    for name in DOCKER_CONDITIONAL {
        if let Some(group) = profile.group_of(name) {
            assert!(
                !group.allows() || group.is_conditional(),
                "`{name}` is allowed unconditionally"
            );
        }
    }
}

#[test]
fn the_issues_denials_fall_through_to_eperm() {
    let profile = default_seccomp();
    for name in ISSUE_DENIES {
        if let Some(group) = profile.group_of(name) {
            panic!(
                "`{name}` has a rule ({:?}): {}",
                group.action(),
                group.reason()
            );
        }
    }
}

fn rules_for<'a>(oci: &'a [LinuxSyscall], name: &str) -> Vec<&'a LinuxSyscall> {
    oci.iter()
        .filter(|rule| rule.names().iter().any(|n| n == name))
        .collect()
}

#[test]
fn clone_is_allowed_only_without_namespace_flags_and_clone3_gets_enosys() {
    for host in ["x86_64", "aarch64"] {
        let oci = default_seccomp().to_oci_for_host(host).unwrap();
        let syscalls = oci.syscalls().as_deref().unwrap();

        let clone = rules_for(syscalls, "clone");
        assert_eq!(clone.len(), 1, "{host}: one clone rule");
        assert_eq!(clone[0].action(), LinuxSeccompAction::ScmpActAllow);
        let args = clone[0]
            .args()
            .as_deref()
            .expect("clone rule has a condition");
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0, "flags are argument 0 on x86 and ARM");
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        // libcontainer 0.7 field order: valueTwo is the mask, value the expected result.
        assert_eq!(args[0].value_two(), Some(CLONE_NAMESPACE_FLAGS));
        assert_eq!(args[0].value(), 0);

        let clone3 = rules_for(syscalls, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
        assert!(clone3[0].args().is_none());
    }
}

#[test]
fn socket_families_are_a_subset_of_dockers() {
    let oci = default_seccomp().to_oci_for_host("x86_64").unwrap();
    let rules = rules_for(oci.syscalls().as_deref().unwrap(), "socket");
    assert!(!rules.is_empty());
    let mut families = Vec::new();
    for rule in rules {
        let args = rule
            .args()
            .as_deref()
            .expect("socket rules are conditional");
        let family = args
            .iter()
            .find(|arg| arg.index() == 0)
            .expect("every socket rule pins the family");
        assert_eq!(family.op(), LinuxSeccompOperator::ScmpCmpEq);
        families.push(family.value());
    }
    for refused in [libc::AF_ALG, libc::AF_VSOCK, libc::AF_PACKET, libc::AF_KEY] {
        assert!(
            !families.contains(&(refused as u64)),
            "family {refused} allowed"
        );
    }
    families.sort_unstable();
    let expected = [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ];
    assert_eq!(families, expected.map(|f| f as u64));
}

#[test]
fn personality_values_are_a_subset_of_dockers() {
    // Docker allows 0x0, 0x8, 0x20000, 0x20008 and 0xffffffff.
    let docker = [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff];
    let oci = default_seccomp().to_oci_for_host("x86_64").unwrap();
    for rule in rules_for(oci.syscalls().as_deref().unwrap(), "personality") {
        let args = rule
            .args()
            .as_deref()
            .expect("personality rules are conditional");
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
        assert!(docker.contains(&args[0].value()), "{:#x}", args[0].value());
    }
}

#[test]
fn host_specific_groups_follow_the_host() {
    let profile = default_seccomp();
    let names = |host: &str| -> Vec<String> {
        let oci = profile.to_oci_for_host(host).unwrap();
        oci.syscalls()
            .iter()
            .flatten()
            .flat_map(|rule| rule.names().clone())
            .collect()
    };
    let x86 = names("x86_64");
    let arm = names("aarch64");
    assert!(x86.contains(&"arch_prctl".to_owned()) && !arm.contains(&"arch_prctl".to_owned()));
    assert!(!x86
        .iter()
        .any(|n| n.ends_with("time64") || n == "socketcall" || n == "set_thread_area"));
    let x86_arches = profile.to_oci_for_host("x86_64").unwrap();
    let json = serde_json::to_value(&x86_arches).unwrap();
    assert_eq!(
        json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );
    let json = serde_json::to_value(profile.to_oci_for_host("aarch64").unwrap()).unwrap();
    assert_eq!(
        json["architectures"],
        serde_json::json!(["SCMP_ARCH_AARCH64"])
    );
}
