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
    let report = match cache::prune_keeping_runs(&dirs.cache, Some(&runs), args.dry_run) {
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
            "kept {} unreferenced items that are recent, locked or in use",
            report.kept
        );
    }
    let mut code = 0;
    for e in &report.failures {
        report_error(e, &[], None, 0);
        code = EXIT_SANDBOX_ERROR;
    }
    code
}
