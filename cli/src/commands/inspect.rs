//! `thv-sandbox inspect`: what `run` with the same flags would give the server.

use std::path::PathBuf;

use thv_sandbox_runtime::EXIT_USAGE;

use crate::args::*;
use crate::report::*;

pub(crate) fn inspect_cmd(file: Option<PathBuf>, args: InspectArgs) -> i32 {
    use std::io::Write;
    let (req, dirs) = match crate::commands::run::build_request_for(file, &args.run, true) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut profile = match thv_sandbox_runtime::inspect::effective_profile(&req) {
        Ok(p) => p,
        Err(e) => return report_error(&e, &[], e.hint(), EXIT_USAGE),
    };
    if !args.profile {
        profile.add_cached(&dirs.cache);
    }
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&profile).unwrap_or_default();
        s.push('\n');
        s
    } else {
        profile.render_text()
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}
