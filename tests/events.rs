//! The rules of the events hub (see the module doc of `mqtt_pulse::events`), one
//! test per behaviour, plus a model-based property test over random operation
//! sequences. No test sleeps to synchronise: queues are read with `try_recv`, or
//! with `recv` guarded by a timeout that only turns a hang into a failure.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures_core::Stream;
use mqtt_pulse::events::{
    ClientFilter, ClientId, ClientInfo, Event, EventKind, Events, FailureCount, FailureReason,
    KindStats, Message, Status, Subscription, SubscriptionStats, TryRecvError,
};
use proptest::prelude::*;

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

// ---------------------------------------------------------------------------
// Registration and delivery
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Ordering and overflow
// ---------------------------------------------------------------------------

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
        events.dispatch(client, *event);
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
        events.dispatch(&plant, *event);
    }

    // The first N fit; everything after was dropped for `stuck` only.
    assert_eq!(stuck.len(), N);
    assert_eq!(stuck.stats(), sub_stats(N as u64, 7));
    assert_eq!(roomy.stats(), sub_stats(10, 0));
    // Per kind hub-wide, delivered + dropped == copies dispatched to subscribers:
    // pings went to two subscribers (10 + 10), the status to one.
    assert_eq!(events.stats(EventKind::PingResponse), kind_stats(10, 14, 6));
    assert_eq!(events.stats(EventKind::Status), kind_stats(1, 0, 1));

    let expected: Vec<_> = sent[..N].iter().map(|e| (plant.clone(), *e)).collect();
    assert_eq!(drain(&mut stuck), expected);
    let all_pings: Vec<_> = sent[..10].iter().map(|e| (plant.clone(), *e)).collect();
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

// ---------------------------------------------------------------------------
// Present state
// ---------------------------------------------------------------------------

#[test]
fn the_hub_remembers_each_clients_last_status() {
    let events = Events::new();
    assert_eq!(events.status("b"), None);
    assert_eq!(events.clients(), vec![]);

    let before = SystemTime::now();
    events.dispatch(&id("b"), status(Status::Up));
    events.dispatch(&id("a"), status(Status::Up));
    events.dispatch(&id("b"), status(Status::Down));
    events.dispatch(&id("c"), ping(5)); // pings do not make a client known
    let after = SystemTime::now();

    assert_eq!(events.status("a"), Some(Status::Up));
    assert_eq!(events.status("b"), Some(Status::Down));
    assert_eq!(events.status("c"), None);
    let clients = events.clients();
    let summary: Vec<_> = clients
        .iter()
        .map(|c| (c.client_id.as_str(), c.status, c.info.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a", Status::Up, ClientInfo::default()),
            ("b", Status::Down, ClientInfo::default()),
        ]
    );
    assert!(
        clients
            .iter()
            .all(|c| before <= c.since && c.since <= after)
    );
}

#[test]
fn the_status_since_is_the_time_of_the_message() {
    let events = Events::new();
    let mut sub = events.register("a", EventKind::Status);
    events.dispatch(&id("a"), status(Status::Up));
    let message = sub.try_recv().unwrap();
    assert_eq!(events.clients()[0].since, message.at);
}

#[test]
fn announce_makes_a_client_known_as_down_without_an_event() {
    let events = Events::new();
    let mut all = events.register(ClientFilter::Any, EventKind::Status);
    all.register(ClientFilter::Any, EventKind::PingResponse);

    events.announce(&id("plant"), ClientInfo::new("broker.local:1883"));

    assert_eq!(events.status("plant"), Some(Status::Down));
    let clients = events.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, id("plant"));
    assert_eq!(clients[0].status, Status::Down);
    assert_eq!(&*clients[0].info.broker, "broker.local:1883");
    assert_eq!(all.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(events.stats(EventKind::Status), kind_stats(0, 0, 0));
}

#[test]
fn announce_keeps_an_existing_status_and_replaces_the_info() {
    let events = Events::new();
    let plant = id("plant");
    events.announce(&plant, ClientInfo::new("old:1883"));
    events.dispatch(&plant, status(Status::Up));
    let since = events.clients()[0].since;

    events.announce(&plant, ClientInfo::new("new:8883"));

    let clients = events.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].status, Status::Up);
    assert_eq!(clients[0].since, since);
    assert_eq!(clients[0].info, ClientInfo::new("new:8883"));

    // A status change keeps the announced info.
    events.dispatch(&plant, status(Status::Down));
    assert_eq!(events.clients()[0].info, ClientInfo::new("new:8883"));
    assert_eq!(events.status("plant"), Some(Status::Down));
}

#[test]
fn a_terminated_client_is_forgotten_with_its_failure_counts() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    let (gone, kept) = (id("gone"), id("kept"));
    events.announce(&gone, ClientInfo::new("b:1883"));
    events.dispatch(&gone, status(Status::Up));
    events.dispatch(&kept, status(Status::Up));
    events.count_failure(&gone, FailureReason::Timeout);
    events.count_failure(&kept, FailureReason::Tls);

    events.dispatch(&gone, status(Status::Terminating));
    assert_eq!(events.status("gone"), Some(Status::Terminating));
    events.dispatch(&gone, status(Status::Terminated));

    assert_eq!(events.status("gone"), None);
    let known: Vec<_> = events.clients().into_iter().map(|c| c.client_id).collect();
    assert_eq!(known, vec![kept.clone()]);
    assert_eq!(
        events.failures(),
        vec![FailureCount {
            client_id: kept.clone(),
            reason: FailureReason::Tls,
            count: 1,
        }]
    );
    // The Terminated event itself is still delivered.
    assert_eq!(
        drain(&mut sub).last(),
        Some(&(gone.clone(), status(Status::Terminated)))
    );

    // Started again, it starts from scratch.
    events.count_failure(&gone, FailureReason::Timeout);
    assert_eq!(events.failures()[0].count, 1);
    assert_eq!(events.status("gone"), None);
    events.dispatch(&gone, status(Status::Up));
    assert_eq!(events.status("gone"), Some(Status::Up));
    assert_eq!(events.clients()[0].info, ClientInfo::default());
}

#[test]
fn failures_are_counted_per_client_and_reason_in_order() {
    let events = Events::new();
    let mut all = events.register(ClientFilter::Any, EventKind::Status);
    all.register(ClientFilter::Any, EventKind::PingResponse);
    let (a, b) = (id("a"), id("b"));
    assert_eq!(events.failures(), vec![]);

    events.count_failure(&b, FailureReason::Io);
    events.count_failure(&a, FailureReason::PingTimeout);
    events.count_failure(&b, FailureReason::ConnectionRefused);
    events.count_failure(&a, FailureReason::PingTimeout);
    events.count_failure(&a, FailureReason::ConnectionRefused);
    events.count_failure(&a, FailureReason::PingTimeout);

    let failures: Vec<_> = events
        .failures()
        .into_iter()
        .map(|f| (f.client_id.to_string(), f.reason, f.count))
        .collect();
    // Sorted by client id, then reason in declaration order.
    assert_eq!(
        failures,
        vec![
            ("a".to_string(), FailureReason::ConnectionRefused, 1),
            ("a".to_string(), FailureReason::PingTimeout, 3),
            ("b".to_string(), FailureReason::ConnectionRefused, 1),
            ("b".to_string(), FailureReason::Io, 1),
        ]
    );
    // Failures are counters, not events, and do not make a client known.
    assert_eq!(all.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(events.clients(), vec![]);
}

#[test]
fn a_received_status_is_already_visible_in_the_present_state() {
    const FRESH: usize = 300;
    const CROWD: usize = 1_000;
    let events = Events::new();
    let mut sub = events.subscribe_with_capacity(FRESH);
    sub.register(ClientFilter::Any, EventKind::Status);
    // Registered after `sub`, so each dispatch offers to them after queueing for
    // `sub`: were the status recorded after queueing, this crowd would hold the
    // window open long enough for the reader below to see a stale state.
    let _crowd: Vec<_> = (0..CROWD)
        .map(|_| events.register(ClientFilter::Any, EventKind::Status))
        .collect();

    let dispatcher = {
        let events = events.clone();
        std::thread::spawn(move || {
            for n in 0..FRESH {
                events.dispatch(&id(&format!("c{n}")), status(Status::Up));
            }
        })
    };
    let mut seen = 0;
    while seen < FRESH {
        match sub.try_recv() {
            Ok(message) => {
                // Recorded before it was queued: never a message ahead of the state.
                assert_eq!(events.status(message.client_id.as_str()), Some(Status::Up));
                seen += 1;
            }
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Closed) => panic!("closed while the hub is alive"),
        }
    }
    dispatcher.join().unwrap();
    assert_eq!(sub.stats(), sub_stats(FRESH as u64, 0));
}

// ---------------------------------------------------------------------------
// End of stream, Stream impl, waking
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

const THREADS: usize = 4;
const PER_THREAD: u64 = 10_000;

/// Thread `t`'s events, in order: mostly pings numbered by position, a status
/// change every tenth.
fn thread_events(t: usize) -> Vec<Event> {
    (0..PER_THREAD)
        .map(|i| match (i % 10, (i / 10) % 2) {
            (0, 0) => status(Status::Up),
            (0, _) => status(Status::Down),
            _ => ping(t as u64 * PER_THREAD + i),
        })
        .collect()
}

fn is_subsequence<T: PartialEq>(short: &[T], long: &[T]) -> bool {
    let mut long = long.iter();
    short.iter().all(|x| long.any(|y| y == x))
}

fn per_client(messages: Vec<(ClientId, Event)>) -> HashMap<ClientId, Vec<Event>> {
    let mut map: HashMap<ClientId, Vec<Event>> = HashMap::new();
    for (client, event) in messages {
        map.entry(client).or_default().push(event);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dispatch_keeps_per_client_order_and_exact_counts() {
    let total = THREADS as u64 * PER_THREAD;
    let events = Events::new();
    let subscribe_all = |capacity: usize| {
        let mut sub = events.subscribe_with_capacity(capacity);
        sub.register(ClientFilter::Any, EventKind::Status);
        sub.register(ClientFilter::Any, EventKind::PingResponse);
        sub
    };
    let mut roomy = subscribe_all(total as usize);
    let mut small = subscribe_all(50);
    let live = subscribe_all(64);

    // `live` is read while the threads dispatch, until the stream ends.
    let reader = tokio::spawn(async move {
        let mut live = live;
        let mut got = Vec::new();
        while let Some(message) = recv(&mut live).await {
            got.push(strip(message));
        }
        (got, live.stats())
    });

    let dispatchers: Vec<_> = (0..THREADS)
        .map(|t| {
            let events = events.clone();
            std::thread::spawn(move || {
                let client = id(&format!("client-{t}"));
                for event in thread_events(t) {
                    events.dispatch(&client, event);
                }
            })
        })
        .collect();
    for d in dispatchers {
        d.join().unwrap();
    }

    let statuses = THREADS as u64 * PER_THREAD / 10;
    let pings = total - statuses;
    let status_stats = events.stats(EventKind::Status);
    let ping_stats = events.stats(EventKind::PingResponse);
    assert_eq!(status_stats.dispatched, statuses);
    assert_eq!(ping_stats.dispatched, pings);
    // Three subscribers got a copy of every event, delivered or dropped.
    assert_eq!(status_stats.delivered + status_stats.dropped, 3 * statuses);
    assert_eq!(ping_stats.delivered + ping_stats.dropped, 3 * pings);
    for t in 0..THREADS {
        let client = format!("client-{t}");
        let last = thread_events(t).into_iter().rev().find_map(|e| match e {
            Event::Status(s) => Some(s),
            _ => None,
        });
        assert_eq!(events.status(&client), last);
    }

    // The roomy subscriber got everything, each client's events in order.
    assert_eq!(roomy.stats(), sub_stats(total, 0));
    let roomy_got = per_client(drain(&mut roomy));
    assert_eq!(roomy_got.len(), THREADS);
    for t in 0..THREADS {
        assert_eq!(roomy_got[&id(&format!("client-{t}"))], thread_events(t));
    }

    // The small one kept exactly its capacity and counted every drop.
    let small_stats = small.stats();
    assert_eq!(small_stats, sub_stats(50, total - 50));
    let small_got = drain(&mut small);
    assert_eq!(small_got.len(), 50);
    for (client, got) in per_client(small_got) {
        let t: usize = client.as_str()["client-".len()..].parse().unwrap();
        assert!(is_subsequence(&got, &thread_events(t)), "order kept");
    }

    drop(events);
    let (live_got, live_stats) = reader.await.unwrap();
    assert_eq!(live_stats.delivered + live_stats.dropped, total);
    assert_eq!(live_got.len() as u64, live_stats.delivered);
    for (client, got) in per_client(live_got) {
        let t: usize = client.as_str()["client-".len()..].parse().unwrap();
        assert!(is_subsequence(&got, &thread_events(t)), "order kept");
    }

    // Hub-wide totals are the sums of the subscribers' counters.
    let hub_delivered = status_stats.delivered + ping_stats.delivered;
    let hub_dropped = status_stats.dropped + ping_stats.dropped;
    assert_eq!(hub_delivered, total + 50 + live_stats.delivered);
    assert_eq!(hub_dropped, (total - 50) + live_stats.dropped);
}

#[test]
fn registering_and_dropping_while_others_dispatch_loses_nothing_uncounted() {
    let events = Events::new();
    let mut steady = events.subscribe_with_capacity(THREADS * 2_000);
    steady.register(ClientFilter::Any, EventKind::PingResponse);

    let dispatchers: Vec<_> = (0..THREADS)
        .map(|t| {
            let events = events.clone();
            std::thread::spawn(move || {
                let client = id(&format!("client-{t}"));
                for i in 0..2_000 {
                    events.dispatch(&client, ping(i));
                }
            })
        })
        .collect();
    // Churn registrations meanwhile; each short-lived subscription balances.
    let mut churned = SubscriptionStats::default();
    for n in 0..200 {
        let client = format!("client-{}", n % THREADS);
        let mut sub = events.subscribe_with_capacity(8);
        sub.register(ClientFilter::Any, EventKind::PingResponse);
        sub.register(client.as_str(), EventKind::PingResponse);
        if n % 2 == 0 {
            sub.unregister(client.as_str(), EventKind::PingResponse);
        }
        // Unregistering the wildcard removes every registration of the kind, so
        // its counters are final from here on.
        sub.unregister(ClientFilter::Any, EventKind::PingResponse);
        let stats = sub.stats();
        assert_eq!(drain(&mut sub).len() as u64, stats.delivered);
        assert!(stats.delivered <= 8);
        churned.delivered += stats.delivered;
        churned.dropped += stats.dropped;
    }
    for d in dispatchers {
        d.join().unwrap();
    }

    let total = THREADS as u64 * 2_000;
    assert_eq!(steady.stats(), sub_stats(total, 0));
    assert_eq!(
        events.stats(EventKind::PingResponse),
        kind_stats(total, total + churned.delivered, churned.dropped)
    );
    let mut per: HashMap<ClientId, Vec<Event>> = per_client(drain(&mut steady));
    for t in 0..THREADS {
        let expected: Vec<_> = (0..2_000).map(ping).collect();
        assert_eq!(per.remove(&id(&format!("client-{t}"))).unwrap(), expected);
    }
}

#[test]
fn dispatch_works_outside_any_tokio_runtime() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let events = Events::new();
    let mut sub = events.subscribe_with_capacity(2);
    sub.register(ClientFilter::Any, EventKind::Status);

    let worker = {
        let events = events.clone();
        std::thread::spawn(move || {
            for s in [Status::Up, Status::Down, Status::Up] {
                events.dispatch(&id("plain"), status(s));
            }
        })
    };
    worker.join().unwrap();

    assert_eq!(
        drain(&mut sub),
        vec![
            (id("plain"), status(Status::Up)),
            (id("plain"), status(Status::Down)),
        ]
    );
    assert_eq!(sub.stats(), sub_stats(2, 1));
    assert_eq!(events.status("plain"), Some(Status::Up));
}

// ---------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------

const SLOTS: usize = 3;
const CLIENTS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    /// Drops whatever is in the slot and puts a fresh subscription there.
    Subscribe {
        slot: usize,
        capacity: usize,
    },
    Register {
        slot: usize,
        client: Option<usize>,
        kind: EventKind,
    },
    Unregister {
        slot: usize,
        client: Option<usize>,
        kind: EventKind,
    },
    Dispatch {
        client: usize,
        event: Event,
    },
    TryRecv {
        slot: usize,
    },
    Drain {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    Announce {
        client: usize,
    },
    CountFailure {
        client: usize,
        reason: FailureReason,
    },
}

fn kind_strategy() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn filter_strategy() -> impl Strategy<Value = Option<usize>> {
    prop::option::of(0..CLIENTS.len())
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        prop::sample::select(vec![
            Status::Up,
            Status::Down,
            Status::Terminating,
            Status::Terminated,
        ])
        .prop_map(Event::Status),
        (0u64..1000).prop_map(ping),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let client = 0..CLIENTS.len();
    prop_oneof![
        1 => (slot.clone(), 0usize..4).prop_map(|(slot, capacity)| Op::Subscribe { slot, capacity }),
        4 => (slot.clone(), filter_strategy(), kind_strategy())
            .prop_map(|(slot, client, kind)| Op::Register { slot, client, kind }),
        2 => (slot.clone(), filter_strategy(), kind_strategy())
            .prop_map(|(slot, client, kind)| Op::Unregister { slot, client, kind }),
        8 => (client.clone(), event_strategy()).prop_map(|(client, event)| Op::Dispatch { client, event }),
        3 => slot.clone().prop_map(|slot| Op::TryRecv { slot }),
        1 => slot.clone().prop_map(|slot| Op::Drain { slot }),
        1 => slot.prop_map(|slot| Op::Drop { slot }),
        1 => client.clone().prop_map(|client| Op::Announce { client }),
        1 => (client, prop::sample::select(FailureReason::ALL.to_vec()))
            .prop_map(|(client, reason)| Op::CountFailure { client, reason }),
    ]
}

/// What one subscription should hold, by the rules alone.
#[derive(Debug)]
struct ModelSub {
    capacity: usize,
    registrations: HashSet<(Option<usize>, EventKind)>,
    queue: VecDeque<(ClientId, Event)>,
    stats: SubscriptionStats,
}

impl ModelSub {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            registrations: HashSet::new(),
            queue: VecDeque::new(),
            stats: SubscriptionStats::default(),
        }
    }

    fn matches(&self, client: usize, kind: EventKind) -> bool {
        self.registrations.contains(&(Some(client), kind))
            || self.registrations.contains(&(None, kind))
    }
}

/// The hub, by the rules alone: plain data, no sharing, no locks.
#[derive(Debug, Default)]
struct Model {
    subs: [Option<ModelSub>; SLOTS],
    kinds: BTreeMap<EventKind, KindStats>,
    statuses: BTreeMap<usize, (Status, Option<&'static str>)>,
    failures: BTreeMap<(usize, FailureReason), u64>,
}

impl Model {
    fn dispatch(&mut self, client: usize, event: Event) {
        let kind = event.kind();
        let hub = self.kinds.entry(kind).or_default();
        hub.dispatched += 1;
        for sub in self.subs.iter_mut().flatten() {
            if !sub.matches(client, kind) {
                continue;
            }
            if sub.queue.len() < sub.capacity {
                sub.queue.push_back((id(CLIENTS[client]), event));
                sub.stats.delivered += 1;
                hub.delivered += 1;
            } else {
                sub.stats.dropped += 1;
                hub.dropped += 1;
            }
        }
        if let Event::Status(s) = event {
            if s == Status::Terminated {
                self.statuses.remove(&client);
                self.failures.retain(|(c, _), _| *c != client);
            } else {
                let info = self.statuses.get(&client).and_then(|(_, info)| *info);
                self.statuses.insert(client, (s, info));
            }
        }
    }
}

const BROKER: &str = "broker:1883";

fn filter(client: Option<usize>) -> ClientFilter {
    client.map_or(ClientFilter::Any, |c| ClientFilter::from(CLIENTS[c]))
}

fn check(
    events: &Events,
    subs: &[Option<Subscription>; SLOTS],
    model: &Model,
) -> Result<(), TestCaseError> {
    for (slot, (sub, expected)) in subs.iter().zip(&model.subs).enumerate() {
        match (sub, expected) {
            (Some(sub), Some(expected)) => {
                prop_assert_eq!(sub.stats(), expected.stats, "stats of slot {}", slot);
                prop_assert_eq!(sub.len(), expected.queue.len(), "queued in slot {}", slot);
                prop_assert_eq!(sub.capacity(), expected.capacity);
                let held: HashSet<_> = sub.registrations().cloned().collect();
                let want: HashSet<_> = expected
                    .registrations
                    .iter()
                    .map(|(c, k)| (filter(*c), *k))
                    .collect();
                prop_assert_eq!(held, want, "registrations of slot {}", slot);
            }
            (None, None) => {}
            _ => prop_assert!(false, "slot {} occupancy differs", slot),
        }
    }
    for kind in EventKind::ALL {
        let expected = model.kinds.get(&kind).copied().unwrap_or_default();
        prop_assert_eq!(events.stats(kind), expected, "hub stats of {}", kind);
    }
    let clients: Vec<_> = events
        .clients()
        .into_iter()
        .map(|c| (c.client_id.to_string(), c.status, c.info.broker.to_string()))
        .collect();
    let want: Vec<_> = model
        .statuses
        .iter()
        .map(|(c, (s, info))| (CLIENTS[*c].to_string(), *s, info.unwrap_or("").to_string()))
        .collect();
    prop_assert_eq!(clients, want);
    for (c, name) in CLIENTS.iter().enumerate() {
        prop_assert_eq!(events.status(name), model.statuses.get(&c).map(|(s, _)| *s));
    }
    let failures: Vec<_> = events
        .failures()
        .into_iter()
        .map(|f| (f.client_id.to_string(), f.reason, f.count))
        .collect();
    let want: Vec<_> = model
        .failures
        .iter()
        .map(|((c, r), n)| (CLIENTS[*c].to_string(), *r, *n))
        .collect();
    prop_assert_eq!(failures, want);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let events = Events::with_queue_capacity(2);
    let mut subs: [Option<Subscription>; SLOTS] = Default::default();
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Subscribe { slot, capacity } => {
                subs[slot] = Some(events.subscribe_with_capacity(capacity));
                model.subs[slot] = Some(ModelSub::new(capacity));
            }
            Op::Register { slot, client, kind } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    sub.register(filter(client), kind);
                    m.registrations.insert((client, kind));
                } else if subs[slot].is_none() {
                    // An empty slot gets `Events::register` with the hub's default.
                    subs[slot] = Some(events.register(filter(client), kind));
                    let mut m = ModelSub::new(2);
                    m.registrations.insert((client, kind));
                    model.subs[slot] = Some(m);
                }
            }
            Op::Unregister { slot, client, kind } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    sub.unregister(filter(client), kind);
                    match client {
                        None => m.registrations.retain(|(_, k)| *k != kind),
                        Some(_) => {
                            m.registrations.remove(&(client, kind));
                        }
                    }
                }
            }
            Op::Dispatch { client, event } => {
                events.dispatch(&id(CLIENTS[client]), event);
                model.dispatch(client, event);
            }
            Op::TryRecv { slot } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    let got = sub.try_recv().map(strip).ok();
                    prop_assert_eq!(got, m.queue.pop_front(), "try_recv on slot {}", slot);
                }
            }
            Op::Drain { slot } => {
                if let (Some(sub), Some(m)) = (&mut subs[slot], &mut model.subs[slot]) {
                    let want: Vec<_> = m.queue.drain(..).collect();
                    prop_assert_eq!(drain(sub), want, "drain of slot {}", slot);
                }
            }
            Op::Drop { slot } => {
                subs[slot] = None;
                model.subs[slot] = None;
            }
            Op::Announce { client } => {
                events.announce(&id(CLIENTS[client]), ClientInfo::new(BROKER));
                let entry = model.statuses.entry(client).or_insert((Status::Down, None));
                entry.1 = Some(BROKER);
            }
            Op::CountFailure { client, reason } => {
                events.count_failure(&id(CLIENTS[client]), reason);
                *model.failures.entry((client, reason)).or_default() += 1;
            }
        }
        check(&events, &subs, &model)?;
    }

    // At the end, every queue holds exactly what the model says, in order.
    for (sub, m) in subs.iter_mut().zip(&mut model.subs) {
        if let (Some(sub), Some(m)) = (sub, m) {
            let want: Vec<_> = m.queue.drain(..).collect();
            prop_assert_eq!(drain(sub), want);
        }
    }
    // And once the hub is gone, every stream ends.
    drop(events);
    for sub in subs.iter_mut().flatten() {
        prop_assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_hub_behaves_like_a_simple_model(ops in prop::collection::vec(op_strategy(), 0..80)) {
        run(ops)?;
    }
}
