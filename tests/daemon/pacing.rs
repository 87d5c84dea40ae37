//! Connect pacing on `/metrics`: the per-broker gauges of connections waiting
//! for a turn and handshakes in flight move as the daemon's targets queue at a
//! paused Mosquitto (SIGSTOP: the kernel completes TCP into the backlog, no
//! CONNACK comes, so a turn is held) and drain once it answers; the page
//! passes `promtool check metrics` in both states.

use std::fs;

use crate::support::daemon::Daemon;
use crate::support::http::fetch;
use crate::support::metrics::Metrics;
use crate::support::prometheus::promtool_problems;
use crate::support::{Broker, TempDir};
use crate::target;

const WAITING: &str = "mqtt_pulse_connect_pacing_waiting";
const IN_FLIGHT: &str = "mqtt_pulse_connect_pacing_in_flight";

/// The pacing gauges of `broker`: (waiting, in flight).
fn pacing(metrics: &Metrics, broker: &str) -> (Option<f64>, Option<f64>) {
    let labels = [("broker", broker)];
    (
        metrics.value(WAITING, &labels),
        metrics.value(IN_FLIGHT, &labels),
    )
}

fn promtool_passes(metrics: &Metrics) {
    if let Some(problems) = promtool_problems(&metrics.text) {
        panic!("promtool: {problems}\n---\n{}", metrics.text);
    }
}

#[test]
fn the_pacing_gauges_count_targets_queued_at_a_paused_broker_and_drain_when_it_answers() {
    const N: usize = 6;
    let broker = Broker::start();
    broker.pause();
    let dir = TempDir::new("daemon-pacing-gauges");
    let config = dir.join("mqtt-pulse.toml");
    // One handshake at a time, and a connect timeout no turn reaches within
    // the test: the first target holds the only turn while the broker is
    // stopped, the others wait for it.
    let targets: Vec<String> = (0..N)
        .map(|i| target(&format!("paced-{i}"), &broker, ""))
        .collect();
    fs::write(
        &config,
        format!(
            "[defaults]\nconnect_concurrency = 1\nconnect_timeout = \"60s\"\n\n{}",
            targets.concat()
        ),
    )
    .unwrap();
    // Healthy, not ready: /-/ready waits for every target's first attempt,
    // which the queued ones cannot make while the broker is stopped.
    let healthy = |port| fetch(port, "GET", "/-/healthy").is_ok_and(|r| r.status == 200);
    let daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], healthy);
    let address = broker.addr();

    let queued = daemon.wait_for_metrics("N − 1 targets waiting, 1 in flight", |m| {
        pacing(m, &address) == (Some((N - 1) as f64), Some(1.0))
    });
    promtool_passes(&queued);
    // Per broker, not per client: one series of each.
    for name in [WAITING, IN_FLIGHT] {
        let series = queued.samples.iter().filter(|s| s.name == name).count();
        assert_eq!(series, 1, "{name}:\n{}", queued.text);
    }
    // Waiting is not failing: every target is down, none counted a failure.
    let up: Vec<f64> = queued
        .samples
        .iter()
        .filter(|s| s.name == "mqtt_client_up")
        .map(|s| s.value)
        .collect();
    assert_eq!(up, vec![0.0; N], "{}", queued.text);
    assert!(
        !queued.text.contains("mqtt_client_connect_failures_total{"),
        "{}",
        queued.text
    );

    broker.resume();
    let drained = daemon.wait_for_metrics("every target up, none waiting or in flight", |m| {
        let up = m
            .samples
            .iter()
            .filter(|s| s.name == "mqtt_client_up" && s.value == 1.0)
            .count();
        up == N && pacing(m, &address) == (Some(0.0), Some(0.0))
    });
    promtool_passes(&drained);
}
