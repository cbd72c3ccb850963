//! `thv-sandbox rmi NAME|IMAGE|DIGEST…`: remove images from the cache.

use std::path::PathBuf;

use thv_sandbox_runtime::settings::request;
use thv_sandbox_runtime::{cache, EXIT_SANDBOX_ERROR, EXIT_USAGE};

use crate::commands::{say, setup};
use crate::report::*;

#[derive(Debug, clap::Args)]
pub(crate) struct RmiArgs {
    /// What to remove: a registry server's name (its image), an image name as `images` lists it (or as you
    /// would pull it: `alpine`), or a manifest digest (`sha256:HEX`, or its first 12 hex digits at least).
    #[arg(required = true, value_name = "NAME|IMAGE|DIGEST")]
    pub(crate) images: Vec<String>,
    /// Only say what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) settings: crate::args::SettingsArgs,
    #[command(flatten)]
    pub(crate) registry: crate::commands::registry::RegistrySourceArgs,
}

pub(crate) fn rmi_cmd(file: Option<PathBuf>, args: RmiArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // Roots that live runs use are kept; without a state directory there are no live runs to ask.
    let runs = dirs.state.join("runs");
    let mut code = 0;
    for what in &args.images {
        let target = match server_image(what, &args, &config) {
            Ok(t) => t,
            Err(c) => {
                code = c;
                continue;
            }
        };
        let report = match cache::remove_image(&dirs.cache, Some(&runs), &target, args.dry_run) {
            Ok(r) => r,
            Err(e) => {
                let exit = match e {
                    cache::RmiError::Cache(_) => EXIT_SANDBOX_ERROR,
                    _ => 1,
                };
                code = report_error(&e, &[], e.hint(), exit);
                continue;
            }
        };
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let image = report.image.as_ref();
        for r in &report.removed {
            eprintln!(
                "{verb} {} ({})",
                r.path.display(),
                cache::human_size(r.bytes)
            );
        }
        for (path, why) in &report.kept {
            eprintln!(
                "kept {}: {why} (`thv-sandbox prune` removes it later)",
                path.display()
            );
        }
        let freed: u64 = report.removed.iter().map(|r| r.bytes).sum();
        eprintln!(
            "{verb} {} ({}): {} freed{}",
            image.map_or(target.as_str(), |i| i.name.as_str()),
            image
                .and_then(|i| i.manifest_digest.as_ref())
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            cache::human_size(freed),
            if report.dry_run { " (dry run)" } else { "" }
        );
        for e in &report.failures {
            report_error(e, &[], None, 0);
            code = EXIT_SANDBOX_ERROR;
        }
    }
    code
}

/// A registry server's name stands for its image; anything else is looked for in the cache as written.
fn server_image(
    what: &str,
    args: &RmiArgs,
    config: &thv_sandbox_runtime::settings::Config,
) -> Result<String, i32> {
    // Digests and names the cache lists need no registry.
    if what.starts_with("sha256:") || what.contains(['/', '@', ':']) {
        return Ok(what.to_owned());
    }
    let loaded = request::load_registry(args.registry.registry.as_deref(), config, &mut say)
        .map_err(|e| report_request_error(&e))?;
    match loaded.catalog.find(what) {
        Ok(Some(s)) => Ok(s.image.clone().unwrap_or_else(|| what.to_owned())),
        Ok(None) => Ok(what.to_owned()),
        Err(e) => Err(report_error(&e, &[], e.hint(), EXIT_USAGE)),
    }
}
