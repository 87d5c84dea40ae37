//! A broker-to-broker path pushed over OTLP: its latency histogram and its
//! counts of messages sent and by outcome, with the path's name and its two
//! clients as attributes — the same numbers `/metrics` has.

use std::time::Duration;

use mqtt_pulse::connection::{Path, PathOptions};
use mqtt_pulse::events::Events;
use mqtt_pulse::exporter::otlp::{
    OtlpProtocol, PATH_LATENCY_METRIC, PATH_MESSAGES_METRIC, PATH_SENT_METRIC,
};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, NumberDataPoint, metric};

use crate::support::Broker;
use crate::{Collector, DEADLINE, Push, connect, exporter, metrics, number, string};

fn latency<'a>(push: &'a Push, path: &str) -> Option<&'a HistogramDataPoint> {
    metrics(push, PATH_LATENCY_METRIC)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(&h.data_points),
            _ => None,
        })
        .flatten()
        .find(|p| string(&p.attributes, "mqtt.path.name") == Some(path))
}

fn sums<'a>(push: &'a Push, name: &'a str) -> impl Iterator<Item = &'a NumberDataPoint> + 'a {
    metrics(push, name)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => Some(&s.data_points),
            _ => None,
        })
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_is_pushed_with_its_latency_and_counts_and_its_ends_as_attributes() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let _otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .install()
        .unwrap();
    // Two connections to one broker: the path crosses the broker itself.
    let north = connect(&events, "otlp-north", &broker);
    let south = connect(&events, "otlp-south", &broker);
    let options = PathOptions::new("north->south").with_interval(Duration::from_millis(100));
    let path = Path::start(options, &north, &south, &events).unwrap();
    assert_eq!(path.topic(), "mqtt-pulse/path/otlp-north/otlp-south");

    let push = collector
        .until(DEADLINE, |push| {
            latency(push, "north->south").is_some_and(|p| p.count >= 3)
        })
        .await;
    let point = latency(&push, "north->south").unwrap();
    assert_eq!(
        string(&point.attributes, "mqtt.path.from"),
        Some("otlp-north")
    );
    assert_eq!(
        string(&point.attributes, "mqtt.path.to"),
        Some("otlp-south")
    );
    let mean = point.sum.unwrap() / point.count as f64;
    assert!(
        mean > 0.0 && mean < 0.1,
        "across one broker on loopback: {mean} s"
    );
    let unit = &metrics(&push, PATH_LATENCY_METRIC).next().unwrap().unit;
    assert_eq!(unit, "s");

    let sent = sums(&push, PATH_SENT_METRIC)
        .find(|p| string(&p.attributes, "mqtt.path.name") == Some("north->south"))
        .map(number)
        .expect("a sent count");
    let outcome = |outcome: &str| {
        sums(&push, PATH_MESSAGES_METRIC)
            .find(|p| {
                string(&p.attributes, "mqtt.path.name") == Some("north->south")
                    && string(&p.attributes, "outcome") == Some(outcome)
            })
            .map(number)
    };
    let received = outcome("received").expect("a received count");
    assert!(
        received >= 3 && sent >= received,
        "sent {sent}, received {received}"
    );
    assert_eq!(outcome("lost"), Some(0));
    assert_eq!(outcome("duplicate"), Some(0));
    drop(path);
}
