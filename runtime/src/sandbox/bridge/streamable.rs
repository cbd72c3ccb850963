//! stdio ↔ streamable HTTP: the client side of the MCP "Streamable HTTP" transport, driven by a stdio client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client::{self, ClientError, EventStream, HttpClient};
use super::jsonrpc::{self, classify, note, Classified, ClientMessage, Out, INTERNAL_ERROR};
use super::{BridgeError, Connect, HttpUpstream, Limits};

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// The first protocol version with the SEP-2243 routing headers (`Mcp-Method`, `Mcp-Name`).
const STANDARD_HEADERS_VERSION: &str = "2026-07-28";
/// How long the next client message waits for the server to take the previous one (its response head): long
/// enough that messages arrive in order, short enough that a server answering only when done does not stall
/// the client's other messages (cancellations, responses to the server's requests).
const ORDER_WAIT: Duration = Duration::from_millis(500);
/// How often a broken response stream is resumed (`Last-Event-ID`) before the request is given up.
const RESUME_ATTEMPTS: u32 = 3;
/// Error bodies are read to at most this much, for the message to the client.
const ERROR_BODY_MAX: usize = 64 * 1024;

struct Shared {
    client: HttpClient,
    path: String,
    limits: Limits,
    out: Out,
    session: Mutex<Option<HeaderValue>>,
    protocol: Mutex<Option<HeaderValue>>,
}

impl Shared {
    fn request(&self, method: Method) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(&self.path);
        if let Some(s) = lock(&self.session).clone() {
            b = b.header(SESSION, s);
        }
        if let Some(p) = lock(&self.protocol).clone() {
            b = b.header(PROTOCOL, p);
        }
        b
    }

    fn post(&self, body: Vec<u8>, msg: &Value, c: &Classified) -> Request<Full<Bytes>> {
        // A message may carry its protocol version itself (the stateless protocol's `_meta`).
        if let Some(v) = msg
            .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            *lock(&self.protocol) = Some(v);
        }
        let mut b = self
            .request(Method::POST)
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(http::header::CONTENT_TYPE, "application/json");
        let modern = lock(&self.protocol)
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v >= STANDARD_HEADERS_VERSION);
        if modern {
            for (name, value) in routing_headers(msg, c) {
                b = b.header(name, value);
            }
        }
        b.body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    async fn emit(&self, line: Vec<u8>) {
        let _ = self.out.send(line).await;
    }

    async fn fail(&self, ids: &[Value], why: &str) {
        for id in ids {
            self.emit(jsonrpc::error_response(id, INTERNAL_ERROR, why))
                .await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SEP-2243 headers for a request: `Mcp-Method`, and `Mcp-Name` for the methods that name a tool, prompt,
/// resource or task (Base64-wrapped when the value would not survive as a header).
fn routing_headers(msg: &Value, c: &Classified) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let Some(method) = c.method.as_deref() else {
        return out;
    };
    if let Ok(v) = HeaderValue::from_str(method) {
        out.push((MCP_METHOD, v));
    }
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return out,
    };
    if let Some(name) = msg
        .pointer(&format!("/params/{key}"))
        .and_then(Value::as_str)
    {
        let plain = !name.is_empty()
            && name.bytes().all(|b| (0x20..0x7f).contains(&b))
            && !name.starts_with([' ', '\t'])
            && !name.ends_with([' ', '\t'])
            && !name.starts_with("=?base64?");
        let value = if plain {
            name.to_owned()
        } else {
            format!(
                "=?base64?{}?=",
                base64::engine::general_purpose::STANDARD.encode(name)
            )
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.push((MCP_NAME, v));
        }
    }
    out
}

/// Runs the bridge until the client's input ends (see [`super::stdio_to_http`]).
pub(crate) async fn run<R, W>(
    connect: Arc<dyn Connect>,
    upstream: &HttpUpstream,
    limits: Limits,
    input: R,
    output: W,
) -> Result<(), BridgeError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::channel(256);
    let mut writer = tokio::spawn(jsonrpc::write_lines(rx, output));
    let shared = Arc::new(Shared {
        client: upstream.client(connect)?,
        path: upstream.path.clone(),
        limits: limits.clone(),
        out,
        session: Mutex::new(None),
        protocol: Mutex::new(None),
    });
    let mut input = BufReader::new(input);
    let mut inflight = JoinSet::new();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut initialized = false;
    let result = loop {
        let next = tokio::select! {
            next = jsonrpc::read_message(&mut input, limits.max_message) => next,
            w = &mut writer => break super::writer_ended(w),
        };
        let (line, msg) = match next {
            Err(e) => break Err(BridgeError::Input(e)),
            Ok(ClientMessage::Eof) => break Ok(()),
            Ok(ClientMessage::Refused(error)) => {
                shared.emit(error).await;
                continue;
            }
            Ok(ClientMessage::Message(line, msg)) => (line, msg),
        };
        let c = classify(&msg);
        let req = shared.post(line, &msg, &c);
        let mut exchange = Box::pin(post(Arc::clone(&shared), req, c.clone()));
        if c.is_initialize() {
            // Everything after `initialize` needs its session id and protocol version: wait for all of it.
            if exchange.await {
                initialized = true;
            }
            continue;
        }
        tokio::select! {
            _ = &mut exchange => {}
            _ = tokio::time::sleep(ORDER_WAIT) => {
                inflight.spawn(exchange);
            }
        }
        // The GET stream for the server's own messages, once the session is set up.
        if initialized && listener.is_none() {
            listener = Some(tokio::spawn(listen(Arc::clone(&shared))));
        }
        while inflight.try_join_next().is_some() {}
    };

    // The client's input ended (or it went away): let answers in flight reach it, then end the session.
    if result.is_ok() {
        let drain = async { while inflight.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.drain, drain).await.is_err() {
            note(format!(
                "gave up waiting for {} answer(s) after the client's input ended",
                inflight.len()
            ));
        }
    }
    inflight.abort_all();
    if let Some(l) = listener {
        l.abort();
    }
    if lock(&shared.session).is_some() {
        let req = shared
            .request(Method::DELETE)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())));
        match tokio::time::timeout(Duration::from_secs(2), shared.client.send(req)).await {
            Ok(Ok(r))
                if r.status().is_success() || r.status() == StatusCode::METHOD_NOT_ALLOWED => {}
            Ok(Ok(r)) => note(format!(
                "ending the session: the server answered {}",
                r.status()
            )),
            Ok(Err(e)) => note(format!("ending the session: {e}")),
            Err(_) => note("ending the session: the server did not answer"),
        }
    }
    drop(shared);
    if result.is_ok() {
        return super::writer_ended(writer.await);
    }
    writer.abort();
    result
}

/// One client message: POST it, forward what comes back. Returns whether it went through (for `initialize`:
/// whether the session is set up).
async fn post(shared: Arc<Shared>, req: Request<Full<Bytes>>, c: Classified) -> bool {
    let resp = match shared.client.send(req).await {
        Ok(r) => r,
        Err(e) => {
            note(format!("posting a message: {e}"));
            shared.fail(&c.requests, &format!("thv-sandbox: {e}")).await;
            return false;
        }
    };
    let status = resp.status();
    if c.is_initialize() && status.is_success() {
        if let Some(s) = resp.headers().get(&SESSION) {
            *lock(&shared.session) = Some(s.clone());
        }
    }
    if !status.is_success() {
        let session_gone = status == StatusCode::NOT_FOUND && lock(&shared.session).is_some();
        let body = client::read_body(resp.into_body(), ERROR_BODY_MAX)
            .await
            .unwrap_or_default();
        // A JSON-RPC error for one of our requests is the server's answer: pass it on as it is.
        if let Some((v, line)) = jsonrpc::normalise(&body) {
            let answered = classify(&v).responses;
            if !answered.is_empty() && answered.iter().all(|id| c.requests.contains(id)) {
                shared.emit(line).await;
                let rest: Vec<Value> = c
                    .requests
                    .iter()
                    .filter(|id| !answered.contains(id))
                    .cloned()
                    .collect();
                shared.fail(&rest, &format!("HTTP {status}")).await;
                return false;
            }
        }
        let detail = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let why = if session_gone {
            format!("the server ended the session (HTTP {status}); restart the client to start a new one")
        } else {
            format!("the server answered HTTP {status}: {}", detail.trim())
        };
        note(&why);
        shared.fail(&c.requests, &why).await;
        return false;
    }
    if c.requests.is_empty() {
        // A notification or a response: 202 Accepted, nothing to read (drain whatever came anyway).
        let _ = client::read_body(resp.into_body(), ERROR_BODY_MAX).await;
        return true;
    }
    deliver(&shared, resp, &c).await
}

/// Forwards a request's answer: one JSON body, or an event stream (resumed if it breaks).
async fn deliver(shared: &Shared, resp: Response<Incoming>, c: &Classified) -> bool {
    if client::is_json(&resp) {
        return match client::read_body(resp.into_body(), shared.limits.max_message).await {
            Ok(body) => match jsonrpc::normalise(&body) {
                Some((v, line)) => {
                    note_protocol(shared, &v, c);
                    shared.emit(line).await;
                    let answered = classify(&v).responses;
                    let missing: Vec<Value> = c
                        .requests
                        .iter()
                        .filter(|id| !answered.contains(id))
                        .cloned()
                        .collect();
                    shared
                        .fail(
                            &missing,
                            "the server's answer did not include this response",
                        )
                        .await;
                    true
                }
                None => {
                    note("the server answered with a JSON body that is not JSON");
                    shared
                        .fail(&c.requests, "the server's answer was not JSON")
                        .await;
                    false
                }
            },
            Err(e) => {
                note(format!("reading the server's answer: {e}"));
                shared.fail(&c.requests, &format!("thv-sandbox: {e}")).await;
                false
            }
        };
    }
    if !client::is_event_stream(&resp) {
        let why = "the server answered a request without a body (or with an unknown content type)";
        note(why);
        shared.fail(&c.requests, why).await;
        return false;
    }
    let mut pending: Vec<Value> = c.requests.clone();
    let mut stream = EventStream::new(resp.into_body(), shared.limits.max_message);
    let mut attempts = 0;
    let mut retry = Duration::from_secs(1);
    loop {
        let end = forward_events(shared, &mut stream, &mut pending, c, &mut retry).await;
        if pending.is_empty() {
            return true;
        }
        let reason = match end {
            Ok(()) => "the server ended the response stream before the response".to_owned(),
            Err(e) => format!("the response stream broke: {e}"),
        };
        let Some(last) = stream.last_id().map(str::to_owned) else {
            note(&reason);
            shared.fail(&pending, &reason).await;
            return false;
        };
        attempts += 1;
        if attempts > RESUME_ATTEMPTS {
            note(format!("{reason}; resuming failed {RESUME_ATTEMPTS} times"));
            shared.fail(&pending, &reason).await;
            return false;
        }
        tokio::time::sleep(retry.min(Duration::from_secs(5))).await;
        match resume(shared, &last).await {
            Ok(s) => stream = s,
            Err(e) => {
                note(format!("{reason}; resuming it: {e}"));
                shared.fail(&pending, &reason).await;
                return false;
            }
        }
    }
}

/// Sends each event's message to the client; stops at the end of the stream or once every request has its
/// response.
async fn forward_events(
    shared: &Shared,
    stream: &mut EventStream,
    pending: &mut Vec<Value>,
    c: &Classified,
    retry: &mut Duration,
) -> Result<(), ClientError> {
    while let Some(ev) = stream.next().await? {
        if let Some(ms) = ev.retry {
            *retry = Duration::from_millis(ms);
        }
        if ev.event != "message" || ev.data.trim().is_empty() {
            continue;
        }
        let Some((v, line)) = jsonrpc::normalise(ev.data.as_bytes()) else {
            note("dropped an event from the server that is not JSON");
            continue;
        };
        note_protocol(shared, &v, c);
        shared.emit(line).await;
        let answered = classify(&v).responses;
        pending.retain(|id| !answered.contains(id));
        if pending.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

/// Takes the negotiated protocol version from the `initialize` response.
fn note_protocol(shared: &Shared, v: &Value, c: &Classified) {
    if !c.is_initialize() {
        return;
    }
    if let Some(p) = v
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        *lock(&shared.protocol) = Some(p);
    }
}

/// Why a broken answer stream could not be resumed.
#[derive(Debug, thiserror::Error)]
enum ResumeError {
    /// The last event id cannot be a header value.
    #[error("{0}")]
    EventId(#[from] http::header::InvalidHeaderValue),
    /// The request could not be built.
    #[error("{0}")]
    Request(#[from] http::Error),
    /// The exchange failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The server did not answer with an event stream.
    #[error("the server answered {0}")]
    Answer(StatusCode),
}

async fn resume(shared: &Shared, last: &str) -> Result<EventStream, ResumeError> {
    let req = shared
        .request(Method::GET)
        .header(http::header::ACCEPT, "text/event-stream")
        .header(LAST_EVENT_ID, HeaderValue::from_str(last)?)
        .body(Full::new(Bytes::new()))?;
    let resp = shared.client.send(req).await?;
    if !resp.status().is_success() || !client::is_event_stream(&resp) {
        return Err(ResumeError::Answer(resp.status()));
    }
    Ok(EventStream::new(
        resp.into_body(),
        shared.limits.max_message,
    ))
}

/// The GET stream for the server's own requests and notifications; 405 means the server has none. Reconnects
/// (with `Last-Event-ID`) when the server ends it, giving up after a few failures in a row.
async fn listen(shared: Arc<Shared>) {
    let mut last: Option<String> = None;
    let mut failures = 0u32;
    let mut retry = Duration::from_secs(1);
    loop {
        let mut b = shared
            .request(Method::GET)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(id) = last.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
            b = b.header(LAST_EVENT_ID, id);
        }
        let Ok(req) = b.body(Full::new(Bytes::new())) else {
            return;
        };
        let outcome = match shared.client.send(req).await {
            Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => return,
            Ok(resp) if resp.status().is_success() && client::is_event_stream(&resp) => {
                let mut stream = EventStream::new(resp.into_body(), shared.limits.max_message);
                let mut got = false;
                let end = loop {
                    match stream.next().await {
                        Ok(Some(ev)) => {
                            if let Some(ms) = ev.retry {
                                retry = Duration::from_millis(ms);
                            }
                            if ev.event != "message" || ev.data.trim().is_empty() {
                                continue;
                            }
                            got = true;
                            match jsonrpc::normalise(ev.data.as_bytes()) {
                                Some((_, line)) => shared.emit(line).await,
                                None => note("dropped an event from the server that is not JSON"),
                            }
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                };
                last = stream.last_id().map(str::to_owned).or(last);
                if got {
                    failures = 0;
                }
                end
            }
            Ok(resp) => Some(format!("the server answered {}", resp.status())),
            Err(e) => Some(e.to_string()),
        };
        failures += 1;
        if failures > 3 {
            if let Some(e) = outcome {
                note(format!(
                    "the stream for the server's own messages ended: {e}"
                ));
            }
            return;
        }
        tokio::time::sleep(retry.min(Duration::from_secs(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routing_headers_name_the_target() {
        let msg = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fetch"}});
        let h = routing_headers(&msg, &classify(&msg));
        assert_eq!(h[0], (MCP_METHOD, HeaderValue::from_static("tools/call")));
        assert_eq!(h[1], (MCP_NAME, HeaderValue::from_static("fetch")));
        let msg = json!({"id":1,"method":"resources/read","params":{"uri":" ü"}});
        let h = routing_headers(&msg, &classify(&msg));
        assert_eq!(h[1].1, HeaderValue::from_static("=?base64?IMO8?="));
        let msg = json!({"id":1,"method":"tools/list"});
        assert_eq!(routing_headers(&msg, &classify(&msg)).len(), 1);
    }
}
