//! The Prometheus exporter: a collector, registered on a caller-supplied
//! [`prometheus::Registry`], that exposes the health of every client the events
//! hub knows.
//!
//! It owns one wildcard subscription (status and ping-response events of every
//! client) and the per-client series built from it. Its only input is the hub,
//! so it treats connections it did not create exactly like its own. It must
//! never dispatch events, never block the hub (it reads its queue on its own
//! task, or on the scraper's thread), and never create or drive connections.
//!
//! # Metrics
//!
//! | name | type | labels | from |
//! |---|---|---|---|
//! | `mqtt_client_up` | gauge 1/0 | client_id, broker | the hub's present status |
//! | `mqtt_client_ping_rtt_seconds` | histogram | client_id, broker | ping-response events |
//! | `mqtt_client_status_changes_total` | counter | client_id, broker, status | status events |
//! | `mqtt_client_last_status_change_timestamp_seconds` | gauge | client_id, broker | the hub's present status |
//! | `mqtt_client_connect_failures_total` | counter | client_id, broker, reason | [`Events::failures`](crate::events::Events::failures) |
//! | `mqtt_client_publishes_dropped_total` | counter, once non-zero | client_id, broker | [`Events::dropped_publishes`](crate::events::Events::dropped_publishes), counted by each connection's task: the exporter reads the hub, never connection handles, so a connection it did not start is exported the same way |
//! | `mqtt_client_tls_cert_expiry_timestamp_seconds` | gauge, once a TLS connection verified a chain | client_id, broker | [`Events::tls_cert_expiries`](crate::events::Events::tls_cert_expiries): the earliest `notAfter` of the chain the broker presented at the client's last verified handshake (blackbox_exporter's `probe_ssl_earliest_cert_expiry`) |
//! | `mqtt_client_keep_alive_seconds` | gauge, once the connection said | client_id, broker | [`ClientState::keep_alive`](crate::events::ClientState::keep_alive): the keep-alive the CONNECT asks for, then the one in force after each CONNACK (an MQTT 5 broker's Server Keep Alive replaces ours) |
//! | `mqtt_pulse_events_dispatched_total` | counter | type | [`Events::stats`](crate::events::Events::stats) |
//! | `mqtt_pulse_events_dropped_total` | counter | type | [`Events::stats`](crate::events::Events::stats) |
//! | `mqtt_pulse_build_info` | gauge 1 | version, revision, rustversion | the build |
//! | `process_*` | process metrics | | `/proc` (Linux), optional |
//! | `promhttp_metric_handler_requests_total` | counter | code | `/metrics` answers, once the crate's HTTP router (`http::router`) serves the handle |
//! | `promhttp_metric_handler_requests_in_flight` | gauge | | `/metrics` requests being answered, likewise |
//!
//! # Rules
//!
//! * **Which clients.** Per-client series exist exactly for the clients the hub
//!   knows ([`Events::clients`](crate::events::Events::clients)): a client appears when it is announced or its
//!   first status is dispatched — a client announced but never connected reads
//!   `mqtt_client_up 0` — and *all* its series disappear when its status becomes
//!   [`Status::Terminated`](crate::events::Status::Terminated). A client that
//!   starts again starts its counters from zero.
//! * **Counters start at zero.** Every known client has its histogram and its
//!   `status="down"|"terminating"|"up"` counters from the start, so `rate()` and
//!   `increase()` see the first change. `terminated` is never exposed: a
//!   terminated client has no series.
//! * **Fresh reads.** [`MetricsHandle::render`] (and a `gather()` of the
//!   registry) first applies every queued event, so it reflects every event
//!   dispatched before the call. The consumer task only keeps the queue short
//!   between scrapes.
//! * **Since when.** Histograms and status counts cover the events dispatched
//!   since the exporter was built; `up` and the timestamp are the hub's present.
//! * **Losses are visible.** If the exporter's queue overflows, the hub counts
//!   the dropped events in `mqtt_pulse_events_dropped_total`, and the exporter
//!   re-checks which clients still exist so no forgotten client lingers.
//!
//! # Rendering cost
//!
//! Ten thousand clients make about a quarter of a million samples. The
//! `prometheus` crate's own vectors and `TextEncoder` need ~50 ms for that, so
//! [`MetricsHandle::render`] writes this exporter's families straight from
//! its compact per-client state and uses the `TextEncoder` only for the other
//! collectors on the registry. A plain `registry.gather()` still returns all of
//! them as protos, with the same content.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
//! use mqtt_pulse::exporter::metrics::MetricsBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = Events::new();
//! let registry = prometheus::Registry::new();
//! let (handle, consumer) = MetricsBuilder::new(&events)
//!     .with_registry(registry.clone())
//!     .with_process_metrics(false)
//!     .build()?;
//! // In a service: `tokio::spawn(consumer);` (or call `install()` instead of `build()`).
//! # drop(consumer);
//!
//! let plant = ClientId::from("plant-a");
//! events.announce(&plant, ClientInfo::new("broker.example:1883"));
//! events.dispatch(&plant, Event::Status(Status::Up));
//! events.dispatch(&plant, Event::PingResponse(Duration::from_micros(180)));
//!
//! let text = handle.render();
//! assert!(text.contains(r#"mqtt_client_up{client_id="plant-a",broker="broker.example:1883"} 1"#));
//! assert!(text.contains(
//!     r#"mqtt_client_ping_rtt_seconds_bucket{client_id="plant-a",broker="broker.example:1883",le="0.00025"} 1"#
//! ));
//!
//! events.dispatch(&plant, Event::Status(Status::Terminated));
//! assert!(!handle.render().contains("plant-a"));
//! # Ok(())
//! # }
//! ```

mod builder;
mod collector;
mod family;
mod handle;
mod native;
#[cfg(feature = "native-histograms")]
pub mod protobuf;
mod scrape_stats;
mod series;
mod snapshot;
mod text;

pub use self::builder::{BuildError, MetricsBuilder};
pub use self::handle::{ClientSummary, MetricsHandle};
#[cfg(feature = "daemon")]
pub(crate) use self::native::schema_problem as native_schema_problem;
pub use self::native::{MAX_SCHEMA as MAX_NATIVE_SCHEMA, MIN_SCHEMA as MIN_NATIVE_SCHEMA};
pub(crate) use self::scrape_stats::ScrapeStats;
