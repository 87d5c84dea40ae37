//! `/events` cost benchmark: what 100 open Server-Sent Events streams cost a
//! server monitoring 1,000 targets that ping every second, against no
//! streams, in the same run.
//!
//! ```text
//! cargo run --release --example event_streams
//! cargo run --release --example event_streams -- --targets 1000 --streams 100 --runs 3 --window 20
//! ```
//!
//! It starts its own `mosquitto` (the tests' fixture, on a free port, no
//! connection limit) and a child process — the measured one — that runs what
//! the daemon runs minus its config file: an events hub, the Prometheus
//! exporter on it (process metrics on), `--targets` real `Connection`s to
//! that broker with keep-alive `--keep-alive` (1 s: a PINGREQ every 750 ms
//! each), and `mqtt_pulse::http::router` served by `mqtt_pulse::http::run` on
//! 127.0.0.1:0, with the daemon's allocator (jemalloc) and its purge thread.
//!
//! Once every target is up and a settling pause has passed, each run measures
//! two windows of `--window` seconds, alternating which comes first (ABBA):
//! - `none`: no `/events` stream open;
//! - `streams`: `--streams` streams open (`GET /events`, every client, both
//!   kinds), each read as fast as it comes by this process (raw HTTP/1.1
//!   over TCP on one thread, counting `data:` lines; nothing parsed), opened
//!   and given the settling pause before the window starts, closed after it.
//!
//! Per window: the child's CPU time (utime + stime from `/proc/<pid>/stat`)
//! as a share of one core, its RSS (VmRSS) at the end of the window, the
//! ping responses the hub dispatched per second and the events it dropped
//! (from `/metrics`: `mqtt_pulse_events_dispatched_total` and
//! `_dropped_total`, scraped at both ends), and the events the readers got
//! per second. Medians over the runs, and the medians of the per-run
//! differences (streams − none), as Markdown for BENCHMARKS.md.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::support::http::fetch;
use harness::support::process::cpu_ticks;
use harness::{load_average, median, raise_fd_limit};
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use mqtt_pulse::prometheus::Registry;

/// `/events` cost benchmark: 100 open streams against none, same run.
#[derive(Parser)]
struct Args {
    /// Monitored targets (real MQTT connections to the benchmark's broker).
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    targets: usize,
    /// Open `/events` streams in the `streams` windows.
    #[arg(long, default_value_t = 100, value_parser = harness::positive)]
    streams: usize,
    /// Runs (each one `none` and one `streams` window); medians are reported.
    #[arg(long, default_value_t = 3, value_parser = harness::positive)]
    runs: usize,
    /// Seconds of each measured window.
    #[arg(long, default_value = "20", value_parser = harness::seconds)]
    window: Duration,
    /// Seconds to wait after a change (all up; streams opened or closed)
    /// before a window starts.
    #[arg(long, default_value = "5", value_parser = harness::seconds)]
    settle: Duration,
    /// Keep-alive of every target, in seconds.
    #[arg(long, default_value = "1", value_parser = harness::seconds)]
    keep_alive: Duration,
    /// Run the measured server against this broker port: what the child does.
    #[arg(long, hide = true)]
    serve: Option<u16>,
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    raise_fd_limit();
    let args = Args::parse();
    match args.serve {
        Some(port) => serve(&args, port),
        None => orchestrate(&args),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("event_streams: {message}");
    std::process::exit(2)
}

// ---------------------------------------------------------------------------
// The measured child
// ---------------------------------------------------------------------------

/// Prints `LISTENING <port>`, then `UP <seconds>` once every target is up;
/// runs until its standard input closes (the parent ended).
fn serve(args: &Args, broker_port: u16) {
    mqtt_pulse::daemon::return_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events = Events::new();
        let handle = MetricsBuilder::new(&events)
            .with_registry(Registry::new())
            .with_process_metrics(true)
            .install()
            .unwrap();
        let mut statuses = events.subscribe_with_capacity(4 * args.targets + 1024);
        statuses.register(ClientFilter::Any, EventKind::Status);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap().port());
        tokio::spawn(mqtt_pulse::http::run(
            listener,
            mqtt_pulse::http::router(handle),
            std::future::pending(),
        ));
        let url = format!("mqtt://127.0.0.1:{broker_port}");
        let started = Instant::now();
        let connections: Vec<Connection> = (0..args.targets)
            .map(|i| {
                let options = ConnectionOptions::new(format!("streams-bench-{i}").as_str(), &url)
                    .unwrap()
                    .with_keep_alive(args.keep_alive)
                    .with_connect_timeout(Duration::from_secs(30));
                Connection::start(options, &events).unwrap()
            })
            .collect();
        let mut up = 0;
        while up < args.targets {
            if statuses.recv().await.unwrap().event == Event::Status(Status::Up) {
                up += 1;
            }
        }
        drop(statuses);
        println!("UP {:.2}", started.elapsed().as_secs_f64());
        // Until the parent closes our stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        drop(connections);
    });
}

// ---------------------------------------------------------------------------
// The orchestrating parent
// ---------------------------------------------------------------------------

/// One window's figures.
#[derive(Clone, Copy, Debug)]
struct Window {
    cpu_percent: f64,
    rss_mib: f64,
    pings_per_second: f64,
    dropped: f64,
    read_per_second: f64,
}

/// The running child, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn orchestrate(args: &Args) {
    let broker = harness::broker();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve", &broker.port().to_string()])
        .args(["--targets", &args.targets.to_string()])
        .args(["--keep-alive", &args.keep_alive.as_secs_f64().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the measured server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut line = || {
        lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| fail("the server ended before it was up"))
    };
    let port: u16 = line()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| fail("no LISTENING line"));
    let up = line();
    let server = Server { child, port };
    let pid = i32::try_from(server.child.id()).unwrap();
    eprintln!(
        "{} targets up after {} s (server pid {pid}, port {port}); {}",
        args.targets,
        up.trim_start_matches("UP "),
        load_average()
    );
    std::thread::sleep(args.settle);

    let readers = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = chrono_now();
    let mut none = Vec::new();
    let mut with = Vec::new();
    for run in 1..=args.runs {
        let streams_first = run % 2 == 0;
        for streams in [streams_first, !streams_first] {
            let window = if streams {
                let read = Arc::new(AtomicU64::new(0));
                let tasks: Vec<_> = (0..args.streams)
                    .map(|_| readers.spawn(read_stream(server.port, Arc::clone(&read))))
                    .collect();
                let window = readers.block_on(async {
                    tokio::time::sleep(args.settle).await;
                    measure(args, &server, pid, Some(&read)).await
                });
                for task in tasks {
                    task.abort();
                }
                window
            } else {
                readers.block_on(measure(args, &server, pid, None))
            };
            eprintln!(
                "run {run} {}: {window:?}; {}",
                if streams { "streams" } else { "none" },
                load_average()
            );
            if streams {
                with.push(window);
                // Let the server notice the closed streams before a `none` window.
                readers.block_on(async { tokio::time::sleep(args.settle).await });
            } else {
                none.push(window);
            }
        }
    }
    drop(server);

    println!(
        "\n{} targets, keep-alive {} s, {} streams, {} runs of {} s windows (ABBA), started {started}, {}",
        args.targets,
        args.keep_alive.as_secs_f64(),
        args.streams,
        args.runs,
        args.window.as_secs_f64(),
        load_average()
    );
    println!(
        "| figure (median of {} runs) | no stream | {} streams | difference (median of per-run differences) |",
        args.runs, args.streams
    );
    println!("|---|---|---|---|");
    let rows: [(&str, Pick); 5] = [
        ("server CPU (% of one core)", |w| w.cpu_percent),
        ("server RSS at the window's end (MiB)", |w| w.rss_mib),
        ("ping responses dispatched per s", |w| w.pings_per_second),
        ("events dropped in the window", |w| w.dropped),
        ("events read by the streams per s", |w| w.read_per_second),
    ];
    for (name, pick) in rows {
        let a: Vec<f64> = none.iter().map(pick).collect();
        let b: Vec<f64> = with.iter().map(pick).collect();
        let differences: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
        println!(
            "| {name} | {:.2} | {:.2} | {:+.2} (runs: {}) |",
            median(&a),
            median(&b),
            median(&differences),
            differences
                .iter()
                .map(|d| format!("{d:+.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Reads one figure out of a window.
type Pick = fn(&Window) -> f64;

/// One window: CPU and hub counters over `--window`, RSS at its end.
async fn measure(args: &Args, server: &Server, pid: i32, read: Option<&AtomicU64>) -> Window {
    let counters_before = hub_counters(server.port);
    let read_before = read.map_or(0, |r| r.load(Ordering::Relaxed));
    let ticks_before = cpu_ticks(pid);
    let started = Instant::now();
    tokio::time::sleep(args.window).await;
    let ticks = cpu_ticks(pid) - ticks_before;
    let elapsed = started.elapsed().as_secs_f64();
    let read_after = read.map_or(0, |r| r.load(Ordering::Relaxed));
    let rss_mib = rss_kib(pid) / 1024.0;
    let counters_after = hub_counters(server.port);
    Window {
        // Clock ticks are 1/100 s on Linux (sysconf(_SC_CLK_TCK)).
        cpu_percent: ticks as f64 / 100.0 / elapsed * 100.0,
        rss_mib,
        pings_per_second: (counters_after.0 - counters_before.0) / elapsed,
        dropped: counters_after.1 - counters_before.1,
        read_per_second: (read_after - read_before) as f64 / elapsed,
    }
}

/// `mqtt_pulse_events_dispatched_total{type="ping_response"}` and the sum of
/// `mqtt_pulse_events_dropped_total`, from the server's `/metrics`.
fn hub_counters(port: u16) -> (f64, f64) {
    let page = fetch(port, "GET", "/metrics")
        .expect("scrape the server")
        .body;
    let mut dispatched = 0.0;
    let mut dropped = 0.0;
    for line in page.lines() {
        let value = || {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("mqtt_pulse_events_dispatched_total{type=\"ping_response\"}") {
            dispatched = value();
        } else if line.starts_with("mqtt_pulse_events_dropped_total{") {
            dropped += value();
        }
    }
    (dispatched, dropped)
}

/// Opens `GET /events` and reads it until aborted, adding the `data:` lines
/// it sees to `read`. Raw HTTP/1.1: the reader should cost as little as can
/// be, so the machine's second core stays the server's as far as it can.
async fn read_stream(port: u16, read: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the server");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0; 64 * 1024];
    let mut head = true;
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        if head {
            head = false;
            if !chunk.starts_with(b"HTTP/1.1 200") {
                fail(&format!(
                    "/events answered {}",
                    String::from_utf8_lossy(&chunk[..chunk.len().min(80)])
                ));
            }
        }
        // A `data:` split across two reads is missed: a few in a million.
        let lines = chunk.windows(5).filter(|w| w == b"data:").count();
        read.fetch_add(lines as u64, Ordering::Relaxed);
    }
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| fail(&format!("no VmRSS for pid {pid}")))
}

/// The UTC date and time now, from `date` (no time crate for one line).
fn chrono_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
