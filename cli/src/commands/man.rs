//! `thv-sandbox man [--dir DIR]`: the manual page thv-sandbox(1) on stdout, or every page (one per command, as
//! `git` has them) written into DIR — the .deb ships those. Generated from the clap definition at run time, so a
//! page can never describe flags the binary does not have.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::CommandFactory;
use thv_sandbox_runtime::EXIT_SANDBOX_ERROR;

use crate::args::{Cli, ManArgs};
use crate::report::report_error;

#[derive(Debug, thiserror::Error)]
enum ManError {
    #[error("cannot write the manual pages into {}", .dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the manual page on stdout")]
    Stdout(#[source] io::Error),
}

pub(crate) fn man_cmd(args: ManArgs) -> i32 {
    // Without the `help` subcommand, as clap_mangen::generate_to renders the pages the .deb ships: `help` is
    // clap's, not a command of ours, and both forms give the same thv-sandbox.1.
    let cmd = Cli::command().disable_help_subcommand(true);
    let result = match args.dir {
        Some(dir) => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(cmd, &dir))
            .map_err(|source| ManError::Dir { dir, source }),
        None => {
            let mut out = io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| out.flush())
                .map_err(ManError::Stdout)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    }
}
