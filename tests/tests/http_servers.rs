//! End-to-end: registry entries with `transport: streamable-http` and `sse` run by name in a sandbox with only
//! loopback, bridged to the client's stdio by thv-sandbox (no port opened on the host), with a real MCP client.
//! What the server prints on its own stdout never reaches the client.

mod common;

use std::process::Stdio;

use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{http_probe_image_builder, spawn_mcp, tool_text};

#[tokio::test(flavor = "multi_thread")]
async fn http_transport_servers_are_bridged_to_stdio_by_name() {
    use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
    if !thv_sandbox_e2e::require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) {
        return;
    }
    let registry = TestRegistry::start().expect("registry");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let mut servers = serde_json::Map::new();
    for (name, transport) in [("stream", "streamable-http"), ("events", "sse")] {
        let layout = dir.path().join(name);
        let built = http_probe_image_builder(None)
            .expect("builder")
            .cmd(["--transport", transport, "--port", "8080"])
            .write(&layout, "1")
            .expect("image");
        registry
            .push_image(&layout, &built, &format!("tools/{name}"), "1")
            .expect("push");
        servers.insert(
            name.into(),
            json!({"description": format!("http-probe over {transport}"),
                   "image": format!("{}/tools/{name}:1", registry.host()),
                   "transport": transport, "target_port": 8080,
                   "tier": "Community", "status": "Active", "tools": ["whoami"]}),
        );
    }
    let file = dir.path().join("registry.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"servers": servers})).unwrap(),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");

    for (name, transport) in [("stream", "streamable-http"), ("events", "sse")] {
        let run = Run::new();
        let server = spawn_mcp(run.cli(&cache, &["run", "--registry", &file, name]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let who = server.call("whoami", Value::Null).await.expect("whoami");
        assert_eq!(tool_text(&who), transport);
        // The server listens on 8080 in the sandbox's own network namespace: nothing of the run listens on the
        // host (the `--port` case below shows this check finds a host listener when there is one).
        let pid = server.child.id().expect("pid");
        let host_ports = thv_sandbox_e2e::host_listening_ports_of(pid);
        assert!(
            host_ports.is_empty(),
            "{name}: a port opened on the host: {host_ports:?}"
        );
        let echo = server
            .call("echo", json!({"text": "through the sandbox's loopback"}))
            .await
            .expect("echo");
        assert_eq!(tool_text(&echo), "through the sandbox's loopback");
        // A tool whose answer streams (progress and a log message before the result) through the bridge.
        let counted = server.call("count", json!({"n": 3})).await.expect("count");
        assert_eq!(tool_text(&counted), "counted 3");
        let done = server.finish().await.expect("finish");
        // The client closing stdin ends the bridge, and we stop the server: a normal end.
        assert_eq!(code(done.status), 0, "{name}: {}", done.stderr);
        // The server's own stdout went to our stderr, not to the client (which would have choked on it).
        assert!(
            done.stderr.contains("http-probe: tool"),
            "{name}: the server's stdout noise: {}",
            done.stderr
        );
        run.assert_nothing_left(None);
    }
    // The HTTP entry through `--port`: a URL client reaches the server in the sandbox; a forged Origin is refused.
    {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::ServiceExt;
        let run = Run::new();
        let mut cmd = run.cli(
            &cache,
            &[
                "run",
                "--registry",
                &file,
                "--port",
                "127.0.0.1:0",
                "stream",
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let (url, port, _stderr) = port_url(&mut child).await;
        let client =
            ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
                .await
                .expect("initialize");
        let who = thv_sandbox_e2e::call_tool(&client, "whoami", Value::Null)
            .await
            .expect("whoami");
        assert_eq!(tool_text(&who), "streamable-http");
        // The one host port is the one asked for (and the check above would see it).
        assert_eq!(
            thv_sandbox_e2e::host_listening_ports_of(child.id().expect("pid")),
            [port]
        );
        assert_eq!(
            thv_sandbox_e2e::http_server::raw_mcp_status(
                port,
                &format!("127.0.0.1:{port}"),
                Some("http://evil.example")
            )
            .await,
            403
        );
        client.cancel().await.ok();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id().expect("pid") as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        child.wait().await.expect("wait");
        run.assert_nothing_left(None);
    }
    // Exit status: the client closing stdin ends the bridge and the server, as a normal end.
    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "stream"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().await.expect("run");
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing but protocol on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    run.assert_nothing_left(None);
}

/// A registry (kept alive by the caller) holding http-probe images for `entries` (name, transport), and the
/// registry file naming them; `None` when `docker-registry` is missing (a SKIP, or a failure under CI).
fn http_registry(
    entries: &[(&str, &str)],
) -> Option<(
    thv_sandbox_e2e::registry::TestRegistry,
    tempfile::TempDir,
    String,
)> {
    use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
    if !thv_sandbox_e2e::require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) {
        return None;
    }
    let registry = TestRegistry::start().expect("registry");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let mut servers = serde_json::Map::new();
    for (name, transport) in entries {
        let layout = dir.path().join(name);
        let built = http_probe_image_builder(None)
            .expect("builder")
            .cmd(["--transport", transport, "--port", "8080"])
            .write(&layout, "1")
            .expect("image");
        registry
            .push_image(&layout, &built, &format!("tools/{name}"), "1")
            .expect("push");
        servers.insert(
            (*name).into(),
            json!({"description": format!("http-probe over {transport}"),
                   "image": format!("{}/tools/{name}:1", registry.host()),
                   "transport": transport, "target_port": 8080,
                   "tier": "Community", "status": "Active", "tools": ["whoami"]}),
        );
    }
    let file = dir.path().join("registry.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"servers": servers})).unwrap(),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    Some((registry, dir, file))
}

/// A bridged HTTP server stops as soon as the client ends its session, not after the stop timeout. This one
/// installs no signal handler (like most Node.js and Python servers): as the init of its pid namespace it would
/// never see a SIGTERM, and used to run on until the timeout's SIGKILL (exit 137 after 30 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_bridged_http_server_stops_when_its_session_ends() {
    let Some((_registry, dir, file)) = http_registry(&[("stream", "streamable-http")]) else {
        return;
    };
    let cache = dir.path().join("cache");
    let run = Run::new();
    let server = spawn_mcp(run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file,
            "-e",
            "HTTP_PROBE_DEFAULT_SIGNALS=1",
            "--stop-timeout",
            "30",
            "stream",
        ],
    ))
    .await
    .expect("initialize");
    let who = server.call("whoami", Value::Null).await.expect("whoami");
    assert_eq!(tool_text(&who), "streamable-http");
    let closed = std::time::Instant::now();
    let done = server.finish().await.expect("finish");
    let took = closed.elapsed();
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    assert!(
        took < std::time::Duration::from_secs(15),
        "the server was stopped {took:?} after the client closed (stop timeout 30 s): {}",
        done.stderr
    );
    run.assert_nothing_left(None);
}

/// `--port`: a stdio server of an image, and an HTTP entry of the registry, exposed as streamable HTTP on the
/// host's loopback for a URL-based client; a forged Origin and a foreign Host are refused.
#[tokio::test(flavor = "multi_thread")]
async fn port_exposes_stdio_and_http_servers_to_url_clients() {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::ServiceExt;
    use tokio::io::AsyncReadExt;

    let run = Run::new();
    let mut cmd = run.cmd("app", &["--port", "127.0.0.1:0"], &[]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (url, port, _stderr) = port_url(&mut child).await;
    let token = url
        .rsplit_once("/mcp/")
        .map(|(_, t)| t.to_owned())
        .expect("the URL carries the token");
    assert!(token.len() >= 32, "{url}");
    // F2: clients without the token (none, a wrong one, the right one in the query) are refused and take no
    // session: a real MCP client fails to initialize, raw requests get 401.
    for stranger in [
        format!("http://127.0.0.1:{port}/mcp"),
        format!("http://127.0.0.1:{port}/mcp/{}", "0".repeat(token.len())),
        format!("http://127.0.0.1:{port}/mcp?token={token}"),
    ] {
        let refused = ().serve(StreamableHttpClientTransport::from_uri(stranger.clone())).await;
        assert!(refused.is_err(), "{stranger} must not initialize");
    }
    for (target, header) in [
        ("/mcp".to_owned(), String::new()),
        (
            "/mcp".to_owned(),
            format!("Authorization: Bearer {}\r\n", "0".repeat(token.len())),
        ),
        (format!("/mcp?token={token}"), String::new()),
    ] {
        let (status, out) = raw_initialize(port, &target, &header).await;
        assert_eq!(status, 401, "{target} {header}: {out}");
    }
    // Duplicate Origin headers (a local one, then a foreign one), with the token: refused.
    let (status, out) = raw_initialize(
        port,
        &format!("/mcp/{token}"),
        "Origin: http://localhost:1\r\nOrigin: http://evil.example\r\n",
    )
    .await;
    assert_eq!(status, 400, "{out}");
    // F14: 200 idle connections without the token (half of them stuck mid-head) do not keep the owner out.
    let mut idle = Vec::new();
    for i in 0..200 {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(b"POST /mcp HTTP/1.1\r\n").await;
        }
        idle.push(s);
    }
    // The owner, with the printed URL, gets the session, promptly.
    let client = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        ().serve(StreamableHttpClientTransport::from_uri(url.clone())),
    )
    .await
    .expect("the owner is served within 5 s despite the idle connections")
    .expect("initialize over HTTP");
    drop(idle);
    let echo = thv_sandbox_e2e::call_tool(&client, "echo", json!({"text": "over --port"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echo), "over --port");
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(
            port,
            &format!("127.0.0.1:{port}"),
            Some("https://evil.example")
        )
        .await,
        403
    );
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(port, &format!("evil.example:{port}"), None)
            .await,
        421
    );
    client.cancel().await.ok();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().expect("pid") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().await.expect("wait");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    assert!(
        stdout.is_empty(),
        "stdout stays empty with --port: {stdout:?}"
    );
    // Stopped by SIGTERM between sessions: a normal end.
    assert_eq!(code(status), 0, "{status:?}");
    run.assert_nothing_left(None);
}

/// `--port` serves a new MCP session to each client, each in a fresh sandbox (a new server process): a client
/// that closes its session (rmcp sends DELETE), then a second client, then a third that initializes while the
/// second's session is still open (a window reload that never closed it) each get a working session. The one
/// replaced is gone: the second client is told so (404) and, as the specification asks, initializes again, into
/// a fresh sandbox of its own.
#[tokio::test(flavor = "multi_thread")]
async fn port_serves_a_fresh_session_to_each_client() {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::ServiceExt;
    use thv_sandbox_e2e::call_tool;

    let run = Run::new();
    let mut cmd = run.cmd("app", &["--port", "127.0.0.1:0"], &[]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (url, _port, stderr) = port_url(&mut child).await;
    let connect = || async {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            ().serve(StreamableHttpClientTransport::from_uri(url.clone())),
        )
        .await
        .expect("initialize in time")
        .expect("initialize")
    };
    let first = connect().await;
    let echo = call_tool(&first, "echo", json!({"text": "first"}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&echo), "first");
    fresh_sandbox(&first, "first").await;
    first.cancel().await.expect("close");
    let second = connect().await;
    fresh_sandbox(&second, "second").await;
    // Left open: the third client takes over.
    let third = connect().await;
    fresh_sandbox(&third, "third").await;
    third.cancel().await.expect("close");
    // The second client's session is gone: it is told so and gets a fresh one (its mark is not there).
    fresh_sandbox(&second, "second, again").await;
    second.cancel().await.expect("close");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().expect("pid") as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().await.expect("wait");
    let stderr = stderr.await.unwrap_or_default();
    assert_eq!(code(status), 0, "{status:?}: {stderr}");
    for n in 1..=4 {
        assert!(
            stderr.contains(&format!("session {n} ended")),
            "session {n}: {stderr}"
        );
    }
    run.assert_nothing_left(None);
}

/// Checks that `client`'s session is served by a fresh sandbox (its private `/tmp` holds no mark of an earlier
/// session), then marks it. Namespace ids cannot tell: a namespace's inode is reused once the previous one is gone.
async fn fresh_sandbox(client: &thv_sandbox_e2e::McpClient, what: &str) {
    use thv_sandbox_e2e::call_tool;
    let seen = call_tool(client, "read_file", json!({"path": "/tmp/session"}))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        seen.is_error.unwrap_or(false),
        "{what}: the sandbox was used before: {seen:?}"
    );
    let marked = call_tool(
        client,
        "write_file",
        json!({"path": "/tmp/session", "text": what}),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!marked.is_error.unwrap_or(false), "{what}: {marked:?}");
}

/// Waits for `run --port`'s line naming its URL on stderr (`http://127.0.0.1:PORT/mcp/TOKEN`, or with the
/// word TOKEN when the token is in a file); returns the URL, its port, and the task that keeps reading the rest
/// of stderr (held by the caller, so the child never writes into a closed or full pipe).
async fn port_url(
    child: &mut tokio::process::Child,
) -> (String, u16, tokio::task::JoinHandle<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let mut seen = String::new();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .expect("stderr")
            .unwrap_or_else(|| panic!("stderr ended before the URL line: {seen}"));
        if let Some(u) = line
            .split(" at ")
            .nth(1)
            .filter(|u| u.starts_with("http://"))
        {
            break u
                .split([',', ' '])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
        seen.push_str(&line);
        seen.push('\n');
    };
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect(&url);
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    (url, port, rest)
}

/// POSTs `initialize` to `target` on `127.0.0.1:port` with extra `headers` (CRLF-terminated lines); the status
/// and the response text.
async fn raw_initialize(port: u16, target: &str, headers: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw_initialize_on(stream, &format!("127.0.0.1:{port}"), target, headers).await
}

async fn raw_initialize_on<S>(
    mut stream: S,
    host: &str,
    target: &str,
    headers: &str,
) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("an answer in time")
    .expect("read");
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    (status, out)
}

/// `--port-token-file` and `--socket`: the token comes from the user's file (created 0600 when missing, the
/// same on the next run, and not printed), and the unix socket (0600) serves the owner without a token and is
/// gone when the run ends.
#[tokio::test(flavor = "multi_thread")]
async fn port_token_file_and_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("port-token");
    let socket = dir.path().join("sock/mcp.sock");
    for round in 0..2 {
        let run = Run::new();
        let mut cmd = run.cmd(
            "app",
            &[
                "--port",
                "127.0.0.1:0",
                "--port-token-file",
                &token_file.to_string_lossy(),
                "--socket",
                &socket.to_string_lossy(),
            ],
            &[],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let (url, port, stderr) = port_url(&mut child).await;
        let token = std::fs::read_to_string(&token_file)
            .expect("the token file")
            .trim()
            .to_owned();
        assert_eq!(
            std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            url.ends_with("/mcp/TOKEN"),
            "the token is not printed: {url}"
        );
        let (status, out) = raw_initialize(port, "/mcp", "").await;
        assert_eq!(status, 401, "round {round}: {out}");
        if round == 0 {
            // Over the socket, no token: the owner takes the one session.
            assert_eq!(
                std::fs::symlink_metadata(&socket)
                    .expect("the socket")
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .expect("connect to the socket");
            let (status, out) = raw_initialize_on(stream, "localhost", "/mcp", "").await;
            assert_eq!(status, 200, "{out}");
            assert!(out.contains("serverInfo"), "{out}");
        } else {
            // The next run takes the same token from the file: the client's URL still works.
            let (status, out) = raw_initialize(port, &format!("/mcp/{token}"), "").await;
            assert_eq!(status, 200, "{out}");
            assert!(out.contains("serverInfo"), "{out}");
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id().expect("pid") as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        let status = child.wait().await.expect("wait");
        let stderr = stderr.await.unwrap_or_default();
        // Stopped by SIGTERM during a session (its server is stopped with it): a normal end.
        assert_eq!(code(status), 0, "{status:?}: {stderr}");
        assert!(
            !stderr.contains(&token),
            "the token is not printed: {stderr}"
        );
        assert!(
            std::fs::symlink_metadata(&socket).is_err(),
            "the socket is removed on exit ({status:?}): {stderr}"
        );
        run.assert_nothing_left(None);
    }
}
