//! HTTP clients for the tests, three kinds for three jobs:
//!
//! - [`get`] / [`try_get`]: a plain `GET` of a URL with hyper-util's client, for
//!   async tests talking to a real server (ours or Prometheus).
//! - [`call`] / [`get_text`]: a request through a [`Router`] with `tower`'s
//!   `oneshot`, no socket.
//! - [`Response`], [`request`], [`exchange`], [`fetch`], [`status_from`]: HTTP/1.1 by hand over
//!   any `Read + Write` stream (TCP here, rustls in the web-config tests), for
//!   blocking tests. Kept by hand on purpose: these tests put exact bytes on the
//!   wire (a slow-loris header, a false `Content-Length`, plain HTTP to a TLS
//!   port, a request over a TLS stream whose handshake they inspect), which a
//!   real client will not send; every request says `Connection: close`, so a
//!   response is read to the end of the connection.
//!
//! Also [`basic`] (an `Authorization: Basic` value, with the `base64` crate) and
//! [`percent_encode`] (a query parameter, with the `percent-encoding` crate).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tower::ServiceExt as _;

/// How long [`connect`] waits for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a raw exchange waits for each read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------
// hyper-util
// ---------------------------------------------------------------------------------

/// A hyper-util client for plain HTTP with empty request bodies.
pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET url`: the status and the body as text, or `None` if the request fails.
pub async fn try_get(url: &str) -> Option<(StatusCode, String)> {
    let response = client().get(url.parse().ok()?).await.ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET url`: the status and the body as text; panics if the request fails.
pub async fn get(url: &str) -> (StatusCode, String) {
    try_get(url)
        .await
        .unwrap_or_else(|| panic!("GET {url} failed"))
}

// ---------------------------------------------------------------------------------
// Through a router, without a socket
// ---------------------------------------------------------------------------------

/// A response read to its end by [`call`].
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as UTF-8; panics if it is not.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    /// A header's value as text.
    pub fn header(&self, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// `method path` with `headers` through `router`.
pub async fn call(router: Router, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET path` through `router`: the status and the body as text.
pub async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
    let reply = call(router, Method::GET, path, &[]).await;
    (reply.status, reply.text())
}

// ---------------------------------------------------------------------------------
// HTTP/1.1 by hand
// ---------------------------------------------------------------------------------

/// A response read by [`exchange`], its body de-chunked.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path HTTP/1.1` with `Connection: close` and the given headers; a
/// request other than GET and HEAD gets `Content-Length: 0` unless `headers`
/// has one.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !matches!(method, "GET" | "HEAD")
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        text.push_str("Content-Length: 0\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A TCP connection to 127.0.0.1:`port` with [`IO_TIMEOUT`]s set.
pub fn connect(port: u16) -> io::Result<TcpStream> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Writes `request`, reads until the server closes, parses the response.
pub fn exchange(stream: &mut (impl Read + Write), request: &[u8]) -> io::Result<Response> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            // A TLS peer that closes without close_notify, after a response.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// `request` to 127.0.0.1:`port` over a fresh TCP connection.
pub fn send(port: u16, request: &[u8]) -> io::Result<Response> {
    exchange(&mut connect(port)?, request)
}

/// `method path` (no headers) to 127.0.0.1:`port` over a fresh TCP connection.
pub fn fetch(port: u16, method: &str, path: &str) -> io::Result<Response> {
    send(port, &request(method, path, &[]))
}

/// `request` to 127.0.0.1:`port` from the local address `source` (any of
/// 127.0.0.0/8 on Linux, to stand for another client host); the answer's
/// status, or `None` if the exchange failed. With `hang_up_after`, resets the
/// connection (RST) that long after sending instead of reading the answer,
/// as an impatient or hostile client does.
pub async fn status_from(
    source: Ipv4Addr,
    port: u16,
    request: &[u8],
    hang_up_after: Option<Duration>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    let mut stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .ok()?;
    stream.write_all(request).await.ok()?;
    if let Some(after) = hang_up_after {
        tokio::time::sleep(after).await;
        stream.set_zero_linger().ok()?;
        return None;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    parse_response(&answer).map(|response| response.status)
}

/// The readiness check of our daemon and of Prometheus: `GET /-/ready` on
/// 127.0.0.1:`port` answers 200.
pub fn ready(port: u16) -> bool {
    fetch(port, "GET", "/-/ready").is_ok_and(|r| r.status == 200)
}

/// The status line, the headers and the body (de-chunked; cut at its
/// `Content-Length`) of a whole response.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[..line_end]).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = decoded;
    } else if let Some(length) = header("content-length").and_then(|v| v.parse().ok()) {
        body.truncate(length);
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------

/// The `Authorization` value for HTTP basic auth.
pub fn basic(user: &str, password: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` percent-encoded for a query parameter's value.
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}
