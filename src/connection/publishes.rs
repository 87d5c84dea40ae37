//! The queue of incoming publishes between a connection's task and the
//! embedder who took it ([`Connection::take_publishes`](super::Connection::take_publishes)):
//! bounded in count *and* in bytes, because a count alone lets a broker
//! pushing 250 KB messages park 1,024 of them (256 MB) in a reader that
//! stalled.
//!
//! It owns [`Publishes`] (the embedder's end), the byte budget both ends share
//! and [`PublishSink`] (the task's end). The task's end must never wait: a
//! publish that does not fit — queue full, bytes over the bound, nobody took
//! the queue, or the reader is gone — is dropped, and the caller counts it.
//! The reader releases a publish's bytes as it receives it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rumqttc::Publish;
use tokio::sync::{mpsc, oneshot};

/// How many incoming publishes the queue holds by default.
pub const DEFAULT_PUBLISH_CAPACITY: usize = 1024;

/// How many bytes (payload + topic) the queue holds by default: 8 MiB, 32 of
/// the largest publishes a connection accepts (256 KiB).
pub const DEFAULT_PUBLISH_BYTES: usize = 8 * 1024 * 1024;

/// What a publish costs against the byte bound: what the embedder receives
/// and rumqttc holds for it, its payload and its topic.
fn cost(publish: &Publish) -> usize {
    publish.payload.len() + publish.topic.len()
}

/// The bytes queued and their bound, shared by both ends.
#[derive(Debug)]
struct Budget {
    queued: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// Takes `bytes` if they fit under the bound; never waits.
    fn reserve(&self, bytes: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(bytes)
                    .filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The receiving end of a connection's incoming publishes, from
/// [`Connection::take_publishes`](super::Connection::take_publishes).
///
/// It holds at most the configured count and bytes (payload + topic; see
/// [`ConnectionOptions::with_publish_byte_limit`](super::ConnectionOptions::with_publish_byte_limit));
/// what does not fit is dropped by the connection and counted in
/// [`Connection::dropped_publishes`](super::Connection::dropped_publishes).
/// Receiving a publish frees its room.
///
/// ```no_run
/// use mqtt_pulse::connection::{Connection, ConnectionOptions};
/// use mqtt_pulse::events::Events;
/// use mqtt_pulse::rumqttc::QoS;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let events = Events::new();
/// let options = ConnectionOptions::new("reader", "mqtt://127.0.0.1:1883")?
///     .with_publish_byte_limit(1024 * 1024);
/// let mut connection = Connection::start(options, &events)?;
/// let mut publishes = connection.take_publishes().expect("taken once");
/// connection.subscribe("sensors/#", QoS::AtMostOnce).await?;
/// while let Some(publish) = publishes.recv().await {
///     println!("{}: {} bytes", publish.topic, publish.payload.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Publishes {
    receiver: mpsc::Receiver<Publish>,
    budget: Arc<Budget>,
}

/// Why [`Publishes::try_recv`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvPublishError {
    /// Nothing is queued right now.
    #[error("no publish is queued")]
    Empty,
    /// The connection has ended and the queue is drained.
    #[error("the connection has ended")]
    Closed,
}

impl Publishes {
    /// The next publish, waiting for one; `None` once the connection has
    /// ended and the queue is drained. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Publish> {
        let publish = self.receiver.recv().await?;
        self.budget.release(cost(&publish));
        Some(publish)
    }

    /// The next publish if one is queued, without waiting.
    ///
    /// # Errors
    /// [`TryRecvPublishError::Empty`] when nothing is queued,
    /// [`TryRecvPublishError::Closed`] when nothing ever will be.
    pub fn try_recv(&mut self) -> Result<Publish, TryRecvPublishError> {
        let publish = self.receiver.try_recv().map_err(|error| match error {
            mpsc::error::TryRecvError::Empty => TryRecvPublishError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvPublishError::Closed,
        })?;
        self.budget.release(cost(&publish));
        Ok(publish)
    }

    /// How many publishes are queued.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// The bytes (payload + topic) of the queued publishes.
    pub fn queued_bytes(&self) -> usize {
        self.budget.queued.load(Ordering::Acquire)
    }

    /// The most bytes the queue holds.
    pub fn byte_limit(&self) -> usize {
        self.budget.limit
    }
}

/// The sending end, handed from the handle to the task when taken.
#[derive(Debug)]
pub(super) struct Queue {
    sender: mpsc::Sender<Publish>,
    budget: Arc<Budget>,
}

/// The handle's half until the queue is taken: its bounds and the way to
/// hand the sending end to the task.
#[derive(Debug)]
pub(super) struct Handoff {
    capacity: usize,
    byte_limit: usize,
    to_task: oneshot::Sender<Queue>,
}

impl Handoff {
    /// Makes the queue and hands its sending end to the task.
    pub(super) fn open(self) -> Publishes {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            limit: self.byte_limit,
        });
        // If the task has ended the receiver just yields `None`.
        let _ = self.to_task.send(Queue {
            sender,
            budget: Arc::clone(&budget),
        });
        Publishes { receiver, budget }
    }
}

/// Where the task puts incoming publishes.
#[derive(Debug)]
pub(super) enum PublishSink {
    /// Nobody took the queue yet: publishes are dropped.
    NotTaken(oneshot::Receiver<Queue>),
    /// The handle's queue.
    Queue(Queue),
    /// The handle went away without taking it.
    Nobody,
}

/// The two halves of a connection's publish queue, not yet made: it is
/// allocated only when an embedder takes it.
pub(super) fn handoff(capacity: usize, byte_limit: usize) -> (Handoff, PublishSink) {
    let (to_task, from_handle) = oneshot::channel();
    let handoff = Handoff {
        capacity: capacity.max(1),
        byte_limit,
        to_task,
    };
    (handoff, PublishSink::NotTaken(from_handle))
}

impl PublishSink {
    /// Queues `publish` if it fits; `false` when it was dropped. Never waits.
    pub(super) fn offer(&mut self, publish: Publish) -> bool {
        if let PublishSink::NotTaken(handoff) = self {
            match handoff.try_recv() {
                Ok(queue) => *self = PublishSink::Queue(queue),
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => *self = PublishSink::Nobody,
            }
        }
        let PublishSink::Queue(queue) = self else {
            return false;
        };
        let bytes = cost(&publish);
        // Bytes first: a publish over the bound never takes a slot.
        if !queue.budget.reserve(bytes) {
            return false;
        }
        if queue.sender.try_send(publish).is_err() {
            queue.budget.release(bytes);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn publish(payload_bytes: usize) -> Publish {
        // A 1-byte topic: each publish costs its payload plus one.
        Publish::new("t", QoS::AtMostOnce, vec![0u8; payload_bytes])
    }

    #[test]
    fn publishes_are_dropped_until_the_queue_is_taken() {
        let (handoff, mut sink) = handoff(4, 1_000);
        assert!(!sink.offer(publish(10)));
        let mut publishes = handoff.open();
        assert!(sink.offer(publish(10)));
        assert_eq!(publishes.try_recv().unwrap().payload.len(), 10);
    }

    #[test]
    fn the_queue_never_holds_more_bytes_than_its_bound() {
        let (handoff, mut sink) = handoff(100, 1_000);
        let mut publishes = handoff.open();
        let queued = (0..20).filter(|_| sink.offer(publish(199))).count();
        assert_eq!(queued, 5);
        assert_eq!(publishes.queued_bytes(), 1_000);
        assert!(
            !sink.offer(publish(0)),
            "a 1-byte publish is over the bound"
        );

        // Receiving frees exactly what the publish cost.
        publishes.try_recv().unwrap();
        assert_eq!(publishes.queued_bytes(), 800);
        assert!(sink.offer(publish(199)));
        assert!(!sink.offer(publish(0)));
    }

    #[test]
    fn a_publish_larger_than_the_bound_is_dropped_even_when_the_queue_is_empty() {
        let (handoff, mut sink) = handoff(100, 1_000);
        let publishes = handoff.open();
        assert!(!sink.offer(publish(1_000)));
        assert_eq!(publishes.queued_bytes(), 0);
        assert!(publishes.is_empty());
    }

    #[test]
    fn a_full_queue_gives_the_bytes_of_a_dropped_publish_back() {
        let (handoff, mut sink) = handoff(2, 1_000);
        let mut publishes = handoff.open();
        assert!(sink.offer(publish(9)));
        assert!(sink.offer(publish(9)));
        assert!(!sink.offer(publish(9)));
        assert_eq!(publishes.queued_bytes(), 20);
        assert_eq!(publishes.len(), 2);
        publishes.try_recv().unwrap();
        publishes.try_recv().unwrap();
        assert_eq!(publishes.queued_bytes(), 0);
        assert_eq!(publishes.try_recv(), Err(TryRecvPublishError::Empty));
    }

    #[test]
    fn a_dropped_reader_makes_every_later_publish_a_drop() {
        let (handoff, mut sink) = handoff(4, 1_000);
        drop(handoff.open());
        assert!(!sink.offer(publish(1)));
    }

    #[test]
    fn a_handle_gone_without_taking_the_queue_makes_every_publish_a_drop() {
        let (handoff, mut sink) = handoff(4, 1_000);
        drop(handoff);
        assert!(!sink.offer(publish(1)));
        assert!(matches!(sink, PublishSink::Nobody));
    }
}
