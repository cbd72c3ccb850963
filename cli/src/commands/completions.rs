//! `thv-sandbox completions SHELL`: the shell completion script, generated from the clap definition (stdout).

use std::io::{self, Write};

use clap::CommandFactory;
use thv_sandbox_runtime::EXIT_SANDBOX_ERROR;

use crate::args::Cli;
use crate::report::report_error;

#[derive(Debug, thiserror::Error)]
#[error("cannot write the completion script on stdout")]
struct CompletionsError(#[source] io::Error);

pub(crate) fn completions_cmd(shell: clap_complete::Shell) -> i32 {
    let mut cmd = visible_command();
    // Generated into memory first: clap_complete panics on a write error, a closed stdout is an error to report.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "thv-sandbox", &mut script);
    let mut out = io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => report_error(&CompletionsError(e), &[], None, EXIT_SANDBOX_ERROR),
    }
}

/// The command line without its hidden subcommands: clap_complete offers hidden subcommands (the internal
/// `__runner`) to every shell, so they are left out of the command it is given.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let args: Vec<clap::Arg> = full.get_arguments().cloned().collect();
    let subcommands: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = clap::Command::new("thv-sandbox").version(crate::VERSION);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.args(args)
        .subcommands(subcommands)
        .subcommand_required(true)
}
