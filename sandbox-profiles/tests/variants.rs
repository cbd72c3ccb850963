//! The embedded seccomp variants: each resolves and validates, each differs from its base by
//! exactly its reviewed delta, and each still denies what every profile must deny.

use std::collections::BTreeSet;

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompOperator};
use sandbox_profiles::{
    default_seccomp, resolve_variant, seccomp_variant, variant_names, SeccompProfile,
    NEVER_ALLOWED, SECCOMP_PROFILES, SECCOMP_VARIANTS,
};

const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// Denied by every profile, variants included: each must have no allowing rule.
const MUST_DENY: &[&str] = &[
    "mount",
    "umount2",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "pivot_root",
    "setns",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "userfaultfd",
    "io_uring_setup",
    "open_by_handle_at",
    "reboot",
    "swapon",
    "settimeofday",
    "iopl",
    "ioperm",
];

/// `(syscall, host, its OCI rule without the names)` for every rule a profile produces on
/// each of its hosts: action, errno and argument conditions, exactly as the runtime gets them.
fn rules(profile: &SeccompProfile) -> BTreeSet<(String, String)> {
    let mut rules = BTreeSet::new();
    for host in profile.hosts() {
        let oci = profile.to_oci_for_host(host).unwrap();
        for rule in oci.syscalls().iter().flatten() {
            let mut shape = serde_json::to_value(rule).unwrap();
            shape.as_object_mut().unwrap().remove("names");
            for name in rule.names() {
                rules.insert((name.clone(), format!("{host} {shape}")));
            }
        }
    }
    rules
}

fn names(profile: &SeccompProfile) -> BTreeSet<String> {
    rules(profile).into_iter().map(|(name, _)| name).collect()
}

#[test]
fn every_variant_resolves_and_is_named_like_its_entry() {
    assert_eq!(variant_names()[0], "default");
    assert_eq!(
        variant_names().len(),
        SECCOMP_PROFILES.len() + SECCOMP_VARIANTS.len()
    );
    for (name, json) in SECCOMP_VARIANTS {
        let resolved = resolve_variant(json).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(resolved.name(), *name, "file name field");
        assert_eq!(resolved.extends(), Some("default"));
        assert!(!resolved.description().trim().is_empty());
        let by_name = seccomp_variant(name).unwrap();
        assert_eq!(by_name.name(), *name);
        // Resolved once and cached.
        assert!(std::ptr::eq(by_name, seccomp_variant(name).unwrap()));
        // No name collides with a base profile.
        assert!(SECCOMP_PROFILES.iter().all(|(base, _)| base != name));
        // The default action and ABIs are the base's.
        assert_eq!(by_name.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(by_name.default_errno_ret(), Some(1));
        assert_eq!(
            by_name.hosts().collect::<Vec<_>>(),
            default_seccomp().hosts().collect::<Vec<_>>()
        );
        for removal in by_name.removals() {
            assert!(!removal.reason().trim().is_empty());
        }
        for group in by_name.groups() {
            assert!(!group.reason().trim().is_empty());
            assert!(group.origin() == "default" || group.origin() == *name);
        }
        by_name.to_oci_for_host("x86_64").unwrap();
        by_name.to_oci_for_host("aarch64").unwrap();
    }
    assert!(std::ptr::eq(
        seccomp_variant("default").unwrap(),
        default_seccomp()
    ));
}

#[test]
fn every_variant_still_denies_the_must_deny_list() {
    for name in variant_names() {
        let profile = seccomp_variant(name).unwrap();
        let allowed: Vec<&str> = profile.allowed_syscalls().collect();
        for denied in MUST_DENY.iter().chain(NEVER_ALLOWED) {
            assert!(
                !allowed.contains(denied),
                "{name} allows `{denied}` ({})",
                profile.group_of(denied).unwrap().reason()
            );
        }
        // clone3 keeps answering ENOSYS, so libc keeps falling back to the checked clone.
        assert_eq!(
            profile.group_of("clone3").unwrap().errno_ret(),
            Some(libc::ENOSYS as u32),
            "{name}"
        );
        // Whatever clone rule a variant has, it never lets a new mount, UTS, IPC or cgroup
        // namespace through: every alternative masks those bits and requires them clear.
        let oci = profile.to_oci_for_host("x86_64").unwrap();
        for rule in oci.syscalls().iter().flatten() {
            if !rule.names().iter().any(|n| n == "clone" || n == "unshare") {
                continue;
            }
            assert_eq!(rule.action(), LinuxSeccompAction::ScmpActAllow);
            let args = rule
                .args()
                .as_deref()
                .expect("clone/unshare are conditional");
            let flags = args.iter().find(|arg| arg.index() == 0).expect("arg 0");
            let forbidden = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC;
            match flags.op() {
                // libcontainer order: valueTwo is the mask, value the expected result.
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    let mask = flags.value_two().unwrap();
                    assert_eq!(mask & forbidden, forbidden, "{name}: mask {mask:#x}");
                    assert_eq!(flags.value() & forbidden, 0, "{name}");
                }
                LinuxSeccompOperator::ScmpCmpEq => {
                    assert_eq!(flags.value() & forbidden, 0, "{name}: {:#x}", flags.value());
                }
                other => panic!("{name}: unexpected operator {other:?} on clone/unshare"),
            }
        }
    }
}

#[test]
fn browser_differs_from_default_by_exactly_its_delta() {
    let default = default_seccomp();
    let browser = seccomp_variant("browser").unwrap();

    // Names: exactly unshare and chroot are new; nothing disappears.
    let added: Vec<String> = names(browser)
        .difference(&names(default))
        .cloned()
        .collect();
    let gone: Vec<String> = names(default)
        .difference(&names(browser))
        .cloned()
        .collect();
    assert_eq!(added, ["chroot", "unshare"]);
    assert!(gone.is_empty(), "{gone:?}");

    // Rules: every rule of the default is unchanged except clone's.
    let changed: BTreeSet<String> = rules(default)
        .difference(&rules(browser))
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(changed.into_iter().collect::<Vec<_>>(), ["clone"]);
    assert_eq!(browser.removals().len(), 1);
    assert_eq!(
        browser.removals()[0].syscalls().collect::<Vec<_>>(),
        ["clone"]
    );
    for name in ["clone", "unshare", "chroot"] {
        assert_eq!(
            browser.group_of(name).unwrap().origin(),
            "browser",
            "{name}"
        );
    }
    assert!(browser.group_of("chroot").unwrap().allows());

    let oci = browser.to_oci_for_host("x86_64").unwrap();
    let syscalls = oci.syscalls().as_deref().unwrap();
    let rule_for = |name: &str| {
        let found: Vec<_> = syscalls
            .iter()
            .filter(|rule| rule.names().iter().any(|n| n == name))
            .collect();
        assert_eq!(found.len(), 1, "{name}: one rule");
        found[0].args().clone().unwrap_or_default()
    };
    // clone: user, PID and network namespaces pass; the rest of the namespace bits do not.
    let clone = rule_for("clone");
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(clone[0].value_two(), Some(0x0E02_0000));
    assert_eq!(clone[0].value(), 0);
    // unshare: CLONE_NEWUSER alone.
    let unshare = rule_for("unshare");
    assert_eq!(unshare.len(), 1);
    assert_eq!(unshare[0].op(), LinuxSeccompOperator::ScmpCmpEq);
    assert_eq!(unshare[0].value(), CLONE_NEWUSER);
    // chroot: unconditional (the path is in memory).
    assert!(rule_for("chroot").is_empty());
}

#[test]
fn strict_only_removes() {
    let default = default_seccomp();
    let strict = seccomp_variant("strict").unwrap();
    assert!(names(strict).is_subset(&names(default)));
    let gone: BTreeSet<String> = names(default).difference(&names(strict)).cloned().collect();
    let removed: BTreeSet<String> = strict
        .removals()
        .iter()
        .flat_map(|r| r.syscalls().map(str::to_owned))
        .collect();
    assert_eq!(gone, removed);
    for name in ["io_setup", "msgsnd", "mq_open", "vmsplice"] {
        assert!(gone.contains(name), "{name}");
    }
    // What ordinary servers use is still there.
    for name in [
        "shmget",
        "semop",
        "splice",
        "epoll_pwait",
        "clone",
        "socket",
    ] {
        assert!(strict.group_of(name).is_some(), "{name}");
    }
    assert!(strict.groups().iter().all(|g| g.origin() == "default"));
}
