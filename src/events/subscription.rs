//! A subscriber's side of the hub: its bounded queue, its registrations and its
//! counters. The hub's side ([`Subscriber`]) only ever `try_send`s into the queue.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::{ClientFilter, ClientId, EventKind, Hub, Message};

/// The half of a subscription that lives in the hub's registry. Only the hub
/// holds it, so the queue's sender lives exactly as long as the hub: when the
/// last [`Events`](super::Events) handle goes, the subscription's stream ends.
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    tx: mpsc::Sender<Message>,
    // One bit per kind this subscriber holds the wildcard for. Written only under
    // the registry's write lock and read under its read lock, so Relaxed suffices.
    wildcard_kinds: AtomicU8,
    counters: Arc<Counters>,
}

/// The drop counter, shared by both halves so it outlives the hub. Deliveries
/// are counted on the receiving side instead (received + still queued), which
/// keeps an atomic write per subscriber off the dispatch path.
#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
}

impl Subscriber {
    /// Queues a copy of `message` if there is room; counts a drop otherwise.
    pub(crate) fn offer(&self, message: Message) -> bool {
        if self.tx.try_send(message).is_ok() {
            true
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    pub(crate) fn has_wildcard(&self, kind: EventKind) -> bool {
        self.wildcard_kinds.load(Ordering::Relaxed) & kind.bit() != 0
    }

    pub(crate) fn set_wildcard(&self, kind: EventKind, on: bool) {
        if on {
            self.wildcard_kinds.fetch_or(kind.bit(), Ordering::Relaxed);
        } else {
            self.wildcard_kinds
                .fetch_and(!kind.bit(), Ordering::Relaxed);
        }
    }
}

/// A registration holder and its queue of [`Message`]s: Tortoise311's mailbox.
///
/// Read it with [`recv`](Subscription::recv), [`try_recv`](Subscription::try_recv)
/// or as a [`Stream`](futures_core::Stream). Dropping it unregisters everything.
///
/// ```
/// use mqtt_pulse::events::{ClientFilter, ClientId, Event, EventKind, Events, Status, TryRecvError};
///
/// let events = Events::new();
/// let plant = ClientId::from("plant-a");
/// let mut sub = events.register(&plant, EventKind::Status);
/// sub.register(ClientFilter::Any, EventKind::Status); // overlaps: still one copy
///
/// events.dispatch(&plant, Event::Status(Status::Up));
/// assert_eq!(sub.try_recv().unwrap().event, Event::Status(Status::Up));
/// assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
///
/// sub.unregister(ClientFilter::Any, EventKind::Status); // removes both registrations
/// events.dispatch(&plant, Event::Status(Status::Down));
/// assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
/// ```
pub struct Subscription {
    hub: Weak<Hub>,
    // The hub owns the `Subscriber` (and the sender); holding it here would keep
    // the queue open after the hub is gone.
    id: u64,
    counters: Arc<Counters>,
    rx: mpsc::Receiver<Message>,
    /// Messages handed out so far: with what is still queued, the deliveries.
    received: u64,
    registrations: HashSet<(ClientFilter, EventKind)>,
}

/// Counters of one subscription. `delivered + dropped` is every event that
/// matched its registrations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Messages queued for this subscription.
    pub delivered: u64,
    /// Messages dropped because its queue was full.
    pub dropped: u64,
}

/// Why [`Subscription::try_recv`] returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// The queue is empty right now.
    #[error("no message is queued")]
    Empty,
    /// The hub is gone and the queue is drained: no message will ever come.
    #[error("the events hub is gone")]
    Closed,
}

impl Subscription {
    pub(crate) fn new(hub: &Arc<Hub>, id: u64, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let counters = Arc::new(Counters::default());
        hub.insert(Subscriber {
            id,
            tx,
            wildcard_kinds: AtomicU8::new(0),
            counters: Arc::clone(&counters),
        });
        Self {
            hub: Arc::downgrade(hub),
            id,
            counters,
            rx,
            received: 0,
            registrations: HashSet::new(),
        }
    }

    /// Adds a registration: events of `kind` about the clients `filter` covers
    /// are queued here from now on. Registering twice is the same as once.
    pub fn register(&mut self, filter: impl Into<ClientFilter>, kind: EventKind) {
        let filter = filter.into();
        let Some(hub) = self.hub.upgrade() else {
            return; // no hub, no events: nothing to register with
        };
        hub.add(self.id, &filter, kind);
        self.registrations.insert((filter, kind));
    }

    /// Removes a registration, as Tortoise311's `unregister(client_id, type)`.
    /// With [`ClientFilter::Any`] it removes every registration of `kind`, the
    /// specific ones too. Removing a registration not held is a no-op.
    pub fn unregister(&mut self, filter: impl Into<ClientFilter>, kind: EventKind) {
        let filter = filter.into();
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id, &filter, kind);
        }
        match filter {
            ClientFilter::Any => self.registrations.retain(|(_, k)| *k != kind),
            specific => {
                self.registrations.remove(&(specific, kind));
            }
        }
    }

    /// The registrations this subscription holds.
    pub fn registrations(&self) -> impl Iterator<Item = &(ClientFilter, EventKind)> {
        self.registrations.iter()
    }

    /// The next message, waiting for one if the queue is empty. `None` once the
    /// hub is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.rx.recv().await;
        self.received += u64::from(message.is_some());
        message
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        let message = self.rx.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Closed,
        })?;
        self.received += 1;
        Ok(message)
    }

    /// How many messages are waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The most messages the queue holds before new ones are dropped.
    pub fn capacity(&self) -> usize {
        self.rx.max_capacity()
    }

    /// This subscription's delivery counters. `delivered` counts what was
    /// received plus what is still queued.
    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            delivered: self.received + self.rx.len() as u64,
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = polled {
            self.received += 1;
        }
        polled
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("registrations", &self.registrations)
            .field("queued", &self.rx.len())
            .field("capacity", &self.rx.max_capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let client_ids: Vec<ClientId> = self
                .registrations
                .iter()
                .filter_map(|(filter, _)| match filter {
                    ClientFilter::Id(id) => Some(id.clone()),
                    ClientFilter::Any => None,
                })
                .collect();
            hub.remove_all(self.id, &client_ids);
        }
    }
}
