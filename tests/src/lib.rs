//! Support for thv-sandbox's end-to-end tests.
//!
//! - [`image`]: writes real OCI image layouts ([`ImageBuilder`], [`probe_image`]) and checks them
//!   ([`check_layout`]).
//! - [`hostile`]: a scripted hostile registry on loopback that records what it was asked and what it sent.
//! - [`registry`]: a real `docker-registry` on loopback to push test images to, and a proxy that cuts transfers.
//! - [`tuf_repo`]: a signed TUF repository with a `trusted_root.json` target, served on loopback.
//! - [`mcp`]: MCP clients (the real `rmcp` client) over a child process or any byte stream.
//! - [`probe_bin`], [`thv_sandbox_bin`]: where the built binaries are; [`require`]: skip locally, fail under CI.
//!
//! The in-sandbox probe itself is the binary `sandbox-probe` (src/bin/sandbox-probe.rs): an MCP server on stdio
//! whose tools report what it sees from inside a sandbox and try forbidden things.

use std::path::{Path, PathBuf};

pub mod hostile;
pub mod http_server;
pub mod image;
pub mod mcp;
pub mod package_index;
pub mod registry;
pub mod sigstore;
pub mod tuf_repo;

pub use image::{
    binary_image_builder, check_layout, host_platform, http_probe_image_builder, probe_image,
    probe_image_builder, read_image, sha256_digest, shared_libraries, tag_manifest,
    write_platform_index, BuiltImage, Compression, Descriptor, Entry, ImageBuilder, Layer,
    LayoutSummary, MediaTypes,
};
pub use mcp::{
    call_tool, list_tools, mcp_client_over_command, mcp_client_over_stream, spawn_mcp, tool_json,
    tool_text, within, Finished, McpClient, McpProcess, McpSetupError, CALL_TIMEOUT,
    FINISH_TIMEOUT, HANDSHAKE_TIMEOUT,
};

/// The `sandbox-probe` binary: `$SANDBOX_PROBE_BIN`, else next to the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn probe_bin() -> PathBuf {
    locate_bin(
        "SANDBOX_PROBE_BIN",
        "sandbox-probe",
        "cargo build -p thv-sandbox-e2e --bin sandbox-probe",
    )
}

/// The `http-probe` binary (an MCP server over HTTP, see [`http_server`]): `$HTTP_PROBE_BIN`, else next to
/// the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn http_probe_bin() -> PathBuf {
    locate_bin(
        "HTTP_PROBE_BIN",
        "http-probe",
        "cargo build -p thv-sandbox-e2e --bin http-probe",
    )
}

/// The `thv-sandbox` binary: `$THV_SANDBOX_BIN`, else next to the running test's target directory.
///
/// # Panics
/// When the binary does not exist; the message says how to build it.
pub fn thv_sandbox_bin() -> PathBuf {
    if std::env::var_os("THV_SANDBOX_BIN").is_none() {
        build_cli_once();
    }
    locate_bin(
        "THV_SANDBOX_BIN",
        "thv-sandbox",
        "cargo build -p thv-sandbox --bin thv-sandbox",
    )
}

/// `cargo test` builds the binaries of the package under test only, and `thv-sandbox` lives in another package:
/// so that `cargo test --workspace` alone runs the end-to-end suite against the current code, the first test that
/// needs the binary builds it (same target directory and profile; a no-op when it is up to date). Skipped when
/// `$THV_SANDBOX_BIN` names a binary (CI's unprivileged runs) or when not started by cargo.
fn build_cli_once() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
            return;
        };
        let exe = std::env::current_exe().expect("the path of the running test executable");
        let Some(profile_dir) = exe.parent().and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        }) else {
            return;
        };
        let Some(target_dir) = profile_dir.parent() else {
            return;
        };
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(manifest_dir)
            .args([
                "build",
                "--quiet",
                "-p",
                "thv-sandbox",
                "--bin",
                "thv-sandbox",
                "--target-dir",
            ])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo to build thv-sandbox");
        assert!(
            status.success(),
            "building thv-sandbox for the end-to-end tests failed"
        );
    });
}

fn locate_bin(env: &str, name: &str, build: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env} points at {}, which is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let candidates = bin_candidates(&exe, name);
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        panic!(
            "{name} not found (looked at {}); build it with `{build}` (same profile and target dir as the \
             tests) or set ${env}",
            looked.join(", ")
        )
    })
}

/// Where cargo puts binaries relative to a test executable: `target/<profile>/deps/<test>-<hash>` has them in
/// `target/<profile>/`; an executable directly in `target/<profile>/` (a binary's own tests) has them beside it.
fn bin_candidates(exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.parent() {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(profile_dir) = dir.parent() {
                out.push(profile_dir.join(name));
            }
        }
        out.push(dir.join(name));
    }
    out
}

/// A loopback port that refuses connections for as long as the returned socket lives: the socket is bound to it
/// but never listens, so a connection gets RST (ECONNREFUSED), and no other test can take the port meanwhile (a
/// port merely bound and released again could be reused by another test's server at once).
///
/// # Panics
/// When no socket can be bound on 127.0.0.1.
pub fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let held = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(held.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind 127.0.0.1:0");
    let port = getsockname::<SockaddrIn>(held.as_raw_fd())
        .expect("getsockname")
        .port();
    (held, port)
}

/// A loopback port for a server that the test starts and that must bind the port by number (so the test cannot
/// hold it, see [`refusing_port`]). The port is free when chosen, never handed out twice in this process, and
/// below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`): a concurrent `bind(…:0)` (every other
/// listener of the suite) or outgoing connection never gets it, so it stays free until the server binds it.
///
/// # Panics
/// When no free port is found below the ephemeral range.
pub fn port_for_a_server() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16.min(ephemeral_low / 2), ephemeral_low);
    let span = u32::from(high - low);
    // A different start per process and call: the pid and the clock.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for i in 0..span {
        let port = low + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// `root` and all its descendants (from each process's parent in `/proc/<pid>/stat`), `root` first. Only these
/// belong to a test: other tests, and other users' test runs on the same machine, run processes with the same
/// command lines.
pub fn process_tree(root: u32) -> Vec<u32> {
    use std::collections::HashMap;
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command may contain spaces and parentheses: the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        out.push(pid);
        todo.extend(children.get(&pid).into_iter().flatten().copied());
    }
    out
}

/// The TCP ports that process `root` or any of its descendants listens on **in this process's network
/// namespace** (the host's, as far as a sandbox is concerned): the listening sockets of `/proc/self/net/tcp` and
/// `tcp6` whose inode is one of their open descriptors. A sandboxed server listening in its own network namespace
/// is not in these tables; a port thv-sandbox (or anything it started outside the sandbox) opened on the host is.
///
/// Descendants whose descriptors cannot be read (another uid: the sandbox's own processes under subordinate ids)
/// are skipped; they are inside the sandbox's network namespace.
///
/// # Panics
/// When `root`'s own descriptors cannot be read, or the tables are missing.
pub fn host_listening_ports_of(root: u32) -> Vec<u16> {
    use std::collections::{HashMap, HashSet};
    // LISTEN sockets of our network namespace: inode -> port.
    let mut listening: HashMap<u64, u16> = HashMap::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("{table}: {e}"));
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if f.len() > 9 && f[3] == "0A" {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                if let (Some(port), Ok(inode)) = (port, f[9].parse()) {
                    listening.insert(inode, port);
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for pid in process_tree(root) {
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) if pid == root => panic!("the descriptors of {root}: {e}"),
            Err(_) => continue,
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(port) = inode.and_then(|i| listening.get(&i)) {
                ports.insert(*port);
            }
        }
    }
    let mut ports: Vec<u16> = ports.into_iter().collect();
    ports.sort_unstable();
    ports
}

/// A prerequisite check for tests that need something of the machine (user namespaces, a registry binary...).
///
/// Returns `cond`. When it is false: under CI (`CI=true`) this panics, so a missing prerequisite fails the
/// run; elsewhere it prints a `SKIP` line to stderr and returns false, and the caller returns early:
/// `if !require(has_userns(), "unprivileged user namespaces") { return; }`.
///
/// # Panics
/// When `cond` is false and `CI` is `true`.
pub fn require(cond: bool, what: &str) -> bool {
    if cond {
        return true;
    }
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!under_ci, "prerequisite missing under CI: {what}");
    eprintln!("SKIP: prerequisite missing: {what}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_looked_for_in_the_profile_dir_of_a_test_executable() {
        let found = bin_candidates(
            Path::new("/t/target/debug/deps/e2e-0123abcd"),
            "sandbox-probe",
        );
        assert_eq!(found[0], Path::new("/t/target/debug/sandbox-probe"));
        let found = bin_candidates(
            Path::new("/t/target/debug/sandbox_probe-0123"),
            "thv-sandbox",
        );
        assert_eq!(found, vec![PathBuf::from("/t/target/debug/thv-sandbox")]);
    }

    #[test]
    fn a_refusing_port_refuses_while_held() {
        let (held, port) = refusing_port();
        let err = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        // Still ours: nobody else can bind it.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        drop(held);
    }

    #[test]
    fn ports_for_servers_are_below_the_ephemeral_range_and_distinct() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let a = port_for_a_server();
        let b = port_for_a_server();
        assert!(a < low && b < low, "{a} {b} (ephemeral from {low})");
        assert_ne!(a, b);
        std::net::TcpListener::bind(("127.0.0.1", a)).expect("free");
    }

    #[test]
    fn a_listener_of_our_own_is_found_and_a_bound_socket_is_not() {
        let (_held, bound) = refusing_port();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = host_listening_ports_of(std::process::id());
        assert!(found.contains(&port), "{found:?}");
        assert!(!found.contains(&bound), "{found:?}");
        drop(l);
        assert!(!host_listening_ports_of(std::process::id()).contains(&port));
    }

    #[test]
    fn require_passes_a_met_prerequisite() {
        assert!(require(true, "nothing"));
    }
}
