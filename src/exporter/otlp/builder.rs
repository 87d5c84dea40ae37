//! Building the OTLP exporter: the settings given in code, their checks, and
//! the steps that start it — settings resolved against the environment, the
//! SDK's exporter wrapped in the push monitor, the subscription, the meter
//! provider and the instruments. On error nothing keeps running and nothing
//! stays registered.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::oneshot;

use super::handle::OtlpHandle;
use super::monitor::{CountingExporter, ExportMonitor};
use super::settings::{self, Requested, Resolved};
use super::{OtlpError, OtlpProtocol, resource, sdk};
use crate::events::Events;
use crate::exporter::consume;
use crate::exporter::{DEFAULT_RTT_BUCKETS, DEFAULT_SUBSCRIPTION_CAPACITY};

/// Default number of clients each instrument keeps series for; more go to the
/// SDK's overflow series (`otel.metric.overflow=true`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default shortest time between two log lines about failed pushes.
pub const DEFAULT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The largest accepted [`OtlpBuilder::with_max_clients`]: the SDK reserves
/// its tables up front, about 40 bytes per client and instrument.
pub const MAX_CLIENTS_CEILING: usize = 1_000_000;

/// Builds the OTLP exporter of an events hub.
///
/// [`build`](Self::build) returns a handle and the future that consumes the
/// hub's events, for the caller to spawn; [`install`](Self::install) spawns
/// it on the current Tokio runtime. Unset settings come from the `OTEL_*`
/// environment variables, then the OpenTelemetry defaults (see the module
/// docs). `Debug` shows header names only.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use mqtt_pulse::events::Events;
/// use mqtt_pulse::exporter::otlp::{OtlpBuilder, OtlpProtocol};
///
/// # async fn run() -> Result<(), mqtt_pulse::exporter::otlp::OtlpError> {
/// let events = Events::new();
/// let registry = prometheus::Registry::new();
/// let otlp = OtlpBuilder::new(&events)
///     .with_endpoint("http://collector:4318")
///     .with_protocol(OtlpProtocol::HttpProtobuf)
///     .with_interval(Duration::from_secs(10))
///     .with_header("x-api-key", "…")
///     .with_prometheus_registry(registry.clone())
///     .install()?;
/// // … connections report to `events` …
/// otlp.shutdown().await?; // pushes the last batch
/// # Ok(())
/// # }
/// ```
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
    /// 1 to 64, finite, positive, strictly increasing. Checked by
    /// [`build`](Self::build).
    ///
    /// Defaults to [`DEFAULT_RTT_BUCKETS`], the Prometheus exporter's.
    pub fn with_buckets(mut self, bounds: &[f64]) -> Self {
        self.buckets = bounds.to_vec();
        self
    }

    /// The Prometheus registry to register [`EXPORT_FAILURES_METRIC`](super::EXPORT_FAILURES_METRIC) on,
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
    /// Defaults to [`DEFAULT_MAX_CLIENTS`]; at most [`MAX_CLIENTS_CEILING`].
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
        if !(1..=MAX_CLIENTS_CEILING).contains(&self.max_clients) {
            return Err(OtlpError::MaxClients(self.max_clients));
        }
        let resolved = self.resolve()?;
        let endpoint = settings::redacted(&resolved.endpoint);
        let monitor = Arc::new(ExportMonitor::new(
            endpoint.clone(),
            resolved.secrets.clone(),
            self.failure_log_interval,
        ));
        let exporter = CountingExporter {
            inner: sdk::otlp_exporter(&resolved)
                .map_err(|error| OtlpError::Exporter(monitor.scrub(&error.to_string())))?,
            monitor: Arc::clone(&monitor),
        };
        if let Some(registry) = &self.registry {
            registry
                .register(Box::new(monitor.failures_counter()))
                .map_err(OtlpError::Register)?;
        }

        // Subscribe before the instruments exist: nothing dispatched from here
        // on is missed.
        let subscription = consume::subscribe_to_all(&self.events, self.subscription_capacity);
        let provider = sdk::meter_provider(exporter, &resolved, self.max_clients);
        let (recorder, instruments) =
            sdk::instruments(&provider, self.events, subscription, bounds);
        let (stop, stopped) = oneshot::channel();
        let consumer = consume::consume(Arc::downgrade(&recorder), stopped);
        let handle = OtlpHandle::new(provider, monitor, stop, &resolved, endpoint, instruments);
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

    /// The settings merged with the environment. Warns about every header
    /// the SDK will take from `OTEL_EXPORTER_OTLP_HEADERS` instead.
    fn resolve(&self) -> Result<Resolved, OtlpError> {
        let instance_id = resource::random_instance_id();
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
        Ok(resolved)
    }
}

fn checked_bounds(bounds: &[f64]) -> Result<Vec<f64>, OtlpError> {
    match consume::bucket_problem(bounds) {
        Some(problem) => Err(OtlpError::InvalidBuckets(problem)),
        None => Ok(bounds.to_vec()),
    }
}

/// An endpoint as typed, for `Debug`: without user info or query.
fn redact_text(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(url) => settings::redacted(&url),
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_buckets_are_refused_with_the_reason() {
        let error = checked_bounds(&[-1.0, 1.0]).unwrap_err();
        assert!(
            matches!(error, OtlpError::InvalidBuckets("a bound is negative")),
            "{error}"
        );
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
        for clients in [0, MAX_CLIENTS_CEILING + 1] {
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
