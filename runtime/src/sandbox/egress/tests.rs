//! The proxy over real sockets on loopback: a real HTTP client (reqwest), raw HTTP and SOCKS5 clients, and small
//! test servers. Every test runs its own proxy and servers on ephemeral ports.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Generous bound for anything a test waits for: a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(20);

struct Proxy {
    handle: EgressHandle,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(outbound: Outbound) -> Proxy {
        Proxy::start_with(outbound, Options::default())
    }

    fn start_with(outbound: Outbound, opts: Options) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let rules = Rules::from_outbound(&outbound).unwrap();
        let handle = spawn_with(listener, rules, opts, move |line| {
            sink.lock().unwrap().push(line.to_owned())
        })
        .unwrap();
        Proxy { handle, log }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    fn logged(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

fn outbound(hosts: &[&str], ports: &[u16]) -> Outbound {
    Outbound {
        insecure_allow_all: false,
        allow_host: hosts.iter().map(|s| s.to_string()).collect(),
        allow_port: ports.iter().map(|&p| p as i64).collect(),
        ..Outbound::default()
    }
}

/// A small HTTP/1.1 server on 127.0.0.1 (one request per connection, `Connection: close`):
/// - `/redirect?to=URL` answers 302 to URL;
/// - `/echo` answers with the request body (Content-Length or chunked);
/// - `/stream` answers with a chunked body of three chunks;
/// - anything else answers `hello from PORT PATH`.
struct HttpServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    last_head: Arc<Mutex<String>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let last_head = Arc::new(Mutex::new(String::new()));
        let (h, l) = (hits.clone(), last_head.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (h, l) = (h.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve_http(conn, addr.port(), &h, &l);
                });
            }
        });
        HttpServer {
            addr,
            hits,
            last_head,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve_http(
    mut c: TcpStream,
    port: u16,
    hits: &AtomicUsize,
    last: &Mutex<String>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(WAIT))?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    hits.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    *last.lock().unwrap() = head.clone();
    let mut rest = buf[head_end..].to_vec();
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    let mut read_more = |rest: &mut Vec<u8>, want: usize| -> std::io::Result<()> {
        while rest.len() < want {
            let mut chunk = [0u8; 4096];
            let n = c.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    let body = if let Some(n) = header("content-length") {
        let n: usize = n.parse().unwrap();
        read_more(&mut rest, n)?;
        rest[..n].to_vec()
    } else if header("transfer-encoding").is_some() {
        // Decode chunked, simply.
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let want = rest.len() + 1;
                read_more(&mut rest, want)?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            rest.drain(..line_end + 2);
            if size == 0 {
                break;
            }
            read_more(&mut rest, size + 2)?;
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
        }
        body
    } else {
        Vec::new()
    };
    let mut c = c;
    if let Some(to) = path.strip_prefix("/redirect?to=") {
        write!(c, "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    } else if path == "/echo" {
        write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        c.write_all(&body)?;
    } else if path == "/stream" {
        c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
        for part in ["one ", "two ", "three"] {
            write!(c, "{:x}\r\n{part}\r\n", part.len())?;
            c.flush()?;
        }
        c.write_all(b"0\r\n\r\n")?;
    } else {
        let text = format!("hello from {port} {path}");
        write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
    }
    c.flush()
}

/// A TCP echo server (raw bytes, no protocol) on the given loopback address.
fn echo_server(ip: std::net::IpAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A real HTTP client configured to use the proxy for everything (it follows redirects itself).
fn client(proxy: &Proxy) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// (status, body) of a GET through the proxy.
fn get(proxy: &Proxy, url: &str) -> (u16, String) {
    block_on(async {
        let resp = client(proxy).get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    })
}

/// Reads everything until the peer closes (fails the test on a timeout).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the proxy should close the connection");
    out
}

#[test]
fn forward_get_to_allowed_address() {
    let server = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[server.addr.port()]));
    let (status, body) = get(&proxy, &server.url("/some/path?q=1"));
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("hello from {} /some/path?q=1", server.addr.port())
    );
    // The server saw an origin-form request with the proxy's hop-by-hop headers removed.
    let head = server.last_head.lock().unwrap().clone();
    assert!(
        head.starts_with("GET /some/path?q=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head}");
    assert_eq!(proxy.logged(), "");
}

#[test]
fn forward_get_to_allowed_name_resolving_to_loopback() {
    let server = HttpServer::start();
    let proxy = Proxy::start(outbound(&["localhost"], &[]));
    let (status, body) = get(
        &proxy,
        &format!("http://localhost:{}/x", server.addr.port()),
    );
    assert_eq!(
        (status, body),
        (200, format!("hello from {} /x", server.addr.port()))
    );
}

#[test]
fn refused_port_name_and_loopback_are_403_with_reason_and_logged() {
    let server = HttpServer::start();
    let other = HttpServer::start();
    let port = server.addr.port();

    // A port off the list.
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[port]));
    let (status, body) = get(&proxy, &other.url("/"));
    assert_eq!(status, 403);
    let target = format!("127.0.0.1:{}", other.addr.port());
    assert!(
        body.contains(&target) && body.contains("allow_port"),
        "{body}"
    );
    assert!(
        proxy.logged().contains(&target) && proxy.logged().contains("allow_port"),
        "{}",
        proxy.logged()
    );

    // A name off the list (the address it would resolve to is allowed, the name is not).
    let (status, body) = get(&proxy, &format!("http://localhost:{port}/"));
    assert_eq!(status, 403);
    assert!(
        body.contains(&format!("localhost:{port}")) && body.contains("allow_host"),
        "{body}"
    );

    // allow_port alone opens public hosts only: an allowed-port name resolving to loopback is refused.
    let proxy = Proxy::start(outbound(&[], &[port]));
    let (status, body) = get(&proxy, &format!("http://localhost:{port}/"));
    assert_eq!(status, 403);
    assert!(body.contains("loopback"), "{body}");
    let (status, _) = get(&proxy, &server.url("/"));
    assert_eq!(status, 403);
    assert!(
        proxy
            .logged()
            .contains(&format!("refused localhost:{port}")),
        "{}",
        proxy.logged()
    );

    // Nothing allowed at all.
    let proxy = Proxy::start(Outbound::default());
    let (status, body) = get(&proxy, &server.url("/"));
    assert_eq!(status, 403);
    assert!(body.contains("no outbound network access"), "{body}");

    assert_eq!(other.hits(), 0);
    assert_eq!(server.hits(), 0);
}

#[test]
fn a_followed_redirect_to_a_refused_destination_is_refused() {
    let allowed = HttpServer::start();
    let forbidden = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[allowed.addr.port()]));
    // The redirect to an allowed destination is followed by the client and works.
    let (status, body) = get(
        &proxy,
        &allowed.url(&format!("/redirect?to={}", allowed.url("/landed"))),
    );
    assert_eq!(
        (status, body),
        (200, format!("hello from {} /landed", allowed.addr.port()))
    );
    // The redirect to a refused one: the client follows it, the proxy refuses the new request.
    let (status, body) = get(
        &proxy,
        &allowed.url(&format!("/redirect?to={}", forbidden.url("/secret"))),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}", forbidden.addr.port())),
        "{body}"
    );
    assert_eq!(forbidden.hits(), 0);
    // The forbidden server is alive: it was the proxy that kept the client out.
    let mut direct = TcpStream::connect(forbidden.addr).unwrap();
    direct.set_read_timeout(Some(WAIT)).unwrap();
    direct
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(String::from_utf8_lossy(&read_to_close(&mut direct)).starts_with("HTTP/1.1 200"));
}

/// Reads one response with a Content-Length body from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn bodies_stream_both_ways_on_a_kept_alive_connection() {
    let server = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[server.addr.port()]));
    let mut s = proxy.connect();
    let url = server.url("/echo");
    // A Content-Length body larger than any buffer of the proxy.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write!(
        s,
        "POST {url} HTTP/1.1\r\nHost: wrong.example\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    s.write_all(&big).unwrap();
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Connection: keep-alive"), "{head}");
    assert_eq!(body, big);
    // The proxy set Host from the URL.
    assert!(server
        .last_head
        .lock()
        .unwrap()
        .contains(&format!("Host: {}", server.addr)));
    // Second request on the same connection, chunked.
    write!(s, "POST {url} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
    let (_, body) = read_response(&mut s);
    assert_eq!(body, b"hello world");
    // Third: a chunked response is passed on with its framing.
    write!(
        s,
        "GET {} HTTP/1.1\r\nConnection: close\r\n\r\n",
        server.url("/stream")
    )
    .unwrap();
    let rest = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(
        rest.contains("Transfer-Encoding: chunked") && rest.contains("Connection: close"),
        "{rest}"
    );
    assert!(
        rest.ends_with("4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"),
        "{rest}"
    );
    assert_eq!(server.hits(), 3);
}

#[test]
fn each_request_on_a_kept_alive_connection_is_checked() {
    let server = HttpServer::start();
    let forbidden = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[server.addr.port()]));
    let mut s = proxy.connect();
    write!(s, "GET {} HTTP/1.1\r\n\r\n", server.url("/a")).unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    write!(s, "GET {} HTTP/1.1\r\n\r\n", forbidden.url("/b")).unwrap();
    let reply = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(forbidden.hits(), 0);
}

#[test]
fn connect_tunnels_allowed_and_refuses_others() {
    let server = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[server.addr.port()]));
    let mut s = proxy.connect();
    // The request through the tunnel is sent together with the CONNECT head: early bytes are not lost.
    write!(
        s,
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\nGET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n",
        server.addr, server.addr
    )
    .unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{all}"
    );
    assert!(
        all.ends_with(&format!("hello from {} /tunnelled", server.addr.port())),
        "{all}"
    );

    let mut s = proxy.connect();
    write!(s, "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n").unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 403") && all.contains("127.0.0.1:1"),
        "{all}"
    );
    assert!(
        proxy
            .logged()
            .contains("refused 127.0.0.1:1: port 1 is not in allow_port"),
        "{}",
        proxy.logged()
    );
}

#[test]
fn https_through_a_real_client_uses_connect() {
    // reqwest sends https:// URLs as CONNECT: the tunnel opens (the TLS handshake then fails against a plain
    // server, which is the client's business), and a refused one answers 403 before any TLS.
    let server = HttpServer::start();
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[server.addr.port()]));
    let refused = server.addr.port() ^ 1;
    let err = block_on(async {
        client(&proxy)
            .get(format!("https://127.0.0.1:{refused}/"))
            .send()
            .await
    })
    .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(proxy
        .logged()
        .contains(&format!("refused 127.0.0.1:{}", server.addr.port() ^ 1)));
}

/// SOCKS5: greeting, then CONNECT to `addr` (as given by `atyp` bytes), returns the reply code.
fn socks_connect(proxy: &Proxy, dest: &[u8], port: u16) -> (TcpStream, u8) {
    let mut s = proxy.connect();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).unwrap();
    assert_eq!(sel, [5, 0]);
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(dest);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!((reply[0], reply[2], reply[3]), (5, 0, 1), "{reply:?}");
    (s, reply[1])
}

fn v4(a: Ipv4Addr) -> Vec<u8> {
    [&[1u8][..], &a.octets()].concat()
}

fn v6(a: Ipv6Addr) -> Vec<u8> {
    [&[4u8][..], &a.octets()].concat()
}

fn domain(n: &str) -> Vec<u8> {
    [&[3u8, n.len() as u8][..], n.as_bytes()].concat()
}

fn echo_through(mut s: TcpStream) {
    const MSG: &[u8] = b"ping \x00\xff raw bytes";
    s.write_all(MSG).unwrap();
    let mut back = vec![0u8; MSG.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, MSG);
}

#[test]
fn socks5_raw_tcp_to_allowed_port_works_and_others_are_refused() {
    let echo = echo_server(Ipv4Addr::LOCALHOST.into());
    let echo6 = echo_server(Ipv6Addr::LOCALHOST.into());
    let proxy = Proxy::start(outbound(
        &["127.0.0.1", "localhost", "::1"],
        &[echo.port(), echo6.port()],
    ));

    let (s, code) = socks_connect(&proxy, &v4(Ipv4Addr::LOCALHOST), echo.port());
    assert_eq!(code, 0);
    echo_through(s);
    let (s, code) = socks_connect(&proxy, &domain("localhost"), echo.port());
    assert_eq!(code, 0);
    echo_through(s);
    let (s, code) = socks_connect(&proxy, &v6(Ipv6Addr::LOCALHOST), echo6.port());
    assert_eq!(code, 0);
    echo_through(s);

    // A port off the list, a name off the list, an address off the list: 0x02, "not allowed by ruleset".
    let other = echo_server(Ipv4Addr::LOCALHOST.into());
    assert_eq!(
        socks_connect(&proxy, &v4(Ipv4Addr::LOCALHOST), other.port()).1,
        2
    );
    assert_eq!(
        socks_connect(&proxy, &domain("example.com"), echo.port()).1,
        2
    );
    assert_eq!(
        socks_connect(&proxy, &v4(Ipv4Addr::new(127, 0, 0, 2)), echo.port()).1,
        2
    );
    assert_eq!(
        socks_connect(
            &proxy,
            &v6("::ffff:127.0.0.2".parse().unwrap()),
            echo.port()
        )
        .1,
        2
    );
    let log = proxy.logged();
    assert!(
        log.contains(&format!("refused 127.0.0.1:{}: port", other.port())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "refused example.com:{}: host is not in allow_host",
            echo.port()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("refused 127.0.0.2:{}", echo.port())),
        "{log}"
    );
}

#[test]
fn socks5_protocol_errors() {
    let echo = echo_server(Ipv4Addr::LOCALHOST.into());
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[echo.port()]));
    // No acceptable method (only username/password offered).
    let mut s = proxy.connect();
    s.write_all(&[5, 1, 2]).unwrap();
    assert_eq!(read_to_close(&mut s), [5, 0xff]);
    // BIND is not supported.
    let mut s = proxy.connect();
    s.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .unwrap();
    assert_eq!(read_to_close(&mut s), [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Unknown address type.
    let mut s = proxy.connect();
    s.write_all(&[5, 1, 0, 5, 1, 0, 9, 1, 2]).unwrap();
    assert_eq!(read_to_close(&mut s), [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    // A domain that is not a name.
    let (_, code) = socks_connect(&proxy, &domain("a b/c"), echo.port());
    assert_eq!(code, 2);
    // Allowed but nothing listens: connection refused (0x05), and the log says so.
    let dead = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[dead_port]));
    assert_eq!(
        socks_connect(&proxy, &v4(Ipv4Addr::LOCALHOST), dead_port).1,
        5
    );
    assert!(
        proxy
            .logged()
            .contains(&format!("127.0.0.1:{dead_port}: cannot connect")),
        "{}",
        proxy.logged()
    );
}

#[test]
fn garbage_clients_are_answered_or_closed_and_the_proxy_keeps_serving() {
    let server = HttpServer::start();
    let opts = Options {
        handshake_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let proxy = Proxy::start_with(outbound(&["127.0.0.1"], &[server.addr.port()]), opts);

    // A TLS ClientHello straight at the proxy, and other junk ending in a blank line: 400.
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"\x00\r\n\r\n",
        b"GET\r\n\r\n",
    ] {
        let mut s = proxy.connect();
        s.write_all(junk).unwrap();
        let reply = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    // A head that never ends: 431 once it passes the limit.
    let mut s = proxy.connect();
    let _ = s.write_all(&vec![b'a'; 70 * 1024]);
    let reply = String::from_utf8_lossy(&read_to_close(&mut s)).to_string();
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // Silence, a half request, a half SOCKS greeting: closed after the handshake timeout.
    for partial in [
        &b""[..],
        b"GET http://127.0.0.1/ HTTP/1.1\r\n",
        b"\x05\x02\x00",
    ] {
        let mut s = proxy.connect();
        s.write_all(partial).unwrap();
        let got = read_to_close(&mut s);
        assert!(got.is_empty() || got == [5, 0], "{got:?}");
    }
    // Pseudo-random bytes (fixed seed): whatever happens, each connection ends.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..60 {
        let mut bytes = Vec::new();
        for _ in 0..(round * 7 % 300 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x >> 24) as u8);
        }
        if round % 3 == 0 {
            bytes[0] = 5;
        }
        let mut s = proxy.connect();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Still serving.
    let (status, _) = get(&proxy, &server.url("/after"));
    assert_eq!(status, 200);
}

#[test]
fn stop_closes_the_listener_and_open_connections() {
    let echo = echo_server(Ipv4Addr::LOCALHOST.into());
    let proxy = Proxy::start(outbound(&["127.0.0.1"], &[echo.port()]));
    let addr = proxy.addr();
    let (mut tunnel, code) = socks_connect(&proxy, &v4(Ipv4Addr::LOCALHOST), echo.port());
    assert_eq!(code, 0);
    proxy.handle.stop();
    let mut rest = Vec::new();
    assert_eq!(
        tunnel.read_to_end(&mut rest).unwrap(),
        0,
        "the tunnel should be closed"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener should be closed"
    );
}

#[test]
fn environment_points_everything_at_the_proxy() {
    let env = proxy_env("127.0.0.1:3128".parse().unwrap());
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert_eq!(get(k), Some("http://127.0.0.1:3128"), "{k}");
    }
    assert_eq!(get("NO_PROXY"), Some(""));
    assert_eq!(get("no_proxy"), Some(""));
    assert_eq!(get("NODE_USE_ENV_PROXY"), Some("1"));
    assert_eq!(proxy_env("[::1]:8".parse().unwrap())[0].1, "http://[::1]:8");
}

/// F3, the pieces: the host's own addresses, in any form, are refused before connecting (the end-to-end test with
/// real interfaces is `the_hosts_own_addresses_are_refused_by_every_rule` in tests/tests/egress.rs, which runs in
/// a network namespace of its own).
#[test]
fn the_hosts_own_addresses_are_refused() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let own = HostAddrs(vec![ip("127.0.0.1"), ip("11.0.0.2"), ip("2600::2")]);
    for (a, why) in [
        ("11.0.0.2", "11.0.0.2 is an address of this host"),
        (
            "::ffff:11.0.0.2",
            "::ffff:11.0.0.2 is an address of this host",
        ),
        (
            "64:ff9b::b00:2",
            "64:ff9b::b00:2 is an address of this host",
        ),
        (
            "::ffff:0:b00:2",
            "::ffff:0:b00:2 is an address of this host",
        ),
        ("2002:b00:2::1", "2002:b00:2::1 is an address of this host"),
        ("2600::2", "2600::2 is an address of this host"),
        ("0.0.0.0", "0.0.0.0 means this host"),
        ("0.1.2.3", "0.1.2.3 means this host"),
        ("::", ":: means this host"),
        ("::ffff:0.0.0.0", "::ffff:0.0.0.0 means this host"),
        ("64:ff9b::7f00:1", "64:ff9b::7f00:1 means this host"),
    ] {
        assert_eq!(own.refuses(ip(a)).as_deref(), Some(why), "{a}");
    }
    // Loopback is the rules' business (open only for an IP-literal or `localhost` entry), not refused here.
    for a in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(own.refuses(ip(a)), None, "{a}");
    }
    // The kernel's routes: an address of this host's loopback is local, a documentation address is not (only
    // looked up; nothing is sent).
    assert!(routed_here(ip("127.0.0.1")).unwrap());
    assert!(routed_here(ip("127.9.9.9")).unwrap());
    assert!(!routed_here(ip("192.0.2.200")).unwrap());
    assert!(!routed_here(ip("2001:db8::200")).unwrap());
    // Every address the host lists is refused (loopback aside), through the listing or the route.
    let now = HostAddrs::now().unwrap();
    assert!(now.0.contains(&ip("127.0.0.1")), "{:?}", now.0);
    for a in &now.0 {
        if !rules::is_loopback(*a) {
            assert!(now.refuses(*a).is_some(), "{a}");
        }
    }
}

/// F3, after connecting: a connection the host itself answered (peer = own local address) is refused, unless the
/// target was loopback, which the rules opened on purpose.
#[test]
fn a_connection_answered_by_this_host_is_refused() {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    block_on(async {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(answered_by_this_host(&s, addr.ip()), None);
        // Had the target been a public address (a rebinding or a race), the same connection is refused.
        let why = answered_by_this_host(&s, "11.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(why, "11.0.0.2 was answered by this host (127.0.0.1)");
    });
}
