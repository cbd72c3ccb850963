use super::cgroups::*;
use super::container::*;
use super::dirs::*;
use super::namespaces::*;
use super::probe::*;
use super::seccomp::*;
use super::subids::*;
use super::*;
use crate::rootfs::idmap::parse_subid_file;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use std::os::unix::fs::MetadataExt;

fn probe_with(outcomes: &[(Step, Outcome)]) -> Result<Probe, DoctorError> {
    let mut all = [Outcome::NotRun; STEP_COUNT];
    for &(step, outcome) in outcomes {
        all[step as usize] = outcome;
    }
    Ok(Probe {
        outcomes: all,
        died: None,
    })
}

fn all_ok() -> Result<Probe, DoctorError> {
    probe_with(&Step::ALL.map(|s| (s, Outcome::Ok)))
}

#[test]
fn subid_parser_picks_first_big_enough_entry_by_name_or_uid() {
    let content = "\
# comment
alice:100000:65536

bob:200000:1000
bob:300000:65536
1001:400000:70000
";
    assert_eq!(
        parse_subid_file(content, "alice", 1000),
        Some((100000, 65536))
    );
    // The too-small first entry is skipped.
    assert_eq!(
        parse_subid_file(content, "bob", 2000),
        Some((300000, 65536))
    );
    // By number.
    assert_eq!(
        parse_subid_file(content, "carol", 1001),
        Some((400000, 70000))
    );
    assert_eq!(parse_subid_file(content, "dave", 1002), None);
}

#[test]
fn subid_parser_skips_malformed_and_overflowing_lines() {
    let content = "alice:x:65536\nalice:1:2:3\nalice:4294967295:65536\n  # alice:1:65536\nalice\nalice:500000:65536\n";
    assert_eq!(
        parse_subid_file(content, "alice", 1000),
        Some((500000, 65536))
    );
    assert_eq!(parse_subid_file("", "alice", 1000), None);
}

#[test]
fn subid_name_does_not_match_other_uid() {
    // A numeric owner only matches the uid, never a user whose name happens to differ.
    assert_eq!(parse_subid_file("1000:100000:65536\n", "bob", 1001), None);
}

#[test]
fn subid_lookup_reports_too_small_ranges() {
    let lookup = SubIdLookup::parse("alice:1:10\nalice:100:1000\n", "alice", 1000);
    assert_eq!(
        lookup,
        SubIdLookup {
            usable: None,
            too_small: Some(1000)
        }
    );
    let check = subid_check("alice", 1000, &Ok(lookup), &Ok(lookup), true);
    assert_eq!(check.status, Status::Warn);
    assert!(check.detail.contains("only 1000 ids"), "{}", check.detail);
    assert_eq!(
        check.fix.as_deref(),
        Some(
            "`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice` \
             and install `uidmap`"
        )
    );
    let usable = SubIdLookup::parse("alice:100000:65536\n", "alice", 1000);
    let check = subid_check("alice", 1000, &Ok(usable), &Ok(lookup), false);
    assert_eq!(check.status, Status::Warn);
    assert!(check.fix.unwrap().ends_with("alice`"));
    let check = subid_check("alice", 1000, &Ok(usable), &Ok(usable), false);
    assert_eq!(check.status, Status::Ok);
    assert_eq!(
        check.detail,
        "/etc/subuid: 100000-165535 (65536 ids); /etc/subgid: 100000-165535 (65536 ids)"
    );
}

#[test]
fn proc_cgroup_parser_finds_the_unified_line() {
    let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/user.slice/app.scope\n";
    assert_eq!(parse_proc_cgroup(hybrid), Some("/user.slice/app.scope"));
    assert_eq!(parse_proc_cgroup("0::/\n"), Some("/"));
    assert_eq!(parse_proc_cgroup("4:memory:/x\n"), None);
}

#[test]
fn cgroup_layout_classification() {
    assert_eq!(
        classify_cgroups(Some(CGROUP2_SUPER_MAGIC), None),
        Some(CgroupLayout::V2)
    );
    assert_eq!(
        classify_cgroups(Some(TMPFS_MAGIC), Some(CGROUP2_SUPER_MAGIC)),
        Some(CgroupLayout::Hybrid)
    );
    assert_eq!(
        classify_cgroups(Some(TMPFS_MAGIC), Some(TMPFS_MAGIC)),
        Some(CgroupLayout::V1)
    );
    assert_eq!(
        classify_cgroups(Some(TMPFS_MAGIC), None),
        Some(CgroupLayout::V1)
    );
    assert_eq!(classify_cgroups(None, None), None);
}

#[test]
fn cgroup_check_distinguishes_delegation() {
    let delegated = CgroupFacts {
        layout: Some(CgroupLayout::V2),
        own_dir: Some(PathBuf::from("/sys/fs/cgroup/user.slice/x.scope")),
        writable: true,
        controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
        subtree: vec![],
    };
    assert_eq!(cgroup_check(&delegated, false).status, Status::Ok);
    let not_writable = CgroupFacts {
        writable: false,
        ..delegated.clone()
    };
    let check = cgroup_check(&not_writable, false);
    assert_eq!(check.status, Status::Warn);
    assert_eq!(check.fix.as_deref(), Some(DELEGATE_FIX));
    // With a systemd user manager that gives each run a scope, an undelegated own cgroup is fine (the VM's login
    // session: `limits` said the scope applies while this check said there would be no cgroup).
    let check = cgroup_check(&not_writable, true);
    assert_eq!(check.status, Status::Ok, "{}", check.detail);
    assert!(
        check.detail.contains("transient systemd scope"),
        "{}",
        check.detail
    );
    assert!(!check.detail.contains(NO_CGROUP));
    let no_memory = CgroupFacts {
        controllers: vec!["pids".into()],
        ..delegated.clone()
    };
    let check = cgroup_check(&no_memory, false);
    assert_eq!(check.status, Status::Warn);
    assert!(check.detail.contains("without memory"), "{}", check.detail);
    let hybrid = CgroupFacts {
        layout: Some(CgroupLayout::Hybrid),
        ..delegated
    };
    let check = cgroup_check(&hybrid, false);
    assert_eq!(check.status, Status::Warn);
    assert!(check.detail.starts_with("hybrid"));
    assert!(check.detail.contains(NO_CGROUP));
}

#[test]
fn seccomp_mode_parser() {
    assert_eq!(
        parse_seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
        Some(2)
    );
    assert_eq!(parse_seccomp_mode("Seccomp:\t0\n"), Some(0));
    assert_eq!(parse_seccomp_mode("Name:\tx\n"), None);
}

#[test]
fn seccomp_check_notes_an_outer_filter() {
    let check = seccomp_check(Some(2), &all_ok(), None);
    assert_eq!(check.status, Status::Ok);
    assert!(check.detail.contains("already runs under a seccomp filter"));
    assert_eq!(seccomp_check(None, &all_ok(), None).status, Status::Fail);
    let failed = probe_with(&[(Step::Seccomp, Outcome::Failed(Errno::EINVAL))]);
    assert_eq!(seccomp_check(Some(0), &failed, None).status, Status::Fail);
}

#[test]
fn userns_eperm_in_a_container_says_so() {
    let probe = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::EPERM))]);
    let knobs = UsernsKnobs {
        max_user_namespaces: Some(1000),
        ..Default::default()
    };
    let check = userns_check(&knobs, &probe, Some("/.dockerenv exists"), 1000);
    assert_eq!(check.status, Status::Fail);
    assert_eq!(
        check.detail,
        "unshare(CLONE_NEWUSER) failed: EPERM: Operation not permitted: this looks like a container \
         (/.dockerenv exists) that forbids user namespaces"
    );
    assert_eq!(check.fix.as_deref(), Some(CONTAINER_USERNS_FIX));
}

#[test]
fn userns_failures_point_at_the_responsible_knob() {
    let eperm_map = probe_with(&[
        (Step::UserNs, Outcome::Ok),
        (Step::Setgroups, Outcome::Ok),
        (Step::UidMap, Outcome::Failed(Errno::EPERM)),
    ]);
    let ubuntu = UsernsKnobs {
        max_user_namespaces: Some(1000),
        apparmor_restrict: Some(1),
        ..Default::default()
    };
    let check = userns_check(&ubuntu, &eperm_map, None, 1000);
    assert!(
        check
            .detail
            .starts_with("writing /proc/self/uid_map failed"),
        "{}",
        check.detail
    );
    assert_eq!(check.fix.as_deref(), Some(APPARMOR_FIX));

    let enospc = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::ENOSPC))]);
    let zero = UsernsKnobs {
        max_user_namespaces: Some(0),
        ..Default::default()
    };
    let check = userns_check(&zero, &enospc, None, 1000);
    assert!(check
        .fix
        .unwrap()
        .contains("user.max_user_namespaces=15000"));

    let debian = UsernsKnobs {
        max_user_namespaces: Some(1000),
        unprivileged_userns_clone: Some(0),
        ..Default::default()
    };
    let eperm = probe_with(&[(Step::UserNs, Outcome::Failed(Errno::EPERM))]);
    let check = userns_check(&debian, &eperm, None, 1000);
    assert!(check
        .fix
        .unwrap()
        .contains("kernel.unprivileged_userns_clone=1"));
}

#[test]
fn dependent_checks_are_not_tested_without_a_user_namespace() {
    let probe = probe_with(&[
        (Step::UserNs, Outcome::Failed(Errno::EPERM)),
        (Step::Seccomp, Outcome::Ok),
    ]);
    let check = mount_check(&probe, None);
    assert_eq!(check.status, Status::Fail);
    assert!(
        check
            .detail
            .starts_with("not tested: unshare(CLONE_NEWUSER) failed"),
        "{}",
        check.detail
    );
    assert_eq!(check.fix, None);
    assert_eq!(overlay_check(&probe).status, Status::Warn);
    assert_eq!(seccomp_check(Some(0), &probe, None).status, Status::Ok);
}

#[test]
fn a_dead_probe_is_reported() {
    let probe = decode_probe(&[0, 0, 0, 0, 0, 0, 0, 0], Some("killed by SIGSYS".into()));
    assert_eq!(probe.outcome(Step::UserNs), Outcome::Ok);
    let check = userns_check(&UsernsKnobs::default(), &Ok(probe), None, 1000);
    assert_eq!(check.status, Status::Fail);
    assert!(
        check
            .detail
            .starts_with("the probe died (killed by SIGSYS) before writing /proc/self/setgroups"),
        "{}",
        check.detail
    );
}

#[test]
fn proc_mount_failure_in_a_container_explains_masked_paths() {
    let mut outcomes: Vec<(Step, Outcome)> = Step::ALL.iter().map(|&s| (s, Outcome::Ok)).collect();
    outcomes[Step::Proc as usize].1 = Outcome::Failed(Errno::EPERM);
    let check = pidns_check(&probe_with(&outcomes), Some("/.dockerenv exists"));
    assert_eq!(check.status, Status::Fail);
    assert!(check.fix.unwrap().contains("masked /proc paths"));
}

#[test]
fn container_detection() {
    assert_eq!(
        detect_container(true, false, ""),
        Some("/.dockerenv exists")
    );
    assert_eq!(
        detect_container(false, true, ""),
        Some("/run/.containerenv exists")
    );
    assert_eq!(
        detect_container(false, false, "0::/system.slice/docker-abc.scope\n"),
        Some("our cgroup names docker")
    );
    assert_eq!(
        detect_container(false, false, "0::/user.slice/user-1000.slice\n"),
        None
    );
}

#[test]
fn dir_check_rules() {
    let p = Path::new("/s");
    let status = |state: DirState, kind| dir_check(kind, p, &state, 1000).status;
    assert_eq!(
        status(
            DirState::Present {
                uid: 1000,
                mode: 0o700
            },
            DirKind::State
        ),
        Status::Ok
    );
    assert_eq!(
        status(
            DirState::Present {
                uid: 0,
                mode: 0o700
            },
            DirKind::State
        ),
        Status::Fail
    );
    assert_eq!(
        status(
            DirState::Present {
                uid: 1000,
                mode: 0o777
            },
            DirKind::Cache
        ),
        Status::Fail
    );
    assert_eq!(
        status(
            DirState::Present {
                uid: 1000,
                mode: 0o755
            },
            DirKind::State
        ),
        Status::Warn
    );
    assert_eq!(
        status(
            DirState::Present {
                uid: 1000,
                mode: 0o755
            },
            DirKind::Cache
        ),
        Status::Ok
    );
    assert_eq!(
        status(DirState::NotADirectory, DirKind::Cache),
        Status::Fail
    );
    let missing = |creatable| DirState::Missing {
        ancestor: Some(PathBuf::from("/")),
        creatable,
    };
    assert_eq!(status(missing(true), DirKind::State), Status::Ok);
    assert_eq!(status(missing(false), DirKind::State), Status::Fail);
    let fix = dir_check(
        DirKind::State,
        p,
        &DirState::Present {
            uid: 1000,
            mode: 0o770,
        },
        1000,
    )
    .fix;
    assert_eq!(
        fix.as_deref(),
        Some("`chmod 700 /s`, or point thv-sandbox at another directory")
    );
}

#[test]
fn dir_inspection_of_real_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let euid = Uid::effective().as_raw();
    let missing = tmp.path().join("a/b");
    assert_eq!(
        DirState::inspect(&missing),
        DirState::Missing {
            ancestor: Some(tmp.path().to_path_buf()),
            creatable: true
        }
    );
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    assert_eq!(
        DirState::inspect(tmp.path()),
        DirState::Present {
            uid: euid,
            mode: 0o700
        }
    );
}

#[test]
fn render_snapshot() {
    let report = Report {
        checks: vec![
            Check::new("user", Status::Ok, "uid 1000 (alice): rootless"),
            Check::new("cgroups", Status::Warn, "hybrid").with_fix("switch to v2"),
            Check::new(
                "user namespaces",
                Status::Fail,
                "unshare(CLONE_NEWUSER) failed: EPERM",
            )
            .with_fix("run on the host"),
        ],
    };
    assert_eq!(
        report.render(),
        "\
[ok]   user: uid 1000 (alice): rootless
[warn] cgroups: hybrid
       fix: switch to v2
[FAIL] user namespaces: unshare(CLONE_NEWUSER) failed: EPERM
       fix: run on the host
1 ok, 1 warning, 1 failure: this host cannot run sandboxes
"
    );
    assert!(!report.ok());
    assert_eq!(
        report.failures().map(|c| c.name).collect::<Vec<_>>(),
        ["user namespaces"]
    );
}

#[test]
fn json_has_every_check_with_name_status_detail_and_hint() {
    let report = Report {
        checks: vec![
            Check::new("user", Status::Ok, "uid 1000 (alice): rootless"),
            Check::new("cgroups", Status::Warn, "hybrid").with_fix("switch to v2"),
            Check::new("user namespaces", Status::Fail, "EPERM").with_fix("run on the host"),
        ],
    };
    assert_eq!(
        report.to_json(),
        serde_json::json!({
            "ok": false,
            "checks": [
                {"name": "user", "status": "ok", "detail": "uid 1000 (alice): rootless", "hint": null},
                {"name": "cgroups", "status": "warn", "detail": "hybrid", "hint": "switch to v2"},
                {"name": "user namespaces", "status": "fail", "detail": "EPERM", "hint": "run on the host"},
            ]
        })
    );
}

#[test]
fn hint_joins_distinct_fixes_or_points_at_doctor() {
    let mut report = Report {
        checks: vec![
            Check::new("a", Status::Fail, "x").with_fix("do A"),
            Check::new("b", Status::Fail, "y").with_fix("do A"),
            Check::new("c", Status::Fail, "not tested"),
            Check::new("d", Status::Warn, "z").with_fix("do D"),
            Check::new("e", Status::Fail, "w").with_fix("do E"),
        ],
    };
    assert_eq!(
        hint_for_sandbox_failure(&report),
        "do A; do E (details: `thv-sandbox doctor`)"
    );
    report.checks.retain(|c| c.status != Status::Fail);
    assert_eq!(
        hint_for_sandbox_failure(&report),
        "run `thv-sandbox doctor` to check whether this host supports rootless sandboxes"
    );
}

/// This machine (Debian 12) allows user namespaces, and the real probe must say so; the cgroup
/// check must name the layout statfs sees.
#[test]
fn diagnose_this_host() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = DoctorInputs {
        state_dir: tmp.path().join("state"),
        cache_dir: tmp.path().join("cache"),
    };
    let report = diagnose(&inputs);
    let get = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    };
    let text = report.render();
    for name in [
        "user namespaces",
        "mount namespace",
        "cgroup namespace",
        "pid namespace",
        "seccomp",
        "state dir",
        "cache dir",
    ] {
        assert_eq!(get(name).status, Status::Ok, "{name}:\n{text}");
    }
    let root = statfs("/sys/fs/cgroup").unwrap().filesystem_type();
    let expected = if root == CGROUP2_SUPER_MAGIC {
        "v2"
    } else {
        assert_eq!(root, TMPFS_MAGIC);
        assert_eq!(
            statfs("/sys/fs/cgroup/unified").unwrap().filesystem_type(),
            CGROUP2_SUPER_MAGIC
        );
        "hybrid"
    };
    assert!(get("cgroups").detail.starts_with(expected), "{text}");
    assert!(report.ok(), "{text}");
}

#[test]
fn the_probe_leaves_its_directory_empty_and_unmounted() {
    let dir = ProbeDir::create().unwrap();
    let probe = probe_in(&dir.path).unwrap();
    assert_eq!(probe.died, None);
    // The child really mounted on it (in its own namespace) ...
    assert_eq!(probe.outcome(Step::Tmpfs), Outcome::Ok);
    // ... and on the host it is still an empty directory on the parent's filesystem.
    assert_eq!(fs::read_dir(&dir.path).unwrap().count(), 0);
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_eq!(dev(&dir.path), dev(dir.path.parent().unwrap()));
    let path = dir.path.clone();
    drop(dir);
    assert!(!path.exists());
}
