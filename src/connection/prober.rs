//! A connection's round-trip probe at work: when to publish the next probe
//! message, subscribing to the probe topic on each new session, telling the
//! probe's own PUBLISH written and read among the connection's events, and
//! reporting each outcome to the hub ([`Event::RoundTrip`]) and its
//! counters. The message bookkeeping is [`RoundTrips`]'s (sans-I/O).
//!
//! It works on rumqttc's queue of pending requests (`EventLoop::pending`, of
//! either protocol version through [`Pending`]; the events it reads are the
//! wire's [`Seen`]), which the event loop serves before anything the client handle sends and
//! even when its in-flight window is full; it never waits, never touches the
//! socket, and never delays a PINGREQ: a probe message is one small PUBLISH
//! behind which a PINGREQ waits at most one write.
//!
//! **Written when.** rumqttc says `Outgoing::Publish(pkid)` once a PUBLISH is
//! flushed, but not which one (a QoS 0 message has no packet id). It takes
//! one request from the pending queue per poll and yields that request's
//! event, so the first `Outgoing::Publish` after a probe message has left
//! the queue is that message's write.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Publish, QoS, SubAck, SubscribeReasonCode};

use super::probe::ProbeOptions;
use super::round_trip::{RoundTrips, decode};
use super::wire::{Pending, Seen};
use crate::events::{ClientId, Event, Events, RoundTrip, RoundTripCounter, RoundTripOutcome};

/// The probe of one connection.
#[derive(Debug)]
pub(crate) struct Prober {
    topic: Arc<str>,
    qos: QoS,
    interval: Duration,
    trips: RoundTrips,
    /// When the next message is due; `None` while not connected.
    next_due: Option<Instant>,
    /// The hub's counts of this probe; `None` once the hub forgot the client
    /// (terminated), until it is up again.
    counter: Option<RoundTripCounter>,
    /// The probe's SUBSCRIBE: waiting in the pending queue, or written with
    /// this packet id and not yet answered.
    subscription: Subscription,
    /// The broker refused the last subscription (said once per refusal).
    refused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscription {
    None,
    Pending,
    Written(u16),
}

impl Prober {
    /// The probe `options` describe for `client_id` with `keep_alive`
    /// (already checked), counting into the hub from now on.
    pub(crate) fn new(
        events: &Events,
        client_id: &ClientId,
        options: &ProbeOptions,
        keep_alive: Duration,
    ) -> Self {
        Self {
            topic: options.topic_for(client_id.as_str()).into(),
            qos: options.qos(),
            interval: options.interval(keep_alive),
            trips: RoundTrips::new(options.timeout(keep_alive)),
            next_due: None,
            counter: Some(events.round_trip_counter(client_id, None)),
            subscription: Subscription::None,
            refused: false,
        }
    }

    /// The topic, expanded.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The hub forgot the client (terminated): what is counted from now on
    /// goes nowhere until [`connected`](Self::connected) takes a new counter.
    pub(crate) fn forget_counter(&mut self) {
        self.counter = None;
        self.next_due = None;
    }

    /// The broker accepted CONNECT at `now`: subscribe again unless the
    /// session (and its subscription) was kept, and start publishing one
    /// interval from now.
    pub(crate) fn connected(
        &mut self,
        events: &Events,
        client_id: &ClientId,
        now: Instant,
        session_present: bool,
        pending: &mut dyn Pending,
    ) {
        // A client that was terminated and came back counts from zero.
        if self.counter.is_none() {
            self.counter = Some(events.round_trip_counter(client_id, None));
        }
        if !session_present {
            // rumqttc cleared its pending requests: the probe messages among
            // them will never be written.
            self.trips.discard_unwritten();
            pending.push_subscribe(&self.topic, self.qos);
            self.subscription = Subscription::Pending;
        }
        self.next_due = Some(now + self.interval);
    }

    /// The connection is gone: nothing is published until it is back. The
    /// messages out still time out.
    pub(crate) fn lost(&mut self) {
        self.next_due = None;
    }

    /// When [`tick`](Self::tick) has something to do: a message due or one
    /// timing out.
    pub(crate) fn wakeup(&self) -> Option<Instant> {
        match (self.next_due, self.trips.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts the messages lost by `now` and, if one is due, queues the next
    /// (never retained) in `pending`.
    pub(crate) fn tick(
        &mut self,
        events: &Events,
        client_id: &ClientId,
        now: Instant,
        pending: &mut dyn Pending,
    ) {
        self.expire(events, client_id, now);
        let Some(due) = self.next_due else { return };
        if now < due {
            return;
        }
        // At a fixed rate; after a stall, from now rather than a burst.
        let next = due + self.interval;
        self.next_due = Some(if next > now {
            next
        } else {
            now + self.interval
        });
        if let Some((_, payload)) = self.trips.queue(now, SystemTime::now()) {
            let mut publish = Publish::new(self.topic.as_ref(), self.qos, payload);
            publish.retain = false;
            pending.push_publish(publish);
        }
    }

    /// Feeds one event `poll()` returned at `now`. `true` if it was an
    /// incoming probe message, which is the probe's alone (not the host's
    /// publishes, not a dropped publish).
    pub(crate) fn observe(
        &mut self,
        events: &Events,
        client_id: &ClientId,
        event: &Seen,
        now: Instant,
        pending: &dyn Pending,
    ) -> bool {
        match event {
            Seen::PublishWritten => {
                self.outgoing_publish(now, pending);
                false
            }
            &Seen::SubscribeWritten(pkid) => {
                if self.subscription == Subscription::Pending && !pending.has_subscribe(&self.topic)
                {
                    self.subscription = Subscription::Written(pkid);
                }
                false
            }
            Seen::SubAck(ack) if self.subscription == Subscription::Written(ack.pkid) => {
                self.subscription = Subscription::None;
                self.subscribed(client_id, ack);
                false
            }
            Seen::Publish(publish) if *publish.topic == *self.topic => {
                self.expire(events, client_id, now);
                if let Some((seq, outcome)) = self.trips.arrived(&publish.payload, now) {
                    self.report(events, client_id, seq, outcome);
                }
                true
            }
            _ => false,
        }
    }

    /// A PUBLISH was written: the oldest probe message no longer pending, if
    /// any, is the one (see the module's doc).
    fn outgoing_publish(&mut self, now: Instant, pending: &dyn Pending) {
        let Some(seq) = self.trips.unwritten().next() else {
            return;
        };
        if self.still_pending(seq, pending) {
            return;
        }
        if self.trips.written(seq, now)
            && let Some(counter) = &self.counter
        {
            counter.sent();
        }
    }

    fn still_pending(&self, seq: u64, pending: &dyn Pending) -> bool {
        pending.has_publish(&self.topic, &|payload| {
            decode(payload).is_some_and(|(_, pending_seq)| pending_seq == seq)
        })
    }

    /// The broker answered the probe's SUBSCRIBE. A refusal (an ACL that
    /// denies the topic, typically) is worth a warning: every message will
    /// be lost while the connection stays up.
    fn subscribed(&mut self, client_id: &ClientId, ack: &SubAck) {
        let refused = ack.return_codes.contains(&SubscribeReasonCode::Failure);
        if refused && !self.refused {
            tracing::warn!(
                %client_id,
                topic = %self.topic,
                "the broker refused the probe's subscription (does its ACL allow the topic?); \
                 the probe's messages will be lost"
            );
        } else if !refused && self.refused {
            tracing::info!(%client_id, topic = %self.topic, "the broker accepted the probe's subscription");
        }
        self.refused = refused;
    }

    fn expire(&mut self, events: &Events, client_id: &ClientId, now: Instant) {
        let mut lost = Vec::new();
        self.trips.expire(now, |seq| lost.push(seq));
        for seq in lost {
            self.report(events, client_id, seq, RoundTripOutcome::Lost);
        }
    }

    fn report(&self, events: &Events, client_id: &ClientId, seq: u64, outcome: RoundTripOutcome) {
        if let Some(counter) = &self.counter {
            counter.record(outcome, SystemTime::now());
        }
        events.dispatch(client_id, Event::RoundTrip(RoundTrip::probe(seq, outcome)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Request;
    use rumqttc::{Event as MqttEvent, Outgoing, Packet};
    use std::collections::VecDeque;

    /// The driver's view of a 3.1.1 event, as the probe and paths get it.
    fn seen(event: &MqttEvent) -> Seen {
        crate::connection::wire::v311::seen(event.clone())
    }
    use crate::events::{ClientFilter, EventKind};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn prober(events: &Events, qos: QoS) -> Prober {
        let options = ProbeOptions::new()
            .with_interval(ms(100))
            .with_timeout(ms(250))
            .with_qos(qos);
        Prober::new(
            events,
            &ClientId::from("c"),
            &options,
            Duration::from_secs(5),
        )
    }

    /// What rumqttc does with the pending queue: pops one request and yields
    /// its event.
    fn write_next(pending: &mut VecDeque<Request>) -> (MqttEvent, Option<Publish>) {
        match pending.pop_front().expect("a request") {
            Request::Publish(publish) => (
                MqttEvent::Outgoing(Outgoing::Publish(publish.pkid)),
                Some(publish),
            ),
            Request::Subscribe(_) => (MqttEvent::Outgoing(Outgoing::Subscribe(1)), None),
            Request::PingReq(_) => (MqttEvent::Outgoing(Outgoing::PingReq), None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_session_subscribes_then_publishes_every_interval_never_retained() {
        let events = Events::new();
        let client = ClientId::from("c");
        let mut probe = prober(&events, QoS::AtLeastOnce);
        let mut pending = VecDeque::new();
        let t0 = Instant::now();
        assert_eq!(probe.wakeup(), None, "not connected");
        probe.connected(&events, &client, t0, false, &mut pending);
        assert!(
            matches!(&pending[0], Request::Subscribe(s) if s.filters[0].path == "mqtt-pulse/probe/c")
        );
        assert_eq!(probe.wakeup(), Some(t0 + ms(100)));

        probe.tick(&events, &client, t0 + ms(50), &mut pending);
        assert_eq!(pending.len(), 1, "not due yet");
        probe.tick(&events, &client, t0 + ms(100), &mut pending);
        let Request::Publish(publish) = &pending[1] else {
            panic!("{pending:?}")
        };
        assert!(!publish.retain);
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert_eq!(probe.wakeup(), Some(t0 + ms(200)));
    }

    #[test]
    fn the_round_trip_runs_from_the_write_to_the_read_and_the_hub_counts_it() {
        let events = Events::new();
        let client = ClientId::from("c");
        let mut subscription = events.register(ClientFilter::Any, EventKind::RoundTrip);
        let mut probe = prober(&events, QoS::AtMostOnce);
        let mut pending = VecDeque::new();
        let t0 = Instant::now();
        probe.connected(&events, &client, t0, false, &mut pending);
        // A PINGREQ and the subscription are ahead of the message.
        probe.tick(&events, &client, t0 + ms(100), &mut pending);
        pending.push_front(Request::PingReq(rumqttc::PingReq));
        let mut message = None;
        for at in [101, 102, 103] {
            let (event, publish) = write_next(&mut pending);
            assert!(!probe.observe(&events, &client, &seen(&event), t0 + ms(at), &pending));
            message = publish.or(message);
        }
        let message = message.unwrap();
        let back = MqttEvent::Incoming(Packet::Publish(message.clone()));
        assert!(probe.observe(&events, &client, &seen(&back), t0 + ms(110), &pending));

        let received = subscription.try_recv().unwrap();
        assert_eq!(
            received.event,
            Event::RoundTrip(RoundTrip::probe(1, RoundTripOutcome::Received(ms(7)))),
            "from the write at 103 ms, not the queueing at 100 ms"
        );
        let counts = &events.round_trips()[0];
        assert_eq!((counts.sent, counts.outcomes), (1, [1, 0, 0, 0, 0]));

        assert!(probe.observe(&events, &client, &seen(&back), t0 + ms(111), &pending));
        assert_eq!(
            subscription.try_recv().unwrap().event,
            Event::RoundTrip(RoundTrip::probe(1, RoundTripOutcome::Duplicate))
        );
        assert_eq!(events.round_trips()[0].outcomes, [1, 0, 0, 0, 1]);
    }

    #[test]
    fn another_publish_written_first_is_not_taken_for_the_probe() {
        let events = Events::new();
        let client = ClientId::from("c");
        let mut probe = prober(&events, QoS::AtMostOnce);
        let t0 = Instant::now();
        let mut pending = VecDeque::new();
        probe.connected(&events, &client, t0, true, &mut pending);
        // The host's own QoS 0 publish is written while the probe waits.
        pending.push_back(Request::Publish(Publish::new(
            "host/topic",
            QoS::AtMostOnce,
            "x",
        )));
        probe.tick(&events, &client, t0 + ms(100), &mut pending);
        let (event, _) = write_next(&mut pending);
        probe.observe(&events, &client, &seen(&event), t0 + ms(101), &pending);
        assert_eq!(events.round_trips()[0].sent, 0);
        let (event, _) = write_next(&mut pending);
        probe.observe(&events, &client, &seen(&event), t0 + ms(102), &pending);
        assert_eq!(events.round_trips()[0].sent, 1);
    }

    #[test]
    fn a_message_not_back_is_lost_at_its_timeout_and_a_foreign_one_is_swallowed() {
        let events = Events::new();
        let client = ClientId::from("c");
        let mut probe = prober(&events, QoS::AtLeastOnce);
        let t0 = Instant::now();
        let mut pending = VecDeque::new();
        probe.connected(&events, &client, t0, true, &mut pending);
        probe.tick(&events, &client, t0 + ms(100), &mut pending);
        let (event, _) = write_next(&mut pending);
        probe.observe(&events, &client, &seen(&event), t0 + ms(100), &pending);
        probe.lost();
        assert_eq!(probe.wakeup(), Some(t0 + ms(350)), "only the timeout");
        probe.tick(&events, &client, t0 + ms(350), &mut pending);
        assert!(pending.is_empty(), "nothing published while down");
        let counts = &events.round_trips()[0];
        assert_eq!((counts.sent, counts.count(RoundTripOutcome::Lost)), (1, 1));

        let foreign = Publish::new("mqtt-pulse/probe/c", QoS::AtLeastOnce, "hello");
        let event = MqttEvent::Incoming(Packet::Publish(foreign));
        assert!(probe.observe(&events, &client, &seen(&event), t0 + ms(400), &pending));
        assert_eq!(events.round_trips()[0].outcomes, [0, 0, 1, 0, 0]);
    }
}
