//! The bytecode step of a root being built (issue 14): Python bytecode made valid once, before the root is sealed,
//! instead of recompiled (and thrown away: the root is read-only) at every start.
//!
//! What is pure lives in [`crate::rootfs::bytecode`] (the `.pyc` header, the rounding rule, the survey of a
//! root). Here the sources with no valid bytecode are compiled by the image's own interpreter, run like a server:
//! the same runner, libcontainer sandbox and default seccomp profile, no network (only its own loopback), no
//! capabilities, no host path but the staging root, which is writable for this run only. The run is killed after
//! [`TIME_LIMIT`]. A compile that fails or is killed leaves a root that works as the image has it (Python then
//! compiles at start, as it would without this step); the root's record is taken afterwards, so what the
//! interpreter wrote is covered by the tamper check like the rest of the tree.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::config::ImageRuntimeConfig;
use crate::rootfs::bytecode::{self, DirTimes, Survey};
use crate::rootfs::idmap::HostIds;
use crate::rootfs::{self, Finish, RootMeta, RootfsError};
use crate::sandbox::profile::NetworkMode;
use crate::sandbox::runs::RunDir;
use crate::sandbox::supervise::{self, RunEnd, ServerStdio, SupervisorArgs};
use crate::settings::RunRequest;

/// How long the image's interpreter may compile, per interpreter (killed after that: the sandbox's pid 1 dies,
/// and everything in it with it).
pub const TIME_LIMIT: Duration = Duration::from_secs(300);

/// What the interpreter runs (`python3.N -c DRIVER DIR…`): every directory of its `sys.path` and the ones given,
/// compiled to timestamp-based bytecode (whatever `SOURCE_DATE_EPOCH` says), errors silent (a source that does
/// not compile is compiled, and fails, at import as before). Prints the number of directories.
const DRIVER: &str = r#"import compileall, os, py_compile, sys
kw = {}
if hasattr(py_compile, "PycInvalidationMode"):
    kw["invalidation_mode"] = py_compile.PycInvalidationMode.TIMESTAMP
dirs = []
for d in [p for p in sys.path[1:] if p] + sys.argv[1:]:
    if os.path.isdir(d) and d not in dirs and not d.startswith(("/tmp", "/run", "/proc", "/sys", "/dev")):
        dirs.append(d)
for d in dirs:
    compileall.compile_dir(d, quiet=2, **kw)
print(len(dirs))
"#;

/// Environment variables of the image that would change where or how the bytecode is written (the server's own
/// start still sees them).
const DROPPED_ENV: &[&str] = &[
    "SOURCE_DATE_EPOCH",
    "PYTHONPYCACHEPREFIX",
    "PYTHONDONTWRITEBYTECODE",
];

/// The bytecode step, as a [`Finish`] of roots being built.
#[derive(Debug, Clone)]
pub struct Bytecode {
    exe: PathBuf,
    runs: StagingRuns,
}

/// Where and as whom the runs of one of the image's own programs on a staging root go (see [`staging_run`]).
#[derive(Debug, Clone)]
pub(super) struct StagingRuns {
    /// Their run directories' parent.
    pub dir: PathBuf,
    /// The cache's compiled seccomp programs.
    pub filters: crate::sandbox::filter::FilterCache,
    /// The invoking user's ids.
    pub host: HostIds,
}

impl StagingRuns {
    /// Runs in run directories under `runs_dir`, with the seccomp programs of the cache at `cache`.
    pub fn new(runs_dir: &Path, cache: &Path) -> StagingRuns {
        StagingRuns {
            dir: runs_dir.to_owned(),
            filters: crate::sandbox::filter::FilterCache::in_cache(cache),
            host: super::host_ids(),
        }
    }
}

impl Bytecode {
    /// The step for roots a run (or pull) by this user builds: `exe` is started as the runner (as for the
    /// server), in a run directory under `runs_dir`, with the seccomp programs kept in the cache at `cache`.
    pub fn new(exe: PathBuf, runs_dir: PathBuf, cache: &Path) -> Bytecode {
        Bytecode {
            exe,
            runs: StagingRuns::new(&runs_dir, cache),
        }
    }
}

/// The step when `on`, for a run started with `exe` as its runner, `runs_dir` as its run directories and the
/// cache at `cache`.
pub fn finisher(on: bool, exe: &Path, runs_dir: &Path, cache: &Path) -> Option<Bytecode> {
    on.then(|| Bytecode::new(exe.to_owned(), runs_dir.to_owned(), cache))
}

/// The step for a pull when `on` (its runner is this executable, as a run's is by default).
pub fn for_pull(
    on: bool,
    dirs: &crate::dirs::Dirs,
) -> Result<Option<Bytecode>, crate::dirs::DirsError> {
    Ok(match on {
        true => Some(Bytecode::new(
            PathBuf::from(super::SELF_EXE),
            dirs.runs()?,
            &dirs.cache,
        )),
        false => None,
    })
}

impl Finish for Bytecode {
    fn key_tag(&self) -> &str {
        bytecode::KEY_TAG
    }

    fn finish(&self, tree: &Path, runtime: &ImageRuntimeConfig) -> Result<(), RootfsError> {
        let io = |source| RootfsError::Io {
            path: tree.to_owned(),
            source,
        };
        let survey = bytecode::survey(tree, runtime).map_err(io)?;
        let rounded = bytecode::apply_rounding(tree, &survey).map_err(io)?;
        tracing::info!(
            "bytecode: {} timestamp-based .pyc, {} hash-based; {rounded} sources given the mtime their bytecode \
             records; {} sources without valid bytecode; interpreters {:?}",
            survey.pycs,
            survey.hash_based,
            survey.uncompiled,
            survey.interpreters
        );
        if survey.uncompiled == 0 || survey.interpreters.is_empty() {
            return Ok(());
        }
        let times = DirTimes::record(tree).map_err(io)?;
        for interpreter in &survey.interpreters {
            match self.compile(tree, runtime, interpreter, &survey) {
                Ok(()) => {}
                Err(why) => tracing::warn!(
                    "bytecode: {interpreter} could not compile the image's sources at unpack ({why}); Python \
                     compiles them at every start instead"
                ),
            }
        }
        times.restore(tree).map_err(io)?;
        Ok(())
    }
}

impl Bytecode {
    /// Runs `interpreter` (inside the root) over its `sys.path`, the image's working directory and the virtual
    /// environments found, in a sandbox whose root is the staging `tree`, writable.
    fn compile(
        &self,
        tree: &Path,
        runtime: &ImageRuntimeConfig,
        interpreter: &str,
        survey: &Survey,
    ) -> Result<(), String> {
        let mut image = runtime.clone();
        image.entrypoint = vec![interpreter.to_owned(), "-c".to_owned(), DRIVER.to_owned()];
        image.cmd = runtime
            .working_dir
            .iter()
            .filter(|w| !w.trim_matches('/').is_empty())
            .cloned()
            .chain(survey.venv_dirs.iter().cloned())
            .collect();
        image
            .env
            .retain(|e| !DROPPED_ENV.iter().any(|d| e.split('=').next() == Some(d)));
        let req = request(self.exe.clone());
        let (run_dir, plan, idmap) =
            staging_run(&req, &self.runs, tree, image, "bytecode", TIME_LIMIT)?;
        let (stdin, _) = pipe().map_err(|e| e.to_string())?;
        let (out_r, out_w) = pipe().map_err(|e| e.to_string())?;
        // The session's end pipe: its write end stays open until the compile is over (closing it ends the run).
        let (end_r, end_w) = pipe().map_err(|e| e.to_string())?;
        let outcome = supervise::supervise(SupervisorArgs {
            exe: req.exe.clone(),
            run_dir: &run_dir.path,
            plan: &plan,
            idmap: &idmap,
            secrets: &[],
            stop_timeout: req.stop_timeout,
            on_started: &mut |_| {},
            on_egress: &mut |_| {},
            on_dns: &mut |_| {},
            on_unreachable: &mut |_| {},
            server_stdio: ServerStdio::Port {
                stdin,
                stdout: out_w,
                end: end_r,
            },
        });
        drop(end_w);
        drop(run_dir);
        // Everything that could write to it is gone (the sandbox's pid namespace with its pid 1); what it printed
        // (one line; more would have blocked it until the time limit) is read without waiting.
        let printed = {
            let _ = nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&out_r),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let mut text = String::new();
            let _ = std::fs::File::from(out_r)
                .take(64 * 1024)
                .read_to_string(&mut text);
            text
        };
        match outcome.map_err(|e| e.to_string())? {
            RunEnd::Exited(0) => {
                tracing::info!(
                    "bytecode: {interpreter} compiled {} directories",
                    printed.trim()
                );
                Ok(())
            }
            RunEnd::Exited(code) if code == 128 + libc::SIGKILL => {
                Err(format!("stopped after {} s", TIME_LIMIT.as_secs()))
            }
            RunEnd::Exited(code) | RunEnd::OutOfMemory(code) => Err(format!("exit code {code}")),
            RunEnd::Stopped(code) => {
                Err(format!("stopped (we were asked to stop); exit code {code}"))
            }
            RunEnd::Failed(f) => Err(format!("{}: {}", f.stage, f.chain.join(": "))),
        }
    }
}

/// The request the compile runs under: the defaults of a server's (default seccomp profile, no network but
/// loopback, no mounts, no secrets), with `exe` as the runner.
pub(super) fn request(exe: PathBuf) -> RunRequest {
    RunRequest {
        image: String::new(),
        pull_policy: crate::distribution::PullPolicy::Never,
        registry_access: Default::default(),
        progress: Default::default(),
        args: None,
        env: Vec::new(),
        secrets: Vec::new(),
        mounts: Vec::new(),
        network: NetworkMode::None,
        egress: None,
        http: None,
        port: None,
        server_name: None,
        permissions: Default::default(),
        provenance: None,
        seccomp_profile: None,
        seccomp_override: None,
        stop_timeout: Duration::from_secs(2),
        tmp_mib: crate::sandbox::spec::DEFAULT_TMP_MIB,
        // The compile is bounded by its time limit; its sandbox gets no cgroup.
        limits: crate::sandbox::limits::Limits {
            memory: crate::sandbox::limits::Limit {
                value: None,
                source: crate::sandbox::limits::LimitSource::Default,
            },
            cpus: crate::sandbox::limits::Limit {
                value: None,
                source: crate::sandbox::limits::LimitSource::Default,
            },
            pids: crate::sandbox::limits::Limit {
                value: None,
                source: crate::sandbox::limits::LimitSource::Default,
            },
        },
        cache_dir: None,
        exe,
        timings: false,
        bytecode: false,
        verification: Default::default(),
        missing_env: Vec::new(),
        guard: crate::guard::GuardRequest::off(),
        package: None,
    }
}

/// Prepares a run of one of the image's own programs on the staging root `tree` (the bytecode compile, a package
/// install): as the sandbox's root, which the image's files belong to (the unpacker gave them to the ids it maps),
/// with the root writable, `time_limit`, and no name-server stub (nothing to report lookups to). On an error nothing
/// of the run is left.
pub(super) fn staging_run(
    req: &RunRequest,
    runs: &StagingRuns,
    tree: &Path,
    mut image: ImageRuntimeConfig,
    label: &str,
    time_limit: Duration,
) -> Result<
    (
        RunDir,
        crate::sandbox::runner::RunnerPlan,
        crate::rootfs::idmap::IdMap,
    ),
    String,
> {
    image.user = "0:0".to_owned();
    let user = rootfs::user::resolve(tree, &image.user).map_err(|e| e.to_string())?;
    let root = rootfs::Root {
        path: tree.to_owned(),
        meta: RootMeta {
            manifest_digest: String::new(),
            // No home is mounted: these programs need none.
            home_in_image: true,
            skipped_devices: 0,
            tree: None,
        },
        user,
        unpacked_now: true,
    };
    crate::dirs::private_dir(&runs.dir).map_err(|e| e.to_string())?;
    let run_dir = RunDir::create(&runs.dir).map_err(|e| e.to_string())?;
    let staged = super::Unpacked {
        digest: label.to_owned(),
        runtime: image,
        root,
        host: runs.host.clone(),
        filters: runs.filters.clone(),
    };
    let prepared = super::prepare_run(req, &run_dir, &staged, None)
        .map_err(|e| crate::chain::messages(&e).join(": "))
        .and_then(|(mut plan, idmap)| {
            plan.writable_root = true;
            plan.time_limit_ms = Some(time_limit.as_millis() as u64);
            plan.dns_stub = false;
            rewrite_for_writable_root(&run_dir.path, &plan).map_err(|e| e.to_string())?;
            Ok((plan, idmap))
        });
    match prepared {
        Ok((plan, idmap)) => Ok((run_dir, plan, idmap)),
        Err(e) => {
            run_dir.remove();
            Err(e)
        }
    }
}

/// The bundle's root made writable and the plan rewritten, for the compile's run only: the spec the server
/// gets always has a read-only root (`spec::check_invariants`).
pub(super) fn rewrite_for_writable_root(
    run_dir: &Path,
    plan: &crate::sandbox::runner::RunnerPlan,
) -> std::io::Result<()> {
    let config = plan.bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config)?).map_err(std::io::Error::other)?;
    spec["root"]["readonly"] = serde_json::Value::Bool(false);
    std::fs::write(
        &config,
        serde_json::to_vec(&spec).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(
        run_dir.join("plan.json"),
        serde_json::to_vec(plan).map_err(std::io::Error::other)?,
    )
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}
