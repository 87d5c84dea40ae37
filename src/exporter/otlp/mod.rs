//! The OpenTelemetry exporter: a second wildcard subscriber of the events hub
//! that records client health through the OpenTelemetry SDK and pushes it to
//! a collector over OTLP (gRPC or HTTP/protobuf). Behind the `otlp` feature.
//!
//! It owns one wildcard subscription, an `SdkMeterProvider` with a periodic
//! reader (the SDK's own thread), and the counter of failed pushes. It must
//! never block the hub, the connections or `/metrics`: dispatch only queues
//! for it, its consumer task never waits on the network, and every push —
//! including one to an unreachable or silent collector — happens on the SDK's
//! reader thread, bounded by the timeout. It must never log or return an OTLP
//! header value (they often carry tokens).
//!
//! # Metrics
//!
//! | name | instrument | unit | attributes | from |
//! |---|---|---|---|---|
//! | `mqtt.client.up` | observable gauge, 1/0 | | `mqtt.client.id`, `server.address`, `server.port` | the hub's present status, read at each collection |
//! | `mqtt.client.ping.rtt` | histogram | `s` | same | ping-response events |
//! | `mqtt.client.status.changes` | observable counter (monotonic sum) | | same + `status` | status events |
//! | `mqtt.client.roundtrip.rtt` | histogram | `s` | same | a probe's `received` round-trip events |
//! | `mqtt.client.roundtrip.sent` | observable counter | `{message}` | same | [`Events::round_trips`](crate::events::Events::round_trips) |
//! | `mqtt.client.roundtrip.messages` | observable counter | `{message}` | same + `outcome` | the same |
//! | `mqtt.client.roundtrip.last_success` | observable gauge, Unix time | `s` | same | the same |
//!
//! The round-trip instruments cover the clients with a probe (the
//! Prometheus exporter's `mqtt_client_roundtrip_*`). Beside them only the
//! first three, the design's OTLP names: the hub's other per-client data
//! — failure and dropped-publish counts, the last status change, the TLS
//! chain expiry (`mqtt_client_tls_cert_expiry_timestamp_seconds`), the
//! keep-alive in force (`mqtt_client_keep_alive_seconds`) — is on
//! `/metrics` only, until OTLP users ask for them together.
//!
//! `server.address` and `server.port` are split from the hub's `broker`
//! (`host:port`; an IPv6 address without its brackets). The histogram's
//! explicit bucket boundaries default to
//! [`DEFAULT_RTT_BUCKETS`](crate::exporter::DEFAULT_RTT_BUCKETS), as the
//! Prometheus exporter's. The resource carries `service.name=mqtt-pulse`,
//! `service.version`, `service.instance.id` (a random UUID per process: no
//! stable id exists for a monitor that may run anywhere; set one through
//! `OTEL_RESOURCE_ATTRIBUTES`, e.g. the pod name) and the SDK's
//! `telemetry.sdk.*`.
//!
//! As with the Prometheus exporter, `up` and `status.changes` cover exactly
//! the clients the hub knows: a terminated client disappears from both, and
//! `status.changes` starts at zero for `down`, `terminating` and `up`.
//! The SDK has no way to remove a histogram series, so with the default
//! cumulative temporality a terminated client's `ping.rtt` keeps being sent,
//! unchanged, until the exporter stops (with delta temporality,
//! `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`, it is not).
//!
//! # Settings
//!
//! Endpoint, protocol, interval, timeout and headers come from the builder
//! (the daemon translates its config file's `[otlp]` table into builder
//! calls) and, for what it leaves unset, from the standard
//! `OTEL_EXPORTER_OTLP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` variables: **the
//! builder (so the daemon's file) wins**. An endpoint from the
//! builder or `OTEL_EXPORTER_OTLP_ENDPOINT` is the collector's base URL (for
//! HTTP, `/v1/metrics` is appended); `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is
//! used as given. The one exception is a header set both here and in
//! `OTEL_EXPORTER_OTLP_HEADERS`: the SDK sends the environment's value, and
//! the builder logs a warning naming the header. Only `http://` endpoints are
//! supported by this build (no TLS client for OTLP).
//!
//! # Failures
//!
//! The SDK's exporter is wrapped in our own `PushMetricExporter`, which
//! counts every outcome: failures go to `mqtt_pulse_otlp_export_failures_total`
//! on the Prometheus registry given to
//! [`OtlpBuilder::with_prometheus_registry`] (the daemon passes the one
//! `/metrics` serves), and both counts to [`OtlpHandle::stats`] /
//! [`OtlpHandle::watch_stats`]. A failure is logged at `warn` at most once per
//! [`OtlpBuilder::with_failure_log_interval`], with the number of failures
//! since the last line; the first success after failures is logged at `info`.
//!
//! # Shutdown
//!
//! [`OtlpHandle::shutdown`] collects and pushes one last time — every event
//! dispatched before the call is in it — then stops. It runs the SDK's
//! blocking shutdown on Tokio's blocking pool, so it works on any runtime;
//! the SDK gives the final push at most 5 s. Dropping the last handle without
//! calling it does the same on a thread of its own, without waiting.
//!
//! # Layout
//!
//! [`OtlpProtocol`] is always here (the daemon's config file names it); the
//! rest needs the `otlp` feature:
//!
//! * `builder` — [`OtlpBuilder`]: the settings given in code, checked and
//!   resolved, and the steps that start the exporter.
//! * `settings` — the settings merged with the `OTEL_*` environment (sans-IO);
//!   `resource` — the resource attributes and `service.instance.id`.
//! * `sdk` — the OpenTelemetry SDK's exporter, meter provider and instruments.
//! * `recorder` — hub events into measurements, and the SDK's callbacks.
//! * `monitor` — every push counted, failures logged at a bounded rate.
//! * `handle` — [`OtlpHandle`]: settings in use, push counts, flush, shutdown.
//! * `error` — [`OtlpError`].
#![cfg_attr(not(feature = "otlp"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "otlp")]
mod builder;
#[cfg(feature = "otlp")]
mod error;
#[cfg(feature = "otlp")]
mod handle;
#[cfg(feature = "otlp")]
mod monitor;
#[cfg(feature = "otlp")]
mod recorder;
#[cfg(feature = "otlp")]
mod resource;
#[cfg(feature = "otlp")]
mod sdk;
#[cfg(feature = "otlp")]
mod settings;

#[cfg(feature = "otlp")]
pub use self::builder::{
    DEFAULT_FAILURE_LOG_INTERVAL, DEFAULT_MAX_CLIENTS, MAX_CLIENTS_CEILING, OtlpBuilder,
};
#[cfg(feature = "otlp")]
pub use self::error::OtlpError;
#[cfg(feature = "otlp")]
pub use self::handle::OtlpHandle;
#[cfg(feature = "otlp")]
pub use self::monitor::{EXPORT_FAILURES_METRIC, ExportStats};
#[cfg(feature = "otlp")]
pub use self::sdk::{
    PATH_LATENCY_METRIC, PATH_MESSAGES_METRIC, PATH_SENT_METRIC, PING_RTT_METRIC,
    ROUNDTRIP_LAST_SUCCESS_METRIC, ROUNDTRIP_MESSAGES_METRIC, ROUNDTRIP_RTT_METRIC,
    ROUNDTRIP_SENT_METRIC, STATUS_CHANGES_METRIC, UP_METRIC,
};
#[cfg(feature = "otlp")]
pub use self::settings::configured_by_env;

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`"grpc"`, usually port 4317). The default.
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`"http/protobuf"`, usually port 4318).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol of an OpenTelemetry protocol name (`OTEL_EXPORTER_OTLP_PROTOCOL`'s
    /// values): `"grpc"` or `"http/protobuf"`, exactly; `None` for any other,
    /// including `"http/json"`, which this exporter does not speak.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}
