//! The present state: each client's last status, announced and terminated
//! clients, failure counts.

use std::time::SystemTime;

use mqtt_pulse::events::{
    ClientFilter, ClientInfo, EventKind, Events, FailureCount, FailureReason, Status, TryRecvError,
};

use crate::{drain, id, kind_stats, ping, status, sub_stats};

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
fn dropped_publishes_are_counted_per_client_and_forgotten_with_it() {
    let events = Events::new();
    let (a, b) = (id("a"), id("b"));
    assert_eq!(events.dropped_publishes(), vec![]);
    events.count_dropped_publish(&b);
    events.count_dropped_publish(&a);
    events.count_dropped_publish(&b);
    // Sorted by client id; a counter, never an event.
    assert_eq!(
        events.dropped_publishes(),
        vec![(a.clone(), 1), (b.clone(), 2)]
    );
    assert_eq!(events.stats(EventKind::Status).dispatched, 0);

    events.dispatch(&b, status(Status::Terminated));
    assert_eq!(events.dropped_publishes(), vec![(a, 1)]);
}

#[test]
fn a_dropped_publish_counter_counts_into_the_hub_until_its_client_is_terminated() {
    let events = Events::new();
    let (a, b) = (id("a"), id("b"));
    let counter = events.dropped_publish_counter(&a);
    let clone = counter.clone();
    // Handed out but never counted with: no series yet.
    assert_eq!(events.dropped_publishes(), vec![]);

    counter.count();
    clone.count();
    events.count_dropped_publish(&a);
    events.count_dropped_publish(&b);
    // The counter, its clone and the lookup all count the same number.
    assert_eq!(
        events.dropped_publishes(),
        vec![(a.clone(), 3), (b.clone(), 1)]
    );

    events.dispatch(&a, status(Status::Terminated));
    // A counter kept past its client's end does not bring the series back.
    counter.count();
    assert_eq!(events.dropped_publishes(), vec![(b.clone(), 1)]);

    // The client back under the same id starts from zero with a new counter.
    events.dispatch(&a, status(Status::Up));
    events.dropped_publish_counter(&a).count();
    assert_eq!(events.dropped_publishes(), vec![(a, 1), (b, 1)]);
}

#[test]
fn a_tls_cert_expiry_is_the_latest_recorded_per_client_and_forgotten_with_it() {
    use std::time::{Duration, UNIX_EPOCH};
    let events = Events::new();
    let (a, b) = (id("a"), id("b"));
    let at = |seconds| UNIX_EPOCH + Duration::from_secs(seconds);
    assert_eq!(events.tls_cert_expiries(), vec![]);
    events.record_tls_cert_expiry(&b, at(2_000));
    events.record_tls_cert_expiry(&a, at(3_000));
    // A reconnect that verified a rotated chain replaces the value.
    events.record_tls_cert_expiry(&b, at(1_000));
    assert_eq!(
        events.tls_cert_expiries(),
        vec![(a.clone(), at(3_000)), (b.clone(), at(1_000))]
    );
    assert_eq!(
        events.stats(EventKind::Status).dispatched,
        0,
        "never an event"
    );

    events.dispatch(&b, status(Status::Down));
    assert_eq!(events.tls_cert_expiries().len(), 2, "kept while down");
    events.dispatch(&b, status(Status::Terminated));
    assert_eq!(events.tls_cert_expiries(), vec![(a, at(3_000))]);
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

#[test]
fn a_down_client_keeps_the_reason_of_its_latest_failure_until_it_is_up() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    let plant = id("plant");
    let reason_of = |events: &Events| events.clients()[0].reason;

    events.announce(&plant, ClientInfo::new("broker:1883"));
    assert_eq!(reason_of(&events), None, "down, but nothing failed yet");
    events.count_failure(&plant, FailureReason::ConnectionRefused);
    assert_eq!(reason_of(&events), Some(FailureReason::ConnectionRefused));
    events.count_failure(&plant, FailureReason::Timeout);
    assert_eq!(
        reason_of(&events),
        Some(FailureReason::Timeout),
        "the latest one"
    );

    events.dispatch(&plant, status(Status::Up));
    assert_eq!(reason_of(&events), None);
    assert_eq!(sub.try_recv().unwrap().reason, None);

    // A driver counts the failure first, then dispatches the Down it causes:
    // until then the client is up and shows no reason.
    events.count_failure(&plant, FailureReason::ClosedByBroker);
    assert_eq!(reason_of(&events), None);
    events.dispatch(&plant, status(Status::Down));
    assert_eq!(reason_of(&events), Some(FailureReason::ClosedByBroker));
    let down = sub.try_recv().unwrap();
    assert_eq!(down.event, status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::ClosedByBroker));
    assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));

    events.dispatch(&plant, status(Status::Terminating));
    assert_eq!(reason_of(&events), None);
    assert_eq!(sub.try_recv().unwrap().reason, None);
}

#[test]
fn a_down_dispatched_without_a_counted_failure_has_no_reason() {
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::Status);
    let plant = id("plant");
    events.count_failure(&plant, FailureReason::Tls); // unknown client: a counter only
    events.dispatch(&plant, status(Status::Up));
    events.dispatch(&plant, status(Status::Down));
    assert_eq!(events.clients()[0].reason, None);
    assert_eq!(sub.try_recv().unwrap().reason, None);
    assert_eq!(sub.try_recv().unwrap().reason, None);
}
