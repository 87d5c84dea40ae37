//! A Server-Sent Events reader for `/events`: hyper-util's client, the body
//! read frame by frame only when the test asks (so a test can stop reading and
//! let the server's side fill up), events split as the SSE format says.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;

use super::http::client;

/// One event: its `event:` name and its `data:` (joined with newlines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

impl SseEvent {
    /// The string value of a top-level `"key":"value"` in the JSON data.
    pub fn field(&self, key: &str) -> Option<String> {
        let json: serde_json::Value = serde_json::from_str(&self.data).ok()?;
        match &json[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The JSON data.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// An open stream.
pub struct SseStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    buffer: String,
    events: VecDeque<SseEvent>,
}

/// `GET url` with the given headers; the answer with its body not read yet.
pub async fn open(url: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
    let (parts, body) = response.into_parts();
    SseStream {
        status: parts.status,
        headers: parts.headers,
        body,
        buffer: String::new(),
        events: VecDeque::new(),
    }
}

impl SseStream {
    /// The next event (comments skipped), `None` when the stream ended;
    /// panics if none comes within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        match tokio::time::timeout(limit, self.next_event()).await {
            Ok(event) => event,
            Err(_) => panic!("no event within {limit:?}"),
        }
    }

    /// The whole body once the server ends it, as text; panics after `limit`.
    pub async fn rest(&mut self, limit: Duration) -> String {
        let rest = async {
            while let Some(frame) = self.body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            std::mem::take(&mut self.buffer)
        };
        tokio::time::timeout(limit, rest)
            .await
            .unwrap_or_else(|_| panic!("the body did not end within {limit:?}"))
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    self.events.push_back(event);
                }
            }
            if !self.events.is_empty() {
                continue;
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

/// One event block; `None` for a block of comments only (the keep-alive).
fn parse(block: &str) -> Option<SseEvent> {
    let (mut name, mut data) = (None, Vec::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim_start().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
        }
    }
    if name.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        name: name.unwrap_or_else(|| "message".to_owned()),
        data: data.join("\n"),
    })
}
