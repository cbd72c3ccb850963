//! The sandbox's name server: refused lookups made visible.
//!
//! A sandbox with its own network namespace (`--network none`, with or without the egress proxy) has only
//! loopback, so a server that looks a name up gets nowhere, and without this module it would say only "All
//! connection attempts failed" with nothing on thv-sandbox's side to explain it. So the runner binds a UDP socket
//! to `127.0.0.1:53` inside the sandbox's network namespace (where `/etc/resolv.conf` points, and where resolvers
//! without a configured server look too) and hands it to the supervisor, which answers it from the host's side:
//! every query gets `REFUSED` at once (the lookup fails fast, nothing is resolved, nothing is forwarded), and each
//! name is reported on stderr, once, with a closing summary that says what would allow it.
//!
//! Nothing becomes reachable: the socket only ever answers "refused", and its answers go to loopback inside the
//! sandbox. Names are shown escaped (only letters, digits, `-`, `_` and `.` pass), at most [`MAX_NAMES`] of them.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sandbox::refusals::{self, Refusals, Tally};

/// Distinct names reported one by one; more are only counted.
pub const MAX_NAMES: usize = refusals::MAX_LISTED;

/// A DNS question: the query's id, the name asked for (escaped for display), its type, and where the question
/// section ends in the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The query id.
    pub id: u16,
    /// The name, lowercased and escaped (`\DDD` for a byte that is not a letter, digit, `-` or `_`).
    pub name: String,
    /// The query type (1 = A, 28 = AAAA, …).
    pub qtype: u16,
    /// The end of the question section (header included).
    end: usize,
}

/// Reads the first question of a DNS query; `None` for anything else (a response, a truncated or malformed
/// packet, compression in a question, no question).
pub fn parse_query(packet: &[u8]) -> Option<Question> {
    if packet.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let is_response = packet[2] & 0x80 != 0;
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    if is_response || qdcount == 0 {
        return None;
    }
    let mut at = 12;
    let mut name = String::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers (and the reserved label types) have no business in a question.
        if len & 0xc0 != 0 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        at += len;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => name.push(b as char),
                b'A'..=b'Z' => name.push(b.to_ascii_lowercase() as char),
                _ => name.push_str(&format!("\\{b:03}")),
            }
        }
        if name.len() > 1024 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    packet.get(at + 2..at + 4)?;
    Some(Question {
        id,
        name: if name.is_empty() { ".".into() } else { name },
        qtype,
        end: at + 4,
    })
}

/// The answer to `query` (whose question is `q`): the same id and question, `REFUSED`, nothing else.
pub fn refusal(query: &[u8], q: &Question) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end);
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR = 1, the query's opcode and RD bit kept; RA = 0; RCODE = 5 (REFUSED).
    out.push(0x80 | (query[2] & 0x79));
    out.push(0x05);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..q.end]);
    out
}

/// The usual name of a query type.
pub fn type_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

pub use crate::sandbox::refusals::Why;

/// The reason on each line.
fn line(why: Why) -> &'static str {
    match why {
        Why::NoNetwork => "the sandbox has no network (--network none)",
        Why::ProxyOnly => {
            "the sandbox resolves no names itself; only connections through the egress proxy leave it"
        }
    }
}

/// The summary's hint.
fn hint(why: Why) -> &'static str {
    match why {
        Why::NoNetwork => {
            "under --network none the server reaches no host; to let it reach one through the egress proxy, \
             --allow-host HOST[:PORT], or a permission profile whose network.outbound allows it \
             (--permission-profile FILE with \"allow_host\"), or --permission-profile network for any public \
             host; --network host gives it the host's network (see README, Network)"
        }
        Why::ProxyOnly => {
            "the server looked these names up itself instead of going through the egress proxy \
             (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY are set for it); hosts its profile allows are reached through \
             the proxy, which resolves them"
        }
    }
}

/// The running name server; dropping it stops it and says the summary.
pub type NameServer = Refusals<String>;

/// Answers `socket` on a thread of its own (see the module documentation); `log` gets one line per refused name
/// and, when the server is dropped, the summary.
pub fn spawn(
    socket: UdpSocket,
    why: Why,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> std::io::Result<NameServer> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let summary = move |names: &[String], more: u64| {
        let mut list = names.join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more queries"));
        }
        format!(
            "network: refused lookups of {} ({list}): {}",
            refusals::count(names.len(), "name"),
            hint(why)
        )
    };
    refusals::spawn(
        "nameserver",
        Arc::new(log),
        Box::new(summary),
        move |stop, tally, log| serve(&socket, stop, tally, why, log),
    )
}

fn serve(
    socket: &UdpSocket,
    stop: &AtomicBool,
    tally: &Mutex<Tally<String>>,
    why: Why,
    log: &dyn Fn(&str),
) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let query = &buf[..n];
        let Some(q) = parse_query(query) else {
            continue;
        };
        let first = tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(&q.name);
        let _ = socket.send_to(&refusal(query, &q), from);
        if first {
            log(&format!(
                "network: refused DNS lookup of {} ({}): {}",
                q.name,
                type_name(q.qtype),
                line(why)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as glibc sends it: id, RD set, one question.
    fn query(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split(|&b| b == b'.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label);
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn a_query_is_read_and_refused_with_its_question() {
        let pkt = query(0xbeef, b"API.Example.com", 28);
        let q = parse_query(&pkt).unwrap();
        assert_eq!(q.id, 0xbeef);
        assert_eq!(q.name, "api.example.com");
        assert_eq!(type_name(q.qtype), "AAAA");
        let answer = refusal(&pkt, &q);
        assert_eq!(&answer[..2], &[0xbe, 0xef]);
        // A response, RD kept, REFUSED, one question and no records.
        assert_eq!(answer[2], 0x81);
        assert_eq!(answer[3] & 0x0f, 5);
        assert_eq!(&answer[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&answer[12..], &pkt[12..]);
    }

    #[test]
    fn odd_bytes_are_escaped_and_malformed_packets_ignored() {
        let q = parse_query(&query(1, b"a\x1b]0;x\x07.b c", 1)).unwrap();
        assert_eq!(q.name, "a\\027\\0930\\059x\\007.b\\032c");
        assert!(!q.name.chars().any(|c| c.is_control()));
        let good = query(1, b"example.com", 1);
        for bad in [
            &good[..11],             // no header
            &good[..good.len() - 1], // truncated question
            &good[..20],             // cut inside a label
        ] {
            assert_eq!(parse_query(bad), None);
        }
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), None);
        let mut pointer = good.clone();
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), None);
        let mut none = good;
        none[5] = 0;
        assert_eq!(parse_query(&none), None);
    }

    #[test]
    fn each_name_is_reported_once_and_summed_up() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let server = {
            let lines = Arc::clone(&lines);
            spawn(socket, Why::NoNetwork, move |l| {
                lines.lock().unwrap().push(l.to_owned())
            })
            .unwrap()
        };
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for (id, name, qtype) in [
            (1, "example.com", 1),
            (2, "example.com", 28),
            (3, "other.test", 1),
        ] {
            client
                .send_to(&query(id, name.as_bytes(), qtype), addr)
                .unwrap();
            let mut buf = [0u8; 512];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
            assert_eq!(buf[3] & 0x0f, 5, "REFUSED");
            assert!(n > 12);
        }
        assert_eq!(server.refused(), ["example.com", "other.test"]);
        drop(server);
        let lines = lines.lock().unwrap();
        assert_eq!(
            lines.as_slice(),
            [
                "network: refused DNS lookup of example.com (A): the sandbox has no network (--network none)",
                "network: refused DNS lookup of other.test (A): the sandbox has no network (--network none)",
                &format!(
                    "network: refused lookups of 2 names (example.com, other.test): {}",
                    hint(Why::NoNetwork)
                ),
            ]
        );
    }
}
