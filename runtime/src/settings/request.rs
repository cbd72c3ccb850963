//! The request `run` (and `inspect`) carries out, built once by [`build`] from the flags ([`RunFlags`]), the
//! configuration ([`Config`]: file, environment, defaults) and the registry entry the name denotes; and the
//! target of `verify IMAGE` ([`verify_target`]).
//!
//! The order of precedence everywhere: the flag (or its environment variable), then the registry entry, then the
//! configuration file, then the default. Everything a refusal can come from is decided here, before anything is
//! pulled.

use std::path::PathBuf;
use std::time::Duration;

use thv_sandbox_provenance as prov;

use crate::catalog::source::{self as catalog_source, Loaded, RegistrySource};
use crate::catalog::{env as catalog_env, launch, CatalogError, Server};
use crate::dirs::{Dirs, DirsError};
use crate::distribution::PullPolicy;
use crate::report::ProgressMode;
use crate::sandbox::profile::{self, MountError, NetworkMode};
use crate::sandbox::secret::SecretEnv;
use crate::trust::verification::{Mode, Verification};

use super::file::{Config, ConfigError, ProfileChoice};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The image reference as the user wrote it: `oci:PATH[:TAG]` or a registry reference.
    pub image: String,
    /// When to contact the registry.
    pub pull_policy: PullPolicy,
    /// How registries are reached (plain-HTTP registries, mirrors, CA certificates).
    pub registry_access: crate::distribution::RegistryAccess,
    /// What to say on stderr while pulling.
    pub progress: ProgressMode,
    /// Arguments after `--` (replace the image's Cmd).
    pub args: Option<Vec<String>>,
    /// Extra environment for the server (not secret: it is written to the bundle's config.json).
    pub env: Vec<(String, String)>,
    /// Secret environment for the server: handed over in memory, never written to the bundle or state.
    pub secrets: Vec<SecretEnv>,
    /// Host paths bound into the sandbox (checked: see [`crate::sandbox::profile`]).
    pub mounts: Vec<profile::BindMount>,
    /// The network the sandbox gets.
    pub network: NetworkMode,
    /// Egress through the proxy (under [`NetworkMode::None`]): the permission profile's outbound rules.
    pub egress: Option<crate::sandbox::egress::Outbound>,
    /// An HTTP-transport server (`sse`, `streamable-http`) and its port inside the sandbox: bridged to our stdio.
    pub http: Option<(crate::sandbox::bridge::HttpTransport, u16)>,
    /// `--port [HOST:]PORT` and/or `--socket PATH`: expose the server (any transport) as streamable HTTP there
    /// instead of over our stdio, with the token TCP clients must present.
    pub port: Option<crate::sandbox::bridge::Expose>,
    /// The registry entry's full name, when run by name.
    pub server_name: Option<String>,
    /// The effective permission profile (`--permission-profile`, else the entry's, else `none`); its paths are
    /// already in `mounts`, its network rules are checked by [`crate::catalog::launch`].
    pub permissions: crate::catalog::PermissionProfile,
    /// What the verification step checks the image against (from the registry entry).
    pub provenance: Option<crate::catalog::Provenance>,
    /// A reviewed seccomp variant selected by the registry entry (`None`: the default profile).
    pub seccomp_profile: Option<String>,
    /// The user's own seccomp override file (adds or removes rules on top of the variant).
    pub seccomp_override: Option<PathBuf>,
    /// Grace period between SIGTERM and SIGKILL when stopping the server.
    pub stop_timeout: Duration,
    /// Size of the sandbox's `/tmp` (and of a tmpfs home), in MiB ([`crate::sandbox::spec::DEFAULT_TMP_MIB`] by default).
    pub tmp_mib: u64,
    /// Memory, CPU and process limits, and where each came from (see [`crate::sandbox::limits`]).
    pub limits: crate::sandbox::limits::Limits,
    /// Cache directory override.
    pub cache_dir: Option<PathBuf>,
    /// The executable to start as the runner (normally `/proc/self/exe`).
    pub exe: PathBuf,
    /// Print per-phase timings to stderr.
    pub timings: bool,
    /// A root this run builds gets its Python bytecode made valid before it is sealed (`bytecode_at_unpack`,
    /// `--no-bytecode`): see `pipeline::bytecode`. The root's name says which way it was built.
    pub bytecode: bool,
    /// Provenance verification: mode, policy, trust root. The default (no policy, no mode) warns that the image
    /// runs unverified.
    pub verification: Verification,
    /// Required variables that were not given: always empty for `run` (they are an error); listed by `inspect`
    /// ([`build_for_inspect`]).
    pub missing_env: Vec<catalog_env::MissingVar>,
    /// The guard of the MCP conversation (pins, tool filters, audit log).
    pub guard: crate::guard::GuardRequest,
    /// `npx://…` / `uvx://…`: the package installed onto the base image (which [`RunRequest::image`] names).
    pub package: Option<crate::packages::Install>,
}

impl RunRequest {
    /// The pin name of a run (what `pin show NAME` takes): a package's is the package's (`npx://NAME`, any
    /// version), not its base image's, which many share; otherwise [`crate::guard::server_name`]. `run` and
    /// `client add` (which takes the pin before writing a client's entry) name pins with it.
    pub fn pin_name(&self) -> String {
        match (&self.server_name, &self.package) {
            (None, Some(p)) => format!("{}://{}", p.spec.ecosystem.scheme(), p.spec.name),
            _ => crate::guard::server_name(self.server_name.as_deref(), &self.image),
        }
    }

    /// Whether the guard can relay the run's MCP conversation: a stdio server on thv-sandbox's stdio. Not with
    /// `--port`/`--socket` nor for servers speaking HTTP (see [`crate::guard::check_supported`]); those runs are
    /// not pinned.
    pub fn relayable(&self) -> bool {
        self.port.is_none() && self.http.is_none()
    }
}

/// The longest `--stop-timeout`: a day (anything longer is a mistake, and must not overflow a deadline).
pub const MAX_STOP_TIMEOUT_SECS: f64 = 86_400.0;

/// The flags of `run` and `inspect`, as given (`None` / empty: not given). Plain data: the CLI's parser fills it.
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    /// `NAME|IMAGE`: a server of the registry, a registry reference or `oci:PATH[:TAG]`.
    pub image: String,
    /// Arguments after `--`.
    pub args: Vec<String>,
    /// `--pull`.
    pub pull: PullPolicy,
    /// What to say while pulling (`--quiet`, and whether stderr is a terminal).
    pub progress: ProgressMode,
    /// `--image-verification` (or `THV_SANDBOX_IMAGE_VERIFICATION`).
    pub image_verification: Option<Mode>,
    /// The identity flags.
    pub identity: IdentityFlags,
    /// `--registry` (or `THV_SANDBOX_REGISTRY`).
    pub registry: Option<String>,
    /// `-e NAME[=VALUE]`.
    pub env: Vec<String>,
    /// `--env-file FILE`.
    pub env_files: Vec<PathBuf>,
    /// `--secret NAME`.
    pub secrets: Vec<String>,
    /// `--port [HOST:]PORT`.
    pub port: Option<String>,
    /// `--port-token-file FILE`.
    pub port_token_file: Option<PathBuf>,
    /// `--socket PATH`.
    pub socket: Option<PathBuf>,
    /// `--seccomp-override FILE`.
    pub seccomp_override: Option<PathBuf>,
    /// `-v HOST:CONTAINER[:ro]`.
    pub volumes: Vec<String>,
    /// `--allow-profile-mounts`.
    pub allow_profile_mounts: bool,
    /// `--network`.
    pub network: NetworkMode,
    /// `--permission-profile none|network|FILE`.
    pub permission_profile: Option<String>,
    /// `--stop-timeout SECONDS`.
    pub stop_timeout: f64,
    /// `--tmp-size MIB`.
    pub tmp_mib: u64,
    /// `--memory SIZE`.
    pub memory: Option<String>,
    /// `--cpus N`.
    pub cpus: Option<String>,
    /// `--pids-limit N`.
    pub pids_limit: Option<String>,
    /// `--timings`.
    pub timings: bool,
    /// `--allow-host HOST[:PORT]`, repeated.
    pub allow_hosts: Vec<String>,
    /// `--allow-port PORT`, repeated.
    pub allow_ports: Vec<u16>,
    /// `--no-bytecode`.
    pub no_bytecode: bool,
    /// The guard's flags (`--tools`, `--tools-override`, `--pin`, `--audit-log`).
    pub guard: crate::guard::GuardFlags,
    /// `--base-image IMAGE`: what an `npx://` / `uvx://` package is installed onto.
    pub base_image: Option<String>,
}

impl RunFlags {
    /// The flags with `~` expanded in every path ([`super::file::expand_home`]; `-v` follows the same rule in
    /// [`profile::parse_volume`]).
    pub fn home_expanded(&self, home: Option<&str>) -> RunFlags {
        let path = |p: &PathBuf| super::file::expand_home_path(p, home);
        let text = |s: &String| super::file::expand_home(s, home);
        RunFlags {
            identity: self.identity.home_expanded(home),
            env_files: self.env_files.iter().map(path).collect(),
            port_token_file: self.port_token_file.as_ref().map(path),
            socket: self.socket.as_ref().map(path),
            seccomp_override: self.seccomp_override.as_ref().map(path),
            permission_profile: self.permission_profile.as_ref().map(text),
            guard: crate::guard::GuardFlags {
                tools_override: self.guard.tools_override.as_ref().map(path),
                audit_log: self.guard.audit_log.as_ref().map(path),
                ..self.guard.clone()
            },
            ..self.clone()
        }
    }
}

/// The identity the evidence must name (cosign's flags), and the trust material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityFlags {
    /// `--certificate-identity`.
    pub certificate_identity: Option<String>,
    /// `--certificate-oidc-issuer`.
    pub certificate_oidc_issuer: Option<String>,
    /// `--certificate-github-workflow-repository`.
    pub github_workflow_repository: Option<String>,
    /// `--certificate-github-workflow-ref`.
    pub github_workflow_ref: Option<String>,
    /// `--certificate-github-workflow-sha`.
    pub github_workflow_sha: Option<String>,
    /// `--certificate-github-workflow-trigger`.
    pub github_workflow_trigger: Option<String>,
    /// `--certificate-github-workflow-name`.
    pub github_workflow_name: Option<String>,
    /// `--insecure-any-identity`.
    pub insecure_any_identity: bool,
    /// `--sigstore-url`.
    pub sigstore_url: Option<String>,
    /// `--trust-root FILE`.
    pub trust_root: Option<PathBuf>,
}

impl IdentityFlags {
    /// The flags with `~` expanded in `--trust-root`.
    pub fn home_expanded(&self, home: Option<&str>) -> IdentityFlags {
        IdentityFlags {
            trust_root: self
                .trust_root
                .as_deref()
                .map(|p| super::file::expand_home_path(p, home)),
            ..self.clone()
        }
    }

    /// Whether any flag names an expected identity.
    pub fn names_identity(&self) -> bool {
        [
            &self.certificate_identity,
            &self.certificate_oidc_issuer,
            &self.github_workflow_repository,
            &self.github_workflow_ref,
            &self.github_workflow_sha,
            &self.github_workflow_trigger,
            &self.github_workflow_name,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    /// The policy the flags give; `None` when they name none (the caller decides whether that is an error).
    pub fn policy(&self) -> Result<Option<prov::Policy>, RequestError> {
        if self.insecure_any_identity && self.names_identity() {
            return Err(RequestError::ContradictoryIdentity);
        }
        if self.insecure_any_identity {
            return Ok(Some(prov::Policy::InsecureAnyIdentity {
                sigstore_url: self.sigstore_url.clone(),
            }));
        }
        if !self.names_identity() {
            return Ok(None);
        }
        Ok(Some(prov::Policy::Identity(prov::IdentityPolicy {
            sigstore_url: self.sigstore_url.clone(),
            certificate_identity: self.certificate_identity.clone(),
            certificate_oidc_issuer: self.certificate_oidc_issuer.clone(),
            github_workflow_repository: self.github_workflow_repository.clone(),
            github_workflow_ref: self.github_workflow_ref.clone(),
            github_workflow_sha: self.github_workflow_sha.clone(),
            github_workflow_trigger: self.github_workflow_trigger.clone(),
            github_workflow_name: self.github_workflow_name.clone(),
        })))
    }
}

/// Something the user should know while the request is built (said on stderr by the CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The registry came from a cached copy (its fetch failed), or something alike.
    Registry(String),
    /// The permission profile mounts a host path (described).
    ProfileMount(String),
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Registry(n) => write!(f, "warning: {n}"),
            Notice::ProfileMount(m) => write!(f, "thv-sandbox: the permission profile mounts {m}"),
        }
    }
}

/// Why no request can be built.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An `npx://` / `uvx://` reference that is not one.
    #[error(transparent)]
    Package(crate::packages::spec::SpecError),
    /// The package index cannot be used.
    #[error(transparent)]
    PackageIndex(crate::packages::index::IndexError),
    /// Identity flags for `pull` of an image (which `pull` does not verify).
    #[error("`pull` of an image does not verify it: the identity flags are for packages (`npx://`, `uvx://`)")]
    IdentityForImagePull,
    /// `--base-image` for something that is not a package.
    #[error("--base-image is for `npx://` and `uvx://` packages only")]
    BaseImageWithoutPackage,
    /// `--stop-timeout` out of range.
    #[error("--stop-timeout must be a number of seconds from 0 to {MAX_STOP_TIMEOUT_SECS}")]
    StopTimeout,
    /// The configuration (trust settings) cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--registry` is not a usable source.
    #[error(transparent)]
    RegistrySource(CatalogError),
    /// The registry cannot be loaded.
    #[error(transparent)]
    Registry(CatalogError),
    /// The name is not one server of the registry (ambiguous, …).
    #[error(transparent)]
    Lookup(CatalogError),
    /// The cache directory (for a URL registry).
    #[error(transparent)]
    Dirs(#[from] DirsError),
    /// A name that is not in the registry but close to names that are.
    #[error("no MCP server named `{name}` in the MCP server registry (did you mean {}?)", typos.join(", "))]
    UnknownServer {
        /// As written.
        name: String,
        /// The servers it is close to.
        typos: Vec<String>,
    },
    /// The registry entry or the user's choices cannot be run.
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    /// A resource limit (`--memory`, `--cpus`, `--pids-limit`, the file's or the registry entry's) that does
    /// not parse.
    #[error(transparent)]
    Limit(#[from] crate::sandbox::limits::LimitError),
    /// `--secret NAME` names no variable.
    #[error("`--secret {0}` names no variable of this environment")]
    Secret(String),
    /// A mount (`-v`, the permission profile's paths) is refused.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `--insecure-any-identity` with identity flags.
    #[error("--insecure-any-identity contradicts the identity flags given with it")]
    ContradictoryIdentity,
    /// `--port`, `--socket` or `--port-token-file` (the message names which).
    #[error(transparent)]
    Port(#[from] crate::sandbox::bridge::access::ExposeError),
    /// `--allow-host` or `--allow-port` that is not `HOST[:PORT]` or a port.
    #[error("--allow-host/--allow-port: {0}")]
    Allow(crate::sandbox::egress::RulesError),
    /// `verify` with nothing to verify against.
    #[error(
        "no expected identity: give --certificate-identity and/or --certificate-oidc-issuer (or \
         --certificate-github-workflow-repository …)"
    )]
    NoIdentity,
    /// `verify IMAGE` (not a registry entry) and no identity flags: nothing to verify the image against, the
    /// same refusal as [`RequestError::NoDeclaredProvenance`].
    #[error(
        "no expected identity for `{0}`: it is no server of the MCP server registry that declares provenance, \
         and no identity flag was given"
    )]
    NoImageIdentity(String),
    /// `verify NAME` of a registry entry that declares no provenance, and no identity flags.
    #[error(
        "the MCP server registry declares no provenance for `{0}`: there is no identity to verify against"
    )]
    NoDeclaredProvenance(String),
    /// `--tools`, `--tools-override` or `--audit-log` cannot be used.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
}

/// What kind of failure a [`RequestError`] is, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The user's input is wrong.
    Usage,
    /// There is nothing to verify against: a refusal.
    Refused,
    /// thv-sandbox could not do its part (a registry that cannot be loaded, a cache directory).
    Failed,
}

impl RequestError {
    /// What kind of failure it is.
    pub fn kind(&self) -> Kind {
        match self {
            RequestError::Registry(_) | RequestError::Dirs(_) => Kind::Failed,
            RequestError::Launch(e) if !e.is_usage() => Kind::Failed,
            RequestError::NoDeclaredProvenance(_) | RequestError::NoImageIdentity(_) => {
                Kind::Refused
            }
            _ => Kind::Usage,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RequestError::Package(e) => Some(e.hint()),
            RequestError::PackageIndex(_) => Some(
                "set the index as an http(s) URL without credentials: `npm_index` / `pypi_index` under \
                 [packages] in the configuration file, or npm_config_registry (npm) / PIP_INDEX_URL (pip)"
                    .into(),
            ),
            RequestError::IdentityForImagePull => Some(
                "`thv-sandbox run` verifies an image before it runs (also from the cache), `thv-sandbox verify \
                 IMAGE` on its own: give the identity flags there"
                    .into(),
            ),
            RequestError::BaseImageWithoutPackage => Some(
                "name a package: `thv-sandbox run --base-image IMAGE npx://NAME` (or drop --base-image)".into(),
            ),
            RequestError::StopTimeout => Some(
                "the server gets this long to exit after SIGTERM; 3 is the default".into(),
            ),
            RequestError::Config(e) => e.hint(),
            RequestError::RegistrySource(e) | RequestError::Registry(e) | RequestError::Lookup(e) => {
                e.hint()
            }
            RequestError::Dirs(e) => Some(e.hint()),
            RequestError::UnknownServer { name, .. } => Some(format!(
                "to run the Docker Hub image of that name instead, write it in full: docker.io/library/{name}"
            )),
            RequestError::Launch(e) => e.hint(),
            RequestError::Secret(name) => Some(format!(
                "export {name} first; `--secret` takes a variable's name, never its value"
            )),
            RequestError::Mount(e) => Some(e.hint()),
            RequestError::Limit(e) => Some(format!(
                "{}: e.g. --memory 512m, --cpus 1.5, --pids-limit 2048, or `unlimited`",
                e.what
            )),
            RequestError::Guard(e) => e.hint(),
            RequestError::ContradictoryIdentity | RequestError::Port(_) => None,
            RequestError::Allow(e) => Some(e.hint()),
            RequestError::NoIdentity => Some(
                "to accept any signer the instance certified, say so: --insecure-any-identity".into(),
            ),
            RequestError::NoDeclaredProvenance(_) | RequestError::NoImageIdentity(_) => Some(
                "give the expected identity with --certificate-identity/--certificate-oidc-issuer (or, to accept \
                 any signer the instance certified, --insecure-any-identity)"
                    .into(),
            ),
        }
    }
}

/// `--stop-timeout` as a duration: finite, from 0 to [`MAX_STOP_TIMEOUT_SECS`].
pub fn stop_timeout(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX_STOP_TIMEOUT_SECS).contains(&secs))
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

/// The server registry asked for: `flag` (`--registry` or `THV_SANDBOX_REGISTRY`), else the configuration
/// file's `registry`, else the embedded registry.
pub fn registry_source(
    flag: Option<&str>,
    config: &Config,
) -> Result<RegistrySource, RequestError> {
    match flag.filter(|s| !s.is_empty()) {
        Some(s) => RegistrySource::parse(&super::file::expand_home(s, config.home.as_deref()))
            .map_err(RequestError::RegistrySource),
        None => Ok(config
            .registry
            .value
            .clone()
            .unwrap_or(RegistrySource::Embedded)),
    }
}

/// Loads the server registry `flag` and `config` name (a URL one is cached under the cache directory).
pub fn load_registry(
    flag: Option<&str>,
    config: &Config,
    notices: &mut dyn FnMut(Notice),
) -> Result<Loaded, RequestError> {
    let source = registry_source(flag, config)?;
    let cache = match &source {
        RegistrySource::Url(_) => Dirs::from_env(config.cache_dir.value.clone())?.cache,
        _ => PathBuf::new(),
    };
    let loaded = catalog_source::load(&source, &cache).map_err(RequestError::Registry)?;
    if let Some(n) = &loaded.notice {
        notices(Notice::Registry(n.clone()));
    }
    Ok(loaded)
}

/// The verification settings: the identity flags' policy (else `fallback`, a registry entry's), the mode, the
/// TUF settings of `config`, and GitHub's API from the environment.
pub fn verification(
    identity: &IdentityFlags,
    mode: Option<Mode>,
    fallback: Option<prov::Policy>,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Verification, RequestError> {
    let tuf = config.tuf_settings()?;
    let policy = identity.policy()?.or(fallback);
    Ok(Verification {
        tuf,
        mode,
        policy,
        trust_root: identity.trust_root.clone(),
        github_api: env("THV_SANDBOX_GITHUB_API").filter(|v| !v.is_empty()),
        github_token: env("GITHUB_TOKEN").filter(|v| !v.is_empty()),
        server: None,
    })
}

/// `verify IMAGE`: the image to verify (a registry entry's, when `name` is one) and the verification settings
/// (mode `enabled`; the identity flags, else the provenance the registry declares for the entry).
pub fn verify_target(
    name: &str,
    registry: Option<&str>,
    identity: &IdentityFlags,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
) -> Result<(String, Verification), RequestError> {
    let identity = &identity.home_expanded(config.home.as_deref());
    let mut image = name.to_owned();
    let mut entry_policy = None;
    let mut entry_name = None;
    if !name.starts_with("oci:") {
        let loaded = load_registry(registry, config, notices)?;
        if let Some(server) = loaded.catalog.find(name).map_err(RequestError::Lookup)? {
            if let Some(i) = &server.image {
                image = i.clone();
            }
            entry_policy = server.provenance.as_ref().map(prov::Policy::from);
            if entry_policy.is_none() && !identity.names_identity() {
                return Err(RequestError::NoDeclaredProvenance(server.name.clone()));
            }
            entry_name = Some(server.name.clone());
        }
    }
    let mut v = verification(identity, Some(Mode::Enabled), entry_policy, config, env)?;
    v.server = entry_name;
    if v.policy.is_none() {
        // Refused, like a registry entry without provenance: `verify time` and `verify mcp/time` (its image)
        // give the same verdict.
        return Err(RequestError::NoImageIdentity(image));
    }
    Ok((image, v))
}

/// The flags, the configuration and the registry entry (if the name is one) → the request `run` carries out.
/// `dirs` are the directories of this run (no mount may reach them); `env` is the process environment.
pub fn build(
    flags: &RunFlags,
    config: &Config,
    dirs: &Dirs,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
) -> Result<RunRequest, RequestError> {
    build_with(flags, config, dirs, env, notices, false)
}

/// [`build`] for `inspect`: required variables that were not given are listed in [`RunRequest::missing_env`]
/// instead of refused, since `inspect` is how a user finds out what a server needs.
pub fn build_for_inspect(
    flags: &RunFlags,
    config: &Config,
    dirs: &Dirs,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
) -> Result<RunRequest, RequestError> {
    build_with(flags, config, dirs, env, notices, true)
}

fn build_with(
    flags: &RunFlags,
    config: &Config,
    dirs: &Dirs,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
    missing_env_ok: bool,
) -> Result<RunRequest, RequestError> {
    let flags = &flags.home_expanded(config.home.as_deref());
    let stop_timeout = stop_timeout(flags.stop_timeout).ok_or(RequestError::StopTimeout)?;
    let mut launch = plan_launch(flags, config, env, notices, missing_env_ok)?;
    // Verification: identity flags, else the provenance the registry declares for the entry; the mode from the
    // flag (or its environment variable), else the configuration file, else by whether a policy exists.
    let entry_policy = launch.provenance.as_ref().map(prov::Policy::from);
    let mode = flags.image_verification.or(config.image_verification.value);
    let mut verification = verification(&flags.identity, mode, entry_policy, config, env)?;
    verification.server = launch.server.clone();
    // `npx://` / `uvx://`: the package is installed onto its base image, which the request names. The pin is the
    // package's; the base image gets a verification of its own.
    let package = package_install(
        &launch.image,
        flags.base_image.as_deref(),
        &verification,
        &config.packages,
        env,
    )?;
    if let Some(p) = &package {
        launch.image = p.base_image.clone();
        verification = crate::packages::base_verification(&p.base_image, &p.verification);
    }
    let missing_env = std::mem::take(&mut launch.missing_env);

    // Secrets: the registry entry's secret variables, then `--secret NAME` (which wins).
    let (secret_env, plain): (Vec<_>, Vec<_>) = launch.env.into_iter().partition(|v| v.secret());
    let mut secrets: Vec<SecretEnv> = secret_env
        .iter()
        .map(|v| SecretEnv::new(v.name.clone(), v.value.expose()))
        .collect();
    for name in &flags.secrets {
        match env(name) {
            Some(value) if !name.is_empty() && !name.contains('=') => {
                secrets.retain(|s| s.name != *name);
                secrets.push(SecretEnv::new(name, value));
            }
            _ => return Err(RequestError::Secret(name.clone())),
        }
    }
    // A secret is never also written as a plain variable.
    let env_vars: Vec<(String, String)> = plain
        .into_iter()
        .map(|v| (v.name, v.value.expose().to_owned()))
        .filter(|(k, _)| !secrets.iter().any(|s| s.name == *k))
        .collect();

    // The permission profile's paths, then `-v` (which wins for the same container path). Profile mounts are
    // shown, and the broad ones need the user's consent; no mount reaches our own dirs (F4, F7).
    let home = config.home.as_ref().map(PathBuf::from);
    let profile_mounts = profile::permission_mounts(
        &launch.permissions.read,
        &launch.permissions.write,
        home.as_deref(),
    )?;
    let user_mounts = flags
        .volumes
        .iter()
        .map(|v| profile::parse_volume(v, home.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let private = profile::private_paths(dirs, home.as_deref());
    profile::check_private(&profile_mounts, &private)?;
    profile::check_private(&user_mounts, &private)?;
    if !flags.allow_profile_mounts {
        profile::check_profile_mounts(&profile_mounts, home.as_deref(), &private)?;
    }
    let from_profile = profile_mounts.clone();
    let mounts = profile::merge(profile_mounts, user_mounts)?;
    for m in mounts.iter().filter(|m| from_profile.contains(m)) {
        notices(Notice::ProfileMount(profile::describe(m)));
    }

    // Limits: the flag, then the file, then the registry entry's proposal, then the default.
    let proposed = launch.resources.clone().unwrap_or_default();
    let inputs = |flag: &Option<String>,
                  file: &super::file::Setting<Option<String>>,
                  reg: &Option<String>| {
        crate::sandbox::limits::LimitInputs {
            flag: flag.clone(),
            config: file.value.clone(),
            registry: reg.clone(),
        }
    };
    let limits = crate::sandbox::limits::Limits::resolve(
        &inputs(&flags.memory, &config.memory, &proposed.memory),
        &inputs(&flags.cpus, &config.cpus, &proposed.cpus),
        &inputs(&flags.pids_limit, &config.pids_limit, &proposed.pids),
    )?;
    // The guard: a flag, else the configuration's table for this server, else its `[guard]` keys.
    let pin_name = crate::guard::pin::name_of_image(&launch.image);
    let names: Vec<&str> = launch
        .server
        .iter()
        .map(String::as_str)
        .chain([pin_name.as_str()])
        .collect();
    let table = &config.guard.value;
    let from_file = table.for_server(&names);
    let guard = crate::guard::request(
        flags.guard.tools.as_deref().or(from_file.tools.as_deref()),
        flags
            .guard
            .tools_override
            .as_deref()
            .or(from_file.tools_override.as_deref()),
        flags.guard.pin.or(from_file.pin),
        flags
            .guard
            .audit_log
            .clone()
            .or_else(|| table.audit_log.clone()),
        table.audit_max_bytes(),
    )?;

    let port = crate::sandbox::bridge::Expose::from_flags(
        flags.port.as_deref(),
        flags.socket.as_deref(),
        flags.port_token_file.as_deref(),
    )
    .map_err(RequestError::Port)?;
    Ok(RunRequest {
        image: launch.image,
        pull_policy: flags.pull,
        registry_access: config.registry_access(),
        progress: flags.progress,
        args: launch.args,
        env: env_vars,
        secrets,
        mounts,
        network: launch.network,
        egress: launch.egress,
        http: launch.http,
        port,
        server_name: launch.server,
        permissions: launch.permissions,
        provenance: launch.provenance,
        seccomp_profile: launch.seccomp_profile,
        seccomp_override: flags.seccomp_override.clone(),
        verification,
        stop_timeout,
        tmp_mib: flags.tmp_mib,
        limits,
        cache_dir: config.cache_dir.value.clone(),
        exe: PathBuf::from("/proc/self/exe"),
        timings: flags.timings || env("THV_SANDBOX_TIMINGS").is_some_and(|v| v == "1"),
        missing_env,
        bytecode: !flags.no_bytecode && config.bytecode_at_unpack.value,
        guard,
        package,
    })
}

/// Flags + registry entry (if the name is one) + the configuration's default permission profile → what to run.
fn plan_launch(
    flags: &RunFlags,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
    missing_env_ok: bool,
) -> Result<launch::Launch, RequestError> {
    let mut user = launch::UserChoices {
        args: flags.args.clone(),
        network: flags.network,
        missing_env_ok,
        ..launch::UserChoices::default()
    };
    for e in &flags.env {
        user.env_args
            .push(catalog_env::parse_arg(e).map_err(launch::LaunchError::from)?);
    }
    user.env_files =
        catalog_env::read_files(&flags.env_files).map_err(launch::LaunchError::from)?;
    if let Some(p) = &flags.permission_profile {
        user.permissions = Some(launch::parse_profile_arg(p, &|path| std::fs::read(path))?);
    }
    user.allow = allow_rules(flags, config)?;
    // `oci:` names a layout on disk, `npx://`/`uvx://` a package, never a registry entry.
    let loaded = match flags.image.starts_with("oci:")
        || crate::packages::spec::is_package_ref(&flags.image)
    {
        true => None,
        false => Some(load_registry(flags.registry.as_deref(), config, notices)?),
    };
    let server = entry(loaded.as_ref(), &flags.image)?;
    if let Some(s) = server {
        tracing::info!("`{}` is the registry's `{}`", flags.image, s.name);
    }
    // The configuration file's `permission_profile` is the default: after the flag and the registry entry's.
    if user.permissions.is_none() && server.is_none_or(|s| s.permissions.is_none()) {
        if let Some(choice) = &config.permission_profile.value {
            user.permissions = Some(choice.load()?);
        }
    }
    Ok(launch::plan(
        server,
        &flags.image,
        &user,
        &launch::seccomp_variants(),
        env,
    )?)
}

/// The package `image` names (`npx://`, `uvx://`), if it names one: on `base_image` (`--base-image`, else the
/// ecosystem's variable, else the configuration's `[packages]` base image, else the pinned default), from the
/// configuration's index (else the usual variables', else the public one), its provenance verified against
/// `verification` (the run's: the identity flags' or the registry entry's pin, the mode, the trust root).
pub fn package_install(
    image: &str,
    base_image: Option<&str>,
    verification: &Verification,
    configured: &super::file::PackageSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<crate::packages::Install>, RequestError> {
    let Some(spec) = crate::packages::spec::parse(image).map_err(RequestError::Package)? else {
        if base_image.is_some() {
            return Err(RequestError::BaseImageWithoutPackage);
        }
        return Ok(None);
    };
    let configured = configured.configured(spec.ecosystem);
    let mut install = crate::packages::Install::new(spec, base_image, &configured, env)
        .map_err(RequestError::PackageIndex)?;
    install.verification = verification.clone();
    Ok(Some(install))
}

/// What `thv-sandbox pull NAME|IMAGE|PACKAGE` readies.
#[derive(Debug, Clone)]
pub enum PullTarget {
    /// An image (a registry reference or `oci:`), a registry entry's or as written.
    Image(String),
    /// A package (`npx://`, `uvx://`, or a registry entry whose server is one): installed onto its base image,
    /// its provenance checked against the entry's pin (or the identity flags).
    Package(Box<crate::packages::Install>),
    /// A registry entry that is a remote server (its full name): nothing to pull.
    Remote(String),
}

/// The flags of `pull` that decide what it readies and how a package's provenance is verified.
#[derive(Debug, Clone, Default)]
pub struct PullFlags {
    /// `NAME|IMAGE|PACKAGE`.
    pub image: String,
    /// `--base-image`.
    pub base_image: Option<String>,
    /// `--registry` (or `THV_SANDBOX_REGISTRY`).
    pub registry: Option<String>,
    /// `--image-verification` (or `THV_SANDBOX_IMAGE_VERIFICATION`).
    pub image_verification: Option<Mode>,
    /// The identity flags.
    pub identity: IdentityFlags,
}

/// `pull`: what `flags.image` names, so that `pull NAME` readies what `run NAME` runs. A package (an `npx://` /
/// `uvx://` reference, or a registry entry whose server is a package) gets the verification `run` gives it:
/// the identity flags, else the entry's pinned provenance, under the mode of the flag, the configuration or
/// the default (`enabled` with a pin). An image is pulled unverified (`run` and `verify` verify): the identity
/// flags are for packages only.
pub fn pull_target(
    flags: &PullFlags,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut dyn FnMut(Notice),
) -> Result<PullTarget, RequestError> {
    let identity = flags.identity.home_expanded(config.home.as_deref());
    let mut image = flags.image.clone();
    let mut server = None;
    if !image.starts_with("oci:") && !crate::packages::spec::is_package_ref(&image) {
        let loaded = load_registry(flags.registry.as_deref(), config, notices)?;
        if let Some(s) = loaded.catalog.find(&image).map_err(RequestError::Lookup)? {
            match &s.image {
                Some(i) => image = i.clone(),
                None => return Ok(PullTarget::Remote(s.name.clone())),
            }
            server = Some(s.clone());
        }
    }
    if !crate::packages::spec::is_package_ref(&image) {
        if flags.base_image.is_some() {
            return Err(RequestError::BaseImageWithoutPackage);
        }
        if identity.names_identity() || identity.insecure_any_identity {
            return Err(RequestError::IdentityForImagePull);
        }
        return Ok(PullTarget::Image(image));
    }
    let entry_policy = server
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .map(prov::Policy::from);
    let mode = flags.image_verification.or(config.image_verification.value);
    let mut v = verification(&identity, mode, entry_policy, config, env)?;
    v.server = server.map(|s| s.name);
    let install = package_install(
        &image,
        flags.base_image.as_deref(),
        &v,
        &config.packages,
        env,
    )?
    .expect("a package reference");
    Ok(PullTarget::Package(Box::new(install)))
}

/// `--allow-host` (else the configuration's `allow_hosts`) and `--allow-port` (else `allow_ports`) as egress
/// rules; each flag given replaces the configuration's list, as every list flag does.
fn allow_rules(
    flags: &RunFlags,
    config: &Config,
) -> Result<Vec<crate::sandbox::egress::AllowRule>, RequestError> {
    use crate::sandbox::egress::AllowRule;
    // The configuration's lists are defaults for runs with the egress proxy: `--network host` has none, and only
    // the flags themselves are refused with it.
    let (no_hosts, no_ports) = (Vec::new(), Vec::new());
    let host_network = flags.network == NetworkMode::Host;
    let hosts = match (flags.allow_hosts.is_empty(), host_network) {
        (false, _) => &flags.allow_hosts,
        (true, false) => &config.allow_hosts.value,
        (true, true) => &no_hosts,
    };
    let ports = match (flags.allow_ports.is_empty(), host_network) {
        (false, _) => &flags.allow_ports,
        (true, false) => &config.allow_ports.value,
        (true, true) => &no_ports,
    };
    let mut rules = Vec::new();
    for h in hosts {
        rules.push(AllowRule::parse_host(h).map_err(RequestError::Allow)?);
    }
    for p in ports {
        rules.push(AllowRule::port(*p).map_err(RequestError::Allow)?);
    }
    Ok(rules)
}

/// The registry's server `name` denotes; `None` for an image reference. A name close to servers' names (but
/// none of them) is an error: the user most likely meant one.
fn entry<'a>(loaded: Option<&'a Loaded>, name: &str) -> Result<Option<&'a Server>, RequestError> {
    let Some(loaded) = loaded else {
        return Ok(None);
    };
    match loaded.catalog.find(name).map_err(RequestError::Lookup)? {
        Some(s) => Ok(Some(s)),
        None => {
            let typos = loaded.catalog.typo_of(name);
            if typos.is_empty() {
                Ok(None)
            } else {
                Err(RequestError::UnknownServer {
                    name: name.to_owned(),
                    typos,
                })
            }
        }
    }
}

impl ProfileChoice {
    /// The permission profile chosen: a built-in one, or the file read and checked.
    pub fn load(&self) -> Result<crate::catalog::PermissionProfile, launch::LaunchError> {
        match self {
            ProfileChoice::None => Ok(crate::catalog::PermissionProfile::none()),
            ProfileChoice::Network => Ok(crate::catalog::PermissionProfile::network()),
            ProfileChoice::File(path) => {
                launch::parse_profile_arg(&path.to_string_lossy(), &|p| std::fs::read(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_say_what_is_wrong_and_what_kind_it_is() {
        let e = RequestError::StopTimeout;
        assert_eq!(
            e.to_string(),
            "--stop-timeout must be a number of seconds from 0 to 86400"
        );
        assert_eq!(e.kind(), Kind::Usage);
        let e = RequestError::UnknownServer {
            name: "tiime".into(),
            typos: vec!["time".into()],
        };
        assert_eq!(
            e.to_string(),
            "no MCP server named `tiime` in the MCP server registry (did you mean time?)"
        );
        assert!(e.hint().unwrap().contains("docker.io/library/tiime"));
        let e = RequestError::Secret("TOKEN".into());
        assert_eq!(
            e.to_string(),
            "`--secret TOKEN` names no variable of this environment"
        );
        let e = RequestError::NoDeclaredProvenance("fetch".into());
        assert_eq!(e.kind(), Kind::Refused);
        // The same missing identity, for an image named by its reference: the same verdict.
        assert_eq!(
            RequestError::NoImageIdentity("mcp/time".into()).kind(),
            Kind::Refused
        );
        assert!(e.to_string().contains("`fetch`"));
    }

    #[test]
    fn identity_flags_and_any_identity_contradict() {
        let flags = IdentityFlags {
            insecure_any_identity: true,
            certificate_identity: Some("x".into()),
            ..IdentityFlags::default()
        };
        assert!(matches!(
            flags.policy(),
            Err(RequestError::ContradictoryIdentity)
        ));
        assert_eq!(IdentityFlags::default().policy().unwrap(), None);
    }

    #[test]
    fn every_path_of_run_and_verify_expands_tilde() {
        let flags = RunFlags {
            registry: Some("~/r.json".into()),
            env_files: vec!["~/e.env".into(), "rel.env".into()],
            port_token_file: Some("~/t".into()),
            socket: Some("~/s.sock".into()),
            seccomp_override: Some("~/o.json".into()),
            permission_profile: Some("~/p.json".into()),
            identity: IdentityFlags {
                trust_root: Some("~/root.json".into()),
                ..IdentityFlags::default()
            },
            ..RunFlags::default()
        };
        let f = flags.home_expanded(Some("/h"));
        assert_eq!(
            f.env_files,
            vec![PathBuf::from("/h/e.env"), "rel.env".into()]
        );
        assert_eq!(f.port_token_file, Some("/h/t".into()));
        assert_eq!(f.socket, Some("/h/s.sock".into()));
        assert_eq!(f.seccomp_override, Some("/h/o.json".into()));
        assert_eq!(f.permission_profile.as_deref(), Some("/h/p.json"));
        assert_eq!(f.identity.trust_root, Some("/h/root.json".into()));
        // `--registry` is expanded where it is parsed (for every command that takes it).
        let config = Config {
            home: Some("/h".into()),
            ..test_config()
        };
        assert_eq!(
            registry_source(Some("~/r.json"), &config).unwrap(),
            RegistrySource::File("/h/r.json".into())
        );
        let none = RunFlags {
            permission_profile: Some("network".into()),
            ..RunFlags::default()
        };
        assert_eq!(
            none.home_expanded(Some("/h")).permission_profile.as_deref(),
            Some("network")
        );
    }

    #[test]
    fn allow_flags_replace_the_configuration_lists_which_host_network_ignores() {
        let mut config = test_config();
        config.allow_hosts.value = vec!["a.example:443".into()];
        config.allow_ports.value = vec![8443];
        let rules = |flags: &RunFlags| {
            allow_rules(flags, &config)
                .unwrap()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rules(&RunFlags::default()),
            ["a.example:443", "any public host on port 8443"]
        );
        let flags = RunFlags {
            allow_hosts: vec!["b.example".into()],
            ..RunFlags::default()
        };
        assert_eq!(
            rules(&flags),
            ["b.example (any port)", "any public host on port 8443"]
        );
        let host = RunFlags {
            network: NetworkMode::Host,
            ..RunFlags::default()
        };
        assert!(
            rules(&host).is_empty(),
            "the file's lists do not refuse --network host"
        );
        let bad = RunFlags {
            allow_hosts: vec!["http://x".into()],
            ..RunFlags::default()
        };
        let err = allow_rules(&bad, &config).unwrap_err();
        assert_eq!(err.kind(), Kind::Usage);
        assert!(
            err.to_string()
                .starts_with("--allow-host/--allow-port: `http://x`"),
            "{err}"
        );
    }

    fn test_config() -> Config {
        let dir = std::env::temp_dir().join("thv-sandbox-no-such-dir");
        Config::load_with(&super::super::file::Flags::default(), &|name| {
            (name == "XDG_CONFIG_HOME").then(|| dir.display().to_string())
        })
        .unwrap()
    }

    /// A registry entry whose server is a package and which pins an identity: the pin is what the package's
    /// provenance is checked against (`enabled`), for `run` and for `pull NAME` alike; the base image the request
    /// names gets its own verification (the default base is pinned by digest: not verified), never the pin.
    #[test]
    fn a_package_entrys_pin_is_the_packages_not_the_base_images() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.json");
        let provenance = serde_json::json!({
            "repository_uri": "https://github.com/stacklok/pkg-server",
            "signer_identity": "/.github/workflows/release.yml",
            "cert_issuer": "https://token.actions.githubusercontent.com",
        });
        let doc = serde_json::json!({"version": "1.0.0", "servers": {
            "pinned-pkg": {"image": "npx://left-pad@1.3.0", "description": "d", "provenance": provenance},
            "plain-pkg": {"image": "uvx://rfc8785==0.1.2", "description": "d"},
            "img": {"image": "ghcr.io/x/y:1", "description": "d", "provenance": provenance},
        }});
        std::fs::write(&registry, doc.to_string()).unwrap();
        let config = test_config();
        let dirs = Dirs {
            state: dir.path().join("state"),
            cache: dir.path().join("cache"),
        };
        let env = |_: &str| None;
        let want = crate::catalog::Catalog::parse(doc.to_string().as_bytes(), "r")
            .unwrap()
            .get("pinned-pkg")
            .ok()
            .and_then(|s| s.provenance.as_ref())
            .map(prov::Policy::from);
        assert!(want.is_some());
        let run = |name: &str, base: Option<&str>| {
            let flags = RunFlags {
                image: name.into(),
                registry: Some(registry.display().to_string()),
                base_image: base.map(str::to_owned),
                stop_timeout: 3.0,
                ..RunFlags::default()
            };
            build(&flags, &config, &dirs, &env, &mut |_| {}).unwrap()
        };
        let pull = |name: &str, identity: IdentityFlags| {
            let flags = PullFlags {
                image: name.into(),
                registry: Some(registry.display().to_string()),
                identity,
                ..PullFlags::default()
            };
            pull_target(&flags, &config, &env, &mut |_| {})
        };

        let req = run("pinned-pkg", None);
        let install = req.package.as_ref().expect("a package");
        assert_eq!(install.verification.policy, want);
        assert_eq!(install.verification.effective_mode(), Mode::Enabled);
        assert_eq!(install.enforced_pin(), want.as_ref());
        assert_eq!(req.image, crate::packages::index::DEFAULT_NODE_BASE);
        assert_eq!(req.verification.policy, None);
        assert_eq!(req.verification.mode, Some(Mode::Disabled));
        // A base by tag: said (warn), never held to the package's pin.
        let req = run("pinned-pkg", Some("node:22-bookworm-slim"));
        assert_eq!(req.verification.policy, None);
        assert_eq!(req.verification.mode, Some(Mode::Warn));
        assert_eq!(req.package.unwrap().verification.policy, want);
        // No pin: the index's own claim, under warn.
        let req = run("plain-pkg", None);
        let install = req.package.unwrap();
        assert_eq!(install.verification.policy, None);
        assert_eq!(install.verification.effective_mode(), Mode::Warn);
        // An image entry keeps its pin on the image.
        let req = run("img", None);
        assert!(req.package.is_none());
        assert_eq!(req.verification.policy, want);

        // `pull NAME`: the package path, with the same verification as `run NAME`.
        match pull("pinned-pkg", IdentityFlags::default()).unwrap() {
            PullTarget::Package(i) => {
                assert_eq!(i.spec.to_string(), "npx://left-pad@1.3.0");
                assert_eq!(i.verification.policy, want);
                assert_eq!(
                    i.key_tag(),
                    run("pinned-pkg", None).package.unwrap().key_tag()
                );
            }
            other => panic!("{other:?}"),
        }
        // Identity flags win over the entry's pin, as for images.
        let flags = IdentityFlags {
            github_workflow_repository: Some("other/repo".into()),
            ..IdentityFlags::default()
        };
        match pull("npx://left-pad@1.3.0", flags.clone()).unwrap() {
            PullTarget::Package(i) => {
                assert_eq!(i.verification.policy, flags.policy().unwrap());
                assert_eq!(i.verification.server, None);
            }
            other => panic!("{other:?}"),
        }
        // An image is pulled unverified: identity flags there are a usage error, not silently dropped.
        match pull("img", IdentityFlags::default()).unwrap() {
            PullTarget::Image(i) => assert_eq!(i, "ghcr.io/x/y:1"),
            other => panic!("{other:?}"),
        }
        let err = pull("img", flags).unwrap_err();
        assert!(matches!(err, RequestError::IdentityForImagePull), "{err}");
        assert_eq!(err.kind(), Kind::Usage);
    }

    #[test]
    fn the_stop_timeout_is_bounded() {
        assert_eq!(stop_timeout(3.0), Some(Duration::from_secs(3)));
        assert_eq!(stop_timeout(-1.0), None);
        assert_eq!(stop_timeout(f64::NAN), None);
        assert_eq!(stop_timeout(MAX_STOP_TIMEOUT_SECS + 1.0), None);
    }
}
