//! `thv-sandbox prune`.

use std::path::PathBuf;

use thv_sandbox_runtime::{cache, EXIT_SANDBOX_ERROR};

use crate::args::*;
use crate::commands::setup;
use crate::report::*;

pub(crate) fn prune_cmd(file: Option<PathBuf>, args: PruneArgs) -> i32 {
    let dirs = match setup(file, &only_cache_dir(args.cache_dir)) {
        Ok((_, d)) => d,
        Err(code) => return code,
    };
    // Roots that live runs use are kept; without a state directory there are no live runs to ask.
    let runs = dirs.state.join("runs");
    let opts = cache::PruneOptions {
        dry_run: args.dry_run,
        force: args.force,
    };
    let report = match cache::prune_with(&dirs.cache, Some(&runs), opts) {
        Ok(r) => r,
        Err(e) => return report_error(&e, &[], None, EXIT_SANDBOX_ERROR),
    };
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        eprintln!(
            "{verb} {} ({})",
            r.path.display(),
            cache::human_size(r.bytes)
        );
    }
    eprintln!(
        "{verb} {} blobs, {} unpacked roots, {} leftovers of interrupted pulls and unpacks: {} freed{}",
        report.count(cache::RemovedKind::Blob),
        report.count(cache::RemovedKind::Root),
        report.count(cache::RemovedKind::TempFile) + report.count(cache::RemovedKind::Staging),
        cache::human_size(report.bytes_freed()),
        if report.dry_run { " (dry run)" } else { "" },
    );
    if report.kept > 0 {
        eprintln!(
            "kept {} unreferenced items that are {}locked or in use",
            report.kept,
            if report.forced && !report.held_back {
                ""
            } else {
                "recent, "
            }
        );
        if report.held_back {
            eprintln!(
                "note: a pull or unpack is in progress, so recent items were kept despite --force; run it again                  when the pull is done"
            );
        } else if !report.forced {
            eprintln!("hint: `thv-sandbox prune --force` removes recent ones too");
        }
    }
    let mut code = 0;
    for e in &report.failures {
        report_error(e, &[], None, 0);
        code = EXIT_SANDBOX_ERROR;
    }
    code
}
