//! Native histograms on `/metrics` (feature `native-histograms`): a real
//! Prometheus 2.42 with `--enable-feature=native-histograms` scrapes the
//! protobuf exposition and stores one native histogram per series, whose
//! quantiles agree with the classic histogram another Prometheus (text, no
//! flag) stores from the same exporter; the text a scraper gets without
//! asking for protobuf is the handle's render, byte for byte; and the
//! protobuf page decodes to the same families and counts.
#![cfg(feature = "native-histograms")]

mod support;

use std::time::{Duration, SystemTime};

use mqtt_pulse::events::{
    ClientId, ClientInfo, Event, Events, RoundTrip, RoundTripOutcome, Status,
};
use mqtt_pulse::exporter::metrics::protobuf::{self, decode_page};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::http;
use support::http::call;
use support::prometheus::Prometheus;

/// What Prometheus 2.42 sends with `--enable-feature=native-histograms`.
const PROMETHEUS_NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;\
    proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,\
    application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// What it sends without the flag.
const PROMETHEUS_CLASSIC_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// 1,000 round trips, 10 µs apart from 10 µs to 10 ms: the true p-quantile
/// is p × 10 ms.
fn round_trips() -> impl Iterator<Item = Duration> {
    (1..=1000u64).map(|i| Duration::from_micros(10 * i))
}

/// An exporter on a hub whose client `plant-a` is up and saw
/// [`round_trips`] as pings and as probe round trips.
fn exporter() -> (Events, MetricsHandle) {
    exporter_with(None)
}

/// [`exporter`], its native histograms at `schema` if given.
fn exporter_with(schema: Option<i32>) -> (Events, MetricsHandle) {
    let events = Events::new();
    let mut builder = MetricsBuilder::new(&events);
    if let Some(schema) = schema {
        builder = builder.with_native_schema(schema);
    }
    let handle = builder.install().unwrap();
    let plant = ClientId::from("plant-a");
    events.announce(&plant, ClientInfo::new("127.0.0.1:1883"));
    events.dispatch(&plant, Event::Status(Status::Up));
    let probe = events.round_trip_counter(&plant, None);
    for (sequence, rtt) in round_trips().enumerate() {
        events.dispatch(&plant, Event::PingResponse(rtt));
        probe.sent();
        probe.record(RoundTripOutcome::Received(rtt), SystemTime::now());
        let trip = RoundTrip::probe(sequence as u64, RoundTripOutcome::Received(rtt));
        events.dispatch(&plant, Event::RoundTrip(trip));
    }
    (events, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_prometheus_stores_one_sparse_histogram_whose_quantiles_match_the_classic_one() {
    // The default schema: 0 for the default classic layout.
    quantiles_agree(None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_finest_schema_the_quantiles_are_within_nine_percent() {
    quantiles_agree(Some(3), 3).await;
}

/// A native and a classic Prometheus scrape an exporter whose native
/// histograms are at `schema` (the builder's default if `None`), which the
/// page must say is `expected`; their quantiles agree with the truth and
/// with each other within the resolution of the buckets.
async fn quantiles_agree(schema: Option<i32>, expected: i32) {
    let (_events, handle) = exporter_with(schema);
    let page = decode_page(&handle.render_protobuf()).unwrap();
    let ping = page
        .iter()
        .find(|f| f.name == "mqtt_client_ping_rtt_seconds")
        .unwrap();
    assert_eq!(ping.metric[0].histogram.as_ref().unwrap().schema, expected);
    // A bucket of schema s is 2^(2^-s) times wider at its top than at its
    // bottom: 2 at schema 0, 2^(1/8) ≈ 1.0905 at 3.
    let factor = 2f64.powf(2f64.powi(-expected));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::run(listener, http::router(handle), async {
        let _ = server_stopped.await;
    }));

    tokio::task::block_in_place(|| {
        let classic = Prometheus::scraping("mqtt-pulse", target);
        let native = Prometheus::scraping_with(
            "mqtt-pulse",
            target,
            &["--enable-feature=native-histograms"],
        );
        let poll = |attempt: &dyn Fn() -> Option<f64>| {
            support::poll(Duration::from_secs(30), Duration::from_millis(200), attempt)
        };
        for family in [
            "mqtt_client_ping_rtt_seconds",
            "mqtt_client_roundtrip_seconds",
        ] {
            let classic_count = format!("{family}_count");
            let stored = poll(&|| classic.value(&classic_count).filter(|&n| n == 1000.0));
            assert_eq!(stored, Some(1000.0), "classic:\n{}", classic.log());
            let native_count = format!("histogram_count({family})");
            let stored = poll(&|| native.value(&native_count).filter(|&n| n == 1000.0));
            assert_eq!(stored, Some(1000.0), "native:\n{}", native.log());

            // One series for the whole histogram: no _bucket, _sum or _count.
            let buckets = format!("count({{__name__=~\"{family}_.*\"}})");
            assert_eq!(
                native.value(&buckets),
                None,
                "{family} as classic series too"
            );
            assert_eq!(classic.value(&buckets), Some(16.0 + 2.0));
            let sum = native.value(&format!("histogram_sum({family})")).unwrap();
            let classic_sum = classic.value(&format!("{family}_sum")).unwrap();
            assert!((sum - classic_sum).abs() < 1e-9, "{sum} vs {classic_sum}");

            for q in [0.5, 0.9, 0.99] {
                let truth = q * 0.01;
                let native_q = native
                    .value(&format!("histogram_quantile({q}, {family})"))
                    .unwrap();
                let classic_q = classic
                    .value(&format!("histogram_quantile({q}, {family}_bucket)"))
                    .unwrap();
                // Prometheus estimates within the bucket the true quantile
                // lies in: off by less than that bucket's width, at most
                // (factor − 1) × the truth.
                assert!(
                    (native_q - truth).abs() <= truth * (factor - 1.0),
                    "{family} p{q}: native {native_q}, true {truth}"
                );
                // And near the classic estimate: each lies in its own bucket
                // around the truth, so they differ by at most the classic
                // bucket's width plus the native one's. (p99 at schema 0:
                // the truth 9.9 ms, classic 9.9 ms in (5, 10], native
                // 15.3 ms in (7.8, 15.6] — the data stop at 10 ms, the
                // bucket does not.)
                let bounds = mqtt_pulse::exporter::DEFAULT_RTT_BUCKETS;
                let upper = bounds.iter().copied().find(|&b| b >= classic_q).unwrap();
                let lower = bounds
                    .iter()
                    .copied()
                    .rev()
                    .find(|&b| b < upper)
                    .unwrap_or(0.0);
                assert!(
                    (native_q - classic_q).abs() <= upper - lower + truth * (factor - 1.0),
                    "{family} p{q}: native {native_q}, classic {classic_q} in ({lower}, {upper}]"
                );
            }
        }
    });

    stop_server.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_scraper_that_does_not_ask_for_protobuf_gets_the_text_render_byte_for_byte() {
    let (_events, handle) = exporter();
    let router = http::router(handle.clone());
    for accept in [
        None,
        Some(PROMETHEUS_CLASSIC_ACCEPT),
        Some("*/*"),
        Some("text/plain"),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let reply = call(
            router.clone(),
            axum::http::Method::GET,
            "/metrics",
            &headers,
        )
        .await;
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        // The handler metrics count each request: compare without them.
        let without_handler = |page: &str| {
            page.lines()
                .filter(|line| !line.contains("promhttp_metric_handler"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            without_handler(&reply.text()),
            without_handler(&handle.render()),
            "{accept:?}"
        );
    }
}

#[tokio::test]
async fn the_protobuf_page_decodes_to_the_families_and_counts_of_the_text_page() {
    let (_events, handle) = exporter();
    let router = http::router(handle.clone());
    let headers = [("accept", PROMETHEUS_NATIVE_ACCEPT)];
    let reply = call(router, axum::http::Method::GET, "/metrics", &headers).await;
    assert_eq!(reply.header("content-type"), Some(protobuf::CONTENT_TYPE));
    assert!(reply.header("vary").unwrap().contains("accept"));
    let families = decode_page(&reply.body).expect("a delimited MetricFamily stream");

    let text = handle.render();
    let text_families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let decoded: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(decoded, text_families);

    for name in [
        "mqtt_client_ping_rtt_seconds",
        "mqtt_client_roundtrip_seconds",
    ] {
        let family = families.iter().find(|f| f.name == name).unwrap();
        let histogram = family.metric[0].histogram.as_ref().unwrap();
        assert_eq!(histogram.sample_count, 1000);
        // The default classic layout steps by 2 and 2.5: schema 0, buckets
        // that double.
        assert_eq!(histogram.schema, 0);
        // The native buckets hold every observation: the running sum of the
        // deltas is each bucket's count.
        let mut count = 0i64;
        let total: i64 = histogram
            .positive_delta
            .iter()
            .map(|delta| {
                count += delta;
                count
            })
            .sum();
        assert_eq!(total, 1000);
        // 10 µs to 10 ms is 10 powers of two: 11 buckets at schema 0, from
        // (2^-17, 2^-16] to (2^-7, 2^-6], every one of them filled.
        let lengths: u32 = histogram.positive_span.iter().map(|s| s.length).sum();
        assert_eq!(lengths as usize, histogram.positive_delta.len());
        assert_eq!(histogram.positive_delta.len(), 11, "{histogram:?}");
        assert_eq!(histogram.positive_span.len(), 1);
        assert_eq!(histogram.positive_span[0].offset, -16);
        // Native only: Prometheus would decode and drop classic buckets.
        assert!(histogram.bucket.is_empty());
    }
}

#[tokio::test]
async fn classic_buckets_ride_along_in_protobuf_when_the_builder_asks() {
    let events = Events::new();
    let handle = MetricsBuilder::new(&events)
        .with_buckets(&[0.001, 0.01])
        .with_protobuf_classic_buckets(true)
        .install()
        .unwrap();
    let plant = ClientId::from("plant-a");
    events.announce(&plant, ClientInfo::new("127.0.0.1:1883"));
    for rtt in round_trips() {
        events.dispatch(&plant, Event::PingResponse(rtt));
    }
    let families = decode_page(&handle.render_protobuf()).unwrap();
    let family = families
        .iter()
        .find(|f| f.name == "mqtt_client_ping_rtt_seconds")
        .unwrap();
    let histogram = family.metric[0].histogram.as_ref().unwrap();
    let classic: Vec<(f64, u64)> = histogram
        .bucket
        .iter()
        .map(|b| (b.upper_bound, b.cumulative_count))
        .collect();
    assert_eq!(classic, vec![(0.001, 100), (0.01, 1000)]);
    // One step of 10: the coarsest schema no wider is -1 (buckets of 4×).
    assert_eq!(histogram.schema, -1);
    assert!(!histogram.positive_delta.is_empty());
}
