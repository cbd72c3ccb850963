//! HTTP/1.x: `CONNECT` tunnels and forward-proxy requests in absolute form.
//!
//! Parsing is strict where a lax parser would let a request mean one thing here and another upstream: no
//! `obs-fold`, no bare CR or LF in heads, no `Transfer-Encoding` together with `Content-Length`, no conflicting
//! lengths, only `chunked` as a request transfer coding. Request bodies are forwarded by their framing (so the
//! next request on a kept-alive connection is parsed and checked here, never passed through); responses likewise.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{open, Ctx, OpenError};

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

pub(super) async fn serve(ctx: &Ctx, mut client: TcpStream) {
    session(ctx, &mut client).await;
    super::linger(&mut client).await;
}

/// Requests on one client connection, until one of them ends it.
async fn session(ctx: &Ctx, client: &mut TcpStream) {
    let mut buf = Vec::new();
    loop {
        let head = match tokio::time::timeout(
            ctx.opts.handshake_timeout,
            read_head(client, &mut buf, ctx.opts.max_head),
        )
        .await
        {
            Ok(Ok(Some(h))) => h,
            Ok(Err(HeadError::TooLarge)) => {
                let _ = respond(client, 431, "request head too large").await;
                return;
            }
            Ok(Err(HeadError::Malformed)) => {
                let _ = respond(client, 400, "malformed request").await;
                return;
            }
            // Closed, broken, or idle too long.
            Ok(Ok(None)) | Ok(Err(HeadError::Io(_))) | Err(_) => return,
        };
        let req = match Request::parse(&head) {
            Ok(r) => r,
            Err(why) => {
                let _ = respond(client, 400, why).await;
                return;
            }
        };
        if req.method == "CONNECT" {
            tunnel(ctx, client, buf, &req).await;
            return;
        }
        if !forward(ctx, client, &mut buf, &req).await {
            return;
        }
    }
}

/// `CONNECT host:port`: check, connect, answer 200, then relay bytes both ways.
async fn tunnel(ctx: &Ctx, client: &mut TcpStream, early: Vec<u8>, req: &Request) {
    let Some((host, port)) = split_authority(&req.target, None) else {
        let _ = respond(client, 400, "CONNECT needs host:port").await;
        return;
    };
    let mut upstream = match open(ctx, host, port).await {
        Ok(s) => s,
        Err(e) => {
            let _ = refuse(client, host, port, &e).await;
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(client, &mut upstream).await;
}

/// One forward-proxy request and its response. `true`: the client connection can take the next request.
async fn forward(ctx: &Ctx, client: &mut TcpStream, cbuf: &mut Vec<u8>, req: &Request) -> bool {
    let target = match AbsoluteUri::parse(&req.target) {
        Ok(t) => t,
        Err(why) => {
            let _ = respond(client, 400, why).await;
            return false;
        }
    };
    let req_framing = match request_framing(&req.head.headers) {
        Ok(f) => f,
        Err(why) => {
            let _ = respond(client, 400, why).await;
            return false;
        }
    };
    let mut upstream = match open(ctx, target.host, target.port).await {
        Ok(s) => s,
        Err(e) => {
            let _ = refuse(client, target.host, target.port, &e).await;
            return false;
        }
    };
    let client_keep = req.keep_alive();
    let is_head = req.method == "HEAD";
    let up_head = req.upstream_head(&target);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut ubuf = Vec::new();
    let send = async {
        uw.write_all(&up_head).await.map_err(CopyError::Write)?;
        copy_body(&mut cr, cbuf, &mut uw, req_framing).await?;
        uw.flush().await.map_err(CopyError::Write)
    };
    let recv = relay_response(
        &mut ur,
        &mut ubuf,
        &mut cw,
        is_head,
        client_keep,
        ctx.opts.max_head,
    );
    tokio::pin!(send, recv);
    let mut sent = None;
    let keep = loop {
        tokio::select! {
            r = &mut send, if sent.is_none() => {
                if matches!(r, Err(CopyError::Read(_) | CopyError::Malformed)) {
                    // The client broke off or garbled its body: nothing sensible can follow.
                    return false;
                }
                sent = Some(r);
            }
            r = &mut recv => break r,
        }
    };
    // Keep the client connection only if the whole request body went out and the response ended by its framing.
    keep && matches!(sent, Some(Ok(())))
}

/// Reads the upstream response (passing interim 1xx heads on), rewrites its hop-by-hop headers and streams its
/// body. `true`: the response ended by its framing and the client may send another request.
async fn relay_response<R, W>(
    up: &mut R,
    ubuf: &mut Vec<u8>,
    client: &mut W,
    is_head: bool,
    client_keep: bool,
    max_head: usize,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let raw = match read_head(up, ubuf, max_head).await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => {
                let _ = respond(client, 502, "the server sent no valid response").await;
                return false;
            }
        };
        let Ok(head) = Head::parse(&raw) else {
            let _ = respond(client, 502, "the server sent a malformed response").await;
            return false;
        };
        let Some(status) = parse_status(&head.start) else {
            let _ = respond(client, 502, "the server sent a malformed status line").await;
            return false;
        };
        if (100..200).contains(&status) && status != 101 {
            if client.write_all(&raw).await.is_err() {
                return false;
            }
            continue;
        }
        let framing = if is_head || status == 101 || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            match response_framing(&head.headers) {
                Some(f) => f,
                None => {
                    let _ = respond(client, 502, "the server sent conflicting body lengths").await;
                    return false;
                }
            }
        };
        let keep = client_keep && status != 101 && !matches!(framing, Framing::UntilClose);
        let mut out = Vec::with_capacity(raw.len() + 32);
        out.extend_from_slice(head.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        let hop = head.hop_by_hop();
        for (name, value) in &head.headers {
            if !hop.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                push_header(&mut out, name, value);
            }
        }
        out.extend_from_slice(if keep {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if client.write_all(&out).await.is_err() {
            return false;
        }
        let done = copy_body(up, ubuf, client, framing).await.is_ok();
        let flushed = client.flush().await.is_ok();
        return keep && done && flushed;
    }
}

/// A refusal or failure as the client sees it.
async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    host: &str,
    port: u16,
    e: &OpenError,
) -> io::Result<()> {
    let (code, why) = match e {
        OpenError::Refused(why) => (403, why),
        OpenError::Unreachable(why, _) => (502, why),
        OpenError::Timeout(why) => (504, why),
    };
    let shown = match super::Host::parse(host) {
        Some(h) => h.to_string(),
        None => "(invalid host)".into(),
    };
    respond(w, code, &format!("{shown}:{port}: {why}")).await
}

/// A short plain-text answer from the proxy itself; the connection is closed after it.
async fn respond<W: AsyncWrite + Unpin>(w: &mut W, code: u16, text: &str) -> io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("thv-sandbox egress proxy: {text}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.flush().await?;
    w.shutdown().await
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Malformed,
    Io(#[allow(dead_code)] io::Error),
}

/// Reads up to and including the blank line that ends a head. Bytes after it stay in `buf`. `Ok(None)`: the peer
/// closed before sending anything.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<Vec<u8>>, HeadError> {
    let mut searched = 0;
    loop {
        // Empty lines before a request line are allowed (RFC 9112 §2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
            searched = 0;
        }
        if let Some(i) = find(&buf[searched..], b"\r\n\r\n") {
            let end = searched + i + 4;
            return Ok(Some(buf.drain(..end).collect()));
        }
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
        searched = buf.len().saturating_sub(3);
        let mut chunk = [0u8; 8192];
        let want = chunk.len().min(max - buf.len());
        let n = r.read(&mut chunk[..want]).await.map_err(HeadError::Io)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Malformed)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed head: start line and headers (values as bytes, unchanged).
#[derive(Debug)]
struct Head {
    start: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn parse(raw: &[u8]) -> Result<Head, &'static str> {
        let body = raw.strip_suffix(b"\r\n\r\n").ok_or("unterminated head")?;
        let mut lines = split_crlf(body);
        let start = lines.next().ok_or("empty head")?;
        if start.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
            return Err("invalid characters in the request or status line");
        }
        let start = String::from_utf8(start.to_vec()).map_err(|_| "invalid start line")?;
        let mut headers = Vec::new();
        for line in lines {
            if line.contains(&b'\n') {
                return Err("bare LF in head");
            }
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                return Err("folded header lines are not accepted");
            }
            if line.iter().any(|&b| b == b'\r' || b == 0) {
                return Err("bare CR or NUL in a header");
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or("header line without a colon")?;
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err("invalid header name");
            }
            let value = trim_ows(&line[colon + 1..]);
            headers.push((
                String::from_utf8(name.to_vec()).map_err(|_| "invalid header name")?,
                value.to_vec(),
            ));
        }
        Ok(Head { start, headers })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        values(&self.headers, name)
    }

    /// Hop-by-hop header names: the fixed ones and those the `Connection` header lists.
    fn hop_by_hop(&self) -> Vec<String> {
        let mut hop: Vec<String> = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "proxy-authenticate",
            "te",
            "upgrade",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        hop.extend(self.tokens("connection"));
        hop
    }

    /// Comma-separated tokens of all headers named `name`, lower-case.
    fn tokens(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.values(name) {
            for t in String::from_utf8_lossy(v).split(',') {
                let t = t.trim().to_ascii_lowercase();
                if !t.is_empty() {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// Lines separated by CRLF (a bare CR or LF stays inside a line, to be refused there).
fn split_crlf(mut s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match find(s, b"\r\n") {
            Some(i) => {
                let line = &s[..i];
                s = &s[i + 2..];
                Some(line)
            }
            None => {
                done = true;
                Some(s)
            }
        }
    })
}

fn values<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    version: String,
    head: Head,
}

impl Request {
    fn parse(raw: &[u8]) -> Result<Request, &'static str> {
        let head = Head::parse(raw)?;
        let mut parts = head.start.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed request line");
        };
        if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
            return Err("malformed request line");
        }
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
        }
        Ok(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            version: version.to_owned(),
            head,
        })
    }

    fn keep_alive(&self) -> bool {
        let mut tokens = self.head.tokens("connection");
        tokens.extend(self.head.tokens("proxy-connection"));
        if tokens.iter().any(|t| t == "close") {
            return false;
        }
        self.version == "HTTP/1.1" || tokens.iter().any(|t| t == "keep-alive")
    }

    /// The head sent upstream: origin-form target, `Host` from the URI, hop-by-hop headers removed, and
    /// `Connection: close` (each request gets a connection of its own).
    fn upstream_head(&self, t: &AbsoluteUri<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            format!("{} {} {}\r\n", self.method, t.path, self.version).as_bytes(),
        );
        push_header(&mut out, "Host", t.authority.as_bytes());
        let hop = self.head.hop_by_hop();
        for (name, value) in &self.head.headers {
            if name.eq_ignore_ascii_case("host") || hop.iter().any(|h| h.eq_ignore_ascii_case(name))
            {
                continue;
            }
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}

/// `http://authority/path?query` split up.
#[derive(Debug, PartialEq, Eq)]
struct AbsoluteUri<'a> {
    authority: &'a str,
    host: &'a str,
    port: u16,
    path: String,
}

impl<'a> AbsoluteUri<'a> {
    fn parse(target: &'a str) -> Result<AbsoluteUri<'a>, &'static str> {
        let Some((scheme, rest)) = target.split_once("://") else {
            return Err("this is a proxy: send requests with an absolute URL (http://host/path), or CONNECT");
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(
                "https:// URLs go through a CONNECT tunnel (HTTPS_PROXY), not as plain requests",
            );
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err("only http:// URLs can be forwarded; use CONNECT for anything else");
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err("user information in the URL is not accepted");
        }
        let (host, port) =
            split_authority(authority, Some(80)).ok_or("malformed host or port in the URL")?;
        let mut path = rest[end..].split('#').next().unwrap_or("").to_owned();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Ok(AbsoluteUri {
            authority,
            host,
            port,
            path,
        })
    }
}

/// `host:port`, `[v6]:port`, or (with a default port) without the port.
fn split_authority(a: &str, default_port: Option<u16>) -> Option<(&str, u16)> {
    let (host, port) = if a.starts_with('[') {
        let close = a.find(']')?;
        let (h, rest) = a.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return None,
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
        None => default_port?,
    };
    Some((host, port))
}

fn parse_status(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let _minor = parts
        .next()
        .filter(|m| m.len() == 1 && m.as_bytes()[0].is_ascii_digit())?;
    let code = parts.next()?;
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.parse().ok())?
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn content_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in values(headers, "content-length") {
        for part in v.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n: u64 = std::str::from_utf8(part)
                .map_err(|_| ())?
                .parse()
                .map_err(|_| ())?;
            if found.is_some_and(|f| f != n) {
                return Err(());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Whether the last transfer coding is `chunked` (`Some(false)`: there are codings, but not ending in chunked).
fn chunked(headers: &[(String, Vec<u8>)]) -> Option<bool> {
    let codings: Vec<String> = values(headers, "transfer-encoding")
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    codings.last().map(|last| last == "chunked")
}

fn request_framing(headers: &[(String, Vec<u8>)]) -> Result<Framing, &'static str> {
    let te = values(headers, "transfer-encoding").count();
    let cl = content_length(headers).map_err(|_| "invalid Content-Length")?;
    if te > 0 {
        if cl.is_some() {
            return Err("Transfer-Encoding together with Content-Length is not accepted");
        }
        let codings =
            values(headers, "transfer-encoding").map(|v| trim_ows(v).to_ascii_lowercase());
        let all_chunked: Vec<Vec<u8>> = codings.collect();
        if all_chunked.len() != 1 || all_chunked[0] != b"chunked" {
            return Err("only `Transfer-Encoding: chunked` is accepted on requests");
        }
        return Ok(Framing::Chunked);
    }
    Ok(Framing::Length(cl.unwrap_or(0)))
}

fn response_framing(headers: &[(String, Vec<u8>)]) -> Option<Framing> {
    match chunked(headers) {
        Some(true) => return Some(Framing::Chunked),
        Some(false) => return Some(Framing::UntilClose),
        None => {}
    }
    match content_length(headers) {
        Ok(Some(n)) => Some(Framing::Length(n)),
        Ok(None) => Some(Framing::UntilClose),
        Err(()) => None,
    }
}

#[derive(Debug)]
enum CopyError {
    /// The source failed or ended early.
    Read(#[allow(dead_code)] io::Error),
    /// The destination failed.
    Write(#[allow(dead_code)] io::Error),
    /// The chunked framing is broken.
    Malformed,
}

/// Forwards one body, as framed, from `r` (after what is already in `buf`) to `w`. Bytes after the body stay in
/// `buf`.
async fn copy_body<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    framing: Framing,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::Length(n) => copy_exact(r, buf, w, n).await,
        Framing::UntilClose => {
            w.write_all(buf).await.map_err(CopyError::Write)?;
            buf.clear();
            tokio::io::copy(r, w)
                .await
                .map(drop)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                        CopyError::Write(e)
                    }
                    _ => CopyError::Read(e),
                })
        }
        Framing::Chunked => {
            loop {
                let line = read_line(r, buf).await?;
                let size_part = line.split(|&b| b == b';').next().unwrap_or(&[]);
                let size_part = trim_ows(size_part);
                if size_part.is_empty()
                    || size_part.len() > 15
                    || !size_part.iter().all(u8::is_ascii_hexdigit)
                {
                    return Err(CopyError::Malformed);
                }
                let size = u64::from_str_radix(
                    std::str::from_utf8(size_part).map_err(|_| CopyError::Malformed)?,
                    16,
                )
                .map_err(|_| CopyError::Malformed)?;
                write_line(w, &line).await?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    let mut total = 0;
                    loop {
                        let t = read_line(r, buf).await?;
                        total += t.len() + 2;
                        if total > MAX_LINE * 8 {
                            return Err(CopyError::Malformed);
                        }
                        write_line(w, &t).await?;
                        if t.is_empty() {
                            return Ok(());
                        }
                    }
                }
                copy_exact(r, buf, w, size).await?;
                if !read_line(r, buf).await?.is_empty() {
                    return Err(CopyError::Malformed);
                }
                write_line(w, b"").await?;
            }
        }
    }
}

async fn copy_exact<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    mut n: u64,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    if take > 0 {
        w.write_all(&buf[..take]).await.map_err(CopyError::Write)?;
        buf.drain(..take);
        n -= take as u64;
    }
    let mut chunk = vec![0u8; 16 * 1024];
    while n > 0 {
        let want = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let got = r.read(&mut chunk[..want]).await.map_err(CopyError::Read)?;
        if got == 0 {
            return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        w.write_all(&chunk[..got]).await.map_err(CopyError::Write)?;
        n -= got as u64;
    }
    Ok(())
}

/// One CRLF-terminated line (without the CRLF), at most [`MAX_LINE`] bytes.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, CopyError> {
    let mut searched = 0;
    loop {
        if let Some(i) = find(&buf[searched..], b"\r\n") {
            let end = searched + i;
            let line: Vec<u8> = buf.drain(..end + 2).take(end).collect();
            if line.contains(&b'\n') || line.contains(&b'\r') {
                return Err(CopyError::Malformed);
            }
            return Ok(line);
        }
        if buf.len() > MAX_LINE {
            return Err(CopyError::Malformed);
        }
        searched = buf.len().saturating_sub(1);
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &[u8]) -> Result<(), CopyError> {
    w.write_all(line).await.map_err(CopyError::Write)?;
    w.write_all(b"\r\n").await.map_err(CopyError::Write)
}

/// The fuzz harness's entry ([`crate::fuzzing::egress_http`]): `data` is what a client sends on one connection.
/// Heads are read and parsed as [`session`] does, bodies forwarded by their framing into a sink, and each head is
/// also read as a response head. Checked on the way: a request the proxy accepts becomes an upstream head that
/// the proxy itself would accept again (nothing it forwards is malformed).
pub(crate) async fn fuzz(data: &[u8]) {
    let mut client = data;
    let mut buf = Vec::new();
    for _ in 0..8 {
        let Ok(Some(head)) = read_head(&mut client, &mut buf, 16 * 1024).await else {
            return;
        };
        if let Ok(h) = Head::parse(&head) {
            let _ = parse_status(&h.start);
            let _ = response_framing(&h.headers);
            let _ = h.hop_by_hop();
        }
        let Ok(req) = Request::parse(&head) else {
            return;
        };
        let _ = req.keep_alive();
        if req.method == "CONNECT" {
            let _ = split_authority(&req.target, None);
            return;
        }
        if let Ok(uri) = AbsoluteUri::parse(&req.target) {
            let upstream = req.upstream_head(&uri);
            if let Err(why) = Request::parse(&upstream) {
                panic!(
                    "the proxy would send upstream a head it refuses itself ({why}): {:?}",
                    String::from_utf8_lossy(&upstream)
                );
            }
        }
        let Ok(framing) = request_framing(&req.head.headers) else {
            return;
        };
        let mut sink = tokio::io::sink();
        if copy_body(&mut client, &mut buf, &mut sink, framing)
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris() {
        let u = AbsoluteUri::parse("http://Example.com:8080/a/b?c=d#frag").unwrap();
        assert_eq!(
            (u.authority, u.host, u.port, u.path.as_str()),
            ("Example.com:8080", "Example.com", 8080, "/a/b?c=d")
        );
        let u = AbsoluteUri::parse("http://[::1]/").unwrap();
        assert_eq!((u.host, u.port, u.path.as_str()), ("[::1]", 80, "/"));
        let u = AbsoluteUri::parse("HTTP://h?q").unwrap();
        assert_eq!((u.host, u.path.as_str()), ("h", "/?q"));
        for bad in [
            "/relative",
            "https://h/",
            "ftp://h/",
            "http://u@h/",
            "http://h:/",
            "http://h:99999/",
            "http://::1/",
            "http://[::1/",
            "http://:80/",
            "http://h:8a/",
        ] {
            assert!(AbsoluteUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("h:443", None), Some(("h", 443)));
        assert_eq!(split_authority("[::1]:22", None), Some(("[::1]", 22)));
        assert_eq!(split_authority("h", None), None);
        assert_eq!(split_authority("h", Some(80)), Some(("h", 80)));
        assert_eq!(split_authority("[::1]x", Some(80)), None);
        assert_eq!(split_authority("h:+1", None), None);
    }

    #[test]
    fn heads() {
        let r = Request::parse(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX-A:  v \r\n\r\n").unwrap();
        assert_eq!(
            r.head.headers,
            vec![
                ("Host".into(), b"h".to_vec()),
                ("X-A".into(), b"v".to_vec())
            ]
        );
        assert!(r.keep_alive());
        let r = Request::parse(b"GET http://h/ HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive());
        for bad in [
            &b"GET http://h/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n"[..],
            b"GET http://h/ HTTP/1.1\r\nX : a\r\n\r\n",
            b"GET http://h/ HTTP/1.1\nX: a\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET http://h/ HTTP/2\r\n\r\n",
            b"GET  http://h/ HTTP/1.1\r\n\r\n",
            b"G\x01T http://h/ HTTP/1.1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nNoColon\r\n\r\n",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn framings() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(request_framing(&h(&[])), Ok(Framing::Length(0)));
        assert_eq!(
            request_framing(&h(&[("Content-Length", "5")])),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            request_framing(&h(&[("content-length", "5"), ("Content-Length", "5")])),
            Ok(Framing::Length(5))
        );
        assert!(request_framing(&h(&[("Content-Length", "5"), ("Content-Length", "6")])).is_err());
        assert!(request_framing(&h(&[("Content-Length", "-1")])).is_err());
        assert_eq!(
            request_framing(&h(&[("Transfer-Encoding", "Chunked")])),
            Ok(Framing::Chunked)
        );
        assert!(request_framing(&h(&[
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "3")
        ]))
        .is_err());
        assert!(request_framing(&h(&[("Transfer-Encoding", "gzip, chunked")])).is_err());
        assert_eq!(
            response_framing(&h(&[("Transfer-Encoding", "gzip, chunked")])),
            Some(Framing::Chunked)
        );
        assert_eq!(
            response_framing(&h(&[("Transfer-Encoding", "gzip")])),
            Some(Framing::UntilClose)
        );
        assert_eq!(response_framing(&h(&[])), Some(Framing::UntilClose));
        assert_eq!(response_framing(&h(&[("Content-Length", "x")])), None);
        assert_eq!(parse_status("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status("HTTP/1.1 20 x"), None);
        assert_eq!(parse_status("SSH-2.0"), None);
    }

    #[tokio::test]
    async fn chunked_bodies_are_forwarded_by_their_framing() {
        let input = b"4;ext=1\r\nWiki\r\n0\r\nTrailer: x\r\n\r\nNEXT".to_vec();
        let mut r: &[u8] = &input;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        copy_body(&mut r, &mut buf, &mut out, Framing::Chunked)
            .await
            .unwrap();
        assert_eq!(out, b"4;ext=1\r\nWiki\r\n0\r\nTrailer: x\r\n\r\n");
        let rest = [buf.as_slice(), r].concat();
        assert_eq!(rest, b"NEXT");
        for bad in [
            &b"zz\r\n"[..],
            b"4\r\nWikiX\r\n",
            b"4\r\nWi",
            b"10000000000000000\r\n",
        ] {
            let mut r: &[u8] = bad;
            let mut out = Vec::new();
            assert!(
                copy_body(&mut r, &mut Vec::new(), &mut out, Framing::Chunked)
                    .await
                    .is_err()
            );
        }
    }
}
