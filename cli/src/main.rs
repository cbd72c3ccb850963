//! `thv-sandbox`: run MCP servers from OCI images in rootless sandboxes.
//!
//! Parse (clap) → resolve settings → call the runtime → render errors. stdout belongs to the MCP server alone:
//! everything this binary says goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::distribution::PullPolicy;
use thv_sandbox_runtime::settings::request::{self, IdentityFlags, RunFlags};
use thv_sandbox_runtime::settings::{self, Config};
use thv_sandbox_runtime::{
    cache, doctor, sandbox::profile, sandbox::runner, EXIT_REFUSED, EXIT_SANDBOX_ERROR, EXIT_USAGE,
};

mod registry_cmd;
use thv_sandbox_runtime::progress::ProgressMode;
use thv_sandbox_runtime::trust::verification::TufSettings;

#[derive(Debug, Parser)]
#[command(
    name = "thv-sandbox",
    version,
    about = "Run MCP servers from OCI images in rootless sandboxes"
)]
struct Cli {
    /// More log output on stderr (once: info, twice: debug); RUST_LOG overrides.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The configuration file (default: $THV_SANDBOX_CONFIG, else $XDG_CONFIG_HOME/thv-sandbox/config.toml or
    /// ~/.config/thv-sandbox/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an MCP server over stdio in a sandbox: `thv-sandbox run NAME|IMAGE [-- ARGS…]`.
    Run(Box<RunArgs>),
    /// Show what `run` with the same arguments would give the server — network, mounts, environment names,
    /// seccomp profile, declared provenance — without pulling or starting anything.
    Inspect(Box<InspectArgs>),
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
    /// The configuration file: `config path` prints where it is, `config show` the effective settings and where
    /// each comes from (flag, environment, file, default).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify provenance of an image (`verify IMAGE`, evidence from its registry, no layer fetched) or of a file
    /// (`verify --bundle F (--artifact F | --digest sha256:…)`). The exit status is the verdict: 0 verified,
    /// 124 refused, 2 usage.
    Verify(Box<VerifyArgs>),
    /// Trusted roots of the Sigstore instances: `trust show` (which root verification uses offline and how old it
    /// is), `trust refresh` (refresh through TUF now).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Internal: the runner process (started by `run`).
    #[command(name = "__runner", hide = true)]
    Runner { run_dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// Which trust root each instance's verification uses offline: embedded or refreshed through TUF, its sha256
    /// and age (stderr; `--json`: stdout).
    Show {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Refresh the trusted roots through TUF now (both instances, or the one named); the previous root stays in
    /// use when a refresh fails.
    Refresh {
        /// `public-good` or `github`; default both.
        #[arg(long, value_name = "INSTANCE")]
        instance: Option<String>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the path of the configuration file in effect (stdout); say on stderr whether it exists.
    Path,
    /// Print the effective settings as TOML (stdout), each with where it comes from.
    Show(SettingsArgs),
}

/// Settings that the configuration file can also give (flags win over the environment, which wins over the file).
#[derive(Debug, Clone, Default, clap::Args)]
struct SettingsArgs {
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP; loopback registries always may. Repeatable
    /// (also THV_SANDBOX_INSECURE_REGISTRIES, config `insecure_registries`).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Pull images named as being on REGISTRY from MIRROR instead (the image keeps its name). Repeatable (also
    /// THV_SANDBOX_REGISTRY_MIRRORS, config `[mirrors]`).
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    registry_mirror: Vec<String>,
    /// A PEM file of CA certificates to trust for registries, besides the system's. Repeatable (also
    /// THV_SANDBOX_CA_CERTS, config `ca_certs`).
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
}

/// Where images come from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// When to contact the registry: `always` (resolve the tag again), `missing` (use the cache when it has the
    /// image), `never` (cache only, no network).
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pull: PullArg,
    /// Say nothing about pulling (by default: per-layer progress when stderr is a terminal, else one line per
    /// pulled image; always on stderr).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    settings: SettingsArgs,
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
    /// Check every unpacked root against the record made when it was unpacked (one lstat per file); exit 1 if
    /// one changed.
    #[arg(long)]
    check: bool,
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NetworkArg {
    /// Only loopback, in the sandbox's own network namespace.
    None,
    /// The host's network, loopback services included (no filtering).
    Host,
}

/// The identity the evidence must name (cosign's flags), and the trust material.
#[derive(Debug, Clone, Default, clap::Args)]
struct IdentityArgs {
    /// The exact certificate SAN, e.g. `https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1`.
    #[arg(long, value_name = "SAN")]
    certificate_identity: Option<String>,
    /// The OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    #[arg(long, value_name = "URL")]
    certificate_oidc_issuer: Option<String>,
    /// The GitHub repository (`owner/repo`) the workflow ran in.
    #[arg(long, value_name = "OWNER/REPO")]
    certificate_github_workflow_repository: Option<String>,
    /// The git ref the workflow ran for, e.g. `refs/tags/v1.0.0`.
    #[arg(long, value_name = "REF")]
    certificate_github_workflow_ref: Option<String>,
    /// The commit the workflow ran for.
    #[arg(long, value_name = "SHA")]
    certificate_github_workflow_sha: Option<String>,
    /// The event that triggered the workflow, e.g. `push`, `release`.
    #[arg(long, value_name = "EVENT")]
    certificate_github_workflow_trigger: Option<String>,
    /// The workflow's display name.
    #[arg(long, value_name = "NAME")]
    certificate_github_workflow_name: Option<String>,
    /// Accept any signer the instance certified (no identity check). Explicit, never a default.
    #[arg(long)]
    insecure_any_identity: bool,
    /// The Sigstore instance that signed, by its TUF repository: `tuf-repo-cdn.sigstore.dev` (public-good,
    /// default) or `tuf-repo.github.com` (GitHub's). It decides which evidence is required.
    #[arg(long, value_name = "HOST")]
    sigstore_url: Option<String>,
    /// A trusted_root.json to use instead of the embedded trust roots (replaces trust material, not the evidence
    /// the instance requires).
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
}

impl IdentityArgs {
    fn flags(&self) -> IdentityFlags {
        IdentityFlags {
            certificate_identity: self.certificate_identity.clone(),
            certificate_oidc_issuer: self.certificate_oidc_issuer.clone(),
            github_workflow_repository: self.certificate_github_workflow_repository.clone(),
            github_workflow_ref: self.certificate_github_workflow_ref.clone(),
            github_workflow_sha: self.certificate_github_workflow_sha.clone(),
            github_workflow_trigger: self.certificate_github_workflow_trigger.clone(),
            github_workflow_name: self.certificate_github_workflow_name.clone(),
            insecure_any_identity: self.insecure_any_identity,
            sigstore_url: self.sigstore_url.clone(),
            trust_root: self.trust_root.clone(),
        }
    }

    /// The verifier for blob mode: `--trust-root`, else roots refreshed through TUF into `tuf.dir`.
    fn verifier(
        &self,
        tuf: Option<prov::tuf::TufOptions>,
    ) -> Result<prov::Verifier, prov::Refusal> {
        Ok(match (&self.trust_root, tuf) {
            (Some(path), _) => prov::Verifier::with_trust_root(prov::TrustRoot::from_file(path)?),
            (None, Some(opts)) => prov::Verifier::with_tuf(opts),
            (None, None) => prov::Verifier::embedded(),
        })
    }
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// An image (registry reference): its evidence is found at the registry and verified; no layer is fetched.
    #[arg(conflicts_with_all = ["bundle", "artifact", "digest"])]
    image: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    registry: registry_cmd::RegistrySourceArgs,
    /// A Sigstore bundle (JSON, or JSON Lines with one bundle per line; any one that verifies is enough).
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The file the bundle is about.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "digest",
        requires = "bundle"
    )]
    artifact: Option<PathBuf>,
    /// The digest of the artifact the bundle is about, `sha256:HEX`.
    #[arg(long, value_name = "sha256:HEX", requires = "bundle")]
    digest: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A server of the registry by name (`time`, `io.github.stacklok/fetch`, or its short name `fetch`), or an
    /// image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image layout
    /// directory, `oci:PATH[:TAG]`.
    image: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Provenance verification: `disabled`, `warn` (run, saying on stderr what failed), `enabled` (refuse on
    /// failure; an image without an expected identity is refused). Default: `enabled` when an identity is given,
    /// `warn` otherwise.
    #[arg(long, value_name = "MODE", env = "THV_SANDBOX_IMAGE_VERIFICATION")]
    image_verification: Option<thv_sandbox_runtime::Mode>,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    registry: registry_cmd::RegistrySourceArgs,
    /// Set an environment variable in the sandbox: NAME=VALUE, or NAME alone to pass NAME's value from
    /// thv-sandbox's own environment. Nothing from the host environment is passed otherwise.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Pass the host environment variable NAME to the server as a secret: its value is never written to disk,
    /// logs or any command line (it reaches the server's environment just before it starts). Repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    secret: Vec<String>,
    /// Expose the server (any transport) as streamable HTTP at http://[HOST:]PORT/mcp/TOKEN instead of over
    /// stdio, for URL-based MCP clients; loopback unless HOST is given. The URL, with a token made for this run, is
    /// printed on stderr; requests without it (or `Authorization: Bearer TOKEN`) get 401. Host and Origin headers
    /// are checked (DNS rebinding).
    #[arg(long, value_name = "[HOST:]PORT")]
    port: Option<String>,
    /// The `--port` token is kept in FILE (created with a random token, mode 0600, when missing), so a client's
    /// URL stays the same across runs.
    #[arg(long, value_name = "FILE", env = "THV_SANDBOX_PORT_TOKEN_FILE")]
    port_token_file: Option<PathBuf>,
    /// Also (or instead of --port) serve streamable HTTP at /mcp on a unix socket at PATH (mode 0600, in a
    /// directory of yours that nobody else may enter; removed on exit). Only your uid (or root) may connect; no
    /// token is needed there.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Your own seccomp override file: adds (`groups`) or removes (`remove`) rules on top of the profile the
    /// server gets (the default, or the variant its registry entry selects). See SECURITY.md for the format.
    #[arg(
        long = "seccomp-override",
        env = "THV_SANDBOX_SECCOMP_OVERRIDE",
        value_name = "FILE"
    )]
    seccomp_override: Option<PathBuf>,
    /// Bind a host path into the sandbox: HOST:CONTAINER[:ro] (or PATH for the same path inside). Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Let the permission profile (registry entry or --permission-profile) mount `/`, your home directory or a
    /// directory holding thv-sandbox's cache or state (refused without this; thv-sandbox's own dirs stay masked).
    #[arg(long)]
    allow_profile_mounts: bool,
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
    /// Size of the sandbox's /tmp (and of a home the image lacks), in MiB. tmpfs memory is charged to no
    /// process, so it is always bounded.
    #[arg(long = "tmp-size", default_value_t = thv_sandbox_runtime::sandbox::spec::DEFAULT_TMP_MIB, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    tmp_size: u64,
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
    let file = cli.config;
    let code = match cli.command {
        Command::Runner { run_dir } => runner::keeper_main(&run_dir),
        Command::Doctor => doctor_cmd(file),
        Command::Config(cmd) => config_cmd(file, cmd),
        Command::Trust(cmd) => trust_cmd(file, cmd),
        Command::Run(args) => run_cmd(file, *args),
        Command::Inspect(args) => inspect_cmd(file, *args),
        Command::Registry(args) => registry_cmd::registry_cmd(file, args),
        Command::Verify(args) => verify_cmd(file, *args),
        Command::Pull(args) => pull_cmd(file, args),
        Command::Images(args) => images_cmd(file, args),
        Command::Prune(args) => prune_cmd(file, args),
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
        // The TLS verifier logs every refused certificate as an error of its own; the pull error says it better.
        tracing_subscriber::EnvFilter::new(format!(
            "{default},libcontainer=error,libcgroups=error,rustls_platform_verifier=off"
        ))
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

/// The effective configuration: the file (`--config`, `THV_SANDBOX_CONFIG` or the default location), the
/// environment and the flags, combined by `settings::pick`.
fn load_config(file: Option<PathBuf>, settings: &SettingsArgs) -> Result<Config, i32> {
    let flags = settings::Flags {
        config: file,
        cache_dir: settings.cache_dir.clone(),
        insecure_registries: settings.insecure_registry.clone(),
        mirrors: settings.registry_mirror.clone(),
        ca_certs: settings.ca_cert.clone(),
    };
    Config::load(&flags).map_err(|e| report_error(&e, &[], e.hint(), EXIT_USAGE))
}

/// Configuration and directories for a subcommand.
fn setup(file: Option<PathBuf>, settings: &SettingsArgs) -> Result<(Config, Dirs), i32> {
    let config = load_config(file, settings)?;
    let dirs = Dirs::from_env(config.cache_dir.value.clone())
        .map_err(|e| report_error(&e, &[], Some(e.hint()), EXIT_SANDBOX_ERROR))?;
    Ok((config, dirs))
}

fn only_cache_dir(cache_dir: Option<PathBuf>) -> SettingsArgs {
    SettingsArgs {
        cache_dir,
        ..SettingsArgs::default()
    }
}

fn config_cmd(file: Option<PathBuf>, cmd: ConfigCommand) -> i32 {
    use std::io::Write;
    let settings = match &cmd {
        ConfigCommand::Path => SettingsArgs::default(),
        ConfigCommand::Show(s) => s.clone(),
    };
    if let ConfigCommand::Path = cmd {
        // Only where the file is: a malformed file must not stop anyone from finding it.
        let located = settings::locate(file.as_deref(), &|name| std::env::var(name).ok());
        return match located {
            Ok((path, _)) => {
                let _ = writeln!(std::io::stdout(), "{}", path.display());
                if !path.exists() {
                    eprintln!("(the file does not exist; every setting has its default)");
                }
                0
            }
            Err(e) => report_error(&e, &[], e.hint(), EXIT_USAGE),
        };
    }
    let config = match load_config(file, &settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let effective_cache = Dirs::from_env(config.cache_dir.value.clone())
        .ok()
        .map(|d| d.cache);
    let _ = std::io::stdout().write_all(config.render(effective_cache.as_deref()).as_bytes());
    0
}

fn doctor_cmd(file: Option<PathBuf>) -> i32 {
    let (config, dirs) = match setup(file, &SettingsArgs::default()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let tuf = match tuf_settings(&config) {
        Ok(t) => t.options(&dirs.cache),
        Err(code) => return code,
    };
    let mut report = doctor::diagnose(&doctor::DoctorInputs {
        state_dir: dirs.state,
        cache_dir: dirs.cache,
    });
    report.checks.extend(doctor::trust_root_checks(&tuf));
    eprint!("{}", report.render());
    if report.ok() {
        0
    } else {
        1
    }
}

/// Refreshing trusted roots through TUF, as configured.
fn tuf_settings(config: &Config) -> Result<TufSettings, i32> {
    config
        .tuf_settings()
        .map_err(|e| report_error(&e, &[], e.hint(), EXIT_USAGE))
}

fn trust_cmd(file: Option<PathBuf>, cmd: TrustCommand) -> i32 {
    use std::io::Write;
    let settings = match &cmd {
        TrustCommand::Show { settings, .. } | TrustCommand::Refresh { settings, .. } => settings,
    };
    let (config, dirs) = match setup(file, settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = match tuf_settings(&config) {
        Ok(t) => t.options(&dirs.cache),
        Err(code) => return code,
    };
    let all = [prov::Instance::PublicGood, prov::Instance::GitHub];
    match cmd {
        TrustCommand::Show { json, .. } => {
            let mut statuses = Vec::new();
            for instance in all {
                match prov::tuf::status(instance, &opts) {
                    Ok(st) => statuses.push(st),
                    Err(e) => {
                        eprintln!("error: {instance}: {e}");
                        return EXIT_SANDBOX_ERROR;
                    }
                }
            }
            let now = jiff::Timestamp::now();
            for st in &statuses {
                eprintln!("{}: {}", st.instance, st.trust_root.describe(now));
                eprintln!("  sha256:     {}", st.trust_root.sha256);
                eprintln!(
                    "  repository: {}{}",
                    st.repository,
                    if st.refresh {
                        ""
                    } else {
                        " (refreshing is off)"
                    }
                );
                if let Some(f) = &st.last_failure {
                    eprintln!("  last failed refresh: {f}");
                }
                for n in &st.notes {
                    eprintln!("  note: {n}");
                }
                if let Some(w) = &st.warning {
                    eprintln!("  warning: {w}");
                }
            }
            if json {
                let doc = serde_json::to_string_pretty(&statuses).unwrap_or_default();
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            0
        }
        TrustCommand::Refresh { instance, .. } => {
            let chosen: Vec<prov::Instance> = match instance.as_deref() {
                None => all.to_vec(),
                Some("public-good") => vec![prov::Instance::PublicGood],
                Some("github") => vec![prov::Instance::GitHub],
                Some(other) => {
                    eprintln!("error: --instance {other:?}: expected `public-good` or `github`");
                    return EXIT_USAGE;
                }
            };
            let mut code = 0;
            for instance in chosen {
                match prov::tuf::refresh(instance, &opts) {
                    Ok(root) => eprintln!(
                        "{instance}: refreshed through TUF from {}: {}",
                        opts.url(instance),
                        root.id().sha256
                    ),
                    Err(e) => {
                        eprintln!("{instance}: refresh failed: {e}");
                        eprintln!(
                            "hint: check the network and the repository URL (tuf_url_* in the configuration); \
                             the previous trust root stays in use"
                        );
                        code = EXIT_SANDBOX_ERROR;
                    }
                }
            }
            code
        }
    }
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Only the sandbox profile (not the cached image and its verification record).
    #[arg(long)]
    profile: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

fn inspect_cmd(file: Option<PathBuf>, args: InspectArgs) -> i32 {
    use std::io::Write;
    let (req, dirs) = match build_request(file, &args.run) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut profile = match thv_sandbox_runtime::inspect::effective_profile(&req) {
        Ok(p) => p,
        Err(e) => return report_error(&e, &[], e.hint(), EXIT_USAGE),
    };
    if !args.profile {
        profile.add_cached(&dirs.cache);
    }
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&profile).unwrap_or_default();
        s.push('\n');
        s
    } else {
        profile.render_text()
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

fn run_cmd(file: Option<PathBuf>, args: RunArgs) -> i32 {
    let (req, dirs) = match build_request(file, &args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::run(&req, &dirs) {
        Ok(summary) => summary.exit_code,
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

impl RunArgs {
    /// The flags as the settings layer takes them.
    fn flags(&self) -> RunFlags {
        RunFlags {
            image: self.image.clone(),
            args: self.args.clone(),
            pull: self.source.pull.into(),
            progress: ProgressMode::detect(self.source.quiet),
            image_verification: self.image_verification,
            identity: self.identity.flags(),
            registry: self.registry.registry.clone(),
            env: self.env.clone(),
            env_files: self.env_file.clone(),
            secrets: self.secret.clone(),
            port: self.port.clone(),
            port_token_file: self.port_token_file.clone(),
            socket: self.socket.clone(),
            seccomp_override: self.seccomp_override.clone(),
            volumes: self.volume.clone(),
            allow_profile_mounts: self.allow_profile_mounts,
            network: match self.network {
                NetworkArg::None => profile::NetworkMode::None,
                NetworkArg::Host => profile::NetworkMode::Host,
            },
            permission_profile: self.permission_profile.clone(),
            stop_timeout: self.stop_timeout,
            tmp_mib: self.tmp_size,
            timings: self.timings,
        }
    }
}

/// Says a notice of the settings layer on stderr.
pub(crate) fn say(n: request::Notice) {
    eprintln!("{n}");
}

/// The process environment, for the settings layer.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reports a settings error; returns its exit code.
pub(crate) fn report_request_error(e: &request::RequestError) -> i32 {
    let code = match e.kind() {
        request::Kind::Usage => EXIT_USAGE,
        request::Kind::Refused => EXIT_REFUSED,
        request::Kind::Failed => EXIT_SANDBOX_ERROR,
    };
    report_error(e, &[], e.hint(), code)
}

/// The flags, the configuration and the registry entry (if the name is one) → the request `run` carries out;
/// errors are reported here.
fn build_request(
    file: Option<PathBuf>,
    args: &RunArgs,
) -> Result<(thv_sandbox_runtime::RunRequest, Dirs), i32> {
    let flags = args.flags();
    if request::stop_timeout(flags.stop_timeout).is_none() {
        return Err(report_request_error(&request::RequestError::StopTimeout));
    }
    let (config, dirs) = setup(file, &args.source.settings)?;
    let req = request::build(&flags, &config, &dirs, &process_env, &mut say)
        .map_err(|e| report_request_error(&e))?;
    Ok((req, dirs))
}

fn pull_cmd(file: Option<PathBuf>, args: PullArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::pull(
        &args.image,
        args.source.pull.into(),
        &config.registry_access(),
        ProgressMode::detect(args.source.quiet),
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

fn images_cmd(file: Option<PathBuf>, args: ImagesArgs) -> i32 {
    let dirs = match setup(file, &only_cache_dir(args.cache_dir)) {
        Ok((_, d)) => d,
        Err(code) => return code,
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
    if args.check {
        return check_roots_cmd(&dirs);
    }
    0
}

/// `images --check`: one line per root on stderr; 1 if any root changed or cannot be read.
fn check_roots_cmd(dirs: &Dirs) -> i32 {
    use thv_sandbox_runtime::rootfs::RootCheck;
    let mut bad = false;
    for (root, check) in thv_sandbox_runtime::rootfs::check_roots(&dirs.cache) {
        let what = match &check {
            RootCheck::Unchanged => "unchanged".to_owned(),
            RootCheck::Changed => "CHANGED since it was unpacked: it will not be run".to_owned(),
            RootCheck::NoRecord => {
                "no record (unpacked by an older thv-sandbox; the next run unpacks it again)"
                    .to_owned()
            }
            RootCheck::Unreadable(e) => format!("cannot be checked: {e}"),
        };
        bad |= matches!(check, RootCheck::Changed | RootCheck::Unreadable(_));
        eprintln!("{}: {what}", root.display());
    }
    if bad {
        eprintln!(
            "hint: find out what wrote into the cache, then remove the changed roots (`chmod -R u+w ROOT && rm -rf \
             ROOT`); the next run unpacks the image afresh"
        );
        return 1;
    }
    0
}

fn prune_cmd(file: Option<PathBuf>, args: PruneArgs) -> i32 {
    let dirs = match setup(file, &only_cache_dir(args.cache_dir)) {
        Ok((_, d)) => d,
        Err(code) => return code,
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

fn verify_cmd(file: Option<PathBuf>, args: VerifyArgs) -> i32 {
    if let Some(image) = &args.image {
        return verify_image_cmd(file, image, &args);
    }
    let Some(bundle_path) = &args.bundle else {
        eprintln!("error: give --bundle FILE with --artifact FILE or --digest sha256:HEX");
        return EXIT_USAGE;
    };
    let policy = match args.identity.flags().policy() {
        Ok(Some(p)) => p,
        Ok(None) => return report_request_error(&request::RequestError::NoIdentity),
        Err(e) => return report_request_error(&e),
    };
    let artifact = match (&args.artifact, &args.digest) {
        (Some(path), None) => match std::fs::read(path) {
            Ok(b) => Blob::Bytes(b),
            Err(e) => {
                eprintln!("error: cannot read --artifact {}: {e}", path.display());
                return EXIT_USAGE;
            }
        },
        (None, Some(d)) => match d.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Blob::Sha256(hex.to_ascii_lowercase())
            }
            _ => {
                eprintln!("error: --digest {d:?} is not sha256:HEX (64 hex digits)");
                return EXIT_USAGE;
            }
        },
        _ => {
            eprintln!("error: give the artifact: --artifact FILE or --digest sha256:HEX");
            return EXIT_USAGE;
        }
    };
    let text = match std::fs::read_to_string(bundle_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read --bundle {}: {e}", bundle_path.display());
            return EXIT_USAGE;
        }
    };
    let subject = match &artifact {
        Blob::Bytes(b) => prov::Subject::Blob(b),
        Blob::Sha256(h) => prov::Subject::Sha256(h),
    };
    // Trust roots through TUF into the cache (not with --trust-root).
    // Blob mode needs no cache otherwise: without a cache directory, the embedded roots.
    let tuf = if args.identity.trust_root.is_none() {
        let config = match load_config(file, &args.source.settings) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let settings = match tuf_settings(&config) {
            Ok(t) => t,
            Err(code) => return code,
        };
        match Dirs::from_env(config.cache_dir.value.clone()) {
            Ok(dirs) => Some(settings.options(&dirs.cache)),
            Err(e) => {
                tracing::info!("no refresh of trust roots through TUF: {e}");
                None
            }
        }
    } else {
        None
    };
    let verdict = args.identity.verifier(tuf).and_then(|verifier| {
        if let Ok(instance) = policy.instance() {
            let root = verifier.trust_root(instance)?;
            if let Some(w) = root.id().age_warning(instance, jiff::Timestamp::now()) {
                eprintln!("thv-sandbox: warning: {w}");
            }
        }
        let bundles = prov::Bundle::parse_all(&text)?;
        verifier.verify(&bundles, subject, &policy)
    });
    report_verdict(&verdict, &bundle_path.display().to_string(), args.json)
}

/// `thv-sandbox verify IMAGE`: evidence from the registry, verified under `enabled`; no layer is fetched.
fn verify_image_cmd(file: Option<PathBuf>, image: &str, args: &VerifyArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // A server of the registry: its image, checked against the provenance the registry declares for it (identity
    // flags, when given, replace that policy).
    let (image, verification) = match request::verify_target(
        image,
        args.registry.registry.as_deref(),
        &args.identity.flags(),
        &config,
        &process_env,
        &mut say,
    ) {
        Ok(x) => x,
        Err(e) => return report_request_error(&e),
    };
    let image = image.as_str();
    let outcome = match thv_sandbox_runtime::verify(
        image,
        args.source.pull.into(),
        &config.registry_access(),
        ProgressMode::detect(args.source.quiet),
        &dirs,
        &verification,
    ) {
        Ok(outcome) => outcome,
        Err(e) => return report_runtime_error(&e, &dirs),
    };
    use thv_sandbox_runtime::trust::verification::Outcome;
    match outcome {
        Outcome::Verified { record, reused } => {
            let what = format!(
                "{image} ({}{})",
                record.manifest_digest,
                if reused {
                    ", from the verification record"
                } else {
                    ""
                }
            );
            eprintln!(
                "  evidence from: {} for {}",
                record.evidence_source, record.evidence_subject
            );
            report_verdict(&Ok(record.verified.clone()), &what, args.json)
        }
        Outcome::Refused { reason, hint } => {
            eprintln!("refused: {image}: {reason}");
            eprintln!("hint: {hint}");
            if args.json {
                use std::io::Write;
                let doc = serde_json::json!({"verified": false, "message": reason, "hint": hint});
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
        other => {
            eprintln!(
                "error: {image}: verification did not run ({:?})",
                Some(other)
            );
            EXIT_SANDBOX_ERROR
        }
    }
}

enum Blob {
    Bytes(Vec<u8>),
    Sha256(String),
}

/// Says the verdict on stderr (and as JSON on stdout with `--json`); returns the exit status.
fn report_verdict(verdict: &Result<prov::Verified, prov::Refusal>, what: &str, json: bool) -> i32 {
    use std::io::Write;
    match verdict {
        Ok(v) => {
            let c = &v.claims;
            eprintln!("verified: {what}");
            eprintln!("  signer:      {}", c.san.as_deref().unwrap_or("-"));
            eprintln!("  issuer:      {}", c.issuer.as_deref().unwrap_or("-"));
            if let Some(r) = &c.source_repository_uri {
                eprintln!(
                    "  repository:  {r} @ {}",
                    c.source_repository_ref.as_deref().unwrap_or("-")
                );
            }
            if let Some(r) = &c.runner_environment {
                eprintln!("  runner:      {r}");
            }
            eprintln!(
                "  evidence:    {} ({} log entries, SCT {}, {} RFC 3161 timestamps), signed {}",
                v.evidence.kind,
                v.evidence.tlog_entries,
                if v.evidence.sct { "yes" } else { "no" },
                v.evidence.rfc3161_timestamps,
                v.evidence.signing_time
            );
            let now = jiff::Timestamp::now();
            eprintln!(
                "  trust root:  {} ({}; {})",
                v.trust_root.source,
                v.trust_root.describe(now),
                v.instance
            );
            if json {
                let doc = serde_json::json!({
                    "verified": true,
                    "result": v,
                    "trust_root_age_days": v.trust_root.age_days(now),
                });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            0
        }
        Err(e) => {
            eprintln!("refused: {what}: {e}");
            eprintln!("hint: {}", e.hint());
            if json {
                let doc = serde_json::json!({
                    "verified": false,
                    "reason": e.kind(),
                    "message": e.to_string(),
                    "hint": e.hint(),
                });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
    }
}

/// Reports an error of the pipeline; returns its exit code. When the sandbox could not be created, the doctor's
/// checks run here and their finding is the hint.
fn report_runtime_error(e: &thv_sandbox_runtime::Error, dirs: &Dirs) -> i32 {
    let hint = match e.wants_doctor() {
        true => {
            let report = doctor::diagnose(&doctor::DoctorInputs {
                state_dir: dirs.state.clone(),
                cache_dir: dirs.cache.clone(),
            });
            Some(doctor::hint_for_sandbox_failure(&report))
        }
        false => e.hint(),
    };
    report_error(e, e.remote_causes(), hint, e.exit_code())
}

/// `error: …`, indented `caused by: …` lines, and a `hint: …`.
pub(crate) fn report_error(
    err: &dyn std::error::Error,
    remote: &[String],
    hint: Option<String>,
    code: i32,
) -> i32 {
    let mut seen = thv_sandbox_runtime::chain::messages(err);
    eprintln!("error: {}", seen[0]);
    for s in &seen[1..] {
        eprintln!("  caused by: {s}");
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
