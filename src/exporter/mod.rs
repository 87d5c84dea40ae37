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

pub use consume::{DEFAULT_RTT_BUCKETS, DEFAULT_SUBSCRIPTION_CAPACITY};

/// The labels every per-client series already has, which a client's extra
/// constant labels may not reuse.
pub(crate) const OWN_LABELS: &[&str] = &["client_id", "broker", "status", "reason", "type"];

/// The longest name of an extra constant label, in bytes.
pub const MAX_LABEL_NAME_LENGTH: usize = 128;

/// The longest value of an extra constant label, in bytes — and, in the
/// config file, of a client id, which is the `client_id` label of every series
/// of its client. Far beyond any sensible label; short of a page where every
/// sample of a client carries kilobytes of labels.
pub const MAX_LABEL_VALUE_LENGTH: usize = 1024;

/// Why `name` cannot be an extra constant label, if it cannot.
pub(crate) fn label_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_LABEL_NAME_LENGTH {
        return Some("label names are at most 128 bytes long");
    }
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        Some("label names match [a-zA-Z_][a-zA-Z0-9_]*")
    } else if name.starts_with("__") {
        Some("names starting with __ are reserved for Prometheus")
    } else if OWN_LABELS.contains(&name) {
        Some(
            "mqtt-pulse sets this label itself (client_id, broker, status, reason and type are taken)",
        )
    } else {
        None
    }
}

/// Why `value` cannot be the value of a label, if it cannot.
pub(crate) fn label_value_problem(value: &str) -> Option<&'static str> {
    (value.len() > MAX_LABEL_VALUE_LENGTH).then_some("label values are at most 1024 bytes long")
}
