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
//!   collector and its embedding builder.
//! * [`http`] — the axum router (`/metrics`, landing page, health) and server.
//! * [`config`] — the daemon's TOML config file: targets, defaults, OTLP;
//!   errors as `file:line:col: …`.
//! * [`daemon`] — the `mqtt-pulse` binary's life: flags, logging, targets,
//!   reload, shutdown. `main.rs` only calls it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod connection;
pub mod daemon;
pub mod events;
pub mod exporter;
pub mod http;
