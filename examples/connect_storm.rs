//! Connect-storm benchmark: N targets starting at once on one local
//! mosquitto, paced (at most `--limits` handshakes in flight to the broker)
//! against unpaced (limit 0), in the same run.
//!
//! ```text
//! cargo run --release --example connect_storm -- --targets 1000 --runs 3
//! cargo run --release --example connect_storm -- --targets 10000 --runs 3 --no-restart
//! cargo run --release --example connect_storm -- --targets 1000 --limits 0,8,16,32,64,96
//! ```
//!
//! Each measurement starts its own mosquitto (the harness's: `max_connections
//! -1`, the file-descriptor limit raised; it listens with Mosquitto's backlog
//! of 100) and N `Connection`s with the daemon's defaults but the limit, and
//! reports:
//! - the time from the first `Connection::start` until all N are Up (the hub's
//!   events, counted by a wildcard subscriber);
//! - the kernel's `TcpExtListenOverflows` delta over that (/proc/net/netstat,
//!   the whole namespace: SYNs dropped because a listen queue was full);
//! - then the broker is killed and started again on the same port, and the
//!   time from the kill until all N are Up again, with its overflow delta.
//!
//! The modes alternate within each run (their order flips every run) and the
//! medians over the runs are printed as a Markdown table, with the load
//! average before and after.

#[path = "harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use harness::{Broker, listen_overflows, load_average, median, raise_fd_limit};
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientFilter, Event, EventKind, Events, Status, Subscription};

/// Connect-storm benchmark: N targets starting at once, paced against unpaced.
#[derive(Parser)]
struct Args {
    /// Targets per measurement.
    #[arg(long, default_value_t = 1000, value_parser = harness::positive)]
    targets: usize,
    /// Runs of each mode; the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = harness::positive)]
    runs: usize,
    /// The pacing limits to compare, comma-separated; 0 is unpaced.
    #[arg(long, value_delimiter = ',', default_value = "0,64")]
    limits: Vec<usize>,
    /// Keep-alive of every connection, in seconds (the daemon's default: 5).
    #[arg(long, default_value = "5", value_parser = harness::seconds)]
    keep_alive: Duration,
    /// Skip the broker restart.
    #[arg(long)]
    no_restart: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    up_seconds: f64,
    overflows: u64,
    restart_up_seconds: f64,
    restart_overflows: u64,
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    mqtt_pulse::daemon::return_freed_memory();
    raise_fd_limit();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let load_before = load_average();
    let started = std::time::SystemTime::now();
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); args.limits.len()];
    for run in 1..=args.runs {
        let mut order: Vec<usize> = (0..args.limits.len()).collect();
        if run % 2 == 0 {
            order.reverse();
        }
        for index in order {
            let limit = args.limits[index];
            let figures = runtime.block_on(measure(&args, limit));
            eprintln!("run {run} limit {limit}: {figures:?} ({})", load_average());
            results[index].push(figures);
        }
    }
    let load_after = load_average();
    println!(
        "\n{} targets, keep-alive {} s, median of {} runs; {load_before} before, {load_after} after; \
         started {}",
        args.targets,
        args.keep_alive.as_secs(),
        args.runs,
        httpdate::fmt_http_date(started)
    );
    println!(
        "| limit | all up (s) | listen overflows | all up again after a restart (s) | overflows in the restart |"
    );
    println!("|---|---|---|---|---|");
    for (limit, figures) in args.limits.iter().zip(&results) {
        let pick = |f: fn(&Figures) -> f64| median(&figures.iter().map(f).collect::<Vec<_>>());
        let mode = if *limit == 0 {
            "unpaced".to_owned()
        } else {
            limit.to_string()
        };
        let all: Vec<String> = figures
            .iter()
            .map(|f| format!("{:.3}", f.up_seconds))
            .collect();
        println!(
            "| {mode} | {:.3} ({}) | {} | {} | {} |",
            pick(|f| f.up_seconds),
            all.join(", "),
            pick(|f| f.overflows as f64),
            if args.no_restart {
                "—".to_owned()
            } else {
                format!("{:.3}", pick(|f| f.restart_up_seconds))
            },
            if args.no_restart {
                "—".to_owned()
            } else {
                pick(|f| f.restart_overflows as f64).to_string()
            },
        );
    }
}

async fn measure(args: &Args, limit: usize) -> Figures {
    let broker = Arc::new(harness::broker());
    let url = broker.url();
    let events = Events::new();
    let mut watcher = events.subscribe_with_capacity(4 * args.targets + 1024);
    watcher.register(ClientFilter::Any, EventKind::Status);
    let options: Vec<ConnectionOptions> = (0..args.targets)
        .map(|i| {
            ConnectionOptions::new(format!("storm-{i}").as_str(), &url)
                .expect("valid options")
                .with_keep_alive(args.keep_alive)
                .with_connect_concurrency(limit)
        })
        .collect();

    let overflows_before = listen_overflows();
    let started = Instant::now();
    let connections: Vec<Connection> = options
        .into_iter()
        .map(|options| Connection::start(options, &events).expect("start"))
        .collect();
    all_up(&mut watcher, args.targets).await;
    let mut figures = Figures {
        up_seconds: started.elapsed().as_secs_f64(),
        overflows: listen_overflows() - overflows_before,
        ..Figures::default()
    };
    if let Some(pacing) = connections[0].pacing() {
        assert!(pacing.peak_in_flight <= limit, "{pacing:?}");
    }

    if !args.no_restart {
        let overflows_before = listen_overflows();
        let killed = Instant::now();
        let restarting = Arc::clone(&broker);
        // Kills, starts again on the same port, waits until it listens:
        // blocking, so off the runtime's workers.
        tokio::task::spawn_blocking(move || restarting.restart())
            .await
            .expect("restart the broker");
        all_up(&mut watcher, args.targets).await;
        figures.restart_up_seconds = killed.elapsed().as_secs_f64();
        figures.restart_overflows = listen_overflows() - overflows_before;
    }

    let mut stopping = tokio::task::JoinSet::new();
    for connection in connections {
        stopping.spawn(connection.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    drop(watcher);
    stop(broker);
    figures
}

/// Waits for `n` Up events (Down and the rest are skipped).
async fn all_up(watcher: &mut Subscription, n: usize) {
    let mut up = 0;
    while up < n {
        let message = tokio::time::timeout(Duration::from_secs(120), watcher.recv())
            .await
            .expect("all up within 120 s")
            .expect("the hub is alive");
        if message.event == Event::Status(Status::Up) {
            up += 1;
        }
    }
}

fn stop(broker: Arc<Broker>) {
    match Arc::try_unwrap(broker) {
        Ok(broker) => drop(broker),
        Err(broker) => broker.kill(),
    }
}
