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
    let mut cmd = Cli::command();
    // Generated into memory first: clap_complete panics on a write error, a closed stdout is an error to report.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "thv-sandbox", &mut script);
    let mut out = io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => report_error(&CompletionsError(e), &[], None, EXIT_SANDBOX_ERROR),
    }
}
