//! Newline-delimited JSON-RPC framing, facing an untrusted peer.
//!
//! [`LineReader`] cuts a byte stream into lines of at most a bounded size, reading straight into one buffer (a
//! large message is copied once, from the kernel into that buffer, and written out from there). [`parse_frame`]
//! is a pure function over one line's bytes: it says what kind of JSON-RPC message the line is — without building
//! the `params` or `result` (they are checked to be JSON and skipped) — or why it is none. It never panics, on any
//! input (the fuzz harnesses call it).

use std::io::{self, Read};

use serde::de::IgnoredAny;
use serde::Deserialize;

/// The largest message relayed (bytes, without the newline). Larger lines are dropped whole.
pub const MAX_MESSAGE: usize = 32 << 20;

/// What a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request: an `id` and a `method`.
    Request {
        /// The id, as compact JSON text (`1`, `"abc"`).
        id: String,
        /// The method.
        method: String,
    },
    /// A notification: a `method` and no `id`.
    Notification {
        /// The method.
        method: String,
    },
    /// A response: an `id` and a `result` or an `error`.
    Response {
        /// The id, as compact JSON text; `None` for `null` (an error about an unreadable request).
        id: Option<String>,
        /// The error's code, for an error response.
        error: Option<i64>,
        /// The result is an object with `"isError": true` (a failed tool call).
        tool_error: bool,
        /// The result is an object with a `tools` member (a tools list, whatever was asked).
        tools: bool,
    },
    /// Not a JSON-RPC 2.0 message (the reason, for the user).
    Invalid(String),
}

/// The members of a JSON-RPC message, at its top level.
const ENVELOPE: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
/// The members of a result the guard reads (lists and tool call results).
const RESULT: &[&str] = &["tools", "prompts", "resources", "nextCursor", "isError"];

/// `key` as lenient JSON decoders match member names: case-insensitively (Go's `encoding/json`, .NET's
/// case-insensitive option), with Unicode simple case folding (the Kelvin sign is a `k`, the long s an `s`). Two
/// keys with the same fold can be one member to the peer's decoder and two to the guard's.
pub fn fold_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(key);
    }
    std::borrow::Cow::Owned(
        key.chars()
            .flat_map(|c| match c {
                '\u{212A}' => 'k'.to_lowercase(),
                '\u{17F}' => 's'.to_lowercase(),
                c => c.to_lowercase(),
            })
            .collect(),
    )
}

/// The member of `known` that `key` is another spelling of (the same fold, not the same bytes), if any.
pub fn other_spelling<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let folded = fold_key(key);
    known
        .iter()
        .copied()
        .find(|k| *k != key && k.eq_ignore_ascii_case(&folded))
}

/// The member names of one JSON object, checked as they come: refused when two of them are one member to a lenient
/// decoder (a duplicate, or two spellings that fold alike), or when one is a variant spelling of a `known` member
/// (`"Method"`, `"NAME"`: the guard reads `method`, a lenient peer may read either).
#[derive(Default)]
struct Keys {
    seen: std::collections::HashSet<String>,
    ambiguous: Option<String>,
}

impl Keys {
    fn add(&mut self, key: &str, known: &[&str]) {
        if self.ambiguous.is_some() {
            return;
        }
        if let Some(k) = other_spelling(key, known) {
            self.ambiguous = Some(format!(
                "member `{}` is another spelling of `{k}`",
                shown(key)
            ));
            return;
        }
        if !self.seen.insert(fold_key(key).into_owned()) {
            self.ambiguous = Some(format!(
                "member `{}` appears twice (or in two spellings)",
                shown(key)
            ));
        }
    }
}

/// A member name for a message to the user: escaped, at most 40 characters.
pub fn shown(key: &str) -> String {
    let mut s: String = key
        .chars()
        .take(40)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if key.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// A member name, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A message's top level, read in one pass: the members JSON-RPC defines (`params` skipped, `result` peeked at),
/// other members skipped, the member names checked with [`Keys`].
#[derive(Default)]
struct Envelope {
    jsonrpc: Option<String>,
    // `Some(Value::Null)` for `"id": null`, `None` when absent.
    id: Option<serde_json::Value>,
    method: Option<String>,
    params: bool,
    result: Option<ResultPeek>,
    error: Option<ErrorObject>,
    ambiguous: Option<String>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC message (an object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let mut env = Envelope::default();
                let mut keys = Keys::default();
                while let Some(Key(key)) = map.next_key()? {
                    keys.add(&key, ENVELOPE);
                    match &*key {
                        "jsonrpc" => env.jsonrpc = map.next_value()?,
                        "id" => env.id = Some(map.next_value()?),
                        "method" => env.method = map.next_value()?,
                        "params" => env.params = map.next_value::<Option<IgnoredAny>>()?.is_some(),
                        "result" => env.result = map.next_value()?,
                        "error" => env.error = map.next_value()?,
                        // Other members are skipped, never built, as JSON-RPC peers do.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                env.ambiguous = keys.ambiguous;
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct ErrorObject {
    code: Option<serde_json::Number>,
    #[allow(dead_code)]
    message: Option<IgnoredAny>,
    #[allow(dead_code)]
    data: Option<IgnoredAny>,
}

/// A result, skipped in the same pass that reads its top-level `isError` and notes a `tools` member (no second
/// scan of a large result).
struct ResultPeek {
    is_error: bool,
    tools: bool,
    ambiguous: Option<String>,
}

impl ResultPeek {
    fn plain() -> ResultPeek {
        ResultPeek {
            is_error: false,
            tools: false,
            ambiguous: None,
        }
    }
}

impl<'de> Deserialize<'de> for ResultPeek {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ResultPeek;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ResultPeek, A::Error> {
                let mut peek = ResultPeek::plain();
                let mut keys = Keys::default();
                while let Some(Key(key)) = map.next_key()? {
                    keys.add(&key, RESULT);
                    if key == "isError" {
                        peek.is_error = matches!(
                            map.next_value::<serde_json::Value>()?,
                            serde_json::Value::Bool(true)
                        );
                    } else {
                        peek.tools |= key == "tools";
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                peek.ambiguous = keys.ambiguous;
                Ok(peek)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResultPeek, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResultPeek::plain())
            }
            fn visit_bool<E>(self, _: bool) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
            fn visit_i64<E>(self, _: i64) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
            fn visit_u64<E>(self, _: u64) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
            fn visit_f64<E>(self, _: f64) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
            fn visit_str<E>(self, _: &str) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
            fn visit_unit<E>(self) -> Result<ResultPeek, E> {
                Ok(ResultPeek::plain())
            }
        }
        d.deserialize_any(V)
    }
}

/// What `line` (one message, without its newline; surrounding whitespace allowed) is. Pure, total, never panics.
/// Strict where a lenient peer could read the message otherwise than the guard does: a member twice, or in two
/// spellings that fold alike, or a JSON-RPC member in another spelling (`"Method"`), at the top level or at the
/// top of a result, makes the message [`Frame::Invalid`]; so do batches (a JSON array) and anything that is not
/// one JSON object.
pub fn parse_frame(line: &[u8]) -> Frame {
    let env: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => return Frame::Invalid(format!("not a JSON-RPC message: {e}")),
    };
    if let Some(why) = env
        .ambiguous
        .or_else(|| env.result.as_ref().and_then(|r| r.ambiguous.clone()))
    {
        return Frame::Invalid(format!("an ambiguous message: {why}"));
    }
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Frame::Invalid("not a JSON-RPC 2.0 message (`jsonrpc` is not \"2.0\")".into());
    }
    let id = match env.id {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => {
            Some(Some(v.to_string()))
        }
        Some(_) => return Frame::Invalid("an `id` must be a number or a string".into()),
    };
    let tool_error = env.result.as_ref().is_some_and(|r| r.is_error);
    let tools = env.result.as_ref().is_some_and(|r| r.tools);
    match (env.method, env.result.is_some(), env.error) {
        (Some(method), false, None) => match id {
            Some(Some(id)) => Frame::Request { id, method },
            None => Frame::Notification { method },
            Some(None) => Frame::Invalid("a request's `id` must not be null".into()),
        },
        (None, true, None) => match id {
            Some(id) => Frame::Response {
                id,
                error: None,
                tool_error,
                tools,
            },
            None => Frame::Invalid("a response without an `id`".into()),
        },
        (None, false, Some(error)) => match id {
            Some(id) => Frame::Response {
                id,
                error: Some(error.code.and_then(|c| c.as_i64()).unwrap_or(0)),
                tool_error: false,
                tools: false,
            },
            None => Frame::Invalid("an error response without an `id`".into()),
        },
        (None, false, None) if !env.params => {
            Frame::Invalid("neither a `method` nor a `result` or `error`".into())
        }
        _ => Frame::Invalid("a message must be a request, a notification or a response".into()),
    }
}

/// Checks every JSON object of `text` down to `max_depth` levels of nesting (0: the top level only) with the rule
/// of [`parse_frame`]: no member twice, none in two spellings that fold alike. `Err` says where it is ambiguous,
/// or why `text` is not JSON. One pass, nothing built; deeper values are skipped.
pub fn unambiguous(text: &[u8], max_depth: usize) -> Result<(), String> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::de::DeserializeSeed::deserialize(
        Walk {
            depth: 0,
            max_depth,
            found: &mut found,
        },
        &mut de,
    )
    .and_then(|()| de.end())
    .map_err(|e| format!("not JSON: {e}"))?;
    match found {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

struct Walk<'a> {
    depth: usize,
    max_depth: usize,
    found: &'a mut Option<String>,
}

impl Walk<'_> {
    fn deeper(&mut self) -> Option<Walk<'_>> {
        (self.depth < self.max_depth && self.found.is_none()).then(|| Walk {
            depth: self.depth + 1,
            max_depth: self.max_depth,
            found: &mut *self.found,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while let Some(Key(key)) = map.next_key()? {
            if self.found.is_none() {
                keys.add(&key, &[]);
                if let Some(why) = keys.ambiguous.take() {
                    *self.found = Some(why);
                }
            }
            match self.deeper() {
                Some(walk) => map.next_value_seed(walk)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let more = match self.deeper() {
                Some(walk) => seq.next_element_seed(walk)?.is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
        }
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Whether `text` is JSON cut short: what is there reads as the start of one JSON value, and the line ends before
/// the value does (a pretty-printed document's `{` line). No decoder that reads a line as a message takes such a
/// line for one, so it is plain text to the guard (MCP's stdio messages are one line each).
pub fn cut_short(text: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err_and(|e| e.is_eof())
}

/// Whether `text` (a line, trimmed) would be taken for JSON by a peer: it opens an object or an array (after an
/// optional byte order mark, which some decoders skip). What does not is plain text (a server's log line).
pub fn looks_like_json(text: &[u8]) -> bool {
    let text = text
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(text)
        .trim_ascii_start();
    matches!(text.first(), Some(b'{' | b'['))
}

/// One line read by [`LineReader::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line, its newline included (the last line of a stream that ends without one has none).
    Message(&'a [u8]),
    /// A line longer than the limit, dropped: its length (up to where it was given up, when the stream ended).
    TooLong(usize),
}

/// Cuts a stream into lines of at most `max` bytes (plus the newline). Bytes are read straight into one buffer,
/// which holds at most one message and what follows it in the same read.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// Where to look for a newline next (bytes before it, from `start`, have none).
    scanned: usize,
    /// Dropping an oversized line: how many bytes of it so far.
    dropping: Option<usize>,
    max: usize,
    eof: bool,
}

/// The smallest read.
const READ_CHUNK: usize = 64 << 10;

impl<R: Read> LineReader<R> {
    /// A reader of lines of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            scanned: 0,
            dropping: None,
            max,
            eof: false,
        }
    }

    /// The next line; `None` at the end of the stream.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            if let Some(pos) = self.buf[self.scanned..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let nl = self.scanned + pos;
                let line_start = self.start;
                self.start = nl + 1;
                self.scanned = self.start;
                let len = nl - line_start;
                if let Some(dropped) = self.dropping.take() {
                    return Ok(Some(Line::TooLong(dropped + len)));
                }
                // A line can arrive whole in one read and still be over the limit (the buffer holds a message
                // and a read chunk): it is dropped like one that grew past the limit.
                if len > self.max {
                    return Ok(Some(Line::TooLong(len)));
                }
                return Ok(Some(Line::Message(&self.buf[line_start..=nl])));
            }
            self.scanned = self.end;
            if self.end - self.start > self.max {
                // Too long: forget what we have of it, and skip to its newline.
                *self.dropping.get_or_insert(0) += self.end - self.start;
                self.start = 0;
                self.end = 0;
                self.scanned = 0;
            }
            if self.eof {
                let line_start = self.start;
                self.start = self.end;
                self.scanned = self.end;
                if let Some(dropped) = self.dropping.take() {
                    return Ok(Some(Line::TooLong(dropped + (self.end - line_start))));
                }
                if line_start == self.end {
                    return Ok(None);
                }
                if self.end - line_start > self.max {
                    return Ok(Some(Line::TooLong(self.end - line_start)));
                }
                return Ok(Some(Line::Message(&self.buf[line_start..self.end])));
            }
            // Room to read: move the partial line to the front, grow when a read would not fit a chunk.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK {
                let want = (self.end + READ_CHUNK).max(self.buf.len() * 2);
                // Never more than one message and a chunk.
                self.buf.resize(want.min(self.max + 1 + READ_CHUNK), 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `line` without its newline and surrounding JSON whitespace (space, tab, CR, LF: not the form feed or vertical
/// tab that ASCII also calls whitespace, which no JSON decoder skips — a line the guard reads must be one the peer
/// reads alike).
pub fn trimmed(line: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = line.iter().position(|b| !ws(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &line[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, method: &str) -> Frame {
        Frame::Request {
            id: id.into(),
            method: method.into(),
        }
    }

    #[test]
    fn messages_are_classified() {
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            req("1", "tools/list")
        );
        assert_eq!(
            parse_frame(br#" {"jsonrpc":"2.0","id":"a","method":"x","params":{"k":[1,2]}} "#),
            req("\"a\"", "x")
        );
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
            Frame::Notification {
                method: "notifications/tools/list_changed".into()
            }
        );
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#),
            Frame::Response {
                id: Some("7".into()),
                error: None,
                tool_error: false,
                tools: true
            }
        );
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","id":8,"result":{"content":[{"isError":true}],"isError":true}}"#),
            Frame::Response {
                id: Some("8".into()),
                error: None,
                tool_error: true,
                tools: false
            }
        );
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#),
            Frame::Response {
                id: None,
                error: Some(-32700),
                tool_error: false,
                tools: false
            }
        );
    }

    #[test]
    fn garbage_is_invalid_and_never_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"hello",
            b"{",
            b"[]",
            b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}]",
            b"null",
            b"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"x\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"x\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"x\"}",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"result\":1}",
            b"{\"jsonrpc\":\"2.0\",\"result\":1}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"method\":\"y\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"} trailing",
            b"\xff\xfe{\"jsonrpc\"",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
        ];
        for case in cases {
            assert!(
                matches!(parse_frame(case), Frame::Invalid(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(case),
                parse_frame(case)
            );
        }
        // Deep nesting is skipped without recursion (no stack overflow); unbalanced, it is invalid.
        let deep = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            parse_frame(deep.as_bytes()),
            Frame::Response { .. } | Frame::Invalid(_)
        ));
        assert!(matches!(
            parse_frame(&deep.as_bytes()[..150_000]),
            Frame::Invalid(_)
        ));
        // Every prefix of a valid message (a half-line) is invalid, never a panic.
        let full = br#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
        for n in 0..full.len() {
            assert!(matches!(parse_frame(&full[..n]), Frame::Invalid(_)), "{n}");
        }
    }

    /// A reader handing out at most `step` bytes per read (a pipe delivering half-lines).
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize, max: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut r = LineReader::new(Trickle { data, step }, max);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().expect("read") {
            out.push(match line {
                Line::Message(m) => Ok(m.to_vec()),
                Line::TooLong(n) => Err(n),
            });
        }
        out
    }

    #[test]
    fn half_lines_are_joined_whatever_the_reads() {
        let data = b"{\"a\":1}\n\n{\"b\":2}\nlast";
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(
                lines(data, step, 100),
                vec![
                    Ok(b"{\"a\":1}\n".to_vec()),
                    Ok(b"\n".to_vec()),
                    Ok(b"{\"b\":2}\n".to_vec()),
                    Ok(b"last".to_vec())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn oversized_lines_are_dropped_and_the_next_one_is_read() {
        let mut data = vec![b'x'; 300_000];
        data.extend_from_slice(b"\nok\n");
        data.extend(vec![b'y'; 200_000]);
        for step in [1000, 70_000, 1 << 20] {
            assert_eq!(
                lines(&data, step, 100_000),
                vec![Err(300_000), Ok(b"ok\n".to_vec()), Err(200_000)],
                "step {step}"
            );
        }
        // A line of exactly the limit passes.
        let mut exact = vec![b'z'; 1000];
        exact.push(b'\n');
        assert_eq!(lines(&exact, 333, 1000), vec![Ok(exact.clone())]);
    }

    #[test]
    fn a_line_over_the_limit_is_never_passed_whole_even_when_it_arrives_in_one_read() {
        // The buffer holds a message and a read chunk: a line a little over the limit, with its newline, can be
        // in the buffer at once. It is dropped whole, and the next line is read from its start.
        let mut data = vec![b'x'; 150];
        data.extend_from_slice(b"\nok\n");
        data.extend(vec![b'y'; 101]);
        for step in [7, 100, 151, 1000, 1 << 20] {
            assert_eq!(
                lines(&data, step, 100),
                vec![Err(150), Ok(b"ok\n".to_vec()), Err(101)],
                "step {step}"
            );
        }
        // One byte over, in a single read: dropped; exactly the limit: passed.
        assert_eq!(
            lines(&[&[b'a'; 101][..], b"\n"].concat(), 1000, 100),
            vec![Err(101)]
        );
        assert_eq!(
            lines(&[b'a'; 100], 1000, 100),
            vec![Ok([b'a'; 100].to_vec())]
        );
    }

    #[test]
    fn only_json_whitespace_is_trimmed() {
        assert_eq!(trimmed(b" \t{}\r\n"), b"{}");
        assert_eq!(trimmed(b" \r\n"), b"");
        // A form feed is whitespace to ASCII, not to JSON: the line stays one no decoder reads.
        let ff = b"\x0c{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n";
        assert!(matches!(parse_frame(trimmed(ff)), Frame::Invalid(_)));
    }

    #[test]
    fn ambiguous_messages_are_invalid() {
        let cases: &[&[u8]] = &[
            // Two spellings of one member, as Go's encoding/json reads them (case-insensitively; the last wins).
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"Method":"tools/call"}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"paramſ\":{}}".as_bytes(),
            // A member twice (JavaScript and Python take the last, some decoders the first).
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{},"params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","other":1,"other":2}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[]}}"#,
            // The same at the top of a result.
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"TOOLS":[{"name":"x"}]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"x"}]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"content":[]}}"#,
        ];
        for case in cases {
            let f = parse_frame(case);
            assert!(
                matches!(&f, Frame::Invalid(why) if why.contains("ambiguous")),
                "{}: {f:?}",
                String::from_utf8_lossy(case)
            );
        }
        // An escaped spelling is the member itself (every decoder unescapes), not another one.
        assert_eq!(
            parse_frame(br#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools\/call"}"#),
            req("1", "tools/call")
        );
    }

    #[test]
    fn unambiguous_checks_each_object_to_its_depth() {
        let call =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}"#;
        assert!(unambiguous(call, 0).is_ok());
        assert!(unambiguous(call, 1).unwrap_err().contains("NAME"));
        let deep = br#"{"a":[{"b":{"k":1,"\u212a":2}}]}"#;
        assert!(unambiguous(deep, 2).is_ok());
        assert!(unambiguous(deep, 3).is_err());
        assert!(unambiguous(br#"{"a":1} x"#, 9)
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(unambiguous(br#"{"Name":1,"name2":{"name":1,"Name2":2}}"#, 9).is_ok());
    }

    #[test]
    fn the_buffer_stays_bounded() {
        let data = vec![b'x'; 5 << 20];
        let mut r = LineReader::new(
            Trickle {
                data: &data,
                step: 1 << 20,
            },
            1 << 20,
        );
        while r.next_line().expect("read").is_some() {}
        assert!(r.buf.len() <= (1 << 20) + 1 + READ_CHUNK, "{}", r.buf.len());
    }
}
