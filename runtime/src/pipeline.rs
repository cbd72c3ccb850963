//! The pipeline behind `thv-sandbox run` (the order and its reasons are in the crate documentation).

pub mod bytecode;
pub mod packages;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::dirs::{Dirs, DirsError};
use crate::distribution::{self, PullError, PullOptions, PullPolicy, RegistryAccess};
use crate::image::config::ImageRuntimeConfig;
use crate::image::layout::{self, LayoutError, OciLayout, Platform};
use crate::image::reference::{Reference, ReferenceError};
use crate::report::{Event, Reporter, RunTimings};
use crate::rootfs::idmap::{self, HostIds};
use crate::rootfs::{self, RootfsError};
use crate::sandbox::bridge::{self, BridgeEnd, PortUpstream, SandboxConnect, StdioBridgeEnd};
use crate::sandbox::filter::FilterCache;
use crate::sandbox::profile::{MountError, NetworkMode};
use crate::sandbox::runner::{OverlayPlan, RunnerPlan};
use crate::sandbox::runs::{self, RunDir};
use crate::sandbox::spec::{self, SpecError, SpecOptions};
use crate::sandbox::supervise::{self, RunEnd, ServerStdio, SupervisorArgs};
use crate::sandbox::sync::{RunnerFailure, StartTimings};
use crate::settings::RunRequest;
use crate::trust::verification::{self, Gate, Verification};

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
    /// The verification gate refused the image (nothing of it was fetched).
    #[error(transparent)]
    Refused(#[from] verification::Refused),
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
    /// Mounts or network settings.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The seccomp variant or the user's override file cannot be used.
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    /// `--port` or `--socket` cannot be served (the message names which).
    #[error("{0}")]
    Port(String),
    /// A resource limit the user asked for cannot be enforced on this host.
    #[error(transparent)]
    Limits(#[from] crate::sandbox::cgroup::Unenforceable),
    /// The sandbox's cgroup could not be made for a limit the user asked for.
    #[error(
        "the sandbox's cgroup for the limits you asked for ({limits}): {reason}; {}",
        crate::sandbox::cgroup::DOCTOR_HINT
    )]
    Cgroup {
        /// The limits.
        limits: String,
        /// What failed.
        reason: String,
    },
    /// The egress rules cannot be used.
    #[error("network permissions: {0}")]
    Egress(String),
    /// The secret environment does not fit the runner channel.
    #[error("the secret environment variables are too large ({0} bytes together)")]
    SecretsTooLarge(usize),
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
    /// The image names a user or group the sandbox must not run as (unmapped, or host root).
    #[error("refusing to run this image: {0}")]
    UnsafeUser(#[from] idmap::UnsafeId),
    /// The runner could not create or start the sandbox.
    #[error("cannot create the sandbox: {} failed", .0.stage)]
    Sandbox(RunnerFailure),
    /// The guard of the MCP conversation cannot be set up.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
}

impl Error {
    /// The causes to print under the error, outermost first (for runner failures, which cross a process boundary).
    pub fn remote_causes(&self) -> &[String] {
        match self {
            Error::Sandbox(f) => &f.chain,
            _ => &[],
        }
    }

    /// What the user can do about it. Pure: for [`Error::Sandbox`] and [`Error::Supervise`] (`None` here) the
    /// CLI runs the doctor's checks, whose findings are the hint ([`Error::wants_doctor`]).
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::BadReference(_) | Error::Reference(_) => Some(
                "write an OCI image reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image \
                 layout as `oci:PATH[:TAG]`"
                    .into(),
            ),
            Error::Pull(e) => e.hint(),
            Error::Guard(e) => e.hint(),
            Error::Refused(e) => Some(e.hint.clone()),
            Error::Verification(e) => Some(e.hint()),
            Error::Dirs(e) => Some(e.hint()),
            Error::Mount(e) => Some(e.hint()),
            Error::Rootfs(e) => e.hint(),
            Error::Limits(_) => Some(format!(
                "{}; to run without that limit, leave it out (a default that cannot be enforced is only warned \
                 about) or give `unlimited`",
                crate::sandbox::cgroup::DOCTOR_HINT
            )),
            Error::Seccomp(_) => Some(format!(
                "variants are {}; an override file adds `groups` and `remove`s rules (see SECURITY.md)",
                sandbox_profiles::variant_names().join(", ")
            )),
            Error::UnsafeUser(_) => Some(
                "the image's `User` (or its /etc/passwd entry) names an id outside the range thv-sandbox maps; an \
                 image for it must use a user and group below 65536 (see SECURITY.md, id mapping)"
                    .into(),
            ),
            Error::SecretsTooLarge(_) => {
                Some("secret values are meant for tokens and keys: keep them under 60 KiB together".into())
            }
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
            _ => None,
        }
    }

    /// Whether the sandbox could not be created or supervised, and [`Error::hint`] gave no hint: the host's
    /// checks (`thv-sandbox doctor`) say what to fix.
    pub fn wants_doctor(&self) -> bool {
        matches!(self, Error::Sandbox(_) | Error::Supervise(_)) && self.hint().is_none()
    }

    /// The exit code: [`crate::EXIT_REFUSED`] for an image verification refused, [`crate::EXIT_USAGE`] for a
    /// reference that is not one, else [`crate::EXIT_SANDBOX_ERROR`].
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Refused(_) => crate::EXIT_REFUSED,
            Error::BadReference(_) | Error::Reference(_) => crate::EXIT_USAGE,
            _ => crate::EXIT_SANDBOX_ERROR,
        }
    }
}

/// Runs the pipeline for `req`; returns the server's exit code. What there is to say on the way (warnings, pull
/// progress, the bridge's lines, `--timings`) goes to `reporter`.
pub fn run(
    req: &RunRequest,
    dirs: &Dirs,
    reporter: Arc<dyn Reporter>,
) -> Result<RunSummary, Error> {
    let t_start = Instant::now();
    crate::trace::mark("pipeline");
    // Stale run directories of crashed runs are collected first (never one still being created: see `runs`).
    let runs_dir = dirs.runs()?;
    runs::collect_stale(&runs_dir);
    // Limits: decided before anything is pulled (an explicit limit this host cannot enforce is refused here).
    let decision = limits_decision(req)?;
    // No sandbox sees the cache or the state dir, even through a mount of a directory holding them (F4).
    let shielded;
    let req = if req.mounts.is_empty() {
        req
    } else {
        let empty = dirs.state.join("empty");
        crate::dirs::private_dir(&empty)?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let private = crate::sandbox::profile::private_paths(dirs, home.as_deref());
        if crate::sandbox::profile::writes_around(&req.mounts, &private) {
            // From now on every cached root is checked before use (see `rootfs::mark_exposed`).
            rootfs::mark_exposed(&dirs.cache)?;
        }
        shielded = RunRequest {
            mounts: crate::sandbox::profile::shield(&req.mounts, &private, &empty)?,
            ..req.clone()
        };
        &shielded
    };

    let name = ImageName::parse(&req.image)?;
    crate::dirs::private_root(&dirs.cache)?;
    if let Some(p) = &req.package {
        packages::check_mode(p)?;
    }
    // The trust root is loaded (refreshed when due) before any network work.
    let gate = new_gate(&req.verification, dirs, &*reporter)?;
    reporter.report(Event::PullStarted);
    let host = host_ids();
    let planned = idmap::plan(&host, 0, 0);
    let target = distribution::UnpackTarget {
        mode: planned.mode,
        ownership: planned.unpack_ownership(),
    };
    let mut opts = pull_options(
        req.pull_policy,
        &req.registry_access,
        dirs,
        &*reporter,
        Some(target),
    );
    // The bytecode step finishes a root this run builds (its name says so).
    let finish = bytecode::finisher(
        req.bytecode && req.package.is_none(),
        &req.exe,
        &runs_dir,
        &dirs.cache,
    );
    opts.finish = finish.as_ref().map(|f| f as &dyn rootfs::Finish);
    // `npx://` / `uvx://`: the package is installed onto the base image's root instead (pipeline::packages).
    let install = packages::installer(req, &runs_dir, &dirs.cache);
    if let Some(i) = &install {
        opts.finish = Some(i as &dyn rootfs::Finish);
    }
    let abandon = |e| {
        reporter.report(Event::PullAbandoned);
        e
    };

    // 1. resolve: the reference becomes this platform's manifest digest; manifest and config are fetched (or read
    //    from the cache or the layout) and checked. No layer is fetched. Everything after uses these digests.
    let resolved = resolve(&name, &opts, &gate).map_err(abandon)?;
    crate::trace::mark("resolved");
    // 2. discover evidence: at the registry, through the connection of step 1 (nothing for an image from the cache
    //    or a layout on disk: stored evidence or a record decides those).
    let evidence = discover(&resolved, &gate);
    // 3. decide: the verification gate, before anything of a layer is fetched or unpacked; a refusal ends here.
    decide(&resolved, evidence.as_ref(), &gate, &*reporter)
        .admit(&resolved.name())
        .map_err(|e| abandon(e.into()))?;
    // What the sandbox relies on in the image config (volumes, environment) is checked before any layer.
    spec::check_image_config(&ImageRuntimeConfig::from_image(resolved.config()))
        .map_err(|e| abandon(e.into()))?;
    // 4. fetch layers and unpack them while they stream, into the root a run by this user uses (the root's lock
    //    is taken before any download, so concurrent first pulls share one download and one unpack).
    let fetched = fetch_and_unpack(resolved, &opts)
        .map_err(|e| packages::refusal(install.as_ref(), e))
        .map_err(abandon)?;
    // 5. commit: only now does the cache name the image (by its pinned digest: no tag is resolved again). The
    //    root is then loaded, or unpacked from the cache for an image that was there already.
    let (oci, image, downloaded) = commit(fetched, &*reporter).map_err(abandon)?;
    crate::trace::mark("verified, committed");
    // A start that had to download, launched by a program (an MCP client) rather than typed: its start-up
    // timeout covered the download. One line, only then (and never under `--quiet`).
    if downloaded
        && req.progress != crate::report::ProgressMode::Quiet
        && !std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        reporter.report(Event::Note(&prepull_hint(req)));
    }
    let runtime = ImageRuntimeConfig::from_image(&image.config);
    let root = rootfs::ensure_with(
        &dirs.cache,
        &oci,
        &image,
        &runtime,
        target.mode,
        target.ownership,
        opts.finish,
    )
    .map_err(|e| packages::refusal(install.as_ref(), e.into()))?;
    let runtime = packages::installed(install.as_ref(), &root, runtime, &*reporter)?;
    let t_image = t_start.elapsed();
    crate::trace::mark("root found");
    check_secrets(req)?;
    let relayable = req.relayable();
    crate::guard::check_supported(&req.guard, relayable)?;
    let unpacked = Unpacked {
        digest: image.manifest_digest.to_string(),
        runtime,
        root,
        host,
        filters: FilterCache::in_cache(&dirs.cache),
    };
    if let (Some(expose), None) = (&req.port, req.http) {
        // `--port` with a stdio server: steps 6 to 8 for each MCP session, in a fresh sandbox.
        return serve_sessions(
            req,
            expose,
            &runs_dir,
            &unpacked,
            &say(&reporter),
            &decision,
            &*reporter,
        );
    }

    // The limits a default could not get are said once the sandbox is about to start, not before an error that
    // ends the run earlier (a bad reference, a refused or unreachable image).
    if let Some(w) = &decision.warning {
        reporter.report(Event::Warning(w));
    }
    // 6. spec: a pure function of image config, profile and options.
    let run_dir = RunDir::create(&runs_dir).map_err(|source| Error::RunDir {
        path: runs_dir.clone(),
        source,
    })?;
    let prepared = prepare_run(req, &run_dir, &unpacked, Some((&decision, &*reporter)));
    let (plan, idmap) = match prepared {
        Ok(p) => p,
        Err(e) => {
            run_dir.remove();
            return Err(e);
        }
    };
    let t_spec = t_start.elapsed();
    crate::trace::mark("spec written");

    // 7. network + 8. supervise: the runner creates the namespaces (lo up) and the container; we supervise.
    let timings = req.timings;
    let mut on_started = |t: &StartTimings| {
        crate::trace::mark("supervisor: started");
        if timings {
            reporter.report(Event::Timings(&RunTimings {
                image: t_image,
                spec: t_spec - t_image,
                namespaces: std::time::Duration::from_micros(t.namespaces_us),
                create: std::time::Duration::from_micros(t.create_us),
                start: std::time::Duration::from_micros(t.start_us),
                to_exec: t_start.elapsed(),
            }));
        }
    };
    // `--port`/`--socket` (an HTTP server here; a stdio server is served by `serve_sessions`): the listeners are
    // bound before the sandbox starts (a taken port is an error, not a dead server); the socket file goes when
    // this function returns. The server is reached through the socket factory.
    let (mut exposed, _socket_file) = match &req.port {
        Some(expose) => {
            let (listening, file) =
                bridge::access::listen(expose).map_err(|e| Error::Port(e.to_string()))?;
            (Some(listening), file)
        }
        None => (None, None),
    };
    let say = say(&reporter);
    // An HTTP server: exposed on `--port`, or bridged to our stdio (whose end says how the run went).
    let bridge_end = StdioBridgeEnd::default();
    let mut on_factory = req.http.map(|(transport, port)| {
        let (say, bridge_end) = (say.clone(), bridge_end.clone());
        let exposed = &mut exposed;
        move |factory| {
            let connect = SandboxConnect { factory, port };
            match exposed.take() {
                Some(listening) => bridge::spawn_port_server(
                    listening,
                    PortUpstream::Http { transport, connect },
                    say.clone(),
                ),
                None => {
                    bridge::spawn_stdio_bridge(transport, connect, bridge_end.clone(), say.clone())
                }
            }
        }
    });
    // A stdio server with a guard feature on: its stdio is relayed through the guard (see `guard`).
    let server = req.pin_name();
    let digest = image.manifest_digest.to_string();
    let mut guarded = crate::guard::start(
        &req.guard,
        relayable,
        server,
        &digest,
        &dirs.cache,
        &reporter,
    )?;
    let server_stdio = match (on_factory.as_mut(), guarded.as_mut()) {
        (Some(on_factory), _) => ServerStdio::Http { on_factory },
        (None, Some(guarded)) => guarded.server_stdio(),
        (None, None) => ServerStdio::Inherit,
    };
    // Served from here (the host's network namespace) until the sandbox ends.
    let mut egress: Option<crate::sandbox::egress::EgressHandle> = None;
    let mut nameserver = None;
    let mut unreachable = None;
    let outcome = supervise::supervise(SupervisorArgs {
        exe: req.exe.clone(),
        run_dir: &run_dir.path,
        plan: &plan,
        idmap: &idmap,
        secrets: &req.secrets,
        stop_timeout: req.stop_timeout,
        on_started: &mut on_started,
        on_egress: &mut |listener| serve_egress(req, &say, listener, &mut egress),
        on_dns: &mut |socket| serve_dns(req, &say, socket, &mut nameserver),
        on_unreachable: &mut |device| serve_unreachable(req, &say, device, &mut unreachable),
        server_stdio,
    });
    // The lock goes with our process; the runner holds its own copy until it is gone.
    drop(run_dir);
    drop(egress);
    // Say their summaries of refused lookups and connections, if any.
    drop(nameserver);
    drop(unreachable);
    let guard_closed = guarded.is_some_and(|g| g.finish());
    match outcome.map_err(Error::Supervise)? {
        // The client closed the bridge (or the guard's relay) and we stopped the server for it: a normal end.
        RunEnd::Exited(code) | RunEnd::Stopped(code)
            if code == 128 + libc::SIGTERM
                && (bridge_end.get() == Some(BridgeEnd::ClientClosed) || guard_closed) =>
        {
            Ok(RunSummary { exit_code: 0 })
        }
        RunEnd::Exited(_) | RunEnd::Stopped(_) if bridge_end.get() == Some(BridgeEnd::Failed) => {
            Ok(RunSummary {
                exit_code: crate::EXIT_SANDBOX_ERROR,
            })
        }
        RunEnd::Exited(code) | RunEnd::Stopped(code) => Ok(RunSummary { exit_code: code }),
        RunEnd::OutOfMemory(code) => {
            reporter.report(Event::Warning(&crate::sandbox::cgroup::oom_message(
                decision.enforced.memory.value,
            )));
            Ok(RunSummary { exit_code: code })
        }
        RunEnd::Failed(f) => Err(Error::Sandbox(f)),
    }
}

/// What of the request's limits this host enforces, and how (see [`crate::sandbox::cgroup`]).
pub fn limits_decision(req: &RunRequest) -> Result<crate::sandbox::cgroup::Decision, Error> {
    use crate::sandbox::cgroup;
    let choice = cgroup::choose(&cgroup::HostFacts::gather());
    Ok(cgroup::decide(&choice, &req.limits)?)
}

/// Makes the sandbox's cgroup as decided (the systemd scope is asked for at the start of `prepare_run` and taken
/// once the keeper reports: see `supervise`), and records its directories in the run directory for the collection
/// of stale runs. A cgroup that cannot be made refuses the run when a limit is explicit, and is warned about when
/// not.
fn plan_cgroup(
    decision: &crate::sandbox::cgroup::Decision,
    reporter: &dyn Reporter,
    run_dir: &RunDir,
    child: &str,
) -> Result<Option<crate::sandbox::cgroup::PlannedCgroup>, Error> {
    use crate::sandbox::cgroup::{self, CgroupPlan, PlannedCgroup, Route};
    let Some(route) = &decision.route else {
        return Ok(None);
    };
    let limits = decision.enforced;
    if *route == Route::SystemdScope {
        return Ok(Some(PlannedCgroup {
            plan: CgroupPlan::BesideKeeper,
            limits,
        }));
    }
    match cgroup::prepare(route, &run_dir.id, &limits) {
        Ok(dirs) => {
            // Deepest first: libcontainer's cgroup inside ours (cgroup v2), then ours.
            let mut record = String::new();
            for d in &dirs {
                record.push_str(&format!("{}\n", d.join(child).display()));
                record.push_str(&format!("{}\n", d.join(cgroup::INIT_LEAF).display()));
            }
            for d in &dirs {
                record.push_str(&format!("{}\n", d.display()));
            }
            // After libcontainer's own line (written first), so the collection removes it first.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run_dir.path.join("cgroup"))
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, format!("\n{record}").as_bytes())
                });
            Ok(Some(PlannedCgroup {
                plan: CgroupPlan::Dirs(dirs),
                limits,
            }))
        }
        Err((made, e)) => {
            cgroup::remove(&made, child);
            let explicit = [
                limits.memory.value.is_some() && limits.memory.source.explicit(),
                limits.cpus.value.is_some() && limits.cpus.source.explicit(),
                limits.pids.value.is_some() && limits.pids.source.explicit(),
            ];
            if explicit.iter().any(|e| *e) {
                return Err(Error::Cgroup {
                    limits: limits.describe(),
                    reason: e.to_string(),
                });
            }
            reporter.report(Event::Warning(&format!(
                "no resource limits for this server: making its cgroup failed: {e}; {}",
                cgroup::DOCTOR_HINT
            )));
            Ok(None)
        }
    }
}

/// Where the bridge threads' (and the egress proxy's, the name server's, the sessions') lines go: `reporter`.
fn say(reporter: &Arc<dyn Reporter>) -> bridge::Say {
    let reporter = Arc::clone(reporter);
    Arc::new(move |line: &str| reporter.report(Event::Note(line)))
}

/// Serves the egress proxy on `listener` (made by the runner in the sandbox's network namespace), when the request
/// has rules for it; `egress` keeps it until the sandbox is gone.
fn serve_egress(
    req: &RunRequest,
    say: &bridge::Say,
    listener: std::net::TcpListener,
    egress: &mut Option<crate::sandbox::egress::EgressHandle>,
) {
    let Ok(Some(rules)) = egress_rules(req) else {
        return;
    };
    let log = say.clone();
    match crate::sandbox::egress::spawn(listener, rules, move |line| log(line)) {
        Ok(handle) => *egress = Some(handle),
        Err(e) => say(&format!("the egress proxy could not start: {e}")),
    }
}

/// Answers the sandbox's name server socket (made by the runner in its network namespace): every lookup refused
/// and reported (see [`crate::sandbox::nameserver`]); `nameserver` keeps it until the sandbox is gone.
fn serve_dns(
    req: &RunRequest,
    say: &bridge::Say,
    socket: std::net::UdpSocket,
    nameserver: &mut Option<crate::sandbox::nameserver::NameServer>,
) {
    let log = say.clone();
    match crate::sandbox::nameserver::spawn(socket, refusal_why(req), move |line| log(line)) {
        Ok(ns) => *nameserver = Some(ns),
        Err(e) => say(&format!("the sandbox's name server could not start: {e}")),
    }
}

/// Why the sandbox refuses lookups and connections: it has no network, or only the egress proxy's.
fn refusal_why(req: &RunRequest) -> crate::sandbox::refusals::Why {
    use crate::sandbox::refusals::Why;
    match egress_rules(req) {
        Ok(Some(_)) => Why::ProxyOnly,
        _ => Why::NoNetwork,
    }
}

/// Answers the sandbox's default route (a TUN device the runner made in its network namespace): every connection
/// refused and reported (see [`crate::sandbox::unreachable`]); `unreachable` keeps it until the sandbox is gone.
fn serve_unreachable(
    req: &RunRequest,
    say: &bridge::Say,
    device: std::fs::File,
    unreachable: &mut Option<crate::sandbox::unreachable::Unreachable>,
) {
    let log = say.clone();
    match crate::sandbox::unreachable::spawn(device, refusal_why(req), move |line| log(line)) {
        Ok(u) => *unreachable = Some(u),
        Err(e) => say(&format!(
            "the sandbox's default route could not be served: {e}"
        )),
    }
}

/// The secret variables must fit the runner channel and be passable to `execve`.
fn check_secrets(req: &RunRequest) -> Result<(), Error> {
    let secrets_size: usize = req
        .secrets
        .iter()
        .map(|s| s.name.len() + s.expose().len() + 16)
        .sum();
    if secrets_size > crate::sandbox::sync::MAX_MESSAGE - 4096 {
        return Err(Error::SecretsTooLarge(secrets_size));
    }
    if let Some(bad) = req
        .secrets
        .iter()
        .find(|s| s.name.is_empty() || s.name.contains(['=', '\0']) || s.expose().contains('\0'))
    {
        return Err(Error::Spec(SpecError::BadEnv(format!(
            "`{}`",
            bad.name.escape_debug()
        ))));
    }
    Ok(())
}

/// An image ready to run (after step 5).
pub(super) struct Unpacked {
    digest: String,
    runtime: ImageRuntimeConfig,
    root: rootfs::Root,
    host: HostIds,
    filters: FilterCache,
}

/// `--port`/`--socket` with a stdio server. One stdio server holds one MCP session, so each session gets a fresh
/// server in a fresh sandbox: steps 6 to 8 per session, the image resolved, verified and unpacked once before. The
/// HTTP server (its own thread) asks for a server through a [`SessionLauncher`] when a client initializes, and
/// ends the session (closing the server's stdin and the session's end pipe) on `DELETE` or when a newer
/// `initialize` replaces it. Sessions run one at a time, supervised here, on the calling thread, which takes the
/// signals between sessions (the supervisor takes them during one). SIGTERM, SIGINT or SIGHUP ends the run (and
/// the live session's server) with exit code 0: a server that serves sessions ends normally when asked to.
fn serve_sessions(
    req: &RunRequest,
    expose: &bridge::Expose,
    runs_dir: &std::path::Path,
    image: &Unpacked,
    say: &bridge::Say,
    decision: &crate::sandbox::cgroup::Decision,
    reporter: &dyn Reporter,
) -> Result<RunSummary, Error> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // Bound before anything runs (a taken port is an error at once); the socket file goes when we return.
    let (listening, _socket_file) =
        bridge::access::listen(expose).map_err(|e| Error::Port(e.to_string()))?;
    let set = crate::sandbox::runner::handled_signals();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| Error::Supervise(e.into()))?;
    let served = (|| -> Result<RunSummary, Error> {
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| Error::Supervise(e.into()))?;
        let (launcher, requests, wake) =
            SessionLauncher::new().map_err(|e| Error::Port(format!("--port: {e}")))?;
        bridge::spawn_port_server(
            listening,
            bridge::PortUpstream::PerSession(std::sync::Arc::new(launcher)),
            say.clone(),
        );
        let mut sessions = 0u64;
        loop {
            use std::os::fd::{AsFd, AsRawFd};
            let mut fds = [
                nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(wake.as_fd(), nix::poll::PollFlags::POLLIN),
            ];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::Supervise(e.into())),
            }
            while let Ok(Some(info)) = sfd.read_signal() {
                if matches!(
                    Signal::try_from(info.ssi_signo as i32),
                    Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)
                ) {
                    return Ok(RunSummary { exit_code: 0 });
                }
            }
            let mut drained = [0u8; 64];
            while matches!(nix::unistd::read(wake.as_raw_fd(), &mut drained), Ok(n) if n > 0) {}
            while let Ok(reply) = requests.try_recv() {
                let (server_ends, ours) = match bridge::session_pipes() {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(format!("pipes for the server: {e}")));
                        continue;
                    }
                };
                if reply.send(Ok(ours)).is_err() {
                    // The client is gone already.
                    continue;
                }
                sessions += 1;
                match run_session(req, runs_dir, image, server_ends, say, (decision, reporter)) {
                    Ok(RunEnd::Stopped(code)) => {
                        say(&format!(
                            "session {sessions} ended with the run (the server exited with code {code})"
                        ));
                        return Ok(RunSummary { exit_code: 0 });
                    }
                    Ok(RunEnd::Exited(code)) => say(&format!(
                        "session {sessions} ended (the server exited with code {code})"
                    )),
                    Ok(RunEnd::OutOfMemory(code)) => say(&format!(
                        "session {sessions} {} (exit code {code})",
                        crate::sandbox::cgroup::oom_message(decision.enforced.memory.value)
                    )),
                    Ok(RunEnd::Failed(f)) => say(&format!(
                        "session {sessions}: {}: {}",
                        Error::Sandbox(f.clone()),
                        f.chain.join(": ")
                    )),
                    Err(e) => {
                        say(&format!("session {sessions}: {e}"));
                        if matches!(e, Error::Supervise(_)) {
                            return Err(e);
                        }
                    }
                }
            }
        }
    })();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    served
}

/// Steps 6 to 8 for one `--port` session: a run directory and spec of its own, the sandbox supervised until its
/// server exits. `server_ends` are the server's stdin, its stdout and the session's end pipe.
fn run_session(
    req: &RunRequest,
    runs_dir: &std::path::Path,
    image: &Unpacked,
    server_ends: (
        std::os::fd::OwnedFd,
        std::os::fd::OwnedFd,
        std::os::fd::OwnedFd,
    ),
    say: &bridge::Say,
    cgroup: (&crate::sandbox::cgroup::Decision, &dyn Reporter),
) -> Result<RunEnd, Error> {
    let run_dir = RunDir::create(runs_dir).map_err(|source| Error::RunDir {
        path: runs_dir.to_path_buf(),
        source,
    })?;
    let (plan, idmap) = match prepare_run(req, &run_dir, image, Some(cgroup)) {
        Ok(p) => p,
        Err(e) => {
            run_dir.remove();
            return Err(e);
        }
    };
    let (stdin, stdout, end) = server_ends;
    let mut egress = None;
    let mut nameserver = None;
    let mut unreachable = None;
    let outcome = supervise::supervise(SupervisorArgs {
        exe: req.exe.clone(),
        run_dir: &run_dir.path,
        plan: &plan,
        idmap: &idmap,
        secrets: &req.secrets,
        stop_timeout: req.stop_timeout,
        on_started: &mut |_| {},
        on_egress: &mut |listener| serve_egress(req, say, listener, &mut egress),
        on_dns: &mut |socket| serve_dns(req, say, socket, &mut nameserver),
        on_unreachable: &mut |device| serve_unreachable(req, say, device, &mut unreachable),
        server_stdio: ServerStdio::Port { stdin, stdout, end },
    });
    drop(run_dir);
    drop(egress);
    drop(nameserver);
    drop(unreachable);
    outcome.map_err(Error::Supervise)
}

/// Asks the thread running [`serve_sessions`] for a session's server: each request carries where to answer,
/// and a byte on the wake pipe makes that thread look.
struct SessionLauncher {
    requests:
        std::sync::mpsc::Sender<std::sync::mpsc::SyncSender<Result<bridge::SessionPipes, String>>>,
    wake: std::os::fd::OwnedFd,
}

/// The requests a [`SessionLauncher`] sends.
type SessionRequests =
    std::sync::mpsc::Receiver<std::sync::mpsc::SyncSender<Result<bridge::SessionPipes, String>>>;

impl SessionLauncher {
    /// The launcher, its requests, and the read end of its wake pipe (non-blocking).
    fn new() -> std::io::Result<(SessionLauncher, SessionRequests, std::os::fd::OwnedFd)> {
        use nix::fcntl::OFlag;
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = std::sync::mpsc::channel();
        Ok((
            SessionLauncher {
                requests: tx,
                wake: w,
            },
            rx,
            r,
        ))
    }
}

impl bridge::Launch for SessionLauncher {
    fn launch(&self) -> Result<bridge::SessionPipes, String> {
        let stopping = || "the run is stopping".to_owned();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.requests.send(tx).map_err(|_| stopping())?;
        let _ = nix::unistd::write(&self.wake, b"s");
        rx.recv().map_err(|_| stopping())?
    }
}

/// The line said after a cold pull under an MCP client: pull first, so the client's start-up timeout never
/// covers a download.
fn prepull_hint(req: &RunRequest) -> String {
    let name = req
        .server_name
        .as_deref()
        .map_or(req.image.as_str(), |s| s.rsplit('/').next().unwrap_or(s));
    format!(
        "hint: this start downloaded the image, within the MCP client's start-up timeout; pull it beforehand: \
         `thv-sandbox pull {name}` (`thv-sandbox client add` pulls first)"
    )
}

/// This process's ids and subordinate ranges.
fn host_ids() -> HostIds {
    HostIds {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        subids: idmap::detect_subids(nix::unistd::geteuid().as_raw()),
    }
}

/// What the user named.
enum ImageName {
    /// An OCI image layout on disk, `oci:PATH[:TAG]`.
    Layout {
        /// As written.
        image: String,
        /// The layout directory.
        path: PathBuf,
        /// The tag, if one was named.
        tag: Option<String>,
    },
    /// A registry reference.
    Registry(Reference),
}

impl ImageName {
    fn parse(image: &str) -> Result<ImageName, Error> {
        if image.starts_with("oci:") {
            let (path, tag) = layout::parse_oci_ref(image)?;
            return Ok(ImageName::Layout {
                image: image.to_owned(),
                path,
                tag,
            });
        }
        if image.contains("://") {
            return Err(Error::BadReference(image.to_owned()));
        }
        Ok(ImageName::Registry(image.parse()?))
    }
}

/// An image after step 1: its digests pinned, its documents checked, none of its layers fetched.
#[allow(clippy::large_enum_variant)] // one per run, moved a few times
enum Resolved {
    /// From a layout on disk (its layers are there already).
    Layout {
        /// As written.
        image: String,
        /// The layout.
        oci: OciLayout,
        /// The image in it.
        resolved: layout::ResolvedImage,
    },
    /// From a registry, or the cache of pulled images.
    Registry(Box<distribution::Resolved>),
}

impl Resolved {
    /// The name the gate's verdict and a refusal use.
    fn name(&self) -> String {
        match self {
            Resolved::Layout { image, .. } => image.clone(),
            Resolved::Registry(r) => r.reference.to_string(),
        }
    }

    /// The image config, checked against its digest in step 1.
    fn config(&self) -> &oci_spec::image::ImageConfiguration {
        match self {
            Resolved::Layout { resolved, .. } => &resolved.config,
            Resolved::Registry(r) => &r.config,
        }
    }
}

/// An image after step 4: its layers on hand, unpacked when they were streamed.
#[allow(clippy::large_enum_variant)] // one per run, moved a few times
enum Fetched {
    Layout {
        oci: OciLayout,
        resolved: layout::ResolvedImage,
    },
    Registry(Box<distribution::Fetched>),
}

/// How the cache is pulled into, for `policy` and `access`.
fn pull_options<'a>(
    policy: PullPolicy,
    access: &RegistryAccess,
    dirs: &Dirs,
    reporter: &'a dyn Reporter,
    unpack: Option<distribution::UnpackTarget>,
) -> PullOptions<'a> {
    let mut opts = PullOptions::from_env(&dirs.cache);
    opts.policy = policy;
    opts.insecure = access.insecure.clone();
    opts.mirrors = access.mirrors.clone();
    opts.ca_certs = access.ca_certs.clone();
    opts.reporter = Some(reporter);
    opts.unpack = unpack;
    opts
}

/// Step 1.
fn resolve(name: &ImageName, opts: &PullOptions<'_>, gate: &Gate) -> Result<Resolved, Error> {
    match name {
        ImageName::Layout { image, path, tag } => {
            let oci = OciLayout::open(path)?;
            let resolved = oci.resolve(tag.as_deref(), &opts.platform)?;
            Ok(Resolved::Layout {
                image: image.clone(),
                oci,
                resolved,
            })
        }
        ImageName::Registry(reference) => Ok(Resolved::Registry(Box::new(resolve_registry(
            reference, opts, gate,
        )?))),
    }
}

/// Step 1 for a registry image. Under `enabled`, a cached image whose evidence is not on hand is resolved at the
/// registry again so that its evidence can be found (its blobs are not downloaded again). Under `warn` it is not:
/// a cached image must keep running offline, with the warning.
fn resolve_registry(
    reference: &Reference,
    opts: &PullOptions<'_>,
    gate: &Gate,
) -> Result<distribution::Resolved, Error> {
    let resolved = distribution::resolve(reference, opts)?;
    if resolved.from_cache && gate.needs_registry(&resolved.manifest_digest) {
        tracing::debug!("{reference}: cached, but its evidence is not; asking the registry");
        return Ok(distribution::resolve_at_registry(reference, opts)?);
    }
    Ok(resolved)
}

/// Step 2: evidence found at the registry, when something is to be verified and a registry was contacted.
fn discover(resolved: &Resolved, gate: &Gate) -> Option<crate::trust::evidence::Evidence> {
    match resolved {
        // A layout on disk has no registry to find evidence at: only stored evidence or a record can verify it.
        Resolved::Layout { .. } => None,
        Resolved::Registry(r) => crate::trust::evidence::discover_for(r, &gate.discovery()?),
    }
}

/// Step 3: the gate's verdict on the resolved digests.
fn decide(
    resolved: &Resolved,
    evidence: Option<&crate::trust::evidence::Evidence>,
    gate: &Gate,
    reporter: &dyn Reporter,
) -> verification::Outcome {
    let (index, manifest) = match resolved {
        Resolved::Layout { resolved, .. } => {
            (resolved.index_digest.as_ref(), &resolved.manifest_digest)
        }
        Resolved::Registry(r) => (r.index_digest.as_ref(), &r.manifest_digest),
    };
    decided(gate, &resolved.name(), index, manifest, evidence, reporter)
}

/// The gate's verdict on `name`, its warnings (a `warn` verdict) said through `reporter`.
fn decided(
    gate: &Gate,
    name: &str,
    index: Option<&crate::image::digest::Digest>,
    manifest: &crate::image::digest::Digest,
    evidence: Option<&crate::trust::evidence::Evidence>,
    reporter: &dyn Reporter,
) -> verification::Outcome {
    let outcome = gate.decide(name, index, manifest, evidence);
    if let verification::Outcome::Unverified { reason } = &outcome {
        reporter.report(Event::Warning(
            &gate.unverified_line(name, manifest, reason),
        ));
    }
    outcome
}

/// The verification gate for `cfg`; the trust root's age, when it is old, said through `reporter`.
fn new_gate(cfg: &Verification, dirs: &Dirs, reporter: &dyn Reporter) -> Result<Gate, Error> {
    let gate = Gate::new(cfg, &dirs.cache)?;
    if let Some(w) = gate.trust_root_warning() {
        reporter.report(Event::Warning(w));
    }
    Ok(gate)
}

/// Step 4.
fn fetch_and_unpack(resolved: Resolved, opts: &PullOptions<'_>) -> Result<Fetched, Error> {
    match resolved {
        Resolved::Layout { oci, resolved, .. } => Ok(Fetched::Layout { oci, resolved }),
        Resolved::Registry(r) => Ok(Fetched::Registry(Box::new(
            r.fetch_and_unpack(opts).map_err(pull_error)?,
        ))),
    }
}

/// Step 5: the image named in the cache; returns the layout holding it, the image in it (by its pinned name:
/// the manifest digest is checked to be the one resolved).
fn commit(
    fetched: Fetched,
    reporter: &dyn Reporter,
) -> Result<(OciLayout, layout::ResolvedImage, bool), Error> {
    match fetched {
        Fetched::Layout { oci, resolved } => Ok((oci, resolved, false)),
        Fetched::Registry(f) => {
            let pulled = f.commit()?;
            report_pulled(&pulled, reporter);
            let (oci, image) = pulled.open(&Platform::host())?;
            Ok((oci, image, !pulled.from_cache))
        }
    }
}

/// Says that `pulled` is in the cache.
fn report_pulled(pulled: &distribution::Pulled, reporter: &dyn Reporter) {
    reporter.report(Event::Pulled {
        reference: &pulled.reference.to_string(),
        manifest: &pulled.manifest_digest,
        from_cache: pulled.from_cache,
    });
}

/// A pull's error in the pipeline's terms (a failed unpack is the root's error).
fn pull_error(e: PullError) -> Error {
    match e {
        PullError::Unpack(e) => Error::Rootfs(*e),
        e => Error::Pull(e),
    }
}

/// Steps 1 to 3 for a registry image (`thv-sandbox verify IMAGE`): resolved, evidence discovered, decided. No layer
/// is fetched, nothing is unpacked, the cache names nothing new. Returns the verdict, a refusal included; the
/// manifest digest decided about is in it (and in the record).
pub fn verify(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &dyn Reporter,
    dirs: &Dirs,
    verification: &Verification,
) -> Result<verification::Outcome, Error> {
    let decided = resolve_and_decide(image, policy, access, reporter, dirs, verification, None);
    // No layer follows: the progress display goes.
    reporter.report(Event::PullAbandoned);
    Ok(decided?.2)
}

/// Steps 1 to 3 for a registry image, for [`verify`] and [`pull_verified`]: the reference resolved (with `unpack`
/// in the options for the steps that follow), its evidence discovered, the gate's verdict (its warnings said).
#[allow(clippy::type_complexity)] // the three results of the three steps
fn resolve_and_decide<'a>(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &'a dyn Reporter,
    dirs: &Dirs,
    verification: &Verification,
    unpack: Option<distribution::UnpackTarget>,
) -> Result<
    (
        distribution::Resolved,
        PullOptions<'a>,
        verification::Outcome,
    ),
    Error,
> {
    let reference: Reference = image.parse()?;
    crate::dirs::private_root(&dirs.cache)?;
    let gate = new_gate(verification, dirs, reporter)?;
    reporter.report(Event::PullStarted);
    let opts = pull_options(policy, access, dirs, reporter, unpack);
    // 1. resolve
    let resolved = resolve_registry(&reference, &opts, &gate)?;
    // 2. discover evidence
    let evidence = gate
        .discovery()
        .and_then(|d| crate::trust::evidence::discover_for(&resolved, &d));
    // 3. decide
    let outcome = decided(
        &gate,
        &resolved.reference.to_string(),
        resolved.index_digest.as_ref(),
        &resolved.manifest_digest,
        evidence.as_ref(),
        reporter,
    );
    Ok((resolved, opts, outcome))
}

/// Steps 1 to 5 for a registry image: resolved, evidence discovered, decided, and (unless refused) its layers
/// fetched and unpacked while they stream into the root a run by this user uses, then committed. Returns what was
/// pulled and the gate's verdict.
pub fn pull_verified(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &dyn Reporter,
    dirs: &Dirs,
    verification: &Verification,
) -> Result<(distribution::Pulled, verification::Outcome), Error> {
    pull_verified_with(image, policy, access, reporter, dirs, verification, true)
}

/// [`pull_verified`], the root built with the bytecode step or not (`bytecode_at_unpack`: the root a run with
/// the same setting uses).
pub fn pull_verified_with(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &dyn Reporter,
    dirs: &Dirs,
    verification: &Verification,
    bytecode: bool,
) -> Result<(distribution::Pulled, verification::Outcome), Error> {
    // The bytecode step finishes the root this pull builds (its name says so).
    let finish = bytecode::for_pull(bytecode, dirs)?;
    let abandon = |e| {
        reporter.report(Event::PullAbandoned);
        e
    };
    // 1. resolve, 2. discover evidence, 3. decide
    let target = Some(unpack_target());
    let (resolved, mut opts, outcome) =
        resolve_and_decide(image, policy, access, reporter, dirs, verification, target)
            .map_err(abandon)?;
    opts.finish = finish.as_ref().map(|f| f as &dyn rootfs::Finish);
    let verdict = outcome
        .admit(&resolved.reference.to_string())
        .map_err(|e| abandon(e.into()))?;
    // 4. fetch layers, unpacked while they stream; 5. commit
    let pulled = resolved
        .fetch_and_unpack(&opts)
        .map_err(pull_error)
        .and_then(|f| Ok(f.commit()?))
        .map_err(abandon)?;
    report_pulled(&pulled, reporter);
    Ok((pulled, verdict))
}

/// The runner a pull's bytecode step starts: this executable (as `run`'s default `exe`).
const SELF_EXE: &str = "/proc/self/exe";

/// The root a run by this user uses: the one a pull unpacks into while downloading.
fn unpack_target() -> distribution::UnpackTarget {
    let planned = idmap::plan(&host_ids(), 0, 0);
    distribution::UnpackTarget {
        mode: planned.mode,
        ownership: planned.unpack_ownership(),
    }
}

/// Pulls a registry image into the cache without verifying it (`thv-sandbox pull`: `run` verifies, also from the
/// cache, and `verify` checks provenance on its own).
pub fn pull(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &dyn Reporter,
    dirs: &Dirs,
) -> Result<distribution::Pulled, Error> {
    pull_with(image, policy, access, reporter, dirs, true)
}

/// [`pull`], the root built with the bytecode step or not (see [`pull_verified_with`]).
pub fn pull_with(
    image: &str,
    policy: PullPolicy,
    access: &RegistryAccess,
    reporter: &dyn Reporter,
    dirs: &Dirs,
    bytecode: bool,
) -> Result<distribution::Pulled, Error> {
    let none = Verification {
        mode: Some(verification::Mode::Disabled),
        ..Verification::default()
    };
    let (pulled, _) = pull_verified_with(image, policy, access, reporter, dirs, &none, bytecode)?;
    if pulled.from_cache {
        // Ready to run: a cached image whose root is missing (pruned, or pulled by another version) is unpacked.
        let (layout, image) = pulled.open(&Platform::host())?;
        let target = unpack_target();
        let finish = bytecode::for_pull(bytecode, dirs)?;
        rootfs::ensure_with(
            &dirs.cache,
            &layout,
            &image,
            &ImageRuntimeConfig::from_image(&image.config),
            target.mode,
            target.ownership,
            finish.as_ref().map(|f| f as &dyn rootfs::Finish),
        )?;
    }
    Ok(pulled)
}

/// Writes the bundle, the generated /etc files and the runner plan into the run directory.
fn prepare_run(
    req: &RunRequest,
    run_dir: &RunDir,
    image: &Unpacked,
    cgroup: Option<(&crate::sandbox::cgroup::Decision, &dyn Reporter)>,
) -> Result<(RunnerPlan, idmap::IdMap), Error> {
    let Unpacked {
        digest,
        runtime,
        root,
        host,
        filters,
    } = image;
    let io = |path: PathBuf| move |source| Error::RunDir { path, source };
    // The systemd scope is asked for first, for the keeper forked at start: its D-Bus round trips then overlap
    // the rest of this function and the keeper's start (`supervise` takes the answer).
    if let Some((decision, _)) = cgroup {
        if decision.route == Some(crate::sandbox::cgroup::Route::SystemdScope) {
            if let Some(keeper) = crate::sandbox::prefork::pid() {
                crate::sandbox::cgroup::begin_scope(&run_dir.id, keeper, &decision.enforced);
            }
        }
    }
    // The id maps, planned once: the server's ids are checked against them before anything is written, and the
    // supervisor writes these same maps.
    let idmap = idmap::plan(host, root.user.uid, root.user.gid);
    idmap.check_process(root.user.uid, root.user.gid, &[root.user.gid])?;
    // The keeper forked at start has made its user namespace: its maps are written while the rest of the run is
    // prepared (the run that takes it finishes the write, see `supervise`): begun first, since for a user with
    // subordinate ids it is two set-uid helpers' start.
    crate::sandbox::prefork::begin_mapping(&idmap);
    let dir = &run_dir.path;
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).map_err(io(etc.clone()))?;
    let hostname = hostname_for(digest);
    for (name, mut text) in spec::etc_files(&hostname) {
        // With the host's network, its resolver and hosts apply (a 127.0.0.53 stub works: same namespace).
        if req.network == NetworkMode::Host {
            match name {
                "resolv.conf" => text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or(text),
                "hosts" => {
                    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
                        text = format!("{hosts}\n127.0.1.1\t{hostname}\n");
                    }
                }
                _ => {}
            }
        }
        std::fs::write(etc.join(name), text).map_err(io(etc.join(name)))?;
    }
    let overlay = overlay_plan(req, runtime, root, dir)?;
    if let Some(o) = &overlay {
        for d in [&o.scratch, &o.merged] {
            std::fs::create_dir(d).map_err(io(d.clone()))?;
        }
    }
    let netns = dir.join("netns");
    std::fs::write(&netns, b"").map_err(io(netns.clone()))?;
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).map_err(io(bundle.clone()))?;
    let cgroups_path = format!("/thv-sandbox-{}", run_dir.id);
    if let Some(host_cg) = host_cgroup_dir(&cgroups_path) {
        let _ = std::fs::write(
            dir.join("cgroup"),
            format!("{}\n", host_cg.to_string_lossy()),
        );
    }
    let (nofile, nproc) = limits();
    let opts = SpecOptions {
        rootfs: overlay
            .as_ref()
            .map_or_else(|| root.path.clone(), |o| o.merged.clone()),
        user: root.user.clone(),
        home_in_image: root.meta.home_in_image,
        args: req.args.clone(),
        env: spec_env(req),
        hostname,
        etc_dir: etc,
        netns: netns.clone(),
        cgroups_path: cgroups_path.clone(),
        seccomp: seccomp_for(req)?.to_oci(),
        nofile,
        nproc,
        binds: req.mounts.clone(),
        network: req.network,
        // Where setgroups(2) is allowed, the server's only group is its own: the invoking user's supplementary
        // groups (root's group 0 as root) are dropped.
        supplementary_gids: (idmap.mode != idmap::IdMapMode::Single).then(|| vec![root.user.gid]),
        tmp_mib: req.tmp_mib,
        memory_limit: req.limits.memory.value,
    };
    let mut spec = spec::build(runtime, &opts)?;
    spec::check_invariants(&spec, req.network)?;
    // The filter goes to the runner compiled (kept in the cache) in its plan: libcontainer would compile it in
    // every container's init. The runner refuses a plan without it (`sandbox::filter`).
    let seccomp = filters
        .program(&opts.seccomp)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    let config = bundle.join("config.json");
    let json = serde_json::to_vec(&spec).map_err(|e| Error::Spec(SpecError::Json(e)))?;
    std::fs::write(&config, json).map_err(io(config.clone()))?;
    let egress_port = egress_rules(req)?.map(|_| crate::sandbox::egress::PROXY_PORT);
    // The sandbox's cgroup last, once nothing before the plan can fail: a refused spec or id map leaves none.
    let cgroup = match cgroup {
        Some((decision, reporter)) => {
            let planned = plan_cgroup(
                decision,
                reporter,
                run_dir,
                cgroups_path.trim_start_matches('/'),
            )?;
            if let (Some(_), Some(route)) = (&planned, &decision.route) {
                // The kernel's first cgroup move after a quiet spell waits for an RCU grace period: begun now, it
                // overlaps the runner's start (see the function). Not before the directories above are made: the
                // waiting move holds the lock a mkdir in cgroupfs needs.
                let _ = crate::sandbox::cgroup::warm_migration_lock(route);
            }
            planned
        }
        None => None,
    };
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
        network_host: req.network == NetworkMode::Host,
        overlay,
        egress_port,
        socket_factory: req.http.is_some(),
        dns_stub: req.network != NetworkMode::Host,
        writable_root: false,
        time_limit_ms: None,
        cgroup,
        seccomp,
    };
    let plan_path = dir.join("plan.json");
    let plan_json = serde_json::to_vec(&plan).map_err(|e| Error::Spec(SpecError::Json(e)))?;
    if let Err(e) = std::fs::write(&plan_path, plan_json) {
        if let Some(crate::sandbox::cgroup::PlannedCgroup {
            plan: crate::sandbox::cgroup::CgroupPlan::Dirs(dirs),
            ..
        }) = &plan.cgroup
        {
            crate::sandbox::cgroup::remove(dirs, plan.cgroups_path.trim_start_matches('/'));
        }
        return Err(io(plan_path.clone())(e));
    }
    Ok((plan, idmap))
}

/// The egress proxy's rules, when the sandbox gets one (its own network and a profile that allows something).
fn egress_rules(req: &RunRequest) -> Result<Option<crate::sandbox::egress::Rules>, Error> {
    match &req.egress {
        Some(o) if req.network == NetworkMode::None => {
            let rules = crate::sandbox::egress::Rules::from_outbound(o)
                .map_err(|e| Error::Egress(e.to_string()))?;
            Ok(rules.allows_anything().then_some(rules))
        }
        _ => Ok(None),
    }
}

/// The server's environment: the request's, then the proxy variables when it has the egress proxy.
fn spec_env(req: &RunRequest) -> Vec<(String, String)> {
    let mut env = req.env.clone();
    if matches!(egress_rules(req), Ok(Some(_))) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], crate::sandbox::egress::PROXY_PORT));
        for (k, v) in crate::sandbox::egress::proxy_env(addr) {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        }
    }
    env
}

/// The seccomp profile in force: the entry's variant (else the default), then the user's override file.
pub fn seccomp_for(req: &RunRequest) -> Result<sandbox_profiles::SeccompProfile, Error> {
    let base =
        sandbox_profiles::seccomp_variant(req.seccomp_profile.as_deref().unwrap_or("default"))
            .map_err(|e| Error::Seccomp(e.to_string()))?;
    match &req.seccomp_override {
        None => Ok(base.clone()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Seccomp(format!("{}: {e}", path.display())))?;
            sandbox_profiles::apply_override(base, &text)
                .map_err(|e| Error::Seccomp(format!("{}: {e}", path.display())))
        }
    }
}

/// An overlay is needed when a mount target is missing from the (read-only, cached) root and does not lie under one
/// of the sandbox's own tmpfs mounts, where libcontainer can create it.
fn overlay_plan(
    req: &RunRequest,
    runtime: &ImageRuntimeConfig,
    root: &rootfs::Root,
    dir: &std::path::Path,
) -> Result<Option<OverlayPlan>, Error> {
    let mut tmpfs_tops: Vec<String> = vec!["/tmp".into(), "/run".into()];
    tmpfs_tops.extend(runtime.volumes.iter().cloned());
    // A target inside a mounted host directory is made there, not in the image (the cache masks are).
    tmpfs_tops.extend(
        req.mounts
            .iter()
            .filter(|m| m.host.is_dir())
            .map(|m| m.container.clone()),
    );
    if let Some(home) = root
        .user
        .home
        .as_ref()
        .filter(|h| !root.meta.home_in_image && h.as_str() != "/")
    {
        tmpfs_tops.push(home.clone());
    }
    let mut points = Vec::new();
    for m in &req.mounts {
        let host_dir = m.host.is_dir();
        let under_tmpfs = tmpfs_tops.iter().any(|t| {
            let t = t.trim_end_matches('/');
            m.container.len() > t.len()
                && m.container.starts_with(t)
                && m.container.as_bytes()[t.len()] == b'/'
        });
        if under_tmpfs {
            continue;
        }
        let kind =
            rootfs::mountpoint_kind(&root.path, &m.container).map_err(|source| Error::RunDir {
                path: root.path.join(m.container.trim_start_matches('/')),
                source,
            })?;
        let name = |d: bool| if d { "directory" } else { "file" };
        match kind {
            Some(is_dir) if is_dir == host_dir => {}
            Some(is_dir) => {
                return Err(MountError::TargetKind {
                    path: m.container.clone(),
                    in_image: name(is_dir),
                    host: name(host_dir),
                }
                .into())
            }
            None => points.push((m.container.clone(), host_dir)),
        }
    }
    Ok((!points.is_empty()).then(|| OverlayPlan {
        scratch: dir.join("overlay"),
        merged: dir.join("rootfs"),
        points,
    }))
}

fn hostname_for(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    format!("thv-{}", &hex[..hex.len().min(12)])
}

/// RLIMIT_NPROC of a sandbox: processes and threads of the server together. Counted per sandbox (each has its own
/// user namespace), so N sandboxes may hold N times this; a browser-driving server stays well below it.
pub const MAX_PROCESSES: u64 = 2_048;

/// NOFILE: up to 65536 within what we may set; NPROC: up to [`MAX_PROCESSES`].
fn limits() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, Resource};
    let cap = |r, want: u64| getrlimit(r).map(|(_, hard)| hard.min(want)).unwrap_or(want);
    (
        cap(Resource::RLIMIT_NOFILE, 65_536),
        // Per sandbox (the count is kept per user namespace, not per host user), threads included.
        cap(Resource::RLIMIT_NPROC, MAX_PROCESSES),
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
