//! `thv-sandbox pull`: the pinned reference on stdout.

use std::path::PathBuf;

use thv_sandbox_runtime::progress::ProgressMode;

use crate::args::*;
use crate::commands::setup;
use crate::report::*;

pub(crate) fn pull_cmd(file: Option<PathBuf>, args: PullArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::pull_with(
        &args.image,
        args.source.pull.into(),
        &config.registry_access(),
        ProgressMode::detect(args.source.quiet),
        &dirs,
        config.bytecode_at_unpack.value,
    ) {
        Ok(pulled) => {
            // stdout is data: the pinned reference, for scripts.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", pulled.tag_ref);
            0
        }
        Err(e) => report_runtime_error(&e, &dirs),
    }
}
