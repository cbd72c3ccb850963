//! End-to-end: `thv-sandbox images` lists a pulled image, and `thv-sandbox prune` removes an orphan blob from
//! the cache while the image stays runnable offline.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{code, Run};

fn cmd(run: &Run, cache: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut c = run.cli(cache, args);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn images_lists_a_pulled_image_and_prune_removes_only_an_orphan() {
    let Some((mut registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    let pinned = format!("{}/tools/probe@{}", registry.host(), built.manifest.digest);

    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let out = cmd(&run, cache.path(), &["pull", &image])
        .output()
        .await
        .expect("pull");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    registry.stop();

    // Both names of the pull (tag and pinned), with the manifest's digest and the blobs' bytes.
    let out = cmd(&run, cache.path(), &["images", "--json"])
        .output()
        .await
        .expect("images");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let mut names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = [image.as_str(), pinned.as_str()];
    expected.sort();
    assert_eq!(names, expected, "{images}");
    for i in images.as_array().unwrap() {
        assert_eq!(i["manifest_digest"], built.manifest.digest.as_str());
        assert!(i["blob_bytes"].as_u64().unwrap() > 0);
    }

    // An orphan blob, old enough that prune does not take it for part of a pull in progress.
    let orphan = cache.path().join("oci/blobs/sha256").join("0".repeat(64));
    std::fs::write(&orphan, b"no image needs this").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let out = cmd(&run, cache.path(), &["prune"])
        .output()
        .await
        .expect("prune");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&format!("removed {}", orphan.display())),
        "{stderr}"
    );
    assert!(stderr.contains("removed 1 blobs"), "{stderr}");
    assert!(!orphan.exists());

    // The image is intact: it runs from the cache, offline.
    let out = cmd(
        &run,
        cache.path(),
        &["run", "--pull", "never", &image, "--", "--probe"],
    )
    .output()
    .await
    .expect("run");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.assert_nothing_left(None);
}
