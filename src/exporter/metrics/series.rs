//! The per-client series the Prometheus exporter accumulates from hub events:
//! the ping round-trip histogram, the last round trip and the status-change
//! counts. Sans-IO: it is fed [`Message`]s and read in place; it never touches
//! the hub, a registry, a lock or the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::native::NativeBuckets;
use crate::events::{ClientId, Event, Message, RoundTrip, RoundTripOutcome, Status};
use crate::exporter::consume::{COUNTED_STATUSES, StatusCounts, counted_index};

/// What the exporter has seen of one client since it started watching it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ClientSeries {
    /// Observations per histogram bucket, *not* cumulative; the last slot counts
    /// the round trips above the highest bound.
    pub bucket_counts: Box<[u64]>,
    /// Sum of the round trips, in seconds.
    pub rtt_sum_seconds: f64,
    /// Number of round trips observed (the sum of `bucket_counts`).
    pub rtt_count: u64,
    /// The same round trips in native-histogram buckets.
    pub rtt_native: NativeBuckets,
    /// The most recent round trip.
    pub last_rtt: Option<Duration>,
    /// Status events seen, indexed like [`COUNTED_STATUSES`].
    pub status_changes: StatusCounts,
    /// The probe's round trips received, bucketed like the ping's; empty
    /// until the first one (most clients have no probe).
    pub probe_bucket_counts: Box<[u64]>,
    /// Sum of the probe's round trips, in seconds.
    pub probe_rtt_sum_seconds: f64,
    /// Number of probe round trips received.
    pub probe_rtt_count: u64,
    /// The probe's round trips in native-histogram buckets.
    pub probe_native: NativeBuckets,
}

impl ClientSeries {
    pub(super) fn new(bucket_slots: usize) -> Self {
        Self {
            bucket_counts: vec![0; bucket_slots].into_boxed_slice(),
            rtt_sum_seconds: 0.0,
            rtt_count: 0,
            rtt_native: NativeBuckets::default(),
            last_rtt: None,
            status_changes: [0; COUNTED_STATUSES.len()],
            probe_bucket_counts: Box::default(),
            probe_rtt_sum_seconds: 0.0,
            probe_rtt_count: 0,
            probe_native: NativeBuckets::default(),
        }
    }
}

/// The latency histogram of one broker-to-broker path.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PathSeries {
    /// Per bucket, not cumulative, as [`ClientSeries::bucket_counts`].
    pub bucket_counts: Box<[u64]>,
    pub sum_seconds: f64,
    pub count: u64,
    /// The same latencies in native-histogram buckets.
    pub native: NativeBuckets,
}

/// Every watched client's series, keyed by client id, and every path's,
/// keyed by its publishing client and name.
#[derive(Debug)]
pub(super) struct SeriesTable {
    /// Histogram upper bounds in seconds, strictly increasing, without `+Inf`.
    bounds: Arc<[f64]>,
    clients: HashMap<ClientId, ClientSeries>,
    paths: HashMap<(ClientId, Arc<str>), PathSeries>,
}

impl SeriesTable {
    /// An empty table whose histograms use `bounds` (seconds, strictly increasing).
    pub fn new(bounds: Arc<[f64]>) -> Self {
        Self {
            bounds,
            clients: HashMap::new(),
            paths: HashMap::new(),
        }
    }

    /// Folds one hub message into the client's series. A `Terminated` status
    /// removes the client: its series must disappear from the exposition.
    pub fn apply(&mut self, message: &Message) {
        match &message.event {
            Event::Status(Status::Terminated) => {
                self.clients.remove(message.client_id.as_str());
                self.paths.retain(|(from, _), _| *from != message.client_id);
            }
            &Event::Status(status) => {
                let Some(index) = counted_index(status) else {
                    return;
                };
                self.entry(&message.client_id).status_changes[index] += 1;
            }
            &Event::PingResponse(rtt) => {
                let seconds = rtt.as_secs_f64();
                // `le` buckets are inclusive: the first bound >= the value.
                let slot = self.bounds.partition_point(|&bound| bound < seconds);
                let series = self.entry(&message.client_id);
                series.bucket_counts[slot] += 1;
                series.rtt_sum_seconds += seconds;
                series.rtt_count += 1;
                series.rtt_native.observe(seconds);
                series.last_rtt = Some(rtt);
            }
            // Only received round trips are successes; the counts of every
            // outcome are the hub's. A path's are not the client's.
            Event::RoundTrip(RoundTrip {
                outcome: RoundTripOutcome::Received(rtt),
                path: None,
                ..
            }) => {
                let seconds = rtt.as_secs_f64();
                let slot = self.bounds.partition_point(|&bound| bound < seconds);
                let slots = self.bounds.len() + 1;
                let series = self.entry(&message.client_id);
                if series.probe_bucket_counts.is_empty() {
                    series.probe_bucket_counts = vec![0; slots].into_boxed_slice();
                }
                series.probe_bucket_counts[slot] += 1;
                series.probe_rtt_sum_seconds += seconds;
                series.probe_rtt_count += 1;
                series.probe_native.observe(seconds);
            }
            Event::RoundTrip(RoundTrip {
                outcome: RoundTripOutcome::Received(rtt),
                path: Some(name),
                ..
            }) => {
                let seconds = rtt.as_secs_f64();
                let slot = self.bounds.partition_point(|&bound| bound < seconds);
                let slots = self.bounds.len() + 1;
                let key = (message.client_id.clone(), Arc::clone(name));
                let series = self.paths.entry(key).or_insert_with(|| PathSeries {
                    bucket_counts: vec![0; slots].into_boxed_slice(),
                    sum_seconds: 0.0,
                    count: 0,
                    native: NativeBuckets::default(),
                });
                series.bucket_counts[slot] += 1;
                series.sum_seconds += seconds;
                series.count += 1;
                series.native.observe(seconds);
            }
            _ => {}
        }
    }

    /// Drops the series of every client for which `is_present` is false. Used
    /// after the subscription lost messages, so a missed `Terminated` cannot
    /// leave a forgotten client's series behind.
    pub fn retain_present(&mut self, mut is_present: impl FnMut(&str) -> bool) {
        self.clients.retain(|id, _| is_present(id.as_str()));
        self.paths.retain(|(from, _), _| is_present(from.as_str()));
    }

    /// Drops the histograms of paths for which `is_running` (publishing
    /// client, name) is false: a stopped path's series go with its counts,
    /// and one started again under the same name starts from zero.
    pub fn retain_paths(&mut self, mut is_running: impl FnMut(&ClientId, &str) -> bool) {
        self.paths.retain(|(from, name), _| is_running(from, name));
    }

    /// The latency histogram of the path `name` published by `from`, if one
    /// of its messages was received.
    pub fn path(&self, from: &ClientId, name: &Arc<str>) -> Option<&PathSeries> {
        self.paths.get(&(from.clone(), Arc::clone(name)))
    }

    /// A copy of the series of `client_id` for a snapshot, without the
    /// native buckets unless `native`: the text exposition never reads them,
    /// and copying them would cost its render an allocation per client.
    pub fn copy(&self, client_id: &str, native: bool) -> Option<ClientSeries> {
        let series = self.clients.get(client_id)?;
        Some(if native {
            series.clone()
        } else {
            ClientSeries {
                bucket_counts: series.bucket_counts.clone(),
                rtt_sum_seconds: series.rtt_sum_seconds,
                rtt_count: series.rtt_count,
                rtt_native: NativeBuckets::default(),
                last_rtt: series.last_rtt,
                status_changes: series.status_changes,
                probe_bucket_counts: series.probe_bucket_counts.clone(),
                probe_rtt_sum_seconds: series.probe_rtt_sum_seconds,
                probe_rtt_count: series.probe_rtt_count,
                probe_native: NativeBuckets::default(),
            }
        })
    }

    /// A copy of a path's histogram for a snapshot, as [`copy`](Self::copy).
    pub fn copy_path(&self, from: &ClientId, name: &Arc<str>, native: bool) -> Option<PathSeries> {
        let series = self.path(from, name)?;
        Some(PathSeries {
            bucket_counts: series.bucket_counts.clone(),
            sum_seconds: series.sum_seconds,
            count: series.count,
            native: if native {
                series.native.clone()
            } else {
                NativeBuckets::default()
            },
        })
    }

    /// The series of `client_id`, if any event of it was seen.
    pub fn get(&self, client_id: &str) -> Option<&ClientSeries> {
        self.clients.get(client_id)
    }

    /// Whether any path has a histogram.
    pub fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// How many clients have series.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    fn entry(&mut self, client_id: &ClientId) -> &mut ClientSeries {
        let slots = self.bounds.len() + 1;
        // Look up by `&str` first so the common case (a known client) does not
        // clone the id; `entry()` would need an owned key every time.
        if !self.clients.contains_key(client_id.as_str()) {
            self.clients
                .insert(client_id.clone(), ClientSeries::new(slots));
        }
        self.clients
            .get_mut(client_id.as_str())
            .expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn table() -> SeriesTable {
        SeriesTable::new(Arc::from([0.001, 0.01, 0.1]))
    }

    fn message(client: &str, event: Event) -> Message {
        Message {
            client_id: ClientId::from(client),
            event,
            at: SystemTime::UNIX_EPOCH,
            reason: None,
        }
    }

    fn ping(client: &str, micros: u64) -> Message {
        message(client, Event::PingResponse(Duration::from_micros(micros)))
    }

    #[test]
    fn a_round_trip_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut table = table();
        table.apply(&ping("a", 500)); // 0.0005 <= 0.001
        table.apply(&ping("a", 1_000)); // exactly on the bound: inclusive
        table.apply(&ping("a", 50_000)); // <= 0.1
        table.apply(&ping("a", 2_000_000)); // above every bound

        let series = table.get("a").unwrap();
        assert_eq!(&*series.bucket_counts, &[2, 0, 1, 1]);
        assert_eq!(series.rtt_count, 4);
        assert!((series.rtt_sum_seconds - 2.0515).abs() < 1e-12);
        assert_eq!(series.last_rtt, Some(Duration::from_secs(2)));
    }

    #[test]
    fn status_events_are_counted_per_status() {
        let mut table = table();
        for status in [Status::Up, Status::Down, Status::Up, Status::Terminating] {
            table.apply(&message("a", Event::Status(status)));
        }
        // Indexed like COUNTED_STATUSES: down, terminating, up.
        assert_eq!(table.get("a").unwrap().status_changes, [1, 1, 2]);
    }

    #[test]
    fn terminated_forgets_the_client_and_a_restart_starts_from_zero() {
        let mut table = table();
        table.apply(&message("a", Event::Status(Status::Up)));
        table.apply(&ping("a", 100));
        table.apply(&message("a", Event::Status(Status::Terminated)));
        assert!(table.get("a").is_none());
        assert_eq!(table.len(), 0);

        table.apply(&message("a", Event::Status(Status::Up)));
        let series = table.get("a").unwrap();
        assert_eq!(series.rtt_count, 0);
        assert_eq!(series.status_changes, [0, 0, 1]);
    }

    #[test]
    fn only_received_probe_round_trips_of_the_clients_own_probe_land_in_its_histogram() {
        let mut table = table();
        let trip = |outcome| message("a", Event::RoundTrip(RoundTrip::probe(1, outcome)));
        table.apply(&trip(RoundTripOutcome::Lost));
        assert!(table.get("a").is_none_or(|s| s.probe_rtt_count == 0));
        table.apply(&trip(RoundTripOutcome::Received(Duration::from_micros(
            500,
        ))));
        table.apply(&trip(RoundTripOutcome::OutOfOrder(Duration::from_micros(
            500,
        ))));
        table.apply(&trip(RoundTripOutcome::Duplicate));
        let path = RoundTrip::on_path(
            "a->b",
            1,
            RoundTripOutcome::Received(Duration::from_secs(1)),
        );
        table.apply(&message("a", Event::RoundTrip(path)));

        let series = table.get("a").unwrap();
        assert_eq!(&*series.probe_bucket_counts, &[1, 0, 0, 0]);
        assert_eq!(series.probe_rtt_count, 1);
        assert_eq!(series.rtt_count, 0, "the ping histogram is another");
    }

    #[test]
    fn retain_present_drops_only_absent_clients() {
        let mut table = table();
        table.apply(&ping("kept", 100));
        table.apply(&ping("gone", 100));
        table.retain_present(|id| id == "kept");
        assert!(table.get("kept").is_some());
        assert!(table.get("gone").is_none());
    }
}
