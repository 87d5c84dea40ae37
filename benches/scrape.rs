//! What a scrape costs, and that it costs the event path nothing.
//!
//! * `render/*`: rendering `/metrics` for 100, 1,000 and 10,000 clients (each
//!   announced, up, with status changes and a histogram of 8 round trips):
//!   - `mqtt_pulse` — `MetricsHandle::render`, what `/metrics` serves;
//!   - `mqtt_pulse_protobuf` — `MetricsHandle::render_protobuf`, what
//!     `/metrics` serves a Prometheus that asks for native histograms;
//!   - `gather_text_encoder` — the same registry through `Registry::gather` and
//!     the `prometheus` crate's `TextEncoder` (what a caller who encodes the
//!     registry themselves pays);
//!   - `prometheus_client` — the same series kept and encoded by the
//!     `prometheus-client` crate, for comparison.
//! * `dispatch/{ping_response,status}/{quiet,cpu_hog,scraping}`: one
//!   `Events::dispatch` among 10,000 clients, with the exporter subscribed and
//!   its consumer running; next to it nothing (`quiet`), a thread building
//!   20 MB strings without touching the hub (`cpu_hog`, the control: what
//!   sharing 2 cores costs by itself), or a thread rendering `/metrics` in a
//!   loop (`scraping`).
//! * After criterion, a table of single-dispatch latencies by event kind
//!   (p50/p99/p99.9/max) under the same three backgrounds, printed to stdout.
//!
//! Run: `cargo bench --bench scrape` (add `-- render` or `-- dispatch` to filter;
//! the latency table is skipped when a filter is given unless it is `latency`).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use mqtt_pulse::events::{ClientId, ClientInfo, Event, EventKind, Events, FailureReason, Status};
use mqtt_pulse::exporter::DEFAULT_RTT_BUCKETS;
use mqtt_pulse::exporter::metrics::{MetricsBuilder, MetricsHandle};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

const FLEET_SIZES: [usize; 3] = [100, 1_000, 10_000];
const BROKER: &str = "127.0.0.1:1883";
/// Round trips per client, spread over the low buckets like a LAN's.
const RTTS_MICROS: [u64; 8] = [120, 180, 240, 400, 650, 900, 1_500, 4_000];

fn client_ids(clients: usize) -> Vec<ClientId> {
    (0..clients)
        .map(|i| ClientId::from(format!("mqtt-pulse-probe-{i:05}")))
        .collect()
}

/// A hub with `clients` clients that connected, dropped once, reconnected,
/// failed once and pinged [`RTTS_MICROS`], and an exporter on it.
fn fleet(clients: usize) -> (Events, MetricsHandle, Vec<ClientId>) {
    let events = Events::new();
    let (handle, consumer) = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .build()
        .expect("a fresh registry takes the exporter");
    // `render` applies queued events itself; the consumer is not needed here.
    drop(consumer);
    let ids = client_ids(clients);
    for (i, id) in ids.iter().enumerate() {
        events.announce(id, ClientInfo::new(BROKER));
        for status in [Status::Up, Status::Down, Status::Up] {
            events.dispatch(id, Event::Status(status));
        }
        events.count_failure(id, FailureReason::ClosedByBroker);
        for micros in RTTS_MICROS {
            events.dispatch(id, Event::PingResponse(Duration::from_micros(micros)));
        }
        // 11 events a client: applying them every 2,000 clients keeps the
        // exporter's queue (65,536) from overflowing while the fleet is built.
        if i % 2_000 == 1_999 {
            handle.render();
        }
    }
    handle.render();
    (events, handle, ids)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client_id: String,
    broker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    client_id: String,
    broker: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    client_id: String,
    broker: String,
    reason: String,
}

fn rtt_histogram() -> Histogram {
    Histogram::new(DEFAULT_RTT_BUCKETS)
}

/// The same series as [`fleet`], kept by `prometheus-client`.
fn prometheus_client_fleet(clients: usize) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    let up = Family::<ClientLabels, Gauge>::default();
    let last_change = Family::<ClientLabels, Gauge<f64, AtomicU64>>::default();
    let rtt =
        Family::<ClientLabels, Histogram>::new_with_constructor(rtt_histogram as fn() -> Histogram);
    let changes = Family::<StatusLabels, Counter>::default();
    let failures = Family::<ReasonLabels, Counter>::default();
    // prometheus-client appends `_total` to counters itself.
    registry.register("mqtt_client_up", "Whether connected", up.clone());
    registry.register(
        "mqtt_client_last_status_change_timestamp_seconds",
        "When the status began",
        last_change.clone(),
    );
    registry.register(
        "mqtt_client_ping_rtt_seconds",
        "Keep-alive RTT",
        rtt.clone(),
    );
    registry.register(
        "mqtt_client_status_changes",
        "Status changes",
        changes.clone(),
    );
    registry.register("mqtt_client_connect_failures", "Failures", failures.clone());
    for id in client_ids(clients) {
        let labels = ClientLabels {
            client_id: id.to_string(),
            broker: BROKER.to_owned(),
        };
        up.get_or_create(&labels).set(1);
        last_change.get_or_create(&labels).set(1_764_119_234.5);
        for micros in RTTS_MICROS {
            rtt.get_or_create(&labels).observe(micros as f64 / 1e6);
        }
        for (status, count) in [("down", 1), ("terminating", 0), ("up", 2)] {
            changes
                .get_or_create(&StatusLabels {
                    client_id: id.to_string(),
                    broker: BROKER.to_owned(),
                    status: status.to_owned(),
                })
                .inc_by(count);
        }
        failures
            .get_or_create(&ReasonLabels {
                client_id: id.to_string(),
                broker: BROKER.to_owned(),
                reason: "closed_by_broker".to_owned(),
            })
            .inc();
    }
    registry
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    for clients in FLEET_SIZES {
        let (_events, handle, _) = fleet(clients);
        let sample_lines = handle.render().lines().count();
        eprintln!("render: {clients} clients -> {sample_lines} lines");
        group.bench_with_input(
            BenchmarkId::new("mqtt_pulse", clients),
            &handle,
            |b, handle| b.iter(|| black_box(handle.render())),
        );
        #[cfg(feature = "native-histograms")]
        group.bench_with_input(
            BenchmarkId::new("mqtt_pulse_protobuf", clients),
            &handle,
            |b, handle| b.iter(|| black_box(handle.render_protobuf())),
        );
        group.bench_with_input(
            BenchmarkId::new("gather_text_encoder", clients),
            &handle,
            |b, handle| {
                let encoder = prometheus::TextEncoder::new();
                b.iter(|| {
                    let families = handle.registry().gather();
                    black_box(encoder.encode_to_string(&families).unwrap())
                })
            },
        );
        let registry = prometheus_client_fleet(clients);
        group.bench_with_input(
            BenchmarkId::new("prometheus_client", clients),
            &registry,
            |b, registry| {
                b.iter(|| {
                    let mut out = String::new();
                    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
                    black_box(out)
                })
            },
        );
    }
    group.finish();
}

/// What runs next to the dispatching thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Background {
    /// Nothing but the exporter's consumer.
    Quiet,
    /// A thread doing a render's kind of work — building a 20 MB string in a
    /// loop — without touching the hub or the exporter: the control that shows
    /// what sharing two cores costs by itself.
    CpuHog,
    /// A thread reading the hub's present state in a loop (`Events::clients`,
    /// `failures`, `stats`: what a render reads from the hub) and nothing
    /// else: isolates the hub's locks from the rest of a render.
    HubReads,
    /// A thread rendering `/metrics` in a loop.
    Scraping,
}

impl Background {
    fn label(self) -> &'static str {
        match self {
            Background::Quiet => "quiet",
            Background::CpuHog => "cpu_hog",
            Background::HubReads => "hub_reads",
            Background::Scraping => "scraping",
        }
    }
}

/// A fleet of 10,000 with the exporter's consumer running on a runtime thread,
/// and a [`Background`] thread.
struct DispatchRig {
    events: Events,
    ids: Vec<ClientId>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
    _runtime: tokio::runtime::Runtime,
}

impl DispatchRig {
    fn new(background: Background) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let events = Events::new();
        let handle = {
            let _entered = runtime.enter();
            MetricsBuilder::new(&events)
                .with_process_metrics(false)
                .install()
                .unwrap()
        };
        let ids = client_ids(10_000);
        for id in &ids {
            events.announce(id, ClientInfo::new(BROKER));
            events.dispatch(id, Event::Status(Status::Up));
        }
        let page_len = handle.render().len();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        if background != Background::Quiet {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&rounds));
            let hub = events.clone();
            threads.push(thread::spawn(move || {
                let line = "mqtt_client_ping_rtt_seconds_bucket{client_id=\"x\",le=\"1\"} 0\n";
                while !stop.load(Ordering::Relaxed) {
                    if background == Background::Scraping {
                        black_box(handle.render());
                    } else if background == Background::HubReads {
                        black_box(hub.clients());
                        black_box(hub.failures());
                        black_box(EventKind::ALL.map(|kind| hub.stats(kind)));
                    } else {
                        let mut page = String::new();
                        while page.len() < page_len {
                            page.push_str(black_box(line));
                        }
                        black_box(page);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
            // Measure only once the background work is really under way.
            while rounds.load(Ordering::Relaxed) == 0 {
                thread::yield_now();
            }
        }
        Self {
            events,
            ids,
            stop,
            rounds,
            threads,
            _runtime: runtime,
        }
    }

    fn event(&self, i: usize, status_every: usize) -> (&ClientId, Event) {
        let id = &self.ids[i % self.ids.len()];
        if status_every > 0 && i.is_multiple_of(status_every) {
            let status = if (i / status_every).is_multiple_of(2) {
                Status::Down
            } else {
                Status::Up
            };
            (id, Event::Status(status))
        } else {
            let rtt = Duration::from_micros(150 + (i % 500) as u64);
            (id, Event::PingResponse(rtt))
        }
    }
}

impl Drop for DispatchRig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

const BACKGROUNDS: [Background; 4] = [
    Background::Quiet,
    Background::CpuHog,
    Background::HubReads,
    Background::Scraping,
];

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(30);
    for background in BACKGROUNDS {
        let rig = DispatchRig::new(background);
        for (kind, status_every) in [("ping_response", 0), ("status", 1)] {
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(kind, background.label()), |b| {
                b.iter(|| {
                    let (id, event) = rig.event(i, status_every);
                    i = i.wrapping_add(1);
                    rig.events.dispatch(id, event);
                })
            });
        }
    }
    group.finish();
}

/// Per-call dispatch latency percentiles, by event kind, which a mean would
/// hide: a scrape that delayed dispatch would show in the tail, beyond what
/// the CPU-hog control shows.
fn dispatch_latency_table() {
    const CALLS: usize = 1_000_000;
    println!("\ndispatch latency, 10,000 clients, {CALLS} calls (1 in 100 a status change), ns");
    println!(
        "| background | ping p50 | ping p99 | ping p99.9 | ping max | \
         status p50 | status p99 | status p99.9 | status max | background rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for background in BACKGROUNDS {
        let rig = DispatchRig::new(background);
        let rounds_before = rig.rounds.load(Ordering::Relaxed);
        let mut ping_nanos: Vec<u64> = Vec::with_capacity(CALLS);
        let mut status_nanos: Vec<u64> = Vec::with_capacity(CALLS / 100 + 1);
        for i in 0..CALLS {
            let (id, event) = rig.event(i, 100);
            let is_status = matches!(event, Event::Status(_));
            let start = Instant::now();
            rig.events.dispatch(id, event);
            let nanos = start.elapsed().as_nanos() as u64;
            if is_status {
                status_nanos.push(nanos);
            } else {
                ping_nanos.push(nanos);
            }
            if i.is_multiple_of(10_000) {
                // Let the consumer keep up, as a connection's own pacing would.
                thread::yield_now();
            }
        }
        let rounds = rig.rounds.load(Ordering::Relaxed) - rounds_before;
        let [ping, status] = [&mut ping_nanos, &mut status_nanos].map(|nanos| {
            nanos.sort_unstable();
            let at = |q: f64| nanos[((nanos.len() - 1) as f64 * q) as usize];
            format!(
                "{} | {} | {} | {}",
                at(0.5),
                at(0.99),
                at(0.999),
                nanos[nanos.len() - 1]
            )
        });
        println!("| {} | {ping} | {status} | {rounds} |", background.label());
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    render(&mut criterion);
    dispatch(&mut criterion);
    criterion.final_summary();

    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    if filter.is_none_or(|f| f.contains("latency")) {
        dispatch_latency_table();
    }
}
