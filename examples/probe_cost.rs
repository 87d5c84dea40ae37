//! Round-trip probe cost benchmark: 1,000 targets each probing every second
//! against the same 1,000 targets without probes, measured side by side in
//! one run.
//!
//! ```text
//! cargo run --release --example probe_cost
//! cargo run --release --example probe_cost -- --targets 1000 --interval 1 --runs 5 --window 20
//! ```
//!
//! It starts its own `mosquitto` (the tests' fixture, on a free port, no
//! connection limit) and two child processes — the measured ones — each
//! running what the daemon runs minus its config file: an events hub, the
//! Prometheus exporter on it (process metrics on), `--targets` real
//! `Connection`s to that broker with keep-alive `--keep-alive` (5 s, the
//! default), `mqtt_pulse::http::router` on 127.0.0.1:0, the daemon's
//! allocator (jemalloc) and its purge thread. The two differ in one thing:
//! every target of `probes` has a round-trip probe (`--interval`, QoS
//! `--qos`, timeout the interval), `plain` has none. Both run at once, so
//! both see the same machine, broker and background load.
//!
//! Once both are up and a settling pause has passed, it measures `--runs`
//! windows of `--window` seconds. Per window and child: its CPU time (utime +
//! stime from `/proc/<pid>/stat`) as a share of one core, its RSS (VmRSS)
//! and its live heap (jemalloc's `stats.allocated`, which the child prints
//! twice a second: RSS also holds what the allocator keeps after a free, such
//! as the buffers of the last `/metrics` render) at the window's end; for `probes`, the round trips it counted per second
//! by outcome (from its `/metrics`, scraped at both ends). Medians over the
//! windows, and the medians of the per-window differences, as Markdown for
//! BENCHMARKS.md.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::support::http::fetch;
use harness::support::process::cpu_ticks;
use harness::{load_average, median, raise_fd_limit};
use mqtt_pulse::connection::{Connection, ConnectionOptions, ProbeOptions};
use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use mqtt_pulse::prometheus::Registry;
use mqtt_pulse::rumqttc::QoS;

/// Probe cost benchmark: targets with probes against the same without.
#[derive(Parser)]
struct Args {
    /// Monitored targets in each child.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    targets: usize,
    /// Seconds between two probe messages of a target.
    #[arg(long, default_value = "1", value_parser = harness::seconds)]
    interval: Duration,
    /// QoS of the probe messages (0, 1 or 2).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Measured windows; medians are reported.
    #[arg(long, default_value_t = 5, value_parser = harness::positive)]
    runs: usize,
    /// Seconds of each measured window.
    #[arg(long, default_value = "20", value_parser = harness::seconds)]
    window: Duration,
    /// Seconds to wait once both are up before the first window.
    #[arg(long, default_value = "10", value_parser = harness::seconds)]
    settle: Duration,
    /// Keep-alive of every target, in seconds.
    #[arg(long, default_value = "5", value_parser = harness::seconds)]
    keep_alive: Duration,
    /// Run a measured child against this broker port: what the child does.
    #[arg(long, hide = true)]
    serve: Option<u16>,
    /// In a child: probe every target.
    #[arg(long, hide = true)]
    probe: bool,
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
    eprintln!("probe_cost: {message}");
    std::process::exit(2)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => fail("--qos is 0, 1 or 2"),
    }
}

// ---------------------------------------------------------------------------
// A measured child
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
        let kind = if args.probe { "probes" } else { "plain" };
        let started = Instant::now();
        let connections: Vec<Connection> = (0..args.targets)
            .map(|i| {
                let mut options =
                    ConnectionOptions::new(format!("probe-bench-{kind}-{i}").as_str(), &url)
                        .unwrap()
                        .with_keep_alive(args.keep_alive)
                        .with_connect_timeout(Duration::from_secs(30));
                if args.probe {
                    let probe = ProbeOptions::new()
                        .with_interval(args.interval)
                        .with_qos(qos(args.qos));
                    options = options.with_probe(probe);
                }
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
        std::thread::spawn(|| {
            loop {
                println!("HEAP {:.1}", live_heap_kib());
                std::thread::sleep(Duration::from_millis(500));
            }
        });
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

/// jemalloc's live heap (`stats.allocated`) in KiB; 0 with another allocator.
fn live_heap_kib() -> f64 {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        if epoch::advance().is_ok()
            && let Ok(bytes) = stats::allocated::read()
        {
            return bytes as f64 / 1024.0;
        }
    }
    0.0
}

/// A running child, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    port: u16,
    /// The last live heap it printed, in KiB (as `f64` bits).
    heap_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &Args, broker_port: u16, probe: bool) -> Server {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--serve", &broker_port.to_string()])
            .args(["--targets", &args.targets.to_string()])
            .args(["--keep-alive", &args.keep_alive.as_secs_f64().to_string()])
            .args(["--interval", &args.interval.as_secs_f64().to_string()])
            .args(["--qos", &args.qos.to_string()]);
        if probe {
            command.arg("--probe");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a measured child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut line = || {
            lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| fail("a child ended before it was up"))
        };
        let port: u16 = line()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| fail("no LISTENING line"));
        let up = line();
        eprintln!(
            "{}: {} targets up after {} s (pid {}, port {port})",
            if probe { "probes" } else { "plain" },
            args.targets,
            up.trim_start_matches("UP "),
            child.id()
        );
        let heap_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let heap = std::sync::Arc::clone(&heap_kib);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(kib) = line
                    .strip_prefix("HEAP ")
                    .and_then(|k| k.parse::<f64>().ok())
                {
                    heap.store(kib.to_bits(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Server {
            child,
            port,
            heap_kib,
        }
    }

    fn heap_mib(&self) -> f64 {
        f64::from_bits(self.heap_kib.load(std::sync::atomic::Ordering::Relaxed)) / 1024.0
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }
}

/// One window's figures for one child.
#[derive(Clone, Copy, Debug)]
struct Window {
    cpu_percent: f64,
    rss_mib: f64,
    heap_mib: f64,
    sent_per_second: f64,
    received_per_second: f64,
    lost: f64,
    late_or_duplicate: f64,
}

fn orchestrate(args: &Args) {
    let broker = harness::broker();
    let started = chrono_now();
    // Started one after the other, so the connect storms do not overlap.
    let plain = Server::start(args, broker.port(), false);
    let probes = Server::start(args, broker.port(), true);
    std::thread::sleep(args.settle);

    let mut plain_windows = Vec::new();
    let mut probe_windows = Vec::new();
    for run in 1..=args.runs {
        let before = [&plain, &probes].map(|s| (cpu_ticks(s.pid()), counters(s.port)));
        let clock = Instant::now();
        std::thread::sleep(args.window);
        let elapsed = clock.elapsed().as_secs_f64();
        let after = [&plain, &probes].map(|s| (cpu_ticks(s.pid()), counters(s.port)));
        let windows: Vec<Window> = [&plain, &probes]
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(server, ((t0, c0), (t1, c1)))| Window {
                // Clock ticks are 1/100 s on Linux (sysconf(_SC_CLK_TCK)).
                cpu_percent: (t1 - t0) as f64 / 100.0 / elapsed * 100.0,
                rss_mib: rss_kib(server.pid()) / 1024.0,
                heap_mib: server.heap_mib(),
                sent_per_second: (c1.sent - c0.sent) / elapsed,
                received_per_second: (c1.received - c0.received) / elapsed,
                lost: c1.lost - c0.lost,
                late_or_duplicate: c1.late_or_duplicate - c0.late_or_duplicate,
            })
            .collect();
        eprintln!(
            "window {run}: plain {:?}; probes {:?}; {}",
            windows[0],
            windows[1],
            load_average()
        );
        plain_windows.push(windows[0]);
        probe_windows.push(windows[1]);
    }
    drop((plain, probes));

    println!(
        "\n{} targets each, keep-alive {} s, probes every {} s at QoS {}, {} windows of {} s \
         (both children at once), started {started}, {}",
        args.targets,
        args.keep_alive.as_secs_f64(),
        args.interval.as_secs_f64(),
        args.qos,
        args.runs,
        args.window.as_secs_f64(),
        load_average()
    );
    println!(
        "| figure (median of {} windows) | no probes | probes | difference (median of per-window differences) |",
        args.runs
    );
    println!("|---|---|---|---|");
    let rows: [(&str, Pick); 7] = [
        ("CPU (% of one core)", |w| w.cpu_percent),
        ("RSS at the window's end (MiB)", |w| w.rss_mib),
        ("live heap at the window's end (MiB)", |w| w.heap_mib),
        ("probe messages sent per s", |w| w.sent_per_second),
        ("round trips received per s", |w| w.received_per_second),
        ("messages lost in the window", |w| w.lost),
        ("late or duplicate in the window", |w| w.late_or_duplicate),
    ];
    for (name, pick) in rows {
        let a: Vec<f64> = plain_windows.iter().map(pick).collect();
        let b: Vec<f64> = probe_windows.iter().map(pick).collect();
        let differences: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
        println!(
            "| {name} | {:.2} | {:.2} | {:+.2} (windows: {}) |",
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
    let rss: Vec<f64> = plain_windows
        .iter()
        .zip(&probe_windows)
        .map(|(a, b)| (b.rss_mib - a.rss_mib) * 1024.0 / args.targets as f64)
        .collect();
    let heap: Vec<f64> = plain_windows
        .iter()
        .zip(&probe_windows)
        .map(|(a, b)| (b.heap_mib - a.heap_mib) * 1024.0 / args.targets as f64)
        .collect();
    for (name, per_target) in [("RSS", rss), ("live heap", heap)] {
        println!(
            "| {name} per probing target (KiB) | | | {:+.2} (windows: {}) |",
            median(&per_target),
            per_target
                .iter()
                .map(|d| format!("{d:+.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Reads one figure out of a window.
type Pick = fn(&Window) -> f64;

/// A child's round-trip counters, summed over its targets.
#[derive(Default)]
struct Counters {
    sent: f64,
    received: f64,
    lost: f64,
    late_or_duplicate: f64,
}

fn counters(port: u16) -> Counters {
    let page = fetch(port, "GET", "/metrics").expect("scrape a child").body;
    let mut counters = Counters::default();
    for line in page.lines() {
        let value = || {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("mqtt_client_roundtrip_sent_total{") {
            counters.sent += value();
        } else if line.starts_with("mqtt_client_roundtrip_messages_total{") {
            if line.contains(r#"outcome="received""#) {
                counters.received += value();
            } else if line.contains(r#"outcome="lost""#) {
                counters.lost += value();
            } else if line.contains(r#"outcome="late""#) || line.contains(r#"outcome="duplicate""#)
            {
                counters.late_or_duplicate += value();
            }
        }
    }
    counters
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
