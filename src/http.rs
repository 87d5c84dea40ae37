//! The HTTP face of the exporter, in the manner of node_exporter and
//! blackbox_exporter: `/metrics`, a landing page at `/`, `/-/healthy` and
//! `/-/ready`.
//!
//! It owns routing, response formats (text exposition 0.0.4, gzip when the
//! scraper asks for it), the request timeout and graceful shutdown. It must
//! never render on an async worker thread — ten thousand clients are
//! milliseconds of CPU, done in `spawn_blocking` — and never serve anything but
//! metrics and what the hub knows of each client: no configuration, no
//! credentials.
//!
//! ```
//! use mqtt_pulse::events::Events;
//! use mqtt_pulse::exporter::prometheus::PrometheusBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = Events::new();
//! let handle = PrometheusBuilder::new(&events).install()?;
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

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::exporter::prometheus::{ClientSummary, PrometheusHandle};

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long [`run`] lets a request take before answering it with
/// `503 Service Unavailable`, and how long, after shutdown was asked for, it
/// waits for open connections before returning anyway. Prometheus's default
/// scrape timeout is 10 s too.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's routes: `GET /metrics`, `GET /` (landing page), `GET
/// /-/healthy`, `GET /-/ready`, with `HEAD` for each, gzip when the client
/// accepts it, `405` with an `Allow` header for other methods and a plain-text
/// `404` fallback.
///
/// Mount it on a service's own router with [`Router::merge`]. A router that
/// has its own fallback cannot be merged with one that also has one: call
/// [`Router::reset_fallback`] on this one first.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/", get(landing_page))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // A 10,000-client page is ~20 MB; fastest gzip still shrinks it ~15x
        // at a fraction of the default level's CPU.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .with_state(handle)
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets the requests in flight finish and returns.
///
/// Every request gets at most [`REQUEST_TIMEOUT`] (then `503`), and after
/// `shutdown` the server waits at most that long for open connections — a
/// client that stalls mid-request cannot hold the process.
///
/// # Errors
///
/// The listener's error if its address cannot be read or accepting fails
/// for good.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    let app = router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http());

    let shutdown_started = Arc::new(Notify::new());
    let signal = {
        let shutdown_started = Arc::clone(&shutdown_started);
        async move {
            shutdown.await;
            tracing::info!(%address, "shutting down the HTTP server");
            // `notify_one` keeps a permit, so the grace timer below starts even
            // if it was not yet waiting.
            shutdown_started.notify_one();
        }
    };
    let grace_period_over = async {
        shutdown_started.notified().await;
        tokio::time::sleep(REQUEST_TIMEOUT).await;
    };

    tracing::info!(%address, "serving HTTP");
    tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(signal) => served,
        () = grace_period_over => {
            tracing::warn!(%address, "connections still open after the grace period; closing them");
            Ok(())
        }
    }
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

async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    match tokio::task::spawn_blocking(move || handle.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn landing_page(State(handle): State<PrometheusHandle>) -> Response {
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
