//! The HTTP face of the exporter, in the manner of node_exporter and
//! blackbox_exporter: `/metrics`, a landing page at `/`, `/-/healthy` and
//! `/-/ready`, over plain HTTP or — with a [`WebConfig`] read from the
//! Prometheus exporter-toolkit's `--web.config.file` format — HTTPS, with
//! client certificates, basic auth, extra response headers and a rate limit.
//!
//! It owns routing, response formats (text exposition 0.0.4, gzip when the
//! scraper asks for it), serving, and what keeps one client from taking the
//! server down:
//!
//! * a request gets [`REQUEST_TIMEOUT`] to be answered (then `503`), and
//!   shutdown waits that long at most for the requests in flight;
//! * a client gets [`HEADER_READ_TIMEOUT`] to send a request's headers (and
//!   to finish the TLS handshake, and to start the next request on an idle
//!   keep-alive connection), then the connection is closed — a slow-loris
//!   client that trickles its headers holds nothing for long;
//! * scrapes of `/metrics` that wait at the same time share one render (and
//!   one gzip): a scrape storm costs one render at a time, never one per
//!   request; at most [`MAX_CONCURRENT_SCRAPES`] are answered at once and at
//!   most [`MAX_CONCURRENT_RENDERS`] landing pages are rendered at once, more
//!   are answered `503` with `Retry-After` at once;
//! * a request body over [`MAX_REQUEST_BODY`] is answered `413`;
//! * with a web config: `429` beyond its `rate_limit`, `401` (with
//!   `WWW-Authenticate: Basic realm="mqtt-pulse"`) without valid credentials.
//!   The health endpoints stay open — no credentials, no rate limit — so
//!   container and load-balancer probes work; see [`web_config`].
//!
//! It must never render on an async worker thread — ten thousand clients are
//! milliseconds of CPU, done in `spawn_blocking` — nor check a bcrypt password
//! there, and never serve anything but metrics and what the hub knows of each
//! client: no configuration, no credentials.
//!
//! ```
//! use mqtt_pulse::events::Events;
//! use mqtt_pulse::exporter::metrics::MetricsBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = Events::new();
//! let handle = MetricsBuilder::new(&events).install()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(mqtt_pulse::http::run(
//!     listener,
//!     mqtt_pulse::http::router(handle),
//!     async { stopped.await.unwrap_or(()) }, // or `mqtt_pulse::http::shutdown_signal()`
//! ));
//! stop.send(()).unwrap();
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! With TLS and basic auth from a web config file:
//!
//! ```no_run
//! # use mqtt_pulse::events::Events;
//! # use mqtt_pulse::exporter::metrics::MetricsBuilder;
//! use mqtt_pulse::http::{Server, WebConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let handle = MetricsBuilder::new(&Events::new()).install()?;
//! let web_config = WebConfig::load("web-config.yml")?;
//! let listener = tokio::net::TcpListener::bind("[::]:9883").await?;
//! Server::new()
//!     .with_web_config(web_config)
//!     .serve(listener, mqtt_pulse::http::router(handle), mqtt_pulse::http::shutdown_signal())
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod limits;
mod scrape;
mod tls;
pub mod web_config;

pub use limits::{MAX_CONCURRENT_RENDERS, MAX_CONCURRENT_SCRAPES, MAX_REQUEST_BODY};
pub use web_config::{WebConfig, WebConfigError};

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::exporter::metrics::{ClientSummary, MetricsHandle};

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long [`run`] lets a request take before answering it with
/// `503 Service Unavailable`, and how long, after shutdown was asked for, it
/// waits for open connections before returning anyway. Prometheus's default
/// scrape timeout is 10 s too.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers, to finish the TLS
/// handshake, or to start its next request on a keep-alive connection, before
/// the connection is closed (see [`Server::with_header_read_timeout`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's routes: `GET /metrics`, `GET /` (landing page), `GET
/// /-/healthy`, `GET /-/ready`, with `HEAD` for each, gzip when the client
/// accepts it, `405` with an `Allow` header for other methods and a plain-text
/// `404` fallback.
///
/// Scrapes of `/metrics` waiting at the same time share one render, which
/// starts after each of them arrived, so every answer reflects every event
/// dispatched before its request. At most [`MAX_CONCURRENT_SCRAPES`] scrapes
/// and [`MAX_CONCURRENT_RENDERS`] landing pages are answered at once (the
/// clones of one router share the caps); more are answered `503` with
/// `Retry-After: 1`. `/metrics` answers are counted in
/// `promhttp_metric_handler_requests_total` and
/// `promhttp_metric_handler_requests_in_flight` on the handle's registry, as
/// node_exporter counts its own.
///
/// Mount it on a service's own router with [`Router::merge`]. A router that
/// has its own fallback cannot be merged with one that also has one: call
/// [`Router::reset_fallback`] on this one first.
pub fn router(handle: MetricsHandle) -> Router {
    let metrics = get(scrape::metrics)
        .layer(from_fn_with_state(
            limits::Cap::new(MAX_CONCURRENT_SCRAPES),
            limits::cap,
        ))
        .layer(from_fn_with_state(
            handle.scrape_stats().cloned(),
            scrape::count,
        ))
        .with_state(scrape::Scrapes::new(handle.clone()));
    let landing_page = get(landing_page)
        .layer::<_, Infallible>(from_fn_with_state(
            limits::Cap::new(MAX_CONCURRENT_RENDERS),
            limits::cap,
        ))
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .with_state(handle);
    Router::new()
        .route("/", landing_page)
        .route("/metrics", metrics)
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

/// Serves `router` on `listener` over plain HTTP until `shutdown` completes,
/// then stops accepting, lets the requests in flight finish and returns:
/// [`Server::new()`]`.serve(listener, router, shutdown)`.
///
/// Every request gets at most [`REQUEST_TIMEOUT`] (then `503`), and after
/// `shutdown` the server waits at most that long for open connections — a
/// client that stalls mid-request cannot hold the process.
///
/// # Errors
///
/// The listener's error if its address cannot be read.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    Server::new().serve(listener, router, shutdown).await
}

/// Serves a router with the limits described in the [module docs](self),
/// over plain HTTP or, with a [`WebConfig`], as it says: TLS, basic auth,
/// response headers, rate limit.
///
/// Build one per listener; clones of one [`WebConfig`] share the certificate
/// state and the basic-auth memory.
#[derive(Debug, Clone)]
#[must_use]
pub struct Server {
    web_config: WebConfig,
    header_read_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// Plain HTTP, no auth, [`HEADER_READ_TIMEOUT`].
    pub fn new() -> Self {
        Server {
            web_config: WebConfig::default(),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// TLS, basic auth, response headers and rate limit as `web_config` says.
    /// Defaults to [`WebConfig::default()`]: plain HTTP without auth.
    pub fn with_web_config(mut self, web_config: WebConfig) -> Self {
        self.web_config = web_config;
        self
    }

    /// How long a client may take to send a request's headers, to complete
    /// the TLS handshake, to send its first request, or to start the next one
    /// on an idle keep-alive connection. Defaults to [`HEADER_READ_TIMEOUT`].
    /// For HTTP/2 (TLS with ALPN `h2`), the handshake and the first request
    /// are bounded; later streams rely on the request timeout.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Serves `router` on `listener` until `shutdown` completes, then stops
    /// accepting, lets the requests in flight finish — for at most
    /// [`REQUEST_TIMEOUT`] — and returns.
    ///
    /// # Errors
    ///
    /// The listener's error if its address cannot be read.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let address = listener.local_addr()?;
        let Server {
            web_config,
            header_read_timeout,
        } = self;
        let app = protect(router, &web_config).into_make_service();

        let handle = axum_server::Handle::<SocketAddr>::new();
        let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
            .handle(handle.clone())
            .first_request_timeout(header_read_timeout)
            .accept_error_handler(|remote, error| {
                // Failed handshakes, clients gone before their first request:
                // normal on an open port, not worth more than a debug line.
                tracing::debug!(?remote, %error, "connection dropped before its first request");
            });
        server
            .http_builder()
            .http1()
            .header_read_timeout(header_read_timeout);
        tracing::info!(
            %address,
            tls = web_config.is_tls(),
            basic_auth = web_config.has_basic_auth(),
            "serving HTTP"
        );
        let serving = async move {
            match &web_config.tls {
                Some(tls) => {
                    let server = server.acceptor(tls.acceptor(header_read_timeout));
                    if web_config.http2 {
                        server.serve(app).await
                    } else {
                        server.http1_only().serve(app).await
                    }
                }
                // HTTP/2 only with TLS, as in the exporter-toolkit.
                None => server.http1_only().serve(app).await,
            }
        };
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => return served,
            () = shutdown => {}
        }
        tracing::info!(%address, "shutting down the HTTP server");
        handle.graceful_shutdown(None);
        tokio::select! {
            served = &mut serving => served,
            () = tokio::time::sleep(REQUEST_TIMEOUT) => {
                tracing::warn!(%address, "connections still open after the grace period; closing them");
                handle.shutdown();
                serving.await
            }
        }
    }
}

/// The router with the web config's checks and the server's limits around
/// it, outermost first: tracing, response headers, request timeout, body
/// limit, rate limit, basic auth.
fn protect(router: Router, web_config: &WebConfig) -> Router {
    // The web config's checks read its policy on every request, so an update
    // applies to the next one.
    let policy = web_config.live_policy();
    router
        .layer(from_fn_with_state(policy.clone(), auth::require))
        .layer(from_fn_with_state(policy.clone(), limits::rate_limit))
        .layer(from_fn(limits::limit_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(from_fn_with_state(policy, limits::add_headers))
        .layer(TraceLayer::new_for_http())
}

/// The endpoints probes poll: open without credentials, never rate limited.
pub(crate) fn is_probe(path: &str) -> bool {
    matches!(path, "/-/healthy" | "/-/ready")
}

/// Completes when the process receives SIGINT (Ctrl-C) or SIGTERM; pass it to
/// [`run`] as `shutdown`. If a handler cannot be installed that signal is
/// logged and ignored, and the other one still works.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

async fn landing_page(State(handle): State<MetricsHandle>) -> Response {
    let page = tokio::task::spawn_blocking(move || {
        landing_page_html(&handle.clients(), env!("CARGO_PKG_VERSION"))
    });
    match page.await {
        Ok(page) => Html(page).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering the landing page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the page failed\n",
            )
                .into_response()
        }
    }
}

async fn healthy() -> &'static str {
    "mqtt-pulse is Healthy.\n"
}

/// Ready as soon as it serves: the router exists only once the exporter is
/// built, and a scrape reads the hub directly, so there is nothing to wait for.
async fn ready() -> &'static str {
    "mqtt-pulse is Ready.\n"
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

pub(crate) async fn method_not_allowed() -> (StatusCode, &'static str) {
    (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n")
}

/// The page at `/`: version, links, and one table row per client. Every value
/// from outside (client ids, brokers) is HTML-escaped.
fn landing_page_html(clients: &[ClientSummary], version: &str) -> String {
    let up = clients.iter().filter(|c| c.state.status.is_up()).count();
    let mut page = String::with_capacity(1_024 + clients.len() * 256);
    page.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<title>mqtt-pulse</title>\n<style>\n",
        "body{font-family:sans-serif;margin:2em}",
        "table{border-collapse:collapse}",
        "th,td{border:1px solid #ccc;padding:.25em .75em;text-align:left}",
        ".up{color:#080}.down,.terminating{color:#b00}\n",
        "</style>\n</head>\n<body>\n<h1>mqtt-pulse</h1>\n",
    ));
    let _ = writeln!(
        page,
        "<p>MQTT 3.1.1 client-health monitor, version {}.</p>",
        escape_html(version)
    );
    page.push_str(concat!(
        "<ul>\n<li><a href=\"metrics\">Metrics</a></li>\n",
        "<li><a href=\"-/healthy\">Health</a></li>\n",
        "<li><a href=\"-/ready\">Readiness</a></li>\n</ul>\n",
    ));
    let _ = write!(
        page,
        "<h2>Clients</h2>\n<p>{} clients, {} up.</p>\n",
        clients.len(),
        up
    );
    page.push_str(concat!(
        "<table>\n<thead><tr><th>Client id</th><th>Broker</th><th>Status</th>",
        "<th>Last ping RTT</th><th>Status since (UTC)</th></tr></thead>\n<tbody>\n",
    ));
    for client in clients {
        let status = client.state.status;
        // The status doubles as the cell's CSS class (`up`, `down`, …).
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(client.state.client_id.as_str()),
            escape_html(&client.state.info.broker),
            status.as_str(),
            status,
            client
                .last_ping_rtt
                .map_or_else(|| "–".to_owned(), format_rtt),
            format_utc(client.state.since),
        );
    }
    page.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    page
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn format_rtt(rtt: Duration) -> String {
    if rtt < Duration::from_secs(1) {
        format!("{:.3} ms", rtt.as_secs_f64() * 1e3)
    } else {
        format!("{:.3} s", rtt.as_secs_f64())
    }
}

/// `YYYY-MM-DD hh:mm:ss`, UTC; times before 1970 (a broken clock) show as such.
fn format_utc(time: SystemTime) -> String {
    let Ok(since_epoch) = time.duration_since(UNIX_EPOCH) else {
        return "before 1970".to_owned();
    };
    let seconds = since_epoch.as_secs();
    let (mut days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let mut year = 1970;
    loop {
        let year_days = if is_leap_year(year) { 366 } else { 365 };
        if days < year_days {
            break;
        }
        days -= year_days;
        year += 1;
    }
    let february = if is_leap_year(year) { 29 } else { 28 };
    let mut month = 1;
    for month_days in [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < month_days {
            break;
        }
        days -= month_days;
        month += 1;
    }
    format!(
        "{year:04}-{month:02}-{:02} {:02}:{:02}:{:02}",
        days + 1,
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

fn is_leap_year(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_neutralises_markup_and_attribute_quotes() {
        assert_eq!(
            escape_html(r#"<script>alert('x')</script>&"q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"
        );
    }

    #[test]
    fn utc_times_follow_the_calendar_across_leap_days_and_centuries() {
        let at = |seconds: u64| format_utc(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01 00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00"); // 2000 is a leap year
        assert_eq!(at(951_868_800), "2000-03-01 00:00:00");
        assert_eq!(at(1_709_164_799), "2024-02-28 23:59:59");
        assert_eq!(at(1_735_689_599), "2024-12-31 23:59:59");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00:00"); // 2100 is not
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "before 1970"
        );
    }

    #[test]
    fn round_trips_read_in_milliseconds_below_a_second() {
        assert_eq!(format_rtt(Duration::from_micros(153)), "0.153 ms");
        assert_eq!(format_rtt(Duration::from_millis(1_250)), "1.250 s");
    }
}
