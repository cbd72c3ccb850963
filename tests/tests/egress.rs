//! End-to-end: a server whose registry entry allows some egress reaches exactly that, through the proxy that
//! thv-sandbox serves from the host side into the sandbox's own network namespace — and nothing else.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;

use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{spawn_mcp, tool_json};

/// A line-echo server on the host's loopback: answers `echo:<line>` per connection.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() {
                    let _ = writeln!(w, "echo:{}", line.trim_end());
                }
            });
        }
    });
    port
}

async fn call(server: &thv_sandbox_e2e::McpProcess, tool: &str, args: Value) -> Value {
    let r = server.call(tool, args).await.expect(tool);
    tool_json(&r)
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_allows_exactly_what_the_entry_lists() {
    let Some((_registry, _layout, _built, image)) = common::registry_with_probe() else {
        return;
    };
    let allowed = echo_server();
    let other = echo_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = json!({"servers": {
        "egress-probe": {
            "description": "The probe with a narrow allowlist", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"],
            "permissions": {"network": {"outbound": {"allow_host": ["127.0.0.1", "localhost"], "allow_port": [allowed]}}}
        },
        "ports-only": {
            "description": "Any public host on one port", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"],
            "permissions": {"network": {"outbound": {"allow_port": [allowed]}}}
        }
    }});
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");

    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "egress-probe"]);
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");

    // Allowed: by address and by the allowed name, over HTTP CONNECT and SOCKS5 (raw TCP).
    for (protocol, host) in [
        ("http", "127.0.0.1"),
        ("socks5", "127.0.0.1"),
        ("http", "localhost"),
    ] {
        let r = call(
            &server,
            "via_proxy",
            json!({"protocol": protocol, "host": host, "port": allowed, "send": "hi"}),
        )
        .await;
        assert_eq!(r["reply"], "echo:hi", "{protocol} {host}: {r}");
    }
    // Refused: a port off the list, a name off the list (never resolved), with a reason the client sees.
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "127.0.0.1", "port": other, "send": "x"}),
    )
    .await;
    assert_eq!(r["http_status"], 403, "{r}");
    assert!(
        r["body"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("127.0.0.1:{other}")),
        "{r}"
    );
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "socks5", "host": "127.0.0.1", "port": other, "send": "x"}),
    )
    .await;
    assert_eq!(r["socks_reply"], 2, "not allowed by ruleset: {r}");
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "not-listed.invalid", "port": allowed, "send": "x"}),
    )
    .await;
    assert_eq!(r["http_status"], 403, "{r}");
    // Without the proxy nothing is reachable, and the sandbox has no resolver of its own.
    let r = server
        .call(
            "connect",
            json!({"address": format!("127.0.0.1:{allowed}"), "timeout_ms": 2000}),
        )
        .await
        .expect("connect");
    assert!(
        r.is_error.unwrap_or(false),
        "direct connection must fail: {r:?}"
    );
    let r = server
        .call("resolve", json!({"name": "example.com"}))
        .await
        .expect("resolve");
    assert!(r.is_error.unwrap_or(false), "no DNS inside: {r:?}");
    // The environment advertises the proxy.
    let env = call(&server, "getenv", json!({"name": "HTTPS_PROXY"})).await;
    assert_eq!(env["value"], "http://127.0.0.1:3128");
    let p = call(&server, "probe", json!({})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("refused 127.0.0.1:{other}")),
        "a refusal is logged: {}",
        done.stderr
    );
    run.assert_nothing_left(p["namespaces"]["user"].as_str());

    // `allow_port` alone means public hosts: the host's loopback is not one of them.
    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "ports-only"]);
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "localhost", "port": allowed, "send": "x"}),
    )
    .await;
    assert_eq!(
        r["http_status"], 403,
        "loopback through a ports-only rule: {r}"
    );
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(None);
}
