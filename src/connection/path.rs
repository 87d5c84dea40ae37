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

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    Event as MqttEvent, Outgoing, Packet, Publish, QoS, Request, Subscribe, SubscribeReasonCode,
    Unsubscribe,
};
use tokio::sync::mpsc;

use super::path_options::PathOptions;
use super::round_trip::{RoundTrips, decode};
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
        if let Some((key, problem)) = options.problem(keep_alive) {
            return Err(OptionsError::Path { key, problem });
        }
        let name: Arc<str> = Arc::from(options.name());
        let shared = Arc::new(Shared {
            topic: options
                .topic_for(from.client_id().as_str(), to.client_id().as_str())
                .into(),
            qos: options.qos(),
            interval: options.interval(keep_alive),
            trips: std::sync::Mutex::new(RoundTrips::new(options.timeout(keep_alive))),
            receiving: AtomicBool::new(false),
            counter: events.path_counter(from.client_id(), &name, to.client_id()),
            from: from.client_id().clone(),
            events: events.clone(),
            name,
        });
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

    fn tick(&mut self, now: Instant, pending: &mut VecDeque<Request>) {
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
            pending.push_back(Request::Publish(publish));
        }
    }

    /// A PUBLISH was written: the oldest of this path's messages no longer
    /// pending, if any, is the one (rumqttc writes one pending request per
    /// poll and says so; see the probe's `prober` module).
    fn outgoing_publish(&self, now: Instant, pending: &VecDeque<Request>) {
        let shared = &self.shared;
        let mut trips = lock(&shared.trips);
        let Some(seq) = trips.unwritten().next() else {
            return;
        };
        let still_pending = pending.iter().any(|request| match request {
            Request::Publish(publish) if *publish.topic == *shared.topic => {
                decode(&publish.payload).is_some_and(|(_, pending_seq)| pending_seq == seq)
            }
            _ => false,
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
    fn subscribe(&mut self, pending: &mut VecDeque<Request>) {
        let shared = &self.shared;
        pending.push_back(Request::Subscribe(Subscribe::new(
            shared.topic.as_ref(),
            shared.qos,
        )));
        self.subscription = Subscription::Queued;
        shared.receiving.store(false, Ordering::Release);
    }

    fn still_pending(&self, pending: &VecDeque<Request>) -> bool {
        pending.iter().any(|request| {
            matches!(request, Request::Subscribe(subscribe)
                if subscribe.filters.iter().any(|f| *f.path == *self.shared.topic))
        })
    }

    fn set(&mut self, subscription: Subscription) {
        self.subscription = subscription;
        let granted = subscription == Subscription::Granted;
        self.shared.receiving.store(granted, Ordering::Release);
    }

    /// A PUBLISH on the path's topic arrived at `now`: `true` if it was one
    /// of this path's messages (this run's; another path on the same topic,
    /// or an earlier run, is not).
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
        pending: &mut VecDeque<Request>,
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
                    pending.push_back(Request::Unsubscribe(Unsubscribe::new(
                        shared.topic.as_ref(),
                    )));
                }
            }
        }
    }

    /// The broker accepted CONNECT at `now`.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        session_present: bool,
        pending: &mut VecDeque<Request>,
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
    pub(crate) fn tick(&mut self, now: Instant, pending: &mut VecDeque<Request>) {
        for sender in &mut self.senders {
            sender.tick(now, pending);
        }
    }

    /// Feeds one event `poll()` returned at `now`; `true` when it was an
    /// incoming message of a path, which is the path's alone.
    pub(crate) fn observe(
        &mut self,
        event: &MqttEvent,
        now: Instant,
        pending: &VecDeque<Request>,
    ) -> bool {
        match event {
            MqttEvent::Outgoing(Outgoing::Publish(_)) => {
                for sender in &self.senders {
                    sender.outgoing_publish(now, pending);
                }
                false
            }
            MqttEvent::Outgoing(Outgoing::Subscribe(pkid)) => {
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
            MqttEvent::Incoming(Packet::SubAck(suback)) => {
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
            MqttEvent::Incoming(Packet::Publish(publish)) => {
                let mut ours = false;
                for receiver in &self.receivers {
                    if *publish.topic == *receiver.shared.topic
                        && receiver.arrived(&publish.payload, now)
                    {
                        ours = true;
                        break;
                    }
                }
                ours
            }
            _ => false,
        }
    }
}
