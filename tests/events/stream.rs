//! End of stream, the `Stream` impl, and waking a waiting receiver.

use mqtt_pulse::events::{ClientFilter, EventKind, Events, Status, TryRecvError};

use crate::{id, next_guarded, ping, recv, status, strip};

#[tokio::test]
async fn the_stream_ends_after_queued_messages_when_every_handle_is_dropped() {
    let events = Events::new();
    let clone = events.clone();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("a"), status(Status::Down));

    drop(events);
    // One handle is left: the hub lives on and the stream is open.
    clone.dispatch(&id("a"), status(Status::Up));
    assert_eq!(sub.len(), 3);
    drop(clone);

    let mut got = Vec::new();
    while let Some(message) = recv(&mut sub).await {
        got.push(strip(message));
    }
    assert_eq!(
        got,
        vec![
            (id("a"), status(Status::Up)),
            (id("a"), status(Status::Down)),
            (id("a"), status(Status::Up)),
        ]
    );
    assert!(recv(&mut sub).await.is_none(), "stays ended");
}

#[test]
fn try_recv_reports_closed_once_the_hub_is_gone_and_drained() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::PingResponse);
    let mut idle = events.subscribe(); // no registrations at all
    assert_eq!(idle.try_recv(), Err(TryRecvError::Empty));
    events.dispatch(&id("a"), ping(1));
    drop(events);

    assert_eq!(sub.try_recv().map(strip), Ok((id("a"), ping(1))));
    assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(idle.try_recv(), Err(TryRecvError::Closed));
    // Registering with a hub that is gone is harmless and changes nothing.
    sub.register(ClientFilter::Any, EventKind::Status);
    sub.unregister("a", EventKind::PingResponse);
    assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
}

#[tokio::test]
async fn a_waiting_receiver_ends_when_the_hub_is_dropped() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    let waiter = tokio::spawn(async move { (recv(&mut sub).await.map(strip), sub) });
    tokio::task::yield_now().await;
    drop(events);
    let (got, _sub) = waiter.await.unwrap();
    assert_eq!(got, None);
}

#[tokio::test]
async fn the_stream_yields_the_same_messages_as_recv() {
    let events = Events::new();
    let mut by_recv = events.register(ClientFilter::Any, EventKind::Status);
    by_recv.register(ClientFilter::Any, EventKind::PingResponse);
    let mut by_stream = events.register(ClientFilter::Any, EventKind::Status);
    by_stream.register(ClientFilter::Any, EventKind::PingResponse);

    for n in 0..20 {
        let client = id(&format!("c{}", n % 3));
        let event = if n % 4 == 0 {
            status(Status::Up)
        } else {
            ping(n)
        };
        events.dispatch(&client, event);
    }
    drop(events);

    let mut from_recv = Vec::new();
    while let Some(message) = recv(&mut by_recv).await {
        from_recv.push(message);
    }
    let mut from_stream = Vec::new();
    while let Some(message) = next_guarded(&mut by_stream).await {
        from_stream.push(message);
    }
    assert_eq!(from_recv.len(), 20);
    // Same messages, same timestamps: one dispatch, one `at`.
    assert_eq!(from_stream, from_recv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receiver_wakes_for_an_event_dispatched_from_another_thread() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::PingResponse);
    let mut streamed = events.register("a", EventKind::PingResponse);
    let waiter = tokio::spawn(async move {
        let first = recv(&mut sub).await.map(strip);
        let second = next_guarded(&mut streamed).await.map(strip);
        (first, second)
    });
    let dispatcher = {
        let events = events.clone();
        std::thread::spawn(move || events.dispatch(&id("a"), ping(42)))
    };
    dispatcher.join().unwrap();
    let (first, second) = waiter.await.unwrap();
    assert_eq!(first, Some((id("a"), ping(42))));
    assert_eq!(second, Some((id("a"), ping(42))));
}
