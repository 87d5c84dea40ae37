//! mqtt-pulse: an MQTT 3.1.1 and MQTT 5 client-health monitor.
//!
//! Connections report their status and keep-alive round trips to an events hub
//! modelled on Elixir's `Tortoise311.Events`; subscribers — the Prometheus and
//! OpenTelemetry exporters among them — register for the clients and event kinds
//! they care about.
//!
//! # Layout
//!
//! * [`events`] — the pub/sub core: registrations, non-blocking dispatch, bounded
//!   per-subscriber queues, each client's last status.
//! * [`connection`] — the connection driver: one task per MQTT connection
//!   (rumqttc), reporting status and ping round trips to the hub; and the
//!   tracker for services that poll their own rumqttc event loop.
//! * [`exporter`] — subscribers that turn events into metrics: the Prometheus
//!   collector with its embedding builder, and the OTLP push.
//! * [`http`] — routes a service mounts where it likes (`/metrics`; opt-in
//!   landing page and health), the daemon's router, and the server;
//!   the exporter-toolkit web config (feature `web-config`).
//! * `config` — the daemon's TOML config file: targets, defaults, OTLP;
//!   errors as `file:line:col: …` (feature `daemon`).
//! * `daemon` — the `mqtt-pulse` binary's life: flags, logging, targets,
//!   reload, shutdown; `main.rs` only calls it (feature `daemon`).
//!
//! # Features
//!
//! * `daemon` (default) — `config`, `daemon` and what only the binary needs
//!   (clap, toml, tracing-subscriber); turns on `web-config` and `ring`.
//! * `web-config` (default, through `daemon`) — the exporter-toolkit web
//!   config for [`http::Server`]: HTTPS, mutual TLS, basic auth; turns on
//!   `ring`.
//! * `otlp` (default) — the OpenTelemetry exporter.
//! * `process-metrics` (default) — the standard `process_*` metrics, read
//!   from `/proc` (Linux), when [`MetricsBuilder::with_process_metrics`] asks
//!   for them (the daemon does).
//! * `websocket` (default) — `ws://` and `wss://` brokers; without it such
//!   URLs are refused with an error naming the feature.
//! * `jemalloc` (default) — the binary's allocator; the library never
//!   installs one.
//! * `ring` (through `daemon` and `web-config`) — rustls's ring provider, for
//!   mqtt-pulse's own TLS connections when the process has no default
//!   provider. Without it mqtt-pulse compiles and installs no provider: a
//!   host's TLS stays the host's (see [`TlsOptions`]).
//!
//! An embedding service sets `default-features = false` and gets the hub, the
//! driver, the Prometheus exporter and the router.
//!
//! # The short path in
//!
//! What an embedder uses is re-exported here: [`Events`] (the hub),
//! [`ClientFilter`], [`EventKind`], [`Status`], [`MetricsBuilder`],
//! [`MetricsHandle`], [`ConnectionTracker`] (for a rumqttc loop the service
//! polls itself), [`Connection`] and [`ConnectionOptions`] (for a connection
//! mqtt-pulse drives). The hub's event type stays [`events::Event`], so it
//! never shadows `rumqttc::Event`.
//!
//! The public API is tied to three crates, re-exported so a service can use
//! exactly the versions it was built with:
//!
//! * [`prometheus`] 0.14 — [`MetricsBuilder::with_registry`] takes its
//!   `Registry` (a `Registry` of prometheus 0.13 is another type);
//! * [`axum`] 0.8 — the routes in [`http`] are `axum::routing::MethodRouter`s
//!   and `axum::Router`s;
//! * [`rumqttc`] 0.25 — [`ConnectionTracker`] reads its `MqttOptions`,
//!   `Event`s and `ConnectionError`s.
//!
//! mqtt-pulse logs through [`tracing`](https://docs.rs/tracing) (connection
//! status changes at `info`, failed attempts at `debug`); it installs no
//! subscriber.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "daemon")]
pub mod config;
pub mod connection;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod events;
pub mod exporter;
pub mod http;
mod sync;

pub use axum;
pub use prometheus;
pub use rumqttc;

pub use connection::{Connection, ConnectionOptions, ConnectionTracker, OptionsError, TlsOptions};
pub use events::{ClientFilter, ClientId, EventKind, Events, Message, Status, Subscription};
pub use exporter::metrics::{BuildError, MetricsBuilder, MetricsHandle};

// The README's Rust snippets compile as doctests, imports included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
