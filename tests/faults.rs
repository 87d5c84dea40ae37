//! Faults (issue 9): brokers killed and restarted over and over, many connections
//! losing their broker at once, and a subscriber that never reads — against real
//! Mosquitto brokers from the fixture, the real driver, hub and Prometheus exporter.
//!
//! What must hold through all of them: every Down and Up is reported once and in
//! order, every client comes back, failures are counted once per loss, and for
//! every subscriber `delivered + dropped == dispatched to it` — a full queue
//! costs only its owner, and the drops show on `/metrics`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mqtt_pulse::connection::{Backoff, Connection, ConnectionOptions};
use mqtt_pulse::events::{
    ClientFilter, ClientId, Event, EventKind, Events, FailureReason, KindStats, Status,
    Subscription, SubscriptionStats, TryRecvError,
};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use support::Broker;
use support::hub::next;
use support::metrics;
use tokio::time::{Instant, timeout_at};

/// Reconnects quickly, so a restarted broker is seen again within ~0.2 s.
const FAST_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

fn client_id(test: &str, i: usize) -> ClientId {
    ClientId::from(format!(
        "mqtt-pulse-faults-{test}-{i:03}-{}",
        std::process::id()
    ))
}

fn connect(events: &Events, broker: &Broker, id: &ClientId, backoff: Backoff) -> Connection {
    let options = ConnectionOptions::new(id, &broker.url())
        .unwrap()
        .with_backoff(backoff);
    Connection::start(options, events).unwrap()
}

/// Restarts the broker off the async workers (it waits for the broker to listen).
async fn restart(broker: &Arc<Broker>) {
    let broker = Arc::clone(broker);
    tokio::task::spawn_blocking(move || broker.restart())
        .await
        .unwrap();
}

async fn next_status(sub: &mut Subscription, id: &ClientId, limit: Duration) -> Status {
    let message = next(sub, limit).await;
    assert_eq!(&message.client_id, id, "{message:?}");
    match message.event {
        Event::Status(status) => status,
        other => panic!("expected a status event, got {other:?}"),
    }
}

/// Connections the broker closed: `closed_by_broker` plus, within 10 s of the
/// CONNACK, `closed_after_connect`.
fn lost(failures: &HashMap<FailureReason, u64>) -> u64 {
    [
        FailureReason::ClosedByBroker,
        FailureReason::ClosedAfterConnect,
    ]
    .iter()
    .filter_map(|reason| failures.get(reason))
    .sum()
}

/// Every failure count of the hub, summed over clients, by reason.
fn failures_by_reason(events: &Events) -> HashMap<FailureReason, u64> {
    let mut counts = HashMap::new();
    for failure in events.failures() {
        *counts.entry(failure.reason).or_default() += failure.count;
    }
    counts
}

/// The value of `series` (as rendered) on a Prometheus text page, which must
/// have it, as a count.
fn sample(page: &str, series: &str) -> u64 {
    let value = metrics::sample(page, series)
        .unwrap_or_else(|| panic!("{series} is not on the page:\n{page}"));
    value as u64
}

fn balanced(stats: SubscriptionStats, dispatched_to_it: u64) -> bool {
    stats.delivered + stats.dropped == dispatched_to_it
}

/// The hub's counters of `kind` once `dispatched` events have been dispatched
/// and offered to `copies` subscribers each. A dispatch bumps the hub's
/// counters just after queueing for the subscribers, so a subscriber that got
/// the last event can be a moment ahead of them.
async fn settled_stats(
    events: &Events,
    kind: EventKind,
    dispatched: u64,
    copies: u64,
) -> KindStats {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stats = events.stats(kind);
        if stats.dispatched == dispatched && stats.delivered + stats.dropped == copies * dispatched
        {
            return stats;
        }
        assert!(
            stats.dispatched <= dispatched && Instant::now() < deadline,
            "{kind} counters {stats:?}, expected {dispatched} dispatched to {copies} subscribers"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_twenty_times_is_reported_down_and_up_each_time_in_order() {
    const RESTARTS: u64 = 20;
    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let exporter = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("restarts", 0);
    let connection = connect(&events, &broker, &id, FAST_BACKOFF);

    let mut seen = vec![next_status(&mut status, &id, Duration::from_secs(3)).await];
    assert_eq!(seen, [Status::Up]);
    for restart_no in 1..=RESTARTS {
        broker.kill();
        seen.push(next_status(&mut status, &id, Duration::from_secs(3)).await);
        assert_eq!(
            seen.last(),
            Some(&Status::Down),
            "kill {restart_no}: {seen:?}"
        );
        restart(&broker).await;
        seen.push(next_status(&mut status, &id, Duration::from_secs(5)).await);
        assert_eq!(
            seen.last(),
            Some(&Status::Up),
            "restart {restart_no}: {seen:?}"
        );
    }

    // Up, Down, Up, …, Up: nothing missing, nothing twice, nothing after.
    let expected: Vec<Status> = std::iter::once(Status::Up)
        .chain((0..RESTARTS).flat_map(|_| [Status::Down, Status::Up]))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        status.try_recv().map(|m| m.event),
        Err(TryRecvError::Empty),
        "an extra status event"
    );
    assert_eq!(events.status(id.as_str()), Some(Status::Up));
    assert_eq!(connection.status(), Status::Up);
    // Two subscribers: this test's and the exporter's.
    let stats = settled_stats(&events, EventKind::Status, 2 * RESTARTS + 1, 2).await;
    assert_eq!(stats.dropped, 0);

    // One loss per restart (closed_after_connect when the broker dies within
    // the 10 s stable period after CONNACK, as here); every other failure is a
    // reconnect refused while the broker was down.
    let failures = failures_by_reason(&events);
    assert_eq!(lost(&failures), RESTARTS, "{failures:?}");
    assert!(
        failures.keys().all(|r| matches!(
            r,
            FailureReason::ClosedByBroker
                | FailureReason::ClosedAfterConnect
                | FailureReason::ConnectionRefused
        )),
        "{failures:?}"
    );

    // The exporter counted the same.
    let page = exporter.render();
    let labels = format!(r#"client_id="{id}",broker="{}""#, broker.addr());
    assert_eq!(sample(&page, &format!("mqtt_client_up{{{labels}}}")), 1);
    for (status, count) in [("up", RESTARTS + 1), ("down", RESTARTS)] {
        let series = format!(r#"mqtt_client_status_changes_total{{{labels},status="{status}"}}"#);
        assert_eq!(sample(&page, &series), count, "{series}");
    }
    let exported: u64 = ["closed_by_broker", "closed_after_connect"]
        .iter()
        .map(|reason| {
            let series =
                format!(r#"mqtt_client_connect_failures_total{{{labels},reason="{reason}"}}"#);
            if page.contains(&series) {
                sample(&page, &series)
            } else {
                0
            }
        })
        .sum();
    assert_eq!(exported, RESTARTS);

    connection.shutdown().await;
}

/// Reads `sub` until every one of `ids` has `want` as its last status, keeping
/// each client's statuses in order.
async fn await_all(
    sub: &mut Subscription,
    seen: &mut HashMap<ClientId, Vec<Status>>,
    ids: &[ClientId],
    want: Status,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let count = |seen: &HashMap<ClientId, Vec<Status>>| {
        ids.iter()
            .filter(|id| seen.get(*id).and_then(|s| s.last()) == Some(&want))
            .count()
    };
    while count(seen) < ids.len() {
        let message = match timeout_at(deadline, sub.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => panic!("the hub went away"),
            Err(_) => panic!(
                "only {} of {} clients {want} within {limit:?}",
                count(seen),
                ids.len()
            ),
        };
        let Event::Status(status) = message.event else {
            panic!("a status subscription got {message:?}");
        };
        seen.entry(message.client_id).or_default().push(status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_all_come_back_after_their_broker_restarts() {
    const N: usize = 200;
    const SMALL: usize = 8;
    let broker = Arc::new(Broker::builder().extra_config("max_connections -1").start());
    let events = Events::new();
    // One subscriber with room for everything, one that holds only a few.
    let mut roomy = events.subscribe_with_capacity(8 * N);
    roomy.register(ClientFilter::Any, EventKind::Status);
    let mut small = events.subscribe_with_capacity(SMALL);
    small.register(ClientFilter::Any, EventKind::Status);

    let ids: Vec<ClientId> = (0..N).map(|i| client_id("many", i)).collect();
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let connections: Vec<Connection> = ids
        .iter()
        .map(|id| connect(&events, &broker, id, backoff))
        .collect();

    let mut seen = HashMap::new();
    await_all(
        &mut roomy,
        &mut seen,
        &ids,
        Status::Up,
        Duration::from_secs(15),
    )
    .await;
    broker.kill();
    await_all(
        &mut roomy,
        &mut seen,
        &ids,
        Status::Down,
        Duration::from_secs(5),
    )
    .await;
    restart(&broker).await;
    await_all(
        &mut roomy,
        &mut seen,
        &ids,
        Status::Up,
        Duration::from_secs(15),
    )
    .await;

    for id in &ids {
        assert_eq!(seen[id], [Status::Up, Status::Down, Status::Up], "{id}");
    }
    assert_eq!(seen.len(), N, "events about unknown clients");
    assert_eq!(
        roomy.try_recv().map(|m| m.event),
        Err(TryRecvError::Empty),
        "an extra status event"
    );
    assert!(
        ids.iter()
            .all(|id| events.status(id.as_str()) == Some(Status::Up))
    );
    let failures = failures_by_reason(&events);
    assert_eq!(
        lost(&failures),
        N as u64,
        "one loss per connection: {failures:?}"
    );

    // Every event is delivered or counted as dropped, for each subscriber.
    let check = async |roomy: &Subscription, small: &Subscription, dispatched: u64| {
        let hub = settled_stats(&events, EventKind::Status, dispatched, 2).await;
        assert_eq!(
            roomy.stats(),
            SubscriptionStats {
                delivered: dispatched,
                dropped: 0
            }
        );
        assert!(balanced(roomy.stats(), dispatched));
        assert!(balanced(small.stats(), dispatched), "{:?}", small.stats());
        assert_eq!(small.stats().delivered, SMALL as u64);
        assert_eq!(small.len(), SMALL);
        assert_eq!(hub.dropped, small.stats().dropped, "{hub:?}");
    };
    check(&roomy, &small, 3 * N as u64).await;

    // Shutting down adds Terminating and Terminated for each, counted the same way.
    let shutdowns: Vec<_> = connections
        .into_iter()
        .map(|c| tokio::spawn(c.shutdown()))
        .collect();
    for shutdown in shutdowns {
        shutdown.await.unwrap();
    }
    await_all(
        &mut roomy,
        &mut seen,
        &ids,
        Status::Terminated,
        Duration::from_secs(5),
    )
    .await;
    for id in &ids {
        assert_eq!(
            seen[id][3..],
            [Status::Terminating, Status::Terminated],
            "{id}"
        );
    }
    check(&roomy, &small, 5 * N as u64).await;
    assert!(events.clients().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_only_itself() {
    const N: usize = 40;
    const STUCK: usize = 16;
    let broker = Broker::start();
    let events = Events::new();
    let exporter = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .unwrap();
    let mut stuck = events.subscribe_with_capacity(STUCK);
    let mut reader = events.subscribe();
    for kind in EventKind::ALL {
        stuck.register(ClientFilter::Any, kind);
        reader.register(ClientFilter::Any, kind);
    }

    // Pinging every second, so events keep coming while the stuck one is full.
    let ids: Vec<ClientId> = (0..N).map(|i| client_id("stuck", i)).collect();
    let connections: Vec<Connection> = ids
        .iter()
        .map(|id| {
            let options = ConnectionOptions::new(id, &broker.url())
                .unwrap()
                .with_keep_alive(Duration::from_secs(1))
                // Not half the keep-alive: a busy machine must not turn a
                // slow PINGRESP into a Down in this test.
                .with_ping_timeout(Duration::from_millis(900));
            Connection::start(options, &events).unwrap()
        })
        .collect();
    let mut ups = HashMap::new();
    let mut pings = 0u64;
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ups.len() < N || pings < 2 * N as u64 {
        let message = match timeout_at(deadline, reader.recv()).await {
            Ok(Some(message)) => message,
            _ => panic!("{} up and {pings} pings within 10 s", ups.len()),
        };
        received += 1;
        match message.event {
            Event::Status(status) => {
                assert_eq!(status, Status::Up, "{message:?}");
                assert!(ups.insert(message.client_id, ()).is_none(), "a second Up");
            }
            Event::PingResponse(_) => pings += 1,
            other => panic!("{other:?}"),
        }
    }

    // The stuck queue is full and stays so; the rest is dropped and counted.
    assert_eq!(stuck.len(), STUCK);
    assert_eq!(stuck.capacity(), STUCK);
    let stuck_stats = stuck.stats();
    assert_eq!(stuck_stats.delivered, STUCK as u64);
    // It was offered at least what the reader got (the same registrations).
    assert!(
        stuck_stats.dropped >= received - STUCK as u64,
        "{stuck_stats:?} after the reader got {received}"
    );
    // The reader lost nothing.
    assert_eq!(reader.stats().dropped, 0);

    // Statuses no longer change, so their counts are exact; pings still flow,
    // so theirs lie between two reads of the hub around the render.
    // Three subscribers take each status: the reader, the stuck one, the exporter.
    let status_stats = settled_stats(&events, EventKind::Status, N as u64, 3).await;
    let pings_before = events.stats(EventKind::PingResponse);
    let page = exporter.render();
    let pings_after = events.stats(EventKind::PingResponse);
    for id in &ids {
        let series = format!(
            r#"mqtt_client_up{{client_id="{id}",broker="{}"}}"#,
            broker.addr()
        );
        assert_eq!(sample(&page, &series), 1, "{series}");
    }
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("mqtt_client_up{"))
            .count(),
        N
    );
    assert_eq!(
        sample(&page, r#"mqtt_pulse_events_dropped_total{type="status"}"#),
        status_stats.dropped
    );
    assert_eq!(
        sample(
            &page,
            r#"mqtt_pulse_events_dispatched_total{type="status"}"#
        ),
        N as u64
    );
    let rendered = sample(
        &page,
        r#"mqtt_pulse_events_dropped_total{type="ping_response"}"#,
    );
    assert!(
        (pings_before.dropped..=pings_after.dropped).contains(&rendered),
        "{rendered} dropped ping responses rendered, the hub said {} then {}",
        pings_before.dropped,
        pings_after.dropped
    );
    assert!(rendered > 0);

    // Once the connections are gone nothing more comes: every count is exact.
    for connection in connections {
        connection.shutdown().await;
    }
    while let Ok(message) = reader.try_recv() {
        received += 1;
        drop(message);
    }
    let status_stats = events.stats(EventKind::Status);
    let ping_stats = events.stats(EventKind::PingResponse);
    assert_eq!(
        status_stats.dispatched,
        3 * N as u64,
        "Up, Terminating, Terminated"
    );
    let dispatched = status_stats.dispatched + ping_stats.dispatched;
    assert_eq!(
        reader.stats(),
        SubscriptionStats {
            delivered: dispatched,
            dropped: 0
        }
    );
    assert_eq!(received, dispatched, "the reader got everything");
    assert!(balanced(stuck.stats(), dispatched), "{:?}", stuck.stats());
    assert_eq!(stuck.stats().delivered, STUCK as u64);
    assert_eq!(stuck.len(), STUCK, "still bounded");
    for stats in [status_stats, ping_stats] {
        assert_eq!(
            stats.delivered + stats.dropped,
            3 * stats.dispatched,
            "{stats:?}"
        );
    }
    // Only the stuck one dropped anything: the exporter kept up too.
    assert_eq!(
        status_stats.dropped + ping_stats.dropped,
        stuck.stats().dropped
    );
    let page = exporter.render();
    assert_eq!(
        sample(&page, r#"mqtt_pulse_events_dropped_total{type="status"}"#),
        status_stats.dropped
    );
    assert_eq!(
        sample(
            &page,
            r#"mqtt_pulse_events_dropped_total{type="ping_response"}"#
        ),
        ping_stats.dropped
    );

    // What it holds is the oldest events, still readable.
    let mut held = 0;
    while stuck.try_recv().is_ok() {
        held += 1;
    }
    assert_eq!(held, STUCK);
}

/// Each client's count of `reason` on an exporter page (0 when the client has
/// no such series yet).
fn count_by_client(page: String, ids: &[ClientId], reason: &str) -> Vec<u64> {
    let page = metrics::Metrics::parse(page);
    ids.iter()
        .map(|id| {
            let labels = [("client_id", id.as_str()), ("reason", reason)];
            page.value("mqtt_client_connect_failures_total", &labels)
                .map_or(0, |value| value as u64)
        })
        .collect()
}

/// Guards the driver's own two timers at scale — the ping deadline and the
/// connect timeout, both in `Driver::next_step` (src/connection/mod.rs) —
/// where rumqttc's fallbacks would otherwise pass for them: fifty connections
/// lose a paused broker and must each be Down within keep-alive K + ping
/// timeout P of the pause, then retry at the connect timeout's spacing, as
/// `/metrics` counts it, and all come back once it resumes.
///
/// The values keep each timer far from its fallback. Down: a client's next
/// PINGREQ leaves at most ¾ K after the pause, so with the deadline it is Down
/// by ¾ K + P (1.7 s); without it, only when the PINGREQ after that finds the
/// first unanswered, up to 1.5 K (3 s) — half the clients after K + P
/// (2.2 s). Retries: one every connect timeout + backoff (at most 120 ms) with
/// the driver's timeout; one a second at most with rumqttc's backstop
/// (`connect_timeout` rounded down to seconds, plus one). Over the window each
/// client must reach the count halfway between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_to_a_paused_broker_go_down_by_the_ping_deadline_and_retry_at_the_connect_timeout()
 {
    const N: usize = 50;
    let keep_alive = Duration::from_secs(2);
    let ping_timeout = Duration::from_millis(200);
    let connect_timeout = Duration::from_millis(100);
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let window = Duration::from_secs(2);
    let ours = connect_timeout + backoff.max;
    let backstop = Duration::from_secs(connect_timeout.as_secs() + 1);
    // Whole attempts inside the window, at the slowest spacing of each.
    let at_least_ours = (window.as_millis() / ours.as_millis()) as u64 - 1;
    let at_most_theirs = (window.as_millis() / backstop.as_millis()) as u64 + 1;
    let threshold = (at_least_ours + at_most_theirs) / 2;

    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let exporter = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .unwrap();
    let mut status = events.subscribe_with_capacity(8 * N);
    status.register(ClientFilter::Any, EventKind::Status);
    let ids: Vec<ClientId> = (0..N).map(|i| client_id("paused", i)).collect();
    let connections: Vec<Connection> = ids
        .iter()
        .map(|id| {
            let options = ConnectionOptions::new(id, &broker.url())
                .unwrap()
                .with_keep_alive(keep_alive)
                .with_ping_timeout(ping_timeout)
                .with_connect_timeout(connect_timeout)
                .with_backoff(backoff);
            Connection::start(options, &events).unwrap()
        })
        .collect();
    let mut seen = HashMap::new();
    await_all(
        &mut status,
        &mut seen,
        &ids,
        Status::Up,
        Duration::from_secs(15),
    )
    .await;

    let paused = Instant::now();
    broker.pause();
    let limit = (keep_alive + ping_timeout).saturating_sub(paused.elapsed());
    await_all(&mut status, &mut seen, &ids, Status::Down, limit).await;
    let failures = failures_by_reason(&events);
    assert_eq!(
        failures.get(&FailureReason::PingTimeout),
        Some(&(N as u64)),
        "one ping timeout each: {failures:?}"
    );

    let before = count_by_client(exporter.render(), &ids, "timeout");
    tokio::time::sleep(window).await; // the measurement window itself
    let after = count_by_client(exporter.render(), &ids, "timeout");
    let attempts: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        attempts.iter().all(|&n| n >= threshold),
        "timeouts per client in {window:?}: {attempts:?}; at least {threshold} wanted \
         ({at_least_ours} at {ours:?} apart, at most {at_most_theirs} at rumqttc's {backstop:?})"
    );

    broker.resume();
    await_all(
        &mut status,
        &mut seen,
        &ids,
        Status::Up,
        Duration::from_secs(15),
    )
    .await;
    for id in &ids {
        assert_eq!(seen[id], [Status::Up, Status::Down, Status::Up], "{id}");
    }
    let failures = failures_by_reason(&events);
    assert!(
        failures
            .keys()
            .all(|r| matches!(r, FailureReason::PingTimeout | FailureReason::Timeout)),
        "{failures:?}"
    );
    for connection in connections {
        connection.shutdown().await;
    }
}
