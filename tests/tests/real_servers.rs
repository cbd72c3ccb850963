//! End-to-end: the MCP servers users actually run, from PyPI and npm, on a real Debian 12 root, through
//! `thv-sandbox run` with its defaults (the default seccomp profile, a read-only root, no network) and the rmcp
//! client: `mcp-server-time` (Python; ToolHive's `time`) pushed to a real registry and run by reference, and
//! `@modelcontextprotocol/server-everything` (Node.js) run from the OCI layout.
//!
//! The images are built once per machine, outside the tests, by `tests/images/build-real-servers.sh` (as root;
//! CI does it). They are found in `$THV_E2E_REAL_IMAGES/layout`, default `/var/cache/thv-e2e-real/layout`.
//! Without them a test skips (fails under CI).

mod common;

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{code, Run};
use serde_json::{json, Value};
use thv_sandbox_e2e::{tool_text, McpProcess};

const DEFAULT_IMAGES: &str = "/var/cache/thv-e2e-real";

/// The layout holding the `time` and `everything` images, if built.
fn real_layout() -> Option<PathBuf> {
    let dir = std::env::var_os("THV_E2E_REAL_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGES));
    let layout = dir.join("layout");
    let built = layout.join("index.json").is_file();
    thv_sandbox_e2e::require(
        built,
        &format!(
            "the real-server images in {} (build them as root with tests/images/build-real-servers.sh [DIR]; \
             THV_E2E_REAL_IMAGES=DIR to use another directory)",
            layout.display()
        ),
    )
    .then_some(layout)
}

/// A cache of the test's own, so that the unpacked Debian roots (~250 MB each) go when the test ends. Sandboxes
/// started by root run as unprivileged ids, which must be able to reach it.
fn own_cache() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::Builder::new()
        .prefix("thv-e2e-real-cache-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    cache
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The processes of this test's sandbox (descendants of its thv-sandbox) whose command line has `cmdline_part`:
/// not those of another test or another user's run of the same server on this machine.
fn server_processes(server: &McpProcess, cmdline_part: &str) -> Vec<u32> {
    let root = server.child.id().expect("thv-sandbox's pid");
    thv_sandbox_e2e::process_tree(root)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(cmdline_part))
                .unwrap_or(false)
        })
        .collect()
}

/// The sandboxed server's network namespace, seen from outside through `/proc/<pid>/net/dev`, has no interface
/// but `lo`.
fn assert_only_loopback(server: &McpProcess, cmdline_part: &str) {
    let pids = server_processes(server, cmdline_part);
    assert!(
        !pids.is_empty(),
        "no process running {cmdline_part}; stderr: {}",
        server.stderr_so_far()
    );
    for pid in pids {
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("net/dev");
        let ifaces: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| Some(l.split(':').next()?.trim()))
            .collect();
        // `thv0`: the device that answers (and reports) connections to addresses under --network none.
        assert_eq!(ifaces, ["lo", "thv0"], "pid {pid}: {dev}");
    }
}

/// The sandboxed server's own process (found by a part of its command line) is under a seccomp filter with
/// no_new_privs and no capabilities: the defaults it was started with, checked from outside.
fn assert_confined(server: &McpProcess, cmdline_part: &str) {
    let pids = server_processes(server, cmdline_part);
    assert!(
        !pids.is_empty(),
        "no process running {cmdline_part}; stderr: {}",
        server.stderr_so_far()
    );
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or("?")
                .to_owned()
        };
        assert_eq!(field("Seccomp"), "2", "pid {pid}: {status}");
        assert_eq!(field("NoNewPrivs"), "1", "pid {pid}");
        assert_eq!(field("CapEff"), "0000000000000000", "pid {pid}");
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]±HH:MM`, and the offset as written.
fn parse_iso(datetime: &str) -> Option<(i64, String)> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = datetime.split_once('T')?;
    let (offset_at, sign) = rest.rfind(['+', '-']).map(|i| (i, &rest[i..=i]))?;
    let (clock, offset) = rest.split_at(offset_at);
    let mut d = date.split('-').map(num);
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let clock = clock.split('.').next()?;
    let mut c = clock.split(':').map(num);
    let (h, mi, s) = (c.next()??, c.next()??, c.next()??);
    let (oh, om) = offset[1..].split_once(':')?;
    let offset_secs = (num(oh)? * 3600 + num(om)? * 60) * if sign == "-" { -1 } else { 1 };
    let local = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
    Some((local - offset_secs, offset.to_owned()))
}

fn text_json(result: &rmcp::model::CallToolResult) -> Value {
    let text = tool_text(result);
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn python_time_server_from_pypi_pushed_to_a_registry() {
    let Some(layout) = real_layout() else { return };
    use thv_sandbox_e2e::registry::{registry_available, TestRegistry};
    if !thv_sandbox_e2e::require(
        registry_available(),
        "docker-registry (apt-get install docker-registry)",
    ) {
        return;
    }
    let registry = TestRegistry::start().expect("start registry");
    let built = thv_sandbox_e2e::read_image(&layout, "time").expect("the time image");
    registry
        .push_image(&layout, &built, "real/time", "1")
        .expect("push");
    let image = format!("{}/real/time:1", registry.host());

    let run = Run::new();
    let cache = own_cache();
    let server = thv_sandbox_e2e::spawn_mcp(run.cmd_in(cache.path(), &image, &[], &[]))
        .await
        .expect("initialize mcp-server-time through the sandbox");
    let info = server.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("mcp-time"),
        "{info:?}"
    );
    let tools = thv_sandbox_e2e::list_tools(&server.client)
        .await
        .expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for tool in ["get_current_time", "convert_time"] {
        assert!(names.contains(&tool), "{names:?}");
    }
    assert_confined(&server, "mcp_server_time");

    // The real clock, through the image's own tz data: Kathmandu is UTC+05:45 all year.
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let out = server
        .call("get_current_time", json!({"timezone": "Asia/Kathmandu"}))
        .await
        .expect("get_current_time");
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(!out.is_error.unwrap_or(false), "{out:?}");
    let now = text_json(&out);
    assert_eq!(now["timezone"], "Asia/Kathmandu", "{now}");
    let datetime = now["datetime"].as_str().expect("datetime");
    let (secs, offset) = parse_iso(datetime).unwrap_or_else(|| panic!("datetime {datetime:?}"));
    assert_eq!(offset, "+05:45", "{now}");
    // The sandbox shares the host's clock: its answer falls between our readings (whole seconds).
    assert!(
        (before.as_secs() as i64..=after.as_secs() as i64 + 1).contains(&secs),
        "{datetime} is not between {before:?} and {after:?}"
    );

    let out = server
        .call(
            "convert_time",
            json!({"source_timezone": "Asia/Kathmandu", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        )
        .await
        .expect("convert_time");
    let converted = text_json(&out);
    let target = converted["target"]["datetime"].as_str().unwrap_or_default();
    assert!(target.ends_with("T15:15:00+09:00"), "{converted}");
    assert_eq!(converted["time_difference"], "+3.25h", "{converted}");

    // A timezone that does not exist is the server's own error, not a crash.
    match server
        .call("get_current_time", json!({"timezone": "Nowhere/Atlantis"}))
        .await
    {
        Ok(out) => assert!(out.is_error.unwrap_or(false), "{out:?}"),
        Err(e) => assert!(e.to_string().contains("Atlantis"), "{e}"),
    }

    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    run.assert_nothing_left(None);
    cache.close().expect("remove the test's cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_everything_server_from_npm() {
    let Some(layout) = real_layout() else { return };
    let run = Run::new();
    let cache = own_cache();
    let image = format!("oci:{}:everything", layout.display());
    let server = thv_sandbox_e2e::spawn_mcp(run.cmd_in(cache.path(), &image, &[], &[]))
        .await
        .expect("initialize server-everything through the sandbox");
    let tools = thv_sandbox_e2e::list_tools(&server.client)
        .await
        .expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for tool in ["echo", "get-sum", "gzip-file-as-resource"] {
        assert!(names.contains(&tool), "{names:?}");
    }
    assert_confined(&server, "server-everything/dist/index.js");
    assert_only_loopback(&server, "server-everything/dist/index.js");

    let message = format!("through the sandbox {:x}", random_u64());
    let out = server
        .call("echo", json!({"message": message}))
        .await
        .expect("echo");
    assert_eq!(tool_text(&out), format!("Echo: {message}"), "{out:?}");

    let (a, b) = (random_u64() % 1_000_000, random_u64() % 1_000_000);
    let out = server
        .call("get-sum", json!({"a": a, "b": b}))
        .await
        .expect("get-sum");
    assert_eq!(
        tool_text(&out),
        format!("The sum of {a} and {b} is {}.", a + b),
        "{out:?}"
    );

    // zlib and fetch() on a data: URL, in the server: no network needed.
    let original = format!("compress me {:x}\n", random_u64()).repeat(50);
    let data_url = format!(
        "data:text/plain;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&original)
    );
    let out = server
        .call(
            "gzip-file-as-resource",
            json!({"name": "x.gz", "data": data_url, "outputType": "resource"}),
        )
        .await
        .expect("gzip-file-as-resource");
    assert!(!out.is_error.unwrap_or(false), "{out:?}");
    let resource = serde_json::to_value(&out.content[0]).expect("content");
    let blob = resource["resource"]["blob"]
        .as_str()
        .unwrap_or_else(|| panic!("no blob: {resource}"));
    let gz = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .expect("base64");
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut unpacked)
        .expect("gunzip");
    assert_eq!(unpacked, original);

    // No network: fetching from outside fails (the server reports the error).
    let out = server
        .call(
            "gzip-file-as-resource",
            json!({"name": "y.gz", "data": "https://registry.npmjs.org/", "outputType": "resource"}),
        )
        .await;
    // A hang (the call is bounded) or a crash (an MCP error) fails here; only the tool's own refusal passes. Node
    // says no more than "fetch failed" (the cause is not in the result); that it is the network and not fetch
    // itself is shown by the data: URL fetch above and by the server's network namespace having only `lo`.
    let out = out.unwrap_or_else(|e| {
        panic!(
            "the server did not answer the fetch with a tool error: {e}; stderr: {}",
            server.stderr_so_far()
        )
    });
    assert_eq!(out.is_error, Some(true), "fetched with no network: {out:?}");
    assert_eq!(tool_text(&out), "fetch failed", "{out:?}");

    let done = server.finish().await.expect("finish");
    assert_eq!(code(done.status), 0, "stderr: {}", done.stderr);
    run.assert_nothing_left(None);
    cache.close().expect("remove the test's cache");
}
