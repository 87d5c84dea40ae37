//! Resident memory of a connection that a broker pushes large publishes to
//! (issue 14, item 7): what the queue of incoming publishes costs when nobody
//! reads it.
//!
//! ```text
//! cargo run --release --example publish_push                 # 3 runs, 1,200 x 250 KB
//! cargo run --release --example publish_push -- --runs 5 --messages 2000 --size 250000
//! ```
//!
//! It starts its own `mosquitto` and, per run and mode, a child process (this
//! binary again, so each measurement starts from a fresh heap) holding one
//! `mqtt_pulse::connection::Connection` (keep-alive 1 s) subscribed to a
//! topic, in one of three modes:
//!
//! - `untaken`: nobody calls `take_publishes` — the daemon's case: every
//!   publish is dropped and counted;
//! - `bounded`: the queue is taken and never read, with the default bounds
//!   (1,024 publishes, 8 MiB of payload + topic);
//! - `count-only`: the same with no byte bound (`with_publish_byte_limit(usize::MAX)`),
//!   which is what a taken queue did before the byte bound: the baseline.
//!
//! This process publishes `--messages` QoS 1 messages of `--size` bytes and
//! waits for every PUBACK (Mosquitto acknowledges once it has queued the
//! message for the subscriber); the child then waits for a PINGRESP, which
//! comes after them on its socket, so it has read them all, and reports its
//! VmRSS growth since before the connection started, the publishes dropped
//! and what is queued. Modes are interleaved run by run; medians are printed.
//! The child runs on the daemon's allocator (feature `jemalloc`).

#[path = "harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use harness::{load_average, median, positive, rss_kib};
use mqtt_pulse::connection::{Connection, ConnectionOptions};
use mqtt_pulse::events::{ClientFilter, EventKind, Events, Subscription};
use mqtt_pulse::rumqttc::{self, QoS};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const MODES: [&str; 3] = ["untaken", "bounded", "count-only"];
const TOPIC: &str = "bench/push";

#[derive(Parser)]
struct Args {
    /// Runs of each mode.
    #[arg(long, default_value = "3", value_parser = positive)]
    runs: usize,
    /// Publishes pushed per run.
    #[arg(long, default_value = "1200", value_parser = positive)]
    messages: usize,
    /// Payload bytes of each publish (at most 256 KiB minus the topic).
    #[arg(long, default_value = "250000", value_parser = positive)]
    size: usize,
    /// Internal: run as the child in this mode.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the broker's port, for the child.
    #[arg(long, hide = true, default_value = "0")]
    port: u16,
}

fn main() {
    let args = Args::parse();
    match &args.child {
        Some(mode) => child(mode, args.port),
        None => parent(&args),
    }
}

/// One measurement: the child's report.
struct Report {
    grown_mib: f64,
    dropped: u64,
    queued: usize,
    queued_mib: f64,
}

fn parent(args: &Args) {
    // Not `harness::broker()`: its quiet log leaves out the "running" line
    // mosquitto 2.0.11 logs at `information`, which the fixture waits for.
    let broker = harness::Broker::start();
    println!(
        "publish_push: {} runs x {:?}, {} publishes of {} B each; {}",
        args.runs,
        MODES,
        args.messages,
        args.size,
        load_average()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut reports: Vec<Vec<Report>> = MODES.iter().map(|_| Vec::new()).collect();
    for run in 1..=args.runs {
        for (index, mode) in MODES.iter().enumerate() {
            let report = measure(&runtime, &broker, mode, args);
            println!(
                "run {run} {mode:>10}: RSS +{:.1} MiB, dropped {}, queued {} ({:.1} MiB)",
                report.grown_mib, report.dropped, report.queued, report.queued_mib
            );
            reports[index].push(report);
        }
    }
    println!("medians over {} runs:", args.runs);
    println!("| mode | RSS growth | dropped | queued (bytes) |");
    println!("|---|---|---|---|");
    for (mode, reports) in MODES.iter().zip(&reports) {
        let of = |f: fn(&Report) -> f64| median(&reports.iter().map(f).collect::<Vec<_>>());
        println!(
            "| {mode} | {:.1} MiB | {} | {} ({:.1} MiB) |",
            of(|r| r.grown_mib),
            of(|r| r.dropped as f64),
            of(|r| r.queued as f64),
            of(|r| r.queued_mib),
        );
    }
}

/// Starts a child in `mode`, pushes to it once it is subscribed, and reads
/// its report.
fn measure(
    runtime: &tokio::runtime::Runtime,
    broker: &harness::Broker,
    mode: &str,
    args: &Args,
) -> Report {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode, "--port", &broker.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert_eq!(ready, "subscribed", "the child said {ready:?}");

    runtime.block_on(push(broker.port(), args.messages, args.size));
    writeln!(stdin, "pushed").unwrap();

    let report = lines.next().unwrap().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child {mode}: {status}");
    let fields: Vec<f64> = report
        .split_whitespace()
        .map(|field| field.parse().unwrap())
        .collect();
    let [before, after, dropped, queued, queued_bytes] = fields[..] else {
        panic!("child {mode} reported {report:?}");
    };
    Report {
        grown_mib: (after - before) / 1024.0,
        dropped: dropped as u64,
        queued: queued as usize,
        queued_mib: queued_bytes / (1024.0 * 1024.0),
    }
}

/// Publishes `count` QoS 1 messages of `size` bytes and waits for every PUBACK.
async fn push(port: u16, count: usize, size: usize) {
    let mut options = rumqttc::MqttOptions::new(
        format!("publish-push-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(100);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let payload = vec![b'x'; size];
    let publisher = tokio::spawn(async move {
        for _ in 0..count {
            client
                .publish(TOPIC, QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
        }
        client
    });
    let started = Instant::now();
    let mut acked = 0;
    while acked < count {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(error) => panic!("publisher: {error} after {acked} acks"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{acked} acks in 120 s"
        );
    }
    let client = publisher.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// The child: one connection in `mode`, subscribed; reports after the push.
fn child(mode: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events = Events::new();
        let mut pings = events.register(ClientFilter::Any, EventKind::PingResponse);
        let before = rss_kib();
        let mut options = ConnectionOptions::new(
            format!("publish-push-child-{}", std::process::id()),
            &format!("mqtt://127.0.0.1:{port}"),
        )
        .unwrap()
        .with_keep_alive(Duration::from_secs(1));
        if mode == "count-only" {
            options = options.with_publish_byte_limit(usize::MAX);
        }
        let mut connection = Connection::start(options, &events).unwrap();
        let publishes = match mode {
            "untaken" => None,
            "bounded" | "count-only" => connection.take_publishes(),
            other => panic!("no mode {other:?}"),
        };
        connection.subscribe(TOPIC, QoS::AtMostOnce).await.unwrap();
        // The SUBSCRIBE went out before the next PINGREQ but one, and the
        // broker answers in order: after two PINGRESPs it is in place.
        next_ping(&mut pings).await;
        next_ping(&mut pings).await;
        println!("subscribed");

        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        // Every publish was queued for us before its PUBACK; a PINGRESP the
        // broker sends after that comes after them on our socket.
        while pings.try_recv().is_ok() {}
        next_ping(&mut pings).await;
        let after = rss_kib();
        let (queued, queued_bytes) = publishes
            .as_ref()
            .map_or((0, 0), |p| (p.len(), p.queued_bytes()));
        println!(
            "{before} {after} {} {queued} {queued_bytes}",
            connection.dropped_publishes()
        );
        drop(publishes);
        connection.shutdown().await;
    });
}

async fn next_ping(pings: &mut Subscription) {
    tokio::time::timeout(Duration::from_secs(10), pings.recv())
        .await
        .expect("a ping response within 10 s")
        .expect("the hub is alive");
}
