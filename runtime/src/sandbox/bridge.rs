//! Bridges between MCP transports, for servers that speak HTTP inside the sandbox and for `--port`.
//!
//! A server with `transport: streamable-http` or `sse` listens inside the sandbox's network namespace, which
//! has only loopback; the supervisor reaches it through a [`Connect`] (a factory of fresh TCP connections to
//! the server's port inside the namespace). No port is opened on the host.
//!
//! - [`stdio_to_http`] with [`HttpTransport::StreamableHttp`]: the MCP client's stdio ↔ a streamable-HTTP server. Each client line is
//!   POSTed (`Accept: application/json, text/event-stream`); a JSON answer or the messages of an event stream
//!   are written back one per line. `Mcp-Session-Id` from the `initialize` answer and `MCP-Protocol-Version`
//!   (the negotiated version) go on every later request; from protocol 2026-07-28 on, also `Mcp-Method` and
//!   `Mcp-Name`. After `initialize` the GET stream for the server's own requests and notifications is opened
//!   (405: the server has none). A broken answer stream with event ids is resumed with `Last-Event-ID`.
//!   At the end of the client's input: answers still in flight are awaited (bounded), the session is DELETEd
//!   (best effort), and the function returns.
//! - [`stdio_to_http`] with [`HttpTransport::Sse`]: the MCP client's stdio ↔ a legacy HTTP+SSE server (GET the SSE path, POST to the URL of
//!   its `endpoint` event, `message` events back).
//! - [`serve_http`]: `--port`/`--socket`: any upstream exposed as streamable HTTP at `/mcp` on a host listener
//!   (loopback TCP, a unix socket, or both), `Host` and `Origin` checked against DNS rebinding, and every request
//!   authenticated: on TCP by the per-run [`Token`] (`/mcp/TOKEN` or `Authorization: Bearer TOKEN`), on the
//!   unix socket by the peer's uid (the owner's or root). See [`access`]. A stdio server is started afresh for
//!   each MCP session ([`Upstream::PerSession`], one session at a time): one stdio server holds one session.
//!
//! Each waits first until the server accepts connections (retrying with backoff, at most [`Limits::startup`]).
//!
//! Guarantees: one writer of the client's stdout (messages never interleave; each is exactly one line); every
//! message, line and body is bounded ([`Limits`]); a failure on the HTTP side becomes a JSON-RPC error response
//! to each request it leaves unanswered (so the client does not hang) plus a line on stderr. Messages are
//! POSTed in order: the next waits until the server has taken the previous one (its response head), at most
//! half a second — a server answering only when done must not hold up cancellations.
//!
//! In `thv-sandbox run` each runs on a thread of its own ([`spawn_stdio_bridge`], [`spawn_port_server`]), reaching
//! the server through the runner's socket factory ([`SandboxConnect`]).
//!
//! HTTP/1.1 over hyper (already in the dependency tree through reqwest); one connection per exchange, because
//! a streamed answer occupies its connection and connections inside the sandbox cost a loopback handshake.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub mod access;
mod client;
pub(crate) mod jsonrpc;
mod legacy;
mod serve;
pub(crate) mod sse;
mod streamable;

pub use access::{Expose, Listening, SocketFile, Token};
pub use client::wait_until_accepting;

/// A factory of fresh TCP connections to the server's port (inside the sandbox, for the supervisor).
pub trait Connect: Send + Sync + 'static {
    /// A new connection to the server's port. Blocking is fine: the bridge calls it off the async threads.
    fn connect(&self) -> std::io::Result<TcpStream>;
}

/// A [`Connect`] to a plain address (tests, or a server on the host's loopback).
#[derive(Debug, Clone, Copy)]
pub struct TcpConnect(pub SocketAddr);

impl Connect for TcpConnect {
    fn connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.0)
    }
}

/// A [`Connect`] to the server's port inside the sandbox, through the runner's socket factory.
#[derive(Debug)]
pub struct SandboxConnect {
    /// The factory of sockets in the sandbox's network namespace.
    pub factory: crate::sandbox::sync::SocketFactory,
    /// The server's port inside the sandbox.
    pub port: u16,
}

impl Connect for SandboxConnect {
    fn connect(&self) -> std::io::Result<TcpStream> {
        self.factory.connect(self.port)
    }
}

/// Which HTTP transport a server speaks (the catalog's transports other than stdio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTransport {
    /// Streamable HTTP (MCP 2025-03-26 and later).
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    Sse,
}

/// Where the server's endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUpstream {
    /// The `Host` header to send, `host:port` (servers check it against DNS rebinding: `localhost:PORT` is what
    /// a server expects from a local client).
    pub authority: String,
    /// Path (and query) of the endpoint: the streamable-HTTP endpoint (`/mcp`), or the SSE stream (`/sse`).
    pub path: String,
}

impl HttpUpstream {
    /// The endpoint of a server listening on `port`: `/mcp` for streamable HTTP, `/sse` for SSE (the paths
    /// ToolHive's servers use), `Host: localhost:PORT`.
    pub fn new(transport: HttpTransport, port: u16) -> HttpUpstream {
        HttpUpstream {
            authority: format!("localhost:{port}"),
            path: match transport {
                HttpTransport::StreamableHttp => "/mcp",
                HttpTransport::Sse => "/sse",
            }
            .to_owned(),
        }
    }

    /// A client of this endpoint through `connect`, sending its `Host` (the one way every bridge reaches an HTTP
    /// server in the sandbox).
    pub(crate) fn client(
        &self,
        connect: Arc<dyn Connect>,
    ) -> Result<client::HttpClient, BridgeError> {
        let host = http::HeaderValue::from_str(&self.authority)
            .map_err(|_| BridgeError::Config(format!("bad authority {:?}", self.authority)))?;
        Ok(client::HttpClient::new(connect, host))
    }
}

/// Bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest message (a client line, a JSON body, one SSE event, a POST body): 16 MiB.
    pub max_message: usize,
    /// How long answers still in flight are awaited after the client's input ended: 10 s.
    pub drain: Duration,
    /// How long a starting server may take to accept connections before the bridge gives up: 60 s.
    pub startup: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message: 16 << 20,
            drain: Duration::from_secs(10),
            startup: Duration::from_secs(60),
        }
    }
}

/// The ends of one session's stdio server (see [`Launch`]).
#[derive(Debug)]
pub struct SessionPipes {
    /// The read end of the server's stdout.
    pub from_server: OwnedFd,
    /// The write end of the server's stdin.
    pub to_server: OwnedFd,
    /// Closed (dropped) when the bridge ends the session: the server is stopped (its stdin is closed too).
    pub end: Option<OwnedFd>,
}

/// Starts a fresh stdio server for each MCP session served on `--port` ([`Upstream::PerSession`]).
pub trait Launch: Send + Sync + 'static {
    /// A new server for one session. Called off the async threads; may block until the server can be started
    /// (the previous session's server is gone). `Err` is the reason, for the client.
    fn launch(&self) -> Result<SessionPipes, String>;
}

/// What [`serve_http`] exposes.
pub enum Upstream {
    /// A server speaking HTTP, reached through `connect`.
    Http {
        /// Its transport.
        transport: HttpTransport,
        /// Connections to it.
        connect: Arc<dyn Connect>,
        /// Its endpoint.
        upstream: HttpUpstream,
    },
    /// A fresh stdio server per MCP session: each `initialize` starts one through the [`Launch`] (and ends the
    /// session before it, whose server is stopped); `DELETE` ends a session. One session at a time.
    PerSession(Arc<dyn Launch>),
    /// One stdio server, holding one session for its life: `reader` is its stdout, `writer` its stdin.
    Stdio {
        /// The server's stdout.
        reader: Box<dyn AsyncRead + Send + Unpin>,
        /// The server's stdin.
        writer: Box<dyn AsyncWrite + Send + Unpin>,
    },
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Http {
                transport,
                upstream,
                ..
            } => f
                .debug_struct("Http")
                .field("transport", transport)
                .field("upstream", upstream)
                .finish_non_exhaustive(),
            Upstream::Stdio { .. } => f.write_str("Stdio"),
            Upstream::PerSession(_) => f.write_str("PerSession"),
        }
    }
}

/// Why a bridge stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Reading the client's input failed.
    #[error("reading the client's messages: {0}")]
    Input(std::io::Error),
    /// Writing to the client failed (it went away).
    #[error("writing to the client: {0}")]
    Output(std::io::Error),
    /// The server side failed in a way that ends the bridge.
    #[error("{0}")]
    Server(String),
    /// The listener failed.
    #[error("serving HTTP: {0}")]
    Listen(std::io::Error),
    /// A bad setting (authority, path).
    #[error("bridge configuration: {0}")]
    Config(String),
    /// The bridge's async runtime could not start.
    #[error("starting the bridge's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Bridges the client's stdio (`input` = its stdin, `output` = its stdout) to a server of either HTTP
/// transport (see the module documentation), until the input ends (Ok) or, for SSE, the server ends the stream
/// (an error).
pub async fn stdio_to_http<R, W>(
    transport: HttpTransport,
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
    until_accepting(&connect, &limits).await?;
    match transport {
        HttpTransport::StreamableHttp => {
            streamable::run(connect, upstream, limits, input, output).await
        }
        HttpTransport::Sse => legacy::run(connect, upstream, limits, input, output).await,
    }
}

/// Serves `upstream` as streamable HTTP at `/mcp` on the listeners of `listening` (see the module
/// documentation). Requests with more than one `Host`, `Origin` or `Authorization` get 400; on TCP, requests
/// whose `Host` does not name the listener get 421 (400 without one); an `Origin` that is not an http(s)
/// origin on `localhost`, `127.0.0.1` or `[::1]` (or the explicitly bound address) gets 403; a TCP request
/// without the token gets 401. Returns when a stdio or SSE upstream is gone; with a streamable-HTTP upstream
/// it serves until dropped. Must run inside a tokio runtime (the listeners become tokio's).
pub async fn serve_http(
    listening: Listening,
    upstream: Upstream,
    limits: Limits,
) -> Result<(), BridgeError> {
    serve::serve(listening, upstream, limits).await
}

/// Where a bridge thread says what the user should see (the serving URL, why it stopped): one line at a time.
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

thread_local! {
    /// Where the notes of the bridge running on this thread go ([`note`]): set by [`spawn_on_runtime`] for the
    /// thread it starts (its current-thread runtime runs every task of the bridge there). Elsewhere (a bridge
    /// driven by a caller's own runtime) notes go to the log.
    static NOTES: std::cell::RefCell<Option<Say>> = const { std::cell::RefCell::new(None) };
}

/// One line about the bridge's traffic (a dropped message, a refused request) for the user: through the thread's
/// [`Say`], prefixed `bridge: ` so a user can tell the bridge's words from the server's.
pub(crate) fn note(msg: impl std::fmt::Display) {
    let line = format!("bridge: {msg}");
    NOTES.with_borrow(|say| match say {
        Some(say) => say(&line),
        None => tracing::info!("{line}"),
    });
}

/// How the stdio bridge of [`spawn_stdio_bridge`] ended; unset while it runs.
#[derive(Debug, Clone, Default)]
pub struct StdioBridgeEnd(Arc<OnceLock<BridgeEnd>>);

/// How a stdio bridge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeEnd {
    /// The client closed its input: the server was stopped for it, a normal end.
    ClientClosed,
    /// The bridge failed (said on stderr): the run is a failure whatever the server's code.
    Failed,
}

impl StdioBridgeEnd {
    /// How the bridge ended, if it has.
    pub fn get(&self) -> Option<BridgeEnd> {
        self.0.get().copied()
    }

    fn set(&self, end: BridgeEnd) {
        let _ = self.0.set(end);
    }
}

/// What [`spawn_port_server`] serves.
pub enum PortUpstream {
    /// A stdio server, started afresh in its own sandbox for each session.
    PerSession(Arc<dyn Launch>),
    /// A server speaking HTTP inside the sandbox.
    Http {
        /// Its transport.
        transport: HttpTransport,
        /// Its port inside the sandbox, and the way there.
        connect: SandboxConnect,
    },
}

impl std::fmt::Debug for PortUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortUpstream::PerSession(_) => f.write_str("PerSession"),
            PortUpstream::Http { transport, .. } => f
                .debug_struct("Http")
                .field("transport", transport)
                .finish_non_exhaustive(),
        }
    }
}

/// Pipes for one session's stdio server behind `--port`: the server's ends (its stdin, its stdout, and the read
/// end of the session's end pipe, for the supervisor) and ours, to serve. All close-on-exec (the supervisor hands
/// the server's ends to the runner as its stdio).
pub fn session_pipes() -> std::io::Result<((OwnedFd, OwnedFd, OwnedFd), SessionPipes)> {
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (end_r, end_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((
        (in_r, out_w, end_r),
        SessionPipes {
            to_server: in_w,
            from_server: out_r,
            end: Some(end_w),
        },
    ))
}

/// Serves `--port`/`--socket` on a thread of its own (see [`serve_http`]); says the URL (with the token) through
/// `say`. When it stops serving (it failed), the run is stopped (see [`spawn_on_runtime`]).
pub fn spawn_port_server(listening: Listening, upstream: PortUpstream, say: Say) {
    let (said, told) = (Arc::clone(&say), Arc::clone(&say));
    let spawned = spawn_on_runtime(
        "port",
        Arc::clone(&say),
        move || async move {
            // The pipe ends become tokio objects inside this runtime.
            let upstream = match upstream {
                PortUpstream::PerSession(launch) => Upstream::PerSession(launch),
                PortUpstream::Http { transport, connect } => Upstream::Http {
                    transport,
                    upstream: HttpUpstream::new(transport, connect.port),
                    connect: Arc::new(connect),
                },
            };
            for line in listening.describe() {
                said(&line);
            }
            serve_http(listening, upstream, Limits::default()).await
        },
        move |result| {
            if let Err(e) = result {
                told(&format!("--port: {e}"));
            }
        },
    );
    if let Err(e) = spawned {
        say(&format!("--port: {e}"));
    }
}

/// Bridges our stdio to the HTTP server inside the sandbox (see [`stdio_to_http`]) on a thread of its own. When
/// the bridge ends, `end` says how, and the sandbox is stopped (see [`spawn_on_runtime`]).
pub fn spawn_stdio_bridge(
    transport: HttpTransport,
    connect: SandboxConnect,
    end: StdioBridgeEnd,
    say: Say,
) {
    let upstream = HttpUpstream::new(transport, connect.port);
    let told = Arc::clone(&say);
    let spawned = spawn_on_runtime(
        "bridge",
        Arc::clone(&say),
        move || async move {
            stdio_to_http(
                transport,
                Arc::new(connect),
                &upstream,
                Limits::default(),
                tokio::io::stdin(),
                tokio::io::stdout(),
            )
            .await
        },
        move |result| {
            if let Err(e) = &result {
                told(&format!("bridge: {e}"));
            }
            end.set(match result {
                Ok(()) => BridgeEnd::ClientClosed,
                Err(_) => BridgeEnd::Failed,
            });
        },
    );
    if let Err(e) = spawned {
        say(&format!("bridge: {e}"));
    }
}

/// Runs `task` to its end on a thread of its own (named `name`) in a current-thread tokio runtime, hands its
/// result (or the runtime's failure to start) to `done`, then stops the sandbox: the process sends itself
/// SIGTERM, which the supervisor handles like a client's. The thread is born with every signal blocked: the
/// supervisor reads them from a signalfd (and cleans up, the socket file too); a signal taken by this thread would
/// end the process at once. (A `--port` server for a stdio server starts before the supervisor blocks them.)
/// The bridge's notes on that thread go to `notes`.
fn spawn_on_runtime<F, T>(
    name: &'static str,
    notes: Say,
    task: F,
    done: impl FnOnce(Result<(), BridgeError>) + Send + 'static,
) -> std::io::Result<()>
where
    F: FnOnce() -> T + Send + 'static,
    T: Future<Output = Result<(), BridgeError>>,
{
    let spawned = crate::sandbox::spawn_with_signals_blocked(name, move || {
        NOTES.set(Some(notes));
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let result = rt.block_on(task());
                rt.shutdown_background();
                done(result);
            }
            Err(e) => done(Err(BridgeError::Runtime(e))),
        }
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    });
    spawned.map(drop)
}

/// Parses `--port [HOST:]PORT`: a bare port binds `127.0.0.1`; a HOST (an IP address, `[v6]`, or `localhost`)
/// is taken as given.
pub fn parse_listen(spec: &str) -> Result<SocketAddr, ListenSpecError> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = spec.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| ListenSpecError::BadPort {
            spec: spec.to_owned(),
        })?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    spec.parse::<SocketAddr>()
        .map_err(|_| ListenSpecError::BadAddress {
            spec: spec.to_owned(),
        })
}

/// What `--port` takes.
const LISTEN_HINT: &str = "expected PORT or HOST:PORT (e.g. 8080, 127.0.0.1:8080, [::1]:8080)";

/// Why a `--port` value is not an address to listen on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenSpecError {
    /// `localhost:` with something that is not a port.
    #[error("bad port in {spec:?}: {}", LISTEN_HINT)]
    BadPort {
        /// The value given.
        spec: String,
    },
    /// Neither a port nor an address with a port.
    #[error("bad listen address {spec:?}: {}", LISTEN_HINT)]
    BadAddress {
        /// The value given.
        spec: String,
    },
}

/// Waits (off the async threads) until the server accepts connections, at most `limits.startup`.
async fn until_accepting(connect: &Arc<dyn Connect>, limits: &Limits) -> Result<(), BridgeError> {
    let connect = Arc::clone(connect);
    let timeout = limits.startup;
    tokio::task::spawn_blocking(move || wait_until_accepting(&*connect, timeout))
        .await
        .map_err(|e| BridgeError::Server(e.to_string()))?
        .map_err(|e| BridgeError::Server(e.to_string()))
}

fn writer_ended(w: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), BridgeError> {
    match w {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(BridgeError::Output(e)),
        Err(e) => Err(BridgeError::Output(std::io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        assert_eq!(
            parse_listen("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen("example.com:80").is_err());
        assert!(parse_listen("70000").is_err());
        assert!(parse_listen("").is_err());
    }

    #[test]
    fn listen_errors_say_what_was_given_and_what_is_expected() {
        assert_eq!(
            parse_listen("localhost:http").unwrap_err().to_string(),
            "bad port in \"localhost:http\": expected PORT or HOST:PORT (e.g. 8080, 127.0.0.1:8080, [::1]:8080)"
        );
        assert_eq!(
            parse_listen("example.com:80").unwrap_err().to_string(),
            "bad listen address \"example.com:80\": expected PORT or HOST:PORT (e.g. 8080, 127.0.0.1:8080, \
             [::1]:8080)"
        );
        assert_eq!(
            BridgeError::Runtime(std::io::Error::other("no epoll")).to_string(),
            "starting the bridge's runtime: no epoll"
        );
    }
}
