//! End-to-end: what packaging ships besides the sandbox — `--version` naming the commit, shell completions, the
//! manual pages — and the doctor's AppArmor check. Run against `$THV_SANDBOX_BIN` too (CI's installed-.deb step).

use std::process::{Command, Output, Stdio};

use thv_sandbox_e2e::thv_sandbox_bin;

fn thv(args: &[&str]) -> Output {
    Command::new(thv_sandbox_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run thv-sandbox")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = thv(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let version = text(&out.stdout);
    let commit = version
        .trim()
        .strip_prefix(&format!(
            "thv-sandbox {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {version:?}"));
    assert!(
        commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a commit: {commit:?}"
    );
    // Where this checkout is readable (not for CI's unprivileged users), it is HEAD's commit, unless the binary
    // under test was built elsewhere (an installed package).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output();
    if let Ok(head) = head {
        if head.status.success() && std::env::var_os("THV_SANDBOX_BIN").is_none() {
            assert_eq!(commit, text(&head.stdout).trim());
        }
    }
}

#[test]
fn bash_completion_loads_in_bash_and_completes_subcommands() {
    let out = thv(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    // Sourced by a real bash, the function completes `thv-sandbox reg` to `registry`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thv-sandbox.bash");
    std::fs::write(&file, &script).unwrap();
    let probe = r#"source "$1" || exit 1
complete -p thv-sandbox || exit 1
COMP_WORDS=(thv-sandbox reg); COMP_CWORD=1; COMP_LINE="thv-sandbox reg"; COMP_POINT=${#COMP_LINE}
fn=$(complete -p thv-sandbox | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$fn" thv-sandbox reg thv-sandbox
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["--norc", "-c", probe, "_"])
        .arg(&file)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replies = text(&out.stdout);
    assert!(replies.lines().any(|l| l == "registry"), "{replies}");
    assert!(replies.contains(" -F "), "{replies}");
    // The internal runner is not offered.
    let probe = r#"source "$1" || exit 1
COMP_WORDS=(thv-sandbox ""); COMP_CWORD=1; COMP_LINE="thv-sandbox "; COMP_POINT=${#COMP_LINE}
fn=$(complete -p thv-sandbox | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$fn" thv-sandbox "" thv-sandbox
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["--norc", "-c", probe, "_"])
        .arg(&file)
        .output()
        .expect("bash");
    let all = text(&out.stdout);
    assert!(all.lines().any(|l| l == "completions"), "{all}");
    assert!(!all.contains("__runner"), "{all}");
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for (shell, marker) in [
        ("zsh", "#compdef thv-sandbox"),
        ("fish", "complete -c thv-sandbox"),
    ] {
        let out = thv(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(
            script.starts_with(marker) || script.contains(marker),
            "{shell}: {script}"
        );
        for cmd in ["run", "registry", "doctor", "verify", "completions", "man"] {
            assert!(script.contains(cmd), "{shell} lacks {cmd}");
        }
        assert!(
            !script.contains("__runner"),
            "{shell} offers the hidden runner"
        );
    }
    let out = thv(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid value 'tcsh'"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn man_page_describes_the_commands_and_dir_writes_one_page_each() {
    let out = thv(&["man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH thv-sandbox 1"), "{page}");
    for cmd in ["run", "registry", "doctor", "verify", "completions"] {
        assert!(
            page.contains(&format!("thv\\-sandbox\\-{cmd}(1)")),
            "no {cmd} in:\n{page}"
        );
    }
    assert!(!page.contains("__runner"));

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = thv(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    for name in [
        "thv-sandbox.1",
        "thv-sandbox-run.1",
        "thv-sandbox-registry-info.1",
    ] {
        let p = std::fs::read_to_string(pages.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.starts_with(".ie"), "{name}: {p}");
    }
    let run = std::fs::read_to_string(pages.join("thv-sandbox-run.1")).unwrap();
    assert!(run.contains("\\-\\-network"), "{run}");

    // Where it cannot write, it says so and fails.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = thv(&["man", "--dir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).starts_with("error: cannot write the manual pages into"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn doctor_checks_the_apparmor_userns_restriction() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(thv_sandbox_bin())
        .arg("doctor")
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = text(&out.stderr);
    let line = report
        .lines()
        .find(|l| l.contains("apparmor userns:"))
        .unwrap_or_else(|| panic!("no apparmor check:\n{report}"));
    // What the line says follows from the host's knob.
    match std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        Err(_) => assert!(
            line.contains("no kernel.apparmor_restrict_unprivileged_userns"),
            "{line}"
        ),
        Ok(v) if v.trim() == "0" => assert!(line.ends_with("= 0"), "{line}"),
        Ok(_) => assert!(line.contains("= 1"), "{line}"),
    }
}
