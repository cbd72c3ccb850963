//! `thv-sandbox client list|add|remove`: MCP clients' configuration files, written in each client's own format
//! (see `clients`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use thv_sandbox_runtime::{EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::client_pin;
use crate::clients::{self, edit, Client, EntryVar, PinPlan, Places, ServerEntry};
use crate::commands::registry::RegistrySourceArgs;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// The MCP clients thv-sandbox knows, whether each is found on this machine, its configuration file and the
    /// servers in it that run through thv-sandbox.
    List {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Add a server to a client's configuration: the image is pulled and verified first (so the client's
    /// start-up timeout never covers a download), and a server that `run` would refuse is refused here. Then the
    /// entry's own command line is started once and asked for its tools (`initialize`, `tools/list`, and the
    /// prompts and resources lists it advertises), so that the guard pins them now, as the baseline later runs
    /// are compared with (`thv-sandbox pin show NAME`); the entry is written only when that succeeds.
    Add(Box<AddArgs>),
    /// Remove a server's entry from a client's configuration (and the inputs `add` made for it).
    Remove {
        /// The entry's name (the server's name unless `add --entry-name` chose another).
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which client's file.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The client: vscode, vscode-insiders, cursor, claude-code, claude-desktop, windsurf, cline, roo-code,
    /// gemini-cli, amazon-q, lm-studio, zed, codex.
    #[arg(long, value_name = "CLIENT")]
    client: String,
    /// The project's file instead of the user's (`.vscode/mcp.json`, `.mcp.json`, `.cursor/mcp.json`…), in DIR
    /// (default: the current directory).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    project: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The server: a registry name or an image reference, as `run` takes it.
    name: String,
    #[command(flatten)]
    target: Target,
    /// Print the entry (JSON, or TOML for codex) on stdout and write nothing.
    #[arg(long)]
    print: bool,
    /// Replace an entry of the same name.
    #[arg(long)]
    force: bool,
    /// The entry's name in the client's file (default: the server's short name).
    #[arg(long, value_name = "KEY")]
    entry_name: Option<String>,
    /// A value for the entry's `env` (NAME=VALUE; written into the client's file, so prefer the client's own
    /// secret handling where it has one: VS Code prompts for declared secrets).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A flag for `run` in the entry (repeatable), e.g. `--run-flag=--network=host`.
    #[arg(long = "run-flag", value_name = "FLAG", allow_hyphen_values = true)]
    run_flags: Vec<String>,
    /// The program the client starts (default: this thv-sandbox's own path, so a client with a short PATH finds
    /// it).
    #[arg(long, value_name = "PATH")]
    command: Option<String>,
    /// Do not pull and verify the image now (the first start in the client does it, and pins the tools).
    #[arg(long)]
    no_pull: bool,
    /// Do not start the server now to pin its tools: the client's first start pins them (what the server says
    /// then becomes the baseline).
    #[arg(long)]
    no_pin: bool,
    /// Seconds the pin run may take, from start to exit (a first run can install a package or build the
    /// image's root); it is stopped after that and nothing is written.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pin_timeout: u64,
    #[command(flatten)]
    registry: RegistrySourceArgs,
    /// Arguments for the server, as with `run NAME -- ARGS`.
    #[arg(last = true)]
    server_args: Vec<String>,
}

fn places() -> Result<Places, i32> {
    Places::from_env(&|n| std::env::var(n).ok()).ok_or_else(|| {
        eprintln!(
            "error: HOME is not set to an absolute path\n  hint: the clients' files are found under the home \
             directory"
        );
        EXIT_USAGE
    })
}

fn client(id: &str) -> Result<&'static Client, i32> {
    clients::find(id).ok_or_else(|| {
        eprintln!(
            "error: no MCP client named `{id}`\n  hint: one of: {}",
            clients::ids()
        );
        EXIT_USAGE
    })
}

fn file_of(c: &Client, target: &Target, places: &Places) -> Result<PathBuf, i32> {
    match &target.project {
        None => Ok(c.user_file(places)),
        Some(dir) => c.project_file(dir).ok_or_else(|| {
            eprintln!(
                "error: {} has no project-level configuration file\n  hint: leave out --project to write the \
                 user's file",
                c.name
            );
            EXIT_USAGE
        }),
    }
}

fn read_text(path: &Path) -> Result<String, i32> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            Err(EXIT_SANDBOX_ERROR)
        }
    }
}

fn edit_error(path: &Path, e: &edit::EditError) -> i32 {
    eprintln!(
        "error: cannot add to {}: {e}\n  hint: {}",
        path.display(),
        e.hint()
    );
    match e {
        edit::EditError::Exists(_) => EXIT_USAGE,
        _ => EXIT_SANDBOX_ERROR,
    }
}

/// Entrypoint of `client`.
pub fn client_cmd(file: Option<PathBuf>, cmd: ClientCommand) -> i32 {
    match run(file, cmd) {
        Ok(code) | Err(code) => code,
    }
}

fn run(file: Option<PathBuf>, cmd: ClientCommand) -> Result<i32, i32> {
    let places = places()?;
    match cmd {
        ClientCommand::List { json } => Ok(list(&places, json)),
        ClientCommand::Remove { name, target } => {
            let c = client(&target.client)?;
            let path = file_of(c, &target, &places)?;
            let text = read_text(&path)?;
            match edit::remove(&text, c.format, &name) {
                Ok(Some(new)) => {
                    write(&path, &new)?;
                    eprintln!("removed `{name}` from {}", path.display());
                    Ok(0)
                }
                Ok(None) => {
                    eprintln!(
                        "error: {} has no entry `{name}`\n  hint: `thv-sandbox client list` shows the entries",
                        path.display()
                    );
                    Ok(EXIT_USAGE)
                }
                Err(e) => Err(edit_error(&path, &e)),
            }
        }
        ClientCommand::Add(args) => add(file, *args, &places),
    }
}

fn write(path: &Path, text: &str) -> Result<(), i32> {
    match clients::write_atomic(path, text) {
        Ok(Some(bak)) => {
            eprintln!("the previous file is kept as {}", bak.display());
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            Err(EXIT_SANDBOX_ERROR)
        }
    }
}

fn add(file: Option<PathBuf>, args: AddArgs, places: &Places) -> Result<i32, i32> {
    let c = client(&args.target.client)?;
    let path = file_of(c, &args.target, places)?;
    let mut given: Vec<(String, String)> = Vec::new();
    for e in &args.env {
        let Some((k, v)) = e.split_once('=') else {
            eprintln!("error: -e {e}: expected NAME=VALUE\n  hint: the value is written into the client's file");
            return Err(EXIT_USAGE);
        };
        given.push((k.to_owned(), v.to_owned()));
    }
    let server = prepare_for_client(
        file,
        &args.name,
        &args.registry,
        &args.run_flags,
        args.no_pull || args.print,
        &given,
    )?;
    let mut env: Vec<EntryVar> = server
        .declared
        .iter()
        .filter(|v| v.required || given.iter().any(|(k, _)| *k == v.name))
        .map(|v| EntryVar {
            name: v.name.clone(),
            description: v.description.clone(),
            secret: v.secret,
            value: given
                .iter()
                .find(|(k, _)| *k == v.name)
                .map(|(_, x)| x.clone()),
        })
        .collect();
    for (k, v) in &given {
        if !env.iter().any(|e| e.name == *k) {
            env.push(EntryVar {
                name: k.clone(),
                description: String::new(),
                secret: false,
                value: Some(v.clone()),
            });
        }
    }
    let command = match &args.command {
        Some(c) => c.clone(),
        None => std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "thv-sandbox".to_owned()),
    };
    let mut run_args = vec!["run".to_owned()];
    // The registry the server was found in: the client's start must resolve the name the same way.
    if let Some(r) = &args.registry.registry {
        run_args.push(format!("--registry={r}"));
    }
    run_args.extend(args.run_flags.iter().cloned());
    run_args.push(args.name.clone());
    if !args.server_args.is_empty() {
        run_args.push("--".to_owned());
        run_args.extend(args.server_args.iter().cloned());
    }
    let server_entry = ServerEntry {
        key: args
            .entry_name
            .clone()
            .unwrap_or_else(|| server.short_name.clone()),
        command,
        args: run_args,
        env: env.clone(),
    };
    let entry = c.entry(&server_entry);
    if args.print {
        let text = edit::add("", &entry, false).map_err(|e| edit_error(&path, &e))?;
        let _ = std::io::stdout().write_all(text.as_bytes());
        return Ok(0);
    }
    let text = read_text(&path)?;
    // Checked before the pin run (an entry that exists without --force is refused without starting anything).
    let new = edit::add(&text, &entry, args.force).map_err(|e| edit_error(&path, &e))?;
    match &server.pin {
        _ if args.no_pin => {}
        _ if args.no_pull => eprintln!(
            "note: with --no-pull the tools are not pinned now: the client's first start pins what the server \
             says then"
        ),
        PinPlan::Skip(why) => eprintln!("note: {why}"),
        PinPlan::Take(name) => pin(&server_entry, name, &server, &args)?,
    }
    write(&path, &new)?;
    eprintln!("added `{}` to {} ({})", entry.key, path.display(), c.name);
    let unset: Vec<&EntryVar> = env
        .iter()
        .filter(|v| v.value.is_none() && c.format != clients::Format::VsCode)
        .collect();
    if !unset.is_empty() {
        let names: Vec<&str> = unset.iter().map(|v| v.name.as_str()).collect();
        eprintln!(
            "note: the server needs {}: set {} in the entry's \"env\" in {}, or in the environment {} starts in",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
            path.display(),
            c.name
        );
    }
    Ok(0)
}

/// Takes the server's pin before its entry is written: the entry's own command line, run once as a client would
/// start it (see `client_pin`).
fn pin(
    entry: &ServerEntry,
    name: &str,
    server: &clients::PreparedServer,
    args: &AddArgs,
) -> Result<(), i32> {
    use thv_sandbox_runtime::guard::pin::PinStore;
    // A variable the server needs and nothing gives: the run would refuse to start.
    let unset: Vec<&str> = server.unset_for_pin.iter().map(String::as_str).collect();
    if !unset.is_empty() {
        eprintln!(
            "error: cannot pin the tools of {name}: it needs {} to start, and {} not set here\n  hint: export {} \
             for this command (the pin run gets it through the environment, as the client will, and it is \
             written nowhere), or give it with -e NAME=VALUE (written into the client's file), or add the \
             entry with --no-pin (the client's first start then pins the tools)",
            unset.join(", "),
            if unset.len() == 1 { "it is" } else { "they are" },
            unset.join(" and "),
        );
        return Err(EXIT_USAGE);
    }
    let program = std::env::current_exe().map_err(|e| {
        eprintln!(
            "error: cannot find thv-sandbox's own path to pin the tools of {name}: {e}\n  hint: add the entry \
             with --no-pin"
        );
        EXIT_SANDBOX_ERROR
    })?;
    let store = PinStore::new(&server.cache);
    let before = store.load(name).ok().flatten();
    eprintln!(
        "thv-sandbox: pinning the tools of {name}: starting it once as the client will (--no-pin skips this)"
    );
    let run = client_pin::PinRun {
        program,
        args: entry.args.clone(),
        // The values the entry gives; prompted-for (VS Code) and client-environment variables come from ours.
        env: entry
            .env
            .iter()
            .filter_map(|v| v.value.clone().map(|x| (v.name.clone(), x)))
            .collect(),
        timeout: std::time::Duration::from_secs(args.pin_timeout),
    };
    let listed = match client_pin::take(&run) {
        Ok(l) => l,
        Err(e) => {
            let (what, stderr, hint) = match e {
                client_pin::PinError::Start(e) => (
                    format!("cannot start {}: {e}", run.program.display()),
                    String::new(),
                    "add the entry with --no-pin".to_owned(),
                ),
                client_pin::PinError::TimedOut { stage, stderr } => (
                    format!(
                        "it did not finish within {} s (waiting for {stage}) and was stopped",
                        args.pin_timeout
                    ),
                    stderr,
                    "raise --pin-timeout (a first run can install a package or build the image's root), or add \
                     the entry with --no-pin"
                        .to_owned(),
                ),
                client_pin::PinError::Failed { what, stderr } => (
                    what,
                    stderr,
                    "the client's start would fail the same way: fix what the server says above, or add the \
                     entry with --no-pin"
                        .to_owned(),
                ),
            };
            let tail = client_pin::last_lines(&stderr, 20);
            eprintln!(
                "error: cannot pin the tools of {name}: {what}; nothing was written{}\n  hint: {hint}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("\n  its stderr ended with:\n{tail}")
                }
            );
            return Err(EXIT_SANDBOX_ERROR);
        }
    };
    let after = store.load(name).ok().flatten();
    let mut counts = format!(
        "{} tool{}",
        listed.tools,
        if listed.tools == 1 { "" } else { "s" }
    );
    for (n, noun) in [(listed.prompts, "prompts"), (listed.resources, "resources")] {
        if let Some(n) = n {
            counts.push_str(&format!(", {n} {noun}"));
        }
    }
    match (&before, &after) {
        (_, None) => eprintln!(
            "warning: {name} listed {counts}, but no pin of it is in {}\n  hint: `thv-sandbox pin show` lists \
             the pins; the client's first start pins the tools if this did not",
            server.cache.display()
        ),
        (_, Some(pin)) if pin.pending.is_some() => {
            eprintln!(
                "warning: what {name} lists differs from its pin of {} (kept as the baseline):\n{}\n  hint: \
                 `thv-sandbox pin show {name}` shows both; `thv-sandbox pin accept {name}` takes the new lists",
                pin.pinned_at,
                client_pin::last_lines(&listed.stderr, 40)
            );
        }
        (None, Some(_)) => eprintln!("thv-sandbox: pinned {counts} of {name} (pin show {name})"),
        (Some(_), Some(pin)) => eprintln!(
            "thv-sandbox: {name} lists the same {counts} as its pin of {} (pin show {name})",
            pin.pinned_at
        ),
    }
    for list in &listed.paged {
        eprintln!(
            "note: {name}'s {list} has more than {} pages; only those were asked for, and pinned",
            client_pin::MAX_PAGES
        );
    }
    for (list, e) in &listed.failed {
        eprintln!("note: {name} advertises {list} but answered it with an error ({e}): not pinned");
    }
    if let Some(status) = listed.exit.filter(|s| !s.success()) {
        eprintln!(
            "note: after its tools were listed, {name}'s run ended badly ({}):\n{}",
            client_pin::describe_exit(status),
            client_pin::last_lines(&listed.stderr, 10)
        );
    }
    Ok(())
}

fn list(places: &Places, json: bool) -> i32 {
    let me = std::env::current_exe().ok();
    let rows: Vec<serde_json::Value> = clients::CLIENTS
        .iter()
        .map(|c| {
            let path = c.user_file(places);
            let entries = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| edit::read(&t, c.format).ok())
                .unwrap_or_default();
            let ours: Vec<&str> = entries
                .iter()
                .filter(|e| {
                    Path::new(&e.command)
                        .file_name()
                        .is_some_and(|n| n == "thv-sandbox")
                        || me.as_deref().is_some_and(|m| Path::new(&e.command) == m)
                })
                .map(|e| e.key.as_str())
                .collect();
            json!({
                "client": c.id,
                "name": c.name,
                "found": c.found(places),
                "file": path,
                "file_exists": path.exists(),
                "servers": entries.len(),
                "thv_sandbox_servers": ours,
                "note": c.note,
            })
        })
        .collect();
    let out = if json {
        serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
    } else {
        let mut s = format!(
            "{:<16} {:<6} {:<12} {}\n",
            "CLIENT", "FOUND", "THV-SANDBOX", "FILE"
        );
        for r in &rows {
            let ours: Vec<&str> = r["thv_sandbox_servers"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "{:<16} {:<6} {:<12} {}{}\n",
                r["client"].as_str().unwrap_or_default(),
                if r["found"] == true { "yes" } else { "no" },
                if ours.is_empty() {
                    "-".to_owned()
                } else {
                    ours.join(",")
                },
                r["file"].as_str().unwrap_or_default(),
                if r["file_exists"] == true {
                    ""
                } else {
                    " (not created yet)"
                },
            ));
        }
        s
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

/// What `client add` needs of a server: checked as `run` would check it (a server `run` refuses is refused
/// here), and, unless `no_pull`, its image pulled and verified now. Variables the entry declares that are not set
/// here are taken as empty for the check: the client gives them when it starts the server (and `add`'s pin run,
/// which checks them itself, gets them from this environment). Also whether, and under which name, `add` pins the
/// server's tools.
fn prepare_for_client(
    file: Option<PathBuf>,
    name: &str,
    registry: &RegistrySourceArgs,
    run_flags: &[String],
    no_pull: bool,
    given: &[(String, String)],
) -> Result<clients::PreparedServer, i32> {
    use clap::Parser;
    use thv_sandbox_runtime::settings::request;
    let mut argv = vec!["thv-sandbox".to_owned(), "run".to_owned()];
    argv.extend(run_flags.iter().cloned());
    if let Some(r) = &registry.registry {
        argv.push(format!("--registry={r}"));
    }
    argv.push(name.to_owned());
    let args = match crate::args::Cli::try_parse_from(&argv) {
        Ok(crate::args::Cli {
            command: crate::args::Command::Run(args),
            ..
        }) => *args,
        Ok(_) => return Err(EXIT_USAGE),
        Err(e) => {
            eprintln!("error: the run flags do not parse");
            let _ = e.print();
            return Err(EXIT_USAGE);
        }
    };
    let flags = args.flags();
    let (config, dirs) = crate::commands::setup(file, &args.source.settings)?;
    let server = if name.starts_with("oci:") {
        None
    } else {
        request::load_registry(
            flags.registry.as_deref(),
            &config,
            &mut crate::commands::say,
        )
        .map_err(|e| crate::report::report_request_error(&e))?
        .catalog
        .find(name)
        .ok()
        .flatten()
        .cloned()
    };
    let declared: Vec<String> = server
        .as_ref()
        .map(|s| s.env_vars.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default();
    let env = |n: &str| {
        crate::commands::process_env(n)
            .or_else(|| declared.iter().any(|d| d == n).then(String::new))
    };
    let req = request::build(&flags, &config, &dirs, &env, &mut crate::commands::say)
        .map_err(|e| crate::report::report_request_error(&e))?;
    let pin_name = req.pin_name();
    let pin = if !req.relayable() {
        PinPlan::Skip(format!(
            "the tools of {pin_name} are not pinned: the guard relays only stdio servers on thv-sandbox's stdio \
             (not with --port/--socket, nor for servers speaking HTTP)"
        ))
    } else if req.guard.pin == thv_sandbox_runtime::guard::PinMode::Off {
        PinPlan::Skip(format!(
            "the tools of {pin_name} are not pinned: pinning is off for it (--pin off, THV_SANDBOX_PIN or the \
             configuration's [guard])"
        ))
    } else {
        PinPlan::Take(pin_name)
    };
    // What the pin run will lack: resolved as that run resolves it, from the environment it gets (the entry's
    // values over this one's).
    let unset_for_pin = match &pin {
        PinPlan::Take(_) => {
            let env = |n: &str| {
                given
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .or_else(|| crate::commands::process_env(n))
            };
            request::build_for_inspect(&flags, &config, &dirs, &env, &mut |_| {})
                .map(|r| r.missing_env.into_iter().map(|m| m.name).collect())
                .unwrap_or_default()
        }
        PinPlan::Skip(_) => Vec::new(),
    };
    if let (false, Some(install)) = (no_pull, &req.package) {
        // A package: installed now onto its base image, its provenance checked against the entry's pin (the
        // base image under its own verification), as the first `run` would.
        match thv_sandbox_runtime::pull_package(
            install,
            req.pull_policy,
            &req.registry_access,
            &crate::progress::Terminal::stderr(req.progress),
            &dirs,
        ) {
            Ok(lock) => eprintln!(
                "thv-sandbox: {} {} is installed",
                lock.top, lock.top_version
            ),
            Err(e) => return Err(crate::report::report_runtime_error(&e, &dirs)),
        }
    } else if !no_pull && !req.image.starts_with("oci:") {
        match thv_sandbox_runtime::pull_verified_with(
            &req.image,
            req.pull_policy,
            &req.registry_access,
            &crate::progress::Terminal::stderr(req.progress),
            &dirs,
            &req.verification,
            req.bytecode,
        ) {
            Ok((pulled, outcome)) => {
                use thv_sandbox_runtime::trust::verification::Outcome;
                let verdict = match outcome {
                    Outcome::Verified { .. } => "verified".to_owned(),
                    Outcome::Unverified { reason } => format!("UNVERIFIED: {reason}"),
                    Outcome::Accepted { acceptance } => {
                        format!("unverified, accepted on {}", acceptance.date())
                    }
                    Outcome::Skipped => "verification disabled".to_owned(),
                    Outcome::Refused { reason, .. } => format!("refused: {reason}"),
                };
                eprintln!("thv-sandbox: {} is ready ({verdict})", pulled.tag_ref);
            }
            Err(e) => return Err(crate::report::report_runtime_error(&e, &dirs)),
        }
    }
    Ok(clients::PreparedServer {
        short_name: server
            .as_ref()
            .map(|s| s.short_name().to_owned())
            .unwrap_or_else(|| clients::entry_name_for_image(name)),
        declared: server.map(|s| s.env_vars).unwrap_or_default(),
        pin,
        unset_for_pin,
        cache: dirs.cache.clone(),
    })
}
