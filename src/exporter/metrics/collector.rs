//! The exporter's state, shared by the handle, the collector on the registry
//! and the consumer task: the subscription, the per-client series, and what
//! a `gather()` of the registry sees.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::sync::oneshot;

use super::family::Family;
use super::scrape_stats::ScrapeStats;
use super::series::SeriesTable;
use super::snapshot::{BuildInfo, FleetSnapshot, Layout};
use crate::events::{ClientId, EventKind, Events, Message, Subscription};
use crate::exporter::consume::{self, Consumer, Inbox};
use crate::sync::lock;

/// The exporter itself, shared by the handle, the collector on the registry
/// and the consumer task.
pub(super) struct ExporterState {
    pub(super) events: Events,
    pub(super) layout: Layout,
    /// Lock order: `inbox` before `series`. Folded into the inbox: the
    /// subscription's drop count when the series were last reconciled.
    inbox: Mutex<Inbox<u64>>,
    pub(super) series: Mutex<SeriesTable>,
    render_size_hint: AtomicUsize,
    #[cfg(feature = "native-histograms")]
    protobuf_size_hint: AtomicUsize,
    pub(super) scrape_stats: OnceLock<Option<ScrapeStats>>,
    /// Dropped with the last handle or collector, which ends the consumer.
    _stop: oneshot::Sender<()>,
}

impl ExporterState {
    /// The state of an exporter reading `subscription`, and its consumer
    /// task, which ends when the state is dropped.
    pub(super) fn start(
        events: Events,
        subscription: Subscription,
        bounds: Arc<[f64]>,
        build_info: BuildInfo,
        protobuf_classic_buckets: bool,
        native_schema: i32,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (stop, stopped) = oneshot::channel();
        let mut layout = Layout::new(Arc::clone(&bounds), build_info);
        layout.protobuf_classic_buckets = protobuf_classic_buckets;
        layout.native_schema = native_schema;
        let state = Arc::new(Self {
            layout,
            series: Mutex::new(SeriesTable::new(bounds)),
            inbox: Mutex::new(Inbox::new(subscription, 0)),
            events,
            render_size_hint: AtomicUsize::new(0),
            #[cfg(feature = "native-histograms")]
            protobuf_size_hint: AtomicUsize::new(0),
            scrape_stats: OnceLock::new(),
            _stop: stop,
        });
        let consumer = consume::consume(Arc::downgrade(&state), stopped);
        (state, consumer)
    }

    /// Applies every queued event.
    pub(super) fn catch_up(&self) {
        let mut inbox = lock(&self.inbox);
        self.apply_batch(&mut inbox, None, usize::MAX);
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

    /// The present; with the native buckets only if `native` (the protobuf
    /// exposition's), so the text render copies nothing it does not write.
    pub(super) fn snapshot(&self, native: bool) -> FleetSnapshot {
        let clients = self.events.clients();
        let failures = self.events.failures();
        let dropped_publishes = self.events.dropped_publishes();
        let tls_cert_expiries = self.events.tls_cert_expiries();
        let round_trips = self.events.round_trips();
        let kinds = EventKind::ALL.map(|kind| (kind, self.events.stats(kind)));
        let mut series = lock(&self.series);
        if series.has_paths() {
            let running: std::collections::HashSet<(&ClientId, &str)> = round_trips
                .iter()
                .filter_map(|counts| Some((&counts.client_id, counts.path.as_deref()?)))
                .collect();
            series.retain_paths(|from, name| running.contains(&(from, name)));
        }
        FleetSnapshot::copying(clients, &series, failures, kinds, native)
            .with_dropped_publishes(dropped_publishes)
            .with_tls_cert_expiries(tls_cert_expiries)
            .with_paths(&round_trips, &series, native)
            .with_round_trips(round_trips)
    }

    pub(super) fn size_hint(&self) -> usize {
        let last = self.render_size_hint.load(Ordering::Relaxed);
        last + last / 16
    }

    pub(super) fn remember_size(&self, len: usize) {
        self.render_size_hint.store(len, Ordering::Relaxed);
    }

    #[cfg(feature = "native-histograms")]
    pub(super) fn protobuf_size_hint(&self) -> usize {
        let last = self.protobuf_size_hint.load(Ordering::Relaxed);
        last + last / 16
    }

    #[cfg(feature = "native-histograms")]
    pub(super) fn remember_protobuf_size(&self, len: usize) {
        self.protobuf_size_hint.store(len, Ordering::Relaxed);
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

impl Consumer for ExporterState {
    type Folded = u64;

    fn inbox(&self) -> &Mutex<Inbox<u64>> {
        &self.inbox
    }

    /// Then, if the queue lost events since the last batch, forgets the
    /// clients the hub no longer knows.
    fn apply_batch(&self, inbox: &mut Inbox<u64>, first: Option<Message>, limit: usize) -> usize {
        let applied = {
            let mut series = lock(&self.series);
            inbox.drain(first, limit, |_, message| series.apply(message))
        };
        let dropped = inbox.dropped();
        if dropped != inbox.folded {
            inbox.folded = dropped;
            self.forget_absent_clients();
        }
        applied
    }
}

thread_local! {
    /// The exporter (its `ExporterState::id`) whose collector yields nothing during
    /// this thread's `gather`, because the handle writes those families itself.
    /// Per thread and per exporter, so gathers elsewhere are unaffected.
    static MUTED_EXPORTER: Cell<usize> = const { Cell::new(0) };
}

/// While alive, this thread's `gather` skips the exporter's own collector.
pub(super) struct MuteOwnCollector;

impl MuteOwnCollector {
    pub(super) fn new(state: &ExporterState) -> Self {
        MUTED_EXPORTER.set(state.id());
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
pub(super) struct HubCollector {
    state: Arc<ExporterState>,
    descs: Vec<Desc>,
}

impl HubCollector {
    pub(super) fn new(state: &Arc<ExporterState>) -> Self {
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
            state: Arc::clone(state),
            descs,
        }
    }
}

impl Collector for HubCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if MUTED_EXPORTER.get() == self.state.id() {
            return Vec::new();
        }
        self.state.catch_up();
        let snapshot = self.state.snapshot(false);
        Family::ALL
            .iter()
            .filter_map(|&family| snapshot.to_proto(family, &self.state.layout))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClientId, Event, Status};
    use crate::exporter::metrics::MetricsBuilder;

    #[test]
    fn a_terminated_lost_to_a_full_queue_still_removes_the_clients_series() {
        let events = Events::new();
        let (handle, _consumer) = MetricsBuilder::new(&events)
            .with_process_metrics(false)
            .with_subscription_capacity(2)
            .build()
            .unwrap();
        let (gone, kept) = (ClientId::from("gone"), ClientId::from("kept"));
        events.dispatch(&kept, Event::Status(Status::Up));
        events.dispatch(&gone, Event::Status(Status::Up));
        events.dispatch(&gone, Event::Status(Status::Terminated)); // queue full: dropped
        handle.render();
        let series = lock(&handle.state().series);
        assert!(series.get("gone").is_none());
        assert!(series.get("kept").is_some());
    }

    #[test]
    fn render_leaves_the_collector_unmuted_for_later_gathers() {
        let events = Events::new();
        let (handle, _consumer) = MetricsBuilder::new(&events)
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
}
