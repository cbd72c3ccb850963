//! The HTTP/1.1 client side: hyper over connections from a [`Connect`], one connection per exchange.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::sse;
use super::Connect;

/// A failed exchange with the server.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// No connection (the factory failed, or the server refused).
    Connect(std::io::Error),
    /// The HTTP exchange failed (the server closed the connection, sent garbage...).
    Http(hyper::Error),
    /// A body or event was larger than allowed.
    TooLarge(usize),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect to the server: {e}"),
            ClientError::Http(e) => write!(f, "HTTP exchange with the server failed: {e}"),
            ClientError::TooLarge(n) => write!(f, "the server sent more than {n} bytes at once"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An HTTP client for one server: every request gets `Host` set to `host`.
#[derive(Clone)]
pub(crate) struct HttpClient {
    connect: Arc<dyn Connect>,
    pub host: HeaderValue,
}

impl HttpClient {
    pub fn new(connect: Arc<dyn Connect>, host: HeaderValue) -> HttpClient {
        HttpClient { connect, host }
    }

    /// Sends `req` on a fresh connection; resolves when the response head has arrived (the body streams).
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        let connect = Arc::clone(&self.connect);
        let stream = tokio::task::spawn_blocking(move || connect.connect())
            .await
            .map_err(|e| ClientError::Connect(std::io::Error::other(e)))?
            .map_err(ClientError::Connect)?;
        stream.set_nonblocking(true).map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        let stream = tokio::net::TcpStream::from_std(stream).map_err(ClientError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            // Ends when the exchange is over or the response body is dropped; errors surface through `sender`.
            let _ = conn.await;
        });
        sender.send_request(req).await.map_err(ClientError::Http)
    }
}

/// Reads a whole body, refusing more than `max` bytes.
pub(crate) async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ClientError::Http)?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max {
                return Err(ClientError::TooLarge(max));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.into())
}

/// Events from a response body, in order.
pub(crate) struct EventStream {
    body: Incoming,
    parser: sse::Parser,
    ready: std::collections::VecDeque<sse::Event>,
    max: usize,
}

impl EventStream {
    pub fn new(body: Incoming, max: usize) -> EventStream {
        EventStream {
            body,
            parser: sse::Parser::new(max),
            ready: Default::default(),
            max,
        }
    }

    /// The next event; `Ok(None)` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<sse::Event>, ClientError> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Http(e)),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let evs = self
                            .parser
                            .push(data)
                            .map_err(|_| ClientError::TooLarge(self.max))?;
                        self.ready.extend(evs);
                    }
                }
            }
        }
    }

    /// The stream's last event id, for resuming it.
    pub fn last_id(&self) -> Option<&str> {
        self.parser.last_id.as_deref()
    }
}

/// Whether a response is an event stream (by its content type).
pub(crate) fn is_event_stream<B>(resp: &Response<B>) -> bool {
    content_type(resp).eq_ignore_ascii_case("text/event-stream")
}

/// Whether a response is JSON.
pub(crate) fn is_json<B>(resp: &Response<B>) -> bool {
    content_type(resp).eq_ignore_ascii_case("application/json")
}

fn content_type<B>(resp: &Response<B>) -> &str {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
}

/// Tries `connect` until it succeeds or `timeout` has passed, backing off from 10 ms to 500 ms between tries.
/// Blocking; for the time a server needs to start listening.
pub fn wait_until_accepting(connect: &dyn Connect, timeout: Duration) -> std::io::Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        match connect.connect() {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "the server did not accept connections within {:.1}s (last attempt: {e}); check that the \
                         registry entry's port is the one the server listens on, and the server's log above",
                        timeout.as_secs_f64()
                    ),
                ))
            }
            Err(_) => {
                std::thread::sleep(delay.min(timeout.saturating_sub(start.elapsed())));
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}
