//! `thv-sandbox run`: the settings layer builds the request, the runtime runs it.

use std::path::PathBuf;

use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::settings::request::{self};

use crate::args::*;
use crate::commands::{process_env, say, setup};
use crate::report::*;

pub(crate) fn run_cmd(file: Option<PathBuf>, args: RunArgs) -> i32 {
    // First, while this process is one thread: the runner keeper, forked now instead of started by exec later.
    thv_sandbox_runtime::sandbox::prefork::start();
    let code = run_with(file, args);
    // Not taken (the run failed before its sandbox, or it served no session): it exits, and is reaped here.
    thv_sandbox_runtime::sandbox::prefork::dismiss();
    code
}

fn run_with(file: Option<PathBuf>, args: RunArgs) -> i32 {
    let (req, dirs) = match build_request(file, &args) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let reporter = std::sync::Arc::new(crate::progress::Terminal::stderr(req.progress));
    match thv_sandbox_runtime::run(&req, &dirs, reporter) {
        Ok(summary) => summary.exit_code,
        Err(e) => match not_a_server_hint(&req, &e) {
            Some(hint) => report_error(&e, e.remote_causes(), Some(hint), e.exit_code()),
            None => report_runtime_error(&e, &dirs),
        },
    }
}

/// A name that is no MCP server of the registry was tried as an image reference, and the OCI registry has no
/// such image: say both, since the user most likely meant a server (`run time-server`).
pub(crate) fn not_a_server_hint(
    req: &thv_sandbox_runtime::RunRequest,
    e: &thv_sandbox_runtime::Error,
) -> Option<String> {
    use thv_sandbox_runtime::distribution::PullError;
    use thv_sandbox_runtime::image::reference::Reference;
    let not_found = matches!(
        e,
        thv_sandbox_runtime::Error::Pull(PullError::NotFound { .. })
    );
    // Only a name without a registry host could have been meant as a server's name.
    let first = req.image.split('/').next().unwrap_or_default();
    let names_registry =
        req.image.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if !not_found || req.server_name.is_some() || req.image.starts_with("oci:") || names_registry {
        return None;
    }
    let full = req
        .image
        .parse::<Reference>()
        .map_or_else(|_| req.image.clone(), |r| r.to_string());
    Some(format!(
        "no MCP server named `{}` is in the MCP server registry, so it was tried as an image reference, {full}, \
         which its OCI registry does not have; `thv-sandbox registry search WORD` finds MCP servers",
        req.image
    ))
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
