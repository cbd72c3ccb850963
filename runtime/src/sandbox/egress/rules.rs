//! The egress rules: which `host:port` a sandbox may reach through the proxy, and which addresses a name may
//! lead to. Pure logic: resolution happens in the caller, which passes the addresses it got to [`Rules::decide`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// ToolHive's `permissions.network.outbound`, as the registry and permission profiles write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outbound {
    /// Any public destination on any port (overrides `allow_port`, as in ToolHive).
    #[serde(default)]
    pub insecure_allow_all: bool,
    /// Hosts: `name` exactly, `.domain` for the domain and all its subdomains, or an IP address.
    #[serde(default)]
    pub allow_host: Vec<String>,
    /// Ports. Alone (no `allow_host`): any public host on these ports.
    #[serde(default)]
    pub allow_port: Vec<i64>,
    /// Rules added by the user (`--allow-host HOST[:PORT]`, `--allow-port PORT`, the configuration file's
    /// `allow_hosts`/`allow_ports`), not part of ToolHive's format: each one allows its host (any port, or its
    /// port) or its port (any public host) by itself, on top of the lists above, never narrowing them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
}

/// One user-given egress rule: a host (`name`, `.domain` or an IP address) and/or a port; `None` is "any".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllowRule {
    /// The host, as written (checked like an `allow_host` entry); `None`: any public host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The port; `None`: any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl AllowRule {
    /// `HOST[:PORT]` as `--allow-host` takes it: `api.example.com`, `api.example.com:443`, `.example.com:443`,
    /// `10.0.0.5:8080`, `[::1]:3000`, `localhost:3000`.
    pub fn parse_host(s: &str) -> Result<AllowRule, RulesError> {
        let bad = || RulesError::AllowHost(s.to_owned());
        let (host, port) = match s.rsplit_once(':') {
            // `::1` or `fe80::1` without brackets: an address, no port.
            Some((h, _)) if h.contains(':') && !h.starts_with('[') => (s, None),
            Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => (h, Some(p)),
            _ => (s, None),
        };
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
        };
        parse_host_rule(host).ok_or_else(bad)?;
        Ok(AllowRule {
            host: Some(host.to_owned()),
            port,
        })
    }

    /// `PORT` as `--allow-port` takes it: any public host on that port.
    pub fn port(port: u16) -> Result<AllowRule, RulesError> {
        if port == 0 {
            return Err(RulesError::Port(0));
        }
        Ok(AllowRule {
            host: None,
            port: Some(port),
        })
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (Some(h), Some(p)) => write!(f, "{h}:{p}"),
            (Some(h), None) => write!(f, "{h} (any port)"),
            (None, Some(p)) => write!(f, "any public host on port {p}"),
            (None, None) => f.write_str("nothing"),
        }
    }
}

/// Why an `outbound` section cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    /// An `allow_host` entry is not a host name, `.domain` or IP address.
    #[error("allow_host entry `{0}` is not a host name, `.domain` or IP address")]
    Host(String),
    /// An `allow_port` entry is not in 1..=65535.
    #[error("allow_port entry `{0}` is not a port (1-65535)")]
    Port(i64),
    /// An `--allow-host` value is not `HOST[:PORT]`.
    #[error("`{0}` is not HOST[:PORT] (a host name, `.domain` or IP address, and a port 1-65535)")]
    AllowHost(String),
}

impl RulesError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            RulesError::Host(_) => {
                "write `api.example.com`, `.example.com` (the domain and its subdomains), \
                                    `127.0.0.1` or `::1`; no scheme, port, path or `*`"
                    .into()
            }
            RulesError::Port(_) => "list ports as numbers, e.g. `allow_port: [443]`".into(),
            RulesError::AllowHost(_) => {
                "write `api.example.com:443`, `.example.com` (the domain and its subdomains, any port), \
                 `127.0.0.1:8080` or `[::1]:3000`; no scheme, path or `*`"
                    .into()
            }
        }
    }
}

/// Why the rules refuse a destination before its addresses are looked at ([`Rules::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The profile allows no outbound access at all.
    #[error("no outbound network access is allowed for this server")]
    NothingAllowed,
    /// Port 0 was asked for.
    #[error("port 0 is not a destination")]
    PortZero,
    /// The port is not in `allow_port`.
    #[error("port {port} is not in allow_port")]
    PortNotAllowed {
        /// The port asked for.
        port: u16,
    },
    /// The host is not in `allow_host`.
    #[error("host is not in allow_host")]
    HostNotAllowed,
    /// Only user rules (`--allow-host`, `--allow-port`) allow anything, and none of them this destination.
    #[error("not allowed by --allow-host/--allow-port")]
    NotInAllowRules,
}

/// One `allow_host` entry, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// A name, matched exactly.
    Exact(String),
    /// `.domain`: the domain and all its subdomains.
    Domain(String),
    /// An IP address, matched against IP-literal requests.
    Ip(IpAddr),
}

/// The parsed rules. [`Rules::default`] allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    allow_all: bool,
    hosts: Vec<HostRule>,
    ports: Vec<u16>,
    /// [`Outbound::allow`]: (host, port), `None` meaning any.
    extra: Vec<(Option<HostRule>, Option<u16>)>,
    /// Host names the user configured as an index whose addresses may be local (see [`Rules::with_local_names`]).
    local_names: Vec<String>,
}

/// A destination as the client named it: a (normalized) name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as a client writes it (`example.com`, `1.2.3.4`, `[::1]`, `::1`). `None` for anything that is
    /// neither a plausible DNS name nor an IP address.
    pub fn parse(s: &str) -> Option<Host> {
        let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(v6) = inner {
            return v6.parse::<Ipv6Addr>().ok().map(|a| Host::Ip(IpAddr::V6(a)));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        valid_name(&name).then_some(Host::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
        }
    }
}

/// A DNS name: labels of letters, digits, `-` and `_` (seen in real names), 1..=63 bytes each, 253 in all.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What kind of address an IP is, for egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// A public address: allowed when host and port are.
    Public,
    /// The host's own or a local network, or a special-purpose range that is not globally reachable (loopback,
    /// private, link-local, CGNAT, unique-local, unspecified, documentation, benchmarking, local-use NAT64...):
    /// allowed only when an `allow_host` entry names the IP address itself, or, for loopback, when the request
    /// and an entry are both `localhost`. A host name never opens them.
    Local(&'static str),
    /// Never a TCP destination (multicast, broadcast, reserved, discard-only).
    Never(&'static str),
}

/// Which local addresses the `allow_host` entry that matched a request opens, besides public ones
/// ([`Rules::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAccess {
    /// None: public addresses only (no entry, a `.domain` entry, or an exact name other than `localhost`).
    None,
    /// Loopback addresses (`127.0.0.0/8`, `::1`): the request named `localhost` and an exact entry `localhost`
    /// allows it.
    Loopback,
    /// The requested IP address itself, whatever its class (except [`AddrClass::Never`]): the request is an IP
    /// literal and an entry names that address.
    Literal,
}

/// Classifies an address. IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002::/16`) forms are judged by the IPv4 address they carry; IPv4-translated (SIIT,
/// `::ffff:0:a.b.c.d`) forms are local at least, and never when the IPv4 address they carry is.
///
/// The ranges are those of IANA's IPv4 and IPv6 Special-Purpose Address Registries that are not globally
/// reachable, plus multicast and the deprecated site-local and 6to4-relay ranges. Where the registry lists a few
/// globally reachable exceptions inside a larger block (`192.0.0.9`, `192.0.0.10`, parts of `2001::/23`), the
/// whole block is local: nothing a sandbox needs lives there.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> AddrClass {
    let [o0, o1, o2, _] = a.octets();
    match (o0, o1, o2) {
        (0, _, _) => AddrClass::Local("\"this host\" (0.0.0.0/8)"),
        (127, _, _) => AddrClass::Local("loopback"),
        (10, _, _) => AddrClass::Local("private network"),
        (172, 16..=31, _) => AddrClass::Local("private network"),
        (192, 168, _) => AddrClass::Local("private network"),
        (169, 254, _) => AddrClass::Local("link-local"),
        (100, 64..=127, _) => AddrClass::Local("carrier-grade NAT (100.64.0.0/10)"),
        (192, 0, 0) => AddrClass::Local("IETF protocol assignments (192.0.0.0/24)"),
        (192, 0, 2) => AddrClass::Local("documentation (192.0.2.0/24)"),
        (198, 51, 100) => AddrClass::Local("documentation (198.51.100.0/24)"),
        (203, 0, 113) => AddrClass::Local("documentation (203.0.113.0/24)"),
        (198, 18..=19, _) => AddrClass::Local("benchmarking (198.18.0.0/15)"),
        (192, 88, 99) => AddrClass::Local("deprecated 6to4 relay anycast (192.88.99.0/24)"),
        (224..=239, _, _) => AddrClass::Never("multicast"),
        (240..=255, _, _) => AddrClass::Never("reserved or broadcast (240.0.0.0/4)"),
        _ => AddrClass::Public,
    }
}

/// The IPv4 address an IPv6 address carries in its last 32 bits.
fn low_v4(s: &[u16; 8]) -> Ipv4Addr {
    Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32)
}

fn classify_v6(a: Ipv6Addr) -> AddrClass {
    let s = a.segments();
    if a.is_unspecified() {
        return AddrClass::Local("unspecified (::)");
    }
    if a.is_loopback() {
        return AddrClass::Local("loopback");
    }
    if let Some(v4) = a.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (deprecated) and NAT64 well-known prefix: the last 32 bits are an IPv4 address.
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(low_v4(&s));
    }
    // IPv4-translated (SIIT, RFC 2765): a translator may deliver it to the IPv4 address it carries.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return match classify_v4(low_v4(&s)) {
            AddrClass::Public => AddrClass::Local("IPv4-translated (::ffff:0:0/96)"),
            embedded => embedded,
        };
    }
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    match s {
        // RFC 8215: a network's own NAT64 prefix (any length up to /96), so the embedded IPv4 address could sit
        // anywhere; the whole block is local.
        [0x64, 0xff9b, 1, ..] => return AddrClass::Local("local-use NAT64 (64:ff9b:1::/48)"),
        [0x100, 0, 0, 0, ..] => return AddrClass::Never("discard-only (100::/64)"),
        [0x100, 0, 0, 1, ..] => return AddrClass::Never("dummy prefix (100:0:0:1::/64)"),
        [0x2001, 0..=0x1ff, ..] => {
            return AddrClass::Local("IETF protocol assignments (2001::/23)")
        }
        [0x2001, 0xdb8, ..] => return AddrClass::Local("documentation (2001:db8::/32)"),
        [0x3fff, 0..=0xfff, ..] => return AddrClass::Local("documentation (3fff::/20)"),
        [0x5f00, ..] => return AddrClass::Local("segment routing (5f00::/16)"),
        _ => {}
    }
    match s[0] {
        0xfc00..=0xfdff => AddrClass::Local("unique-local (fc00::/7)"),
        0xfe80..=0xfebf => AddrClass::Local("link-local"),
        0xfec0..=0xfeff => AddrClass::Local("site-local (fec0::/10)"),
        0xff00..=0xffff => AddrClass::Never("multicast"),
        _ => AddrClass::Public,
    }
}

/// Whether `ip` is a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`), the only local addresses
/// an exact `localhost` entry opens.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The IPv4 address an IPv6 address leads to or carries, for the "is it this host" check: IPv4-mapped,
/// IPv4-compatible, NAT64 (`64:ff9b::/96`), IPv4-translated (`::ffff:0:0/96`) and 6to4 forms.
pub fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !a.is_unspecified() && !a.is_loopback()
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[..6] == [0, 0, 0, 0, 0xffff, 0]
    {
        return Some(low_v4(&s));
    }
    (s[0] == 0x2002).then(|| Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32))
}

/// The outcome of [`Rules::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect to these addresses (in order; each one checked).
    Allow(Vec<SocketAddr>),
    /// Refused, and why (for the client and the log).
    Refuse(String),
}

impl Rules {
    /// Parses ToolHive's `outbound` section. An empty section allows nothing.
    pub fn from_outbound(o: &Outbound) -> Result<Rules, RulesError> {
        let mut hosts = Vec::new();
        for h in &o.allow_host {
            hosts.push(parse_host_rule(h).ok_or_else(|| RulesError::Host(h.clone()))?);
        }
        let mut ports = Vec::new();
        for &p in &o.allow_port {
            match u16::try_from(p) {
                Ok(p) if p != 0 => ports.push(p),
                _ => return Err(RulesError::Port(p)),
            }
        }
        let mut extra = Vec::new();
        for a in &o.allow {
            let host = match &a.host {
                Some(h) => Some(parse_host_rule(h).ok_or_else(|| RulesError::Host(h.clone()))?),
                None => None,
            };
            if a.port == Some(0) {
                return Err(RulesError::Port(0));
            }
            extra.push((host, a.port));
        }
        Ok(Rules {
            allow_all: o.insecure_allow_all,
            hosts,
            ports,
            extra,
            local_names: Vec::new(),
        })
    }

    /// These exact host names (a package index the user configured, for the install sandbox of `npx://` and
    /// `uvx://`) may lead to local addresses as an IP literal would: a private index or mirror lives on the LAN,
    /// and a host may pin the public index's name to a local proxy in `/etc/hosts`. Never the host's own
    /// addresses (the proxy refuses those whatever the rules say). Nothing else changes.
    pub fn with_local_names(mut self, names: &[String]) -> Rules {
        self.local_names = names
            .iter()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether the rules allow anything at all (if not, no proxy is needed).
    pub fn allows_anything(&self) -> bool {
        self.allows_by_lists() || !self.extra.is_empty()
    }

    /// Whether ToolHive's lists (not the user's extra rules) allow anything.
    fn allows_by_lists(&self) -> bool {
        self.allow_all || !self.hosts.is_empty() || !self.ports.is_empty()
    }

    /// The first check, before resolution: host and port against the lists. `Ok` tells which local addresses
    /// the request may reach ([`LocalAccess`]): the requested address itself when it is an IP literal an entry
    /// names; loopback when the request and an exact entry are `localhost`; otherwise none. A host name other than
    /// `localhost` never opens local addresses, exact or not: whoever controls its DNS could point it at the
    /// host's loopback or LAN.
    pub fn check(&self, host: &Host, port: u16) -> Result<LocalAccess, Refused> {
        if !self.allows_anything() {
            return Err(Refused::NothingAllowed);
        }
        if port == 0 {
            return Err(Refused::PortZero);
        }
        let exact = self
            .hosts
            .iter()
            .any(|r| host_matches(r, host) == Some(true));
        let in_domain = self
            .hosts
            .iter()
            .any(|r| host_matches(r, host) == Some(false));
        let by_lists = if self.allow_all {
            Ok(exact)
        } else if !self.allows_by_lists() {
            Err(Refused::NotInAllowRules)
        } else if !self.ports.is_empty() && !self.ports.contains(&port) {
            Err(Refused::PortNotAllowed { port })
        } else if !self.hosts.is_empty() && !exact && !in_domain {
            Err(Refused::HostNotAllowed)
        } else {
            Ok(exact)
        };
        // The user's rules add to the lists: the best match among those whose port fits (an exact one opens
        // what an exact `allow_host` entry opens).
        let by_user = self
            .extra
            .iter()
            .filter(|(_, p)| p.is_none_or(|p| p == port))
            .filter_map(|(h, _)| match h {
                None => Some(false),
                Some(rule) => host_matches(rule, host),
            })
            .max();
        let exact = match (by_lists, by_user) {
            (Ok(e), user) => e || user == Some(true),
            (Err(_), Some(user)) => user,
            (Err(why), None) => return Err(why),
        };
        Ok(match host {
            _ if !exact => LocalAccess::None,
            Host::Ip(_) => LocalAccess::Literal,
            Host::Name(n) if n == "localhost" => LocalAccess::Loopback,
            Host::Name(n) if self.local_names.iter().any(|l| l == n) => LocalAccess::Literal,
            Host::Name(_) => LocalAccess::None,
        })
    }

    /// The whole decision, given the addresses the host resolved to (for an IP literal: itself). Addresses that
    /// are not allowed are dropped; if none is left, the destination is refused with the first reason.
    ///
    /// This is the rules alone: the caller also refuses the host's own interface addresses (see `egress::open`).
    pub fn decide(&self, host: &Host, port: u16, resolved: &[IpAddr]) -> Decision {
        let access = match self.check(host, port) {
            Ok(access) => access,
            Err(why) => return Decision::Refuse(why.to_string()),
        };
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for &ip in resolved {
            let why = match classify(ip) {
                AddrClass::Public => None,
                AddrClass::Local(_) if access == LocalAccess::Literal => None,
                AddrClass::Local(_) if access == LocalAccess::Loopback && is_loopback(ip) => None,
                AddrClass::Local(kind) => Some(match host {
                    Host::Ip(_) => format!(
                        "{ip} is {kind}, which only an allow_host entry for that IP address opens"
                    ),
                    Host::Name(_) => format!(
                        "{ip}: {ip} is {kind}, which a host name never opens (whoever controls its DNS \
                         could point it at this host); only an allow_host entry for the IP address does \
                         (or `localhost`, for loopback)"
                    ),
                }),
                AddrClass::Never(kind) => Some(format!("{ip} is {kind}")),
            };
            match why {
                None => allowed.push(SocketAddr::new(ip, port)),
                Some(w) => {
                    first_refusal.get_or_insert(w);
                }
            }
        }
        if allowed.is_empty() {
            return Decision::Refuse(match (host, first_refusal) {
                (Host::Name(_), Some(why)) => format!("resolves to {why}"),
                (Host::Ip(_), Some(why)) => why,
                (_, None) => "the name has no address".into(),
            });
        }
        Decision::Allow(allowed)
    }
}

/// Whether `rule` matches `host`: `Some(true)` exactly (a name or an IP address), `Some(false)` as a
/// `.domain`, `None` not at all.
fn host_matches(rule: &HostRule, host: &Host) -> Option<bool> {
    match (rule, host) {
        (HostRule::Exact(e), Host::Name(n)) if e == n => Some(true),
        (HostRule::Ip(e), Host::Ip(ip)) if same_ip(*e, *ip) => Some(true),
        (HostRule::Domain(d), Host::Name(n))
            if n == d
                || (n.len() > d.len()
                    && n.ends_with(d.as_str())
                    && n.as_bytes()[n.len() - d.len() - 1] == b'.') =>
        {
            Some(false)
        }
        _ => None,
    }
}

/// Two IPs are the same destination (an IPv4 address and its IPv4-mapped IPv6 form are).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn parse_host_rule(s: &str) -> Option<HostRule> {
    let s = s.trim();
    if let Some(d) = s.strip_prefix('.') {
        let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
        return valid_name(&d).then_some(HostRule::Domain(d));
    }
    match Host::parse(s)? {
        Host::Ip(ip) => Some(HostRule::Ip(ip)),
        Host::Name(n) => Some(HostRule::Exact(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(all: bool, hosts: &[&str], ports: &[i64]) -> Rules {
        Rules::from_outbound(&Outbound {
            insecure_allow_all: all,
            allow_host: hosts.iter().map(|s| s.to_string()).collect(),
            allow_port: ports.to_vec(),
            ..Outbound::default()
        })
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PUBLIC: &str = "93.184.215.14";

    #[test]
    fn user_rules_add_a_host_a_host_and_port_or_a_port_and_never_narrow_the_lists() {
        let name = |s: &str| Host::parse(s).unwrap();
        let with = |base: Outbound, flags: &[&str], ports: &[u16]| {
            let mut o = base;
            o.allow
                .extend(flags.iter().map(|f| AllowRule::parse_host(f).unwrap()));
            o.allow
                .extend(ports.iter().map(|p| AllowRule::port(*p).unwrap()));
            Rules::from_outbound(&o).unwrap()
        };
        // Alone: only what they name.
        let r = with(
            Outbound::default(),
            &["api.example.com:443", ".docs.example"],
            &[],
        );
        assert!(r.allows_anything());
        assert_eq!(
            r.check(&name("api.example.com"), 443),
            Ok(LocalAccess::None)
        );
        assert_eq!(
            r.check(&name("api.example.com"), 80),
            Err(Refused::NotInAllowRules)
        );
        assert_eq!(
            r.check(&name("other.example.com"), 443),
            Err(Refused::NotInAllowRules)
        );
        assert!(r.check(&name("a.docs.example"), 8080).is_ok());
        // A port alone: any host on it, public addresses only.
        let r = with(Outbound::default(), &[], &[8443]);
        assert_eq!(
            r.check(&name("anything.example"), 8443),
            Ok(LocalAccess::None)
        );
        assert!(r.check(&name("anything.example"), 443).is_err());
        // On top of a profile's lists: the profile's `allow_port` does not narrow the user's host, and the
        // user's port does not narrow the profile's hosts.
        let profile = Outbound {
            allow_host: vec!["api.github.com".into()],
            allow_port: vec![443],
            ..Outbound::default()
        };
        let r = with(profile, &["127.0.0.1:8080"], &[]);
        assert!(r.check(&name("api.github.com"), 443).is_ok());
        assert_eq!(
            r.check(&name("api.github.com"), 8080),
            Err(Refused::PortNotAllowed { port: 8080 })
        );
        // An exact IP opens that local address, as an `allow_host` entry does.
        assert_eq!(r.check(&name("127.0.0.1"), 8080), Ok(LocalAccess::Literal));
        assert!(matches!(
            r.decide(&name("127.0.0.1"), 8080, &[ip("127.0.0.1")]),
            Decision::Allow(_)
        ));
        let r = with(
            Outbound::default(),
            &["localhost:3000", "[::1]:3001", "::1"],
            &[],
        );
        assert_eq!(r.check(&name("localhost"), 3000), Ok(LocalAccess::Loopback));
        assert_eq!(r.check(&name("[::1]"), 3001), Ok(LocalAccess::Literal));
        assert_eq!(r.check(&name("[::1]"), 9), Ok(LocalAccess::Literal));
    }

    #[test]
    fn allow_host_values_are_host_and_port() {
        let ok = |s: &str| AllowRule::parse_host(s).unwrap();
        assert_eq!(ok("a.example:443").port, Some(443));
        assert_eq!(ok("a.example").port, None);
        assert_eq!(ok("[::1]:3000").host.as_deref(), Some("[::1]"));
        assert_eq!(ok("::1").port, None);
        assert_eq!(ok(".example.com:80").host.as_deref(), Some(".example.com"));
        for bad in [
            "",
            "a.example:0",
            "a.example:x",
            "https://a.example",
            "a/b",
            "*.a",
            ":443",
            "[::1",
        ] {
            assert!(AllowRule::parse_host(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AllowRule::parse_host("a.example:99999").unwrap_err().to_string(),
            "`a.example:99999` is not HOST[:PORT] (a host name, `.domain` or IP address, and a port 1-65535)"
        );
        assert!(AllowRule::port(0).is_err());
    }

    #[test]
    fn each_refusal_before_resolution_says_which_list_refused() {
        let name = |s: &str| Host::parse(s).unwrap();
        let nothing = rules(false, &[], &[]);
        let err = nothing.check(&name("example.com"), 443).unwrap_err();
        assert_eq!(err, Refused::NothingAllowed);
        assert_eq!(
            err.to_string(),
            "no outbound network access is allowed for this server"
        );
        let listed = rules(false, &["example.com"], &[443]);
        let err = listed.check(&name("example.com"), 0).unwrap_err();
        assert_eq!(err.to_string(), "port 0 is not a destination");
        let err = listed.check(&name("example.com"), 80).unwrap_err();
        assert_eq!(err, Refused::PortNotAllowed { port: 80 });
        assert_eq!(err.to_string(), "port 80 is not in allow_port");
        let err = listed.check(&name("example.org"), 443).unwrap_err();
        assert_eq!(err.to_string(), "host is not in allow_host");
    }

    #[test]
    fn address_classes() {
        let local = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
        ];
        for a in local {
            assert!(
                matches!(classify(ip(a)), AddrClass::Local(_)),
                "{a} should be local"
            );
        }
        let never = [
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::1",
            "::ffff:224.0.0.1",
        ];
        for a in never {
            assert!(
                matches!(classify(ip(a)), AddrClass::Never(_)),
                "{a} should never be reached"
            );
        }
        let public = [
            PUBLIC,
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            "fbff::1",
        ];
        for a in public {
            assert_eq!(classify(ip(a)), AddrClass::Public, "{a} should be public");
        }
    }

    #[test]
    fn host_parsing() {
        assert_eq!(
            Host::parse("Example.COM."),
            Some(Host::Name("example.com".into()))
        );
        assert_eq!(Host::parse("[::1]"), Some(Host::Ip(ip("::1"))));
        assert_eq!(Host::parse("::1"), Some(Host::Ip(ip("::1"))));
        assert_eq!(Host::parse("10.0.0.1"), Some(Host::Ip(ip("10.0.0.1"))));
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "a/b",
            "user@host",
            "[1.2.3.4]",
            "[::1",
            "*.example.com",
            "a:80",
        ] {
            assert_eq!(Host::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Host::parse(&"a".repeat(64)), None);
    }

    #[test]
    fn parsing_rejects_bad_entries() {
        let bad_host = |h: &str| Outbound {
            allow_host: vec![h.into()],
            ..Default::default()
        };
        for h in [
            "*.example.com",
            "https://example.com",
            "example.com:443",
            "",
            ".",
            "exa mple.com",
        ] {
            assert_eq!(
                Rules::from_outbound(&bad_host(h)),
                Err(RulesError::Host(h.into()))
            );
        }
        for p in [0, -1, 65536] {
            let o = Outbound {
                allow_port: vec![p],
                ..Default::default()
            };
            assert_eq!(Rules::from_outbound(&o), Err(RulesError::Port(p)));
        }
        let o: Outbound =
            serde_json::from_str(r#"{"allow_host": [".GitHub.com"], "allow_port": [443]}"#)
                .unwrap();
        assert!(Rules::from_outbound(&o).is_ok());
        let o: Outbound = serde_json::from_str("{}").unwrap();
        assert!(!Rules::from_outbound(&o).unwrap().allows_anything());
    }

    /// (rules, host, port, resolved addresses, allowed?)
    #[test]
    fn decisions() {
        let gh = rules(false, &[".github.com", "api.example.com"], &[443]);
        let any443 = rules(false, &[], &[443]);
        let hosts_only = rules(false, &["api.example.com"], &[]);
        let all = rules(true, &[], &[443]);
        let local = rules(
            false,
            &["localhost", "127.0.0.1", "::1", ".corp.example"],
            &[],
        );
        let all_plus_local = rules(true, &["localhost"], &[]);
        let none = Rules::default();
        let name = |s: &str| Host::parse(s).unwrap();
        let cases: Vec<(&Rules, &str, u16, Vec<&str>, bool)> = vec![
            // Host matching: exact, and `.domain` for the domain and its subdomains, nothing else.
            (&gh, "github.com", 443, vec![PUBLIC], true),
            (&gh, "api.github.com", 443, vec![PUBLIC], true),
            (&gh, "a.b.github.com", 443, vec![PUBLIC], true),
            (&gh, "API.GitHub.com.", 443, vec![PUBLIC], true),
            (&gh, "evilgithub.com", 443, vec![PUBLIC], false),
            (&gh, "github.com.evil.net", 443, vec![PUBLIC], false),
            (&gh, "api.example.com", 443, vec![PUBLIC], true),
            (&gh, "www.api.example.com", 443, vec![PUBLIC], false),
            (&gh, "example.com", 443, vec![PUBLIC], false),
            // Ports.
            (&gh, "github.com", 80, vec![PUBLIC], false),
            (&hosts_only, "api.example.com", 8443, vec![PUBLIC], true),
            (&hosts_only, "other.example.com", 443, vec![PUBLIC], false),
            // allow_port alone: any public host on those ports.
            (&any443, "anything.example", 443, vec![PUBLIC], true),
            (&any443, "1.1.1.1", 443, vec!["1.1.1.1"], true),
            (&any443, "anything.example", 22, vec![PUBLIC], false),
            (&any443, "localhost", 443, vec!["127.0.0.1"], false),
            (&any443, "127.0.0.1", 443, vec!["127.0.0.1"], false),
            (
                &any443,
                "metadata.example",
                443,
                vec!["169.254.169.254"],
                false,
            ),
            (
                &any443,
                "::ffff:127.0.0.1",
                443,
                vec!["::ffff:127.0.0.1"],
                false,
            ),
            (&any443, "mc.example", 443, vec!["224.0.0.1"], false),
            // A name resolving to public and local addresses: only the public ones are used.
            (
                &any443,
                "mixed.example",
                443,
                vec!["10.0.0.1", PUBLIC],
                true,
            ),
            // insecure_allow_all: any public destination, any port (it overrides allow_port), nothing local.
            (&all, "x.example", 22, vec![PUBLIC], true),
            (&all, "x.example", 443, vec!["192.168.0.1"], false),
            (&all, "169.254.169.254", 80, vec!["169.254.169.254"], false),
            (&all, "[fd00::1]", 80, vec!["fd00::1"], false),
            (&all_plus_local, "localhost", 5432, vec!["127.0.0.1"], true),
            (&all_plus_local, "127.0.0.1", 5432, vec!["127.0.0.1"], false),
            // Local addresses: opened by an exact entry for the name or the address, not by a `.domain`.
            (&local, "localhost", 8080, vec!["127.0.0.1", "::1"], true),
            (&local, "127.0.0.1", 8080, vec!["127.0.0.1"], true),
            (
                &local,
                "::ffff:127.0.0.1",
                8080,
                vec!["::ffff:127.0.0.1"],
                true,
            ),
            (&local, "[::1]", 8080, vec!["::1"], true),
            (&local, "127.0.0.2", 8080, vec!["127.0.0.2"], false),
            // Odd spellings of loopback are names to us, resolved, and then refused as loopback.
            (&local, "127.1", 8080, vec!["127.0.0.1"], false),
            (&local, "2130706433", 8080, vec!["127.0.0.1"], false),
            (&any443, "0x7f.1", 443, vec!["127.0.0.1"], false),
            (&local, "db.corp.example", 5432, vec!["10.0.0.5"], false),
            (&local, "www.corp.example", 443, vec![PUBLIC], true),
            (&local, "no-address.corp.example", 443, vec![], false),
            // Nothing allowed.
            (&none, "example.com", 443, vec![PUBLIC], false),
            (&none, "localhost", 80, vec!["127.0.0.1"], false),
            // Port 0.
            (&all, "x.example", 0, vec![PUBLIC], false),
        ];
        for (r, h, port, addrs, want) in cases {
            let addrs: Vec<IpAddr> = addrs.into_iter().map(ip).collect();
            let got = r.decide(&name(h), port, &addrs);
            match (&got, want) {
                (Decision::Allow(list), true) => {
                    assert!(!list.is_empty());
                    for sa in list {
                        assert_eq!(sa.port(), port);
                        assert!(addrs.contains(&sa.ip()), "{h}: {sa} was not resolved");
                        let access = r.check(&name(h), port);
                        assert!(
                            classify(sa.ip()) == AddrClass::Public
                                || access == Ok(LocalAccess::Literal)
                                || (access == Ok(LocalAccess::Loopback) && is_loopback(sa.ip())),
                            "{h}: local {sa} allowed without an IP-literal or localhost entry"
                        );
                    }
                }
                (Decision::Refuse(why), false) => assert!(!why.is_empty()),
                _ => panic!("{r:?} {h}:{port} {addrs:?}: got {got:?}, wanted allowed={want}"),
            }
        }
    }

    #[test]
    fn refusal_reasons_name_the_cause() {
        let r = rules(false, &[".example.com"], &[443]);
        let h = Host::parse("api.example.com").unwrap();
        assert_eq!(
            r.decide(&h, 80, &[]),
            Decision::Refuse("port 80 is not in allow_port".into())
        );
        let other = Host::parse("example.org").unwrap();
        assert_eq!(
            r.decide(&other, 443, &[]),
            Decision::Refuse("host is not in allow_host".into())
        );
        match r.decide(&h, 443, &[ip("127.0.0.1")]) {
            Decision::Refuse(why) => assert!(why.contains("127.0.0.1 is loopback"), "{why}"),
            d => panic!("{d:?}"),
        }
        let mixed = r.decide(&h, 443, &[ip("10.0.0.1"), ip(PUBLIC)]);
        assert_eq!(
            mixed,
            Decision::Allow(vec![SocketAddr::new(ip(PUBLIC), 443)])
        );
    }

    /// F15: IANA's special-purpose ranges that are not globally reachable, and the embedded-IPv4 forms, are never
    /// public (so `allow_port` alone and `insecure_allow_all` never open them).
    #[test]
    fn special_purpose_ranges_are_not_public() {
        let local = [
            // IPv4 special-purpose registry.
            "192.0.0.0",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.0.255",
            "192.0.2.2",
            "192.0.2.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            // IPv6 special-purpose registry.
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1.1.1.1",
            "64:ff9b:1::1.1.1.1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::1",
            "2001:2::1",
            "2001:1ff:ffff::1",
            "2001:db8::2",
            "2001:db8:ffff::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "5f00::1",
            // SIIT (IPv4-translated), carrying a public or a local address.
            "::ffff:0:1.1.1.1",
            "::ffff:0:a00:1",
            "::ffff:0:127.0.0.1",
            // The new IPv4 ranges in every embedded form.
            "::ffff:192.0.2.2",
            "::192.0.2.2",
            "64:ff9b::192.0.2.2",
            "64:ff9b::c612:1",
            "2002:c000:202::1",
            "2002:c633:6407::",
            "::ffff:0:198.18.0.1",
        ];
        for a in local {
            assert!(
                matches!(classify(ip(a)), AddrClass::Local(_)),
                "{a} should be local: {:?}",
                classify(ip(a))
            );
        }
        let never = [
            "100::",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            // An embedded multicast or reserved address stays never, also in SIIT form.
            "::ffff:0:224.0.0.1",
            "::ffff:0:255.255.255.255",
            "64:ff9b::239.1.1.1",
            "2002:e000:1::",
        ];
        for a in never {
            assert!(
                matches!(classify(ip(a)), AddrClass::Never(_)),
                "{a} should never be reached: {:?}",
                classify(ip(a))
            );
        }
        // The edges of each range are public.
        let public = [
            "192.0.1.255",
            "192.0.3.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "192.88.98.255",
            "192.88.100.0",
            "64:ff9b:2::1",
            "64:ff9b:0:1::1",
            "101::1",
            "100:0:0:2::1",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "3fff:1000::1",
            "5eff::1",
            "5f01::1",
            "2001:4860:4860::8888",
            "::fffe:0:1.1.1.1",
            "64:ff9b::203.0.114.1",
        ];
        for a in public {
            assert_eq!(classify(ip(a)), AddrClass::Public, "{a} should be public");
        }
        // And so a port-only rule or insecure_allow_all refuses every local one, naming the range.
        let any = rules(false, &[], &[80]);
        let all = rules(true, &[], &[]);
        for a in local.iter().chain(never.iter()) {
            let h = Host::Ip(ip(a));
            for r in [&any, &all] {
                match r.decide(&h, 80, &[ip(a)]) {
                    Decision::Refuse(why) => {
                        assert!(why.starts_with(&format!("{} is", ip(a))), "{why}")
                    }
                    d => panic!("{a}: {d:?}"),
                }
            }
        }
        let h = Host::Ip(ip("64:ff9b:1::a00:1"));
        match any.decide(&h, 80, &[ip("64:ff9b:1::a00:1")]) {
            Decision::Refuse(why) => assert!(
                why.starts_with("64:ff9b:1::a00:1 is local-use NAT64 (64:ff9b:1::/48), which only"),
                "{why}"
            ),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn embedded_ipv4_addresses() {
        for (v6, v4) in [
            ("::ffff:192.0.2.2", Some("192.0.2.2")),
            ("::192.0.2.2", Some("192.0.2.2")),
            ("64:ff9b::192.0.2.2", Some("192.0.2.2")),
            ("::ffff:0:192.0.2.2", Some("192.0.2.2")),
            ("2002:c000:202::1", Some("192.0.2.2")),
            ("::", None),
            ("::1", None),
            ("2001:db8::2", None),
            ("64:ff9b:1::c000:202", None),
        ] {
            let v6: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(embedded_v4(v6), v4.map(|s| s.parse().unwrap()), "{v6}");
        }
    }

    /// F6: a host name never opens local addresses, exact or not, except `localhost` (loopback only); an IP
    /// literal entry opens that address.
    #[test]
    fn only_ip_literals_and_localhost_open_local_addresses() {
        let named = rules(false, &["runsc", "db.internal", "localhost"], &[]);
        let name = |s: &str| Host::parse(s).unwrap();
        assert_eq!(named.check(&name("runsc"), 5055), Ok(LocalAccess::None));
        assert_eq!(
            named.check(&name("localhost"), 80),
            Ok(LocalAccess::Loopback)
        );
        for (h, addr) in [
            ("runsc", "127.0.0.1"),
            ("runsc", "::1"),
            ("runsc", "::ffff:127.0.0.1"),
            ("db.internal", "10.0.0.5"),
            ("db.internal", "169.254.169.254"),
            ("db.internal", "fd00::5"),
            ("db.internal", "192.0.2.2"),
            // `localhost` opens loopback only, whatever else it may resolve to.
            ("localhost", "10.0.0.5"),
            ("localhost", "192.168.1.1"),
        ] {
            match named.decide(&name(h), 5055, &[ip(addr)]) {
                Decision::Refuse(why) => {
                    assert!(
                        why.starts_with(&format!("resolves to {addr}: {addr} is")),
                        "{why}"
                    );
                    assert!(why.contains("a host name never opens"), "{why}");
                }
                d => panic!("{h} -> {addr}: {d:?}"),
            }
        }
        // A public address for the same name is fine, and only it is used.
        assert_eq!(
            named.decide(&name("runsc"), 5055, &[ip("127.0.0.1"), ip(PUBLIC)]),
            Decision::Allow(vec![SocketAddr::new(ip(PUBLIC), 5055)])
        );
        // `localhost` (any case, trailing dot) opens loopback.
        for h in ["localhost", "LOCALHOST.", "LocalHost"] {
            assert_eq!(
                named.decide(&name(h), 8080, &[ip("127.0.0.1"), ip("::1")]),
                Decision::Allow(vec![
                    SocketAddr::new(ip("127.0.0.1"), 8080),
                    SocketAddr::new(ip("::1"), 8080)
                ])
            );
        }
        // IP literals named by an entry: that address (also IPv4-mapped), whatever its class.
        let literals = rules(
            false,
            &["127.0.0.1", "10.0.0.5", "192.0.2.7", "fd00::5"],
            &[],
        );
        for a in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.0.0.5",
            "192.0.2.7",
            "fd00::5",
        ] {
            assert_eq!(
                literals.check(&Host::Ip(ip(a)), 1),
                Ok(LocalAccess::Literal)
            );
            assert_eq!(
                literals.decide(&Host::Ip(ip(a)), 9, &[ip(a)]),
                Decision::Allow(vec![SocketAddr::new(ip(a), 9)]),
                "{a}"
            );
        }
        // Never-addresses stay closed even to a literal entry.
        let mc = rules(false, &["224.0.0.1"], &[]);
        assert!(matches!(
            mc.decide(&Host::Ip(ip("224.0.0.1")), 9, &[ip("224.0.0.1")]),
            Decision::Refuse(_)
        ));
        // A `.domain` entry opens nothing local either, and insecure_allow_all with a name neither.
        let dom = rules(true, &[".internal"], &[]);
        assert_eq!(dom.check(&name("db.internal"), 5432), Ok(LocalAccess::None));
        assert!(matches!(
            dom.decide(&name("db.internal"), 5432, &[ip("10.0.0.5")]),
            Decision::Refuse(_)
        ));
    }
}
