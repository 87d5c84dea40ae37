//! Collector trouble: a collector down at start or silent blocks nothing
//! (not dispatch, not a Prometheus render) and gets the metrics once up.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::otlp::{OtlpError, OtlpProtocol};

use crate::support::free_port;
use crate::support::metrics::sample;
use crate::{
    Collector, DEADLINE, SECRET, dispatch_is_unaffected, exporter, prometheus, render, rtt, string,
    up, up_point, wait_for_stats,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_at_start_gets_the_metrics_once_up_and_nothing_waits_meanwhile() {
    let port = free_port(); // nothing listens there yet
    let events = Events::new();
    let registry = prometheus::Registry::new();
    let page = prometheus(&events, &registry);
    let otlp = exporter(
        &events,
        &format!("http://127.0.0.1:{port}"),
        OtlpProtocol::Grpc,
    )
    .with_prometheus_registry(registry.clone())
    .install()
    .unwrap();
    let plant = ClientId::from("plant-a");
    events.announce(&plant, ClientInfo::new("broker.test:1883"));
    events.dispatch(&plant, Event::Status(Status::Up));

    wait_for_stats(&otlp, DEADLINE, |s| s.failures >= 2).await;
    dispatch_is_unaffected(&events, &plant, 10_000).await;
    let text = render(&page).await;
    assert_eq!(
        sample(
            &text,
            r#"mqtt_client_up{client_id="plant-a",broker="broker.test:1883"}"#
        ),
        Some(1.0)
    );
    let failures =
        sample(&text, "mqtt_pulse_otlp_export_failures_total").expect("the failure counter");
    assert!(failures >= 2.0, "{failures}");
    assert_eq!(otlp.stats().exports, 0);

    let mut collector = Collector::start_on(OtlpProtocol::Grpc, port).await;
    // The first push to arrive may be a retry of one collected while the
    // pings were being dispatched; a later one has them all.
    let push = collector
        .until(DEADLINE, |push| {
            rtt(push, "plant-a").is_some_and(|p| p.count == 10_000)
        })
        .await;
    assert_eq!(up(&push, "plant-a"), Some(1));
    assert_eq!(
        string(
            &up_point(&push, "plant-a").unwrap().attributes,
            "server.address"
        ),
        Some("broker.test")
    );
    wait_for_stats(&otlp, DEADLINE, |s| s.exports >= 1).await;
    let text = render(&page).await;
    let counted = sample(&text, "mqtt_pulse_otlp_export_failures_total").unwrap();
    assert!(counted >= failures, "{counted} < {failures}");
    assert_eq!(counted, otlp.stats().failures as f64);

    otlp.shutdown().await.unwrap();
}

/// A collector that accepts connections and never answers: each push waits
/// for the timeout, on the SDK's thread only.
async fn a_silent_collector_blocks_nothing(protocol: OtlpProtocol) {
    let silent = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let events = Events::new();
    let registry = prometheus::Registry::new();
    let page = prometheus(&events, &registry);
    let otlp = exporter(&events, &format!("http://127.0.0.1:{port}"), protocol)
        .with_timeout(Duration::from_millis(500))
        .with_interval(Duration::from_millis(100))
        .with_prometheus_registry(registry.clone())
        .install()
        .unwrap();
    let plant = ClientId::from("plant-silent");
    events.announce(&plant, ClientInfo::new("broker.test:1883"));
    events.dispatch(&plant, Event::Status(Status::Up));

    wait_for_stats(&otlp, DEADLINE, |s| s.failures >= 2).await;
    dispatch_is_unaffected(&events, &plant, 2_000).await;
    let text = render(&page).await;
    assert_eq!(
        sample(
            &text,
            r#"mqtt_client_up{client_id="plant-silent",broker="broker.test:1883"}"#
        ),
        Some(1.0)
    );
    assert!(sample(&text, "mqtt_pulse_otlp_export_failures_total").unwrap() >= 2.0);

    let started = Instant::now();
    let outcome = otlp.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    let error = outcome.expect_err("the last push cannot succeed");
    assert!(matches!(error, OtlpError::Shutdown(_)), "{error}");
    assert!(!error.to_string().contains(SECRET), "{error}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_grpc_collector_blocks_nothing() {
    a_silent_collector_blocks_nothing(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http_collector_blocks_nothing() {
    a_silent_collector_blocks_nothing(OtlpProtocol::HttpProtobuf).await;
}
