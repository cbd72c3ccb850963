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
        render_json(&dirs, &images)
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

/// `images --json`: one object per cached image (`"kind": "image"`), then one per installed `npx://`/`uvx://`
/// package root (`"kind": "package"`: the package pinned as `name`, its version, index, the base image's
/// manifest digest, the root, how many packages its lock pins and the provenance verdicts recorded at install).
fn render_json(dirs: &Dirs, images: &[cache::CachedImage]) -> String {
    let mut list: Vec<serde_json::Value> = images
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), "image".into());
            }
            v
        })
        .collect();
    for (pinned, v) in thv_sandbox_runtime::inspect::installed_packages(&dirs.cache) {
        list.push(serde_json::json!({
            "kind": "package",
            "name": pinned,
            "version": v.version,
            "index": v.index,
            "base_digest": v.base_digest,
            "root": v.root,
            "pinned_packages": v.entries.len(),
            "provenance": v.provenance,
        }));
    }
    let mut out = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
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
