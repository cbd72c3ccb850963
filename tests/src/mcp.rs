//! MCP clients for the end-to-end tests: the real `rmcp` client, over a child process's stdio or any byte
//! stream (a socketpair, a TCP stream).
//!
//! - [`mcp_client_over_command`]: rmcp's own child-process transport, as an MCP host would run a server.
//!   rmcp kills the child when the client is dropped, so the exit status cannot be observed.
//! - [`spawn_mcp`]: spawns the command with pipes and keeps the [`tokio::process::Child`], so a test can
//!   observe the exit status and the whole of stderr ([`McpProcess::finish`]).
//! - [`mcp_client_over_stream`]: a client over a read half and a write half.
//! - [`tool_text`], [`tool_json`]: read a tool result; the probe's tools answer JSON in a text block.
//!
//! Every handshake, tool call and [`McpProcess::finish`] is bounded ([`HANDSHAKE_TIMEOUT`], [`CALL_TIMEOUT`],
//! [`FINISH_TIMEOUT`]); [`within`] bounds anything else. A hang panics with what was awaited instead of stalling
//! the test binary (and CI) for ever. It panics rather than returning an error so that a test expecting an error
//! can never take a hang for the error it expects.

use std::future::Future;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A running rmcp client with the default (no-op) client handler. It derefs to [`rmcp::Peer`]:
/// `client.list_all_tools().await`, `client.call_tool(...)`, `client.peer_info()`.
pub type McpClient = RunningService<RoleClient, ()>;

/// The longest an MCP handshake may take. Generous: the first run of an image in a test pulls and unpacks it
/// (a Debian root for the real servers) before the server starts, on a machine that may be busy.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one tool call (or tools/list) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest [`McpProcess::finish`] may wait for the process to exit and for stderr to close.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

/// Awaits `fut` for at most `limit`.
///
/// # Panics
/// When `fut` is not done within `limit`; the message names `what`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what} (a hang)"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McpSetupError {
    #[error("spawning {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the MCP handshake failed: {0}")]
    Initialize(#[from] Box<ClientInitializeError>),
}

fn program_of(cmd: &Command) -> String {
    cmd.as_std().get_program().to_string_lossy().into_owned()
}

/// Spawns `cmd` through rmcp's `TokioChildProcess` (stdin and stdout piped, stderr inherited) and performs the
/// MCP handshake.
pub async fn mcp_client_over_command(cmd: Command) -> Result<McpClient, McpSetupError> {
    let program = program_of(&cmd);
    let program_for_timeout = program.clone();
    let transport =
        TokioChildProcess::new(cmd).map_err(|source| McpSetupError::Spawn { program, source })?;
    within(
        HANDSHAKE_TIMEOUT,
        &format!("MCP handshake with {program_for_timeout}"),
        ().serve(transport),
    )
    .await
    .map_err(|e| Box::new(e).into())
}

/// Performs the MCP handshake over a byte stream: `read` carries the server's messages, `write` the client's.
/// For a socketpair: `let (r, w) = tokio::net::UnixStream::from_std(sock)?.into_split();`.
pub async fn mcp_client_over_stream<R, W>(read: R, write: W) -> Result<McpClient, McpSetupError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    within(
        HANDSHAKE_TIMEOUT,
        "MCP handshake over a stream",
        ().serve((read, write)),
    )
    .await
    .map_err(|e| Box::new(e).into())
}

/// A server process with an MCP client on its stdio, its exit status still to be collected.
#[derive(Debug)]
pub struct McpProcess {
    pub client: McpClient,
    pub child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: JoinHandle<()>,
}

/// How an [`McpProcess`] ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// All of stderr, read until every holder of the pipe had closed it (the server and anything it spawned).
    pub stderr: String,
}

/// Spawns `cmd` with stdin, stdout and stderr piped (stderr is drained in the background, so a chatty server
/// never blocks on a full pipe), kill-on-drop, and performs the MCP handshake.
pub async fn spawn_mcp(mut cmd: Command) -> Result<McpProcess, McpSetupError> {
    let program = program_of(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|source| McpSetupError::Spawn { program, source })?;
    let (Some(stdout), Some(stdin), Some(mut stderr_pipe)) =
        (child.stdout.take(), child.stdin.take(), child.stderr.take())
    else {
        unreachable!("all three stdio streams were set to piped");
    };
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&stderr);
    let stderr_reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
    let client = mcp_client_over_stream(stdout, stdin).await?;
    Ok(McpProcess {
        client,
        child,
        stderr,
        stderr_reader,
    })
}

impl McpProcess {
    /// What the server wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Calls a tool; `arguments` must be a JSON object (or null for none).
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<CallToolResult, ServiceError> {
        call_tool(&self.client, tool, arguments).await
    }

    /// Closes the client (the server sees end of file on stdin), waits for the process to exit and for stderr
    /// to reach end of file. The wait for stderr also waits for every process that inherited it.
    ///
    /// # Panics
    /// When that takes longer than [`FINISH_TIMEOUT`]; the message has the stderr read so far. The child is
    /// killed on drop.
    pub async fn finish(self) -> io::Result<Finished> {
        let McpProcess {
            client,
            mut child,
            stderr,
            mut stderr_reader,
        } = self;
        let done = tokio::time::timeout(FINISH_TIMEOUT, async {
            // A server that already exited makes cancel return an error about the closed transport; that is
            // fine.
            let _ = client.cancel().await;
            let status = child.wait().await?;
            (&mut stderr_reader).await.map_err(io::Error::other)?;
            io::Result::Ok(status)
        })
        .await;
        let status = match done {
            Ok(status) => status?,
            Err(_) => {
                stderr_reader.abort();
                panic!(
                    "timed out after {FINISH_TIMEOUT:?} waiting for the server to exit and close stderr (a \
                     hang); stderr so far:\n{}",
                    String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner()))
                )
            }
        };
        let stderr =
            String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        Ok(Finished { status, stderr })
    }
}

/// Calls a tool; `arguments` must be a JSON object (or null for none).
///
/// # Panics
/// When `arguments` is neither an object nor null (a mistake in the test), or when the call takes longer than
/// [`CALL_TIMEOUT`].
pub async fn call_tool(
    client: &McpClient,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    match arguments {
        Value::Null => {}
        Value::Object(map) => params = params.with_arguments(map),
        other => panic!("tool arguments must be a JSON object, not {other}"),
    }
    within(
        CALL_TIMEOUT,
        &format!("tools/call {tool}"),
        client.call_tool(params),
    )
    .await
}

/// `tools/list` (every page), bounded by [`CALL_TIMEOUT`].
///
/// # Panics
/// When it takes longer than that.
pub async fn list_tools(client: &McpClient) -> Result<Vec<rmcp::model::Tool>, ServiceError> {
    within(CALL_TIMEOUT, "tools/list", client.list_all_tools()).await
}

/// The text of a tool result's first text block ("" when there is none).
pub fn tool_text(result: &CallToolResult) -> &str {
    result
        .content
        .iter()
        .find_map(|block| block.as_text())
        .map(|text| text.text.as_str())
        .unwrap_or_default()
}

/// A tool result's first text block parsed as JSON (the probe's tools, except `echo`, answer JSON).
///
/// # Panics
/// When the text is not JSON; the message shows the text.
pub fn tool_json(result: &CallToolResult) -> Value {
    let text = tool_text(result);
    serde_json::from_str(text).unwrap_or_else(|e| panic!("tool result is not JSON ({e}): {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[should_panic(expected = "timed out after 10ms: a future that never ends (a hang)")]
    async fn a_hang_fails_with_what_was_awaited() {
        within(
            Duration::from_millis(10),
            "a future that never ends",
            std::future::pending::<()>(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_finished_future_passes_through() {
        assert_eq!(
            within(Duration::from_secs(5), "ready", async { 7 }).await,
            7
        );
    }
}
