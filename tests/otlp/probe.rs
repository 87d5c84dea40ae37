//! A connection with a round-trip probe pushed over OTLP: the probe's
//! histogram, its counts by outcome, what it sent and its last success, as
//! the hub counted them.

use std::time::Duration;

use mqtt_pulse::connection::{Connection, ConnectionOptions, ProbeOptions};
use mqtt_pulse::events::{Events, RoundTripOutcome};
use mqtt_pulse::exporter::otlp::{
    OtlpProtocol, ROUNDTRIP_LAST_SUCCESS_METRIC, ROUNDTRIP_MESSAGES_METRIC, ROUNDTRIP_RTT_METRIC,
    ROUNDTRIP_SENT_METRIC,
};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, NumberDataPoint, metric};

use crate::support::Broker;
use crate::{Collector, DEADLINE, Push, exporter, metrics, number, string};

const CLIENT: &str = "probe-otlp-roundtrip";

fn points<'a>(push: &'a Push, name: &'a str) -> impl Iterator<Item = &'a NumberDataPoint> + 'a {
    metrics(push, name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Sum(sum)) => sum.data_points.iter(),
            Some(metric::Data::Gauge(gauge)) => gauge.data_points.iter(),
            _ => [].iter(),
        })
        .filter(|p| string(&p.attributes, "mqtt.client.id") == Some(CLIENT))
}

fn histogram(push: &Push) -> Option<&HistogramDataPoint> {
    metrics(push, ROUNDTRIP_RTT_METRIC)
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h),
            _ => None,
        })
        .flat_map(|h| &h.data_points)
        .find(|p| string(&p.attributes, "mqtt.client.id") == Some(CLIENT))
}

fn outcome(push: &Push, outcome: &str) -> Option<i64> {
    points(push, ROUNDTRIP_MESSAGES_METRIC)
        .find(|p| string(&p.attributes, "outcome") == Some(outcome))
        .map(number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_pushed_with_its_round_trips_counts_and_last_success() {
    let broker = Broker::start();
    let protocol = OtlpProtocol::Grpc;
    let mut collector = Collector::start(protocol).await;
    let events = Events::new();
    let _otlp = exporter(&events, &collector.endpoint(), protocol)
        .install()
        .unwrap();
    let options = ConnectionOptions::new(CLIENT, &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1))
        .with_probe(ProbeOptions::new().with_interval(Duration::from_millis(50)));
    let connection = Connection::start(options, &events).unwrap();

    let push = collector
        .until(DEADLINE, |push| {
            histogram(push).is_some_and(|p| p.count >= 3)
        })
        .await;
    let point = histogram(&push).unwrap();
    assert!(
        point.sum.unwrap() < point.count as f64 * 0.1,
        "loopback round trips: {:?} s over {}",
        point.sum,
        point.count
    );
    let rtt = metrics(&push, ROUNDTRIP_RTT_METRIC).next().unwrap();
    assert_eq!(rtt.unit, "s");

    let received = outcome(&push, "received").expect("a received count");
    assert!(received >= 3, "{received}");
    for label in RoundTripOutcome::LABELS {
        assert!(outcome(&push, label).is_some(), "no {label} point");
    }
    assert_eq!(outcome(&push, "lost"), Some(0));
    let sent = points(&push, ROUNDTRIP_SENT_METRIC).next().map(number);
    assert!(sent.is_some_and(|sent| sent >= received), "{sent:?}");
    let last = points(&push, ROUNDTRIP_LAST_SUCCESS_METRIC)
        .next()
        .and_then(|p| match p.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                seconds,
            )) => Some(seconds),
            _ => None,
        })
        .expect("a last success");
    assert!((crate::support::unix_now() - last).abs() < 60.0, "{last}");
    connection.shutdown().await;
}
