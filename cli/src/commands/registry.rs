//! `thv-sandbox registry list|search|info`: the curated registry for people (tables, text) and scripts (`--json`).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use thv_sandbox_runtime::catalog::{
    self, Catalog, CatalogError, Loaded, Server, Transport, Verifiability,
};
use thv_sandbox_runtime::settings::{request, Config};
use thv_sandbox_runtime::EXIT_USAGE;

/// Which registry to use (shared by `registry …` and `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistrySourceArgs {
    /// The server registry: a file or URL in ToolHive's format (legacy or upstream), or `embedded` (the default:
    /// the snapshot of ToolHive's registry built into thv-sandbox). URLs must be https (plain http only on
    /// loopback); they are cached for offline use.
    #[arg(
        long,
        env = "THV_SANDBOX_REGISTRY",
        value_name = "FILE|URL",
        global = true
    )]
    pub registry: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    source: RegistrySourceArgs,
    /// Cache directory (remote registries are cached under it).
    #[arg(long, env = "THV_SANDBOX_CACHE_DIR", value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RegistryCommand,
}

/// What kind of server: one thv-sandbox runs, or a remote one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServerKind {
    /// An image thv-sandbox runs in a sandbox.
    Container,
    /// A URL an MCP client connects to directly (nothing to sandbox).
    Remote,
}

impl ServerKind {
    fn keeps(kind: Option<ServerKind>, s: &Server) -> bool {
        match kind {
            None => true,
            Some(ServerKind::Remote) => s.is_remote(),
            Some(ServerKind::Container) => !s.is_remote(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// List the servers of the registry (every one, or one kind with `--kind`).
    List {
        /// Only `container` servers (the ones thv-sandbox runs) or only `remote` ones (URLs a client connects to
        /// directly).
        #[arg(long, value_enum)]
        kind: Option<ServerKind>,
    },
    /// Servers whose name, description, tags or tools contain every word of QUERY.
    Search {
        /// Words to look for (case-insensitive).
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// Only `container` or only `remote` servers.
        #[arg(long, value_enum)]
        kind: Option<ServerKind>,
    },
    /// Everything the registry says about one server: image, transport, tools, environment, permissions,
    /// provenance.
    Info {
        /// The server's name (full, or the short name after the last `/` when unambiguous).
        name: String,
    },
}

/// Loads the registry for `source`, printing a notice (a cached copy used) on stderr; errors are reported here
/// and their exit code returned.
pub fn load(source: &RegistrySourceArgs, config: &Config) -> Result<Loaded, i32> {
    request::load_registry(
        source.registry.as_deref(),
        config,
        &mut crate::commands::say,
    )
    .map_err(|e| crate::report::report_request_error(&e))
}

/// `thv-sandbox registry …`.
pub fn registry_cmd(file: Option<PathBuf>, args: RegistryArgs) -> i32 {
    let config = match crate::commands::load_config(
        file,
        &crate::args::only_cache_dir(args.cache_dir.clone()),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let loaded = match load(&args.source, &config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let c = &loaded.catalog;
    let out = match &args.command {
        RegistryCommand::List { kind } => list_output(
            &c.servers
                .iter()
                .filter(|s| ServerKind::keeps(*kind, s))
                .collect::<Vec<_>>(),
            args.json,
        ),
        RegistryCommand::Search { query, kind } => {
            let mut hits = c.search(&query.join(" "));
            hits.retain(|s| ServerKind::keeps(*kind, s));
            if hits.is_empty() {
                eprintln!(
                    "no server of the MCP server registry ({}) matches `{}`",
                    loaded.origin,
                    query.join(" ")
                );
                return 1;
            }
            list_output(&hits, args.json)
        }
        RegistryCommand::Info { name } => match c.get(name) {
            Ok(s) if args.json => json_line(&info_json(s)),
            Ok(s) => info_text(s, c),
            Err(e) => {
                let code = if matches!(e, CatalogError::Ambiguous { .. }) {
                    EXIT_USAGE
                } else {
                    1
                };
                return crate::report::report_error(&e, &[], e.hint(), code);
            }
        },
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

fn json_line(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn verifiable(s: &Server) -> bool {
    s.verifiability() == Verifiability::Sigstore
}

fn list_output(servers: &[&Server], json: bool) -> String {
    if json {
        let rows: Vec<serde_json::Value> = servers
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "image": s.image,
                    "url": s.url,
                    "remote": s.is_remote(),
                    "transport": s.transport,
                    "tier": s.tier,
                    "status": s.status,
                    "verifiable": verifiable(s),
                })
            })
            .collect();
        return json_line(&serde_json::Value::Array(rows));
    }
    let name_w = servers
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let transport = |s: &Server| {
        if s.is_remote() {
            format!("remote ({})", s.transport)
        } else {
            s.transport.to_string()
        }
    };
    let tr_w = servers
        .iter()
        .map(|s| transport(s).len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = format!(
        "{:name_w$}  {:tr_w$}  {:9}  {:10}  DESCRIPTION\n",
        "NAME", "TRANSPORT", "TIER", "VERIFIABLE"
    );
    for s in servers {
        let transport = transport(s);
        out.push_str(&format!(
            "{:name_w$}  {:tr_w$}  {:9}  {:10}  {}\n",
            s.name,
            transport,
            s.tier.as_deref().unwrap_or("-"),
            if verifiable(s) { "yes" } else { "no" },
            clip(&s.description, 70)
        ));
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn info_json(s: &Server) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("verifiable".into(), verifiable(s).into());
    }
    v
}

/// Wraps `items` joined by ", " to lines of at most `width`, continuation lines indented by `indent`.
fn wrap(items: &[String], indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line_len = indent;
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item},")
        } else {
            item.clone()
        };
        if i > 0 {
            if line_len + 1 + piece.len() > width {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                line_len = indent;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        out.push_str(&piece);
        line_len += piece.len();
    }
    out
}

const LABEL: usize = 14;

fn field(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("{:LABEL$}{value}\n", format!("{label}:")));
}

/// The text of `registry info` (snapshot-tested).
pub fn info_text(s: &Server, catalog: &Catalog) -> String {
    let mut out = String::new();
    field(&mut out, "name", &s.name);
    if s.short_name() != s.name
        && catalog
            .find(s.short_name())
            .is_ok_and(|f| f.is_some_and(|f| f.name == s.name))
    {
        field(&mut out, "short name", s.short_name());
    }
    if let Some(t) = &s.title {
        field(&mut out, "title", t);
    }
    field(&mut out, "description", &clip(&s.description, 500));
    match (&s.image, &s.url) {
        (Some(image), _) => field(&mut out, "image", image),
        (None, Some(url)) => field(&mut out, "url", &format!("{url} (a remote server)")),
        (None, None) => {}
    }
    let transport = match s.target_port {
        Some(p) => format!("{} (port {p})", s.transport),
        None => s.transport.to_string(),
    };
    field(&mut out, "transport", &transport);
    if let Some(v) = &s.status {
        field(&mut out, "status", v);
    }
    if let Some(v) = &s.tier {
        field(&mut out, "tier", v);
    }
    if let Some(v) = &s.repository_url {
        field(&mut out, "repository", v);
    }
    if !s.args.is_empty() {
        field(&mut out, "args", &s.args.join(" "));
    }
    if !s.tools.is_empty() {
        field(&mut out, "tools", &wrap(&s.tools, LABEL, 100));
    }
    if s.env_vars.is_empty() {
        field(&mut out, "env vars", "(none)");
    } else {
        out.push_str("env vars:\n");
        let name_w = s.env_vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
        let kinds: Vec<String> = s
            .env_vars
            .iter()
            .map(|v| {
                let mut k = vec![if v.required { "required" } else { "optional" }.to_owned()];
                if v.secret {
                    k.push("secret".into());
                }
                if let Some(d) = &v.default {
                    k.push(format!("default {d:?}"));
                }
                k.join(", ")
            })
            .collect();
        let kind_w = kinds.iter().map(|k| k.chars().count()).max().unwrap_or(0);
        for (v, k) in s.env_vars.iter().zip(&kinds) {
            out.push_str(&format!(
                "  {:name_w$}  {:kind_w$}  {}\n",
                v.name,
                k,
                clip(&v.description, 200)
            ));
        }
    }
    if !s.is_remote() {
        let p = s
            .permissions
            .clone()
            .unwrap_or_else(catalog::PermissionProfile::none);
        out.push_str("permissions:\n");
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.join(", ")
            }
        };
        out.push_str(&format!("  read:        {}\n", list(&p.read)));
        out.push_str(&format!("  write:       {}\n", list(&p.write)));
        match p.describe_network() {
            Some(n) => {
                out.push_str(&format!("  network:     {n}\n"));
                out.push_str(
                    "               (through thv-sandbox's egress proxy; nothing else is reachable)\n",
                );
            }
            None => out.push_str("  network:     none (loopback only)\n"),
        }
        out.push_str(&format!(
            "  privileged:  {}\n",
            if p.privileged { "yes (refused)" } else { "no" }
        ));
        field(
            &mut out,
            "seccomp",
            s.seccomp_profile.as_deref().unwrap_or("default"),
        );
    }
    match &s.provenance {
        None => {}
        Some(p) => {
            out.push_str("provenance:\n");
            let rows = [
                ("signer identity", &p.signer_identity),
                ("repository", &p.repository_uri),
                ("repository ref", &p.repository_ref),
                ("cert issuer", &p.cert_issuer),
                ("runner", &p.runner_environment),
                ("sigstore", &p.sigstore_url),
            ];
            for (label, v) in rows {
                if let Some(v) = v {
                    out.push_str(&format!("  {:17}{v}\n", format!("{label}:")));
                }
            }
            if let Some(a) = &p.attestation {
                out.push_str(&format!(
                    "  {:17}{}\n",
                    "attestation:",
                    a.predicate_type
                        .as_deref()
                        .unwrap_or("(predicate type not given)")
                ));
            }
        }
    }
    let verification = match s.verifiability() {
        Verifiability::Sigstore => {
            "can be verified: Sigstore keyless signature (signer identity, issuer and repository given)".to_owned()
        }
        Verifiability::Incomplete(missing) => format!(
            "cannot be verified: the provenance lacks {}",
            missing.join(", ")
        ),
        Verifiability::NoProvenance => {
            "cannot be verified: the MCP server registry gives no provenance for this server".to_owned()
        }
    };
    if !s.is_remote() {
        field(&mut out, "verification", &verification);
    }
    field(&mut out, "run", &run_line(s, catalog));
    out
}

fn run_line(s: &Server, catalog: &Catalog) -> String {
    if s.is_remote() {
        return "not with thv-sandbox: a remote server is a URL to connect to, not a container"
            .into();
    }
    if s.transport != Transport::Stdio && s.target_port.is_none() {
        return format!(
            "not possible: a {} server needs `target_port` in its entry in the MCP server registry",
            s.transport
        );
    }
    let name = if catalog
        .find(s.short_name())
        .is_ok_and(|f| f.is_some_and(|f| f.name == s.name))
    {
        s.short_name()
    } else {
        s.name.as_str()
    };
    let mut line = format!("thv-sandbox run {name}");
    for v in s.env_vars.iter().filter(|v| v.required) {
        line.push_str(&format!(" -e {}", v.name));
    }
    line
}
