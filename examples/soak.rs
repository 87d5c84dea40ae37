//! Soak benchmark: many monitored connections to one local mosquitto that is
//! killed and restarted on a fixed period, for a long time.
//!
//! ```text
//! cargo run --release --example soak                       # 1,000 connections, 30 min
//! cargo run --release --example soak -- --minutes 3
//! cargo run --release --example soak -- --connections 1000 --minutes 30 --period 30
//! ```
//!
//! It raises its file-descriptor limit, starts its own `mosquitto` (on a free
//! 127.0.0.1 port below the ephemeral range, `max_connections -1`; the broker
//! inherits the limit), and runs what the daemon runs: N
//! `mqtt_pulse::connection::Connection`s (default keep-alive and backoff) on one
//! events hub, the Prometheus exporter on that hub, rendered every 15 s as a
//! scraper would, and one wildcard subscriber for status and ping-response
//! events that keeps the books of every client.
//!
//! Every `--period` seconds it SIGKILLs the broker, waits for every client to
//! report Down, restarts the broker on the same port and waits for every client
//! to report Up. It records:
//! - the resident memory (VmRSS) of this process right after all clients came
//!   up (first, and after every restart: a reconnect storm's high-water mark)
//!   and settled, a period later, just before each kill and at the end; the
//!   RSS growth it judges is settled start to settled end;
//! - per client, the Up and Down events seen, and whether they alternated;
//! - the hub's dispatched/delivered/dropped counters, and the subscriber's own;
//! - the final state: every client up (hub and `/metrics` render), then every
//!   client terminated after shutdown.
//!
//! Next to RSS it reports the live heap (jemalloc's `stats.allocated`): the
//! bytes allocated and not yet freed. RSS also holds what the allocator keeps
//! after a free; the live heap does not, so a leak shows in both, an
//! allocator's high-water mark only in RSS. It runs with the daemon's
//! allocator (feature `jemalloc`, on by default), set up as the daemon does.
//!
//! It prints one line per cycle and a summary; it exits 1 if an event was lost
//! or a client did not come back (RSS growth is reported against the 5%
//! target, not enforced).

#[path = "harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::{median, raise_fd_limit, rss_kib};
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{
    ClientFilter, ClientId, Event, EventKind, Events, FailureReason, Message, Status, Subscription,
};
use mqtt_pulse::exporter::metrics::MetricsBuilder;

/// Room in the bookkeeping subscriber's queue: minutes of events even if it
/// fell behind, so a drop there would mean a bug, not a slow reader.
const WATCHER_CAPACITY: usize = 1 << 18;
/// How long every client gets to report Down after a kill, and Up after a restart.
const ALL_DOWN_LIMIT: Duration = Duration::from_secs(30);
const ALL_UP_LIMIT: Duration = Duration::from_secs(90);
/// How often the exporter is rendered, as a Prometheus scrape would.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

// The daemon's allocator, set up as the daemon sets it up (src/main.rs and
// `return_freed_memory` in src/daemon/mod.rs), so RSS here is what the daemon's
// would be. `--no-default-features --features otlp` measures glibc's malloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's view, in KiB: `stats.allocated` (the live heap: bytes allocated
/// and not yet freed), `stats.active` (pages of live allocations: the live
/// heap plus the free space in partly used pages) and `stats.resident` (every
/// page it has in memory, metadata and not yet purged pages included). Not
/// known with another allocator.
fn jemalloc_kib() -> Option<(f64, f64, f64)> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        let kib = |bytes: usize| bytes as f64 / 1024.0;
        Some((
            kib(stats::allocated::read().ok()?),
            kib(stats::active::read().ok()?),
            kib(stats::resident::read().ok()?),
        ))
    }
    #[cfg(not(feature = "jemalloc"))]
    None
}

/// Resident memory and live heap at one moment.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: f64,
    heap: Option<f64>,
    pages: Option<(f64, f64)>,
}

impl Memory {
    fn now() -> Self {
        let jemalloc = jemalloc_kib();
        Memory {
            rss: rss_kib(),
            heap: jemalloc.map(|(allocated, _, _)| allocated),
            pages: jemalloc.map(|(_, active, resident)| (active, resident)),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {:.1} MiB", self.rss / 1024.0)?;
        if let Some(heap) = self.heap {
            write!(f, ", live heap {:.2} MiB", heap / 1024.0)?;
        }
        if let Some((active, resident)) = self.pages {
            write!(
                f,
                " (jemalloc active {:.1}, resident {:.1})",
                active / 1024.0,
                resident / 1024.0
            )?;
        }
        Ok(())
    }
}

/// Soak benchmark: many monitored connections to one local mosquitto that is
/// killed and restarted on a fixed period, for a long time.
#[derive(Parser)]
struct Args {
    /// Monitored connections.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    connections: usize,
    /// How long to run, in minutes.
    #[arg(long, default_value = "30", value_parser = harness::positive_number)]
    minutes: f64,
    /// Seconds between two broker kills.
    #[arg(long, default_value = "30", value_parser = harness::seconds)]
    period: Duration,
}

fn main() {
    // Quiet unless asked: RUST_LOG=mqtt_pulse=info shows every status change and its cause.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    mqtt_pulse::daemon::return_freed_memory();
    raise_fd_limit();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ok = runtime.block_on(soak(&args));
    std::process::exit(if ok { 0 } else { 1 });
}

/// What the bookkeeping subscriber saw of one client.
#[derive(Clone, Copy, Debug, Default)]
struct ClientBook {
    ups: u64,
    downs: u64,
    pings: u64,
    last: Option<Status>,
    /// Status events that did not alternate Up, Down, Up, … starting with Up.
    out_of_order: u64,
}

/// The books of every client, kept from the subscriber's messages.
struct Books {
    index: HashMap<ClientId, usize>,
    clients: Vec<ClientBook>,
    up_now: usize,
    down_now: usize,
    terminated: usize,
    received: u64,
    unknown: u64,
}

impl Books {
    fn new(ids: &[ClientId]) -> Self {
        Books {
            index: ids.iter().cloned().zip(0..).collect(),
            clients: vec![ClientBook::default(); ids.len()],
            up_now: 0,
            down_now: 0,
            terminated: 0,
            received: 0,
            unknown: 0,
        }
    }

    fn apply(&mut self, message: Message) {
        self.received += 1;
        let Some(&i) = self.index.get(message.client_id.as_str()) else {
            self.unknown += 1;
            return;
        };
        let book = &mut self.clients[i];
        let status = match message.event {
            Event::Status(status) => status,
            Event::PingResponse(_) => {
                book.pings += 1;
                return;
            }
            _ => return,
        };
        let expected = matches!(
            (book.last, status),
            (None | Some(Status::Down), Status::Up)
                | (Some(Status::Up), Status::Down)
                | (Some(Status::Up | Status::Down), Status::Terminating)
                | (Some(Status::Terminating), Status::Terminated)
        );
        if !expected {
            book.out_of_order += 1;
        }
        match book.last {
            Some(Status::Up) => self.up_now -= 1,
            Some(Status::Down) => self.down_now -= 1,
            _ => {}
        }
        match status {
            Status::Up => {
                book.ups += 1;
                self.up_now += 1;
            }
            Status::Down => {
                book.downs += 1;
                self.down_now += 1;
            }
            Status::Terminated => self.terminated += 1,
            _ => {}
        }
        book.last = Some(status);
    }
}

/// Applies messages until `done` holds; false if `limit` passes first.
async fn pump_until(
    watcher: &mut Subscription,
    books: &mut Books,
    limit: Duration,
    done: impl Fn(&Books) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(books) {
        match tokio::time::timeout_at(deadline, watcher.recv()).await {
            Ok(Some(message)) => books.apply(message),
            Ok(None) => panic!("the events hub went away"),
            Err(_) => return false,
        }
    }
    true
}

/// Applies messages until the clock reaches `until`.
async fn pump_for(watcher: &mut Subscription, books: &mut Books, until: Instant) {
    let until = tokio::time::Instant::from_std(until);
    while let Ok(message) = tokio::time::timeout_at(until, watcher.recv()).await {
        books.apply(message.expect("the events hub went away"));
    }
}

async fn soak(args: &Args) -> bool {
    let n = args.connections;
    let cycles = ((args.minutes * 60.0) / args.period.as_secs_f64())
        .floor()
        .max(1.0) as usize;
    let broker = harness::broker();
    let url = broker.url();
    println!(
        "soak: {n} connections to mosquitto on 127.0.0.1:{} (pid {}), killed and restarted \
         every {:?}, {cycles} cycles ({} min)",
        broker.port(),
        broker.pid(),
        args.period,
        args.minutes
    );

    let events = Events::new();
    let handle = MetricsBuilder::new(&events)
        .install()
        .expect("the exporter on a fresh registry");
    let mut watcher = events.subscribe_with_capacity(WATCHER_CAPACITY);
    watcher.register(ClientFilter::Any, EventKind::Status);
    watcher.register(ClientFilter::Any, EventKind::PingResponse);

    // A scraper: render every 15 s off the async workers, as /metrics does.
    let renders = Arc::new(AtomicU64::new(0));
    let scraper = {
        let handle = handle.clone();
        let renders = Arc::clone(&renders);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
            loop {
                tick.tick().await;
                let handle = handle.clone();
                let page = tokio::task::spawn_blocking(move || handle.render())
                    .await
                    .expect("render");
                assert!(page.contains("mqtt_client_up"), "a render without clients");
                renders.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let ids: Vec<ClientId> = (0..n)
        .map(|i| ClientId::from(format!("soak-{i:05}")))
        .collect();
    let mut books = Books::new(&ids);
    let started = Instant::now();
    let connections: Vec<Connection> = ids
        .iter()
        .map(|id| {
            let options = ConnectionOptions::new(id, &url).expect("valid options");
            Connection::start(options, &events).expect("a connection")
        })
        .collect();
    if !pump_until(&mut watcher, &mut books, ALL_UP_LIMIT, |b| b.up_now == n).await {
        println!(
            "FAIL: only {} of {n} up after {ALL_UP_LIMIT:?}",
            books.up_now
        );
        return false;
    }
    let first_up = Memory::now();
    println!(
        "all {n} up after {:.2} s; {first_up}",
        started.elapsed().as_secs_f64(),
    );

    let mut ok = true;
    // Memory right after every client came back (the storm's high-water mark)...
    let mut after_storm = vec![first_up];
    // ...and a period later, just before the next kill: what the process
    // holds in steady operation. The start and end figures are these.
    let mut settled = Vec::new();
    let mut down_times = Vec::new();
    let mut up_times = Vec::new();
    let mut next_kill = Instant::now() + args.period;
    for cycle in 1..=cycles {
        pump_for(&mut watcher, &mut books, next_kill).await;
        settled.push(Memory::now());
        next_kill += args.period;

        let killed = Instant::now();
        broker.kill();
        if !pump_until(&mut watcher, &mut books, ALL_DOWN_LIMIT, |b| {
            b.down_now == n
        })
        .await
        {
            println!(
                "FAIL cycle {cycle}: only {} of {n} down after {ALL_DOWN_LIMIT:?}",
                books.down_now
            );
            ok = false;
            break;
        }
        let all_down = killed.elapsed();
        let restarted = Instant::now();
        broker.restart();
        let restart_took = restarted.elapsed();
        if !pump_until(&mut watcher, &mut books, ALL_UP_LIMIT, |b| b.up_now == n).await {
            println!(
                "FAIL cycle {cycle}: only {} of {n} up {ALL_UP_LIMIT:?} after the restart",
                books.up_now
            );
            ok = false;
            break;
        }
        let all_up = restarted.elapsed();
        let off = books
            .clients
            .iter()
            .filter(|c| c.downs != cycle as u64 || c.ups != cycle as u64 + 1)
            .count();
        if off > 0 {
            println!(
                "cycle {cycle}: {off} clients with a Down/Up count other than one per restart"
            );
            ok = false;
        }
        let memory = Memory::now();
        after_storm.push(memory);
        down_times.push(all_down.as_secs_f64());
        up_times.push(all_up.as_secs_f64());
        println!(
            "cycle {cycle}/{cycles} at {:.0} s: kill -> all down {:.3} s; broker restart {:.3} s, \
             -> all up {:.3} s; {memory} (before the kill: {}); events received {}",
            started.elapsed().as_secs_f64(),
            all_down.as_secs_f64(),
            restart_took.as_secs_f64(),
            all_up.as_secs_f64(),
            settled[settled.len() - 1],
            books.received
        );
        if next_kill < Instant::now() {
            // A cycle overran the period; keep the period between kills.
            next_kill = Instant::now() + args.period;
        }
    }

    // The end: everything back up for one more period. Measure before
    // shutting anything down.
    pump_for(&mut watcher, &mut books, Instant::now() + args.period).await;
    settled.push(Memory::now());
    let elapsed = started.elapsed();
    // Let the bookkeeper catch up with what is queued (pings) without waiting.
    while let Ok(message) = watcher.try_recv() {
        books.apply(message);
    }
    let hub_up = events
        .clients()
        .iter()
        .filter(|c| c.status == Status::Up)
        .count();
    let page = {
        let handle = handle.clone();
        tokio::task::spawn_blocking(move || handle.render())
            .await
            .expect("render")
    };
    let rendered_up = page
        .lines()
        .filter(|l| l.starts_with("mqtt_client_up{") && l.ends_with(" 1"))
        .count();
    let failures = events.failures();
    // Every loss is one failure; so is every refused or timed-out attempt.
    let mut failures_by_reason: Vec<(FailureReason, u64)> = Vec::new();
    for failure in &failures {
        match failures_by_reason
            .iter_mut()
            .find(|(r, _)| *r == failure.reason)
        {
            Some((_, count)) => *count += failure.count,
            None => failures_by_reason.push((failure.reason, failure.count)),
        }
    }
    failures_by_reason.sort();
    let losses: u64 = failures_by_reason
        .iter()
        .filter(|(r, _)| !matches!(r, FailureReason::ConnectionRefused | FailureReason::Timeout))
        .map(|(_, count)| count)
        .sum();

    // Shut everything down and see every client terminate.
    let shutdowns: Vec<_> = connections
        .into_iter()
        .map(|c| tokio::spawn(c.shutdown()))
        .collect();
    for shutdown in shutdowns {
        shutdown.await.expect("a shutdown");
    }
    let all_terminated = pump_until(&mut watcher, &mut books, Duration::from_secs(10), |b| {
        b.terminated == n
    })
    .await;
    scraper.abort();
    let _ = scraper.await;

    let status = events.stats(EventKind::Status);
    let pings = events.stats(EventKind::PingResponse);
    let mine = watcher.stats();
    // Two wildcard subscribers take every event: the bookkeeper and the exporter.
    let subscribers = 2;
    let hub_balanced = status.delivered + status.dropped == subscribers * status.dispatched
        && pings.delivered + pings.dropped == subscribers * pings.dispatched;
    let mine_balanced = mine.delivered + mine.dropped == status.dispatched + pings.dispatched;
    let restarts = after_storm.len() as u64 - 1;
    let exact_books = books
        .clients
        .iter()
        .all(|c| c.ups == restarts + 1 && c.downs == restarts && c.out_of_order == 0);
    let (ups, downs, book_pings): (u64, u64, u64) =
        books.clients.iter().fold((0, 0, 0), |(u, d, p), c| {
            (u + c.ups, d + c.downs, p + c.pings)
        });
    let ups_per_client = minmax(books.clients.iter().map(|c| c.ups));
    let downs_per_client = minmax(books.clients.iter().map(|c| c.downs));
    let (start, end) = (settled[0], settled[settled.len() - 1]);
    let growth = percent(start.rss, end.rss);

    println!("\n## soak summary");
    println!(
        "{n} connections, {restarts} kill+restart cycles every {:?}, {:.1} min from all-up",
        args.period,
        elapsed.as_secs_f64() / 60.0
    );
    println!(
        "RSS settled (a period after all came up, before the first kill) {:.1} MiB -> \
         settled at the end {:.1} MiB: growth {growth:+.2}% (target < 5%: {})",
        start.rss / 1024.0,
        end.rss / 1024.0,
        if growth < 5.0 { "met" } else { "NOT met" }
    );
    // A leak keeps growing; an allocator's high-water mark levels off.
    let half = settled[settled.len() / 2];
    println!(
        "RSS settled over the second half: {:+.2}%; max settled {:.1} MiB",
        percent(half.rss, end.rss),
        settled.iter().map(|m| m.rss).fold(0.0, f64::max) / 1024.0
    );
    println!(
        "RSS right after all came up: first {:.1} MiB, last {:.1} MiB ({:+.2}%), max {:.1} MiB",
        first_up.rss / 1024.0,
        after_storm[after_storm.len() - 1].rss / 1024.0,
        percent(first_up.rss, after_storm[after_storm.len() - 1].rss),
        after_storm.iter().map(|m| m.rss).fold(0.0, f64::max) / 1024.0
    );
    let mib = |samples: &[Memory], pick: fn(&Memory) -> Option<f64>| {
        samples
            .iter()
            .filter_map(pick)
            .map(|kib| format!("{:.1}", kib / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "RSS settled per cycle (MiB): {}",
        mib(&settled, |m| Some(m.rss))
    );
    println!(
        "RSS after each storm (MiB): {}",
        mib(&after_storm, |m| Some(m.rss))
    );
    if let (Some(heap_start), Some(heap_end), Some(heap_half)) = (start.heap, end.heap, half.heap) {
        println!(
            "live heap settled: start {:.2} MiB, end {:.2} MiB, growth {:+.2}%; over the \
             second half {:+.2}%",
            heap_start / 1024.0,
            heap_end / 1024.0,
            percent(heap_start, heap_end),
            percent(heap_half, heap_end)
        );
        println!(
            "live heap settled per cycle (MiB): {}",
            mib(&settled, |m| m.heap)
        );
    }
    if !down_times.is_empty() {
        println!(
            "kill -> all down: median {:.3} s, max {:.3} s; restart -> all up: median {:.3} s, \
             max {:.3} s",
            median(&down_times),
            max(&down_times),
            median(&up_times),
            max(&up_times)
        );
    }
    println!(
        "Up events {ups} (per client {}..{}), Down events {downs} (per client {}..{}), \
         expected {} and {} per client; out of order {}; ping responses {book_pings}",
        ups_per_client.0,
        ups_per_client.1,
        downs_per_client.0,
        downs_per_client.1,
        restarts + 1,
        restarts,
        books.clients.iter().map(|c| c.out_of_order).sum::<u64>()
    );
    println!(
        "hub status: dispatched {} delivered {} dropped {}; ping_response: dispatched {} \
         delivered {} dropped {}; {subscribers} subscribers: delivered + dropped == \
         {subscribers} x dispatched: {hub_balanced}",
        status.dispatched,
        status.delivered,
        status.dropped,
        pings.dispatched,
        pings.delivered,
        pings.dropped
    );
    println!(
        "bookkeeper: delivered {} dropped {} received {} (delivered + dropped == dispatched: \
         {mine_balanced}); unknown clients {}",
        mine.delivered, mine.dropped, books.received, books.unknown
    );
    println!(
        "failures by reason: {}; losses (all but refused and timed-out attempts) {losses}, \
         expected one per client per restart: {}",
        failures_by_reason
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        n as u64 * restarts
    );
    println!(
        "final: hub up {hub_up}/{n}, /metrics up {rendered_up}/{n}, scrapes {}, \
         terminated after shutdown {}/{n}",
        renders.load(Ordering::Relaxed),
        books.terminated
    );

    let lossless = hub_balanced
        && mine_balanced
        && mine.dropped == 0
        && books.received == mine.delivered
        && exact_books;
    let all_back = hub_up == n && rendered_up == n && all_terminated;
    ok &= lossless && all_back;
    println!(
        "verdict: no lost event {lossless}, all up at the end {all_back}, RSS growth < 5% {}",
        growth < 5.0
    );
    broker.kill();
    ok
}

fn percent(from: f64, to: f64) -> f64 {
    (to - from) / from * 100.0
}

fn minmax(values: impl Iterator<Item = u64>) -> (u64, u64) {
    values.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}
