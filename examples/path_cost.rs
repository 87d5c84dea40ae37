//! Broker-to-broker path cost benchmark: the real `mqtt-pulse` binary with
//! `--targets` targets and one `[[path]]` per target (a ring: target i
//! publishes, target i+1 receives, every `--interval`), against the same
//! binary with the same number of targets and no paths, both running at once
//! against one private Mosquitto, so both see the same machine and load.
//!
//! ```text
//! cargo build --release && cargo run --release --example path_cost
//! cargo run --release --example path_cost -- --targets 1000 --interval 1 --runs 5 --window 20
//! ```
//!
//! Per window of `--window` seconds and daemon: CPU time (utime + stime from
//! `/proc/<pid>/stat`) as a share of one core, and RSS (VmRSS) at the
//! window's end; for the one with paths, its path messages received and lost
//! per second (its `/metrics`, scraped at both ends). Medians over `--runs`
//! windows, and the medians of the per-window differences, as Markdown for
//! BENCHMARKS.md. All paths cross the one broker (no bridge): what is
//! measured is mqtt-pulse's side of a path — a PUBLISH written on one
//! connection, read on another, its bookkeeping and its series.

#[path = "harness/mod.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::support::http::{fetch, ready};
use harness::support::metrics::Metrics;
use harness::support::process::cpu_ticks;
use harness::support::{TempDir, free_port, wait_until};
use harness::{load_average, median, raise_fd_limit};

/// Path cost benchmark: a daemon with a path per target against one without.
#[derive(Parser)]
struct Args {
    /// Targets in each daemon; the one with paths has as many paths.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    targets: usize,
    /// Seconds between two messages of a path.
    #[arg(long, default_value = "1", value_parser = harness::seconds)]
    interval: Duration,
    /// Measured windows; medians are reported.
    #[arg(long, default_value_t = 5, value_parser = harness::positive)]
    runs: usize,
    /// Seconds of each measured window.
    #[arg(long, default_value = "20", value_parser = harness::seconds)]
    window: Duration,
    /// Seconds to wait once both are up before the first window.
    #[arg(long, default_value = "10", value_parser = harness::seconds)]
    settle: Duration,
}

/// Clock ticks a second (`getconf CLK_TCK` on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One measured daemon: its process and port.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(binary: &Path, config: &Path, log: PathBuf) -> Daemon {
        let port = free_port();
        let child = Command::new(binary)
            .arg("--config.file")
            .arg(config)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log.level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("a log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let daemon = Daemon { child, port };
        assert!(
            wait_until(Duration::from_secs(30), || ready(port)),
            "mqtt-pulse did not get ready"
        );
        daemon
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    fn metrics(&self) -> Metrics {
        let response = fetch(self.port, "GET", "/metrics").expect("a scrape");
        Metrics::parse(response.body)
    }

    fn rss_kib(&self) -> f64 {
        fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
                line.trim().trim_end_matches("kB").trim().parse().ok()
            })
            .expect("VmRSS")
    }
}

/// Sum of `name`'s samples with `labels` over every series on the page.
fn total(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

fn up_count(metrics: &Metrics) -> f64 {
    total(metrics, "mqtt_client_up", &[])
}

fn config(broker: &str, prefix: &str, targets: usize, paths: Option<Duration>) -> String {
    let mut text = String::from("[defaults]\nkeep_alive = \"5s\"\n\n");
    for i in 0..targets {
        text.push_str(&format!(
            "[[target]]\nname = \"{prefix}-{i:05}\"\nurl = \"{broker}\"\n\n"
        ));
    }
    if let Some(interval) = paths {
        for i in 0..targets {
            let to = (i + 1) % targets;
            text.push_str(&format!(
                "[[path]]\nfrom = \"{prefix}-{i:05}\"\nto = \"{prefix}-{to:05}\"\n\
                 interval = \"{}ms\"\n\n",
                interval.as_millis()
            ));
        }
    }
    text
}

fn main() {
    let args = Args::parse();
    let binary = std::env::current_exe()
        .expect("this example's path")
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("mqtt-pulse"))
        .filter(|binary| binary.exists())
        .expect("no mqtt-pulse binary next to the examples: run `cargo build --release` first");
    raise_fd_limit();
    let broker = harness::broker();
    let dir = TempDir::new("path-cost");
    let plain_config = dir.join("plain.toml");
    let paths_config = dir.join("paths.toml");
    let url = broker.url();
    fs::write(&plain_config, config(&url, "plain", args.targets, None)).unwrap();
    let with_paths = config(&url, "paths", args.targets, Some(args.interval));
    fs::write(&paths_config, with_paths).unwrap();

    let plain = Daemon::start(&binary, &plain_config, dir.join("plain.log"));
    let paths = Daemon::start(&binary, &paths_config, dir.join("paths.log"));
    let everyone_up = wait_until(Duration::from_secs(120), || {
        up_count(&plain.metrics()) == args.targets as f64
            && up_count(&paths.metrics()) == args.targets as f64
    });
    assert!(everyone_up, "not every target connected within 2 minutes");
    std::thread::sleep(args.settle);

    let (mut cpu, mut rss, mut rates) = (
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
    );
    let (mut cpu_diff, mut rss_diff) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let before = [cpu_ticks(plain.pid()), cpu_ticks(paths.pid())];
        let page = paths.metrics();
        let received = total(
            &page,
            "mqtt_path_messages_total",
            &[("outcome", "received")],
        );
        let lost = total(&page, "mqtt_path_messages_total", &[("outcome", "lost")]);
        let started = Instant::now();
        std::thread::sleep(args.window);
        let after = [cpu_ticks(plain.pid()), cpu_ticks(paths.pid())];
        let seconds = started.elapsed().as_secs_f64();
        let page = paths.metrics();
        let received_rate = (total(
            &page,
            "mqtt_path_messages_total",
            &[("outcome", "received")],
        ) - received)
            / seconds;
        let lost_rate =
            (total(&page, "mqtt_path_messages_total", &[("outcome", "lost")]) - lost) / seconds;
        let shares =
            [0, 1].map(|i| 100.0 * (after[i] - before[i]) as f64 / TICKS_PER_SECOND / seconds);
        let memory = [plain.rss_kib(), paths.rss_kib()];
        eprintln!(
            "run {run}: CPU {:.2}% / {:.2}% of a core, RSS {:.0} / {:.0} KiB (plain / paths), \
             path messages received {received_rate:.0}/s, lost {lost_rate:.1}/s",
            shares[0], shares[1], memory[0], memory[1]
        );
        for i in 0..2 {
            cpu[i].push(shares[i]);
            rss[i].push(memory[i]);
        }
        rates[0].push(received_rate);
        rates[1].push(lost_rate);
        cpu_diff.push(shares[1] - shares[0]);
        rss_diff.push(memory[1] - memory[0]);
    }

    println!(
        "{} targets per daemon, {} paths (a ring, every {:?}, QoS 1) in one; \
         {} windows of {:?}; {}",
        args.targets,
        args.targets,
        args.interval,
        args.runs,
        args.window,
        load_average()
    );
    println!();
    println!("| | CPU (% of one core) | RSS (MiB) | path messages received/s | lost/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| no paths | {:.2} | {:.1} | | |",
        median(&cpu[0]),
        median(&rss[0]) / 1024.0
    );
    println!(
        "| a path per target | {:.2} | {:.1} | {:.0} | {:.1} |",
        median(&cpu[1]),
        median(&rss[1]) / 1024.0,
        median(&rates[0]),
        median(&rates[1])
    );
    println!(
        "| difference (median of per-window differences) | {:+.2} | {:+.1} | | |",
        median(&cpu_diff),
        median(&rss_diff) / 1024.0
    );
    println!(
        "\nper path: {:+.2} KiB RSS, {:+.4}% of a core",
        median(&rss_diff) / args.targets as f64,
        median(&cpu_diff) / args.targets as f64
    );
}
