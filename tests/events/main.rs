//! The rules of the events hub (see the module doc of `mqtt_pulse::events`), one
//! test per behaviour, plus a model-based property test over random operation
//! sequences. No test sleeps to synchronise: queues are read with `try_recv`, or
//! with `recv` guarded by a timeout that only turns a hang into a failure.

mod concurrency;
mod delivery;
mod model;
mod overflow;
mod state;
mod stream;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use mqtt_pulse::events::{
    ClientId, Event, KindStats, Message, Status, Subscription, SubscriptionStats,
};

const GUARD: Duration = Duration::from_secs(10);

fn id(s: &str) -> ClientId {
    ClientId::from(s)
}

fn ping(micros: u64) -> Event {
    Event::PingResponse(Duration::from_micros(micros))
}

fn status(s: Status) -> Event {
    Event::Status(s)
}

/// A message without its timestamp, for comparisons.
fn strip(message: Message) -> (ClientId, Event) {
    (message.client_id, message.event)
}

/// Everything queued right now, in order; stops at the first `Empty`/`Closed`.
fn drain(sub: &mut Subscription) -> Vec<(ClientId, Event)> {
    std::iter::from_fn(|| sub.try_recv().ok())
        .map(strip)
        .collect()
}

/// `recv`, failing the test instead of hanging if nothing ever comes.
async fn recv(sub: &mut Subscription) -> Option<Message> {
    tokio::time::timeout(GUARD, sub.recv())
        .await
        .expect("recv() did not complete in time")
}

/// The `Stream` impl's next item (there is no `futures` crate to provide `next()`).
fn next<S: Stream + Unpin>(stream: &mut S) -> impl Future<Output = Option<S::Item>> + '_ {
    poll_fn(move |cx| Pin::new(&mut *stream).poll_next(cx))
}

async fn next_guarded(sub: &mut Subscription) -> Option<Message> {
    tokio::time::timeout(GUARD, next(sub))
        .await
        .expect("the stream did not yield in time")
}

fn sub_stats(delivered: u64, dropped: u64) -> SubscriptionStats {
    SubscriptionStats { delivered, dropped }
}

fn kind_stats(dispatched: u64, delivered: u64, dropped: u64) -> KindStats {
    KindStats {
        dispatched,
        delivered,
        dropped,
    }
}
