//! `thv-sandbox`: run MCP servers from OCI images in rootless sandboxes.
//!
//! Parse (clap) → resolve settings → call the runtime → render errors. stdout belongs to the MCP server alone:
//! everything this binary says goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use thv_sandbox_runtime::catalog::{env as catalog_env, launch, NetworkMode};
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::distribution::PullPolicy;
use thv_sandbox_runtime::{cache, doctor, runner, EXIT_SANDBOX_ERROR, EXIT_USAGE};

mod registry_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "thv-sandbox",
    version,
    about = "Run MCP servers from OCI images in rootless sandboxes"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MCP server over stdio in a sandbox: `thv-sandbox run NAME|IMAGE [-- ARGS…]`.
    Run(RunArgs),
    /// The curated server registry: `list`, `search QUERY`, `info NAME`.
    Registry(registry_cmd::RegistryArgs),
    /// Pull an image from its registry into the cache; prints the pinned reference (`…@sha256:…`) on stdout.
    Pull(PullArgs),
    /// List the cached images with their sizes (a table on stdout; `--json` for a JSON array).
    Images(ImagesArgs),
    /// Remove from the cache what no cached image needs: blobs, unpacked roots, leftovers of interrupted pulls.
    Prune(PruneArgs),
    /// Check whether this host can run rootless sandboxes, and how to fix what is missing.
    Doctor,
    /// Internal: the runner process (started by `run`).
    #[command(name = "__runner", hide = true)]
    Runner { run_dir: PathBuf },
}

/// Where images come from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// When to contact the registry: `always` (resolve the tag again), `missing` (use the cache when it has the
    /// image), `never` (cache only, no network).
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pull: PullArg,
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP; loopback registries always may. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PullArg {
    Always,
    Missing,
    Never,
}

impl From<PullArg> for PullPolicy {
    fn from(p: PullArg) -> PullPolicy {
        match p {
            PullArg::Always => PullPolicy::Always,
            PullArg::Missing => PullPolicy::Missing,
            PullArg::Never => PullPolicy::Never,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// The image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`).
    image: String,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Debug, clap::Args)]
struct ImagesArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Cache directory (default: $XDG_CACHE_HOME/thv-sandbox or ~/.cache/thv-sandbox).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NetworkArg {
    /// Only loopback, in the sandbox's own network namespace.
    None,
    /// The host's network, loopback services included (no filtering).
    Host,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A server of the registry by name (`time`, `io.github.stacklok/fetch`, or its short name `fetch`), or an
    /// image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image layout
    /// directory, `oci:PATH[:TAG]`.
    image: String,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    registry: registry_cmd::RegistrySourceArgs,
    /// Set an environment variable in the sandbox: NAME=VALUE, or NAME alone to pass NAME's value from
    /// thv-sandbox's own environment. Nothing from the host environment is passed otherwise.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file of NAME=VALUE lines (# comments, blank lines). Repeatable; `-e` wins.
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// The sandbox's network: `none` (only loopback) or `host` (the host's network, loopback services included).
    /// Servers whose permissions ask for network are refused under `none`.
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    network: NetworkArg,
    /// Permission profile: `none`, `network`, or a JSON file in ToolHive's format; overrides the registry
    /// entry's.
    #[arg(long = "permission-profile", value_name = "none|network|FILE")]
    permission_profile: Option<String>,
    /// Seconds the server gets to exit after SIGTERM (and after the client closes stdin) before SIGKILL.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    stop_timeout: f64,
    /// Print per-phase start timings to stderr (also THV_SANDBOX_TIMINGS=1).
    #[arg(long, hide = true)]
    timings: bool,
    /// Arguments for the server, replacing the image's Cmd.
    #[arg(last = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // clap prints help/version to stdout; that is fine for those, errors go to stderr.
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_logging(cli.verbose);
    let code = match cli.command {
        Command::Runner { run_dir } => runner::keeper_main(&run_dir),
        Command::Doctor => doctor_cmd(),
        Command::Run(args) => run_cmd(args),
        Command::Registry(args) => registry_cmd::registry_cmd(args),
        Command::Pull(args) => pull_cmd(args),
        Command::Images(args) => images_cmd(args),
        Command::Prune(args) => prune_cmd(args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},libcontainer=error,libcgroups=error"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .without_time()
        .try_init();
}

fn doctor_cmd() -> i32 {
    let dirs = match Dirs::from_env(None) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let report = doctor::diagnose(&doctor::DoctorInputs {
        state_dir: dirs.state,
        cache_dir: dirs.cache,
    });
    eprint!("{}", report.render());
    if report.ok() {
        0
    } else {
        1
    }
}

fn run_cmd(args: RunArgs) -> i32 {
    if !(args.stop_timeout.is_finite() && args.stop_timeout >= 0.0) {
        eprintln!("error: --stop-timeout must be a number of seconds ≥ 0");
        return EXIT_USAGE;
    }
    // Everything a refusal can come from is decided here, before anything is pulled.
    let launch = match plan_launch(&args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let dirs = match Dirs::from_env(args.source.cache_dir.clone()) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let (secret_env, env): (Vec<_>, Vec<_>) = launch.env.into_iter().partition(|v| v.secret());
    let req = thv_sandbox_runtime::RunRequest {
        image: launch.image,
        pull_policy: args.source.pull.into(),
        insecure_registries: args.source.insecure_registry,
        args: launch.args,
        env: env
            .into_iter()
            .map(|v| (v.name, v.value.expose().to_owned()))
            .collect(),
        secret_env,
        server_name: launch.server,
        permissions: launch.permissions,
        provenance: launch.provenance,
        seccomp_profile: launch.seccomp_profile,
        network: launch.network,
        stop_timeout: Duration::from_secs_f64(args.stop_timeout),
        cache_dir: args.source.cache_dir,
        exe: PathBuf::from("/proc/self/exe"),
        timings: args.timings || std::env::var_os("THV_SANDBOX_TIMINGS").is_some_and(|v| v == "1"),
    };
    match thv_sandbox_runtime::run(&req, &dirs) {
        Ok(summary) => summary.exit_code,
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

/// Flags + registry entry (if the name is one) → what to run; errors are reported here (the exit code is
/// returned).
fn plan_launch(args: &RunArgs) -> Result<launch::Launch, i32> {
    let report = |e: &launch::LaunchError| {
        let code = if e.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_SANDBOX_ERROR
        };
        report_error(e, &[], e.hint(), code)
    };
    let mut user = launch::UserChoices {
        args: args.args.clone(),
        network: match args.network {
            NetworkArg::None => NetworkMode::None,
            NetworkArg::Host => NetworkMode::Host,
        },
        ..launch::UserChoices::default()
    };
    for e in &args.env {
        user.env_args
            .push(catalog_env::parse_arg(e).map_err(|e| report(&e.into()))?);
    }
    user.env_files = catalog_env::read_files(&args.env_file).map_err(|e| report(&e.into()))?;
    if let Some(p) = &args.permission_profile {
        user.permissions = Some(
            launch::parse_profile_arg(p, &|path| std::fs::read(path)).map_err(|e| report(&e))?,
        );
    }
    // `oci:` names a layout on disk, never a registry entry.
    let loaded = if args.image.starts_with("oci:") {
        None
    } else {
        Some(registry_cmd::load(
            &args.registry,
            args.source.cache_dir.clone(),
        )?)
    };
    let server = match loaded.as_ref().map(|l| l.catalog.find(&args.image)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(s))) => Some(s),
        Some(Err(e)) => return Err(report_error(&e, &[], e.hint(), EXIT_USAGE)),
    };
    if let Some(s) = server {
        tracing::info!("`{}` is the registry's `{}`", args.image, s.name);
    }
    launch::plan(
        server,
        &args.image,
        &user,
        &launch::seccomp_variants(),
        &|name| std::env::var(name).ok(),
    )
    .map_err(|e| report(&e))
}

fn pull_cmd(args: PullArgs) -> i32 {
    let dirs = match Dirs::from_env(args.source.cache_dir.clone()) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    match thv_sandbox_runtime::pull(
        &args.image,
        args.source.pull.into(),
        &args.source.insecure_registry,
        &dirs,
    ) {
        Ok(pulled) => {
            // stdout is data: the pinned reference, for scripts.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", pulled.tag_ref);
            0
        }
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

fn images_cmd(args: ImagesArgs) -> i32 {
    let dirs = match Dirs::from_env(args.cache_dir) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    let images = match cache::list(&dirs.cache) {
        Ok(i) => i,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    // stdout is data: the table, or JSON for scripts.
    let out = if args.json {
        cache::render_json(&images)
    } else {
        cache::render_table(&images)
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

fn prune_cmd(args: PruneArgs) -> i32 {
    let dirs = match Dirs::from_env(args.cache_dir) {
        Ok(d) => d,
        Err(e) => return report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR),
    };
    // Roots that live runs use are kept; without a state directory there are no live runs to ask.
    let runs = dirs.state.join("runs");
    let report = match cache::prune_keeping_runs(&dirs.cache, Some(&runs), args.dry_run) {
        Ok(r) => r,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        eprintln!(
            "{verb} {} ({})",
            r.path.display(),
            cache::human_size(r.bytes)
        );
    }
    eprintln!(
        "{verb} {} blobs, {} unpacked roots, {} leftovers of interrupted pulls and unpacks: {} freed{}",
        report.count(cache::RemovedKind::Blob),
        report.count(cache::RemovedKind::Root),
        report.count(cache::RemovedKind::TempFile) + report.count(cache::RemovedKind::Staging),
        cache::human_size(report.bytes_freed()),
        if report.dry_run { " (dry run)" } else { "" },
    );
    if report.kept > 0 {
        eprintln!(
            "kept {} unreferenced items that are recent, locked or in use",
            report.kept
        );
    }
    let mut code = 0;
    for e in &report.failures {
        report_error(e, &[], None, 0);
        code = EXIT_SANDBOX_ERROR;
    }
    code
}

fn report_runtime_error(e: &thv_sandbox_runtime::Error, dirs: &Dirs) -> i32 {
    let code = match e {
        thv_sandbox_runtime::Error::BadReference(_) | thv_sandbox_runtime::Error::Reference(_) => {
            EXIT_USAGE
        }
        _ => EXIT_SANDBOX_ERROR,
    };
    report_error(e, e.remote_causes(), e.hint(Some(dirs)), code)
}

/// `error: …`, indented `caused by: …` lines, and a `hint: …`.
pub(crate) fn report_error(
    err: &dyn std::error::Error,
    remote: &[String],
    hint: Option<String>,
    code: i32,
) -> i32 {
    eprintln!("error: {err}");
    let mut seen = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !seen.contains(&s) {
            eprintln!("  caused by: {s}");
            seen.push(s);
        }
        cur = c.source();
    }
    for s in remote {
        if !seen.contains(s) {
            eprintln!("  caused by: {s}");
            seen.push(s.clone());
        }
    }
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    code
}
