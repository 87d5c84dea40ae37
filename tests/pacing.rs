//! Connect pacing against real Mosquitto brokers: at most the limit of
//! handshakes in flight to one broker (seen through the library's
//! [`Connection::pacing`] and through the kernel's socket table), every
//! target up in the end, a prompt shutdown while queued, and a connect
//! timeout that measures the handshake, not the wait for a turn.
//!
//! A paused broker (SIGSTOP) holds every handshake open — the kernel
//! completes TCP into the backlog, no CONNACK comes — so the queue is
//! observed in a steady state, without timing. Every test owns its broker.

mod support;

use std::time::{Duration, Instant};

use mqtt_pulse::connection::{Backoff, Connection, ConnectionOptions, PacingStats};
use mqtt_pulse::events::{
    ClientFilter, Event, EventKind, Events, FailureReason, Status, Subscription,
};
use support::Broker;
use tokio::time::timeout;

fn client_id(test: &str, i: usize) -> String {
    format!("mqtt-pulse-test-pacing-{test}-{i}-{}", std::process::id())
}

/// Options with a connect timeout long enough that no attempt fails while a
/// test looks at the queue, unless the test sets its own.
fn options(broker: &Broker, id: &str, limit: usize) -> ConnectionOptions {
    ConnectionOptions::new(id, &broker.url())
        .unwrap()
        .with_connect_timeout(Duration::from_secs(30))
        .with_connect_concurrency(limit)
}

/// Polls the pool's counters (counters, not events: nothing to await) until
/// `condition` holds; fails with the last reading after `limit`.
async fn wait_for_pacing(
    connection: &Connection,
    limit: Duration,
    condition: impl Fn(&PacingStats) -> bool,
) -> PacingStats {
    let deadline = Instant::now() + limit;
    loop {
        let stats = connection.pacing().expect("paced");
        if condition(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "pacing still {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Client sockets connected to `port` (state ESTABLISHED, remote port
/// `port`), from /proc/net/tcp: the handshakes the kernel sees in flight.
fn established_to(port: u16) -> usize {
    let remote = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "01"
        })
        .count()
}

/// The failures of one client, by reason.
fn failures_of(events: &Events, id: &str) -> Vec<(FailureReason, u64)> {
    events
        .failures()
        .into_iter()
        .filter(|f| f.client_id.as_str() == id)
        .map(|f| (f.reason, f.count))
        .collect()
}

/// Waits until `n` distinct clients have reported Up.
async fn all_up(status: &mut Subscription, n: usize, limit: Duration) {
    let mut up = std::collections::HashSet::new();
    let deadline = Instant::now() + limit;
    while up.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = timeout(left, status.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} up within {limit:?}", up.len()))
            .unwrap();
        if message.event == Event::Status(Status::Up) {
            up.insert(message.client_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_limit_of_handshakes_are_in_flight_and_all_come_up_when_the_broker_answers() {
    const N: usize = 30;
    const LIMIT: usize = 3;
    let broker = Broker::start();
    broker.pause();
    let events = Events::new();
    let mut status = events.subscribe_with_capacity(4 * N);
    status.register(ClientFilter::Any, EventKind::Status);
    let connections: Vec<Connection> = (0..N)
        .map(|i| {
            let id = client_id("limit", i);
            Connection::start(options(&broker, &id, LIMIT), &events).unwrap()
        })
        .collect();

    // The kernel sees the limit's TCP connections to the broker, no more.
    assert!(
        support::wait_until(Duration::from_secs(10), || established_to(broker.port())
            >= LIMIT),
        "{} connections established",
        established_to(broker.port())
    );
    let stats = wait_for_pacing(&connections[0], Duration::from_secs(10), |s| {
        s.waiting == N - LIMIT
    })
    .await;
    assert_eq!((stats.limit, stats.in_flight), (LIMIT, LIMIT), "{stats:?}");
    assert_eq!(established_to(broker.port()), LIMIT);
    // A queued connection has not failed: it is Down as it started, with nothing counted.
    assert!(events.failures().is_empty(), "{:?}", events.failures());
    assert!(
        (0..N).all(|i| events.status(&client_id("limit", i)) == Some(Status::Down)),
        "a client not Down while waiting"
    );

    broker.resume();
    all_up(&mut status, N, Duration::from_secs(20)).await;
    let stats = connections[0].pacing().unwrap();
    assert_eq!(stats.peak_in_flight, LIMIT, "{stats:?}");
    assert_eq!(stats.started, N as u64, "one handshake each: {stats:?}");
    assert_eq!((stats.in_flight, stats.waiting), (0, 0), "{stats:?}");
    assert!(events.failures().is_empty(), "{:?}", events.failures());
    for connection in connections {
        connection.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_targets_on_one_broker_all_come_up_through_a_pool_of_eight() {
    const N: usize = 300;
    const LIMIT: usize = 8;
    let broker = Broker::builder().quiet().start();
    let events = Events::new();
    let mut status = events.subscribe_with_capacity(4 * N);
    status.register(ClientFilter::Any, EventKind::Status);
    let connections: Vec<Connection> = (0..N)
        .map(|i| {
            let id = client_id("many", i);
            Connection::start(options(&broker, &id, LIMIT), &events).unwrap()
        })
        .collect();
    all_up(&mut status, N, Duration::from_secs(30)).await;
    let stats = connections[0].pacing().unwrap();
    assert!(stats.peak_in_flight <= LIMIT, "{stats:?}");
    assert_eq!(stats.started, N as u64, "{stats:?}");
    // Unpaced connections to the same broker are in no pool.
    let unpaced = Connection::start(options(&broker, &client_id("many", N), 0), &events).unwrap();
    assert_eq!(unpaced.pacing(), None);
    all_up(&mut status, 1, Duration::from_secs(10)).await;
    unpaced.shutdown().await;
    for connection in connections {
        connection.shutdown().await;
    }
}

#[tokio::test]
async fn a_connection_shut_down_while_waiting_for_its_turn_ends_at_once() {
    let broker = Broker::start();
    broker.pause();
    let events = Events::new();
    let (first_id, queued_id) = (client_id("shutdown", 0), client_id("shutdown", 1));
    let first = Connection::start(options(&broker, &first_id, 1), &events).unwrap();
    wait_for_pacing(&first, Duration::from_secs(10), |s| s.in_flight == 1).await;
    let mut status = events.register(queued_id.as_str(), EventKind::Status);
    let queued = Connection::start(options(&broker, &queued_id, 1), &events).unwrap();
    wait_for_pacing(&first, Duration::from_secs(10), |s| s.waiting == 1).await;

    // Its turn would come only after the first's 30 s connect timeout.
    timeout(Duration::from_secs(2), queued.shutdown())
        .await
        .expect("a queued connection shuts down without waiting for its turn");
    let statuses: Vec<Event> = std::iter::from_fn(|| status.try_recv().ok())
        .map(|m| m.event)
        .collect();
    assert_eq!(
        statuses,
        [
            Event::Status(Status::Terminating),
            Event::Status(Status::Terminated)
        ]
    );
    assert!(failures_of(&events, &queued_id).is_empty());
    let stats = first.pacing().unwrap();
    assert_eq!((stats.in_flight, stats.waiting, stats.started), (1, 0, 1));

    // The one mid-handshake gives its turn back when shut down too.
    timeout(Duration::from_secs(2), first.shutdown())
        .await
        .expect("a connection mid-handshake shuts down at once");
    let again = Connection::start(options(&broker, &queued_id, 1), &events).unwrap();
    let stats = wait_for_pacing(&again, Duration::from_secs(10), |s| s.in_flight == 1).await;
    assert_eq!(stats.waiting, 0, "{stats:?}");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_connection_s_connect_timeout_starts_with_its_turn() {
    let broker = Broker::start();
    broker.pause();
    let events = Events::new();
    // One attempt each in the test: the backoff outlasts it.
    let backoff = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    let (holder_id, queued_id) = (client_id("timeout", 0), client_id("timeout", 1));
    let holder_timeout = Duration::from_millis(1500);
    let queued_timeout = Duration::from_millis(300);
    let holder = Connection::start(
        options(&broker, &holder_id, 1)
            .with_connect_timeout(holder_timeout)
            .with_backoff(backoff),
        &events,
    )
    .unwrap();
    wait_for_pacing(&holder, Duration::from_secs(10), |s| s.in_flight == 1).await;
    let queued = Connection::start(
        options(&broker, &queued_id, 1)
            .with_connect_timeout(queued_timeout)
            .with_backoff(backoff),
        &events,
    )
    .unwrap();
    wait_for_pacing(&holder, Duration::from_secs(10), |s| s.waiting == 1).await;

    // The holder times out once; by then the queued one has waited five of
    // its connect timeouts and has not failed once.
    let deadline = Instant::now() + 10 * holder_timeout;
    while failures_of(&events, &holder_id).is_empty() {
        assert!(Instant::now() < deadline, "the holder never timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let holder_failed = Instant::now();
    assert_eq!(
        failures_of(&events, &holder_id),
        [(FailureReason::Timeout, 1)]
    );
    assert!(
        failures_of(&events, &queued_id).is_empty(),
        "timed out while waiting for its turn"
    );
    assert_eq!(events.status(&queued_id), Some(Status::Down));

    // Its own attempt then fails at its own connect timeout.
    while failures_of(&events, &queued_id).is_empty() {
        assert!(Instant::now() < deadline, "the queued one never timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waited = holder_failed.elapsed();
    assert_eq!(
        failures_of(&events, &queued_id),
        [(FailureReason::Timeout, 1)]
    );
    // Not sooner than its timeout after its turn came (less the delay in seeing the holder fail).
    assert!(
        waited + Duration::from_millis(100) >= queued_timeout,
        "failed {waited:?} after its turn came"
    );
    assert_eq!(holder.pacing().unwrap().started, 2);
    holder.shutdown().await;
    queued.shutdown().await;
}
