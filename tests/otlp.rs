//! The OTLP exporter against real parts: a gRPC collector (tonic with
//! opentelemetry-proto's generated `MetricsServiceServer`) and an HTTP/protobuf
//! collector (axum) started by each test on a free port, real Mosquitto
//! brokers from `support::Broker`, real connections, and the real daemon
//! binary.
//!
//! Nothing waits a fixed time: every test awaits the collector's next push,
//! an event or the exporter's push counts against a deadline.
#![cfg(feature = "otlp")]

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientFilter, ClientId, ClientInfo, Event, EventKind, Events, Status};
use mqtt_pulse::exporter::DEFAULT_RTT_BUCKETS;
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::exporter::otlp::{ExportStats, OtlpBuilder, OtlpError, OtlpHandle, OtlpProtocol};
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, metric, number_data_point,
};
use support::daemon::Daemon;
use support::http::ready;
use support::metrics::sample;
use support::{Broker, TempDir, free_port, logs, wait_until};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt as _;

/// How long a push may take to show up at the collector.
const DEADLINE: Duration = Duration::from_secs(15);
/// A header value that must reach the collector and nothing else.
const SECRET: &str = "s3cr3t-otlp-token-7f1c";

// ---------------------------------------------------------------------------------
// Collectors
// ---------------------------------------------------------------------------------

/// One push as a collector received it.
#[derive(Clone, Debug)]
struct Push {
    request: ExportMetricsServiceRequest,
    headers: Vec<(String, String)>,
}

/// The receiving end shared by both transports: the generated gRPC service.
#[derive(Clone)]
struct Sink(mpsc::UnboundedSender<Push>);

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let _ = self.0.send(Push {
            request: request.into_inner(),
            headers,
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A collector serving one transport on a port of its own; stops on drop.
struct Collector {
    pushes: mpsc::UnboundedReceiver<Push>,
    port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Collector {
    async fn start(protocol: OtlpProtocol) -> Collector {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        Collector::serve(protocol, listener)
    }

    /// Serves on `port`, which the test reserved earlier.
    async fn start_on(protocol: OtlpProtocol, port: u16) -> Collector {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_or_else(|e| panic!("bind the collector's port {port}: {e}"));
        Collector::serve(protocol, listener)
    }

    fn serve(protocol: OtlpProtocol, listener: TcpListener) -> Collector {
        let port = listener.local_addr().unwrap().port();
        let (tx, pushes) = mpsc::unbounded_channel();
        let sink = Sink(tx);
        let server = match protocol {
            OtlpProtocol::Grpc => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(MetricsServiceServer::new(sink))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await;
            }),
            _ => tokio::spawn(async move {
                let app = axum::Router::new()
                    .route("/v1/metrics", post(http_export))
                    .with_state(sink);
                let _ = axum::serve(listener, app).await;
            }),
        };
        Collector {
            pushes,
            port,
            server,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next push, within `within`.
    async fn next(&mut self, within: Duration) -> Push {
        tokio::time::timeout(within, self.pushes.recv())
            .await
            .unwrap_or_else(|_| panic!("no push reached the collector within {within:?}"))
            .expect("the collector's channel is open")
    }

    /// The first push (from now) that satisfies `wanted`, within `within`.
    async fn until(&mut self, within: Duration, wanted: impl Fn(&Push) -> bool) -> Push {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = None;
        loop {
            match tokio::time::timeout_at(deadline, self.pushes.recv()).await {
                Ok(Some(push)) if wanted(&push) => return push,
                Ok(Some(push)) => last = Some(push),
                Ok(None) => panic!("the collector's channel closed"),
                Err(_) => panic!(
                    "no wanted push within {within:?}; the last one was {:#?}",
                    last.as_ref().map(summary)
                ),
            }
        }
    }

    fn received_nothing(&mut self) -> bool {
        self.pushes.try_recv().is_err()
    }
}

/// OTLP/HTTP with a protobuf body: decoded by handing it, framed as a gRPC
/// message, to the same generated service the gRPC collector runs.
async fn http_export(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/x-protobuf" {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in &headers {
        if !matches!(name.as_str(), "content-type" | "content-length" | "te") {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(framed),
        )))
        .unwrap();
    let response = MetricsServiceServer::new(sink)
        .oneshot(request)
        .await
        .unwrap();
    // A decoding error answers trailers-only, with grpc-status in the headers.
    match response.headers().get("grpc-status") {
        Some(status) if status != "0" => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

// ---------------------------------------------------------------------------------
// Reading pushes
// ---------------------------------------------------------------------------------

fn metrics<'a>(push: &'a Push, name: &'a str) -> impl Iterator<Item = &'a Metric> + 'a {
    push.request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(move |m| m.name == name)
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match value(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn number(point: &NumberDataPoint) -> i64 {
    match point.value {
        Some(number_data_point::Value::AsInt(i)) => i,
        other => panic!("expected an integer point, got {other:?}"),
    }
}

fn resource(push: &Push, key: &str) -> Option<String> {
    push.request
        .resource_metrics
        .iter()
        .filter_map(|rm| rm.resource.as_ref())
        .find_map(|r| string(&r.attributes, key).map(str::to_owned))
}

/// The `mqtt.client.up` point of `client`.
fn up_point<'a>(push: &'a Push, client: &str) -> Option<&'a NumberDataPoint> {
    metrics(push, "mqtt.client.up")
        .filter_map(|m| match &m.data {
            Some(metric::Data::Gauge(gauge)) => Some(gauge),
            _ => None,
        })
        .flat_map(|g| &g.data_points)
        .find(|p| string(&p.attributes, "mqtt.client.id") == Some(client))
}

fn up(push: &Push, client: &str) -> Option<i64> {
    up_point(push, client).map(number)
}

fn rtt<'a>(push: &'a Push, client: &str) -> Option<&'a HistogramDataPoint> {
    metrics(push, "mqtt.client.ping.rtt")
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h),
            _ => None,
        })
        .flat_map(|h| &h.data_points)
        .find(|p| string(&p.attributes, "mqtt.client.id") == Some(client))
}

fn changes(push: &Push, client: &str, status: &str) -> Option<i64> {
    metrics(push, "mqtt.client.status.changes")
        .filter_map(|m| match &m.data {
            Some(metric::Data::Sum(sum)) => Some(sum),
            _ => None,
        })
        .flat_map(|s| &s.data_points)
        .find(|p| {
            string(&p.attributes, "mqtt.client.id") == Some(client)
                && string(&p.attributes, "status") == Some(status)
        })
        .map(number)
}

fn summary(push: &Push) -> Vec<String> {
    push.request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| format!("{}: {:?}", m.name, m.data))
        .collect()
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn exporter(events: &Events, collector_endpoint: &str, protocol: OtlpProtocol) -> OtlpBuilder {
    OtlpBuilder::new(events)
        .with_endpoint(collector_endpoint)
        .with_protocol(protocol)
        .with_interval(Duration::from_millis(250))
        .with_timeout(Duration::from_secs(1))
        .with_header("x-api-key", SECRET)
}

/// A real connection (keep-alive 1 s, so pings come quickly) to `broker`.
fn connect(events: &Events, client_id: &str, broker: &Broker) -> Connection {
    let options = ConnectionOptions::new(client_id, &broker.url())
        .unwrap()
        .with_keep_alive(Duration::from_secs(1));
    Connection::start(options, events).unwrap()
}

async fn wait_for_stats(
    otlp: &OtlpHandle,
    within: Duration,
    wanted: impl Fn(&ExportStats) -> bool,
) {
    let mut stats = otlp.watch_stats();
    tokio::time::timeout(within, stats.wait_for(|s| wanted(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "push counts not reached within {within:?}: {:?}",
                otlp.stats()
            )
        })
        .expect("the exporter is alive");
}

fn prometheus(events: &Events, registry: &prometheus::Registry) -> MetricsHandle {
    MetricsBuilder::new(events)
        .with_registry(registry.clone())
        .with_process_metrics(false)
        .install()
        .unwrap()
}

/// Renders `/metrics` off the runtime, as the HTTP server does, with a deadline.
async fn render(handle: &MetricsHandle) -> String {
    let handle = handle.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || handle.render()),
    )
    .await
    .expect("a render finishes while the collector is away")
    .unwrap()
}

/// Dispatches `count` pings of `client` and checks that every call returned
/// at once and that another subscriber got them all: the event path does not
/// wait for the exporter, whatever its collector does.
async fn dispatch_is_unaffected(events: &Events, client: &ClientId, count: usize) {
    let mut other = events.subscribe_with_capacity(count);
    other.register(client, EventKind::PingResponse);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..count {
        let call = Instant::now();
        events.dispatch(
            client,
            Event::PingResponse(Duration::from_micros(100 + i as u64 % 900)),
        );
        slowest = slowest.max(call.elapsed());
    }
    let all = started.elapsed();
    assert!(
        all < Duration::from_secs(1) && slowest < Duration::from_millis(100),
        "{count} dispatches took {all:?}, the slowest {slowest:?}"
    );
    for _ in 0..count {
        let message = tokio::time::timeout(Duration::from_secs(5), other.recv())
            .await
            .expect("the other subscriber gets every event")
            .unwrap();
        assert_eq!(&message.client_id, client);
    }
    assert_eq!(other.stats().dropped, 0);
}

// ---------------------------------------------------------------------------------
// A real connection, both transports
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Collector trouble
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------

/// On a current-thread runtime, where the SDK's own blocking shutdown would
/// stall the gRPC channel it needs.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_pushes_a_status_change_dispatched_just_before_it() {
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let plant = ClientId::from("plant-last");
    events.announce(&plant, ClientInfo::new("broker.test:1883"));
    events.dispatch(&plant, Event::Status(Status::Up));
    events.dispatch(&plant, Event::PingResponse(Duration::from_micros(300)));
    events.dispatch(&plant, Event::Status(Status::Down));

    otlp.shutdown().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "plant-last"), Some(0));
    assert_eq!(changes(&push, "plant-last", "down"), Some(1));
    assert_eq!(changes(&push, "plant-last", "up"), Some(1));
    assert_eq!(rtt(&push, "plant-last").unwrap().count, 1);
    assert_eq!(otlp.stats().exports, 1);

    otlp.shutdown()
        .await
        .expect("a second shutdown does nothing");
    assert!(matches!(otlp.flush().await, Err(OtlpError::ShutDown)));
    assert!(collector.received_nothing(), "no push after the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_still_pushes_the_last_batch() {
    let mut collector = Collector::start(OtlpProtocol::HttpProtobuf).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::HttpProtobuf)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let plant = ClientId::from("plant-dropped");
    events.dispatch(&plant, Event::Status(Status::Up));
    let clone = otlp.clone();
    drop(otlp);
    assert!(collector.received_nothing(), "a clone keeps it running");
    drop(clone);
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "plant-dropped"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_pushes_now_and_a_terminated_client_leaves_up_and_changes() {
    let mut collector = Collector::start(OtlpProtocol::Grpc).await;
    let events = Events::new();
    let otlp = exporter(&events, &collector.endpoint(), OtlpProtocol::Grpc)
        .with_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    let (gone, kept) = (ClientId::from("gone"), ClientId::from("kept"));
    for id in [&gone, &kept] {
        events.announce(id, ClientInfo::new("[::1]:1883"));
        events.dispatch(id, Event::Status(Status::Up));
    }
    otlp.flush().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "gone"), Some(1));
    assert_eq!(
        string(
            &up_point(&push, "gone").unwrap().attributes,
            "server.address"
        ),
        Some("::1")
    );

    events.dispatch(&gone, Event::Status(Status::Terminating));
    events.dispatch(&gone, Event::Status(Status::Terminated));
    otlp.flush().await.unwrap();
    let push = collector.next(Duration::from_secs(5)).await;
    assert_eq!(up(&push, "gone"), None);
    assert_eq!(changes(&push, "gone", "up"), None);
    assert_eq!(up(&push, "kept"), Some(1));
    assert_eq!(changes(&push, "kept", "up"), Some(1));
    otlp.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Logs and secrets
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pushes_are_logged_once_per_interval_with_a_count_and_never_with_a_header_value() {
    let logs = logs::capture_process();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let events = Events::new();
    let otlp = exporter(&events, &endpoint, OtlpProtocol::HttpProtobuf)
        .with_interval(Duration::from_millis(100))
        .with_failure_log_interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    events.dispatch(&ClientId::from("plant-logged"), Event::Status(Status::Up));

    wait_for_stats(&otlp, DEADLINE, |s| s.failures >= 3).await;
    let ours = |logs: &logs::Logs| -> Vec<String> {
        logs.text()
            .lines()
            .filter(|line| line.contains(&format!("127.0.0.1:{port}/v1/metrics")))
            .map(str::to_owned)
            .collect()
    };
    let lines = ours(&logs);
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("OTLP export failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("failed_exports=1"),
        "{}",
        warnings[0]
    );

    let _collector = Collector::start_on(OtlpProtocol::HttpProtobuf, port).await;
    wait_for_stats(&otlp, DEADLINE, |s| s.exports >= 1).await;
    let failures = otlp.stats().failures;
    let lines = ours(&logs);
    let recovered: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("succeeded again"))
        .collect();
    assert_eq!(recovered.len(), 1, "{lines:#?}");
    assert!(
        recovered[0].contains(&format!("failed_exports={failures}")),
        "{} (failures {failures})",
        recovered[0]
    );

    let debug = format!("{otlp:?}");
    assert!(debug.contains(&endpoint), "{debug}");
    otlp.shutdown().await.unwrap();
    let everything = logs.text();
    assert!(!everything.contains(SECRET), "a header value was logged");
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn setting_errors_name_the_problem_and_never_the_header_value() {
    let events = Events::new();
    let bad_header = OtlpBuilder::new(&events)
        .with_endpoint("http://127.0.0.1:9")
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_header("x-api-key", format!("{SECRET}\n"))
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(bad_header, OtlpError::Header { .. }),
        "{bad_header}"
    );
    assert!(bad_header.to_string().contains("x-api-key"));
    assert!(!bad_header.to_string().contains(SECRET));
    assert!(!format!("{bad_header:?}").contains(SECRET));

    let https = OtlpBuilder::new(&events)
        .with_endpoint("https://collector.example:4317")
        .build()
        .err()
        .unwrap();
    assert!(https.to_string().contains("no TLS support"), "{https}");

    let registry = prometheus::Registry::new();
    // Nothing listens there: the first exporter's pushes (on drop) just fail.
    let unused = format!("http://127.0.0.1:{}", free_port());
    let first = OtlpBuilder::new(&events)
        .with_endpoint(&unused)
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_prometheus_registry(registry.clone())
        .install()
        .unwrap();
    let second = OtlpBuilder::new(&events)
        .with_endpoint(&unused)
        .with_protocol(OtlpProtocol::HttpProtobuf)
        .with_prometheus_registry(registry.clone())
        .install()
        .err()
        .unwrap();
    assert!(matches!(second, OtlpError::Register(_)), "{second}");
    assert_eq!(
        registry.gather().len(),
        1,
        "the first exporter's counter only"
    );
    drop(first);
}

// ---------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------

/// The daemon serving `config` (written as `mqtt-pulse.toml` in `dir`) with
/// `env` set, once it is ready; started off the runtime (it blocks meanwhile).
fn start_daemon(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Daemon {
    let path = dir.join("mqtt-pulse.toml");
    std::fs::write(&path, config).unwrap();
    tokio::task::block_in_place(|| {
        Daemon::start_with_env(dir, &["--config.file", path.to_str().unwrap()], env, ready)
    })
}

fn daemon_config(broker: &Broker, otlp: &str) -> String {
    format!(
        "[[target]]\nname = \"otlp\"\nurl = \"{}\"\nkeep_alive = \"1s\"\n{otlp}",
        broker.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pushes_to_the_files_collector_over_the_environments_and_flushes_on_sigterm() {
    let broker = Broker::start();
    let mut from_file = Collector::start(OtlpProtocol::Grpc).await;
    let mut from_env = Collector::start(OtlpProtocol::Grpc).await;
    let config = daemon_config(
        &broker,
        &format!(
            "[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\ninterval = \"300ms\"\n",
            from_file.endpoint()
        ),
    );
    let dir = TempDir::new("otlp-daemon");
    let mut daemon = start_daemon(
        &dir,
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &from_env.endpoint()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
    );
    let push = from_file
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;
    assert_eq!(
        resource(&push, "service.name").as_deref(),
        Some("mqtt-pulse")
    );
    let logs = daemon.stderr();
    assert!(
        logs.lines().any(|l| l.contains("pushing metrics over OTLP")
            && l.contains(&from_file.endpoint())
            && l.contains("300ms")),
        "{logs}"
    );
    // A few more pushes to the file's collector, none to the environment's.
    from_file.next(DEADLINE).await;
    from_file.next(DEADLINE).await;
    assert!(from_env.received_nothing(), "the file's endpoint wins");

    let before = nanos(SystemTime::now());
    let status = tokio::task::spawn_blocking(move || daemon.terminate(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success(), "the daemon exited with {status}");
    let mut last = None;
    while let Ok(push) = from_file.pushes.try_recv() {
        last = Some(push);
    }
    let last = last.expect("a push after SIGTERM");
    let point = up_point(&last, "mqtt-pulse-otlp").expect("the target in the last push");
    assert!(
        point.time_unix_nano >= before,
        "the last push was collected at shutdown"
    );
    assert_eq!(
        number(point),
        1,
        "collected before the daemon's own disconnect"
    );
    assert!(from_env.received_nothing());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pushes_over_http_when_only_the_environment_asks() {
    let broker = Broker::start();
    let mut collector = Collector::start(OtlpProtocol::HttpProtobuf).await;
    let dir = TempDir::new("otlp-daemon");
    let daemon = start_daemon(
        &dir,
        &daemon_config(&broker, ""),
        &[
            // A base URL: the daemon appends /v1/metrics, where the collector listens.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_EXPORTER_OTLP_HEADERS", &format!("x-api-key={SECRET}")),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    let push = collector
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;
    assert_eq!(
        resource(&push, "deployment.environment").as_deref(),
        Some("test")
    );
    assert!(
        push.headers
            .contains(&("x-api-key".to_owned(), SECRET.to_owned()))
    );
    let logs = daemon.stderr();
    assert!(
        logs.contains(&format!("{}/v1/metrics", collector.endpoint())),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_otlp_asks_for_a_restart_and_keeps_pushing_where_it_did() {
    let broker = Broker::start();
    let mut first = Collector::start(OtlpProtocol::Grpc).await;
    let mut second = Collector::start(OtlpProtocol::Grpc).await;
    let otlp = |collector: &Collector| {
        format!(
            "[otlp]\nendpoint = \"{}\"\ninterval = \"200ms\"\n",
            collector.endpoint()
        )
    };
    let dir = TempDir::new("otlp-daemon");
    let daemon = start_daemon(&dir, &daemon_config(&broker, &otlp(&first)), &[]);
    first
        .until(DEADLINE, |push| up(push, "mqtt-pulse-otlp") == Some(1))
        .await;

    std::fs::write(
        dir.join("mqtt-pulse.toml"),
        daemon_config(&broker, &otlp(&second)),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    let reloaded = wait_until(DEADLINE, || daemon.stderr().contains("config reloaded"));
    let logs = daemon.stderr();
    assert!(reloaded, "{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("[otlp] table changed"))
        .unwrap_or_else(|| panic!("no restart hint in {logs}"));
    assert!(
        line.contains("restarted") && line.to_lowercase().contains("warn"),
        "{line}"
    );
    // Pushes keep going to the first collector after the reload.
    while first.pushes.try_recv().is_ok() {}
    first.next(DEADLINE).await;
    first.next(DEADLINE).await;
    assert!(second.received_nothing(), "the new [otlp] needs a restart");
}
