//! A real connection pushed over both transports: up, round trips, status
//! changes, attributes and the resource; a killed broker reads zero.

use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};
use mqtt_pulse::exporter::DEFAULT_RTT_BUCKETS;
use mqtt_pulse::exporter::otlp::OtlpProtocol;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};

use crate::support::Broker;
use crate::{
    Collector, DEADLINE, SECRET, changes, connect, exporter, int, metrics, nanos, number, resource,
    rtt, string, summary, up, up_point,
};

async fn a_real_connection_is_pushed(protocol: OtlpProtocol) {
    let broker = Broker::start();
    let mut collector = Collector::start(protocol).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), protocol)
        .install()
        .unwrap();
    let connection = connect(&events, "probe-otlp", &broker);

    let push = collector
        .until(DEADLINE, |push| {
            rtt(push, "probe-otlp").is_some_and(|p| p.count > 0)
        })
        .await;

    let up_point = up_point(&push, "probe-otlp").expect("an up point");
    assert_eq!(number(up_point), 1);
    assert_eq!(
        string(&up_point.attributes, "server.address"),
        Some("127.0.0.1")
    );
    assert_eq!(
        int(&up_point.attributes, "server.port"),
        Some(i64::from(broker.port()))
    );
    assert_eq!(up_point.attributes.len(), 3, "{:?}", up_point.attributes);

    let rtt_metric = metrics(&push, "mqtt.client.ping.rtt").next().unwrap();
    assert_eq!(rtt_metric.unit, "s");
    let Some(metric::Data::Histogram(histogram)) = &rtt_metric.data else {
        panic!("ping.rtt is not a histogram: {:?}", rtt_metric.data)
    };
    assert_eq!(
        histogram.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let point = rtt(&push, "probe-otlp").unwrap();
    assert_eq!(point.explicit_bounds, DEFAULT_RTT_BUCKETS);
    assert_eq!(point.bucket_counts.len(), DEFAULT_RTT_BUCKETS.len() + 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    let sum = point.sum.unwrap();
    assert!(
        sum > 0.0 && sum < point.count as f64,
        "loopback round trips: {sum} s over {}",
        point.count
    );
    assert_eq!(
        int(&point.attributes, "server.port"),
        Some(i64::from(broker.port()))
    );

    let changes_metric = metrics(&push, "mqtt.client.status.changes").next().unwrap();
    let Some(metric::Data::Sum(sum)) = &changes_metric.data else {
        panic!("status.changes is not a sum: {:?}", changes_metric.data)
    };
    assert!(sum.is_monotonic);
    assert_eq!(changes(&push, "probe-otlp", "up"), Some(1));
    assert_eq!(changes(&push, "probe-otlp", "down"), Some(0));
    assert_eq!(changes(&push, "probe-otlp", "terminating"), Some(0));

    assert_eq!(
        resource(&push, "service.name").as_deref(),
        Some("mqtt-pulse")
    );
    assert_eq!(
        resource(&push, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let instance = resource(&push, "service.instance.id").expect("an instance id");
    assert_eq!(instance.len(), 36, "{instance}");
    assert_eq!(
        resource(&push, "telemetry.sdk.language").as_deref(),
        Some("rust")
    );

    assert!(
        push.headers
            .contains(&("x-api-key".to_owned(), SECRET.to_owned())),
        "{:?}",
        push.headers
    );
    assert_eq!(otlp.stats().failures, 0);

    connection.shutdown().await;
    otlp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_collector_receives_up_round_trips_changes_attributes_and_resource() {
    a_real_connection_is_pushed(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_protobuf_collector_receives_the_same() {
    a_real_connection_is_pushed(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_reads_zero_in_the_next_push() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .install()
        .unwrap();
    let mut status = events.register(ClientFilter::Any, EventKind::Status);
    let connection = connect(&events, "probe-killed", &broker);
    collector
        .until(DEADLINE, |push| up(push, "probe-killed") == Some(1))
        .await;

    broker.kill();
    let down_at = loop {
        let message = tokio::time::timeout(DEADLINE, status.recv())
            .await
            .expect("the connection reports the loss")
            .unwrap();
        if message.event == Event::Status(Status::Down) {
            break message.at;
        }
    };
    // The first push collected after the loss: one collected before it may
    // still be in flight, and is skipped by its collection time.
    let push = collector
        .until(DEADLINE, |push| {
            up_point(push, "probe-killed").is_some_and(|p| p.time_unix_nano >= nanos(down_at))
        })
        .await;
    assert_eq!(up(&push, "probe-killed"), Some(0), "{:#?}", summary(&push));
    assert_eq!(changes(&push, "probe-killed", "down"), Some(1));
    assert_eq!(changes(&push, "probe-killed", "up"), Some(1));

    connection.shutdown().await;
    otlp.shutdown().await.unwrap();
}
