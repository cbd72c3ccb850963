//! `thv-sandbox doctor`: the host checks.

use std::path::PathBuf;

use thv_sandbox_runtime::doctor;

use crate::args::*;
use crate::commands::{setup, tuf_settings};

/// The report on stderr, or (`json`) as a JSON object on stdout; exits 1 when a check failed.
pub(crate) fn doctor_cmd(file: Option<PathBuf>, json: bool) -> i32 {
    let (config, dirs) = match setup(file, &SettingsArgs::default()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let tuf = match tuf_settings(&config) {
        Ok(t) => t.options(&dirs.cache),
        Err(code) => return code,
    };
    let mut report = doctor::diagnose(&doctor::DoctorInputs {
        state_dir: dirs.state,
        cache_dir: dirs.cache,
    });
    report.checks.extend(doctor::trust_root_checks(&tuf));
    if json {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{}", report.to_json());
    } else {
        eprint!("{}", report.render());
    }
    if report.ok() {
        0
    } else {
        1
    }
}
