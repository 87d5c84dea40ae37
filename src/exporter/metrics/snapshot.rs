//! One consistent view of everything the exporter exposes, taken once per
//! scrape, and its two encodings: Prometheus text (the handle's fast path) and
//! the `prometheus` crate's `MetricFamily` protos (for anyone who gathers the
//! registry themselves). Both encodings read the same snapshot, so they cannot
//! disagree. It owns the order of series and their label values (the names,
//! help texts and label names are [`Family`]'s); it must never lock, read the
//! hub or touch the registry — the caller assembles the snapshot from those.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily};

use super::family::Family;
#[cfg(feature = "native-histograms")]
use super::native::NativeBuckets;
#[cfg(feature = "native-histograms")]
use super::protobuf;
use super::series::{ClientSeries, PathSeries, SeriesTable};
use super::text;
use crate::events::{
    ClientId, ClientState, EventKind, FailureCount, FailureReason, KindStats, RoundTripCounts,
    RoundTripOutcome,
};
use crate::exporter::consume::COUNTED_STATUSES;

/// What the build-info gauge says about this binary.
#[derive(Clone, Debug)]
pub(super) struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub rustversion: &'static str,
}

/// Everything fixed at build time that encoding needs, rendered once.
#[derive(Debug)]
pub(super) struct Layout {
    /// Histogram upper bounds in seconds, strictly increasing, without `+Inf`.
    pub bounds: Arc<[f64]>,
    /// `le="…"` for each bound, then `le="+Inf"`.
    le_pairs: Box<[String]>,
    /// `status="…"` for each of [`COUNTED_STATUSES`].
    status_pairs: [String; COUNTED_STATUSES.len()],
    /// `outcome="…"` for each of [`RoundTripOutcome::LABELS`].
    outcome_pairs: [String; RoundTripOutcome::LABELS.len()],
    build_info: BuildInfo,
    build_info_pairs: String,
    /// Whether the protobuf exposition's round-trip histograms carry their
    /// classic buckets beside the native ones.
    pub protobuf_classic_buckets: bool,
    /// The schema of the protobuf exposition's native histograms.
    pub native_schema: i32,
}

impl Layout {
    pub fn new(bounds: Arc<[f64]>, build_info: BuildInfo) -> Self {
        let le_pairs = bounds
            .iter()
            .map(|&bound| text::bound_text(bound))
            .chain(std::iter::once("+Inf".to_owned()))
            .map(|bound| pair("le", &bound))
            .collect();
        let status_pairs = COUNTED_STATUSES.map(|status| pair("status", status.as_str()));
        let outcome_pairs = RoundTripOutcome::LABELS.map(|outcome| pair("outcome", outcome));
        let mut build_info_pairs = String::new();
        for (index, (name, value)) in [
            ("version", build_info.version),
            ("revision", build_info.revision),
            ("rustversion", build_info.rustversion),
        ]
        .into_iter()
        .enumerate()
        {
            if index > 0 {
                build_info_pairs.push(',');
            }
            text::push_label_pair(&mut build_info_pairs, name, value);
        }
        let native_schema = super::native::schema_for(&bounds);
        Self {
            bounds,
            le_pairs,
            status_pairs,
            outcome_pairs,
            build_info,
            build_info_pairs,
            protobuf_classic_buckets: false,
            native_schema,
        }
    }
}

fn pair(name: &str, value: &str) -> String {
    let mut out = String::new();
    text::push_label_pair(&mut out, name, value);
    out
}

/// A client the hub knows, with what the exporter saw of it.
#[derive(Clone, Debug)]
pub(super) struct ClientRow {
    pub state: ClientState,
    /// `None` until the exporter sees an event of this client.
    pub series: Option<ClientSeries>,
}

/// One broker-to-broker path: its labels, counts and latency histogram.
#[derive(Debug)]
struct PathRow {
    /// `path="…",from="…",to="…"`, rendered once.
    labels: String,
    counts: RoundTripCounts,
    /// `None` until a message of it was received.
    latency: Option<PathSeries>,
}

impl PathRow {
    fn label_pairs(&self) -> Vec<LabelPair> {
        let counts = &self.counts;
        vec![
            label("path", counts.path.as_deref().unwrap_or_default()),
            label("from", counts.client_id.as_str()),
            label("to", counts.to.as_ref().map_or("", ClientId::as_str)),
        ]
    }

    /// (per-bucket counts, sum, count): zeros until the first message.
    fn histogram(&self, layout: &Layout) -> (Box<[u64]>, f64, u64) {
        match &self.latency {
            Some(series) => (
                series.bucket_counts.clone(),
                series.sum_seconds,
                series.count,
            ),
            None => (vec![0; layout.bounds.len() + 1].into_boxed_slice(), 0.0, 0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct FailureRow {
    /// Index into [`FleetSnapshot::clients`].
    client: usize,
    reason: FailureReason,
    count: u64,
}

/// The present, as of one scrape.
#[derive(Debug)]
pub(super) struct FleetSnapshot {
    /// Sorted by client id.
    pub clients: Vec<ClientRow>,
    /// Sorted by client, then by reason label (the order `gather` sorts into).
    failures: Vec<FailureRow>,
    /// (index into `clients`, count), non-zero counts only, sorted by client.
    dropped_publishes: Vec<(usize, u64)>,
    /// (index into `clients`, Unix seconds), sorted by client.
    tls_cert_expiries: Vec<(usize, f64)>,
    /// (index into `clients`, the counts of its own probe), sorted by client.
    round_trips: Vec<(usize, RoundTripCounts)>,
    /// Every path the hub counts, sorted by name, then publishing client.
    paths: Vec<PathRow>,
    /// Sorted by type label.
    kinds: Vec<(EventKind, KindStats)>,
}

impl FleetSnapshot {
    /// Joins the hub's present (`clients`, sorted by id as `Events::clients`
    /// returns them; `failures`; per-kind stats) with the exporter's series.
    /// Per-client series exist exactly for the clients the hub knows: failure
    /// counts of a client it does not know are left out.
    #[cfg(test)]
    pub fn new(
        clients: Vec<ClientState>,
        series: &SeriesTable,
        failures: Vec<FailureCount>,
        kinds: impl IntoIterator<Item = (EventKind, KindStats)>,
    ) -> Self {
        Self::copying(clients, series, failures, kinds, true)
    }

    /// [`new`](Self::new), copying the native buckets only if `native`.
    pub fn copying(
        clients: Vec<ClientState>,
        series: &SeriesTable,
        failures: Vec<FailureCount>,
        kinds: impl IntoIterator<Item = (EventKind, KindStats)>,
        native: bool,
    ) -> Self {
        debug_assert!(clients.is_sorted_by(|a, b| a.client_id <= b.client_id));
        let clients: Vec<ClientRow> = clients
            .into_iter()
            .map(|state| ClientRow {
                series: series.copy(state.client_id.as_str(), native),
                state,
            })
            .collect();
        let mut failures: Vec<FailureRow> = failures
            .into_iter()
            .filter(|failure| failure.count > 0)
            .filter_map(|failure| {
                let client = clients
                    .binary_search_by(|row| row.state.client_id.cmp(&failure.client_id))
                    .ok()?;
                Some(FailureRow {
                    client,
                    reason: failure.reason,
                    count: failure.count,
                })
            })
            .collect();
        failures.sort_by(|a, b| (a.client, a.reason.as_str()).cmp(&(b.client, b.reason.as_str())));
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|(kind, _)| kind.as_str());
        Self {
            clients,
            failures,
            dropped_publishes: Vec::new(),
            tls_cert_expiries: Vec::new(),
            round_trips: Vec::new(),
            paths: Vec::new(),
            kinds,
        }
    }

    /// Adds every broker-to-broker path among the hub's `round_trips` (those
    /// with a path name), with the latency histogram `series` has of it. A
    /// path's series carry its name and its two clients, not either
    /// client's extra labels: it is between the two.
    #[must_use]
    pub fn with_paths(
        mut self,
        round_trips: &[RoundTripCounts],
        series: &SeriesTable,
        native: bool,
    ) -> Self {
        let mut rows: Vec<PathRow> = round_trips
            .iter()
            .filter_map(|counts| {
                let name = counts.path.as_ref()?;
                let mut labels = String::new();
                text::push_label_pair(&mut labels, "path", name);
                labels.push(',');
                text::push_label_pair(&mut labels, "from", counts.client_id.as_str());
                labels.push(',');
                let to = counts.to.as_ref().map_or("", ClientId::as_str);
                text::push_label_pair(&mut labels, "to", to);
                Some(PathRow {
                    labels,
                    latency: series.copy_path(&counts.client_id, name, native),
                    counts: counts.clone(),
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.counts.path, &a.counts.client_id).cmp(&(&b.counts.path, &b.counts.client_id))
        });
        self.paths = rows;
        self
    }

    /// Adds the counts of each client's own probe (the hub's `round_trips`
    /// with no path); clients the hub does not know are left out, as for
    /// failures. A path's counts are not its client's.
    #[must_use]
    pub fn with_round_trips(mut self, round_trips: Vec<RoundTripCounts>) -> Self {
        let clients = &self.clients;
        let mut rows: Vec<(usize, RoundTripCounts)> = round_trips
            .into_iter()
            .filter(|counts| counts.path.is_none())
            .filter_map(|counts| {
                let client = clients
                    .binary_search_by(|row| row.state.client_id.cmp(&counts.client_id))
                    .ok()?;
                Some((client, counts))
            })
            .collect();
        rows.sort_unstable_by_key(|(client, _)| *client);
        self.round_trips = rows;
        self
    }

    /// Adds each client's count of dropped incoming publishes (the hub's
    /// `dropped_publishes`); counts of clients the hub does not know, and
    /// zeros, are left out, as for failures.
    #[must_use]
    pub fn with_dropped_publishes(mut self, dropped: Vec<(ClientId, u64)>) -> Self {
        let clients = &self.clients;
        let mut rows: Vec<(usize, u64)> = dropped
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(id, count)| {
                let client = clients
                    .binary_search_by(|row| row.state.client_id.cmp(&id))
                    .ok()?;
                Some((client, count))
            })
            .collect();
        rows.sort_unstable();
        self.dropped_publishes = rows;
        self
    }

    /// Adds the expiry of the certificate chain each TLS client verified
    /// last (the hub's `tls_cert_expiries`); clients the hub does not know
    /// are left out, as for failures.
    #[must_use]
    pub fn with_tls_cert_expiries(mut self, expiries: Vec<(ClientId, SystemTime)>) -> Self {
        let clients = &self.clients;
        let mut rows: Vec<(usize, f64)> = expiries
            .into_iter()
            .filter_map(|(id, not_after)| {
                let client = clients
                    .binary_search_by(|row| row.state.client_id.cmp(&id))
                    .ok()?;
                Some((client, seconds_since_epoch(not_after)))
            })
            .collect();
        rows.sort_unstable_by_key(|&(client, _)| client);
        self.tls_cert_expiries = rows;
        self
    }

    /// Appends `family` in text format, or nothing if it has no samples.
    pub fn write_text(
        &self,
        family: Family,
        layout: &Layout,
        labels: &ClientLabels,
        out: &mut String,
    ) {
        if self.is_empty(family) {
            return;
        }
        let name = family.name();
        text::push_header(out, name, family.help(), family.type_text());
        match family {
            Family::ConnectFailures => {
                let mut reason = String::new();
                for failure in &self.failures {
                    reason.clear();
                    text::push_label_pair(&mut reason, "reason", failure.reason.as_str());
                    text::push_series(out, name, "", labels.get(failure.client), &reason);
                    text::push_u64_line(out, failure.count);
                }
            }
            Family::LastStatusChange => {
                for (index, row) in self.clients.iter().enumerate() {
                    text::push_series(out, name, "", labels.get(index), "");
                    text::push_f64_line(out, unix_seconds(&row.state));
                }
            }
            Family::PingRtt => {
                let empty = ClientSeries::new(layout.bounds.len() + 1);
                for (index, row) in self.clients.iter().enumerate() {
                    let series = row.series.as_ref().unwrap_or(&empty);
                    let client = labels.get(index);
                    let mut cumulative = 0;
                    for (count, le) in series.bucket_counts.iter().zip(&layout.le_pairs) {
                        cumulative += count;
                        text::push_series(out, name, "_bucket", client, le);
                        text::push_u64_line(out, cumulative);
                    }
                    text::push_series(out, name, "_sum", client, "");
                    text::push_f64_line(out, series.rtt_sum_seconds);
                    text::push_series(out, name, "_count", client, "");
                    text::push_u64_line(out, series.rtt_count);
                }
            }
            Family::PublishesDropped => {
                for &(client, count) in &self.dropped_publishes {
                    text::push_series(out, name, "", labels.get(client), "");
                    text::push_u64_line(out, count);
                }
            }
            Family::TlsCertExpiry => {
                for &(client, seconds) in &self.tls_cert_expiries {
                    text::push_series(out, name, "", labels.get(client), "");
                    text::push_f64_line(out, seconds);
                }
            }
            Family::KeepAlive => {
                for (index, row) in self.clients.iter().enumerate() {
                    if let Some(keep_alive) = row.state.keep_alive {
                        text::push_series(out, name, "", labels.get(index), "");
                        text::push_u64_line(out, keep_alive.as_secs());
                    }
                }
            }
            Family::RoundTripLastSuccess => {
                for (client, counts) in &self.round_trips {
                    if let Some(at) = counts.last_success {
                        text::push_series(out, name, "", labels.get(*client), "");
                        text::push_f64_line(out, seconds_since_epoch(at));
                    }
                }
            }
            Family::RoundTripMessages => {
                for (client, counts) in &self.round_trips {
                    for (count, outcome) in counts.outcomes.iter().zip(&layout.outcome_pairs) {
                        text::push_series(out, name, "", labels.get(*client), outcome);
                        text::push_u64_line(out, *count);
                    }
                }
            }
            Family::RoundTripRtt => {
                for (client, _) in &self.round_trips {
                    let (buckets, sum, count) = self.probe_histogram(*client, layout);
                    let labels = labels.get(*client);
                    let mut cumulative = 0;
                    for (bucket, le) in buckets.iter().zip(&layout.le_pairs) {
                        cumulative += bucket;
                        text::push_series(out, name, "_bucket", labels, le);
                        text::push_u64_line(out, cumulative);
                    }
                    text::push_series(out, name, "_sum", labels, "");
                    text::push_f64_line(out, sum);
                    text::push_series(out, name, "_count", labels, "");
                    text::push_u64_line(out, count);
                }
            }
            Family::RoundTripSent => {
                for (client, counts) in &self.round_trips {
                    text::push_series(out, name, "", labels.get(*client), "");
                    text::push_u64_line(out, counts.sent);
                }
            }
            Family::StatusChanges => {
                for (index, row) in self.clients.iter().enumerate() {
                    let counts = row
                        .series
                        .as_ref()
                        .map(|s| s.status_changes)
                        .unwrap_or_default();
                    for (count, status) in counts.iter().zip(&layout.status_pairs) {
                        text::push_series(out, name, "", labels.get(index), status);
                        text::push_u64_line(out, *count);
                    }
                }
            }
            Family::Up => {
                for (index, row) in self.clients.iter().enumerate() {
                    text::push_series(out, name, "", labels.get(index), "");
                    text::push_u64_line(out, u64::from(row.state.status.is_up()));
                }
            }
            Family::PathLastSuccess => {
                for path in &self.paths {
                    if let Some(at) = path.counts.last_success {
                        text::push_series(out, name, "", &path.labels, "");
                        text::push_f64_line(out, seconds_since_epoch(at));
                    }
                }
            }
            Family::PathLatency => {
                for path in &self.paths {
                    let (buckets, sum, count) = path.histogram(layout);
                    let mut cumulative = 0;
                    for (bucket, le) in buckets.iter().zip(&layout.le_pairs) {
                        cumulative += bucket;
                        text::push_series(out, name, "_bucket", &path.labels, le);
                        text::push_u64_line(out, cumulative);
                    }
                    text::push_series(out, name, "_sum", &path.labels, "");
                    text::push_f64_line(out, sum);
                    text::push_series(out, name, "_count", &path.labels, "");
                    text::push_u64_line(out, count);
                }
            }
            Family::PathMessages => {
                for path in &self.paths {
                    let outcomes = path.counts.outcomes.iter().zip(&layout.outcome_pairs);
                    for (count, outcome) in outcomes {
                        text::push_series(out, name, "", &path.labels, outcome);
                        text::push_u64_line(out, *count);
                    }
                }
            }
            Family::PathSent => {
                for path in &self.paths {
                    text::push_series(out, name, "", &path.labels, "");
                    text::push_u64_line(out, path.counts.sent);
                }
            }
            Family::BuildInfo => {
                text::push_series(out, name, "", &layout.build_info_pairs, "");
                text::push_u64_line(out, 1);
            }
            Family::EventsDispatched | Family::EventsDropped => {
                let mut kind_pair = String::new();
                for (kind, stats) in &self.kinds {
                    kind_pair.clear();
                    text::push_label_pair(&mut kind_pair, "type", kind.as_str());
                    text::push_series(out, name, "", "", &kind_pair);
                    text::push_u64_line(out, kind_count(family, stats));
                }
            }
        }
    }

    /// `family` as a proto, or `None` if it has no samples (as `gather` prunes).
    pub fn to_proto(&self, family: Family, layout: &Layout) -> Option<MetricFamily> {
        if self.is_empty(family) {
            return None;
        }
        let client_labels = |row: &ClientRow| {
            let mut labels = vec![
                label("client_id", row.state.client_id.as_str()),
                label("broker", &row.state.info.broker),
            ];
            for (name, value) in row.state.info.labels.iter() {
                labels.push(label(name, value));
            }
            labels
        };
        let mut metrics = Vec::new();
        match family {
            Family::ConnectFailures => {
                for failure in &self.failures {
                    let mut labels = client_labels(&self.clients[failure.client]);
                    labels.push(label("reason", failure.reason.as_str()));
                    metrics.push(counter(labels, failure.count));
                }
            }
            Family::LastStatusChange => {
                for row in &self.clients {
                    metrics.push(gauge(client_labels(row), unix_seconds(&row.state)));
                }
            }
            Family::PingRtt => {
                let empty = ClientSeries::new(layout.bounds.len() + 1);
                for row in &self.clients {
                    let series = row.series.as_ref().unwrap_or(&empty);
                    metrics.push(histogram(client_labels(row), series, &layout.bounds));
                }
            }
            Family::PublishesDropped => {
                for &(client, count) in &self.dropped_publishes {
                    metrics.push(counter(client_labels(&self.clients[client]), count));
                }
            }
            Family::TlsCertExpiry => {
                for &(client, seconds) in &self.tls_cert_expiries {
                    metrics.push(gauge(client_labels(&self.clients[client]), seconds));
                }
            }
            Family::KeepAlive => {
                for row in &self.clients {
                    if let Some(keep_alive) = row.state.keep_alive {
                        metrics.push(gauge(client_labels(row), keep_alive.as_secs() as f64));
                    }
                }
            }
            Family::RoundTripLastSuccess => {
                for (client, counts) in &self.round_trips {
                    if let Some(at) = counts.last_success {
                        let labels = client_labels(&self.clients[*client]);
                        metrics.push(gauge(labels, seconds_since_epoch(at)));
                    }
                }
            }
            Family::RoundTripMessages => {
                for (client, counts) in &self.round_trips {
                    for (count, outcome) in counts.outcomes.iter().zip(RoundTripOutcome::LABELS) {
                        let mut labels = client_labels(&self.clients[*client]);
                        labels.push(label("outcome", outcome));
                        metrics.push(counter(labels, *count));
                    }
                }
            }
            Family::RoundTripRtt => {
                for (client, _) in &self.round_trips {
                    let (buckets, sum, count) = self.probe_histogram(*client, layout);
                    let labels = client_labels(&self.clients[*client]);
                    metrics.push(histogram_of(labels, &buckets, sum, count, &layout.bounds));
                }
            }
            Family::RoundTripSent => {
                for (client, counts) in &self.round_trips {
                    metrics.push(counter(client_labels(&self.clients[*client]), counts.sent));
                }
            }
            Family::StatusChanges => {
                for row in &self.clients {
                    let counts = row
                        .series
                        .as_ref()
                        .map(|s| s.status_changes)
                        .unwrap_or_default();
                    for (count, status) in counts.iter().zip(COUNTED_STATUSES) {
                        let mut labels = client_labels(row);
                        labels.push(label("status", status.as_str()));
                        metrics.push(counter(labels, *count));
                    }
                }
            }
            Family::Up => {
                for row in &self.clients {
                    let up = if row.state.status.is_up() { 1.0 } else { 0.0 };
                    metrics.push(gauge(client_labels(row), up));
                }
            }
            Family::PathLastSuccess => {
                for path in &self.paths {
                    if let Some(at) = path.counts.last_success {
                        metrics.push(gauge(path.label_pairs(), seconds_since_epoch(at)));
                    }
                }
            }
            Family::PathLatency => {
                for path in &self.paths {
                    let (buckets, sum, count) = path.histogram(layout);
                    let labels = path.label_pairs();
                    metrics.push(histogram_of(labels, &buckets, sum, count, &layout.bounds));
                }
            }
            Family::PathMessages => {
                for path in &self.paths {
                    let outcomes = path.counts.outcomes.iter().zip(RoundTripOutcome::LABELS);
                    for (count, outcome) in outcomes {
                        let mut labels = path.label_pairs();
                        labels.push(label("outcome", outcome));
                        metrics.push(counter(labels, *count));
                    }
                }
            }
            Family::PathSent => {
                for path in &self.paths {
                    metrics.push(counter(path.label_pairs(), path.counts.sent));
                }
            }
            Family::BuildInfo => {
                let info = &layout.build_info;
                let labels = vec![
                    label("version", info.version),
                    label("revision", info.revision),
                    label("rustversion", info.rustversion),
                ];
                metrics.push(gauge(labels, 1.0));
            }
            Family::EventsDispatched | Family::EventsDropped => {
                for (kind, stats) in &self.kinds {
                    let labels = vec![label("type", kind.as_str())];
                    metrics.push(counter(labels, kind_count(family, stats)));
                }
            }
        }
        let mut proto = MetricFamily::default();
        proto.set_name(family.name().to_owned());
        proto.set_help(family.help().to_owned());
        proto.set_field_type(family.metric_type());
        proto.set_metric(metrics);
        Some(proto)
    }

    /// Every client's `client_id="…",broker="…"` and its extra constant
    /// labels, rendered once per scrape and reused by each per-client family.
    pub fn client_labels(&self) -> ClientLabels {
        let mut labels = ClientLabels {
            text: String::with_capacity(self.clients.len() * 64),
            ends: Vec::with_capacity(self.clients.len()),
        };
        for row in &self.clients {
            text::push_label_pair(&mut labels.text, "client_id", row.state.client_id.as_str());
            labels.text.push(',');
            text::push_label_pair(&mut labels.text, "broker", &row.state.info.broker);
            for (name, value) in row.state.info.labels.iter() {
                labels.text.push(',');
                text::push_label_pair(&mut labels.text, name, value);
            }
            labels.ends.push(labels.text.len());
        }
        labels
    }

    fn is_empty(&self, family: Family) -> bool {
        match family {
            Family::ConnectFailures => self.failures.is_empty(),
            Family::PublishesDropped => self.dropped_publishes.is_empty(),
            Family::TlsCertExpiry => self.tls_cert_expiries.is_empty(),
            Family::KeepAlive => self
                .clients
                .iter()
                .all(|row| row.state.keep_alive.is_none()),
            Family::RoundTripLastSuccess => self
                .round_trips
                .iter()
                .all(|(_, counts)| counts.last_success.is_none()),
            Family::RoundTripMessages | Family::RoundTripRtt | Family::RoundTripSent => {
                self.round_trips.is_empty()
            }
            Family::LastStatusChange | Family::PingRtt | Family::StatusChanges | Family::Up => {
                self.clients.is_empty()
            }
            Family::PathLastSuccess => self
                .paths
                .iter()
                .all(|path| path.counts.last_success.is_none()),
            Family::PathLatency | Family::PathMessages | Family::PathSent => self.paths.is_empty(),
            Family::BuildInfo => false,
            Family::EventsDispatched | Family::EventsDropped => self.kinds.is_empty(),
        }
    }
}

#[cfg(feature = "native-histograms")]
impl FleetSnapshot {
    /// `family` in the protobuf model, or `None` if it has no samples: the
    /// round-trip histograms with native buckets beside their classic ones,
    /// every other family as [`to_proto`](Self::to_proto) has it.
    pub fn to_protobuf(
        &self,
        family: Family,
        layout: &Layout,
    ) -> Option<protobuf::model::MetricFamily> {
        use protobuf::{HistogramParts, histogram_metric, label};
        if !matches!(
            family,
            Family::PingRtt | Family::RoundTripRtt | Family::PathLatency
        ) {
            return self
                .to_proto(family, layout)
                .map(|proto| protobuf::from_gathered(&proto));
        }
        if self.is_empty(family) {
            return None;
        }
        let client_labels = |row: &ClientRow| {
            let mut labels = vec![
                label("client_id", row.state.client_id.as_str()),
                label("broker", &row.state.info.broker),
            ];
            for (name, value) in row.state.info.labels.iter() {
                labels.push(label(name, value));
            }
            labels
        };
        let zeros = vec![0; layout.bounds.len() + 1];
        let empty = NativeBuckets::default();
        let bounds: &[f64] = if layout.protobuf_classic_buckets {
            &layout.bounds
        } else {
            &[]
        };
        let mut metrics = Vec::new();
        match family {
            Family::PingRtt => {
                for row in &self.clients {
                    let parts = match &row.series {
                        Some(series) => HistogramParts {
                            buckets: &series.bucket_counts,
                            sum: series.rtt_sum_seconds,
                            count: series.rtt_count,
                            native: &series.rtt_native,
                        },
                        None => HistogramParts {
                            buckets: &zeros,
                            sum: 0.0,
                            count: 0,
                            native: &empty,
                        },
                    };
                    metrics.push(histogram_metric(
                        client_labels(row),
                        &parts,
                        bounds,
                        layout.native_schema,
                    ));
                }
            }
            Family::RoundTripRtt => {
                for (client, _) in &self.round_trips {
                    let row = &self.clients[*client];
                    let parts = match &row.series {
                        Some(series) if !series.probe_bucket_counts.is_empty() => HistogramParts {
                            buckets: &series.probe_bucket_counts,
                            sum: series.probe_rtt_sum_seconds,
                            count: series.probe_rtt_count,
                            native: &series.probe_native,
                        },
                        _ => HistogramParts {
                            buckets: &zeros,
                            sum: 0.0,
                            count: 0,
                            native: &empty,
                        },
                    };
                    metrics.push(histogram_metric(
                        client_labels(row),
                        &parts,
                        bounds,
                        layout.native_schema,
                    ));
                }
            }
            Family::PathLatency => {
                for path in &self.paths {
                    let parts = match &path.latency {
                        Some(series) => HistogramParts {
                            buckets: &series.bucket_counts,
                            sum: series.sum_seconds,
                            count: series.count,
                            native: &series.native,
                        },
                        None => HistogramParts {
                            buckets: &zeros,
                            sum: 0.0,
                            count: 0,
                            native: &empty,
                        },
                    };
                    let counts = &path.counts;
                    let labels = vec![
                        label("path", counts.path.as_deref().unwrap_or_default()),
                        label("from", counts.client_id.as_str()),
                        label("to", counts.to.as_ref().map_or("", ClientId::as_str)),
                    ];
                    metrics.push(histogram_metric(
                        labels,
                        &parts,
                        bounds,
                        layout.native_schema,
                    ));
                }
            }
            _ => unreachable!("only histogram families get here"),
        }
        Some(protobuf::histogram_family(
            family.name(),
            family.help(),
            metrics,
        ))
    }
}

impl FleetSnapshot {
    /// The probe histogram of the client at `client` (per-bucket counts,
    /// sum, count): zeros until its first round trip.
    fn probe_histogram(&self, client: usize, layout: &Layout) -> (Box<[u64]>, f64, u64) {
        match &self.clients[client].series {
            Some(series) if !series.probe_bucket_counts.is_empty() => (
                series.probe_bucket_counts.clone(),
                series.probe_rtt_sum_seconds,
                series.probe_rtt_count,
            ),
            _ => (vec![0; layout.bounds.len() + 1].into_boxed_slice(), 0.0, 0),
        }
    }
}

/// The rendered client label pairs of a snapshot, all in one string.
#[derive(Debug)]
pub(super) struct ClientLabels {
    text: String,
    ends: Vec<usize>,
}

impl ClientLabels {
    fn get(&self, client: usize) -> &str {
        let start = if client == 0 {
            0
        } else {
            self.ends[client - 1]
        };
        &self.text[start..self.ends[client]]
    }
}

fn kind_count(family: Family, stats: &KindStats) -> u64 {
    if family == Family::EventsDropped {
        stats.dropped
    } else {
        stats.dispatched
    }
}

fn unix_seconds(state: &ClientState) -> f64 {
    state
        .since
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unix seconds of `at`, negative before 1970.
fn seconds_since_epoch(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// A client's round-trip histogram, with cumulative buckets up to `bounds`.
fn histogram(labels: Vec<LabelPair>, series: &ClientSeries, bounds: &[f64]) -> Metric {
    histogram_of(
        labels,
        &series.bucket_counts,
        series.rtt_sum_seconds,
        series.rtt_count,
        bounds,
    )
}

/// A histogram of per-bucket (not cumulative) `counts` up to `bounds`.
fn histogram_of(
    labels: Vec<LabelPair>,
    counts: &[u64],
    sum: f64,
    count: u64,
    bounds: &[f64],
) -> Metric {
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(counts.iter())
        .map(|(&bound, &count)| {
            cumulative += count;
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_sum(sum);
    histogram.set_sample_count(count);
    let mut metric = Metric::from_label(labels);
    metric.set_histogram(histogram);
    metric
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::from_label(labels);
    metric.set_counter(counter);
    metric
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::from_label(labels);
    metric.set_gauge(gauge);
    metric
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::events::{ClientId, ClientInfo, Event, Message, Status};

    fn layout() -> Layout {
        Layout::new(
            Arc::from([0.001, 0.01]),
            BuildInfo {
                version: "1.2.3",
                revision: "abc",
                rustversion: "1.95.0",
            },
        )
    }

    fn state(id: &str, status: Status, broker: &str) -> ClientState {
        ClientState {
            client_id: ClientId::from(id),
            status,
            since: UNIX_EPOCH + Duration::from_millis(1_500),
            reason: None,
            info: ClientInfo::new(broker),
            keep_alive: None,
        }
    }

    fn message(id: &ClientId, event: Event) -> Message {
        Message {
            client_id: id.clone(),
            event,
            at: SystemTime::UNIX_EPOCH,
            reason: None,
        }
    }

    fn all_text(snapshot: &FleetSnapshot, layout: &Layout) -> String {
        let labels = snapshot.client_labels();
        let mut out = String::new();
        for family in Family::ALL {
            snapshot.write_text(family, layout, &labels, &mut out);
        }
        out
    }

    /// Client `a` (down, two failure reasons) and client `q"<x>` (up, three
    /// round trips, 5 dropped publishes), plus failures and drops of a client
    /// the hub does not know.
    fn two_clients(layout: &Layout) -> FleetSnapshot {
        let mut series = SeriesTable::new(Arc::clone(&layout.bounds));
        let quoted = ClientId::from("q\"<x>");
        for event in [
            Event::Status(Status::Up),
            Event::PingResponse(Duration::from_micros(500)),
            Event::PingResponse(Duration::from_millis(5)),
            Event::PingResponse(Duration::from_secs(1)),
        ] {
            series.apply(&message(&quoted, event));
        }
        let failure = |id: &str, reason, count| FailureCount {
            client_id: ClientId::from(id),
            reason,
            count,
        };
        let kind = |dispatched, delivered, dropped| KindStats {
            dispatched,
            delivered,
            dropped,
        };
        FleetSnapshot::new(
            vec![
                state("a", Status::Down, "b:1"),
                state("q\"<x>", Status::Up, "b:2"),
            ],
            &series,
            vec![
                failure("a", FailureReason::Timeout, 2),
                failure("a", FailureReason::BadCredentials, 1),
                failure("unknown", FailureReason::Io, 7),
            ],
            [
                (EventKind::Status, kind(4, 4, 0)),
                (EventKind::PingResponse, kind(9, 8, 1)),
            ],
        )
        .with_dropped_publishes(vec![
            (ClientId::from("a"), 0),
            (quoted.clone(), 5),
            (ClientId::from("unknown"), 4),
        ])
        .with_tls_cert_expiries(vec![
            (quoted, UNIX_EPOCH + Duration::from_secs(1_924_992_000)),
            (ClientId::from("unknown"), UNIX_EPOCH),
        ])
    }

    #[test]
    fn text_has_every_family_with_escaped_labels_and_cumulative_buckets() {
        let layout = layout();
        let snapshot = two_clients(&layout);
        let text = all_text(&snapshot, &layout);
        let expected_lines = [
            r#"mqtt_client_connect_failures_total{client_id="a",broker="b:1",reason="bad_credentials"} 1"#,
            r#"mqtt_client_connect_failures_total{client_id="a",broker="b:1",reason="timeout"} 2"#,
            r#"mqtt_client_last_status_change_timestamp_seconds{client_id="a",broker="b:1"} 1.5"#,
            r#"mqtt_client_ping_rtt_seconds_bucket{client_id="a",broker="b:1",le="+Inf"} 0"#,
            r#"mqtt_client_ping_rtt_seconds_bucket{client_id="q\"<x>",broker="b:2",le="0.001"} 1"#,
            r#"mqtt_client_ping_rtt_seconds_bucket{client_id="q\"<x>",broker="b:2",le="0.01"} 2"#,
            r#"mqtt_client_ping_rtt_seconds_bucket{client_id="q\"<x>",broker="b:2",le="+Inf"} 3"#,
            r#"mqtt_client_ping_rtt_seconds_sum{client_id="q\"<x>",broker="b:2"} 1.0055"#,
            r#"mqtt_client_ping_rtt_seconds_count{client_id="q\"<x>",broker="b:2"} 3"#,
            r#"mqtt_client_publishes_dropped_total{client_id="q\"<x>",broker="b:2"} 5"#,
            "# TYPE mqtt_client_publishes_dropped_total counter",
            r#"mqtt_client_tls_cert_expiry_timestamp_seconds{client_id="q\"<x>",broker="b:2"} 1924992000"#,
            "# TYPE mqtt_client_tls_cert_expiry_timestamp_seconds gauge",
            r#"mqtt_client_status_changes_total{client_id="a",broker="b:1",status="up"} 0"#,
            r#"mqtt_client_status_changes_total{client_id="q\"<x>",broker="b:2",status="up"} 1"#,
            r#"mqtt_client_up{client_id="a",broker="b:1"} 0"#,
            r#"mqtt_client_up{client_id="q\"<x>",broker="b:2"} 1"#,
            r#"mqtt_pulse_build_info{version="1.2.3",revision="abc",rustversion="1.95.0"} 1"#,
            r#"mqtt_pulse_events_dispatched_total{type="ping_response"} 9"#,
            r#"mqtt_pulse_events_dropped_total{type="ping_response"} 1"#,
            "# TYPE mqtt_client_ping_rtt_seconds histogram",
        ];
        for line in expected_lines {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("unknown"),
            "a client the hub does not know has no series"
        );
        assert!(
            !text.contains(r#"mqtt_client_publishes_dropped_total{client_id="a""#),
            "a client that dropped nothing has no drop series"
        );
        assert!(
            !text.contains(r#"mqtt_client_tls_cert_expiry_timestamp_seconds{client_id="a""#),
            "a client that verified no chain has no expiry series"
        );
    }

    #[test]
    fn an_empty_hub_exposes_only_build_info_and_event_counters() {
        let layout = layout();
        let series = SeriesTable::new(Arc::clone(&layout.bounds));
        let snapshot = FleetSnapshot::new(
            vec![],
            &series,
            vec![],
            [(EventKind::Status, KindStats::default())],
        );
        let text = all_text(&snapshot, &layout);
        assert!(!text.contains("mqtt_client_"), "{text}");
        assert!(text.contains("mqtt_pulse_build_info{"));
        assert!(text.contains("mqtt_pulse_events_dropped_total{type=\"status\"} 0"));
        assert_eq!(snapshot.to_proto(Family::Up, &layout), None);
    }

    #[cfg(feature = "native-histograms")]
    #[test]
    fn the_protobuf_page_decodes_to_the_same_families_with_native_round_trip_histograms() {
        use crate::exporter::metrics::protobuf::{decode_page, from_gathered, push_delimited};
        let mut layout = layout();
        let snapshot = two_clients(&layout);
        // Bounds 1 ms and 10 ms, one step of 10: schema -1 (buckets of 4×) is
        // the coarsest no wider.
        assert_eq!(layout.native_schema, -1);
        let native_only = snapshot.to_protobuf(Family::PingRtt, &layout).unwrap();
        assert!(native_only.metric.iter().all(|m| {
            let histogram = m.histogram.as_ref().unwrap();
            histogram.bucket.is_empty() && histogram.schema == -1
        }));
        // The rest at the finest schema, set as `with_native_schema` sets it.
        layout.native_schema = 3;
        layout.protobuf_classic_buckets = true;
        let mut page = Vec::new();
        for family in Family::ALL {
            if let Some(family) = snapshot.to_protobuf(family, &layout) {
                push_delimited(&family, &mut page);
            }
        }
        let decoded = decode_page(&page).unwrap();
        let classic: Vec<_> = Family::ALL
            .iter()
            .filter_map(|&family| snapshot.to_proto(family, &layout))
            .collect();
        assert_eq!(decoded.len(), classic.len());
        for (got, classic) in decoded.iter().zip(&classic) {
            assert_eq!(got.name, classic.name());
            if got.name != Family::PingRtt.name() {
                assert_eq!(*got, from_gathered(classic), "{}", got.name);
                continue;
            }
            // The histograms: the classic part as before, plus native buckets
            // holding the same observations.
            for (metric, classic) in got.metric.iter().zip(classic.get_metric()) {
                let histogram = metric.histogram.as_ref().unwrap();
                let expected = from_gathered_metric(classic);
                assert_eq!(histogram.bucket, expected.bucket);
                assert_eq!(histogram.sample_count, expected.sample_count);
                assert_eq!(histogram.sample_sum, expected.sample_sum);
                assert_eq!(histogram.schema, 3);
                // Deltas add up to the last bucket's count; with each round
                // trip in a bucket of its own (0.5 ms, 5 ms, 1 s), the counts
                // are 1, 1, 1, so the deltas are 1, 0, 0.
                let native: i64 = histogram.positive_delta.iter().sum();
                assert!(native <= 1);
                let buckets: u32 = histogram.positive_span.iter().map(|s| s.length).sum();
                assert_eq!(buckets as usize, histogram.positive_delta.len());
            }
        }
        let quoted = &decoded
            .iter()
            .find(|f| f.name == Family::PingRtt.name())
            .unwrap()
            .metric[1];
        let histogram = quoted.histogram.as_ref().unwrap();
        assert_eq!(histogram.positive_delta, vec![1, 0, 0]);
        // 0.5 ms (2^-10.97) is in bucket -87, 5 ms in bucket -61, and 1 s
        // closes bucket 0; each span's offset counts from the previous end.
        let starts: Vec<i32> = histogram.positive_span.iter().map(|s| s.offset).collect();
        assert_eq!(starts, vec![-87, 25, 60]);
    }

    #[cfg(feature = "native-histograms")]
    fn from_gathered_metric(
        metric: &Metric,
    ) -> crate::exporter::metrics::protobuf::model::Histogram {
        let mut family = MetricFamily::default();
        family.set_field_type(prometheus::proto::MetricType::HISTOGRAM);
        family.set_metric(vec![metric.clone()]);
        crate::exporter::metrics::protobuf::from_gathered(&family).metric[0]
            .histogram
            .clone()
            .unwrap()
    }

    #[test]
    fn protos_encode_to_the_same_text_as_the_fast_path() {
        let layout = layout();
        let mut series = SeriesTable::new(Arc::clone(&layout.bounds));
        series.apply(&message(
            &ClientId::from("b"),
            Event::PingResponse(Duration::from_micros(1234)),
        ));
        let snapshot = FleetSnapshot::new(
            vec![
                state("a", Status::Up, "x:1"),
                state("b", Status::Terminating, "x:2"),
            ],
            &series,
            vec![FailureCount {
                client_id: ClientId::from("b"),
                reason: FailureReason::PingTimeout,
                count: 3,
            }],
            EventKind::ALL.map(|kind| (kind, KindStats::default())),
        )
        .with_dropped_publishes(vec![(ClientId::from("a"), 2)])
        .with_tls_cert_expiries(vec![(
            ClientId::from("b"),
            UNIX_EPOCH + Duration::from_millis(4_107_459_723_500),
        )]);
        let protos: Vec<MetricFamily> = Family::ALL
            .iter()
            .filter_map(|&family| snapshot.to_proto(family, &layout))
            .collect();
        let encoded = prometheus::TextEncoder::new()
            .encode_to_string(&protos)
            .unwrap();
        assert_eq!(all_text(&snapshot, &layout), encoded);
    }
}
