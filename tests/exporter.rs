//! The Prometheus exporter against real parts: `promtool` lints a real
//! `/metrics` page, a real Prometheus scrapes a real server, and an embedding
//! service's registry and router carry both its metrics and ours.
//!
//! Events are dispatched by hand here, with the same `announce` / `dispatch` /
//! `count_failure` calls the connection driver makes — except in the
//! Prometheus test, where [`ProbeClient`] is a real connection to a real
//! Mosquitto that the test kills.

mod support;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientId, ClientInfo, Event, EventKind, Events, FailureReason, Status};
use mqtt_pulse::exporter::DEFAULT_RTT_BUCKETS;
use mqtt_pulse::exporter::metrics::{BuildError, MetricsBuilder, MetricsHandle};
use mqtt_pulse::http;
use support::http::get_text;
use support::metrics::sample;
use support::prometheus::{Prometheus, promtool_problems};
use support::unix_now;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

const BROKER: &str = "127.0.0.1:1883";

fn exporter(events: &Events) -> MetricsHandle {
    let (handle, _consumer) = MetricsBuilder::new(events)
        .with_process_metrics(false)
        .build()
        .expect("a fresh registry takes the exporter");
    // `render` applies queued events itself, so these tests need no consumer.
    handle
}

fn up_with_pings(events: &Events, id: &str, rtts_micros: &[u64]) -> ClientId {
    let id = ClientId::from(id);
    events.announce(&id, ClientInfo::new(BROKER));
    events.dispatch(&id, Event::Status(Status::Up));
    for &micros in rtts_micros {
        events.dispatch(&id, Event::PingResponse(Duration::from_micros(micros)));
    }
    id
}

fn client_series(name: &str, id: &str) -> String {
    format!(r#"{name}{{client_id="{id}",broker="{BROKER}"}}"#)
}

// ---------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn promtool_finds_no_problem_in_a_real_metrics_page() {
    let events = Events::new();
    let handle = MetricsBuilder::new(&events)
        .with_process_metrics(true)
        .install()
        .unwrap();
    up_with_pings(&events, "plant-a", &[150, 900, 4_000]);
    let down = up_with_pings(&events, "plant-b", &[2_000_000]);
    events.dispatch(&down, Event::Status(Status::Down));
    events.count_failure(&down, FailureReason::PingTimeout);
    events.count_failure(&down, FailureReason::ConnectionRefused);
    events.count_dropped_publish(&down);
    events.announce(&ClientId::from("never-connected"), ClientInfo::new(BROKER));
    let labelled = ClientId::from("labelled");
    events.announce(
        &labelled,
        ClientInfo::new(BROKER).with_labels([
            ("site".to_owned(), "north \"7\"".to_owned()),
            ("area".to_owned(), "b".to_owned()),
        ]),
    );
    events.dispatch(&labelled, Event::Status(Status::Up));
    let odd = up_with_pings(&events, "odd \"quoted\" \\ id\nwith é", &[300]);
    events.dispatch(&odd, Event::Status(Status::Terminating));

    // The web config's refusal counter, as the daemon registers it.
    #[cfg(feature = "web-config")]
    http::WebConfig::default()
        .register_metrics(handle.registry())
        .unwrap();

    let (status, page) = get_text(http::router(handle), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    #[cfg(feature = "web-config")]
    assert!(
        page.contains(r#"mqtt_pulse_web_auth_refusals_total{reason="busy"} 0"#),
        "{page}"
    );
    assert!(
        page.contains("process_cpu_seconds_total"),
        "process metrics when asked for"
    );
    // Extra constant labels follow ours, sorted by name, escaped, on every
    // per-client family.
    let labels = format!(r#"client_id="labelled",broker="{BROKER}",area="b",site="north \"7\"""#);
    for family in [
        "mqtt_client_up",
        "mqtt_client_ping_rtt_seconds_count",
        "mqtt_client_last_status_change_timestamp_seconds",
    ] {
        assert!(
            page.contains(&format!("{family}{{{labels}}}")),
            "{family}:\n{page}"
        );
    }

    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }
    assert!(
        page.contains(&client_series(
            "mqtt_client_publishes_dropped_total",
            "plant-b"
        )),
        "{page}"
    );
}

#[test]
fn up_follows_the_present_status_and_a_client_never_connected_reads_zero() {
    let events = Events::new();
    let handle = exporter(&events);
    let id = ClientId::from("probe");
    events.announce(&id, ClientInfo::new(BROKER));
    let up = client_series("mqtt_client_up", "probe");
    assert_eq!(sample(&handle.render(), &up), Some(0.0));

    events.dispatch(&id, Event::Status(Status::Up));
    assert_eq!(sample(&handle.render(), &up), Some(1.0));
    events.dispatch(&id, Event::Status(Status::Down));
    let page = handle.render();
    assert_eq!(sample(&page, &up), Some(0.0));
    let changes = |status: &str| {
        sample(
            &page,
            &format!(
                r#"mqtt_client_status_changes_total{{client_id="probe",broker="{BROKER}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(changes("up"), Some(1.0));
    assert_eq!(changes("down"), Some(1.0));
    assert_eq!(changes("terminating"), Some(0.0), "counters start at zero");
    assert_eq!(changes("terminated"), None, "never exposed");
}

/// Guards the value of `mqtt_client_last_status_change_timestamp_seconds`:
/// the wall-clock time of the client's last status change, bounded by the
/// clock read just before and just after each dispatch — not the time it was
/// announced, not a ping's, not the first change's. Read through the fast
/// text page and through the registry (`gather`), which build it apart.
#[test]
fn the_last_status_change_timestamp_is_the_wall_clock_time_of_the_last_change() {
    let events = Events::new();
    let handle = exporter(&events);
    let id = ClientId::from("timed");
    let series = client_series("mqtt_client_last_status_change_timestamp_seconds", "timed");
    let stamps = || {
        use mqtt_pulse::prometheus::Encoder as _;
        let mut gathered = Vec::new();
        mqtt_pulse::prometheus::TextEncoder::new()
            .encode(&handle.registry().gather(), &mut gathered)
            .unwrap();
        [
            sample(&handle.render(), &series),
            sample(&String::from_utf8(gathered).unwrap(), &series),
        ]
    };
    let dispatched_between = |event: Event| {
        let before = unix_now();
        events.dispatch(&id, event);
        (before, unix_now())
    };

    events.announce(&id, ClientInfo::new(BROKER));
    let (before, after) = dispatched_between(Event::Status(Status::Up));
    for stamp in stamps() {
        let stamp = stamp.expect("a timestamp for the client");
        assert!(
            (before..=after).contains(&stamp),
            "up at {stamp}, dispatched between {before} and {after}"
        );
    }
    let up_stamps = stamps();

    // A round trip is not a status change: the time stays.
    dispatched_between(Event::PingResponse(Duration::from_micros(250)));
    assert_eq!(stamps(), up_stamps);

    let (before, after) = dispatched_between(Event::Status(Status::Down));
    for stamp in stamps() {
        let stamp = stamp.expect("a timestamp for the client");
        assert!(
            (before..=after).contains(&stamp),
            "down at {stamp}, dispatched between {before} and {after}"
        );
    }
}

#[test]
fn a_terminated_client_loses_every_series_and_others_keep_theirs() {
    let events = Events::new();
    let handle = exporter(&events);
    let gone = up_with_pings(&events, "gone", &[200, 300]);
    events.count_failure(&gone, FailureReason::ClosedByBroker);
    up_with_pings(&events, "kept", &[200]);
    let page = handle.render();
    for family in [
        "mqtt_client_up{",
        "mqtt_client_ping_rtt_seconds_bucket{",
        "mqtt_client_status_changes_total{",
        "mqtt_client_last_status_change_timestamp_seconds{",
        "mqtt_client_connect_failures_total{",
    ] {
        assert!(
            page.lines()
                .any(|l| l.starts_with(family) && l.contains("\"gone\"")),
            "{family} before termination"
        );
    }

    events.dispatch(&gone, Event::Status(Status::Terminating));
    events.dispatch(&gone, Event::Status(Status::Terminated));
    let page = handle.render();
    assert!(
        !page.contains("\"gone\""),
        "no series of a terminated client:\n{page}"
    );
    assert_eq!(
        sample(&page, &client_series("mqtt_client_up", "kept")),
        Some(1.0)
    );
    assert!(
        !page.contains("mqtt_client_connect_failures_total"),
        "its only failure went with it"
    );

    // Started again: a new life, counted from zero.
    up_with_pings(&events, "gone", &[]);
    let page = handle.render();
    assert_eq!(
        sample(
            &page,
            &client_series("mqtt_client_ping_rtt_seconds_count", "gone")
        ),
        Some(0.0)
    );
}

#[test]
fn histogram_counts_and_sums_match_the_dispatched_round_trips() {
    let events = Events::new();
    let handle = exporter(&events);
    let rtts_micros = [100, 250, 251, 999, 7_500, 120_000, 3_000_000, 12_000_000];
    up_with_pings(&events, "rtt", &rtts_micros);
    let page = handle.render();

    let count = sample(
        &page,
        &client_series("mqtt_client_ping_rtt_seconds_count", "rtt"),
    );
    assert_eq!(count, Some(rtts_micros.len() as f64));
    let sum = sample(
        &page,
        &client_series("mqtt_client_ping_rtt_seconds_sum", "rtt"),
    )
    .unwrap();
    let expected_sum: f64 = rtts_micros.iter().map(|&m| m as f64 / 1e6).sum();
    assert!((sum - expected_sum).abs() < 1e-9, "{sum} != {expected_sum}");

    let bounds = DEFAULT_RTT_BUCKETS.iter().map(|b| (b.to_string(), *b));
    for (le, bound) in bounds.chain([("+Inf".to_owned(), f64::INFINITY)]) {
        let series = format!(
            r#"mqtt_client_ping_rtt_seconds_bucket{{client_id="rtt",broker="{BROKER}",le="{le}"}}"#
        );
        let expected = rtts_micros
            .iter()
            .filter(|&&m| m as f64 / 1e6 <= bound)
            .count();
        assert_eq!(sample(&page, &series), Some(expected as f64), "le={le}");
    }
}

#[test]
fn hub_counters_are_exposed_by_event_type_including_the_exporters_own_drops() {
    let events = Events::new();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .with_subscription_capacity(2)
        .build()
        .unwrap();
    let id = ClientId::from("burst");
    events.dispatch(&id, Event::Status(Status::Up));
    for _ in 0..4 {
        events.dispatch(&id, Event::PingResponse(Duration::from_micros(500)));
    }
    // Queue of 2: the status and one ping fit, three pings are dropped.
    let page = handle.render();
    let counter = |name: &str, kind: &str| sample(&page, &format!(r#"{name}{{type="{kind}"}}"#));
    assert_eq!(
        counter("mqtt_pulse_events_dispatched_total", "status"),
        Some(1.0)
    );
    assert_eq!(
        counter("mqtt_pulse_events_dispatched_total", "ping_response"),
        Some(4.0)
    );
    assert_eq!(
        counter("mqtt_pulse_events_dropped_total", "status"),
        Some(0.0)
    );
    assert_eq!(
        counter("mqtt_pulse_events_dropped_total", "ping_response"),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &page,
            r#"mqtt_client_ping_rtt_seconds_count{client_id="burst",broker=""}"#
        ),
        Some(1.0),
        "only what reached the exporter is in the histogram"
    );
}

/// Guards `mqtt_pulse_build_info`'s labels: the crate version, the git
/// revision of this checkout as `git rev-parse --short=12 HEAD` prints it
/// (so a stale revision, after a commit that did not rerun `build.rs`, fails
/// here too), and a compiler version.
#[test]
fn build_info_names_the_version() {
    let handle = exporter(&Events::new());
    let page = handle.render();
    let line = page
        .lines()
        .find(|l| l.starts_with("mqtt_pulse_build_info{"))
        .expect("build info");
    assert!(
        line.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.contains(&format!(r#"revision="{}""#, support::expected_revision())),
        "{line}"
    );
    assert!(line.contains("rustversion=\"1."), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
}

// ---------------------------------------------------------------------------------
// Registry and embedding
// ---------------------------------------------------------------------------------

#[test]
fn render_matches_a_plain_gather_through_the_text_encoder() {
    let events = Events::new();
    let registry = prometheus::Registry::new();
    let theirs = prometheus::IntCounter::new("aaa_first_total", "Sorts before ours.").unwrap();
    let last = prometheus::IntGauge::new("zzz_last", "Sorts after ours.").unwrap();
    registry.register(Box::new(theirs.clone())).unwrap();
    registry.register(Box::new(last.clone())).unwrap();
    theirs.inc();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_registry(registry.clone())
        .with_process_metrics(false)
        .build()
        .unwrap();
    up_with_pings(&events, "b", &[300, 40_000]);
    up_with_pings(&events, "a \"q\"", &[1]);
    events.count_failure(&ClientId::from("b"), FailureReason::Tls);
    events.count_failure(&ClientId::from("b"), FailureReason::BadCredentials);

    let fast = handle.render();
    let plain = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(fast, plain);
    assert!(
        fast.starts_with("# HELP aaa_first_total"),
        "families sorted by name"
    );
    assert!(fast.trim_end().ends_with("zzz_last 0"));
}

#[test]
fn a_registry_with_a_prefix_and_common_labels_still_gets_them_applied() {
    let events = Events::new();
    let labels = [("site".to_owned(), "north".to_owned())].into();
    let registry = prometheus::Registry::new_custom(Some("acme".into()), Some(labels)).unwrap();
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_registry(registry)
        .with_process_metrics(false)
        .build()
        .unwrap();
    up_with_pings(&events, "p", &[]);
    let page = handle.render();
    let up = page
        .lines()
        .find(|l| l.starts_with("acme_mqtt_client_up{"))
        .expect("prefixed name");
    assert!(up.contains(r#"site="north""#) && up.ends_with(" 1"), "{up}");
}

#[test]
fn a_registry_takes_one_exporter_and_a_failed_build_leaves_nothing_behind() {
    let registry = prometheus::Registry::new();
    let first = MetricsBuilder::new(&Events::new())
        .with_registry(registry.clone())
        .with_process_metrics(false)
        .build();
    assert!(first.is_ok());

    let second = MetricsBuilder::new(&Events::new())
        .with_registry(registry.clone())
        .with_process_metrics(true)
        .build();
    let Err(error) = second else {
        panic!("a second exporter on one registry must be refused")
    };
    assert!(matches!(error, BuildError::Register { .. }), "{error:?}");
    assert!(error.to_string().contains("its own registry"), "{error}");
    assert!(
        !registry
            .gather()
            .iter()
            .any(|f| f.name().starts_with("process_")),
        "the second build's process metrics were unregistered"
    );

    let buckets = MetricsBuilder::new(&Events::new())
        .with_buckets(&[0.5, 0.1])
        .build();
    assert!(matches!(buckets, Err(BuildError::InvalidBuckets(_))));
}

#[test]
fn install_outside_a_runtime_says_what_to_do() {
    let error = MetricsBuilder::new(&Events::new()).install().unwrap_err();
    assert!(matches!(error, BuildError::NoRuntime));
    assert!(error.to_string().contains("build()"), "{error}");
}

#[tokio::test]
async fn an_embedding_service_serves_its_metrics_and_ours_on_one_page() {
    // The service's own registry and metric…
    let registry = prometheus::Registry::new();
    let orders = prometheus::IntCounter::new("shop_orders_total", "Orders taken.").unwrap();
    registry.register(Box::new(orders.clone())).unwrap();
    // …its own process collector (process metrics are ours only when asked
    // for, so registering ours cannot clash with it)…
    #[cfg(all(target_os = "linux", feature = "process-metrics"))]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .unwrap();
    // …its own hub, fed by its own MQTT connections…
    let events = Events::new();
    let handle = MetricsBuilder::new(&events)
        .with_registry(registry.clone())
        .install()
        .unwrap();
    // …and its own router, with our /metrics route at its place.
    let app = Router::new()
        .route("/orders", get(|| async { "no orders\n" }))
        .route("/metrics", http::metrics_route(handle));

    orders.inc_by(3);
    up_with_pings(&events, "shop-mqtt", &[800]);
    let (status, page) = get_text(app.clone(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sample(&page, "shop_orders_total"), Some(3.0));
    assert_eq!(
        sample(&page, &client_series("mqtt_client_up", "shop-mqtt")),
        Some(1.0)
    );
    #[cfg(all(target_os = "linux", feature = "process-metrics"))]
    assert_eq!(
        page.matches("# TYPE process_resident_memory_bytes").count(),
        1
    );
    assert!(page.contains("promhttp_metric_handler_requests_total"));
    assert_eq!(
        get_text(app.clone(), "/orders").await,
        (StatusCode::OK, "no orders\n".to_owned())
    );
    // Only the route asked for: no landing page, no health endpoints.
    for path in ["/", "/-/healthy", "/-/ready"] {
        assert_eq!(
            get_text(app.clone(), path).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The consumer task
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn the_consumer_keeps_the_queue_short_between_scrapes() {
    let events = Events::new();
    let _handle = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .with_subscription_capacity(16)
        .install()
        .unwrap();
    let id = ClientId::from("steady");
    events.dispatch(&id, Event::Status(Status::Up));
    for _ in 0..1_000 {
        events.dispatch(&id, Event::PingResponse(Duration::from_micros(200)));
        // On this single-threaded runtime, yielding is what lets the consumer
        // run — as a connection's own awaits do.
        tokio::task::yield_now().await;
    }
    // 1,001 events through a queue of 16 with no render: only a running
    // consumer gets them all through.
    assert_eq!(events.stats(EventKind::PingResponse).dropped, 0);
    assert_eq!(events.stats(EventKind::PingResponse).delivered, 1_000);
}

/// Guards the consumer's lifetime: it runs while any clone of the handle
/// lives (dropping one clone must not stop it), and ends once the last is
/// dropped. The first half awaits the task against a deadline, so a consumer
/// that ended when the first handle went would be seen ending.
#[tokio::test]
async fn the_consumer_ends_once_the_exporter_is_dropped() {
    let events = Events::new();
    let (handle, consumer) = MetricsBuilder::new(&events).build().unwrap();
    let mut consumer = tokio::spawn(consumer);
    let clone = handle.clone();
    drop(handle);
    // An event, so the consumer wakes and looks at whether it should go on.
    events.dispatch(&ClientId::from("held"), Event::Status(Status::Up));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut consumer)
            .await
            .is_err(),
        "the consumer ended while a clone still holds the exporter"
    );
    drop(clone);
    tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("the consumer ends when the exporter is gone")
        .unwrap();
}

// ---------------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------------

/// The monitored client of the Prometheus test: a real connection (the
/// driver, keep-alive 1 s) to a real broker of its own, which the test kills.
struct ProbeClient {
    broker: support::Broker,
    connection: Option<Connection>,
}

impl ProbeClient {
    fn connect(events: &Events, client_id: &str) -> Self {
        let broker = support::Broker::start();
        let options = ConnectionOptions::new(client_id, &broker.url())
            .unwrap()
            .with_keep_alive(Duration::from_secs(1));
        let connection = Connection::start(options, events).unwrap();
        Self {
            broker,
            connection: Some(connection),
        }
    }

    fn lose_connection(&self) {
        self.broker.kill();
    }

    async fn shutdown(mut self) {
        if let Some(connection) = self.connection.take() {
            connection.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_exporter() {
    let events = Events::new();
    let handle = MetricsBuilder::new(&events).install().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, http::router(handle), async {
        let _ = server_stopped.await;
    }));

    let probe = ProbeClient::connect(&events, "prom-probe");
    // The fixture blocks; the server and the connection run on the other worker.
    tokio::task::block_in_place(|| {
        let prometheus = Prometheus::scraping("mqtt-pulse", target);
        let within = Duration::from_secs(30);
        let poll = |attempt: &dyn Fn() -> Option<f64>| {
            support::poll(within, Duration::from_millis(200), attempt)
        };

        let up = poll(&|| prometheus.value(r#"up{job="mqtt-pulse"}"#));
        assert_eq!(
            up,
            Some(1.0),
            "Prometheus scraped us:\n{}",
            prometheus.log()
        );
        let client_up = r#"mqtt_client_up{client_id="prom-probe"}"#;
        let connected = poll(&|| prometheus.value(client_up).filter(|&v| v == 1.0));
        assert_eq!(connected, Some(1.0));

        // A quantile needs the buckets to grow between two scrapes: the real
        // connection pings every second.
        let median = r#"histogram_quantile(0.5, rate(mqtt_client_ping_rtt_seconds_bucket{client_id="prom-probe"}[1m]))"#;
        let rtt = poll(&|| prometheus.value(median).filter(|v| v.is_finite()))
            .expect("the median round trip is a number");
        assert!(
            rtt > 0.0 && rtt < 0.05,
            "loopback round trips are well under 50 ms, median {rtt}"
        );

        probe.lose_connection();
        let disconnected = poll(&|| prometheus.value(client_up).filter(|&v| v == 0.0));
        assert_eq!(
            disconnected,
            Some(0.0),
            "a later scrape sees the client down"
        );
        // Killed within 10 s of its CONNACK: closed_after_connect.
        let failures = r#"mqtt_client_connect_failures_total{client_id="prom-probe",reason="closed_after_connect"}"#;
        let counted = poll(&|| prometheus.value(failures));
        assert_eq!(counted, Some(1.0));
    });

    probe.shutdown().await;
    stop_server.send(()).unwrap();
    server.await.unwrap().unwrap();
}
