//! `thv-sandbox trust accept|accepted|revoke`: unverified servers the user accepted knowingly, by image digest
//! (kept next to the verification records; see `thv_sandbox_runtime::trust::accept`).

use std::path::PathBuf;

use thv_sandbox_runtime::image::digest::Digest;
use thv_sandbox_runtime::settings::request;
use thv_sandbox_runtime::trust::accept::{self, Acceptance, Acceptances};
use thv_sandbox_runtime::{Mode, EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::args::*;
use crate::commands::{say, setup};
use crate::report::*;

/// `trust accept NAME|IMAGE`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcceptArgs {
    /// A server of the registry by name (`time`), or an image reference (`ghcr.io/org/image:tag`).
    pub(crate) name: String,
    /// Accept this manifest digest (`sha256:` and 64 hex digits; `images --json` shows it) instead of the one
    /// the name resolves to now (which is pulled into the cache when missing, as `run` would pull it).
    #[arg(long, value_name = "sha256:HEX")]
    pub(crate) digest: Option<String>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) registry: crate::commands::registry::RegistrySourceArgs,
}

/// `trust accepted`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcceptedArgs {
    /// Print a JSON array instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
}

/// `trust revoke NAME|IMAGE|DIGEST`.
#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// What was accepted: the server's name, the image reference, or the digest (`sha256:HEX`, or its first 12
    /// hex digits at least). Every acceptance it names is revoked.
    pub(crate) what: String,
    #[command(flatten)]
    pub(crate) settings: SettingsArgs,
}

pub(crate) fn accept_cmd(file: Option<PathBuf>, args: AcceptArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // The name: a registry server's (its image; refused when it declares provenance) or an image reference.
    let mut image = args.name.clone();
    let mut server = None;
    if !args.name.starts_with("oci:") {
        let loaded =
            match request::load_registry(args.registry.registry.as_deref(), &config, &mut say) {
                Ok(l) => l,
                Err(e) => return report_request_error(&e),
            };
        match loaded.catalog.find(&args.name) {
            Ok(Some(s)) => {
                if s.provenance.is_some() {
                    eprintln!(
                        "error: `{}` declares provenance: it is verified at every run, and is never accepted \
                         unverified",
                        s.name
                    );
                    eprintln!(
                        "hint: when its verification fails, that failure is the warning sign (a changed or \
                         substituted image); `thv-sandbox verify {}` says why it fails",
                        s.short_name()
                    );
                    return EXIT_USAGE;
                }
                let Some(i) = &s.image else {
                    eprintln!(
                        "error: `{}` is a remote MCP server: there is no image to accept",
                        s.name
                    );
                    return EXIT_USAGE;
                };
                image = i.clone();
                server = Some(s.name.clone());
            }
            Ok(None) => {}
            Err(e) => return report_error(&e, &[], e.hint(), EXIT_USAGE),
        }
    }
    let (image, manifest_digest) = match &args.digest {
        Some(d) => match d.parse::<Digest>() {
            Ok(digest) => (image, digest),
            Err(e) => {
                eprintln!("error: --digest {d}: {e}");
                eprintln!("hint: a manifest digest as `sha256:` and 64 hex digits");
                return EXIT_USAGE;
            }
        },
        None if image.starts_with("oci:") => {
            eprintln!("error: {image}: an OCI layout on disk is accepted by its digest only");
            eprintln!("hint: give its manifest digest with --digest sha256:… (64 hex digits)");
            return EXIT_USAGE;
        }
        // What `run` would run: resolved (pulled when missing) as `run` resolves it.
        None => match thv_sandbox_runtime::pull(
            &image,
            args.source.pull.into(),
            &config.registry_access(),
            &crate::progress::Terminal::stderr(thv_sandbox_runtime::report::ProgressMode::detect(
                args.source.quiet,
            )),
            &dirs,
        ) {
            Ok(pulled) => (pulled.reference.to_string(), pulled.manifest_digest),
            Err(e) => return report_runtime_error(&e, &dirs),
        },
    };
    let acceptance = Acceptance {
        manifest_digest,
        image,
        server,
        accepted_at: accept::now(),
    };
    let store = Acceptances::of_cache(&dirs.cache);
    if let Err(e) = store.add(acceptance.clone()) {
        return report_error(
            &e,
            &[],
            Some("fix or remove that file; `trust accepted` lists what it holds".into()),
            EXIT_SANDBOX_ERROR,
        );
    }
    let subject = shown(&acceptance);
    eprintln!(
        "accepted {subject} ({}@{}) unverified: runs of this digest no longer warn; another digest warns again \
         (`thv-sandbox trust revoke {subject}` undoes it)",
        acceptance.image, acceptance.manifest_digest
    );
    if config.image_verification.value == Some(Mode::Enabled)
        || std::env::var("THV_SANDBOX_IMAGE_VERIFICATION").is_ok_and(|v| v == "enabled")
    {
        eprintln!(
            "note: image_verification is `enabled` here, which runs verified images only: an acceptance does not \
             change that"
        );
    }
    0
}

pub(crate) fn accepted_cmd(file: Option<PathBuf>, args: AcceptedArgs) -> i32 {
    let dirs = match setup(file, &args.settings) {
        Ok((_, d)) => d,
        Err(code) => return code,
    };
    let list = match Acceptances::of_cache(&dirs.cache).list() {
        Ok(l) => l,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    use std::io::Write;
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    } else {
        render_table(&list)
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

pub(crate) fn revoke_cmd(file: Option<PathBuf>, args: RevokeArgs) -> i32 {
    let dirs = match setup(file, &args.settings) {
        Ok((_, d)) => d,
        Err(code) => return code,
    };
    match Acceptances::of_cache(&dirs.cache).revoke(&args.what) {
        Ok(gone) if gone.is_empty() => {
            eprintln!("error: no accepted image is named `{}`", args.what);
            eprintln!("hint: `thv-sandbox trust accepted` lists them (server, image, digest)");
            1
        }
        Ok(gone) => {
            for a in &gone {
                eprintln!(
                    "revoked {} ({}@{}, accepted on {}): its runs warn again",
                    shown(a),
                    a.image,
                    a.manifest_digest,
                    a.date()
                );
            }
            0
        }
        Err(e) => report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    }
}

/// SERVER (or IMAGE), DIGEST (12 hex digits), ACCEPTED (the day), IMAGE.
fn render_table(list: &[Acceptance]) -> String {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|a| {
            [
                a.server.as_deref().map_or("-", short).to_owned(),
                a.manifest_digest.hex()[..12].to_owned(),
                a.date(),
                a.image.clone(),
            ]
        })
        .collect();
    let header = ["SERVER", "DIGEST", "ACCEPTED", "IMAGE"].map(str::to_owned);
    thv_sandbox_runtime::cache::columns(&header, &rows, [false; 4])
}

fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The server's short name (as users type it), else the image.
fn shown(a: &Acceptance) -> &str {
    a.subject()
}
