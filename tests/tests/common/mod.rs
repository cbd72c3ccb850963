//! Shared set-up for the end-to-end tests: one probe image and cache per test binary, a private state dir per
//! test (so each test can prove its sandbox left nothing behind), and the leftover checks.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thv_sandbox_e2e::{probe_image, thv_sandbox_bin};
use tokio::process::Command;

/// The probe image (tags `app`: runs as user app, 1000:1000; `root`: no User) and a cache shared by the tests.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub layout: PathBuf,
    pub cache: PathBuf,
    /// A file on the host, outside every image, that no sandbox may see.
    pub host_secret: PathBuf,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A static is never dropped, so its directory outlives the test binary: the next run collects the ones
        // whose test process is gone (the pid is in the name).
        collect_stale_fixtures();
        let dir = tempfile::Builder::new()
            .prefix(&format!("thv-e2e-{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        // Sandboxes started by root run as unprivileged ids; they must be able to reach the cache under here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        let layout = dir.path().join("probe");
        probe_image(&layout, "app", Some("app")).expect("probe image");
        probe_image(&layout, "root", None).expect("probe image (root)");
        let cache = dir.path().join("cache");
        let host_secret = dir.path().join("host-secret.txt");
        std::fs::write(&host_secret, "the host's secret").expect("secret");
        Fixture {
            dir,
            layout,
            cache,
            host_secret,
        }
    })
}

fn collect_stale_fixtures() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("thv-e2e-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = e
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .ok()
            == Some(nix::unistd::geteuid().as_raw());
        if mine && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A real registry holding the probe image as `tools/probe:1.0`: (registry, the layout it was built in, the image,
/// `HOST/tools/probe:1.0`). `None` (a SKIP, or a failure under CI) without `docker-registry`.
pub fn registry_with_probe() -> Option<(
    thv_sandbox_e2e::registry::TestRegistry,
    tempfile::TempDir,
    thv_sandbox_e2e::BuiltImage,
    String,
)> {
    use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
    if !thv_sandbox_e2e::require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) {
        return None;
    }
    let registry = TestRegistry::start().expect("start registry");
    let layout = tempfile::tempdir().expect("tempdir");
    let built = thv_sandbox_e2e::probe_image_builder(Some("app"))
        .expect("builder")
        .write(layout.path(), "app")
        .expect("write image");
    registry
        .push_image(layout.path(), &built, "tools/probe", "1.0")
        .expect("push");
    let image = format!("{}/tools/probe:1.0", registry.host());
    Some((registry, layout, built, image))
}

/// A test's own state dir (`XDG_RUNTIME_DIR`), so leftovers are attributable to the test.
pub struct Run {
    pub xdg: tempfile::TempDir,
}

impl Run {
    pub fn new() -> Run {
        let xdg = tempfile::Builder::new()
            .prefix("thv-e2e-xdg-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        Run { xdg }
    }

    pub fn image(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", fixture().layout.display())
    }

    /// `thv-sandbox run [extra…] IMAGE [-- server_args…]` with a minimal environment (IMAGE: the probe's `tag`).
    pub fn cmd(&self, tag: &str, extra: &[&str], server_args: &[&str]) -> Command {
        self.cmd_image(&self.image(tag), extra, server_args)
    }

    /// `thv-sandbox run [extra…] IMAGE [-- server_args…]` for any image reference, with the shared cache.
    pub fn cmd_image(&self, image: &str, extra: &[&str], server_args: &[&str]) -> Command {
        self.cmd_in(&fixture().cache, image, extra, server_args)
    }

    /// `thv-sandbox run --cache-dir CACHE [extra…] IMAGE [-- server_args…]` with a minimal environment.
    pub fn cmd_in(
        &self,
        cache: &Path,
        image: &str,
        extra: &[&str],
        server_args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(thv_sandbox_bin());
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
        cmd.env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        );
        cmd.env("XDG_RUNTIME_DIR", self.xdg.path());
        cmd.envs(session_bus_var());
        // Hermetic: the embedded trust roots, no refresh through TUF (tests/tests/trust_tuf.rs covers that).
        cmd.env("THV_SANDBOX_TUF_REFRESH", "0");
        cmd.arg("run").arg("--cache-dir").arg(cache);
        // A server that exits by itself on end of file must never be overtaken by the escalation on a loaded
        // machine: tests that are about the grace period set their own.
        if !extra.contains(&"--stop-timeout") {
            cmd.args(["--stop-timeout", "60"]);
        }
        cmd.args(extra);
        cmd.arg(image);
        if !server_args.is_empty() {
            cmd.arg("--").args(server_args);
        }
        cmd.stderr(Stdio::inherit());
        cmd.kill_on_drop(true);
        cmd
    }

    /// `thv-sandbox SUBCOMMAND --cache-dir CACHE ARGS…` with this test's state dir and a minimal environment.
    pub fn cli(&self, cache: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(thv_sandbox_bin());
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
            )
            .env("XDG_RUNTIME_DIR", self.xdg.path())
            .envs(session_bus_var())
            .env("THV_SANDBOX_TUF_REFRESH", "0")
            .arg(args[0])
            .arg("--cache-dir")
            .arg(cache)
            .args(&args[1..])
            .kill_on_drop(true);
        c
    }

    /// `thv-sandbox WORDS… --cache-dir CACHE ARGS…` (a subcommand of a subcommand, e.g. `trust accept`), as
    /// [`Run::cli`].
    pub fn cli_sub(&self, cache: &Path, words: &[&str], args: &[&str]) -> Command {
        let mut c = self.cli(cache, &words[..1]);
        let mut all: Vec<&str> = words[1..].to_vec();
        all.extend_from_slice(args);
        if words.len() > 1 {
            // `cli` put `--cache-dir` after the first word; it belongs after the last.
            c = Command::new(thv_sandbox_bin());
            c.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env(
                    "HOME",
                    std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
                )
                .env("XDG_RUNTIME_DIR", self.xdg.path())
                .envs(session_bus_var())
                .env("THV_SANDBOX_TUF_REFRESH", "0")
                .args(words)
                .arg("--cache-dir")
                .arg(cache)
                .args(args)
                .kill_on_drop(true);
            return c;
        }
        c.args(all);
        c
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.xdg.path().join("thv-sandbox/runs")
    }

    /// Processes whose command line names this test's state dir (the runner processes carry it).
    pub fn runner_processes(&self) -> Vec<i32> {
        let marker = self.xdg.path().to_string_lossy().into_owned();
        // An exec'd runner names its run directory in its command line; the keeper `run` forks first thing
        // (`sandbox::prefork`) and the runner init it forks work in it.
        processes_where(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                .unwrap_or(false)
                || std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|c| c.to_string_lossy().contains(&marker))
                    .unwrap_or(false)
        })
    }

    /// Waits (bounded, generously) until nothing of this test's sandboxes is left, then asserts it: no run
    /// directory, no runner process, no process in the server's user namespace (if given).
    pub fn assert_nothing_left(&self, userns: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs: Vec<_> = std::fs::read_dir(self.runs_dir())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            let runners = self.runner_processes();
            let in_ns = userns.map(processes_in_userns).unwrap_or_default();
            if runs.is_empty() && runners.is_empty() && in_ns.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("left behind: run dirs {runs:?}, runner processes {runners:?}, processes in the sandbox's user namespace {in_ns:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The user session's D-Bus address, when the test has one: a login session's systemd manager gives the sandbox a
/// transient scope through it (tests/vm/run.sh runs the tests in such a session). The test's private
/// `XDG_RUNTIME_DIR` hides `$XDG_RUNTIME_DIR/bus`, so the address is passed on explicitly.
pub fn session_bus_var() -> Option<(&'static str, std::ffi::OsString)> {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").map(|a| ("DBUS_SESSION_BUS_ADDRESS", a))
}

pub fn processes_where(f: impl Fn(i32) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| *pid != me && f(*pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose user namespace is `ns` (as the probe reports it, `user:[N]`).
pub fn processes_in_userns(ns: &str) -> Vec<i32> {
    processes_where(|pid| {
        std::fs::read_link(format!("/proc/{pid}/ns/user"))
            .map(|l| l.to_string_lossy() == ns)
            .unwrap_or(false)
    })
}

/// The exit code, or 128+signal.
pub fn code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A path for messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The committed package roots of `cache` (`…-pkg-…`).
pub fn package_roots(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join("roots-v1"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("-pkg-") && !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The package base images (`tests/images/build-package-bases.sh`): `$THV_E2E_PACKAGE_BASES/layout`, by default
/// under /var/cache/thv-e2e-packages; `None` (a skip, a failure under CI) when they are not built.
pub fn package_bases() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("THV_E2E_PACKAGE_BASES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache/thv-e2e-packages"));
    let layout = dir.join("layout");
    thv_sandbox_e2e::require(
        layout.join("index.json").is_file(),
        &format!(
            "the package base images in {} (build them as root with tests/images/build-package-bases.sh [DIR])",
            layout.display()
        ),
    )
    .then_some(layout)
}
