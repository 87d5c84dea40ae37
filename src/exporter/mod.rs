//! Exporters: subscribers of the events hub that turn its events and its
//! present state into metrics for a monitoring system.
//!
//! An exporter owns its subscription and the per-client series it builds from
//! it. It must never dispatch events, never block the hub's event path, and
//! never create or drive connections: whatever reports to the hub — this
//! crate's connection driver or the embedding service's own — is exported alike.
//! It never imports the HTTP layer or the config file: whoever serves or
//! configures it calls its builder.
//!
//! * [`metrics`] — a collector on a `prometheus::Registry`, with a handle that
//!   renders the text exposition format (the crate's HTTP router serves it).
//! * [`otlp`] — the same health pushed to an OpenTelemetry collector over OTLP
//!   (feature `otlp`, on by default; without it only [`otlp::OtlpProtocol`]).
//! * `consume` (private) — what both share: the subscription, the consumer
//!   task, the counted statuses and the bucket checks.

mod consume;
pub mod metrics;
pub mod otlp;

#[cfg(feature = "daemon")]
pub(crate) use consume::bucket_problem_at;
pub use consume::{DEFAULT_RTT_BUCKETS, DEFAULT_SUBSCRIPTION_CAPACITY, MAX_RTT_BUCKETS};
