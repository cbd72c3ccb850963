//! Everything the CLI says about errors and verdicts: `error: …`, indented `caused by: …`, `hint: …` (the chain
//! rendered by `thv_sandbox_runtime::chain`), and the exit code that goes with it.
//! What the library reports while it works (warnings, notes, progress, timings) is rendered by the
//! `Reporter` in `progress.rs`.

use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::settings::request::{self};
use thv_sandbox_runtime::{doctor, EXIT_REFUSED, EXIT_SANDBOX_ERROR, EXIT_USAGE};

/// Reports a settings error; returns its exit code.
pub(crate) fn report_request_error(e: &request::RequestError) -> i32 {
    let code = match e.kind() {
        request::Kind::Usage => EXIT_USAGE,
        request::Kind::Refused => EXIT_REFUSED,
        request::Kind::Failed => EXIT_SANDBOX_ERROR,
    };
    report_error(e, &[], e.hint(), code)
}

/// Says the verdict on stderr (and as JSON on stdout with `--json`); returns the exit status.
pub(crate) fn report_verdict(
    verdict: &Result<prov::Verified, prov::Refusal>,
    what: &str,
    json: bool,
) -> i32 {
    use std::io::Write;
    match verdict {
        Ok(v) => {
            let c = &v.claims;
            eprintln!("verified: {what}");
            eprintln!("  signer:      {}", c.san.as_deref().unwrap_or("-"));
            eprintln!("  issuer:      {}", c.issuer.as_deref().unwrap_or("-"));
            if let Some(r) = &c.source_repository_uri {
                eprintln!(
                    "  repository:  {r} @ {}",
                    c.source_repository_ref.as_deref().unwrap_or("-")
                );
            }
            if let Some(r) = &c.runner_environment {
                eprintln!("  runner:      {r}");
            }
            eprintln!(
                "  evidence:    {} ({} log entries, SCT {}, {} RFC 3161 timestamps), signed {}",
                v.evidence.kind,
                v.evidence.tlog_entries,
                if v.evidence.sct { "yes" } else { "no" },
                v.evidence.rfc3161_timestamps,
                v.evidence.signing_time
            );
            let now = jiff::Timestamp::now();
            eprintln!(
                "  trust root:  {} ({}; {})",
                v.trust_root.source,
                v.trust_root.describe(now),
                v.instance
            );
            if json {
                let doc = serde_json::json!({
                    "verified": true,
                    "result": v,
                    "trust_root_age_days": v.trust_root.age_days(now),
                });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            0
        }
        Err(e) => {
            eprintln!("refused: {what}: {e}");
            eprintln!("hint: {}", e.hint());
            if json {
                let doc = serde_json::json!({
                    "verified": false,
                    "reason": e.kind(),
                    "message": e.to_string(),
                    "hint": e.hint(),
                });
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
    }
}

/// Reports an error of the pipeline; returns its exit code. When the sandbox could not be created, the doctor's
/// checks run here and their finding is the hint.
pub(crate) fn report_runtime_error(e: &thv_sandbox_runtime::Error, dirs: &Dirs) -> i32 {
    let hint = match e.wants_doctor() {
        true => {
            let report = doctor::diagnose(&doctor::DoctorInputs {
                state_dir: dirs.state.clone(),
                cache_dir: dirs.cache.clone(),
            });
            Some(doctor::hint_for_sandbox_failure(&report))
        }
        false => e.hint(),
    };
    report_error(e, e.remote_causes(), hint, e.exit_code())
}

/// `error: …`, indented `caused by: …` lines, and a `hint: …`.
pub(crate) fn report_error(
    err: &dyn std::error::Error,
    remote: &[String],
    hint: Option<String>,
    code: i32,
) -> i32 {
    let mut seen = thv_sandbox_runtime::chain::messages(err);
    eprintln!("error: {}", seen[0]);
    for s in &seen[1..] {
        eprintln!("  caused by: {s}");
    }
    for s in remote {
        if !seen.contains(s) {
            eprintln!("  caused by: {s}");
            seen.push(s.clone());
        }
    }
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    code
}
