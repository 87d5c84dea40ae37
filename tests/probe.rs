//! Round-trip probes (issue 15) against real Mosquitto brokers: the round
//! trip at QoS 0, 1 and 2, an ACL that denies the probe topic, a broker
//! restart in the middle of probing, and the probe's metrics on `/metrics`.
//!
//! Every test owns its broker (the fixture's Mosquitto on a free port): the
//! machine's shared broker has other clients that would disturb the counts.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mqtt_pulse::connection::{Connection, ConnectionOptions, ProbeOptions};
use mqtt_pulse::events::{
    ClientFilter, Event, EventKind, Events, Message, RoundTrip, RoundTripCounts, RoundTripOutcome,
    Status, Subscription,
};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use rumqttc::QoS;
use support::metrics::sample;
use support::prometheus::promtool_problems;
use support::{Broker, TempDir};
use tokio::time::timeout;

fn client_id(test: &str) -> String {
    format!("mqtt-pulse-test-probe-{test}-{}", std::process::id())
}

/// The next message, failing the test if none comes within `limit`.
async fn next(sub: &mut Subscription, limit: Duration) -> Message {
    match timeout(limit, sub.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the hub went away"),
        Err(_) => panic!("no event within {limit:?}"),
    }
}

async fn wait_up(sub: &mut Subscription) {
    loop {
        if next(sub, Duration::from_secs(10)).await.event == Event::Status(Status::Up) {
            return;
        }
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::test]
async fn round_trips_at_qos_0_1_and_2_come_back_in_order_with_a_loopback_rtt() {
    for (qos, name) in [
        (QoS::AtMostOnce, "qos0"),
        (QoS::AtLeastOnce, "qos1"),
        (QoS::ExactlyOnce, "qos2"),
    ] {
        let broker = Broker::start();
        let events = Events::new();
        let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
        sub.register(ClientFilter::Any, EventKind::Status);
        sub.register(ClientFilter::Any, EventKind::PingResponse);
        let id = client_id(name);
        let probe = ProbeOptions::new()
            .with_interval(Duration::from_millis(50))
            .with_timeout(Duration::from_secs(2))
            .with_qos(qos);
        let options = ConnectionOptions::new(id.as_str(), &broker.url())
            .unwrap()
            .with_keep_alive(Duration::from_secs(1))
            .with_probe(probe);
        let mut connection = Connection::start(options, &events).unwrap();
        let mut publishes = connection.take_publishes().unwrap();
        wait_up(&mut sub).await;

        let (mut rtts, mut pings) = (Vec::new(), Vec::new());
        let mut expected_seq = 1;
        while rtts.len() < 20 || pings.is_empty() {
            let message = next(&mut sub, Duration::from_secs(5)).await;
            match message.event {
                Event::RoundTrip(trip) => {
                    assert_eq!(trip.path, None);
                    assert_eq!(trip.seq, expected_seq, "{name}: in sequence");
                    expected_seq += 1;
                    let RoundTripOutcome::Received(rtt) = trip.outcome else {
                        panic!("{name}: {trip:?}");
                    };
                    rtts.push(rtt);
                }
                Event::PingResponse(rtt) => pings.push(rtt),
                other => panic!("{name}: {other:?}"),
            }
        }
        let (probe_median, ping_median) = (median(rtts.clone()), median(pings));
        assert!(
            probe_median < Duration::from_millis(5),
            "{name}: loopback round trips {rtts:?}"
        );
        assert!(rtts.iter().all(|rtt| *rtt > Duration::ZERO));
        // The probe goes through the broker's routing, the ping does not: a
        // little longer, of the same order on loopback.
        assert!(
            probe_median < ping_median * 10 + Duration::from_millis(1),
            "{name}: probe {probe_median:?} against ping {ping_median:?}"
        );

        let counts = events.round_trips();
        assert_eq!(counts.len(), 1);
        let counts = &counts[0];
        assert_eq!(counts.client_id.as_str(), id);
        assert!(counts.sent >= 20);
        assert_eq!(counts.count(RoundTripOutcome::Lost), 0);
        assert_eq!(counts.count(RoundTripOutcome::Duplicate), 0);
        assert!(counts.last_success.is_some());
        assert!(
            publishes.try_recv().is_err(),
            "{name}: probe messages are not the host's publishes"
        );
        assert_eq!(connection.dropped_publishes(), 0);
        assert!(events.dropped_publishes().is_empty());
        connection.shutdown().await;
        assert!(events.round_trips().is_empty(), "forgotten with the client");
    }
}

/// A Prometheus exporter on its own registry, without process metrics.
fn exporter(events: &Events) -> MetricsHandle {
    let (handle, consumer) = MetricsBuilder::new(events)
        .with_registry(prometheus::Registry::new())
        .with_process_metrics(false)
        .build()
        .unwrap();
    tokio::spawn(consumer);
    handle
}

/// The hub's counts of `id`'s own probe.
fn probe_counts(events: &Events, id: &str) -> RoundTripCounts {
    events
        .round_trips()
        .into_iter()
        .find(|counts| counts.client_id.as_str() == id && counts.path.is_none())
        .unwrap_or_else(|| panic!("no probe counts for {id}: {:?}", events.round_trips()))
}

fn series(name: &str, id: &str, broker: &Broker, extra: &str) -> String {
    format!(
        r#"{name}{{client_id="{id}",broker="{}"{extra}}}"#,
        broker.addr()
    )
}

#[tokio::test]
async fn an_acl_that_denies_the_probe_topic_leaves_the_client_up_while_its_messages_are_lost() {
    let dir = TempDir::new("probe-acl");
    // Anonymous clients may use `allowed/#` only: not the probe's topic.
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite allowed/#\n").unwrap();
    let broker = Broker::builder()
        .extra_config(&format!("acl_file {}\n", acl.display()))
        .start();
    let events = Events::new();
    let metrics = exporter(&events);
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    sub.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("acl");
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(300));
    let options = ConnectionOptions::new(id.as_str(), &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_probe(probe);
    let connection = Connection::start(options, &events).unwrap();
    wait_up(&mut sub).await;

    // Five messages lost in a row, and nothing else: no Down, no success.
    for seq in 1..=5 {
        let message = next(&mut sub, Duration::from_secs(5)).await;
        assert_eq!(
            message.event,
            Event::RoundTrip(RoundTrip::probe(seq, RoundTripOutcome::Lost))
        );
    }
    assert_eq!(connection.status(), Status::Up);
    let counts = probe_counts(&events, &id);
    assert!(counts.sent >= 5, "{counts:?}");
    assert_eq!(counts.count(RoundTripOutcome::Lost), 5);
    assert_eq!(counts.last_success, None);
    assert!(
        broker.log().contains(&format!("Denied PUBLISH from {id}")),
        "the broker's ACL refused them: {}",
        broker.log()
    );

    let page = metrics.render();
    let up = series("mqtt_client_up", &id, &broker, "");
    assert_eq!(sample(&page, &up), Some(1.0), "{page}");
    let outcome = |outcome: &str| {
        let extra = format!(r#",outcome="{outcome}""#);
        sample(
            &page,
            &series("mqtt_client_roundtrip_messages_total", &id, &broker, &extra),
        )
    };
    assert_eq!(outcome("lost"), Some(5.0), "{page}");
    assert_eq!(outcome("received"), Some(0.0), "{page}");
    let sent = series("mqtt_client_roundtrip_sent_total", &id, &broker, "");
    assert!(sample(&page, &sent).unwrap() >= 5.0, "{page}");
    assert!(
        !page.contains("mqtt_client_roundtrip_last_success_timestamp_seconds{"),
        "no success, no timestamp: {page}"
    );
    let count = series("mqtt_client_roundtrip_seconds_count", &id, &broker, "");
    assert_eq!(sample(&page, &count), Some(0.0), "{page}");
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }
    connection.shutdown().await;
}

#[tokio::test]
async fn the_probe_families_pass_promtool_and_count_what_the_hub_counted() {
    let broker = Broker::start();
    let events = Events::new();
    let metrics = exporter(&events);
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    sub.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("metrics");
    let options = ConnectionOptions::new(id.as_str(), &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_labels([("site", "north")])
        .with_probe(ProbeOptions::new().with_interval(Duration::from_millis(50)));
    let connection = Connection::start(options, &events).unwrap();
    wait_up(&mut sub).await;
    for _ in 0..3 {
        let message = next(&mut sub, Duration::from_secs(5)).await;
        assert!(matches!(
            message.event,
            Event::RoundTrip(RoundTrip {
                outcome: RoundTripOutcome::Received(_),
                ..
            })
        ));
    }
    let page = metrics.render();
    let extra = r#",site="north""#;
    let received = format!(r#"{extra},outcome="received""#);
    let counted = sample(
        &page,
        &series(
            "mqtt_client_roundtrip_messages_total",
            &id,
            &broker,
            &received,
        ),
    )
    .unwrap();
    let in_histogram = sample(
        &page,
        &series("mqtt_client_roundtrip_seconds_count", &id, &broker, extra),
    )
    .unwrap();
    assert!(counted >= 3.0, "{page}");
    assert_eq!(counted, in_histogram, "a render applies every event first");
    let last = sample(
        &page,
        &series(
            "mqtt_client_roundtrip_last_success_timestamp_seconds",
            &id,
            &broker,
            extra,
        ),
    )
    .unwrap();
    assert!((support::unix_now() - last).abs() < 60.0, "{last}");
    assert!(
        sample(
            &page,
            r#"mqtt_pulse_events_dispatched_total{type="round_trip"}"#
        )
        .unwrap()
            >= 3.0,
        "{page}"
    );
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }
    connection.shutdown().await;
    assert!(
        !metrics
            .render()
            .contains("mqtt_client_roundtrip_sent_total{")
    );
}

/// What the test saw of each sequence number, in order.
#[derive(Default)]
struct Ledger(BTreeMap<u64, Vec<RoundTripOutcome>>);

impl Ledger {
    fn add(&mut self, trip: &RoundTrip) {
        self.0.entry(trip.seq).or_default().push(trip.outcome);
    }

    fn count(&self, label: &str) -> u64 {
        let all = self.0.values().flatten();
        all.filter(|outcome| outcome.as_str() == label).count() as u64
    }

    /// The messages that did not simply come back once, for a failure message.
    fn unusual(&self) -> String {
        let simple = |outcomes: &Vec<RoundTripOutcome>| {
            matches!(outcomes.as_slice(), [RoundTripOutcome::Received(_)])
        };
        let unusual: BTreeMap<_, _> = self.0.iter().filter(|(_, o)| !simple(o)).collect();
        format!(
            "{} received once; others {unusual:?}",
            self.0.len() - unusual.len()
        )
    }

    /// Every message settled once (received, out of order or lost), a late
    /// one only after it was lost, a duplicate only after it came back.
    fn check(&self) {
        for (seq, outcomes) in &self.0 {
            let settled = outcomes
                .iter()
                .filter(|o| matches!(o.as_str(), "received" | "out_of_order" | "lost"))
                .count();
            assert!(settled <= 1, "message {seq} settled twice: {outcomes:?}");
            for (i, outcome) in outcomes.iter().enumerate() {
                let before = &outcomes[..i];
                match outcome {
                    RoundTripOutcome::Late => assert!(
                        before.contains(&RoundTripOutcome::Lost),
                        "message {seq}: late before lost: {outcomes:?}"
                    ),
                    RoundTripOutcome::Duplicate => assert!(
                        !before.is_empty() && !matches!(before, [RoundTripOutcome::Lost]),
                        "message {seq}: a duplicate of nothing back: {outcomes:?}"
                    ),
                    _ => assert_eq!(i, 0, "message {seq}: {outcomes:?}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn a_broker_restart_mid_probe_counts_the_redelivered_messages_late_never_twice_received() {
    let dir = TempDir::new("probe-restart");
    // The broker keeps the client's session (and its subscription) on disk,
    // saved every second, so the restarted broker resumes it: rumqttc then
    // sends again the QoS 1 messages the paused broker never acknowledged.
    let broker = Broker::builder()
        .extra_config(&format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n",
            dir.path().display()
        ))
        .start();
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    sub.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("restart");
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(400))
        .with_qos(QoS::AtLeastOnce);
    let options = ConnectionOptions::new(id.as_str(), &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_connect_timeout(Duration::from_secs(1))
        .with_clean_session(false)
        .with_probe(probe);
    let connection = Connection::start(options, &events).unwrap();
    wait_up(&mut sub).await;

    let mut ledger = Ledger::default();
    let mut ups = 1;
    let record = |message: Message, ledger: &mut Ledger, ups: &mut u32| match message.event {
        Event::RoundTrip(trip) => ledger.add(&trip),
        Event::Status(Status::Up) => *ups += 1,
        _ => {}
    };
    // Running, and the session saved with its subscription.
    while ledger.count("received") < 5 {
        record(
            next(&mut sub, Duration::from_secs(5)).await,
            &mut ledger,
            &mut ups,
        );
    }
    // Mosquitto logs a save as it starts writing: the first save after this
    // mark is complete once the second one starts.
    let mark = broker.log_mark();
    let saved = || {
        broker
            .log_since(mark)
            .matches("Saving in-memory database")
            .count()
            >= 2
    };
    assert!(
        support::wait_until(Duration::from_secs(10), saved),
        "the session was not saved: {}",
        broker.log_since(mark)
    );

    // Paused: messages are written and never acknowledged, then lost.
    broker.pause();
    while ledger.count("lost") < 3 {
        record(
            next(&mut sub, Duration::from_secs(5)).await,
            &mut ledger,
            &mut ups,
        );
    }
    let restarted = Instant::now();
    broker.restart();
    // Back: the messages written to the paused broker come back late.
    while ledger.count("late") < 1 || ups < 2 || ledger.count("received") < 10 {
        ledger.check();
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "after the restart: {}",
            ledger.unusual()
        );
        record(
            next(&mut sub, Duration::from_secs(10)).await,
            &mut ledger,
            &mut ups,
        );
    }
    ledger.check();

    // The hub counted exactly what the events said, nothing twice: every
    // outcome is counted just before it is dispatched, so the events catch
    // up with a first reading, and a second one covers every event seen.
    let first = probe_counts(&events, &id);
    let behind = |ledger: &Ledger| {
        RoundTripOutcome::LABELS
            .iter()
            .zip(first.outcomes)
            .any(|(label, counted)| ledger.count(label) < counted)
    };
    while behind(&ledger) {
        record(
            next(&mut sub, Duration::from_secs(5)).await,
            &mut ledger,
            &mut ups,
        );
    }
    let counts = probe_counts(&events, &id);
    for (label, counted) in RoundTripOutcome::LABELS.iter().zip(counts.outcomes) {
        assert!(
            ledger.count(label) <= counted,
            "{label}: events {}, hub {counted}",
            ledger.count(label)
        );
    }
    ledger.check();
    let settled = counts.count(RoundTripOutcome::Received(Duration::ZERO))
        + counts.count(RoundTripOutcome::OutOfOrder(Duration::ZERO))
        + counts.count(RoundTripOutcome::Lost);
    assert!(
        settled <= counts.sent,
        "never more settled than sent: {counts:?}"
    );
    connection.shutdown().await;
}

/// A service that polls its own rumqttc event loop feeds the probe's traffic
/// to its tracker (`observe_in`, `probe_tick` at `probe_wakeup`): round trips
/// are measured as for a connection mqtt-pulse drives, and the service sees
/// its own messages but never the probe's.
#[tokio::test]
async fn a_service_with_its_own_event_loop_probes_through_its_tracker() {
    use mqtt_pulse::ConnectionTracker;
    use rumqttc::{AsyncClient, MqttOptions, Packet};

    let broker = Broker::start();
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    let id = client_id("embedded");
    let mut options = MqttOptions::new(id.as_str(), "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(50))
        .with_qos(QoS::AtMostOnce);
    let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options)
        .with_probe(&probe)
        .unwrap();
    assert_eq!(
        tracker.probe_topic(),
        Some(format!("mqtt-pulse/probe/{id}").as_str())
    );
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe("service/in", QoS::AtMostOnce)
        .await
        .unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = tokio::spawn(async move {
        loop {
            let wakeup = tracker.probe_wakeup();
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(event) => {
                        let probe_message = tracker.observe_in(&event, &mut eventloop);
                        if let (false, rumqttc::Event::Incoming(Packet::Publish(publish))) =
                            (probe_message, event)
                        {
                            let _ = seen_tx.send(publish.topic);
                        }
                    }
                    Err(error) => {
                        tracker.observe_error(&error);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tokio::time::sleep_until(wakeup.unwrap_or_else(std::time::Instant::now).into()),
                    if wakeup.is_some() => tracker.probe_tick(&mut eventloop),
            }
        }
    });

    // The service's own QoS 0 messages, interleaved with the probe's.
    for _ in 0..10 {
        client
            .publish("service/in", QoS::AtMostOnce, false, "hello")
            .await
            .unwrap();
        let trip = loop {
            if let Event::RoundTrip(trip) = next(&mut sub, Duration::from_secs(5)).await.event {
                break trip;
            }
        };
        let RoundTripOutcome::Received(rtt) = trip.outcome else {
            panic!("{trip:?}")
        };
        assert!(rtt < Duration::from_millis(100), "{rtt:?}");
    }
    let counts = probe_counts(&events, &id);
    assert_eq!(counts.count(RoundTripOutcome::Lost), 0, "{counts:?}");
    service.abort();
    let mut topics = Vec::new();
    while let Ok(topic) = seen.try_recv() {
        topics.push(topic);
    }
    assert!(!topics.is_empty());
    assert!(
        topics.iter().all(|topic| topic == "service/in"),
        "the service saw only its own messages: {topics:?}"
    );
}

/// The same for a service that polls its own `rumqttc::v5` event loop
/// (`observe_in_v5`, `probe_tick_v5` at `probe_wakeup`): the probe's
/// SUBSCRIBE and PUBLISHes go into the v5 loop's pending requests, round trips
/// reach the hub with a loopback RTT, and the service's own messages on
/// another topic arrive whole and in order while no probe message reaches it.
#[tokio::test]
async fn a_service_with_its_own_v5_event_loop_probes_through_its_tracker() {
    use mqtt_pulse::ConnectionTracker;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, MqttOptions};

    let broker = Broker::start();
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    let id = client_id("embedded-v5");
    let mut options = MqttOptions::new(id.as_str(), "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(50))
        .with_qos(QoS::AtLeastOnce);
    let mut tracker = ConnectionTracker::from_mqtt5_options(&events, &options)
        .with_probe(&probe)
        .unwrap();
    let probe_topic = format!("mqtt-pulse/probe/{id}");
    assert_eq!(tracker.probe_topic(), Some(probe_topic.as_str()));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe("service/in", QoS5::AtLeastOnce)
        .await
        .unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = tokio::spawn(async move {
        loop {
            let wakeup = tracker.probe_wakeup();
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(event) => {
                        let probe_message = tracker.observe_in_v5(&event, &mut eventloop);
                        if let (false, rumqttc::v5::Event::Incoming(Packet::Publish(publish))) =
                            (probe_message, event)
                        {
                            let _ = seen_tx.send(publish);
                        }
                    }
                    Err(error) => {
                        tracker.observe_error_v5(&error);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tokio::time::sleep_until(wakeup.unwrap_or_else(std::time::Instant::now).into()),
                    if wakeup.is_some() => tracker.probe_tick_v5(&mut eventloop),
            }
        }
    });

    // The service's own QoS 1 messages, interleaved with the probe's.
    for i in 0..10 {
        client
            .publish("service/in", QoS5::AtLeastOnce, false, format!("hello-{i}"))
            .await
            .unwrap();
        let trip = loop {
            if let Event::RoundTrip(trip) = next(&mut sub, Duration::from_secs(5)).await.event {
                break trip;
            }
        };
        let RoundTripOutcome::Received(rtt) = trip.outcome else {
            panic!("{trip:?}")
        };
        assert!(rtt < Duration::from_millis(100), "{rtt:?}");
    }
    let counts = probe_counts(&events, &id);
    assert_eq!(counts.count(RoundTripOutcome::Lost), 0, "{counts:?}");

    // Every one of the service's messages reaches it, as sent; nothing else.
    let mut received = Vec::new();
    while received.len() < 10 {
        let publish = timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the service's own messages arrive")
            .expect("the service loop is running");
        received.push(publish);
    }
    service.abort();
    while let Ok(publish) = seen.try_recv() {
        received.push(publish);
    }
    let received: Vec<(String, String)> = received
        .iter()
        .map(|publish| {
            (
                String::from_utf8_lossy(&publish.topic).into_owned(),
                String::from_utf8_lossy(&publish.payload).into_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = (0..10)
        .map(|i| ("service/in".to_owned(), format!("hello-{i}")))
        .collect();
    assert_eq!(
        received, expected,
        "the service saw its own messages, whole and in order, and no probe message"
    );
}

/// What a relay between the client and the broker saw: when each probe
/// message (by sequence number) passed towards the broker and back, and the
/// PINGREQ → PINGRESP pairs, on its own clock.
#[derive(Default)]
struct Wire {
    /// (towards the broker, sequence number or `None` for a ping, when).
    packets: Vec<(bool, Option<u64>, Instant)>,
}

impl Wire {
    fn probe_rtt(&self, seq: u64) -> Option<Duration> {
        let at = |outbound: bool| {
            self.packets
                .iter()
                .find(|(out, s, _)| *out == outbound && *s == Some(seq))
                .map(|(_, _, at)| *at)
        };
        Some(at(false)?.duration_since(at(true)?))
    }

    fn ping_rtts(&self) -> Vec<Duration> {
        let mut rtts = Vec::new();
        let mut sent = None;
        for (out, seq, at) in &self.packets {
            match (out, seq) {
                (true, None) => sent = Some(*at),
                (false, None) => {
                    if let Some(sent) = sent.take() {
                        rtts.push(at.duration_since(sent));
                    }
                }
                _ => {}
            }
        }
        rtts
    }
}

/// A TCP relay on a free port in front of `broker`, recording into `wire`
/// the PUBLISHes with a probe payload and the PINGREQ/PINGRESP it forwards.
async fn relay(broker: u16, wire: std::sync::Arc<std::sync::Mutex<Wire>>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        client.set_nodelay(true).unwrap();
        let upstream = tokio::net::TcpStream::connect(("127.0.0.1", broker))
            .await
            .unwrap();
        upstream.set_nodelay(true).unwrap();
        let (client_read, client_write) = client.into_split();
        let (broker_read, broker_write) = upstream.into_split();
        let pump = |outbound: bool,
                    mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf| {
            let wire = std::sync::Arc::clone(&wire);
            async move {
                let (mut buffer, mut chunk) = (Vec::new(), vec![0; 65536]);
                loop {
                    let n = match from.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let now = Instant::now();
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some((len, packet)) = frame(&buffer) {
                        if let Some(seq) = packet {
                            wire.lock().unwrap().packets.push((outbound, seq, now));
                        }
                        buffer.drain(..len);
                    }
                    if to.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::spawn(pump(true, client_read, broker_write));
        pump(false, broker_read, client_write).await;
    });
    port
}

/// The first whole MQTT packet in `buffer`: its length, and `Some(Some(seq))`
/// for a PUBLISH of a probe message, `Some(None)` for a PINGREQ or PINGRESP,
/// `None` for anything else. `None` overall until the packet is complete.
fn frame(buffer: &[u8]) -> Option<(usize, Option<Option<u64>>)> {
    let first = *buffer.first()?;
    let (mut remaining, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *buffer.get(at)?;
        remaining |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let total = at + remaining;
    let body = buffer.get(at..total)?;
    let packet = match first >> 4 {
        12 | 13 => Some(None),
        3 => {
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let qos = (first >> 1) & 3;
            let payload = &body[2 + topic_len + if qos > 0 { 2 } else { 0 }..];
            let text = std::str::from_utf8(payload).unwrap_or("");
            let mut fields = text.split(' ');
            (fields.next() == Some("mqtt-pulse/1"))
                .then(|| fields.nth(1).and_then(|seq| seq.parse().ok()))
                .flatten()
                .map(Some)
        }
        _ => None,
    };
    Some((total, packet))
}

/// The round trips measured agree with what a relay between the client and
/// the broker sees on the wire, as closely as the ping's do: both are taken
/// when rumqttc's `poll()` yields the write and the read.
#[tokio::test]
async fn the_probe_round_trip_agrees_with_the_wire_as_the_ping_does() {
    let broker = Broker::start();
    let wire = std::sync::Arc::new(std::sync::Mutex::new(Wire::default()));
    let port = relay(broker.port(), std::sync::Arc::clone(&wire)).await;
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    sub.register(ClientFilter::Any, EventKind::PingResponse);
    sub.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("wire");
    let options = ConnectionOptions::new(id.as_str(), &format!("mqtt://127.0.0.1:{port}"))
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_probe(ProbeOptions::new().with_interval(Duration::from_millis(100)));
    let connection = Connection::start(options, &events).unwrap();
    wait_up(&mut sub).await;

    let (mut probes, mut pings) = (Vec::new(), Vec::new());
    while probes.len() < 20 || pings.len() < 5 {
        match next(&mut sub, Duration::from_secs(5)).await.event {
            Event::RoundTrip(trip) => {
                let RoundTripOutcome::Received(rtt) = trip.outcome else {
                    panic!("{trip:?}")
                };
                probes.push((trip.seq, rtt));
            }
            Event::PingResponse(rtt) => pings.push(rtt),
            other => panic!("{other:?}"),
        }
    }
    connection.shutdown().await;
    let wire = wire.lock().unwrap();
    let off = |ours: Duration, theirs: Duration| {
        Duration::from_secs_f64((ours.as_secs_f64() - theirs.as_secs_f64()).abs())
    };
    let probe_off: Vec<Duration> = probes
        .iter()
        .map(|&(seq, rtt)| off(rtt, wire.probe_rtt(seq).expect("seen on the wire")))
        .collect();
    let wire_pings = wire.ping_rtts();
    let ping_off: Vec<Duration> = pings
        .iter()
        .zip(&wire_pings)
        .map(|(&ours, &theirs)| off(ours, theirs))
        .collect();
    let (probe_off, ping_off) = (median(probe_off), median(ping_off));
    assert!(
        probe_off <= ping_off + Duration::from_micros(500),
        "probe off the wire by {probe_off:?}, the ping by {ping_off:?}"
    );
    assert!(probe_off < Duration::from_millis(2), "{probe_off:?}");
}

/// Another client that may use the probe topic (the ACL lets it) publishes
/// junk, 200 KiB, replays of a real probe message and a forged sequence
/// number never sent: none is a success, a replay is a duplicate, and none
/// reaches the host's publishes or its dropped count.
#[tokio::test]
async fn forged_and_replayed_messages_on_the_probe_topic_are_never_successes() {
    use rumqttc::{AsyncClient, MqttOptions, Packet};

    let broker = Broker::start();
    let events = Events::new();
    let mut sub = events.register(ClientFilter::Any, EventKind::RoundTrip);
    sub.register(ClientFilter::Any, EventKind::Status);
    let id = client_id("forged");
    let topic = format!("mqtt-pulse/probe/{id}");
    // A long interval: the forgeries land between two real messages.
    let probe = ProbeOptions::new()
        .with_interval(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(400));
    let options = ConnectionOptions::new(id.as_str(), &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_probe(probe);
    let connection = Connection::start(options, &events).unwrap();
    wait_up(&mut sub).await;

    // The attacker reads one real message off the topic.
    let mut attacker_options = MqttOptions::new(client_id("attacker"), "127.0.0.1", broker.port());
    attacker_options.set_max_packet_size(2 << 20, 2 << 20);
    let (attacker, mut attacker_loop) = AsyncClient::new(attacker_options, 64);
    attacker
        .subscribe(topic.as_str(), QoS::AtLeastOnce)
        .await
        .unwrap();
    let captured = timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(Packet::Publish(p))) = attacker_loop.poll().await {
                break p.payload;
            }
        }
    })
    .await
    .expect("a probe message on the topic");
    let text = std::str::from_utf8(&captured).unwrap().to_owned();
    let fields: Vec<&str> = text.split(' ').collect();
    let forged_ahead = format!("{} {} {} {}", fields[0], fields[1], 1_000_000, fields[3]);
    let mut forgeries: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        Vec::new(),
        // Large, but under the 256 KiB a connection accepts: a bigger one
        // on any subscribed topic ends the connection (rumqttc's limit),
        // which is why the probe topic should be mqtt-pulse's alone.
        vec![0xff; 200 << 10],
        forged_ahead.into_bytes(),
    ];
    forgeries.extend(std::iter::repeat_n(captured.to_vec(), 3));
    for payload in forgeries {
        attacker
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let attack = tokio::spawn(async move {
        loop {
            if attacker_loop.poll().await.is_err() {
                return;
            }
        }
    });

    // The three replays are duplicates; the real messages go on.
    let mut duplicates = 0;
    let mut received_after = 0;
    let started = Instant::now();
    while duplicates < 3 || received_after < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{duplicates} duplicates, {:?}",
            probe_counts(&events, &id)
        );
        match next(&mut sub, Duration::from_secs(5)).await.event {
            Event::RoundTrip(trip) => match trip.outcome {
                RoundTripOutcome::Duplicate => duplicates += 1,
                RoundTripOutcome::Received(_) if duplicates == 3 => received_after += 1,
                RoundTripOutcome::Received(_) => {}
                other => panic!("{other:?} for message {}", trip.seq),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(duplicates, 3);
    let counts = probe_counts(&events, &id);
    assert_eq!(counts.count(RoundTripOutcome::Duplicate), 3, "{counts:?}");
    assert!(
        counts.count(RoundTripOutcome::Received(Duration::ZERO)) <= counts.sent,
        "no success beyond what was sent: {counts:?}"
    );
    assert_eq!(connection.status(), Status::Up);
    assert_eq!(connection.dropped_publishes(), 0);
    attack.abort();
    connection.shutdown().await;
}
