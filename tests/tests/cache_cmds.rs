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

    // One image, with both names of the pull (tag and pinned), the manifest's digest and the blobs' bytes.
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
    let images = images.as_array().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["name"], image.as_str());
    let mut names: Vec<&str> = images[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = [image.as_str(), pinned.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(images[0]["manifest_digest"], built.manifest.digest.as_str());
    assert!(images[0]["blob_bytes"].as_u64().unwrap() > 0);
    // The table: one row (the tag; the digest has its own column), then the total.
    let out = cmd(&run, cache.path(), &["images"])
        .output()
        .await
        .expect("images");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with(&format!("{image}  {}", &built.manifest.digest[7..19])),
        "{table}"
    );
    assert!(lines[2].starts_with("1 image: "), "{table}");
    assert!(
        lines[2].contains(" of blobs (shared layers counted once), "),
        "{table}"
    );

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

/// `rmi` removes one image (by any name, or its digest): its names, its unpacked root and the blobs no other image
/// uses, while another image that shares layers with it keeps running offline; a server running from a removed
/// image keeps its root. `prune --force` removes an orphan that plain `prune` keeps for being recent.
#[tokio::test(flavor = "multi_thread")]
async fn rmi_removes_one_image_and_prune_force_removes_recent_orphans() {
    let Some((registry, _layout, built, image)) = common::registry_with_probe() else {
        return;
    };
    // A second image sharing the probe's layers: the same build under another user (a different config).
    let other_layout = tempfile::tempdir().unwrap();
    let other = thv_sandbox_e2e::probe_image_builder(None)
        .expect("builder")
        .write(other_layout.path(), "root")
        .expect("write image");
    registry
        .push_image(other_layout.path(), &other, "tools/other", "2.0")
        .expect("push");
    let other_image = format!("{}/tools/other:2.0", registry.host());
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    for i in [&image, &other_image] {
        let out = cmd(&run, cache.path(), &["pull", i])
            .output()
            .await
            .expect("pull");
        assert_eq!(
            code(out.status),
            0,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let blob = |d: &str| cache.path().join("oci/blobs/sha256").join(&d[7..]);
    let shared: Vec<&str> = built
        .layers
        .iter()
        .map(|l| l.digest.as_str())
        .filter(|d| other.layers.iter().any(|o| o.digest == *d))
        .collect();
    let roots = || -> usize {
        std::fs::read_dir(thv_sandbox_runtime::rootfs::roots_dir(cache.path()))
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(roots(), 2);

    // Nothing of that name: an error that points at `images`, nothing removed.
    let out = cmd(&run, cache.path(), &["rmi", "tools/none:1"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 1, "{stderr}");
    assert!(stderr.contains("hint: `thv-sandbox images`"), "{stderr}");

    // By its digest's first 12 hex digits.
    let out = cmd(&run, cache.path(), &["rmi", &built.manifest.digest[7..19]])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert!(
        stderr.contains(&format!("removed {image} ({})", built.manifest.digest)),
        "{stderr}"
    );
    assert!(!blob(&built.manifest.digest).exists());
    assert!(!blob(&built.config.digest).exists());
    for d in &shared {
        assert!(blob(d).exists(), "a layer the other image uses was removed");
    }
    assert_eq!(roots(), 1);
    let out = cmd(&run, cache.path(), &["images", "--json"])
        .output()
        .await
        .unwrap();
    let images: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    assert_eq!(images[0]["name"], other_image.as_str());

    // The other image runs offline, from what is left.
    let mut reg = registry;
    reg.stop();
    let out = cmd(
        &run,
        cache.path(),
        &["run", "--pull", "never", &other_image, "--", "--probe"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A recent orphan: `prune` keeps it (a pull may be about to name it), `prune --force` removes it.
    let orphan = cache.path().join("oci/blobs/sha256").join("0".repeat(64));
    std::fs::write(&orphan, b"no image needs this").unwrap();
    let out = cmd(&run, cache.path(), &["prune"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert!(orphan.exists(), "{stderr}");
    assert!(stderr.contains("prune --force"), "{stderr}");
    let out = cmd(&run, cache.path(), &["prune", "--force"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert!(!orphan.exists(), "{stderr}");
    assert!(stderr.contains("removed 1 blobs"), "{stderr}");

    // By name, as written: the last image goes, its root too; the cache is empty.
    let out = cmd(&run, cache.path(), &["rmi", &other_image])
        .output()
        .await
        .unwrap();
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(roots(), 0);
    let out = cmd(&run, cache.path(), &["images"]).output().await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.ends_with("0 images: 0 B of blobs (shared layers counted once), 0 B unpacked\n"),
        "{table}"
    );
    run.assert_nothing_left(None);
}
