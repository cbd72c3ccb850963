//! `thv-sandbox trust show|refresh`: the trusted roots of the Sigstore instances.

use std::path::PathBuf;

use thv_sandbox_provenance as prov;
use thv_sandbox_runtime::{EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::args::*;
use crate::commands::{setup, tuf_settings};

pub(crate) fn trust_cmd(file: Option<PathBuf>, cmd: TrustCommand) -> i32 {
    use std::io::Write;
    let settings = match &cmd {
        TrustCommand::Show { settings, .. } | TrustCommand::Refresh { settings, .. } => settings,
        _ => unreachable!("accept/accepted/revoke are dispatched to commands::accept"),
    };
    let (config, dirs) = match setup(file, settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = match tuf_settings(&config) {
        Ok(t) => t.options(&dirs.cache),
        Err(code) => return code,
    };
    let all = [prov::Instance::PublicGood, prov::Instance::GitHub];
    match cmd {
        TrustCommand::Show { json, .. } => {
            let mut statuses = Vec::new();
            for instance in all {
                match prov::tuf::status(instance, &opts) {
                    Ok(st) => statuses.push(st),
                    Err(e) => {
                        eprintln!("error: {instance}: {e}");
                        return EXIT_SANDBOX_ERROR;
                    }
                }
            }
            // Data on stdout: the text, or (`--json`) the JSON alone.
            if json {
                let doc = serde_json::to_string_pretty(&statuses).unwrap_or_default();
                let _ = writeln!(std::io::stdout(), "{doc}");
                return 0;
            }
            let _ = std::io::stdout().write_all(render_statuses(&statuses).as_bytes());
            0
        }
        TrustCommand::Refresh { instance, .. } => {
            let chosen: Vec<prov::Instance> = match instance.as_deref() {
                None => all.to_vec(),
                Some("public-good") => vec![prov::Instance::PublicGood],
                Some("github") => vec![prov::Instance::GitHub],
                Some(other) => {
                    eprintln!("error: --instance {other:?}: expected `public-good` or `github`");
                    return EXIT_USAGE;
                }
            };
            let mut code = 0;
            for instance in chosen {
                match prov::tuf::refresh(instance, &opts) {
                    Ok(root) => eprintln!(
                        "{instance}: refreshed through TUF from {}: {}",
                        opts.url(instance),
                        root.id().sha256
                    ),
                    Err(e) => {
                        eprintln!("{instance}: refresh failed: {e}");
                        eprintln!(
                            "hint: check the network and the repository URL (tuf_url_* in the configuration); \
                             the previous trust root stays in use"
                        );
                        code = EXIT_SANDBOX_ERROR;
                    }
                }
            }
            code
        }
        _ => unreachable!("accept/accepted/revoke are dispatched to commands::accept"),
    }
}

/// `trust show`'s text.
fn render_statuses(statuses: &[prov::tuf::RootStatus]) -> String {
    use std::fmt::Write as _;
    let now = jiff::Timestamp::now();
    let mut o = String::new();
    for st in statuses {
        let _ = writeln!(o, "{}: {}", st.instance, st.trust_root.describe(now));
        let _ = writeln!(o, "  sha256:     {}", st.trust_root.sha256);
        let _ = writeln!(
            o,
            "  repository: {}{}",
            st.repository,
            if st.refresh {
                ""
            } else {
                " (refreshing is off)"
            }
        );
        if let Some(f) = &st.last_failure {
            let _ = writeln!(o, "  last failed refresh: {f}");
        }
        for n in &st.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        if let Some(w) = &st.warning {
            let _ = writeln!(o, "  warning: {w}");
        }
    }
    o
}
