//! Exporters: subscribers of the events hub that turn its events and its
//! present state into metrics for a monitoring system.
//!
//! An exporter owns its subscription and the per-client series it builds from
//! it. It must never dispatch events, never block the hub's event path, and
//! never create or drive connections: whatever reports to the hub — this
//! crate's connection driver or the embedding service's own — is exported alike.
//!
//! * [`prometheus`] — a collector on a `prometheus::Registry`, with a handle that
//!   renders the text exposition format (served by [`crate::http`]).
//! * `otlp` — the same health pushed to an OpenTelemetry collector over OTLP
//!   (feature `otlp`, on by default).

#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prometheus;
