//! The transport bridges against real MCP parts: rmcp's streamable-HTTP server (sessions and event streams, and
//! its stateless JSON mode), a legacy HTTP+SSE server built on rmcp (tests/src/http_server.rs), rmcp's client
//! over a socketpair standing in for stdio, rmcp's streamable-HTTP client against `serve_http`, and the
//! `sandbox-probe` stdio server as a child process. All on loopback.

#![allow(deprecated)] // rmcp marks roots (the server-to-client request used here) deprecated for 2026-07-28.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientRequest, ListRootsResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, Request, Root, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{json, Value};
use thv_sandbox_e2e::http_server::{serve_sse, serve_streamable};
use thv_sandbox_e2e::{probe_bin, tool_text};
use thv_sandbox_runtime::sandbox::bridge::{
    serve_http, stdio_to_http, HttpTransport, HttpUpstream, Launch, Limits, Listening,
    SessionPipes, TcpConnect, Token, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

/// A client that records what the server sends on its own and answers `roots/list`.
#[derive(Debug, Default)]
struct Recorder {
    progress: Mutex<Vec<f64>>,
    logs: Mutex<Vec<Value>>,
    list_changed: Notify,
}

impl ClientHandler for Recorder {
    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        Ok(ListRootsResult::new(vec![Root::new("file:///bridge-test")]))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params.progress);
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.logs.lock().unwrap().push(params.data);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }
}

type Client = RunningService<RoleClient, Arc<Recorder>>;

async fn call_tool(
    client: &Client,
    tool: &str,
    arguments: Value,
) -> Result<rmcp::model::CallToolResult, rmcp::ServiceError> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = arguments {
        params = params.with_arguments(map);
    }
    client.call_tool(params).await
}

/// An HTTP MCP server on an ephemeral loopback port.
async fn start_server(transport: HttpTransport, json: bool) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        match transport {
            HttpTransport::StreamableHttp => serve_streamable(listener, false, json).await,
            HttpTransport::Sse => serve_sse(listener, false).await,
        }
    });
    (port, task)
}

/// The bridge between a socketpair (the client's stdio) and the server; the rmcp client on the other end.
async fn bridged(
    transport: HttpTransport,
    port: u16,
) -> (
    Client,
    Arc<Recorder>,
    JoinHandle<Result<(), thv_sandbox_runtime::sandbox::bridge::BridgeError>>,
) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let upstream = HttpUpstream::new(transport, port);
    let bridge = tokio::spawn(async move {
        let (r, w) = theirs.into_split();
        let connect = Arc::new(TcpConnect(([127, 0, 0, 1], port).into()));
        stdio_to_http(transport, connect, &upstream, Limits::default(), r, w).await
    });
    let recorder = Arc::new(Recorder::default());
    let (r, w) = ours.into_split();
    let client = tokio::time::timeout(WAIT, Arc::clone(&recorder).serve((r, w)))
        .await
        .expect("initialize within the time limit")
        .expect("initialize through the bridge");
    (client, recorder, bridge)
}

/// Calls `count` with a progress token: the answer streams (progress, a log message, then the result).
async fn counted(client: &Client, n: u64) -> String {
    let params = CallToolRequestParams::new("count")
        .with_arguments(json!({"n": n}).as_object().cloned().unwrap_or_default());
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    match handle.await_response().await.unwrap() {
        ServerResult::CallToolResult(r) => tool_text(&r).to_owned(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The whole conversation every bridged server must carry.
async fn conversation(client: &Client, recorder: &Recorder, server_requests: bool) {
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    assert!(
        names.contains(&"count") && names.contains(&"echo"),
        "{names:?}"
    );

    let echo = call_tool(client, "echo", json!({"text": "héllo\nworld"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "héllo\nworld");

    assert_eq!(counted(client, 5).await, "counted 5");
    // Progress and the log message reach the client, progress in order. rmcp hands each notification to the
    // client's handler on a task of its own, so the recorder may see the last of them just after the result (seen
    // once in CI's unprivileged run): wait for them, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while (recorder.progress.lock().unwrap().len() < 5 || recorder.logs.lock().unwrap().is_empty())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *recorder.progress.lock().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(*recorder.logs.lock().unwrap(), vec![json!("counted to 5")]);

    if server_requests {
        // A request from the server in the middle of a tool call, answered by the client through the bridge.
        let roots = call_tool(client, "ask_roots", Value::Null).await.unwrap();
        assert_eq!(tool_text(&roots), "file:///bridge-test");

        // A notification outside any request.
        let ok = call_tool(client, "announce", Value::Null).await.unwrap();
        assert_eq!(tool_text(&ok), "ok");
        tokio::time::timeout(WAIT, recorder.list_changed.notified())
            .await
            .expect("the list_changed notification reaches the client");
    }
}

#[tokio::test]
async fn stdio_to_streamable_http_carries_a_whole_session() {
    let (port, server) = start_server(HttpTransport::StreamableHttp, false).await;
    let (client, recorder, bridge) = bridged(HttpTransport::StreamableHttp, port).await;
    assert_eq!(
        tool_text(&call_tool(&client, "whoami", Value::Null).await.unwrap()),
        "streamable-http"
    );
    conversation(&client, &recorder, true).await;
    // The client closes its end: the bridge ends the session and returns.
    client.cancel().await.unwrap();
    tokio::time::timeout(WAIT, bridge)
        .await
        .expect("the bridge returns after the client's EOF")
        .unwrap()
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn stdio_to_streamable_http_json_answers() {
    // rmcp's stateless mode: JSON bodies, no session id, no GET stream.
    let (port, server) = start_server(HttpTransport::StreamableHttp, true).await;
    let (client, recorder, bridge) = bridged(HttpTransport::StreamableHttp, port).await;
    conversation(&client, &recorder, false).await;
    client.cancel().await.unwrap();
    tokio::time::timeout(WAIT, bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn stdio_to_legacy_sse_carries_a_whole_session() {
    let (port, server) = start_server(HttpTransport::Sse, false).await;
    let (client, recorder, bridge) = bridged(HttpTransport::Sse, port).await;
    assert_eq!(
        tool_text(&call_tool(&client, "whoami", Value::Null).await.unwrap()),
        "sse"
    );
    conversation(&client, &recorder, true).await;
    client.cancel().await.unwrap();
    tokio::time::timeout(WAIT, bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.abort();
}

/// Connects once (the bridge's readiness check), then never again: a server that died after starting.
#[derive(Default)]
struct OnceThenGone {
    used: std::sync::atomic::AtomicBool,
}

impl thv_sandbox_runtime::sandbox::bridge::Connect for OnceThenGone {
    fn connect(&self) -> std::io::Result<std::net::TcpStream> {
        if self.used.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        // Anything accepting will do for the readiness check: a listener of our own.
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let s = std::net::TcpStream::connect(l.local_addr()?)?;
        Ok(s)
    }
}

/// Raw line-level checks of the bridge's own answers: garbage in, a server that went away.
#[tokio::test]
async fn bridge_answers_garbage_and_unreachable_servers() {
    // Refuses connections for the whole test; no other test can take it meanwhile.
    let (_held, port) = thv_sandbox_e2e::refusing_port();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let bridge = tokio::spawn(async move {
        let (r, w) = theirs.into_split();
        let connect = Arc::new(OnceThenGone::default());
        let upstream = HttpUpstream::new(HttpTransport::StreamableHttp, port);
        stdio_to_http(
            HttpTransport::StreamableHttp,
            connect,
            &upstream,
            Limits::default(),
            r,
            w,
        )
        .await
    });
    ours.write_all(b"this is not json\n{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"initialize\",\"params\":{}}\n")
        .await
        .unwrap();
    ours.shutdown().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, ours.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["error"]["code"], -32700);
    assert_eq!(lines[0]["id"], Value::Null);
    assert_eq!(lines[1]["id"], 42);
    assert!(
        lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{out}"
    );
    tokio::time::timeout(WAIT, bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_server_that_never_listens_is_a_clear_error() {
    // A port that is bound but not listening: connections are refused, and no other test can take it meanwhile
    // (a port merely closed again could be reused by another test's server).
    let held = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&held),
        &nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .unwrap();
    let port = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(
        std::os::fd::AsRawFd::as_raw_fd(&held),
    )
    .unwrap()
    .port();
    let (_ours, theirs) = UnixStream::pair().unwrap();
    let (r, w) = theirs.into_split();
    let limits = Limits {
        startup: Duration::from_millis(300),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        WAIT,
        stdio_to_http(
            HttpTransport::StreamableHttp,
            Arc::new(TcpConnect(([127, 0, 0, 1], port).into())),
            &HttpUpstream::new(HttpTransport::StreamableHttp, port),
            limits,
            r,
            w,
        ),
    )
    .await
    .expect("the bridge gives up within its startup limit")
    .unwrap_err()
    .to_string();
    drop(held);
    assert!(
        err.contains("did not accept connections within 0.3s"),
        "{err}"
    );
    assert!(started.elapsed() < WAIT);
}

/// The `http-probe` binary (what the test images run), both transports: the bridge waits for it to listen,
/// carries the session, and what the probe prints on its own stdout stays there.
#[tokio::test]
async fn the_http_probe_binary_is_bridged() {
    for transport in [HttpTransport::StreamableHttp, HttpTransport::Sse] {
        // The probe binds it by number: a free port that no concurrent bind(…:0) can take first.
        let port = thv_sandbox_e2e::port_for_a_server();
        let name = match transport {
            HttpTransport::StreamableHttp => "streamable-http",
            HttpTransport::Sse => "sse",
        };
        let mut child = tokio::process::Command::new(thv_sandbox_e2e::http_probe_bin())
            .args(["--transport", name, "--port", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // No waiting here: the bridge's own readiness check covers the probe's start.
        let (client, recorder, bridge) = bridged(transport, port).await;
        assert_eq!(
            tool_text(&call_tool(&client, "whoami", Value::Null).await.unwrap()),
            name
        );
        conversation(&client, &recorder, true).await;
        client.cancel().await.unwrap();
        tokio::time::timeout(WAIT, bridge)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        child.start_kill().unwrap();
        let mut noise = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut noise)
            .await
            .unwrap();
        assert!(noise.contains("tool count called"), "{noise}");
        let _ = child.wait().await;
    }
}

/// `serve_http` on an ephemeral loopback port; its port and token.
async fn exposed(upstream: Upstream) -> (u16, String, JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = Token::generate().unwrap();
    let secret = token.as_str().to_owned();
    let listening = Listening {
        tcp: Some(listener),
        unix: None,
        socket_file: None,
        token,
    };
    let task = tokio::spawn(async move {
        let _ = serve_http(listening, upstream, Limits::default()).await;
    });
    (port, secret, task)
}

/// rmcp's streamable-HTTP client at `url`.
async fn http_client(url: String) -> (Client, Arc<Recorder>) {
    let transport = StreamableHttpClientTransport::from_uri(url);
    let recorder = Arc::new(Recorder::default());
    let client = tokio::time::timeout(WAIT, Arc::clone(&recorder).serve(transport))
        .await
        .expect("initialize within the time limit")
        .expect("initialize over HTTP");
    (client, recorder)
}

/// The URL `run --port` prints: the token as the endpoint's last path segment.
fn url_of(port: u16, token: &str) -> String {
    format!("http://127.0.0.1:{port}/mcp/{token}")
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// One raw HTTP/1.1 exchange (`Connection: close`) on `stream`: POST `body` to `target` with `headers`; the status
/// and the whole response text.
async fn raw_post<S>(mut stream: S, target: &str, headers: &[&str], body: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("an answer within the time limit")
        .expect("read");
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    (status, out)
}

/// `raw_post` over a fresh loopback connection to `port`, with `Host: 127.0.0.1:PORT` first.
async fn raw_tcp(port: u16, target: &str, headers: &[&str], body: &str) -> (u16, String) {
    let host = format!("Host: 127.0.0.1:{port}");
    let mut all = vec![host.as_str()];
    all.extend_from_slice(headers);
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    raw_post(s, target, &all, body).await
}

/// A stdio probe server, as an upstream.
fn probe_upstream() -> (tokio::process::Child, Upstream) {
    let mut child = tokio::process::Command::new(probe_bin())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let upstream = Upstream::Stdio {
        reader: Box::new(child.stdout.take().unwrap()),
        writer: Box::new(child.stdin.take().unwrap()),
    };
    (child, upstream)
}

/// F2: a client without the token — none, a wrong one, or the right one in a place the bridge does not read —
/// gets 401 and does not take the stdio server's one session: the owner, with the token (in the URL, or as a
/// bearer token), initializes afterwards and calls tools.
#[tokio::test]
async fn serve_http_requires_the_token_and_keeps_the_session_for_its_holder() {
    let (_child, upstream) = probe_upstream();
    let (port, token, task) = exposed(upstream).await;
    let wrong = "0".repeat(token.len());
    let bearer = format!("Authorization: Bearer {token}");
    for (target, header) in [
        ("/mcp".to_owned(), None),
        (
            "/mcp".to_owned(),
            Some(format!("Authorization: Bearer {wrong}")),
        ),
        (
            "/mcp".to_owned(),
            Some(format!("Authorization: Basic {token}")),
        ),
        ("/mcp".to_owned(), Some(format!("Authorization: {token}"))),
        ("/mcp".to_owned(), Some(format!("X-Token: {token}"))),
        ("/mcp".to_owned(), Some(format!("Mcp-Session-Id: {token}"))),
        (format!("/mcp?token={token}"), None),
        (format!("/mcp/{wrong}"), None),
        (format!("/mcp/{}", &token[..token.len() - 1]), None),
        (format!("/mcp/{token}x"), None),
        (format!("/mcp/{token}/"), None),
        (format!("/{token}"), None),
        (format!("/mcp/{wrong}"), Some(bearer.clone())),
        (format!("/MCP/{token}"), None),
    ] {
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        let (status, out) = raw_tcp(port, &target, &headers, INITIALIZE).await;
        let shown = format!("{target} {header:?}").replace(&token, "TOKEN");
        assert_eq!(status, 401, "{shown}: {out}");
        assert!(
            !out.to_ascii_lowercase().contains("mcp-session-id"),
            "{shown}: {out}"
        );
        assert!(
            out.contains(r#""error""#),
            "{shown}: a JSON-RPC error: {out}"
        );
        assert!(!out.contains(&token), "{shown}: the token is not echoed");
    }
    // The owner: the printed URL.
    let (client, _) = http_client(url_of(port, &token)).await;
    let echo = call_tool(&client, "echo", json!({"text": "the owner's"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "the owner's");
    // Every request needs the token, not just the first: the session id alone is not enough.
    let (status, _) = raw_tcp(
        port,
        "/mcp",
        &["Mcp-Session-Id: anything"],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(status, 401);
    client.cancel().await.unwrap();
    task.abort();

    // The bearer form, against a fresh server (its one session is free).
    let (_child, upstream) = probe_upstream();
    let (port, token, task) = exposed(upstream).await;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{port}/mcp"))
            .auth_header(token),
    );
    let client = tokio::time::timeout(WAIT, ().serve(transport))
        .await
        .unwrap()
        .expect("initialize with a bearer token");
    let echo = thv_sandbox_e2e::call_tool(&client, "echo", json!({"text": "bearer"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "bearer");
    client.cancel().await.unwrap();
    task.abort();
}

/// The bearer token is ours: it is not passed on to an HTTP server behind the bridge (whose own
/// `Authorization`, sent with the token in the URL, is).
#[tokio::test]
async fn serve_http_does_not_forward_its_token() {
    // A server that answers with the Authorization header it got.
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream_listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = upstream_listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let got = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .unwrap_or_else(|| "none".into());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!("auth={got}"))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let (port, token, task) = exposed(Upstream::Http {
        transport: HttpTransport::StreamableHttp,
        connect: Arc::new(TcpConnect(([127, 0, 0, 1], upstream_port).into())),
        upstream: HttpUpstream::new(HttpTransport::StreamableHttp, upstream_port),
    })
    .await;
    let bearer = format!("Authorization: Bearer {token}");
    let (status, out) = raw_tcp(port, "/mcp", &[&bearer], "{}").await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("auth=none"), "{out}");
    let (status, out) = raw_tcp(
        port,
        &format!("/mcp/{token}"),
        &["Authorization: Bearer the-servers-own"],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("auth=Bearer the-servers-own"), "{out}");
    let (status, _) = raw_tcp(
        port,
        "/mcp",
        &["Authorization: Bearer the-servers-own"],
        "{}",
    )
    .await;
    assert_eq!(status, 401);
    task.abort();
    server.abort();
}

/// F2/F14: a request with two `Origin` headers (a local one first, then a foreign one) is refused, as are two
/// `Host` or two `Authorization` headers — with the token, so it is the duplicate that is refused.
#[tokio::test]
async fn serve_http_refuses_duplicate_origin_host_and_authorization() {
    let (_child, upstream) = probe_upstream();
    let (port, token, task) = exposed(upstream).await;
    let target = format!("/mcp/{token}");
    let bearer = format!("Authorization: Bearer {token}");
    let host = format!("Host: localhost:{port}");
    for headers in [
        vec![
            "Origin: http://localhost:3000",
            "Origin: http://evil.example",
        ],
        vec![
            "Origin: http://localhost:3000",
            "Origin: http://localhost:3000",
        ],
        vec![host.as_str()],
        vec![bearer.as_str(), "Authorization: Bearer other"],
    ] {
        let (status, out) = raw_tcp(port, &target, &headers, INITIALIZE).await;
        assert_eq!(status, 400, "{headers:?}: {out}");
        assert!(out.contains("more than one"), "{out}");
    }
    // One local Origin is fine (and the session is still free).
    let (status, out) = raw_tcp(
        port,
        &target,
        &["Origin: http://localhost:3000"],
        INITIALIZE,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("serverInfo"), "{out}");
    task.abort();
}

/// A raw MCP exchange over the unix socket as the owner: initialize, initialized, a tool call.
async fn owner_over_socket(path: &std::path::Path) {
    let connect = || async { UnixStream::connect(path).await.expect("connect") };
    let (status, out) = raw_post(connect().await, "/mcp", &["Host: localhost"], INITIALIZE).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("serverInfo"), "{out}");
    let session = out
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .expect("a session id");
    let session = format!("Mcp-Session-Id: {session}");
    let (status, _) = raw_post(
        connect().await,
        "/mcp",
        &["Host: localhost", &session],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let (status, out) = raw_post(
        connect().await,
        "/mcp",
        &["Host: localhost", &session],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"over the socket"}}}"#,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("over the socket"), "{out}");
}

/// F2: the unix-socket listener serves the owner without a token; the socket file is 0600 and goes with its
/// guard. As root, a peer whose effective uid is another user's is refused (its path access kept as root's with
/// `setfsuid`, so it is `SO_PEERCRED` that refuses it, not the file mode).
#[tokio::test(flavor = "multi_thread")]
async fn serve_http_on_a_unix_socket_serves_only_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/mcp.sock");
    let (listener, file) =
        thv_sandbox_runtime::sandbox::bridge::access::bind_socket(&path).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (_child, upstream) = probe_upstream();
    let listening = Listening {
        tcp: None,
        unix: Some(listener),
        socket_file: None,
        token: Token::generate().unwrap(),
    };
    let task = tokio::spawn(async move {
        let _ = serve_http(listening, upstream, Limits::default()).await;
    });
    owner_over_socket(&path).await;

    if nix::unistd::geteuid().is_root() {
        let answer = as_other_uid_over_socket(&path, 65534).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer:?}");
        assert!(answer.contains("uid 65534"), "{answer:?}");
    } else {
        eprintln!("NOTE: not root: the refusal of another uid's peer is not exercised here");
    }
    task.abort();
    drop(file);
    assert!(!path.exists(), "the socket file is removed");
}

/// In a forked child: effective uid `uid` (so `SO_PEERCRED` names it), file-system uid kept at 0 (so the socket
/// file's mode does not stop it first); POSTs `initialize` and returns what came back.
async fn as_other_uid_over_socket(path: &std::path::Path, uid: u32) -> String {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INITIALIZE}",
            INITIALIZE.len()
        );
        let mut buf = vec![0u8; 4096];
        // SAFETY: the child only makes system calls on memory prepared before the fork, then _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                use std::io::{Read, Write};
                let code = (|| {
                    // SAFETY: plain system calls.
                    unsafe {
                        if libc::setresuid(u32::MAX, uid, u32::MAX) != 0 {
                            return 2;
                        }
                        libc::setfsuid(0);
                    }
                    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
                        return 3;
                    };
                    // A refusal may come before the request is written: read the answer either way.
                    let _ = s.write_all(req.as_bytes());
                    let mut n = 0;
                    while n < buf.len() {
                        match s.read(&mut buf[n..]) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                    }
                    let mut theirs = &theirs;
                    if theirs.write_all(&buf[..n]).is_err() {
                        return 5;
                    }
                    0
                })();
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                let mut got = String::new();
                std::io::Read::read_to_string(&mut ours, &mut got).unwrap();
                got
            }
        }
    })
    .await
    .unwrap()
}

/// F14: hundreds of connections without the token — idle, or stuck half-way through a request head — do not
/// keep the owner out: a client with the token initializes and calls a tool promptly, and the idle
/// connections are closed soon after.
#[tokio::test(flavor = "multi_thread")]
async fn serve_http_serves_the_owner_through_a_flood_of_idle_connections() {
    let (_child, upstream) = probe_upstream();
    let (port, token, task) = exposed(upstream).await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 0 {
            s.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let started = std::time::Instant::now();
    let owner = tokio::time::timeout(Duration::from_secs(5), async {
        let (client, _) = http_client(url_of(port, &token)).await;
        let echo = call_tool(&client, "echo", json!({"text": "still served"}))
            .await
            .unwrap();
        (client, tool_text(&echo).to_owned())
    })
    .await;
    let (client, echoed) = owner.unwrap_or_else(|_| {
        panic!(
            "the owner was not served within 5 s of 200 idle connections ({:?})",
            started.elapsed()
        )
    });
    assert_eq!(echoed, "still served");
    // The idle connections are closed by the bridge (evicted, or after the short deadline for
    // unauthenticated ones), well before the 30 s head timeout.
    let last = idle.last_mut().unwrap();
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(15), last.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection without the token is closed: {closed:?}"
    );
    // And the owner's session still works afterwards.
    let again = call_tool(&client, "echo", json!({"text": "after"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&again), "after");
    client.cancel().await.unwrap();
    task.abort();
}

async fn rebinding_is_refused(port: u16) {
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(
            port,
            &format!("localhost:{port}"),
            Some("http://evil.example")
        )
        .await,
        403
    );
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(
            port,
            &format!("127.0.0.1:{port}"),
            Some("null")
        )
        .await,
        403
    );
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(port, &format!("evil.example:{port}"), None)
            .await,
        421
    );
    assert_eq!(
        thv_sandbox_e2e::http_server::raw_mcp_status(port, "localhost:1", None).await,
        421
    );
    // A local origin passes the checks (and then fails on the missing session: 400, not 403/421).
    let local = thv_sandbox_e2e::http_server::raw_mcp_status(
        port,
        &format!("localhost:{port}"),
        Some("http://localhost:3000"),
    )
    .await;
    assert!(local != 403 && local != 421, "{local}");
}

#[tokio::test]
async fn serve_http_exposes_a_stdio_server() {
    let (_child, upstream) = probe_upstream();
    let (port, token, task) = exposed(upstream).await;
    rebinding_is_refused(port).await;
    let (client, _) = http_client(url_of(port, &token)).await;
    let echo = call_tool(&client, "echo", json!({"text": "through --port"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "through --port");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "probe"), "{tools:?}");
    // The one session a stdio server holds cannot be taken over by a second initialize.
    let second = tokio::time::timeout(
        WAIT,
        Arc::new(Recorder::default()).serve(StreamableHttpClientTransport::from_uri(url_of(
            port, &token,
        ))),
    )
    .await
    .unwrap();
    assert!(second.is_err(), "a second session must be refused");
    client.cancel().await.unwrap();
    task.abort();
}

#[tokio::test]
async fn serve_http_exposes_a_streamable_http_server() {
    let (server_port, server) = start_server(HttpTransport::StreamableHttp, false).await;
    let (port, token, task) = exposed(Upstream::Http {
        transport: HttpTransport::StreamableHttp,
        connect: Arc::new(TcpConnect(([127, 0, 0, 1], server_port).into())),
        upstream: HttpUpstream::new(HttpTransport::StreamableHttp, server_port),
    })
    .await;
    rebinding_is_refused(port).await;
    let (client, recorder) = http_client(url_of(port, &token)).await;
    conversation(&client, &recorder, true).await;
    client.cancel().await.unwrap();
    task.abort();
    server.abort();
}

#[tokio::test]
async fn serve_http_exposes_a_legacy_sse_server() {
    let (server_port, server) = start_server(HttpTransport::Sse, false).await;
    let (port, token, task) = exposed(Upstream::Http {
        transport: HttpTransport::Sse,
        connect: Arc::new(TcpConnect(([127, 0, 0, 1], server_port).into())),
        upstream: HttpUpstream::new(HttpTransport::Sse, server_port),
    })
    .await;
    let (client, recorder) = http_client(url_of(port, &token)).await;
    assert_eq!(
        tool_text(&call_tool(&client, "whoami", Value::Null).await.unwrap()),
        "sse"
    );
    conversation(&client, &recorder, true).await;
    client.cancel().await.unwrap();
    task.abort();
    server.abort();
}

/// Starts a `sandbox-probe` per session and keeps them, to see which ones are still running.
#[derive(Default)]
struct ProbeLauncher {
    children: Mutex<Vec<std::process::Child>>,
}

impl Launch for ProbeLauncher {
    fn launch(&self) -> Result<SessionPipes, String> {
        let mut child = std::process::Command::new(probe_bin())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let pipes = SessionPipes {
            to_server: child.stdin.take().unwrap().into(),
            from_server: child.stdout.take().unwrap().into(),
            end: None,
        };
        self.children.lock().unwrap().push(child);
        Ok(pipes)
    }
}

impl ProbeLauncher {
    /// How many servers were started, and how many of them still run after a moment.
    fn started_and_running(&self) -> (usize, usize) {
        std::thread::sleep(Duration::from_millis(300));
        let mut children = self.children.lock().unwrap();
        let running = children
            .iter_mut()
            .map(|c| c.try_wait().unwrap().is_none())
            .filter(|&running| running)
            .count();
        (children.len(), running)
    }
}

impl Drop for ProbeLauncher {
    fn drop(&mut self) {
        for c in self.children.get_mut().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server per session: each `initialize` starts a fresh stdio server; `DELETE` ends the session, and the
/// server's stdin with it (the probe exits on end of file); an `initialize` while a session is open replaces it,
/// and the replaced client, told its session is gone (404), initializes again.
#[tokio::test]
async fn serve_http_gives_each_session_a_fresh_stdio_server() {
    let launcher = Arc::new(ProbeLauncher::default());
    let (port, token, task) = exposed(Upstream::PerSession(launcher.clone())).await;
    let (first, _) = http_client(url_of(port, &token)).await;
    let echo = call_tool(&first, "echo", json!({"text": "one"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "one");
    first.cancel().await.unwrap();
    assert_eq!(
        launcher.started_and_running(),
        (1, 0),
        "DELETE ends the server"
    );
    let (second, _) = http_client(url_of(port, &token)).await;
    call_tool(&second, "echo", json!({"text": "two"}))
        .await
        .unwrap();
    assert_eq!(launcher.started_and_running(), (2, 1));
    // A request naming no session, or an ended one, reaches no server.
    let (status, _) = raw_tcp(
        port,
        &format!("/mcp/{token}"),
        &[],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (third, _) = http_client(url_of(port, &token)).await;
    call_tool(&third, "echo", json!({"text": "three"}))
        .await
        .unwrap();
    assert_eq!(
        launcher.started_and_running(),
        (3, 1),
        "the second session was replaced and its server ended"
    );
    // The second client's session is gone: it is told so and starts a new one.
    let echo = call_tool(&second, "echo", json!({"text": "again"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "again");
    assert_eq!(launcher.started_and_running(), (4, 1));
    second.cancel().await.unwrap();
    third.cancel().await.ok();
    assert_eq!(launcher.started_and_running(), (4, 0));
    task.abort();
}
