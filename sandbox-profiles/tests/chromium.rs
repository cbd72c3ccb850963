//! Headless Chromium with its own sandbox runs under the `browser` variant and not under the
//! default profile: in a forked child that loaded the filter the way the runtime does and
//! dropped to an unprivileged user (Chromium refuses to sandbox as root), `chromium --headless
//! --dump-dom` renders a page under `browser`, and under `default` it stops because it finds
//! no usable sandbox. Chromium is not started with `--no-sandbox` in either run.
//!
//! A host without Chromium (`chromium`, `chromium-browser`, `google-chrome`, or the program
//! in `THV_SANDBOX_CHROMIUM`) is reported and skipped; set `THV_SANDBOX_REQUIRE_CHROMIUM=1` to
//! make that a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The unprivileged user the browser runs as (nobody).
const NOBODY: u32 = 65534;
const PAGE: &str = "data:text/html,<p id=probe>rendered-under-seccomp</p>";

fn find_chromium() -> Option<PathBuf> {
    let candidates: Vec<String> = match std::env::var("THV_SANDBOX_CHROMIUM") {
        Ok(path) => vec![path],
        Err(_) => ["chromium", "chromium-browser", "google-chrome"]
            .map(str::to_owned)
            .to_vec(),
    };
    candidates.into_iter().find_map(|program| {
        let ok = Command::new(&program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ok.then(|| PathBuf::from(program))
    })
}

/// Runs headless Chromium under `profile` as nobody; returns (exit code, stdout, stderr).
fn render_under(profile: &str, chromium: PathBuf, home: PathBuf) -> (Option<i32>, String, String) {
    let seccomp = sandbox_profiles::seccomp_variant(profile).unwrap().to_oci();
    common::in_child(Some(&seccomp), move || {
        // Allowed by every profile: setgroups/setresgid/setresuid.
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setresgid(NOBODY.into(), NOBODY.into(), NOBODY.into()).expect("setresgid");
        nix::unistd::setresuid(NOBODY.into(), NOBODY.into(), NOBODY.into()).expect("setresuid");
        let output = Command::new("timeout")
            .arg("120")
            .arg(&chromium)
            .args([
                "--headless",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--dump-dom",
                PAGE,
            ])
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(out) => (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(err) => (None, String::new(), format!("spawn: {err}")),
        }
    })
    .expect("child report")
}

/// Under CI (`CI=true`) or with `THV_SANDBOX_REQUIRE_CHROMIUM` set, a missing prerequisite is a failure.
fn required() -> bool {
    std::env::var_os("THV_SANDBOX_REQUIRE_CHROMIUM").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

#[test]
fn sandboxed_headless_chromium_needs_the_browser_variant() {
    let Some(chromium) = find_chromium() else {
        assert!(!required(), "Chromium is required but not found");
        eprintln!("skipping: Chromium is not installed");
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: switching to an unprivileged user needs root");
        assert!(
            !required(),
            "the Chromium check must run as root (it drops to nobody itself)"
        );
        return;
    }
    let home = std::env::temp_dir().join(format!("thv-sandbox-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let (code, stdout, stderr) = render_under("browser", chromium.clone(), home.clone());
    let tail = |text: &str| text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    assert!(
        code == Some(0) && stdout.contains("rendered-under-seccomp"),
        "under `browser`: exit {code:?}\nstdout: {stdout}\nstderr (last lines, newest first):\n{}",
        tail(&stderr)
    );

    let (code, stdout, stderr) = render_under("default", chromium, home.clone());
    std::fs::remove_dir_all(&home).ok();
    assert!(
        code != Some(0) && !stdout.contains("rendered-under-seccomp"),
        "under `default` Chromium rendered the page: it did not sandbox itself, so this test \
         proves nothing\nstderr:\n{}",
        tail(&stderr)
    );
    assert!(
        stderr.contains("No usable sandbox"),
        "under `default`: expected Chromium's 'No usable sandbox' (exit {code:?})\nstderr:\n{}",
        tail(&stderr)
    );
}
