//! The command line as clap parses it: one struct per command's flags (add a flag to its struct; shared groups
//! are flattened). Nothing here decides anything: [`RunArgs::flags`] hands the flags to the settings layer.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::distribution::PullPolicy;
use thv_sandbox_runtime::report::ProgressMode;
use thv_sandbox_runtime::sandbox::profile;
use thv_sandbox_runtime::settings::request::{IdentityFlags, RunFlags};

#[derive(Debug, Parser)]
#[command(
    name = "thv-sandbox",
    version = crate::VERSION,
    about = "Run MCP servers from OCI images in rootless sandboxes"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) globals: Globals,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The arguments of every subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct Globals {
    /// More log output on stderr (once: info, twice: debug); RUST_LOG overrides.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// The configuration file (default: $THV_SANDBOX_CONFIG, else $XDG_CONFIG_HOME/thv-sandbox/config.toml or
    /// ~/.config/thv-sandbox/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

impl Cli {
    /// `thv-sandbox run …`, every server's start, parsed with `run`'s arguments only: the derived parser builds
    /// the arguments of every subcommand first (0.27 ms of CPU per parse on the benchmark host, ~0.5 ms the first
    /// time, which a start always is). `None` for any other command (or options before `run`), and for anything
    /// but a clean parse (help, a mistake): the whole parser then says it, so what a user sees does not change.
    pub(crate) fn parse_run_from<I, T>(argv: I) -> Option<Cli>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{Args, FromArgMatches};
        let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
        if argv.get(1).is_none_or(|a| a != "run") {
            return None;
        }
        let cmd = Globals::augment_args(clap::Command::new("thv-sandbox"))
            .subcommand(RunArgs::augment_args(clap::Command::new("run")));
        let matches = cmd.try_get_matches_from(argv).ok()?;
        let ("run", sub) = matches.subcommand()? else {
            return None;
        };
        Some(Cli {
            globals: Globals::from_arg_matches(&matches).ok()?,
            command: Command::Run(Box::new(RunArgs::from_arg_matches(sub).ok()?)),
        })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an MCP server over stdio in a sandbox: `thv-sandbox run NAME|IMAGE|npx://PKG|uvx://PKG [-- ARGS…]`.
    Run(Box<RunArgs>),
    /// Show what `run` with the same arguments would give the server — network, mounts, environment names,
    /// seccomp profile, declared provenance — without pulling or starting anything. Required variables that are
    /// not given are listed as missing (where `run` would refuse).
    Inspect(Box<InspectArgs>),
    /// The curated server registry: `list`, `search QUERY`, `info NAME`.
    Registry(crate::commands::registry::RegistryArgs),
    /// Pull an image (or a registry server's image, by name) into the cache and unpack it, ready to run; prints
    /// the pinned reference (`…@sha256:…`) on stdout. Pull before adding a server to an MCP client, so that its
    /// start-up timeout never covers a download.
    Pull(Box<PullArgs>),
    /// List the cached images, one row per image with its sizes, and a total (a table on stdout; `--json` for a
    /// JSON array).
    Images(ImagesArgs),
    /// Remove from the cache what no cached image needs: blobs, unpacked roots, leftovers of interrupted pulls
    /// (only what is an hour old, unless `--force`; never what a running server uses).
    Prune(PruneArgs),
    /// Check whether this host can run rootless sandboxes, and how to fix what is missing (`--json`: every check
    /// as JSON on stdout).
    Doctor {
        /// Print the report as a JSON object on stdout (`ok`, and `checks`: name, status, detail, hint).
        #[arg(long)]
        json: bool,
    },
    /// The configuration file: `config path` prints where it is, `config show` the effective settings and where
    /// each comes from (flag, environment, file, default).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify provenance of an image (`verify IMAGE`, evidence from its registry, no layer fetched) or of a file
    /// (`verify --bundle F (--artifact F | --digest sha256:…)`). The exit status is the verdict: 0 verified,
    /// 124 refused, 2 usage.
    Verify(Box<VerifyArgs>),
    /// Trusted roots of the Sigstore instances: `trust show` (which root verification uses offline and how old it
    /// is), `trust refresh` (refresh through TUF now); unverified servers accepted knowingly: `trust accept NAME`,
    /// `trust accepted`, `trust revoke NAME`.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// MCP clients' configuration files: `client list` (the clients found and their files), `client add NAME
    /// --client CLIENT` (pull and verify, then write the entry in that client's own format), `client remove`.
    #[command(subcommand)]
    Client(crate::client_cmd::ClientCommand),
    /// Internal: the runner process (started by `run`).
    #[command(name = "__runner", hide = true)]
    Runner { run_dir: PathBuf },
    /// Print a shell completion script on stdout: `thv-sandbox completions bash|zsh|fish|elvish|powershell`
    /// (e.g. `thv-sandbox completions bash > ~/.local/share/bash-completion/completions/thv-sandbox`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page thv-sandbox(1) (roff) on stdout, or write one page per command into a directory.
    Man(ManArgs),
    /// Remove images from the cache: `rmi NAME|IMAGE|DIGEST…` removes each image's names, its unpacked root and
    /// the blobs no other image uses (a root a running server uses is kept until `prune`).
    Rmi(crate::commands::rmi::RmiArgs),
    /// Pinned tool descriptions of the servers run: `pin show [NAME]`, `pin accept NAME` (what the server says
    /// now becomes its pin), `pin reset NAME`.
    #[command(subcommand)]
    Pin(crate::commands::pin::PinCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TrustCommand {
    /// Which trust root each instance's verification uses offline: embedded or refreshed through TUF, its sha256
    /// and age (text on stdout; `--json`: JSON on stdout instead).
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
    /// Accept an unverified server knowingly: `trust accept NAME|IMAGE` records the manifest digest it resolves
    /// to (pulling it when missing). Runs of that digest no longer print the UNVERIFIED warning (`--verbose`
    /// says it was accepted); any other digest warns again. Only for images with no provenance to check: a
    /// server that declares provenance is verified, never accepted; `image_verification = enabled` still
    /// refuses accepted images.
    Accept(crate::commands::accept::AcceptArgs),
    /// List the accepted unverified images (a table on stdout; `--json`).
    Accepted(crate::commands::accept::AcceptedArgs),
    /// Revoke acceptances: `trust revoke NAME|IMAGE|DIGEST`; their runs warn again.
    Revoke(crate::commands::accept::RevokeArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the path of the configuration file in effect (stdout); say on stderr whether it exists.
    Path,
    /// Print the effective settings as TOML (stdout), each with where it comes from; `--json` for JSON.
    Show(ConfigShowArgs),
}

#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ConfigShowArgs {
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
    /// Print JSON instead of TOML: each setting's value and where it comes from.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Settings that the configuration file can also give (flags win over the environment, which wins over the file).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SettingsArgs {
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// A registry (HOST[:PORT]) that may be reached over plain HTTP; loopback registries always may. Repeatable
    /// (also THV_SANDBOX_INSECURE_REGISTRIES, config `insecure_registries`).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
    /// Pull images named as being on REGISTRY from MIRROR instead (the image keeps its name). Repeatable (also
    /// THV_SANDBOX_REGISTRY_MIRRORS, config `[mirrors]`).
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    pub(crate) registry_mirror: Vec<String>,
    /// A PEM file of CA certificates to trust for registries, besides the system's. Repeatable (also
    /// THV_SANDBOX_CA_CERTS, config `ca_certs`).
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(crate) ca_cert: Vec<PathBuf>,
}

/// Where images come from.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// When to contact the registry: `always` (resolve the tag again), `missing` (use the cache when it has the
    /// image), `never` (cache only, no network).
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pub(crate) pull: PullArg,
    /// Say nothing about pulling (by default: per-layer progress when stderr is a terminal, else one line per
    /// pulled image; always on stderr). Warnings stay: to stop the UNVERIFIED one for a server, accept it
    /// knowingly with `thv-sandbox trust accept NAME`.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum PullArg {
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
pub(crate) struct PullArgs {
    /// A server of the registry by name (`time`: its image), or an image: a registry reference
    /// (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`).
    pub(crate) image: String,
    /// The image an `npx://` or `uvx://` package is installed onto (as `run --base-image`).
    #[arg(long = "base-image", value_name = "IMAGE")]
    pub(crate) base_image: Option<String>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) registry: crate::commands::registry::RegistrySourceArgs,
    /// A package's provenance verification (as `run`): `disabled`, `warn`, `enabled` (refuse the install when the
    /// package's provenance does not name the expected identity). Default: `enabled` when the registry entry
    /// pins an identity or one is given, `warn` otherwise. An image is pulled unverified (`run` verifies).
    #[arg(long, value_name = "MODE", env = "THV_SANDBOX_IMAGE_VERIFICATION")]
    pub(crate) image_verification: Option<thv_sandbox_runtime::Mode>,
    /// The identity a package's provenance must name (instead of the registry entry's pin).
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Check every unpacked root against the record made when it was unpacked (one lstat per file); exit 1 if
    /// one changed.
    #[arg(long)]
    pub(crate) check: bool,
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also remove what is younger than an hour (what no image needs, and no running server or pull in progress
    /// holds: while a pull runs, its recent blobs are kept all the same).
    #[arg(long)]
    pub(crate) force: bool,
    /// Cache directory (also THV_SANDBOX_CACHE_DIR, config `cache_dir`; default: $XDG_CACHE_HOME/thv-sandbox or
    /// ~/.cache/thv-sandbox).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum NetworkArg {
    /// Only loopback, in the sandbox's own network namespace.
    None,
    /// The host's network, loopback services included (no filtering).
    Host,
}

/// The identity the evidence must name (cosign's flags), and the trust material.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct IdentityArgs {
    /// The exact certificate SAN, e.g. `https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1`.
    #[arg(long, value_name = "SAN")]
    pub(crate) certificate_identity: Option<String>,
    /// The OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    #[arg(long, value_name = "URL")]
    pub(crate) certificate_oidc_issuer: Option<String>,
    /// The GitHub repository (`owner/repo`) the workflow ran in.
    #[arg(long, value_name = "OWNER/REPO")]
    pub(crate) certificate_github_workflow_repository: Option<String>,
    /// The git ref the workflow ran for, e.g. `refs/tags/v1.0.0`.
    #[arg(long, value_name = "REF")]
    pub(crate) certificate_github_workflow_ref: Option<String>,
    /// The commit the workflow ran for.
    #[arg(long, value_name = "SHA")]
    pub(crate) certificate_github_workflow_sha: Option<String>,
    /// The event that triggered the workflow, e.g. `push`, `release`.
    #[arg(long, value_name = "EVENT")]
    pub(crate) certificate_github_workflow_trigger: Option<String>,
    /// The workflow's display name.
    #[arg(long, value_name = "NAME")]
    pub(crate) certificate_github_workflow_name: Option<String>,
    /// Accept any signer the instance certified (no identity check). Explicit, never a default.
    #[arg(long)]
    pub(crate) insecure_any_identity: bool,
    /// The Sigstore instance that signed, by its TUF repository: `tuf-repo-cdn.sigstore.dev` (public-good,
    /// default) or `tuf-repo.github.com` (GitHub's). It decides which evidence is required.
    #[arg(long, value_name = "HOST")]
    pub(crate) sigstore_url: Option<String>,
    /// A trusted_root.json to use instead of the embedded trust roots (replaces trust material, not the evidence
    /// the instance requires).
    #[arg(long, value_name = "FILE")]
    pub(crate) trust_root: Option<PathBuf>,
}

impl IdentityArgs {
    pub(crate) fn flags(&self) -> IdentityFlags {
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
    pub(crate) fn verifier(
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
pub(crate) struct VerifyArgs {
    /// An image (registry reference): its evidence is found at the registry and verified; no layer is fetched.
    #[arg(conflicts_with_all = ["bundle", "artifact", "digest"])]
    pub(crate) image: Option<String>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) registry: crate::commands::registry::RegistrySourceArgs,
    /// A Sigstore bundle (JSON, or JSON Lines with one bundle per line; any one that verifies is enough).
    #[arg(long, value_name = "FILE")]
    pub(crate) bundle: Option<PathBuf>,
    /// The file the bundle is about.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "digest",
        requires = "bundle"
    )]
    pub(crate) artifact: Option<PathBuf>,
    /// The digest of the artifact the bundle is about, `sha256:HEX`.
    #[arg(long, value_name = "sha256:HEX", requires = "bundle")]
    pub(crate) digest: Option<String>,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A server of the registry by name (`time`, `io.github.stacklok/fetch`, or its short name `fetch`), or an
    /// image: a registry reference (`ghcr.io/org/image:tag`, `alpine`, `image@sha256:…`) or an OCI image layout
    /// directory, `oci:PATH[:TAG]`; or a package, installed once in a sandbox onto a base image:
    /// `npx://NAME[@VERSION]`, `uvx://NAME[@VERSION]`, `uvx://NAME[EXTRAS]==VERSION`.
    pub(crate) image: String,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Provenance verification: `disabled`, `warn` (run, saying on stderr what failed), `enabled` (refuse on
    /// failure; an image without an expected identity is refused). Default: `enabled` when an identity is given,
    /// `warn` otherwise.
    #[arg(long, value_name = "MODE", env = "THV_SANDBOX_IMAGE_VERIFICATION")]
    pub(crate) image_verification: Option<thv_sandbox_runtime::Mode>,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    #[command(flatten)]
    pub(crate) registry: crate::commands::registry::RegistrySourceArgs,
    /// Set an environment variable in the sandbox: NAME=VALUE, or NAME alone to pass NAME's value from
    /// thv-sandbox's own environment. Nothing from the host environment is passed otherwise.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub(crate) env: Vec<String>,
    /// Pass the host environment variable NAME to the server as a secret: its value is never written to disk,
    /// logs or any command line (it reaches the server's environment just before it starts). Repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    pub(crate) secret: Vec<String>,
    /// Expose the server (any transport) as streamable HTTP at http://[HOST:]PORT/mcp/TOKEN instead of over
    /// stdio, for URL-based MCP clients; loopback unless HOST is given. The URL, with a token made for this run, is
    /// printed on stderr; requests without it (or `Authorization: Bearer TOKEN`) get 401. Host and Origin headers
    /// are checked (DNS rebinding).
    #[arg(long, value_name = "[HOST:]PORT")]
    pub(crate) port: Option<String>,
    /// The `--port` token is kept in FILE (created with a random token, mode 0600, when missing), so a client's
    /// URL stays the same across runs.
    #[arg(long, value_name = "FILE", env = "THV_SANDBOX_PORT_TOKEN_FILE")]
    pub(crate) port_token_file: Option<PathBuf>,
    /// Also (or instead of --port) serve streamable HTTP at /mcp on a unix socket at PATH (mode 0600, in a
    /// directory of yours that nobody else may enter; removed on exit). Only your uid (or root) may connect; no
    /// token is needed there.
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Your own seccomp override file: adds (`groups`) or removes (`remove`) rules on top of the profile the
    /// server gets (the default, or the variant its registry entry selects). See SECURITY.md for the format.
    #[arg(
        long = "seccomp-override",
        env = "THV_SANDBOX_SECCOMP_OVERRIDE",
        value_name = "FILE"
    )]
    pub(crate) seccomp_override: Option<PathBuf>,
    /// Bind a host path into the sandbox: HOST:CONTAINER[:ro] (or PATH for the same path inside). Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub(crate) volume: Vec<String>,
    /// Let the permission profile (registry entry or --permission-profile) mount `/`, your home directory or a
    /// directory holding thv-sandbox's cache or state (refused without this; thv-sandbox's own dirs stay masked).
    #[arg(long)]
    pub(crate) allow_profile_mounts: bool,
    /// Read environment variables from a file of NAME=VALUE lines (# comments, blank lines). Repeatable; `-e` wins.
    #[arg(long = "env-file", value_name = "FILE")]
    pub(crate) env_file: Vec<PathBuf>,
    /// The sandbox's network: `none` (its own network namespace, only loopback; a server whose permission
    /// profile allows egress, or given --allow-host/--allow-port, reaches exactly that through thv-sandbox's egress
    /// proxy) or `host` (the host's network, loopback services included, unfiltered).
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub(crate) network: NetworkArg,
    /// Permission profile: `none`, `network`, or a JSON file in ToolHive's format; overrides the registry
    /// entry's.
    #[arg(long = "permission-profile", value_name = "none|network|FILE")]
    pub(crate) permission_profile: Option<String>,
    /// Seconds the server gets to exit after SIGTERM (and after the client closes stdin) before SIGKILL.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub(crate) stop_timeout: f64,
    /// Size of the sandbox's /tmp (and of a home the image lacks), in MiB. tmpfs memory is charged to no
    /// process, so it is always bounded.
    #[arg(long = "tmp-size", default_value_t = thv_sandbox_runtime::sandbox::spec::DEFAULT_TMP_MIB, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub(crate) tmp_size: u64,
    #[command(flatten)]
    pub(crate) limits: crate::commands::limits::LimitArgs,
    /// Print per-phase start timings to stderr (also THV_SANDBOX_TIMINGS=1).
    #[arg(long, hide = true)]
    pub(crate) timings: bool,
    /// Leave the image's Python bytecode as it is when its root is built (config `bytecode_at_unpack = false`);
    /// by default stale bytecode is made valid and missing bytecode compiled once, in a sandbox, before the root
    /// is sealed. A root built one way is never reused for the other.
    #[arg(long = "no-bytecode")]
    pub(crate) no_bytecode: bool,
    /// The image an `npx://` or `uvx://` package is installed onto (also THV_SANDBOX_NPX_BASE_IMAGE and
    /// THV_SANDBOX_UVX_BASE_IMAGE); by default the official slim Node LTS or Python image, pinned by digest.
    #[arg(long = "base-image", value_name = "IMAGE")]
    pub(crate) base_image: Option<String>,
    /// Arguments for the server, replacing the image's Cmd.
    #[arg(last = true)]
    pub(crate) args: Vec<String>,
    /// Let the server reach HOST (on PORT only, when given) through the egress proxy, on top of what its
    /// permission profile allows: `api.example.com:443`, `.example.com` (the domain and its subdomains),
    /// `127.0.0.1:8080`, `[::1]:3000` (a local address must be named by its IP, or as `localhost`). Repeatable
    /// (also THV_SANDBOX_ALLOW_HOSTS, config `allow_hosts`). Not with `--network host`.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub(crate) allow_host: Vec<String>,
    /// Let the server reach any public host on PORT through the egress proxy, on top of its permission
    /// profile. Repeatable (also THV_SANDBOX_ALLOW_PORTS, config `allow_ports`). Not with `--network host`.
    #[arg(long = "allow-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) allow_port: Vec<u16>,
    #[command(flatten)]
    pub(crate) guard: crate::commands::pin::GuardArgs,
}

impl RunArgs {
    /// The flags as the settings layer takes them.
    pub(crate) fn flags(&self) -> RunFlags {
        let mut flags = self.flags_but_limits();
        self.limits.apply(&mut flags);
        flags
    }

    fn flags_but_limits(&self) -> RunFlags {
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
            allow_hosts: self.allow_host.clone(),
            allow_ports: self.allow_port.clone(),
            no_bytecode: self.no_bytecode,
            guard: self.guard.flags(),
            base_image: self.base_image.clone(),
            ..RunFlags::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// Only the sandbox profile (not the cached image and its verification record).
    #[arg(long)]
    pub(crate) profile: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

pub(crate) fn only_cache_dir(cache_dir: Option<PathBuf>) -> SettingsArgs {
    SettingsArgs {
        cache_dir,
        ..SettingsArgs::default()
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// Write thv-sandbox.1 and one page per subcommand (thv-sandbox-run.1, …) into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `run` parsed alone gives exactly what the whole parser gives; help, mistakes and every other command are
    /// left to the whole parser.
    #[test]
    fn run_parsed_alone_is_what_the_whole_parser_gives() {
        let same: &[&[&str]] = &[
            &["run", "time"],
            &["run", "--cache-dir", "/c", "oci:/x:app"],
            &[
                "run",
                "--config",
                "/f.toml",
                "--verbose",
                "--verbose",
                "time",
            ],
            &[
                "run",
                "-e",
                "A=1",
                "--env",
                "B=2",
                "-v",
                "/h:/c:ro",
                "--secret",
                "s,target=T",
                "--network",
                "none",
                "--allow-host",
                "example.com",
                "--allow-port",
                "443",
                "--permission-profile",
                "network",
                "--tmp-size",
                "32",
                "--no-bytecode",
                "--memory",
                "96m",
                "--cpus",
                "0.5",
                "--pids-limit",
                "40",
                "--stop-timeout",
                "5",
                "uvx://mcp-server-time==2025.8.4",
                "--",
                "--local-timezone",
                "UTC",
                "-v",
            ],
            &[
                "run",
                "--image-verification",
                "warn",
                "ghcr.io/org/img:1",
                "--",
                "--",
            ],
        ];
        for args in same {
            let argv: Vec<&str> = std::iter::once("thv-sandbox")
                .chain(args.iter().copied())
                .collect();
            let whole = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let alone =
                Cli::parse_run_from(&argv).unwrap_or_else(|| panic!("{args:?}: not parsed alone"));
            assert_eq!(format!("{alone:?}"), format!("{whole:?}"), "{args:?}");
        }
        let left: &[&[&str]] = &[
            // Options before the command: rare in a client's configuration, and parsed as ever.
            &["--verbose", "run", "time"],
            &["--config", "/f.toml", "run", "time"],
            &["run"],
            &["run", "--help"],
            &["run", "-h", "time"],
            &["run", "--no-such-flag", "time"],
            &["run", "--memory"],
            &["--version"],
            &["images"],
            &["inspect", "time"],
            &[],
        ];
        for args in left {
            let argv: Vec<&str> = std::iter::once("thv-sandbox")
                .chain(args.iter().copied())
                .collect();
            assert!(Cli::parse_run_from(&argv).is_none(), "{args:?}");
        }
    }
}
