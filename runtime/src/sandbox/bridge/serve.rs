//! `--port`/`--socket`: a server of any transport exposed as streamable HTTP at one path on the host, with
//! `Host` and `Origin` validated against DNS rebinding and every request authenticated (see [`super::access`]):
//! on TCP by the token (`/mcp/TOKEN` or `Authorization: Bearer TOKEN`), on the unix socket by the peer's uid.
//! A request without the right token gets 401 and reaches nothing (no session, no upstream). A request with
//! more than one `Host`, `Origin` or `Authorization` header gets 400.
//!
//! Connections are unauthenticated until a request on them carries the token; those are bounded in number (a
//! new one evicts the oldest) and in time ([`UNAUTHENTICATED_TIMEOUT`]), and authenticated ones have their own
//! slots, so clients without the token cannot starve the owner by holding connections open.
//!
//! - An HTTP upstream (streamable HTTP) is reverse-proxied: method, MCP headers and body go through, the answer
//!   (JSON or an event stream) streams back as it comes.
//! - A stdio upstream (and a legacy SSE upstream, bridged to stdio first) is served by a hub: a POSTed request
//!   gets an event stream that carries the server's messages for it and ends with its response; notifications
//!   and responses get 202; the server's own requests and notifications go to the GET stream, else to the
//!   newest open request stream, else wait (bounded) for a GET stream. One stdio server holds one MCP session
//!   for its life: `initialize` creates it (`Mcp-Session-Id`). Given one server ([`Upstream::Stdio`]), that is
//!   the only session and DELETE is refused with 405, as the specification allows; given a launcher
//!   ([`Upstream::PerSession`], and for a legacy SSE upstream, a stream per session), each `initialize` starts a
//!   fresh server, one session at a time (see [`Sessions`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::access::{self, Listening, Token};
use super::client::HttpClient;
use super::jsonrpc::{self, classify, id_key, note, Line, INTERNAL_ERROR, PARSE_ERROR};
use super::{sse, BridgeError, Connect, HttpTransport, HttpUpstream, Launch, Limits, Upstream};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");
/// Connections with the token (or on the unix socket) served at once; more get 503.
const MAX_AUTHENTICATED: usize = 64;
/// Connections not yet authenticated kept at once; a new one evicts the oldest.
const MAX_UNAUTHENTICATED: usize = 128;
/// How long a connection may stay without a request that carries the token.
const UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(5);
/// The JSON-RPC error code of a refused client (in the implementation-defined server-error range).
const UNAUTHORIZED: i64 = -32001;
/// Server messages kept for a GET stream that is not open yet.
const BACKLOG_MAX: usize = 1024;
/// Request headers passed to an HTTP upstream (besides `Mcp-Param-*`).
const FORWARDED_REQUEST: &[&str] = &[
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "authorization",
];
/// Response headers passed back from an HTTP upstream.
const FORWARDED_RESPONSE: &[&str] = &[
    "content-type",
    "mcp-session-id",
    "allow",
    "www-authenticate",
    "retry-after",
    "cache-control",
];

/// Which `Host` and `Origin` values a request may carry.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    port: u16,
    /// The listener's own address when it is not loopback (an explicitly given HOST).
    bound: Option<IpAddr>,
}

impl Guard {
    pub fn new(local: SocketAddr) -> Guard {
        Guard {
            port: local.port(),
            bound: (!local.ip().is_loopback()).then_some(local.ip()),
        }
    }

    /// For the unix socket: no `Host` rule; `Origin`, when present, must be on a loopback name.
    pub fn unix() -> Guard {
        Guard {
            port: 0,
            bound: None,
        }
    }

    /// `Host` must name this listener: `localhost`, `127.0.0.1` or `[::1]` with our port — or, when bound
    /// explicitly elsewhere, that address (any IP literal when bound to the unspecified address). A name other
    /// than `localhost` is what a DNS-rebinding page would send.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), (StatusCode, String)> {
        let Some(host) = host else {
            return Err((StatusCode::BAD_REQUEST, "no Host header".into()));
        };
        let refuse = || {
            Err((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not this server (use localhost:{})",
                    self.port
                ),
            ))
        };
        let Some((name, port)) = split_authority(host) else {
            return refuse();
        };
        if port.unwrap_or(80) != self.port {
            return refuse();
        }
        if is_loopback_name(&name) {
            return Ok(());
        }
        match (
            self.bound,
            name.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>(),
        ) {
            (Some(bound), Ok(ip)) if bound == ip || bound.is_unspecified() => Ok(()),
            _ => refuse(),
        }
    }

    /// `Origin`, when present, must be an http(s) origin on a loopback name (or the explicitly bound address).
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), (StatusCode, String)> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let refuse = || {
            Err((
                StatusCode::FORBIDDEN,
                format!("Origin {origin:?} is not allowed"),
            ))
        };
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return refuse();
        };
        if rest.contains(['/', '?', '#', '@']) {
            return refuse();
        }
        let Some((name, _)) = split_authority(rest) else {
            return refuse();
        };
        if is_loopback_name(&name) {
            return Ok(());
        }
        match (
            self.bound,
            name.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>(),
        ) {
            (Some(bound), Ok(ip)) if bound == ip && !ip.is_unspecified() => Ok(()),
            _ => refuse(),
        }
    }
}

/// `host[:port]` → (lowercased host, port); `None` when malformed.
fn split_authority(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() || s.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (format!("[{inside}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.parse().ok()?)),
            None => (s.to_owned(), None),
        }
    };
    Some((host.to_ascii_lowercase(), port))
}

fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(jsonrpc::line_of(v))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, msg: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}}),
    )
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// An event stream of the messages arriving on `rx`, ending when every sender is gone.
fn event_stream(
    rx: mpsc::Receiver<Vec<u8>>,
    headers: &[(HeaderName, HeaderValue)],
) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let frame: Result<Frame<Bytes>, std::io::Error> =
            Ok(Frame::data(Bytes::from(sse::encode("message", &line))));
        Some((frame, rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    r
}

/// Reads a request body of at most `max` bytes; `Err` is the response to give.
#[allow(clippy::result_large_err)] // the error is the response to give; it is returned at once
async fn body_of(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a message may be at most {max} bytes"),
            ))
        }
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("reading the body: {e}"),
        )),
    }
}

enum Backend {
    Proxy { client: HttpClient, path: String },
    Hub(Arc<Hub>),
    Sessions(Sessions),
}

/// Resolves when the upstream is gone.
type Done = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct Ctx {
    /// `Host`/`Origin` rules of the TCP listener, if there is one.
    guard: Option<Guard>,
    token: Token,
    path: String,
    limits: Limits,
    backend: Backend,
    pool: Pool,
    refusals: Quiet,
}

/// Serves the listeners until the upstream ends (a stdio server's output closes, a legacy SSE stream ends); for
/// a streamable-HTTP upstream, until the future is dropped.
pub(crate) async fn serve(
    listening: Listening,
    upstream: Upstream,
    limits: Limits,
) -> Result<(), BridgeError> {
    // Removed when this function returns (the server is gone).
    let _socket_file = listening.socket_file;
    let tcp = match listening.tcp {
        Some(l) => {
            l.set_nonblocking(true).map_err(BridgeError::Listen)?;
            Some(TcpListener::from_std(l).map_err(BridgeError::Listen)?)
        }
        None => None,
    };
    let unix = match listening.unix {
        Some(l) => {
            l.set_nonblocking(true).map_err(BridgeError::Listen)?;
            Some(UnixListener::from_std(l).map_err(BridgeError::Listen)?)
        }
        None => None,
    };
    let guard = match &tcp {
        Some(l) => Some(Guard::new(l.local_addr().map_err(BridgeError::Listen)?)),
        None => None,
    };
    let (backend, mut done): (Backend, Done) = match upstream {
        Upstream::Http {
            transport: HttpTransport::StreamableHttp,
            connect,
            upstream,
        } => {
            super::until_accepting(&connect, &limits).await?;
            (
                Backend::Proxy {
                    client: upstream.client(connect)?,
                    path: upstream.path,
                },
                Box::pin(std::future::pending()),
            )
        }
        Upstream::Http {
            transport: HttpTransport::Sse,
            connect,
            upstream,
        } => {
            super::until_accepting(&connect, &limits).await?;
            // Each session is its own SSE stream to the server, bridged to stdio and served like a stdio server's.
            (
                Backend::Sessions(Sessions::new(
                    Source::Sse { connect, upstream },
                    limits.clone(),
                )),
                Box::pin(std::future::pending()),
            )
        }
        Upstream::PerSession(launch) => (
            Backend::Sessions(Sessions::new(Source::Launch(launch), limits.clone())),
            Box::pin(std::future::pending()),
        ),
        Upstream::Stdio { reader, writer } => {
            let (hub, done) = Hub::start(reader, writer, limits.clone(), None);
            (
                Backend::Hub(hub),
                Box::pin(async move {
                    let _ = done.await;
                }),
            )
        }
    };
    let ctx = Arc::new(Ctx {
        guard,
        token: listening.token,
        path: "/mcp".into(),
        limits,
        backend,
        pool: Pool::default(),
        refusals: Quiet::default(),
    });
    loop {
        tokio::select! {
            accepted = accept_tcp(tcp.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    // Answers go out as several writes (head, then body frames): with Nagle's algorithm the second
                    // waits for the client's delayed ACK, ~40 ms per request (bench/port_load.py).
                    let _ = stream.set_nodelay(true);
                    let conn = ctx.pool.admit();
                    start_connection(&ctx, stream, conn);
                }
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    note(format!("accepting a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            accepted = accept_unix(unix.as_ref()) => match accepted {
                Ok(stream) => start_unix_connection(&ctx, stream),
                Err(e) => {
                    note(format!("accepting a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut done => return Ok(()),
        }
        // Let the new connection read the head its client has most likely sent already: an authenticated
        // connection leaves the pool of unauthenticated ones before a flood of new connections can evict it.
        tokio::task::yield_now().await;
    }
}

async fn accept_tcp(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// A unix-socket peer: the owner's uid (or root) gets an authenticated connection; anyone else is told no.
fn start_unix_connection(ctx: &Arc<Ctx>, stream: tokio::net::UnixStream) {
    let uid = stream.peer_cred().map(|c| c.uid());
    let refusal = match uid {
        Ok(uid) if access::peer_allowed(uid) => match ctx.pool.admit_authenticated() {
            Some(conn) => {
                start_connection(ctx, stream, conn);
                return;
            }
            None => ("503 Service Unavailable", "too many connections".to_owned()),
        },
        Ok(uid) => (
            "403 Forbidden",
            format!(
                "uid {uid} may not use this socket (only uid {})",
                nix::unistd::geteuid()
            ),
        ),
        Err(e) => ("403 Forbidden", format!("the peer's credentials: {e}")),
    };
    if ctx.refusals.allow() {
        note(format!("refused a connection on the socket: {}", refusal.1));
    }
    tokio::spawn(async move {
        let mut stream = stream;
        let body = jsonrpc::line_of(
            &json!({"jsonrpc": "2.0", "id": null, "error": {"code": UNAUTHORIZED, "message": refusal.1}}),
        );
        let resp = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            refusal.0,
            body.len()
        );
        // Answered at once, then what the client sends is read and dropped for a moment, so that its write of
        // the request does not fail before it can read the answer.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(resp.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                if stream.read(&mut sink).await? == 0 {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Serves one connection until it ends, is evicted (unauthenticated, when newer ones need the room), or stays
/// unauthenticated past [`UNAUTHENTICATED_TIMEOUT`].
fn start_connection<IO>(ctx: &Arc<Ctx>, io: IO, conn: Arc<Conn>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let svc = {
            let ctx = Arc::clone(&ctx);
            let conn = Arc::clone(&conn);
            service_fn(move |req| {
                let ctx = Arc::clone(&ctx);
                let conn = Arc::clone(&conn);
                async move { Ok::<_, Infallible>(handle(&ctx, &conn, req).await) }
            })
        };
        let serving = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(io), svc);
        let unauthenticated_too_long = async {
            tokio::time::sleep(UNAUTHENTICATED_TIMEOUT).await;
            if conn.authenticated() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = serving => {}
            _ = conn.evict.notified() => {}
            _ = unauthenticated_too_long => {}
        }
        ctx.pool.forget(&conn);
    });
}

/// A connection, for the accounting of [`Pool`].
struct Conn {
    id: u64,
    /// A unix-socket connection (its peer's uid was checked; no `Host` check, no token needed).
    unix: bool,
    /// The slot among authenticated connections, once it has one.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Closes the connection (an unauthenticated one, to make room).
    evict: Notify,
}

impl Conn {
    fn authenticated(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// Connections are unauthenticated until a request on them carries the token. At most
/// [`MAX_UNAUTHENTICATED`] of those are kept (a new one evicts the oldest) and none for longer than
/// [`UNAUTHENTICATED_TIMEOUT`], so idle or slow clients without the token cannot take the room of those with it,
/// which have [`MAX_AUTHENTICATED`] slots of their own.
struct Pool {
    unauthenticated: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    authenticated: Arc<Semaphore>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            unauthenticated: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            authenticated: Arc::new(Semaphore::new(MAX_AUTHENTICATED)),
        }
    }
}

impl Pool {
    fn new_conn(&self, unix: bool, slot: Option<OwnedSemaphorePermit>) -> Arc<Conn> {
        Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            unix,
            slot: Mutex::new(slot),
            evict: Notify::new(),
        })
    }

    /// A new TCP connection, unauthenticated; the oldest unauthenticated one goes when there are too many.
    fn admit(&self) -> Arc<Conn> {
        let conn = self.new_conn(false, None);
        let mut waiting = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= MAX_UNAUTHENTICATED {
            if let Some((_, oldest)) = waiting.pop_first() {
                oldest.evict.notify_one();
            }
        }
        waiting.insert(conn.id, Arc::clone(&conn));
        conn
    }

    /// A new connection already authenticated (a unix-socket peer of the right uid), if there is room.
    fn admit_authenticated(&self) -> Option<Arc<Conn>> {
        let slot = Arc::clone(&self.authenticated).try_acquire_owned().ok()?;
        Some(self.new_conn(true, Some(slot)))
    }

    /// Moves `conn` among the authenticated connections (a request on it carried the token). False when it
    /// was evicted meanwhile, or when the authenticated connections are all taken.
    fn promote(&self, conn: &Conn) -> bool {
        let mut slot = conn.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return true;
        }
        let was_waiting = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn.id)
            .is_some();
        if !was_waiting {
            return false;
        }
        match Arc::clone(&self.authenticated).try_acquire_owned() {
            Ok(s) => {
                *slot = Some(s);
                true
            }
            Err(_) => false,
        }
    }

    /// The connection ended: its place (and slot, with the last reference) goes.
    fn forget(&self, conn: &Conn) {
        self.unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn.id);
        conn.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Says "refused …" on stderr at most once a second (a flood must not flood the terminal).
#[derive(Default)]
struct Quiet {
    last: AtomicU64,
}

impl Quiet {
    fn allow(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.last.swap(now, Ordering::Relaxed) != now
    }
}

/// The response to a request without (the right) token: 401, nothing else happens.
fn unauthorized(msg: &str) -> Response<Body> {
    let mut r = rpc_error(StatusCode::UNAUTHORIZED, &Value::Null, UNAUTHORIZED, msg);
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"thv-sandbox\""),
    );
    r
}

/// Closes the connection after this response (a refused client gets no keep-alive).
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// How a request proved it may be served.
struct Authenticated {
    /// The token was the endpoint's last path segment (`/mcp/TOKEN`).
    by_path: bool,
    /// Its `Authorization` is our bearer token (not passed to an HTTP upstream).
    bearer_is_ours: bool,
}

/// The token check: `/mcp/TOKEN`, or `Authorization: Bearer TOKEN` (not needed on the unix socket). A wrong
/// token in the path is refused even when the header is right.
#[allow(clippy::result_large_err)] // the error is the response to give; it is returned at once
fn authenticate(
    ctx: &Ctx,
    conn: &Conn,
    req: &Request<Incoming>,
) -> Result<Authenticated, Response<Body>> {
    let bearer_is_ours = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then_some(rest.trim_ascii())
        })
        .is_some_and(|t| ctx.token.matches(t));
    let in_path = req
        .uri()
        .path()
        .strip_prefix(ctx.path.as_str())
        .and_then(|rest| rest.strip_prefix('/'));
    match in_path {
        Some(t) if ctx.token.matches(t.as_bytes()) => Ok(Authenticated {
            by_path: true,
            bearer_is_ours,
        }),
        Some(_) => Err(unauthorized("wrong token")),
        None if bearer_is_ours || conn.unix => Ok(Authenticated {
            by_path: false,
            bearer_is_ours,
        }),
        None => Err(unauthorized(
            "this endpoint needs the token thv-sandbox printed: use the URL it printed \
             (http://HOST:PORT/mcp/TOKEN) or send `Authorization: Bearer TOKEN`",
        )),
    }
}

async fn handle(ctx: &Ctx, conn: &Conn, mut req: Request<Incoming>) -> Response<Body> {
    for (name, label) in [
        (http::header::HOST, "Host"),
        (http::header::ORIGIN, "Origin"),
        (http::header::AUTHORIZATION, "Authorization"),
    ] {
        if req.headers().get_all(&name).iter().nth(1).is_some() {
            let msg = format!("more than one {label} header");
            if ctx.refusals.allow() {
                note(format!("refused a request: {msg}"));
            }
            return closing(text(StatusCode::BAD_REQUEST, msg));
        }
    }
    if let (Some(guard), false) = (&ctx.guard, conn.unix) {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Err((status, msg)) = guard.check_host(host.as_deref()) {
            if ctx.refusals.allow() {
                note(format!("refused a request: {msg}"));
            }
            return closing(text(status, msg));
        }
    }
    let origin = match req.headers().get(http::header::ORIGIN).map(|o| o.to_str()) {
        None => None,
        Some(Ok(o)) => Some(o.to_owned()),
        Some(Err(_)) => Some("(not text)".to_owned()),
    };
    let origin_guard = ctx.guard.clone().unwrap_or_else(Guard::unix);
    if let Err((status, msg)) = origin_guard.check_origin(origin.as_deref()) {
        if ctx.refusals.allow() {
            note(format!("refused a request: {msg}"));
        }
        return closing(text(status, msg));
    }
    let auth = match authenticate(ctx, conn, &req) {
        Ok(a) => a,
        Err(r) => {
            if ctx.refusals.allow() {
                note("refused a request without the right token (401)");
            }
            return closing(r);
        }
    };
    if !auth.by_path && req.uri().path() != ctx.path {
        return text(
            StatusCode::NOT_FOUND,
            format!("the MCP endpoint is {}", ctx.path),
        );
    }
    if !ctx.pool.promote(conn) {
        return closing(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        ));
    }
    if auth.bearer_is_ours {
        // Our secret is not the server's business.
        req.headers_mut().remove(http::header::AUTHORIZATION);
    }
    match &ctx.backend {
        Backend::Proxy { client, path } => proxy(client, path, req, ctx.limits.max_message).await,
        Backend::Sessions(sessions) => match *req.method() {
            Method::POST => sessions.post(req).await,
            Method::GET => match sessions.find(req.headers()).await {
                Ok(hub) => hub.get(req.headers()),
                Err(r) => r,
            },
            Method::DELETE => sessions.delete(req.headers()).await,
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, POST, DELETE"),
                );
                r
            }
        },
        Backend::Hub(hub) => match *req.method() {
            Method::POST => hub.post(req).await,
            Method::GET => hub.get(req.headers()),
            Method::DELETE => {
                let mut r = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "this server's session lasts as long as the server",
                );
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
                r
            }
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, POST, DELETE"),
                );
                r
            }
        },
    }
}

async fn proxy(
    client: &HttpClient,
    path: &str,
    req: Request<Incoming>,
    max: usize,
) -> Response<Body> {
    let method = req.method().clone();
    if ![Method::GET, Method::POST, Method::DELETE].contains(&method) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
    }
    let uri = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut b = Request::builder().method(method).uri(uri);
    for (name, value) in req.headers() {
        let n = name.as_str();
        if FORWARDED_REQUEST.contains(&n) || n.starts_with("mcp-param-") {
            b = b.header(name, value);
        }
    }
    let body = match body_of(req, max).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(up) = b.body(Full::new(body)) else {
        return text(StatusCode::BAD_REQUEST, "unusable request");
    };
    match client.send(up).await {
        Err(e) => {
            note(format!("forwarding a request: {e}"));
            text(StatusCode::BAD_GATEWAY, format!("thv-sandbox: {e}"))
        }
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut r = Response::new(body.map_err(std::io::Error::other).boxed_unsync());
            *r.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if FORWARDED_RESPONSE.contains(&name.as_str()) {
                    r.headers_mut().append(name, value.clone());
                }
            }
            r
        }
    }
}

/// Where a server message for an open request goes.
struct Route {
    seq: u64,
    tx: mpsc::Sender<Vec<u8>>,
    token: Option<String>,
}

#[derive(Default)]
struct HubState {
    session: Option<String>,
    /// Open request streams, by request id.
    pending: HashMap<String, Route>,
    seq: u64,
    /// The GET stream, when one is open.
    get: Option<mpsc::Sender<Vec<u8>>>,
    /// Server messages waiting for a GET stream.
    backlog: VecDeque<Vec<u8>>,
    /// Why the server is gone, once it is.
    ended: Option<String>,
}

/// A stdio MCP server's one session, shared by the HTTP requests.
struct Hub {
    to_server: mpsc::Sender<Vec<u8>>,
    state: Mutex<HubState>,
    limits: Limits,
    /// Closes the server's stdin ([`Hub::end`]).
    closing: Arc<Notify>,
    /// Dropped when the session ends: the launcher stops the session's server (see [`super::SessionPipes`]).
    end: Mutex<Option<OwnedFd>>,
}

impl Hub {
    fn start(
        reader: Box<dyn AsyncRead + Send + Unpin>,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        limits: Limits,
        end: Option<OwnedFd>,
    ) -> (Arc<Hub>, tokio::sync::oneshot::Receiver<()>) {
        let (to_server, mut rx) = mpsc::channel::<Vec<u8>>(64);
        let closing = Arc::new(Notify::new());
        let hub = Arc::new(Hub {
            to_server,
            state: Mutex::new(HubState::default()),
            limits,
            closing: Arc::clone(&closing),
            end: Mutex::new(end),
        });
        tokio::spawn(async move {
            let mut writer = writer;
            loop {
                let mut line = tokio::select! {
                    biased;
                    // The session ended: the writer is dropped, the server reads end of file.
                    _ = closing.notified() => return,
                    line = rx.recv() => match line {
                        Some(line) => line,
                        None => return,
                    },
                };
                line.push(b'\n');
                if writer.write_all(&line).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        });
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let reading = Arc::clone(&hub);
        tokio::spawn(async move {
            reading.read_server(reader).await;
            let _ = done_tx.send(());
        });
        (hub, done)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session: the server's stdin is closed and its launcher told to stop it.
    fn end(&self) {
        self.closing.notify_one();
        self.end.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether `id` is this hub's session.
    fn is_session(&self, id: &str) -> bool {
        self.state().session.as_deref() == Some(id)
    }

    async fn read_server(&self, reader: Box<dyn AsyncRead + Send + Unpin>) {
        let mut reader = BufReader::new(reader);
        let why = loop {
            let line = match jsonrpc::read_line(&mut reader, self.limits.max_message).await {
                Ok(Line::Complete(l)) => l,
                Ok(Line::TooLong) => {
                    note(format!(
                        "dropped a server message larger than {} bytes",
                        self.limits.max_message
                    ));
                    continue;
                }
                Ok(Line::Eof) => break "the server's output ended".to_owned(),
                Err(e) => break format!("reading the server's output: {e}"),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some((v, line)) = jsonrpc::normalise(&line) else {
                note("dropped server output that is not JSON");
                continue;
            };
            self.route(&v, line).await;
        };
        let routes: Vec<(String, Route)> = {
            let mut st = self.state();
            st.ended = Some(why.clone());
            st.get = None;
            st.pending.drain().collect()
        };
        for (id, route) in routes {
            let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
            let _ = route
                .tx
                .send(jsonrpc::error_response(&id, INTERNAL_ERROR, &why))
                .await;
        }
    }

    /// Sends one server message where it belongs.
    async fn route(&self, v: &Value, line: Vec<u8>) {
        let c = classify(v);
        if let [id] = c.responses.as_slice() {
            let route = self.state().pending.remove(&id_key(id));
            match route {
                Some(r) => {
                    if r.tx.send(line).await.is_err() {
                        note("a response was dropped: the client had closed its request stream");
                    }
                }
                None => note(format!("dropped a response to an unknown request {id}")),
            }
            return;
        }
        let token = (c.method.as_deref() == Some("notifications/progress"))
            .then(|| v.pointer("/params/progressToken").map(id_key))
            .flatten();
        let mut line = line;
        // Progress goes to its request's stream; anything else to the GET stream, else the newest request
        // stream, else the backlog.
        for attempt in 0..3 {
            let target = {
                let st = self.state();
                match attempt {
                    0 => token.as_ref().and_then(|t| {
                        st.pending
                            .values()
                            .find(|r| r.token.as_ref() == Some(t))
                            .map(|r| r.tx.clone())
                    }),
                    1 => st.get.clone(),
                    _ => st
                        .pending
                        .values()
                        .max_by_key(|r| r.seq)
                        .map(|r| r.tx.clone()),
                }
            };
            if let Some(tx) = target {
                match tx.send(line).await {
                    Ok(()) => return,
                    Err(e) => line = e.0,
                }
            }
        }
        let mut st = self.state();
        if st.backlog.len() >= BACKLOG_MAX {
            st.backlog.pop_front();
            note("dropped a server message: no stream to deliver it on");
        }
        st.backlog.push_back(line);
    }

    #[allow(clippy::result_large_err)] // the error is the response to give; it is returned at once
    fn session_check(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let st = self.state();
        let given = headers.get(&SESSION).and_then(|v| v.to_str().ok());
        match (&st.session, given) {
            (None, None) => Ok(()),
            (Some(s), Some(g)) if s == g => Ok(()),
            (Some(_), None) => Err(text(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id")),
            _ => Err(text(StatusCode::NOT_FOUND, "unknown session")),
        }
    }

    async fn post(&self, req: Request<Incoming>) -> Response<Body> {
        match read_message(req, self.limits.max_message).await {
            Ok((headers, msg, line)) => self.post_message(&headers, &msg, line).await,
            Err(r) => r,
        }
    }

    async fn post_message(
        &self,
        headers: &HeaderMap,
        msg: &Value,
        line: Vec<u8>,
    ) -> Response<Body> {
        let c = classify(msg);
        let mut extra = Vec::new();
        if c.is_initialize() {
            let mut st = self.state();
            if st.session.is_some() {
                let id = c.requests.first().cloned().unwrap_or(Value::Null);
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &id,
                    -32600,
                    "this server holds one session, already initialized; restart it for a new one",
                );
            }
            let id = new_session_id();
            st.session = Some(id.clone());
            if let Ok(v) = HeaderValue::from_str(&id) {
                extra.push((SESSION, v));
            }
        } else if let Err(r) = self.session_check(headers) {
            return r;
        }
        if let Some(why) = self.state().ended.clone() {
            let id = c.requests.first().cloned().unwrap_or(Value::Null);
            return rpc_error(StatusCode::BAD_GATEWAY, &id, INTERNAL_ERROR, &why);
        }
        if c.requests.is_empty() {
            if self.to_server.send(line).await.is_err() {
                return text(StatusCode::BAD_GATEWAY, "the server is gone");
            }
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            return r;
        }
        let (tx, rx) = mpsc::channel(32);
        let token = msg.pointer("/params/_meta/progressToken").map(id_key);
        {
            let mut st = self.state();
            if let Some(dup) = c
                .requests
                .iter()
                .find(|id| st.pending.contains_key(&id_key(id)))
            {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    dup,
                    -32600,
                    "a request with this id is still open",
                );
            }
            st.seq += 1;
            let seq = st.seq;
            for id in &c.requests {
                st.pending.insert(
                    id_key(id),
                    Route {
                        seq,
                        tx: tx.clone(),
                        token: token.clone(),
                    },
                );
            }
        }
        drop(tx);
        if self.to_server.send(line).await.is_err() {
            let mut st = self.state();
            for id in &c.requests {
                st.pending.remove(&id_key(id));
            }
            return text(StatusCode::BAD_GATEWAY, "the server is gone");
        }
        event_stream(rx, &extra)
    }

    fn get(&self, headers: &HeaderMap) -> Response<Body> {
        let accepts = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream") || v.contains("*/*"));
        if !accepts {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "GET wants Accept: text/event-stream",
            );
        }
        if let Err(r) = self.session_check(headers) {
            return r;
        }
        let mut st = self.state();
        if st.session.is_none() {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "no session yet");
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        if st.get.as_ref().is_some_and(|g| !g.is_closed()) {
            return text(StatusCode::CONFLICT, "a GET stream is already open");
        }
        let (tx, rx) = mpsc::channel(BACKLOG_MAX + 32);
        for line in st.backlog.drain(..) {
            let _ = tx.try_send(line);
        }
        if st.ended.is_none() {
            st.get = Some(tx);
        }
        event_stream(rx, &[])
    }
}

/// A POSTed message: the request's headers, the message, and its normalised line. `Err` is the response to give.
#[allow(clippy::result_large_err)] // the error is the response to give; it is returned at once
async fn read_message(
    req: Request<Incoming>,
    max: usize,
) -> Result<(HeaderMap, Value, Vec<u8>), Response<Body>> {
    let headers = req.headers().clone();
    let body = body_of(req, max).await?;
    let Some((msg, line)) = jsonrpc::normalise(&body) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            PARSE_ERROR,
            "parse error: not JSON",
        ));
    };
    Ok((headers, msg, line))
}

/// Where each session's server comes from.
enum Source {
    /// A fresh stdio server per session (in its own sandbox, under `thv-sandbox run --port`).
    Launch(Arc<dyn Launch>),
    /// A legacy SSE server: each session is a stream of its own, bridged to stdio.
    Sse {
        connect: Arc<dyn Connect>,
        upstream: HttpUpstream,
    },
}

/// A server per MCP session, one session at a time: `initialize` ends the live session (its server is stopped)
/// and starts a fresh server for the new one, so a client that reconnects (a window reload, a restart) gets a
/// session even when the old one was never ended; `DELETE` ends the live session. Requests name their session
/// (`Mcp-Session-Id`): one that was ended gets 404, which tells a client to initialize again.
struct Sessions {
    source: Source,
    limits: Limits,
    /// The live session. Held across a start, so that two `initialize`s start one server after the other.
    current: tokio::sync::Mutex<Option<Arc<Hub>>>,
}

impl Sessions {
    fn new(source: Source, limits: Limits) -> Sessions {
        Sessions {
            source,
            limits,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// A new server, and the hub serving its session.
    async fn open(&self) -> Result<Arc<Hub>, String> {
        match &self.source {
            Source::Launch(launch) => {
                let launch = Arc::clone(launch);
                let pipes = tokio::task::spawn_blocking(move || launch.launch())
                    .await
                    .map_err(|e| e.to_string())??;
                let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(pipes.from_server)
                    .map_err(|e| e.to_string())?;
                let writer = tokio::net::unix::pipe::Sender::from_owned_fd(pipes.to_server)
                    .map_err(|e| e.to_string())?;
                let (hub, _) = Hub::start(
                    Box::new(reader),
                    Box::new(writer),
                    self.limits.clone(),
                    pipes.end,
                );
                Ok(hub)
            }
            Source::Sse { connect, upstream } => {
                let (hub_end, bridge_end) = tokio::io::duplex(1 << 16);
                let (bridge_r, bridge_w) = tokio::io::split(bridge_end);
                let (connect, upstream, limits) =
                    (Arc::clone(connect), upstream.clone(), self.limits.clone());
                tokio::spawn(async move {
                    if let Err(e) =
                        super::legacy::run(connect, &upstream, limits, bridge_r, bridge_w).await
                    {
                        note(format!("the SSE server: {e}"));
                    }
                });
                let (r, w) = tokio::io::split(hub_end);
                let (hub, _) = Hub::start(Box::new(r), Box::new(w), self.limits.clone(), None);
                Ok(hub)
            }
        }
    }

    async fn post(&self, req: Request<Incoming>) -> Response<Body> {
        let (headers, msg, line) = match read_message(req, self.limits.max_message).await {
            Ok(m) => m,
            Err(r) => return r,
        };
        if !classify(&msg).is_initialize() {
            return match self.find(&headers).await {
                Ok(hub) => hub.post_message(&headers, &msg, line).await,
                Err(r) => r,
            };
        }
        let mut current = self.current.lock().await;
        if let Some(old) = current.take() {
            note("a new session replaces the previous one, whose server is stopped");
            old.end();
        }
        let hub = match self.open().await {
            Ok(hub) => hub,
            Err(why) => {
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &id,
                    INTERNAL_ERROR,
                    &format!("cannot start the server: {why}"),
                );
            }
        };
        *current = Some(Arc::clone(&hub));
        drop(current);
        hub.post_message(&headers, &msg, line).await
    }

    /// The live session's hub, when the request names it; else the response to give.
    #[allow(clippy::result_large_err)] // the error is the response to give; it is returned at once
    async fn find(&self, headers: &HeaderMap) -> Result<Arc<Hub>, Response<Body>> {
        let Some(given) = headers.get(&SESSION).and_then(|v| v.to_str().ok()) else {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "missing Mcp-Session-Id (a session starts with initialize)",
            ));
        };
        match self.current.lock().await.as_ref() {
            Some(hub) if hub.is_session(given) => Ok(Arc::clone(hub)),
            _ => Err(text(
                StatusCode::NOT_FOUND,
                "unknown session (it has ended: initialize a new one)",
            )),
        }
    }

    /// `DELETE`: ends the live session it names; its server is stopped.
    async fn delete(&self, headers: &HeaderMap) -> Response<Body> {
        let given = headers.get(&SESSION).and_then(|v| v.to_str().ok());
        let mut current = self.current.lock().await;
        match (current.as_ref(), given) {
            (_, None) => text(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id"),
            (Some(hub), Some(g)) if hub.is_session(g) => {
                if let Some(hub) = current.take() {
                    hub.end();
                }
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            _ => text(StatusCode::NOT_FOUND, "unknown session"),
        }
    }
}

/// 128 random bits as hex, from the kernel.
fn new_session_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom: still unique per process, if not unguessable (the listener is loopback-only).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> Guard {
        Guard::new("127.0.0.1:8123".parse().unwrap())
    }

    #[test]
    fn host_must_name_this_listener() {
        let g = lo();
        for ok in [
            "localhost:8123",
            "127.0.0.1:8123",
            "[::1]:8123",
            "LOCALHOST:8123",
        ] {
            assert!(g.check_host(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8123",
            "localhost:8124",
            "localhost",
            "127.0.0.1",
            "10.0.0.1:8123",
            "",
            "localhost:8123/x",
            "user@localhost:8123",
            "[::1",
            "localhost:99999",
        ] {
            assert!(g.check_host(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(g.check_host(None).unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(
            g.check_host(Some("evil.example:8123")).unwrap_err().0,
            StatusCode::MISDIRECTED_REQUEST
        );
        let any = Guard::new("0.0.0.0:80".parse().unwrap());
        assert!(any.check_host(Some("192.168.1.5")).is_ok());
        assert!(any.check_host(Some("evil.example")).is_err());
    }

    #[test]
    fn origin_must_be_local_when_present() {
        let g = lo();
        assert!(g.check_origin(None).is_ok());
        for ok in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8123",
            "http://LocalHost",
        ] {
            assert!(g.check_origin(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "null",
            "file://",
            "http://localhost@evil.example",
            "http://localhost/path",
            "ftp://localhost",
            "http://127.0.0.2",
            "(not text)",
        ] {
            assert_eq!(
                g.check_origin(Some(bad)).unwrap_err().0,
                StatusCode::FORBIDDEN,
                "{bad}"
            );
        }
        let lan = Guard::new("192.168.1.5:80".parse().unwrap());
        assert!(lan.check_origin(Some("http://192.168.1.5")).is_ok());
        assert!(lan.check_origin(Some("http://192.168.1.6")).is_err());
    }

    #[test]
    fn session_ids_are_random_hex() {
        let a = new_session_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_session_id());
    }
}
