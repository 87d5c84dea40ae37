//! Registration and delivery: who gets which event, once, and what
//! unregistering and dropping a subscription stop.

use std::time::SystemTime;

use mqtt_pulse::events::{ClientFilter, EventKind, Events, Status, TryRecvError};

use crate::{drain, id, kind_stats, ping, recv, status, sub_stats};

#[tokio::test]
async fn a_registered_subscriber_receives_the_dispatched_event() {
    let events = Events::new();
    let plant = id("plant-a");
    let mut sub = events.register(&plant, EventKind::Status);

    let before = SystemTime::now();
    events.dispatch(&plant, status(Status::Up));
    let after = SystemTime::now();

    let message = recv(&mut sub).await.expect("a message");
    assert_eq!(message.client_id, plant);
    assert_eq!(message.event, status(Status::Up));
    assert!(before <= message.at && message.at <= after);
    assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(sub.stats(), sub_stats(1, 0));
    assert_eq!(events.stats(EventKind::Status), kind_stats(1, 1, 0));
}

#[test]
fn a_registration_for_one_client_ignores_other_clients() {
    let events = Events::new();
    let mut only_a = events.register("a", EventKind::Status);

    events.dispatch(&id("b"), status(Status::Up));
    events.dispatch(&id("ab"), status(Status::Up));
    events.dispatch(&id("a"), status(Status::Down));

    assert_eq!(drain(&mut only_a), vec![(id("a"), status(Status::Down))]);
    assert_eq!(only_a.stats(), sub_stats(1, 0));
    // Events nobody registered for are counted as dispatched, never as dropped.
    assert_eq!(events.stats(EventKind::Status), kind_stats(3, 1, 0));
}

#[test]
fn a_status_only_subscriber_gets_no_ping_responses() {
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let plant = id("plant");

    events.dispatch(&plant, status(Status::Up));
    events.dispatch(&plant, ping(1500));
    events.dispatch(&plant, status(Status::Down));

    assert_eq!(
        drain(&mut statuses),
        vec![
            (plant.clone(), status(Status::Up)),
            (plant.clone(), status(Status::Down)),
        ]
    );
    assert_eq!(drain(&mut pings), vec![(plant.clone(), ping(1500))]);
    assert_eq!(events.stats(EventKind::Status), kind_stats(2, 2, 0));
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(1, 1, 0));
}

#[test]
fn the_wildcard_receives_every_client_including_later_ones() {
    let events = Events::new();
    events.dispatch(&id("early"), status(Status::Up)); // before anyone listens
    let mut all = events.register(ClientFilter::Any, EventKind::Status);

    events.dispatch(&id("early"), status(Status::Down));
    for n in 0..5 {
        events.dispatch(&id(&format!("late-{n}")), status(Status::Up));
    }

    let mut expected = vec![(id("early"), status(Status::Down))];
    expected.extend((0..5).map(|n| (id(&format!("late-{n}")), status(Status::Up))));
    assert_eq!(drain(&mut all), expected);
}

#[test]
fn overlapping_registrations_deliver_one_copy() {
    let events = Events::new();
    let plant = id("plant");
    let mut sub = events.register(&plant, EventKind::Status);
    sub.register(ClientFilter::Any, EventKind::Status);
    sub.register(&plant, EventKind::PingResponse);
    sub.register(ClientFilter::Any, EventKind::PingResponse);

    events.dispatch(&plant, status(Status::Up));
    events.dispatch(&plant, ping(7));
    events.dispatch(&id("other"), status(Status::Up));

    assert_eq!(
        drain(&mut sub),
        vec![
            (plant.clone(), status(Status::Up)),
            (plant.clone(), ping(7)),
            (id("other"), status(Status::Up)),
        ]
    );
    assert_eq!(sub.stats(), sub_stats(3, 0));
    assert_eq!(events.stats(EventKind::Status), kind_stats(2, 2, 0));
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(1, 1, 0));
}

#[test]
fn overlap_registered_wildcard_first_also_delivers_one_copy() {
    let events = Events::new();
    let plant = id("plant");
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    sub.register(&plant, EventKind::Status);

    events.dispatch(&plant, status(Status::Up));

    assert_eq!(drain(&mut sub), vec![(plant, status(Status::Up))]);
    assert_eq!(sub.stats(), sub_stats(1, 0));
}

#[test]
fn unregistering_the_wildcard_removes_every_registration_of_that_kind() {
    let events = Events::new();
    let (a, b) = (id("a"), id("b"));
    let mut sub = events.register(&a, EventKind::Status);
    sub.register(&b, EventKind::Status);
    sub.register(ClientFilter::Any, EventKind::Status);
    sub.register(&a, EventKind::PingResponse);

    sub.unregister(ClientFilter::Any, EventKind::Status);

    // As Tortoise311's `unregister(:_, type)`: the specific ones are gone too...
    events.dispatch(&a, status(Status::Up));
    events.dispatch(&b, status(Status::Up));
    events.dispatch(&id("c"), status(Status::Up));
    // ...but registrations of the other kind stay.
    events.dispatch(&a, ping(3));

    assert_eq!(drain(&mut sub), vec![(a.clone(), ping(3))]);
    let held: Vec<_> = sub.registrations().cloned().collect();
    assert_eq!(
        held,
        vec![(ClientFilter::from(&a), EventKind::PingResponse)]
    );
    assert_eq!(events.stats(EventKind::Status), kind_stats(3, 0, 0));

    // Registering again after the wildcard unregister works as before.
    sub.register(&b, EventKind::Status);
    events.dispatch(&b, status(Status::Down));
    assert_eq!(drain(&mut sub), vec![(b, status(Status::Down))]);
}

#[test]
fn unregistering_a_client_id_leaves_the_wildcard() {
    let events = Events::new();
    let plant = id("plant");
    let mut sub = events.register(&plant, EventKind::Status);
    sub.register(ClientFilter::Any, EventKind::Status);

    sub.unregister(&plant, EventKind::Status);
    events.dispatch(&plant, status(Status::Up));
    events.dispatch(&id("other"), status(Status::Up));

    assert_eq!(
        drain(&mut sub),
        vec![
            (plant.clone(), status(Status::Up)),
            (id("other"), status(Status::Up)),
        ]
    );
    let held: Vec<_> = sub.registrations().cloned().collect();
    assert_eq!(held, vec![(ClientFilter::Any, EventKind::Status)]);
}

#[test]
fn unregistering_a_client_id_stops_its_events() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::Status);
    sub.register("b", EventKind::Status);

    sub.unregister("a", EventKind::Status);
    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("b"), status(Status::Up));

    assert_eq!(drain(&mut sub), vec![(id("b"), status(Status::Up))]);
}

#[test]
fn unregistering_what_was_never_registered_is_a_no_op() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::Status);
    let mut other = events.register("x", EventKind::Status);
    other.register(ClientFilter::Any, EventKind::PingResponse);

    // Another client, another kind, the wildcard of a kind never held: nothing changes.
    sub.unregister("x", EventKind::Status);
    sub.unregister("a", EventKind::PingResponse);
    sub.unregister(ClientFilter::Any, EventKind::PingResponse);
    // A subscription with no registrations at all.
    let mut empty = events.subscribe();
    empty.unregister("a", EventKind::Status);
    empty.unregister(ClientFilter::Any, EventKind::Status);

    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("x"), status(Status::Up));
    events.dispatch(&id("a"), ping(1));

    assert_eq!(drain(&mut sub), vec![(id("a"), status(Status::Up))]);
    assert_eq!(
        drain(&mut other),
        vec![(id("x"), status(Status::Up)), (id("a"), ping(1))]
    );
    assert_eq!(drain(&mut empty), vec![]);
    let held: Vec<_> = sub.registrations().cloned().collect();
    assert_eq!(held, vec![(ClientFilter::from("a"), EventKind::Status)]);
}

#[test]
fn registering_twice_is_the_same_as_once() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::Status);
    sub.register("a", EventKind::Status);
    sub.register(ClientFilter::Any, EventKind::PingResponse);
    sub.register(ClientFilter::Any, EventKind::PingResponse);
    assert_eq!(sub.registrations().count(), 2);

    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("a"), ping(9));
    assert_eq!(
        drain(&mut sub),
        vec![(id("a"), status(Status::Up)), (id("a"), ping(9))]
    );

    // One unregister undoes both registrations.
    sub.unregister("a", EventKind::Status);
    events.dispatch(&id("a"), status(Status::Down));
    assert_eq!(drain(&mut sub), vec![]);
    assert_eq!(sub.stats(), sub_stats(2, 0));
}

#[test]
fn dropping_a_subscription_unregisters_everything() {
    let events = Events::new();
    let plant = id("plant");
    let mut gone = events.register(&plant, EventKind::Status);
    gone.register(ClientFilter::Any, EventKind::Status);
    gone.register(ClientFilter::Any, EventKind::PingResponse);
    gone.register(&plant, EventKind::PingResponse);
    let mut stays = events.register(ClientFilter::Any, EventKind::Status);

    events.dispatch(&plant, status(Status::Up));
    events.dispatch(&plant, ping(1));
    assert_eq!(events.stats(EventKind::Status), kind_stats(1, 2, 0));
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(1, 1, 0));

    drop(gone);
    events.dispatch(&plant, status(Status::Down));
    events.dispatch(&plant, ping(2));

    // Only `stays` got the new status; nobody got the new ping.
    assert_eq!(events.stats(EventKind::Status), kind_stats(2, 3, 0));
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(2, 1, 0));
    assert_eq!(
        drain(&mut stays),
        vec![
            (plant.clone(), status(Status::Up)),
            (plant.clone(), status(Status::Down)),
        ]
    );

    // The same filters still work for a fresh subscriber.
    let mut fresh = events.register(&plant, EventKind::PingResponse);
    events.dispatch(&plant, ping(3));
    assert_eq!(drain(&mut fresh), vec![(plant, ping(3))]);
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(3, 2, 0));
}

#[test]
fn messages_queued_before_unregistering_can_still_be_read() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    sub.register("a", EventKind::PingResponse);
    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("a"), ping(5));

    sub.unregister(ClientFilter::Any, EventKind::Status);
    sub.unregister("a", EventKind::PingResponse);
    events.dispatch(&id("a"), status(Status::Down));
    events.dispatch(&id("a"), ping(6));

    assert_eq!(sub.len(), 2);
    assert_eq!(
        drain(&mut sub),
        vec![(id("a"), status(Status::Up)), (id("a"), ping(5))]
    );
    assert!(sub.is_empty());
}
