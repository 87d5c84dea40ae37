//! What the daemon costs the Prometheus that scrapes it, classic vs native
//! histograms, measured in one run.
//!
//! ```text
//! cargo build --release --bin mqtt-pulse
//! cargo run --example prometheus_cost -- --targets 10000 --interval 15 --window 600
//! ```
//!
//! It starts its own mosquitto (no connection limit), the release daemon with
//! `--targets` targets on it, and two real Prometheus 2.42 servers scraping
//! the daemon every `--interval`: `classic` (no flag: the text exposition,
//! 16 bucket series + sum + count per histogram) and `native`
//! (`--enable-feature=native-histograms`: the protobuf exposition, one
//! native histogram series each). Both scrape the same daemon at the same
//! time, on the same machine, so they share the load. After a warm-up of
//! `--warmup` (all targets up, both servers scraped), it reads each
//! server's `prometheus_tsdb_head_series`, and over the `--window` its CPU
//! (utime + stime from /proc, as % of one core), its RSS (VmRSS at the
//! end, the peak VmHWM, and the mean of a sample every scrape interval) and
//! its Go heap in use (`go_memstats_heap_inuse_bytes` from its own
//! `/metrics`: at the end, and the mean and highest of the same samples —
//! RSS follows the heap's peaks between collections, the heap in use what
//! is live). `--native-schema` sets the daemon's `rtt_native_schema`
//! (default: the daemon's own). It also fetches one page of each format to
//! report bytes per target, plain and gzipped. The orchestration is not
//! timed: a debug build of this example is fine; the daemon must be a
//! release build.

#[path = "harness/mod.rs"]
mod harness;

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use harness::support::process::Process;
use harness::support::prometheus::Prometheus;
use harness::support::{TempDir, free_port, poll};
use harness::{load_average, raise_fd_limit};

#[derive(Parser)]
struct Args {
    /// Targets in the daemon's config, all on one local mosquitto.
    #[arg(long, default_value_t = 10_000, value_parser = harness::positive)]
    targets: usize,
    /// Prometheus scrape interval.
    #[arg(long, default_value = "15", value_parser = harness::seconds)]
    interval: Duration,
    /// Time after both servers first stored every target, before measuring.
    #[arg(long, default_value = "60", value_parser = harness::seconds)]
    warmup: Duration,
    /// Measuring window.
    #[arg(long, default_value = "600", value_parser = harness::seconds)]
    window: Duration,
    /// The daemon's `[defaults] rtt_native_schema` (-4 to 3); unset, its
    /// default.
    #[arg(long, allow_hyphen_values = true)]
    native_schema: Option<i32>,
    /// The daemon binary (a release build).
    #[arg(long, default_value = "target/release/mqtt-pulse")]
    daemon: PathBuf,
}

const NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;\
    proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,\
    text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

fn main() {
    let args = Args::parse();
    raise_fd_limit();
    let broker = harness::broker();
    let dir = TempDir::new("prometheus-cost");

    let mut config = String::from("[defaults]\nkeep_alive = \"5s\"\n");
    if let Some(schema) = args.native_schema {
        config.push_str(&format!("rtt_native_schema = {schema}\n"));
    }
    for i in 0..args.targets {
        config.push_str(&format!(
            "\n[[target]]\nname = \"t{i:05}\"\nurl = \"mqtt://127.0.0.1:{}\"\n",
            broker.port()
        ));
    }
    let config_file = dir.join("mqtt-pulse.toml");
    fs::write(&config_file, config).unwrap();
    let daemon_port = free_port();
    let mut daemon = Process::spawn(
        Command::new(&args.daemon)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{daemon_port}"))
            .arg("--log.level=warn"),
        dir.join("mqtt-pulse.log"),
    );
    daemon.await_ready("mqtt-pulse", daemon_port, Duration::from_secs(30));
    let daemon_pid = daemon.child.id() as i32;

    let servers: Vec<(&str, Prometheus)> = [
        ("classic", &[][..]),
        ("native", &["--enable-feature=native-histograms"][..]),
    ]
    .into_iter()
    .map(|(name, flags)| {
        let server_dir = dir.join(name);
        fs::create_dir_all(&server_dir).unwrap();
        let config = server_dir.join("prometheus.yml");
        let seconds = args.interval.as_secs();
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {timeout}s\n\
                     scrape_configs:\n  - job_name: mqtt-pulse\n    static_configs:\n      \
                     - targets: ['127.0.0.1:{daemon_port}']\n",
                timeout = seconds.min(10)
            ),
        )
        .unwrap();
        (name, Prometheus::start_with(&server_dir, &config, flags))
    })
    .collect();

    let started = Instant::now();
    for (name, server) in &servers {
        let all_up = format!("sum(mqtt_client_up) >= {}", args.targets);
        let stored = poll(Duration::from_secs(300), Duration::from_secs(1), || {
            server.value(&all_up)
        });
        assert!(
            stored.is_some(),
            "{name} never saw every target up:\n{}",
            server.log()
        );
    }
    eprintln!(
        "all {} targets up in both after {:.0?}; warming up {:?}",
        args.targets,
        started.elapsed(),
        args.warmup
    );
    std::thread::sleep(args.warmup);

    let pids: Vec<i32> = servers.iter().map(|(_, s)| s.pid()).collect();
    let cpu_before: Vec<u64> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let daemon_cpu_before = cpu_ticks(daemon_pid);
    let load_before = load_average();
    let window_start = Instant::now();
    // Per server: (RSS KiB, heap in use bytes) once a scrape interval.
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    while window_start.elapsed() < args.window {
        let left = args.window.saturating_sub(window_start.elapsed());
        std::thread::sleep(left.min(args.interval));
        for (i, (_, server)) in servers.iter().enumerate() {
            samples[i].push((
                rss_kib(pids[i]).0,
                self_metric(server, "go_memstats_heap_inuse_bytes"),
            ));
        }
    }
    let window = window_start.elapsed().as_secs_f64();
    let load_after = load_average();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let percent =
        |before: u64, after: u64| (after - before) as f64 / ticks_per_second / window * 100.0;

    let (text, text_gzip) = page_sizes(daemon_port, None);
    let (proto, proto_gzip) = page_sizes(daemon_port, Some(NATIVE_ACCEPT));
    let n = args.targets as f64;

    println!(
        "\n{} targets, scrape interval {:?}, warm-up {:?}, window {:.0} s; load average {load_before} before, {load_after} after",
        args.targets, args.interval, args.warmup, window
    );
    println!(
        "daemon CPU over the window: {:.1}% of one core",
        percent(daemon_cpu_before, cpu_ticks(daemon_pid))
    );
    println!(
        "\n| Prometheus | head series | series/target | RSS end (MiB) | RSS peak (MiB) | RSS mean (MiB) | heap in use end (MiB) | heap in use mean, max (MiB) | CPU (% of a core) | page bytes/target (gzip) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    const MIB: f64 = 1024.0 * 1024.0;
    for (i, (name, server)) in servers.iter().enumerate() {
        let head = self_metric(server, "prometheus_tsdb_head_series");
        let (rss, peak) = rss_kib(pids[i]);
        let heap = self_metric(server, "go_memstats_heap_inuse_bytes");
        let taken = samples[i].len().max(1) as f64;
        let rss_mean = samples[i].iter().map(|s| s.0).sum::<f64>() / taken;
        let heap_mean = samples[i].iter().map(|s| s.1).sum::<f64>() / taken;
        let heap_max = samples[i].iter().map(|s| s.1).fold(heap, f64::max);
        let (bytes, gzip) = if *name == "native" {
            (proto, proto_gzip)
        } else {
            (text, text_gzip)
        };
        println!(
            "| {name} | {head:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}, {:.0} | {:.1} | {:.0} ({:.0}) |",
            head / n,
            rss / 1024.0,
            peak / 1024.0,
            rss_mean / 1024.0,
            heap / MIB,
            heap_mean / MIB,
            heap_max / MIB,
            percent(cpu_before[i], cpu_ticks(pids[i])),
            bytes as f64 / n,
            gzip as f64 / n,
        );
    }
    drop(servers);
    drop(daemon);
    drop(broker);
    std::io::stdout().flush().unwrap();
}

/// A gauge from the server's own `/metrics`.
fn self_metric(server: &Prometheus, name: &str) -> f64 {
    let page = harness::support::http::fetch(server.port(), "GET", "/metrics").unwrap();
    page.body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// (plain, gzipped) size of one `/metrics` page asked for with `accept`.
fn page_sizes(port: u16, accept: Option<&str>) -> (usize, usize) {
    let size = |gzip: bool| {
        let mut command = Command::new("curl");
        command.args(["-s", "-o", "/dev/null", "-w", "%{size_download}"]);
        if let Some(accept) = accept {
            command.args(["-H", &format!("Accept: {accept}")]);
        }
        if gzip {
            command.args(["-H", "Accept-Encoding: gzip"]);
        }
        let output = command
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    (size(false), size(true))
}

fn cpu_ticks(pid: i32) -> u64 {
    harness::support::process::cpu_ticks(pid)
}

/// (VmRSS, VmHWM) of `pid`, in KiB.
fn rss_kib(pid: i32) -> (f64, f64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
