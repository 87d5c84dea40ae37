//! mqtt-pulse: an MQTT 3.1.1 client-health monitor.
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
//! * [`http`] — the axum router (`/metrics`, landing page, health) and server;
//!   the exporter-toolkit web config (feature `web-config`).
//! * `config` — the daemon's TOML config file: targets, defaults, OTLP;
//!   errors as `file:line:col: …` (feature `daemon`).
//! * `daemon` — the `mqtt-pulse` binary's life: flags, logging, targets,
//!   reload, shutdown; `main.rs` only calls it (feature `daemon`).
//!
//! # Features
//!
//! * `daemon` (default) — `config`, `daemon` and what only the binary needs
//!   (clap, toml, tracing-subscriber); turns on `web-config`.
//! * `web-config` (default, through `daemon`) — the exporter-toolkit web
//!   config for [`http::Server`]: HTTPS, mutual TLS, basic auth.
//! * `otlp` (default) — the OpenTelemetry exporter.
//! * `process-metrics` (default) — the standard `process_*` metrics, read
//!   from `/proc` (Linux).
//! * `websocket` (default) — `ws://` and `wss://` brokers; without it such
//!   URLs are refused with an error naming the feature.
//! * `jemalloc` (default) — the binary's allocator; the library never
//!   installs one.
//!
//! An embedding service sets `default-features = false` and gets the hub, the
//! driver, the Prometheus exporter and the router.
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

// The README's Rust snippets compile as doctests, imports included.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
