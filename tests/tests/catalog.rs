//! End-to-end: the server registry — `registry list/search/info` (JSON and the snapshot of the text), and `run NAME`:
//! refusals before anything is pulled (missing environment, HTTP transports), and a server run by name from a test
//! registry file naming an image in a real local registry, with a real MCP client.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{spawn_mcp, tool_json};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn output(mut cmd: tokio::process::Command) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.expect("run thv-sandbox");
    Out {
        code: code(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `../shared/fixtures/NAME` beside the repository (fails under CI when missing, skips elsewhere).
fn fixture(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name);
    thv_sandbox_e2e::require(p.is_file(), &format!("registry fixture {}", p.display())).then_some(p)
}

fn registry(run: &Run, cache: &Path, args: &[&str]) -> tokio::process::Command {
    let mut all = vec!["registry"];
    all.extend_from_slice(args);
    run.cli(cache, &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_list_search_and_info_as_json() {
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();

    let out = output(registry(&run, cache.path(), &["list", "--json"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON array");
    assert_eq!(
        list.len(),
        102,
        "the embedded registry: 79 container + 23 remote servers"
    );
    let row = |name: &str| list.iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(row("time")["image"], "docker.io/mcp/time:latest");
    assert_eq!(row("time")["transport"], "stdio");
    assert_eq!(row("time")["verifiable"], false);
    assert_eq!(row("github")["verifiable"], true);
    assert_eq!(row("atlassian-remote")["remote"], true);

    let out = output(registry(
        &run,
        cache.path(),
        &["search", "--json", "timezone"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let hits: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert!(hits.iter().any(|h| h["name"] == "time"), "{hits:?}");
    assert!(hits.len() < list.len());
    let out = output(registry(
        &run,
        cache.path(),
        &["search", "zzz-no-such-thing"],
    ))
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.is_empty() && out.stderr.contains("matches"),
        "{}",
        out.stderr
    );

    let out = output(registry(&run, cache.path(), &["info", "--json", "github"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let info: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(info["image"], "ghcr.io/github/github-mcp-server:v0.30.3");
    let token = info["env_vars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "GITHUB_PERSONAL_ACCESS_TOKEN")
        .unwrap();
    assert_eq!(
        (token["required"].clone(), token["secret"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        info["permissions"]["network"]["outbound"]["allow_port"],
        json!([443])
    );
    assert_eq!(
        info["provenance"]["cert_issuer"],
        "https://token.actions.githubusercontent.com"
    );
    assert_eq!(info["verifiable"], true);

    let out = output(registry(&run, cache.path(), &["info", "tiime"])).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "error: no MCP server named `tiime` in the MCP server registry (did you mean time?)"
        ),
        "{}",
        out.stderr
    );
}

/// `registry info` text, compared with `tests/snapshots/registry-info.txt`. Regenerate with
/// `THV_SANDBOX_UPDATE_SNAPSHOTS=1 cargo test -p thv-sandbox-e2e --test catalog`.
#[tokio::test(flavor = "multi_thread")]
async fn registry_info_text_matches_the_snapshot() {
    let Some(upstream) = fixture("toolhive-registry-upstream.example.json") else {
        return;
    };
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let upstream = upstream.to_string_lossy().into_owned();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("embedded", vec!["info", "time"]),
        ("embedded", vec!["info", "github"]),
        ("embedded", vec!["info", "fetch"]),
        ("embedded", vec!["info", "atlassian-remote"]),
        (
            "toolhive-registry-upstream.example.json",
            vec!["--registry", &upstream, "info", "fetch"],
        ),
        (
            "toolhive-registry-upstream.example.json",
            vec!["--registry", &upstream, "info", "adb-mysql-mcp-server"],
        ),
    ];
    let mut got = String::new();
    for (label, args) in &cases {
        let out = output(registry(&run, cache.path(), args)).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        got.push_str(&format!(
            "### {label}: thv-sandbox registry {}\n",
            args.last().map(|n| format!("info {n}")).unwrap_or_default()
        ));
        got.push_str(&out.stdout);
        got.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots/registry-info.txt");
    if std::env::var("THV_SANDBOX_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with THV_SANDBOX_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "registry info output differs from {} at line {}:\n  got:  {:?}\n  want: {:?}\n(regenerate with \
             THV_SANDBOX_UPDATE_SNAPSHOTS=1 if the change is intended)",
            path.display(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

/// A legacy-format registry file with the given servers.
fn write_registry(dir: &Path, file: &str, servers: Value) -> PathBuf {
    let path = dir.join(file);
    let doc =
        json!({"version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": servers});
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_environment_is_one_error_before_anything_is_pulled() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A registry that refuses connections for the whole test (bound, never listening).
    let (_dead_registry, dead_port) = thv_sandbox_e2e::refusing_port();
    let image = format!("127.0.0.1:{dead_port}/tools/probe:1.0");
    let file = write_registry(
        dir.path(),
        "needs-env.json",
        json!({"needs-env": {
            "description": "A server that needs configuration",
            "image": image,
            "transport": "stdio",
            "tools": ["probe"],
            "env_vars": [
                {"name": "API_URL", "description": "Where the API lives", "required": true},
                {"name": "API_TOKEN", "description": "Token for the API", "required": true, "secret": true},
                {"name": "LEVEL", "description": "Log level", "required": false, "default": "info"}
            ]
        }}),
    );
    let file = file.to_string_lossy().into_owned();
    let out = output(run.cli(&cache, &["run", "--registry", &file, "needs-env"])).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[0],
        "error: `needs-env` needs environment variables that were not given:"
    );
    assert!(lines[1].starts_with("  API_URL") && lines[1].ends_with("Where the API lives"));
    assert!(
        lines[2].starts_with("  API_TOKEN") && lines[2].ends_with("Token for the API (secret)")
    );
    assert!(
        lines[3].starts_with("hint: give each with `-e API_URL`"),
        "{}",
        out.stderr
    );
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(!cache.join("oci").exists(), "something was pulled");

    // With the environment given, a run does go to the (dead) registry: the check above came before any pull.
    let port = image
        .split(':')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let plain = write_registry(
        dir.path(),
        "needs-url.json",
        json!({"needs-url": {"image": image, "env_vars": [
            {"name": "API_URL", "description": "Where the API lives", "required": true}
        ]}}),
    );
    let plain = plain.to_string_lossy().into_owned();
    let out = output(run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &plain,
            "-e",
            "API_URL=http://x",
            "needs-url",
        ],
    ))
    .await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the OCI registry 127.0.0.1:{port}"
        )),
        "{}",
        out.stderr
    );

    // A secret's value, taken from thv-sandbox's environment (`-e NAME`), shows nowhere in what we print, also
    // when the run then fails (here: on the registry that is not running).
    let mut cmd = run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file,
            "-e",
            "API_URL=http://x",
            "-e",
            "API_TOKEN",
            "needs-env",
        ],
    );
    cmd.env("API_TOKEN", "tok-7c1e9f-secret");
    let out = output(cmd).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(out.stderr.starts_with("error:"), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the OCI registry 127.0.0.1:{port}"
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("tok-7c1e9f-secret"), "{}", out.stderr);
    assert!(!out.stdout.contains("tok-7c1e9f-secret"));
}

/// `inspect NAME` is how a user finds out what a server needs: without the variables it prints the profile, lists
/// the required ones as missing (with their descriptions) and exits 0, where `run` refuses; nothing is pulled.
#[tokio::test(flavor = "multi_thread")]
async fn inspect_lists_required_variables_as_missing_instead_of_failing() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (_dead_registry, dead_port) = thv_sandbox_e2e::refusing_port();
    let file = write_registry(
        dir.path(),
        "needs-env.json",
        json!({"needs-env": {
            "description": "A server that needs configuration",
            "image": format!("127.0.0.1:{dead_port}/tools/probe:1.0"),
            "transport": "stdio",
            "tools": ["probe"],
            "env_vars": [
                {"name": "API_URL", "description": "Where the API lives", "required": true},
                {"name": "API_TOKEN", "description": "Token for the API", "required": true, "secret": true},
                {"name": "LEVEL", "description": "Log level", "required": false, "default": "info"}
            ]
        }}),
    );
    let file = file.to_string_lossy().into_owned();
    let out = output(run.cli(&cache, &["inspect", "--registry", &file, "needs-env"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("env:      API_TOKEN (secret, missing), API_URL (missing), LEVEL\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("missing:  required"), "{}", out.stdout);
    let described = out
        .stdout
        .lines()
        .any(|l| l.starts_with("  API_TOKEN") && l.ends_with("Token for the API"));
    assert!(described, "{}", out.stdout);
    // The rest of the profile is there too.
    assert!(out.stdout.contains("network:  none"), "{}", out.stdout);
    assert!(out.stdout.contains("seccomp:  default"), "{}", out.stdout);

    let out = output(run.cli(
        &cache,
        &["inspect", "--json", "--registry", &file, "needs-env"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let env = v["env"].as_array().unwrap();
    let by_name = |n: &str| env.iter().find(|e| e["name"] == n).cloned().unwrap();
    assert_eq!(by_name("API_URL")["missing"], true, "{v}");
    assert_eq!(by_name("API_TOKEN")["missing"], true, "{v}");
    assert_eq!(by_name("API_TOKEN")["secret"], true, "{v}");
    assert_eq!(by_name("LEVEL")["missing"], false, "{v}");

    // Given through the environment (as an MCP client's `env` block gives it), it is not missing; its value shows
    // nowhere.
    let mut cmd = run.cli(&cache, &["inspect", "--registry", &file, "needs-env"]);
    cmd.env("API_URL", "http://x")
        .env("API_TOKEN", "tok-55ad-secret");
    let out = output(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("missing"), "{}", out.stdout);
    assert!(out.stdout.contains("API_TOKEN (secret)"), "{}", out.stdout);
    assert!(!out.stdout.contains("tok-55ad-secret"));
    // `run` still refuses without them; nothing was pulled by any of this.
    let out = output(run.cli(&cache, &["run", "--registry", &file, "needs-env"])).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    // (`inspect` looks the image up in the cache, which may create the empty store; no blob is in it.)
    let blobs = std::fs::read_dir(cache.join("oci/blobs/sha256")).map_or(0, |d| d.count());
    assert_eq!(blobs, 0, "something was pulled");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_and_egress_entries_reach_the_registry_and_remote_servers_are_refused() {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A registry that refuses connections for the whole test (bound, never listening).
    let (_dead_registry, dead_port) = thv_sandbox_e2e::refusing_port();
    let image = format!("127.0.0.1:{dead_port}/tools/probe:1.0");
    let file = write_registry(
        dir.path(),
        "refused.json",
        json!({
            "events": {"description": "An SSE server", "image": image, "transport": "sse", "target_port": 8080},
            "egress": {"description": "Wants the network", "image": image, "transport": "stdio",
                "permissions": {"network": {"outbound": {"allow_host": [".example.com"], "allow_port": [443]}}}}
        }),
    );
    let file = file.to_string_lossy().into_owned();
    // An SSE entry is bridged now (tests/tests/http_servers.rs): here it goes on to the (dead) registry.
    let out = output(run.cli(&cache, &["run", "--registry", &file, "events"])).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: cannot reach the OCI registry"),
        "{}",
        out.stderr
    );
    // Network permissions are served by the egress proxy now: the run goes on to the (dead) registry.
    let out = output(run.cli(&cache, &["run", "--registry", &file, "egress"])).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("error: cannot reach the OCI registry"),
        "{}",
        out.stderr
    );

    // The embedded registry's remote servers are URLs.
    let out = output(run.cli(&cache, &["run", "atlassian-remote"])).await;
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("a URL to connect to, not a container"),
        "{}",
        out.stderr
    );
}

/// A test registry (upstream format) naming the probe image in a real registry; run by its short name with a
/// real MCP client: the entry's environment (default applied) reaches the server, and nothing unnamed from
/// thv-sandbox's own environment does.
#[tokio::test(flavor = "multi_thread")]
async fn run_by_name_from_a_registry_file() {
    let Some((_registry, _layout, _built, image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let cache = dir.path().join("cache");
    let doc = json!({
        "version": "1.0.0",
        "meta": {"last_updated": "2026-01-01T00:00:00Z"},
        "data": {"servers": [{
            "name": "io.github.thv-sandbox-tests/probe",
            "description": "The sandbox probe",
            "packages": [{
                "registryType": "oci",
                "identifier": image,
                "transport": {"type": "stdio"},
                "environmentVariables": [
                    {"name": "GREETING", "description": "What to say", "isRequired": true},
                    {"name": "LEVEL", "description": "Log level", "default": "info"}
                ]
            }],
        }]}
    });
    let mut doc = doc;
    let mut ext = serde_json::Map::new();
    ext.insert(
        image.clone(),
        json!({"status": "active", "tools": ["probe"], "permissions": {"network": {"outbound": {}}}}),
    );
    doc["data"]["servers"][0]["_meta"] =
        json!({"io.modelcontextprotocol.registry/publisher-provided": {"io.github.stacklok": ext}});
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();

    let mut cmd = run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file.to_string_lossy(),
            "-e",
            "GREETING=hello",
            "probe",
        ],
    );
    cmd.env("LEAKY_HOST_VAR", "must-not-pass")
        .stderr(Stdio::inherit());
    let server = spawn_mcp(cmd).await.expect("initialize");
    let environ = tool_json(
        &server
            .call("read_file", json!({"path": "/proc/self/environ"}))
            .await
            .expect("read_file"),
    );
    let environ = environ["content"].as_str().unwrap().to_owned();
    let vars: Vec<&str> = environ.split('\0').collect();
    assert!(vars.contains(&"GREETING=hello"), "{vars:?}");
    assert!(vars.contains(&"LEVEL=info"), "{vars:?}");
    assert!(!environ.contains("LEAKY_HOST_VAR"), "{vars:?}");
    let p = tool_json(&server.call("probe", json!({})).await.expect("probe"));
    assert_eq!(p["credentials"]["uid"], 1000);
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0);
    run.assert_nothing_left(None);
}

/// ux review (a) 8: MCP clients start servers through no shell, so `~` reaches thv-sandbox as written. Every path
/// flag takes it as the home directory, the same rule as `-v` and the configuration file.
#[tokio::test(flavor = "multi_thread")]
async fn every_path_flag_expands_the_home_directory() {
    let run = Run::new();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (_dead_registry, dead_port) = thv_sandbox_e2e::refusing_port();
    write_registry(
        h,
        "r.json",
        json!({"tilde": {
            "description": "A server found through ~/r.json",
            "image": format!("127.0.0.1:{dead_port}/tools/probe:1.0"),
            "transport": "stdio",
            "env_vars": [{"name": "API_URL", "description": "Where", "required": true}]
        }}),
    );
    std::fs::write(
        h.join("p.json"),
        r#"{"network": {"outbound": {"allow_host": ["tilde.example"], "allow_port": [443]}}}"#,
    )
    .unwrap();
    std::fs::write(h.join("e.env"), "API_URL=https://tilde.example/\n").unwrap();
    std::fs::write(h.join("c.toml"), "cache_dir = \"~/from-config\"\n").unwrap();
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(thv_sandbox_e2e::thv_sandbox_bin());
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", h)
            .env("XDG_RUNTIME_DIR", run.xdg.path())
            .env("THV_SANDBOX_TUF_REFRESH", "0")
            .args(args)
            .kill_on_drop(true);
        c
    };

    let out = output(cli(&[
        "inspect",
        "--profile",
        "--json",
        "--config",
        "~/c.toml",
        "--registry",
        "~/r.json",
        "--permission-profile",
        "~/p.json",
        "--env-file",
        "~/e.env",
        "tilde",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let profile: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(profile["server"], "tilde", "{profile}");
    assert_eq!(
        profile["egress"]["allow_host"],
        json!(["tilde.example"]),
        "{profile}"
    );
    let env = profile["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "API_URL"),
        "the variable came from ~/e.env: {profile}"
    );

    // The configuration file named with `~`, and `~` in it and in `--cache-dir`.
    let out = output(cli(&["config", "show", "--config", "~/c.toml"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "cache_dir = \"{}\"",
            h.join("from-config").display()
        )),
        "{}",
        out.stdout
    );
    let out = output(cli(&[
        "config",
        "show",
        "--cache-dir",
        "~/flagged",
        "--ca-cert",
        "~/ca.pem",
    ]))
    .await;
    assert!(
        out.stdout
            .contains(&format!("cache_dir = \"{}\"", h.join("flagged").display()))
            && out
                .stdout
                .contains(&format!("\"{}\"", h.join("ca.pem").display())),
        "{}",
        out.stdout
    );
    let out = output(cli(&[
        "registry",
        "list",
        "--registry",
        "~/r.json",
        "--json",
    ]))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"tilde\""), "{}", out.stdout);

    // A missing file is named as expanded, so the user sees where it was looked for.
    let out = output(cli(&[
        "inspect",
        "--profile",
        "--permission-profile",
        "~/nope.json",
        "alpine",
    ]))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&h.join("nope.json").display().to_string()),
        "{}",
        out.stderr
    );
}

/// ux review (a) 13: errors name the MCP server registry or the OCI registry, never "the registry"; a name that is
/// no MCP server, tried as an image the OCI registry does not have, says both.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_is_no_server_and_no_image_says_both() {
    let Some((registry, _layout, _built, _image)) = common::registry_with_probe() else {
        return;
    };
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let mirror = format!("docker.io={}", registry.host());
    let out = output(run.cli(
        cache.path(),
        &["run", "--registry-mirror", &mirror, "time-server"],
    ))
    .await;
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .starts_with("error: not found in the OCI registry: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "hint: no MCP server named `time-server` is in the MCP server registry, so it was tried as an image \
             reference, docker.io/library/time-server:latest, which its OCI registry does not have"
        ),
        "{}",
        out.stderr
    );
    // A reference that names its OCI registry was never meant as a server's name: no such hint.
    let name = format!("{}/library/time-server:1", registry.host());
    let out = output(run.cli(cache.path(), &["run", &name])).await;
    assert!(
        out.stderr
            .starts_with("error: not found in the OCI registry: "),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("MCP server"), "{}", out.stderr);
}

/// ux review (a) 17: `registry list` (and `search`) can leave out the remote servers, which cannot be run.
#[tokio::test(flavor = "multi_thread")]
async fn registry_list_filters_by_kind() {
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let rows = |out: &Out| -> Vec<Value> { serde_json::from_str(&out.stdout).expect("JSON array") };
    let out = output(registry(
        &run,
        cache.path(),
        &["list", "--json", "--kind", "container"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let containers = rows(&out);
    assert_eq!(containers.len(), 79);
    assert!(containers.iter().all(|r| r["remote"] == false));
    let out = output(registry(
        &run,
        cache.path(),
        &["list", "--json", "--kind", "remote"],
    ))
    .await;
    let remotes = rows(&out);
    assert_eq!(remotes.len(), 23);
    assert!(remotes.iter().all(|r| r["remote"] == true));
    // The text table too.
    let out = output(registry(
        &run,
        cache.path(),
        &["list", "--kind", "container"],
    ))
    .await;
    assert!(!out.stdout.contains("remote ("), "{}", out.stdout);
    assert_eq!(
        out.stdout.lines().count(),
        80,
        "a header and one row per server"
    );
    let out = output(registry(
        &run,
        cache.path(),
        &["search", "github", "--kind", "remote", "--json"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(rows(&out).iter().all(|r| r["remote"] == true));
}
