//! End-to-end: a real MCP client (rmcp) talks to the probe MCP server through `thv-sandbox run oci:…`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::{json, Value};
use thv_sandbox_e2e::{call_tool, mcp_client_over_command, probe_image, spawn_mcp, thv_sandbox_bin, tool_json};
use tokio::process::Command;

/// One probe image (and one cache) per test binary: building it is the slow part.
struct Fixture {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    cache: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("thv-e2e-").tempdir().expect("tempdir");
        let layout = dir.path().join("probe");
        probe_image(&layout, "app", Some("app")).expect("probe image");
        probe_image(&layout, "root", None).expect("probe image (root)");
        let cache = dir.path().join("cache");
        Fixture { _dir: dir, layout, cache }
    })
}

fn sandbox_cmd(tag: &str, extra: &[&str]) -> Command {
    let f = fixture();
    let mut cmd = Command::new(thv_sandbox_bin());
    cmd.arg("run").arg("--cache-dir").arg(&f.cache);
    cmd.args(extra);
    cmd.arg(format!("oci:{}:{tag}", f.layout.display()));
    cmd.stderr(Stdio::inherit());
    cmd
}

async fn probe(tag: &str) -> Value {
    let client = mcp_client_over_command(sandbox_cmd(tag, &[])).await.expect("mcp client");
    let report = tool_json(&call_tool(&client, "probe", json!({})).await.expect("probe"));
    client.cancel().await.ok();
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_pipes_initializes_lists_and_calls() {
    let client = mcp_client_over_command(sandbox_cmd("app", &[])).await.expect("initialize through the sandbox");
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().map(|s| s.name.as_str()), Some("sandbox-probe"));
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    let out = call_tool(&client, "echo", json!({"text": "hello through the sandbox"})).await.expect("echo");
    assert_eq!(thv_sandbox_e2e::tool_text(&out), "hello through the sandbox");
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn dump_probe() {
    let p = probe("app").await;
    eprintln!("{}", serde_json::to_string_pretty(&p).unwrap());
    let _ = Path::new("/");
    let _ = spawn_mcp;
}
