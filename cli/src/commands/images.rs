//! `thv-sandbox images [--check]`.

use std::path::PathBuf;

use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::{cache, EXIT_SANDBOX_ERROR};

use crate::args::*;
use crate::commands::setup;
use crate::report::*;

pub(crate) fn images_cmd(file: Option<PathBuf>, args: ImagesArgs) -> i32 {
    let dirs = match setup(file, &only_cache_dir(args.cache_dir)) {
        Ok((_, d)) => d,
        Err(code) => return code,
    };
    let (images, totals) = match cache::list_with_totals(&dirs.cache) {
        Ok(i) => i,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    // stdout is data: the table and its total, or JSON for scripts.
    let out = if args.json {
        cache::render_json(&images)
    } else {
        cache::render_table(&images) + &cache::render_total(&totals) + &package_roots(&dirs)
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    if args.check {
        return check_roots_cmd(&dirs);
    }
    0
}

/// The installed `npx://`/`uvx://` packages, one line each, when there are any (their size is counted in their
/// base image's row above: a package root is one of its roots).
fn package_roots(dirs: &Dirs) -> String {
    let installed = thv_sandbox_runtime::inspect::installed_packages(&dirs.cache);
    let mut out = String::new();
    if installed.is_empty() {
        return out;
    }
    out.push_str("\nPACKAGES (installed onto the base image whose root they are)\n");
    for (pinned, v) in installed {
        let root = std::path::Path::new(&v.root)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!("{pinned}  {} packages  {root}\n", v.entries.len()));
    }
    out
}

/// `images --check`: one line per root on stderr; 1 if any root changed or cannot be read.
pub(crate) fn check_roots_cmd(dirs: &Dirs) -> i32 {
    use thv_sandbox_runtime::rootfs::RootCheck;
    let mut bad = false;
    for (root, check) in thv_sandbox_runtime::rootfs::check_roots(&dirs.cache) {
        let what = match &check {
            RootCheck::Unchanged => "unchanged".to_owned(),
            RootCheck::Changed => "CHANGED since it was unpacked: it will not be run".to_owned(),
            RootCheck::NoRecord => {
                "no record (unpacked by an older thv-sandbox; the next run unpacks it again)"
                    .to_owned()
            }
            RootCheck::Unreadable(e) => format!("cannot be checked: {e}"),
        };
        bad |= matches!(check, RootCheck::Changed | RootCheck::Unreadable(_));
        eprintln!("{}: {what}", root.display());
    }
    if bad {
        eprintln!(
            "hint: find out what wrote into the cache, then remove the changed roots (`chmod -R u+w ROOT && rm -rf \
             ROOT`); the next run unpacks the image afresh"
        );
        return 1;
    }
    0
}
