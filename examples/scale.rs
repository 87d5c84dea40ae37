//! Connection scale benchmark: N monitored connections to one local mosquitto.
//!
//! ```text
//! cargo run --release --example scale -- --connections 1000 --runs 3
//! cargo run --release --example scale -- --connections 10000 --runs 3 --steady 30
//! ```
//!
//! For each run it starts its own `mosquitto` (max_connections -1, the file
//! descriptor limit raised) and measures, in a fresh child process each:
//! - `driver`: N `mqtt_pulse::connection::Connection`s reporting to a hub with a
//!   wildcard subscriber for both kinds (what the daemon runs);
//! - `raw`: the baseline, N bare rumqttc `EventLoop`s polled in a loop that does
//!   nothing with the events;
//! - `driver-v5`: the driver again, every connection MQTT 5 (`Protocol::V5`).
//!
//! Figures: time until all N are up, resident memory per connection (VmRSS growth
//! / N), and CPU of this process at steady state (utime+stime over the steady
//! window, as % of one core). It prints medians over the runs and the
//! driver/raw ratios as a Markdown table for BENCHMARKS.md.
//!
//! Both modes run with the daemon's allocator, set up as the daemon sets it up
//! (feature `jemalloc`, on by default; `--no-default-features --features otlp`
//! measures glibc's malloc).

#[path = "harness/mod.rs"]
mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::{median, raise_fd_limit, rss_kib};
use mqtt_pulse::connection::{Connection, ConnectionOptions, Protocol};
use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status};

/// Connection scale benchmark: N monitored connections to one local mosquitto.
#[derive(Parser)]
struct Args {
    /// Connections per run.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    connections: usize,
    /// Runs of each mode; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = harness::positive)]
    runs: usize,
    /// Seconds of the steady-state CPU window.
    #[arg(long, default_value = "30", value_parser = harness::seconds)]
    steady: Duration,
    /// Keep-alive of every connection, in seconds.
    #[arg(long, default_value = "5", value_parser = harness::seconds)]
    keep_alive: Duration,
    /// Measure one mode (`driver` or `raw`) in this process: what a run's child does.
    #[arg(long, hide = true)]
    only: Option<String>,
    /// The broker's port, for `--only`.
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
}

fn fail(message: &str) -> ! {
    eprintln!("scale: {message}");
    std::process::exit(2)
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    up_seconds: f64,
    kib_per_connection: f64,
    cpu_percent: f64,
    pings: u64,
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    mqtt_pulse::daemon::return_freed_memory();
    raise_fd_limit();
    let args = Args::parse();
    match args.only.as_deref() {
        Some(mode) => {
            let figures = measure(mode, &args);
            println!(
                "RESULT {} {} {} {}",
                figures.up_seconds, figures.kib_per_connection, figures.cpu_percent, figures.pings
            );
        }
        None => orchestrate(&args),
    }
}

fn orchestrate(args: &Args) {
    let mut results: Vec<(&str, Vec<Figures>)> =
        vec![("raw", vec![]), ("driver", vec![]), ("driver-v5", vec![])];
    for run in 1..=args.runs {
        for (mode, figures) in results.iter_mut() {
            let broker = harness::broker();
            let output = Command::new(std::env::current_exe().unwrap())
                .args(["--only", mode])
                .args(["--connections", &args.connections.to_string()])
                .args(["--steady", &args.steady.as_secs_f64().to_string()])
                .args(["--keep-alive", &args.keep_alive.as_secs_f64().to_string()])
                .args(["--port", &broker.port().to_string()])
                .stderr(Stdio::inherit())
                .output()
                .expect("run a measurement child");
            let text = String::from_utf8_lossy(&output.stdout);
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .unwrap_or_else(|| fail(&format!("{mode} run {run} printed no result: {text}")));
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let f = Figures {
                up_seconds: v[0],
                kib_per_connection: v[1],
                cpu_percent: v[2],
                pings: v[3] as u64,
            };
            eprintln!("run {run} {mode}: {f:?}");
            figures.push(f);
        }
    }
    let median_of = |mode: usize, pick: Pick| {
        let values: Vec<f64> = results[mode].1.iter().map(pick).collect();
        median(&values)
    };
    println!(
        "\n{} connections, keep-alive {} s, steady window {} s, median of {} runs",
        args.connections,
        args.keep_alive.as_secs(),
        args.steady.as_secs(),
        args.runs
    );
    println!(
        "| figure | raw rumqttc | mqtt-pulse driver | ratio | driver, MQTT 5 | MQTT 5 ÷ 3.1.1 |\n\
         |---|---|---|---|---|---|"
    );
    let rows: [(&str, Pick); 4] = [
        ("time until all up (s)", |f| f.up_seconds),
        ("RSS per connection (KiB)", |f| f.kib_per_connection),
        ("CPU at steady state (% of one core)", |f| f.cpu_percent),
        ("ping responses in the window", |f| f.pings as f64),
    ];
    for (name, pick) in rows {
        let (raw, driver, v5) = (median_of(0, pick), median_of(1, pick), median_of(2, pick));
        println!(
            "| {name} | {raw:.3} | {driver:.3} | {:.2}x | {v5:.3} | {:.2}x |",
            driver / raw,
            v5 / driver
        );
    }
}

/// Reads one figure out of a run's results.
type Pick = fn(&Figures) -> f64;

fn measure(mode: &str, args: &Args) -> Figures {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("mqtt://127.0.0.1:{}", args.port);
        let protocol = match mode {
            "driver-v5" => Protocol::V5,
            _ => Protocol::V311,
        };
        let options = |i: usize| {
            ConnectionOptions::new(format!("scale-{mode}-{i}").as_str(), &url)
                .unwrap()
                .with_keep_alive(args.keep_alive)
                .with_connect_timeout(Duration::from_secs(30))
                .with_protocol(protocol)
        };
        let rss_before = rss_kib();
        let started = Instant::now();
        match mode {
            "driver" | "driver-v5" => {
                let events = Events::new();
                let mut watcher = events.subscribe_with_capacity(4 * args.connections + 1024);
                watcher.register(ClientFilter::Any, EventKind::Status);
                watcher.register(ClientFilter::Any, EventKind::PingResponse);
                let connections: Vec<_> = (0..args.connections)
                    .map(|i| Connection::start(options(i), &events).unwrap())
                    .collect();
                let mut up = 0;
                while up < args.connections {
                    let message = watcher.recv().await.unwrap();
                    if message.event == Event::Status(Status::Up) {
                        up += 1;
                    }
                }
                let up_seconds = started.elapsed().as_secs_f64();
                let kib = (rss_kib() - rss_before) / args.connections as f64;
                let cpu_before = cpu_seconds();
                let pings_before = events.stats(EventKind::PingResponse).dispatched;
                let window = tokio::time::sleep(args.steady);
                tokio::pin!(window);
                loop {
                    tokio::select! {
                        _ = &mut window => break,
                        message = watcher.recv() => { message.unwrap(); }
                    }
                }
                let cpu = (cpu_seconds() - cpu_before) / args.steady.as_secs_f64() * 100.0;
                let pings = events.stats(EventKind::PingResponse).dispatched - pings_before;
                for connection in connections {
                    connection.shutdown().await;
                }
                Figures {
                    up_seconds,
                    kib_per_connection: kib,
                    cpu_percent: cpu,
                    pings,
                }
            }
            _ => {
                let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
                let pings = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                for i in 0..args.connections {
                    let mut mqtt =
                        rumqttc::MqttOptions::new(format!("scale-raw-{i}"), "127.0.0.1", args.port);
                    mqtt.set_keep_alive(args.keep_alive);
                    let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 64);
                    let up_tx = up_tx.clone();
                    let pings = pings.clone();
                    tokio::spawn(async move {
                        let _client = client;
                        loop {
                            match eventloop.poll().await {
                                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                                    let _ = up_tx.send(());
                                }
                                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PingResp)) => {
                                    pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                Ok(_) => {}
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        }
                    });
                }
                for _ in 0..args.connections {
                    up_rx.recv().await.unwrap();
                }
                let up_seconds = started.elapsed().as_secs_f64();
                let kib = (rss_kib() - rss_before) / args.connections as f64;
                let cpu_before = cpu_seconds();
                let pings_before = pings.load(std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(args.steady).await;
                let cpu = (cpu_seconds() - cpu_before) / args.steady.as_secs_f64() * 100.0;
                Figures {
                    up_seconds,
                    kib_per_connection: kib,
                    cpu_percent: cpu,
                    pings: pings.load(std::sync::atomic::Ordering::Relaxed) - pings_before,
                }
            }
        }
    })
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ").unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; `getconf` says so
    // without unsafe code.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
