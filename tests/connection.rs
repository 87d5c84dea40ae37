//! The connection driver against real Mosquitto brokers: status and ping events
//! as Tortoise311 means them, failure reasons, backoff, TLS, credentials, shutdown,
//! and the client side (publish/subscribe through the same connection).
//!
//! Every test owns its broker (the fixture's Mosquitto on a free port, or a
//! port nothing listens on): none uses the machine's shared broker, whose other
//! clients would disturb the round-trip and timing checks here.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_pulse::connection::{
    Backoff, ClientCertificate, Connection, ConnectionOptions, TlsOptions,
};
use mqtt_pulse::events::{
    ClientFilter, Event, EventKind, Events, FailureReason, Status, Subscription,
};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use rumqttc::QoS;
use support::hub::{next, wait_for_failures};
use support::metrics::sample;
use support::prometheus::promtool_problems;
use support::{Broker, TempDir, TestCa, TestPki, failures, logs};
use tokio::time::timeout;

fn client_id(test: &str) -> String {
    format!("mqtt-pulse-test-{test}-{}", std::process::id())
}

fn options(url: &str, test: &str) -> ConnectionOptions {
    ConnectionOptions::new(client_id(test).as_str(), url).unwrap()
}

async fn next_status(sub: &mut Subscription, limit: Duration) -> Status {
    match next(sub, limit).await.event {
        Event::Status(status) => status,
        other => panic!("expected a status event, got {other:?}"),
    }
}

#[tokio::test]
async fn goes_up_within_a_second_and_a_wildcard_subscriber_sees_it() {
    let events = Events::new();
    let mut wildcard = events.register(ClientFilter::Any, EventKind::Status);
    let broker = Broker::start();
    let started = Instant::now();
    let connection = Connection::start(options(&broker.url(), "up"), &events).unwrap();

    let message = next(&mut wildcard, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(message.client_id.as_str(), client_id("up"));
    assert_eq!(message.event, Event::Status(Status::Up));
    assert_eq!(connection.status(), Status::Up);
    connection.shutdown().await;
}

#[tokio::test]
async fn ping_responses_arrive_once_per_keep_alive_with_loopback_round_trips() {
    let events = Events::new();
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let broker = Broker::start();
    let connection = Connection::start(
        options(&broker.url(), "ping").with_keep_alive(Duration::from_secs(1)),
        &events,
    )
    .unwrap();

    let mut arrivals = Vec::new();
    let window = Instant::now() + Duration::from_millis(5_400);
    while let Ok(Some(message)) = timeout(window - Instant::now(), pings.recv()).await {
        let Event::PingResponse(rtt) = message.event else {
            panic!("unexpected {message:?}");
        };
        assert!(rtt < Duration::from_millis(50), "loopback RTT {rtt:?}");
        assert!(rtt > Duration::ZERO);
        arrivals.push(Instant::now());
    }
    // A PINGREQ every ¾ of the keep-alive (issue 14: never past it).
    assert!(
        (6..=8).contains(&arrivals.len()),
        "{} ping responses in 5.4 s with a 1 s keep-alive",
        arrivals.len()
    );
    for gap in arrivals.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap > Duration::from_millis(600) && gap < Duration::from_millis(950),
            "pings {gap:?} apart"
        );
    }
    connection.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_down_at_once_and_up_again_after_its_restart() {
    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    let connection = Connection::start(
        options(&broker.url(), "kill").with_backoff(backoff),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    let killed = Instant::now();
    broker.kill();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Down
    );
    let detection = killed.elapsed();
    assert!(
        detection < Duration::from_millis(500),
        "Down after {detection:?}"
    );

    let restarter = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    let restarted = Instant::now();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    // The longest a reconnect can wait is the backoff's max; allow for the
    // handshake and a loaded machine on top.
    let recovery = restarted.elapsed();
    assert!(
        recovery < backoff.max + Duration::from_millis(600),
        "Up {recovery:?} after the restart"
    );

    // In order, no duplicates: nothing else was reported.
    assert!(status.try_recv().is_err(), "an extra status event");
    // Killed within 10 s of connecting: counted as closed_after_connect.
    let lost = failures(&events, FailureReason::ClosedByBroker)
        + failures(&events, FailureReason::ClosedAfterConnect);
    assert!(lost >= 1);
    connection.shutdown().await;
}

/// Guards the driver's ping deadline (the `ping_deadline` arm of
/// `Driver::next_step` in src/connection/mod.rs, fed by
/// `ConnectionTracker::ping_deadline`): a PINGREQ left unanswered is Down one
/// ping timeout after it was written.
///
/// The broker is paused just after a PINGRESP, so the next PINGREQ leaves ¾ of
/// a keep-alive after the answered one and is never answered. With the
/// deadline, Down comes ¾ K + P after the pause (1.7 s here); without it, only
/// when the following PINGREQ falls due and rumqttc finds the first still
/// unanswered (`AwaitPingResp`), 1.5 K (3 s) after it. K + P (2.2 s) lies
/// between the two with room on both sides; 2 K — the bound this test used to
/// have — does not tell them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_is_down_one_ping_timeout_after_the_unanswered_pingreq() {
    let broker = Broker::start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let keep_alive = Duration::from_secs(2);
    let ping_timeout = Duration::from_millis(200);
    let connection = Connection::start(
        options(&broker.url(), "pause")
            .with_keep_alive(keep_alive)
            .with_ping_timeout(ping_timeout)
            .with_connect_timeout(Duration::from_millis(300))
            .with_backoff(Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
            }),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    let answered = next(&mut pings, 2 * keep_alive).await;
    assert!(matches!(answered.event, Event::PingResponse(_)));
    let last_answer = Instant::now();
    broker.pause();
    assert_eq!(next_status(&mut status, 2 * keep_alive).await, Status::Down);
    let detection = last_answer.elapsed();
    assert!(
        detection < keep_alive + ping_timeout,
        "Down {detection:?} after the last PINGRESP: not one ping timeout \
         ({ping_timeout:?}) after the next PINGREQ (due {:?} after the last)",
        keep_alive.mul_f64(0.75)
    );
    // Not before the next PINGREQ was even due.
    assert!(
        detection >= keep_alive.mul_f64(0.75),
        "Down {detection:?} after the last PINGRESP"
    );
    assert_eq!(failures(&events, FailureReason::PingTimeout), 1);

    // Attempts while paused complete TCP into the backlog and then time out.
    wait_for_failures(&events, FailureReason::Timeout, 1, Duration::from_secs(3)).await;
    broker.resume();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    assert!(status.try_recv().is_err(), "an extra status event");
    connection.shutdown().await;
}

/// Guards the driver's own connect timeout (the `timeout(limit,
/// eventloop.poll())` in `Driver::next_step`, src/connection/mod.rs): each
/// attempt against a paused broker fails `timeout` one connect timeout after
/// it began.
///
/// A paused Mosquitto is as silent as a broker gets: the kernel completes the
/// TCP handshake into its backlog and nothing answers the CONNECT. Without the
/// driver's timeout rumqttc's backstop (`connect_timeout` rounded down to
/// seconds, plus one: 1 s here) still ends each attempt as a `timeout`, so only
/// the spacing tells them apart: attempts here are at most connect timeout +
/// backoff cap apart (120 ms), the backstop's at least 1 s + half the initial
/// backoff. The bound is halfway between the two.
#[tokio::test]
async fn a_paused_broker_fails_each_attempt_at_the_driver_s_connect_timeout() {
    let broker = Broker::start();
    broker.pause();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connect_timeout = Duration::from_millis(100);
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let backstop = Duration::from_secs(connect_timeout.as_secs() + 1);
    let ours = connect_timeout + backoff.max;
    let theirs = backstop + backoff.initial / 2;
    let bound = ours + (theirs - ours) / 2;

    let started = Instant::now();
    let connection = Connection::start(
        options(&broker.url(), "paused-connect")
            .with_connect_timeout(connect_timeout)
            .with_backoff(backoff),
        &events,
    )
    .unwrap();

    // When each failure is counted (a counter, not an event: polled).
    let mut arrivals = vec![started];
    let deadline = started + 6 * theirs;
    while arrivals.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "only {} timeouts: {:?}",
            arrivals.len() - 1,
            events.failures()
        );
        let count = failures(&events, FailureReason::Timeout);
        if count >= arrivals.len() as u64 {
            assert_eq!(count, arrivals.len() as u64, "two failures within a poll");
            arrivals.push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap < bound,
            "attempts {gaps:?} apart: not {connect_timeout:?} + backoff"
        );
        // Half: the lower bound says only that an attempt waited at all; the
        // polling above can see one failure late and the next on time.
        assert!(*gap > connect_timeout / 2, "attempts {gaps:?} apart");
    }
    assert_eq!(connection.status(), Status::Down);
    assert!(
        status.try_recv().is_err(),
        "a failed connect sends no event"
    );
    assert_eq!(
        events.failures().len(),
        1,
        "only timeouts: {:?}",
        events.failures()
    );
    connection.shutdown().await;
}

#[tokio::test]
async fn nothing_listening_is_refused_and_the_backoff_grows_to_its_cap() {
    let port = support::free_port();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(160),
    };
    let connection = Connection::start(
        options(&format!("mqtt://127.0.0.1:{port}"), "refused").with_backoff(backoff),
        &events,
    )
    .unwrap();

    // Each refused attempt bumps the counter; record when each one lands.
    let mut attempts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    while attempts.len() < 9 {
        assert!(
            Instant::now() < deadline,
            "only {} attempts",
            attempts.len()
        );
        let count = failures(&events, FailureReason::ConnectionRefused);
        if count > seen {
            assert_eq!(count, seen + 1, "attempts closer together than the poll");
            seen = count;
            attempts.push(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let slack = Duration::from_millis(25);
    // Equal jitter: the n-th delay lies in [ceiling/2, ceiling], the ceiling
    // doubling from 20 ms up to 160 ms.
    let ceilings = [20, 40, 80, 160, 160, 160, 160, 160].map(Duration::from_millis);
    for (gap, ceiling) in gaps.iter().zip(ceilings) {
        assert!(*gap >= ceiling / 2 - Duration::from_millis(3), "{gaps:?}");
        assert!(*gap <= ceiling + slack, "{gaps:?} exceeds the cap");
    }
    assert!(gaps[gaps.len() - 1] > 2 * gaps[0], "no growth: {gaps:?}");
    assert!(
        status.try_recv().is_err(),
        "a refused connect sends no event"
    );
    connection.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_by_reason_and_never_logged() {
    let (logs, _guard) = logs::capture_thread();
    let broker = Broker::builder().password("probe", "right-horse").start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);

    let wrong = Connection::start(
        options(&broker.url(), "wrong-pw").with_credentials("probe", "Wr0ng-Battery-Staple"),
        &events,
    )
    .unwrap();
    // Mosquitto 2 answers a bad user name or password on MQTT 3.1.1 with
    // CONNACK 5 "not authorised", not 4 "bad user name or password" (the
    // fixture's smoke test pins this), and the reason says what the broker said.
    wait_for_failures(
        &events,
        FailureReason::NotAuthorized,
        1,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        status.try_recv().is_err(),
        "a refused connect sends no event"
    );
    wrong.shutdown().await;
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminating
    );
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminated
    );

    let dir = TempDir::new("pw");
    let password_file = dir.join("password");
    std::fs::write(&password_file, "right-horse\n").unwrap();
    let right = Connection::start(
        options(&broker.url(), "right-pw").with_password_file("probe", &password_file),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    right.shutdown().await;

    let logs = logs.text();
    assert!(
        logs.contains("not_authorized"),
        "the reason is logged:\n{logs}"
    );
    assert!(
        logs.contains("status=up"),
        "the transition is logged:\n{logs}"
    );
    for secret in ["Wr0ng-Battery-Staple", "right-horse"] {
        assert!(
            !logs.contains(secret),
            "a password leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn tls_connects_with_the_right_ca_and_fails_as_tls_with_another() {
    let dir = TempDir::new("tls");
    let pki = TestPki::generate(&*dir);
    let stranger = TestPki::generate_named(&*dir, "other");
    let broker = Broker::builder().tls(pki.server_files()).start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);

    let trusted = Connection::start(
        options(&broker.url(), "tls-ok").with_tls(TlsOptions {
            ca_file: Some(pki.ca_pem_path.clone()),
            client_certificate: None,
            ..Default::default()
        }),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    trusted.shutdown().await;
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminating
    );
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminated
    );

    let mismatched = Connection::start(
        options(&broker.url(), "tls-bad-ca").with_tls(TlsOptions {
            ca_file: Some(stranger.ca_pem_path.clone()),
            client_certificate: None,
            ..Default::default()
        }),
        &events,
    )
    .unwrap();
    wait_for_failures(&events, FailureReason::Tls, 1, Duration::from_secs(3)).await;
    assert_eq!(mismatched.status(), Status::Down);
    assert!(
        status.try_recv().is_err(),
        "never up with a CA that does not match"
    );
    mismatched.shutdown().await;
}

/// The `mqtt_client_tls_cert_expiry_timestamp_seconds` sample of `client` on
/// a page, if there is one.
fn cert_expiry(page: &str, client: &str, broker: &Broker) -> Option<f64> {
    // The label as the connection spells it (`localhost:port` for TLS).
    let broker = options(&broker.url(), "label").broker();
    let series = format!(
        r#"mqtt_client_tls_cert_expiry_timestamp_seconds{{client_id="{client}",broker="{broker}"}}"#
    );
    sample(page, &series)
}

#[tokio::test]
async fn the_cert_expiry_is_the_chains_earliest_not_after_and_follows_a_rotation_at_reconnect() {
    let dir = TempDir::new("tls-expiry");
    let ca = TestCa::generate(&*dir, "expiry");
    // The intermediate expires before the leaf: the chain expires with it.
    // Unix times from `date -u -d 2031-01-01 +%s` and so on.
    let (intermediate_expires, leaf_expires) = ((2031, 1, 1), (2040, 6, 1));
    let files = ca.issue_server(&*dir, "broker", leaf_expires, Some(intermediate_expires));
    let broker = Broker::builder().tls(files).start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("tls-expiry");
    let tls = TlsOptions {
        ca_file: Some(ca.ca_pem_path.clone()),
        ..Default::default()
    };
    let connection =
        Connection::start(options(&broker.url(), "tls-expiry").with_tls(tls), &events).unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    // Recorded before `Up` was dispatched: no waiting for it.
    let page = metrics.render();
    assert_eq!(
        cert_expiry(&page, &id, &broker),
        Some(1_924_992_000.0),
        "{page}"
    );
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }

    // Rotated: a leaf signed by the root itself, expiring 2035-03-01. The
    // running connection keeps its value; the reconnect after the restart
    // verifies the new chain.
    ca.issue_server(&*dir, "broker", (2035, 3, 1), None);
    assert_eq!(
        cert_expiry(&metrics.render(), &id, &broker),
        Some(1_924_992_000.0)
    );
    broker.restart();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Down
    );
    assert_eq!(
        next_status(&mut status, Duration::from_secs(5)).await,
        Status::Up
    );
    let page = metrics.render();
    assert_eq!(
        cert_expiry(&page, &id, &broker),
        Some(2_056_320_000.0),
        "{page}"
    );

    // Gone with the client.
    connection.shutdown().await;
    let page = metrics.render();
    assert!(
        !page.contains("mqtt_client_tls_cert_expiry_timestamp_seconds{"),
        "{page}"
    );
}

/// wss:// goes through the same TLS configuration: a Mosquitto with a secure
/// WebSocket listener beside its TLS one (a config with only a websockets
/// listener does not start).
#[cfg(feature = "websocket")]
#[tokio::test]
async fn a_wss_broker_exports_its_chain_expiry_too() {
    let dir = TempDir::new("wss-expiry");
    let ca = TestCa::generate(&*dir, "wss");
    let files = ca.issue_server(&*dir, "broker", (2033, 7, 15), Some((2032, 2, 1)));
    let ws_port = support::free_port();
    let broker = Broker::builder()
        .tls(files.clone())
        .extra_config(&format!(
            "listener {ws_port}\nsocket_domain ipv4\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
            files.cert.display(),
            files.key.display()
        ))
        .start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let url = format!("wss://localhost:{ws_port}/mqtt");
    let tls = TlsOptions {
        ca_file: Some(ca.ca_pem_path.clone()),
        ..Default::default()
    };
    let options = options(&url, "wss-expiry").with_tls(tls);
    let series = format!(
        r#"mqtt_client_tls_cert_expiry_timestamp_seconds{{client_id="{}",broker="{}"}}"#,
        client_id("wss-expiry"),
        options.broker()
    );
    let connection = Connection::start(options, &events).unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up,
        "{}",
        broker.log()
    );
    // 2032-02-01, the intermediate's notAfter.
    let page = metrics.render();
    assert_eq!(sample(&page, &series), Some(1_959_206_400.0), "{page}");
    connection.shutdown().await;
}

#[tokio::test]
async fn a_chain_that_is_not_verified_exports_no_cert_expiry() {
    let dir = TempDir::new("tls-expiry-unverified");
    let ca = TestCa::generate(&*dir, "right");
    let stranger = TestCa::generate(&*dir, "stranger");
    let files = ca.issue_server(&*dir, "broker", (2033, 7, 15), None);
    let broker = Broker::builder().tls(files).start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);

    // The wrong CA: the handshake fails, nothing is recorded.
    let wrong_ca = TlsOptions {
        ca_file: Some(stranger.ca_pem_path.clone()),
        ..Default::default()
    };
    let refused = Connection::start(
        options(&broker.url(), "tls-expiry-wrong-ca").with_tls(wrong_ca),
        &events,
    )
    .unwrap();
    wait_for_failures(&events, FailureReason::Tls, 2, Duration::from_secs(3)).await;
    // `insecure_skip_verify` connects but verifies no chain: nothing either.
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        ..Default::default()
    };
    let unverified = Connection::start(
        options(&broker.url(), "tls-expiry-insecure").with_tls(insecure),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    assert_eq!(events.tls_cert_expiries(), vec![]);
    let page = metrics.render();
    assert!(
        page.contains(&format!(
            r#"mqtt_client_up{{client_id="{}",broker="{}"}} 1"#,
            client_id("tls-expiry-insecure"),
            options(&broker.url(), "label").broker()
        )),
        "{page}"
    );
    assert!(
        !page.contains("mqtt_client_tls_cert_expiry_timestamp_seconds"),
        "{page}"
    );

    // The same broker through the right CA: the expiry appears, 2033-07-15.
    let right_ca = TlsOptions {
        ca_file: Some(ca.ca_pem_path.clone()),
        ..Default::default()
    };
    let verified = Connection::start(
        options(&broker.url(), "tls-expiry-right-ca").with_tls(right_ca),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    let page = metrics.render();
    let id = client_id("tls-expiry-right-ca");
    assert_eq!(
        cert_expiry(&page, &id, &broker),
        Some(2_004_998_400.0),
        "{page}"
    );
    assert_eq!(
        events.tls_cert_expiries().len(),
        1,
        "only the verified client"
    );
    for connection in [refused, unverified, verified] {
        connection.shutdown().await;
    }
}

/// Connects the client of `test` to `broker` with `tls`, asserts that it is up
/// within 2 s, and shuts it down.
async fn assert_connects_and_shuts_down(broker: &Broker, test: &str, tls: TlsOptions) {
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection =
        Connection::start(options(&broker.url(), test).with_tls(tls), &events).unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    connection.shutdown().await;
}

#[tokio::test]
async fn insecure_skip_verify_connects_without_the_ca() {
    let dir = TempDir::new("tls-insecure");
    let pki = TestPki::generate(&*dir);
    let broker = Broker::builder().tls(pki.server_files()).start();
    let tls = TlsOptions {
        insecure_skip_verify: true,
        ..Default::default()
    };
    assert_connects_and_shuts_down(&broker, "tls-insecure", tls).await;
}

#[tokio::test]
async fn mutual_tls_connects_with_a_client_certificate() {
    let dir = TempDir::new("mtls");
    let pki = TestPki::generate(&*dir);
    let broker = Broker::builder()
        .tls(pki.server_files())
        .extra_config("require_certificate true")
        .start();
    let tls = TlsOptions {
        ca_file: Some(pki.ca_pem_path.clone()),
        client_certificate: Some(ClientCertificate {
            cert_file: pki.client_cert_path.clone(),
            key_file: pki.client_key_path.clone(),
        }),
        ..Default::default()
    };
    assert_connects_and_shuts_down(&broker, "mtls", tls).await;
}

#[tokio::test]
async fn shutdown_reports_terminating_then_terminated_and_disconnects_cleanly() {
    let broker = Broker::start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection = Connection::start(options(&broker.url(), "shutdown"), &events).unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    connection.shutdown().await;
    // shutdown() returned: the task has ended and both events are queued.
    assert_eq!(
        status.try_recv().unwrap().event,
        Event::Status(Status::Terminating)
    );
    assert_eq!(
        status.try_recv().unwrap().event,
        Event::Status(Status::Terminated)
    );
    assert!(status.try_recv().is_err());
    assert_eq!(
        events.status(&client_id("shutdown")),
        None,
        "the hub forgot it"
    );

    let id = client_id("shutdown");
    broker.wait_for_log(
        &format!("Received DISCONNECT from {id}"),
        Duration::from_secs(2),
    );
    broker.wait_for_log(
        &format!("Client {id} disconnected."),
        Duration::from_secs(2),
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_delays_no_ping() {
    let events = Events::new();
    let stuck = events.subscribe_with_capacity(1);
    let mut stuck = stuck;
    stuck.register(ClientFilter::Any, EventKind::PingResponse);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let broker = Broker::start();
    let connection = Connection::start(
        options(&broker.url(), "stuck").with_keep_alive(Duration::from_secs(1)),
        &events,
    )
    .unwrap();

    for _ in 0..3 {
        let message = next(&mut pings, Duration::from_millis(1_500)).await;
        assert!(matches!(message.event, Event::PingResponse(_)));
    }
    assert_eq!(stuck.stats().delivered, 1);
    assert!(stuck.stats().dropped >= 2, "{:?}", stuck.stats());
    connection.shutdown().await;
}

/// Publishes `count` QoS 1 messages of `size` bytes on `topic` through its
/// own client of `broker`, calling `on_ack` after each PUBACK. Mosquitto
/// acknowledges a QoS 1 publish once it has queued it for every subscriber,
/// so when this returns every message is on its way to them, in order.
async fn publish_acked(
    broker: &Broker,
    topic: &str,
    count: usize,
    size: usize,
    mut on_ack: impl FnMut(),
) {
    let id = client_id(&format!("publisher-{topic}").replace('/', "-"));
    let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, count + 1);
    for _ in 0..count {
        client
            .try_publish(topic, QoS::AtLeastOnce, false, vec![b'x'; size])
            .unwrap();
    }
    let mut acked = 0;
    timeout(Duration::from_secs(20), async {
        while acked < count {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop
                .poll()
                .await
                .expect("the publisher stays connected")
            {
                acked += 1;
                on_ack();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{acked} of {count} publishes acknowledged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_queue_nobody_reads_stays_within_its_byte_bound_counts_the_rest_and_reading_frees_room()
 {
    const SIZE: usize = 200_000;
    const BOUND: usize = 1_000_000;
    const PUSHED: usize = 20;
    let broker = Broker::start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let mut connection = Connection::start(
        options(&broker.url(), "bytebound")
            .with_keep_alive(Duration::from_secs(1))
            .with_publish_byte_limit(BOUND),
        &events,
    )
    .unwrap();
    let mut publishes = connection.take_publishes().unwrap();
    assert_eq!(publishes.byte_limit(), BOUND);
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    let topic = format!("mqtt-pulse/test/{}", client_id("bytebound"));
    connection
        .subscribe(topic.clone(), QoS::AtMostOnce)
        .await
        .unwrap();
    broker.wait_for_log(
        &format!("Received SUBSCRIBE from {}", client_id("bytebound")),
        Duration::from_secs(2),
    );

    // Far more than the bound: 20 x 200 KB against 1 MB, nobody reading.
    let mut most_queued = 0;
    publish_acked(&broker, &topic, PUSHED, SIZE, || {
        most_queued = most_queued.max(publishes.queued_bytes());
    })
    .await;
    // Every publish was queued for us before its PUBACK; a PINGRESP the broker
    // sends afterwards comes after them on our socket.
    while pings.try_recv().is_ok() {}
    next(&mut pings, Duration::from_secs(3)).await;

    let cost = SIZE + topic.len();
    let kept = BOUND / cost;
    let dropped = connection.dropped_publishes();
    assert!(most_queued <= BOUND, "{most_queued} bytes queued");
    assert_eq!(publishes.len(), kept, "as many as fit in {BOUND} bytes");
    assert_eq!(publishes.queued_bytes(), kept * cost);
    assert_eq!(dropped, (PUSHED - kept) as u64, "every other one counted");
    let series = format!(
        r#"mqtt_client_publishes_dropped_total{{client_id="{}",broker="{}"}}"#,
        client_id("bytebound"),
        broker.addr()
    );
    assert_eq!(sample(&metrics.render(), &series), Some(dropped as f64));

    // Reading frees the room: what comes next is queued, none dropped.
    for _ in 0..kept {
        assert_eq!(publishes.try_recv().unwrap().payload.len(), SIZE);
    }
    assert_eq!(publishes.queued_bytes(), 0);
    publish_acked(&broker, &topic, kept, SIZE, || {}).await;
    for _ in 0..kept {
        let publish = timeout(Duration::from_secs(2), publishes.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(publish.payload.len(), SIZE);
    }
    assert_eq!(connection.dropped_publishes(), dropped);
    connection.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_subscribes_through_the_connection_across_a_reconnect() {
    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut connection = Connection::start(
        options(&broker.url(), "pubsub").with_backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        }),
        &events,
    )
    .unwrap();
    let mut publishes = connection.take_publishes().unwrap();
    assert!(connection.take_publishes().is_none());
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    let topic = format!("mqtt-pulse/test/{}", client_id("pubsub"));
    connection
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let id = client_id("pubsub");
    broker.wait_for_log(
        &format!("Received SUBSCRIBE from {id}"),
        Duration::from_secs(2),
    );
    connection
        .client()
        .expect("a 3.1.1 connection")
        .publish(topic.clone(), QoS::AtLeastOnce, false, "first")
        .await
        .unwrap();
    let received = timeout(Duration::from_secs(2), publishes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.topic, topic);
    assert_eq!(&received.payload[..], b"first");

    // A restarted broker has no session: the subscription must be renewed.
    broker.kill();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Down
    );
    let mark = broker.log_mark();
    let restarter = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    let renewed = format!("Received SUBSCRIBE from {id}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !broker.log_since(mark).contains(&renewed) {
        assert!(
            Instant::now() < deadline,
            "no renewed SUBSCRIBE:\n{}",
            broker.log_since(mark)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    connection
        .client()
        .expect("a 3.1.1 connection")
        .publish(topic.clone(), QoS::AtLeastOnce, false, "second")
        .await
        .unwrap();
    let received = timeout(Duration::from_secs(2), publishes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&received.payload[..], b"second");
    connection.shutdown().await;
}

#[tokio::test]
async fn starting_outside_a_runtime_or_with_bad_options_is_an_error() {
    // Neither start gets as far as connecting; a port nothing listens on makes
    // sure no broker would see it if one did.
    let nobody = format!("mqtt://127.0.0.1:{}", support::free_port());
    let events = Events::new();
    let err = Connection::start(
        options(&nobody, "bad-ka").with_keep_alive(Duration::from_millis(500)),
        &events,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("keep-alive must be whole seconds"),
        "{err}"
    );
    assert!(
        events.clients().is_empty(),
        "a rejected connection is not announced"
    );

    let outside = std::thread::spawn(move || {
        Connection::start(options(&nobody, "no-rt"), &events)
            .unwrap_err()
            .to_string()
    })
    .join()
    .unwrap();
    assert_eq!(
        outside,
        "a connection must be started inside a tokio runtime"
    );
}

/// Guards the `io` reason end to end (the catch-all arm of
/// `link::classify_io`): a socket error that is not a refusal, a timeout, a
/// close or TLS. No broker, real or scripted, sends one; the kernel does: a
/// TCP connect to the limited broadcast address fails at once with
/// "network unreachable" (Linux refuses TCP to broadcast and multicast
/// routes), with no packet leaving the machine.
#[tokio::test]
async fn a_socket_error_of_no_other_kind_is_io_on_metrics() {
    let options = options("mqtt://255.255.255.255:1884", "io");
    let (failures, up) = support::failures_on_metrics(options).await;
    assert_eq!(failures, [("io".to_owned(), 1.0)]);
    assert_eq!(up, Some(0.0));
}
