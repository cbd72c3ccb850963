//! `thv-sandbox verify IMAGE` and `verify --bundle`: the exit status is the verdict.

use std::path::PathBuf;

use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::report::ProgressMode;
use thv_sandbox_runtime::settings::request::{self};
use thv_sandbox_runtime::{EXIT_REFUSED, EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::args::*;
use crate::commands::{load_config, process_env, say, setup, tuf_settings};
use crate::report::*;

pub(crate) fn verify_cmd(file: Option<PathBuf>, mut args: VerifyArgs) -> i32 {
    if let Some(image) = &args.image {
        return verify_image_cmd(file, image, &args);
    }
    let Some(bundle_path) = &args.bundle else {
        eprintln!("error: give --bundle FILE with --artifact FILE or --digest sha256:HEX");
        return EXIT_USAGE;
    };
    // The settings layer's `~` rule, for the path flags of blob mode too.
    let home = thv_sandbox_runtime::settings::home_dir(&process_env);
    let expand =
        |p: &std::path::Path| thv_sandbox_runtime::settings::expand_home_path(p, home.as_deref());
    let bundle_path = &expand(bundle_path);
    args.artifact = args.artifact.as_deref().map(expand);
    args.identity.trust_root = args.identity.trust_root.as_deref().map(expand);
    let policy = match args.identity.flags().policy() {
        Ok(Some(p)) => p,
        Ok(None) => return report_request_error(&request::RequestError::NoIdentity),
        Err(e) => return report_request_error(&e),
    };
    let artifact = match (&args.artifact, &args.digest) {
        (Some(path), None) => match std::fs::read(path) {
            Ok(b) => Blob::Bytes(b),
            Err(e) => {
                eprintln!("error: cannot read --artifact {}: {e}", path.display());
                return EXIT_USAGE;
            }
        },
        (None, Some(d)) => match d.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Blob::Sha256(hex.to_ascii_lowercase())
            }
            _ => {
                eprintln!("error: --digest {d:?} is not sha256:HEX (64 hex digits)");
                return EXIT_USAGE;
            }
        },
        _ => {
            eprintln!("error: give the artifact: --artifact FILE or --digest sha256:HEX");
            return EXIT_USAGE;
        }
    };
    let text = match std::fs::read_to_string(bundle_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read --bundle {}: {e}", bundle_path.display());
            return EXIT_USAGE;
        }
    };
    let subject = match &artifact {
        Blob::Bytes(b) => prov::Subject::Blob(b),
        Blob::Sha256(h) => prov::Subject::Sha256(h),
    };
    // Trust roots through TUF into the cache (not with --trust-root).
    // Blob mode needs no cache otherwise: without a cache directory, the embedded roots.
    let tuf = if args.identity.trust_root.is_none() {
        let config = match load_config(file, &args.source.settings) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let settings = match tuf_settings(&config) {
            Ok(t) => t,
            Err(code) => return code,
        };
        match Dirs::from_env(config.cache_dir.value.clone()) {
            Ok(dirs) => Some(settings.options(&dirs.cache)),
            Err(e) => {
                tracing::info!("no refresh of trust roots through TUF: {e}");
                None
            }
        }
    } else {
        None
    };
    let verdict = args.identity.verifier(tuf).and_then(|verifier| {
        if let Ok(instance) = policy.instance() {
            let root = verifier.trust_root(instance)?;
            if let Some(w) = root.id().age_warning(instance, jiff::Timestamp::now()) {
                eprintln!("thv-sandbox: warning: {w}");
            }
        }
        let bundles = prov::Bundle::parse_all(&text)?;
        verifier.verify(&bundles, subject, &policy)
    });
    report_verdict(&verdict, &bundle_path.display().to_string(), args.json)
}

/// `thv-sandbox verify IMAGE`: evidence from the registry, verified under `enabled`; no layer is fetched.
pub(crate) fn verify_image_cmd(file: Option<PathBuf>, image: &str, args: &VerifyArgs) -> i32 {
    let json = args.json;
    let (config, dirs) =
        match setup(file, &args.source.settings) {
            Ok(x) => x,
            Err(code) => return json_failure(
                json,
                code,
                "the configuration or the cache directory cannot be used (the error is on stderr)",
                None,
            ),
        };
    // A server of the registry: its image, checked against the provenance the registry declares for it (identity
    // flags, when given, replace that policy).
    let (image, verification) = match request::verify_target(
        image,
        args.registry.registry.as_deref(),
        &args.identity.flags(),
        &config,
        &process_env,
        &mut say,
    ) {
        Ok(x) => x,
        Err(e) => {
            let code = report_request_error(&e);
            return json_failure(json, code, &e.to_string(), e.hint());
        }
    };
    let image = image.as_str();
    let outcome = match thv_sandbox_runtime::verify(
        image,
        args.source.pull.into(),
        &config.registry_access(),
        &crate::progress::Terminal::stderr(ProgressMode::detect(args.source.quiet)),
        &dirs,
        &verification,
    ) {
        Ok(outcome) => outcome,
        Err(e) => {
            let code = report_runtime_error(&e, &dirs);
            let message = thv_sandbox_runtime::chain::messages(&e).join(": ");
            return json_failure(json, code, &message, e.hint());
        }
    };
    use thv_sandbox_runtime::trust::verification::Outcome;
    match outcome {
        Outcome::Verified { record, reused } => {
            let what = format!(
                "{image} ({}{})",
                record.manifest_digest,
                if reused {
                    ", from the verification record"
                } else {
                    ""
                }
            );
            eprintln!(
                "  evidence from: {} for {}",
                record.evidence_source, record.evidence_subject
            );
            report_verdict(&Ok(record.verified.clone()), &what, args.json)
        }
        Outcome::Refused { reason, hint } => {
            eprintln!("refused: {image}: {reason}");
            eprintln!("hint: {hint}");
            if args.json {
                use std::io::Write;
                let doc = serde_json::json!({"verified": false, "message": reason, "hint": hint});
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            EXIT_REFUSED
        }
        other => {
            let message = format!("{image}: verification did not run ({:?})", Some(other));
            eprintln!("error: {message}");
            json_failure(json, EXIT_SANDBOX_ERROR, &message, None)
        }
    }
}

/// `verify --json` when there is no verdict (the image or its evidence could not be checked): an object saying
/// so on stdout, so a script reading stdout always gets one; the exit code stays the error's.
fn json_failure(json: bool, code: i32, message: &str, hint: Option<String>) -> i32 {
    use std::io::Write;
    if json {
        let doc = serde_json::json!({
            "verified": false,
            "checked": false,
            "error": message,
            "hint": hint,
            "exit_code": code,
        });
        let _ = writeln!(std::io::stdout(), "{doc}");
    }
    code
}

pub(crate) enum Blob {
    Bytes(Vec<u8>),
    Sha256(String),
}
