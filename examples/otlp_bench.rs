//! Per-event cost of the OTLP exporter's subscriber path against the
//! Prometheus exporter's, measured in the same run.
//!
//! ```text
//! cargo run --release --example otlp_bench
//! cargo run --release --example otlp_bench -- --events 1000000 --runs 5
//! ```
//!
//! Each run builds both exporters on hubs of their own with 1,000 announced
//! clients, gives every client one ping and one status change (so every
//! series exists), then queues `--events` events (default 1,000,000: nine pings
//! to one status change, round-robin over the clients) without letting the
//! exporters read them. Each exporter then absorbs the whole queue through its
//! own read path — a Prometheus render, an OTLP flush (collect and push to an
//! in-process gRPC collector) — and the same read with an empty queue is
//! subtracted. What remains is the cost of applying the events; divided by
//! `--events` it is the per-event cost. The consumer tasks are not spawned, so
//! no event is applied before the timed read. Prints the median of `--runs`
//! runs (default 5) and every run.

#[path = "harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use clap::Parser;
use harness::median;
use mqtt_pulse::events::{ClientId, ClientInfo, Event, Events, Status};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use mqtt_pulse::exporter::otlp::{OtlpBuilder, OtlpProtocol};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

const CLIENTS: usize = 1_000;

/// Per-event cost of the OTLP exporter against the Prometheus exporter's.
#[derive(Parser)]
struct Args {
    /// Events queued per run (nine pings to one status change).
    #[arg(long, default_value_t = 1_000_000, value_parser = harness::positive)]
    events: usize,
    /// Runs of each exporter; the medians are reported.
    #[arg(long, default_value_t = 5, value_parser = harness::positive)]
    runs: usize,
}

/// A collector that accepts every push and keeps nothing.
struct Discard;

#[tonic::async_trait]
impl MetricsService for Discard {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn clients(events: &Events) -> Vec<ClientId> {
    (0..CLIENTS)
        .map(|i| {
            let id = ClientId::from(format!("probe-{i:04}"));
            events.announce(
                &id,
                ClientInfo::new(format!("broker-{}.example:1883", i % 10)),
            );
            id
        })
        .collect()
}

/// One ping and one status change per client.
fn warm_up(events: &Events, ids: &[ClientId]) {
    for id in ids {
        events.dispatch(id, Event::Status(Status::Up));
        events.dispatch(id, Event::PingResponse(Duration::from_micros(200)));
    }
}

/// `count` events: nine pings (0.1–5 ms) to one status change, round-robin.
fn queue(events: &Events, ids: &[ClientId], count: usize) {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..count {
        let id = &ids[i % ids.len()];
        if i % 10 == 9 {
            let status = if (i / 10) % 2 == 0 {
                Status::Down
            } else {
                Status::Up
            };
            events.dispatch(id, Event::Status(status));
        } else {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let micros = 100 + (seed >> 33) % 4_900;
            events.dispatch(id, Event::PingResponse(Duration::from_micros(micros)));
        }
    }
}

/// (time with `count` events queued − time with none), in nanoseconds per event.
fn prometheus_run(count: usize) -> (f64, Duration) {
    let events = Events::new();
    let ids = clients(&events);
    let (handle, _consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .with_subscription_capacity(count + 2 * CLIENTS)
        .build()
        .expect("a fresh registry");
    warm_up(&events, &ids);
    handle.render();
    let empty = Instant::now();
    std::hint::black_box(handle.render());
    let empty = empty.elapsed();
    queue(&events, &ids, count);
    let full = Instant::now();
    std::hint::black_box(handle.render());
    let full = full.elapsed();
    (per_event(full, empty, count), empty)
}

async fn otlp_run(count: usize, endpoint: &str) -> (f64, Duration) {
    let events = Events::new();
    let ids = clients(&events);
    let (handle, _consumer) = OtlpBuilder::new(&events)
        .with_endpoint(endpoint)
        .with_protocol(OtlpProtocol::Grpc)
        .with_interval(Duration::from_secs(3600))
        .with_subscription_capacity(count + 2 * CLIENTS)
        .build()
        .expect("valid settings");
    warm_up(&events, &ids);
    handle.flush().await.expect("the collector takes the push");
    let empty = Instant::now();
    handle.flush().await.expect("the collector takes the push");
    let empty = empty.elapsed();
    queue(&events, &ids, count);
    let full = Instant::now();
    handle.flush().await.expect("the collector takes the push");
    let full = full.elapsed();
    assert_eq!(handle.stats().failures, 0);
    handle.shutdown().await.expect("a clean shutdown");
    (per_event(full, empty, count), empty)
}

fn per_event(full: Duration, empty: Duration, count: usize) -> f64 {
    full.saturating_sub(empty).as_nanos() as f64 / count as f64
}

fn main() {
    let Args {
        events: count,
        runs,
    } = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(Discard))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );

        let (mut prom, mut otel) = (Vec::new(), Vec::new());
        let (mut prom_read, mut otel_read) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // Alternate the order so drift (heat, caches) hits both alike.
            let (p, o) = if run % 2 == 0 {
                let p = tokio::task::block_in_place(|| prometheus_run(count));
                (p, otlp_run(count, &endpoint).await)
            } else {
                let o = otlp_run(count, &endpoint).await;
                (tokio::task::block_in_place(|| prometheus_run(count)), o)
            };
            println!(
                "run {}: prometheus {:.1} ns/event (empty render {:.2} ms), otlp {:.1} ns/event (empty flush {:.2} ms)",
                run + 1,
                p.0,
                p.1.as_secs_f64() * 1e3,
                o.0,
                o.1.as_secs_f64() * 1e3
            );
            prom.push(p.0);
            otel.push(o.0);
            prom_read.push(p.1.as_secs_f64() * 1e3);
            otel_read.push(o.1.as_secs_f64() * 1e3);
        }
        let (p, o) = (median(&prom), median(&otel));
        println!();
        println!("{count} events over {CLIENTS} clients (9 pings : 1 status change), median of {runs} runs:");
        println!("| exporter | ns/event | events/s | read with empty queue (ms) |");
        println!("|---|---:|---:|---:|");
        println!(
            "| Prometheus (render) | {p:.1} | {:.2} M | {:.2} |",
            1e3 / p,
            median(&prom_read)
        );
        println!(
            "| OTLP (flush, gRPC) | {o:.1} | {:.2} M | {:.2} |",
            1e3 / o,
            median(&otel_read)
        );
        println!("OTLP / Prometheus per-event cost: {:.2}x", o / p);
    });
}
