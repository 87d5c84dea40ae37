//! The Prometheus exporter: a collector, registered on a caller-supplied
//! [`prometheus::Registry`], that exposes the health of every client the events
//! hub knows.
//!
//! It owns one wildcard subscription (status and ping-response events of every
//! client) and the per-client series built from it. Its only input is the hub,
//! so it treats connections it did not create exactly like its own. It must
//! never dispatch events, never block the hub (it reads its queue on its own
//! task, or on the scraper's thread), and never create or drive connections.
//!
//! # Metrics
//!
//! | name | type | labels | from |
//! |---|---|---|---|
//! | `mqtt_client_up` | gauge 1/0 | client_id, broker | the hub's present status |
//! | `mqtt_client_ping_rtt_seconds` | histogram | client_id, broker | ping-response events |
//! | `mqtt_client_status_changes_total` | counter | client_id, broker, status | status events |
//! | `mqtt_client_last_status_change_timestamp_seconds` | gauge | client_id, broker | the hub's present status |
//! | `mqtt_client_connect_failures_total` | counter | client_id, broker, reason | [`Events::failures`] |
//! | `mqtt_pulse_events_dispatched_total` | counter | type | [`Events::stats`] |
//! | `mqtt_pulse_events_dropped_total` | counter | type | [`Events::stats`] |
//! | `mqtt_pulse_build_info` | gauge 1 | version, revision, rustversion | the build |
//! | `process_*` | process metrics | | `/proc` (Linux), optional |
//! | `promhttp_metric_handler_requests_total` | counter | code | `/metrics` answers, once [`http::router`](crate::http::router) serves the handle |
//! | `promhttp_metric_handler_requests_in_flight` | gauge | | `/metrics` requests being answered, likewise |
//!
//! # Rules
//!
//! * **Which clients.** Per-client series exist exactly for the clients the hub
//!   knows ([`Events::clients`]): a client appears when it is announced or its
//!   first status is dispatched — a client announced but never connected reads
//!   `mqtt_client_up 0` — and *all* its series disappear when its status becomes
//!   [`Status::Terminated`](crate::events::Status::Terminated). A client that
//!   starts again starts its counters from zero.
//! * **Counters start at zero.** Every known client has its histogram and its
//!   `status="down"|"terminating"|"up"` counters from the start, so `rate()` and
//!   `increase()` see the first change. `terminated` is never exposed: a
//!   terminated client has no series.
//! * **Fresh reads.** [`PrometheusHandle::render`] (and a `gather()` of the
//!   registry) first applies every queued event, so it reflects every event
//!   dispatched before the call. The consumer task only keeps the queue short
//!   between scrapes.
//! * **Since when.** Histograms and status counts cover the events dispatched
//!   since the exporter was built; `up` and the timestamp are the hub's present.
//! * **Losses are visible.** If the exporter's queue overflows, the hub counts
//!   the dropped events in `mqtt_pulse_events_dropped_total`, and the exporter
//!   re-checks which clients still exist so no forgotten client lingers.
//!
//! # Rendering cost
//!
//! Ten thousand clients make about a quarter of a million samples. The
//! `prometheus` crate's own vectors and `TextEncoder` need ~50 ms for that, so
//! [`PrometheusHandle::render`] writes this exporter's families straight from
//! its compact per-client state and uses the `TextEncoder` only for the other
//! collectors on the registry. A plain `registry.gather()` still returns all of
//! them as protos, with the same content.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
//! use mqtt_pulse::exporter::prometheus::PrometheusBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = Events::new();
//! let registry = prometheus::Registry::new();
//! let (handle, consumer) = PrometheusBuilder::new(&events)
//!     .with_registry(registry.clone())
//!     .with_process_metrics(false)
//!     .build()?;
//! // In a service: `tokio::spawn(consumer);` (or call `install()` instead of `build()`).
//! # drop(consumer);
//!
//! let plant = ClientId::from("plant-a");
//! events.announce(&plant, ClientInfo::new("broker.example:1883"));
//! events.dispatch(&plant, Event::Status(Status::Up));
//! events.dispatch(&plant, Event::PingResponse(Duration::from_micros(180)));
//!
//! let text = handle.render();
//! assert!(text.contains(r#"mqtt_client_up{client_id="plant-a",broker="broker.example:1883"} 1"#));
//! assert!(text.contains(
//!     r#"mqtt_client_ping_rtt_seconds_bucket{client_id="plant-a",broker="broker.example:1883",le="0.00025"} 1"#
//! ));
//!
//! events.dispatch(&plant, Event::Status(Status::Terminated));
//! assert!(!handle.render().contains("plant-a"));
//! # Ok(())
//! # }
//! ```

mod series;
mod snapshot;
mod text;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::oneshot;

use self::series::SeriesTable;
use self::snapshot::{BuildInfo, Family, Layout, Snapshot};
use crate::events::{ClientFilter, ClientState, EventKind, Events, Message, Subscription};

/// Upper bounds, in seconds, of the default `mqtt_client_ping_rtt_seconds`
/// buckets: 0.25 ms to 10 s in 1-2.5-5 steps. Loopback and LAN round trips
/// (0.1–1 ms) land in the first buckets, a satellite link (0.6–2 s) still
/// below the top one.
pub const DEFAULT_RTT_BUCKETS: [f64; 15] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Default capacity of the exporter's subscription queue: 65,536 events, about
/// 6.5 s of 10,000 clients pinging every second, or 64 s at a 1 s keep-alive
/// for 1,000. Only a consumer task stalled that long loses events (and they
/// are counted). Each queued event takes about 64 bytes.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Events the consumer task applies under one lock before it yields, so a
/// burst cannot monopolise a runtime worker.
const CONSUMER_BATCH: usize = 1024;

const BUILD_INFO: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    // Set by the release build (there is no build script yet); plain `cargo
    // build` leaves them unset, hence "unknown".
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
    /// The histogram buckets given to [`PrometheusBuilder::with_buckets`] are unusable.
    #[error(
        "invalid ping RTT histogram buckets: {0}; give finite, non-negative upper bounds \
         in seconds, strictly increasing, without +Inf (it is always added)"
    )]
    InvalidBuckets(&'static str),
    /// The registry already holds metrics with the names the exporter needs.
    #[error(
        "cannot register the {what} on this registry, it already has metrics of the same \
         names; give each exporter its own registry, and turn process metrics off \
         (with_process_metrics(false)) if the registry already has them"
    )]
    Register {
        /// Which metrics could not be registered.
        what: &'static str,
        /// The registry's complaint.
        #[source]
        source: prometheus::Error,
    },
    /// [`PrometheusBuilder::install`] was called outside a Tokio runtime.
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
pub struct PrometheusBuilder {
    events: Events,
    registry: Option<Registry>,
    process_metrics: bool,
    buckets: Vec<f64>,
    subscription_capacity: usize,
}

impl PrometheusBuilder {
    /// A builder for an exporter of `events`, the hub it will subscribe to.
    pub fn new(events: &Events) -> Self {
        Self {
            events: events.clone(),
            registry: None,
            process_metrics: true,
            buckets: DEFAULT_RTT_BUCKETS.to_vec(),
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
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
    /// file descriptors…) of this process on the registry. Turn it off if the
    /// registry already has them. Only Linux has them; elsewhere this is a no-op.
    ///
    /// Defaults to `true`.
    pub fn with_process_metrics(mut self, enabled: bool) -> Self {
        self.process_metrics = enabled;
        self
    }

    /// The upper bounds, in seconds, of the `mqtt_client_ping_rtt_seconds`
    /// buckets: finite, non-negative, strictly increasing; the `+Inf` bucket is
    /// always added. Checked by [`build`](Self::build).
    ///
    /// Defaults to [`DEFAULT_RTT_BUCKETS`].
    pub fn with_buckets(mut self, bounds: &[f64]) -> Self {
        self.buckets = bounds.to_vec();
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
    ) -> Result<(PrometheusHandle, impl Future<Output = ()> + Send + 'static), BuildError> {
        let bounds = checked_bounds(&self.buckets)?;
        let registry = self.registry.unwrap_or_default();

        let mut subscription = self
            .events
            .subscribe_with_capacity(self.subscription_capacity);
        for kind in EventKind::ALL {
            subscription.register(ClientFilter::Any, kind);
        }
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            layout: Layout::new(Arc::clone(&bounds), BUILD_INFO),
            series: Mutex::new(SeriesTable::new(bounds)),
            inbox: Mutex::new(Inbox {
                subscription,
                dropped_seen: 0,
            }),
            events: self.events,
            render_size_hint: AtomicUsize::new(0),
            scrape_stats: OnceLock::new(),
            _stop: stop,
        });

        let process_metrics = self.process_metrics && register_process_metrics(&registry)?;
        if let Err(source) = registry.register(Box::new(HubCollector::new(&shared))) {
            if process_metrics {
                unregister_process_metrics(&registry);
            }
            return Err(BuildError::Register {
                what: "mqtt-pulse metrics",
                source,
            });
        }
        let fast_text = registry_is_plain(&registry);

        let consumer = consume(Arc::downgrade(&shared), stopped);
        let handle = PrometheusHandle {
            shared,
            registry,
            fast_text,
        };
        Ok((handle, consumer))
    }

    /// [`build`](Self::build)s the exporter and spawns its consumer on the
    /// current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoRuntime`] outside a Tokio runtime, otherwise as
    /// [`build`](Self::build).
    pub fn install(self) -> Result<PrometheusHandle, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (handle, consumer) = self.build()?;
        runtime.spawn(consumer);
        Ok(handle)
    }
}

/// A cheap, cloneable handle on a built exporter: renders its registry and
/// tells what it knows of each client.
#[derive(Clone)]
pub struct PrometheusHandle {
    shared: Arc<Shared>,
    registry: Registry,
    /// Whether `render` may write our families itself. False when the registry
    /// rewrites names or labels (a prefix or common labels), which only its
    /// own `gather` knows how to do.
    fast_text: bool,
}

/// One client as the exporter sees it: the hub's present state and the last
/// keep-alive round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientSummary {
    /// The hub's present state of the client.
    pub state: ClientState,
    /// The last ping round-trip time seen since the exporter was built.
    pub last_ping_rtt: Option<Duration>,
}

impl PrometheusHandle {
    /// Everything on the registry in the Prometheus text format, version 0.0.4
    /// ([`prometheus::TEXT_FORMAT`]), families sorted by name. Reflects every
    /// event dispatched before the call.
    ///
    /// CPU-bound for large fleets (about 10 ms for 10,000 clients in a release
    /// build): from async code, call it in `spawn_blocking`.
    pub fn render(&self) -> String {
        self.shared.catch_up();
        let encoder = TextEncoder::new();
        let mut out = String::with_capacity(self.shared.size_hint());
        if !self.fast_text {
            for family in self.registry.gather() {
                encode_other(&encoder, &family, &mut out);
            }
            self.shared.remember_size(out.len());
            return out;
        }

        let snapshot = self.shared.snapshot();
        let others = {
            let _own_collector_muted = MuteOwnCollector::new(&self.shared);
            self.registry.gather()
        };
        let layout = &self.shared.layout;
        let labels = snapshot.client_labels();
        // Both lists are sorted by name: merge them so the page is too.
        let mut own = Family::ALL.into_iter().peekable();
        for family in &others {
            while let Some(next) = own.next_if(|own| own.name() < family.name()) {
                snapshot.write_text(next, layout, &labels, &mut out);
            }
            encode_other(&encoder, family, &mut out);
        }
        for family in own {
            snapshot.write_text(family, layout, &labels, &mut out);
        }
        self.shared.remember_size(out.len());
        out
    }

    /// The registry the exporter's collector is on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every client the hub knows, sorted by client id, with its last ping
    /// round trip. Reflects every event dispatched before the call.
    pub fn clients(&self) -> Vec<ClientSummary> {
        self.shared.catch_up();
        let clients = self.shared.events.clients();
        let series = lock(&self.shared.series);
        clients
            .into_iter()
            .map(|state| ClientSummary {
                last_ping_rtt: series
                    .get(state.client_id.as_str())
                    .and_then(|s| s.last_rtt),
                state,
            })
            .collect()
    }
}

/// The `promhttp_metric_handler_*` families that node_exporter and every Go
/// exporter serve, so the dashboards and alerts written for those read this
/// exporter's `/metrics` answers too.
#[derive(Clone, Debug)]
pub(crate) struct ScrapeStats {
    /// `/metrics` answers by HTTP status code.
    pub(crate) requests: IntCounterVec,
    /// `/metrics` requests being answered now.
    pub(crate) in_flight: IntGauge,
}

impl ScrapeStats {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "promhttp_metric_handler_requests_total",
                "Total number of scrapes by HTTP status code.",
            ),
            &["code"],
        )?;
        // As promhttp does: the codes a scrape usually ends with exist from the start.
        for code in ["200", "500", "503"] {
            requests.with_label_values(&[code]);
        }
        let in_flight = IntGauge::new(
            "promhttp_metric_handler_requests_in_flight",
            "Current number of scrapes being served.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        if let Err(error) = registry.register(Box::new(in_flight.clone())) {
            let _ = registry.unregister(Box::new(requests));
            return Err(error);
        }
        Ok(ScrapeStats {
            requests,
            in_flight,
        })
    }
}

impl PrometheusHandle {
    /// The handler metrics of `/metrics`, registered on this handle's registry
    /// the first time they are asked for (so an embedder who serves the
    /// handle some other way never sees them). `None`, with a warning, when
    /// the registry already has metrics of those names.
    pub(crate) fn scrape_stats(&self) -> Option<&ScrapeStats> {
        self.shared
            .scrape_stats
            .get_or_init(|| match ScrapeStats::register(&self.registry) {
                Ok(stats) => Some(stats),
                Err(error) => {
                    tracing::warn!(%error, "not counting /metrics requests: the registry refused promhttp_metric_handler_*");
                    None
                }
            })
            .as_ref()
    }
}

impl fmt::Debug for PrometheusHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusHandle")
            .field("watched_clients", &lock(&self.shared.series).len())
            .field("fast_text", &self.fast_text)
            .finish_non_exhaustive()
    }
}

fn encode_other(encoder: &TextEncoder, family: &MetricFamily, out: &mut String) {
    // One family at a time, so a malformed family from someone else's collector
    // costs only itself. The encoder checks before it writes anything.
    if let Err(error) = encoder.encode_utf8(std::slice::from_ref(family), out) {
        tracing::warn!(family = family.name(), %error, "skipping a metric family that cannot be encoded");
    }
}

/// State shared by the handle, the collector on the registry and the consumer.
struct Shared {
    events: Events,
    layout: Layout,
    /// Lock order: `inbox` before `series`.
    inbox: Mutex<Inbox>,
    series: Mutex<SeriesTable>,
    render_size_hint: AtomicUsize,
    scrape_stats: OnceLock<Option<ScrapeStats>>,
    /// Dropped with the last handle or collector, which ends the consumer.
    _stop: oneshot::Sender<()>,
}

struct Inbox {
    subscription: Subscription,
    /// The subscription's drop count when the series were last reconciled.
    dropped_seen: u64,
}

impl Shared {
    /// Applies every queued event.
    fn catch_up(&self) {
        let mut inbox = lock(&self.inbox);
        self.apply(&mut inbox, None, usize::MAX);
    }

    /// Applies `first` and up to `limit` more queued events; returns how many.
    fn apply(&self, inbox: &mut Inbox, first: Option<Message>, limit: usize) -> usize {
        let mut applied = 0;
        {
            let mut series = lock(&self.series);
            if let Some(message) = first {
                series.apply(&message);
                applied += 1;
            }
            while applied < limit {
                let Ok(message) = inbox.subscription.try_recv() else {
                    break;
                };
                series.apply(&message);
                applied += 1;
            }
        }
        let dropped = inbox.subscription.stats().dropped;
        if dropped != inbox.dropped_seen {
            inbox.dropped_seen = dropped;
            self.forget_absent_clients();
        }
        applied
    }

    /// After lost events: a `Terminated` may be among them, so keep only the
    /// clients the hub still knows. The hub records a status before queueing
    /// it, so every client whose events we applied is in this list unless it
    /// has been terminated since.
    fn forget_absent_clients(&self) {
        let present = self.events.clients();
        lock(&self.series).retain_present(|id| {
            present
                .binary_search_by(|state| state.client_id.as_str().cmp(id))
                .is_ok()
        });
    }

    fn snapshot(&self) -> Snapshot {
        let clients = self.events.clients();
        let failures = self.events.failures();
        let kinds = EventKind::ALL.map(|kind| (kind, self.events.stats(kind)));
        let series = lock(&self.series);
        Snapshot::new(clients, &series, failures, kinds)
    }

    fn size_hint(&self) -> usize {
        let last = self.render_size_hint.load(Ordering::Relaxed);
        last + last / 16
    }

    fn remember_size(&self, len: usize) {
        self.render_size_hint.store(len, Ordering::Relaxed);
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// Consumes the subscription in batches until the exporter is dropped.
async fn consume(shared: Weak<Shared>, mut stopped: oneshot::Receiver<()>) {
    loop {
        let applied = poll_fn(|cx| {
            if Pin::new(&mut stopped).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let Some(shared) = shared.upgrade() else {
                return Poll::Ready(None);
            };
            let mut inbox = lock(&shared.inbox);
            // Polled under the lock, never awaited under it: a render may drain
            // the queue in between, which only means a spurious wake-up here.
            let next = Pin::new(&mut inbox.subscription).poll_next(cx);
            match next {
                Poll::Ready(Some(first)) => {
                    Poll::Ready(Some(shared.apply(&mut inbox, Some(first), CONSUMER_BATCH)))
                }
                // The hub is gone (it cannot be while `shared` holds it, but
                // an ended stream means there is nothing left to do).
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match applied {
            None => return,
            Some(applied) if applied >= CONSUMER_BATCH => tokio::task::yield_now().await,
            Some(_) => {}
        }
    }
}

thread_local! {
    /// The exporter (its `Shared::id`) whose collector yields nothing during
    /// this thread's `gather`, because the handle writes those families itself.
    /// Per thread and per exporter, so gathers elsewhere are unaffected.
    static MUTED_EXPORTER: Cell<usize> = const { Cell::new(0) };
}

struct MuteOwnCollector;

impl MuteOwnCollector {
    fn new(shared: &Shared) -> Self {
        MUTED_EXPORTER.set(shared.id());
        Self
    }
}

impl Drop for MuteOwnCollector {
    fn drop(&mut self) {
        MUTED_EXPORTER.set(0);
    }
}

/// The exporter as a `prometheus` collector: what a `gather()` of the registry
/// sees.
struct HubCollector {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
}

impl HubCollector {
    fn new(shared: &Arc<Shared>) -> Self {
        let descs = Family::ALL
            .iter()
            .map(|family| {
                Desc::new(
                    family.name().to_owned(),
                    family.help().to_owned(),
                    family.label_names().iter().map(|&l| l.to_owned()).collect(),
                    HashMap::new(),
                )
                .expect("the exporter's metric names, help texts and labels are valid")
            })
            .collect();
        Self {
            shared: Arc::clone(shared),
            descs,
        }
    }
}

impl Collector for HubCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if MUTED_EXPORTER.get() == self.shared.id() {
            return Vec::new();
        }
        self.shared.catch_up();
        let snapshot = self.shared.snapshot();
        Family::ALL
            .iter()
            .filter_map(|&family| snapshot.to_proto(family, &self.shared.layout))
            .collect()
    }
}

fn checked_bounds(bounds: &[f64]) -> Result<Arc<[f64]>, BuildError> {
    if bounds.is_empty() {
        return Err(BuildError::InvalidBuckets("no bounds given"));
    }
    if bounds.iter().any(|b| !b.is_finite()) {
        return Err(BuildError::InvalidBuckets("a bound is NaN or infinite"));
    }
    if bounds.iter().any(|&b| b < 0.0) {
        return Err(BuildError::InvalidBuckets("a bound is negative"));
    }
    if !bounds.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(BuildError::InvalidBuckets(
            "the bounds are not strictly increasing",
        ));
    }
    Ok(Arc::from(bounds))
}

/// Registers the process collector; returns whether it was registered.
#[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
fn unregister_process_metrics(registry: &Registry) {
    use prometheus::process_collector::ProcessCollector;
    // Collectors are matched by their descriptors, which a fresh one shares.
    let _ = registry.unregister(Box::new(ProcessCollector::for_self()));
}

#[cfg(not(target_os = "linux"))]
fn register_process_metrics(_registry: &Registry) -> Result<bool, BuildError> {
    Ok(false)
}

#[cfg(not(target_os = "linux"))]
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

// A panic elsewhere while a lock was held leaves the series consistent (each
// update is a few arithmetic steps on one entry), so poisoning is ignored
// rather than turned into a panic on every later scrape.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_buckets_span_a_quarter_millisecond_to_ten_seconds() {
        let bounds = checked_bounds(&DEFAULT_RTT_BUCKETS).unwrap();
        assert_eq!(bounds.first(), Some(&0.000_25));
        assert_eq!(bounds.last(), Some(&10.0));
    }

    #[test]
    fn unusable_buckets_are_rejected_with_the_reason() {
        for (bounds, reason) in [
            (&[][..], "no bounds given"),
            (&[0.1, f64::INFINITY][..], "a bound is NaN or infinite"),
            (&[f64::NAN][..], "a bound is NaN or infinite"),
            (&[-1.0, 1.0][..], "a bound is negative"),
            (&[0.1, 0.1][..], "the bounds are not strictly increasing"),
            (&[0.2, 0.1][..], "the bounds are not strictly increasing"),
        ] {
            match checked_bounds(bounds) {
                Err(BuildError::InvalidBuckets(got)) => assert_eq!(got, reason, "{bounds:?}"),
                other => panic!("{bounds:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_terminated_lost_to_a_full_queue_still_removes_the_clients_series() {
        use crate::events::{ClientId, Event, Status};
        let events = Events::new();
        let (handle, _consumer) = PrometheusBuilder::new(&events)
            .with_process_metrics(false)
            .with_subscription_capacity(2)
            .build()
            .unwrap();
        let (gone, kept) = (ClientId::from("gone"), ClientId::from("kept"));
        events.dispatch(&kept, Event::Status(Status::Up));
        events.dispatch(&gone, Event::Status(Status::Up));
        events.dispatch(&gone, Event::Status(Status::Terminated)); // queue full: dropped
        handle.render();
        let series = lock(&handle.shared.series);
        assert!(series.get("gone").is_none());
        assert!(series.get("kept").is_some());
    }

    #[test]
    fn render_leaves_the_collector_unmuted_for_later_gathers() {
        let events = Events::new();
        let (handle, _consumer) = PrometheusBuilder::new(&events)
            .with_process_metrics(false)
            .build()
            .unwrap();
        handle.render();
        assert_eq!(MUTED_EXPORTER.get(), 0);
        assert!(
            handle
                .registry()
                .gather()
                .iter()
                .any(|family| family.name() == "mqtt_pulse_build_info")
        );
    }

    #[test]
    fn build_info_falls_back_to_unknown_without_build_variables() {
        assert_eq!(BUILD_INFO.version, env!("CARGO_PKG_VERSION"));
        if option_env!("MQTT_PULSE_REVISION").is_none() {
            assert_eq!(BUILD_INFO.revision, "unknown");
        }
    }
}
