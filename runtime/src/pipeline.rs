//! The pipeline behind `thv-sandbox run` (the order and its reasons are in the crate documentation).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::dirs::{Dirs, DirsError};
use crate::distribution::{self, PullError, PullOptions, PullPolicy};
use crate::idmap::{self, HostIds};
use crate::layout::{self, LayoutError, OciLayout, Platform};
use crate::reference::{Reference, ReferenceError};
use crate::rootfs::{self, RootfsError};
use crate::runner::RunnerPlan;
use crate::runs::{self, RunDir};
use crate::spec::{self, ImageRuntimeConfig, SpecError, SpecOptions};
use crate::supervise::{self, Launch, Outcome};
use crate::sync::{RunnerFailure, StartTimings};
use crate::verification::{self, Gate, Verification};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The image reference as the user wrote it: `oci:PATH[:TAG]` or a registry reference.
    pub image: String,
    /// When to contact the registry.
    pub pull_policy: PullPolicy,
    /// Registries (`HOST[:PORT]`) that may be reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Arguments after `--` (replace the image's Cmd).
    pub args: Option<Vec<String>>,
    /// Extra environment for the server.
    pub env: Vec<(String, String)>,
    /// Grace period between SIGTERM and SIGKILL when stopping the server.
    pub stop_timeout: Duration,
    /// Cache directory override.
    pub cache_dir: Option<PathBuf>,
    /// The executable to start as the runner (normally `/proc/self/exe`).
    pub exe: PathBuf,
    /// Print per-phase timings to stderr.
    pub timings: bool,
    /// Provenance verification: mode, policy, trust root. The default (no policy, no mode) warns that the image
    /// runs unverified.
    pub verification: Verification,
}

/// What happened, for the CLI.
#[derive(Debug)]
pub struct RunSummary {
    /// The server's exit code.
    pub exit_code: i32,
}

/// Everything `run` can fail with, gathered from the steps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference is not understood.
    #[error("`{0}` is not an image reference thv-sandbox understands")]
    BadReference(String),
    /// A registry reference is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Pulling from a registry failed.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// The verification settings are unusable (trust root file, policy).
    #[error("provenance verification: {0}")]
    Verification(#[from] thv_sandbox_provenance::Refusal),
    /// State or cache directory problems.
    #[error(transparent)]
    Dirs(#[from] DirsError),
    /// Reading the image.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Unpacking the image.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Building the runtime config.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Preparing the run directory.
    #[error("cannot prepare the run directory {path}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor itself failed.
    #[error("supervising the sandbox failed")]
    Supervise(#[source] std::io::Error),
    /// The runner could not create or start the sandbox.
    #[error("cannot create the sandbox: {} failed", .0.stage)]
    Sandbox(RunnerFailure),
    /// Not an error: a verify-only pull stopped at the gate, with what the gate decided.
    #[error("verification only")]
    VerifiedOnly(Option<verification::Outcome>),
}

impl Error {
    /// The causes to print under the error, outermost first (for runner failures, which cross a process boundary).
    pub fn remote_causes(&self) -> &[String] {
        match self {
            Error::Sandbox(f) => &f.chain,
            _ => &[],
        }
    }

    /// What the user can do about it.
    pub fn hint(&self, dirs: Option<&Dirs>) -> Option<String> {
        match self {
            Error::BadReference(_) | Error::Reference(_) => Some(
                "write a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image \
                 layout as `oci:PATH[:TAG]`"
                    .into(),
            ),
            Error::Pull(e) => e.hint(),
            Error::Verification(e) => Some(e.hint()),
            Error::Dirs(e) => Some(e.hint()),
            Error::Layout(LayoutError::TagNotFound { .. }) => {
                Some("pick one of the tags listed above".into())
            }
            Error::Spec(SpecError::NoCommand) => {
                Some("give the command after `--`: thv-sandbox run IMAGE -- CMD ARGS…".into())
            }
            Error::Sandbox(f)
                if f.chain.iter().any(|c| c.contains("invalid executable") || c.contains("not found in $PATH")) =>
            Some(
                "the image's Entrypoint/Cmd (or the command after `--`) names a program that is not in the image or \
                 not executable"
                    .into(),
            ),
            Error::Sandbox(_) | Error::Supervise(_) => {
                let dirs = dirs.cloned().or_else(|| Dirs::from_env(None).ok())?;
                let report = crate::doctor::diagnose(&crate::doctor::DoctorInputs {
                    state_dir: dirs.state,
                    cache_dir: dirs.cache,
                });
                Some(crate::doctor::hint_for_sandbox_failure(&report))
            }
            _ => None,
        }
    }
}

/// Runs the pipeline for `req`; returns the server's exit code.
pub fn run(req: &RunRequest, dirs: &Dirs) -> Result<RunSummary, Error> {
    let t_start = Instant::now();
    let runs_dir = dirs.runs()?;
    runs::collect_stale(&runs_dir);

    // 1. resolve + 2. fetch manifest: the reference becomes a digest; manifest and config are checked on the way.
    let (oci, image) = resolve(req, dirs)?;

    // 3. verify: provenance verification plugs in here, before any layer is read (for registry images, `pull`
    //    calls its hook before fetching layers). Until it lands, images run unverified; their manifest digest is
    //    pinned from here on.

    // 4. unpack (or reuse the cached root for this digest and id-mapping mode).
    let runtime = runtime_config(&image.config);
    let host = HostIds {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        subids: idmap::detect_subids(nix::unistd::geteuid().as_raw()),
    };
    let planned = idmap::plan(&host, 0, 0);
    let root = rootfs::ensure(
        &dirs.cache,
        &oci,
        &image,
        &runtime,
        planned.mode,
        planned.unpack_ownership(),
    )?;
    let t_image = t_start.elapsed();

    // 5. spec: a pure function of image config, profile and options.
    let run_dir = RunDir::create(&runs_dir).map_err(|source| Error::RunDir {
        path: runs_dir.clone(),
        source,
    })?;
    let prepared = prepare_run(
        req,
        &run_dir,
        &image.manifest_digest.to_string(),
        &runtime,
        &root,
        &host,
    );
    let (plan, idmap) = match prepared {
        Ok(p) => p,
        Err(e) => {
            run_dir.remove();
            return Err(e);
        }
    };
    let t_spec = t_start.elapsed();

    // 6. network + 7. run: the runner creates the namespaces (lo up) and the container; we supervise.
    let timings = req.timings;
    let mut on_started = |t: &StartTimings| {
        if timings {
            eprintln!(
                "thv-sandbox: timings: image {:.1} ms, spec {:.1} ms, runner namespaces {:.1} ms, create {:.1} ms, start {:.1} ms, to exec {:.1} ms",
                t_image.as_secs_f64() * 1e3,
                (t_spec - t_image).as_secs_f64() * 1e3,
                t.namespaces_us as f64 / 1e3,
                t.create_us as f64 / 1e3,
                t.start_us as f64 / 1e3,
                t_start.elapsed().as_secs_f64() * 1e3,
            );
        }
    };
    let outcome = supervise::supervise(Launch {
        exe: req.exe.clone(),
        run_dir: &run_dir.path,
        plan: &plan,
        idmap: &idmap,
        stop_timeout: req.stop_timeout,
        on_started: &mut on_started,
    });
    // The lock goes with our process; the runner holds its own copy until it is gone.
    drop(run_dir);
    match outcome.map_err(Error::Supervise)? {
        Outcome::Exited(code) => Ok(RunSummary { exit_code: code }),
        Outcome::Failed(f) => Err(Error::Sandbox(f)),
    }
}

/// Steps 1 and 2: an OCI layout on disk, or a registry image pulled into the cache (which is itself a layout).
fn resolve(req: &RunRequest, dirs: &Dirs) -> Result<(OciLayout, layout::ResolvedImage), Error> {
    if req.image.starts_with("oci:") {
        let (path, tag) = layout::parse_oci_ref(&req.image)?;
        let oci = OciLayout::open(&path)?;
        let image = oci.resolve(tag.as_deref(), &Platform::host())?;
        // A layout on disk has no registry to find evidence at: only stored evidence or a record can verify it.
        let gate = Gate::new(&req.verification, &dirs.cache)?;
        gate.decide(
            &req.image,
            image.index_digest.as_ref(),
            &image.manifest_digest,
            None,
        )
        .map_err(|reason| {
            Error::Pull(PullError::Verification {
                reference: req.image.clone(),
                reason,
            })
        })?;
        return Ok((oci, image));
    }
    if req.image.contains("://") {
        return Err(Error::BadReference(req.image.clone()));
    }
    let (pulled, _) = pull_verified(
        &req.image,
        req.pull_policy,
        &req.insecure_registries,
        dirs,
        &req.verification,
        false,
    )?;
    Ok(pulled.open(&Platform::host())?)
}

/// Pulls a registry image with provenance verification before any layer is fetched; returns what the gate
/// decided. With `verify_only`, no layer is fetched at all (`thv-sandbox verify IMAGE`): the pull stops at the
/// gate, and the outcome says what was decided.
pub fn pull_verified(
    image: &str,
    policy: PullPolicy,
    insecure: &[String],
    dirs: &Dirs,
    verification: &Verification,
    verify_only: bool,
) -> Result<(distribution::Pulled, Option<verification::Outcome>), Error> {
    let reference: Reference = image.parse()?;
    crate::dirs::private_dir(&dirs.cache)?;
    let gate = Gate::new(verification, &dirs.cache)?;
    let mut opts = PullOptions::from_env(&dirs.cache);
    opts.policy = policy;
    opts.insecure = insecure.to_vec();
    opts.discover = gate.discovery();
    // Under `enabled`, a cached image whose evidence is not on hand is resolved at the registry again to find it.
    // Under `warn` it is not: a cached image must keep running offline, with the warning.
    let on_hand = |d: &crate::digest::Digest| gate.on_hand(d);
    if gate.mode() == verification::Mode::Enabled {
        opts.evidence_on_hand = Some(&on_hand);
    }
    let check = |input: &distribution::VerifyInput<'_>| {
        gate.check(input)?;
        if verify_only {
            return Err(VERIFY_ONLY.to_string());
        }
        Ok(())
    };
    opts.verify = Some(&check);
    match distribution::pull(&reference, &opts) {
        Ok(pulled) => Ok((pulled, gate.outcome())),
        Err(PullError::Verification { .. }) if verify_only => {
            Err(Error::VerifiedOnly(gate.outcome()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The reason a verify-only pull stops at the gate.
const VERIFY_ONLY: &str = "(verification only: no layer is fetched)";

/// Pulls a registry image into the cache (`thv-sandbox pull`, and `run` of a registry reference).
pub fn pull(
    image: &str,
    policy: PullPolicy,
    insecure: &[String],
    dirs: &Dirs,
) -> Result<distribution::Pulled, Error> {
    let reference: Reference = image.parse()?;
    crate::dirs::private_dir(&dirs.cache)?;
    let mut opts = PullOptions::from_env(&dirs.cache);
    opts.policy = policy;
    opts.insecure = insecure.to_vec();
    Ok(distribution::pull(&reference, &opts)?)
}

/// Writes the bundle, the generated /etc files and the runner plan into the run directory.
fn prepare_run(
    req: &RunRequest,
    run_dir: &RunDir,
    digest: &str,
    runtime: &ImageRuntimeConfig,
    root: &rootfs::Root,
    host: &HostIds,
) -> Result<(RunnerPlan, idmap::IdMap), Error> {
    let io = |path: PathBuf| move |source| Error::RunDir { path, source };
    let dir = &run_dir.path;
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).map_err(io(etc.clone()))?;
    let hostname = hostname_for(digest);
    for (name, text) in spec::etc_files(&hostname) {
        std::fs::write(etc.join(name), text).map_err(io(etc.join(name)))?;
    }
    let netns = dir.join("netns");
    std::fs::write(&netns, b"").map_err(io(netns.clone()))?;
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).map_err(io(bundle.clone()))?;
    let cgroups_path = format!("/thv-sandbox-{}", run_dir.id);
    if let Some(host_cg) = host_cgroup_dir(&cgroups_path) {
        let _ = std::fs::write(dir.join("cgroup"), host_cg.to_string_lossy().as_bytes());
    }
    let (nofile, nproc) = limits();
    let opts = SpecOptions {
        rootfs: root.path.clone(),
        user: root.user.clone(),
        home_in_image: root.meta.home_in_image,
        args: req.args.clone(),
        env: req.env.clone(),
        hostname,
        etc_dir: etc,
        netns: netns.clone(),
        cgroups_path: cgroups_path.clone(),
        seccomp: sandbox_profiles::default_seccomp().to_oci(),
        nofile,
        nproc,
    };
    let spec = spec::build(runtime, &opts)?;
    spec::check_invariants(&spec).map_err(|e| Error::Spec(SpecError::Invalid(e)))?;
    let config = bundle.join("config.json");
    let json =
        serde_json::to_vec(&spec).map_err(|e| Error::Spec(SpecError::Invalid(e.to_string())))?;
    std::fs::write(&config, json).map_err(io(config.clone()))?;
    let plan = RunnerPlan {
        id: run_dir.id.clone(),
        bundle,
        state_root: dir.join("state"),
        netns,
        cgroups_path,
        rootfs: root.path.clone(),
        run_dir: dir.clone(),
        supervisor_pid: std::process::id() as i32,
        stop_timeout_ms: req.stop_timeout.as_millis() as u64,
    };
    let plan_path = dir.join("plan.json");
    let plan_json =
        serde_json::to_vec(&plan).map_err(|e| Error::Spec(SpecError::Invalid(e.to_string())))?;
    std::fs::write(&plan_path, plan_json).map_err(io(plan_path.clone()))?;
    Ok((plan, idmap::plan(host, root.user.uid, root.user.gid)))
}

/// The parts of the image config the spec uses.
pub fn runtime_config(config: &oci_spec::image::ImageConfiguration) -> ImageRuntimeConfig {
    let c = config.config().clone().unwrap_or_default();
    ImageRuntimeConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone(),
        volumes: c
            .volumes()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        user: c.user().clone().unwrap_or_default(),
    }
}

fn hostname_for(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    format!("thv-{}", &hex[..hex.len().min(12)])
}

/// NOFILE: up to 65536 within what we may set; NPROC: up to 8192 (it counts every process of the host user).
fn limits() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, Resource};
    let cap = |r, want: u64| getrlimit(r).map(|(_, hard)| hard.min(want)).unwrap_or(want);
    (
        cap(Resource::RLIMIT_NOFILE, 65_536),
        cap(Resource::RLIMIT_NPROC, 8_192),
    )
}

/// The host path of the sandbox's cgroup if it gets one (the unified hierarchy, below our own cgroup).
fn host_cgroup_dir(cgroups_path: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim()
        .to_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })?;
    Some(
        PathBuf::from(mount)
            .join(rel.trim_start_matches('/'))
            .join(cgroups_path.trim_start_matches('/')),
    )
}
