//! End-to-end: Python bytecode is made valid when a root is built, so the server's interpreter never recompiles
//! at start (issue 14), and `--no-bytecode` leaves the root exactly as the image has it.
//!
//! Each test builds an image of its own on the real Debian 12 layer of the `time` image (tests/images/
//! build-real-servers.sh; Python 3.11) plus a small package `/app/bc/bcpkg` whose timestamps are made the three
//! ways real images have them:
//! - rounded: the sources are one second after what their `.pyc` files record (the layer tar rounded);
//! - clamped: every mtime is `SOURCE_DATE_EPOCH` (1980-01-01), the `.pyc` files record the real ones;
//! - bare: no bytecode at all (`uv`'s default).
//!
//! Proof is Python's own import log (`python3 -v`) inside the sandbox: every module of the package is loaded
//! from bytecode that "matches" its source, and no module of the whole start (standard library included) is
//! compiled from source or found stale. The same run with `--no-bytecode` must show the recompiling (so the
//! check can fail, and it is the step that removes it), and its root must equal the layers file for file.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{code, Run};

const DEFAULT_IMAGES: &str = "/var/cache/thv-e2e-real";
/// When the package's sources were written (what their bytecode records).
const WRITTEN: u64 = 1_700_000_000;
/// A `SOURCE_DATE_EPOCH` clamp.
const EPOCH: u64 = 315_532_800;

const MODULES: &[(&str, &str)] = &[
    ("__init__", "\"\"\"A package for the bytecode test.\"\"\"\n"),
    (
        "alpha",
        "def greet(name):\n    return f'hello {name}'\n\nVALUE = sum(range(10))\n",
    ),
    (
        "beta",
        "from . import alpha\n\n\nclass Beta:\n    def run(self):\n        return alpha.greet('beta')\n",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Rounded,
    Clamped,
    Bare,
}

/// The layout holding the real `time` image, if built.
fn real_layout() -> Option<PathBuf> {
    let dir = std::env::var_os("THV_E2E_REAL_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGES));
    let layout = dir.join("layout");
    thv_sandbox_e2e::require(
        layout.join("index.json").is_file(),
        &format!(
            "the real-server images in {} (build them as root with tests/images/build-real-servers.sh)",
            layout.display()
        ),
    )
    .then_some(layout)
}

/// The host's `python3`, when it is the image's 3.11 (its bytecode is what the image's interpreter loads).
fn host_python_311() -> bool {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output();
    thv_sandbox_e2e::require(
        out.is_ok_and(|o| o.stdout == b"3.11\n"),
        "python3 3.11 on the host (the Debian 12 image's version), to write the test package's bytecode",
    )
}

/// The package's `.pyc` files, compiled by the host's Python 3.11 (timestamp-based) from sources whose mtime
/// is [`WRITTEN`]: `(stem, bytes)`.
fn compiled() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (stem, src) in MODULES {
        let path = dir.path().join(format!("{stem}.py"));
        std::fs::write(&path, src).expect("write source");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(WRITTEN))
            })
            .expect("set mtime");
    }
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import compileall, py_compile, sys; sys.exit(not compileall.compile_dir(sys.argv[1], quiet=1, \
             invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP))",
        ])
        .arg(dir.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .status()
        .expect("python3");
    assert!(status.success());
    MODULES
        .iter()
        .map(|(stem, _)| {
            let pyc = dir
                .path()
                .join(format!("__pycache__/{stem}.cpython-311.pyc"));
            let bytes = std::fs::read(&pyc).expect("read pyc");
            assert_eq!(
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
                WRITTEN as u32
            );
            (stem.to_string(), bytes)
        })
        .collect()
}

/// The app layer (uncompressed tar) of `variant`, and the bytecode in it (stem → `.pyc`).
fn app_tar(variant: Variant) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let source_mtime = match variant {
        Variant::Rounded => WRITTEN + 1,
        Variant::Clamped | Variant::Bare => EPOCH,
    };
    let other_mtime = match variant {
        Variant::Rounded => WRITTEN + 5,
        Variant::Clamped | Variant::Bare => EPOCH,
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32, mtime: u64, dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).expect("tar entry");
    };
    for d in ["app/", "app/bc/", "app/bc/bcpkg/"] {
        add(d, b"", 0o755, other_mtime, true);
    }
    for (stem, src) in MODULES {
        add(
            &format!("app/bc/bcpkg/{stem}.py"),
            src.as_bytes(),
            0o644,
            source_mtime,
            false,
        );
    }
    let mut pycs = BTreeMap::new();
    if variant != Variant::Bare {
        add("app/bc/bcpkg/__pycache__/", b"", 0o755, other_mtime, true);
        for (stem, pyc) in compiled() {
            pycs.insert(stem.clone(), pyc.clone());
            add(
                &format!("app/bc/bcpkg/__pycache__/{stem}.cpython-311.pyc"),
                &pyc,
                0o644,
                other_mtime,
                false,
            );
        }
    }
    (b.into_inner().expect("tar"), pycs)
}

/// Writes into `layout` (tag `test`) an image of the real Debian layer plus `app`: returns the image reference.
fn compose(layout: &Path, real: &Path, app: &[u8]) -> String {
    use std::io::Write;
    let base = thv_sandbox_e2e::read_image(real, "time").expect("the real time image");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let base_layer = &base.layers[0];
    let target = base_layer.blob_path(layout);
    if std::fs::hard_link(base_layer.blob_path(real), &target).is_err() {
        std::fs::copy(base_layer.blob_path(real), &target).expect("copy the base layer");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(app).expect("gzip");
    let app_blob = gz.finish().expect("gzip");
    let write_blob = |bytes: &[u8]| -> serde_json::Value {
        let digest = thv_sandbox_e2e::sha256_digest(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).expect("blob");
        serde_json::json!({"digest": digest, "size": bytes.len()})
    };
    let mut app_desc = write_blob(&app_blob);
    app_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    let config = serde_json::json!({
        "architecture": base.platform.0,
        "os": base.platform.1,
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONPATH=/app/bc"],
            "Cmd": ["python3"],
            "WorkingDir": "/app/bc",
            "User": "65534:65534",
        },
        "rootfs": {"type": "layers", "diff_ids": [base.diff_ids[0].clone(), thv_sandbox_e2e::sha256_digest(app)]},
    });
    let mut config_desc = write_blob(&serde_json::to_vec(&config).unwrap());
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [
            {"mediaType": base_layer.media_type, "digest": base_layer.digest, "size": base_layer.size},
            app_desc,
        ],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let desc = write_blob(&bytes);
    let descriptor = thv_sandbox_e2e::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: desc["digest"].as_str().unwrap().to_owned(),
        size: bytes.len() as u64,
    };
    thv_sandbox_e2e::tag_manifest(layout, "test", &descriptor, None).expect("tag");
    format!("oci:{}:test", layout.display())
}

/// A directory for the test's layout and cache that the sandbox's ids can reach (as root they are not ours).
fn own_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("thv-e2e-bytecode-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

/// `python3 -v` importing the package inside the sandbox: its stderr (the import log).
async fn import_log(run: &Run, cache: &Path, image: &str, extra: &[&str]) -> String {
    let mut cmd = run.cmd_in(
        cache,
        image,
        extra,
        &[
            "python3",
            "-v",
            "-c",
            "import bcpkg.beta; print(bcpkg.beta.Beta().run())",
        ],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.expect("thv-sandbox run");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(code(out.status), 0, "{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello beta\n",
        "{log}"
    );
    log
}

/// The lines of an import log that show compile work: bytecode found stale, or a code object made from source.
fn recompiled(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("bytecode is stale")
                || (l.starts_with("# code object from ") && !l.trim_end().ends_with(".pyc'"))
        })
        .collect()
}

/// Asserts the start compiled nothing and loaded every module of the package from its matching bytecode.
fn assert_no_compile(log: &str) {
    let work = recompiled(log);
    assert!(work.is_empty(), "compile work at start: {work:#?}");
    for (stem, _) in MODULES {
        let matches = format!(
            "# /app/bc/bcpkg/__pycache__/{stem}.cpython-311.pyc matches /app/bc/bcpkg/{stem}.py"
        );
        assert!(log.contains(&matches), "no `{matches}` in:\n{log}");
    }
}

/// The committed roots of `cache`: key → tree.
fn roots(cache: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(cache.join("roots-v1"))
        .expect("roots")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| (name, e.path().join("rootfs")))
        })
        .collect()
}

/// Regular files and directories the layers put in the root: path → (is_dir, mtime, size), the later layer
/// winning (the Debian layer has no whiteouts).
fn layer_entries(real: &Path, app: &[u8]) -> BTreeMap<String, (bool, u64, u64)> {
    let base = thv_sandbox_e2e::read_image(real, "time").expect("time image");
    let blob = std::fs::File::open(base.layers[0].blob_path(real)).expect("base layer");
    let mut out = BTreeMap::new();
    let mut add = |r: &mut dyn Read| {
        let mut archive = tar::Archive::new(r);
        for e in archive.entries().expect("tar") {
            let e = e.expect("entry");
            let h = e.header();
            let path = e
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let path = path.trim_start_matches("./").to_owned();
            if h.entry_type() == tar::EntryType::Link {
                // A hard link is the file it links to.
                let target = e.link_name().expect("link").expect("link target");
                let target = target.to_string_lossy().trim_start_matches("./").to_owned();
                if let Some(v) = out.get(&target).copied() {
                    out.insert(path, v);
                }
                continue;
            }
            match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Directory
                    if !path.is_empty() && path != "." =>
                {
                    let is_dir = h.entry_type() == tar::EntryType::Directory;
                    out.insert(
                        path,
                        (
                            is_dir,
                            h.mtime().expect("mtime"),
                            if is_dir { 0 } else { h.size().expect("size") },
                        ),
                    );
                }
                _ => {}
            }
        }
    };
    add(&mut flate2::read::GzDecoder::new(blob));
    add(&mut &app[..]);
    out
}

/// Regular files and directories of a root, as [`layer_entries`] lists them (the mount points the unpacker
/// creates for the spec are not the image's and are left out).
fn root_entries(root: &Path) -> BTreeMap<String, (bool, u64, u64)> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, (bool, u64, u64)>) {
        for e in std::fs::read_dir(root.join(rel))
            .expect("read_dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            if m.is_dir() {
                out.insert(path.clone(), (true, m.mtime() as u64, 0));
                walk(root, &path, out);
            } else if m.is_file() {
                out.insert(path, (false, m.mtime() as u64, m.size()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// One variant: built with the step (no compile at start), then with `--no-bytecode` (the recompiling is back,
/// and the root is the layers' exactly), each under its own key in one cache.
async fn check(variant: Variant) {
    let Some(real) = real_layout() else { return };
    if !host_python_311() {
        return;
    }
    let dir = own_dir();
    let (app, image_pycs) = app_tar(variant);
    let image = compose(&dir.path().join("layout"), &real, &app);
    let cache = dir.path().join("cache");
    let run = Run::new();

    // With the step (the default).
    let log = import_log(&run, &cache, &image, &[]).await;
    assert_no_compile(&log);
    let built = roots(&cache);
    assert_eq!(built.len(), 1, "{built:?}");
    let (key, tree) = built.iter().next().unwrap();
    assert!(
        key.ends_with("-bc1"),
        "the root's key names the step: {key}"
    );
    let pkg = tree.join("app/bc/bcpkg");
    for (stem, src) in MODULES {
        let source = pkg.join(format!("{stem}.py"));
        assert_eq!(std::fs::read_to_string(&source).unwrap(), *src);
        let pyc = std::fs::read(pkg.join(format!("__pycache__/{stem}.cpython-311.pyc")))
            .expect("bytecode in the root");
        let mtime = std::fs::metadata(&source).unwrap().mtime() as u64;
        match variant {
            // The rounding rule, not a compile: the image's own bytecode, the source given the mtime it records.
            Variant::Rounded => {
                assert_eq!(mtime, WRITTEN);
                assert_eq!(
                    pyc, image_pycs[*stem],
                    "{stem}: the image's bytecode is kept"
                );
            }
            // Compiled in the sandbox: the sources keep their (clamped) mtime, the bytecode now records it.
            Variant::Clamped | Variant::Bare => {
                assert_eq!(mtime, EPOCH);
                assert_eq!(
                    u32::from_le_bytes(pyc[8..12].try_into().unwrap()),
                    EPOCH as u32
                );
                assert_eq!(
                    u32::from_le_bytes(pyc[4..8].try_into().unwrap()),
                    0,
                    "timestamp-based"
                );
            }
        }
    }
    // The directories keep the image's mtimes although `__pycache__` entries were written into them.
    assert_eq!(
        std::fs::metadata(&pkg).unwrap().mtime() as u64,
        match variant {
            Variant::Rounded => WRITTEN + 5,
            _ => EPOCH,
        }
    );

    // Without the step: the interpreter recompiles at every start, and the root is exactly the layers.
    let log = import_log(&run, &cache, &image, &["--no-bytecode"]).await;
    let work = recompiled(&log);
    for (stem, _) in MODULES {
        let name = if *stem == "__init__" {
            "bcpkg".to_owned()
        } else {
            format!("bcpkg.{stem}")
        };
        let from_source = format!("# code object from /app/bc/bcpkg/{stem}.py");
        let stale = format!("# bytecode is stale for '{name}'");
        assert!(
            work.iter().any(|l| l.trim_end() == from_source),
            "{stem}: no `{from_source}` in {work:#?}"
        );
        if variant != Variant::Bare {
            assert!(
                work.iter().any(|l| l.trim_end() == stale),
                "{stem}: no `{stale}` in {work:#?}"
            );
        }
    }
    let built = roots(&cache);
    assert_eq!(built.len(), 2, "one root per setting: {built:?}");
    let (off_key, off_tree) = built
        .iter()
        .find(|(k, _)| !k.ends_with("-bc1"))
        .expect("the root built without the step");
    assert_eq!(format!("{off_key}-bc1"), *key);
    let mut in_root = root_entries(off_tree);
    let layers = layer_entries(&real, &app);
    // The spec's mount points (created empty by the unpacker, whatever the setting, in a directory whose mtime
    // that changes) are not the image's: the user's missing home (nobody's /nonexistent) is one.
    for point in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "nonexistent",
    ] {
        if !layers.contains_key(point) {
            in_root.remove(point);
            if let (Some((parent, _)), Some(entry)) = (
                point.rsplit_once('/'),
                layers.get(point.split('/').next().unwrap()),
            ) {
                in_root.insert(parent.to_owned(), *entry);
            }
        }
    }
    let differ: Vec<_> = layers
        .iter()
        .filter(|(p, e)| in_root.get(*p) != Some(e))
        .map(|(p, e)| format!("{p}: layers {e:?}, root {:?}", in_root.get(p)))
        .chain(
            in_root
                .keys()
                .filter(|p| !layers.contains_key(*p))
                .map(|p| format!("{p}: only in the root")),
        )
        .take(20)
        .collect();
    assert!(
        differ.is_empty(),
        "the root without the step differs from the image: {differ:#?}"
    );
    run.assert_nothing_left(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn rounded_timestamps_are_made_valid() {
    check(Variant::Rounded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clamped_timestamps_are_compiled_in_the_sandbox() {
    check(Variant::Clamped).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bytecode_is_compiled_in_the_sandbox() {
    check(Variant::Bare).await;
}
