//! The HTTP server: routes, formats and errors through `oneshot` (no socket),
//! then real servers on port 0 for graceful shutdown, the request timeout and
//! the shutdown signal.

mod support;

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use http_body_util::BodyExt as _;
use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::http::{self, METRICS_CONTENT_TYPE, REQUEST_TIMEOUT};
use support::http::{Reply, call, client};
use tokio::sync::{Notify, oneshot};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A hub with two clients and an exporter without process metrics, whose page
/// therefore stays the same between two renders.
fn exporter() -> (Events, MetricsHandle) {
    let events = Events::new();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    for (id, status) in [("plant-a", Status::Up), ("plant-b", Status::Down)] {
        let id = ClientId::from(id);
        events.announce(&id, ClientInfo::new("broker.example:8883"));
        events.dispatch(&id, Event::Status(status));
    }
    events.dispatch(
        &ClientId::from("plant-a"),
        Event::PingResponse(Duration::from_micros(153)),
    );
    (events, handle)
}

/// `GET path` through `router`.
async fn get_path(router: Router, path: &str) -> Reply {
    call(router, Method::GET, path, &[]).await
}

// ---------------------------------------------------------------------------------
// Routes through oneshot
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_served_in_the_text_format_0_0_4() {
    let (_events, handle) = exporter();
    let reply = get_path(http::router(handle), "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        Some(METRICS_CONTENT_TYPE)
    );
    assert_eq!(
        METRICS_CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        reply.header(header::CONTENT_ENCODING),
        None,
        "not asked for gzip"
    );
    assert!(
        reply
            .text()
            .contains(r#"mqtt_client_up{client_id="plant-a",broker="broker.example:8883"} 1"#)
    );
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_scraper_accepts_gzip() {
    let (_events, handle) = exporter();
    let router = http::router(handle);
    let plain = get_path(router.clone(), "/metrics").await;
    // What Prometheus sends.
    let gzipped = call(
        router,
        Method::GET,
        "/metrics",
        &[("accept-encoding", "gzip")],
    )
    .await;

    assert_eq!(gzipped.status, StatusCode::OK);
    assert_eq!(gzipped.header(header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(
        gzipped.header(header::CONTENT_TYPE),
        Some(METRICS_CONTENT_TYPE)
    );
    assert!(gzipped.body.len() < plain.body.len());
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&gzipped.body[..])
        .read_to_string(&mut decoded)
        .expect("a valid gzip stream");
    // The same page, but for the count of the plain scrape answered before it.
    let counted = r#"promhttp_metric_handler_requests_total{code="200"} "#;
    assert!(plain.text().contains(&format!("{counted}0\n")));
    assert_eq!(
        decoded.replace(&format!("{counted}1\n"), &format!("{counted}0\n")),
        plain.text()
    );
    assert_eq!(gzipped.header(header::VARY), Some("accept-encoding"));
}

#[tokio::test]
async fn gzip_refused_with_a_zero_quality_is_not_used() {
    let (_events, handle) = exporter();
    let reply = call(
        http::router(handle),
        Method::GET,
        "/metrics",
        &[("accept-encoding", "gzip;q=0, identity")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_ENCODING), None);
    assert!(reply.text().contains("mqtt_client_up"));
}

#[tokio::test]
async fn scrapes_are_counted_like_promhttp_counts_them() {
    let (_events, handle) = exporter();
    let router = http::router(handle);
    for _ in 0..3 {
        assert_eq!(
            get_path(router.clone(), "/metrics").await.status,
            StatusCode::OK
        );
    }
    let page = get_path(router, "/metrics").await.text();
    // Three answered before this one, which is itself in flight while it renders.
    assert!(page.contains("promhttp_metric_handler_requests_total{code=\"200\"} 3\n"));
    assert!(page.contains("promhttp_metric_handler_requests_total{code=\"503\"} 0\n"));
    assert!(page.contains("promhttp_metric_handler_requests_in_flight 1\n"));
}

#[tokio::test]
async fn unknown_paths_are_a_plain_text_404() {
    let (_events, handle) = exporter();
    for path in ["/nope", "/metrics/extra", "/-/"] {
        let router = http::with_default_fallbacks(http::router(handle.clone()));
        let reply = get_path(router, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.text(), "404 page not found\n");
        assert!(
            reply
                .header(header::CONTENT_TYPE)
                .unwrap()
                .starts_with("text/plain")
        );
    }
}

#[tokio::test]
async fn other_methods_are_a_405_with_an_allow_header() {
    let (_events, handle) = exporter();
    for (method, path) in [
        (Method::POST, "/metrics"),
        (Method::DELETE, "/"),
        (Method::PUT, "/-/healthy"),
        (Method::POST, "/-/ready"),
        (Method::POST, "/events"),
    ] {
        let router = http::with_default_fallbacks(http::router(handle.clone()));
        let reply = call(router, method.clone(), path, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(
            reply.header(header::ALLOW),
            Some("GET,HEAD"),
            "{method} {path}"
        );
        assert_eq!(reply.text(), "405 method not allowed\n");
    }
}

#[tokio::test]
async fn the_library_router_leaves_fallbacks_to_the_application() {
    let (_events, handle) = exporter();
    // An application with its own fallback merges it without a panic and
    // keeps answering unknown paths its own way.
    let app = Router::new()
        .fallback(|| async { (StatusCode::NOT_FOUND, "the app's own 404") })
        .merge(http::router(handle));
    let reply = get_path(app.clone(), "/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.text(), "the app's own 404");
    assert_eq!(get_path(app, "/-/healthy").await.status, StatusCode::OK);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let (_events, handle) = exporter();
    let reply = call(http::router(handle), Method::HEAD, "/metrics", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        Some(METRICS_CONTENT_TYPE)
    );
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn health_and_readiness_answer_200_in_plain_text() {
    let (_events, handle) = exporter();
    for (path, text) in [
        ("/-/healthy", "mqtt-pulse is Healthy.\n"),
        ("/-/ready", "mqtt-pulse is Ready.\n"),
    ] {
        let reply = get_path(http::router(handle.clone()), path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.text(), text);
        assert_eq!(
            reply.header(header::CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
    }
}

#[tokio::test]
async fn the_landing_page_lists_clients_and_links_the_endpoints() {
    let (_events, handle) = exporter();
    let reply = get_path(http::router(handle), "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    assert!(page.contains(&format!("version {}", env!("CARGO_PKG_VERSION"))));
    for link in [
        "href=\"metrics\"",
        "href=\"events\"",
        "href=\"-/healthy\"",
        "href=\"-/ready\"",
    ] {
        assert!(page.contains(link), "{link}");
    }
    assert!(
        page.contains("<p id=\"summary\">2 clients, 1 up.</p>"),
        "{page}"
    );
    let row = page
        .lines()
        .find(|l| l.contains("<td>plant-a</td>"))
        .expect("a row for plant-a");
    assert!(row.contains("<td>broker.example:8883</td>"), "{row}");
    assert!(row.contains("<td class=\"up\">up</td>"), "{row}");
    assert!(row.contains("<td>0.153 ms</td>"), "last RTT: {row}");
    let row_b = page
        .lines()
        .find(|l| l.contains("<td>plant-b</td>"))
        .unwrap();
    assert!(
        row_b.contains(">down<") && row_b.contains("<td>–</td>"),
        "{row_b}"
    );
}

#[tokio::test]
async fn the_landing_page_loads_its_script_and_style_from_the_binary_and_nothing_inline() {
    let (_events, handle) = exporter();
    let router = http::router(handle);
    let page = get_path(router.clone(), "/").await.text();
    assert!(
        page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
    assert!(page.contains("<link rel=\"stylesheet\" href=\"static/mqtt-pulse.css\">"));
    assert!(page.contains("<script src=\"static/mqtt-pulse.js\" defer></script>"));
    // Inline code or style would be blocked by a Content-Security-Policy, and
    // nothing may come from another origin.
    for inline in [
        "<style",
        "<script>",
        " style=",
        " onclick=",
        "http://",
        "https://",
    ] {
        assert!(!page.contains(inline), "{inline} in {page}");
    }
    // What the script starts from, on each row.
    let row = page
        .lines()
        .find(|l| l.contains("<td>plant-b</td>"))
        .unwrap();
    assert!(
        row.starts_with("<tr data-client-id=\"plant-b\" data-status=\"down\" data-since=\""),
        "{row}"
    );
    for (path, content_type, needle) in [
        (
            "/static/mqtt-pulse.js",
            "text/javascript; charset=utf-8",
            "new EventSource(\"events?kind=status,ping_response\")",
        ),
        (
            "/static/mqtt-pulse.css",
            "text/css; charset=utf-8",
            "@media (max-width",
        ),
    ] {
        let reply = get_path(router.clone(), path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.header(header::CONTENT_TYPE), Some(content_type));
        assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-cache"));
        assert!(reply.text().contains(needle), "{path}");
    }
    let unknown = get_path(router, "/static/other.js").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_landing_page_escapes_what_clients_call_themselves() {
    let (events, handle) = exporter();
    let hostile = ClientId::from("<script>alert('x')</script>");
    events.announce(&hostile, ClientInfo::new("\"><img src=x onerror=alert(1)>"));
    let page = get_path(http::router(handle), "/").await.text();
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(page.contains("<td>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</td>"));
    assert!(page.contains("<td>&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</td>"));
}

// ---------------------------------------------------------------------------------
// Real servers
// ---------------------------------------------------------------------------------

/// A route that signals when a request reaches it and answers only when released.
fn held_route(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/held",
        get(move || async move {
            entered.notify_one();
            release.notified().await;
            "released\n"
        }),
    )
}

async fn refuses_connections(address: std::net::SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A thousand concurrent scrapes — what the old cap of 8 answered with `503`s —
/// are all answered, each with every event dispatched before it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_storm_is_answered_in_full_by_shared_renders() {
    const SCRAPES: usize = 1_000;
    let (events, handle) = exporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shut_down, shutdown) = oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, http::router(handle), async {
        let _ = shutdown.await;
    }));
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    // A fresh connection per scrape: not the shared support client.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<http_body_util::Empty<Bytes>>();

    let scrapes: Vec<_> = (0..SCRAPES)
        .map(|n| {
            // Each scrape goes out after the event that names it, so its page must show it.
            let id = ClientId::from(format!("storm-{n}").as_str());
            events.announce(&id, ClientInfo::new("broker.example:8883"));
            let gzip = n % 2 == 0;
            let mut request = Request::get(format!("http://{address}/metrics"));
            if gzip {
                request = request.header(header::ACCEPT_ENCODING, "gzip");
            }
            let request = request.body(http_body_util::Empty::new()).unwrap();
            let client = client.clone();
            tokio::spawn(async move {
                let response = client.request(request).await.unwrap();
                let (parts, body) = response.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let text = if parts.headers.get(header::CONTENT_ENCODING).is_some() {
                    let mut text = String::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_string(&mut text)
                        .unwrap();
                    text
                } else {
                    String::from_utf8(body.to_vec()).unwrap()
                };
                (n, gzip, parts, text)
            })
        })
        .collect();
    for scrape in scrapes {
        let (n, gzip, parts, text) = scrape.await.unwrap();
        assert_eq!(parts.status, StatusCode::OK, "scrape {n}");
        assert_eq!(
            parts.headers.get(header::CONTENT_ENCODING).is_some(),
            gzip,
            "scrape {n}"
        );
        assert!(
            text.contains(&format!("mqtt_client_up{{client_id=\"storm-{n}\",")),
            "scrape {n} misses the client announced before it"
        );
    }
    let (status, page) = support::http::get(&format!("http://{address}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!(
        "promhttp_metric_handler_requests_total{{code=\"200\"}} {SCRAPES}\n"
    )));
    assert!(page.contains("promhttp_metric_handler_requests_total{code=\"503\"} 0\n"));
    shut_down.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_but_finishes_the_request_in_flight() {
    let (_events, handle) = exporter();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let app = http::router(handle).merge(held_route(Arc::clone(&entered), Arc::clone(&release)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shut_down, shutdown) = oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, app, async {
        let _ = shutdown.await;
    }));

    let (status, body) = support::http::get(&format!("http://{address}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("mqtt_client_up"));

    let in_flight =
        tokio::spawn(async move { support::http::get(&format!("http://{address}/held")).await });
    entered.notified().await;
    shut_down.send(()).unwrap();

    assert!(
        refuses_connections(address, Duration::from_secs(5)).await,
        "the listener closes once shutdown starts"
    );
    assert!(!server.is_finished(), "run waits for the request in flight");
    release.notify_one();
    assert_eq!(
        in_flight.await.unwrap(),
        (StatusCode::OK, "released\n".to_owned())
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run returns once the last request is done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_stuck_handler_is_answered_503_after_the_request_timeout() {
    let (_events, handle) = exporter();
    let entered = Arc::new(Notify::new());
    let app = http::router(handle).route(
        "/stuck",
        get({
            let entered = Arc::clone(&entered);
            move || async move {
                entered.notify_one();
                std::future::pending::<()>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shut_down, shutdown) = oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, app, async {
        let _ = shutdown.await;
    }));

    let started = Instant::now();
    let stuck =
        tokio::spawn(async move { support::http::get(&format!("http://{address}/stuck")).await });
    entered.notified().await;
    let (status, _) = tokio::time::timeout(REQUEST_TIMEOUT * 2, stuck)
        .await
        .expect("the stuck request is answered")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() >= REQUEST_TIMEOUT,
        "answered by the timeout"
    );

    shut_down.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("nothing left in flight")
        .unwrap()
        .unwrap();
}

/// A response body that sends one chunk and then never ends: what a scraper
/// that stopped reading a large page looks like to the server.
struct EndlessBody {
    sent: bool,
}

impl futures_core::Stream for EndlessBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.sent {
            std::task::Poll::Pending
        } else {
            self.sent = true;
            std::task::Poll::Ready(Some(Ok(Bytes::from_static(b"first chunk\n"))))
        }
    }
}

#[tokio::test]
async fn a_response_that_never_finishes_cannot_hold_shutdown_past_the_grace_period() {
    let (_events, handle) = exporter();
    let app = http::router(handle).route(
        "/endless",
        get(|| async { Body::from_stream(EndlessBody { sent: false }) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shut_down, shutdown) = oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, app, async {
        let _ = shutdown.await;
    }));

    let client = client();
    let url = format!("http://{address}/endless").parse().unwrap();
    let response = client.get(url).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the response is under way"
    );

    let shutdown_at = Instant::now();
    shut_down.send(()).unwrap();
    tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(10), server)
        .await
        .expect("run returns after the grace period")
        .unwrap()
        .unwrap();
    assert!(
        shutdown_at.elapsed() >= REQUEST_TIMEOUT,
        "run waited the grace period for the response in flight"
    );
    drop(response);
}

#[tokio::test]
async fn shutdown_signal_completes_on_sigterm() {
    let mut signal = std::pin::pin!(http::shutdown_signal());
    // The first poll installs the handlers; only then is SIGTERM safe to send
    // (before, it would end the test process).
    let pending = std::future::poll_fn(|cx| std::task::Poll::Ready(signal.as_mut().poll(cx))).await;
    assert!(pending.is_pending());
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(10), signal)
        .await
        .expect("SIGTERM completes the shutdown signal");
}
