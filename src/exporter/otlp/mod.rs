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
//!
//! `server.address` and `server.port` are split from the hub's `broker`
//! (`host:port`; an IPv6 address without its brackets). The histogram's
//! explicit bucket boundaries default to the Prometheus exporter's
//! [`DEFAULT_RTT_BUCKETS`]. The resource carries `service.name=mqtt-pulse`,
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
//! Endpoint, protocol, interval, timeout and headers come from the builder —
//! the daemon fills it from the config file's `[otlp]` table — and, for what
//! it leaves unset, from the standard `OTEL_EXPORTER_OTLP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_RESOURCE_ATTRIBUTES` and
//! `OTEL_SERVICE_NAME` variables: **the file wins**. An endpoint from the
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
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use mqtt_pulse::events::Events;
//! use mqtt_pulse::exporter::otlp::{OtlpBuilder, OtlpProtocol};
//!
//! # async fn run() -> Result<(), mqtt_pulse::exporter::otlp::OtlpError> {
//! let events = Events::new();
//! let registry = prometheus::Registry::new();
//! let otlp = OtlpBuilder::new(&events)
//!     .with_endpoint("http://collector:4318")
//!     .with_protocol(OtlpProtocol::HttpProtobuf)
//!     .with_interval(Duration::from_secs(10))
//!     .with_header("x-api-key", "…")
//!     .with_prometheus_registry(registry.clone())
//!     .install()?;
//! // … connections report to `events` …
//! otlp.shutdown().await?; // pushes the last batch
//! # Ok(())
//! # }
//! ```

mod monitor;
mod recorder;
mod settings;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry::metrics::{MeterProvider as _, ObservableCounter, ObservableGauge};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, WithExportConfig as _, WithHttpConfig as _,
    WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use prometheus::Registry;
use tokio::sync::{oneshot, watch};

pub use crate::config::OtlpProtocol;
pub use crate::exporter::prometheus::DEFAULT_RTT_BUCKETS;

use self::monitor::{CountingExporter, ExportMonitor};
use self::recorder::Shared;
use self::settings::Requested;
use crate::config::OtlpConfig;
use crate::events::{ClientFilter, EventKind, Events};

/// The name of the up gauge.
pub const UP_METRIC: &str = "mqtt.client.up";
/// The name of the ping round-trip histogram (unit `s`).
pub const PING_RTT_METRIC: &str = "mqtt.client.ping.rtt";
/// The name of the status-change counter.
pub const STATUS_CHANGES_METRIC: &str = "mqtt.client.status.changes";
/// The Prometheus counter of failed pushes, on the registry given to
/// [`OtlpBuilder::with_prometheus_registry`].
pub const EXPORT_FAILURES_METRIC: &str = monitor::FAILURES_METRIC;

/// Default capacity of the exporter's subscription queue (as the Prometheus
/// exporter's): only a consumer stalled for seconds loses events, and the hub
/// counts them.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;
/// Default number of clients each instrument keeps series for; more go to the
/// SDK's overflow series (`otel.metric.overflow=true`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default shortest time between two log lines about failed pushes.
pub const DEFAULT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The largest accepted [`OtlpBuilder::with_max_clients`]: the SDK reserves
/// its tables up front, about 40 bytes per client and instrument.
pub const MAX_MAX_CLIENTS: usize = 1_000_000;

const STATUS_COUNT: usize = 3;

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
    /// The histogram buckets given to [`OtlpBuilder::with_buckets`] are unusable.
    #[error(
        "invalid ping RTT histogram buckets: {0}; give finite, non-negative upper bounds \
         in seconds, strictly increasing"
    )]
    InvalidBuckets(&'static str),
    /// [`OtlpBuilder::with_max_clients`] is 0 or above [`MAX_MAX_CLIENTS`].
    #[error("max clients must be between 1 and {MAX_MAX_CLIENTS}, not {0}")]
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
    /// [`OtlpBuilder::install`] one to spawn on.
    #[error(
        "no Tokio runtime is running; build the OTLP exporter from within one (gRPC \
         needs it for its connection)"
    )]
    NoRuntime,
    /// [`OtlpHandle::flush`] after [`OtlpHandle::shutdown`].
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

/// Pushes attempted since the exporter was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportStats {
    /// Pushes the collector accepted.
    pub exports: u64,
    /// Pushes that failed (also counted in [`EXPORT_FAILURES_METRIC`]).
    pub failures: u64,
}

/// Whether the process environment asks for OTLP export: some
/// `OTEL_EXPORTER_OTLP_*` variable is set (non-empty), and
/// `OTEL_SDK_DISABLED` is not `true`. The daemon exports when this holds or
/// the config file has an `[otlp]` table.
pub fn configured_by_env() -> bool {
    settings::enabled_by(
        std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }),
    )
}

/// Builds the OTLP exporter of an events hub.
///
/// [`build`](Self::build) returns a handle and the future that consumes the
/// hub's events, for the caller to spawn; [`install`](Self::install) spawns
/// it on the current Tokio runtime. Unset settings come from the `OTEL_*`
/// environment variables, then the OpenTelemetry defaults (see the module
/// docs). `Debug` shows header names only.
#[must_use = "a builder does nothing until build() or install() is called"]
pub struct OtlpBuilder {
    events: Events,
    requested: Requested,
    buckets: Vec<f64>,
    registry: Option<Registry>,
    subscription_capacity: usize,
    max_clients: usize,
    failure_log_interval: Duration,
}

impl fmt::Debug for OtlpBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requested = &self.requested;
        f.debug_struct("OtlpBuilder")
            .field("endpoint", &requested.endpoint.as_deref().map(redact_text))
            .field("protocol", &requested.protocol)
            .field("interval", &requested.interval)
            .field("timeout", &requested.timeout)
            .field("headers", &requested.headers.keys().collect::<Vec<_>>())
            .field("resource", &requested.resource)
            .field("buckets", &self.buckets)
            .field("registry", &self.registry.is_some())
            .field("subscription_capacity", &self.subscription_capacity)
            .field("max_clients", &self.max_clients)
            .field("failure_log_interval", &self.failure_log_interval)
            .finish_non_exhaustive()
    }
}

impl OtlpBuilder {
    /// A builder for an exporter of `events`, the hub it will subscribe to.
    pub fn new(events: &Events) -> Self {
        Self {
            events: events.clone(),
            requested: Requested::default(),
            buckets: DEFAULT_RTT_BUCKETS.to_vec(),
            registry: None,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            max_clients: DEFAULT_MAX_CLIENTS,
            failure_log_interval: DEFAULT_FAILURE_LOG_INTERVAL,
        }
    }

    /// Takes every setting the config file's `[otlp]` table has: endpoint,
    /// interval and timeout when present, the protocol (the table's default
    /// is gRPC, so it always overrides `OTEL_EXPORTER_OTLP_PROTOCOL`), and
    /// the headers (added to any given before).
    pub fn with_config(mut self, config: &OtlpConfig) -> Self {
        if let Some(endpoint) = config.endpoint() {
            self.requested.endpoint = Some(endpoint.as_str().to_owned());
        }
        self.requested.protocol = Some(config.protocol());
        if let Some(interval) = config.interval() {
            self.requested.interval = Some(interval);
        }
        if let Some(timeout) = config.timeout() {
            self.requested.timeout = Some(timeout);
        }
        for (name, value) in config.headers() {
            self.requested.headers.insert(name.clone(), value.clone());
        }
        self
    }

    /// The collector's base URL, `http://host:port[/path]`. For HTTP/protobuf
    /// `/v1/metrics` is appended unless the path already ends with it.
    ///
    /// Defaults to `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as given), then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, then `http://localhost:4317` (gRPC) or
    /// `http://localhost:4318` (HTTP).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.requested.endpoint = Some(endpoint.into());
        self
    }

    /// The transport.
    ///
    /// Defaults to `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, then gRPC.
    pub fn with_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.requested.protocol = Some(protocol);
        self
    }

    /// How often metrics are collected and pushed; must not be zero.
    ///
    /// Defaults to `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), then 60 s.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.requested.interval = Some(interval);
        self
    }

    /// How long one push may take, retries included; must not be zero.
    ///
    /// Defaults to `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, then
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), then 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.requested.timeout = Some(timeout);
        self
    }

    /// A request header (gRPC metadata), such as an API key. The value is
    /// never logged nor shown in an error or `Debug` output. Checked by
    /// [`build`](Self::build): a valid header name, visible ASCII value.
    ///
    /// Defaults to none; the SDK adds `OTEL_EXPORTER_OTLP_HEADERS`, whose
    /// value wins for a name given in both.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.requested.headers.insert(name.into(), value.into());
        self
    }

    /// A resource attribute, overriding ours (`service.*`) and
    /// `OTEL_RESOURCE_ATTRIBUTES` / `OTEL_SERVICE_NAME` for the same key.
    ///
    /// Defaults to `service.name=mqtt-pulse`, `service.version`,
    /// `service.instance.id` (a random UUID) and the environment's.
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.requested.resource.push((key.into(), value.into()));
        self
    }

    /// The explicit bucket boundaries, in seconds, of `mqtt.client.ping.rtt`:
    /// finite, non-negative, strictly increasing. Checked by
    /// [`build`](Self::build).
    ///
    /// Defaults to [`DEFAULT_RTT_BUCKETS`], the Prometheus exporter's.
    pub fn with_buckets(mut self, bounds: &[f64]) -> Self {
        self.buckets = bounds.to_vec();
        self
    }

    /// The Prometheus registry to register [`EXPORT_FAILURES_METRIC`] on,
    /// so failed pushes show on the same `/metrics` page. A registry takes
    /// one OTLP exporter.
    ///
    /// Defaults to none: failures are then counted in
    /// [`OtlpHandle::stats`] only.
    pub fn with_prometheus_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How many events the exporter's subscription queues before the hub drops
    /// (and counts) further ones; 0 is taken as 1.
    ///
    /// Defaults to [`DEFAULT_SUBSCRIPTION_CAPACITY`].
    pub fn with_subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity;
        self
    }

    /// How many clients each instrument keeps series for (the SDK's
    /// cardinality limit; the status counter gets three per client). Series
    /// beyond it are merged into the SDK's overflow series.
    ///
    /// Defaults to [`DEFAULT_MAX_CLIENTS`]; at most [`MAX_MAX_CLIENTS`].
    pub fn with_max_clients(mut self, clients: usize) -> Self {
        self.max_clients = clients;
        self
    }

    /// The shortest time between two `warn` lines about failed pushes; the
    /// failures in between are counted in the next line.
    ///
    /// Defaults to [`DEFAULT_FAILURE_LOG_INTERVAL`].
    pub fn with_failure_log_interval(mut self, interval: Duration) -> Self {
        self.failure_log_interval = interval;
        self
    }

    /// Resolves the settings, subscribes to the hub, starts the SDK's reader
    /// thread, registers the failure counter, and returns the handle and the
    /// consumer future. Spawn the future for as long as the exporter is used:
    /// it keeps the subscription's queue short between pushes (each push
    /// catches up on the queue itself, so nothing is lost without it). It
    /// completes once the exporter is shut down or its last handle dropped.
    ///
    /// # Errors
    ///
    /// [`OtlpError::Endpoint`], [`OtlpError::Protocol`],
    /// [`OtlpError::Environment`], [`OtlpError::Header`],
    /// [`OtlpError::ZeroDuration`], [`OtlpError::InvalidBuckets`] or
    /// [`OtlpError::MaxClients`] for unusable settings,
    /// [`OtlpError::NoRuntime`] for gRPC outside a Tokio runtime,
    /// [`OtlpError::Register`] if the registry already has the counter, and
    /// [`OtlpError::Exporter`] if the SDK refuses. On error nothing keeps
    /// running and nothing stays registered.
    pub fn build(
        self,
    ) -> Result<(OtlpHandle, impl Future<Output = ()> + Send + 'static), OtlpError> {
        let bounds = checked_bounds(&self.buckets)?;
        if !(1..=MAX_MAX_CLIENTS).contains(&self.max_clients) {
            return Err(OtlpError::MaxClients(self.max_clients));
        }
        let instance_id = settings::random_instance_id();
        let resolved = settings::resolve(&self.requested, &settings::process_env, &instance_id)?;
        if resolved.protocol == OtlpProtocol::Grpc && tokio::runtime::Handle::try_current().is_err()
        {
            return Err(OtlpError::NoRuntime);
        }
        for name in &resolved.env_header_names {
            if resolved
                .headers
                .keys()
                .any(|given| given.eq_ignore_ascii_case(name))
            {
                tracing::warn!(
                    header = %name,
                    "OTLP header set both in the configuration and in OTEL_EXPORTER_OTLP_HEADERS; \
                     the OpenTelemetry SDK sends the environment's value"
                );
            }
        }

        let endpoint = settings::redacted(&resolved.endpoint);
        let monitor = Arc::new(ExportMonitor::new(
            endpoint.clone(),
            resolved.secrets.clone(),
            self.failure_log_interval,
        ));
        let sdk_exporter = sdk_exporter(&resolved)
            .map_err(|error| OtlpError::Exporter(monitor.scrub(&error.to_string())))?;
        if let Some(registry) = &self.registry {
            registry
                .register(Box::new(monitor.failures_counter()))
                .map_err(OtlpError::Register)?;
        }

        // Subscribe before the instruments exist: nothing dispatched from here
        // on is missed.
        let mut subscription = self
            .events
            .subscribe_with_capacity(self.subscription_capacity);
        for kind in EventKind::ALL {
            subscription.register(ClientFilter::Any, kind);
        }

        let reader = PeriodicReader::builder(CountingExporter {
            inner: sdk_exporter,
            monitor: Arc::clone(&monitor),
        })
        .with_interval(resolved.interval)
        .build();
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(
                resolved
                    .resource
                    .iter()
                    .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .with_view(cardinality_view(self.max_clients))
            .build();
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let rtt = meter
            .f64_histogram(PING_RTT_METRIC)
            .with_unit("s")
            .with_description("Keep-alive round-trip time: PINGREQ written to PINGRESP read.")
            .with_boundaries(bounds)
            .build();
        let shared = Arc::new(Shared::new(self.events, subscription, rtt));
        let changes = {
            let shared = Arc::clone(&shared);
            meter
                .u64_observable_counter(STATUS_CHANGES_METRIC)
                .with_description("Connection status changes, by the status changed to.")
                .with_callback(move |observer| shared.observe_changes(observer))
                .build()
        };
        let up = {
            let shared = Arc::clone(&shared);
            meter
                .i64_observable_gauge(UP_METRIC)
                .with_description("Whether the client is connected to its broker (1) or not (0).")
                .with_callback(move |observer| shared.observe_up(observer))
                .build()
        };

        let (stop, stopped) = oneshot::channel();
        let consumer = recorder::consume(Arc::downgrade(&shared), stopped);
        let handle = OtlpHandle {
            inner: Arc::new(HandleInner {
                provider: Mutex::new(Some(provider)),
                monitor,
                stop: Mutex::new(Some(stop)),
                protocol: resolved.protocol,
                endpoint,
                interval: resolved.interval,
                timeout: resolved.timeout,
                _instruments: (up, changes),
            }),
        };
        Ok((handle, consumer))
    }

    /// [`build`](Self::build)s the exporter and spawns its consumer on the
    /// current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`OtlpError::NoRuntime`] outside a Tokio runtime, otherwise as
    /// [`build`](Self::build).
    pub fn install(self) -> Result<OtlpHandle, OtlpError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime)?;
        let (handle, consumer) = self.build()?;
        runtime.spawn(consumer);
        Ok(handle)
    }
}

/// A cheap, cloneable handle on a running OTLP exporter: its settings, its
/// push counts, flush and shutdown. Clones share the exporter; dropping the
/// last one shuts it down (flushing) on a thread of its own.
#[derive(Clone)]
pub struct OtlpHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    provider: Mutex<Option<SdkMeterProvider>>,
    monitor: Arc<ExportMonitor>,
    /// Dropped or fired to end the consumer task.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    protocol: OtlpProtocol,
    endpoint: String,
    interval: Duration,
    timeout: Duration,
    _instruments: (ObservableGauge<i64>, ObservableCounter<u64>),
}

impl OtlpHandle {
    /// The transport in use.
    pub fn protocol(&self) -> OtlpProtocol {
        self.inner.protocol
    }

    /// The URL pushed to (for HTTP, with `/v1/metrics`), without credentials.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The time between two pushes.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// How long one push may take.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Pushes attempted so far, by outcome.
    pub fn stats(&self) -> ExportStats {
        self.inner.monitor.stats()
    }

    /// A receiver that sees [`stats`](Self::stats) change after every push;
    /// `wait_for` on it to await a push without polling.
    pub fn watch_stats(&self) -> watch::Receiver<ExportStats> {
        self.inner.monitor.watch()
    }

    /// Collects and pushes now, outside the interval, and waits for the push
    /// (at most the timeout, retries included). Runs on Tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`OtlpError::Flush`] if the push failed, [`OtlpError::ShutDown`] after
    /// [`shutdown`](Self::shutdown).
    pub async fn flush(&self) -> Result<(), OtlpError> {
        let Some(provider) = lock(&self.inner.provider).clone() else {
            return Err(OtlpError::ShutDown);
        };
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(OtlpError::Flush(
                self.inner.monitor.scrub(&error.to_string()),
            )),
            Err(_) => Err(OtlpError::Flush("the flush task panicked".to_owned())),
        }
    }

    /// Collects and pushes one last time — every event dispatched before the
    /// call is in that push — then stops the exporter (the SDK gives the push
    /// at most 5 s). Runs the SDK's blocking shutdown on Tokio's blocking pool,
    /// so it is safe on a current-thread runtime. A second call does nothing.
    ///
    /// # Errors
    ///
    /// [`OtlpError::Shutdown`] if the last push failed or timed out; the
    /// exporter is stopped all the same.
    pub async fn shutdown(&self) -> Result<(), OtlpError> {
        let Some(provider) = lock(&self.inner.provider).take() else {
            return Ok(());
        };
        let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Some(stop) = lock(&self.inner.stop).take() {
            let _ = stop.send(());
        }
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(OtlpError::Shutdown(
                self.inner.monitor.scrub(&error.to_string()),
            )),
            Err(_) => Err(OtlpError::Shutdown("the shutdown task panicked".to_owned())),
        }
    }
}

impl fmt::Debug for OtlpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpHandle")
            .field("protocol", &self.inner.protocol)
            .field("endpoint", &self.inner.endpoint)
            .field("interval", &self.inner.interval)
            .field("timeout", &self.inner.timeout)
            .field("stats", &self.stats())
            .field("running", &lock(&self.inner.provider).is_some())
            .finish()
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // The SDK's shutdown blocks until the last push is done; never make the
        // thread dropping the handle (maybe a runtime worker) wait for it.
        let Some(provider) = lock(&self.provider).take() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("mqtt-pulse-otlp-shutdown".to_owned())
            .spawn(move || {
                let _ = provider.shutdown();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a thread to flush the OTLP exporter; its last push is lost");
        }
    }
}

/// The SDK's OTLP exporter for the resolved settings.
fn sdk_exporter(resolved: &settings::Resolved) -> Result<MetricExporter, ExporterBuildError> {
    match resolved.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in &resolved.headers {
                // Checked by `settings::resolve`; a pair that still does not
                // parse is left out rather than panicking.
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    axum::http::HeaderValue::from_str(value),
                ) {
                    headers.insert(name, value);
                }
            }
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(settings::grpc_target(&resolved.endpoint))
                .with_timeout(resolved.timeout)
                .with_metadata(MetadataMap::from_headers(headers))
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            // The SDK percent-decodes header values given in code; escape `%`
            // so the value sent is the value given.
            let headers: HashMap<String, String> = resolved
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.replace('%', "%25")))
                .collect();
            MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(resolved.endpoint.as_str())
                .with_timeout(resolved.timeout)
                .with_headers(headers)
                .build()
        }
    }
}

/// Raises the SDK's default cardinality limit (2,000) to the client count.
fn cardinality_view(
    max_clients: usize,
) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    move |instrument| {
        let limit = match instrument.name() {
            STATUS_CHANGES_METRIC => max_clients * STATUS_COUNT,
            UP_METRIC | PING_RTT_METRIC => max_clients,
            _ => return None,
        };
        Stream::builder().with_cardinality_limit(limit).build().ok()
    }
}

fn checked_bounds(bounds: &[f64]) -> Result<Vec<f64>, OtlpError> {
    if bounds.is_empty() {
        return Err(OtlpError::InvalidBuckets("no bounds given"));
    }
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err(OtlpError::InvalidBuckets("a bound is NaN or infinite"));
    }
    if bounds.iter().any(|&b| b < 0.0) {
        return Err(OtlpError::InvalidBuckets("a bound is negative"));
    }
    if !bounds.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(OtlpError::InvalidBuckets(
            "the bounds are not strictly increasing",
        ));
    }
    Ok(bounds.to_vec())
}

/// An endpoint as typed, for `Debug`: without user info or query.
fn redact_text(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(url) => settings::redacted(&url),
        Err(_) => "<not a URL>".to_owned(),
    }
}

// The handle's locks guard an Option each; a poisoned one is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_buckets_are_rejected_with_the_reason() {
        for (bounds, reason) in [
            (&[][..], "no bounds given"),
            (&[0.1, f64::INFINITY][..], "a bound is NaN or infinite"),
            (&[-1.0, 1.0][..], "a bound is negative"),
            (&[0.2, 0.1][..], "the bounds are not strictly increasing"),
        ] {
            match checked_bounds(bounds) {
                Err(OtlpError::InvalidBuckets(got)) => assert_eq!(got, reason, "{bounds:?}"),
                other => panic!("{bounds:?}: {other:?}"),
            }
        }
        assert_eq!(
            checked_bounds(&DEFAULT_RTT_BUCKETS).unwrap(),
            DEFAULT_RTT_BUCKETS
        );
    }

    #[test]
    fn the_builder_debug_shows_header_names_but_not_values_or_credentials() {
        let events = Events::new();
        let builder = OtlpBuilder::new(&events)
            .with_endpoint("http://user:hunter2@collector:4318/?key=hunter2")
            .with_header("x-api-key", "hunter2");
        let debug = format!("{builder:?}");
        assert!(debug.contains("x-api-key"), "{debug}");
        assert!(debug.contains("http://collector:4318/"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn grpc_outside_a_runtime_says_what_to_do() {
        let events = Events::new();
        let error = OtlpBuilder::new(&events)
            .with_endpoint("http://127.0.0.1:4317")
            .with_protocol(OtlpProtocol::Grpc)
            .build()
            .err()
            .unwrap();
        assert!(matches!(error, OtlpError::NoRuntime), "{error}");
        assert_eq!(
            OtlpBuilder::new(&events)
                .install()
                .err()
                .unwrap()
                .to_string(),
            OtlpError::NoRuntime.to_string()
        );
    }

    #[test]
    fn max_clients_out_of_range_is_refused() {
        let events = Events::new();
        for clients in [0, MAX_MAX_CLIENTS + 1] {
            let error = OtlpBuilder::new(&events)
                .with_max_clients(clients)
                .build()
                .err()
                .unwrap();
            assert!(
                matches!(error, OtlpError::MaxClients(n) if n == clients),
                "{error}"
            );
        }
    }
}
