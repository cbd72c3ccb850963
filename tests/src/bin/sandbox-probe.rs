//! `sandbox-probe`: a minimal MCP server over stdio that is also a sandbox probe.
//!
//! The end-to-end tests put this binary into an OCI image and run it inside a sandbox; through MCP tool calls
//! they ask it what it sees from inside (credentials, capabilities, namespaces, mounts, network) and have it try
//! forbidden things (denied syscalls, writes to read-only places, host paths), then assert on the answers.
//!
//! Transport: newline-delimited JSON-RPC 2.0 on stdin/stdout. stdout carries protocol messages only; log lines
//! go to stderr. The process exits 0 when stdin reaches end of file.
//!
//! Tool results are `content: [{type: "text", text}]`. `echo` and `blob` return text; every other tool
//! returns a JSON document in `text`. A tool whose operation failed with an errno answers `{"errno": "EACCES"}`
//! (the errno's name) with `isError: true`. Bad arguments and unknown tools are JSON-RPC errors `-32602`.
//!
//! Modes and switches:
//! - `sandbox-probe` serves MCP on stdio; `sandbox-probe --probe` prints the probe report as JSON and exits.
//! - SIGTERM and SIGINT get a handler, because the init of a pid namespace (which this probe is inside a
//!   sandbox) never receives signals it has no handler for. The handler re-raises with the default action, so
//!   outside a pid namespace the probe dies by the signal; as a namespace init the re-raise is dropped by the
//!   kernel and the handler exits with status 128+signal instead.
//! - `PROBE_IGNORE_SIGTERM=1` makes the SIGTERM handler do nothing, to test a runtime's escalation to SIGKILL.
//!
//! Why there is no `abort` tool: glibc's `abort()` raises SIGABRT, which the kernel drops for a namespace init
//! with the default action; glibc then executes a trapping instruction, so a namespace init dies by SIGSEGV
//! (measured with `unshare -p -f`: status 139, where an ordinary process gets 134). The `crash` tool makes that
//! explicit and the same everywhere: it executes an undefined instruction, a fault the kernel delivers even to
//! a namespace init, so the process dies by SIGILL everywhere (status 128+4 = 132 in a shell's terms). To test
//! other signals, send them from outside.
//!
//! The `probe` report (also `--probe`), one JSON object:
//! - `credentials`: uid/euid/suid, gid/egid/sgid, `groups`; `status`: the CapInh/CapPrm/CapEff/CapBnd/CapAmb,
//!   NoNewPrivs, Seccomp, Seccomp_filters and NSpid lines of /proc/self/status, as printed;
//! - `hostname`, `namespaces` (`/proc/self/ns/*` links), `uid_map`, `gid_map`, `cgroup`;
//! - `interfaces` (getifaddrs: `up`, `running`, `loopback`, `addresses`) and `sys_class_net` (what the mounted
//!   sysfs lists: a sysfs of another network namespace shows that namespace's interfaces);
//! - `pid`, `ppid`, `visible_pids` (numeric entries of /proc), `root_writable` and `tmp_writable` ("ok" or an
//!   errno name), `mounts` (`count` and `list` of path/root/options/fstype/source/super_options), `rlimits`
//!   (NOFILE/CORE/NPROC soft and hard, a number or "unlimited"), `cwd`, `env_names`;
//! - `syscalls`: name -> outcome of each forbidden syscall attempt (see the section "Forbidden syscalls").
//!
//! A fact that could not be read is `{"errno": NAME}` in its place.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use serde_json::{json, Map, Value};

/// Protocol versions this server accepts from a client; any other gets [`DEFAULT_PROTOCOL_VERSION`].
const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2024-11-05", "2025-03-26", "2025-06-18"];
const DEFAULT_PROTOCOL_VERSION: &str = "2025-06-18";
/// How much of a file `read_file` returns.
const READ_LIMIT: u64 = 4096;
/// How many mount points the probe report lists.
const MOUNT_LIST_LIMIT: usize = 200;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Set from `PROBE_IGNORE_SIGTERM=1` before the handlers are installed; read by the SIGTERM handler.
static IGNORE_SIGTERM: AtomicBool = AtomicBool::new(false);
/// Set by the `grow` tool: the tool `extra` is listed from then on.
static GROWN: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    IGNORE_SIGTERM.store(
        std::env::var_os("PROBE_IGNORE_SIGTERM").is_some_and(|v| v == "1"),
        Ordering::SeqCst,
    );
    install_signal_handlers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve(),
        Some("--probe") => {
            let report = probe_report();
            let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
            text.push('\n');
            match io::stdout().lock().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sandbox-probe: writing the report to stdout: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("--version") => {
            let line = format!("sandbox-probe {}\n", env!("CARGO_PKG_VERSION"));
            let _ = io::stdout().lock().write_all(line.as_bytes());
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("sandbox-probe: unknown argument {other:?}; usage: sandbox-probe [--probe | --version]");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Signals

extern "C" fn on_terminate(sig: libc::c_int) {
    if sig == libc::SIGTERM && IGNORE_SIGTERM.load(Ordering::SeqCst) {
        let msg = b"sandbox-probe: ignoring SIGTERM (PROBE_IGNORE_SIGTERM=1)\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid static byte string of the given length.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        return;
    }
    // SAFETY: only async-signal-safe calls (signal, sigprocmask on a local set, raise, _exit) on local data.
    // Re-raising with the default action kills the process the ordinary way; the kernel drops the signal when
    // this process is the init of a pid namespace, and then the exit status is 128+signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid starting value; the handler is an `extern "C" fn(c_int)` that
        // only makes async-signal-safe calls; SA_RESTART keeps the blocking stdin read going when ignored.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            eprintln!(
                "sandbox-probe: sigaction({sig}): {}",
                errno_name(Errno::last())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// MCP over stdio

/// What the serve loop does after it has written a reply.
enum After {
    Continue,
    Exit(u8),
    Crash,
    /// Send `notifications/tools/list_changed` after the reply.
    ListChanged,
}

fn serve() -> ExitCode {
    eprintln!(
        "sandbox-probe {}: serving MCP on stdio (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        reap_children();
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => {
                eprintln!("sandbox-probe: stdin closed, exiting");
                return ExitCode::SUCCESS;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("sandbox-probe: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (reply, after) = handle_message(&line);
        if let Some(reply) = reply {
            if let Err(e) = send(&reply) {
                eprintln!("sandbox-probe: writing stdout: {e}");
                return ExitCode::FAILURE;
            }
        }
        match after {
            After::Continue => {}
            After::Exit(code) => {
                eprintln!("sandbox-probe: exiting with {code} as asked");
                return ExitCode::from(code);
            }
            After::Crash => crash(),
            After::ListChanged => {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                if let Err(e) = send(&note) {
                    eprintln!("sandbox-probe: writing stdout: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
}

fn send(message: &Value) -> io::Result<()> {
    let mut text = serde_json::to_vec(message).map_err(io::Error::other)?;
    text.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&text)?;
    out.flush()
}

/// A JSON-RPC error to answer a request with.
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn error_reply(id: Value, error: RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})
}

/// Handles one line: returns the reply to write (none for notifications and responses) and what to do next.
fn handle_message(line: &[u8]) -> (Option<Value>, After) {
    let message: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sandbox-probe: unparsable message: {e}");
            let reply = error_reply(
                Value::Null,
                RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
            );
            return (Some(reply), After::Continue);
        }
    };
    let Some(object) = message.as_object() else {
        let reply = error_reply(
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                "expected a JSON-RPC object (batches are not supported)",
            ),
        );
        return (Some(reply), After::Continue);
    };
    let id = object.get("id").cloned();
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        if object.contains_key("result") || object.contains_key("error") {
            // A response; this server never sends requests, so there is nothing to match it with.
            return (None, After::Continue);
        }
        let reply = error_reply(
            id.unwrap_or(Value::Null),
            RpcError::new(INVALID_REQUEST, "no method"),
        );
        return (Some(reply), After::Continue);
    };
    let params = object.get("params").cloned().unwrap_or(Value::Null);
    eprintln!("sandbox-probe: <- {method}");
    let Some(id) = id else {
        // Notifications (`notifications/initialized`, `notifications/cancelled`, ...) get no reply.
        return (None, After::Continue);
    };
    let (reply, after) = match dispatch(method, &params) {
        Ok((result, after)) => (json!({"jsonrpc": "2.0", "id": id, "result": result}), after),
        Err(error) => (error_reply(id, error), After::Continue),
    };
    (Some(reply), after)
}

fn dispatch(method: &str, params: &Value) -> Result<(Value, After), RpcError> {
    match method {
        "initialize" => Ok((initialize_result(params), After::Continue)),
        "ping" => Ok((json!({}), After::Continue)),
        "tools/list" => Ok((tools_page(params)?, After::Continue)),
        "tools/call" => call_tool(params),
        _ => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )),
    }
}

/// The tools list, or one page of it when `PROBE_TOOLS_PAGE=N` (N tools a page; the cursor is the offset).
fn tools_page(params: &Value) -> Result<Value, RpcError> {
    let tools = tool_list();
    let Some(size) = std::env::var("PROBE_TOOLS_PAGE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    else {
        return Ok(json!({ "tools": tools }));
    };
    let from = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(c) => c
            .as_str()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|n| *n < tools.len())
            .ok_or_else(|| {
                RpcError::new(INVALID_PARAMS, format!("not a cursor of this list: {c}"))
            })?,
    };
    let to = (from + size).min(tools.len());
    let mut result = json!({ "tools": tools[from..to] });
    if to < tools.len() {
        result["nextCursor"] = json!(to.to_string());
    }
    Ok(result)
}

fn initialize_result(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(DEFAULT_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "sandbox-probe", "version": env!("CARGO_PKG_VERSION")},
    })
}

fn tool_list() -> Vec<Value> {
    fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
        json!({
            "name": name,
            "description": description,
            "inputSchema": {"type": "object", "properties": properties, "required": required},
        })
    }
    let none = json!({});
    let mut tools = vec![
        tool(
            "echo",
            // An image can change this description (the guard's tests: a server whose next version changes one).
            &std::env::var("PROBE_ECHO_DESCRIPTION").unwrap_or_else(|_| "Returns its text unchanged.".into()),
            json!({"text": {"type": "string"}}),
            &["text"],
        ),
        tool("probe", "Reports what the process sees from inside: credentials, capabilities, namespaces, \
              mounts, network, limits, and the outcome of forbidden syscalls.", none.clone(), &[]),
        tool("read_file", "Reads the first 4 KiB of a file.", json!({"path": {"type": "string"}}), &["path"]),
        tool(
            "write_file",
            "Creates or truncates a file and writes text to it.",
            json!({"path": {"type": "string"}, "text": {"type": "string"}}),
            &["path", "text"],
        ),
        tool("list_dir", "Lists the names in a directory, sorted.", json!({"path": {"type": "string"}}), &["path"]),
        tool(
            "via_proxy",
            "Through the proxy named by HTTP_PROXY (`http`: CONNECT) or ALL_PROXY (`socks5`: SOCKS5 CONNECT), opens \
             host:port, sends `send` plus a newline and returns the proxy's answer and the first line read back.",
            json!({"protocol": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"},
                   "send": {"type": "string"}}),
            &["protocol", "host", "port", "send"],
        ),
        tool("resolve", "Resolves a host name with the system resolver.", json!({"name": {"type": "string"}}), &["name"]),
        tool("getenv", "Returns the value of an environment variable (null if unset).", json!({"name": {"type": "string"}}), &["name"]),
        tool(
            "connect",
            "Opens a TCP connection to host:port (an IP literal needs no resolver) and closes it.",
            json!({"address": {"type": "string"}, "timeout_ms": {"type": "integer", "minimum": 1}}),
            &["address"],
        ),
        tool(
            "spawn_sleeper",
            "Forks a child that sleeps; returns its pid. With hold_stdio the child keeps stdin, stdout and \
             stderr open, so a reader sees end of file only once the child is gone.",
            json!({"seconds": {"type": "integer", "minimum": 0}, "hold_stdio": {"type": "boolean"}}),
            &["seconds"],
        ),
        tool("sleep", "Sleeps, then replies.", json!({"ms": {"type": "integer", "minimum": 0}}), &["ms"]),
        tool(
            "exit",
            "Replies, then exits with the given status.",
            json!({"code": {"type": "integer", "minimum": 0, "maximum": 255}}),
            &["code"],
        ),
        tool(
            "allocate",
            "Allocates and touches `mib` MiB of memory (kept until the probe exits); replies with how much.",
            json!({"mib": {"type": "integer", "minimum": 0}}),
            &["mib"],
        ),
        tool(
            "fork_many",
            "Forks children that sleep until at most `n` run or fork fails; replies with how many ran and the \
             error that stopped it, then kills and reaps them.",
            json!({"n": {"type": "integer", "minimum": 0}}),
            &["n"],
        ),
        tool(
            "spin",
            "Spins on `threads` threads for `ms` milliseconds of wall time; replies with the CPU time used (ms).",
            json!({"threads": {"type": "integer", "minimum": 1}, "ms": {"type": "integer", "minimum": 0}}),
            &["threads", "ms"],
        ),
        tool("crash", "Replies, then dies by SIGILL (an undefined instruction).", none.clone(), &[]),
        tool(
            "grow",
            "Adds the tool `extra` to the list, then sends notifications/tools/list_changed.",
            none.clone(),
            &[],
        ),
        tool(
            "http_get_many",
            "Sends `count` HTTP/1.1 GETs of `url` (http://HOST:PORT/PATH), `concurrency` at a time, each on a \
             connection of its own: through the proxy named by HTTP_PROXY (an absolute-form request) when `proxy` \
             is true, else straight to HOST:PORT. `via` \"connect\" sends each GET through a tunnel the proxy \
             opens for `CONNECT HOST:PORT`, `via` \"socks5\" through one it opens for a SOCKS5 CONNECT (to an \
             IPv4 HOST); the time of one GET then includes the tunnel's set-up. Replies with how many got status \
             200, the wall time and the latency percentiles of one GET (µs).",
            json!({"url": {"type": "string"}, "count": {"type": "integer", "minimum": 1},
                   "concurrency": {"type": "integer", "minimum": 1}, "proxy": {"type": "boolean"},
                   "via": {"type": "string", "enum": ["direct", "proxy", "connect", "socks5"]}}),
            &["url", "count", "concurrency"],
        ),
        tool(
            "blob",
            "Returns a text of `bytes` bytes (at most 64 MiB).",
            json!({"bytes": {"type": "integer", "minimum": 0}}),
            &["bytes"],
        ),
    ];
    if GROWN.load(Ordering::SeqCst) {
        tools.push(tool(
            "extra",
            "Listed only after `grow`: returns \"extra\".",
            none,
            &[],
        ));
    }
    tools
}

/// A tool's answer: the text and whether the operation failed.
struct ToolOutput {
    text: String,
    is_error: bool,
}

impl ToolOutput {
    fn json(value: Value) -> Self {
        Self {
            text: value.to_string(),
            is_error: false,
        }
    }

    fn errno(errno: String) -> Self {
        Self {
            text: json!({ "errno": errno }).to_string(),
            is_error: true,
        }
    }

    fn from_result(result: Result<Value, String>) -> Self {
        match result {
            Ok(value) => Self::json(value),
            Err(errno) => Self::errno(errno),
        }
    }
}

fn call_tool(params: &Value) -> Result<(Value, After), RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, "tools/call needs a tool name"))?;
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "tool arguments must be an object",
            ))
        }
    };
    let mut after = After::Continue;
    let output = match name {
        "echo" => ToolOutput {
            text: string_arg(args, "text")?.to_owned(),
            is_error: false,
        },
        "probe" => ToolOutput::json(probe_report()),
        "read_file" => ToolOutput::from_result(read_file(Path::new(string_arg(args, "path")?))),
        "write_file" => ToolOutput::from_result(write_file(
            Path::new(string_arg(args, "path")?),
            string_arg(args, "text")?,
        )),
        "list_dir" => ToolOutput::from_result(list_dir(Path::new(string_arg(args, "path")?))),
        "getenv" => ToolOutput::json(match std::env::var(string_arg(args, "name")?) {
            Ok(v) => json!({ "value": v }),
            Err(_) => json!({ "value": null }),
        }),
        "via_proxy" => ToolOutput::from_result(via_proxy(
            string_arg(args, "protocol")?,
            string_arg(args, "host")?,
            u64_arg(args, "port")?,
            string_arg(args, "send")?,
        )),
        "resolve" => ToolOutput::from_result(
            (string_arg(args, "name")?, 0u16)
                .to_socket_addrs()
                .map(|a| json!({"addresses": a.map(|x| x.ip().to_string()).collect::<Vec<_>>()}))
                .map_err(|e| format!("resolve: {e}")),
        ),
        "connect" => {
            let timeout = optional_u64_arg(args, "timeout_ms")?.unwrap_or(2000).max(1);
            ToolOutput::from_result(connect(
                string_arg(args, "address")?,
                Duration::from_millis(timeout),
            ))
        }
        "spawn_sleeper" => {
            let seconds = u64_arg(args, "seconds")?;
            let hold_stdio = match args.get("hold_stdio") {
                None | Some(Value::Null) => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| RpcError::new(INVALID_PARAMS, "hold_stdio must be a boolean"))?,
            };
            ToolOutput::from_result(spawn_sleeper(seconds, hold_stdio))
        }
        "sleep" => {
            let ms = u64_arg(args, "ms")?;
            std::thread::sleep(Duration::from_millis(ms));
            ToolOutput::json(json!({ "slept_ms": ms }))
        }
        "exit" => {
            let code = u64_arg(args, "code")?;
            let code = u8::try_from(code).map_err(|_| {
                RpcError::new(INVALID_PARAMS, "exit code must be between 0 and 255")
            })?;
            after = After::Exit(code);
            ToolOutput::json(json!({ "exiting": code }))
        }
        "allocate" => {
            let mib = u64_arg(args, "mib")?;
            let mut block = vec![0u8; (mib as usize) << 20];
            // Touch every page: memory that is only reserved is charged to nobody.
            for i in (0..block.len()).step_by(4096) {
                block[i] = 1;
            }
            let total: u64 = block.iter().step_by(4096).map(|b| u64::from(*b)).sum();
            HELD.with(|h| h.borrow_mut().push(block));
            ToolOutput::json(json!({ "allocated_mib": mib, "pages": total }))
        }
        "fork_many" => ToolOutput::json(fork_many(u64_arg(args, "n")?)),
        "http_get_many" => {
            let (url, count, concurrency) = (
                string_arg(args, "url")?,
                u64_arg(args, "count")?.min(100_000),
                u64_arg(args, "concurrency")?.clamp(1, 256),
            );
            let via = match args.get("via").and_then(Value::as_str) {
                Some("direct") => Ok(Via::Direct),
                Some("proxy") => Ok(Via::Proxy),
                Some("connect") => Ok(Via::Connect),
                Some("socks5") => Ok(Via::Socks5),
                Some(other) => Err(format!("unknown via {other:?}")),
                None if args.get("proxy").and_then(Value::as_bool) == Some(true) => Ok(Via::Proxy),
                None => Ok(Via::Direct),
            };
            ToolOutput::from_result(via.and_then(|via| http_get_many(url, count, concurrency, via)))
        }
        "spin" => ToolOutput::json(spin(u64_arg(args, "threads")?, u64_arg(args, "ms")?)),
        "grow" => {
            GROWN.store(true, Ordering::SeqCst);
            after = After::ListChanged;
            ToolOutput::json(json!({"grown": "extra"}))
        }
        "extra" if GROWN.load(Ordering::SeqCst) => ToolOutput::json(json!("extra")),
        "blob" => {
            let bytes = u64_arg(args, "bytes")?;
            if bytes > 64 << 20 {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "bytes must be at most 64 MiB",
                ));
            }
            ToolOutput {
                text: "x".repeat(bytes as usize),
                is_error: false,
            }
        }
        "crash" => {
            after = After::Crash;
            ToolOutput::json(json!({"crashing": "SIGILL"}))
        }
        other => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("unknown tool: {other}"),
            ))
        }
    };
    let result = json!({
        "content": [{"type": "text", "text": output.text}],
        "isError": output.is_error,
    });
    Ok((result, after))
}

fn string_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, RpcError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("argument {key:?} must be a string")))
}

fn u64_arg(args: &Map<String, Value>, key: &str) -> Result<u64, RpcError> {
    optional_u64_arg(args, key)?
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("argument {key:?} is required")))
}

fn optional_u64_arg(args: &Map<String, Value>, key: &str) -> Result<Option<u64>, RpcError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            RpcError::new(
                INVALID_PARAMS,
                format!("argument {key:?} must be a non-negative integer"),
            )
        }),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tools

fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The errno name of an I/O error, or a description when it carries no errno.
fn io_error_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(raw) => errno_name(Errno::from_raw(raw)),
        None if e.kind() == io::ErrorKind::TimedOut => "ETIMEDOUT".to_owned(),
        None => format!("{:?}: {e}", e.kind()),
    }
}

fn read_file(path: &Path) -> Result<Value, String> {
    let file = fs::File::open(path).map_err(|e| io_error_name(&e))?;
    let mut bytes = Vec::new();
    file.take(READ_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error_name(&e))?;
    Ok(json!({"content": String::from_utf8_lossy(&bytes), "len": bytes.len()}))
}

fn write_file(path: &Path, text: &str) -> Result<Value, String> {
    fs::write(path, text).map_err(|e| io_error_name(&e))?;
    Ok(json!({"written": text.len()}))
}

fn list_dir(path: &Path) -> Result<Value, String> {
    let mut names: Vec<String> = fs::read_dir(path)
        .map_err(|e| io_error_name(&e))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(json!({ "entries": names }))
}

fn connect(address: &str, timeout: Duration) -> Result<Value, String> {
    let targets: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => address
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .collect(),
    };
    let mut last = String::from("resolve: no addresses");
    for target in targets {
        match TcpStream::connect_timeout(&target, timeout) {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                return Ok(json!({"connected": target.to_string(), "local": local}));
            }
            Err(e) => last = io_error_name(&e),
        }
    }
    Err(last)
}

/// A tunnel through the sandbox's egress proxy, as an HTTP (CONNECT) or SOCKS5 client would open it.
fn via_proxy(protocol: &str, host: &str, port: u64, send: &str) -> Result<Value, String> {
    use std::io::BufReader;
    let var = if protocol == "socks5" {
        "ALL_PROXY"
    } else {
        "HTTP_PROXY"
    };
    let proxy = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
    let proxy = proxy
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let port = u16::try_from(port).map_err(|_| "port out of range".to_owned())?;
    let mut s =
        TcpStream::connect(&proxy).map_err(|e| format!("proxy {proxy}: {}", io_error_name(&e)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let answer = if protocol == "socks5" {
        s.write_all(&[5, 1, 0]).map_err(|e| e.to_string())?;
        let mut method = [0u8; 2];
        s.read_exact(&mut method).map_err(|e| e.to_string())?;
        let mut req = vec![5, 1, 0, 3, host.len() as u8];
        req.extend_from_slice(host.as_bytes());
        req.extend_from_slice(&port.to_be_bytes());
        s.write_all(&req).map_err(|e| e.to_string())?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).map_err(|e| e.to_string())?;
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            _ => {
                let mut n = [0u8; 1];
                s.read_exact(&mut n).map_err(|e| e.to_string())?;
                n[0] as usize + 2
            }
        };
        let mut skip = vec![0u8; rest];
        s.read_exact(&mut skip).map_err(|e| e.to_string())?;
        if head[1] != 0 {
            return Ok(json!({"socks_reply": head[1]}));
        }
        json!({"socks_reply": 0})
    } else {
        write!(
            s,
            "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(|e| e.to_string())?;
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(|e| e.to_string())? > 2 {
            line.clear();
        }
        let code: u64 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code != 200 {
            let mut body = String::new();
            let _ = reader.take(4096).read_to_string(&mut body);
            return Ok(json!({"http_status": code, "body": body}));
        }
        json!({"http_status": 200})
    };
    s.write_all(format!("{send}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| e.to_string())?;
    let mut out = answer;
    out["reply"] = json!(reply.trim_end());
    Ok(out)
}

/// How [`http_get_many`] reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Straight to it.
    Direct,
    /// An absolute-form request to the HTTP proxy.
    Proxy,
    /// A tunnel opened by `CONNECT` at the HTTP proxy.
    Connect,
    /// A tunnel opened by a SOCKS5 CONNECT at the proxy.
    Socks5,
}

/// Opens a tunnel to `authority` (`IP:PORT` for SOCKS5) at the proxy `s` is connected to.
fn open_tunnel(s: &mut TcpStream, via: Via, authority: &str) -> Result<(), String> {
    let mut head = Vec::new();
    match via {
        Via::Connect => {
            s.write_all(
                format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
            )
            .map_err(|e| io_error_name(&e))?;
            // The answer's head, a byte at a time: what follows it is the tunnel's.
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > 8192 || s.read(&mut b).map_err(|e| io_error_name(&e))? == 0 {
                    return Err(format!(
                        "CONNECT answer: {}",
                        String::from_utf8_lossy(&head[..head.len().min(200)])
                    ));
                }
                head.push(b[0]);
            }
            if head.split(|&b| b == b' ').nth(1) != Some(b"200") {
                return Err(format!(
                    "CONNECT answer: {}",
                    String::from_utf8_lossy(&head[..head.len().min(200)])
                ));
            }
        }
        Via::Socks5 => {
            let addr: std::net::SocketAddrV4 = authority
                .parse()
                .map_err(|_| format!("SOCKS5 needs IPv4:PORT, not {authority}"))?;
            // The greeting (no authentication), its answer, then the request (two round trips, as curl does).
            s.write_all(&[5, 1, 0]).map_err(|e| io_error_name(&e))?;
            let mut method = [0u8; 2];
            s.read_exact(&mut method).map_err(|e| io_error_name(&e))?;
            if method != [5, 0] {
                return Err(format!("SOCKS5 method answer {method:?}"));
            }
            let mut req = vec![5, 1, 0, 1];
            req.extend_from_slice(&addr.ip().octets());
            req.extend_from_slice(&addr.port().to_be_bytes());
            s.write_all(&req).map_err(|e| io_error_name(&e))?;
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply).map_err(|e| io_error_name(&e))?;
            if reply[..2] != [5, 0] {
                return Err(format!("SOCKS5 reply {}", reply[1]));
            }
        }
        Via::Direct | Via::Proxy => {}
    }
    Ok(())
}

/// `count` GETs of `url`, `concurrency` threads, one connection each (load on the egress proxy, issue 18).
fn http_get_many(url: &str, count: u64, concurrency: u64, via: Via) -> Result<Value, String> {
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    let rest = url
        .strip_prefix("http://")
        .ok_or("the url must start with http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let proxy = || -> Result<String, String> {
        let p = std::env::var("HTTP_PROXY").map_err(|_| "HTTP_PROXY is not set".to_owned())?;
        Ok(p.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned())
    };
    let origin_form =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    let (target, request) = match via {
        Via::Direct => (authority.to_owned(), origin_form),
        Via::Proxy => (
            proxy()?,
            format!("GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
        ),
        Via::Connect | Via::Socks5 => (proxy()?, origin_form),
    };
    let tickets = AtomicU64::new(0);
    let latencies = Mutex::new(Vec::with_capacity(count as usize));
    let failures = Mutex::new((0u64, None::<String>));
    let one = || -> Result<(), String> {
        let mut s =
            TcpStream::connect(&target).map_err(|e| format!("{target}: {}", io_error_name(&e)))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        open_tunnel(&mut s, via, authority)?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).map_err(|e| io_error_name(&e))?;
        let status = answer.split(|&b| b == b' ').nth(1).unwrap_or_default();
        if status != b"200" {
            let head = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(format!("answer: {head}"));
        }
        Ok(())
    };
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(count) {
            scope.spawn(|| {
                while tickets.fetch_add(1, Ordering::SeqCst) < count {
                    let t0 = std::time::Instant::now();
                    match one() {
                        Ok(()) => latencies
                            .lock()
                            .unwrap()
                            .push(t0.elapsed().as_micros() as u64),
                        Err(e) => {
                            let mut f = failures.lock().unwrap();
                            f.0 += 1;
                            f.1.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut l = latencies.into_inner().unwrap();
    l.sort_unstable();
    let pct = |q: f64| {
        l.get(((l.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
    };
    let (failed, first_error) = failures.into_inner().unwrap();
    Ok(json!({
        "ok": l.len(), "failed": failed, "first_error": first_error, "seconds": seconds,
        "per_second": l.len() as f64 / seconds,
        "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99), "max_us": l.last(),
    }))
}

thread_local! {
    /// Memory `allocate` holds on to.
    static HELD: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn fork_many(n: u64) -> Value {
    let mut pids = Vec::new();
    let mut error = Value::Null;
    while (pids.len() as u64) < n {
        // SAFETY: the probe is single-threaded; the child only pauses until it is killed.
        match unsafe { libc::fork() } {
            -1 => {
                error = json!(errno_name(Errno::last()));
                break;
            }
            // SAFETY: pause and _exit are async-signal-safe.
            0 => unsafe {
                loop {
                    libc::pause();
                }
            },
            pid => pids.push(pid),
        }
    }
    for pid in &pids {
        // SAFETY: each is our own child.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
            libc::waitpid(*pid, std::ptr::null_mut(), 0);
        }
    }
    json!({ "forked": pids.len(), "error": error })
}

fn spin(threads: u64, ms: u64) -> Value {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while std::time::Instant::now() < until {
                    x = x.wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    // SAFETY: rusage is plain data; all zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let cpu_ms = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) as u64 * 1000
        + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) as u64 / 1000;
    json!({ "cpu_ms": cpu_ms, "wall_ms": ms })
}

fn spawn_sleeper(seconds: u64, hold_stdio: bool) -> Result<Value, String> {
    let seconds = libc::c_uint::try_from(seconds).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the probe is single-threaded, so the child may run any code; it only closes descriptors,
    // sleeps and calls _exit, without returning into the serve loop.
    match unsafe { libc::fork() } {
        -1 => Err(errno_name(Errno::last())),
        0 => {
            // SAFETY: closing the inherited stdio descriptors and sleeping touch no Rust-owned state; _exit ends
            // the child without running the parent's atexit handlers or flushing its buffers a second time.
            unsafe {
                if !hold_stdio {
                    libc::close(0);
                    libc::close(1);
                    libc::close(2);
                }
                let mut left = seconds;
                while left > 0 {
                    left = libc::sleep(left);
                }
                libc::_exit(0)
            }
        }
        pid => Ok(json!({ "pid": pid })),
    }
}

/// Reaps exited children (sleepers) so they do not stay zombies; the probe is often the init of its sandbox.
fn reap_children() {
    loop {
        // SAFETY: waitpid with a null status pointer and WNOHANG only collects already exited children.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Dies by SIGILL: an undefined instruction is a fault, which the kernel delivers even to a namespace init.
fn crash() -> ! {
    // SAFETY: the instruction traps at once; the process dies by SIGILL (no handler is installed for it).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("ud2", options(noreturn));
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("udf #0", options(noreturn));
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            libc::signal(libc::SIGILL, libc::SIG_DFL);
            libc::raise(libc::SIGILL);
            libc::_exit(128 + libc::SIGILL)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The probe report

fn probe_report() -> Value {
    let mut report = Map::new();
    report.insert("credentials".into(), credentials());
    report.insert("status".into(), proc_status());
    report.insert("hostname".into(), hostname());
    report.insert("namespaces".into(), namespaces());
    report.insert("uid_map".into(), text_file("/proc/self/uid_map"));
    report.insert("gid_map".into(), text_file("/proc/self/gid_map"));
    report.insert("cgroup".into(), text_file("/proc/self/cgroup"));
    report.insert("interfaces".into(), interfaces());
    report.insert("sys_class_net".into(), sys_class_net());
    report.insert("pid".into(), json!(std::process::id()));
    report.insert("ppid".into(), json!(nix::unistd::getppid().as_raw()));
    report.insert("visible_pids".into(), visible_pids());
    report.insert("root_writable".into(), json!(try_create(Path::new("/"))));
    report.insert("tmp_writable".into(), json!(try_create(Path::new("/tmp"))));
    report.insert("mounts".into(), mounts());
    report.insert("rlimits".into(), rlimits());
    report.insert(
        "cwd".into(),
        match std::env::current_dir() {
            Ok(dir) => json!(dir.to_string_lossy()),
            Err(e) => json!({"errno": io_error_name(&e)}),
        },
    );
    let mut env_names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    env_names.sort();
    report.insert("env_names".into(), json!(env_names));
    report.insert("syscalls".into(), syscalls());
    Value::Object(report)
}

fn credentials() -> Value {
    let mut out = Map::new();
    match nix::unistd::getresuid() {
        Ok(r) => {
            out.insert("uid".into(), json!(r.real.as_raw()));
            out.insert("euid".into(), json!(r.effective.as_raw()));
            out.insert("suid".into(), json!(r.saved.as_raw()));
        }
        Err(e) => {
            out.insert("getresuid".into(), json!(errno_name(e)));
        }
    }
    match nix::unistd::getresgid() {
        Ok(r) => {
            out.insert("gid".into(), json!(r.real.as_raw()));
            out.insert("egid".into(), json!(r.effective.as_raw()));
            out.insert("sgid".into(), json!(r.saved.as_raw()));
        }
        Err(e) => {
            out.insert("getresgid".into(), json!(errno_name(e)));
        }
    }
    match nix::unistd::getgroups() {
        Ok(groups) => {
            let groups: Vec<u32> = groups.iter().map(|g| g.as_raw()).collect();
            out.insert("groups".into(), json!(groups));
        }
        Err(e) => {
            out.insert("groups".into(), json!({"errno": errno_name(e)}));
        }
    }
    Value::Object(out)
}

/// The security-relevant lines of /proc/self/status, keyed by their names, values as the kernel prints them.
fn proc_status() -> Value {
    const KEYS: [&str; 9] = [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "NSpid",
    ];
    match fs::read_to_string("/proc/self/status") {
        Ok(text) => {
            let mut out = Map::new();
            for line in text.lines() {
                if let Some((key, value)) = line.split_once(':') {
                    if KEYS.contains(&key) {
                        out.insert(key.to_owned(), json!(value.trim()));
                    }
                }
            }
            Value::Object(out)
        }
        Err(e) => json!({"errno": io_error_name(&e)}),
    }
}

fn hostname() -> Value {
    match nix::unistd::gethostname() {
        Ok(name) => json!(name.to_string_lossy()),
        Err(e) => json!({"errno": errno_name(e)}),
    }
}

/// The namespace links of this process (`user:[4026531837]` ...), to compare with the host's.
fn namespaces() -> Value {
    let mut out = Map::new();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        let value = match fs::read_link(format!("/proc/self/ns/{ns}")) {
            Ok(target) => json!(target.to_string_lossy()),
            Err(e) => json!({"errno": io_error_name(&e)}),
        };
        out.insert(ns.to_owned(), value);
    }
    Value::Object(out)
}

fn text_file(path: &str) -> Value {
    match fs::read_to_string(path) {
        Ok(text) => json!(text),
        Err(e) => json!({"errno": io_error_name(&e)}),
    }
}

/// Interfaces as getifaddrs(3) reports them (netlink, so this sees the process's network namespace).
fn interfaces() -> Value {
    use nix::net::if_::InterfaceFlags;
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs,
        Err(e) => return json!({"errno": errno_name(e)}),
    };
    let mut by_name: BTreeMap<String, (InterfaceFlags, Vec<String>)> = BTreeMap::new();
    for ifa in addrs {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| (ifa.flags, Vec::new()));
        entry.0 |= ifa.flags;
        if let Some(address) = ifa.address {
            if let Some(v4) = address.as_sockaddr_in() {
                entry.1.push(v4.ip().to_string());
            } else if let Some(v6) = address.as_sockaddr_in6() {
                entry.1.push(v6.ip().to_string());
            }
        }
    }
    let mut out = Map::new();
    for (name, (flags, addresses)) in by_name {
        out.insert(
            name,
            json!({
                "up": flags.contains(InterfaceFlags::IFF_UP),
                "running": flags.contains(InterfaceFlags::IFF_RUNNING),
                "loopback": flags.contains(InterfaceFlags::IFF_LOOPBACK),
                "addresses": addresses,
            }),
        );
    }
    Value::Object(out)
}

/// Interfaces as /sys/class/net lists them: a sysfs mounted for another network namespace shows its interfaces.
fn sys_class_net() -> Value {
    let dir = Path::new("/sys/class/net");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return json!({"errno": io_error_name(&e)}),
    };
    let mut out = Map::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let read = |file: &str| {
            fs::read_to_string(dir.join(&name).join(file))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let flags = u32::from_str_radix(read("flags").trim_start_matches("0x"), 16).ok();
        let up = flags.map(|f| f & libc::IFF_UP as u32 != 0);
        out.insert(
            name.clone(),
            json!({"up": up, "operstate": read("operstate")}),
        );
    }
    Value::Object(out)
}

fn visible_pids() -> Value {
    match fs::read_dir("/proc") {
        Ok(entries) => {
            let mut pids: Vec<u32> = entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect();
            pids.sort_unstable();
            json!(pids)
        }
        Err(e) => json!({"errno": io_error_name(&e)}),
    }
}

/// Tries to create (and then removes) a file in `dir`: "ok" or the errno name.
fn try_create(dir: &Path) -> String {
    let path = dir.join(format!(".probe-write-test-{}", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {
            let _ = fs::remove_file(&path);
            "ok".to_owned()
        }
        Err(e) => io_error_name(&e),
    }
}

fn mounts() -> Value {
    let text = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(e) => return json!({"errno": io_error_name(&e)}),
    };
    let mut list = Vec::new();
    for line in text.lines().take(MOUNT_LIST_LIMIT) {
        // Fields: id parent major:minor root mount_point options [optional...] - fstype source super_options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 3 {
            continue;
        }
        list.push(json!({
            "path": unescape_mountinfo(left[4]),
            "root": unescape_mountinfo(left[3]),
            "options": left[5],
            "fstype": right[0],
            "source": unescape_mountinfo(right[1]),
            "super_options": right[2],
        }));
    }
    json!({"count": text.lines().count(), "list": list})
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn rlimits() -> Value {
    let mut out = Map::new();
    for (name, resource) in [
        ("NOFILE", libc::RLIMIT_NOFILE),
        ("CORE", libc::RLIMIT_CORE),
        ("NPROC", libc::RLIMIT_NPROC),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the valid, exclusively borrowed rlimit struct.
        let rc = unsafe { libc::getrlimit(resource, &mut limit) };
        let value = if rc == 0 {
            let show = |v: libc::rlim_t| {
                if v == libc::RLIM_INFINITY {
                    json!("unlimited")
                } else {
                    json!(v)
                }
            };
            json!({"soft": show(limit.rlim_cur), "hard": show(limit.rlim_max)})
        } else {
            json!({"errno": errno_name(Errno::last())})
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------------------
// Forbidden syscalls
//
// Each attempt runs in a forked child, so that one which succeeds (a new user namespace, a chroot, a traced
// state) changes nothing for the probe or for the next attempt. The child exits with 0 for success or the
// errno; the report shows "ok", the errno's name, "killed:SIGSYS" when a seccomp filter killed it, or
// "fork:<errno>" when the probe could not fork. Every attempt is harmless when it is allowed: invalid magic for
// reboot, nonexistent paths for pivot_root, a scratch tmpfs that is unmounted again, and so on. Where the kernel
// checks privileges before arguments, an "allowed" outcome is therefore an errno such as EINVAL or ENOENT; the
// comment on each attempt says which.
//
// Outcome when allowed (measured as root on the host) -> when only privilege is missing:
//   mount ok -> EPERM (EROFS: no writable scratch directory to try on) | umount2 EINVAL -> EPERM
//   ptrace_traceme ok | keyctl ok | bpf ENOENT -> EPERM | perf_event_open ok (perf_event_paranoid decides)
//   unshare_newuser, clone3_newuser, clone_newuser ok (-> EPERM or ENOSPC where user namespaces are off)
//   unshare_newns, unshare_newnet ok -> EPERM | init_module ENOEXEC (ENOSYS: kernel without modules) -> EPERM
//   reboot EINVAL -> EPERM | setns ok -> EPERM | pivot_root ENOENT -> EPERM | chroot ok -> EPERM
//   setresuid_0 ok -> EPERM | mknod_char ok -> EPERM
// A seccomp filter answers with its own errno (often EPERM, ENOSYS for clone3) or kills ("killed:SIGSYS").

type Attempt = fn() -> Result<(), Errno>;

fn syscalls() -> Value {
    let attempts: [(&str, Attempt); 19] = [
        ("mount", try_mount),
        ("umount2", try_umount2),
        ("ptrace_traceme", try_ptrace_traceme),
        ("keyctl", try_keyctl),
        ("bpf", try_bpf),
        ("perf_event_open", try_perf_event_open),
        ("unshare_newuser", || try_unshare(libc::CLONE_NEWUSER)),
        ("unshare_newns", || try_unshare(libc::CLONE_NEWNS)),
        ("unshare_newnet", || try_unshare(libc::CLONE_NEWNET)),
        ("clone3_newuser", try_clone3_newuser),
        ("clone_newuser", try_clone_newuser),
        ("init_module", try_init_module),
        ("reboot", try_reboot),
        ("setns", try_setns),
        ("pivot_root", try_pivot_root),
        ("chroot", try_chroot),
        ("setresuid_0", try_setresuid_0),
        ("mknod_char", try_mknod_char),
        ("compat_int80_getpid", try_compat_int80_getpid),
    ];
    let mut out = Map::new();
    for (name, attempt) in attempts {
        out.insert(name.to_owned(), json!(in_child(attempt)));
    }
    Value::Object(out)
}

/// getpid through the 32-bit syscall entry (`int 0x80`, i386 number 20). Harmless if allowed; the default
/// profile allows only the native ABI, so the filter kills the caller (SIGSYS).
#[cfg(target_arch = "x86_64")]
fn try_compat_int80_getpid() -> Result<(), Errno> {
    let ret: i64;
    // SAFETY: i386 syscall 20 (getpid) takes no arguments and touches no memory; eax is the only register it
    // reads, and the kernel returns the result in eax.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
    }
    if ret < 0 {
        return Err(Errno::from_raw(-ret as i32));
    }
    Ok(())
}

/// Not applicable off x86_64: reported as ENOSYS.
#[cfg(not(target_arch = "x86_64"))]
fn try_compat_int80_getpid() -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Runs `attempt` in a forked child and describes its outcome.
fn in_child(attempt: Attempt) -> String {
    // SAFETY: the probe is single-threaded, so the child may run any code; it runs `attempt` and calls _exit
    // without returning into the probe's own code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => format!("fork:{}", errno_name(Errno::last())),
        0 => {
            let code = match attempt() {
                Ok(()) => 0,
                Err(errno) => errno as i32,
            };
            // SAFETY: _exit ends the child without running atexit handlers or flushing the parent's buffers.
            unsafe { libc::_exit(code) }
        }
        pid => describe_wait(wait_for(pid)),
    }
}

/// Waits for one child, retrying on EINTR; returns the raw wait status or the errno of waitpid.
fn wait_for(pid: libc::pid_t) -> Result<libc::c_int, Errno> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes into the valid local status integer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc == pid {
            return Ok(status);
        }
        let errno = Errno::last();
        if errno != Errno::EINTR {
            return Err(errno);
        }
    }
}

fn describe_wait(status: Result<libc::c_int, Errno>) -> String {
    match status {
        Err(errno) => format!("waitpid:{}", errno_name(errno)),
        Ok(status) if libc::WIFEXITED(status) => match libc::WEXITSTATUS(status) {
            0 => "ok".to_owned(),
            code => errno_name(Errno::from_raw(code)),
        },
        Ok(status) if libc::WIFSIGNALED(status) => {
            format!("killed:{}", signal_name(libc::WTERMSIG(status)))
        }
        Ok(status) => format!("status:{status}"),
    }
}

fn signal_name(sig: libc::c_int) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The result of a libc call that returns -1 and sets errno on failure.
fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc == -1 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// A fresh directory under /tmp or /dev/shm for attempts that need a place to mount on or create in.
fn scratch_dir(tag: &str) -> Option<PathBuf> {
    for base in ["/tmp", "/dev/shm"] {
        let dir = Path::new(base).join(format!(".sandbox-probe-{}-{tag}", std::process::id()));
        if fs::create_dir(&dir).is_ok() {
            return Some(dir);
        }
    }
    None
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// mount(2) of a small tmpfs on a scratch directory, unmounted again at once. It first tries to move into a
/// private mount namespace so that, where it is allowed (root on a host), nothing propagates anywhere.
fn try_mount() -> Result<(), Errno> {
    // SAFETY: unshare and mount get valid nul-terminated strings or null pointers; this is a forked child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) == 0 {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
        }
    }
    // No writable place to mount on: EROFS stands for "could not even try".
    let dir = scratch_dir("mnt").ok_or(Errno::EROFS)?;
    let target = cstring(&dir);
    // SAFETY: all pointers are valid nul-terminated strings that outlive the calls.
    let result = check(
        unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=16k".as_ptr().cast(),
            )
        }
        .into(),
    );
    if result.is_ok() {
        // SAFETY: target is a valid nul-terminated path; we unmount exactly what we just mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir(&dir);
    result.map(drop)
}

/// umount2(2) of a directory that is not a mount point: EINVAL when the caller may unmount, EPERM otherwise.
fn try_umount2() -> Result<(), Errno> {
    let dir = scratch_dir("umount");
    let target = match &dir {
        Some(dir) => cstring(dir),
        None => c"/proc/self/fd".to_owned(),
    };
    // SAFETY: target is a valid nul-terminated path.
    let result = check(unsafe { libc::umount2(target.as_ptr(), 0) }.into());
    if let Some(dir) = dir {
        let _ = fs::remove_dir(dir);
    }
    result.map(drop)
}

fn try_ptrace_traceme() -> Result<(), Errno> {
    // SAFETY: PTRACE_TRACEME takes no pointers; it only marks this forked child as traced by its parent.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_TRACEME,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    })
    .map(drop)
}

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create=0): reads an id, creates nothing.
fn try_keyctl() -> Result<(), Errno> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: the arguments are plain integers.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    })
    .map(drop)
}

/// bpf(BPF_PROG_GET_NEXT_ID) past any real id: ENOENT when allowed (needs CAP_SYS_ADMIN), EPERM otherwise.
fn try_bpf() -> Result<(), Errno> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    // start_id, next_id, open_flags, padding; start_id + 1 must stay below INT_MAX.
    let attr: [u32; 4] = [0x7fff_fffd, 0, 0, 0];
    // SAFETY: attr is a valid, initialized buffer of the size passed; the kernel only reads and writes within it.
    check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_NEXT_ID,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    })
    .map(drop)
}

/// perf_event_open of a software clock counter on this process, user space only; closed at once.
fn try_perf_event_open() -> Result<(), Errno> {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 = 64 bytes: type, size, config, ..., flag bits at byte 40.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
    let flags: u64 = (1 << 0) | (1 << 5) | (1 << 6); // disabled, exclude_kernel, exclude_hv
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: attr is a valid 64-byte perf_event_attr; pid 0 = this process, cpu -1 = any, no group, no flags.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) })?;
    // SAFETY: fd is the descriptor the kernel just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn try_unshare(flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: unshare takes only flags; it affects this forked child alone.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}

/// Waits for a grandchild created by a raw clone and checks it exited 0.
fn reap_clone(pid: libc::c_long) -> Result<(), Errno> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| Errno::EOVERFLOW)?;
    match wait_for(pid)? {
        status if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => Ok(()),
        _ => Err(Errno::ECHILD),
    }
}

/// Raw clone3 with a zeroed 88-byte clone_args (CLONE_ARGS_SIZE_VER2), flags CLONE_NEWUSER, exit signal SIGCHLD.
/// Docker-style profiles answer ENOSYS so that libc falls back to clone.
fn try_clone3_newuser() -> Result<(), Errno> {
    let mut args = [0u64; 11];
    args[0] = libc::CLONE_NEWUSER as u64; // flags
    args[4] = libc::SIGCHLD as u64; // exit_signal
                                    // SAFETY: args is a valid 88-byte clone_args; without CLONE_VM the new process gets a copy of this one's
                                    // memory and stack, like fork, and only calls _exit.
    let pid = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    })?;
    if pid == 0 {
        // SAFETY: in the new process: end it at once.
        unsafe { libc::_exit(0) }
    }
    reap_clone(pid)
}

/// Raw clone(CLONE_NEWUSER | SIGCHLD) with no new stack: fork-like, the new process only calls _exit.
fn try_clone_newuser() -> Result<(), Errno> {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
    // SAFETY: stack 0 means the child continues on a copy of this stack (no CLONE_VM); the tid and tls pointers
    // are null and unused without CLONE_*TID / CLONE_SETTLS.
    let pid = check(unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) })?;
    if pid == 0 {
        // SAFETY: in the new process: end it at once.
        unsafe { libc::_exit(0) }
    }
    reap_clone(pid)
}

/// init_module with an empty image: ENOEXEC when allowed (needs CAP_SYS_MODULE), EPERM otherwise.
fn try_init_module() -> Result<(), Errno> {
    // SAFETY: a null image of length 0 and a valid empty parameter string; nothing is loaded.
    check(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0,
            c"".as_ptr(),
        )
    })
    .map(drop)
}

/// reboot with invalid magic numbers: EINVAL when allowed (the kernel checks CAP_SYS_BOOT first), EPERM
/// otherwise. It can never reboot anything.
fn try_reboot() -> Result<(), Errno> {
    // SAFETY: magic 0/0 is rejected before any command is looked at; the arg pointer is null and unused.
    check(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, std::ptr::null::<u8>()) }).map(drop)
}

/// setns into this process's own UTS namespace: "ok" when allowed (needs CAP_SYS_ADMIN), EPERM otherwise.
fn try_setns() -> Result<(), Errno> {
    let file = fs::File::open("/proc/self/ns/uts")
        .map_err(|e| e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO))?;
    // SAFETY: the descriptor is valid while `file` lives; joining one's own namespace changes nothing.
    check(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWUTS) }.into())
        .map(drop)
}

/// pivot_root between two nonexistent paths: ENOENT when allowed (privilege is checked first), EPERM otherwise.
fn try_pivot_root() -> Result<(), Errno> {
    // SAFETY: both arguments are valid nul-terminated strings naming paths that do not exist.
    check(unsafe {
        libc::syscall(
            libc::SYS_pivot_root,
            c"/.sandbox-probe-nonexistent-new".as_ptr(),
            c"/.sandbox-probe-nonexistent-old".as_ptr(),
        )
    })
    .map(drop)
}

/// chroot("/"): "ok" when allowed (needs CAP_SYS_CHROOT), EPERM otherwise; confined to this forked child.
fn try_chroot() -> Result<(), Errno> {
    // SAFETY: a valid nul-terminated path.
    check(unsafe { libc::chroot(c"/".as_ptr()) }.into()).map(drop)
}

/// setresuid(0, 0, 0): "ok" for root or with CAP_SETUID, EPERM for an unprivileged user.
fn try_setresuid_0() -> Result<(), Errno> {
    // SAFETY: plain integer arguments; affects this forked child alone.
    check(unsafe { libc::setresuid(0, 0, 0) }.into()).map(drop)
}

/// mknod of /dev/null's device numbers in a scratch directory: needs CAP_MKNOD in the initial user namespace.
fn try_mknod_char() -> Result<(), Errno> {
    let dir = scratch_dir("mknod").ok_or(Errno::EROFS)?;
    let node = cstring(&dir.join("null"));
    // SAFETY: node is a valid nul-terminated path; the device numbers are those of /dev/null.
    let result = check(
        unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) }.into(),
    );
    let _ = fs::remove_file(dir.join("null"));
    let _ = fs::remove_dir(&dir);
    result.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(line: &str) -> Value {
        handle_message(line.as_bytes()).0.expect("a reply")
    }

    #[test]
    fn initialize_echoes_a_supported_version_and_defaults_otherwise() {
        for (asked, expected) in [
            ("2024-11-05", "2024-11-05"),
            ("2025-03-26", "2025-03-26"),
            ("2025-06-18", "2025-06-18"),
            ("2099-01-01", "2025-06-18"),
        ] {
            let line = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
            let reply = call(&line.to_string());
            assert_eq!(
                reply["result"]["protocolVersion"], expected,
                "asked {asked}"
            );
            assert_eq!(reply["result"]["serverInfo"]["name"], "sandbox-probe");
            assert_eq!(reply["id"], 1);
        }
    }

    #[test]
    fn notifications_and_responses_get_no_reply() {
        let (reply, _) =
            handle_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(reply.is_none());
        let (reply, _) = handle_message(br#"{"jsonrpc":"2.0","method":"no/such/notification"}"#);
        assert!(reply.is_none());
        let (reply, _) = handle_message(br#"{"jsonrpc":"2.0","id":4,"result":{}}"#);
        assert!(reply.is_none());
    }

    #[test]
    fn errors_carry_json_rpc_codes() {
        assert_eq!(
            call(r#"{"jsonrpc":"2.0","id":"x","method":"nope"}"#)["error"]["code"],
            METHOD_NOT_FOUND
        );
        assert_eq!(call("{not json")["error"]["code"], PARSE_ERROR);
        assert_eq!(call("[1,2]")["error"]["code"], INVALID_REQUEST);
        let unknown_tool =
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}"#;
        assert_eq!(call(unknown_tool)["error"]["code"], INVALID_PARAMS);
        let missing_arg = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
        assert_eq!(call(missing_arg)["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn every_listed_tool_is_callable_and_has_an_object_schema() {
        for tool in tool_list() {
            let name = tool["name"].as_str().expect("name");
            assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
            // Call with no arguments: tools with required arguments must answer INVALID_PARAMS, not "unknown".
            let line =
                json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": name}});
            let required = tool["inputSchema"]["required"]
                .as_array()
                .expect("required")
                .len();
            if required > 0 {
                let reply = call(&line.to_string());
                let message = reply["error"]["message"].as_str().expect("error message");
                assert!(!message.contains("unknown tool"), "{name}: {message}");
            }
        }
    }

    #[test]
    fn exit_replies_first_then_exits() {
        let line = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"exit","arguments":{"code":7}}}"#;
        let (reply, after) = handle_message(line.as_bytes());
        assert_eq!(reply.expect("reply")["result"]["isError"], false);
        assert!(matches!(after, After::Exit(7)));
        let too_big = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"exit","arguments":{"code":256}}}"#;
        assert_eq!(call(too_big)["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn failed_operations_answer_an_errno_name() {
        let out = ToolOutput::from_result(read_file(Path::new("/nonexistent/sandbox-probe")));
        assert!(out.is_error);
        assert_eq!(out.text, r#"{"errno":"ENOENT"}"#);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trail\04"), r"/trail\04");
    }

    #[test]
    fn wait_statuses_are_named() {
        assert_eq!(describe_wait(Ok(0)), "ok");
        assert_eq!(describe_wait(Ok((libc::EPERM) << 8)), "EPERM");
        assert_eq!(describe_wait(Ok(libc::SIGSYS)), "killed:SIGSYS");
        assert_eq!(describe_wait(Err(Errno::ECHILD)), "waitpid:ECHILD");
    }
}
