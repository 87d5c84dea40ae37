//! The events hub: the pub/sub core, modelled on Elixir's `Tortoise311.Events`.
//!
//! It owns the registrations (who wants which events of which client), each
//! client's last status, and the per-kind delivery counters. It must never block
//! or await in [`Events::dispatch`]: a connection driver calls it from its event
//! loop, and a slow subscriber may cost only itself.
//!
//! # Rules
//!
//! * **Registration.** A [`Subscription`] holds any number of registrations, each a
//!   `(ClientFilter, EventKind)` pair. [`ClientFilter::Any`] is Tortoise311's `:_`:
//!   every client, including ones that appear later.
//! * **Delivery.** An event dispatched for client `c` reaches each subscription
//!   holding a registration for `(c, kind)` or `(Any, kind)` **once**, however many
//!   of its registrations match (Tortoise311 would send it twice).
//! * **Ordering.** Each subscription has one FIFO queue for all its registrations,
//!   so it sees the events of a client — of every kind — in the order they were
//!   dispatched. A connection dispatches its client's events from one task, which
//!   makes that order the order in which they happened.
//! * **Overflow.** Each queue is bounded (see [`DEFAULT_QUEUE_CAPACITY`]). An event
//!   that does not fit is dropped for that subscription only and counted, so for
//!   every subscription, and per kind over the whole hub,
//!   `delivered + dropped == dispatched to it`. Nothing vanishes uncounted.
//! * **Unregistering.** [`Subscription::unregister`] with a client id removes that
//!   registration; with [`ClientFilter::Any`] it removes *every* registration of
//!   that kind, as Tortoise311's `unregister(:_, type)` does. Removing something
//!   never registered is a no-op. Dropping the subscription removes them all;
//!   messages already queued can still be read until then.
//! * **Present state.** The hub remembers each client's last status
//!   ([`Events::status`], [`Events::clients`]) so a late subscriber can read the
//!   present, then follow changes. While a client is down it also remembers
//!   why: the reason of its latest failure ([`ClientState::reason`]), which
//!   the `Down` message carries too ([`Message::reason`]); going up clears it. The status is recorded *before* the event is
//!   queued, so a subscriber that registers and then reads the status misses
//!   nothing. Connections also count their failures by [`FailureReason`] here
//!   ([`Events::count_failure`], [`Events::failures`]); failures are counters,
//!   not events; so is each client's count of incoming publishes its
//!   connection dropped ([`Events::count_dropped_publish`], or lock-free
//!   through a [`DroppedPublishCounter`]; [`Events::dropped_publishes`]), and, for a TLS connection, when the
//!   broker certificate chain it verified last expires
//!   ([`Events::record_tls_cert_expiry`], [`Events::tls_cert_expiries`]), and
//!   the keep-alive in force on its connection ([`Events::record_keep_alive`],
//!   [`ClientState::keep_alive`]: an MQTT 5 broker may impose its own). A
//!   client whose status becomes [`Status::Terminated`] is forgotten, its
//!   counts and expiry with it.
//! * **Round trips.** [`Event::RoundTrip`] (kind [`EventKind::RoundTrip`])
//!   follows every rule above; a probe's counts (sent, and each
//!   [`RoundTripOutcome`]) and its last good round trip are counters beside
//!   it ([`Events::round_trip_counter`], [`Events::round_trips`]), forgotten
//!   with the client like the others.
//! * **End.** When every [`Events`] handle is gone, a subscription's stream ends
//!   after its queued messages.
//!
//! ```
//! use mqtt_pulse::events::{ClientFilter, ClientId, Event, EventKind, Events, Status};
//!
//! # tokio_test_runtime(async {
//! let events = Events::new();
//! let mut exporter = events.register(ClientFilter::Any, EventKind::Status);
//! exporter.register(ClientFilter::Any, EventKind::PingResponse);
//!
//! let plant = ClientId::from("plant-a");
//! events.dispatch(&plant, Event::Status(Status::Up));
//!
//! let message = exporter.recv().await.unwrap();
//! assert_eq!(message.client_id, plant);
//! assert_eq!(message.event, Event::Status(Status::Up));
//! assert_eq!(events.status("plant-a"), Some(Status::Up));
//! # });
//! # fn tokio_test_runtime(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

mod message;
mod round_trip;
mod subscription;

pub use message::{
    ClientFilter, ClientId, Event, EventKind, FailureReason, Message, RoundTrip, RoundTripOutcome,
    Status,
};
pub use round_trip::{RoundTripCounter, RoundTripCounts};
pub use subscription::{Subscription, SubscriptionStats, TryRecvError};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use subscription::Subscriber;
// Every update leaves the tables consistent (a push, a retain or an insert),
// so a poisoned lock must not turn into a panic on the event path.
use crate::sync::{lock, read, write};

/// Queue capacity of a subscription made without an explicit one: room for about
/// a second of events from a thousand clients pinging every second, while a stuck
/// reader holds at most this many messages (~64 KiB) in memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

const KINDS: usize = EventKind::ALL.len();

/// A cheap, cloneable handle on one events hub. Clones share the same hub.
#[derive(Clone)]
pub struct Events {
    hub: Arc<Hub>,
}

pub(crate) struct Hub {
    registry: RwLock<Registry>,
    statuses: Mutex<HashMap<ClientId, ClientState>>,
    failures: Mutex<BTreeMap<(ClientId, FailureReason), u64>>,
    /// Each client's shared counter: connections count into their clone
    /// without this lock; only handing out a counter, a scrape and
    /// forgetting a client take it.
    dropped_publishes: Mutex<BTreeMap<ClientId, Arc<AtomicU64>>>,
    tls_cert_expiries: Mutex<BTreeMap<ClientId, SystemTime>>,
    /// Each client's probe (path `None`) and paths' round-trip counts.
    round_trips: Mutex<BTreeMap<RoundTripKey, Arc<round_trip::Cells>>>,
    counters: [KindCounters; KINDS],
    next_subscriber_id: AtomicU64,
    default_capacity: usize,
}

/// A client and, for a path it publishes on, the path's name.
type RoundTripKey = (ClientId, Option<Arc<str>>);

/// The subscribers of each kind: first the wildcard ones, then per client id.
/// Dispatch reads it; only (un)registering writes it.
#[derive(Default)]
struct Registry {
    wildcard: PerKind<Vec<Arc<Subscriber>>>,
    by_client: HashMap<ClientId, PerKind<Vec<Arc<Subscriber>>>>,
    /// Every live subscription's hub half, registered or not, by id. The hub is
    /// the only owner of the queues' senders, so they close when it goes.
    subscribers: HashMap<u64, Arc<Subscriber>>,
}

type PerKind<T> = [T; KINDS];

#[derive(Default)]
struct KindCounters {
    dispatched: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

/// What the hub knows of a client right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientState {
    /// The client.
    pub client_id: ClientId,
    /// Its last dispatched status ([`Status::Down`] for a client announced but
    /// never connected).
    pub status: Status,
    /// When that status was dispatched (or the client announced).
    pub since: SystemTime,
    /// While [`Status::Down`]: the reason of the latest failure counted for
    /// the client ([`Events::count_failure`]) since it was last up — why it
    /// went down, or why it still cannot connect. `None` in any other status,
    /// and while down before any failure was counted.
    pub reason: Option<FailureReason>,
    /// What its connection told the hub about itself.
    pub info: ClientInfo,
    /// The keep-alive in force on its connection
    /// ([`Events::record_keep_alive`]): the one its CONNECT asks for, or,
    /// after an MQTT 5 broker imposed its Server Keep Alive in the last
    /// CONNACK, the broker's. `None` if its connection never said.
    pub keep_alive: Option<std::time::Duration>,
}

/// Static facts about a client's connection, given to [`Events::announce`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The broker it connects to, as `host:port` (the `broker` metric label).
    /// Empty when unknown.
    pub broker: Arc<str>,
    /// Extra constant labels of the client's series (say `site="north"`),
    /// sorted by name.
    pub labels: Arc<[(String, String)]>,
}

impl ClientInfo {
    /// Facts about a client connecting to `broker` (`host:port`).
    pub fn new(broker: impl Into<Arc<str>>) -> Self {
        Self {
            broker: broker.into(),
            labels: Arc::new([]),
        }
    }

    /// The same facts with these extra constant labels (sorted by name here).
    #[must_use]
    pub fn with_labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut labels: Vec<_> = labels.into_iter().collect();
        labels.sort();
        self.labels = labels.into();
        self
    }
}

/// How often one client failed for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureCount {
    /// The client.
    pub client_id: ClientId,
    /// Why it failed.
    pub reason: FailureReason,
    /// How many times, since the hub first saw it fail.
    pub count: u64,
}

/// Hub-wide counters of one event kind since the hub was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Events of this kind passed to [`Events::dispatch`].
    pub dispatched: u64,
    /// Copies queued for a subscription.
    pub delivered: u64,
    /// Copies dropped because a subscription's queue was full.
    pub dropped: u64,
}

/// One client's count of dropped incoming publishes, shared with the hub
/// that handed it out ([`Events::dropped_publish_counter`]). Clones count
/// into the same number.
#[derive(Clone, Debug)]
pub struct DroppedPublishCounter(Arc<AtomicU64>);

impl DroppedPublishCounter {
    /// Counts one dropped publish: a relaxed atomic add, no lock, so a
    /// connection dropping every publish of a busy broker does not contend
    /// with dispatch or scrapes. The count is read only at scrape time,
    /// ordered with nothing else.
    pub fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("default_capacity", &self.hub.default_capacity)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// A new, empty hub whose subscriptions queue [`DEFAULT_QUEUE_CAPACITY`] messages.
    pub fn new() -> Self {
        Self::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// A new, empty hub whose subscriptions queue up to `capacity` messages each
    /// unless made with [`Events::subscribe_with_capacity`]. A capacity of 0 is
    /// taken as 1.
    pub fn with_queue_capacity(capacity: usize) -> Self {
        Self {
            hub: Arc::new(Hub {
                registry: RwLock::default(),
                statuses: Mutex::default(),
                failures: Mutex::default(),
                dropped_publishes: Mutex::default(),
                tls_cert_expiries: Mutex::default(),
                round_trips: Mutex::default(),
                counters: Default::default(),
                next_subscriber_id: AtomicU64::new(0),
                default_capacity: capacity.max(1),
            }),
        }
    }

    /// A subscription with one registration, `(filter, kind)`, and the hub's
    /// default queue capacity. Tortoise311's `register(client_id, type)`.
    pub fn register(&self, filter: impl Into<ClientFilter>, kind: EventKind) -> Subscription {
        let mut subscription = self.subscribe();
        subscription.register(filter, kind);
        subscription
    }

    /// A subscription with no registrations yet and the hub's default capacity.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(self.hub.default_capacity)
    }

    /// A subscription with no registrations yet whose queue holds up to
    /// `capacity` messages (0 is taken as 1).
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        let id = self.hub.next_subscriber_id.fetch_add(1, Ordering::Relaxed);
        Subscription::new(&self.hub, id, capacity.max(1))
    }

    /// Delivers `event` about `client_id` to every matching subscription.
    ///
    /// Synchronous and wait-free with respect to subscribers: it takes a read lock
    /// that only (un)registering contends for, and never waits for queue space.
    /// Safe to call from any thread, inside or outside a tokio runtime.
    pub fn dispatch(&self, client_id: &ClientId, event: Event) {
        let kind = event.kind();
        let at = SystemTime::now();
        let reason = match event {
            Event::Status(status) => self.hub.record_status(client_id, status, at),
            _ => None,
        };
        let mut message = Some(Message {
            client_id: client_id.clone(),
            event,
            at,
            reason,
        });

        let k = kind.index();
        let (mut delivered, mut dropped) = (0u64, 0u64);
        {
            let registry = read(&self.hub.registry);
            let specific = registry
                .by_client
                .get(client_id.as_str())
                .into_iter()
                .flat_map(|lists| lists[k].iter())
                // A subscription that also holds the wildcard got it from there.
                .filter(|s| !s.has_wildcard(kind));
            let mut targets = registry.wildcard[k].iter().chain(specific).peekable();
            while let Some(subscriber) = targets.next() {
                // The last target gets the message itself rather than a copy.
                let copy = match targets.peek() {
                    Some(_) => message.clone(),
                    None => message.take(),
                };
                let Some(copy) = copy else { break };
                if subscriber.offer(copy) {
                    delivered += 1;
                } else {
                    dropped += 1;
                }
            }
        }

        let counters = &self.hub.counters[k];
        counters.dispatched.fetch_add(1, Ordering::Relaxed);
        if delivered > 0 {
            counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        if dropped > 0 {
            counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Makes `client_id` known before its first event, with `info` about its
    /// connection; a new client's status is [`Status::Down`] until it connects.
    /// Sends no event. Announcing a known client only replaces its info.
    pub fn announce(&self, client_id: &ClientId, info: ClientInfo) {
        lock(&self.hub.statuses)
            .entry(client_id.clone())
            .and_modify(|state| state.info = info.clone())
            .or_insert_with(|| ClientState {
                client_id: client_id.clone(),
                status: Status::Down,
                since: SystemTime::now(),
                reason: None,
                info,
                keep_alive: None,
            });
    }

    /// Records the keep-alive in force on `client_id`'s connection: the one
    /// its CONNECT asks for, then, at each CONNACK, the one the broker
    /// accepted or imposed (MQTT 5 Server Keep Alive); zero when keep-alive
    /// is off. Read in [`ClientState::keep_alive`]; like a count, never an
    /// event. A client the hub does not know (never announced, or
    /// terminated) is left unknown.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mqtt_pulse::events::{ClientId, ClientInfo, Events};
    ///
    /// let events = Events::new();
    /// let plant = ClientId::from("plant-a");
    /// events.announce(&plant, ClientInfo::new("broker:1883"));
    /// events.record_keep_alive(&plant, Duration::from_secs(2));
    /// assert_eq!(events.clients()[0].keep_alive, Some(Duration::from_secs(2)));
    /// ```
    pub fn record_keep_alive(&self, client_id: &ClientId, keep_alive: std::time::Duration) {
        if let Some(state) = lock(&self.hub.statuses).get_mut(client_id.as_str()) {
            state.keep_alive = Some(keep_alive);
        }
    }

    /// The last status dispatched for `client_id`, if the hub knows the client.
    pub fn status(&self, client_id: &str) -> Option<Status> {
        lock(&self.hub.statuses).get(client_id).map(|s| s.status)
    }

    /// Every client the hub knows (announced, or a status was dispatched for it,
    /// and not terminated since), sorted by client id.
    pub fn clients(&self) -> Vec<ClientState> {
        let mut clients: Vec<_> = lock(&self.hub.statuses)
            .values()
            .map(|state| {
                let mut state = state.clone();
                // A failure counted while up waits here for the `Down` it
                // causes; until then the client is up, with no reason shown.
                if state.status != Status::Down {
                    state.reason = None;
                }
                state
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// Counts one failed connection attempt or lost connection of `client_id`.
    /// Connection drivers call it; it is a counter, not an event, and is never
    /// queued for subscribers. It also becomes the client's present
    /// [`ClientState::reason`] — a driver counts the failure *before* it
    /// dispatches the `Down` it causes, so that message carries it.
    pub fn count_failure(&self, client_id: &ClientId, reason: FailureReason) {
        if let Some(state) = lock(&self.hub.statuses).get_mut(client_id.as_str()) {
            state.reason = Some(reason);
        }
        *lock(&self.hub.failures)
            .entry((client_id.clone(), reason))
            .or_insert(0) += 1;
    }

    /// Every non-zero failure count of the clients not terminated, sorted by
    /// client id, then reason.
    pub fn failures(&self) -> Vec<FailureCount> {
        lock(&self.hub.failures)
            .iter()
            .map(|((client_id, reason), &count)| FailureCount {
                client_id: client_id.clone(),
                reason: *reason,
                count,
            })
            .collect()
    }

    /// Counts one incoming publish that `client_id`'s connection dropped
    /// (nobody took its queue, or the queue was full); like a failure it is
    /// a counter, never an event.
    ///
    /// Each call looks the client up under a hub-wide lock. A loop that may
    /// drop every message of a busy broker should count through a
    /// [`dropped_publish_counter`](Self::dropped_publish_counter) instead, as
    /// the connections mqtt-pulse drives do.
    pub fn count_dropped_publish(&self, client_id: &ClientId) {
        self.dropped_publish_counter(client_id).count();
    }

    /// The counter of `client_id`'s dropped incoming publishes, shared with
    /// the hub: [`DroppedPublishCounter::count`] adds to what
    /// [`dropped_publishes`](Self::dropped_publishes) reports without taking
    /// any lock. Getting it takes the hub's lock once, so get it once (or at
    /// the first drop) and keep it while the client lives.
    ///
    /// It belongs to the client as the hub knows it now: once the client is
    /// terminated the hub forgets its count, and what the counter counts
    /// after that is seen by no one. A client that comes back needs a new
    /// counter.
    ///
    /// ```
    /// use mqtt_pulse::events::{ClientId, Event, Events, Status};
    ///
    /// let events = Events::new();
    /// let plant = ClientId::from("plant-a");
    /// let dropped = events.dropped_publish_counter(&plant);
    /// assert_eq!(events.dropped_publishes(), vec![]); // only once non-zero
    ///
    /// dropped.count();
    /// dropped.count();
    /// assert_eq!(events.dropped_publishes(), vec![(plant.clone(), 2)]);
    ///
    /// events.dispatch(&plant, Event::Status(Status::Terminated));
    /// dropped.count();
    /// assert_eq!(events.dropped_publishes(), vec![]);
    /// ```
    pub fn dropped_publish_counter(&self, client_id: &ClientId) -> DroppedPublishCounter {
        let mut counters = lock(&self.hub.dropped_publishes);
        let counter = match counters.get(client_id.as_str()) {
            Some(counter) => Arc::clone(counter),
            None => {
                let counter = Arc::new(AtomicU64::new(0));
                counters.insert(client_id.clone(), Arc::clone(&counter));
                counter
            }
        };
        DroppedPublishCounter(counter)
    }

    /// Every client not terminated with a non-zero count of dropped incoming
    /// publishes, sorted by client id.
    pub fn dropped_publishes(&self) -> Vec<(ClientId, u64)> {
        lock(&self.hub.dropped_publishes)
            .iter()
            .map(|(client_id, count)| (client_id.clone(), count.load(Ordering::Relaxed)))
            // A counter handed out but never counted with: no series yet.
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    /// The round-trip counter of `client_id`'s own probe (`path` `None`) or
    /// of the path named `path` that `client_id` publishes on, shared with
    /// the hub: what it counts shows in [`round_trips`](Self::round_trips)
    /// without any lock. Get it once and keep it while the client lives; as
    /// with [`dropped_publish_counter`](Self::dropped_publish_counter), the
    /// hub forgets it when the client is terminated.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use mqtt_pulse::events::{ClientId, Events, RoundTripOutcome};
    ///
    /// let events = Events::new();
    /// let plant = ClientId::from("plant-a");
    /// let probe = events.round_trip_counter(&plant, None);
    /// probe.sent();
    /// probe.record(RoundTripOutcome::Received(Duration::from_micros(150)), SystemTime::now());
    ///
    /// let counts = &events.round_trips()[0];
    /// assert_eq!((counts.sent, counts.count(RoundTripOutcome::Lost)), (1, 0));
    /// assert!(counts.last_success.is_some());
    /// ```
    pub fn round_trip_counter(&self, client_id: &ClientId, path: Option<&str>) -> RoundTripCounter {
        let key = (client_id.clone(), path.map(Arc::from));
        let mut counters = lock(&self.hub.round_trips);
        let cells = counters.entry(key).or_default();
        RoundTripCounter(Arc::clone(cells))
    }

    /// The round-trip counter of the broker-to-broker path named `name`,
    /// published through `from`'s connection and received through `to`'s:
    /// [`round_trip_counter`](Self::round_trip_counter) with the receiving
    /// client recorded, for the path's `to` label. Forget it with
    /// [`forget_path`](Self::forget_path) when the path stops; the hub also
    /// forgets it when `from` is terminated.
    ///
    /// ```
    /// use mqtt_pulse::events::{ClientId, Events};
    ///
    /// let events = Events::new();
    /// let (north, south) = (ClientId::from("north"), ClientId::from("south"));
    /// events.path_counter(&north, "north->south", &south).sent();
    /// let counts = &events.round_trips()[0];
    /// assert_eq!(counts.path.as_deref(), Some("north->south"));
    /// assert_eq!(counts.to.as_ref(), Some(&south));
    /// events.forget_path(&north, "north->south");
    /// assert!(events.round_trips().is_empty());
    /// ```
    pub fn path_counter(&self, from: &ClientId, name: &str, to: &ClientId) -> RoundTripCounter {
        let key = (from.clone(), Some(Arc::from(name)));
        let mut counters = lock(&self.hub.round_trips);
        let cells = counters
            .entry(key)
            .or_insert_with(|| Arc::new(round_trip::Cells::to(to)));
        RoundTripCounter(Arc::clone(cells))
    }

    /// Forgets the counts of the path `name` published through `from`: its
    /// series go with it.
    pub fn forget_path(&self, from: &ClientId, name: &str) {
        let key = (from.clone(), Some(Arc::from(name)));
        lock(&self.hub.round_trips).remove(&key);
    }

    /// The round-trip counts of every probe and path of the clients not
    /// terminated, sorted by client id, then path (a client's own probe
    /// first). A counter handed out but never counted with shows as zeros:
    /// a probe exists from the moment it is set up.
    pub fn round_trips(&self) -> Vec<RoundTripCounts> {
        lock(&self.hub.round_trips)
            .iter()
            .map(|((client_id, path), cells)| RoundTripCounts::read(client_id, path, cells))
            .collect()
    }

    /// Records that a TLS handshake of `client_id`'s connection verified the
    /// broker's certificate chain, whose earliest `notAfter` is `not_after`.
    /// Connection drivers call it at each verified handshake; it replaces
    /// the client's previous value and, like a count, is never an event.
    pub fn record_tls_cert_expiry(&self, client_id: &ClientId, not_after: SystemTime) {
        lock(&self.hub.tls_cert_expiries).insert(client_id.clone(), not_after);
    }

    /// Every client not terminated whose connection has verified a broker
    /// certificate chain, with that chain's expiry as last recorded, sorted
    /// by client id. A failed verification records nothing, so a value in
    /// the past stays until a valid chain is verified.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use mqtt_pulse::events::{ClientId, Event, Events, Status};
    ///
    /// let events = Events::new();
    /// let plant = ClientId::from("plant-a");
    /// let not_after = UNIX_EPOCH + Duration::from_secs(1_924_992_000); // 2031-01-01
    /// events.record_tls_cert_expiry(&plant, not_after);
    /// assert_eq!(events.tls_cert_expiries(), vec![(plant.clone(), not_after)]);
    ///
    /// events.dispatch(&plant, Event::Status(Status::Terminated));
    /// assert!(events.tls_cert_expiries().is_empty());
    /// ```
    pub fn tls_cert_expiries(&self) -> Vec<(ClientId, SystemTime)> {
        lock(&self.hub.tls_cert_expiries)
            .iter()
            .map(|(client_id, &not_after)| (client_id.clone(), not_after))
            .collect()
    }

    /// Hub-wide counters for one kind of event.
    pub fn stats(&self, kind: EventKind) -> KindStats {
        let c = &self.hub.counters[kind.index()];
        KindStats {
            dispatched: c.dispatched.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Hub {
    /// Records `status` as the client's present one and returns the reason a
    /// `Down` message carries (the failure counted just before it).
    fn record_status(
        &self,
        client_id: &ClientId,
        status: Status,
        since: SystemTime,
    ) -> Option<FailureReason> {
        let mut statuses = lock(&self.statuses);
        if status == Status::Terminated {
            statuses.remove(client_id.as_str());
            lock(&self.failures).retain(|(id, _), _| id != client_id);
            lock(&self.dropped_publishes).remove(client_id.as_str());
            lock(&self.tls_cert_expiries).remove(client_id.as_str());
            lock(&self.round_trips).retain(|(id, _), _| id != client_id);
            return None;
        }
        let state = statuses
            .entry(client_id.clone())
            .and_modify(|state| {
                state.status = status;
                state.since = since;
            })
            .or_insert_with(|| ClientState {
                client_id: client_id.clone(),
                status,
                since,
                reason: None,
                info: ClientInfo::default(),
                keep_alive: None,
            });
        // Only a client that is down has a reason to be; a failure counted
        // while it was up is the reason of the `Down` that follows.
        if status != Status::Down {
            state.reason = None;
        }
        state.reason
    }

    pub(crate) fn insert(&self, subscriber: Subscriber) {
        write(&self.registry)
            .subscribers
            .insert(subscriber.id, Arc::new(subscriber));
    }

    pub(crate) fn add(&self, id: u64, filter: &ClientFilter, kind: EventKind) {
        let mut registry = write(&self.registry);
        let Some(subscriber) = registry.subscribers.get(&id).cloned() else {
            return;
        };
        let subscriber = &subscriber;
        let k = kind.index();
        match filter {
            ClientFilter::Any => {
                if !subscriber.has_wildcard(kind) {
                    subscriber.set_wildcard(kind, true);
                    registry.wildcard[k].push(Arc::clone(subscriber));
                }
            }
            ClientFilter::Id(client_id) => {
                let list = &mut registry.by_client.entry(client_id.clone()).or_default()[k];
                if !list.iter().any(|s| s.id == subscriber.id) {
                    list.push(Arc::clone(subscriber));
                }
            }
        }
    }

    pub(crate) fn remove(&self, id: u64, filter: &ClientFilter, kind: EventKind) {
        let mut registry = write(&self.registry);
        let Some(subscriber) = registry.subscribers.get(&id).cloned() else {
            return;
        };
        let k = kind.index();
        match filter {
            ClientFilter::Any => {
                subscriber.set_wildcard(kind, false);
                registry.wildcard[k].retain(|s| s.id != subscriber.id);
                // `unregister(:_, type)` drops every registration of that type.
                registry.by_client.retain(|_, lists| {
                    lists[k].retain(|s| s.id != subscriber.id);
                    lists.iter().any(|l| !l.is_empty())
                });
            }
            ClientFilter::Id(client_id) => {
                if let Some(lists) = registry.by_client.get_mut(client_id.as_str()) {
                    lists[k].retain(|s| s.id != subscriber.id);
                    if lists.iter().all(|l| l.is_empty()) {
                        registry.by_client.remove(client_id.as_str());
                    }
                }
            }
        }
    }

    pub(crate) fn remove_all(&self, id: u64, client_ids: &[ClientId]) {
        let mut registry = write(&self.registry);
        if registry.subscribers.remove(&id).is_none() {
            return;
        }
        for k in 0..KINDS {
            registry.wildcard[k].retain(|s| s.id != id);
        }
        for client_id in client_ids {
            if let Some(lists) = registry.by_client.get_mut(client_id.as_str()) {
                lists.iter_mut().for_each(|l| l.retain(|s| s.id != id));
                if lists.iter().all(|l| l.is_empty()) {
                    registry.by_client.remove(client_id.as_str());
                }
            }
        }
    }
}
