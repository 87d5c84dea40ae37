//! Why the OTLP exporter could not be built, flushed or shut down.

use super::builder::MAX_CLIENTS_CEILING;
use super::monitor::EXPORT_FAILURES_METRIC;

/// Why the OTLP exporter could not be built, flushed or shut down. Messages
/// never contain a header value or URL credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not a usable `http://host:port` URL.
    #[error("invalid OTLP endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint without credentials, and where it came from.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The protocol is neither `grpc` nor `http/protobuf`.
    #[error("unsupported OTLP protocol {value:?} in {origin}; use \"grpc\" or \"http/protobuf\"")]
    Protocol {
        /// The environment variable it came from.
        origin: &'static str,
        /// The value found there.
        value: String,
    },
    /// An `OTEL_*` variable holds something unusable.
    #[error("{variable}={value:?} is not usable: expected {expected}")]
    Environment {
        /// The variable.
        variable: &'static str,
        /// Its value (never a header variable).
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// A header cannot be sent; the value is never shown.
    #[error("invalid OTLP header {name:?}: {reason} (the value is not shown)")]
    Header {
        /// The header name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The interval or the timeout given in code is zero.
    #[error("the OTLP {0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The histogram buckets given to [`OtlpBuilder::with_buckets`](super::OtlpBuilder::with_buckets) are unusable.
    #[error(
        "invalid ping RTT histogram buckets: {0}; give 1 to 64 finite, positive upper bounds \
         in seconds, strictly increasing"
    )]
    InvalidBuckets(&'static str),
    /// [`OtlpBuilder::with_max_clients`](super::OtlpBuilder::with_max_clients) is 0 or above [`MAX_CLIENTS_CEILING`].
    #[error("max clients must be between 1 and {MAX_CLIENTS_CEILING}, not {0}")]
    MaxClients(usize),
    /// The Prometheus registry already has the failure counter.
    #[error(
        "cannot register {EXPORT_FAILURES_METRIC} on this registry, it already has it; \
         give each OTLP exporter its own registry"
    )]
    Register(#[source] prometheus::Error),
    /// The OpenTelemetry SDK refused the settings.
    #[error("cannot create the OTLP exporter: {0}")]
    Exporter(String),
    /// gRPC needs a Tokio runtime to build its channel on, and
    /// [`OtlpBuilder::install`](super::OtlpBuilder::install) one to spawn on.
    #[error(
        "no Tokio runtime is running; build the OTLP exporter from within one (gRPC \
         needs it for its connection)"
    )]
    NoRuntime,
    /// [`OtlpHandle::flush`](super::OtlpHandle::flush) after [`OtlpHandle::shutdown`](super::OtlpHandle::shutdown).
    #[error("the OTLP exporter is shut down")]
    ShutDown,
    /// A flush did not complete: the push failed or timed out.
    #[error("OTLP flush failed: {0}")]
    Flush(String),
    /// The shutdown's final push failed or timed out; the exporter is stopped
    /// anyway.
    #[error("OTLP shutdown did not complete cleanly: {0}")]
    Shutdown(String),
}
