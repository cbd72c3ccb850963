//! A hostile OCI registry for tests: a plain-HTTP server on 127.0.0.1 (a thread per connection, one request per
//! connection, `Connection: close`) whose every answer a test scripts with a handler, and which records what it
//! was asked (method, target, headers) and how many body bytes it got out before the client hung up.
//!
//! Bodies can be larger than memory ([`Body::Repeat`] is generated while it is sent) or trickle ([`Body::Slow`]),
//! so tests can observe bounded reads by the bytes the server managed to send, not by the client's memory.
//! [`ImageRoutes`] serves an image written by [`crate::ImageBuilder`] for the answers a test does not script.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::image::BuiltImage;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (read by `Content-Length`).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
}

/// A response body.
#[derive(Debug, Clone)]
pub enum Body {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, generated while sent.
    Repeat {
        /// The byte.
        byte: u8,
        /// How many.
        len: u64,
    },
    /// `data`, `chunk` bytes at a time with a pause of `every` before each.
    Slow {
        /// The bytes.
        data: Vec<u8>,
        /// Bytes per write.
        chunk: usize,
        /// The pause before each write.
        every: Duration,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) | Body::Slow { data: b, .. } => b.len() as u64,
            Body::Repeat { len, .. } => *len,
        }
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// Send `Content-Length` (the body then ends with the connection when false).
    pub with_length: bool,
    /// After this many body bytes, reset the connection (`SO_LINGER` 0, then close: the kernel sends a TCP RST
    /// instead of a FIN) rather than sending the rest.
    pub reset_after: Option<u64>,
}

impl Reply {
    /// `status` with `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
            with_length: true,
            reset_after: None,
        }
    }

    /// 200 with a JSON body.
    pub fn json(body: &serde_json::Value) -> Reply {
        Reply::new(200, body.to_string()).header("Content-Type", "application/json")
    }

    /// `status` with a body sent as `body` says.
    pub fn body(status: u16, body: Body) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            with_length: true,
            reset_after: None,
        }
    }

    /// Plus a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Without `Content-Length`.
    pub fn without_length(mut self) -> Reply {
        self.with_length = false;
        self
    }

    /// Reset the connection (a TCP RST, not a clean close) once `bytes` of the body are sent; the head, with the
    /// whole body's `Content-Length`, is sent as usual.
    pub fn reset_after(mut self, bytes: u64) -> Reply {
        self.reset_after = Some(bytes);
        self
    }
}

/// What the handler is.
pub type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A request as recorded, with the body bytes sent in answer.
#[derive(Debug)]
pub struct Seen {
    /// The request.
    pub request: Request,
    sent: AtomicU64,
}

impl Seen {
    /// Body bytes written to the client (all of them, or until it hung up).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// The running server; stopped when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Arc<Seen>>>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for HostileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HostileServer {
    /// Listen on a free loopback port; every request is answered with `handler`'s reply.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Arc<Seen>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (handler, seen) = (handler.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &*handler, &seen);
                });
            }
        });
        Ok(HostileServer { addr, seen, stop })
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Arc<Seen>> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests whose path is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Arc<Seen>> {
        self.requests()
            .into_iter()
            .filter(|s| s.request.path() == path)
            .collect()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_under(&self, prefix: &str) -> Vec<Arc<Seen>> {
        self.requests()
            .into_iter()
            .filter(|s| s.request.path().starts_with(prefix))
            .collect()
    }

    /// Every `Authorization` header received.
    pub fn authorizations(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|s| s.request.header("authorization").map(str::to_owned))
            .collect()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<Arc<Seen>>>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let request = Request {
        method,
        target,
        headers,
        body,
    };
    // The reader's descriptor is a duplicate of the connection's: closed here, so that closing `out` below ends
    // the connection (and a reset resets it).
    drop(reader);
    let reply = handler(&request);
    let record = Arc::new(Seen {
        request,
        sent: AtomicU64::new(0),
    });
    seen.lock().unwrap().push(record.clone());

    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if reply.with_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let count = |n: usize| record.sent.fetch_add(n as u64, Ordering::SeqCst);
    // The bytes still allowed before a reset (`u64::MAX`: no reset).
    let mut allowed = reply.reset_after.unwrap_or(u64::MAX);
    let mut send = |out: &mut TcpStream, piece: &[u8]| -> io::Result<bool> {
        let n = (piece.len() as u64).min(allowed) as usize;
        out.write_all(&piece[..n])?;
        count(n);
        allowed -= n as u64;
        Ok(n == piece.len())
    };
    match reply.body {
        Body::Bytes(b) => {
            for piece in b.chunks(64 << 10) {
                if !send(&mut out, piece)? {
                    break;
                }
            }
        }
        Body::Repeat { byte, len } => {
            let block = vec![byte; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if !send(&mut out, &block[..n])? {
                    break;
                }
                left -= n as u64;
            }
        }
        Body::Slow { data, chunk, every } => {
            for piece in data.chunks(chunk.max(1)) {
                std::thread::sleep(every);
                let go = send(&mut out, piece)?;
                out.flush()?;
                if !go {
                    break;
                }
            }
        }
    }
    if reply.reset_after.is_some() {
        // Give the client a moment to read what was sent (an RST can make the kernel drop data not yet read),
        // then close with a zero linger time: the kernel answers with an RST.
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::socket::setsockopt(
            &out,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .map_err(io::Error::from)?;
        drop(out);
        return Ok(());
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Write);
    // Let the client read to the end before the socket goes.
    let mut sink = [0u8; 1024];
    let _ = out.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = (&out).read(&mut sink);
    Ok(())
}

/// The answers for one image in one repository: `/v2/` (200), its manifest by tag and by digest, its config and
/// layers by digest. Anything else: `None`.
#[derive(Debug, Clone)]
pub struct ImageRoutes {
    routes: HashMap<String, (String, Vec<u8>)>,
}

impl ImageRoutes {
    /// The image `built`, written to the layout `layout`, as `repo:tag`.
    pub fn new(
        layout: &Path,
        built: &BuiltImage,
        repo: &str,
        tag: &str,
    ) -> io::Result<ImageRoutes> {
        let mut routes = HashMap::new();
        let manifest = crate::registry::read_blob(layout, &built.manifest)?;
        for name in [tag, built.manifest.digest.as_str()] {
            routes.insert(
                format!("/v2/{repo}/manifests/{name}"),
                (built.manifest.media_type.clone(), manifest.clone()),
            );
        }
        for blob in built.layers.iter().chain(std::iter::once(&built.config)) {
            routes.insert(
                format!("/v2/{repo}/blobs/{}", blob.digest),
                (
                    "application/octet-stream".to_owned(),
                    crate::registry::read_blob(layout, blob)?,
                ),
            );
        }
        Ok(ImageRoutes { routes })
    }

    /// Adds a document at `path`.
    pub fn insert(&mut self, path: String, content_type: &str, body: Vec<u8>) {
        self.routes.insert(path, (content_type.to_owned(), body));
    }

    /// The answer for `request`, if it is one of these.
    pub fn reply(&self, request: &Request) -> Option<Reply> {
        if request.path() == "/v2/" {
            return Some(Reply::json(&serde_json::json!({})));
        }
        let (content_type, body) = self.routes.get(request.path())?;
        let mut reply = Reply::new(200, body.clone()).header("Content-Type", content_type);
        if request.path().contains("/manifests/") {
            reply = reply.header("Docker-Content-Digest", &crate::sha256_digest(body));
        }
        Some(reply)
    }

    /// [`ImageRoutes::reply`], else 404.
    pub fn reply_or_404(&self, request: &Request) -> Reply {
        self.reply(request)
            .unwrap_or_else(|| Reply::new(404, r#"{"errors":[{"code":"NOT_FOUND"}]}"#))
    }
}
