//! The OTLP exporter against real parts: a gRPC collector (tonic with
//! opentelemetry-proto's generated `MetricsServiceServer`) and an HTTP/protobuf
//! collector (axum) started by each test on a free port, real Mosquitto
//! brokers from `support::Broker`, real connections, and the real daemon
//! binary.
//!
//! Nothing waits a fixed time: every test awaits the collector's next push,
//! an event or the exporter's push counts against a deadline.
// The OTLP exporter and the daemon's parts: skipped without either feature.
#![cfg(all(feature = "daemon", feature = "otlp"))]

#[path = "../support/mod.rs"]
mod support;

mod connection;
mod daemon;
mod paths;
mod probe;
mod secrets;
mod shutdown;
mod trouble;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientId, Event, EventKind, Events};
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use mqtt_pulse::exporter::otlp::{ExportStats, OtlpBuilder, OtlpHandle, OtlpProtocol};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, Metric, NumberDataPoint, metric, number_data_point,
};
use support::Broker;
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

    /// Panics with the push if one arrives within `within` (a push that
    /// should not happen at all: waiting out the deadline is the test).
    async fn nothing_within(&mut self, within: Duration, what: &str) {
        if let Ok(push) = tokio::time::timeout(within, self.pushes.recv()).await {
            panic!(
                "{what}, but a push arrived: {:#?}",
                push.as_ref().map(summary)
            );
        }
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
