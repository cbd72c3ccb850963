//! Server-sent events (the WHATWG "event stream" format), bounded: a parser for what servers send us and an
//! encoder for what we send.

use std::fmt;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The `retry:` field, in milliseconds, if this event block had one.
    pub retry: Option<u64>,
}

/// An event (or line) larger than the parser's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge(pub usize);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an SSE event larger than {} bytes", self.0)
    }
}

/// Incremental SSE parser: feed it bytes as they arrive, take the complete events.
#[derive(Debug)]
pub(crate) struct Parser {
    max: usize,
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    /// The stream's last event id (it persists across events, as the spec says).
    pub last_id: Option<String>,
}

impl Parser {
    /// A parser refusing lines and events larger than `max` bytes.
    pub fn new(max: usize) -> Parser {
        Parser {
            max,
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            retry: None,
            last_id: None,
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Event>, TooLarge> {
        let mut out = Vec::new();
        if self.after_cr {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            self.after_cr = false;
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.len() + i > self.max {
                return Err(TooLarge(self.max));
            }
            self.line.extend_from_slice(&bytes[..i]);
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                if bytes.is_empty() {
                    self.after_cr = true;
                } else if let Some(rest) = bytes.strip_prefix(b"\n") {
                    bytes = rest;
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(ev) = self.field(&line)? {
                out.push(ev);
            }
        }
        if self.line.len() + bytes.len() > self.max {
            return Err(TooLarge(self.max));
        }
        self.line.extend_from_slice(bytes);
        Ok(out)
    }

    fn field(&mut self, line: &[u8]) -> Result<Option<Event>, TooLarge> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(line);
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match name {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(TooLarge(self.max));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<Event> {
        if let Some(id) = self.id.take() {
            self.last_id = Some(id.clone()).filter(|s| !s.is_empty());
            if !self.has_data {
                // An id-only (priming) event: it moves the last event id, nothing to deliver.
                self.event.clear();
                return self.retry_only();
            }
            return Some(self.take_event(Some(id)));
        }
        if !self.has_data {
            self.event.clear();
            return self.retry_only();
        }
        Some(self.take_event(None))
    }

    fn retry_only(&mut self) -> Option<Event> {
        self.retry.take().map(|retry| Event {
            event: String::new(),
            data: String::new(),
            id: None,
            retry: Some(retry),
        })
    }

    fn take_event(&mut self, id: Option<String>) -> Event {
        let event = std::mem::take(&mut self.event);
        let ev = Event {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
            id,
            retry: self.retry.take(),
        };
        self.has_data = false;
        ev
    }
}

/// Encodes one event: `event: NAME` (unless `message`), one `data:` line per line of `data`, a blank line.
pub(crate) fn encode(event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    if event != "message" {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new(1024);
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
            retry: None,
        }
    }

    #[test]
    fn events_across_chunks_and_line_ends() {
        let evs = all(&[
            b": comment\n",
            b"event: endpoint\r",
            b"\ndata: /messages?s=1\r\n\r\n",
            b"data: {\"a\":\ndata:1}\n\nid: 7\ndata",
            b": x\n\n",
        ]);
        assert_eq!(
            evs,
            vec![
                ev("endpoint", "/messages?s=1", None),
                ev("message", "{\"a\":\n1}", None),
                ev("message", "x", Some("7")),
            ]
        );
    }

    #[test]
    fn priming_event_sets_last_id_and_retry() {
        let mut p = Parser::new(100);
        let evs = p.push(b"id: 0\nretry: 3000\ndata:\n\n").unwrap();
        // `data:` with an empty value is data (an empty string), as the spec says.
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "");
        assert_eq!(evs[0].retry, Some(3000));
        let evs = p.push(b"id: 5\n\n").unwrap();
        assert!(evs.is_empty());
        assert_eq!(p.last_id.as_deref(), Some("5"));
    }

    #[test]
    fn oversized_lines_and_events_are_refused() {
        let mut p = Parser::new(8);
        assert!(p.push(b"data: 0123456789").is_err());
        let mut p = Parser::new(16);
        assert!(p.push(b"data: 012345\ndata: 012345\ndata: 0123\n").is_err());
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut p = Parser::new(64);
        let _ = p.push(&[0xff, 0xfe, b'\r', b'\r', b':', 0, b'\n', b'\n']);
        let _ = p.push(b"retry: x\nid\n\n\r\n");
    }

    #[test]
    fn encode_round_trips() {
        let bytes = encode("message", b"{\"a\":1}");
        assert_eq!(bytes, b"data: {\"a\":1}\n\n");
        let mut p = Parser::new(100);
        let evs = p.push(&encode("endpoint", b"line1\nline2")).unwrap();
        assert_eq!(evs, vec![ev("endpoint", "line1\nline2", None)]);
    }
}
