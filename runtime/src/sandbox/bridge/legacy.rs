//! stdio ↔ the legacy HTTP+SSE transport (protocol 2024-11-05): GET the SSE endpoint, take its `endpoint`
//! event, POST every client message there; the server's messages arrive as `message` events on the stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, Notify};

use super::client::{self, EventStream};
use super::jsonrpc::{self, classify, id_key, note, ClientMessage, INTERNAL_ERROR};
use super::{BridgeError, Connect, HttpUpstream, Limits};

/// How long the server may take to name its message endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);
/// The longest endpoint URL accepted.
const ENDPOINT_MAX: usize = 4096;

/// Requests the client is still owed a response for, by id.
#[derive(Default)]
struct Pending {
    ids: Mutex<HashSet<String>>,
    /// Notified whenever one is answered.
    changed: Notify,
}

impl Pending {
    fn add(&self, ids: &[Value]) {
        let mut set = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        set.extend(ids.iter().map(id_key));
    }
    fn remove(&self, ids: &[Value]) {
        let mut set = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            set.remove(&id_key(id));
        }
        drop(set);
        self.changed.notify_waiters();
    }
    fn take_all(&self) -> Vec<String> {
        let mut set = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let all = set.drain().collect();
        drop(set);
        self.changed.notify_waiters();
        all
    }
    fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
    async fn until_empty(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// Resolves the `endpoint` event's data (absolute URL, absolute path, or relative reference) to the path and
/// query to POST to: connections always go through the [`Connect`], so scheme and authority are not ours to
/// follow.
pub(crate) fn endpoint_path(sse_path: &str, data: &str) -> Option<String> {
    let data = data.trim();
    if data.is_empty() || data.len() > ENDPOINT_MAX {
        return None;
    }
    let path = if let Some(rest) = data
        .strip_prefix("http://")
        .or_else(|| data.strip_prefix("https://"))
    {
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_owned(),
        }
    } else if data.starts_with('/') {
        data.to_owned()
    } else if data.starts_with('?') {
        let base = sse_path.split('?').next().unwrap_or("/");
        format!("{base}{data}")
    } else {
        let base = sse_path.split('?').next().unwrap_or("/");
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{data}", if dir.is_empty() { "/" } else { dir })
    };
    let path = path.split('#').next().unwrap_or_default().to_owned();
    path.parse::<http::uri::PathAndQuery>().ok()?;
    Some(path)
}

/// Runs the bridge until the client's input ends or the server ends the stream.
pub(crate) async fn run<R, W>(
    connect: Arc<dyn Connect>,
    upstream: &HttpUpstream,
    limits: Limits,
    input: R,
    output: W,
) -> Result<(), BridgeError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let client = upstream.client(connect)?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(&upstream.path)
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::new()))
        .map_err(|e| BridgeError::Config(format!("bad SSE path {:?}: {e}", upstream.path)))?;
    let resp = client.send(req).await.map_err(|e| {
        BridgeError::Server(format!("opening the SSE stream at {}: {e}", upstream.path))
    })?;
    if !resp.status().is_success() || !client::is_event_stream(&resp) {
        return Err(BridgeError::Server(format!(
            "opening the SSE stream at {}: the server answered {} ({}); is the transport of its entry in the MCP server registry right?",
            upstream.path,
            resp.status(),
            resp.headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no content type")
        )));
    }
    let mut stream = EventStream::new(resp.into_body(), limits.max_message);
    let (out, rx) = mpsc::channel::<Vec<u8>>(256);
    let mut writer = tokio::spawn(jsonrpc::write_lines(rx, output));

    // Messages before the endpoint are passed on; the endpoint must come within ENDPOINT_WAIT.
    let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
        loop {
            match stream.next().await {
                Ok(Some(ev)) if ev.event == "endpoint" => {
                    return endpoint_path(&upstream.path, &ev.data).ok_or_else(|| {
                        format!(
                            "the server named an unusable message endpoint {:?}",
                            ev.data
                        )
                    })
                }
                Ok(Some(ev)) if ev.event == "message" => {
                    if let Some((_, line)) = jsonrpc::normalise(ev.data.as_bytes()) {
                        let _ = out.send(line).await;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(
                        "the server ended the SSE stream before naming its message endpoint".into(),
                    )
                }
                Err(e) => return Err(format!("reading the SSE stream: {e}")),
            }
        }
    })
    .await
    .map_err(|_| {
        BridgeError::Server(format!(
            "the server sent no `endpoint` event within {}s",
            ENDPOINT_WAIT.as_secs()
        ))
    })?
    .map_err(BridgeError::Server)?;

    let pending = Arc::new(Pending::default());
    let (stream_end_tx, mut stream_end) = tokio::sync::oneshot::channel::<String>();
    let reader = {
        let out = out.clone();
        let pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let why = loop {
                match stream.next().await {
                    Ok(Some(ev)) => {
                        if ev.event != "message" || ev.data.trim().is_empty() {
                            continue;
                        }
                        let Some((v, line)) = jsonrpc::normalise(ev.data.as_bytes()) else {
                            note("dropped an event from the server that is not JSON");
                            continue;
                        };
                        if out.send(line).await.is_err() {
                            return;
                        }
                        pending.remove(&classify(&v).responses);
                    }
                    Ok(None) => break "the server ended the SSE stream".to_owned(),
                    Err(e) => break format!("the SSE stream broke: {e}"),
                }
            };
            for id in pending.take_all() {
                let id: Value = serde_json::from_str(&id).unwrap_or(Value::Null);
                let _ = out
                    .send(jsonrpc::error_response(&id, INTERNAL_ERROR, &why))
                    .await;
            }
            let _ = stream_end_tx.send(why);
        })
    };

    let mut input = BufReader::new(input);
    let result = loop {
        let next = tokio::select! {
            next = jsonrpc::read_message(&mut input, limits.max_message) => next,
            why = &mut stream_end => {
                let why = why.unwrap_or_else(|_| "the SSE stream ended".into());
                break Err(BridgeError::Server(why));
            }
            w = &mut writer => break super::writer_ended(w),
        };
        let (line, msg) = match next {
            Err(e) => break Err(BridgeError::Input(e)),
            Ok(ClientMessage::Eof) => break Ok(()),
            Ok(ClientMessage::Refused(error)) => {
                let _ = out.send(error).await;
                continue;
            }
            Ok(ClientMessage::Message(line, msg)) => (line, msg),
        };
        let c = classify(&msg);
        pending.add(&c.requests);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(line)));
        let failure = match req {
            Err(e) => Some(e.to_string()),
            Ok(req) => match client.send(req).await {
                Ok(resp) if resp.status().is_success() => {
                    let _ = client::read_body(resp.into_body(), 64 * 1024).await;
                    None
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = client::read_body(resp.into_body(), 64 * 1024)
                        .await
                        .unwrap_or_default();
                    Some(format!(
                        "the server answered HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
                    ))
                }
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(why) = failure {
            note(format!("posting a message: {why}"));
            pending.remove(&c.requests);
            for id in &c.requests {
                let _ = out
                    .send(jsonrpc::error_response(id, INTERNAL_ERROR, &why))
                    .await;
            }
        }
    };
    if result.is_ok() {
        // The client's input ended: answers still owed may follow on the stream.
        if tokio::time::timeout(limits.drain, pending.until_empty())
            .await
            .is_err()
        {
            note("gave up waiting for answers after the client's input ended");
        }
    }
    reader.abort();
    drop(out);
    if result.is_ok() {
        return super::writer_ended(writer.await);
    }
    writer.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::endpoint_path;

    #[test]
    fn endpoints_resolve_to_paths() {
        assert_eq!(
            endpoint_path("/sse", "/messages?sessionId=1").as_deref(),
            Some("/messages?sessionId=1")
        );
        assert_eq!(
            endpoint_path("/sse", "http://localhost:8080/messages/?session_id=ab").as_deref(),
            Some("/messages/?session_id=ab")
        );
        assert_eq!(
            endpoint_path("/sse", "https://x.example?s=1").as_deref(),
            Some("/?s=1")
        );
        assert_eq!(
            endpoint_path("/api/sse", "message?s=1").as_deref(),
            Some("/api/message?s=1")
        );
        assert_eq!(endpoint_path("/sse", "?s=2").as_deref(), Some("/sse?s=2"));
        assert_eq!(endpoint_path("/sse", "").as_deref(), None);
        assert_eq!(endpoint_path("/sse", "/bad path").as_deref(), None);
    }
}
