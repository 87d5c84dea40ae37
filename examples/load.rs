//! Load benchmark: `/metrics` under many concurrent scrapers while events flow,
//! and what that load costs the event path.
//!
//! ```text
//! cargo run --release --example load                   # 3 runs, wrk -c1000, -c1000 gzip, -c8, 30 s each
//! cargo run --release --example load -- --runs 1 --duration 10
//! ```
//!
//! Each run builds, in this process, what an embedding service runs: an events
//! hub, the Prometheus exporter on it (`MetricsBuilder::install`, process
//! metrics on) and `mqtt_pulse::http::run` with `mqtt_pulse::http::router` on
//! 127.0.0.1:0. The 1,000 clients are hand-dispatched, not real connections:
//! each is announced (broker label `127.0.0.1:1883`), goes Up and gets eight
//! round trips, so the page has every family filled; no broker shares the two
//! cores with the server. A thread then dispatches `PingResponse` events for
//! the clients in turn, continuously (`--rate` events/s, default 100,000 — a
//! hundred times what 1,000 clients pinging every second make — in batches
//! of `--batch` 100 with a sleep between; rate 0 = as fast as it can, no
//! sleep), timing each batch and, apart, its first event: after a pause that
//! one finds the exporter's consumer task parked and pays for waking it.
//!
//! Phases of a run: quiet (no HTTP load) → `wrk -t2 -c1000 -d<duration>s
//! --latency` → quiet → the same with `Accept-Encoding: gzip`, as Prometheus
//! sends it → quiet → `wrk -t2 -c8 …` → quiet (`--connections 1000,1000gz,8`;
//! `gz` adds the header). `wrk` runs as a second process (its file-descriptor
//! limit raised with ours). A layer around the router counts the responses by
//! status and times the handler, so the 503s of the scrape cap
//! (`MAX_CONCURRENT_SCRAPES` = 1024) are told apart from anything else (wrk's
//! "Non-2xx" count is a little lower: the server also counts the responses
//! still in flight when wrk stops). wrk's socket errors include its
//! "timeout": requests without a response after its default 2 s.
//!
//! Figures per wrk configuration: requests/s, 200s, 503s, other statuses,
//! socket errors, wrk's latency p50/p99 (all responses), the server's handler
//! time p50/p99 for 200s; and the dispatch cost (median ns/event of the
//! dispatch thread: whole batch, first event, the rest) in the quiet phases
//! and under each load, with the ratio to quiet.
//! Medians over the runs, as a Markdown table.

#[path = "harness/mod.rs"]
mod harness;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use clap::Parser;
use harness::{load_average, median, raise_fd_limit};
use mqtt_pulse::events::{ClientId, ClientInfo, Event, EventKind, Events, Status};
use mqtt_pulse::exporter::metrics::MetricsBuilder;

/// Phase markers for the dispatch thread's timings.
const PHASE_IGNORE: u8 = 0;
const PHASE_QUIET: u8 = 1;
const PHASE_LOAD: u8 = 2; // + index of the wrk configuration
const WRK: &str = "/usr/bin/wrk";

/// Load benchmark: `/metrics` under many concurrent scrapers while events flow,
/// and what that load costs the event path.
#[derive(Parser)]
struct Args {
    /// Hand-dispatched clients on the page.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    clients: usize,
    /// Runs; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = harness::positive)]
    runs: usize,
    /// Seconds of each wrk configuration.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Seconds of each quiet phase (no HTTP load).
    #[arg(long, default_value = "5", value_parser = parse_quiet)]
    quiet: Duration,
    /// Events dispatched per second; 0 = as fast as it can.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Events per batch of the dispatch thread (at least 1).
    #[arg(long, default_value_t = 100, value_parser = parse_batch)]
    batch: usize,
    /// wrk's connection counts, in order; `gz` asks for gzip (`1000,1000gz,8`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,1000gz,8",
        value_parser = parse_connections
    )]
    connections: Vec<(usize, bool)>,
}

/// One wrk configuration: a connection count, `gz` to ask for gzip (`1000gz`).
fn parse_connections(text: &str) -> Result<(usize, bool), String> {
    match text.strip_suffix("gz") {
        Some(count) => harness::positive(count).map(|n| (n, true)),
        None => harness::positive(text).map(|n| (n, false)),
    }
}

fn parse_quiet(text: &str) -> Result<Duration, String> {
    text.parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("not a whole number of seconds: {text}"))
}

fn parse_batch(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .map(|n| n.max(1))
        .map_err(|_| format!("not a whole number: {text}"))
}

fn fail(message: &str) -> ! {
    eprintln!("load: {message}");
    std::process::exit(2)
}

/// What one wrk configuration gave in one run.
#[derive(Clone, Debug, Default)]
struct LoadFigures {
    requests_per_second: f64,
    ok: u64,
    unavailable: u64,
    other_status: u64,
    wrk_non_2xx: u64,
    socket_errors: u64,
    wrk_p50_ms: f64,
    wrk_p99_ms: f64,
    server_ok_p50_ms: f64,
    server_ok_p99_ms: f64,
    dispatch: DispatchCost,
}

/// Medians of the dispatch thread's batch timings in one phase, in ns/event.
#[derive(Clone, Copy, Debug, Default)]
struct DispatchCost {
    /// The whole batch, per event.
    batch: f64,
    /// The first event of a batch: after the pause between batches it finds
    /// the exporter's consumer task parked, and wakes it.
    first: f64,
    /// The other events of the batch, per event.
    rest: f64,
}

impl DispatchCost {
    fn of(samples: &[[f64; 3]]) -> Self {
        let column = |i: usize| median(&samples.iter().map(|s| s[i]).collect::<Vec<_>>());
        DispatchCost {
            batch: column(0),
            first: column(1),
            rest: column(2),
        }
    }
}

/// One run: the quiet dispatch cost and each wrk configuration's figures.
#[derive(Clone, Debug, Default)]
struct RunFigures {
    quiet: DispatchCost,
    loads: Vec<LoadFigures>,
    page_bytes: usize,
    /// The page as the server gzips it.
    gzip_bytes: usize,
    events_dispatched: u64,
    events_dropped: u64,
}

fn main() {
    raise_fd_limit();
    let args = Args::parse();
    if !std::path::Path::new(WRK).exists() {
        fail("wrk is not installed (Debian package wrk)");
    }
    println!(
        "load: {} clients, rate {} events/s, {} runs",
        args.clients, args.rate, args.runs
    );
    println!("machine before: {}", load_average());
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let figures = run_once(&args);
        println!("run {run}: {figures:#?}");
        println!("machine: {}", load_average());
        runs.push(figures);
    }
    report(&args, &runs);
}

fn report(args: &Args, runs: &[RunFigures]) {
    let med = |pick: &dyn Fn(&RunFigures) -> f64| {
        let values: Vec<f64> = runs.iter().map(pick).collect();
        median(&values)
    };
    println!(
        "\n{} hand-dispatched clients, /metrics page {} bytes ({} gzipped), dispatch rate {} events/s, \
         wrk {} s per configuration, median of {} runs",
        args.clients,
        runs[0].page_bytes,
        runs[0].gzip_bytes,
        args.rate,
        args.duration,
        runs.len()
    );
    print!("| figure |");
    for (c, gzip) in &args.connections {
        print!(" wrk -t2 -c{c}{} |", if *gzip { " gzip" } else { "" });
    }
    print!("\n|---|");
    for _ in &args.connections {
        print!("---|");
    }
    println!();
    type Row = (&'static str, fn(&LoadFigures) -> f64, usize);
    let rows: [Row; 10] = [
        ("requests/s", |l| l.requests_per_second, 0),
        ("200 responses", |l| l.ok as f64, 0),
        ("503 responses (scrape cap)", |l| l.unavailable as f64, 0),
        ("other statuses", |l| l.other_status as f64, 0),
        ("wrk non-2xx", |l| l.wrk_non_2xx as f64, 0),
        (
            "wrk socket errors (connect/read/write/timeout > 2 s)",
            |l| l.socket_errors as f64,
            0,
        ),
        ("latency p50, all responses (ms)", |l| l.wrk_p50_ms, 2),
        ("latency p99, all responses (ms)", |l| l.wrk_p99_ms, 2),
        ("server time p50, 200s (ms)", |l| l.server_ok_p50_ms, 2),
        ("server time p99, 200s (ms)", |l| l.server_ok_p99_ms, 2),
    ];
    for (name, pick, decimals) in rows {
        print!("| {name} |");
        for i in 0..args.connections.len() {
            print!(" {:.*} |", decimals, med(&|r| pick(&r.loads[i])));
        }
        println!();
    }
    type Cost = (&'static str, fn(&DispatchCost) -> f64);
    let costs: [Cost; 3] = [
        ("whole batch", |c| c.batch),
        ("first event of a batch", |c| c.first),
        ("rest of the batch", |c| c.rest),
    ];
    for (name, pick) in costs {
        print!(
            "| dispatch ns/event, {name} (quiet: {:.0}) |",
            med(&|r| pick(&r.quiet))
        );
        for i in 0..args.connections.len() {
            print!(
                " {:.0} ({:.2}x) |",
                med(&|r| pick(&r.loads[i].dispatch)),
                med(&|r| pick(&r.loads[i].dispatch) / pick(&r.quiet))
            );
        }
        println!();
    }
    println!(
        "hub: {} ping events dispatched per run (median), {} dropped by the exporter's queue",
        med(&|r| r.events_dispatched as f64),
        med(&|r| r.events_dropped as f64)
    );
}

/// Responses seen by the layer around the router: status and handler time.
#[derive(Default)]
struct Seen {
    ok_micros: Vec<u32>,
    unavailable: u64,
    other: u64,
}

async fn record(State(seen): State<Arc<Mutex<Seen>>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let mut seen = seen.lock().unwrap();
    match response.status().as_u16() {
        200 => seen.ok_micros.push(micros),
        503 => seen.unavailable += 1,
        _ => seen.other += 1,
    }
    response
}

fn run_once(args: &Args) -> RunFigures {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let events = Events::new();
    let handle = runtime
        .block_on(async { MetricsBuilder::new(&events).install() })
        .expect("the exporter on a fresh registry");

    let ids: Vec<ClientId> = (0..args.clients)
        .map(|i| ClientId::from(format!("load-probe-{i:05}")))
        .collect();
    for id in &ids {
        events.announce(id, ClientInfo::new("127.0.0.1:1883"));
        events.dispatch(id, Event::Status(Status::Up));
        for micros in [120, 180, 240, 400, 650, 900, 1_500, 4_000] {
            events.dispatch(id, Event::PingResponse(Duration::from_micros(micros)));
        }
    }
    let page = handle.render();
    let up_lines = page
        .lines()
        .filter(|l| l.starts_with("mqtt_client_up{") && l.ends_with(" 1"))
        .count();
    assert_eq!(up_lines, args.clients, "every client up on the page");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let router = mqtt_pulse::http::router(handle.clone())
        .layer(from_fn_with_state(Arc::clone(&seen), record));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(mqtt_pulse::http::run(listener, router, async {
        let _ = stopped.await;
    }));

    // The event flow.
    let phase = Arc::new(AtomicU8::new(PHASE_IGNORE));
    let stop = Arc::new(AtomicBool::new(false));
    let dispatcher = {
        let (events, ids, phase, stop) = (
            events.clone(),
            ids.clone(),
            Arc::clone(&phase),
            Arc::clone(&stop),
        );
        let configurations = args.connections.len();
        let (rate, batch) = (args.rate, args.batch);
        std::thread::spawn(move || {
            dispatch_loop(&events, &ids, rate, batch, &phase, &stop, configurations)
        })
    };

    let settle = Duration::from_secs(2);
    std::thread::sleep(settle); // warm-up, not timed
    let quiet = |phase: &AtomicU8| {
        phase.store(PHASE_QUIET, Ordering::Relaxed);
        std::thread::sleep(args.quiet);
        phase.store(PHASE_IGNORE, Ordering::Relaxed);
    };
    quiet(&phase);
    let mut loads = Vec::new();
    for (i, &(connections, gzip)) in args.connections.iter().enumerate() {
        *seen.lock().unwrap() = Seen::default();
        phase.store(PHASE_LOAD + i as u8, Ordering::Relaxed);
        let output = Command::new(WRK)
            .args([
                "-t2",
                &format!("-c{connections}"),
                &format!("-d{}s", args.duration),
            ])
            .args(if gzip {
                &["-H", "Accept-Encoding: gzip"][..]
            } else {
                &[][..]
            })
            .arg("--latency")
            .arg(&url)
            .output()
            .expect("run wrk");
        phase.store(PHASE_IGNORE, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            fail(&format!(
                "wrk failed ({}): {text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        println!(
            "--- wrk -t2 -c{connections} -d{}s{} --latency {url}\n{text}",
            args.duration,
            if gzip {
                " -H 'Accept-Encoding: gzip'"
            } else {
                ""
            }
        );
        let mut figures = parse_wrk(&text);
        let mut seen = std::mem::take(&mut *seen.lock().unwrap());
        seen.ok_micros.sort_unstable();
        figures.ok = seen.ok_micros.len() as u64;
        figures.unavailable = seen.unavailable;
        figures.other_status = seen.other;
        figures.server_ok_p50_ms = percentile(&seen.ok_micros, 0.50) / 1000.0;
        figures.server_ok_p99_ms = percentile(&seen.ok_micros, 0.99) / 1000.0;
        loads.push(figures);
        std::thread::sleep(settle); // let the last connections close, not timed
        quiet(&phase);
    }

    stop.store(true, Ordering::Relaxed);
    let timings = dispatcher.join().expect("the dispatch thread");
    let quiet = DispatchCost::of(&timings[usize::from(PHASE_QUIET)]);
    for (i, load) in loads.iter_mut().enumerate() {
        load.dispatch = DispatchCost::of(&timings[usize::from(PHASE_LOAD) + i]);
    }

    // The page still has every client, and every event is accounted for.
    let page = handle.render();
    let up_lines = page
        .lines()
        .filter(|l| l.starts_with("mqtt_client_up{") && l.ends_with(" 1"))
        .count();
    assert_eq!(
        up_lines, args.clients,
        "every client up on the page at the end"
    );
    let pings = events.stats(EventKind::PingResponse);
    assert_eq!(
        pings.delivered + pings.dropped,
        pings.dispatched,
        "one subscriber (the exporter): {pings:?}"
    );

    let _ = stop_server.send(());
    runtime
        .block_on(server)
        .expect("the server task")
        .expect("the server");
    RunFigures {
        quiet,
        loads,
        page_bytes: page.len(),
        gzip_bytes: {
            use std::io::Write as _;
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(page.as_bytes()).expect("gzip into memory");
            gzip.finish().expect("gzip into memory").len()
        },
        events_dispatched: pings.dispatched,
        events_dropped: pings.dropped,
    }
}

/// Dispatches ping responses for the clients in turn, `rate` a second in
/// batches of `batch` (0: unpaced), and returns the timings of each batch
/// (ns/event of the batch, ns of its first event, ns/event of the rest) by
/// the phase it ran in.
fn dispatch_loop(
    events: &Events,
    ids: &[ClientId],
    rate: u64,
    batch: usize,
    phase: &AtomicU8,
    stop: &AtomicBool,
    configurations: usize,
) -> Vec<Vec<[f64; 3]>> {
    let mut timings = vec![Vec::new(); usize::from(PHASE_LOAD) + configurations];
    let period = (rate > 0).then(|| Duration::from_secs_f64(batch as f64 / rate as f64));
    let mut next_batch = Instant::now();
    let mut client = 0;
    let mut rtt = 100u64;
    while !stop.load(Ordering::Relaxed) {
        let current = phase.load(Ordering::Relaxed);
        let mut dispatch_one = || {
            events.dispatch(
                &ids[client],
                Event::PingResponse(Duration::from_micros(rtt)),
            );
            client = (client + 1) % ids.len();
            rtt = 100 + (rtt * 7 + 13) % 5_000;
        };
        let started = Instant::now();
        dispatch_one();
        let first = started.elapsed();
        for _ in 1..batch {
            dispatch_one();
        }
        let took = started.elapsed();
        if current != PHASE_IGNORE && phase.load(Ordering::Relaxed) == current {
            let ns = |d: Duration| d.as_nanos() as f64;
            timings[usize::from(current)].push([
                ns(took) / batch as f64,
                ns(first),
                ns(took - first) / (batch as f64 - 1.0).max(1.0),
            ]);
        }
        if let Some(period) = period {
            next_batch += period;
            let now = Instant::now();
            if next_batch > now {
                std::thread::sleep(next_batch - now);
            } else if now - next_batch > Duration::from_millis(100) {
                next_batch = now; // fell far behind (descheduled): do not burst
            }
        }
    }
    timings
}

fn parse_wrk(text: &str) -> LoadFigures {
    let mut figures = LoadFigures::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => figures.wrk_p50_ms = millis(value),
            ["99%", value] => figures.wrk_p99_ms = millis(value),
            ["Requests/sec:", value] => figures.requests_per_second = value.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                figures.wrk_non_2xx = value.parse().unwrap_or(0);
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                figures.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    figures
}

/// wrk's "1.23ms", "456.00us", "2.01s" in milliseconds.
fn millis(value: &str) -> f64 {
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

fn percentile(sorted_micros: &[u32], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_micros.len() as f64 * q).ceil() as usize).clamp(1, sorted_micros.len()) - 1;
    f64::from(sorted_micros[i])
}
