//! Building the Prometheus exporter: the builder's settings, their checks,
//! and the registrations on the caller's registry (undone on error).

use std::future::Future;
use std::sync::Arc;

use prometheus::Registry;

use super::collector::{ExporterState, HubCollector};
use super::family::Family;
use super::handle::MetricsHandle;
use super::native;
use super::snapshot::BuildInfo;
use crate::events::Events;
use crate::exporter::consume;
use crate::exporter::{DEFAULT_RTT_BUCKETS, DEFAULT_SUBSCRIPTION_CAPACITY};

const BUILD_INFO: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    // build.rs always sets both (from MQTT_PULSE_REVISION or git, and rustc),
    // to "unknown" when it cannot tell; tests/exporter.rs checks the revision
    // against git. `option_env!` only keeps the library compiling where a
    // build system does not run build.rs.
    revision: match option_env!("MQTT_PULSE_REVISION") {
        Some(revision) => revision,
        None => "unknown",
    },
    rustversion: match option_env!("MQTT_PULSE_RUSTC_VERSION") {
        Some(version) => version,
        None => "unknown",
    },
};

/// Why the exporter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The histogram buckets given to [`MetricsBuilder::with_buckets`] are unusable.
    #[error(
        "invalid round-trip histogram buckets: {0}; give 1 to 64 finite, positive upper \
         bounds in seconds, strictly increasing, without +Inf (it is always added)"
    )]
    InvalidBuckets(&'static str),
    /// The schema given to [`MetricsBuilder::with_native_schema`] is outside
    /// [`MIN_NATIVE_SCHEMA`](super::MIN_NATIVE_SCHEMA) to
    /// [`MAX_NATIVE_SCHEMA`](super::MAX_NATIVE_SCHEMA).
    #[error("invalid native histogram schema {schema}: {problem}; give -4 to 3")]
    InvalidNativeSchema {
        /// The schema given.
        schema: i32,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The registry already holds metrics with the names the exporter needs.
    #[error(
        "cannot register the {what} on this registry, it already has metrics of the same \
         names; give each exporter its own registry, and leave process metrics off \
         (with_process_metrics(false), the default) if the registry already has them"
    )]
    Register {
        /// Which metrics could not be registered.
        what: &'static str,
        /// The registry's complaint.
        #[source]
        source: prometheus::Error,
    },
    /// [`MetricsBuilder::install`] was called outside a Tokio runtime.
    #[error(
        "no Tokio runtime is running; call install() from within one, or call build() \
         and run the returned future yourself"
    )]
    NoRuntime,
}

/// Builds the Prometheus exporter of an events hub.
///
/// [`build`](Self::build) returns a handle and the future that consumes the
/// hub's events, for the caller to spawn; [`install`](Self::install) spawns it
/// on the current Tokio runtime.
#[must_use = "a builder does nothing until build() or install() is called"]
#[derive(Debug)]
pub struct MetricsBuilder {
    events: Events,
    registry: Option<Registry>,
    process_metrics: bool,
    buckets: Vec<f64>,
    subscription_capacity: usize,
    protobuf_classic_buckets: bool,
    native_schema: Option<i32>,
}

impl MetricsBuilder {
    /// A builder for an exporter of `events`, the hub it will subscribe to.
    pub fn new(events: &Events) -> Self {
        Self {
            events: events.clone(),
            registry: None,
            process_metrics: false,
            buckets: DEFAULT_RTT_BUCKETS.to_vec(),
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            protobuf_classic_buckets: false,
            native_schema: None,
        }
    }

    /// The registry to register the exporter's collector on; the handle renders
    /// everything on it, so the caller's own metrics appear on the same page.
    /// A registry takes one exporter.
    ///
    /// Defaults to a new, empty registry (never the global default one).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether to register the standard `process_*` metrics (CPU, memory, open
    /// file descriptors…) of this process on the registry. A service that
    /// registers its own process collector leaves it off; the `mqtt-pulse`
    /// daemon turns it on. Only Linux has them, and only with the
    /// `process-metrics` feature (on by default); elsewhere this is a no-op.
    ///
    /// Defaults to `false`.
    pub fn with_process_metrics(mut self, enabled: bool) -> Self {
        self.process_metrics = enabled;
        self
    }

    /// The upper bounds, in seconds, of the classic buckets of the
    /// round-trip histograms (`mqtt_client_ping_rtt_seconds`,
    /// `mqtt_client_roundtrip_seconds`, `mqtt_path_latency_seconds`): 1 to
    /// [`MAX_RTT_BUCKETS`](crate::exporter::MAX_RTT_BUCKETS), finite,
    /// positive, strictly increasing; the `+Inf` bucket is always added.
    /// Checked by [`build`](Self::build). Each bound is a series per client in
    /// the text exposition. Unless [`with_native_schema`](Self::with_native_schema)
    /// sets it, the resolution of the protobuf exposition's native histograms
    /// follows them (the coarsest schema no wider than their narrowest step).
    ///
    /// Defaults to [`DEFAULT_RTT_BUCKETS`].
    pub fn with_buckets(mut self, bounds: &[f64]) -> Self {
        self.buckets = bounds.to_vec();
        self
    }

    /// Whether the round-trip histograms of the protobuf exposition (what a
    /// Prometheus with native histograms asks for) carry their classic
    /// buckets beside the native ones. Off, each is one native histogram:
    /// Prometheus 2.x with `--enable-feature=native-histograms` ingests only
    /// that anyway, and decoding 16 unused buckets per series per scrape
    /// costs it memory (BENCHMARKS.md, Cost to Prometheus). Turn it on for a
    /// Prometheus told to keep both (`scrape_classic_histograms`, 2.45 and
    /// later). The text exposition always has the classic buckets.
    ///
    /// Defaults to `false`.
    pub fn with_protobuf_classic_buckets(mut self, enabled: bool) -> Self {
        self.protobuf_classic_buckets = enabled;
        self
    }

    /// The schema of the native histograms of the protobuf exposition, from
    /// [`MIN_NATIVE_SCHEMA`](super::MIN_NATIVE_SCHEMA) (−4: a bucket spans a
    /// factor of 2^16) to [`MAX_NATIVE_SCHEMA`](super::MAX_NATIVE_SCHEMA)
    /// (3: a factor of 2^(1/8), about 9%); a bucket of schema s spans a
    /// factor of 2^(2^−s) (0: 2; 1: 1.41; 2: 1.19). Checked by
    /// [`build`](Self::build). A finer schema resolves round trips more
    /// closely and costs the Prometheus that stores them more: each bucket is
    /// kept with each sample (BENCHMARKS.md, Cost to Prometheus).
    ///
    /// Defaults to the coarsest schema whose buckets are no wider than the
    /// narrowest step between two consecutive classic bounds
    /// ([`with_buckets`](Self::with_buckets)), so the native histogram
    /// resolves whatever the classic one does: 0 for [`DEFAULT_RTT_BUCKETS`]
    /// (steps of 2 and 2.5), at most 3.
    pub fn with_native_schema(mut self, schema: i32) -> Self {
        self.native_schema = Some(schema);
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

    /// Subscribes to the hub, registers the collector (and the process
    /// metrics) on the registry, and returns the handle and the consumer
    /// future. Run the future (`tokio::spawn`) for as long as the exporter is
    /// used: it keeps the subscription's queue short between scrapes. It
    /// completes once the handle, its clones and the registry are all dropped.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidBuckets`] if the buckets are unusable, and
    /// [`BuildError::Register`] if the registry already has metrics of the same
    /// names (another exporter, or process metrics already registered). On
    /// error nothing stays registered.
    pub fn build(
        self,
    ) -> Result<(MetricsHandle, impl Future<Output = ()> + Send + 'static), BuildError> {
        let bounds = checked_bounds(&self.buckets)?;
        let native_schema = match self.native_schema {
            Some(schema) => match native::schema_problem(schema) {
                Some(problem) => return Err(BuildError::InvalidNativeSchema { schema, problem }),
                None => schema,
            },
            None => native::schema_for(&bounds),
        };
        let registry = self.registry.unwrap_or_default();
        let subscription = consume::subscribe_to_all(&self.events, self.subscription_capacity);
        let (state, consumer) = ExporterState::start(
            self.events,
            subscription,
            bounds,
            BUILD_INFO,
            self.protobuf_classic_buckets,
            native_schema,
        );

        let process_metrics = self.process_metrics && register_process_metrics(&registry)?;
        if let Err(source) = registry.register(Box::new(HubCollector::new(&state))) {
            if process_metrics {
                unregister_process_metrics(&registry);
            }
            return Err(BuildError::Register {
                what: "mqtt-pulse metrics",
                source,
            });
        }
        let fast_text = registry_is_plain(&registry);
        Ok((MetricsHandle::new(state, registry, fast_text), consumer))
    }

    /// [`build`](Self::build)s the exporter and spawns its consumer on the
    /// current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoRuntime`] outside a Tokio runtime, otherwise as
    /// [`build`](Self::build).
    pub fn install(self) -> Result<MetricsHandle, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (handle, consumer) = self.build()?;
        runtime.spawn(consumer);
        Ok(handle)
    }
}

fn checked_bounds(bounds: &[f64]) -> Result<Arc<[f64]>, BuildError> {
    match consume::bucket_problem(bounds) {
        Some(problem) => Err(BuildError::InvalidBuckets(problem)),
        None => Ok(Arc::from(bounds)),
    }
}

/// Registers the process collector; returns whether it was registered.
#[cfg(all(target_os = "linux", feature = "process-metrics"))]
fn register_process_metrics(registry: &Registry) -> Result<bool, BuildError> {
    use prometheus::process_collector::ProcessCollector;
    registry
        .register(Box::new(ProcessCollector::for_self()))
        .map_err(|source| BuildError::Register {
            what: "process metrics",
            source,
        })?;
    Ok(true)
}

#[cfg(all(target_os = "linux", feature = "process-metrics"))]
fn unregister_process_metrics(registry: &Registry) {
    use prometheus::process_collector::ProcessCollector;
    // Collectors are matched by their descriptors, which a fresh one shares.
    let _ = registry.unregister(Box::new(ProcessCollector::for_self()));
}

#[cfg(not(all(target_os = "linux", feature = "process-metrics")))]
fn register_process_metrics(_registry: &Registry) -> Result<bool, BuildError> {
    Ok(false)
}

#[cfg(not(all(target_os = "linux", feature = "process-metrics")))]
fn unregister_process_metrics(_registry: &Registry) {}

/// Whether the registry exposes our families as we write them: no name prefix
/// and no common labels (see `Registry::new_custom`), which only its `gather`
/// applies.
fn registry_is_plain(registry: &Registry) -> bool {
    registry.gather().iter().any(|family| {
        family.name() == Family::BuildInfo.name()
            && family
                .get_metric()
                .iter()
                .all(|metric| metric.get_label().len() == Family::BuildInfo.label_names().len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_buckets_are_refused_with_the_reason() {
        match checked_bounds(&[0.2, 0.1]) {
            Err(BuildError::InvalidBuckets(got)) => {
                assert_eq!(got, "the bounds are not strictly increasing");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            &*checked_bounds(&DEFAULT_RTT_BUCKETS).unwrap(),
            DEFAULT_RTT_BUCKETS
        );
    }
}
