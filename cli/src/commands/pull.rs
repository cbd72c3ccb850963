//! `thv-sandbox pull`: the pinned reference on stdout.

use std::path::PathBuf;

use thv_sandbox_runtime::report::ProgressMode;

use crate::args::*;
use crate::commands::setup;
use crate::report::*;

pub(crate) fn pull_cmd(file: Option<PathBuf>, args: PullArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // `npx://` / `uvx://`: the package installed onto its base image, ready to run.
    if thv_sandbox_runtime::packages::spec::is_package_ref(&args.image) {
        return pull_package(&config, &dirs, &args);
    }
    // A server of the registry by name: its image (so `pull NAME` readies what `run NAME` runs).
    let mut image = args.image.clone();
    if !image.starts_with("oci:") {
        let loaded = match thv_sandbox_runtime::settings::request::load_registry(
            args.registry.registry.as_deref(),
            &config,
            &mut crate::commands::say,
        ) {
            Ok(l) => l,
            Err(e) => return report_request_error(&e),
        };
        match loaded.catalog.find(&args.image) {
            Ok(Some(s)) => match &s.image {
                Some(i) => image = i.clone(),
                None => {
                    eprintln!(
                        "error: `{}` is a remote MCP server: there is no image to pull",
                        s.name
                    );
                    return thv_sandbox_runtime::EXIT_USAGE;
                }
            },
            Ok(None) => {}
            Err(e) => return report_error(&e, &[], e.hint(), thv_sandbox_runtime::EXIT_USAGE),
        }
    }
    match thv_sandbox_runtime::pull_with(
        &image,
        args.source.pull.into(),
        &config.registry_access(),
        &crate::progress::Terminal::stderr(ProgressMode::detect(args.source.quiet)),
        &dirs,
        config.bytecode_at_unpack.value,
    ) {
        Ok(pulled) => {
            // stdout is data: the pinned reference, for scripts.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", pulled.tag_ref);
            0
        }
        Err(e) => report_runtime_error(&e, &dirs),
    }
}

/// `pull npx://…` / `uvx://…`: the package, resolved to its exact version, on stdout.
fn pull_package(
    config: &thv_sandbox_runtime::settings::Config,
    dirs: &thv_sandbox_runtime::dirs::Dirs,
    args: &PullArgs,
) -> i32 {
    use thv_sandbox_runtime::packages::{spec, Install};
    let env = |k: &str| std::env::var(k).ok();
    let install = spec::parse(&args.image)
        .map_err(|e| report_error(&e, &[], Some(e.hint()), thv_sandbox_runtime::EXIT_USAGE))
        .and_then(|s| {
            let s = s.expect("a package reference");
            Install::new(s, args.base_image.as_deref(), None, &env)
                .map_err(|e| report_error(&e, &[], None, thv_sandbox_runtime::EXIT_USAGE))
        });
    let install = match install {
        Ok(i) => i,
        Err(code) => return code,
    };
    match thv_sandbox_runtime::pull_package(
        &install,
        args.source.pull.into(),
        &config.registry_access(),
        &crate::progress::Terminal::stderr(ProgressMode::detect(args.source.quiet)),
        dirs,
    ) {
        Ok(lock) => {
            use std::io::Write;
            let pinned = spec::PackageSpec {
                version: Some(lock.top_version.clone()),
                ..lock.top.clone()
            };
            let _ = writeln!(std::io::stdout(), "{pinned}");
            0
        }
        Err(e) => report_runtime_error(&e, dirs),
    }
}
