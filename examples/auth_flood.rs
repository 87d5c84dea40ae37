//! Basic auth under a wrong-password flood (issue 14, items 9 and 10): what an
//! abort flood leaves running, and how long a correct login waits.
//!
//! ```text
//! cargo run --release --example auth_flood                  # cost 14, 3 runs
//! cargo run --release --example auth_flood -- --runs 1 --flood 5
//! ```
//!
//! The server is this example again, in a child process (`--serve`): the
//! library's `http::Server` with a web config whose only user has a bcrypt hash
//! of `--cost`, serving `http::router` on 127.0.0.1:0 — what the daemon serves,
//! on the same two tokio workers per two CPUs — so `/proc/<pid>` counts only
//! the server. Clients run here, each bound to its own loopback address.
//!
//! Scenarios, each on a fresh server, `--runs` times:
//!
//! - **abort flood** (item 9): 4 clients send a wrong password and reset the
//!   connection 50 ms later, for `--flood`; from one address (`same`), or
//!   from a new address every attempt (`fresh`, a botnet: no failure budget
//!   runs out). Figures: the server's threads at rest and at most during the
//!   flood, its CPU seconds during the flood, its CPU seconds in the
//!   `--after` window once the flood stopped, and how long until it was idle
//!   (first 500 ms with under 5% of a core; capped at `--after`).
//! - **correct login under a flood** (item 10): 40 clients send wrong
//!   passwords back to back, from one address (`same`) or spread over eight
//!   (`8 addresses`); once every attacker address has had an answer, and
//!   `--warmup` later, one correct login (not yet remembered) from
//!   127.0.0.1. Figures: its status and latency.
//!
//! Medians over the runs, as Markdown table rows.

#[path = "harness/mod.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::support::http::{basic, request, status_from};
use harness::support::process::{ThreadPeak, cpu_ticks, threads};
use harness::{load_average, median};
use mqtt_pulse::exporter::metrics::MetricsBuilder;
use mqtt_pulse::http::{Server, WebConfig};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// Basic auth under a wrong-password flood: an abort flood's after-effects and
/// a correct login's latency.
#[derive(Parser)]
struct Args {
    /// bcrypt cost of the user's hash.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(4..=31))]
    cost: u32,
    /// Runs of each scenario; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = harness::positive)]
    runs: usize,
    /// Seconds the abort flood lasts.
    #[arg(long, default_value = "10", value_parser = harness::seconds)]
    flood: Duration,
    /// Seconds the server is watched once the abort flood stopped.
    #[arg(long, default_value = "15", value_parser = harness::seconds)]
    after: Duration,
    /// Seconds the wrong-password flood runs, once every attacker address
    /// has had an answer, before the correct login.
    #[arg(long, default_value = "3", value_parser = harness::seconds)]
    warmup: Duration,
    /// Skip the abort-flood scenario.
    #[arg(long)]
    login_only: bool,
    /// Internal: serve the web config at this path and print the port.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Some(web_config) = args.serve {
        serve(web_config);
        return;
    }
    let dir = harness::support::TempDir::new("auth-flood");
    let hash = bcrypt::hash(PASSWORD, args.cost).unwrap();
    let started = Instant::now();
    assert!(!bcrypt::verify("wrong", &hash).unwrap());
    let one_hash = started.elapsed();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  {USER}: {hash}\n")).unwrap();
    println!(
        "cost {}: one verify {one_hash:.2?} here; load average {}",
        args.cost,
        load_average()
    );

    println!(
        "\n| abort flood, sources | threads at rest | threads at most | CPU s during | CPU s in {:?} after | idle after |",
        args.after
    );
    println!("|---|---|---|---|---|---|");
    let abort_sources: &[bool] = if args.login_only { &[] } else { &[false, true] };
    for &fresh in abort_sources {
        let runs: Vec<AbortFlood> = (0..args.runs)
            .map(|_| abort_flood(&web, fresh, &args))
            .collect();
        let m = |f: fn(&AbortFlood) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} s |",
            if fresh { "fresh" } else { "same" },
            m(|r| r.threads_at_rest as f64),
            m(|r| r.threads_at_most as f64),
            m(|r| r.cpu_during),
            m(|r| r.cpu_after),
            m(|r| r.idle_after.as_secs_f64()),
        );
    }

    println!(
        "\n| wrong-password flood, 40 clients from | correct login: statuses | latency (median, min–max) |"
    );
    println!("|---|---|---|");
    for addresses in [1, 8] {
        let runs: Vec<(Option<u16>, Duration)> = (0..args.runs)
            .map(|_| correct_login(&web, addresses, &args))
            .collect();
        let seconds: Vec<f64> = runs.iter().map(|(_, d)| d.as_secs_f64()).collect();
        let statuses: Vec<String> = runs
            .iter()
            .map(|(s, _)| s.map_or("none".to_owned(), |s| s.to_string()))
            .collect();
        println!(
            "| {} | {} | {:.2} s ({:.2}–{:.2}) |",
            if addresses == 1 {
                "one address".to_owned()
            } else {
                format!("{addresses} addresses")
            },
            statuses.join(", "),
            median(&seconds),
            seconds.iter().copied().fold(f64::INFINITY, f64::min),
            seconds.iter().copied().fold(0.0, f64::max),
        );
    }
}

/// The server: the library's `Server` with the web config at `path`, as the
/// daemon runs it; prints its port, serves until stdin closes.
fn serve(path: PathBuf) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let events = mqtt_pulse::events::Events::new();
        let (handle, _consumer) = MetricsBuilder::new(&events).build().unwrap();
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
                .await;
        };
        Server::new()
            .with_web_config(WebConfig::load(path).unwrap())
            .serve(listener, mqtt_pulse::http::router(handle), stdin_closed)
            .await
            .unwrap();
    });
}

/// A server child process and its port; killed on drop.
struct Serving {
    child: Child,
    port: u16,
}

impl Serving {
    fn start(web: &PathBuf) -> Serving {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(web)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Serving { child, port }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct AbortFlood {
    threads_at_rest: u64,
    threads_at_most: u64,
    cpu_during: f64,
    cpu_after: f64,
    idle_after: Duration,
}

fn abort_flood(web: &PathBuf, fresh: bool, args: &Args) -> AbortFlood {
    let server = Serving::start(web);
    let (pid, port) = (server.pid(), server.port);
    let threads_at_rest = threads(pid);
    let ticks_before = cpu_ticks(pid);
    let peak = ThreadPeak::start(pid);
    let wrong = request(
        "GET",
        "/metrics",
        &[("Authorization", &basic(USER, "wrong"))],
    );
    let wrong = Arc::new(wrong);
    let counter = Arc::new(AtomicU32::new(0));
    let until = Instant::now() + args.flood;
    runtime().block_on(async {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (wrong, counter) = (Arc::clone(&wrong), Arc::clone(&counter));
                tokio::spawn(async move {
                    while Instant::now() < until {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let source = if fresh {
                            Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
                        } else {
                            Ipv4Addr::new(127, 3, 0, 1)
                        };
                        let hang_up = Some(Duration::from_millis(50));
                        status_from(source, port, &wrong, hang_up).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });
    let threads_at_most = peak.stop();
    let ended = Instant::now();
    let ticks_at_end = cpu_ticks(pid);
    let window = Duration::from_millis(500);
    let mut idle_after = None;
    while ended.elapsed() + window <= args.after {
        let before = cpu_ticks(pid);
        std::thread::sleep(window);
        if idle_after.is_none() && cpu_ticks(pid) - before <= 2 {
            idle_after = Some(ended.elapsed() - window);
        }
    }
    let ticks_after = cpu_ticks(pid);
    AbortFlood {
        threads_at_rest,
        threads_at_most,
        cpu_during: (ticks_at_end - ticks_before) as f64 / 100.0,
        cpu_after: (ticks_after - ticks_at_end) as f64 / 100.0,
        idle_after: idle_after.unwrap_or(args.after),
    }
}

fn correct_login(web: &PathBuf, addresses: u8, args: &Args) -> (Option<u16>, Duration) {
    let server = Serving::start(web);
    let port = server.port;
    let wrong = Arc::new(request(
        "GET",
        "/metrics",
        &[("Authorization", &basic(USER, "wrong"))],
    ));
    let right = request(
        "GET",
        "/metrics",
        &[("Authorization", &basic(USER, PASSWORD))],
    );
    runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let clients: Vec<_> = (0..40u8)
            .map(|i| {
                let (wrong, stop) = (Arc::clone(&wrong), Arc::clone(&stop));
                let answered = answered.clone();
                let source = Ipv4Addr::new(127, 4, 0, 1 + i % addresses);
                tokio::spawn(async move {
                    let mut first = i < addresses;
                    while !stop.load(Ordering::Relaxed) {
                        status_from(source, port, &wrong, None).await;
                        if std::mem::take(&mut first) {
                            let _ = answered.send(());
                        }
                    }
                })
            })
            .collect();
        // The flood is on: every attacker address has failed once.
        for _ in 0..addresses {
            answers.recv().await.unwrap();
        }
        tokio::time::sleep(args.warmup).await;
        let started = Instant::now();
        let status = status_from(Ipv4Addr::LOCALHOST, port, &right, None).await;
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        drop(server);
        for client in clients {
            let _ = client.await;
        }
        (status, took)
    })
}
