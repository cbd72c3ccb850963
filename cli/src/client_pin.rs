//! `client add`'s pin: the server's tools recorded before its entry is written into a client's file.
//!
//! The guard pins a server's `tools/list` (and prompts and resources lists) on the first run it sees at an image
//! digest. Left to the client, that first run is whenever the client first starts the server, so a change made
//! between `client add` and then would be pinned as the baseline. `client add` therefore starts the entry's own
//! command line once (the same `thv-sandbox run …` argv, the same environment a client passes) as a child, and
//! plays MCP client over its stdio: `initialize`, `notifications/initialized`, `tools/list` (and `prompts/list`,
//! `resources/list` when the server advertises them). The run's guard records the pin exactly as on a client's
//! first run; then the child's stdin is closed and it exits.
//!
//! The conversation is newline-delimited JSON-RPC, read with the guard's bounded line reader. Lines that are not
//! the awaited answer are skipped: notifications, answers to other ids, garbage. A request from the server
//! (`ping`, `roots/list`, `sampling/createMessage`…) gets an answer so the server does not wait on it: `{}` for
//! `ping`, "method not found" for the rest (the pin run declares no client capabilities). A paginated list is
//! followed through its `nextCursor`s, at most [`MAX_PAGES`] pages: the guard pins a listing's pages together
//! (see `guard::pin::Listing`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thv_sandbox_runtime::guard::frame::{Line, LineReader, MAX_MESSAGE};

/// The MCP protocol version the pin run asks for (the server may answer with another; any is taken).
const PROTOCOL_VERSION: &str = "2025-06-18";

/// How much of the child's stderr is kept for an error message.
const STDERR_KEEP: usize = 16 << 10;

/// Most pages of one list the pin run asks for (a server that pages on without end is not followed forever).
pub const MAX_PAGES: usize = 100;

/// How long a child that was asked to stop (SIGTERM) gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The command line of the pin run: the entry's, with this binary as the program.
#[derive(Debug, Clone)]
pub struct PinRun {
    /// The program (this thv-sandbox).
    pub program: PathBuf,
    /// `run … NAME [-- ARGS]`, as in the entry.
    pub args: Vec<String>,
    /// The entry's `env` values, on top of this process's environment (as a client passes them).
    pub env: Vec<(String, String)>,
    /// The whole conversation, start to exit, is bounded by this.
    pub timeout: Duration,
}

/// What the server listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The number of tools on the pages of `tools/list`.
    pub tools: usize,
    /// The number of prompts, when the server advertises prompts and listed them.
    pub prompts: Option<usize>,
    /// The number of resources, likewise.
    pub resources: Option<usize>,
    /// The lists that had more than [`MAX_PAGES`] pages (only those were asked for, and pinned).
    pub paged: Vec<&'static str>,
    /// Lists the server advertises but answered with an error (not pinned): method and error message.
    pub failed: Vec<(&'static str, String)>,
    /// How the child ended after its stdin was closed.
    pub exit: Option<ExitStatus>,
    /// The child's stderr (its tail).
    pub stderr: String,
}

/// Why the pin could not be taken.
#[derive(Debug)]
pub enum PinError {
    /// The child did not start.
    Start(std::io::Error),
    /// The time ran out (while waiting for `stage`); the child was stopped.
    TimedOut {
        /// What was being waited for.
        stage: String,
        /// The child's stderr (its tail).
        stderr: String,
    },
    /// The conversation failed.
    Failed {
        /// What went wrong.
        what: String,
        /// The child's stderr (its tail).
        stderr: String,
    },
}

/// A line from the child's stdout.
enum Incoming {
    Line(Vec<u8>),
    TooLong(usize),
    ReadError(String),
}

/// What a line from the server is, to a client waiting for the answer to `want`.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    /// The answer: its result, or its error (code, message).
    Answer(Result<Value, (i64, String)>),
    /// A request from the server, to be answered with this line.
    Request(Value),
    /// Anything else: a notification, an answer to another id, garbage.
    Other,
}

fn classify(line: &[u8], want: u64) -> Message {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(line) else {
        return Message::Other;
    };
    match (m.get("method"), m.get("id")) {
        (Some(Value::String(method)), Some(id)) if !id.is_null() => {
            Message::Request(answer_to_server(id, method))
        }
        (Some(_), _) => Message::Other,
        (None, Some(id)) if id.as_u64() == Some(want) => {
            if let Some(e) = m.get("error") {
                let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
                let message = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_owned();
                Message::Answer(Err((code, message)))
            } else if let Some(r) = m.get("result") {
                Message::Answer(Ok(r.clone()))
            } else {
                Message::Other
            }
        }
        _ => Message::Other,
    }
}

/// The answer to a server's request: `ping` is answered, anything else is not a method of this client.
fn answer_to_server(id: &Value, method: &str) -> Value {
    if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": -32601,
            "message": format!("`{method}` is not supported by thv-sandbox client add's pin run"),
        }})
    }
}

/// The number of entries of `member` in a list result, and the cursor of its next page if it has one.
fn count(result: &Value, member: &str) -> Result<(usize, Option<Value>), String> {
    let n = result
        .get(member)
        .and_then(Value::as_array)
        .map(Vec::len)
        .ok_or_else(|| format!("its result has no `{member}` array"))?;
    let next = result
        .get("nextCursor")
        .filter(|c| !c.is_null() && c.as_str() != Some(""))
        .cloned();
    Ok((n, next))
}

/// A request's result, or the server's error (code, message).
type Answer<T> = Result<T, (i64, String)>;

/// The MCP side of the conversation.
struct Session {
    stdin: Option<ChildStdin>,
    lines: Receiver<Incoming>,
    deadline: Instant,
    next_id: u64,
}

/// Why a step of the conversation failed.
enum Step {
    TimedOut(String),
    Failed(String),
}

impl Session {
    fn send(&mut self, message: &Value) -> Result<(), Step> {
        let mut line = serde_json::to_vec(message).map_err(|e| Step::Failed(e.to_string()))?;
        line.push(b'\n');
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Step::Failed("its input is closed".into()))?;
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(|e| {
                // A server that exits at once (a missing variable, a bad argument) closes its input before our
                // first line reaches it: the same end as closing its output before the answer.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    let what = message
                        .get("method")
                        .and_then(Value::as_str)
                        .unwrap_or("its answer");
                    Step::Failed(format!(
                        "the server ended (closed its input) before answering `{what}`"
                    ))
                } else {
                    Step::Failed(format!("cannot write to the server: {e}"))
                }
            })
    }

    /// Sends a request and waits for its answer, answering the server's own requests meanwhile.
    fn request(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, (i64, String)>, Step> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(Incoming::Line(l)) => l,
                Ok(Incoming::TooLong(n)) => {
                    return Err(Step::Failed(format!(
                        "the server sent a message of {n} bytes (more than {MAX_MESSAGE}) while `{method}` was \
                         awaited"
                    )))
                }
                Ok(Incoming::ReadError(e)) => {
                    return Err(Step::Failed(format!("cannot read from the server: {e}")))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Step::TimedOut(format!("the answer to `{method}`")))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Step::Failed(format!(
                        "the server ended its output before answering `{method}`"
                    )))
                }
            };
            match classify(&line, id) {
                Message::Answer(a) => return Ok(a),
                Message::Request(reply) => self.send(&reply)?,
                Message::Other => {}
            }
        }
    }

    /// Every page of a list (at most [`MAX_PAGES`]): its number of entries and whether pages were left; or the
    /// server's error.
    fn list_all(&mut self, method: &str, member: &str) -> Result<Answer<(usize, bool)>, Step> {
        let (mut total, mut cursor) = (0, None);
        for _ in 0..MAX_PAGES {
            let params = match cursor.take() {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = match self.request(method, params)? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let (n, next) =
                count(&result, member).map_err(|e| Step::Failed(format!("`{method}`: {e}")))?;
            total += n;
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(Ok((total, false))),
            }
        }
        Ok(Ok((total, true)))
    }

    /// `initialize`, `notifications/initialized`, the lists.
    fn converse(&mut self) -> Result<Listed, Step> {
        let init = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "thv-sandbox-client-add", "version": env!("CARGO_PKG_VERSION")},
                }),
            )?
            .map_err(|(code, m)| Step::Failed(format!("`initialize` failed: {m} ({code})")))?;
        let caps = init.get("capabilities").cloned().unwrap_or(Value::Null);
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        let mut listed = Listed {
            tools: 0,
            prompts: None,
            resources: None,
            paged: Vec::new(),
            failed: Vec::new(),
            exit: None,
            stderr: String::new(),
        };
        // Tools are asked for even when not advertised (clients do); an error is then "no tools".
        match self.list_all("tools/list", "tools")? {
            Ok((n, more)) => {
                listed.tools = n;
                if more {
                    listed.paged.push("tools/list");
                }
            }
            Err((code, m)) if caps.get("tools").is_some() => {
                return Err(Step::Failed(format!("`tools/list` failed: {m} ({code})")))
            }
            Err(_) => {}
        }
        for (cap, method, member) in [
            ("prompts", "prompts/list", "prompts"),
            ("resources", "resources/list", "resources"),
        ] {
            if caps.get(cap).is_none() {
                continue;
            }
            match self.list_all(method, member)? {
                Ok((n, more)) => {
                    if more {
                        listed.paged.push(method);
                    }
                    match cap {
                        "prompts" => listed.prompts = Some(n),
                        _ => listed.resources = Some(n),
                    }
                }
                Err((code, m)) => listed.failed.push((method, format!("{m} ({code})"))),
            }
        }
        Ok(listed)
    }
}

/// The tail of a stream, kept by a thread.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    fn collect(&self, mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let buf = Arc::clone(&self.0);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                        b.extend_from_slice(&chunk[..n]);
                        if b.len() > STDERR_KEEP {
                            let cut = b.len() - STDERR_KEEP;
                            b.drain(..cut);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
    }

    fn text(&self) -> String {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Waits for the child until `deadline`; `None` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the child (our own child, by its PID): SIGTERM, which `run` takes as "stop the server and end", then
/// SIGKILL after a grace period.
fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet (try_wait said it runs).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if let Some(status) = wait_until(child, Instant::now() + STOP_GRACE) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Gives the stderr thread a moment to take the last bytes of a child that has ended.
fn settle(handle: &std::thread::JoinHandle<()>) {
    let until = Instant::now() + Duration::from_millis(500);
    while !handle.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the entry's command line and lists its tools (see the module's documentation).
pub fn take(run: &PinRun) -> Result<Listed, PinError> {
    let mut child = Command::new(&run.program)
        .args(&run.args)
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(PinError::Start)?;
    let deadline = Instant::now() + run.timeout;
    let tail = Tail::default();
    let stderr_thread = tail.collect(child.stderr.take().expect("piped"));
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::spawn(move || {
        let mut reader = LineReader::new(stdout, MAX_MESSAGE);
        loop {
            let item = match reader.next_line() {
                Ok(None) => break,
                Ok(Some(Line::Message(l))) => Incoming::Line(l.to_vec()),
                Ok(Some(Line::TooLong(n))) => Incoming::TooLong(n),
                Err(e) => Incoming::ReadError(e.to_string()),
            };
            let end = matches!(item, Incoming::ReadError(_));
            if tx.send(item).is_err() || end {
                break;
            }
        }
    });
    let mut session = Session {
        stdin: child.stdin.take(),
        lines: rx,
        deadline,
        next_id: 0,
    };
    let outcome = session.converse();
    // Closing its input is how a client says it is done: the guard's relay ends the server, `run` exits.
    session.stdin = None;
    match outcome {
        Ok(mut listed) => match wait_until(&mut child, deadline) {
            Some(status) => {
                settle(&stderr_thread);
                listed.exit = Some(status);
                listed.stderr = tail.text();
                Ok(listed)
            }
            None => {
                stop(&mut child);
                settle(&stderr_thread);
                Err(PinError::TimedOut {
                    stage: "the server to exit after its input was closed".into(),
                    stderr: tail.text(),
                })
            }
        },
        Err(step) => {
            let status = match &step {
                // A server that ended its output is probably ending: a moment for its exit status.
                Step::Failed(_) => wait_until(&mut child, Instant::now() + Duration::from_secs(2))
                    .or_else(|| stop(&mut child)),
                Step::TimedOut(_) => stop(&mut child),
            };
            settle(&stderr_thread);
            let stderr = tail.text();
            Err(match step {
                Step::TimedOut(stage) => PinError::TimedOut { stage, stderr },
                Step::Failed(what) => PinError::Failed {
                    what: match status {
                        Some(s) => format!("{what} ({})", describe_exit(s)),
                        None => what,
                    },
                    stderr,
                },
            })
        }
    }
}

/// An exit status in words.
pub fn describe_exit(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("it exited with status {c}"),
        (None, Some(sig)) => format!("it was ended by signal {sig}"),
        _ => "it ended".into(),
    }
}

/// The last `n` lines of `text`, indented, for an error message.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_awaited_answer_is_found_among_other_lines() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#, 2),
            Message::Answer(Ok(json!({"tools": []})))
        );
        assert_eq!(
            classify(
                br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"nope"}}"#,
                2
            ),
            Message::Answer(Err((-32601, "nope".into())))
        );
        // Another id, a notification, garbage, a half line, an id of the wrong type: skipped.
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{}}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            b"Starting server...",
            br#"{"jsonrpc":"2.0","id":2,"res"#,
            br#"{"jsonrpc":"2.0","id":"2","result":{}}"#,
            br#"{"jsonrpc":"2.0","id":2}"#,
            b"[1,2]",
            b"",
        ] {
            assert_eq!(
                classify(other, 2),
                Message::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn the_servers_requests_are_answered() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":"p1","method":"ping"}"#, 2),
            Message::Request(json!({"jsonrpc": "2.0", "id": "p1", "result": {}}))
        );
        let Message::Request(reply) = classify(
            br#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}}"#,
            7,
        ) else {
            panic!("a request from the server");
        };
        assert_eq!(reply["id"], 7);
        assert_eq!(reply["error"]["code"], -32601);
        // `"id": null` with a method is no request.
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, 1),
            Message::Other
        );
    }

    #[test]
    fn lists_are_counted_and_pages_noticed() {
        assert_eq!(count(&json!({"tools": [{}, {}]}), "tools"), Ok((2, None)));
        assert_eq!(
            count(&json!({"tools": [{}], "nextCursor": "c2"}), "tools"),
            Ok((1, Some(json!("c2"))))
        );
        assert_eq!(
            count(&json!({"tools": [], "nextCursor": null}), "tools"),
            Ok((0, None))
        );
        assert!(count(&json!({"prompts": []}), "tools").is_err());
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "    | b\n    | c");
        assert_eq!(last_lines("", 3), "");
    }

    /// A shell script as the server: the real child process, pipes and deadline handling.
    fn script(body: &str, timeout: Duration) -> Result<Listed, PinError> {
        take(&PinRun {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), body.into()],
            env: vec![("PIN_TEST_VALUE".into(), "from-env".into())],
            timeout,
        })
    }

    #[test]
    fn a_scripted_server_is_listed_and_its_requests_answered() {
        // Reads each request line, answers by id; sends a ping and a notification before the tools.
        let body = r#"
            read init; echo '{"jsonrpc":"2.0","method":"notifications/message","params":{}}'
            echo '{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"tools":{},"prompts":{}},"serverInfo":{"name":"s","version":"1"}}}'
            read initialized
            read tools
            echo '{"jsonrpc":"2.0","id":"srv","method":"ping"}'
            read pong
            case "$pong" in *'"result":{}'*) ;; *) exit 9;; esac
            echo "garbage"
            echo '{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"},{"name":"b"}],"nextCursor":"x"}}'
            read page2
            case "$page2" in *'"id":3'*'"cursor":"x"'*|*'"cursor":"x"'*'"id":3'*) ;; *) exit 8;; esac
            echo '{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"c"}]}}'
            read prompts
            echo '{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"broken"}}'
            echo "$PIN_TEST_VALUE" >&2
            cat >/dev/null
        "#;
        let listed = script(body, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(listed.tools, 3);
        assert!(listed.paged.is_empty(), "{listed:?}");
        assert_eq!(listed.prompts, None);
        assert_eq!(listed.failed.len(), 1, "{listed:?}");
        assert!(listed.exit.is_some_and(|s| s.success()), "{listed:?}");
        assert!(listed.stderr.contains("from-env"), "{listed:?}");
    }

    #[test]
    fn a_list_that_pages_on_without_end_is_followed_a_bounded_number_of_pages() {
        let body = r#"
            read init
            echo '{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}}'
            read initialized
            i=2
            while read req; do
                echo "{\"jsonrpc\":\"2.0\",\"id\":$i,\"result\":{\"tools\":[{\"name\":\"t$i\"}],\"nextCursor\":\"c$i\"}}"
                i=$((i+1))
            done
        "#;
        let listed = script(body, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(listed.tools, MAX_PAGES);
        assert_eq!(listed.paged, ["tools/list"]);
    }

    #[test]
    fn a_server_that_ends_or_hangs_fails_with_its_stderr() {
        match script(
            "echo 'error: needs TOKEN' >&2; exit 3",
            Duration::from_secs(20),
        ) {
            Err(PinError::Failed { what, stderr }) => {
                assert!(
                    what.contains("initialize") && what.contains("status 3"),
                    "{what}"
                );
                assert!(stderr.contains("needs TOKEN"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        let t = Instant::now();
        match script(
            "echo waiting >&2; exec sleep 60",
            Duration::from_millis(500),
        ) {
            Err(PinError::TimedOut { stage, stderr }) => {
                assert!(stage.contains("initialize"), "{stage}");
                assert!(stderr.contains("waiting"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(matches!(
            take(&PinRun {
                program: "/nonexistent/thv".into(),
                args: vec![],
                env: vec![],
                timeout: Duration::from_secs(1),
            }),
            Err(PinError::Start(_))
        ));
    }
}
