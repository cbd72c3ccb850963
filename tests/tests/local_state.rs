//! End-to-end: thv-sandbox's own local state — the image cache and the state directory — against sandboxes and
//! other local users: no sandbox reaches them through a mount (F4, F16), a cached root changed behind our back
//! is refused (F4), profile mounts are shown and the broad ones need consent (F7), another user cannot stop our
//! runs by squatting `/tmp` (F8), a cache others could change is refused (F13), and many starts at once do not
//! remove each other's run directories.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{code, fixture, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{spawn_mcp, thv_sandbox_bin, tool_json};

struct Out {
    code: i32,
    stderr: String,
}

async fn output(mut cmd: tokio::process::Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.expect("run thv-sandbox");
    Out {
        code: code(out.status),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `thv-sandbox ARGS…` with only PATH, the given HOME and (if given) XDG_RUNTIME_DIR: an MCP client's environment.
fn bare(home: &Path, xdg: Option<&Path>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(thv_sandbox_bin());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("THV_SANDBOX_TUF_REFRESH", "0")
        .args(args)
        .kill_on_drop(true);
    if let Some(x) = xdg {
        cmd.env("XDG_RUNTIME_DIR", x);
    }
    cmd
}

/// A home directory of our own, private like a real one.
fn home() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("thv-e2e-home-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    d
}

fn errno(v: &Value) -> &str {
    v["errno"].as_str().unwrap_or("")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The committed roots under `cache` (their directories).
fn roots(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("roots-v1"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default()
}

/// F4: `-v ~:/w` gives the sandbox the directory holding the cache; it must not see or change the cached root
/// (here: the one it runs from).
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_given_the_home_cannot_touch_the_cache() {
    let run = Run::new();
    let home = home();
    let cache = home.path().join(".cache/thv-sandbox");
    let image = run.image("app");
    let w = format!("{}:/w", home.path().display());
    let xdg = run.xdg.path();
    let server = spawn_mcp(bare(
        home.path(),
        Some(xdg),
        &["run", "-q", "--stop-timeout", "60", "-v", &w, &image],
    ))
    .await
    .expect("initialize through the sandbox");
    let found = roots(&cache);
    assert_eq!(
        found.len(),
        1,
        "one root unpacked into the default cache: {found:?}"
    );
    let key = s(found[0].file_name().unwrap().as_ref());
    let passwd = found[0].join("rootfs/etc/passwd");
    let before = std::fs::read(&passwd).expect("the root's /etc/passwd");
    let inside = format!("/w/.cache/thv-sandbox/roots-v1/{key}/rootfs");
    for (path, what) in [
        (format!("{inside}/etc/passwd"), "a file of the cached root"),
        (
            format!("{inside}/etc/planted"),
            "a new file in the cached root",
        ),
        (
            "/w/.cache/thv-sandbox/planted".to_owned(),
            "a file in the cache",
        ),
    ] {
        let r = tool_json(
            &server
                .call("write_file", json!({"path": path, "text": "POISONED"}))
                .await
                .expect("write_file"),
        );
        assert!(
            !errno(&r).is_empty(),
            "the sandbox wrote {what} ({path}): {r}"
        );
    }
    let listed = tool_json(
        &server
            .call("list_dir", json!({"path": "/w/.cache/thv-sandbox"}))
            .await
            .expect("list_dir"),
    );
    assert!(
        listed["entries"].as_array().is_none_or(|e| e.is_empty()),
        "the sandbox sees into the cache: {listed}"
    );
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    assert_eq!(std::fs::read(&passwd).unwrap(), before);
    assert!(!found[0].join("rootfs/etc/planted").exists());
    assert!(!cache.join("planted").exists());
    run.assert_nothing_left(None);
}

/// F4, second line: once a sandbox has had write access around the cache, a root changed afterwards (here from
/// outside, as a write that got past the mask would) is refused, not run.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_changed_after_a_sandbox_could_write_around_the_cache_is_refused() {
    let run = Run::new();
    let home = home();
    let cache = home.path().join(".cache/thv-sandbox");
    let image = run.image("app");
    let w = format!("{}:/w", home.path().display());
    let xdg = run.xdg.path();
    let out = output(bare(
        home.path(),
        Some(xdg),
        &["run", "-q", "-v", &w, &image, "--", "--version"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let found = roots(&cache);
    assert_eq!(found.len(), 1, "{found:?}");
    let passwd = found[0].join("rootfs/etc/passwd");
    let mode = std::fs::metadata(&passwd).unwrap().permissions();
    std::fs::set_permissions(&passwd, mode).expect("chmod (the change time moves)");
    let out = output(bare(
        home.path(),
        Some(xdg),
        &["run", "-q", &image, "--", "--version"],
    ))
    .await;
    assert_eq!(out.code, 125, "a changed root was run: {}", out.stderr);
    assert!(
        out.stderr.contains("was changed after it was unpacked") && out.stderr.contains("rm -rf"),
        "{}",
        out.stderr
    );
    // `images --check` says so too, whether or not the cache was exposed.
    let out = output(bare(home.path(), Some(xdg), &["images", "--check"])).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("CHANGED since it was unpacked"),
        "{}",
        out.stderr
    );
    run.assert_nothing_left(None);
}

/// F16: `/proc`, `/sys`, `/dev` and thv-sandbox's own directories are never mounted, with a hint.
#[tokio::test(flavor = "multi_thread")]
async fn host_proc_and_our_own_dirs_cannot_be_mounted() {
    let run = Run::new();
    let state = run.xdg.path().join("thv-sandbox");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let roots_dir = fixture().cache.join("roots-v1");
    std::fs::create_dir_all(&roots_dir).unwrap();
    for (mount, says) in [
        ("/proc:/hp:ro".to_owned(), "kernel's view of the host"),
        ("/sys/kernel:/k:ro".to_owned(), "kernel's view of the host"),
        (
            format!("{}:/s", state.display()),
            "thv-sandbox's own directory",
        ),
        (
            format!("{}:/r:ro", roots_dir.display()),
            "thv-sandbox's own directory",
        ),
    ] {
        let out = output(run.cmd("app", &["-q", "-v", &mount], &["--version"])).await;
        assert_eq!(out.code, 2, "-v {mount} was accepted: {}", out.stderr);
        assert!(
            out.stderr.contains(says) && out.stderr.contains("hint:"),
            "-v {mount}: {}",
            out.stderr
        );
    }
    run.assert_nothing_left(None);
}

/// F7: a permission profile's mounts are shown on stderr; `/` (and the home, and directories holding ours) only
/// with `--allow-profile-mounts`.
#[tokio::test(flavor = "multi_thread")]
async fn profile_mounts_are_shown_and_broad_ones_need_consent() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let profile = |v: Value| {
        let p = dir.path().join("profile.json");
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        s(&p)
    };

    let narrow = profile(json!({"read": [docs]}));
    let out = output(run.cmd(
        "app",
        &["-q", "--permission-profile", &narrow],
        &["--version"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = format!(
        "the permission profile mounts {} -> {} (read-only)",
        docs.display(),
        docs.display()
    );
    assert!(out.stderr.contains(&line), "{}", out.stderr);

    let root = profile(json!({"read": ["/:/host"]}));
    let out = output(run.cmd(
        "app",
        &["-q", "--permission-profile", &root],
        &["--version"],
    ))
    .await;
    assert_eq!(out.code, 2, "the profile mounted / unasked: {}", out.stderr);
    assert!(
        out.stderr.contains("asks to mount `/`") && out.stderr.contains("--allow-profile-mounts"),
        "{}",
        out.stderr
    );
    let out = output(run.cmd(
        "app",
        &[
            "-q",
            "--permission-profile",
            &root,
            "--allow-profile-mounts",
        ],
        &["--version"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the permission profile mounts / -> /host (read-only)"),
        "{}",
        out.stderr
    );
    run.assert_nothing_left(None);
}

/// Puts something of the test's choosing at a path for the test's duration; what was there is restored.
struct Squat {
    path: PathBuf,
    aside: Option<PathBuf>,
}

impl Squat {
    fn new(path: PathBuf) -> Squat {
        let aside = std::fs::symlink_metadata(&path).is_ok().then(|| {
            let a = PathBuf::from(format!(
                "{}.e2e-aside-{}",
                path.display(),
                std::process::id()
            ));
            std::fs::rename(&path, &a).expect("move the existing state dir aside");
            a
        });
        Squat { path, aside }
    }
}

impl Drop for Squat {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path).or_else(|_| std::fs::remove_dir_all(&self.path));
        if let Some(a) = &self.aside {
            let _ = std::fs::rename(a, &self.path);
        }
    }
}

/// F8: without XDG_RUNTIME_DIR (as under many MCP clients), another local user's `/tmp/thv-sandbox-UID` — a
/// directory of theirs, or anything else in the way — does not stop our runs: the state lives under our home, or
/// in our session's runtime directory (`/run/user/UID`) when we have one.
#[tokio::test(flavor = "multi_thread")]
async fn a_squatted_tmp_state_dir_does_not_stop_runs() {
    let uid = nix::unistd::geteuid();
    let squat = Squat::new(PathBuf::from(format!("/tmp/thv-sandbox-{uid}")));
    if uid.is_root() {
        // Another user's private directory, as they would make it.
        std::fs::create_dir(&squat.path).unwrap();
        std::fs::set_permissions(&squat.path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = nix::unistd::Uid::from_raw(4242);
        nix::unistd::chown(
            &squat.path,
            Some(other),
            Some(nix::unistd::Gid::from_raw(4242)),
        )
        .unwrap();
    } else {
        // An unprivileged test cannot make a file another user's: something that is not a directory stands in.
        std::os::unix::fs::symlink("/nonexistent/thv-sandbox-squat", &squat.path).unwrap();
    }
    let home = home();
    let image = format!("oci:{}:app", fixture().layout.display());
    let cache = s(&fixture().cache);
    let out = output(bare(
        home.path(),
        None,
        &[
            "run",
            "-q",
            "--cache-dir",
            &cache,
            &image,
            "--",
            "--version",
        ],
    ))
    .await;
    assert_eq!(
        out.code, 0,
        "a squatted /tmp/thv-sandbox-{uid} stopped the run: {}",
        out.stderr
    );
    let runs = match thv_sandbox_runtime::dirs::session_runtime_dir(uid.as_raw()) {
        Some(session) => session.join("thv-sandbox/runs"),
        None => home.path().join(".local/state/thv-sandbox/run/runs"),
    };
    assert!(runs.is_dir(), "the state dir is not {}", runs.display());
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0, "nothing left");
}

/// F13: an `oci:` run checks its cache like a registry pull does: not open to others, and not inside a directory
/// others may change.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_others_could_change_is_refused_for_oci_runs() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let open_cache = dir.path().join("open-cache");
    std::fs::create_dir(&open_cache).unwrap();
    std::fs::set_permissions(&open_cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open_parent = dir.path().join("open-parent");
    std::fs::create_dir(&open_parent).unwrap();
    std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    let image = run.image("app");
    for (cache, says) in [
        (open_cache.clone(), "chmod 700"),
        (open_parent.join("cache"), "others may write"),
    ] {
        let out = output(run.cmd_in(&cache, &image, &["-q"], &["--version"])).await;
        assert_eq!(
            out.code,
            125,
            "cache {} accepted: {}",
            cache.display(),
            out.stderr
        );
        assert!(out.stderr.contains(says), "{}", out.stderr);
        assert!(
            roots(&cache).is_empty(),
            "nothing unpacked into {}",
            cache.display()
        );
    }
    run.assert_nothing_left(None);
}

/// Many sandboxes started at once all start: no start's collection of stale runs removes another's run directory.
#[tokio::test(flavor = "multi_thread")]
async fn thirty_sandboxes_started_at_once_all_run() {
    let run = Run::new();
    // The root is unpacked once, first: this is about starts, not builds.
    let out = output(run.cmd("app", &["-q"], &["--version"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let starts: Vec<_> = (0..30)
        .map(|_| output(run.cmd("app", &["-q"], &["--version"])))
        .collect();
    let outs = futures_util::future::join_all(starts).await;
    let failed: Vec<String> = outs
        .iter()
        .filter(|o| o.code != 0)
        .map(|o| format!("exit {}: {}", o.code, o.stderr))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 30 failed: {failed:#?}",
        failed.len()
    );
    run.assert_nothing_left(None);
}
