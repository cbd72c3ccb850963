//! End-to-end: a server whose registry entry allows some egress reaches exactly that, through the proxy that
//! thv-sandbox serves from the host side into the sandbox's own network namespace — and nothing else.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;

use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{spawn_mcp, tool_json};

/// A line-echo server on the host's loopback: answers `echo:<line>` per connection.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() {
                    let _ = writeln!(w, "echo:{}", line.trim_end());
                }
            });
        }
    });
    port
}

async fn call(server: &thv_sandbox_e2e::McpProcess, tool: &str, args: Value) -> Value {
    let r = server.call(tool, args).await.expect(tool);
    tool_json(&r)
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_allows_exactly_what_the_entry_lists() {
    let Some((_registry, _layout, _built, image)) = common::registry_with_probe() else {
        return;
    };
    let allowed = echo_server();
    let other = echo_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = json!({"servers": {
        "egress-probe": {
            "description": "The probe with a narrow allowlist", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"],
            "permissions": {"network": {"outbound": {"allow_host": ["127.0.0.1", "localhost"], "allow_port": [allowed]}}}
        },
        "ports-only": {
            "description": "Any public host on one port", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"],
            "permissions": {"network": {"outbound": {"allow_port": [allowed]}}}
        }
    }});
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");

    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "egress-probe"]);
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");

    // Allowed: by address and by the allowed name, over HTTP CONNECT and SOCKS5 (raw TCP).
    for (protocol, host) in [
        ("http", "127.0.0.1"),
        ("socks5", "127.0.0.1"),
        ("http", "localhost"),
    ] {
        let r = call(
            &server,
            "via_proxy",
            json!({"protocol": protocol, "host": host, "port": allowed, "send": "hi"}),
        )
        .await;
        assert_eq!(r["reply"], "echo:hi", "{protocol} {host}: {r}");
    }
    // Refused: a port off the list, a name off the list (never resolved), with a reason the client sees.
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "127.0.0.1", "port": other, "send": "x"}),
    )
    .await;
    assert_eq!(r["http_status"], 403, "{r}");
    assert!(
        r["body"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("127.0.0.1:{other}")),
        "{r}"
    );
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "socks5", "host": "127.0.0.1", "port": other, "send": "x"}),
    )
    .await;
    assert_eq!(r["socks_reply"], 2, "not allowed by ruleset: {r}");
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "not-listed.invalid", "port": allowed, "send": "x"}),
    )
    .await;
    assert_eq!(r["http_status"], 403, "{r}");
    // Without the proxy nothing is reachable, and the sandbox has no resolver of its own.
    let r = server
        .call(
            "connect",
            json!({"address": format!("127.0.0.1:{allowed}"), "timeout_ms": 2000}),
        )
        .await
        .expect("connect");
    assert!(
        r.is_error.unwrap_or(false),
        "direct connection must fail: {r:?}"
    );
    let r = server
        .call("resolve", json!({"name": "example.com"}))
        .await
        .expect("resolve");
    assert!(r.is_error.unwrap_or(false), "no DNS inside: {r:?}");
    // The environment advertises the proxy.
    let env = call(&server, "getenv", json!({"name": "HTTPS_PROXY"})).await;
    assert_eq!(env["value"], "http://127.0.0.1:3128");
    let p = call(&server, "probe", json!({})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("refused 127.0.0.1:{other}")),
        "a refusal is logged: {}",
        done.stderr
    );
    // The server's own name lookup was refused and reported, with why it should go through the proxy.
    assert!(
        done.stderr
            .contains("refused DNS lookup of example.com (A)")
            && done
                .stderr
                .contains("instead of going through the egress proxy"),
        "the lookup is reported: {}",
        done.stderr
    );
    run.assert_nothing_left(p["namespaces"]["user"].as_str());

    // `allow_port` alone means public hosts: the host's loopback is not one of them.
    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "ports-only"]);
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    let r = call(
        &server,
        "via_proxy",
        json!({"protocol": "http", "host": "localhost", "port": allowed, "send": "x"}),
    )
    .await;
    assert_eq!(
        r["http_status"], 403,
        "loopback through a ports-only rule: {r}"
    );
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(None);
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy in a network namespace of its own, where the test may give `lo` addresses that stand for the host's
// own public addresses and point names at them through /etc/hosts: what no rule may open.

/// Set (to the test's name) in the child process that runs a test's body inside its own namespaces.
const NETNS_CHILD: &str = "THV_E2E_EGRESS_NETNS_CHILD";
/// Printed (to stderr) by the child when the body ran to the end (a filter that matched nothing would also exit 0).
const NETNS_DONE: &str = "egress-netns-body-done";
/// Bound for anything these tests wait for.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// iproute2's `ip`, looked for where Debian puts it (the tests may run under `env -i`).
fn ip_command() -> Option<&'static str> {
    ["/usr/bin/ip", "/bin/ip", "/usr/sbin/ip", "/sbin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

/// Runs `body` as the test `name` in a child process of this test binary that has new user, network and mount
/// namespaces (mapped to root there, so that it may set up its own `lo` and mount over `/etc/hosts`). Works
/// unprivileged and as root. The child's exit status is the result. A missing prerequisite skips, or fails under
/// `CI=true`.
fn in_own_netns(name: &str, body: fn()) {
    if std::env::var(NETNS_CHILD).as_deref() == Ok(name) {
        body();
        eprintln!("{NETNS_DONE}");
        return;
    }
    if !thv_sandbox_e2e::require(ip_command().is_some(), "iproute2's `ip`")
        || !thv_sandbox_e2e::require(
            std::path::Path::new("/proc/sys/net/ipv6").exists(),
            "IPv6 in the kernel",
        )
    {
        return;
    }
    let exe = std::env::current_exe().expect("the test executable");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_CHILD, name)
        .stdin(Stdio::null());
    let uid_map = format!("0 {} 1", nix::unistd::getuid()).into_bytes();
    let gid_map = format!("0 {} 1", nix::unistd::getgid()).into_bytes();
    // SAFETY: between fork and exec the closure only makes system calls (unshare, open, write, close) on memory
    // prepared before the fork; it allocates nothing and takes no lock.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            write_proc(c"/proc/self/setgroups", b"deny")?;
            write_proc(c"/proc/self/uid_map", &uid_map)?;
            write_proc(c"/proc/self/gid_map", &gid_map)
        });
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            thv_sandbox_e2e::require(false, &format!("user and network namespaces: {e}"));
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains(NETNS_DONE),
        "the test in its own namespaces failed ({}):\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Writes `data` to a `/proc` file with bare system calls (for `pre_exec`).
///
/// # Safety
/// Async-signal-safe: no allocation.
unsafe fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the descriptor is ours and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is not used after this.
    unsafe { libc::close(fd) };
    if n != data.len() as isize {
        return Err(err);
    }
    Ok(())
}

/// Runs `ip ARGS…` (in the child's own network namespace).
fn ip(args: &[&str]) {
    let ip = ip_command().expect("iproute2's `ip`");
    let out = std::process::Command::new(ip)
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts a file with `content` over `/etc/hosts` (in the child's own mount namespace); keep the returned file.
fn hosts_file(content: &str) -> tempfile::NamedTempFile {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make mounts private");
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(content.as_bytes()).expect("write hosts");
    f.flush().expect("flush");
    mount(
        Some(f.path()),
        "/etc/hosts",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind-mount over /etc/hosts");
    f
}

/// A listening socket, non-blocking, so that [`drain`] can count what reached it without serving anything.
fn listener(addr: &str) -> TcpListener {
    let l = TcpListener::bind(addr).expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    l
}

/// How many connections reached `l` (completed the handshake) since the last call.
fn drain(l: &TcpListener) -> usize {
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

/// The proxy, in process, with `outbound`; its log lines are collected.
struct Proxy {
    _handle: thv_sandbox_runtime::sandbox::egress::EgressHandle,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(outbound: Value) -> Proxy {
        use thv_sandbox_runtime::sandbox::egress::{spawn, Outbound, Rules};
        let o: Outbound = serde_json::from_value(outbound).expect("outbound");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("addr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let handle = spawn(l, Rules::from_outbound(&o).expect("rules"), move |line| {
            sink.lock().unwrap().push(line.to_owned())
        })
        .expect("proxy");
        Proxy {
            _handle: handle,
            addr,
            log,
        }
    }

    fn connect(&self) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(self.addr).expect("connect to the proxy");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    fn logged(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `head` and returns the response head, or what came before the connection closed or timed out.
    fn exchange(&self, head: &str) -> String {
        use std::io::Read;
        let mut s = self.connect();
        s.write_all(head.as_bytes()).expect("send");
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => got.push(b[0]),
                _ => break,
            }
        }
        let mut body = Vec::new();
        if got.starts_with(b"HTTP/1.1 403") {
            let _ = s.read_to_end(&mut body);
        }
        got.extend_from_slice(&body);
        String::from_utf8_lossy(&got).into_owned()
    }

    /// `CONNECT authority`: the response (head, and the body of a refusal).
    fn http_connect(&self, authority: &str) -> String {
        self.exchange(&format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        ))
    }

    /// `GET http://authority/` (absolute form): the response.
    fn http_get(&self, authority: &str) -> String {
        self.exchange(&format!(
            "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        ))
    }

    /// SOCKS5 CONNECT to `host` (an IPv4 or IPv6 address, else a domain name) and `port`: the reply code, or
    /// `None` when no reply came.
    fn socks(&self, host: &str, port: u16) -> Option<u8> {
        use std::io::Read;
        let mut s = self.connect();
        s.write_all(&[5, 1, 0]).ok()?;
        let mut sel = [0u8; 2];
        s.read_exact(&mut sel).ok()?;
        assert_eq!(sel, [5, 0]);
        let mut req = vec![5, 1, 0];
        match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => {
                req.push(1);
                req.extend_from_slice(&a.octets());
            }
            Ok(std::net::IpAddr::V6(a)) => {
                req.push(4);
                req.extend_from_slice(&a.octets());
            }
            Err(_) => {
                req.extend_from_slice(&[3, host.len() as u8]);
                req.extend_from_slice(host.as_bytes());
            }
        }
        req.extend_from_slice(&port.to_be_bytes());
        s.write_all(&req).ok()?;
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).ok()?;
        Some(reply[1])
    }
}

/// F3: the host's own addresses, also public-looking ones, also through a name or in IPv4-mapped form, and
/// addresses the kernel routes to the host, are refused by a port-only rule and by `insecure_allow_all`, over
/// HTTP CONNECT, absolute-form HTTP and SOCKS5, before anything reaches a service listening on `0.0.0.0`/`::`.
#[test]
fn the_hosts_own_addresses_are_refused_by_every_rule() {
    in_own_netns(
        "the_hosts_own_addresses_are_refused_by_every_rule",
        hosts_own_addresses,
    );
}

fn hosts_own_addresses() {
    ip(&["link", "set", "lo", "up"]);
    // The review's addresses, and two that the classifier calls public, so that only the check against the host's
    // own addresses can refuse them.
    for a in ["192.0.2.2/32", "198.18.0.1/32", "11.0.0.2/32"] {
        ip(&["addr", "add", a, "dev", "lo"]);
    }
    for a in ["2001:db8::2/128", "2600::2/128"] {
        ip(&["-6", "addr", "add", a, "dev", "lo", "nodad"]);
    }
    // Whole prefixes delivered locally without being any interface's address.
    ip(&["route", "add", "local", "11.1.0.0/16", "dev", "lo"]);
    ip(&["-6", "route", "add", "local", "2600:1::/64", "dev", "lo"]);
    let _hosts = hosts_file("127.0.0.1 localhost\n11.0.0.2 own4.test\n2600::2 own6.test\n");

    let l4 = listener("0.0.0.0:0");
    let l6 = listener("[::]:0");
    let (p4, p6) = (
        l4.local_addr().unwrap().port(),
        l6.local_addr().unwrap().port(),
    );
    let targets: Vec<(&str, u16)> = vec![
        ("192.0.2.2", p4),
        ("198.18.0.1", p4),
        ("11.0.0.2", p4),
        ("11.1.0.9", p4),
        ("own4.test", p4),
        ("[2001:db8::2]", p6),
        ("[2600::2]", p6),
        ("[2600:1::9]", p6),
        ("own6.test", p6),
        ("[::ffff:192.0.2.2]", p4),
        ("[::ffff:11.0.0.2]", p4),
    ];
    // The set-up holds: every target is this host, and the listeners answer there.
    for (host, port) in [
        ("192.0.2.2", p4),
        ("198.18.0.1", p4),
        ("11.0.0.2", p4),
        ("11.1.0.9", p4),
        ("[2001:db8::2]", p6),
        ("[2600::2]", p6),
        ("[2600:1::9]", p6),
    ] {
        std::net::TcpStream::connect(format!("{host}:{port}"))
            .unwrap_or_else(|e| panic!("direct {host}:{port}: {e}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(drain(&l4) + drain(&l6), 7, "the direct connections");
    // And the proxy works here: an entry for the loopback address reaches the listener.
    let control = Proxy::start(json!({"allow_host": ["127.0.0.1"], "allow_port": [p4]}));
    let r = control.http_connect(&format!("127.0.0.1:{p4}"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(drain(&l4), 1, "the control connection through the proxy");

    for rule in [
        json!({"allow_port": [p4, p6]}),
        json!({"insecure_allow_all": true}),
    ] {
        let proxy = Proxy::start(rule.clone());
        for &(host, port) in &targets {
            let authority = format!("{host}:{port}");
            let r = proxy.http_connect(&authority);
            assert!(
                r.starts_with("HTTP/1.1 403"),
                "{rule} CONNECT {authority}: {r:?}"
            );
            let r = proxy.http_get(&authority);
            assert!(
                r.starts_with("HTTP/1.1 403"),
                "{rule} GET {authority}: {r:?}"
            );
            assert_eq!(
                proxy.socks(host, port),
                Some(2),
                "{rule} SOCKS5 {authority}: not allowed by ruleset"
            );
        }
        let log = proxy.logged();
        for (what, host) in [
            ("is an address of this host", "11.0.0.2"),
            ("is an address of this host", "[2600::2]"),
            ("is routed to this host", "11.1.0.9"),
            ("is routed to this host", "[2600:1::9]"),
            (
                "resolves to 11.0.0.2: 11.0.0.2 is an address of this host",
                "own4.test",
            ),
            ("is an address of this host", "[::ffff:11.0.0.2]"),
            ("is documentation", "[2001:db8::2]"),
            ("is benchmarking", "198.18.0.1"),
        ] {
            assert!(
                log.lines()
                    .any(|l| l.contains(&format!("refused {host}:")) && l.contains(what)),
                "{rule}: no refusal of {host} saying {what:?} in:\n{log}"
            );
        }
    }
    // Not even an entry for the address itself opens one of the host's own.
    let literals: Vec<&str> = targets
        .iter()
        .map(|(h, _)| *h)
        .filter(|h| !h.ends_with(".test"))
        .collect();
    let proxy = Proxy::start(json!({"allow_host": literals, "allow_port": [p4, p6]}));
    for &(host, port) in targets.iter().filter(|(h, _)| literals.contains(h)) {
        let authority = format!("{host}:{port}");
        let r = proxy.http_connect(&authority);
        assert!(
            r.starts_with("HTTP/1.1 403")
                && (r.contains("is an address of this host")
                    || r.contains("is routed to this host")),
            "entry {host}: CONNECT {authority}: {r:?}"
        );
        assert_eq!(proxy.socks(host, port), Some(2), "entry {host}: SOCKS5");
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        drain(&l4),
        0,
        "a refused destination reached the IPv4 listener"
    );
    assert_eq!(
        drain(&l6),
        0,
        "a refused destination reached the IPv6 listener"
    );
}

/// F6: an exact `allow_host` name that resolves to loopback (here through /etc/hosts, standing in for DNS) opens
/// nothing there; `localhost` and the IP literal do.
#[test]
fn a_name_resolving_to_loopback_opens_nothing() {
    in_own_netns(
        "a_name_resolving_to_loopback_opens_nothing",
        name_resolving_to_loopback,
    );
}

fn name_resolving_to_loopback() {
    ip(&["link", "set", "lo", "up"]);
    let _hosts = hosts_file("127.0.0.1 localhost\n127.0.0.1 loopy.test\n");
    let l = listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();

    let proxy = Proxy::start(json!({"allow_host": ["loopy.test"]}));
    let authority = format!("loopy.test:{port}");
    let r = proxy.http_connect(&authority);
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("a host name never opens"),
        "CONNECT {authority}: {r:?}"
    );
    let r = proxy.http_get(&authority);
    assert!(r.starts_with("HTTP/1.1 403"), "GET {authority}: {r:?}");
    assert_eq!(
        proxy.socks("loopy.test", port),
        Some(2),
        "SOCKS5 {authority}"
    );
    assert!(
        proxy.logged().contains(&format!(
            "refused loopy.test:{port}: resolves to 127.0.0.1: 127.0.0.1 is loopback, which a host name never opens"
        )),
        "{}",
        proxy.logged()
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(drain(&l), 0, "a name resolving to loopback reached it");

    // `localhost` and the address itself still open loopback.
    for (entry, host) in [("localhost", "localhost"), ("127.0.0.1", "127.0.0.1")] {
        let proxy = Proxy::start(json!({ "allow_host": [entry] }));
        let r = proxy.http_connect(&format!("{host}:{port}"));
        assert!(r.starts_with("HTTP/1.1 200"), "{entry}: {r:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(drain(&l), 2);
}

/// `via_proxy` over HTTP to the host's `127.0.0.1:port`.
async fn reach(server: &thv_sandbox_e2e::McpProcess, port: u16) -> Value {
    let args = json!({"protocol": "http", "host": "127.0.0.1", "port": port, "send": "hi"});
    call(server, "via_proxy", args).await
}

/// ux review (a) 9: `--allow-host HOST[:PORT]` and `--allow-port PORT` (and the configuration file's `allow_hosts`)
/// open egress without a profile file, through the same proxy, on top of what the entry allows and never wider
/// than they say; `inspect` shows them.
#[tokio::test(flavor = "multi_thread")]
async fn allow_host_flags_open_exactly_their_destination_through_the_proxy() {
    let Some((_registry, _layout, _built, image)) = common::registry_with_probe() else {
        return;
    };
    let allowed = echo_server();
    let other = echo_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = json!({"servers": {
        "no-network": {
            "description": "The probe, no permissions", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"]
        },
        "one-port": {
            "description": "The probe with one local port", "image": image, "transport": "stdio",
            "tier": "Community", "status": "Active", "tools": ["probe"],
            "permissions": {"network": {"outbound": {"allow_host": ["127.0.0.1"], "allow_port": [allowed]}}}
        }
    }});
    let file = dir.path().join("registry.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");
    let flag = format!("127.0.0.1:{allowed}");

    // `inspect` shows what the flag adds.
    let run = Run::new();
    let out = run
        .cli(
            &cache,
            &[
                "inspect",
                "--profile",
                "--registry",
                &file,
                "no-network",
                "--allow-host",
                &flag,
            ],
        )
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "added by --allow-host/--allow-port: 127.0.0.1:{allowed}"
        )),
        "{text}"
    );

    // `insecure_allow_all` overrides a profile's `allow_port`: the ports are not shown as if they narrowed it.
    let all = dir.path().join("all.json");
    std::fs::write(
        &all,
        r#"{"network": {"outbound": {"insecure_allow_all": true, "allow_port": [443]}}}"#,
    )
    .unwrap();
    let out = run
        .cli(
            &cache,
            &[
                "inspect",
                "--profile",
                "--permission-profile",
                all.to_str().unwrap(),
                "--registry",
                &file,
                "no-network",
            ],
        )
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        code(out.status),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("any public destination on any port (insecure_allow_all)")
            && !text.contains("ports 443"),
        "{text}"
    );

    // A server with no network at all reaches exactly the flag's host and port.
    let mut cmd = run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file,
            "no-network",
            "--allow-host",
            &flag,
        ],
    );
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    assert_eq!(reach(&server, allowed).await["reply"], "echo:hi");
    assert_eq!(reach(&server, other).await["http_status"], 403);
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    run.assert_nothing_left(None);

    // On top of an entry's list: the entry's port stays, the flag's is added (the entry's `allow_port` does
    // not narrow it). `--allow-port` alone opens public hosts only, never the host's loopback.
    let run = Run::new();
    let second = format!("127.0.0.1:{other}");
    let mut cmd = run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file,
            "one-port",
            "--allow-host",
            &second,
        ],
    );
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    assert_eq!(reach(&server, allowed).await["reply"], "echo:hi");
    assert_eq!(reach(&server, other).await["reply"], "echo:hi");
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    let run = Run::new();
    let port = allowed.to_string();
    let mut cmd = run.cli(
        &cache,
        &[
            "run",
            "--registry",
            &file,
            "no-network",
            "--allow-port",
            &port,
        ],
    );
    cmd.stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    assert_eq!(reach(&server, allowed).await["http_status"], 403);
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);

    // The configuration file's `allow_hosts`, for every run.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("allow_hosts = [\"{flag}\"]\n")).unwrap();
    let run = Run::new();
    let mut cmd = run.cli(&cache, &["run", "--registry", &file, "no-network"]);
    cmd.env("THV_SANDBOX_CONFIG", &config)
        .stderr(Stdio::piped());
    let server = spawn_mcp(cmd).await.expect("initialize");
    assert_eq!(reach(&server, allowed).await["reply"], "echo:hi");
    assert_eq!(reach(&server, other).await["http_status"], 403);
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);

    // Mistakes are usage errors, before anything starts.
    for (args, says) in [
        (
            vec!["--allow-host", "http://127.0.0.1"],
            "is not HOST[:PORT]",
        ),
        (
            vec!["--allow-host", &flag, "--network", "host"],
            "--network host",
        ),
    ] {
        let mut all = vec!["run", "--registry", &file, "no-network"];
        all.extend(args.iter().copied());
        let out = run.cli(&cache, &all).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(out.status), 2, "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// Under the default `--network none`, a connection to an address (no lookup: the name server never sees it) is
/// refused at once with the same error as without thv-sandbox's default route (`ENETUNREACH`: nothing leaves, the
/// supervisor answers from the sandbox's own TUN device) and reported on stderr: one line per destination, however
/// often it is tried, next to the lookup of a name, and a closing summary naming `--allow-host` and `--network`.
#[tokio::test(flavor = "multi_thread")]
async fn under_network_none_a_connection_to_an_address_is_reported() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let asked = std::time::Instant::now();
    for address in [
        "192.0.2.1:443",
        "192.0.2.1:443",
        "[2001:db8::1]:443",
        "api.example.com:443",
    ] {
        let r = server
            .call("connect", json!({"address": address, "timeout_ms": 20000}))
            .await
            .expect("connect");
        assert!(
            r.is_error.unwrap_or(false),
            "{address} is not reached: {r:?}"
        );
        let said = format!("{:?}", r.content);
        if !address.starts_with("api.") {
            assert!(
                said.contains("ENETUNREACH"),
                "{address}: the kernel's own error: {said}"
            );
        }
    }
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "refused at once, never left to time out: {:?}",
        asked.elapsed()
    );
    let p = call(&server, "probe", json!({})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("network: refused"))
        .collect();
    let expected = [
        "thv-sandbox: network: refused connection to 192.0.2.1:443 (TCP): the sandbox has no network (--network none)",
        "thv-sandbox: network: refused connection to [2001:db8::1]:443 (TCP): the sandbox has no network (--network none)",
        "thv-sandbox: network: refused DNS lookup of api.example.com (A): the sandbox has no network (--network none)",
    ];
    for line in expected {
        assert_eq!(
            lines.iter().filter(|l| **l == line).count(),
            1,
            "once each: {line}\n{}",
            done.stderr
        );
    }
    let summary = lines
        .iter()
        .find(|l| l.contains("refused connections to"))
        .unwrap_or_else(|| panic!("a closing summary: {}", done.stderr));
    assert!(
        summary.contains(
            "refused connections to 2 destinations (192.0.2.1:443 (TCP), [2001:db8::1]:443 (TCP))"
        ) && summary.contains("--allow-host")
            && summary.contains("--network host"),
        "{summary}"
    );
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}

/// Under the default `--network none`, a name lookup is refused at once (nothing is resolved, nothing leaves) and
/// reported on stderr: one line for the name, and a closing summary naming what would allow it.
#[tokio::test(flavor = "multi_thread")]
async fn under_network_none_a_refused_lookup_is_reported() {
    let run = Run::new();
    let server = spawn_mcp(run.cmd("app", &[], &[]))
        .await
        .expect("initialize");
    let asked = std::time::Instant::now();
    for _ in 0..2 {
        let r = server
            .call("resolve", json!({"name": "api.example.com"}))
            .await
            .expect("resolve");
        assert!(r.is_error.unwrap_or(false), "nothing is resolved: {r:?}");
    }
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "the lookups fail fast: {:?}",
        asked.elapsed()
    );
    let p = call(&server, "probe", json!({})).await;
    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "{}", done.stderr);
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.contains("refused DNS lookup of api.example.com"))
        .collect();
    assert_eq!(
        lines,
        ["thv-sandbox: network: refused DNS lookup of api.example.com (A): the sandbox has no network (--network none)"],
        "one line for the name, however often it was asked: {}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("network: refused lookups of 1 name (api.example.com)")
            && done.stderr.contains("--permission-profile"),
        "a closing summary with what would allow it: {}",
        done.stderr
    );
    run.assert_nothing_left(p["namespaces"]["user"].as_str());
}
