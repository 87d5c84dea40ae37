//! What the benchmark harnesses (`scale`, `load`, `soak`, `otlp_bench`,
//! `auth_flood`, `publish_push`, `event_streams`) share; each pulls it in with
//! `#[path = "harness/mod.rs"] mod harness;`.
//!
//! - [`Broker`]: the tests' own mosquitto fixture (`tests/support/broker.rs`),
//!   started [`quiet`](support::BrokerBuilder::quiet) with `max_connections -1`
//!   by [`broker`];
//! - [`raise_fd_limit`], [`rss_kib`], [`median`], [`load_average`],
//!   [`listen_overflows`];
//! - [`seconds`], [`positive_number`] and [`positive`]: value parsers for the
//!   clap arguments.
//!
//! Not a user-facing example: `examples/embed.rs` is the one to copy.
#![allow(dead_code)]

use std::time::Duration;

#[path = "../../tests/support/mod.rs"]
pub mod support;

pub use support::Broker;

/// A private mosquitto on a free 127.0.0.1 port below the ephemeral range (so
/// no client's source port can take it while the broker is down), without a
/// connection limit, logging errors, warnings and information (not each
/// client or packet). Call
/// [`raise_fd_limit`] first: the broker inherits the limit.
pub fn broker() -> Broker {
    Broker::builder()
        .quiet()
        .extra_config("max_connections -1")
        .start()
}

/// Raises this process's file-descriptor limit to its hard limit (children
/// started afterwards inherit it).
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// This process's resident memory (VmRSS), in KiB.
pub fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}

/// The median (the upper one of an even count); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// "load average 0.52 0.58 0.59", from /proc/loadavg (empty if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_default()
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExtListenOverflows`, what `nstat` shows), from /proc/net/netstat. It
/// counts for the whole network namespace: read it before and after a run.
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("read /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next(), lines.next());
    names
        .zip(values)
        .and_then(|(names, values)| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == "ListenOverflows")
                .and_then(|(_, value)| value.parse().ok())
        })
        .expect("ListenOverflows in /proc/net/netstat")
}

/// A clap value parser: a positive number of seconds ("30", "0.5").
pub fn seconds(text: &str) -> Result<Duration, String> {
    positive_number(text).map(Duration::from_secs_f64)
}

/// A clap value parser: a positive, finite number ("30", "0.5").
pub fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        Ok(_) => Err(format!("must be positive: {text}")),
        Err(_) => Err(format!("not a number: {text}")),
    }
}

/// A clap value parser: a positive whole number.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) => Err("must be positive".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("not a whole number: {text}")),
    }
}
