//! Concurrency: dispatch from several threads, subscriptions that come and
//! go meanwhile, dispatch outside any tokio runtime.

use std::collections::HashMap;

use mqtt_pulse::events::{
    ClientFilter, ClientId, Event, EventKind, Events, Status, SubscriptionStats,
};

use crate::{drain, id, kind_stats, ping, recv, status, strip, sub_stats};

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
