//! End-to-end: the user configuration file. Settings that only the file gives (a registry mirror, the cache
//! directory) are what `pull`, `run`, `images` use; a malformed file stops every command with the file, line and
//! column, before anything is contacted.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{code, Run};
use thv_sandbox_e2e::thv_sandbox_bin;

/// `thv-sandbox ARGS…` with only PATH, HOME, this test's state dir, `XDG_CONFIG_HOME=config_home` and no TUF
/// refresh (hermetic, as everywhere else in the suite).
fn cli(run: &Run, config_home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(thv_sandbox_bin());
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
        )
        .env("XDG_RUNTIME_DIR", run.xdg.path())
        .env("XDG_CONFIG_HOME", config_home)
        .env("THV_SANDBOX_TUF_REFRESH", "0")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn write_config(config_home: &Path, text: &str) {
    let dir = config_home.join("thv-sandbox");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_and_cache_dir_set_only_in_the_config_file_are_used() {
    let Some((registry, _layout, built, _image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    // Relative to the file's directory.
    write_config(
        home.path(),
        &format!(
            "# the test's settings\ncache_dir = \"../cache\"\n\n[mirrors]\n\"ghcr.io\" = \"{}\"\n",
            registry.host()
        ),
    );
    // The image is named as being on ghcr.io (unreachable here); only the mirror has it.
    let name = "ghcr.io/tools/probe:1.0";
    let out = cli(&run, home.path(), &["pull", name])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(out.status), 0, "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ghcr.io/tools/probe@{}", built.manifest.digest)
    );
    for layer in &built.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", registry.log());
    }
    assert!(
        cache.join("oci/index.json").is_file(),
        "the cache is where the file says"
    );

    // `images` finds it through the same file, under its original name.
    let out = cli(&run, home.path(), &["images", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(names.contains(&name), "{names:?}");

    // `config show` says where each setting came from.
    let out = cli(&run, home.path(), &["config", "show"])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(out.status), 0);
    assert!(
        shown.contains(&format!("\"ghcr.io\" = \"{}\"", registry.host())),
        "{shown}"
    );
    assert!(shown.contains("[mirrors]  # file "), "{shown}");
    // A flag beats the file.
    let out = cli(
        &run,
        home.path(),
        &["config", "show", "--cache-dir", "/elsewhere"],
    )
    .output()
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("cache_dir = \"/elsewhere\"  # flag --cache-dir"),
        "{shown}"
    );

    // `run` with another file naming a fresh cache: the image comes through the file's mirror into the file's
    // cache, and the server answers over MCP.
    let home2 = tempfile::tempdir().unwrap();
    // The sandbox's ids (root runs it under unprivileged ones) must reach the cache below it.
    std::fs::set_permissions(
        home2.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let cache2 = home2.path().join("cache-for-run");
    write_config(
        home2.path(),
        &format!(
            "cache_dir = \"../cache-for-run\"\n\n[mirrors]\n\"ghcr.io\" = \"{}\"\n",
            registry.host()
        ),
    );
    let server = thv_sandbox_e2e::spawn_mcp(cli(&run, home2.path(), &["run", name]))
        .await
        .expect("run through the file's mirror");
    let out = server
        .call("echo", serde_json::json!({"text": "configured"}))
        .await
        .expect("echo");
    assert_eq!(thv_sandbox_e2e::tool_text(&out), "configured");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    for layer in &built.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            2,
            "run fetched the layers again, from the mirror: {}",
            registry.log()
        );
    }
    assert!(
        cache2.join("oci/index.json").is_file(),
        "run's cache is where the file says"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_config_file_stops_every_command_with_file_line_and_column() {
    let run = Run::new();
    let home = tempfile::tempdir().unwrap();
    write_config(
        home.path(),
        "cache_dir = \"/tmp/x\"\ninsecure_registry = [\"a\"]\n",
    );
    let file = home.path().join("thv-sandbox/config.toml");
    for args in [
        &["pull", "ghcr.io/a/b:1"][..],
        &["run", "ghcr.io/a/b:1"],
        &["images"],
        &["config", "show"],
    ] {
        let out = cli(&run, home.path(), args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 2, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.starts_with(&format!(
                "error: {}:2:1: unknown key `insecure_registry`",
                file.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("hint: did you mean `insecure_registries`?"),
            "{stderr}"
        );
    }
    // `config path` still finds it.
    let out = cli(&run, home.path(), &["config", "path"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(out.status), 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        file.display().to_string()
    );
}

/// ux review (a) 1: a line appended to the README's offline recipe lands inside `[mirrors]`; it used to be taken
/// as a mirror (and the run stayed unverified). Now every command refuses the file, says where the line is and
/// that it belongs above the table, before anything is contacted.
#[tokio::test(flavor = "multi_thread")]
async fn a_top_level_key_appended_after_mirrors_is_refused() {
    let run = Run::new();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("thv-sandbox/config.toml");
    for (text, says) in [
        (
            "[mirrors]\n\"docker.io\" = \"127.0.0.1:5055\"\nimage_verification = \"enabled\"\n",
            "`image_verification` is a top-level key: move it above the `[mirrors]` line",
        ),
        (
            "[mirrors]\n\"docker.io\" = \"127.0.0.1:5055\"\nimage_verifcation = \"enabled\"\n",
            "did you mean the top-level key `image_verification`? move it above the `[mirrors]` line",
        ),
    ] {
        write_config(home.path(), text);
        for args in [&["run", "time"][..], &["config", "show"], &["pull", "alpine"]] {
            let out = cli(&run, home.path(), args).output().await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(code(out.status), 2, "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}");
            assert!(
                stderr.starts_with(&format!("error: {}:3:1: `", file.display())),
                "{args:?}: {stderr}"
            );
            assert!(stderr.contains(says), "{args:?}: {stderr}");
            assert!(stderr.contains("hint: "), "{stderr}");
        }
    }
}
