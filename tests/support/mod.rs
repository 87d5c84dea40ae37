//! Shared fixtures for the integration tests: each test file (or test folder's
//! `main.rs`) does `mod support;` and uses these instead of its own copies. The
//! benchmark harnesses in `examples/` use the broker too (`examples/harness`).
//!
//! | module | what it owns |
//! |---|---|
//! | [`broker`] | [`Broker`]: a private `mosquitto` on a free port, killed, paused, restarted, its log read |
//! | [`rumqttd`] | [`rumqttd::Rumqttd`]: a private rumqttd (`examples/rumqttd_broker.rs`) as its own process, killed, paused, restarted by pid |
//! | [`rabbitmq`] | [`rabbitmq::RabbitMq`]: a private RabbitMQ node with the MQTT and Web MQTT plugins, killed, paused, restarted by its VM's pid |
//! | [`pki`] | [`TestPki`]: a throw-away CA with server and client certificates (rcgen) |
//! | [`daemon`] | [`daemon::Daemon`]: the real `mqtt-pulse` binary as a guarded child; one-shot runs; [`daemon::Interactive`]: a subcommand's output line by line |
//! | [`http`] | HTTP clients: hyper-util for plain GETs, raw HTTP/1.1 over TCP or TLS, router `oneshot` |
//! | [`hub`] | awaiting the events hub: [`hub::next`], [`hub::await_each`] (every client of a set reaching a status), [`hub::wait_for_failures`] |
//! | [`sse`] | [`sse::open`]: an `/events` stream, read event by event only when asked |
//! | [`webdriver`] | [`webdriver::ChromeDriver`]: headless Chromium through `chromedriver`, for the live page |
//! | [`metrics`] | reading a `/metrics` page: [`metrics::Metrics`] and [`metrics::sample`] |
//! | [`logs`] | capturing `tracing` output for assertions |
//! | [`process`] | [`process::Process`]: a child process with its output in a log file, killed on drop; [`process::spawn_tied`]: a child the kernel kills when the test process ends |
//! | [`prometheus`] | [`prometheus::Prometheus`]: a real `prometheus` on a free port, queried through its API |
//! | here | [`free_port`], [`tmp_dir`], [`TempDir`], [`wait_until`], [`poll`], [`pid_exists`], [`unix_now`], [`unix_seconds`], [`text`], [`failures`], [`failures_on_metrics`], [`expected_revision`] |
//!
//! The system broker at 127.0.0.1:1883 is never touched: every fixture broker runs on a
//! port from [`free_port`] (never 1883), and processes are only ever signalled by the pid
//! of the child these fixtures spawned.
//!
//! Broker readiness: `start`/`restart` return once mosquitto has logged "running"
//! (printed after all listeners are bound) and its process owns a LISTEN socket on the
//! port (checked in /proc). No probe connection is made, so the log holds only the
//! test's own clients and `max_connections` counts are not disturbed.
//!
//! Broker log notes: `log_type all` is on (unless [`BrokerBuilder::quiet`]), so the log
//! shows every packet ("Received PINGREQ from <id>", "Received DISCONNECT from <id>",
//! "New client connected from ... as <id>", "Sending CONNACK to <id> (0, 0)"). The log
//! file is appended to across [`Broker::restart`]s; use [`Broker::log_mark`] /
//! [`Broker::log_since`] to look at one part of it.
//!
//! Everything here but [`http::get`] and [`http::oneshot`] blocks (std threads,
//! std::net). In async tests that is fine for the short calls (`kill`, `pause`,
//! `resume`, `log`); `start`/`restart` wait up to 5 s for the broker and can be wrapped
//! in `tokio::task::spawn_blocking` if that matters.
//!
//! Each test binary uses only part of this module; `dead_code` is allowed for the rest.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod daemon;
pub mod http;
pub mod hub;
pub mod logs;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod rabbitmq;
pub mod rumqttd;
pub mod sse;
pub mod webdriver;

use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal;
use nix::unistd::Pid;

pub use broker::{Broker, BrokerBuilder, MOSQUITTO, TlsFiles};
pub use pki::{TEST_CLIENT_CN, TestCa, TestPki};

/// The port of the machine's own broker, which the fixtures never use.
pub const SYSTEM_BROKER_PORT: u16 = 1883;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A random u64 from std's per-process random hash keys (no rand crate needed).
pub fn random_u64() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Creates a new, empty, uniquely named directory under `std::env::temp_dir()` and
/// returns its path. Every call gets a different directory; the caller removes it (or use
/// [`TempDir`], which does so on drop).
pub fn tmp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = std::env::temp_dir();
    loop {
        let dir = base.join(format!(
            "mqtt-pulse-{clean}-{}-{}-{:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            random_u64() as u32
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temp dir {}: {e}", dir.display()),
        }
    }
}

/// A [`tmp_dir`] that removes itself (recursively) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir {
            path: tmp_dir(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Ports below the kernel's ephemeral range, so that no outgoing connection (say, a
/// client under test reconnecting to a killed broker) can be handed the port as its
/// source port — that would make it connect to itself or block the broker's restart.
fn port_range() -> Option<(u16, u16)> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let eph_low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let low = 20_000u16;
    if eph_low > low + 2_000 {
        Some((low, eph_low - 1))
    } else {
        None
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now and that this process has
/// not handed out before. Never 1883. Another process can still grab it before the
/// caller binds it; [`Broker::start`] retries with a new port when that happens.
pub fn free_port() -> u16 {
    static ISSUED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    let issued = issued.get_or_insert_with(HashSet::new);
    let range = port_range();
    for _ in 0..10_000 {
        let candidate = match range {
            Some((lo, hi)) => lo + (random_u64() % u64::from(hi - lo + 1)) as u16,
            None => 0, // let the kernel choose
        };
        if candidate == SYSTEM_BROKER_PORT || (candidate != 0 && issued.contains(&candidate)) {
            continue;
        }
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, candidate)) else {
            continue;
        };
        let port = listener.local_addr().expect("local_addr").port();
        if port == SYSTEM_BROKER_PORT || !issued.insert(port) {
            continue;
        }
        return port;
    }
    panic!("free_port: no free port found on 127.0.0.1");
}

/// Polls `condition` every 10 ms until it returns true (→ `true`) or `timeout` passes
/// (→ `false`). Only for real conditions (a log line, a process state, a socket), never
/// as a disguised sleep.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds since the Unix epoch of `time`, as `/metrics` timestamps and
/// `/events` write them.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// True while a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    signal::kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Calls `attempt` every `every` until it returns `Some` (→ that) or `timeout`
/// passes (→ `None`). Like [`wait_until`], for conditions that yield a value.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Bytes as text, with invalid UTF-8 replaced (process output, HTTP bodies).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How many failures of `reason` the hub has counted, over every client.
pub fn failures(
    events: &mqtt_pulse::events::Events,
    reason: mqtt_pulse::events::FailureReason,
) -> u64 {
    events
        .failures()
        .iter()
        .filter(|f| f.reason == reason)
        .map(|f| f.count)
        .sum()
}

/// What `/metrics` says about a client that cannot connect: starts `options`
/// with a hub, the Prometheus exporter and its `/metrics` route, scrapes the
/// route (through `oneshot`: the library's own handler, no socket) every 5 ms
/// until the client has a `mqtt_client_connect_failures_total` series, and
/// returns that client's series (reason label, count) from that page, with
/// its `mqtt_client_up`. The backoff is a minute, so exactly one attempt is
/// made before the connection is shut down. Panics after 5 s without a failure.
pub async fn failures_on_metrics(
    options: mqtt_pulse::connection::ConnectionOptions,
) -> (Vec<(String, f64)>, Option<f64>) {
    use mqtt_pulse::connection::{Backoff, Connection};
    use mqtt_pulse::events::Events;
    use mqtt_pulse::exporter::metrics::MetricsBuilder;

    let minute = Duration::from_secs(60);
    let options = options.with_backoff(Backoff {
        initial: minute,
        max: minute,
    });
    let client_id = options.client_id().as_str().to_owned();
    let events = Events::new();
    let handle = MetricsBuilder::new(&events)
        .with_process_metrics(false)
        .install()
        .expect("the exporter installs");
    let router = axum::Router::new().route("/metrics", mqtt_pulse::http::metrics_route(handle));
    let connection = Connection::start(options, &events).expect("valid options");
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let (status, text) = http::get_text(router.clone(), "/metrics").await;
        assert_eq!(status, axum::http::StatusCode::OK, "{text}");
        let page = metrics::Metrics::parse(text);
        if !page.connect_failures(&client_id).is_empty() {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no connect failure of {client_id} on /metrics within 5 s:\n{}",
            page.text
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    connection.shutdown().await;
    (page.connect_failures(&client_id), page.up(&client_id))
}

/// The revision `build.rs` must have recorded for a build in this checkout:
/// `git rev-parse --short=12 HEAD`, read now (the tests run in the checkout
/// they were built from), or "unknown" where git cannot tell (a source
/// tarball). `MQTT_PULSE_REVISION` is not consulted: cargo hands a build
/// script's `rustc-env` values to the package's test processes too, so the
/// variable seen here is whatever build.rs recorded, and comparing with it
/// would prove nothing. (A build that sets `MQTT_PULSE_REVISION` on purpose,
/// the Docker image's, runs no tests.)
pub fn expected_revision() -> String {
    let git = std::process::Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    match git {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}
