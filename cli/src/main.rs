//! `thv-sandbox`: run MCP servers from OCI images in rootless sandboxes.
//!
//! Parse (clap) → resolve settings → call the runtime → render errors, and what the runtime reports while it
//! works (`progress.rs`: the library never writes to the terminal). stdout belongs to the MCP server alone:
//! everything this binary says goes to stderr.

use std::process::ExitCode;

use clap::Parser;
use thv_sandbox_runtime::{sandbox::runner, EXIT_USAGE};

mod args;
mod client_cmd;
mod client_pin;
mod clients;
mod commands;
mod progress;
mod report;

use args::*;

/// `--version`: the crate version and the commit it was built from (cli/build.rs).
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("THV_SANDBOX_COMMIT"),
    ")"
);

fn main() -> ExitCode {
    thv_sandbox_runtime::trace::mark("main");
    // First, while this process is one thread: MCP clients drop XDG_RUNTIME_DIR from a server's environment.
    thv_sandbox_runtime::dirs::adopt_session_runtime_dir();
    let cli = match Cli::parse_run_from(std::env::args_os()).map_or_else(Cli::try_parse, Ok) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // clap prints help/version to stdout; that is fine for those, errors go to stderr.
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_logging(cli.globals.verbose);
    let file = cli.globals.config;
    let code = match cli.command {
        Command::Runner { run_dir } => runner::keeper_main(&run_dir, false),
        Command::Doctor { json } => commands::doctor::doctor_cmd(file, json),
        Command::Client(cmd) => client_cmd::client_cmd(file, cmd),
        Command::Config(cmd) => commands::config::config_cmd(file, cmd),
        Command::Trust(TrustCommand::Accept(a)) => commands::accept::accept_cmd(file, a),
        Command::Trust(TrustCommand::Accepted(a)) => commands::accept::accepted_cmd(file, a),
        Command::Trust(TrustCommand::Revoke(a)) => commands::accept::revoke_cmd(file, a),
        Command::Trust(cmd) => commands::trust::trust_cmd(file, cmd),
        Command::Run(args) => commands::run::run_cmd(file, *args),
        Command::Inspect(args) => commands::inspect::inspect_cmd(file, *args),
        Command::Registry(args) => commands::registry::registry_cmd(file, args),
        Command::Verify(args) => commands::verify::verify_cmd(file, *args),
        Command::Pull(args) => commands::pull::pull_cmd(file, *args),
        Command::Images(args) => commands::images::images_cmd(file, args),
        Command::Prune(args) => commands::prune::prune_cmd(file, args),
        Command::Completions { shell } => commands::completions::completions_cmd(shell),
        Command::Man(args) => commands::man::man_cmd(args),
        Command::Rmi(args) => commands::rmi::rmi_cmd(file, args),
        Command::Pin(cmd) => commands::pin::pin_cmd(file, cmd),
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
