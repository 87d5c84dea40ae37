//! `protocol = "5"` through the daemon: the config's choice reaches the
//! CONNECT, the keep-alive the broker imposes reaches `/metrics`, and a v5
//! target runs a round-trip probe and ends a path from a 3.1.1 one.

use crate::support::daemon::Daemon;
use crate::support::http::ready;
use crate::support::{Broker, TempDir};
use crate::{DEADLINE, SHUTDOWN_DEADLINE, target, write_config};

#[test]
fn a_v5_target_speaks_mqtt_5_and_exports_the_keep_alive_the_broker_imposes() {
    // Mosquitto's max_keepalive (10 s at least): a Server Keep Alive for an
    // MQTT 5 client asking for more; a 3.1.1 client asking for more is
    // refused instead, so the 3.1.1 target asks for less.
    let broker = Broker::builder().extra_config("max_keepalive 10").start();
    let dir = TempDir::new("daemon-protocol");
    let config = dir.join("mqtt-pulse.toml");
    write_config(
        &config,
        &[
            target("five", &broker, "protocol = \"5\"\nkeep_alive = \"30s\""),
            target("old", &broker, "keep_alive = \"4s\""),
        ],
    );
    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let metrics = daemon.wait_for_metrics("both targets up", |m| {
        m.up("mqtt-pulse-five") == Some(1.0) && m.up("mqtt-pulse-old") == Some(1.0)
    });
    let keep_alive = |client_id| {
        metrics.value(
            "mqtt_client_keep_alive_seconds",
            &[("client_id", client_id)],
        )
    };
    assert_eq!(
        keep_alive("mqtt-pulse-five"),
        Some(10.0),
        "{}",
        metrics.text
    );
    assert_eq!(keep_alive("mqtt-pulse-old"), Some(4.0), "{}", metrics.text);
    broker.wait_for_log("as mqtt-pulse-five (p5, c1, k30", DEADLINE);
    // Mosquitto logs MQTT 3.1.1 as p2, MQTT 5 as p5.
    broker.wait_for_log("as mqtt-pulse-old (p2, c1, k4", DEADLINE);
    assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
}

#[test]
fn a_v5_target_probes_its_broker_and_is_the_end_of_a_path_from_the_config() {
    let broker = Broker::start();
    let dir = TempDir::new("daemon-protocol-probe");
    let config = dir.join("mqtt-pulse.toml");
    let probe = "protocol = \"5\"\n[target.probe]\ninterval = \"100ms\"\ntimeout = \"2s\"\n";
    let path = "[[path]]\nfrom = \"old\"\nto = \"five\"\ninterval = \"100ms\"\ntimeout = \"2s\"\n";
    write_config(
        &config,
        &[
            target("five", &broker, probe),
            target("old", &broker, ""),
            path.to_owned(),
        ],
    );
    let mut daemon = Daemon::start(&dir, &["--config.file", config.to_str().unwrap()], ready);
    let received = |m: &crate::support::metrics::Metrics, name, labels: &[(&str, &str)]| {
        let mut labels = labels.to_vec();
        labels.push(("outcome", "received"));
        m.value(name, &labels).unwrap_or(0.0)
    };
    let metrics = daemon.wait_for_metrics("5 probe and 5 path messages received", |m| {
        received(
            m,
            "mqtt_client_roundtrip_messages_total",
            &[("client_id", "mqtt-pulse-five")],
        ) >= 5.0
            && received(m, "mqtt_path_messages_total", &[("path", "old->five")]) >= 5.0
    });
    for (name, labels) in [
        (
            "mqtt_client_roundtrip_messages_total",
            ("client_id", "mqtt-pulse-five"),
        ),
        ("mqtt_path_messages_total", ("path", "old->five")),
    ] {
        let lost = metrics.value(name, &[labels, ("outcome", "lost")]);
        assert_eq!(lost, Some(0.0), "{name}: {}", metrics.text);
    }
    broker.wait_for_log("as mqtt-pulse-five (p5, c1", DEADLINE);
    assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
}
