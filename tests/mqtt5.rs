//! MQTT 5 targets (`protocol = "5"`, `ConnectionOptions::with_protocol`,
//! `ping --protocol 5`, a host's own v5 loop through `ConnectionTracker`)
//! against real Mosquitto brokers: the same status and ping events as 3.1.1,
//! with the driver's own keep-alive discipline; the reason codes of a
//! refusing CONNACK; a Server Keep Alive overriding ours (pings and ping
//! deadline), visible in `mqtt_client_keep_alive_seconds`; loss by kill and
//! by freeze; TLS, wss and password files; publishes and subscriptions;
//! round-trip probes and broker-to-broker paths on v5 connections, alone and
//! mixed with 3.1.1 ones, and a probe topic the broker's ACL denies. A
//! broker that does not speak MQTT 5 is a real one too (RabbitMQ 3.10).
//!
//! A scripted broker stands in only where no broker on this machine does
//! what is tested, and each such test says why: a DISCONNECT with a reason
//! code (Debian's Mosquitto 2.0.11 predates it), a Server Keep Alive of zero
//! or longer than ours.
//!
//! Every test owns its broker on a free port.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_pulse::connection::{
    Backoff, ClientCertificate, Connection, ConnectionOptions, Path, PathOptions, ProbeOptions,
    Protocol, TlsOptions,
};
use mqtt_pulse::events::{
    ClientFilter, Event, EventKind, Events, FailureReason, RoundTripOutcome, Status, Subscription,
};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use support::daemon::run;
use support::hub::{next, wait_for_failures};
use support::metrics::sample;
use support::prometheus::promtool_problems;
use support::rabbitmq::RabbitMq;
use support::{Broker, TempDir, TestPki, failures, logs};
use tokio::time::timeout;

fn client_id(test: &str) -> String {
    format!("mqtt-pulse-v5-{test}-{}", std::process::id())
}

fn options(broker: &Broker, test: &str) -> ConnectionOptions {
    ConnectionOptions::new(client_id(test).as_str(), &broker.url())
        .unwrap()
        .with_protocol(Protocol::V5)
}

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    }
}

async fn next_status(sub: &mut Subscription, limit: Duration) -> Status {
    match next(sub, limit).await.event {
        Event::Status(status) => status,
        other => panic!("expected a status event, got {other:?}"),
    }
}

/// The arrival times of the ping responses within `window`, each RTT checked
/// to be a plausible loopback round trip.
async fn ping_arrivals(pings: &mut Subscription, window: Duration) -> Vec<Instant> {
    let mut arrivals = Vec::new();
    let end = Instant::now() + window;
    while let Ok(Some(message)) = timeout(end - Instant::now(), pings.recv()).await {
        let Event::PingResponse(rtt) = message.event else {
            panic!("unexpected {message:?}");
        };
        assert!(
            rtt > Duration::ZERO && rtt < Duration::from_millis(50),
            "loopback RTT {rtt:?}"
        );
        arrivals.push(Instant::now());
    }
    arrivals
}

fn keep_alive_gauge(page: &str, id: &str, broker: &Broker) -> Option<f64> {
    let series = format!(
        "mqtt_client_keep_alive_seconds{{client_id=\"{id}\",broker=\"{}\"}}",
        broker.addr()
    );
    sample(page, &series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_target_goes_up_and_pings_on_its_own_schedule_with_loopback_round_trips() {
    let broker = Broker::start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let id = client_id("up");
    let started = Instant::now();
    let connection = Connection::start(
        options(&broker, "up").with_keep_alive(Duration::from_secs(1)),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Up
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The CONNECT spoke MQTT 5 (p5) and asked for exactly our 1 s keep-alive
    // (k1), under rumqttc's 5 s floor: see `wire::v5`.
    broker.wait_for_log(&format!("as {id} (p5, c1, k1"), Duration::from_secs(1));

    // The driver's own PINGREQ every ¾ keep-alive; rumqttc's timer never
    // adds one of its own (which would show as a gap well under 600 ms).
    let arrivals = ping_arrivals(&mut pings, Duration::from_millis(3_400)).await;
    assert!(
        (4..=5).contains(&arrivals.len()),
        "{} ping responses in 3.4 s with a 1 s keep-alive",
        arrivals.len()
    );
    for gap in arrivals.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap > Duration::from_millis(600) && gap < Duration::from_millis(950),
            "pings {gap:?} apart"
        );
    }
    let page = metrics.render();
    assert_eq!(keep_alive_gauge(&page, &id, &broker), Some(1.0), "{page}");
    connection.shutdown().await;
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminating
    );
    assert_eq!(
        next_status(&mut status, Duration::from_secs(1)).await,
        Status::Terminated
    );
    // A clean DISCONNECT, not a dropped socket.
    broker.wait_for_log(&format!("Client {id} disconnected"), Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_the_v5_reason_mosquitto_sends() {
    let broker = Broker::builder().password("probe", "right-horse").start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let wrong = Connection::start(
        options(&broker, "wrong-pw").with_credentials("probe", "Wr0ng-Battery-Staple"),
        &events,
    )
    .unwrap();
    // Mosquitto 2.0.11 answers a wrong password on MQTT 5 as on 3.1.1: "not
    // authorized" (CONNACK 0x87; 3.1.1: return code 5), not 0x86 "bad user
    // name or password". The reason is what the broker said.
    wait_for_failures(
        &events,
        FailureReason::NotAuthorized,
        1,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(failures(&events, FailureReason::BadCredentials), 0);
    assert!(
        status.try_recv().is_err(),
        "a refused connect sends no event"
    );
    wrong.shutdown().await;

    let right = Connection::start(
        options(&broker, "right-pw").with_credentials("probe", "right-horse"),
        &events,
    )
    .unwrap();
    loop {
        if next_status(&mut status, Duration::from_secs(2)).await == Status::Up {
            break;
        }
    }
    right.shutdown().await;
}

/// What Debian 12's Mosquitto (2.0.11) does when a second client takes the
/// id of a v5 client: it closes the old connection without a DISCONNECT
/// (Mosquitto sends DISCONNECT 0x8E "session taken over" from 2.0.15 on,
/// commit 351911bd), so the reason is the one a bare close soon after
/// CONNACK gets. The reason-code path is proven by the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_2_0_11_closes_a_taken_over_v5_session_without_a_reason_code() {
    let broker = Broker::start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("taken");
    let connection = Connection::start(
        options(&broker, "taken").with_backoff(Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(5),
        }),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    let intruder_events = Events::new();
    let intruder = Connection::start(
        ConnectionOptions::new(id.as_str(), &broker.url())
            .unwrap()
            .with_protocol(Protocol::V5),
        &intruder_events,
    )
    .unwrap();
    let down = next(&mut status, Duration::from_secs(2)).await;
    assert_eq!(down.event, Event::Status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::ClosedAfterConnect));
    broker.wait_for_log(
        &format!("Client {id} already connected, closing old connection."),
        Duration::from_secs(1),
    );
    intruder.shutdown().await;
    connection.shutdown().await;
}

/// The issue's "Done when": a second client taking the id of a v5 target
/// makes it Down with reason `session_taken_over`, and the metric line that
/// produces (shown in the README).
///
/// A scripted broker, because no broker on this machine sends the DISCONNECT
/// (see the test above): it accepts one MQTT 5 CONNECT and then sends what
/// Mosquitto ≥ 2.0.15 sends the old connection, `e0 02 8e 00`.
#[tokio::test]
async fn a_disconnect_with_session_taken_over_is_the_down_reason_and_its_metric_line() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("session-taken-over");
    let connection = Connection::start(
        ConnectionOptions::new(id.as_str(), &format!("mqtt://127.0.0.1:{port}"))
            .unwrap()
            .with_protocol(Protocol::V5)
            .with_backoff(Backoff {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(30),
            }),
        &events,
    )
    .unwrap();
    let mut socket = scripted::accept_v5(&listener).await;
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    scripted::send(&mut socket, &[0xE0, 0x02, 0x8E, 0x00]).await;
    let down = next(&mut status, Duration::from_secs(2)).await;
    assert_eq!(down.event, Event::Status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::SessionTakenOver));

    let page = metrics.render();
    let line = format!(
        "mqtt_client_connect_failures_total{{client_id=\"{id}\",broker=\"127.0.0.1:{port}\",reason=\"session_taken_over\"}} 1"
    );
    assert!(page.lines().any(|l| l == line), "no {line}\n---\n{page}");
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }
    connection.shutdown().await;
}

/// A Server Keep Alive of zero (the broker enforces none) or longer than
/// ours: the driver keeps pinging at its own keep-alive — PINGREQ may be sent
/// at any time, and a monitor that stopped would stop measuring — while the
/// gauge shows what the broker set. A scripted broker: Mosquitto only ever
/// lowers a keep-alive (`max_keepalive`), and no broker here raises one or
/// sends zero.
#[tokio::test]
async fn a_server_keep_alive_of_zero_or_longer_than_ours_leaves_our_pings_alone() {
    for server_keep_alive in [0u16, 600] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let events = Events::new();
        let mut status = events.register(ClientFilter::Any, EventKind::Status);
        let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
        let id = client_id(&format!("server-ka-{server_keep_alive}"));
        let connection = Connection::start(
            ConnectionOptions::new(id.as_str(), &format!("mqtt://127.0.0.1:{port}"))
                .unwrap()
                .with_protocol(Protocol::V5)
                .with_keep_alive(Duration::from_secs(1)),
            &events,
        )
        .unwrap();
        let socket = scripted::accept_v5_with(&listener, Some(server_keep_alive)).await;
        let answering = tokio::spawn(scripted::answer_pings(socket));
        assert_eq!(
            next_status(&mut status, Duration::from_secs(2)).await,
            Status::Up
        );
        assert_eq!(
            events.clients()[0].keep_alive,
            Some(Duration::from_secs(server_keep_alive.into()))
        );
        // At most one PINGREQ of rumqttc's own at CONNACK (zero: its timer
        // fires at once, then is pushed out of reach), then ours every 750 ms.
        let arrivals = ping_arrivals(&mut pings, Duration::from_millis(2_400)).await;
        assert!(
            (3..=4).contains(&arrivals.len()),
            "{} pings in 2.4 s with server keep-alive {server_keep_alive}",
            arrivals.len()
        );
        assert!(status.try_recv().is_err(), "the connection stayed up");
        connection.shutdown().await;
        answering.await.unwrap();
    }
}

/// The scripted MQTT 5 broker side of one connection.
mod scripted {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Accepts one connection, reads its CONNECT and accepts it with a
    /// CONNACK without properties.
    pub async fn accept_v5(listener: &TcpListener) -> TcpStream {
        accept_v5_with(listener, None).await
    }

    /// [`accept_v5`] with a Server Keep Alive property in the CONNACK.
    pub async fn accept_v5_with(
        listener: &TcpListener,
        server_keep_alive: Option<u16>,
    ) -> TcpStream {
        let (mut socket, _) = listener.accept().await.unwrap();
        let (header, connect) = read_packet(&mut socket).await.expect("a CONNECT");
        assert_eq!(header, 0x10, "a CONNECT first");
        assert_eq!(&connect[..7], b"\x00\x04MQTT\x05", "an MQTT 5 CONNECT");
        match server_keep_alive {
            None => send(&mut socket, &[0x20, 0x03, 0x00, 0x00, 0x00]).await,
            Some(seconds) => {
                let [high, low] = seconds.to_be_bytes();
                send(
                    &mut socket,
                    &[0x20, 0x06, 0x00, 0x00, 0x03, 0x13, high, low],
                )
                .await;
            }
        }
        socket
    }

    /// Answers each PINGREQ with a PINGRESP until DISCONNECT or the close.
    pub async fn answer_pings(mut socket: TcpStream) {
        while let Some((header, _)) = read_packet(&mut socket).await {
            match header {
                0xC0 => send(&mut socket, &[0xD0, 0x00]).await,
                0xE0 => break,
                _ => {}
            }
        }
    }

    /// One packet: its first byte and its body; `None` at the close.
    async fn read_packet(socket: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let header = socket.read_u8().await.ok()?;
        let mut remaining = 0usize;
        for shift in (0..4).map(|i| 7 * i) {
            let byte = socket.read_u8().await.ok()?;
            remaining |= usize::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; remaining];
        socket.read_exact(&mut body).await.ok()?;
        Some((header, body))
    }

    pub async fn send(socket: &mut TcpStream, bytes: &[u8]) {
        socket.write_all(bytes).await.unwrap();
        socket.flush().await.unwrap();
    }
}

/// Mosquitto's `max_keepalive` (10 s at least) makes it send a Server Keep
/// Alive to a v5 client asking for more: the driver pings within the
/// broker's keep-alive, not ours, its ping deadline follows, and the gauge
/// shows the broker's. (About 21 s: the keep-alive cannot be shorter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keep_alive_overrides_ours_and_the_gauge_shows_it() {
    let broker = Broker::builder().extra_config("max_keepalive 10").start();
    let events = Events::new();
    let (metrics, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let id = client_id("server-ka");
    // Frozen, so that no CONNACK comes before the first look.
    broker.pause();
    let connection = Connection::start(
        options(&broker, "server-ka").with_keep_alive(Duration::from_secs(60)),
        &events,
    )
    .unwrap();
    // Before the CONNACK the gauge shows what the CONNECT asks for.
    let page_before = metrics.render();
    assert_eq!(
        keep_alive_gauge(&page_before, &id, &broker),
        Some(60.0),
        "{page_before}"
    );
    broker.resume();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    let up = Instant::now();
    broker.wait_for_log(&format!("as {id} (p5, c1, k60"), Duration::from_secs(1));
    let page = metrics.render();
    assert_eq!(keep_alive_gauge(&page, &id, &broker), Some(10.0), "{page}");
    assert_eq!(
        events.clients()[0].keep_alive,
        Some(Duration::from_secs(10))
    );
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }

    // With our 60 s the first PINGREQ would be due after 45 s; with the
    // broker's 10 s it is due after 7.5 s.
    let first = next(&mut pings, Duration::from_secs(9)).await;
    let Event::PingResponse(rtt) = first.event else {
        panic!("unexpected {first:?}");
    };
    assert!(rtt < Duration::from_millis(50), "loopback RTT {rtt:?}");
    let after = up.elapsed();
    assert!(
        after > Duration::from_millis(7_000) && after < Duration::from_millis(8_500),
        "the first ping {after:?} after CONNACK"
    );
    assert!(status.try_recv().is_err(), "the connection stayed up");

    // The ping deadline follows too: half the broker's 10 s after the next
    // PINGREQ, which is rumqttc's one-off at 10 s after CONNACK (`wire::v5`),
    // 2.5 s after the answer to ours at 7.5 s: Down 7.5 s after that answer.
    // With a deadline of half our 60 s, the next PINGREQ (ours, at 17.5 s)
    // would find rumqttc still awaiting the one-off's answer: 10 s.
    let last_answer = Instant::now();
    broker.pause();
    let down = next(&mut status, Duration::from_secs(15)).await;
    let detection = last_answer.elapsed();
    assert_eq!(down.event, Event::Status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::PingTimeout));
    assert!(
        detection > Duration::from_secs(7) && detection < Duration::from_millis(9_000),
        "Down {detection:?} after the last PINGRESP"
    );
    broker.resume();
    connection.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_down_and_the_target_up_again_after_its_restart() {
    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection = Connection::start(
        options(&broker, "kill").with_backoff(quick_backoff()),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    broker.kill();
    let down = next(&mut status, Duration::from_secs(2)).await;
    assert_eq!(down.event, Event::Status(Status::Down));
    assert!(
        matches!(
            down.reason,
            Some(FailureReason::ClosedAfterConnect | FailureReason::ClosedByBroker)
        ),
        "{down:?}"
    );
    let restarter = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    connection.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_is_down_one_ping_timeout_after_the_unanswered_pingreq() {
    let broker = Broker::start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
    let keep_alive = Duration::from_secs(2);
    let ping_timeout = Duration::from_millis(200);
    let connection = Connection::start(
        options(&broker, "freeze")
            .with_keep_alive(keep_alive)
            .with_ping_timeout(ping_timeout)
            .with_connect_timeout(Duration::from_millis(300))
            .with_backoff(quick_backoff()),
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
    let down = next(&mut status, 2 * keep_alive).await;
    let detection = last_answer.elapsed();
    assert_eq!(down.event, Event::Status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::PingTimeout));
    assert!(
        detection >= keep_alive.mul_f64(0.75) && detection < keep_alive + ping_timeout,
        "Down {detection:?} after the last PINGRESP: not one ping timeout ({ping_timeout:?}) \
         after the next PINGREQ (due {:?} after the last)",
        keep_alive.mul_f64(0.75)
    );
    // Attempts while frozen time out at the driver's connect timeout; no
    // second opinion turns them into anything else.
    wait_for_failures(&events, FailureReason::Timeout, 1, Duration::from_secs(3)).await;
    broker.resume();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    connection.shutdown().await;
}

/// A broker that speaks only MQTT 3.1.1 (RabbitMQ 3.10's MQTT plugin): a v5
/// target fails every attempt as `protocol_version`, says what to change,
/// stays Down without an event, and retries at its backoff — no hang, no
/// silent loop.
#[tokio::test]
async fn a_broker_without_mqtt_5_is_a_protocol_version_failure_that_says_so() {
    let (logs, _guard) = logs::capture_thread();
    let rabbit = RabbitMq::start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let started = Instant::now();
    let connection = Connection::start(
        ConnectionOptions::new(client_id("rabbit").as_str(), &rabbit.mqtt_url())
            .unwrap()
            .with_protocol(Protocol::V5)
            .with_backoff(Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_millis(400),
            }),
        &events,
    )
    .unwrap();
    wait_for_failures(
        &events,
        FailureReason::ProtocolVersion,
        2,
        Duration::from_secs(5),
    )
    .await;
    let elapsed = started.elapsed();
    let failures_seen = events.failures();
    assert!(
        failures_seen
            .iter()
            .all(|f| f.reason == FailureReason::ProtocolVersion),
        "only protocol_version: {failures_seen:?}"
    );
    // Two attempts with at least one backoff (≥ 100 ms, jittered) between.
    assert!(elapsed > Duration::from_millis(100), "{elapsed:?}");
    assert!(
        status.try_recv().is_err(),
        "no status event while it cannot connect"
    );
    connection.shutdown().await;
    let text = logs.text();
    assert!(
        text.contains("does not speak MQTT 5") && text.contains("reason=protocol_version"),
        "the log says why and what to change:\n{text}"
    );
}

/// `mqtt-pulse ping --protocol 5`: one MQTT 5 connection from the command
/// line, named in the first line; the broker saw p5.
#[test]
fn ping_speaks_mqtt_5_when_asked() {
    let broker = Broker::start();
    let id = client_id("ping");
    let output = run(&[
        "ping",
        "--count",
        "2",
        "--protocol",
        "5",
        "--client-id",
        &id,
        &broker.url(),
    ]);
    let stdout = support::text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout.lines().next(),
        Some(format!("PING {} as {id}, keep-alive 1s, MQTT 5", broker.url()).as_str()),
        "{stdout}"
    );
    assert!(stdout.contains("2 round trips, 0 lost"), "{stdout}");
    broker.wait_for_log(&format!("as {id} (p5, c1, k1"), Duration::from_secs(1));

    let refused = run(&["ping", "--protocol", "5.0", &broker.url()]);
    assert!(!refused.status.success());
    let stderr = support::text(&refused.stderr);
    assert!(
        stderr.contains(r#"must be "3.1.1" or "5", not "5.0""#),
        "{stderr}"
    );
}

/// A host's own rumqttc v5 loop, fed to a `ConnectionTracker`: Up on its
/// CONNACK with the broker's Server Keep Alive in the hub, Down with a
/// reason when the broker goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_s_own_v5_loop_is_tracked_with_the_keep_alive_the_broker_imposed() {
    let broker = Broker::builder().extra_config("max_keepalive 10").start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("own-loop");
    let mut options = rumqttc::v5::MqttOptions::new(id.as_str(), "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let mut tracker = mqtt_pulse::ConnectionTracker::from_mqtt5_options(&events, &options);
    assert_eq!(
        events.clients()[0].keep_alive,
        Some(Duration::from_secs(30))
    );
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let host = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => tracker.observe_v5(&event),
                Err(error) => {
                    tracker.observe_error_v5(&error);
                    return error.to_string();
                }
            }
        }
    });
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );
    assert_eq!(
        events.clients()[0].keep_alive,
        Some(Duration::from_secs(10))
    );

    broker.kill();
    let down = next(&mut status, Duration::from_secs(2)).await;
    assert_eq!(down.event, Event::Status(Status::Down));
    assert!(
        matches!(
            down.reason,
            Some(FailureReason::ClosedAfterConnect | FailureReason::ClosedByBroker)
        ),
        "{down:?}"
    );
    let error = host.await.unwrap();
    assert!(!error.is_empty());
}

/// The transports work on MQTT 5 as on 3.1.1: mutual TLS (client
/// certificate), and secure WebSocket beside it; a CA that does not match is
/// `tls`.
#[tokio::test]
async fn v5_over_mutual_tls_and_secure_websocket_and_a_wrong_ca_is_tls() {
    let dir = TempDir::new("v5-tls");
    let pki = TestPki::generate(&*dir);
    let stranger = TestPki::generate_named(&*dir, "stranger");
    let files = pki.server_files();
    let wss_port = support::free_port();
    let broker = Broker::builder()
        .tls(files.clone())
        .extra_config("require_certificate true")
        .extra_config(&format!(
            "listener {wss_port}\nsocket_domain ipv4\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
            files.cert.display(),
            files.key.display()
        ))
        .start();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let trusting = |ca: &std::path::Path| TlsOptions {
        ca_file: Some(ca.to_path_buf()),
        client_certificate: Some(ClientCertificate {
            cert_file: pki.client_cert_path.clone(),
            key_file: pki.client_key_path.clone(),
        }),
        ..Default::default()
    };
    #[allow(unused_mut)] // without WebSockets, only mutual TLS
    let mut urls = vec![("mtls", broker.url())];
    #[cfg(feature = "websocket")]
    urls.push(("wss", format!("wss://localhost:{wss_port}/mqtt")));
    for (test, url) in urls {
        let connection = Connection::start(
            ConnectionOptions::new(client_id(test).as_str(), &url)
                .unwrap()
                .with_protocol(Protocol::V5)
                .with_tls(trusting(&pki.ca_pem_path)),
            &events,
        )
        .unwrap();
        assert_eq!(
            next_status(&mut status, Duration::from_secs(2)).await,
            Status::Up,
            "{url}: {}",
            broker.log()
        );
        broker.wait_for_log(
            &format!("as {} (p5, c1, k5", client_id(test)),
            Duration::from_secs(1),
        );
        connection.shutdown().await;
        assert_eq!(
            next_status(&mut status, Duration::from_secs(1)).await,
            Status::Terminating
        );
        assert_eq!(
            next_status(&mut status, Duration::from_secs(1)).await,
            Status::Terminated
        );
    }

    let mismatched = Connection::start(
        options(&broker, "wrong-ca").with_tls(trusting(&stranger.ca_pem_path)),
        &events,
    )
    .unwrap();
    wait_for_failures(&events, FailureReason::Tls, 1, Duration::from_secs(3)).await;
    assert!(
        status.try_recv().is_err(),
        "never up with a CA that does not match"
    );
    mismatched.shutdown().await;
}

/// The password file is read again at every attempt on MQTT 5 too: a wrong
/// one is refused, and rewriting the file (no restart, no reload) connects.
#[tokio::test]
async fn a_rotated_password_file_is_used_from_the_next_v5_attempt() {
    let broker = Broker::builder().password("probe", "right-horse").start();
    let dir = TempDir::new("v5-password");
    let password_file = dir.join("password");
    std::fs::write(&password_file, "stale-horse\n").unwrap();
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection = Connection::start(
        options(&broker, "rotated")
            .with_password_file("probe", &password_file)
            .with_backoff(quick_backoff()),
        &events,
    )
    .unwrap();
    wait_for_failures(
        &events,
        FailureReason::NotAuthorized,
        1,
        Duration::from_secs(3),
    )
    .await;
    std::fs::write(&password_file, "right-horse\n").unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    connection.shutdown().await;
}

/// The client side on MQTT 5: a subscription through the connection, its
/// publishes in the bounded queue (as their 3.1.1 shape), and the
/// subscription renewed after a restarted broker lost the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publishes_reach_the_queue_and_subscriptions_are_renewed_after_a_restart() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;

    let broker = Arc::new(Broker::start());
    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("pubsub");
    let mut connection = Connection::start(
        options(&broker, "pubsub").with_backoff(quick_backoff()),
        &events,
    )
    .unwrap();
    assert!(
        connection.client().is_none(),
        "no 3.1.1 client on a v5 connection"
    );
    let mut publishes = connection.take_publishes().unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    let topic = format!("mqtt-pulse/test/{id}");
    let subscribed = format!("Received SUBSCRIBE from {id}");
    connection
        .subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    broker.wait_for_log(&subscribed, Duration::from_secs(2));
    let publish = |payload: &'static str| {
        let client = connection.client_v5().expect("a v5 connection").clone();
        let topic = topic.clone();
        async move {
            client
                .publish(topic, QoS5::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    };
    publish("first").await;
    let received = timeout(Duration::from_secs(2), publishes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.topic, topic);
    assert_eq!(&received.payload[..], b"first");
    assert_eq!(received.qos, rumqttc::QoS::AtLeastOnce);

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
    let deadline = Instant::now() + Duration::from_secs(2);
    while !broker.log_since(mark).contains(&subscribed) {
        assert!(
            Instant::now() < deadline,
            "no renewed SUBSCRIBE:\n{}",
            broker.log_since(mark)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish("second").await;
    let received = timeout(Duration::from_secs(2), publishes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&received.payload[..], b"second");
    connection.shutdown().await;
}

/// A client an operator disables in Mosquitto's dynamic-security plugin:
/// 2.0.11 means to tell an MQTT 5 client why (it queues DISCONNECT 0x98,
/// administrative action) but closes the socket before the packet leaves, so
/// what the target sees is a close soon after CONNACK; then every attempt is
/// refused as not authorised (CONNACK 0x87) until it is enabled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_an_operator_disables_is_closed_then_not_authorized_until_enabled() {
    const DYNSEC: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";
    let dir = TempDir::new("v5-dynsec");
    let config = dir.join("dynsec.json");
    let ctrl = |args: &[&str]| {
        let output = std::process::Command::new("/usr/bin/mosquitto_ctrl")
            .args(args)
            .output()
            .expect("run mosquitto_ctrl");
        assert!(
            output.status.success(),
            "mosquitto_ctrl {args:?}: {output:?}"
        );
    };
    ctrl(&[
        "dynsec",
        "init",
        config.to_str().unwrap(),
        "admin",
        "admin-horse",
    ]);
    let broker = Broker::builder()
        .extra_config(&format!(
            "plugin {DYNSEC}\nplugin_opt_config_file {}",
            config.display()
        ))
        .start();
    let port = broker.port().to_string();
    let admin = |command: &[&str]| {
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "admin",
            "-P",
            "admin-horse",
        ];
        args.push("dynsec");
        args.extend_from_slice(command);
        ctrl(&args);
    };
    admin(&["createClient", "probe", "-p", "probe-horse"]);

    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection = Connection::start(
        options(&broker, "dynsec")
            .with_credentials("probe", "probe-horse")
            .with_backoff(quick_backoff()),
        &events,
    )
    .unwrap();
    assert_eq!(
        next_status(&mut status, Duration::from_secs(2)).await,
        Status::Up
    );

    admin(&["disableClient", "probe"]);
    let down = next(&mut status, Duration::from_secs(2)).await;
    assert_eq!(down.event, Event::Status(Status::Down));
    assert_eq!(down.reason, Some(FailureReason::ClosedAfterConnect));
    assert_eq!(failures(&events, FailureReason::AdministrativeAction), 0);
    wait_for_failures(
        &events,
        FailureReason::NotAuthorized,
        1,
        Duration::from_secs(3),
    )
    .await;

    admin(&["enableClient", "probe"]);
    assert_eq!(
        next_status(&mut status, Duration::from_secs(3)).await,
        Status::Up
    );
    connection.shutdown().await;
}

/// Waits for the first `Up` among the status events `sub` gets.
async fn wait_up(sub: &mut Subscription) {
    while next_status(sub, Duration::from_secs(10)).await != Status::Up {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_probe_round_trips_at_qos_0_1_and_2_in_order_and_off_the_host_s_queue() {
    for (qos, name) in [
        (rumqttc::QoS::AtMostOnce, "probe-qos0"),
        (rumqttc::QoS::AtLeastOnce, "probe-qos1"),
        (rumqttc::QoS::ExactlyOnce, "probe-qos2"),
    ] {
        let broker = Broker::start();
        let events = Events::new();
        let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
        let mut trips = events.register(ClientFilter::Any, EventKind::RoundTrip);
        let probe = ProbeOptions::new()
            .with_interval(Duration::from_millis(50))
            .with_timeout(Duration::from_secs(2))
            .with_qos(qos);
        let options = options(&broker, name)
            .with_keep_alive(Duration::from_secs(1))
            .with_probe(probe);
        let mut connection = Connection::start(options, &events).unwrap();
        let mut publishes = connection.take_publishes().unwrap();
        wait_up(&mut statuses).await;

        for expected_seq in 1..=20 {
            let Event::RoundTrip(trip) = next(&mut trips, Duration::from_secs(5)).await.event
            else {
                unreachable!("only round trips are registered");
            };
            assert_eq!((trip.seq, trip.path), (expected_seq, None), "{name}");
            let RoundTripOutcome::Received(rtt) = trip.outcome else {
                panic!("{name}: {:?}", trip.outcome);
            };
            assert!(
                rtt > Duration::ZERO && rtt < Duration::from_millis(500),
                "{name}: {rtt:?}"
            );
        }
        let counts = &events.round_trips()[0];
        assert!(counts.sent >= 20, "{name}: {counts:?}");
        assert_eq!(counts.count(RoundTripOutcome::Lost), 0, "{name}");
        assert_eq!(counts.count(RoundTripOutcome::Duplicate), 0, "{name}");
        assert!(
            publishes.try_recv().is_err(),
            "{name}: the probe's messages are not the host's publishes"
        );
        assert_eq!(connection.dropped_publishes(), 0, "{name}");
        connection.shutdown().await;
    }
}

#[tokio::test]
async fn a_v5_probe_whose_topic_the_acl_denies_is_lost_while_the_target_stays_up() {
    let dir = TempDir::new("mqtt5-probe-acl");
    // No rule for anonymous clients: every topic is denied them. Mosquitto
    // 2.0.11 grants the SUBSCRIBE under an `acl_file` (on both versions)
    // and denies at delivery, so every message is lost; the v5 SUBACK's
    // refusal codes are mapped in `wire::v5` and tested there.
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "# nothing is allowed to anonymous clients\n").unwrap();
    let broker = Broker::builder()
        .extra_config(&format!("acl_file {}", acl.display()))
        .start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let mut trips = events.register(ClientFilter::Any, EventKind::RoundTrip);
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_millis(300));
    let connection = Connection::start(
        options(&broker, "probe-acl")
            .with_keep_alive(Duration::from_secs(1))
            .with_probe(probe),
        &events,
    )
    .unwrap();
    wait_up(&mut statuses).await;
    for _ in 0..3 {
        let Event::RoundTrip(trip) = next(&mut trips, Duration::from_secs(5)).await.event else {
            unreachable!("only round trips are registered");
        };
        assert_eq!(trip.outcome, RoundTripOutcome::Lost);
    }
    assert_eq!(
        events.status(connection.client_id().as_str()),
        Some(Status::Up)
    );
    let counts = &events.round_trips()[0];
    assert_eq!(
        counts.count(RoundTripOutcome::Received(Duration::ZERO)),
        0,
        "{counts:?}"
    );
    assert!(counts.sent >= 3, "{counts:?}");
    connection.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_between_a_v5_and_a_3_1_1_connection_carry_messages_both_ways() {
    let broker = Broker::start();
    let events = Events::new();
    let mut statuses = events.register(ClientFilter::Any, EventKind::Status);
    let mut trips = events.register(ClientFilter::Any, EventKind::RoundTrip);
    let v5 = Connection::start(
        options(&broker, "path-v5").with_keep_alive(Duration::from_secs(1)),
        &events,
    )
    .unwrap();
    let v311 = Connection::start(
        ConnectionOptions::new(client_id("path-v311").as_str(), &broker.url())
            .unwrap()
            .with_keep_alive(Duration::from_secs(1)),
        &events,
    )
    .unwrap();
    wait_up(&mut statuses).await;
    wait_up(&mut statuses).await;
    let path = |name: &str| {
        PathOptions::new(name)
            .with_interval(Duration::from_millis(50))
            .with_timeout(Duration::from_secs(2))
    };
    let _out = Path::start(path("v5->v311"), &v5, &v311, &events).unwrap();
    let _back = Path::start(path("v311->v5"), &v311, &v5, &events).unwrap();

    let mut received = std::collections::BTreeMap::<String, u64>::new();
    // Both ways within 10 s: one way alone keeps the events coming.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.values().filter(|n| **n >= 10).count() < 2 {
        assert!(Instant::now() < deadline, "not both ways: {received:?}");
        let Event::RoundTrip(trip) = next(&mut trips, Duration::from_secs(5)).await.event else {
            unreachable!("only round trips are registered");
        };
        let name = trip.path.as_deref().expect("only paths here").to_owned();
        assert!(
            matches!(trip.outcome, RoundTripOutcome::Received(_)),
            "{name}: {trip:?}"
        );
        let seen = received.entry(name.clone()).or_default();
        *seen += 1;
        assert_eq!(trip.seq, *seen, "{name}: in sequence");
    }
    let counts = events.round_trips();
    assert_eq!(counts.len(), 2, "{counts:?}");
    for counts in counts {
        assert!(counts.path.is_some(), "{counts:?}");
        assert_eq!(counts.count(RoundTripOutcome::Lost), 0, "{counts:?}");
        assert!(counts.sent >= 10, "{counts:?}");
    }
    v5.shutdown().await;
    v311.shutdown().await;
}
