//! The embedding shape of `examples/embed.rs`, against a real broker: a service
//! with its own registry, metric, routes and rumqttc event loop adds a tracker
//! and the exporter, and one `/metrics` shows both its metric and ours.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use mqtt_pulse::events::Event;
use mqtt_pulse::prometheus::{IntCounter, Registry};
use mqtt_pulse::rumqttc::{AsyncClient, MqttOptions};
use mqtt_pulse::{ClientFilter, ConnectionTracker, EventKind, Events, MetricsBuilder, Status};
use support::Broker;
use support::http::get_text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_polling_its_own_event_loop_exports_our_metrics_beside_its_own() {
    let broker = Broker::start();
    let registry = Registry::new();
    let handled =
        IntCounter::new("app_requests_handled_total", "Requests the app handled.").unwrap();
    registry.register(Box::new(handled.clone())).unwrap();
    handled.inc_by(7);
    let app_routes = Router::new().route("/hello", get(|| async { "hello" }));

    let events = Events::new();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    status.register(ClientFilter::Any, EventKind::PingResponse);
    let mut options = MqttOptions::new("embedded-app", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(1));
    let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options);
    let handle = MetricsBuilder::new(&events)
        .with_registry(registry)
        .install()
        .unwrap();
    let app = app_routes.route("/metrics", mqtt_pulse::http::metrics_route(handle));
    let (_client, mut eventloop) = AsyncClient::new(options, 16);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(event) => tracker.observe(&event),
                Err(error) => {
                    tracker.observe_error(&error);
                    return tracker; // the test ends the loop by killing the broker
                }
            }
        }
    });

    // Up, then one measured ping, as the hub reports them.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, Event::PingResponse(_))) {
        let message = tokio::time::timeout_at(deadline.into(), status.recv())
            .await
            .expect("up and a ping response within 3 s")
            .unwrap();
        seen.push(message.event);
    }
    assert_eq!(seen[0], Event::Status(Status::Up));

    let broker_label = broker.addr();
    let ping_counted = format!(
        "mqtt_client_ping_rtt_seconds_count{{client_id=\"embedded-app\",broker=\"{broker_label}\"}} 1"
    );
    // The exporter's consumer is a subscriber of its own: it may take the
    // ping a moment after this test's subscription did.
    let page = metrics_once(&app, |page| page.contains(&ping_counted)).await;
    assert!(page.contains("app_requests_handled_total 7"), "{page}");
    assert!(
        page.contains(&format!(
            "mqtt_client_up{{client_id=\"embedded-app\",broker=\"{broker_label}\"}} 1"
        )),
        "{page}"
    );
    assert_eq!(
        get_text(app.clone(), "/hello").await,
        (StatusCode::OK, "hello".into())
    );

    // The service's connection drops: the tracker reports Down by reason.
    broker.kill();
    let tracker = driver.await.unwrap();
    assert_eq!(tracker.status(), Status::Down);
    let up_zero =
        format!("mqtt_client_up{{client_id=\"embedded-app\",broker=\"{broker_label}\"}} 0");
    let page = metrics_once(&app, |page| page.contains(&up_zero)).await;
    assert!(
        page.contains(&format!(
            "mqtt_client_up{{client_id=\"embedded-app\",broker=\"{broker_label}\"}} 0"
        )),
        "{page}"
    );
    // Killed within the stable period after CONNACK: closed_after_connect.
    assert!(
        page.contains("reason=\"closed_after_connect\"} 1"),
        "{page}"
    );

    // Dropping the tracker ends the client's series.
    drop(tracker);
    metrics_once(&app, |page| !page.contains("client_id=\"embedded-app\"")).await;
}

/// The service's `/metrics` page once `condition` holds for it; panics with
/// the last page after 3 s.
async fn metrics_once(app: &Router, condition: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (code, page) = get_text(app.clone(), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        if condition(&page) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 3 s:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Guards the `identifier_rejected` reason end to end (the `BadClientId` arm
/// of `link::classify`, counted by the exporter): a real Mosquitto with
/// `allow_zero_length_clientid false` answers a service's empty client id
/// (MQTT 3.1.1 §3.1.3.1: "let the server assign one") with CONNACK 2
/// "identifier rejected", and the service's `/metrics` counts it under that
/// reason.
///
/// Through a service's own event loop because mqtt-pulse's driver refuses an
/// empty id up front; the ways the issue suggests for its ids,
/// `clientid_prefixes` and a keep-alive above `max_keepalive`, are CONNACK 5
/// and CONNACK 0 from the Mosquitto 2.0.11 the suite runs.
#[tokio::test]
async fn an_id_the_broker_rejects_is_identifier_rejected_on_the_service_s_metrics() {
    let broker = Broker::builder()
        .extra_config("allow_zero_length_clientid false")
        .start();
    let events = Events::new();
    let options = MqttOptions::new("", "127.0.0.1", broker.port());
    let mut tracker = ConnectionTracker::from_mqtt_options(&events, &options);
    let handle = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .unwrap();
    let app = Router::new().route("/metrics", mqtt_pulse::http::metrics_route(handle));
    let (_client, mut eventloop) = AsyncClient::new(options, 16);

    let error = tokio::time::timeout(Duration::from_secs(3), eventloop.poll())
        .await
        .expect("an answer within 3 s")
        .expect_err("the broker refuses an empty id");
    assert_eq!(
        tracker.observe_error(&error),
        Some(mqtt_pulse::events::FailureReason::IdentifierRejected),
        "{error:?}"
    );

    let (code, page) = get_text(app, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let page = support::metrics::Metrics::parse(page);
    assert_eq!(
        page.connect_failures(""),
        [("identifier_rejected".to_owned(), 1.0)],
        "{}",
        page.text
    );
    assert_eq!(page.up(""), Some(0.0));
}
