//! The server's limits: header read and TLS handshake timeouts, the request
//! body limit, the landing-page render cap.

use std::io;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mqtt_pulse::http::{MAX_CONCURRENT_RENDERS, MAX_REQUEST_BODY, Server};

use crate::client::get;
use crate::support::http::{Response, connect, exchange, request, send};
use crate::support::{TempDir, TestPki};
use crate::{Serving, TLS_ONLY, exporter, web_config};

/// Reads until the server closes the connection (or `limit` passes) and says
/// how long that took and what came back.
pub(crate) fn wait_for_close(mut stream: &TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {limit:?}")
            }
            // Reset: closed too.
            Err(_) => break,
        }
    }
    (started.elapsed(), answer)
}

#[test]
fn a_slow_loris_client_is_disconnected_once_the_header_read_timeout_passes() {
    let timeout = Duration::from_secs(2);
    let serving = Serving::with(Server::new().with_header_read_timeout(timeout), exporter(2));
    let stream = connect(serving.port).unwrap();
    let connected = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    // The client under test: one byte of headers a second, until refused.
    std::thread::spawn(move || {
        for byte in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n\r\n" {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (_, answer) = wait_for_close(&stream, timeout * 4);
    let open_for = connected.elapsed();
    assert!(
        open_for >= timeout - Duration::from_millis(100)
            && open_for < timeout + Duration::from_millis(1_500),
        "closed after {open_for:?}, the limit is {timeout:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A client that is not slow is not affected.
    assert_eq!(send(serving.port, &get("/-/healthy")).unwrap().status, 200);
}

#[test]
fn a_client_that_never_finishes_the_tls_handshake_is_disconnected_after_the_timeout() {
    let dir = TempDir::new("web-slow-handshake");
    let _pki = TestPki::generate(&dir);
    let timeout = Duration::from_secs(2);
    let serving = Serving::with(
        Server::new()
            .with_header_read_timeout(timeout)
            .with_web_config(web_config(&dir, TLS_ONLY)),
        exporter(2),
    );
    let stream = connect(serving.port).unwrap();
    let connected = Instant::now();
    let (_, answer) = wait_for_close(&stream, timeout * 4);
    let open_for = connected.elapsed();
    assert!(
        open_for >= timeout - Duration::from_millis(100)
            && open_for < timeout + Duration::from_millis(1_500),
        "closed after {open_for:?}, the limit is {timeout:?}"
    );
    assert!(answer.is_empty(), "{answer:?}");
}

#[test]
fn request_bodies_over_the_limit_are_answered_413() {
    let serving = Serving::with(Server::new(), exporter(2));
    let port = serving.port;

    let within = vec![b'x'; MAX_REQUEST_BODY];
    let mut post = request(
        "POST",
        "/echo",
        &[("Content-Length", &within.len().to_string())],
    );
    post.extend_from_slice(&within);
    let response = send(port, &post).unwrap();
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "65536 bytes\n")
    );

    // Refused on the declared length alone: the body is never sent.
    let declared = (MAX_REQUEST_BODY + 1).to_string();
    let response = send(
        port,
        &request("POST", "/echo", &[("Content-Length", &declared)]),
    )
    .unwrap();
    assert_eq!(response.status, 413, "{response:?}");

    // Chunked: refused once more than the limit has come in.
    let mut stream = connect(port).unwrap();
    let mut chunked = request("POST", "/echo", &[("Transfer-Encoding", "chunked")]);
    let chunk = vec![b'y'; 16 * 1024];
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = exchange(&mut stream, &chunked).unwrap();
    assert_eq!(response.status, 413, "{response:?}");
}

#[test]
fn landing_pages_beyond_the_render_cap_are_answered_503_at_once() {
    // Ten thousand clients: a render long enough for a burst to overlap it.
    // (`/metrics` shares its renders among waiting scrapes instead: tests/http.rs.)
    let serving = Serving::with(Server::new(), exporter(10_000));
    let port = serving.port;
    let burst = MAX_CONCURRENT_RENDERS * 3;
    let start = Arc::new(Barrier::new(burst));
    let scrapers: Vec<_> = (0..burst)
        .map(|_| {
            let start = Arc::clone(&start);
            let mut stream = connect(port).unwrap();
            std::thread::spawn(move || {
                start.wait();
                let sent = Instant::now();
                let response = exchange(&mut stream, &get("/")).unwrap();
                (response, sent.elapsed())
            })
        })
        .collect();
    let results: Vec<(Response, Duration)> =
        scrapers.into_iter().map(|s| s.join().unwrap()).collect();

    let served: Vec<&Duration> = results
        .iter()
        .filter(|(r, _)| r.status == 200)
        .map(|(_, d)| d)
        .collect();
    let refused: Vec<&(Response, Duration)> =
        results.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(served.len() + refused.len(), burst, "only 200 and 503");
    assert!(
        served.len() >= MAX_CONCURRENT_RENDERS,
        "{} served",
        served.len()
    );
    assert!(!refused.is_empty(), "all {burst} were served at once");
    let slowest_render = **served.iter().max().unwrap();
    for (response, took) in &refused {
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(
            *took < slowest_render,
            "a refusal took {took:?}, longer than a render ({slowest_render:?})"
        );
    }
    // The cap frees up.
    assert_eq!(send(port, &get("/")).unwrap().status, 200);
}
