//! Egress: the proxy through which a sandbox reaches the network its permission profile allows, and nothing else.
//!
//! # Design
//! The sandbox has its own network namespace with only `lo` (and `sandbox::unreachable`'s device, which answers
//! every connection with "unreachable"); it can reach nothing by itself and has no resolver.
//! The runner keeper, already inside that namespace, binds a listening TCP socket on `127.0.0.1:PORT` there and
//! hands the listening descriptor to the supervisor over the `SOCK_SEQPACKET` channel (`SCM_RIGHTS`). A listening
//! socket keeps the namespace it was created in: connections the sandbox makes to `127.0.0.1:PORT` are accepted by
//! the supervisor, which lives in the host's namespaces and makes the outbound connections from there. No veth, no
//! slirp, no helper process or container, no port on the host.
//!
//! [`spawn`] serves such a listener (from whichever namespace) on a thread of its own with a single-threaded tokio
//! runtime, until [`EgressHandle::stop`] or drop. One listener speaks three protocols, told apart by the first byte:
//! - `0x05`: **SOCKS5** (RFC 1928), no authentication, `CONNECT` only; destinations as a domain name, IPv4 or IPv6
//!   address. Raw TCP clients (databases, git, ssh) work through it.
//! - anything else: **HTTP/1.x** — `CONNECT host:port` tunnels (HTTPS), and forward-proxy requests in absolute form
//!   (`GET http://host/path`), bodies streamed both ways. Each forward request opens a fresh upstream connection
//!   (`Connection: close` upstream); the client connection is kept alive when the framing allows it, and every
//!   request on it is checked on its own — so a redirect the client follows is checked like any request (a proxy
//!   never follows redirects itself).
//!
//! # Rules ([`Rules`], from ToolHive's `permissions.network.outbound`)
//! - `allow_host`: `name` matches exactly; `.domain` matches the domain and all its subdomains (Squid's
//!   `dstdomain`); an IP address matches a request for that address. Matching ignores case and a trailing dot.
//! - `allow_port`: with `allow_host`, both must match; alone, any host on those ports.
//! - `insecure_allow_all`: any host, any port (it overrides `allow_port`, as in ToolHive).
//! - Nothing listed: nothing allowed.
//!
//! Then names are resolved here, on the host side, and every address is classified ([`classify`]): public
//! addresses are allowed; loopback, private, link-local, CGNAT, unique-local, site-local, unspecified and the other
//! special-purpose ranges that are not globally reachable (documentation, benchmarking, local-use NAT64...; also in
//! IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 and 6to4 form) only when the request is an IP literal and
//! an `allow_host` entry names that address, and loopback also when the request and an entry are both
//! `localhost` ([`LocalAccess`]). A host **name** never opens them, exact or `.domain`: whoever controls its DNS
//! could otherwise point it at the host's loopback or LAN. Multicast, broadcast and reserved addresses are never
//! reached. The connection goes to one of the exact addresses that were checked; nothing is resolved twice.
//!
//! An allowed loopback destination means the **host's** loopback, reached through the proxy.
//!
//! No rule reaches the host itself other than through loopback: the proxy connects from the host's network
//! namespace, where an address of any of the host's interfaces leads to the services listening there (on
//! `0.0.0.0`/`::` too). So, whatever its class, an address of an interface (listed when the connection is opened),
//! an unspecified address, or one the kernel routes to this host (a `local` route) is refused before connecting,
//! also when carried in an IPv4-mapped, NAT64, 6to4 or similar form; and a connection whose peer turns out to be
//! the host itself (its own local address, loopback, or an interface address) is closed and refused.
//!
//! # Refusals
//! HTTP: `403 Forbidden` with a one-line text body naming `host:port` and the reason (`502`/`504` when the
//! destination is allowed but cannot be reached). SOCKS5: reply `0x02` ("connection not allowed by ruleset").
//! Every refusal is also reported through the `log` callback with `host:port` and the reason.
//!
//! # Limits
//! Request and response heads are bounded ([`Options::max_head`]); a client must complete its request head or SOCKS
//! handshake within [`Options::handshake_timeout`]; resolution and connecting are bounded in time too; at most
//! [`Options::max_connections`] client connections are served at once. Established tunnels and bodies have no idle
//! timeout (event streams may be quiet for long).
//!
//! # The sandbox's environment
//! [`proxy_env`]: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` (as `http://`, which more clients understand than
//! `socks5h://`), their lower-case forms, an empty `NO_PROXY` (loopback must go through the proxy too: inside the
//! sandbox, loopback is the sandbox's own), and `NODE_USE_ENV_PROXY=1` for Node's built-in `fetch`. Clients that
//! never proxy loopback (Go's `net/http` skips `localhost`/`127.0.0.1`) reach the sandbox's own loopback instead,
//! where nothing but the proxy listens.

pub(crate) mod http;
pub(crate) mod rules;
pub(crate) mod socks;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};

pub use rules::{
    classify, AddrClass, AllowRule, Decision, Host, LocalAccess, Outbound, Rules, RulesError,
};

/// The port the proxy listens on inside a sandbox (`127.0.0.1:PROXY_PORT` in the sandbox's own network namespace,
/// so it can never collide with anything on the host). Fixed, so the environment can be written into the spec
/// before the namespace exists. A server that binds the same port itself gets `EADDRINUSE`; it cannot share the
/// socket (it is bound without `SO_REUSEPORT`).
pub const PROXY_PORT: u16 = 3128;

/// Limits of the proxy. [`Options::default`] suits a sandbox.
#[derive(Debug, Clone)]
pub struct Options {
    /// A client must complete its request head (or SOCKS handshake) within this time, also between keep-alive
    /// requests.
    pub handshake_timeout: Duration,
    /// Resolving a name.
    pub resolve_timeout: Duration,
    /// Connecting to one address.
    pub connect_timeout: Duration,
    /// Largest request or response head (request line or status line and headers).
    pub max_head: usize,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            handshake_timeout: Duration::from_secs(30),
            resolve_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_head: 64 * 1024,
            max_connections: 256,
        }
    }
}

/// A running proxy. [`EgressHandle::stop`] (or drop) stops accepting and closes every connection.
pub struct EgressHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EgressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EgressHandle {
    /// The listener's address (in the namespace it was bound in).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the proxy: no more connections are accepted, open ones are closed. Returns when it has stopped.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EgressHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The log callback: one line per refusal or failure, without a trailing newline.
type Log = Box<dyn Fn(&str) + Send + Sync>;

/// What every connection needs.
struct Ctx {
    rules: Rules,
    opts: Options,
    log: Log,
}

/// Serves `listener` with the default [`Options`]. See [`spawn_with`].
pub fn spawn(
    listener: TcpListener,
    rules: Rules,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<EgressHandle> {
    spawn_with(listener, rules, Options::default(), log)
}

/// Serves `listener` (already bound and listening, in any network namespace) on a thread of its own until the
/// handle is stopped or dropped. Refusals and failures are reported through `log`, one line each.
pub fn spawn_with(
    listener: TcpListener,
    rules: Rules,
    opts: Options,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> io::Result<EgressHandle> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let ctx = Arc::new(Ctx {
        rules,
        opts,
        log: Box::new(log),
    });
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("thv-egress".into())
        .spawn(move || {
            rt.block_on(accept_loop(listener, ctx, rx));
            // Connection tasks (and resolutions in flight) are abandoned, not awaited: their sockets close now.
            rt.shutdown_background();
        })?;
    Ok(EgressHandle {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(ctx.opts.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let conn = tokio::select! {
            _ = &mut stop => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    serve(&ctx, stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                (ctx.log)(&format!("egress: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(ctx: &Ctx, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(ctx.opts.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == socks::VERSION {
        socks::serve(ctx, stream).await;
    } else {
        http::serve(ctx, stream).await;
    }
}

/// Closes a client connection gracefully: our side is shut down first, then whatever the client still sends is
/// read and dropped for a moment, so that an error answer is not lost to a reset caused by unread input.
async fn linger(s: &mut TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf).await {
            total += n;
            if n == 0 || total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Why [`open`] did not produce a connection.
#[derive(Debug)]
enum OpenError {
    /// The rules refuse it (already logged).
    Refused(String),
    /// The name does not resolve, or no address accepted the connection (already logged).
    Unreachable(String, Option<io::ErrorKind>),
    /// Resolving or connecting took too long (already logged).
    Timeout(String),
}

/// Checks `host:port` against the rules, resolves it here, checks every address, and connects to an allowed one.
async fn open(ctx: &Ctx, host: &str, port: u16) -> Result<TcpStream, OpenError> {
    let shown = || match Host::parse(host) {
        Some(h) => format!("{h}:{port}"),
        None => format!("{:?}:{port}", host.chars().take(80).collect::<String>()),
    };
    let refuse = |why: String| {
        (ctx.log)(&format!("egress: refused {}: {why}", shown()));
        OpenError::Refused(why)
    };
    let Some(parsed) = Host::parse(host) else {
        return Err(refuse("not a host name or IP address".into()));
    };
    if let Err(why) = ctx.rules.check(&parsed, port) {
        return Err(refuse(why.to_string()));
    }
    let addrs: Vec<IpAddr> = match &parsed {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            match tokio::time::timeout(ctx.opts.resolve_timeout, lookup).await {
                Ok(Ok(it)) => {
                    let mut v: Vec<IpAddr> = Vec::new();
                    for sa in it {
                        if !v.contains(&sa.ip()) {
                            v.push(sa.ip());
                        }
                    }
                    v
                }
                Ok(Err(e)) => {
                    let why = format!("cannot resolve {name}: {e}");
                    (ctx.log)(&format!("egress: {}: {why}", shown()));
                    return Err(OpenError::Unreachable(why, None));
                }
                Err(_) => {
                    let why = format!("resolving {name} timed out");
                    (ctx.log)(&format!("egress: {}: {why}", shown()));
                    return Err(OpenError::Timeout(why));
                }
            }
        }
    };
    let targets = match ctx.rules.decide(&parsed, port, &addrs) {
        Decision::Allow(t) => t,
        Decision::Refuse(why) => return Err(refuse(why)),
    };
    // No rule opens the host's own addresses (other than loopback, which `decide` allowed only for an IP-literal
    // or `localhost` entry): the proxy connects from the host's network namespace, where they lead to services
    // listening on the host.
    let own = match HostAddrs::now() {
        Ok(own) => own,
        Err(e) => return Err(refuse(format!("cannot list this host's addresses: {e}"))),
    };
    let mut checked = Vec::new();
    let mut first_refusal = None;
    for sa in targets {
        match own.refuses(sa.ip()) {
            None => checked.push(sa),
            Some(why) => {
                first_refusal.get_or_insert((sa.ip(), why));
            }
        }
    }
    if checked.is_empty() {
        return Err(refuse(match (&parsed, first_refusal) {
            (Host::Name(_), Some((ip, why))) => format!("resolves to {ip}: {why}"),
            (Host::Ip(_), Some((_, why))) => why,
            (_, None) => "no address".into(),
        }));
    }
    let mut last = None;
    for sa in checked {
        match tokio::time::timeout(ctx.opts.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => {
                // Whatever happened since the check (an address added to an interface, a local route), a
                // connection that the host itself answered is closed.
                if let Some(why) = answered_by_this_host(&s, sa.ip()) {
                    drop(s);
                    return Err(refuse(why));
                }
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                last = Some(OpenError::Unreachable(
                    format!("cannot connect to {sa}: {e}"),
                    Some(e.kind()),
                ))
            }
            Err(_) => last = Some(OpenError::Timeout(format!("connecting to {sa} timed out"))),
        }
    }
    let err = last.unwrap_or_else(|| OpenError::Unreachable("no address".into(), None));
    if let OpenError::Unreachable(why, _) | OpenError::Timeout(why) = &err {
        (ctx.log)(&format!("egress: {}: {why}", shown()));
    }
    Err(err)
}

/// The host's own addresses, as its interfaces list them ([`nix::ifaddrs::getifaddrs`]) when a connection is
/// opened. Listing them takes a netlink round trip of some tens of microseconds, small beside resolving and
/// connecting, so it is done for every connection rather than cached (a cache would miss addresses added since).
struct HostAddrs(Vec<IpAddr>);

impl HostAddrs {
    fn now() -> io::Result<HostAddrs> {
        let mut v = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs()? {
            let Some(a) = ifa.address else { continue };
            if let Some(a) = a.as_sockaddr_in() {
                v.push(IpAddr::V4(a.ip()));
            } else if let Some(a) = a.as_sockaddr_in6() {
                v.push(IpAddr::V6(a.ip()));
            }
        }
        Ok(HostAddrs(v))
    }

    /// Why connecting to `ip` would reach this host, if it would. Loopback addresses are not judged here: the
    /// rules open them only for an IP-literal or `localhost` entry. Any other address is refused when it (or the
    /// IPv4 address it carries: mapped, NAT64, 6to4...) is an address of an interface, is unspecified (`0.0.0.0`,
    /// `::`, which the kernel takes as this host), or is routed to this host (a `local` route, such as
    /// `ip route add local 198.51.100.0/24 dev lo`).
    fn refuses(&self, ip: IpAddr) -> Option<String> {
        if rules::is_loopback(ip) {
            return None;
        }
        let mut candidates = vec![ip.to_canonical()];
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = rules::embedded_v4(v6) {
                candidates.push(IpAddr::V4(v4));
            }
        }
        for c in candidates {
            let unspecified = match c {
                IpAddr::V4(a) => a.octets()[0] == 0,
                IpAddr::V6(a) => a.is_unspecified(),
            };
            if unspecified || rules::is_loopback(c) {
                return Some(format!("{ip} means this host"));
            }
            if self.0.iter().any(|own| own.to_canonical() == c) {
                return Some(format!("{ip} is an address of this host"));
            }
            match routed_here(c) {
                Ok(false) => {}
                Ok(true) => return Some(format!("{ip} is routed to this host")),
                Err(e) => return Some(format!("cannot look up the route to {ip}: {e}")),
            }
        }
        None
    }
}

/// Whether the kernel routes `ip` to this host: the route it would use to reach `ip` is of type `local` (what
/// `ip route get` shows), as for every interface address and for a `local` route such as
/// `ip route add local 198.51.100.0/24 dev lo`. One `RTM_GETROUTE` request over rtnetlink; nothing is sent to `ip`.
/// `Ok(false)` when there is no route at all; an error otherwise (the caller refuses).
fn routed_here(ip: IpAddr) -> io::Result<bool> {
    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    const RTM_NEWROUTE: u16 = 24;
    const RTM_GETROUTE: u16 = 26;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const RTA_DST: u16 = 1;
    const RTN_LOCAL: u8 = 2;
    let (family, addr): (u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let len = 16 + 12 + 4 + addr.len();
    let mut req = Vec::with_capacity(len);
    // nlmsghdr: length, type, flags, sequence, port id.
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    req.extend_from_slice(&[family, (addr.len() * 8) as u8, 0, 0, 0, 0, 0, 0]);
    req.extend_from_slice(&0u32.to_ne_bytes());
    // rtattr RTA_DST.
    req.extend_from_slice(&((4 + addr.len()) as u16).to_ne_bytes());
    req.extend_from_slice(&RTA_DST.to_ne_bytes());
    req.extend_from_slice(&addr);
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    use std::os::fd::AsRawFd;
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    let reply = &buf[..n];
    if reply.len() < 16 + 12 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short rtnetlink reply",
        ));
    }
    match u16::from_ne_bytes([reply[4], reply[5]]) {
        // rtmsg.rtm_type.
        RTM_NEWROUTE => Ok(reply[16 + 7] == RTN_LOCAL),
        // nlmsgerr: a negative errno. No route (unreachable, prohibit, blackhole): nothing to reach.
        NLMSG_ERROR => match -i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
            libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL => Ok(false),
            errno => Err(io::Error::from_raw_os_error(errno)),
        },
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected rtnetlink reply type {t}"),
        )),
    }
}

/// After connecting to `target`: why the connection must not be used, if the host itself answered it — the peer
/// is the connection's own local address, a loopback address, or an address of an interface. Not for loopback
/// targets, which the rules opened on purpose.
fn answered_by_this_host(s: &TcpStream, target: IpAddr) -> Option<String> {
    if rules::is_loopback(target) {
        return None;
    }
    let (peer, local) = match (s.peer_addr(), s.local_addr()) {
        (Ok(p), Ok(l)) => (p.ip().to_canonical(), l.ip().to_canonical()),
        (Err(e), _) | (_, Err(e)) => return Some(format!("cannot check where {target} led: {e}")),
    };
    if peer == local || rules::is_loopback(peer) {
        return Some(format!("{target} was answered by this host ({peer})"));
    }
    match HostAddrs::now() {
        Ok(own) if own.0.iter().any(|a| a.to_canonical() == peer) => {
            Some(format!("{target} is an address of this host"))
        }
        Ok(_) => None,
        Err(e) => Some(format!("cannot list this host's addresses: {e}")),
    }
}

/// The environment that points a sandbox's clients at the proxy listening on `addr` (inside the sandbox).
pub fn proxy_env(addr: SocketAddr) -> Vec<(String, String)> {
    let url = format!("http://{addr}");
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((name.to_owned(), url.clone()));
        env.push((name.to_ascii_lowercase(), url.clone()));
    }
    // Set, and empty: an image's own NO_PROXY=localhost must not send loopback around the proxy.
    env.push(("NO_PROXY".into(), String::new()));
    env.push(("no_proxy".into(), String::new()));
    env.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    env
}
