//! The user configuration file: where it is, what it says, and each of its settings combined with the flag and
//! the environment variable that override it ([`Config`]). [`super::request`] turns a `Config` and the flags of
//! `run` into the complete request.
//!
//! The file is TOML: `--config FILE`, else `$THV_SANDBOX_CONFIG`, else `$XDG_CONFIG_HOME/thv-sandbox/config.toml`,
//! else `~/.config/thv-sandbox/config.toml`. A missing default file means "no settings"; a file named explicitly
//! (flag or environment) must exist. Unknown keys are errors (a typo must not silently do nothing), and so are
//! malformed values; both name the file, line and column.
//!
//! Every setting is resolved by [`pick`]: **flag > environment > file > default**, the first level that sets it
//! wins as a whole (a list given on the command line replaces the file's list, it is not merged). [`Config`]
//! remembers where each value came from, for `thv-sandbox config show`.
//!
//! Relative paths in the file are taken relative to the file's directory; `~/` means `$HOME` in the file and in
//! the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::source::RegistrySource;
use crate::trust::verification::{Mode, TufSettings};

/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "THV_SANDBOX_CONFIG";
/// Cache directory.
pub const ENV_CACHE_DIR: &str = "THV_SANDBOX_CACHE_DIR";
/// Comma-separated `HOST[:PORT]` list of plain-HTTP registries.
pub const ENV_INSECURE_REGISTRIES: &str = "THV_SANDBOX_INSECURE_REGISTRIES";
/// Comma-separated `REGISTRY=MIRROR` list.
pub const ENV_REGISTRY_MIRRORS: &str = "THV_SANDBOX_REGISTRY_MIRRORS";
/// Colon-separated list of PEM files with extra CA certificates.
pub const ENV_CA_CERTS: &str = "THV_SANDBOX_CA_CERTS";
/// The MCP server registry (file or URL).
pub const ENV_REGISTRY: &str = "THV_SANDBOX_REGISTRY";
/// `disabled`, `warn` or `enabled`.
pub const ENV_IMAGE_VERIFICATION: &str = "THV_SANDBOX_IMAGE_VERIFICATION";
/// `none`, `network` or a profile file.
pub const ENV_PERMISSION_PROFILE: &str = "THV_SANDBOX_PERMISSION_PROFILE";
/// `0`/`false`/`no` turns refreshing trusted roots through TUF off.
pub const ENV_TUF_REFRESH: &str = "THV_SANDBOX_TUF_REFRESH";
/// The public-good instance's TUF repository (a mirror).
pub const ENV_TUF_URL_PUBLIC_GOOD: &str = "THV_SANDBOX_TUF_URL_PUBLIC_GOOD";
/// GitHub's instance's TUF repository (a mirror).
pub const ENV_TUF_URL_GITHUB: &str = "THV_SANDBOX_TUF_URL_GITHUB";
/// Comma-separated `HOST[:PORT]` list: egress every server may have, besides its permission profile's.
pub const ENV_ALLOW_HOSTS: &str = "THV_SANDBOX_ALLOW_HOSTS";
/// Comma-separated ports: egress to any public host on them, for every server.
pub const ENV_ALLOW_PORTS: &str = "THV_SANDBOX_ALLOW_PORTS";
/// For tests only: a TUF `root.json` file to bootstrap the public-good repository from instead of the embedded
/// one.
pub const ENV_TUF_BOOTSTRAP_PUBLIC_GOOD: &str = "THV_SANDBOX_TUF_BOOTSTRAP_PUBLIC_GOOD";
/// For tests only: the same for GitHub's repository.
pub const ENV_TUF_BOOTSTRAP_GITHUB: &str = "THV_SANDBOX_TUF_BOOTSTRAP_GITHUB";
/// `0`/`false`/`no` turns the bytecode step of roots being built off (see `bytecode_at_unpack`).
pub const ENV_BYTECODE_AT_UNPACK: &str = "THV_SANDBOX_BYTECODE_AT_UNPACK";

/// Largest configuration file read.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// The keys the file accepts, for the hint on an unknown one.
pub const KEYS: &[&str] = &[
    "cache_dir",
    "insecure_registries",
    "mirrors",
    "ca_certs",
    "registry",
    "image_verification",
    "permission_profile",
    "tuf_refresh",
    "tuf_url_public_good",
    "tuf_url_github",
    "allow_hosts",
    "allow_ports",
    "bytecode_at_unpack",
    "memory",
    "cpus",
    "pids_limit",
    "guard",
    "packages",
];

/// The keys of the `[packages]` table, for the hint on an unknown one.
pub const PACKAGE_KEYS: &[&str] = &[
    "npm_base_image",
    "pypi_base_image",
    "npm_index",
    "pypi_index",
    "pypi_extra_indexes",
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag (its spelling).
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// The configuration file.
    File(PathBuf),
    /// Nothing set it.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A resolved value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value in effect.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// The precedence rule, the only implementation of it: the first of flag, environment, file that is `Some` wins;
/// else the default.
pub fn pick<T>(
    flag: Option<(T, &'static str)>,
    env: Option<(T, &'static str)>,
    file: Option<(T, &Path)>,
    default: T,
) -> Setting<T> {
    if let Some((value, name)) = flag {
        return Setting {
            value,
            source: Source::Flag(name),
        };
    }
    if let Some((value, name)) = env {
        return Setting {
            value,
            source: Source::Env(name),
        };
    }
    if let Some((value, path)) = file {
        return Setting {
            value,
            source: Source::File(path.to_owned()),
        };
    }
    Setting {
        value: default,
        source: Source::Default,
    }
}

/// `permission_profile`: the built-in `none` or `network`, or a profile file (the choice; the profile itself is a
/// [`crate::catalog::PermissionProfile`], see [`ProfileChoice::load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileChoice {
    /// No network, no host paths.
    None,
    /// Outbound network.
    Network,
    /// A profile in a JSON file.
    File(PathBuf),
}

impl fmt::Display for ProfileChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileChoice::None => f.write_str("none"),
            ProfileChoice::Network => f.write_str("network"),
            ProfileChoice::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What the command line says (`None` / empty: not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--cache-dir DIR`.
    pub cache_dir: Option<PathBuf>,
    /// `--insecure-registry HOST[:PORT]`, repeated.
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror REGISTRY=MIRROR`, repeated.
    pub mirrors: Vec<String>,
    /// `--ca-cert FILE`, repeated.
    pub ca_certs: Vec<PathBuf>,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The configuration file looked at.
    pub file: PathBuf,
    /// Where its location came from.
    pub file_source: Source,
    /// Whether it exists (a default location may not).
    pub file_exists: bool,
    /// `cache_dir`; `None`: `$XDG_CACHE_HOME/thv-sandbox`, else `~/.cache/thv-sandbox`.
    pub cache_dir: Setting<Option<PathBuf>>,
    /// `insecure_registries`: `HOST[:PORT]` that may be reached over plain HTTP (loopback always may).
    pub insecure_registries: Setting<Vec<String>>,
    /// `[mirrors]`: registry → mirror host, sorted by registry.
    pub mirrors: Setting<Vec<(String, String)>>,
    /// `ca_certs`: PEM files with CA certificates trusted for registries besides the system's.
    pub ca_certs: Setting<Vec<PathBuf>>,
    /// `registry`: the MCP server registry (after `--registry`).
    pub registry: Setting<Option<RegistrySource>>,
    /// `image_verification`: the default verification mode (after `--image-verification`).
    pub image_verification: Setting<Option<Mode>>,
    /// `permission_profile`: the default permission profile (after the flag and the registry entry's).
    pub permission_profile: Setting<Option<ProfileChoice>>,
    /// `tuf_refresh`: whether trusted roots are refreshed through TUF when due (default `true`).
    pub tuf_refresh: Setting<bool>,
    /// `tuf_url_public_good`: the public-good instance's TUF repository (a mirror); `None`: its own.
    pub tuf_url_public_good: Setting<Option<String>>,
    /// `tuf_url_github`: GitHub's instance's TUF repository (a mirror); `None`: its own.
    pub tuf_url_github: Setting<Option<String>>,
    /// `allow_hosts`: `HOST[:PORT]` every server may reach through the egress proxy (after `--allow-host`).
    pub allow_hosts: Setting<Vec<String>>,
    /// `allow_ports`: ports on which every server may reach any public host (after `--allow-port`).
    pub allow_ports: Setting<Vec<u16>>,
    /// The home directory `~` means in paths ([`home_dir`]), for the path flags the request is built from.
    pub home: Option<String>,
    /// Test-only: TUF `root.json` files to bootstrap public-good's and GitHub's repositories from
    /// ([`ENV_TUF_BOOTSTRAP_PUBLIC_GOOD`], [`ENV_TUF_BOOTSTRAP_GITHUB`]); not a key of the file.
    pub tuf_bootstrap: [Option<PathBuf>; 2],
    /// `bytecode_at_unpack`: whether a root being built gets its Python bytecode made valid before it is sealed
    /// (default `true`; `run --no-bytecode` turns it off for a run). Off, the root is exactly as the image has it.
    pub bytecode_at_unpack: Setting<bool>,
    /// `memory`: every server's memory limit, e.g. `"4g"` (after `--memory`; see `crate::sandbox::limits`).
    pub memory: Setting<Option<String>>,
    /// `cpus`: every server's CPU quota, e.g. `2` (after `--cpus`).
    pub cpus: Setting<Option<String>>,
    /// `pids_limit`: every server's process limit, e.g. `2048` (after `--pids-limit`).
    pub pids_limit: Setting<Option<String>>,
    /// `[guard]`: pins, tool filters and the audit log, for all servers and per server (see `guard::config`).
    pub guard: Setting<crate::guard::config::GuardConfig>,
    /// `[packages]`: base images and indexes of `npx://` / `uvx://` installs.
    pub packages: PackageSettings,
}

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--config`, `THV_SANDBOX_CONFIG`, `XDG_CONFIG_HOME` nor `HOME` says where the file is.
    #[error("no configuration directory: neither XDG_CONFIG_HOME nor HOME is set")]
    NoHome,
    /// The file cannot be read (or an explicitly named one does not exist).
    #[error("cannot read the configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// How its location was given.
        named_by: Source,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A key the file does not know.
    #[error("{}:{line}:{column}: unknown key `{key}`", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// The key.
        key: String,
        /// The table it is in (`None`: the top level, or a table whose keys the hint does not list).
        table: Option<&'static str>,
    },
    /// A key under `[mirrors]` that is not a registry host but (close to) one of the file's top-level keys:
    /// TOML puts every key after a `[table]` line into that table, so a line appended to the file lands there.
    #[error(
        "{}:{line}:{column}: `{key}` under [mirrors] is not a registry host{}",
        path.display(),
        match top_level { Some(k) if k == key => format!("; `{k}` is a top-level key: move it above the `[mirrors]` line"),
                          Some(k) => format!("; did you mean the top-level key `{k}`? move it above the `[mirrors]` line"),
                          None => String::new() }
    )]
    MisplacedKey {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// The key as written.
        key: String,
        /// The top-level key it is (or is close to).
        top_level: Option<&'static str>,
    },
    /// A value that parses but makes no sense (in the file, a flag or the environment).
    #[error("{origin}: {key} = `{value}`: {reason}")]
    Invalid {
        /// Where it was set (with line and column for the file).
        origin: String,
        /// The key (or flag).
        key: &'static str,
        /// The value, clipped.
        value: String,
        /// Why.
        reason: String,
    },
    /// A test-only TUF bootstrap root cannot be read.
    #[error("{variable}: cannot read {}", path.display())]
    TufBootstrap {
        /// The environment variable naming it.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::NoHome => {
                format!(
                    "set HOME or XDG_CONFIG_HOME, or name the file with --config or {ENV_CONFIG}"
                )
            }
            ConfigError::Read {
                named_by: Source::Default,
                ..
            } => "make the file readable, or remove it".to_owned(),
            ConfigError::Read { named_by, .. } => {
                format!("check the path given by {named_by}")
            }
            ConfigError::Parse { .. } => {
                "fix the file (TOML; see the Configuration section of the README)".to_owned()
            }
            ConfigError::UnknownKey {
                key,
                table: Some(table),
                ..
            } => {
                if KEYS.contains(&key.as_str()) {
                    return Some(format!(
                        "`{key}` is a top-level key: every key after a `[{table}]` line belongs to that table; \
                         move it above that line"
                    ));
                }
                let close = PACKAGE_KEYS.iter().find(|k| similar(k, key));
                let suggestion = close
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                format!(
                    "{suggestion}the keys of [{table}] are: {}",
                    PACKAGE_KEYS.join(", ")
                )
            }
            ConfigError::UnknownKey { key, .. } => {
                let close = KEYS.iter().find(|k| similar(k, key));
                let suggestion = close
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                format!("{suggestion}the keys are: {}", KEYS.join(", "))
            }
            ConfigError::MisplacedKey { .. } => {
                "every key after a `[mirrors]` line belongs to that table \
                 (\"REGISTRY\" = \"MIRROR\", each a HOST[:PORT]); top-level keys go above it"
                    .to_owned()
            }
            ConfigError::Invalid { .. } | ConfigError::TufBootstrap { .. } => return None,
        })
    }
}

/// Close enough to be a typo: after dropping `_`/`-` and case, at most two edits apart (plurals, a wrong or
/// swapped letter).
fn similar(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    // Plurals: `insecure_registry` for `insecure_registries`.
    let singular = |mut v: Vec<char>| {
        if v.ends_with(&['i', 'e', 's']) {
            v.truncate(v.len() - 3);
            v.push('y');
        } else if v.ends_with(&['s']) {
            v.pop();
        }
        v
    };
    let (a, b) = (singular(norm(a)), singular(norm(b)));
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()] <= 2
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cache_dir: Option<toml::Spanned<String>>,
    insecure_registries: Option<toml::Spanned<Vec<String>>>,
    mirrors: Option<toml::Spanned<BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>>>,
    ca_certs: Option<toml::Spanned<Vec<String>>>,
    registry: Option<toml::Spanned<String>>,
    image_verification: Option<Mode>,
    permission_profile: Option<toml::Spanned<String>>,
    tuf_refresh: Option<bool>,
    tuf_url_public_good: Option<toml::Spanned<String>>,
    tuf_url_github: Option<toml::Spanned<String>>,
    allow_hosts: Option<toml::Spanned<Vec<String>>>,
    allow_ports: Option<toml::Spanned<Vec<toml::Spanned<i64>>>>,
    bytecode_at_unpack: Option<bool>,
    memory: Option<toml::Spanned<toml::Value>>,
    cpus: Option<toml::Spanned<toml::Value>>,
    pids_limit: Option<toml::Spanned<toml::Value>>,
    guard: Option<crate::guard::config::GuardConfig>,
    packages: Option<FilePackages>,
}

/// The file's `[packages]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilePackages {
    npm_base_image: Option<toml::Spanned<String>>,
    pypi_base_image: Option<toml::Spanned<String>>,
    npm_index: Option<toml::Spanned<String>>,
    pypi_index: Option<toml::Spanned<String>>,
    pypi_extra_indexes: Option<toml::Spanned<Vec<toml::Spanned<String>>>>,
}

/// `[packages]`: where `npx://` / `uvx://` packages are installed from and onto. Each value with its origin: the
/// base images after `--base-image` and `THV_SANDBOX_{NPX,UVX}_BASE_IMAGE`; the indexes **before** the
/// ecosystems' own variables (`npm_config_registry`, `PIP_INDEX_URL`, …: they are the user's settings for every
/// npm/pip, the file is thv-sandbox's). `None` / empty: the pinned default base, the public index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSettings {
    /// `npm_base_image`.
    pub npm_base_image: Setting<Option<String>>,
    /// `pypi_base_image`.
    pub pypi_base_image: Setting<Option<String>>,
    /// `npm_index`.
    pub npm_index: Setting<Option<String>>,
    /// `pypi_index`.
    pub pypi_index: Setting<Option<String>>,
    /// `pypi_extra_indexes` (replacing `PIP_EXTRA_INDEX_URL` as a whole).
    pub pypi_extra_indexes: Setting<Option<Vec<String>>>,
}

impl PackageSettings {
    /// What the configuration says for `eco`'s installs, with where each came from, for
    /// [`crate::packages::Install::new`].
    pub fn configured(
        &self,
        eco: crate::packages::Ecosystem,
    ) -> crate::packages::index::Configured {
        use crate::packages::Ecosystem;
        fn with_source<T: Clone>(s: &Setting<Option<T>>) -> Option<(T, String)> {
            s.value.clone().map(|v| (v, s.source.to_string()))
        }
        let (base, index) = match eco {
            Ecosystem::Npm => (&self.npm_base_image, &self.npm_index),
            Ecosystem::Pypi => (&self.pypi_base_image, &self.pypi_index),
        };
        crate::packages::index::Configured {
            base_image: with_source(base),
            index: with_source(index),
            extra_indexes: match eco {
                Ecosystem::Npm => None,
                Ecosystem::Pypi => with_source(&self.pypi_extra_indexes),
            },
        }
    }
}

/// Where the configuration file is, and who said so.
pub fn locate(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(PathBuf, Source), ConfigError> {
    if let Some(path) = flag {
        return Ok((path.to_owned(), Source::Flag("--config")));
    }
    if let Some(path) = non_empty(env, ENV_CONFIG) {
        let path = expand_home(&path, home_dir(env).as_deref());
        return Ok((PathBuf::from(path), Source::Env(ENV_CONFIG)));
    }
    if let Some(dir) = non_empty(env, "XDG_CONFIG_HOME") {
        return Ok((
            PathBuf::from(dir).join("thv-sandbox/config.toml"),
            Source::Default,
        ));
    }
    // MCP clients often start servers with a minimal environment: without HOME, the account's home directory.
    let home = home_dir(env).ok_or(ConfigError::NoHome)?;
    Ok((
        PathBuf::from(home).join(".config/thv-sandbox/config.toml"),
        Source::Default,
    ))
}

fn non_empty(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

impl Config {
    /// Read the configuration file and combine it with `flags` and the process environment.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Config::load_with(flags, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with any environment lookup.
    pub fn load_with(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let home = home_dir(env);
        let flags = &flags.home_expanded(home.as_deref());
        let (file, file_source) = locate(flags.config.as_deref(), env)?;
        let (text, file_exists) = read_file(&file, &file_source)?;
        let raw: FileConfig = match &text {
            Some(text) => parse(&file, text)?,
            None => FileConfig::default(),
        };
        let text = text.unwrap_or_default();
        let base = file.parent().unwrap_or(Path::new("."));
        let at = |span: std::ops::Range<usize>| {
            let (line, column) = line_col(&text, span.start);
            format!("{}:{line}:{column}", file.display())
        };
        let file_path = |s: &str| expand(s, Some(base), home.as_deref());

        // cache_dir
        let cache_dir = pick(
            flags.cache_dir.clone().map(|p| (Some(p), "--cache-dir")),
            non_empty(env, ENV_CACHE_DIR)
                .map(|v| (Some(expand(&v, None, home.as_deref())), ENV_CACHE_DIR)),
            raw.cache_dir
                .as_ref()
                .map(|s| (Some(file_path(s.get_ref())), file.as_path())),
            None,
        );

        // insecure_registries
        let flag_insecure = (!flags.insecure_registries.is_empty())
            .then(|| (flags.insecure_registries.clone(), "--insecure-registry"));
        let env_insecure = non_empty(env, ENV_INSECURE_REGISTRIES)
            .map(|v| (split_list(&v, ','), ENV_INSECURE_REGISTRIES));
        let file_insecure = raw.insecure_registries.as_ref();
        let insecure_registries = pick(
            flag_insecure,
            env_insecure,
            file_insecure.map(|s| (s.get_ref().clone(), file.as_path())),
            Vec::new(),
        );
        let origin_of = |source: &Source, span: Option<std::ops::Range<usize>>| match source {
            Source::File(_) => span.map_or_else(|| file.display().to_string(), at),
            other => other.to_string(),
        };
        for host in &insecure_registries.value {
            check_host(host).map_err(|reason| ConfigError::Invalid {
                origin: origin_of(&insecure_registries.source, file_insecure.map(|s| s.span())),
                key: "insecure_registries",
                value: clip(host),
                reason: reason.to_string(),
            })?;
        }

        // mirrors
        let parse_pairs = |v: &str,
                           origin: &Source|
         -> Result<Vec<(String, String)>, ConfigError> {
            split_list(v, ',')
                .into_iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                        .ok_or_else(|| ConfigError::Invalid {
                            origin: origin.to_string(),
                            key: "mirrors",
                            value: clip(&pair),
                            reason: "write REGISTRY=MIRROR, e.g. ghcr.io=127.0.0.1:5000".to_owned(),
                        })
                })
                .collect()
        };
        let flag_mirrors = if flags.mirrors.is_empty() {
            None
        } else {
            Some((
                parse_pairs(&flags.mirrors.join(","), &Source::Flag("--registry-mirror"))?,
                "--registry-mirror",
            ))
        };
        let env_mirrors = match non_empty(env, ENV_REGISTRY_MIRRORS) {
            Some(v) => Some((
                parse_pairs(&v, &Source::Env(ENV_REGISTRY_MIRRORS))?,
                ENV_REGISTRY_MIRRORS,
            )),
            None => None,
        };
        let file_mirrors = raw.mirrors.as_ref();
        let file_pairs = match file_mirrors {
            Some(m) => Some((
                file_mirror_pairs(&file, &text, m.get_ref())?,
                file.as_path(),
            )),
            None => None,
        };
        let mut mirrors = pick(flag_mirrors, env_mirrors, file_pairs, Vec::new());
        for (registry, mirror) in &mut mirrors.value {
            for (what, host) in [("registry", &mut *registry), ("mirror", &mut *mirror)] {
                let checked = check_host(host).map_err(|e| e.to_string()).and_then(|()| {
                    if what == "registry" && !names_a_registry(host) {
                        Err(NOT_A_REGISTRY.to_owned())
                    } else {
                        Ok(())
                    }
                });
                checked.map_err(|reason| ConfigError::Invalid {
                    origin: origin_of(&mirrors.source, file_mirrors.map(|s| s.span())),
                    key: "mirrors",
                    value: clip(host),
                    reason: format!("the {what}: {reason}"),
                })?;
            }
            *registry = normalize_registry(registry);
        }
        mirrors.value.sort();
        if let Some(w) = mirrors.value.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ConfigError::Invalid {
                origin: origin_of(&mirrors.source, file_mirrors.map(|s| s.span())),
                key: "mirrors",
                value: w[0].0.clone(),
                reason: "the registry has two mirrors".to_owned(),
            });
        }

        // ca_certs
        let ca_certs = pick(
            (!flags.ca_certs.is_empty()).then(|| (flags.ca_certs.clone(), "--ca-cert")),
            non_empty(env, ENV_CA_CERTS).map(|v| {
                (
                    split_list(&v, ':')
                        .iter()
                        .map(|p| expand(p, None, home.as_deref()))
                        .collect(),
                    ENV_CA_CERTS,
                )
            }),
            raw.ca_certs.as_ref().map(|s| {
                (
                    s.get_ref().iter().map(|p| file_path(p)).collect(),
                    file.as_path(),
                )
            }),
            Vec::new(),
        );

        // registry
        let registry_of = |v: &str, origin: String| -> Result<RegistrySource, ConfigError> {
            if v.contains("://") {
                let ok = ["https://", "http://"]
                    .iter()
                    .any(|s| v.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
                if !ok || v.chars().any(char::is_whitespace) {
                    return Err(ConfigError::Invalid {
                        origin,
                        key: "registry",
                        value: clip(v),
                        reason: "a URL must be http:// or https:// and name a host".to_owned(),
                    });
                }
                Ok(RegistrySource::Url(v.to_owned()))
            } else {
                Ok(RegistrySource::File(PathBuf::from(v)))
            }
        };
        let env_registry = match non_empty(env, ENV_REGISTRY) {
            Some(v) => Some((
                Some(match registry_of(&v, ENV_REGISTRY.to_owned())? {
                    RegistrySource::File(p) => {
                        RegistrySource::File(expand(&p.to_string_lossy(), None, home.as_deref()))
                    }
                    url => url,
                }),
                ENV_REGISTRY,
            )),
            None => None,
        };
        let file_registry = match &raw.registry {
            Some(s) => Some((
                Some(match registry_of(s.get_ref(), at(s.span()))? {
                    RegistrySource::File(p) => {
                        RegistrySource::File(file_path(&p.to_string_lossy()))
                    }
                    url => url,
                }),
                file.as_path(),
            )),
            None => None,
        };
        let registry = pick(None, env_registry, file_registry, None);

        // image_verification
        let env_verification = match non_empty(env, ENV_IMAGE_VERIFICATION) {
            Some(v) => Some((
                Some(v.parse::<Mode>().map_err(|_| ConfigError::Invalid {
                    origin: Source::Env(ENV_IMAGE_VERIFICATION).to_string(),
                    key: "image_verification",
                    value: clip(&v),
                    reason: "expected `disabled`, `warn` or `enabled`".to_owned(),
                })?),
                ENV_IMAGE_VERIFICATION,
            )),
            None => None,
        };
        let image_verification = pick(
            None,
            env_verification,
            raw.image_verification.map(|v| (Some(v), file.as_path())),
            None,
        );

        // permission_profile
        let profile_of = |v: &str, relative_to: Option<&Path>| match v {
            "none" => ProfileChoice::None,
            "network" => ProfileChoice::Network,
            path => ProfileChoice::File(expand(path, relative_to, home.as_deref())),
        };
        let check_profile = |v: &str, origin: String| {
            if v.is_empty() {
                return Err(ConfigError::Invalid {
                    origin,
                    key: "permission_profile",
                    value: String::new(),
                    reason: "expected `none`, `network` or the path of a profile file".to_owned(),
                });
            }
            Ok(())
        };
        let env_profile = non_empty(env, ENV_PERMISSION_PROFILE)
            .map(|v| (Some(profile_of(&v, None)), ENV_PERMISSION_PROFILE));
        let file_profile = match &raw.permission_profile {
            Some(s) => {
                check_profile(s.get_ref(), at(s.span()))?;
                Some((Some(profile_of(s.get_ref(), Some(base))), file.as_path()))
            }
            None => None,
        };
        let permission_profile = pick(None, env_profile, file_profile, None);

        // tuf_refresh, tuf_url_*
        let env_refresh = match non_empty(env, ENV_TUF_REFRESH) {
            Some(v) => Some((
                parse_switch(&v).ok_or_else(|| ConfigError::Invalid {
                    origin: Source::Env(ENV_TUF_REFRESH).to_string(),
                    key: "tuf_refresh",
                    value: clip(&v),
                    reason: "expected 1/0, true/false, yes/no, on/off".to_owned(),
                })?,
                ENV_TUF_REFRESH,
            )),
            None => None,
        };
        let tuf_refresh = pick(
            None,
            env_refresh,
            raw.tuf_refresh.map(|v| (v, file.as_path())),
            true,
        );
        let tuf_url = |key: &'static str,
                       env_name: &'static str,
                       in_file: &Option<toml::Spanned<String>>|
         -> Result<Setting<Option<String>>, ConfigError> {
            let env_value = non_empty(env, env_name);
            if let Some(v) = &env_value {
                check_tuf_url(v).map_err(|e| ConfigError::Invalid {
                    origin: Source::Env(env_name).to_string(),
                    key,
                    value: clip(v),
                    reason: e.to_string(),
                })?;
            }
            if let Some(s) = in_file {
                check_tuf_url(s.get_ref()).map_err(|e| ConfigError::Invalid {
                    origin: at(s.span()),
                    key,
                    value: clip(s.get_ref()),
                    reason: e.to_string(),
                })?;
            }
            Ok(pick(
                None,
                env_value.map(|v| (Some(v), env_name)),
                in_file
                    .as_ref()
                    .map(|s| (Some(s.get_ref().clone()), file.as_path())),
                None,
            ))
        };
        let tuf_url_public_good = tuf_url(
            "tuf_url_public_good",
            ENV_TUF_URL_PUBLIC_GOOD,
            &raw.tuf_url_public_good,
        )?;
        let tuf_url_github = tuf_url("tuf_url_github", ENV_TUF_URL_GITHUB, &raw.tuf_url_github)?;
        // allow_hosts, allow_ports (the flags are `run`'s: applied by the request)
        let env_hosts =
            non_empty(env, ENV_ALLOW_HOSTS).map(|v| (split_list(&v, ','), ENV_ALLOW_HOSTS));
        let file_hosts = raw.allow_hosts.as_ref();
        let allow_hosts = pick(
            None,
            env_hosts,
            file_hosts.map(|s| (s.get_ref().clone(), file.as_path())),
            Vec::new(),
        );
        for h in &allow_hosts.value {
            crate::sandbox::egress::AllowRule::parse_host(h).map_err(|e| ConfigError::Invalid {
                origin: origin_of(&allow_hosts.source, file_hosts.map(|s| s.span())),
                key: "allow_hosts",
                value: clip(h),
                reason: e.to_string(),
            })?;
        }
        let env_ports = match non_empty(env, ENV_ALLOW_PORTS) {
            Some(v) => {
                let mut ports = Vec::new();
                for p in split_list(&v, ',') {
                    ports.push(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        ConfigError::Invalid {
                            origin: Source::Env(ENV_ALLOW_PORTS).to_string(),
                            key: "allow_ports",
                            value: clip(&p),
                            reason: "a port is a number from 1 to 65535".to_owned(),
                        }
                    })?);
                }
                Some((ports, ENV_ALLOW_PORTS))
            }
            None => None,
        };
        let file_ports = match &raw.allow_ports {
            Some(list) => {
                let mut ports = Vec::new();
                for p in list.get_ref() {
                    ports.push(
                        u16::try_from(*p.get_ref())
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| ConfigError::Invalid {
                                origin: at(p.span()),
                                key: "allow_ports",
                                value: p.get_ref().to_string(),
                                reason: "a port is a number from 1 to 65535".to_owned(),
                            })?,
                    );
                }
                Some((ports, file.as_path()))
            }
            None => None,
        };
        let allow_ports = pick(None, env_ports, file_ports, Vec::new());
        // Test-only: the TUF roots to bootstrap from (read when the trust settings are asked for).
        let tuf_bootstrap = [ENV_TUF_BOOTSTRAP_PUBLIC_GOOD, ENV_TUF_BOOTSTRAP_GITHUB]
            .map(|name| non_empty(env, name).map(PathBuf::from));

        // bytecode_at_unpack
        let env_bytecode = match non_empty(env, ENV_BYTECODE_AT_UNPACK) {
            Some(v) => Some((
                parse_switch(&v).ok_or_else(|| ConfigError::Invalid {
                    origin: Source::Env(ENV_BYTECODE_AT_UNPACK).to_string(),
                    key: "bytecode_at_unpack",
                    value: clip(&v),
                    reason: "expected 1/0, true/false, yes/no, on/off".to_owned(),
                })?,
                ENV_BYTECODE_AT_UNPACK,
            )),
            None => None,
        };
        let bytecode_at_unpack = pick(
            None,
            env_bytecode,
            raw.bytecode_at_unpack.map(|v| (v, file.as_path())),
            true,
        );

        // memory, cpus, pids_limit: checked here, so a mistake in the file is reported as one.
        let limit = |key: &'static str,
                     v: &Option<toml::Spanned<toml::Value>>,
                     parse: fn(&str) -> Result<(), String>|
         -> Result<Setting<Option<String>>, ConfigError> {
            let text = match v.as_ref().map(|s| s.get_ref()) {
                None => None,
                Some(toml::Value::String(s)) => Some(s.clone()),
                Some(toml::Value::Integer(i)) => Some(i.to_string()),
                Some(toml::Value::Float(f)) => Some(f.to_string()),
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        origin: file.display().to_string(),
                        key,
                        value: clip(&format!("{other:?}")),
                        reason: "expected a string or a number".to_owned(),
                    })
                }
            };
            if let Some(t) = &text {
                parse(t).map_err(|reason| ConfigError::Invalid {
                    origin: file.display().to_string(),
                    key,
                    value: clip(t),
                    reason,
                })?;
            }
            Ok(pick(
                None,
                None,
                text.map(|t| (Some(t), file.as_path())),
                None,
            ))
        };
        use crate::sandbox::limits;
        let memory = limit("memory", &raw.memory, |s| {
            limits::parse_memory(s).map(|_| ())
        })?;
        let cpus = limit("cpus", &raw.cpus, |s| limits::parse_cpus(s).map(|_| ()))?;
        let pids_limit = limit("pids_limit", &raw.pids_limit, |s| {
            limits::parse_pids(s).map(|_| ())
        })?;
        // [guard]
        let guard = pick(
            None,
            None,
            raw.guard.clone().map(|g| {
                (
                    g.expanded(&|p| file_path(&p.to_string_lossy())),
                    file.as_path(),
                )
            }),
            Default::default(),
        );

        // [packages]: the base images (after their variables), the indexes (before the ecosystems' variables).
        use crate::packages::{base_image_variable, index as pkg_index, Ecosystem};
        let raw_packages = raw.packages.as_ref();
        let base_setting = |eco: Ecosystem,
                            key: &'static str,
                            in_file: Option<&toml::Spanned<String>>|
         -> Result<Setting<Option<String>>, ConfigError> {
            if let Some(s) = in_file {
                let v = s.get_ref();
                let ok = match v.starts_with("oci:") {
                    true => crate::image::layout::parse_oci_ref(v).is_ok(),
                    false => v.parse::<crate::image::reference::Reference>().is_ok(),
                };
                if !ok {
                    return Err(ConfigError::Invalid {
                        origin: at(s.span()),
                        key,
                        value: clip(v),
                        reason: "expected an image reference (e.g. `node:22-bookworm-slim`, \
                                 `ghcr.io/org/base@sha256:…`) or `oci:PATH[:TAG]`"
                            .to_owned(),
                    });
                }
            }
            let var = base_image_variable(eco);
            Ok(pick(
                None,
                non_empty(env, var).map(|v| (Some(v), var)),
                in_file.map(|s| {
                    let v = s.get_ref();
                    // An `oci:` layout's path is taken relative to the file, as every path of the file is.
                    let v = match crate::image::layout::parse_oci_ref(v) {
                        Ok((path, tag)) => {
                            let path = file_path(&path.to_string_lossy());
                            let path = path.to_string_lossy();
                            match tag {
                                Some(t) => format!("oci:{path}:{t}"),
                                None => format!("oci:{path}"),
                            }
                        }
                        Err(_) => v.clone(),
                    };
                    (Some(v), file.as_path())
                }),
                None,
            ))
        };
        let index_setting = |eco: Ecosystem,
                             key: &'static str,
                             in_file: Option<&toml::Spanned<String>>|
         -> Result<Setting<Option<String>>, ConfigError> {
            if let Some(s) = in_file {
                pkg_index::check_url(eco, s.get_ref()).map_err(|e| ConfigError::Invalid {
                    origin: at(s.span()),
                    key,
                    value: clip(s.get_ref()),
                    reason: e.1,
                })?;
                return Ok(Setting {
                    value: Some(s.get_ref().clone()),
                    source: Source::File(file.clone()),
                });
            }
            // The ecosystem's own variables come after the file (checked when an install uses them).
            Ok(pkg_index::index_variables(eco)
                .iter()
                .find_map(|k| {
                    env(k).filter(|v| !v.trim().is_empty()).map(|v| Setting {
                        value: Some(v),
                        source: Source::Env(k),
                    })
                })
                .unwrap_or(Setting {
                    value: None,
                    source: Source::Default,
                }))
        };
        let npm_base_image = base_setting(
            Ecosystem::Npm,
            "npm_base_image",
            raw_packages.and_then(|p| p.npm_base_image.as_ref()),
        )?;
        let pypi_base_image = base_setting(
            Ecosystem::Pypi,
            "pypi_base_image",
            raw_packages.and_then(|p| p.pypi_base_image.as_ref()),
        )?;
        let npm_index = index_setting(
            Ecosystem::Npm,
            "npm_index",
            raw_packages.and_then(|p| p.npm_index.as_ref()),
        )?;
        let pypi_index = index_setting(
            Ecosystem::Pypi,
            "pypi_index",
            raw_packages.and_then(|p| p.pypi_index.as_ref()),
        )?;
        let pypi_extra_indexes = match raw_packages.and_then(|p| p.pypi_extra_indexes.as_ref()) {
            Some(list) => {
                for u in list.get_ref() {
                    pkg_index::check_url(Ecosystem::Pypi, u.get_ref()).map_err(|e| {
                        ConfigError::Invalid {
                            origin: at(u.span()),
                            key: "pypi_extra_indexes",
                            value: clip(u.get_ref()),
                            reason: e.1,
                        }
                    })?;
                }
                Setting {
                    value: Some(list.get_ref().iter().map(|u| u.get_ref().clone()).collect()),
                    source: Source::File(file.clone()),
                }
            }
            None => match env(pkg_index::PIP_EXTRA_INDEX_URL).filter(|v| !v.trim().is_empty()) {
                Some(v) => Setting {
                    value: Some(v.split_whitespace().map(str::to_owned).collect()),
                    source: Source::Env(pkg_index::PIP_EXTRA_INDEX_URL),
                },
                None => Setting {
                    value: None,
                    source: Source::Default,
                },
            },
        };
        let packages = PackageSettings {
            npm_base_image,
            pypi_base_image,
            npm_index,
            pypi_index,
            pypi_extra_indexes,
        };

        Ok(Config {
            file,
            file_source,
            file_exists,
            cache_dir,
            insecure_registries,
            mirrors,
            ca_certs,
            registry,
            image_verification,
            permission_profile,
            tuf_refresh,
            tuf_url_public_good,
            tuf_url_github,
            allow_hosts,
            allow_ports,
            home,
            tuf_bootstrap,
            bytecode_at_unpack,
            memory,
            cpus,
            pids_limit,
            guard,
            packages,
        })
    }

    /// Refreshing trusted roots through TUF as configured; reads the test-only bootstrap roots, if named.
    pub fn tuf_settings(&self) -> Result<TufSettings, ConfigError> {
        let mut s = TufSettings {
            refresh: self.tuf_refresh.value,
            ..Default::default()
        };
        s.public_good.url = self.tuf_url_public_good.value.clone();
        s.github.url = self.tuf_url_github.value.clone();
        let names = [ENV_TUF_BOOTSTRAP_PUBLIC_GOOD, ENV_TUF_BOOTSTRAP_GITHUB];
        for ((path, name), repo) in self
            .tuf_bootstrap
            .iter()
            .zip(names)
            .zip([&mut s.public_good, &mut s.github])
        {
            if let Some(path) = path {
                repo.bootstrap =
                    Some(
                        std::fs::read(path).map_err(|source| ConfigError::TufBootstrap {
                            variable: name,
                            path: path.clone(),
                            source,
                        })?,
                    );
            }
        }
        Ok(s)
    }

    /// How registries are reached: plain-HTTP registries, mirrors, CA certificates.
    pub fn registry_access(&self) -> crate::distribution::RegistryAccess {
        crate::distribution::RegistryAccess {
            insecure: self.insecure_registries.value.clone(),
            mirrors: self.mirrors.value.clone(),
            ca_certs: self.ca_certs.value.clone(),
        }
    }

    /// The effective settings as JSON, for `thv-sandbox config show --json`: the file (`path`, `exists`,
    /// `source`) and, per key of the file, `{"value": …, "source": …}` (`value` is `null` when unset).
    pub fn to_json(&self, effective_cache_dir: Option<&Path>) -> serde_json::Value {
        use serde_json::{json, Value};
        fn entry<T: serde::Serialize>(s: &Setting<T>) -> Value {
            json!({"value": s.value, "source": s.source.to_string()})
        }
        let paths = |v: &[PathBuf]| -> Vec<String> {
            v.iter().map(|p| p.to_string_lossy().into_owned()).collect()
        };
        let cache = self
            .cache_dir
            .value
            .as_deref()
            .or(effective_cache_dir)
            .map(|p| p.to_string_lossy().into_owned());
        let mirrors: serde_json::Map<String, Value> = self
            .mirrors
            .value
            .iter()
            .map(|(r, m)| (r.clone(), Value::String(m.clone())))
            .collect();
        json!({
            "file": {
                "path": self.file.to_string_lossy(),
                "exists": self.file_exists,
                "source": self.file_source.to_string(),
            },
            "settings": {
                "cache_dir": {"value": cache, "source": self.cache_dir.source.to_string()},
                "insecure_registries": entry(&self.insecure_registries),
                "ca_certs": {"value": paths(&self.ca_certs.value), "source": self.ca_certs.source.to_string()},
                "registry": {
                    "value": self.registry.value.as_ref().map(|r| r.describe()),
                    "source": self.registry.source.to_string(),
                },
                "image_verification": {
                    "value": self.image_verification.value.map(|v| v.to_string()),
                    "source": self.image_verification.source.to_string(),
                },
                "permission_profile": {
                    "value": self.permission_profile.value.as_ref().map(|v| v.to_string()),
                    "source": self.permission_profile.source.to_string(),
                },
                "tuf_refresh": entry(&self.tuf_refresh),
                "tuf_url_public_good": entry(&self.tuf_url_public_good),
                "tuf_url_github": entry(&self.tuf_url_github),
                "allow_hosts": entry(&self.allow_hosts),
                "allow_ports": entry(&self.allow_ports),
                "bytecode_at_unpack": entry(&self.bytecode_at_unpack),
                "memory": entry(&self.memory),
                "cpus": entry(&self.cpus),
                "pids_limit": entry(&self.pids_limit),
                "guard": entry(&self.guard),
                "packages": {
                    "npm_base_image": entry(&self.packages.npm_base_image),
                    "pypi_base_image": entry(&self.packages.pypi_base_image),
                    "npm_index": entry(&self.packages.npm_index),
                    "pypi_index": entry(&self.packages.pypi_index),
                    "pypi_extra_indexes": entry(&self.packages.pypi_extra_indexes),
                },
                "mirrors": {"value": mirrors, "source": self.mirrors.source.to_string()},
            }
        })
    }

    /// The effective settings as TOML with where each came from, for `thv-sandbox config show`. Unset reserved
    /// keys are shown as comments.
    pub fn render(&self, effective_cache_dir: Option<&Path>) -> String {
        let mut out = String::new();
        let exists = if self.file_exists {
            ""
        } else {
            " (not present)"
        };
        out.push_str(&format!(
            "# configuration file: {}{exists} ({})\n",
            self.file.display(),
            match &self.file_source {
                Source::Default => "the default location".to_owned(),
                other => format!("from {other}"),
            }
        ));
        let line = |out: &mut String, key: &str, value: Option<String>, source: &Source| match value
        {
            Some(v) => out.push_str(&format!("{key} = {v}  # {source}\n")),
            None => out.push_str(&format!("# {key} is not set  # {source}\n")),
        };
        let cache = self
            .cache_dir
            .value
            .as_deref()
            .or(effective_cache_dir)
            .map(|p| quote(&p.to_string_lossy()));
        line(&mut out, "cache_dir", cache, &self.cache_dir.source);
        let list = |items: &mut dyn Iterator<Item = String>| {
            format!(
                "[{}]",
                items.map(|s| quote(&s)).collect::<Vec<_>>().join(", ")
            )
        };
        line(
            &mut out,
            "insecure_registries",
            Some(list(&mut self.insecure_registries.value.iter().cloned())),
            &self.insecure_registries.source,
        );
        line(
            &mut out,
            "ca_certs",
            Some(list(
                &mut self
                    .ca_certs
                    .value
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned()),
            )),
            &self.ca_certs.source,
        );
        line(
            &mut out,
            "registry",
            self.registry.value.as_ref().map(|r| quote(&r.describe())),
            &self.registry.source,
        );
        line(
            &mut out,
            "image_verification",
            self.image_verification.value.map(|v| quote(&v.to_string())),
            &self.image_verification.source,
        );
        line(
            &mut out,
            "permission_profile",
            self.permission_profile
                .value
                .as_ref()
                .map(|v| quote(&v.to_string())),
            &self.permission_profile.source,
        );
        line(
            &mut out,
            "tuf_refresh",
            Some(self.tuf_refresh.value.to_string()),
            &self.tuf_refresh.source,
        );
        for (key, setting) in [
            ("tuf_url_public_good", &self.tuf_url_public_good),
            ("tuf_url_github", &self.tuf_url_github),
        ] {
            line(
                &mut out,
                key,
                setting.value.as_deref().map(quote),
                &setting.source,
            );
        }
        line(
            &mut out,
            "allow_hosts",
            Some(list(&mut self.allow_hosts.value.iter().cloned())),
            &self.allow_hosts.source,
        );
        line(
            &mut out,
            "allow_ports",
            Some(format!(
                "[{}]",
                self.allow_ports
                    .value
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            &self.allow_ports.source,
        );
        line(
            &mut out,
            "bytecode_at_unpack",
            Some(self.bytecode_at_unpack.value.to_string()),
            &self.bytecode_at_unpack.source,
        );
        for (key, s) in [
            ("memory", &self.memory),
            ("cpus", &self.cpus),
            ("pids_limit", &self.pids_limit),
        ] {
            line(&mut out, key, s.value.as_deref().map(quote), &s.source);
        }
        if self.guard.value != Default::default() {
            // A table of its own, before `[mirrors]` (whose keys run to the end of the text).
            out.push_str(&format!(
                "[guard]  # {}\n{}",
                self.guard.source,
                guard_table(&self.guard.value)
            ));
        }
        // `[packages]`, a table of its own before `[mirrors]`; an unset key with the default it falls back on.
        {
            use crate::packages::index as pi;
            let p = &self.packages;
            out.push_str("[packages]\n");
            for (key, s, default) in [
                ("npm_base_image", &p.npm_base_image, pi::DEFAULT_NODE_BASE),
                (
                    "pypi_base_image",
                    &p.pypi_base_image,
                    pi::DEFAULT_PYTHON_BASE,
                ),
                ("npm_index", &p.npm_index, pi::NPM_REGISTRY),
                ("pypi_index", &p.pypi_index, pi::PYPI_INDEX),
            ] {
                match &s.value {
                    Some(v) => out.push_str(&format!("{key} = {}  # {}\n", quote(v), s.source)),
                    None => out.push_str(&format!("# {key} is not set: {default}  # default\n")),
                }
            }
            match &p.pypi_extra_indexes.value {
                Some(v) => line(
                    &mut out,
                    "pypi_extra_indexes",
                    Some(list(&mut v.iter().cloned())),
                    &p.pypi_extra_indexes.source,
                ),
                None => line(&mut out, "pypi_extra_indexes", None, &Source::Default),
            }
        }
        out.push_str(&format!("[mirrors]  # {}\n", self.mirrors.source));
        for (registry, mirror) in &self.mirrors.value {
            out.push_str(&format!("{} = {}\n", quote(registry), quote(mirror)));
        }
        out
    }
}

fn read_file(path: &Path, source: &Source) -> Result<(Option<String>, bool), ConfigError> {
    let err = |e: std::io::Error| ConfigError::Read {
        path: path.to_owned(),
        named_by: source.clone(),
        source: e,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && *source == Source::Default => {
            return Ok((None, false))
        }
        Err(e) => return Err(err(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(err(std::io::Error::other(format!(
            "larger than {MAX_FILE_SIZE} bytes"
        ))));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| err(std::io::Error::other("not UTF-8 text")))?;
    Ok((Some(text), true))
}

fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_col(text, span.start));
        let message = e.message().trim().to_owned();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((key, _)) = rest.split_once('`') {
                let offset = e.span().map_or(0, |s| s.start);
                return ConfigError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    column,
                    key: key.to_owned(),
                    table: (table_at(text, offset).as_deref() == Some("packages"))
                        .then_some("packages"),
                };
            }
        }
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: message.lines().next().unwrap_or_default().to_owned(),
        }
    })
}

/// The table whose keys are written at byte `offset` of `text`: the last `[TABLE]` header line before it, or
/// `packages` for an inline `packages = { … }` on the same line (`None`: the top level).
fn table_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.rsplit('\n').next().unwrap_or_default();
    if let Some((key, _)) = line.split_once('=') {
        if line.contains('{') {
            return Some(key.trim().trim_matches('"').to_owned());
        }
    }
    before.lines().rev().find_map(|l| {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.split(']').next()?;
        Some(inner.trim().trim_matches('[').trim().to_owned())
    })
}

/// Why a `[mirrors]` key that is a valid host is still not a registry.
const NOT_A_REGISTRY: &str =
    "a registry, as image references name it, has a `.` or a port (`:`), or is \
     `localhost`; this name would never match an image's registry";

/// Whether `host` is what an image reference takes for a registry: its first component is one when it has a `.`
/// or a `:` (a port, or an IPv6 address), or is `localhost` (the rule of Docker's reference grammar).
fn names_a_registry(host: &str) -> bool {
    host.contains('.') || host.contains(':') || host.eq_ignore_ascii_case("localhost")
}

/// The file's `[mirrors]` table, each entry checked where it is written: a key that is not a registry host but
/// (close to) a top-level key was appended after the table by mistake; values must be host strings.
fn file_mirror_pairs(
    path: &Path,
    text: &str,
    table: &BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let at = |offset: usize| {
        let (line, column) = line_col(text, offset);
        (line, column, format!("{}:{line}:{column}", path.display()))
    };
    let mut pairs = Vec::new();
    // In the order they are written, so the first mistake in the file is the one reported.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let (line, column, origin) = at(key.span().start);
        let name = key.get_ref();
        if !names_a_registry(name) {
            let top_level = KEYS
                .iter()
                .find(|k| **k == name.as_str())
                .or_else(|| KEYS.iter().find(|k| similar(k, name)))
                .copied();
            return Err(ConfigError::MisplacedKey {
                path: path.to_owned(),
                line,
                column,
                key: name.clone(),
                top_level,
            });
        }
        check_host(name).map_err(|reason| ConfigError::Invalid {
            origin: origin.clone(),
            key: "mirrors",
            value: clip(name),
            reason: format!("the registry: {reason}"),
        })?;
        let Some(mirror) = value.get_ref().as_str() else {
            return Err(ConfigError::Invalid {
                origin: at(value.span().start).2,
                key: "mirrors",
                value: clip(name),
                reason:
                    "a mirror is a host in quotes: \"REGISTRY\" = \"MIRROR\", e.g. \"docker.io\" = \
                         \"127.0.0.1:5000\""
                        .to_owned(),
            });
        };
        check_host(mirror).map_err(|reason| ConfigError::Invalid {
            origin: at(value.span().start).2,
            key: "mirrors",
            value: clip(mirror),
            reason: format!("the mirror: {reason}"),
        })?;
        pairs.push((name.clone(), mirror.to_owned()));
    }
    Ok(pairs)
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count()
        + 1;
    (line, column)
}

fn split_list(v: &str, sep: char) -> Vec<String> {
    v.split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The one `~` rule, for every path: in the configuration file, the environment and every path flag
/// (`--config`, `--cache-dir`, `--ca-cert`, `--registry`, `--permission-profile`, `--env-file`, `--trust-root`,
/// `--seccomp-override`, `--port-token-file`, `--socket`, `--bundle`, `--artifact`; `-v` has the same rule).
/// `~` alone or `~/…` at the start means the home directory (`home`); anything else (`~user/…` included) is
/// left as it is. MCP clients start servers through no shell, so `~` in their `args` reaches us unexpanded.
pub fn expand_home(value: &str, home: Option<&str>) -> String {
    match (value, home) {
        ("~", Some(home)) => home.to_owned(),
        (v, Some(home)) if v.starts_with("~/") => {
            Path::new(home).join(&v[2..]).to_string_lossy().into_owned()
        }
        _ => value.to_owned(),
    }
}

/// [`expand_home`] for a path.
pub fn expand_home_path(path: &Path, home: Option<&str>) -> PathBuf {
    match path.to_str() {
        Some(s) if s.starts_with('~') => PathBuf::from(expand_home(s, home)),
        _ => path.to_owned(),
    }
}

/// The home directory `~` means: `$HOME`, else (MCP clients often start servers with a minimal environment)
/// the account's home directory from the user database.
pub fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    non_empty(env, "HOME").or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir.to_string_lossy().into_owned())
            .filter(|d| !d.is_empty())
    })
}

impl Flags {
    /// The flags with `~` expanded ([`expand_home`]).
    pub fn home_expanded(&self, home: Option<&str>) -> Flags {
        Flags {
            config: self.config.as_deref().map(|p| expand_home_path(p, home)),
            cache_dir: self.cache_dir.as_deref().map(|p| expand_home_path(p, home)),
            insecure_registries: self.insecure_registries.clone(),
            mirrors: self.mirrors.clone(),
            ca_certs: self
                .ca_certs
                .iter()
                .map(|p| expand_home_path(p, home))
                .collect(),
        }
    }
}

/// The `[guard]` table as TOML lines (its server tables as `[guard.servers."NAME"]`).
fn guard_table(g: &crate::guard::config::GuardConfig) -> String {
    fn keys(out: &mut String, s: &crate::guard::config::ServerGuard) {
        if let Some(pin) = s.pin {
            out.push_str(&format!("pin = \"{pin}\"\n"));
        }
        if let Some(tools) = &s.tools {
            let list: Vec<String> = tools.iter().map(|t| quote(t)).collect();
            out.push_str(&format!("tools = [{}]\n", list.join(", ")));
        }
        if let Some(p) = &s.tools_override {
            out.push_str(&format!(
                "tools_override = {}\n",
                quote(&p.to_string_lossy())
            ));
        }
    }
    let mut out = String::new();
    keys(
        &mut out,
        &crate::guard::config::ServerGuard {
            tools: g.tools.clone(),
            tools_override: g.tools_override.clone(),
            pin: g.pin,
        },
    );
    if let Some(p) = &g.audit_log {
        out.push_str(&format!("audit_log = {}\n", quote(&p.to_string_lossy())));
    }
    if let Some(m) = g.audit_log_max_mib {
        out.push_str(&format!("audit_log_max_mib = {m}\n"));
    }
    for (name, s) in &g.servers {
        out.push_str(&format!("[guard.servers.{}]\n", quote(name)));
        keys(&mut out, s);
    }
    out
}

/// `~/x` → `$HOME/x`; a relative path → under `base` (the config file's directory), if given.
fn expand(value: &str, base: Option<&Path>, home: Option<&str>) -> PathBuf {
    if value == "~" || value.starts_with("~/") {
        return PathBuf::from(expand_home(value, home));
    }
    let path = PathBuf::from(value);
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
pub fn parse_switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A value that is not a usable URL or host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A TUF repository URL that is not http(s) or names no host.
    #[error("a TUF repository URL must be http:// or https:// and name a host")]
    TufUrl,
    /// A registry host written with a scheme.
    #[error("write the host without a scheme, e.g. reg.example:5000")]
    Scheme,
    /// Not `HOST[:PORT]`.
    #[error("expected HOST[:PORT], e.g. reg.example:5000")]
    NotHostPort,
    /// A port that is not 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    Port,
}

/// A TUF repository URL must be http(s) and name a host.
pub fn check_tuf_url(url: &str) -> Result<(), HostError> {
    let ok = ["https://", "http://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if ok && !url.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(HostError::TufUrl)
    }
}

/// `HOST[:PORT]` as references spell registries: no scheme, no path, a port of digits.
pub fn check_host(host: &str) -> Result<(), HostError> {
    if host.contains("://") {
        return Err(HostError::Scheme);
    }
    if host.is_empty() || host.contains('/') || host.chars().any(|c| c.is_whitespace()) {
        return Err(HostError::NotHostPort);
    }
    let (name, port) = crate::image::reference::split_host_port(host);
    let name_ok = if host.starts_with('[') {
        name.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            // No `_`: it is never part of a host name (and `image_verification` under `[mirrors]` is a mistake).
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !name_ok {
        return Err(HostError::NotHostPort);
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(HostError::Port);
        }
    }
    Ok(())
}

/// Docker Hub's other names mean `docker.io`, the name references use.
fn normalize_registry(host: &str) -> String {
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::image::reference::DOCKER_HUB.to_owned()
        }
        other => other.to_owned(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(Vec<(&'static str, String)>);
    impl Env {
        fn get(&self) -> impl Fn(&str) -> Option<String> + '_ {
            move |name| {
                self.0
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        }
    }

    fn with_file(text: &str) -> (tempfile::TempDir, Env) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("thv-sandbox");
        std::fs::create_dir(&cfg).unwrap();
        std::fs::write(cfg.join("config.toml"), text).unwrap();
        let env = Env(vec![
            ("XDG_CONFIG_HOME", dir.path().display().to_string()),
            ("HOME", "/home/u".to_owned()),
        ]);
        (dir, env)
    }

    /// `[packages]`: base images after `--base-image` and their variables, indexes before npm's/pip's own
    /// variables; each shown with its origin, checked where it is written, and handed to the install.
    #[test]
    fn the_packages_table_and_its_precedence() {
        use crate::packages::{Ecosystem, Install};
        let text = "cache_dir = \"/c\"\n[packages]\nnpm_base_image = \"oci:bases:node\"\n\
                    pypi_base_image = \"ghcr.io/me/python-base:3.12\"\n\
                    npm_index = \"https://npm.corp.example/\"\n\
                    pypi_index = \"http://127.0.0.1:3141/simple\"\n\
                    pypi_extra_indexes = [\"https://extra.example/simple\"]\n";
        let (dir, mut env) = with_file(text);
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let p = &c.packages;
        let file = dir.path().join("thv-sandbox/config.toml");
        // An `oci:` layout is relative to the file, as every path of the file is.
        assert_eq!(
            p.npm_base_image.value.as_deref(),
            Some(
                format!(
                    "oci:{}:node",
                    dir.path().join("thv-sandbox/bases").display()
                )
                .as_str()
            )
        );
        assert_eq!(p.npm_base_image.source, Source::File(file.clone()));
        assert_eq!(
            p.npm_index.value.as_deref(),
            Some("https://npm.corp.example/")
        );
        assert_eq!(p.pypi_index.source, Source::File(file.clone()));
        let shown = c.render(None);
        assert!(shown.contains("[packages]\n"), "{shown}");
        assert!(
            shown.contains("npm_index = \"https://npm.corp.example/\"  # file "),
            "{shown}"
        );
        // The rendered settings read back as the same file.
        let again = parse(&file, &shown).unwrap();
        assert!(again.packages.is_some());
        let json = c.to_json(None);
        assert_eq!(
            json["settings"]["packages"]["pypi_extra_indexes"]["value"][0],
            "https://extra.example/simple"
        );

        // The file's index wins over npm's and pip's own variables; thv-sandbox's base-image variable wins over
        // the file, and the flag over everything.
        env.0
            .push(("npm_config_registry", "https://elsewhere.example/".into()));
        env.0.push((
            "PIP_EXTRA_INDEX_URL",
            "https://env-extra.example/simple".into(),
        ));
        env.0
            .push(("THV_SANDBOX_UVX_BASE_IMAGE", "python:3.13".into()));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let npm = crate::packages::spec::parse("npx://left-pad@1.3.0")
            .unwrap()
            .unwrap();
        let i = Install::new(
            npm.clone(),
            None,
            &c.packages.configured(Ecosystem::Npm),
            &env.get(),
        )
        .unwrap();
        assert_eq!(i.index.url, "https://npm.corp.example/");
        assert_eq!(i.index.source, format!("file {}", file.display()));
        assert_eq!(i.index.hosts, vec![("npm.corp.example".to_owned(), 443)]);
        assert!(i.base_image.starts_with("oci:") && i.base_image.ends_with("bases:node"));
        assert_eq!(i.base_image_source, format!("file {}", file.display()));
        let i = Install::new(
            npm.clone(),
            Some("node:22"),
            &c.packages.configured(Ecosystem::Npm),
            &env.get(),
        )
        .unwrap();
        assert_eq!(
            (i.base_image.as_str(), i.base_image_source.as_str()),
            ("node:22", "flag --base-image")
        );
        let py = crate::packages::spec::parse("uvx://mcp-server-time==1.0")
            .unwrap()
            .unwrap();
        let i = Install::new(
            py,
            None,
            &c.packages.configured(Ecosystem::Pypi),
            &env.get(),
        )
        .unwrap();
        assert_eq!(
            (i.base_image.as_str(), i.base_image_source.as_str()),
            ("python:3.13", "environment THV_SANDBOX_UVX_BASE_IMAGE")
        );
        assert_eq!(i.index.url, "http://127.0.0.1:3141/simple");
        assert_eq!(
            i.index.extra,
            vec!["https://extra.example/simple".to_owned()]
        );
        assert_eq!(
            i.index.hosts,
            vec![
                ("127.0.0.1".to_owned(), 3141),
                ("extra.example".to_owned(), 443)
            ]
        );

        // Without the table: the variables, then the defaults, each said.
        let (_d, mut env) = with_file("");
        env.0
            .push(("PIP_INDEX_URL", "https://mirror.example/simple".into()));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert_eq!(c.packages.pypi_index.source, Source::Env("PIP_INDEX_URL"));
        assert_eq!(
            c.packages.npm_index,
            Setting {
                value: None,
                source: Source::Default
            }
        );
        let shown = c.render(None);
        assert!(
            shown.contains(&format!(
                "# npm_base_image is not set: {}",
                crate::packages::index::DEFAULT_NODE_BASE
            )),
            "{shown}"
        );
        let i = Install::new(
            npm,
            None,
            &c.packages.configured(Ecosystem::Npm),
            &env.get(),
        )
        .unwrap();
        assert_eq!(
            (
                i.index.url.as_str(),
                i.index.source.as_str(),
                i.base_image_source.as_str()
            ),
            (crate::packages::index::NPM_REGISTRY, "default", "default")
        );
    }

    /// `[packages]` values are checked where they are written: credentials in an index URL (they would be written
    /// into the install sandbox), a scheme other than http(s), a base that is no image reference; an unknown key
    /// is named with the table's keys, and a top-level key written after the table is said to be one.
    #[test]
    fn the_packages_table_refuses_what_the_install_would() {
        for (text, key, at) in [
            (
                "[packages]\nnpm_index = \"https://user:tok@npm.corp/\"\n",
                "npm_index",
                ":2:13:",
            ),
            (
                "[packages]\npypi_index = \"file:///srv/simple\"\n",
                "pypi_index",
                ":2:14:",
            ),
            (
                "[packages]\npypi_extra_indexes = [\"https://ok.example/\", \"ftp://x/\"]\n",
                "pypi_extra_indexes",
                ":2:46:",
            ),
            (
                "[packages]\nnpm_base_image = \"Not An Image\"\n",
                "npm_base_image",
                ":2:18:",
            ),
        ] {
            let (_d, env) = with_file(text);
            let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
                "{shown}"
            );
            assert!(shown.contains(at), "{text}: {shown}");
        }
        let (_d, env) = with_file("[packages]\nnpm_index = \"https://u:p@npm.corp/\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(err.to_string().contains("credentials"), "{err}");

        let (_d, env) = with_file("[packages]\nnpm_base_imag = \"node:22\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(":2:1: unknown key `npm_base_imag`"),
            "{err}"
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("did you mean `npm_base_image`?"), "{hint}");
        assert!(
            hint.contains("keys of [packages] are: npm_base_image"),
            "{hint}"
        );

        let (_d, env) =
            with_file("[packages]\nnpm_index = \"https://n.example/\"\nallow_hosts = []\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let hint = err.hint().unwrap();
        assert!(hint.contains("`allow_hosts` is a top-level key"), "{hint}");
        assert!(hint.contains("[packages]"), "{hint}");

        // A top-level typo is still hinted with the top-level keys.
        let (_d, env) = with_file("pakages = 1\n");
        let hint = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .hint()
            .unwrap();
        assert!(hint.contains("did you mean `packages`?"), "{hint}");

        // An npm/pip variable with credentials does not break every command: it is refused when an install would
        // use it, saying where it came from.
        let (_d, mut env) = with_file("");
        env.0
            .push(("npm_config_registry", "https://u:p@npm.corp/".into()));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let npm = crate::packages::spec::parse("npx://left-pad@1.3.0")
            .unwrap()
            .unwrap();
        let e = crate::packages::Install::new(
            npm,
            None,
            &c.packages.configured(crate::packages::Ecosystem::Npm),
            &env.get(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("environment npm_config_registry"),
            "{e}"
        );
    }

    #[test]
    fn limits_are_read_as_strings_or_numbers_and_checked() {
        let (_d, env) = with_file("memory = \"4g\"\ncpus = 1.5\npids_limit = 512\n");
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert_eq!(c.memory.value.as_deref(), Some("4g"));
        assert_eq!(c.cpus.value.as_deref(), Some("1.5"));
        assert_eq!(c.pids_limit.value.as_deref(), Some("512"));
        assert!(matches!(c.memory.source, Source::File(_)));
        assert!(c.render(None).contains("memory = \"4g\""));
        let (_d, env) = with_file("");
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert_eq!((c.memory.value, c.memory.source), (None, Source::Default));
        for (bad, key) in [
            ("memory = \"lots\"\n", "memory"),
            ("cpus = 0\n", "cpus"),
            ("pids_limit = [1]\n", "pids_limit"),
        ] {
            let (_d, env) = with_file(bad);
            let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
            assert!(
                err.to_string().contains(key) || format!("{err:?}").contains(key),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bytecode_at_unpack_is_on_by_default_and_turned_off_by_file_or_env() {
        let (_d, env) = with_file("");
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(c.bytecode_at_unpack.value);
        assert_eq!(c.bytecode_at_unpack.source, Source::Default);

        let (_d, env) = with_file("bytecode_at_unpack = false\n");
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(!c.bytecode_at_unpack.value);
        assert!(matches!(c.bytecode_at_unpack.source, Source::File(_)));
        assert!(c.render(None).contains("bytecode_at_unpack = false"));

        let (_d, mut env) = with_file("bytecode_at_unpack = false\n");
        env.0.push((ENV_BYTECODE_AT_UNPACK, "on".to_owned()));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(c.bytecode_at_unpack.value);

        let (_d, mut env) = with_file("");
        env.0.push((ENV_BYTECODE_AT_UNPACK, "maybe".to_owned()));
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(
            err.to_string().contains("bytecode_at_unpack")
                || format!("{err:?}").contains("bytecode_at_unpack")
        );

        let (_d, env) = with_file("bytecode_at_unpack = \"yes\"\n");
        assert!(Config::load_with(&Flags::default(), &env.get()).is_err());
    }

    #[test]
    fn the_guard_table_is_read_with_paths_from_the_file_and_shown_as_toml() {
        let (_d, env) = with_file(
            "[guard]\npin = \"enforce\"\naudit_log = \"audit.log\"\ntools = [\"a\"]\n\
             [guard.servers.\"x/fetch\"]\ntools_override = \"o.json\"\npin = \"off\"\n",
        );
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let g = &c.guard.value;
        assert_eq!(g.pin, Some(crate::guard::PinMode::Enforce));
        let dir = c.file.parent().unwrap();
        assert_eq!(
            g.audit_log.as_deref(),
            Some(dir.join("audit.log").as_path())
        );
        let fetch = g.for_server(&["x/fetch"]);
        assert_eq!(fetch.tools_override, Some(dir.join("o.json")));
        assert_eq!(fetch.pin, Some(crate::guard::PinMode::Off));
        assert_eq!(fetch.tools, Some(vec!["a".to_string()]));
        let shown = c.render(None);
        let table: toml::Table = toml::from_str(&shown).unwrap();
        assert_eq!(
            table["guard"]["servers"]["x/fetch"]["pin"].as_str(),
            Some("off"),
            "{shown}"
        );
        assert_eq!(
            c.to_json(None)["settings"]["guard"]["value"]["pin"],
            "enforce"
        );

        let (_d, env) = with_file("[guard]\npins = \"warn\"\n");
        assert!(Config::load_with(&Flags::default(), &env.get()).is_err());
    }

    #[test]
    fn tuf_bootstrap_roots_are_read_when_the_trust_settings_are_asked_for() {
        let (dir, mut env) = with_file("");
        let root = dir.path().join("root.json");
        std::fs::write(&root, b"{}").unwrap();
        env.0
            .push((ENV_TUF_BOOTSTRAP_GITHUB, root.display().to_string()));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let s = c.tuf_settings().unwrap();
        assert_eq!(s.github.bootstrap.as_deref(), Some(&b"{}"[..]));
        assert_eq!(s.public_good.bootstrap, None);

        env.0.push((
            ENV_TUF_BOOTSTRAP_PUBLIC_GOOD,
            "/nonexistent/root.json".to_owned(),
        ));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let err = c.tuf_settings().unwrap_err();
        assert_eq!(
            err.to_string(),
            "THV_SANDBOX_TUF_BOOTSTRAP_PUBLIC_GOOD: cannot read /nonexistent/root.json"
        );
    }

    #[test]
    fn host_errors_say_what_to_write() {
        assert_eq!(
            check_host("https://reg.example").unwrap_err().to_string(),
            "write the host without a scheme, e.g. reg.example:5000"
        );
        assert_eq!(
            check_host("reg.example:0").unwrap_err().to_string(),
            "the port must be a number from 1 to 65535"
        );
        assert_eq!(
            check_tuf_url("tuf.example").unwrap_err().to_string(),
            "a TUF repository URL must be http:// or https:// and name a host"
        );
        assert_eq!(parse_switch(" Off "), Some(false));
        assert_eq!(parse_switch("maybe"), None);
    }

    #[test]
    fn tuf_keys_from_the_file_and_the_environment() {
        let (_d, env) =
            with_file("tuf_refresh = false\ntuf_url_github = \"http://127.0.0.1:8080/tuf\"\n");
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(!c.tuf_refresh.value);
        assert!(matches!(c.tuf_refresh.source, Source::File(_)));
        let s = c.tuf_settings().unwrap();
        assert!(!s.refresh);
        assert_eq!(s.github.url.as_deref(), Some("http://127.0.0.1:8080/tuf"));
        assert_eq!(s.public_good.url, None);
        assert!(c.render(None).contains("tuf_refresh = false"));

        let (_d, mut env) = with_file("tuf_refresh = false\n");
        env.0.push((ENV_TUF_REFRESH, "yes".to_owned()));
        env.0.push((
            ENV_TUF_URL_PUBLIC_GOOD,
            "https://tuf.mirror.example".to_owned(),
        ));
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(c.tuf_refresh.value);
        assert_eq!(
            c.tuf_url_public_good.value.as_deref(),
            Some("https://tuf.mirror.example")
        );

        let (_d, env) = with_file("\ntuf_url_public_good = \"tuf.example\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":2:") && text.contains("tuf_url_public_good"),
            "{text}"
        );
    }

    #[test]
    fn pick_takes_flag_then_env_then_file_then_default() {
        let file = Path::new("/c.toml");
        let s = pick(Some((1, "--x")), Some((2, "X")), Some((3, file)), 4);
        assert_eq!((s.value, s.source), (1, Source::Flag("--x")));
        let s = pick(None, Some((2, "X")), Some((3, file)), 4);
        assert_eq!((s.value, s.source), (2, Source::Env("X")));
        let s = pick(None, None, Some((3, file)), 4);
        assert_eq!((s.value, s.source), (3, Source::File(file.to_owned())));
        let s = pick::<i32>(None, None, None, 4);
        assert_eq!((s.value, s.source), (4, Source::Default));
    }

    #[test]
    fn a_full_file_is_read_with_paths_relative_to_it() {
        let (dir, env) = with_file(
            r#"
cache_dir = "cache"
insecure_registries = ["reg.lan:5000", "other.lan"]
ca_certs = ["certs/ca.pem", "~/ca2.pem", "/abs/ca3.pem"]
registry = "https://example.com/registry.json"
image_verification = "warn"
permission_profile = "network"

[mirrors]
"ghcr.io" = "127.0.0.1:5000"
"index.docker.io" = "mirror.lan"
"#,
        );
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        let base = dir.path().join("thv-sandbox");
        assert!(c.file_exists);
        assert_eq!(c.cache_dir.value, Some(base.join("cache")));
        assert_eq!(c.cache_dir.source, Source::File(base.join("config.toml")));
        assert_eq!(
            c.insecure_registries.value,
            vec!["reg.lan:5000", "other.lan"]
        );
        assert_eq!(
            c.ca_certs.value,
            vec![
                base.join("certs/ca.pem"),
                PathBuf::from("/home/u/ca2.pem"),
                PathBuf::from("/abs/ca3.pem")
            ]
        );
        assert_eq!(
            c.mirrors.value,
            vec![
                ("docker.io".to_owned(), "mirror.lan".to_owned()),
                ("ghcr.io".to_owned(), "127.0.0.1:5000".to_owned())
            ]
        );
        assert_eq!(
            c.registry.value,
            Some(RegistrySource::Url(
                "https://example.com/registry.json".into()
            ))
        );
        assert_eq!(c.image_verification.value, Some(Mode::Warn));
        assert_eq!(c.permission_profile.value, Some(ProfileChoice::Network));
        let shown = c.render(None);
        assert!(
            shown.contains("\"ghcr.io\" = \"127.0.0.1:5000\""),
            "{shown}"
        );
        assert!(
            shown.contains("image_verification = \"warn\"  # file "),
            "{shown}"
        );
        // What `show` prints is TOML again.
        let _: toml::Table = toml::from_str(&shown).unwrap();
        // And `show --json`: every key, its value and where it came from.
        let j = c.to_json(None);
        assert_eq!(j["file"]["exists"], true);
        assert_eq!(
            j["settings"]["mirrors"]["value"]["ghcr.io"],
            "127.0.0.1:5000"
        );
        assert_eq!(j["settings"]["image_verification"]["value"], "warn");
        assert!(j["settings"]["image_verification"]["source"]
            .as_str()
            .unwrap()
            .starts_with("file "));
        assert_eq!(j["settings"]["tuf_refresh"]["value"], true);
        assert_eq!(j["settings"]["tuf_refresh"]["source"], "default");
        assert_eq!(
            j["settings"]["insecure_registries"]["value"][1],
            "other.lan"
        );
        for key in KEYS {
            assert!(
                j["settings"].get(key).is_some(),
                "{key} missing from --json"
            );
        }
    }

    #[test]
    fn flags_beat_environment_beats_file_and_lists_are_replaced_not_merged() {
        let (_dir, mut env) = with_file(
            "cache_dir = \"/from/file\"\ninsecure_registries = [\"file.lan\"]\n[mirrors]\n\"ghcr.io\" = \"file.lan\"\n",
        );
        env.0.push((ENV_CACHE_DIR, "/from/env".into()));
        env.0.push((
            ENV_REGISTRY_MIRRORS,
            "ghcr.io=env.lan, quay.io=q.lan".into(),
        ));
        env.0.push((ENV_IMAGE_VERIFICATION, "enabled".into()));
        env.0.push((ENV_PERMISSION_PROFILE, "~/p.json".into()));
        let flags = Flags {
            insecure_registries: vec!["flag.lan:1".into()],
            ..Flags::default()
        };
        let c = Config::load_with(&flags, &env.get()).unwrap();
        assert_eq!(c.cache_dir.value, Some(PathBuf::from("/from/env")));
        assert_eq!(c.cache_dir.source, Source::Env(ENV_CACHE_DIR));
        assert_eq!(c.insecure_registries.value, vec!["flag.lan:1"]);
        assert_eq!(
            c.insecure_registries.source,
            Source::Flag("--insecure-registry")
        );
        assert_eq!(
            c.mirrors.value,
            vec![
                ("ghcr.io".to_owned(), "env.lan".to_owned()),
                ("quay.io".to_owned(), "q.lan".to_owned())
            ]
        );
        assert_eq!(c.image_verification.value, Some(Mode::Enabled));
        assert_eq!(
            c.permission_profile.value,
            Some(ProfileChoice::File("/home/u/p.json".into()))
        );
        let flags = Flags {
            cache_dir: Some("/from/flag".into()),
            mirrors: vec!["ghcr.io=flag.lan".into()],
            ..Flags::default()
        };
        let c = Config::load_with(&flags, &env.get()).unwrap();
        assert_eq!(c.cache_dir.value, Some(PathBuf::from("/from/flag")));
        assert_eq!(
            c.mirrors.value,
            vec![("ghcr.io".to_owned(), "flag.lan".to_owned())]
        );
        assert_eq!(c.mirrors.source, Source::Flag("--registry-mirror"));
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env(vec![("XDG_CONFIG_HOME", dir.path().display().to_string())]);
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert!(!c.file_exists);
        assert_eq!(c.file, dir.path().join("thv-sandbox/config.toml"));
        assert_eq!(c.cache_dir.source, Source::Default);
        assert!(c.mirrors.value.is_empty());
        assert_eq!(c.image_verification.value, None);

        let env = Env(vec![("HOME", "/home/u".into())]);
        let (path, source) = locate(None, &env.get()).unwrap();
        assert_eq!(path, Path::new("/home/u/.config/thv-sandbox/config.toml"));
        assert_eq!(source, Source::Default);
        // No HOME (a minimal environment): the account's home directory from the user database.
        let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .dir;
        let (path, _) = locate(None, &Env(vec![]).get()).unwrap();
        assert_eq!(path, home.join(".config/thv-sandbox/config.toml"));

        let missing = dir.path().join("nope.toml");
        let env = Env(vec![(ENV_CONFIG, missing.display().to_string())]);
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.hint().unwrap().contains(ENV_CONFIG));
        let flags = Flags {
            config: Some(missing.clone()),
            ..Flags::default()
        };
        let err = Config::load_with(&flags, &env.get()).unwrap_err();
        assert!(err.hint().unwrap().contains("--config"), "{:?}", err.hint());
    }

    #[test]
    fn a_top_level_key_appended_after_mirrors_is_refused_with_where_to_move_it() {
        // The README's offline recipe with a line appended: TOML puts it into the table.
        let (_dir, env) = with_file(
            "[mirrors]\n\"docker.io\" = \"127.0.0.1:5055\"\nimage_verification = \"enabled\"\n",
        );
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.ends_with(
                "config.toml:3:1: `image_verification` under [mirrors] is not a registry host; \
                 `image_verification` is a top-level key: move it above the `[mirrors]` line"
            ),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("top-level keys go above it"));

        // Misspelled, in the same place: named, with the key it is close to.
        let (_dir, env) =
            with_file("[mirrors]\n\"docker.io\" = \"m.lan\"\nimage_verifcation = \"enabled\"\n");
        let text = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(
                ":3:1: `image_verifcation` under [mirrors] is not a registry host; did you mean \
                 the top-level key `image_verification`?"
            ),
            "{text}"
        );

        // Not close to any key: still not a registry.
        let (_dir, env) = with_file("[mirrors]\nfoo = \"m.lan\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::MisplacedKey { key, top_level: None, line: 2, .. } if key == "foo"),
            "{err}"
        );

        // A top-level key whose value is not a string (TOML would report a type error).
        let (_dir, env) = with_file("[mirrors]\n\n  tuf_refresh = false\n");
        let text = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(":3:3: `tuf_refresh` under [mirrors]") && text.contains("move it above"),
            "{text}"
        );

        // A registry with a mirror that is not a string.
        let (_dir, env) = with_file("[mirrors]\n\"ghcr.io\" = 5000\n");
        let text = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(":2:13: mirrors = `ghcr.io`: a mirror is a host in quotes"),
            "{text}"
        );

        // Underscores are never part of a host: neither side.
        let (_dir, env) = with_file("[mirrors]\n\"ghcr.io\" = \"my_mirror.lan\"\n");
        let text = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(":2:13: mirrors = `my_mirror.lan`: the mirror:"),
            "{text}"
        );

        // The same rule for the environment and the flag.
        let env = Env(vec![
            ("HOME", "/home/u".into()),
            (ENV_REGISTRY_MIRRORS, "ghcr=m.lan".into()),
        ]);
        let text = Config::load_with(&Flags::default(), &env.get())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("the registry: a registry, as image references name it"),
            "{text}"
        );

        // What is right stays right.
        let (_dir, env) = with_file(
            "image_verification = \"enabled\"\n[mirrors]\n\"docker.io\" = \"127.0.0.1:5055\"\n\"localhost\" = \"[::1]:5000\"\n",
        );
        let c = Config::load_with(&Flags::default(), &env.get()).unwrap();
        assert_eq!(c.image_verification.value, Some(Mode::Enabled));
        assert_eq!(c.mirrors.value.len(), 2);
    }

    #[test]
    fn tilde_is_the_home_directory_in_every_path_flag() {
        assert_eq!(expand_home("~", Some("/h")), "/h");
        assert_eq!(expand_home("~/a/b", Some("/h")), "/h/a/b");
        assert_eq!(expand_home("~user/a", Some("/h")), "~user/a");
        assert_eq!(expand_home("a/~/b", Some("/h")), "a/~/b");
        assert_eq!(expand_home("~/a", None), "~/a");
        let (dir, mut env) = with_file("");
        let home = dir.path().display().to_string();
        env.0.retain(|(k, _)| *k != "HOME");
        env.0.push(("HOME", home.clone()));
        std::fs::write(dir.path().join("c.toml"), "cache_dir = \"~/c\"\n").unwrap();
        let flags = Flags {
            config: Some("~/c.toml".into()),
            ca_certs: vec!["~/ca.pem".into()],
            ..Flags::default()
        };
        let c = Config::load_with(&flags, &env.get()).unwrap();
        assert_eq!(c.file, dir.path().join("c.toml"));
        assert_eq!(c.cache_dir.value, Some(dir.path().join("c")));
        assert_eq!(c.ca_certs.value, vec![dir.path().join("ca.pem")]);
        assert_eq!(c.home.as_deref(), Some(home.as_str()));
        let flags = Flags {
            cache_dir: Some("~/flag".into()),
            ..Flags::default()
        };
        env.0.push((ENV_CONFIG, "~/c.toml".into()));
        let c = Config::load_with(&flags, &env.get()).unwrap();
        assert_eq!(c.file, dir.path().join("c.toml"));
        assert_eq!(c.cache_dir.value, Some(dir.path().join("flag")));
    }

    #[test]
    fn unknown_keys_and_malformed_files_say_where() {
        let (_dir, env) = with_file("cache_dir = \"/c\"\n  mirors = {}\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.ends_with("config.toml:2:3: unknown key `mirors`"),
            "{text}"
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("did you mean `mirrors`?"), "{hint}");
        assert!(hint.contains("insecure_registries"), "{hint}");

        let (_dir, env) = with_file("cache_dir = \"/c\"\ninsecure_registries = [\"a\",\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(
            matches!(err, ConfigError::Parse { line: 2 | 3, .. }),
            "{err}"
        );

        let (_dir, env) = with_file("\n\nimage_verification = \"sometimes\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("config.toml:3:22:"), "{text}");
        assert!(text.contains("disabled"), "{text}");

        let (_dir, env) = with_file("cache_dir = 5\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(err.to_string().contains(":1:13:"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_origin() {
        let (_dir, env) = with_file("\ninsecure_registries = [\"http://reg.lan\"]\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("config.toml:2:23: insecure_registries"),
            "{text}"
        );
        assert!(text.contains("without a scheme"), "{text}");

        let (_dir, env) = with_file("[mirrors]\n\"ghcr.io\" = \"m.lan:99999\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");

        let (_dir, env) = with_file("registry = \"ftp://x\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");

        let (_dir, env) = with_file("registry = \"servers.json\"\npermission_profile = \"\"\n");
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(err.to_string().contains("permission_profile"), "{err}");

        let env = Env(vec![
            ("HOME", "/home/u".into()),
            (ENV_IMAGE_VERIFICATION, "yes".into()),
        ]);
        let err = Config::load_with(&Flags::default(), &env.get()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment THV_SANDBOX_IMAGE_VERIFICATION"),
            "{err}"
        );
        let flags = Flags {
            mirrors: vec!["ghcr.io".into()],
            ..Flags::default()
        };
        let env = Env(vec![("HOME", "/home/u".into())]);
        let err = Config::load_with(&flags, &env.get()).unwrap_err();
        assert!(err.to_string().contains("REGISTRY=MIRROR"), "{err}");
        let flags = Flags {
            mirrors: vec!["ghcr.io=a.lan".into(), "ghcr.io=b.lan".into()],
            ..Flags::default()
        };
        let err = Config::load_with(&flags, &env.get()).unwrap_err();
        assert!(err.to_string().contains("two mirrors"), "{err}");
    }

    #[test]
    fn hosts() {
        for ok in [
            "reg.lan",
            "reg.lan:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "https://reg",
            "reg/path",
            "reg:0",
            "reg:x",
            "[zz]:1",
            "re g",
            "image_verification",
            "my_reg.lan:5000",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typos_are_recognised() {
        assert!(similar("mirrors", "mirror"));
        assert!(similar("ca_certs", "ca-certs"));
        assert!(similar("cache_dir", "cache_dor"));
        assert!(similar("insecure_registries", "insecure_registry"));
        assert!(similar("cache_dir", "cahce_dir"));
        assert!(!similar("registry", "mirrors"));
        assert!(!similar("ca_certs", "cache_dir"));
    }
}
