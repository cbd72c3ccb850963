//! MCP servers over HTTP for the bridge tests and the `http-probe` image: one rmcp server handler
//! ([`HttpProbe`]) served either as streamable HTTP (rmcp's own `StreamableHttpService`, on hyper) or over the
//! legacy HTTP+SSE transport (protocol 2024-11-05). rmcp 3 has no SSE server any more, so [`serve_sse`] is a
//! small faithful one: `GET /sse` opens a session whose first event is `endpoint` (`/messages?sessionId=ID`),
//! every message of the server is a `message` event on that stream, `POST /messages?sessionId=ID` hands the
//! server one client message and answers 202.
//!
//! Tools of [`HttpProbe`]:
//! - `echo {text}`: the text back.
//! - `count {n}`: sends `n` progress notifications (when the call has a progress token) and a log message
//!   before it answers `counted N`: an answer that streams.
//! - `ask_roots`: asks the client for its roots (a request from the server, answered by the client) and
//!   answers their URIs, one a line.
//! - `announce`: answers `ok`, then sends `notifications/tools/list_changed` outside any request (it travels on
//!   the GET stream of streamable HTTP).
//! - `whoami`: the transport this server speaks (`streamable-http` or `sse`).
//!
//! Roots and logging are deprecated in rmcp (SEP-2577, for the 2026-07-28 protocol) but are what the
//! initialize-based protocol versions servers speak today use for server-to-client traffic: allowed here.
#![allow(deprecated)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The server handler: see the module documentation for its tools.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    transport: &'static str,
    /// Written to stdout on every tool call when set (the image's server is noisy on purpose).
    noisy: bool,
}

impl HttpProbe {
    /// A handler that says it speaks `transport`; `noisy` makes every tool call print a line on stdout.
    pub fn new(transport: &'static str, noisy: bool) -> HttpProbe {
        HttpProbe { transport, noisy }
    }
}

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

fn text_result(text: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(text)]).into()
}

impl ServerHandler for HttpProbe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let none = || schema(json!({"type": "object", "properties": {}}));
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "echo",
                "The text back",
                schema(
                    json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
                ),
            ),
            Tool::new(
                "count",
                "Progress notifications, then the answer",
                schema(
                    json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
                ),
            ),
            Tool::new("ask_roots", "Asks the client for its roots", none()),
            Tool::new(
                "announce",
                "Answers, then announces a tool list change",
                none(),
            ),
            Tool::new("whoami", "This server's transport", none()),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.noisy {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "http-probe: tool {} called (this line is noise on the server's stdout)",
                    request.name
                );
            }
        }
        let args = request.arguments.unwrap_or_default();
        match &*request.name {
            "echo" => Ok(text_result(
                args.get("text").and_then(Value::as_str).unwrap_or_default(),
            )),
            "count" => {
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(0).min(1000);
                if let Some(token) = context.meta.get_progress_token() {
                    for i in 1..=n {
                        context
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), i as f64)
                                    .with_total(n as f64),
                            )
                            .await
                            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                    }
                }
                let _ = context
                    .peer
                    .notify_logging_message(LoggingMessageNotificationParam::new(
                        LoggingLevel::Info,
                        json!(format!("counted to {n}")),
                    ))
                    .await;
                Ok(text_result(format!("counted {n}")))
            }
            "ask_roots" => {
                #[allow(deprecated)]
                let roots = context
                    .peer
                    .list_roots()
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let uris: Vec<String> = roots.roots.into_iter().map(|r| r.uri).collect();
                Ok(text_result(uris.join("\n")))
            }
            "announce" => {
                let peer = context.peer.clone();
                tokio::spawn(async move {
                    let _ = peer.notify_tool_list_changed().await;
                });
                Ok(text_result("ok"))
            }
            "whoami" => Ok(text_result(self.transport)),
            other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        }
    }
}

/// Serves [`HttpProbe`] as streamable HTTP at `/mcp` on `listener` until the task is dropped. `json_response`
/// makes rmcp answer plain requests with JSON bodies instead of event streams (rmcp's stateless mode).
pub async fn serve_streamable(listener: TcpListener, noisy: bool, json_response: bool) {
    let mut config = StreamableHttpServerConfig::default();
    if json_response {
        config = config
            .with_legacy_session_mode(false)
            .with_json_response(true);
    }
    let service = Arc::new(StreamableHttpService::new(
        move || Ok(HttpProbe::new("streamable-http", noisy)),
        Arc::new(LocalSessionManager::default()),
        config,
    ));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let service = Arc::clone(&service);
                async move {
                    if req.uri().path() != "/mcp" {
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not here\n")).boxed_unsync())
                                .unwrap_or_default(),
                        );
                    }
                    let resp = service.handle(req).await;
                    Ok(resp.map(|b| b.boxed_unsync()))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Sessions = Arc<Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>>;

/// Serves [`HttpProbe`] over the legacy HTTP+SSE transport (`GET /sse`, `POST /messages?sessionId=ID`) on
/// `listener` until the task is dropped.
pub async fn serve_sse(listener: TcpListener, noisy: bool) {
    let sessions: Sessions = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let sessions = Arc::clone(&sessions);
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("{}-{n}", std::process::id());
                let sessions = Arc::clone(&sessions);
                async move { Ok::<_, Infallible>(sse_request(req, sessions, id, noisy).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync())
        .unwrap_or_default()
}

async fn sse_request(
    req: Request<Incoming>,
    sessions: Sessions,
    id: String,
    noisy: bool,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/sse") => {
            // The rmcp server runs over an in-memory pipe: its input is fed by the POSTs, its output becomes
            // `message` events on this stream.
            let (ours, theirs) = tokio::io::duplex(1 << 16);
            let (server_read, server_write) = tokio::io::split(theirs);
            tokio::spawn(async move {
                if let Ok(running) = HttpProbe::new("sse", noisy)
                    .serve((server_read, server_write))
                    .await
                {
                    let _ = running.waiting().await;
                }
            });
            let (from_server, mut to_server) = tokio::io::split(ours);
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
            tokio::spawn(async move {
                while let Some(mut line) = rx.recv().await {
                    line.push(b'\n');
                    if to_server.write_all(&line).await.is_err() {
                        return;
                    }
                }
            });
            sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), tx);
            let endpoint = format!("event: endpoint\ndata: /messages?sessionId={id}\n\n");
            let first = futures_util::stream::once(async move {
                Ok::<_, Infallible>(Frame::data(Bytes::from(endpoint)))
            });
            let lines = futures_util::stream::unfold(
                (BufReader::new(from_server), sessions, id),
                |(mut reader, sessions, id)| async move {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(n) if n > 0 => {
                            let ev = format!("event: message\ndata: {}\n\n", line.trim_end());
                            Some((Ok(Frame::data(Bytes::from(ev))), (reader, sessions, id)))
                        }
                        _ => {
                            sessions
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id);
                            None
                        }
                    }
                },
            );
            use futures_util::StreamExt as _;
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(first.chain(lines)).boxed_unsync())
                .unwrap_or_default()
        }
        (&Method::POST, "/messages") => {
            let session = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sessionId=")))
                .map(str::to_owned);
            let tx = session.and_then(|s| {
                sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&s)
                    .cloned()
            });
            let Some(tx) = tx else {
                return plain(StatusCode::NOT_FOUND, "unknown session\n");
            };
            let Ok(body) = Limited::new(req.into_body(), 4 << 20).collect().await else {
                return plain(StatusCode::BAD_REQUEST, "bad body\n");
            };
            let body = body.to_bytes();
            if serde_json::from_slice::<Value>(&body).is_err() {
                return plain(StatusCode::BAD_REQUEST, "not JSON\n");
            }
            // One line per message on the server's input: JSON has no raw newlines inside strings.
            let line: Vec<u8> = body
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect();
            if tx.send(line).await.is_err() {
                return plain(StatusCode::GONE, "session ended\n");
            }
            plain(StatusCode::ACCEPTED, "Accepted")
        }
        _ => plain(StatusCode::NOT_FOUND, "not here\n"),
    }
}

/// One raw HTTP/1.1 POST of a `ping` to `/mcp` on `127.0.0.1:port` with the given `Host` (and `Origin`); the
/// status code. For the DNS-rebinding checks of `--port`.
///
/// # Panics
/// When the exchange fails (a test failure).
pub async fn raw_mcp_status(port: u16, host: &str, origin: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.expect("status line");
    std::str::from_utf8(&head[9..12])
        .expect("status")
        .parse()
        .expect("status code")
}
