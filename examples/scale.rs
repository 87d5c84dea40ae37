//! Connection scale benchmark: N monitored connections to one local mosquitto.
//!
//! ```text
//! cargo run --release --example scale -- --connections 1000 --runs 3
//! cargo run --release --example scale -- --connections 10000 --runs 3 --steady 30
//! cargo run --release --example scale -- --connections 1000 --modes raw,driver,raw-tls,driver-tls
//! ```
//!
//! For each run it starts its own `mosquitto` (max_connections -1, the file
//! descriptor limit raised) and measures, in a fresh child process each:
//! - `driver`: N `mqtt_pulse::connection::Connection`s reporting to a hub with a
//!   wildcard subscriber for both kinds (what the daemon runs);
//! - `raw`: the baseline, N bare rumqttc `EventLoop`s polled in a loop that does
//!   nothing with the events;
//! - `driver-v5`: the driver again, every connection MQTT 5 (`Protocol::V5`);
//! - `raw-tls` and `driver-tls` (not run by default): `raw` and `driver` over
//!   TLS (`mqtts://`), to a broker with a certificate from a throw-away CA
//!   (`tests/support/pki.rs`); the bare loops share one rustls configuration,
//!   the driver's connections each build theirs as the daemon's do.
//!
//! Figures: time until all N are up, resident memory per connection (VmRSS growth
//! / N) when all are up and again after the steady window (when every
//! connection has pinged and its buffers have been used), and CPU of this
//! process at steady state (utime+stime over the steady window, as % of one
//! core). It prints medians over the runs, one column per mode, and the ratios
//! between modes as a Markdown table for BENCHMARKS.md.
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
use mqtt_pulse::connection::{Connection, ConnectionOptions, Protocol, TlsOptions};
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
    /// The modes to run, in order: raw, driver, driver-v5, raw-tls, driver-tls.
    #[arg(long, value_delimiter = ',', default_value = "raw,driver,driver-v5")]
    modes: Vec<String>,
    /// Measure one mode in this process: what a run's child does.
    #[arg(long, hide = true)]
    only: Option<String>,
    /// The broker's port, for `--only`.
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    /// The broker's CA file, for `--only` with a TLS mode.
    #[arg(long, hide = true)]
    ca: Option<std::path::PathBuf>,
}

const MODES: [&str; 5] = ["raw", "driver", "driver-v5", "raw-tls", "driver-tls"];

fn fail(message: &str) -> ! {
    eprintln!("scale: {message}");
    std::process::exit(2)
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    up_seconds: f64,
    kib_per_connection: f64,
    /// RSS growth ÷ N after the steady window.
    kib_after_window: f64,
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
                "RESULT {} {} {} {} {}",
                figures.up_seconds,
                figures.kib_per_connection,
                figures.cpu_percent,
                figures.pings,
                figures.kib_after_window
            );
        }
        None => orchestrate(&args),
    }
}

fn orchestrate(args: &Args) {
    if let Some(unknown) = args.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        fail(&format!(
            "unknown mode {unknown}; modes: {}",
            MODES.join(", ")
        ));
    }
    // One throw-away CA for the TLS modes' brokers.
    let pki_dir = harness::support::TempDir::new("scale-pki");
    let pki = args
        .modes
        .iter()
        .any(|m| m.ends_with("-tls"))
        .then(|| harness::support::TestPki::generate(&*pki_dir));
    let mut results: Vec<(&str, Vec<Figures>)> =
        args.modes.iter().map(|m| (m.as_str(), vec![])).collect();
    for run in 1..=args.runs {
        for (mode, figures) in results.iter_mut() {
            let tls = mode.ends_with("-tls");
            let broker = match (&pki, tls) {
                (Some(pki), true) => harness::support::Broker::builder()
                    .quiet()
                    .extra_config("max_connections -1")
                    .tls(pki.server_files())
                    .start(),
                _ => harness::broker(),
            };
            let mut child = Command::new(std::env::current_exe().unwrap());
            child
                .args(["--only", mode])
                .args(["--connections", &args.connections.to_string()])
                .args(["--steady", &args.steady.as_secs_f64().to_string()])
                .args(["--keep-alive", &args.keep_alive.as_secs_f64().to_string()])
                .args(["--port", &broker.port().to_string()]);
            if let (Some(pki), true) = (&pki, tls) {
                child.arg("--ca").arg(&pki.ca_pem_path);
            }
            let load = harness::load_average();
            let output = child
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
                kib_after_window: v[4],
            };
            eprintln!("run {run} {mode} (load before: {load}): {f:?}");
            figures.push(f);
        }
    }
    let median_of = |mode: usize, pick: Pick| {
        let values: Vec<f64> = results[mode].1.iter().map(pick).collect();
        median(&values)
    };
    println!(
        "\n{} connections, keep-alive {} s, steady window {} s, median of {} runs (load now: {})",
        args.connections,
        args.keep_alive.as_secs(),
        args.steady.as_secs(),
        args.runs,
        harness::load_average()
    );
    // The ratios that mean something: each driver against its baseline.
    let pairs: Vec<(usize, usize)> = [
        ("driver", "raw"),
        ("driver-v5", "driver"),
        ("driver-tls", "raw-tls"),
        ("driver-tls", "driver"),
        ("raw-tls", "raw"),
    ]
    .iter()
    .filter_map(|(a, b)| {
        let index = |m: &str| results.iter().position(|(mode, _)| *mode == m);
        Some((index(a)?, index(b)?))
    })
    .collect();
    let mut header = String::from("| figure |");
    for (mode, _) in &results {
        header.push_str(&format!(" {mode} |"));
    }
    for (a, b) in &pairs {
        header.push_str(&format!(" {} ÷ {} |", results[*a].0, results[*b].0));
    }
    println!("{header}");
    println!("|---{}|", "|---".repeat(results.len() + pairs.len()));
    let rows: [(&str, Pick); 5] = [
        ("time until all up (s)", |f| f.up_seconds),
        ("RSS per connection, all up (KiB)", |f| f.kib_per_connection),
        ("RSS per connection, after the window (KiB)", |f| {
            f.kib_after_window
        }),
        ("CPU at steady state (% of one core)", |f| f.cpu_percent),
        ("ping responses in the window", |f| f.pings as f64),
    ];
    for (name, pick) in rows {
        let mut row = format!("| {name} |");
        for mode in 0..results.len() {
            row.push_str(&format!(" {:.3} |", median_of(mode, pick)));
        }
        for (a, b) in &pairs {
            row.push_str(&format!(
                " {:.2}x |",
                median_of(*a, pick) / median_of(*b, pick)
            ));
        }
        println!("{row}");
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
        let tls = mode.ends_with("-tls");
        let scheme = if tls { "mqtts" } else { "mqtt" };
        let url = format!("{scheme}://127.0.0.1:{}", args.port);
        let protocol = match mode {
            "driver-v5" => Protocol::V5,
            _ => Protocol::V311,
        };
        let options = |i: usize| {
            let options = ConnectionOptions::new(format!("scale-{mode}-{i}").as_str(), &url)
                .unwrap()
                .with_keep_alive(args.keep_alive)
                .with_connect_timeout(Duration::from_secs(30))
                .with_protocol(protocol);
            if tls {
                options.with_tls(TlsOptions {
                    ca_file: args.ca.clone(),
                    ..TlsOptions::default()
                })
            } else {
                options
            }
        };
        let rss_before = rss_kib();
        let started = Instant::now();
        match mode {
            "driver" | "driver-v5" | "driver-tls" => {
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
                let kib_after_window = (rss_kib() - rss_before) / args.connections as f64;
                for connection in connections {
                    connection.shutdown().await;
                }
                Figures {
                    up_seconds,
                    kib_per_connection: kib,
                    kib_after_window,
                    cpu_percent: cpu,
                    pings,
                }
            }
            _ => {
                let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
                let pings = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                // One configuration for all, as a bare rumqttc user would share it.
                let tls_config = tls.then(|| raw_tls_config(args.ca.as_deref()));
                for i in 0..args.connections {
                    let mut mqtt = rumqttc::MqttOptions::new(
                        format!("scale-{mode}-{i}"),
                        "127.0.0.1",
                        args.port,
                    );
                    mqtt.set_keep_alive(args.keep_alive);
                    if let Some(config) = &tls_config {
                        mqtt.set_transport(rumqttc::Transport::tls_with_config(
                            rumqttc::TlsConfiguration::Rustls(config.clone()),
                        ));
                    }
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
                    kib_after_window: (rss_kib() - rss_before) / args.connections as f64,
                    cpu_percent: cpu,
                    pings: pings.load(std::sync::atomic::Ordering::Relaxed) - pings_before,
                }
            }
        }
    })
}

/// A rustls client configuration trusting `ca` (the TLS modes' broker CA).
fn raw_tls_config(ca: Option<&std::path::Path>) -> std::sync::Arc<rustls::ClientConfig> {
    let ca = ca.unwrap_or_else(|| fail("a TLS mode needs --ca"));
    let pem = std::fs::read(ca).expect("read the CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA certificate");
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
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
