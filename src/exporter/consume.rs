//! What the two exporters share: how they subscribe to the hub and drain
//! their queue, which statuses they count, and the checks and defaults of the
//! settings both take (queue capacity, histogram buckets).
//!
//! An exporter owns one wildcard subscription behind a lock, next to the
//! state it folds events into. Its consumer task ([`consume`]) drains the
//! queue in batches of [`CONSUMER_BATCH`] between reads; a read (a scrape, a
//! collection) drains it too, under the same lock, so it reflects every event
//! dispatched before it. Neither ever awaits under the lock.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Mutex, Weak};
use std::task::Poll;

use futures_core::Stream;
use tokio::sync::oneshot;

use crate::events::{ClientFilter, EventKind, Events, Message, Status, Subscription};
use crate::sync::lock;

/// Upper bounds, in seconds, of the default ping round-trip histogram buckets
/// of both exporters (`mqtt_client_ping_rtt_seconds`, `mqtt.client.ping.rtt`):
/// 0.25 ms to 10 s in 1-2.5-5 steps. Loopback and LAN round trips (0.1–1 ms)
/// land in the first buckets, a satellite link (0.6–2 s) still below the top
/// one.
pub const DEFAULT_RTT_BUCKETS: [f64; 15] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Default capacity of an exporter's subscription queue: 65,536 events, about
/// 6.5 s of 10,000 clients pinging every second, or 64 s at a 1 s keep-alive
/// for 1,000. Only a consumer task stalled that long loses events (and the
/// hub counts them). Each queued event takes about 64 bytes.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Events the consumer task applies under one lock before it yields, so a
/// burst cannot monopolise a runtime worker.
pub(super) const CONSUMER_BATCH: usize = 1024;

/// The statuses the status-change counters count, in the order of their
/// label values (`down` < `terminating` < `up`), which is the order the series
/// are exposed in. `terminated` is absent: a terminated client is forgotten,
/// its counters with it, so that series could never be read.
pub(super) const COUNTED_STATUSES: [Status; 3] = [Status::Down, Status::Terminating, Status::Up];

/// One client's status events, indexed like [`COUNTED_STATUSES`].
pub(super) type StatusCounts = [u64; COUNTED_STATUSES.len()];

/// Where `status` is counted in a [`StatusCounts`]; `None` for `Terminated`.
pub(super) fn counted_index(status: Status) -> Option<usize> {
    COUNTED_STATUSES
        .iter()
        .position(|&counted| counted == status)
}

/// The most histogram bounds an exporter takes. Each bound is one series
/// per client and histogram in the classic exposition (10,000 targets with 64
/// bounds are 650,000 bucket series per histogram); more can only be a mistake.
pub const MAX_RTT_BUCKETS: usize = 64;

/// Why `bounds` cannot be the upper bounds of a histogram's buckets, if they
/// cannot: they must be finite, positive and strictly increasing, at least
/// one and at most [`MAX_RTT_BUCKETS`].
pub(super) fn bucket_problem(bounds: &[f64]) -> Option<&'static str> {
    bucket_problem_at(bounds).map(|(_, problem)| problem)
}

/// [`bucket_problem`], with the index of the bound at fault when one is
/// (the config file points at it).
pub(crate) fn bucket_problem_at(bounds: &[f64]) -> Option<(Option<usize>, &'static str)> {
    let at = |rule: &dyn Fn(usize, f64) -> bool| {
        bounds
            .iter()
            .enumerate()
            .position(|(index, &bound)| rule(index, bound))
    };
    if bounds.is_empty() {
        Some((None, "no bounds given"))
    } else if bounds.len() > MAX_RTT_BUCKETS {
        Some((Some(MAX_RTT_BUCKETS), "more than 64 bounds"))
    } else if let Some(index) = at(&|_, bound| !bound.is_finite()) {
        Some((Some(index), "a bound is NaN or infinite"))
    } else if let Some(index) = at(&|_, bound| bound < 0.0) {
        Some((Some(index), "a bound is negative"))
    } else if let Some(index) = at(&|_, bound| bound == 0.0) {
        Some((Some(index), "a bound is zero"))
    } else if let Some(index) = at(&|index, bound| index > 0 && bound <= bounds[index - 1]) {
        Some((Some(index), "the bounds are not strictly increasing"))
    } else {
        None
    }
}

/// A subscription to every event of every client, queueing at most
/// `capacity` events (0 is taken as 1).
pub(super) fn subscribe_to_all(events: &Events, capacity: usize) -> Subscription {
    let mut subscription = events.subscribe_with_capacity(capacity);
    for kind in EventKind::ALL {
        subscription.register(ClientFilter::Any, kind);
    }
    subscription
}

/// An exporter's subscription and what its events are folded into, behind
/// the exporter's lock.
pub(super) struct Inbox<T> {
    subscription: Subscription,
    /// What the events are folded into.
    pub(super) folded: T,
}

impl<T> Inbox<T> {
    pub(super) fn new(subscription: Subscription, folded: T) -> Self {
        Self {
            subscription,
            folded,
        }
    }

    /// Hands `first`, then queued messages, to `apply` until `limit` messages
    /// in all were applied or the queue is empty; returns how many were.
    pub(super) fn drain(
        &mut self,
        first: Option<Message>,
        limit: usize,
        mut apply: impl FnMut(&mut T, &Message),
    ) -> usize {
        let mut applied = 0;
        if let Some(message) = first {
            apply(&mut self.folded, &message);
            applied += 1;
        }
        while applied < limit {
            let Ok(message) = self.subscription.try_recv() else {
                break;
            };
            apply(&mut self.folded, &message);
            applied += 1;
        }
        applied
    }

    /// Events the hub dropped because the queue was full, since subscribing.
    pub(super) fn dropped(&self) -> u64 {
        self.subscription.stats().dropped
    }
}

/// An exporter's state as its consumer task sees it: the lock around its
/// inbox, and how a batch of events is applied.
pub(super) trait Consumer: Send + Sync + 'static {
    /// What the events are folded into, inside the inbox.
    type Folded: Send;

    /// The lock around the inbox.
    fn inbox(&self) -> &Mutex<Inbox<Self::Folded>>;

    /// Applies `first` and queued events, `limit` at most in all (with
    /// [`Inbox::drain`]); returns how many.
    fn apply_batch(
        &self,
        inbox: &mut Inbox<Self::Folded>,
        first: Option<Message>,
        limit: usize,
    ) -> usize;
}

/// Consumes the subscription in batches until `stopped` fires or the state is
/// dropped, so the queue stays short between reads.
pub(super) async fn consume<C: Consumer>(state: Weak<C>, mut stopped: oneshot::Receiver<()>) {
    loop {
        let applied = poll_fn(|cx| {
            if Pin::new(&mut stopped).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let Some(state) = state.upgrade() else {
                return Poll::Ready(None);
            };
            let mut inbox = lock(state.inbox());
            // Polled under the lock, never awaited under it: a read may drain
            // the queue in between, which only means a spurious wake-up here.
            match Pin::new(&mut inbox.subscription).poll_next(cx) {
                Poll::Ready(Some(first)) => Poll::Ready(Some(state.apply_batch(
                    &mut inbox,
                    Some(first),
                    CONSUMER_BATCH,
                ))),
                // The hub is gone (it cannot be while the state holds it, but
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ClientId, Event};

    #[test]
    fn unusable_buckets_are_rejected_with_the_reason() {
        for (bounds, reason) in [
            (&[][..], "no bounds given"),
            (&[0.1, f64::INFINITY][..], "a bound is NaN or infinite"),
            (&[f64::NAN][..], "a bound is NaN or infinite"),
            (&[-1.0, 1.0][..], "a bound is negative"),
            (&[0.1, 0.1][..], "the bounds are not strictly increasing"),
            (&[0.2, 0.1][..], "the bounds are not strictly increasing"),
            (&[0.0, 0.1][..], "a bound is zero"),
            (&[0.1; 65][..], "more than 64 bounds"),
        ] {
            assert_eq!(bucket_problem(bounds), Some(reason), "{bounds:?}");
        }
        assert_eq!(
            bucket_problem_at(&[0.1, 0.3, 0.2]),
            Some((Some(2), "the bounds are not strictly increasing"))
        );
        assert_eq!(bucket_problem(&[1e-6; 1][..]), None);
        let most: Vec<f64> = (1..=MAX_RTT_BUCKETS).map(|i| i as f64).collect();
        assert_eq!(bucket_problem(&most), None);
    }

    #[test]
    fn the_default_buckets_span_a_quarter_millisecond_to_ten_seconds() {
        assert_eq!(bucket_problem(&DEFAULT_RTT_BUCKETS), None);
        assert_eq!(DEFAULT_RTT_BUCKETS.first(), Some(&0.000_25));
        assert_eq!(DEFAULT_RTT_BUCKETS.last(), Some(&10.0));
    }

    #[test]
    fn terminated_is_the_one_status_not_counted() {
        assert_eq!(counted_index(Status::Down), Some(0));
        assert_eq!(counted_index(Status::Terminating), Some(1));
        assert_eq!(counted_index(Status::Up), Some(2));
        assert_eq!(counted_index(Status::Terminated), None);
    }

    #[test]
    fn a_drain_stops_at_the_limit_and_counts_the_first_message() {
        let events = Events::new();
        let mut inbox = Inbox::new(subscribe_to_all(&events, 16), 0);
        let id = ClientId::from("c");
        for _ in 0..5 {
            events.dispatch(&id, Event::Status(Status::Up));
        }
        let first = inbox.subscription.try_recv().ok();
        assert_eq!(inbox.drain(first, 3, |seen, _| *seen += 1), 3);
        assert_eq!(inbox.drain(None, 10, |seen, _| *seen += 1), 2);
        assert_eq!(inbox.folded, 5);
    }
}
