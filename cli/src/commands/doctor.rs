//! `thv-sandbox doctor`: the host checks.

use std::path::PathBuf;

use thv_sandbox_runtime::doctor;

use crate::args::*;
use crate::commands::{setup, tuf_settings};

pub(crate) fn doctor_cmd(file: Option<PathBuf>) -> i32 {
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
    eprint!("{}", report.render());
    if report.ok() {
        0
    } else {
        1
    }
}
