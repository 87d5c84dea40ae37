//! Ordering and overflow: dispatch order per subscription, full queues that
//! drop and count the excess, queue capacities.

use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};

use crate::{drain, id, kind_stats, ping, status, sub_stats};

#[test]
fn one_subscription_sees_a_clients_mixed_events_in_dispatch_order() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    sub.register(ClientFilter::Any, EventKind::PingResponse);
    let (a, b) = (id("a"), id("b"));

    let sent = vec![
        (a.clone(), status(Status::Up)),
        (a.clone(), ping(10)),
        (b.clone(), ping(20)),
        (a.clone(), ping(11)),
        (a.clone(), status(Status::Down)),
        (b.clone(), status(Status::Up)),
        (a.clone(), status(Status::Up)),
        (a.clone(), ping(12)),
    ];
    for (client, event) in &sent {
        events.dispatch(client, event.clone());
    }

    assert_eq!(drain(&mut sub), sent);
}

#[test]
fn a_full_queue_drops_the_excess_and_counts_it() {
    const N: usize = 4;
    let events = Events::new();
    let mut stuck = events.subscribe_with_capacity(N);
    stuck.register(ClientFilter::Any, EventKind::Status);
    stuck.register(ClientFilter::Any, EventKind::PingResponse);
    let mut roomy = events.subscribe_with_capacity(100);
    roomy.register(ClientFilter::Any, EventKind::PingResponse);
    assert_eq!(stuck.capacity(), N);

    let plant = id("plant");
    let sent: Vec<Event> = (0..10).map(ping).chain([status(Status::Up)]).collect();
    for event in &sent {
        events.dispatch(&plant, event.clone());
    }

    // The first N fit; everything after was dropped for `stuck` only.
    assert_eq!(stuck.len(), N);
    assert_eq!(stuck.stats(), sub_stats(N as u64, 7));
    assert_eq!(roomy.stats(), sub_stats(10, 0));
    // Per kind hub-wide, delivered + dropped == copies dispatched to subscribers:
    // pings went to two subscribers (10 + 10), the status to one.
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(10, 14, 6));
    assert_eq!(events.stats(EventKind::Status), kind_stats(1, 0, 1));

    let expected: Vec<_> = sent[..N]
        .iter()
        .map(|e| (plant.clone(), e.clone()))
        .collect();
    assert_eq!(drain(&mut stuck), expected);
    let all_pings: Vec<_> = sent[..10]
        .iter()
        .map(|e| (plant.clone(), e.clone()))
        .collect();
    assert_eq!(drain(&mut roomy), all_pings);

    // A drained queue has room again.
    events.dispatch(&plant, status(Status::Down));
    assert_eq!(drain(&mut stuck), vec![(plant, status(Status::Down))]);
    assert_eq!(stuck.stats(), sub_stats(N as u64 + 1, 7));
}

#[test]
fn a_capacity_of_zero_is_taken_as_one() {
    let events = Events::new();
    let mut sub = events.subscribe_with_capacity(0);
    assert_eq!(sub.capacity(), 1);
    sub.register(ClientFilter::Any, EventKind::Status);
    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("a"), status(Status::Down));
    assert_eq!(sub.stats(), sub_stats(1, 1));
    assert_eq!(drain(&mut sub), vec![(id("a"), status(Status::Up))]);

    let tiny = Events::with_queue_capacity(0);
    assert_eq!(tiny.subscribe().capacity(), 1);
    assert_eq!(tiny.register("a", EventKind::Status).capacity(), 1);
}

#[test]
fn subscriptions_take_the_hubs_default_capacity() {
    assert_eq!(
        Events::new().subscribe().capacity(),
        mqtt_pulse::events::DEFAULT_QUEUE_CAPACITY
    );
    let events = Events::with_queue_capacity(3);
    assert_eq!(events.subscribe().capacity(), 3);
    assert_eq!(
        events
            .register(ClientFilter::Any, EventKind::Status)
            .capacity(),
        3
    );
    assert_eq!(events.subscribe_with_capacity(7).capacity(), 7);
}
