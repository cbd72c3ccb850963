//! From a registry entry (or a plain image) and the user's flags to what `run` will do — decided before anything
//! is pulled, so every refusal (remote server, HTTP transport, network, missing environment) costs nothing.
//!
//! Order of the checks: remote server, transport, privileged, seccomp variant, network, environment. Network is
//! `none` (loopback only) unless the user passes `--network host`; a profile that asks for egress gets the egress
//! proxy with its rules (`crate::sandbox::egress`), checked here so a bad rule is refused before anything is pulled.

use std::path::{Path, PathBuf};

use super::env::{self, EnvArg, EnvError, EnvInputs, ResolvedVar};
use super::{PermissionProfile, Provenance, Server, Transport};

pub use crate::sandbox::profile::NetworkMode;

/// Everything `run` needs that comes from the registry entry and the user's flags.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The entry's full name (`None` for a plain image reference).
    pub server: Option<String>,
    /// The image reference.
    pub image: String,
    /// Arguments: the entry's, then the user's (`None`: the image's Cmd).
    pub args: Option<Vec<String>>,
    /// The environment, resolved (secret values included, marked).
    pub env: Vec<ResolvedVar>,
    /// The effective permission profile: `--permission-profile`, else the entry's, else `none`.
    pub permissions: PermissionProfile,
    /// What verification checks the image against.
    pub provenance: Option<Provenance>,
    /// The reviewed seccomp variant (`None`: the default profile).
    pub seccomp_profile: Option<String>,
    /// The registry entry's proposed resource limits.
    pub resources: Option<crate::catalog::Resources>,
    /// The network.
    pub network: NetworkMode,
    /// Egress through the proxy, under `NetworkMode::None`, when the permission profile asks for network.
    pub egress: Option<crate::sandbox::egress::Outbound>,
    /// An HTTP-transport server (`sse`, `streamable-http`) and its port inside the sandbox.
    pub http: Option<(crate::sandbox::bridge::HttpTransport, u16)>,
    /// Required variables not given (only with [`UserChoices::missing_env_ok`]; otherwise they are an error).
    pub missing_env: Vec<env::MissingVar>,
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct UserChoices {
    /// Arguments after `--`.
    pub args: Vec<String>,
    /// `-e` arguments.
    pub env_args: Vec<EnvArg>,
    /// Variables from `--env-file`s, in order.
    pub env_files: Vec<(String, String)>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--permission-profile`, loaded.
    pub permissions: Option<PermissionProfile>,
    /// `--allow-host`, `--allow-port` (or the configuration file's `allow_hosts`, `allow_ports`): egress added
    /// to the permission profile's.
    pub allow: Vec<crate::sandbox::egress::AllowRule>,
    /// List required variables that were not given in [`Launch::missing_env`] instead of refusing (`inspect`:
    /// it is how a user finds out what a server needs).
    pub missing_env_ok: bool,
}

/// Why a server will not be run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A remote server: a URL, not a container.
    #[error("`{name}` is a remote MCP server at {url}: a URL to connect to, not a container thv-sandbox can run")]
    Remote {
        /// The entry.
        name: String,
        /// Its endpoint.
        url: String,
    },
    /// An HTTP transport.
    #[error(
        "`{name}` speaks MCP over {transport} but its entry in the MCP server registry names no `target_port` to reach it on"
    )]
    Transport {
        /// The entry.
        name: String,
        /// Its transport.
        transport: Transport,
    },
    /// A privileged server.
    #[error("`{name}` asks to run privileged; thv-sandbox never runs privileged sandboxes")]
    Privileged {
        /// The entry (or `--permission-profile`).
        name: String,
    },
    /// A seccomp variant this build does not have.
    #[error("`{name}` selects the seccomp profile `{variant}`, which this build of thv-sandbox does not ship (it has: {})", .known.join(", "))]
    UnknownSeccomp {
        /// The entry.
        name: String,
        /// The variant asked for.
        variant: String,
        /// The variants there are.
        known: Vec<String>,
    },
    /// The permission profile's network rules are malformed.
    #[error("`{name}`: its network permissions cannot be used: {what}")]
    Network {
        /// The entry (or image).
        name: String,
        /// What it asks for.
        what: String,
    },
    /// `--allow-host`/`--allow-port` with `--network host`, which has no egress proxy to apply them.
    #[error("--allow-host and --allow-port filter through the egress proxy, which `--network host` does not use")]
    AllowWithHostNetwork,
    /// Environment problems.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// `--permission-profile` problems.
    #[error("--permission-profile {given}: {problem}")]
    Profile {
        /// What was given.
        given: String,
        /// What is wrong.
        problem: String,
    },
}

impl LaunchError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            LaunchError::Remote { .. } => Some(
                "configure the URL in your MCP client directly (as an HTTP server); there is nothing to sandbox".into(),
            ),
            LaunchError::Transport { transport, .. } => Some(format!(
                "add the port the server listens on for {transport} as `target_port` to its entry in the MCP server registry"
            )),
            LaunchError::Privileged { .. } => None,
            LaunchError::UnknownSeccomp { .. } => {
                Some("update thv-sandbox, or use a registry made for this version".into())
            }
            LaunchError::Network { .. } => Some(
                "fix `permissions.network.outbound` (allow_host: `name`, `.domain` or an IP address; allow_port: \
                 1-65535), or pass `--permission-profile none`"
                    .into(),
            ),
            LaunchError::AllowWithHostNetwork => Some(
                "drop --network host (the default `none` gets the proxy), or drop the --allow-* flags".into(),
            ),
            LaunchError::Env(e) => e.hint(),
            LaunchError::Profile { .. } => Some(
                "use `none`, `network`, or a JSON file in ToolHive's format: {\"read\": [PATH…], \"write\": [PATH…], \
                 \"network\": {\"outbound\": {\"insecure_allow_all\": BOOL, \"allow_host\": [HOST…], \"allow_port\": \
                 [PORT…]}}}"
                    .into(),
            ),
        }
    }

    /// Missing environment and bad profiles are the user's to fix on the command line (exit code 2); the rest
    /// are thv-sandbox refusing (125).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LaunchError::Env(_) | LaunchError::Profile { .. } | LaunchError::AllowWithHostNetwork
        )
    }
}

/// The seccomp profiles this build ships (`sandbox-profiles/profiles/seccomp/`).
pub fn seccomp_variants() -> Vec<&'static str> {
    sandbox_profiles::variant_names().to_vec()
}

/// Seccomp variant names: lowercase letters, digits and `-`, at most 64 characters.
pub fn valid_variant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parses `--permission-profile none|network|FILE`; `read_file` reads FILE (so this stays testable).
pub fn parse_profile_arg(
    given: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<PermissionProfile, LaunchError> {
    match given {
        "none" => return Ok(PermissionProfile::none()),
        "network" => return Ok(PermissionProfile::network()),
        _ => {}
    }
    let err = |problem: String| LaunchError::Profile {
        given: given.to_owned(),
        problem,
    };
    let path = PathBuf::from(given);
    let bytes = read_file(&path).map_err(|e| err(format!("cannot read the file: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
    // A typo in a security profile must not pass silently.
    check_known_keys(&value, "", &PROFILE_KEYS).map_err(|e| err(e.to_string()))?;
    let mut profile: PermissionProfile = serde_path_to_error::deserialize(&value).map_err(|e| {
        let (path, problem) = super::path_and_problem(e);
        err(format!("field `{path}`: {problem}"))
    })?;
    if profile.name.is_none() {
        profile.name = Some(given.to_owned());
    }
    Ok(profile)
}

/// The keys ToolHive's permission profile has, per object path.
const PROFILE_KEYS: [(&str, &[&str]); 3] = [
    ("", &["name", "read", "write", "network", "privileged"]),
    (".network", &["outbound", "inbound"]),
    (
        ".network.outbound",
        &["insecure_allow_all", "allow_host", "allow_port"],
    ),
];

/// A key a permission profile file does not have: a typo must not pass silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{field}` (known here: {})", known.join(", "))]
struct UnknownField {
    /// Its path, e.g. `network.outbound.allow_hosts`.
    field: String,
    /// The keys that object may have.
    known: &'static [&'static str],
}

fn check_known_keys(
    value: &serde_json::Value,
    path: &str,
    known: &[(&str, &'static [&'static str])],
) -> Result<(), UnknownField> {
    let Some(obj) = value.as_object() else {
        return Ok(());
    };
    let Some((_, keys)) = known.iter().find(|(p, _)| *p == path) else {
        return Ok(());
    };
    for (k, v) in obj {
        if !keys.contains(&k.as_str()) {
            return Err(UnknownField {
                field: format!(
                    "{}{}{k}",
                    path.trim_start_matches('.'),
                    if path.is_empty() { "" } else { "." }
                ),
                known: keys,
            });
        }
        check_known_keys(v, &format!("{path}.{k}"), known)?;
    }
    Ok(())
}

/// Decides what to run for a registry entry (`server`) or a plain image reference (`image`, when `server` is
/// `None`). `host` looks up `-e NAME` values; `seccomp_variants` are the variant names this build ships.
pub fn plan(
    server: Option<&Server>,
    image: &str,
    user: &UserChoices,
    seccomp_variants: &[&str],
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Launch, LaunchError> {
    let name = server.map_or(image, |s| s.name.as_str()).to_owned();
    if let Some(s) = server {
        if let (true, Some(url)) = (s.is_remote(), &s.url) {
            return Err(LaunchError::Remote {
                name,
                url: url.clone(),
            });
        }
        if s.transport != Transport::Stdio && s.target_port.is_none() {
            return Err(LaunchError::Transport {
                name,
                transport: s.transport,
            });
        }
    }
    // An HTTP server is bridged to the client's stdio, reached at its port inside the sandbox.
    let http = server.and_then(|s| Some((s.transport.over_http()?, s.target_port?)));
    let permissions = user
        .permissions
        .clone()
        .or_else(|| server.and_then(|s| s.permissions.clone()))
        .unwrap_or_else(PermissionProfile::none);
    if permissions.privileged {
        return Err(LaunchError::Privileged { name });
    }
    let seccomp_profile = server.and_then(|s| s.seccomp_profile.clone());
    if let Some(v) = &seccomp_profile {
        if !seccomp_variants.contains(&v.as_str()) {
            return Err(LaunchError::UnknownSeccomp {
                name,
                variant: v.clone(),
                known: seccomp_variants.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    if user.network == NetworkMode::Host && !user.allow.is_empty() {
        return Err(LaunchError::AllowWithHostNetwork);
    }
    let egress = if user.network == NetworkMode::None
        && (permissions.wants_network() || !user.allow.is_empty())
    {
        let o = permissions
            .network
            .as_ref()
            .and_then(|n| n.outbound.clone())
            .unwrap_or_default();
        let outbound = crate::sandbox::egress::Outbound {
            insecure_allow_all: o.insecure_allow_all,
            allow_host: o.allow_host,
            allow_port: o.allow_port.iter().map(|p| i64::from(*p)).collect(),
            allow: user.allow.clone(),
        };
        if let Err(e) = crate::sandbox::egress::Rules::from_outbound(&outbound) {
            return Err(LaunchError::Network {
                name,
                what: e.to_string(),
            });
        }
        Some(outbound)
    } else {
        None
    };
    let specs = server.map_or(&[][..], |s| s.env_vars.as_slice());
    let inputs = EnvInputs {
        server: &name,
        specs,
        files: &user.env_files,
        args: &user.env_args,
    };
    let (env, missing_env) = match user.missing_env_ok {
        true => env::resolve_partly(&inputs, host),
        false => (env::resolve(&inputs, host)?, Vec::new()),
    };
    let mut args: Vec<String> = server.map(|s| s.args.clone()).unwrap_or_default();
    args.extend(user.args.iter().cloned());
    Ok(Launch {
        server: server.map(|s| s.name.clone()),
        image: server
            .and_then(|s| s.image.clone())
            .unwrap_or_else(|| image.to_owned()),
        args: (!args.is_empty()).then_some(args),
        env,
        permissions,
        provenance: server.and_then(|s| s.provenance.clone()),
        seccomp_profile,
        resources: server.and_then(|s| s.resources.clone()),
        network: user.network,
        egress,
        http,
        missing_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{EnvVarSpec, NetworkPermissions, OutboundPermissions};

    fn server(transport: Transport) -> Server {
        Server {
            name: "io.example/srv".into(),
            title: None,
            description: "d".into(),
            image: Some("registry.example/srv:1".into()),
            url: None,
            transport,
            target_port: None,
            args: vec!["--entry".into()],
            tools: vec![],
            tags: vec![],
            env_vars: vec![EnvVarSpec {
                name: "TOKEN".into(),
                description: "the token".into(),
                required: true,
                secret: true,
                default: None,
            }],
            permissions: None,
            provenance: Some(Provenance {
                signer_identity: Some("/.github/workflows/release.yml".into()),
                ..Provenance::default()
            }),
            seccomp_profile: None,
            resources: None,
            status: None,
            tier: None,
            repository_url: None,
        }
    }

    fn no_host(_: &str) -> Option<String> {
        None
    }

    fn with_token() -> UserChoices {
        UserChoices {
            env_args: vec![env::parse_arg("TOKEN=t").unwrap()],
            args: vec!["--user".into()],
            ..UserChoices::default()
        }
    }

    #[test]
    fn an_unknown_profile_key_is_named_with_its_path_and_the_keys_allowed_there() {
        let value = serde_json::json!({"network": {"outbound": {"allow_hosts": []}}});
        let err = check_known_keys(&value, "", &PROFILE_KEYS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `network.outbound.allow_hosts` (known here: insecure_allow_all, allow_host, allow_port)"
        );
        let err =
            check_known_keys(&serde_json::json!({"wirte": []}), "", &PROFILE_KEYS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `wirte` (known here: name, read, write, network, privileged)"
        );
    }

    #[test]
    fn an_entry_gives_image_args_env_and_provenance() {
        let s = server(Transport::Stdio);
        let l = plan(Some(&s), "srv", &with_token(), &["default"], &no_host).unwrap();
        assert_eq!(l.image, "registry.example/srv:1");
        assert_eq!(l.args.unwrap(), ["--entry", "--user"]);
        assert_eq!(l.env.len(), 1);
        assert!(l.env[0].secret());
        assert_eq!(l.provenance, s.provenance);
        assert_eq!(l.permissions, PermissionProfile::none());
        assert_eq!(l.network, NetworkMode::None);
        assert_eq!(l.server.as_deref(), Some("io.example/srv"));
    }

    #[test]
    fn a_plain_image_keeps_its_cmd_unless_args_are_given() {
        let l = plan(None, "alpine", &UserChoices::default(), &[], &no_host).unwrap();
        assert_eq!(l.image, "alpine");
        assert!(l.args.is_none() && l.env.is_empty() && l.provenance.is_none());
    }

    #[test]
    fn http_transports_and_remote_servers_are_refused_before_the_environment() {
        for t in [Transport::Sse, Transport::StreamableHttp] {
            let mut s = server(t);
            s.target_port = None;
            let e = plan(Some(&s), "srv", &UserChoices::default(), &[], &no_host).unwrap_err();
            assert!(matches!(e, LaunchError::Transport { .. }), "{e}");
            s.target_port = Some(8080);
            let l = plan(Some(&s), "srv", &with_token(), &[], &no_host).unwrap();
            assert_eq!(l.http, Some((t.over_http().unwrap(), 8080)));
            assert!(e.to_string().contains(t.as_str()), "{e}");
        }
        let mut s = server(Transport::Sse);
        s.image = None;
        s.url = Some("https://mcp.example/sse".into());
        let e = plan(Some(&s), "srv", &UserChoices::default(), &[], &no_host).unwrap_err();
        assert!(
            e.to_string()
                .contains("a URL to connect to, not a container"),
            "{e}"
        );
    }

    #[test]
    fn network_permissions_become_egress_rules_unless_host_network_is_asked_for() {
        let mut s = server(Transport::Stdio);
        s.permissions = Some(PermissionProfile {
            network: Some(NetworkPermissions {
                outbound: Some(OutboundPermissions {
                    allow_host: vec![".github.com".into()],
                    allow_port: vec![443],
                    insecure_allow_all: false,
                }),
            }),
            ..PermissionProfile::default()
        });
        let l = plan(Some(&s), "srv", &with_token(), &[], &no_host).unwrap();
        assert_eq!(l.network, NetworkMode::None);
        let e = l.egress.expect("egress rules");
        assert_eq!(
            (e.allow_host, e.allow_port),
            (vec![".github.com".to_owned()], vec![443])
        );
        let mut u = with_token();
        u.network = NetworkMode::Host;
        let l = plan(Some(&s), "srv", &u, &[], &no_host).unwrap();
        assert_eq!(l.network, NetworkMode::Host);
        assert!(l.egress.is_none(), "the host's network needs no proxy");
        // A malformed rule is refused before anything else happens.
        if let Some(o) = s
            .permissions
            .as_mut()
            .and_then(|p| p.network.as_mut())
            .and_then(|n| n.outbound.as_mut())
        {
            o.allow_host = vec!["bad host!".into()];
        }
        let e = plan(Some(&s), "srv", &with_token(), &[], &no_host).unwrap_err();
        assert!(
            e.to_string().contains("network permissions cannot be used"),
            "{e}"
        );
        // `--permission-profile none` overrides the entry's.
        let mut u = with_token();
        u.permissions = Some(PermissionProfile::none());
        assert!(plan(Some(&s), "srv", &u, &[], &no_host).is_ok());
        // And `network` for a plain image means any public destination through the proxy.
        let u = UserChoices {
            permissions: Some(PermissionProfile::network()),
            ..UserChoices::default()
        };
        let l = plan(None, "alpine", &u, &[], &no_host).unwrap();
        assert!(l.egress.expect("egress").insecure_allow_all);
    }

    #[test]
    fn an_empty_outbound_object_is_no_network() {
        let mut s = server(Transport::Stdio);
        s.permissions = Some(PermissionProfile {
            network: Some(NetworkPermissions {
                outbound: Some(OutboundPermissions::default()),
            }),
            ..PermissionProfile::default()
        });
        let l = plan(Some(&s), "srv", &with_token(), &[], &no_host).unwrap();
        assert!(l.egress.is_none(), "nothing allowed: no proxy at all");
    }

    #[test]
    fn missing_environment_is_reported_after_the_other_checks() {
        let s = server(Transport::Stdio);
        let e = plan(Some(&s), "srv", &UserChoices::default(), &[], &no_host).unwrap_err();
        assert!(
            matches!(e, LaunchError::Env(EnvError::Missing { .. })),
            "{e}"
        );
        assert!(e.is_usage());
    }

    #[test]
    fn inspect_gets_missing_variables_listed_instead_of_refused() {
        let s = server(Transport::Stdio);
        let u = UserChoices {
            missing_env_ok: true,
            ..UserChoices::default()
        };
        let l = plan(Some(&s), "srv", &u, &["default"], &no_host).unwrap();
        assert!(l.env.is_empty());
        assert_eq!(l.missing_env.len(), 1);
        assert_eq!(l.missing_env[0].name, "TOKEN");
        assert!(l.missing_env[0].secret);
        // Given, it is not missing.
        let u = UserChoices {
            missing_env_ok: true,
            ..with_token()
        };
        let l = plan(Some(&s), "srv", &u, &["default"], &no_host).unwrap();
        assert!(l.missing_env.is_empty() && l.env.len() == 1);
    }

    #[test]
    fn seccomp_variants_are_names_this_build_ships() {
        let mut s = server(Transport::Stdio);
        s.seccomp_profile = Some("jvm".into());
        let e = plan(Some(&s), "srv", &with_token(), &["default"], &no_host).unwrap_err();
        assert!(
            e.to_string().contains("`jvm`") && e.to_string().contains("default"),
            "{e}"
        );
        let l = plan(
            Some(&s),
            "srv",
            &with_token(),
            &["default", "jvm"],
            &no_host,
        )
        .unwrap();
        assert_eq!(l.seccomp_profile.as_deref(), Some("jvm"));
        assert!(valid_variant_name("node-extra2"));
        assert!(!valid_variant_name("../x") && !valid_variant_name("") && !valid_variant_name("A"));
    }

    #[test]
    fn privileged_is_never_granted() {
        let u = UserChoices {
            permissions: Some(PermissionProfile {
                privileged: true,
                ..PermissionProfile::default()
            }),
            ..UserChoices::default()
        };
        assert!(matches!(
            plan(None, "alpine", &u, &[], &no_host),
            Err(LaunchError::Privileged { .. })
        ));
    }

    #[test]
    fn permission_profile_arguments() {
        let nofile =
            |_: &Path| -> std::io::Result<Vec<u8>> { Err(std::io::ErrorKind::NotFound.into()) };
        assert_eq!(
            parse_profile_arg("none", &nofile).unwrap(),
            PermissionProfile::none()
        );
        assert!(parse_profile_arg("network", &nofile)
            .unwrap()
            .wants_network());
        let e = parse_profile_arg("/nope.json", &nofile).unwrap_err();
        assert!(e.to_string().contains("cannot read the file"), "{e}");

        let file = |json: &'static str| move |_: &Path| Ok(json.as_bytes().to_vec());
        let p = parse_profile_arg(
            "p.json",
            &file(r#"{"read": ["/data"], "write": ["/tmp/out:/out"], "network": {"outbound": {"allow_port": [5432]}}}"#),
        )
        .unwrap();
        assert_eq!(p.read, ["/data"]);
        assert_eq!(p.write, ["/tmp/out:/out"]);
        assert_eq!(p.outbound().unwrap().allow_port, [5432]);
        assert_eq!(p.name.as_deref(), Some("p.json"));
        let e = parse_profile_arg("p.json", &file(r#"{"wirte": ["/x"]}"#)).unwrap_err();
        assert!(e.to_string().contains("unknown field `wirte`"), "{e}");
        let e = parse_profile_arg(
            "p.json",
            &file(r#"{"network": {"outbound": {"allow_port": ["https"]}}}"#),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("field `network.outbound.allow_port[0]`"),
            "{e}"
        );
    }
}
