//! The sandbox's default route: refused connections made visible.
//!
//! A sandbox with its own network namespace has only loopback, so a server that connects to an address (an IP
//! literal, or an address it resolved some other way) gets `ENETUNREACH` from its own kernel and thv-sandbox sees
//! nothing: the name server ([`crate::sandbox::nameserver`]) only sees lookups. So the runner also creates a TUN
//! device ([`DEVICE`]) in that namespace, routes both address families' default routes through it and hands its
//! descriptor to the supervisor, which reads what the server sends there:
//!
//! - a TCP SYN, a UDP datagram or an ICMP echo request is answered at once with an ICMP "destination unreachable"
//!   (network unreachable for TCP and echo, so the server's `connect` fails with the same `ENETUNREACH` as without
//!   the device; port unreachable for UDP, so a connected UDP socket fails with `ECONNREFUSED` instead of waiting),
//!   and its destination (address, port, protocol) is reported on stderr, once, with a closing summary that says
//!   what would allow it;
//! - anything else (the kernel's own IPv6 neighbour and router traffic, later segments) is dropped unanswered.
//!
//! Nothing becomes reachable: the device's other end is this reader, which never forwards, never opens a socket,
//! and only ever writes ICMP errors back into the sandbox. It reads one packet at a time into a fixed buffer,
//! parses only the IP and transport headers, keeps at most [`MAX_DESTINATIONS`] destinations (the rest are counted)
//! and answers each packet with at most one ICMP error of at most 576 (IPv4) or 1280 (IPv6) bytes.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::sandbox::refusals::{self, Refusals, Tally};

/// The device's name inside the sandbox.
pub const DEVICE: &str = "thv0";

/// The sandbox's IPv4 address on [`DEVICE`]: 192.0.0.8, the IPv4 dummy address (RFC 7600), a source address for
/// a host that has no real one.
pub const IPV4_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// Distinct destinations reported one by one; more are only counted.
pub const MAX_DESTINATIONS: usize = refusals::MAX_LISTED;

/// The protocol of a refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// A TCP connection (its SYN).
    Tcp,
    /// A UDP datagram.
    Udp,
    /// An ICMP (or ICMPv6) echo request: a ping.
    Ping,
}

/// Where the server tried to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    /// The protocol.
    pub proto: Proto,
    /// The address.
    pub addr: IpAddr,
    /// The port (0 for a ping).
    pub port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.proto, self.addr) {
            (Proto::Ping, a) => write!(f, "{a} (ping)"),
            (p, IpAddr::V4(a)) => write!(f, "{a}:{} ({p})", self.port),
            (p, IpAddr::V6(a)) => write!(f, "[{a}]:{} ({p})", self.port),
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Ping => "ping",
        })
    }
}

/// Creates [`DEVICE`] in the current network namespace (the runner's, the sandbox's) and routes everything that
/// is not local through it: a default route to it for IPv4 (with [`IPV4_ADDRESS`] as the source address) and
/// one for IPv6 (skipped where the host has no IPv6; the device's link-local address is the source). The device lives as long as
/// the returned descriptor (hand it to [`spawn`]); with it go its routes, and connections fail at once again.
/// Needs `/dev/net/tun` and `CAP_NET_ADMIN` in the namespace's user namespace (the runner has both).
pub fn create() -> std::io::Result<File> {
    use std::io::Error;
    use std::os::fd::{FromRawFd, OwnedFd};
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = ifreq();
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and fills the name into) `req`, which outlives the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(Error::last_os_error());
    }
    // No duplicate address detection (the link-local address is usable at once) and no router solicitations
    // (nothing would answer them). Best effort: these files are the namespace's own.
    for (knob, value) in [("accept_dad", "0"), ("router_solicitations", "0")] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{DEVICE}/{knob}"), value);
    }
    let socket = |family| {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let ioctl = |fd: &OwnedFd, request: libc::Ioctl, arg: *mut libc::c_void| {
        // SAFETY: each call below passes the structure its request reads or fills, alive for the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) } < 0 {
            Err(Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let inet = socket(libc::AF_INET)?;
    let sockaddr = |addr: Ipv4Addr| {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in sockaddr (16 bytes each) and both are plain old data.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    };
    let mut req = ifreq();
    req.ifr_ifru.ifru_addr = sockaddr(IPV4_ADDRESS);
    ioctl(&inet, libc::SIOCSIFADDR, (&raw mut req).cast())?;
    let mut req = ifreq();
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::BROADCAST);
    ioctl(&inet, libc::SIOCSIFNETMASK, (&raw mut req).cast())?;
    let mut req = ifreq();
    ioctl(&inet, libc::SIOCGIFFLAGS, (&raw mut req).cast())?;
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(&inet, libc::SIOCSIFFLAGS, (&raw mut req).cast())?;
    let mut req = ifreq();
    ioctl(&inet, libc::SIOCGIFINDEX, (&raw mut req).cast())?;
    // SAFETY: ifru_ifindex is the member SIOCGIFINDEX just filled.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    // IPv4: `0.0.0.0/0` to the device.
    let mut name = [0u8; 16];
    name[..DEVICE.len()].copy_from_slice(DEVICE.as_bytes());
    let mut route = RtEntry {
        pad1: 0,
        dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        gateway: sockaddr(Ipv4Addr::UNSPECIFIED),
        genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        flags: libc::RTF_UP,
        pad2: 0,
        pad3: 0,
        pad4: std::ptr::null_mut(),
        metric: 0,
        dev: name.as_mut_ptr().cast(),
        mtu: 0,
        window: 0,
        irtt: 0,
    };
    ioctl(&inet, libc::SIOCADDRT, (&raw mut route).cast())?;
    // IPv6: `::/0` to the device. A host without IPv6 has no AF_INET6 sockets; IPv4 is routed all the same.
    if let Ok(inet6) = socket(libc::AF_INET6) {
        let mut route = In6Rtmsg {
            dst: [0; 16],
            src: [0; 16],
            gateway: [0; 16],
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1024,
            info: 0,
            flags: u32::from(libc::RTF_UP),
            ifindex: index,
        };
        if let Err(e) = ioctl(&inet6, libc::SIOCADDRT, (&raw mut route).cast()) {
            tracing::debug!("no IPv6 default route to {DEVICE}: {e}");
        }
    }
    Ok(tun)
}

/// `struct rtentry` of <linux/route.h> (glibc targets of libc lack it).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr,
    gateway: libc::sockaddr,
    genmask: libc::sockaddr,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

/// `struct in6_rtmsg` of <linux/ipv6_route.h> (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// An `ifreq` naming [`DEVICE`], all else zero.
fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(DEVICE.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Reads a packet the sandbox sent to [`DEVICE`]: the destination of a new attempt (a TCP SYN, a UDP datagram, an
/// echo request) and the ICMP error that refuses it; `None` for anything else (malformed, a fragment after the
/// first, multicast, a TCP segment other than a SYN, the kernel's neighbour and router traffic).
pub fn inspect(packet: &[u8]) -> Option<(Destination, Vec<u8>)> {
    match packet.first()? >> 4 {
        4 => inspect_v4(packet),
        6 => inspect_v6(packet),
        _ => None,
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The transport part of an attempt: the protocol and port, and whether the reply is "port unreachable".
fn transport(proto: u8, payload: &[u8], echo_request: u8) -> Option<(Proto, u16)> {
    match proto {
        TCP => {
            let flags = *payload.get(13)?;
            // SYN without ACK: a connection being opened.
            (flags & 0x12 == 0x02)
                .then(|| (Proto::Tcp, u16::from_be_bytes([payload[2], payload[3]])))
        }
        UDP => Some((
            Proto::Udp,
            u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]),
        )),
        p if p == ICMP || p == ICMPV6 => {
            (*payload.first()? == echo_request).then_some((Proto::Ping, 0))
        }
        _ => None,
    }
}

fn inspect_v4(packet: &[u8]) -> Option<(Destination, Vec<u8>)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    if ihl < 20 || total < ihl || packet.len() < total {
        return None;
    }
    let packet = &packet[..total];
    // A fragment other than the first carries no transport header.
    if u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff != 0 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    if dst.is_multicast() || dst.is_broadcast() || dst.is_unspecified() || src.is_unspecified() {
        return None;
    }
    let proto = packet[9];
    if proto == ICMPV6 {
        return None;
    }
    let (kind, port) = transport(proto, &packet[ihl..], 8)?;
    // Type 3, destination unreachable: code 3 (port) for UDP, else 0 (network).
    let code = if kind == Proto::Udp { 3 } else { 0 };
    let quoted = &packet[..packet.len().min(576 - 28)];
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut reply = Vec::with_capacity(20 + icmp.len());
    reply.extend_from_slice(&[0x45, 0]);
    reply.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0, 64, ICMP, 0, 0]);
    // From the destination (as a router on the way would say it), to the sender.
    reply.extend_from_slice(&dst.octets());
    reply.extend_from_slice(&src.octets());
    let sum = checksum(&[&reply]);
    reply[10..12].copy_from_slice(&sum.to_be_bytes());
    reply.extend_from_slice(&icmp);
    let destination = Destination {
        proto: kind,
        addr: IpAddr::V4(dst),
        port,
    };
    Some((destination, reply))
}

fn inspect_v6(packet: &[u8]) -> Option<(Destination, Vec<u8>)> {
    if packet.len() < 40 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let packet = packet.get(..40 + payload_len)?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);
    if dst.is_multicast() || dst.is_unspecified() || src.is_unspecified() {
        return None;
    }
    // Extension headers are not followed: only a transport header right after the IPv6 header counts.
    let (kind, port) = transport(packet[6], &packet[40..], 128)?;
    // Type 1, destination unreachable: code 4 (port) for UDP, else 0 (no route).
    let code = if kind == Proto::Udp { 4 } else { 0 };
    let quoted = &packet[..packet.len().min(1280 - 48)];
    let mut icmp = vec![1, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    // The pseudo-header: source, destination, upper-layer length, next header.
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    let sum = checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut reply = Vec::with_capacity(40 + icmp.len());
    reply.extend_from_slice(&[0x60, 0, 0, 0]);
    reply.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[ICMPV6, 64]);
    reply.extend_from_slice(&dst.octets());
    reply.extend_from_slice(&src.octets());
    reply.extend_from_slice(&icmp);
    let destination = Destination {
        proto: kind,
        addr: IpAddr::V6(dst),
        port,
    };
    Some((destination, reply))
}

/// The Internet checksum (RFC 1071) of the concatenated parts (each but the last of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub use crate::sandbox::refusals::Why;

/// The reason on each line.
fn line(why: Why) -> &'static str {
    match why {
        Why::NoNetwork => "the sandbox has no network (--network none)",
        Why::ProxyOnly => "only connections through the egress proxy leave the sandbox",
    }
}

/// The summary's hint.
fn hint(why: Why) -> &'static str {
    match why {
        Why::NoNetwork => {
            "under --network none the server reaches no host; --allow-host HOST[:PORT] lets it reach one \
             through the egress proxy (for clients that use HTTP_PROXY, HTTPS_PROXY or ALL_PROXY), \
             --network host gives it the host's network (see README, Network)"
        }
        Why::ProxyOnly => {
            "the server connected directly instead of through the egress proxy (HTTP_PROXY, HTTPS_PROXY, \
             ALL_PROXY are set for it); hosts its profile or --allow-host allows are reached through the proxy \
             only, --network host gives it the host's network"
        }
    }
}

/// The running reader; dropping it stops it (the device goes with its descriptor) and says the summary.
pub type Unreachable = Refusals<Destination>;

/// Answers `device` (the TUN device's descriptor, or anything that reads and writes whole IP packets) on a thread
/// of its own (see the module documentation); `log` gets one line per refused destination and, when the reader is
/// dropped, the summary.
pub fn spawn(
    device: File,
    why: Why,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> std::io::Result<Unreachable> {
    let summary = move |destinations: &[Destination], more: u64| {
        let mut list = destinations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more attempts"));
        }
        format!(
            "network: refused connections to {} ({list}): {}",
            refusals::count(destinations.len(), "destination"),
            hint(why)
        )
    };
    refusals::spawn(
        "unreachable",
        Arc::new(log),
        Box::new(summary),
        move |stop, tally, log| serve(device, stop, tally, why, log),
    )
}

fn serve(
    mut device: File,
    stop: &AtomicBool,
    tally: &Mutex<Tally<Destination>>,
    why: Why,
    log: &dyn Fn(&str),
) {
    // One packet per read; the device's MTU is 1500, this holds the largest IP packet.
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: device.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if ready == 0 {
            continue;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        let n = match device.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let Some((destination, reply)) = inspect(&buf[..n]) else {
            continue;
        };
        let first = tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(&destination);
        if first {
            log(&format!(
                "network: refused connection to {destination}: {}",
                line(why)
            ));
        }
        // After the line: the refusal is said before the server can act on it.
        let _ = device.write(&reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet from 192.0.0.8 to `dst` with `transport` after a 20-byte header.
    fn v4(dst: [u8; 4], proto: u8, transport: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + transport.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 192, 0, 0, 8]);
        p.extend_from_slice(&dst);
        let sum = checksum(&[&p]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(transport);
        p
    }

    fn v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, transport: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(transport.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(transport);
        p
    }

    /// A TCP header to `port` with `flags`.
    fn tcp(port: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0xc3, 0x50];
        t.extend_from_slice(&port.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        t
    }

    #[test]
    fn a_syn_to_an_ipv4_literal_is_refused_with_network_unreachable() {
        let syn = v4([192, 0, 2, 1], TCP, &tcp(443, 0x02));
        let (d, reply) = inspect(&syn).unwrap();
        assert_eq!(d.to_string(), "192.0.2.1:443 (TCP)");
        // IPv4, ICMP, from the destination back to the sender, a valid header checksum.
        assert_eq!(reply[0], 0x45);
        assert_eq!(reply[9], ICMP);
        assert_eq!(&reply[12..16], &[192, 0, 2, 1]);
        assert_eq!(&reply[16..20], &[192, 0, 0, 8]);
        assert_eq!(
            usize::from(u16::from_be_bytes([reply[2], reply[3]])),
            reply.len()
        );
        assert_eq!(checksum(&[&reply[..20]]), 0);
        // Destination unreachable, network; a valid ICMP checksum; the SYN quoted whole.
        let icmp = &reply[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 0));
        assert_eq!(checksum(&[icmp]), 0);
        assert_eq!(&icmp[8..], &syn[..]);
    }

    #[test]
    fn udp_gets_port_unreachable_and_pings_are_refused_too() {
        let (d, reply) = inspect(&v4([8, 8, 8, 8], UDP, &[0x9c, 0x40, 0, 53, 0, 8, 0, 0])).unwrap();
        assert_eq!(d.to_string(), "8.8.8.8:53 (UDP)");
        assert_eq!((reply[20], reply[21]), (3, 3));
        let (d, reply) = inspect(&v4([1, 1, 1, 1], ICMP, &[8, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!(d.to_string(), "1.1.1.1 (ping)");
        assert_eq!((reply[20], reply[21]), (3, 0));
    }

    #[test]
    fn an_ipv6_syn_is_refused_with_no_route_and_a_valid_checksum() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fe80::1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let syn = v6(src, dst, TCP, &tcp(443, 0x02));
        let (d, reply) = inspect(&syn).unwrap();
        assert_eq!(d.to_string(), "[2001:db8::1]:443 (TCP)");
        assert_eq!(reply[0] >> 4, 6);
        assert_eq!(reply[6], ICMPV6);
        assert_eq!(&reply[8..24], &dst.octets());
        assert_eq!(&reply[24..40], &src.octets());
        let icmp = &reply[40..];
        assert_eq!(
            usize::from(u16::from_be_bytes([reply[4], reply[5]])),
            icmp.len()
        );
        assert_eq!((icmp[0], icmp[1]), (1, 0));
        let mut pseudo = dst.octets().to_vec();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
        assert_eq!(checksum(&[&pseudo, icmp]), 0);
        assert_eq!(&icmp[8..], &syn[..]);
    }

    #[test]
    fn what_is_not_a_new_attempt_is_left_unanswered() {
        let (ll, all_routers): (Ipv6Addr, Ipv6Addr) =
            ("fe80::1".parse().unwrap(), "ff02::2".parse().unwrap());
        let big = v4([192, 0, 2, 1], TCP, &tcp(443, 0x02));
        for packet in [
            v4([192, 0, 2, 1], TCP, &tcp(443, 0x12)), // SYN-ACK
            v4([192, 0, 2, 1], TCP, &tcp(443, 0x10)), // ACK
            v4([224, 0, 0, 1], UDP, &[0, 1, 0, 2, 0, 8, 0, 0]), // multicast
            v4([192, 0, 2, 1], ICMP, &[0, 0, 0, 0]),  // echo reply
            v4([192, 0, 2, 1], 47, &[0; 8]),          // GRE
            v6(ll, all_routers, ICMPV6, &[133, 0, 0, 0, 0, 0, 0, 0]), // router solicitation
            v6(ll, "2001:db8::1".parse().unwrap(), 0, &[0; 8]), // hop-by-hop options first
            big[..big.len() - 1].to_vec(),            // cut short
            big[..19].to_vec(),
            vec![],
            vec![0x20; 40],
        ] {
            assert_eq!(inspect(&packet), None, "{packet:?}");
        }
        let mut fragment = big;
        fragment[7] = 1; // offset 8 bytes
        assert_eq!(inspect(&fragment), None);
    }

    #[test]
    fn each_destination_is_reported_once_answered_and_summed_up() {
        // A packet socket pair stands in for the TUN device: whole packets each way.
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let device = File::from(std::os::fd::OwnedFd::from(theirs));
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            spawn(device, Why::NoNetwork, move |l| {
                lines.lock().unwrap().push(l.to_owned())
            })
            .unwrap()
        };
        ours.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for packet in [
            v4([192, 0, 2, 1], TCP, &tcp(443, 0x02)),
            v4([192, 0, 2, 1], TCP, &tcp(443, 0x02)), // the SYN again
            v4([198, 51, 100, 7], UDP, &[0, 1, 0, 53, 0, 8, 0, 0]),
        ] {
            ours.send(&packet).unwrap();
            let n = ours.recv(&mut buf).unwrap();
            assert_eq!(buf[9], ICMP);
            assert_eq!(&buf[28..n], &packet[..]);
        }
        assert_eq!(reader.refused().len(), 2);
        drop(reader);
        let lines = lines.lock().unwrap();
        assert_eq!(
            lines.as_slice(),
            [
                "network: refused connection to 192.0.2.1:443 (TCP): the sandbox has no network (--network none)",
                "network: refused connection to 198.51.100.7:53 (UDP): the sandbox has no network (--network none)",
                &format!(
                    "network: refused connections to 2 destinations (192.0.2.1:443 (TCP), 198.51.100.7:53 (UDP)): {}",
                    hint(Why::NoNetwork)
                ),
            ]
        );
        assert!(
            hint(Why::NoNetwork).contains("--allow-host")
                && hint(Why::NoNetwork).contains("--network")
        );
    }
}
