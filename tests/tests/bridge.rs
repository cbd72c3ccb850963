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
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{json, Value};
use thv_sandbox_e2e::http_server::{serve_sse, serve_streamable};
use thv_sandbox_e2e::{probe_bin, tool_text};
use thv_sandbox_runtime::bridge::{
    serve_http, stdio_to_http, HttpUpstream, Limits, TcpConnect, Transport, Upstream,
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
async fn start_server(transport: Transport, json: bool) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        match transport {
            Transport::StreamableHttp => serve_streamable(listener, false, json).await,
            Transport::Sse => serve_sse(listener, false).await,
        }
    });
    (port, task)
}

/// The bridge between a socketpair (the client's stdio) and the server; the rmcp client on the other end.
async fn bridged(
    transport: Transport,
    port: u16,
) -> (
    Client,
    Arc<Recorder>,
    JoinHandle<Result<(), thv_sandbox_runtime::bridge::BridgeError>>,
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
    // Progress arrived before the result, in order; the log message too.
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
    let (port, server) = start_server(Transport::StreamableHttp, false).await;
    let (client, recorder, bridge) = bridged(Transport::StreamableHttp, port).await;
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
    let (port, server) = start_server(Transport::StreamableHttp, true).await;
    let (client, recorder, bridge) = bridged(Transport::StreamableHttp, port).await;
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
    let (port, server) = start_server(Transport::Sse, false).await;
    let (client, recorder, bridge) = bridged(Transport::Sse, port).await;
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

impl thv_sandbox_runtime::bridge::Connect for OnceThenGone {
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
        let upstream = HttpUpstream::new(Transport::StreamableHttp, port);
        stdio_to_http(
            Transport::StreamableHttp,
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
            Transport::StreamableHttp,
            Arc::new(TcpConnect(([127, 0, 0, 1], port).into())),
            &HttpUpstream::new(Transport::StreamableHttp, port),
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
    for transport in [Transport::StreamableHttp, Transport::Sse] {
        // The probe binds it by number: a free port that no concurrent bind(…:0) can take first.
        let port = thv_sandbox_e2e::port_for_a_server();
        let name = match transport {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
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

/// `serve_http` on an ephemeral loopback port.
async fn exposed(upstream: Upstream) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = serve_http(listener, upstream, Limits::default()).await;
    });
    (port, task)
}

/// rmcp's streamable-HTTP client at `/mcp` on `port`.
async fn http_client(port: u16) -> (Client, Arc<Recorder>) {
    let transport = StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{port}/mcp"));
    let recorder = Arc::new(Recorder::default());
    let client = tokio::time::timeout(WAIT, Arc::clone(&recorder).serve(transport))
        .await
        .expect("initialize within the time limit")
        .expect("initialize over HTTP");
    (client, recorder)
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
    let (port, task) = exposed(upstream).await;
    rebinding_is_refused(port).await;
    let (client, _) = http_client(port).await;
    let echo = call_tool(&client, "echo", json!({"text": "through --port"}))
        .await
        .unwrap();
    assert_eq!(tool_text(&echo), "through --port");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "probe"), "{tools:?}");
    // The one session a stdio server holds cannot be taken over by a second initialize.
    let second = tokio::time::timeout(
        WAIT,
        Arc::new(Recorder::default()).serve(StreamableHttpClientTransport::from_uri(format!(
            "http://127.0.0.1:{port}/mcp"
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
    let (server_port, server) = start_server(Transport::StreamableHttp, false).await;
    let (port, task) = exposed(Upstream::Http {
        transport: Transport::StreamableHttp,
        connect: Arc::new(TcpConnect(([127, 0, 0, 1], server_port).into())),
        upstream: HttpUpstream::new(Transport::StreamableHttp, server_port),
    })
    .await;
    rebinding_is_refused(port).await;
    let (client, recorder) = http_client(port).await;
    conversation(&client, &recorder, true).await;
    client.cancel().await.unwrap();
    task.abort();
    server.abort();
}

#[tokio::test]
async fn serve_http_exposes_a_legacy_sse_server() {
    let (server_port, server) = start_server(Transport::Sse, false).await;
    let (port, task) = exposed(Upstream::Http {
        transport: Transport::Sse,
        connect: Arc::new(TcpConnect(([127, 0, 0, 1], server_port).into())),
        upstream: HttpUpstream::new(Transport::Sse, server_port),
    })
    .await;
    let (client, recorder) = http_client(port).await;
    assert_eq!(
        tool_text(&call_tool(&client, "whoami", Value::Null).await.unwrap()),
        "sse"
    );
    conversation(&client, &recorder, true).await;
    client.cancel().await.unwrap();
    task.abort();
    server.abort();
}
