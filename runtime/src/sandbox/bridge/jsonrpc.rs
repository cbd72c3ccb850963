//! JSON-RPC framing for the bridge: bounded line reading, message classification, error responses, the one
//! writer of the client's stdout.

use std::io;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// JSON-RPC "internal error", used for failures on the HTTP side that the client must hear about.
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// JSON-RPC "parse error".
pub(crate) const PARSE_ERROR: i64 = -32700;

/// What one bounded line read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line without its terminator.
    Complete(Vec<u8>),
    /// A line longer than the limit; it was read to its end and discarded.
    TooLong,
    /// End of input (a final unterminated line is returned as [`Line::Line`] first).
    Eof,
}

/// One message from the client, as the bridges read them.
pub(crate) enum ClientMessage {
    /// A JSON value and the line it was read from (forwarded as it is).
    Message(Vec<u8>, Value),
    /// A line that cannot be forwarded (too long, not JSON): the error response (a serialized line) to send the
    /// client instead. The reason was logged on stderr.
    Refused(Vec<u8>),
    /// End of input.
    Eof,
}

/// Reads the client's next message: blank lines are skipped, an oversized or non-JSON line becomes the JSON-RPC
/// parse error the client gets back.
pub(crate) async fn read_message<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<ClientMessage> {
    loop {
        let line = match read_line(reader, max).await? {
            Line::Eof => return Ok(ClientMessage::Eof),
            Line::TooLong => {
                note(format!("dropped a client message larger than {max} bytes"));
                return Ok(ClientMessage::Refused(error_response(
                    &Value::Null,
                    PARSE_ERROR,
                    "message too large",
                )));
            }
            Line::Complete(l) => l,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(match serde_json::from_slice::<Value>(&line) {
            Ok(msg) => ClientMessage::Message(line, msg),
            Err(_) => {
                note("dropped a client message that is not JSON");
                ClientMessage::Refused(error_response(
                    &Value::Null,
                    PARSE_ERROR,
                    "parse error: not JSON",
                ))
            }
        });
    }
}

/// Reads one `\n`-terminated line of at most `max` bytes; a longer one is consumed and reported as
/// [`Line::TooLong`], so a peer cannot make us buffer without bound.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Complete(line)
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete(line)
            });
        }
    }
}

/// One JSON-RPC message (or a batch), as far as routing needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Classified {
    /// Ids of the requests in it (a batch may hold several); a response is owed for each.
    pub requests: Vec<Value>,
    /// Ids of the responses in it.
    pub responses: Vec<Value>,
    /// The method of a single message, if it has one.
    pub method: Option<String>,
}

impl Classified {
    /// Whether this is the `initialize` request.
    pub fn is_initialize(&self) -> bool {
        self.method.as_deref() == Some("initialize") && !self.requests.is_empty()
    }
}

/// Classifies a message: request (method and id), notification (method, no id), response (id and result or
/// error, no method); a batch is the union of its members. Anything else has no ids and no method.
pub(crate) fn classify(msg: &Value) -> Classified {
    let mut c = Classified {
        requests: Vec::new(),
        responses: Vec::new(),
        method: None,
    };
    match msg {
        Value::Array(items) => {
            for item in items {
                let one = classify_one(item);
                c.requests.extend(one.requests);
                c.responses.extend(one.responses);
            }
        }
        _ => c = classify_one(msg),
    }
    c
}

fn classify_one(msg: &Value) -> Classified {
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    let id = msg.get("id").filter(|id| !id.is_null()).cloned();
    let mut c = Classified {
        requests: Vec::new(),
        responses: Vec::new(),
        method: method.clone(),
    };
    match (method, id) {
        (Some(_), Some(id)) => c.requests.push(id),
        (None, Some(id)) if msg.get("result").is_some() || msg.get("error").is_some() => {
            c.responses.push(id)
        }
        _ => {}
    }
    c
}

/// A key for an id in maps: its compact JSON (so `1` and `"1"` differ, as JSON-RPC says they do).
pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A JSON-RPC error response to `id`, as one line (no terminator).
pub(crate) fn error_response(id: &Value, code: i64, message: &str) -> Vec<u8> {
    line_of(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

/// A message as one line of compact JSON (serde_json escapes every newline inside strings).
pub(crate) fn line_of(msg: &Value) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Checks that `data` is JSON and makes it one line: JSON strings cannot hold a raw CR or LF, so any there is
/// whitespace between tokens and becomes a space — the bytes are otherwise passed on as the server sent them
/// (key order, number spelling). `None` for data that is not JSON.
pub(crate) fn normalise(data: &[u8]) -> Option<(Value, Vec<u8>)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let line = data
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect();
    Some((v, line))
}

/// The sending side of the one stdout writer: each item is one message, written as one line.
pub(crate) type Out = mpsc::Sender<Vec<u8>>;

/// The one writer of the client's stdout: writes each message and a newline, flushing after each, so messages
/// never interleave. Ends when every sender is gone (Ok) or a write fails (the client went away).
pub(crate) async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut writer: W,
) -> io::Result<()> {
    while let Some(mut line) = rx.recv().await {
        line.push(b'\n');
        writer.write_all(&line).await?;
        writer.flush().await?;
    }
    writer.flush().await
}

pub(crate) use super::note;

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = tokio::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, max).await.unwrap();
            let end = l == Line::Eof;
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_bounded_and_split() {
        assert_eq!(
            lines(b"ab\r\nc\n0123456789\nlast", 5).await,
            vec![
                Line::Complete(b"ab".to_vec()),
                Line::Complete(b"c".to_vec()),
                Line::TooLong,
                Line::Complete(b"last".to_vec()),
                Line::Eof
            ]
        );
        assert_eq!(
            lines(b"0123456789", 5).await,
            vec![Line::TooLong, Line::Eof]
        );
        assert_eq!(lines(b"", 5).await, vec![Line::Eof]);
    }

    #[test]
    fn classification() {
        let req = classify(&json!({"jsonrpc":"2.0","id":1,"method":"initialize"}));
        assert!(req.is_initialize());
        assert_eq!(req.requests, vec![json!(1)]);
        let note = classify(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        assert!(note.requests.is_empty() && note.responses.is_empty());
        let resp = classify(&json!({"jsonrpc":"2.0","id":"a","result":{}}));
        assert_eq!(resp.responses, vec![json!("a")]);
        assert!(resp.method.is_none());
        let batch = classify(&json!([{"id":1,"method":"x"},{"id":2,"error":{}},{"method":"n"}]));
        assert_eq!(batch.requests, vec![json!(1)]);
        assert_eq!(batch.responses, vec![json!(2)]);
        assert!(classify(&json!("garbage")).requests.is_empty());
        assert!(classify(&json!({"id":null,"method":"x"}))
            .requests
            .is_empty());
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
    }

    #[test]
    fn error_lines_are_one_line() {
        let l = error_response(&json!(7), INTERNAL_ERROR, "a\nb");
        assert!(!l.contains(&b'\n'));
        let v: Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["message"], "a\nb");
        let (v, n) = normalise(b"{\r\n \"a\": \"x\\ny\"\n}").unwrap();
        assert_eq!(n, br#"{   "a": "x\ny" }"#);
        assert_eq!(v["a"], "x\ny");
        assert!(normalise(b"nope").is_none());
    }
}
