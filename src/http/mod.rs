//! The HTTP face of the exporter, in the manner of node_exporter and
//! blackbox_exporter: `/metrics`, a landing page at `/`, the events hub as
//! Server-Sent Events at `/events`, `/-/healthy` and `/-/ready`, over plain
//! HTTP or — with the `web-config` feature (on by default) and a
//! [`WebConfig`] read from the Prometheus exporter-toolkit's
//! `--web.config.file` format — HTTPS, with client certificates, basic auth,
//! extra response headers and a rate limit.
//!
//! # Layout
//!
//! * `mod.rs`: the routes — one at a time for a service's own router
//!   ([`metrics_route`], [`landing_route`], [`landing_assets_route`],
//!   [`events_route`], [`healthy_route`], [`ready_route`]), or the daemon's
//!   set ([`router`], [`with_default_fallbacks`]) — and the probe answers;
//! * `server.rs`: [`Server`], [`run`] — serving, timeouts, graceful shutdown;
//! * `scrape.rs`: `/metrics`, shared renders; `landing.rs`: the page at `/`
//!   and its script and style sheet (`landing/`, served at `/static/…`);
//!   `events.rs`: `/events`, the hub as Server-Sent Events;
//! * `limits.rs`: concurrency caps and the body limit;
//! * `web/` (feature `web-config`): the web config — reading the file, TLS,
//!   basic auth, rate limit, response headers.
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
//! * at most [`MAX_EVENT_STREAMS`] `/events` streams are open at once, more
//!   are answered `503`; each has its own bounded queue, so a reader that
//!   stops reading loses its own events (counted), never anyone else's, and
//!   every stream ends when the [`Server`] starts shutting down;
//! * a request body over [`MAX_REQUEST_BODY`] is answered `413`;
//! * with a web config: `429` beyond its `rate_limit`, `401` (with
//!   `WWW-Authenticate: Basic realm="mqtt-pulse"`) without valid credentials.
//!   The health endpoints stay open — no credentials, no rate limit — so
//!   container and load-balancer probes work; see [`WebConfig`].
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
#![cfg_attr(feature = "web-config", doc = "[`WebConfig`]: WebConfig")]
// Without the feature the type does not exist: link to the feature list.
#![cfg_attr(not(feature = "web-config"), doc = "[`WebConfig`]: crate#features")]

mod events;
mod landing;
mod limits;
mod scrape;
mod server;
#[cfg(feature = "web-config")]
mod web;

pub use events::{EVENT_STREAM_QUEUE, MAX_EVENT_STREAMS};
pub use limits::{MAX_CONCURRENT_RENDERS, MAX_CONCURRENT_SCRAPES, MAX_REQUEST_BODY};
pub use server::Server;
#[cfg(feature = "web-config")]
pub use web::{WebConfig, WebConfigError, WebConfigPosition};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get};
use tokio::net::TcpListener;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;

use crate::events::Events;
use crate::exporter::metrics::MetricsHandle;

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

/// `GET /metrics` (and `HEAD`) for a service's own router, at the path it
/// chooses: the handle's registry — the service's metrics and ours — in the
/// text format, gzipped when the scraper accepts it.
///
/// Scrapes waiting at the same time share one render, which starts after each
/// of them arrived, so every answer reflects every event dispatched before its
/// request; renders run on a blocking thread. At most
/// [`MAX_CONCURRENT_SCRAPES`] scrapes are answered at once (the clones of one
/// route share the cap), more get `503` with `Retry-After: 1`. Answers are
/// counted in `promhttp_metric_handler_requests_total` and
/// `promhttp_metric_handler_requests_in_flight`, registered on the handle's
/// registry when this is called (as node_exporter counts its own).
///
/// Generic over the router's state, so it mounts on any `Router<S>`:
///
/// ```
/// use axum::Router;
/// use mqtt_pulse::{Events, MetricsBuilder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(Clone)]
/// struct AppState;
/// let metrics = MetricsBuilder::new(&Events::new()).install()?;
/// let app: Router<AppState> =
///     Router::new().route("/internal/metrics", mqtt_pulse::http::metrics_route(metrics));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// A service that already has its own `/metrics` handler needs none of this:
/// the exporter is a collector on its registry, so its own
/// `registry.gather()` shows our families too (or it may answer with
/// [`MetricsHandle::render`], which writes ours faster).
pub fn metrics_route<S>(handle: MetricsHandle) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(scrape::metrics)
        .layer(from_fn_with_state(
            limits::Cap::new(MAX_CONCURRENT_SCRAPES),
            limits::cap,
        ))
        .layer(from_fn_with_state(
            handle.scrape_stats().cloned(),
            scrape::count,
        ))
        .with_state(scrape::Scrapes::new(handle))
}

/// `GET /` of the daemon: an HTML page listing every client the hub knows,
/// with its broker address, status and last ping. Opt-in: it shows client ids
/// and broker addresses to whoever can reach the port. At most
/// [`MAX_CONCURRENT_RENDERS`] pages are rendered at once, more get `503`.
///
/// The table is served complete, and works without JavaScript. In a browser
/// it then keeps itself live — status, reason, RTT, time since the last
/// change, a sparkline of recent RTTs, a filter and sorting — with a script
/// and a style sheet it loads from `static/mqtt-pulse.js` and
/// `static/mqtt-pulse.css` and a stream from `events`, each relative to the
/// page: mount [`landing_assets_route`] at `static/{asset}` and
/// [`events_route`] at `events` beside it, as [`router`] does at `/`.
pub fn landing_route<S>(handle: MetricsHandle) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(landing::landing_page)
        .layer::<_, Infallible>(from_fn_with_state(
            limits::Cap::new(MAX_CONCURRENT_RENDERS),
            limits::cap,
        ))
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .with_state(handle)
}

/// `GET …/mqtt-pulse.js` and `GET …/mqtt-pulse.css`: the script and style
/// sheet of [`landing_route`]'s page, compiled into the binary (the page loads
/// nothing from anywhere else). Chosen by the last segment of the path, so
/// mount it at `static/{asset}` next to the page; any other name is `404`.
/// Served with their `Content-Type` and `Cache-Control: no-cache`.
///
/// Script and style are files rather than inline in the page so that a
/// `Content-Security-Policy` such as `default-src 'self'` (a web config
/// header) leaves the page working.
///
/// ```
/// use axum::Router;
/// use mqtt_pulse::{Events, MetricsBuilder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let events = Events::new();
/// let metrics = MetricsBuilder::new(&events).install()?;
/// let app: Router = Router::new()
///     .route("/status/", mqtt_pulse::http::landing_route(metrics))
///     .route("/status/static/{asset}", mqtt_pulse::http::landing_assets_route())
///     .route("/status/events", mqtt_pulse::http::events_route(&events));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub fn landing_assets_route<S>() -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(landing::landing_asset).layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
}

/// `GET /events`: the events hub as [Server-Sent Events], one event per hub
/// message, for a page or a terminal to follow the clients live. Opt-in, as
/// [`landing_route`]: it shows client ids to whoever can reach the port.
///
/// The query selects as [`Events::register`] does: `client_id=ID` one client
/// (absent or `*`: every client, Tortoise311's `:_`), `kind=status`,
/// `kind=ping_response`, `kind=round_trip` — repeated or comma-separated
/// (absent: every kind).
/// Anything else is answered `400` naming it. Events, each `data` one JSON
/// object with `at` in Unix seconds:
///
/// ```text
/// event: status
/// data: {"client_id":"plant-a","event":"status","status":"down","reason":"closed_by_broker","at":1764601200.123456}
///
/// event: ping_response
/// data: {"client_id":"plant-a","event":"ping_response","rtt_seconds":0.000153,"at":1764601201.000412}
///
/// event: round_trip
/// data: {"client_id":"plant-a","event":"round_trip","seq":42,"outcome":"received","rtt_seconds":0.000231,"at":1764601201.250117}
///
/// event: dropped
/// data: {"dropped":17,"total":17}
/// ```
///
/// With `status` selected, a stream first sends one `status` event per
/// selected client with its present state (`at`: since when), then the
/// changes. `reason` is there while a client is down and the hub knows why.
/// Each stream is one hub subscription with its own queue of
/// [`EVENT_STREAM_QUEUE`] messages: a reader that does not keep up loses its
/// own events — counted in `mqtt_pulse_events_dropped_total`, and announced
/// with a `dropped` event (`dropped` since the last one, `total` for the
/// stream) — never another subscriber's. At most [`MAX_EVENT_STREAMS`] are
/// open at once (the clones of one route share the cap), more get `503` with
/// `Retry-After: 1`. A comment line every 15 s keeps idle proxies from
/// closing the stream.
///
/// Served by [`Server`] or [`run`], every stream ends when shutdown starts.
/// Under another server a stream lasts until its client goes away, which
/// holds a graceful shutdown that waits for every connection (axum's
/// `serve(...).with_graceful_shutdown`) until then.
///
/// ```
/// use axum::Router;
/// use mqtt_pulse::Events;
///
/// let events = Events::new();
/// let app: Router = Router::new().route("/events", mqtt_pulse::http::events_route(&events));
/// # let _ = app;
/// ```
///
/// [Server-Sent Events]: https://html.spec.whatwg.org/multipage/server-sent-events.html
pub fn events_route<S>(events: &Events) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(events::event_stream).with_state(events::EventStreams::new(events))
}

/// `GET /-/healthy` of the daemon: `200 mqtt-pulse is Healthy.` Opt-in.
pub fn healthy_route<S>() -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(healthy)
}

/// `GET /-/ready` of the daemon: `200 mqtt-pulse is Ready.` Opt-in.
pub fn ready_route<S>() -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(ready)
}

/// The daemon's routes: [`metrics_route`] at `/metrics`, [`landing_route`] at
/// `/` with [`landing_assets_route`] at `/static/{asset}`, [`events_route`]
/// (on the handle's hub) at `/events`, [`healthy_route`]
/// at `/-/healthy`, [`ready_route`] at `/-/ready`.
///
/// It sets no fallback: unknown paths and other methods get what the
/// application's router answers (axum's empty `404` and `405` by default); to
/// answer as the mqtt-pulse daemon does, wrap the finished router in
/// [`with_default_fallbacks`].
///
/// A service with routes of its own mounts the pieces it wants with
/// [`Router::route`] at paths it picks rather than merging all of this: both
/// [`Router::merge`] and [`Router::route`] panic when a path and method is
/// already routed (`Overlapping method route`) — at startup, never silently
/// — and a service that already serves `/metrics` or `/` would hit exactly
/// that with `merge`.
pub fn router(handle: MetricsHandle) -> Router {
    Router::new()
        .route("/events", events_route(handle.events()))
        .route("/", landing_route(handle.clone()))
        .route("/static/{asset}", landing_assets_route())
        .route("/metrics", metrics_route(handle))
        .route("/-/healthy", healthy_route())
        .route("/-/ready", ready_route())
}

/// `router` answering as the mqtt-pulse daemon does where no route matches:
/// [`not_found`] for an unknown path, [`method_not_allowed`] (with axum's
/// `Allow` header) for a known path with another method. Call it on the
/// finished router, after every [`Router::merge`] and [`Router::route`]: the
/// `405` applies to the routes that exist then.
pub fn with_default_fallbacks<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
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

async fn healthy() -> &'static str {
    "mqtt-pulse is Healthy.\n"
}

/// Ready as soon as it serves: the router exists only once the exporter is
/// built, and a scrape reads the hub directly, so there is nothing to wait for.
async fn ready() -> &'static str {
    "mqtt-pulse is Ready.\n"
}

/// The daemon's answer to an unknown path: `404` with `404 page not found`
/// in plain text, as Go's net/http (and so node_exporter) answers.
pub async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

/// The daemon's answer to a known path with another method: `405` with
/// `405 method not allowed` in plain text. Set it with
/// [`Router::method_not_allowed_fallback`], which adds the `Allow` header.
pub async fn method_not_allowed() -> (StatusCode, &'static str) {
    (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n")
}
