//! `thv-sandbox`: run MCP servers from OCI images in rootless sandboxes.
//!
//! Parse (clap) → resolve settings → call the runtime → render errors. stdout belongs to the MCP server alone:
//! everything this binary says goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::catalog::{env as catalog_env, launch};
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::distribution::PullPolicy;
use thv_sandbox_runtime::sandbox::secret::SecretEnv;
use thv_sandbox_runtime::settings::{self, Config};
use thv_sandbox_runtime::{
    cache, doctor, sandbox::profile, sandbox::runner, RegistryAccess, EXIT_SANDBOX_ERROR,
    EXIT_USAGE,
};

mod client_cmd;
mod clients;
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
    /// 1 refused, 2 usage.
    Verify(Box<VerifyArgs>),
    /// Trusted roots of the Sigstore instances: `trust show` (which root verification uses offline and how old it
    /// is), `trust refresh` (refresh through TUF now).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// MCP clients' configuration files: `client list` (the clients found and their files), `client add NAME
    /// --client CLIENT` (pull and verify, then write the entry in that client's own format), `client remove`.
    #[command(subcommand)]
    Client(client_cmd::ClientCommand),
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
    fn any_identity_flag(&self) -> bool {
        [
            &self.certificate_identity,
            &self.certificate_oidc_issuer,
            &self.certificate_github_workflow_repository,
            &self.certificate_github_workflow_ref,
            &self.certificate_github_workflow_sha,
            &self.certificate_github_workflow_trigger,
            &self.certificate_github_workflow_name,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    /// The policy the flags give; `None` when they name none (the caller decides whether that is an error).
    fn policy(&self) -> Result<Option<prov::Policy>, String> {
        if self.insecure_any_identity && self.any_identity_flag() {
            return Err(
                "--insecure-any-identity contradicts the identity flags given with it".into(),
            );
        }
        if self.insecure_any_identity {
            return Ok(Some(prov::Policy::InsecureAnyIdentity {
                sigstore_url: self.sigstore_url.clone(),
            }));
        }
        if !self.any_identity_flag() {
            return Ok(None);
        }
        Ok(Some(prov::Policy::Identity(prov::IdentityPolicy {
            sigstore_url: self.sigstore_url.clone(),
            certificate_identity: self.certificate_identity.clone(),
            certificate_oidc_issuer: self.certificate_oidc_issuer.clone(),
            github_workflow_repository: self.certificate_github_workflow_repository.clone(),
            github_workflow_ref: self.certificate_github_workflow_ref.clone(),
            github_workflow_sha: self.certificate_github_workflow_sha.clone(),
            github_workflow_trigger: self.certificate_github_workflow_trigger.clone(),
            github_workflow_name: self.certificate_github_workflow_name.clone(),
        })))
    }

    /// The verification settings for images.
    fn verification(
        &self,
        mode: Option<thv_sandbox_runtime::Mode>,
        tuf: TufSettings,
    ) -> Result<thv_sandbox_runtime::Verification, String> {
        Ok(thv_sandbox_runtime::Verification {
            tuf,
            mode,
            policy: self.policy()?,
            trust_root: self.trust_root.clone(),
            github_api: std::env::var("THV_SANDBOX_GITHUB_API")
                .ok()
                .filter(|v| !v.is_empty()),
            github_token: std::env::var("GITHUB_TOKEN").ok().filter(|v| !v.is_empty()),
        })
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
        Command::Client(cmd) => client_cmd::client_cmd(file, cmd),
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

/// Refreshing trusted roots through TUF: the configuration (file, environment), and the test-only bootstrap roots
/// from the environment.
fn tuf_settings(config: &Config) -> Result<TufSettings, i32> {
    TufSettings::from_env(config.tuf_settings(), &|name| std::env::var(name).ok()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
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
    let (req, dirs) = match build_request(file, &args.run, false) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut profile = match thv_sandbox_runtime::inspect::effective_profile(&req) {
        Ok(p) => p,
        Err(e) => return report_error(&e, &[], e.hint(None), EXIT_USAGE),
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
    let (req, dirs) = match build_request(file, &args, false) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::run(&req, &dirs) {
        Ok(summary) => summary.exit_code,
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

/// The longest `--stop-timeout`: a day (anything longer is a mistake, and must not overflow a deadline).
const MAX_STOP_TIMEOUT_SECS: f64 = 86_400.0;

/// `--stop-timeout` as a duration: finite, from 0 to [`MAX_STOP_TIMEOUT_SECS`].
fn stop_timeout(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX_STOP_TIMEOUT_SECS).contains(&secs))
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

/// The flags, the configuration and the registry entry (if the name is one) → the request `run` carries out.
/// Everything a refusal can come from is decided here, before anything is pulled; errors are reported here.
/// `for_client`: the request a client's later start would make, built to pull and verify its image now — declared
/// variables that are not set here are taken as empty (the client gives them at start; nothing is started here).
fn build_request(
    file: Option<PathBuf>,
    args: &RunArgs,
    for_client: bool,
) -> Result<(thv_sandbox_runtime::RunRequest, Dirs), i32> {
    let Some(stop_timeout) = stop_timeout(args.stop_timeout) else {
        eprintln!(
            "error: --stop-timeout must be a number of seconds from 0 to {MAX_STOP_TIMEOUT_SECS}\n  hint: the \
             server gets this long to exit after SIGTERM; 3 is the default"
        );
        return Err(EXIT_USAGE);
    };
    let (config, dirs) = setup(file, &args.source.settings)?;
    let launch = plan_launch(args, &config, for_client)?;
    let (secret_env, plain): (Vec<_>, Vec<_>) = launch.env.into_iter().partition(|v| v.secret());
    let env: Vec<(String, String)> = plain
        .into_iter()
        .map(|v| (v.name, v.value.expose().to_owned()))
        .collect();
    let mut secrets: Vec<SecretEnv> = secret_env
        .iter()
        .map(|v| SecretEnv::new(v.name.clone(), v.value.expose()))
        .collect();
    for name in &args.secret {
        match std::env::var(name) {
            Ok(value) if !name.is_empty() && !name.contains('=') => {
                secrets.retain(|s| s.name != *name);
                secrets.push(SecretEnv::new(name, value));
            }
            _ => {
                eprintln!(
                    "error: `--secret {name}` names no variable of this environment\n  hint: export {name} first; \
                     `--secret` takes a variable's name, never its value"
                );
                return Err(EXIT_USAGE);
            }
        }
    }
    // A secret is never also written as a plain variable.
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| !secrets.iter().any(|s| s.name == *k))
        .collect();
    // The permission profile's paths, then `-v` (which wins for the same container path).
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let profile_mounts = match profile::permission_mounts(
        &launch.permissions.read,
        &launch.permissions.write,
        home.as_deref(),
    ) {
        Ok(m) => m,
        Err(e) => return Err(report_error(&e, &[], Some(e.hint()), EXIT_USAGE)),
    };
    let mut user_mounts = Vec::new();
    for v in &args.volume {
        match profile::parse_volume(v, home.as_deref()) {
            Ok(m) => user_mounts.push(m),
            Err(e) => return Err(report_error(&e, &[], Some(e.hint()), EXIT_USAGE)),
        }
    }
    // Profile mounts are shown, and the broad ones need the user's consent; no mount reaches our own dirs (F4, F7).
    let private = profile::private_paths(&dirs, home.as_deref());
    let checked = profile::check_private(&profile_mounts, &private)
        .and_then(|()| profile::check_private(&user_mounts, &private))
        .and_then(|()| match args.allow_profile_mounts {
            true => Ok(()),
            false => profile::check_profile_mounts(&profile_mounts, home.as_deref(), &private),
        });
    if let Err(e) = checked {
        return Err(report_error(&e, &[], Some(e.hint()), EXIT_USAGE));
    }
    let from_profile = profile_mounts.clone();
    let mounts = match profile::merge(profile_mounts, user_mounts) {
        Ok(m) => m,
        Err(e) => return Err(report_error(&e, &[], Some(e.hint()), EXIT_USAGE)),
    };
    for m in mounts.iter().filter(|m| from_profile.contains(m)) {
        eprintln!(
            "thv-sandbox: the permission profile mounts {}",
            profile::describe(m)
        );
    }
    // Verification: identity flags, else the provenance the registry declares for the entry; the mode from the
    // flag (or its environment variable), else the configuration file, else by whether a policy exists.
    let tuf = tuf_settings(&config)?;
    let mut verification = match args.identity.verification(args.image_verification, tuf) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_USAGE);
        }
    };
    if verification.policy.is_none() {
        verification.policy = launch.provenance.as_ref().map(entry_policy_of);
    }
    if verification.mode.is_none() {
        verification.mode = config.image_verification.value.map(|m| match m {
            settings::ImageVerification::Disabled => thv_sandbox_runtime::Mode::Disabled,
            settings::ImageVerification::Warn => thv_sandbox_runtime::Mode::Warn,
            settings::ImageVerification::Enabled => thv_sandbox_runtime::Mode::Enabled,
        });
    }
    let port = match thv_sandbox_runtime::sandbox::bridge::Expose::from_flags(
        args.port.as_deref(),
        args.socket.as_deref(),
        args.port_token_file.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_USAGE);
        }
    };
    let req = thv_sandbox_runtime::RunRequest {
        image: launch.image,
        pull_policy: args.source.pull.into(),
        registry_access: RegistryAccess::from_config(&config),
        progress: ProgressMode::detect(args.source.quiet),
        args: launch.args.clone(),
        env,
        secrets,
        mounts,
        network: launch.network,
        egress: launch.egress.clone(),
        http: launch.http,
        port,
        server_name: launch.server,
        permissions: launch.permissions,
        provenance: launch.provenance,
        seccomp_profile: launch.seccomp_profile,
        seccomp_override: args.seccomp_override.clone(),
        verification,
        stop_timeout,
        tmp_mib: args.tmp_size,
        cache_dir: config.cache_dir.value.clone(),
        exe: PathBuf::from("/proc/self/exe"),
        timings: args.timings || std::env::var_os("THV_SANDBOX_TIMINGS").is_some_and(|v| v == "1"),
    };
    Ok((req, dirs))
}

/// The verification policy of a registry entry's declared provenance (ToolHive semantics; never "any identity").
fn entry_policy_of(p: &thv_sandbox_runtime::catalog::Provenance) -> prov::Policy {
    prov::Policy::Provenance(prov::Provenance {
        sigstore_url: p.sigstore_url.clone(),
        repository_uri: p.repository_uri.clone(),
        repository_ref: p.repository_ref.clone(),
        signer_identity: p.signer_identity.clone(),
        runner_environment: p.runner_environment.clone(),
        cert_issuer: p.cert_issuer.clone(),
        attestation: p.attestation.as_ref().map(|a| prov::Attestation {
            predicate_type: a.predicate_type.clone(),
            predicate: a.predicate.clone(),
        }),
    })
}

/// Flags + registry entry (if the name is one) → what to run; errors are reported here (the exit code is
/// returned).
fn plan_launch(args: &RunArgs, config: &Config, for_client: bool) -> Result<launch::Launch, i32> {
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
            NetworkArg::None => profile::NetworkMode::None,
            NetworkArg::Host => profile::NetworkMode::Host,
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
        Some(registry_cmd::load(&args.registry, config)?)
    };
    let server = match loaded.as_ref().map(|l| l.catalog.find(&args.image)) {
        Some(Ok(None)) => {
            let typos = loaded
                .as_ref()
                .map(|l| l.catalog.typo_of(&args.image))
                .unwrap_or_default();
            if !typos.is_empty() {
                eprintln!(
                    "error: no server named `{}` in the registry (did you mean {}?)\n  hint: to run the Docker Hub \
                     image of that name instead, write it in full: docker.io/library/{}",
                    args.image,
                    typos.join(", "),
                    args.image
                );
                return Err(EXIT_USAGE);
            }
            None
        }
        None => None,
        Some(Ok(Some(s))) => Some(s),
        Some(Err(e)) => return Err(report_error(&e, &[], e.hint(), EXIT_USAGE)),
    };
    if let Some(s) = server {
        tracing::info!("`{}` is the registry's `{}`", args.image, s.name);
    }
    // The configuration file's `permission_profile` is the default: after the flag and the registry entry's.
    if user.permissions.is_none() && server.is_none_or(|s| s.permissions.is_none()) {
        if let Some(p) = &config.permission_profile.value {
            let arg = match p {
                settings::PermissionProfile::None => "none".to_owned(),
                settings::PermissionProfile::Network => "network".to_owned(),
                settings::PermissionProfile::File(f) => f.to_string_lossy().into_owned(),
            };
            user.permissions = Some(
                launch::parse_profile_arg(&arg, &|path| std::fs::read(path))
                    .map_err(|e| report(&e))?,
            );
        }
    }
    launch::plan(
        server,
        &args.image,
        &user,
        &launch::seccomp_variants(),
        &|name| {
            std::env::var(name)
                .ok()
                .or_else(|| for_client.then(String::new))
        },
    )
    .map_err(|e| report(&e))
}

/// What `client add` needs of a server: checked as `run` would check it (a server `run` refuses is refused
/// here), and, unless `no_pull`, its image pulled and verified now.
pub(crate) fn prepare_for_client(
    file: Option<PathBuf>,
    name: &str,
    registry: &registry_cmd::RegistrySourceArgs,
    run_flags: &[String],
    no_pull: bool,
) -> Result<clients::PreparedServer, i32> {
    let mut argv = vec!["thv-sandbox".to_owned(), "run".to_owned()];
    argv.extend(run_flags.iter().cloned());
    if let Some(r) = &registry.registry {
        argv.push(format!("--registry={r}"));
    }
    argv.push(name.to_owned());
    let args = match Cli::try_parse_from(&argv) {
        Ok(Cli {
            command: Command::Run(args),
            ..
        }) => *args,
        Ok(_) => return Err(EXIT_USAGE),
        Err(e) => {
            eprintln!("error: the run flags do not parse: {}", e.kind());
            let _ = e.print();
            return Err(EXIT_USAGE);
        }
    };
    let (config, _) = setup(file.clone(), &args.source.settings)?;
    let server = if name.starts_with("oci:") {
        None
    } else {
        let loaded = registry_cmd::load(&args.registry, &config)?;
        loaded.catalog.find(name).ok().flatten().cloned()
    };
    let (req, dirs) = build_request(file, &args, true)?;
    if !no_pull && !req.image.starts_with("oci:") {
        match thv_sandbox_runtime::pull_verified(
            &req.image,
            req.pull_policy,
            &req.registry_access,
            req.progress,
            &dirs,
            &req.verification,
        ) {
            Ok((pulled, outcome)) => {
                use thv_sandbox_runtime::trust::verification::Outcome;
                let verdict = match outcome {
                    Outcome::Verified { .. } => "verified".to_owned(),
                    Outcome::Unverified { reason } => format!("UNVERIFIED: {reason}"),
                    Outcome::Skipped => "verification disabled".to_owned(),
                    Outcome::Refused { reason, .. } => format!("refused: {reason}"),
                };
                eprintln!("thv-sandbox: {} is ready ({verdict})", pulled.tag_ref);
            }
            Err(e) => return Err(report_runtime_error(&e, &dirs)),
        }
    }
    Ok(clients::PreparedServer {
        short_name: server
            .as_ref()
            .map(|s| s.short_name().to_owned())
            .unwrap_or_else(|| clients::entry_name_for_image(name)),
        declared: server.map(|s| s.env_vars).unwrap_or_default(),
    })
}

fn pull_cmd(file: Option<PathBuf>, args: PullArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::pull(
        &args.image,
        args.source.pull.into(),
        &RegistryAccess::from_config(&config),
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

/// Exit status of a refused verification.
const EXIT_REFUSED: i32 = 1;

/// `verify` without any expected identity: a usage error that says how to name one.
fn no_identity() -> i32 {
    eprintln!(
        "error: no expected identity: give --certificate-identity and/or --certificate-oidc-issuer (or \
         --certificate-github-workflow-repository …)"
    );
    eprintln!("hint: to accept any signer the instance certified, say so: --insecure-any-identity");
    EXIT_USAGE
}

fn verify_cmd(file: Option<PathBuf>, args: VerifyArgs) -> i32 {
    if let Some(image) = &args.image {
        return verify_image_cmd(file, image, &args);
    }
    let Some(bundle_path) = &args.bundle else {
        eprintln!("error: give --bundle FILE with --artifact FILE or --digest sha256:HEX");
        return EXIT_USAGE;
    };
    let policy = match args.identity.policy() {
        Ok(Some(p)) => p,
        Ok(None) => {
            return no_identity();
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
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
    let mut image = image.to_owned();
    let mut entry_policy = None;
    if !image.starts_with("oci:") {
        let loaded = match registry_cmd::load(&args.registry, &config) {
            Ok(l) => l,
            Err(code) => return code,
        };
        match loaded.catalog.find(&image) {
            Ok(Some(server)) => {
                if let Some(i) = &server.image {
                    image = i.clone();
                }
                entry_policy = server.provenance.as_ref().map(entry_policy_of);
                if entry_policy.is_none() && !args.identity.any_identity_flag() {
                    eprintln!(
                        "error: the registry declares no provenance for `{}`: there is no identity to verify against",
                        server.name
                    );
                    eprintln!("hint: give the expected identity with --certificate-identity/--certificate-oidc-issuer");
                    return EXIT_REFUSED;
                }
            }
            Ok(None) => {}
            Err(e) => return report_error(&e, &[], e.hint(), EXIT_USAGE),
        }
    }
    let image = image.as_str();
    let tuf = match tuf_settings(&config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let verification = match args
        .identity
        .verification(Some(thv_sandbox_runtime::Mode::Enabled), tuf)
        .map(|mut v| {
            if v.policy.is_none() {
                v.policy = entry_policy.clone();
            }
            v
        }) {
        Ok(v) if v.policy.is_some() => v,
        Ok(_) => {
            return no_identity();
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let outcome = match thv_sandbox_runtime::verify(
        image,
        args.source.pull.into(),
        &RegistryAccess::from_config(&config),
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
