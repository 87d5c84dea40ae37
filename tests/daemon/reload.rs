//! Reload by `POST /-/reload` and SIGHUP against real brokers: changed
//! targets reconnect, unchanged ones keep their connection, a bad file is
//! survived; then a clean shutdown on SIGTERM. Read through the brokers' logs.

use std::fs;

use mqtt_pulse::config::Config;
use nix::sys::signal::Signal;

use crate::support::daemon::Daemon;
use crate::support::http::ready;
use crate::support::metrics::Metrics;
use crate::support::{Broker, TempDir, unix_now, wait_until};
use crate::{DEADLINE, DEFAULTS, SHUTDOWN_DEADLINE, target, write_config};

/// How many times `client_id` connected to `broker`, counted by mosquitto's
/// "New client connected from <addr> as <id> (p2, c1, k5)." line.
fn connects(log: &str, client_id: &str) -> usize {
    connect_lines(log, client_id).len()
}

fn connect_lines<'a>(log: &'a str, client_id: &str) -> Vec<&'a str> {
    let as_id = format!(" as {client_id} (");
    log.lines()
        .filter(|line| line.contains("New client connected from ") && line.contains(&as_id))
        .collect()
}

/// How many DISCONNECT packets `client_id` sent, by mosquitto's log.
fn disconnects(log: &str, client_id: &str) -> usize {
    let needle = format!(": Received DISCONNECT from {client_id}");
    log.lines()
        .filter(|line| line.trim_end().ends_with(&needle))
        .count()
}
/// Waits until `broker`'s log since `mark` satisfies `condition`.
fn wait_for_broker_log(broker: &Broker, mark: usize, what: &str, condition: impl Fn(&str) -> bool) {
    assert!(
        wait_until(DEADLINE, || condition(&broker.log_since(mark))),
        "broker on port {} never showed: {what}\n--- log since mark ---\n{}",
        broker.port(),
        broker.log_since(mark)
    );
}

/// `mqtt_pulse_config_last_reload_success_timestamp_seconds` on `metrics`.
fn reload_stamp(metrics: &Metrics) -> f64 {
    metrics
        .value(
            "mqtt_pulse_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .unwrap_or_else(|| panic!("no reload timestamp:\n{}", metrics.text))
}

/// Besides the targets, guards the value of
/// `mqtt_pulse_config_last_reload_success_timestamp_seconds`: the wall-clock
/// time of the last successful load, bounded by the clock read before and
/// after each event (the start, a POST reload, a SIGHUP), and left alone by
/// a failed reload.
#[test]
fn reload_applies_changes_keeps_unchanged_targets_and_survives_a_bad_file() {
    let broker_a = Broker::start();
    let broker_b = Broker::start();
    let dir = TempDir::new("daemon-reload");
    let config = dir.join("mqtt-pulse.toml");
    let a = || target("a", &broker_a, "");
    let c = || target("c", &broker_b, "");
    let d = |keep_alive: &str| target("d", &broker_a, &format!("keep_alive = \"{keep_alive}\""));
    write_config(&config, &[a(), target("b", &broker_b, ""), d("5s")]);

    let started = unix_now();
    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let metrics = daemon.wait_for_metrics("a, b and d up", |m| {
        ["mqtt-pulse-a", "mqtt-pulse-b", "mqtt-pulse-d"]
            .iter()
            .all(|id| m.up(id) == Some(1.0))
    });
    let loaded = reload_stamp(&metrics);
    assert!(
        (started..=unix_now()).contains(&loaded),
        "first load at {loaded}, the daemon started at {started}"
    );
    assert_eq!(
        metrics.value(
            "mqtt_client_up",
            &[("client_id", "mqtt-pulse-a"), ("broker", &broker_a.addr())]
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.value(
            "mqtt_client_up",
            &[("client_id", "mqtt-pulse-b"), ("broker", &broker_b.addr())]
        ),
        Some(1.0)
    );
    assert_eq!(metrics.reload_successful(), Some(1.0));
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-a"), 1);
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-d"), 1);
    assert!(connect_lines(&broker_a.log(), "mqtt-pulse-d")[0].contains(", k5"));

    // a unchanged, b removed, c added, d changed.
    write_config(&config, &[a(), c(), d("2s")]);
    let before = unix_now();
    let response = daemon.request("POST", "/-/reload");
    let after = unix_now();
    assert_eq!(response.status, 200, "{}", response.body);
    let reloaded = reload_stamp(&daemon.metrics());
    assert!(
        (before..=after).contains(&reloaded),
        "reloaded at {reloaded}, POST /-/reload between {before} and {after}"
    );
    assert_eq!(
        response.body,
        "config reloaded: added [\"c\"], removed [\"b\"], changed [\"d\"], 1 unchanged\n"
    );
    let metrics = daemon.wait_for_metrics("c up, b gone", |m| {
        m.up("mqtt-pulse-c") == Some(1.0) && !m.has_client("mqtt-pulse-b")
    });
    assert_eq!(
        metrics.value(
            "mqtt_client_up",
            &[("client_id", "mqtt-pulse-c"), ("broker", &broker_b.addr())]
        ),
        Some(1.0)
    );
    assert!(
        !metrics.text.contains("mqtt-pulse-b"),
        "b's series are still there:\n{}",
        metrics.text
    );
    // d: disconnected cleanly, then connected again with the new keep-alive.
    wait_for_broker_log(&broker_a, 0, "d connecting a second time", |log| {
        connects(log, "mqtt-pulse-d") == 2
    });
    let log_a = broker_a.log();
    assert_eq!(disconnects(&log_a, "mqtt-pulse-d"), 1, "{log_a}");
    assert!(
        connect_lines(&log_a, "mqtt-pulse-d")[1].contains(", k2"),
        "{log_a}"
    );
    wait_for_broker_log(&broker_b, 0, "DISCONNECT from b", |log| {
        disconnects(log, "mqtt-pulse-b") == 1
    });
    let metrics = daemon.wait_for_metrics("d up again", |m| m.up("mqtt-pulse-d") == Some(1.0));
    // a: the same connection all along.
    assert_eq!(
        connects(&broker_a.log(), "mqtt-pulse-a"),
        1,
        "{}",
        broker_a.log()
    );
    assert_eq!(disconnects(&broker_a.log(), "mqtt-pulse-a"), 0);
    assert_eq!(metrics.up("mqtt-pulse-a"), Some(1.0));
    assert_eq!(metrics.status_changes("mqtt-pulse-a", "down"), Some(0.0));
    assert_eq!(metrics.status_changes("mqtt-pulse-a", "up"), Some(1.0));
    assert_eq!(metrics.reload_successful(), Some(1.0));

    // Reload is POST only.
    assert_eq!(daemon.request("GET", "/-/reload").status, 405);

    // An invalid file: 500 with the one-line error, and nothing changes.
    fs::write(
        &config,
        format!("{DEFAULTS}{}{}keep_alvie = \"1s\"\n", a(), c()),
    )
    .unwrap();
    let error = Config::load(&config).expect_err("an unknown key");
    let response = daemon.request("POST", "/-/reload");
    assert_eq!(response.status, 500, "{}", response.body);
    assert_eq!(response.body, format!("config reload failed: {error}\n"));
    assert_eq!(response.body.lines().count(), 1);
    let metrics = daemon.metrics();
    assert_eq!(metrics.reload_successful(), Some(0.0));
    assert_eq!(
        reload_stamp(&metrics),
        reloaded,
        "a failed reload is no success"
    );
    for id in ["mqtt-pulse-a", "mqtt-pulse-c", "mqtt-pulse-d"] {
        assert_eq!(metrics.up(id), Some(1.0), "{id}:\n{}", metrics.text);
        assert_eq!(metrics.status_changes(id, "down"), Some(0.0), "{id}");
    }
    assert!(!metrics.has_client("mqtt-pulse-b"));
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-a"), 1);
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-d"), 2);
    assert_eq!(connects(&broker_b.log(), "mqtt-pulse-c"), 1);
    assert!(daemon.stderr().contains("config reload failed"));

    // A valid file and SIGHUP: e is added, and the reload counts as a success again.
    write_config(&config, &[a(), c(), d("2s"), target("e", &broker_b, "")]);
    let before = unix_now();
    daemon.signal(Signal::SIGHUP);
    let metrics = daemon.wait_for_metrics("e up and the last reload successful", |m| {
        m.up("mqtt-pulse-e") == Some(1.0) && m.reload_successful() == Some(1.0)
    });
    let reloaded = reload_stamp(&metrics);
    assert!(
        (before..=unix_now()).contains(&reloaded),
        "reloaded at {reloaded}, SIGHUP sent at {before}"
    );
    for id in ["mqtt-pulse-a", "mqtt-pulse-c", "mqtt-pulse-d"] {
        assert_eq!(metrics.up(id), Some(1.0), "{id}");
    }
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-a"), 1);
    assert_eq!(connects(&broker_a.log(), "mqtt-pulse-d"), 2);
    assert_eq!(connects(&broker_b.log(), "mqtt-pulse-c"), 1);
    assert_eq!(metrics.status_changes("mqtt-pulse-a", "down"), Some(0.0));

    // SIGTERM: exit 0, every remaining client says DISCONNECT.
    let (mark_a, mark_b) = (broker_a.log_mark(), broker_b.log_mark());
    let status = daemon.terminate(SHUTDOWN_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    for (broker, mark, ids) in [
        (&broker_a, mark_a, ["mqtt-pulse-a", "mqtt-pulse-d"]),
        (&broker_b, mark_b, ["mqtt-pulse-c", "mqtt-pulse-e"]),
    ] {
        wait_for_broker_log(broker, mark, &format!("DISCONNECT from {ids:?}"), |log| {
            ids.iter().all(|id| disconnects(log, id) == 1)
        });
    }
    assert!(daemon.stderr().contains("shutting down"));
}
