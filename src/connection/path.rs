//! Broker-to-broker paths at work (issue 15): a [`Path`] publishes a probe
//! message through one connection (`from`) to a topic another connection
//! (`to`) subscribes to, and measures each from its PUBLISH written on
//! `from` to its PUBLISH read on `to` — the propagation across the bridge or
//! cluster link between their brokers, and its losses.
//!
//! It owns the two ends a path adds to the drivers of its connections (the
//! sender in `from`'s, the receiver in `to`'s), the window of messages they
//! share ([`RoundTrips`], sans-I/O, behind a lock neither end holds across
//! anything but its own bookkeeping) and the rules of a path whose end is
//! down. It never touches a socket and never waits: like the probe it works
//! on rumqttc's queue of pending requests, one small PUBLISH or SUBSCRIBE at
//! a time, so it never delays a PINGREQ.
//!
//! **While an end is down.** The sender publishes only while `from` is up
//! *and* `to` holds a subscription the broker granted (its SUBACK read):
//! nothing is sent, so nothing is lost, while either target is down or its
//! subscription is refused — a down target is `mqtt_client_up`'s to report,
//! not the path's. A message already on its way when `to` goes down is
//! counted lost if it does not arrive within the timeout (it was sent and
//! did not cross); at most `timeout / interval` messages per outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Publish, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use super::path_options::PathOptions;
use super::round_trip::{RoundTrips, decode};
use super::wire::{Pending, Seen};
use super::{Connection, OptionsError};
use crate::events::{ClientId, Event, Events, RoundTrip, RoundTripCounter, RoundTripOutcome};
use crate::sync::lock;

/// What a path hands the drivers of its two connections.
#[derive(Debug)]
pub(crate) enum PathControl {
    /// Start publishing this path's messages (on `from`).
    Send(Arc<Shared>),
    /// Start receiving them (on `to`).
    Receive(Arc<Shared>),
    /// The path is stopped: drop its end (and, on `to`, its subscription).
    Stop(Arc<Shared>),
}

/// What both ends of one path share.
#[derive(Debug)]
pub(crate) struct Shared {
    name: Arc<str>,
    /// The client whose connection publishes: the hub's client of the
    /// path's events and counts.
    from: ClientId,
    topic: Arc<str>,
    qos: QoS,
    interval: Duration,
    trips: std::sync::Mutex<RoundTrips>,
    /// `to` is up and the broker granted its subscription.
    receiving: AtomicBool,
    counter: RoundTripCounter,
    events: Events,
}

impl Shared {
    /// The shared state of a path from the client `from` to the client `to`,
    /// its interval and timeout defaulting to `keep_alive`; counting into
    /// `events` from now on.
    fn new(
        options: &PathOptions,
        from: &ClientId,
        to: &ClientId,
        keep_alive: Duration,
        events: &Events,
    ) -> Arc<Self> {
        let name: Arc<str> = Arc::from(options.name());
        Arc::new(Shared {
            topic: options.topic_for(from.as_str(), to.as_str()).into(),
            qos: options.qos(),
            interval: options.interval(keep_alive),
            trips: std::sync::Mutex::new(RoundTrips::new(options.timeout(keep_alive))),
            receiving: AtomicBool::new(false),
            counter: events.path_counter(from, &name, to),
            from: from.clone(),
            events: events.clone(),
            name,
        })
    }

    fn report(&self, seq: u64, outcome: RoundTripOutcome) {
        self.counter.record(outcome, SystemTime::now());
        let trip = RoundTrip::on_path(Arc::clone(&self.name), seq, outcome);
        self.events.dispatch(&self.from, Event::RoundTrip(trip));
    }

    /// Settles the messages whose timeout passed by `now` as lost.
    fn expire(&self, trips: &mut RoundTrips, now: Instant) {
        let mut lost = Vec::new();
        trips.expire(now, |seq| lost.push(seq));
        for seq in lost {
            self.report(seq, RoundTripOutcome::Lost);
        }
    }
}

/// A running broker-to-broker path between two [`Connection`]s of one
/// process: see the module docs. Its events come as
/// [`Event::RoundTrip`]s of the `from` client with
/// [`RoundTrip::path`] set to the path's name, and its counts are the hub's
/// round-trip counts for that client and name.
///
/// ```no_run
/// use mqtt_pulse::connection::{Connection, ConnectionOptions, Path, PathOptions};
/// use mqtt_pulse::events::Events;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let events = Events::new();
/// let north = Connection::start(ConnectionOptions::new("north", "mqtt://10.0.0.1:1883")?, &events)?;
/// let south = Connection::start(ConnectionOptions::new("south", "mqtt://10.0.0.2:1883")?, &events)?;
/// let path = Path::start(PathOptions::new("north->south"), &north, &south, &events)?;
/// // ... the bridge between the two brokers is measured ...
/// path.stop();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Path {
    shared: Arc<Shared>,
    from: mpsc::UnboundedSender<PathControl>,
    to: mpsc::UnboundedSender<PathControl>,
}

impl Path {
    /// Starts the path `options` describe from `from` to `to` (two
    /// different connections), counting into `events` (the hub `from` and
    /// `to` report to). The interval and timeout default to `from`'s
    /// keep-alive; the topic's `{from}` and `{to}` are the two client ids.
    ///
    /// # Errors
    /// [`OptionsError::Path`] when a setting cannot be used or `from` and
    /// `to` are one connection.
    pub fn start(
        options: PathOptions,
        from: &Connection,
        to: &Connection,
        events: &Events,
    ) -> Result<Path, OptionsError> {
        let keep_alive = from.keep_alive();
        if from.client_id() == to.client_id() {
            return Err(OptionsError::Path {
                key: "to",
                problem: "must be another connection than `from`".to_owned(),
            });
        }
        let (from_id, to_id) = (from.client_id().as_str(), to.client_id().as_str());
        if let Some((key, problem)) = options.problem_between(keep_alive, from_id, to_id) {
            return Err(OptionsError::Path { key, problem });
        }
        let shared = Shared::new(
            &options,
            from.client_id(),
            to.client_id(),
            keep_alive,
            events,
        );
        let path = Path {
            from: from.path_control(),
            to: to.path_control(),
            shared,
        };
        // A connection whose task has ended takes nothing: the path then
        // sends nothing, which is what a path with an end down does.
        let _ = path.to.send(PathControl::Receive(Arc::clone(&path.shared)));
        let _ = path.from.send(PathControl::Send(Arc::clone(&path.shared)));
        Ok(path)
    }

    /// The path's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The topic its messages cross on, expanded.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// Stops the path: both ends are dropped at their connections' next
    /// step (`to` unsubscribes), and the hub forgets its counts. Dropping
    /// the `Path` does the same.
    pub fn stop(self) {}
}

impl Drop for Path {
    fn drop(&mut self) {
        let _ = self.from.send(PathControl::Stop(Arc::clone(&self.shared)));
        let _ = self.to.send(PathControl::Stop(Arc::clone(&self.shared)));
        let shared = &self.shared;
        shared.events.forget_path(&shared.from, &shared.name);
    }
}

/// A path's sender, in `from`'s driver.
#[derive(Debug)]
struct Sender {
    shared: Arc<Shared>,
    /// When the next message is due; `None` while `from` is not connected.
    next_due: Option<Instant>,
}

impl Sender {
    fn wakeup(&self) -> Option<Instant> {
        let deadline = lock(&self.shared.trips).deadline();
        match (self.next_due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn tick(&mut self, now: Instant, pending: &mut dyn Pending) {
        let shared = &self.shared;
        let mut trips = lock(&shared.trips);
        shared.expire(&mut trips, now);
        let Some(due) = self.next_due else { return };
        if now < due {
            return;
        }
        let next = due + shared.interval;
        self.next_due = Some(if next > now {
            next
        } else {
            now + shared.interval
        });
        // Nothing is sent while `to` cannot receive: see the module docs.
        if !shared.receiving.load(Ordering::Acquire) {
            return;
        }
        if let Some((_, payload)) = trips.queue(now, SystemTime::now()) {
            let mut publish = Publish::new(shared.topic.as_ref(), shared.qos, payload);
            publish.retain = false;
            pending.push_publish(publish);
        }
    }

    /// A PUBLISH was written: the oldest of this path's messages no longer
    /// pending, if any, is the one (rumqttc writes one pending request per
    /// poll and says so; see the probe's `prober` module).
    fn outgoing_publish(&self, now: Instant, pending: &dyn Pending) {
        let shared = &self.shared;
        let mut trips = lock(&shared.trips);
        let Some(seq) = trips.unwritten().next() else {
            return;
        };
        let still_pending = pending.has_publish(&shared.topic, &|payload| {
            decode(payload).is_some_and(|(_, pending_seq)| pending_seq == seq)
        });
        if !still_pending && trips.written(seq, now) {
            shared.counter.sent();
        }
    }
}

/// Where a receiver's subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscription {
    /// Not connected, or the session lost it.
    None,
    /// SUBSCRIBE in the pending queue, not yet written.
    Queued,
    /// Written with this packet id; no SUBACK yet.
    Written(u16),
    /// Granted: messages on the topic arrive.
    Granted,
    /// Refused by the broker (return code 0x80).
    Refused,
}

/// A path's receiver, in `to`'s driver.
#[derive(Debug)]
struct Receiver {
    shared: Arc<Shared>,
    subscription: Subscription,
}

impl Receiver {
    fn subscribe(&mut self, pending: &mut dyn Pending) {
        let shared = &self.shared;
        pending.push_subscribe(&shared.topic, shared.qos);
        self.subscription = Subscription::Queued;
        shared.receiving.store(false, Ordering::Release);
    }

    fn still_pending(&self, pending: &dyn Pending) -> bool {
        pending.has_subscribe(&self.shared.topic)
    }

    fn set(&mut self, subscription: Subscription) {
        self.subscription = subscription;
        let granted = subscription == Subscription::Granted;
        self.shared.receiving.store(granted, Ordering::Release);
    }

    /// A PUBLISH on the path's topic arrived at `now`: `true` if it was one
    /// of this path's messages (this run's; another path on the same topic,
    /// or an earlier run, is not) and was counted.
    fn arrived(&self, payload: &[u8], now: Instant) -> bool {
        let shared = &self.shared;
        let mut trips = lock(&shared.trips);
        // A message past its timeout is lost, then late — never received,
        // whichever end's timer noticed first.
        shared.expire(&mut trips, now);
        match trips.arrived(payload, now) {
            Some((seq, outcome)) => {
                drop(trips);
                shared.report(seq, outcome);
                true
            }
            None => false,
        }
    }
}

/// Every path end in one connection's driver: senders of the paths it
/// publishes for, receivers of those it receives for.
#[derive(Debug, Default)]
pub(crate) struct PathEnds {
    senders: Vec<Sender>,
    receivers: Vec<Receiver>,
    /// Since when the connection is up; `None` while down.
    up_since: Option<Instant>,
}

impl PathEnds {
    /// Takes a control message from a [`Path`].
    pub(crate) fn control(
        &mut self,
        control: PathControl,
        now: Instant,
        pending: &mut dyn Pending,
    ) {
        match control {
            PathControl::Send(shared) => {
                let next_due = self.up_since.map(|_| now + shared.interval);
                self.senders.push(Sender { shared, next_due });
            }
            PathControl::Receive(shared) => {
                let mut receiver = Receiver {
                    shared,
                    subscription: Subscription::None,
                };
                if self.up_since.is_some() {
                    receiver.subscribe(pending);
                }
                self.receivers.push(receiver);
            }
            PathControl::Stop(shared) => {
                self.senders.retain(|s| !Arc::ptr_eq(&s.shared, &shared));
                let before = self.receivers.len();
                self.receivers.retain(|r| !Arc::ptr_eq(&r.shared, &shared));
                let still_used = self
                    .receivers
                    .iter()
                    .any(|r| r.shared.topic == shared.topic);
                if before != self.receivers.len() && self.up_since.is_some() && !still_used {
                    pending.push_unsubscribe(&shared.topic);
                }
            }
        }
    }

    /// The broker accepted CONNECT at `now`.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        session_present: bool,
        pending: &mut dyn Pending,
    ) {
        self.up_since = Some(now);
        for sender in &mut self.senders {
            if !session_present {
                // rumqttc cleared its pending requests: messages among them
                // will never be written (neither sent nor lost).
                lock(&sender.shared.trips).discard_unwritten();
            }
            sender.next_due = Some(now + sender.shared.interval);
        }
        for receiver in &mut self.receivers {
            if session_present && receiver.subscription == Subscription::Granted {
                receiver.set(Subscription::Granted);
            } else {
                receiver.subscribe(pending);
            }
        }
    }

    /// The connection is gone (or being shut down).
    pub(crate) fn lost(&mut self) {
        self.up_since = None;
        for sender in &mut self.senders {
            sender.next_due = None;
        }
        for receiver in &mut self.receivers {
            // A kept session keeps a granted subscription; anything else is
            // asked again at the next CONNACK.
            let kept = match receiver.subscription {
                Subscription::Granted => Subscription::Granted,
                _ => Subscription::None,
            };
            receiver.subscription = kept;
            receiver.shared.receiving.store(false, Ordering::Release);
        }
    }

    /// When [`tick`](Self::tick) has work: a message due or one timing out.
    pub(crate) fn wakeup(&self) -> Option<Instant> {
        self.senders.iter().filter_map(Sender::wakeup).min()
    }

    /// Counts what timed out and queues what is due.
    pub(crate) fn tick(&mut self, now: Instant, pending: &mut dyn Pending) {
        for sender in &mut self.senders {
            sender.tick(now, pending);
        }
    }

    /// Feeds one event `poll()` returned at `now`; `true` when it was an
    /// incoming message of a path, which is the path's alone.
    pub(crate) fn observe(&mut self, event: &Seen, now: Instant, pending: &dyn Pending) -> bool {
        match event {
            Seen::PublishWritten => {
                for sender in &self.senders {
                    sender.outgoing_publish(now, pending);
                }
                false
            }
            Seen::SubscribeWritten(pkid) => {
                for receiver in &mut self.receivers {
                    if receiver.subscription == Subscription::Queued
                        && !receiver.still_pending(pending)
                    {
                        receiver.set(Subscription::Written(*pkid));
                        // One SUBSCRIBE per poll: this was it.
                        break;
                    }
                }
                false
            }
            Seen::SubAck(suback) => {
                for receiver in &mut self.receivers {
                    if receiver.subscription == Subscription::Written(suback.pkid) {
                        let granted = suback
                            .return_codes
                            .first()
                            .is_some_and(|code| !matches!(code, SubscribeReasonCode::Failure));
                        if granted {
                            receiver.set(Subscription::Granted);
                        } else {
                            tracing::warn!(
                                path = %receiver.shared.name,
                                topic = %receiver.shared.topic,
                                "the broker refused the path's subscription; the path sends nothing"
                            );
                            receiver.set(Subscription::Refused);
                        }
                    }
                }
                false
            }
            Seen::Publish(publish) => {
                // Every message on a path's topic is the path's, whoever sent
                // it (another instance, an earlier run): counted when it is
                // this run's, never handed to the host as its own.
                let mut on_a_path_topic = false;
                for receiver in &self.receivers {
                    if *publish.topic == *receiver.shared.topic {
                        on_a_path_topic = true;
                        if receiver.arrived(&publish.payload, now) {
                            break;
                        }
                    }
                }
                on_a_path_topic
            }
            _ => false,
        }
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
    use rumqttc::SubAck;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A path from "a" to "b" every 100 ms, lost after 250 ms.
    fn shared(events: &Events) -> Arc<Shared> {
        let options = PathOptions::new("a->b")
            .with_interval(ms(100))
            .with_timeout(ms(250))
            .with_qos(QoS::AtMostOnce);
        Shared::new(
            &options,
            &ClientId::from("a"),
            &ClientId::from("b"),
            Duration::from_secs(5),
            events,
        )
    }

    /// The two ends of one path up, `to` subscribed with `code`: returns
    /// (from's ends, to's ends, from's pending queue).
    fn both_up(
        shared: &Arc<Shared>,
        t0: Instant,
        code: SubscribeReasonCode,
    ) -> (PathEnds, PathEnds, VecDeque<Request>) {
        let (mut from, mut to) = (PathEnds::default(), PathEnds::default());
        let (mut from_pending, mut to_pending) = (VecDeque::new(), VecDeque::new());
        from.control(PathControl::Send(Arc::clone(shared)), t0, &mut from_pending);
        to.control(
            PathControl::Receive(Arc::clone(shared)),
            t0,
            &mut to_pending,
        );
        assert!(to_pending.is_empty(), "nothing asked while down");
        from.connected(t0, false, &mut from_pending);
        to.connected(t0, false, &mut to_pending);
        assert!(
            matches!(&to_pending[0], Request::Subscribe(s) if s.filters[0].path == "mqtt-pulse/path/a/b")
        );
        to_pending.pop_front();
        assert!(!to.observe(
            &seen(&MqttEvent::Outgoing(Outgoing::Subscribe(7))),
            t0,
            &to_pending
        ));
        let suback = SubAck::new(7, vec![code]);
        assert!(!to.observe(
            &seen(&MqttEvent::Incoming(Packet::SubAck(suback))),
            t0,
            &to_pending
        ));
        (from, to, from_pending)
    }

    /// Writes the next pending request on `from` at `at`; the PUBLISH, if it was one.
    fn write(from: &mut PathEnds, pending: &mut VecDeque<Request>, at: Instant) -> Option<Publish> {
        let Request::Publish(publish) = pending.pop_front()? else {
            return None;
        };
        from.observe(
            &seen(&MqttEvent::Outgoing(Outgoing::Publish(0))),
            at,
            pending,
        );
        Some(publish)
    }

    #[test]
    fn a_message_crosses_from_its_write_on_from_to_its_read_on_to() {
        let events = Events::new();
        let mut trips = events.register(ClientFilter::Any, EventKind::RoundTrip);
        let path = shared(&events);
        let t0 = Instant::now();
        let (mut from, mut to, mut pending) =
            both_up(&path, t0, SubscribeReasonCode::Success(QoS::AtMostOnce));
        assert_eq!(from.wakeup(), Some(t0 + ms(100)));
        from.tick(t0 + ms(100), &mut pending);
        let publish = write(&mut from, &mut pending, t0 + ms(102)).expect("a message");
        assert!(!publish.retain, "never retained");
        assert_eq!(publish.topic, "mqtt-pulse/path/a/b");
        let read = MqttEvent::Incoming(Packet::Publish(publish));
        assert!(
            to.observe(&seen(&read), t0 + ms(105), &VecDeque::<Request>::new()),
            "the path's, not the host's"
        );

        let message = trips.try_recv().unwrap();
        assert_eq!(message.client_id.as_str(), "a", "the publishing client's");
        assert_eq!(
            message.event,
            Event::RoundTrip(RoundTrip::on_path(
                "a->b",
                1,
                RoundTripOutcome::Received(ms(3))
            ))
        );
        let counts = &events.round_trips()[0];
        assert_eq!((counts.sent, counts.outcomes), (1, [1, 0, 0, 0, 0]));
        assert_eq!(counts.to.as_ref().map(ClientId::as_str), Some("b"));
        // The same message again: a duplicate, never a second success.
        assert!(to.observe(&seen(&read), t0 + ms(106), &VecDeque::<Request>::new()));
        assert_eq!(events.round_trips()[0].outcomes, [1, 0, 0, 0, 1]);
    }

    #[test]
    fn nothing_is_sent_while_to_has_no_granted_subscription() {
        let events = Events::new();
        let path = shared(&events);
        let t0 = Instant::now();
        let (mut from, _to, mut pending) = both_up(&path, t0, SubscribeReasonCode::Failure);
        for step in 1..=5 {
            from.tick(t0 + ms(100 * step), &mut pending);
        }
        assert!(pending.is_empty(), "refused: {pending:?}");
        assert_eq!(events.round_trips()[0].sent, 0);

        // Granted, then `to` lost: sending stops again; what was on its way
        // is lost at its timeout, nothing after it.
        let (mut from, mut to, mut pending) = both_up(
            &shared(&Events::new()),
            t0,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        );
        from.tick(t0 + ms(100), &mut pending);
        assert!(write(&mut from, &mut pending, t0 + ms(101)).is_some());
        to.lost();
        for step in 2..=6 {
            from.tick(t0 + ms(100 * step), &mut pending);
        }
        assert!(pending.is_empty(), "nothing queued while to is down");
        let counts = &from.senders[0].shared.events.round_trips()[0];
        assert_eq!((counts.sent, counts.count(RoundTripOutcome::Lost)), (1, 1));
    }

    #[test]
    fn a_message_of_another_run_on_the_topic_is_consumed_but_not_counted() {
        let events = Events::new();
        let path = shared(&events);
        let t0 = Instant::now();
        let (_from, mut to, _) = both_up(&path, t0, SubscribeReasonCode::Success(QoS::AtMostOnce));
        for payload in ["mqtt-pulse/1 00000000000000aa 1 1764601200000000", "hello"] {
            let foreign = Publish::new("mqtt-pulse/path/a/b", QoS::AtMostOnce, payload);
            let event = MqttEvent::Incoming(Packet::Publish(foreign));
            assert!(to.observe(&seen(&event), t0, &VecDeque::<Request>::new()));
        }
        let other = Publish::new("host/topic", QoS::AtMostOnce, "x");
        let event = MqttEvent::Incoming(Packet::Publish(other));
        assert!(
            !to.observe(&seen(&event), t0, &VecDeque::<Request>::new()),
            "the host's own"
        );
        assert_eq!(events.round_trips()[0].outcomes, [0; 5]);
    }

    #[test]
    fn a_stopped_path_unsubscribes_and_sends_no_more() {
        let events = Events::new();
        let path = shared(&events);
        let t0 = Instant::now();
        let (mut from, mut to, mut pending) =
            both_up(&path, t0, SubscribeReasonCode::Success(QoS::AtMostOnce));
        let mut to_pending = VecDeque::new();
        to.control(PathControl::Stop(Arc::clone(&path)), t0, &mut to_pending);
        from.control(PathControl::Stop(Arc::clone(&path)), t0, &mut pending);
        assert!(
            matches!(&to_pending[0], Request::Unsubscribe(u) if u.topics == ["mqtt-pulse/path/a/b"])
        );
        assert_eq!(from.wakeup(), None);
        from.tick(t0 + ms(500), &mut pending);
        assert!(pending.is_empty());
    }
}
