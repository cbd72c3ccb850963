//! `thv-sandbox run`: the settings layer builds the request, the runtime runs it.

use std::path::PathBuf;

use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::settings::request::{self};

use crate::args::*;
use crate::commands::{process_env, say, setup};
use crate::report::*;

pub(crate) fn run_cmd(file: Option<PathBuf>, args: RunArgs) -> i32 {
    let (req, dirs) = match build_request(file, &args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::run(&req, &dirs) {
        Ok(summary) => summary.exit_code,
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

/// The flags, the configuration and the registry entry (if the name is one) → the request `run` carries out;
/// errors are reported here.
pub(crate) fn build_request(
    file: Option<PathBuf>,
    args: &RunArgs,
) -> Result<(thv_sandbox_runtime::RunRequest, Dirs), i32> {
    build_request_for(file, args, false)
}

/// [`build_request`]; `for_inspect`: required variables that were not given are listed, not refused.
pub(crate) fn build_request_for(
    file: Option<PathBuf>,
    args: &RunArgs,
    for_inspect: bool,
) -> Result<(thv_sandbox_runtime::RunRequest, Dirs), i32> {
    let flags = args.flags();
    if request::stop_timeout(flags.stop_timeout).is_none() {
        return Err(report_request_error(&request::RequestError::StopTimeout));
    }
    let (config, dirs) = setup(file, &args.source.settings)?;
    let build = match for_inspect {
        true => request::build_for_inspect,
        false => request::build,
    };
    let req = build(&flags, &config, &dirs, &process_env, &mut say)
        .map_err(|e| report_request_error(&e))?;
    Ok((req, dirs))
}
