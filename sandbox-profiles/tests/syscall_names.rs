//! Every syscall name in every embedded profile and variant is one libseccomp knows, and a group only
//! applies where its syscalls exist: on each host a group applies to, each of its names must
//! be a real syscall of at least one of that host's seccomp ABIs. A name that exists on no ABI
//! of a host must be moved into a group marked `only_on` the hosts where it exists.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::Arch;
use sandbox_profiles::{seccomp_variant, variant_names};

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchArm => ScmpArch::Arm,
        other => panic!("add {other:?} to this test's architecture table"),
    }
}

/// The syscall number of `name` on `arch`, if it is a real syscall there. libseccomp answers
/// names it knows from other architectures with a negative pseudo-number.
fn number_on(name: &str, arch: ScmpArch) -> Option<i32> {
    ScmpSyscall::from_name_by_arch(name, arch)
        .ok()
        .map(ScmpSyscall::as_raw_syscall)
        .filter(|nr| *nr >= 0)
}

#[test]
fn every_syscall_name_resolves_where_it_applies() {
    let version = libseccomp::ScmpVersion::current().expect("libseccomp version");
    let mut problems = Vec::new();
    // Base profiles and resolved variants alike.
    for profile_name in variant_names() {
        let profile = seccomp_variant(profile_name).expect("embedded profile resolves");
        for (index, group) in profile.groups().iter().enumerate() {
            for name in group.syscalls() {
                // Known to libseccomp's tables at all (on the native ABI, or as a pseudo-syscall).
                if ScmpSyscall::from_name(name).is_err() {
                    problems.push(format!(
                        "{profile_name}: groups[{index}] `{name}` is unknown to libseccomp {}.{}.{}",
                        version.major, version.minor, version.micro
                    ));
                    continue;
                }
                for host in profile.hosts() {
                    if !group.applies_to(host) {
                        continue;
                    }
                    let arches = profile.architectures_for(host).expect("listed host");
                    if !arches
                        .iter()
                        .any(|arch| number_on(name, scmp_arch(*arch)).is_some())
                    {
                        problems.push(format!(
                            "{profile_name}: groups[{index}] `{name}` is no syscall on any ABI of \
                             {host} ({arches:?}); limit its group with only_on"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn names_of_groups_for_this_host_resolve_natively_or_on_a_sub_abi() {
    let host = std::env::consts::ARCH;
    let profile = sandbox_profiles::default_seccomp();
    let Some(arches) = profile.architectures_for(host) else {
        panic!("the default profile has no architectures for this host ({host})");
    };
    assert_eq!(
        scmp_arch(arches[0]),
        ScmpArch::native(),
        "the first architecture listed for {host} must be the native one"
    );
    let missing: Vec<&str> = profile
        .groups()
        .iter()
        .filter(|group| group.applies_to(host))
        .flat_map(|group| group.syscalls())
        .filter(|name| {
            !arches
                .iter()
                .any(|arch| number_on(name, scmp_arch(*arch)).is_some())
        })
        .collect();
    assert!(missing.is_empty(), "not syscalls on {host}: {missing:?}");
}

#[test]
fn the_check_rejects_a_made_up_name() {
    assert!(ScmpSyscall::from_name("thv_no_such_syscall").is_err());
    assert_eq!(number_on("arch_prctl", ScmpArch::Aarch64), None);
    assert!(number_on("arch_prctl", ScmpArch::X8664).is_some());
}
