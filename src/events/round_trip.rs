//! The hub's round-trip counts: per client and probe (or path), how many
//! probe messages were sent and what became of them, and when the last good
//! round trip was. Counters, not events — like the failure counts they are
//! read at scrape time, so a subscriber's overflowing queue can never make
//! them wrong. The [`RoundTripCounter`] a tracker holds counts with relaxed
//! atomic adds, never a lock; only handing one out and reading them all
//! take the hub's lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::message::{ClientId, RoundTripOutcome};

/// The shared cells behind a [`RoundTripCounter`].
#[derive(Debug, Default)]
pub(super) struct Cells {
    sent: AtomicU64,
    /// Indexed like [`RoundTripOutcome::LABELS`].
    outcomes: [AtomicU64; RoundTripOutcome::LABELS.len()],
    /// Unix time of the last [`RoundTripOutcome::Received`], in
    /// nanoseconds; 0 for never.
    last_success_nanos: AtomicU64,
    /// For a path: the client that receives its messages.
    pub(super) to: Option<ClientId>,
}

impl Cells {
    /// Zeros, for a path whose messages `to` receives.
    pub(super) fn to(to: &ClientId) -> Self {
        Self {
            to: Some(to.clone()),
            ..Self::default()
        }
    }
}

/// One client's (or path's) round-trip counts, shared with the hub that
/// handed it out ([`Events::round_trip_counter`](super::Events::round_trip_counter)).
/// Clones count into the same numbers.
#[derive(Clone, Debug)]
pub struct RoundTripCounter(pub(super) Arc<Cells>);

impl RoundTripCounter {
    /// Counts one probe message written to the broker.
    pub fn sent(&self) {
        self.0.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what became of one message; a [`RoundTripOutcome::Received`]
    /// at wall-clock `at` is the last good round trip from now on.
    pub fn record(&self, outcome: RoundTripOutcome, at: SystemTime) {
        self.0.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let RoundTripOutcome::Received(_) = outcome {
            let nanos = at.duration_since(UNIX_EPOCH).map_or(1, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
            self.0
                .last_success_nanos
                .fetch_max(nanos.max(1), Ordering::Relaxed);
        }
    }
}

/// What the hub counted of one client's probe, or of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundTripCounts {
    /// The client whose connection publishes the messages.
    pub client_id: ClientId,
    /// `None` for the client's own probe; the path's name otherwise.
    pub path: Option<Arc<str>>,
    /// For a path (counted through
    /// [`Events::path_counter`](super::Events::path_counter)): the client
    /// whose connection receives its messages.
    pub to: Option<ClientId>,
    /// Messages written to the broker.
    pub sent: u64,
    /// Per outcome, indexed like [`RoundTripOutcome::LABELS`]: received,
    /// out of order, lost, late, duplicate.
    pub outcomes: [u64; RoundTripOutcome::LABELS.len()],
    /// When the last message came back received (in time and in order).
    pub last_success: Option<SystemTime>,
}

impl RoundTripCounts {
    pub(super) fn read(client_id: &ClientId, path: &Option<Arc<str>>, cells: &Cells) -> Self {
        let nanos = cells.last_success_nanos.load(Ordering::Relaxed);
        Self {
            client_id: client_id.clone(),
            path: path.clone(),
            to: cells.to.clone(),
            sent: cells.sent.load(Ordering::Relaxed),
            outcomes: std::array::from_fn(|i| cells.outcomes[i].load(Ordering::Relaxed)),
            last_success: (nanos > 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos)),
        }
    }

    /// The count of `outcome`'s label value (any RTT it carries is ignored).
    pub fn count(&self, outcome: RoundTripOutcome) -> u64 {
        self.outcomes[outcome.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_counts_sent_and_each_outcome_and_keeps_the_latest_success() {
        let cells = Arc::new(Cells::default());
        let counter = RoundTripCounter(Arc::clone(&cells));
        let t1 = UNIX_EPOCH + Duration::from_secs(100);
        let t2 = UNIX_EPOCH + Duration::from_secs(200);
        counter.sent();
        counter.sent();
        counter.record(RoundTripOutcome::Received(Duration::from_micros(90)), t2);
        counter.record(RoundTripOutcome::Received(Duration::from_micros(90)), t1);
        counter.record(RoundTripOutcome::Late, t2);
        counter.clone().record(RoundTripOutcome::Duplicate, t2);

        let counts = RoundTripCounts::read(&ClientId::from("a"), &None, &cells);
        assert_eq!(counts.sent, 2);
        assert_eq!(counts.outcomes, [2, 0, 0, 1, 1]);
        assert_eq!(counts.count(RoundTripOutcome::Lost), 0);
        assert_eq!(
            counts.last_success,
            Some(t2),
            "an earlier stamp never moves it back"
        );
    }

    #[test]
    fn without_a_success_there_is_no_last_success() {
        let cells = Cells::default();
        let counter = RoundTripCounter(Arc::new(cells));
        counter.record(RoundTripOutcome::Lost, SystemTime::now());
        counter.record(
            RoundTripOutcome::OutOfOrder(Duration::from_millis(1)),
            SystemTime::now(),
        );
        let counts = RoundTripCounts::read(&ClientId::from("a"), &None, &counter.0);
        assert_eq!(counts.last_success, None);
        assert_eq!(counts.outcomes, [0, 1, 1, 0, 0]);
    }
}
