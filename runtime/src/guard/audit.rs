//! The audit log (`--audit-log FILE`, config `audit_log`): one JSON line per request and notification — time,
//! server, image digest, direction, method, tool, argument keys (never values), result status, duration.
//!
//! Each line is written whole by one `write(2)` on a file opened with `O_APPEND`: once written it is the kernel's,
//! so a crash of thv-sandbox (even SIGKILL) loses at most the line being written. (A crash of the machine may lose
//! what the kernel had not written back; the log is not fsynced per line.) When a line would take the file past
//! the size cap, the file is rotated first: `FILE` → `FILE.1` → … → `FILE.<keep>` (the oldest goes).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// The default size cap of the log (bytes).
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// How many rotated files are kept.
pub const KEEP: u32 = 3;
/// Longest method or tool name written (longer ones are cut, marked with `…`).
const MAX_NAME: usize = 200;
/// Most argument keys written for one call.
const MAX_KEYS: usize = 64;

/// One line of the log.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// When the request was sent or the notification relayed (RFC 3339).
    pub time: String,
    /// The server's name.
    pub server: String,
    /// The image's manifest digest.
    pub image: String,
    /// `client` (client → server) or `server` (server → client).
    pub direction: &'static str,
    /// `request` or `notification`.
    pub kind: &'static str,
    /// The JSON-RPC method.
    pub method: String,
    /// The request id (JSON text), for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool, for `tools/call` (the name the client used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The argument names of a `tools/call` (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument_keys: Option<Vec<String>>,
    /// `ok`, `error` (a JSON-RPC error), `tool_error` (a result with `isError`), `refused` (by thv-sandbox),
    /// `unanswered` (the session ended first), `sent` (a notification).
    pub status: &'static str,
    /// The JSON-RPC error code, for `error` and `refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Microseconds from the request to its response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
}

/// Cuts `s` to [`MAX_NAME`] characters.
pub fn short(s: &str) -> String {
    match s.char_indices().nth(MAX_NAME) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The argument names of a `tools/call`'s `arguments` (sorted, at most [`MAX_KEYS`], each cut to length).
pub fn argument_keys(arguments: Option<&serde_json::Value>) -> Option<Vec<String>> {
    let obj = arguments?.as_object()?;
    Some(obj.keys().take(MAX_KEYS).map(|k| short(k)).collect())
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<(File, u64)>,
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl AuditLog {
    /// Opens (creates, mode 0600) the log at `path`, capped at `max_bytes` (at least 4 KiB).
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<AuditLog> {
        Ok(AuditLog {
            path: path.to_owned(),
            max_bytes: max_bytes.max(4096),
            file: Mutex::new(open(path)?),
        })
    }

    /// Writes one line (rotating first when it would pass the cap). Errors are returned, for the caller to say
    /// once; the relay goes on.
    pub fn write(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1 > 0 && guard.1 + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            *guard = open(&self.path)?;
        }
        // One write for the whole line (a regular file takes it whole; a short write is finished at once).
        guard.0.write_all(&line)?;
        guard.1 += line.len() as u64;
        Ok(())
    }

    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..KEEP).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str) -> Entry {
        Entry {
            time: "t".into(),
            server: "s".into(),
            method: method.into(),
            direction: "client",
            kind: "request",
            status: "ok",
            ..Entry::default()
        }
    }

    #[test]
    fn lines_are_whole_json_and_the_log_rotates_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 4096).unwrap();
        for i in 0..200 {
            log.write(&entry(&format!("m{i}"))).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 4096);
        let mut methods = Vec::new();
        for n in (1..=KEEP).rev() {
            let old = dir.path().join(format!("audit.log.{n}"));
            let text = std::fs::read_to_string(&old).unwrap();
            assert!(text.len() <= 4096);
            methods.extend(
                text.lines().map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["method"].clone()
                }),
            );
        }
        methods.extend(
            current
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["method"].clone()),
        );
        assert!(!dir.path().join(format!("audit.log.{}", KEEP + 1)).exists());
        // The newest lines are all there, in order, ending with the last one.
        assert_eq!(methods.last().unwrap(), "m199");
        let n = methods.len();
        for (k, m) in methods.iter().enumerate() {
            assert_eq!(m, &format!("m{}", 200 - n + k));
        }
    }

    #[test]
    fn keys_not_values_and_names_are_cut() {
        let args = serde_json::json!({"token": "s3cret", "path": "/x"});
        assert_eq!(argument_keys(Some(&args)).unwrap(), ["path", "token"]);
        assert_eq!(argument_keys(Some(&serde_json::json!("s3cret"))), None);
        assert_eq!(short(&"x".repeat(500)).chars().count(), MAX_NAME + 1);
    }
}
