//! `thv-sandbox pull`: the pinned reference on stdout.

use std::path::PathBuf;

use thv_sandbox_runtime::report::ProgressMode;
use thv_sandbox_runtime::settings::request;

use crate::args::*;
use crate::commands::setup;
use crate::report::*;

pub(crate) fn pull_cmd(file: Option<PathBuf>, args: PullArgs) -> i32 {
    let (config, dirs) = match setup(file, &args.source.settings) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // A server of the registry by name: its image (so `pull NAME` readies what `run NAME` runs); `npx://` /
    // `uvx://`, or an entry whose server is a package: the package installed onto its base image, its provenance
    // checked against the entry's pin.
    let flags = request::PullFlags {
        image: args.image.clone(),
        base_image: args.base_image.clone(),
        registry: args.registry.registry.clone(),
        image_verification: args.image_verification,
        identity: args.identity.flags(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let image = match request::pull_target(&flags, &config, &env, &mut crate::commands::say) {
        Ok(request::PullTarget::Image(image)) => image,
        Ok(request::PullTarget::Package(install)) => {
            return pull_package(&config, &dirs, &args, &install)
        }
        Ok(request::PullTarget::Remote(name)) => {
            eprintln!("error: `{name}` is a remote MCP server: there is no image to pull");
            return thv_sandbox_runtime::EXIT_USAGE;
        }
        Err(e) => return report_request_error(&e),
    };
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

/// `pull npx://…` / `uvx://…` (or a registry entry whose server is a package): the package, resolved to its
/// exact version, on stdout.
fn pull_package(
    config: &thv_sandbox_runtime::settings::Config,
    dirs: &thv_sandbox_runtime::dirs::Dirs,
    args: &PullArgs,
    install: &thv_sandbox_runtime::packages::Install,
) -> i32 {
    use thv_sandbox_runtime::packages::spec;
    match thv_sandbox_runtime::pull_package(
        install,
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
