//! "Connected but messages do not get through", as the real `mqtt-pulse`
//! binary reports it against real Mosquitto brokers — the behaviour the alerts
//! `MqttClientRoundTripsFailing` and `MqttPathLoss` are written from
//! (deploy/prometheus/alerts_test.yml mirrors these series):
//!
//! * a broker whose ACL denies the probe topic: `mqtt_client_up` stays 1,
//!   every probe message is sent and lost, none comes back;
//! * a path whose `to` broker is down sends nothing and so loses nothing
//!   (beyond what was already on its way), and recovers when it is back;
//! * a reload that removes a path takes its series away, and one that adds
//!   it back starts it from zero, without touching the targets.
// The real binary and its config file: skipped without the feature.
#![cfg(feature = "daemon")]

mod support;

use std::fs;
use std::path::Path;

use nix::sys::signal::Signal;
use support::daemon::Daemon;
use support::http::ready;
use support::metrics::Metrics;
use support::{Bridged, Broker, TempDir};

fn start(dir: &Path, config: &str) -> Daemon {
    let file = dir.join("mqtt-pulse.toml");
    fs::write(&file, config).unwrap();
    Daemon::start(dir, &["--config.file", file.to_str().unwrap()], ready)
}

fn probe_count(metrics: &Metrics, client_id: &str, outcome: Option<&str>) -> f64 {
    match outcome {
        None => metrics.value(
            "mqtt_client_roundtrip_sent_total",
            &[("client_id", client_id)],
        ),
        Some(outcome) => metrics.value(
            "mqtt_client_roundtrip_messages_total",
            &[("client_id", client_id), ("outcome", outcome)],
        ),
    }
    .unwrap_or(0.0)
}

fn path_count(metrics: &Metrics, path: &str, outcome: Option<&str>) -> f64 {
    match outcome {
        None => metrics.value("mqtt_path_sent_total", &[("path", path)]),
        Some(outcome) => metrics.value(
            "mqtt_path_messages_total",
            &[("path", path), ("outcome", outcome)],
        ),
    }
    .unwrap_or(0.0)
}

#[test]
fn a_broker_whose_acl_denies_the_probe_topic_stays_up_while_every_probe_is_lost() {
    let dir = TempDir::new("delivery-acl");
    // No rule for anonymous clients: every topic is denied to them, so the
    // SUBSCRIBE is refused and the PUBLISH silently dropped — while CONNECT
    // and PINGREQ are answered as ever.
    let acl = dir.join("acl");
    fs::write(&acl, "# nothing is allowed to anonymous clients\n").unwrap();
    let broker = Broker::builder()
        .extra_config(&format!("acl_file {}", acl.display()))
        .start();
    let daemon = start(
        &dir,
        &format!(
            "[defaults]\nkeep_alive = \"1s\"\n\n[[target]]\nname = \"denied\"\nurl = \"{}\"\n\
             [target.probe]\ninterval = \"100ms\"\ntimeout = \"300ms\"\n",
            broker.url()
        ),
    );
    let client = "mqtt-pulse-denied";
    let page = daemon.wait_for_metrics("5 probe messages lost", |m| {
        probe_count(m, client, Some("lost")) >= 5.0
    });
    assert_eq!(
        page.up(client),
        Some(1.0),
        "connected all along:\n{}",
        page.text
    );
    assert_eq!(page.status_changes(client, "down"), Some(0.0));
    assert_eq!(probe_count(&page, client, Some("received")), 0.0);
    let sent = probe_count(&page, client, None);
    let lost = probe_count(&page, client, Some("lost"));
    // Every message sent is lost, but those still within their timeout.
    assert!(
        sent >= lost && sent <= lost + 3.0,
        "sent {sent}, lost {lost}"
    );
    // And keep-alive alone sees nothing wrong: pings are answered.
    assert!(
        page.value(
            "mqtt_client_ping_rtt_seconds_count",
            &[("client_id", client)]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{}",
        page.text
    );
    broker.wait_for_log(
        "Denied PUBLISH from mqtt-pulse-denied",
        std::time::Duration::from_secs(5),
    );
}

#[test]
fn a_path_sends_and_loses_nothing_while_its_receiving_end_is_down_and_recovers() {
    let dir = TempDir::new("delivery-path-down");
    let pair = Bridged::start();
    let path_table = "[[path]]\nfrom = \"remote\"\nto = \"bridging\"\ninterval = \"100ms\"\n\
                      timeout = \"300ms\"\n";
    let config = format!(
        "[defaults]\nkeep_alive = \"1s\"\nbackoff = {{ initial = \"50ms\", max = \"100ms\" }}\n\n\
         [[target]]\nname = \"remote\"\nurl = \"{remote}\"\n\n\
         [[target]]\nname = \"bridging\"\nurl = \"{bridging}\"\n\n{path_table}",
        remote = pair.remote.url(),
        bridging = pair.bridging.url(),
    );
    let daemon = start(&dir, &config);
    let path = "remote->bridging";
    let page = daemon.wait_for_metrics("5 messages across", |m| {
        path_count(m, path, Some("received")) >= 5.0
    });
    assert_eq!(path_count(&page, path, Some("lost")), 0.0, "{}", page.text);

    // The receiving broker killed: `to` is down, `from` stays up. Nothing
    // more is sent, and at most what was on its way (300 ms / 100 ms) is lost.
    pair.bridging.kill();
    let down = daemon.wait_for_metrics("the receiving end down", |m| {
        m.up("mqtt-pulse-bridging") == Some(0.0)
    });
    // Long enough for anything on its way to time out: `from`'s keep-alive
    // round trips are the clock (two of them, 2 x 0.75 s).
    let pings = |m: &Metrics| {
        m.value(
            "mqtt_client_ping_rtt_seconds_count",
            &[("client_id", "mqtt-pulse-remote")],
        )
        .unwrap_or(0.0)
    };
    let pings_then = pings(&down);
    let later = daemon.wait_for_metrics("two more pings of the sending end", |m| {
        pings(m) >= pings_then + 2.0
    });
    assert_eq!(later.up("mqtt-pulse-remote"), Some(1.0));
    let sent_down = path_count(&down, path, None);
    assert!(
        path_count(&later, path, None) <= sent_down + 1.0,
        "nothing sent while `to` is down (one may have been queued as it went):\n{}",
        later.text
    );
    let lost = path_count(&later, path, Some("lost"));
    assert!(lost <= 4.0, "only what was on its way is lost: {lost}");

    // Back: messages cross again, and nothing more is lost.
    let mark = pair.bridging.log_mark();
    pair.bridging.restart();
    pair.await_bridge(mark);
    let back = daemon.wait_for_metrics("5 more across after the restart", |m| {
        path_count(m, path, Some("received")) >= path_count(&later, path, Some("received")) + 5.0
    });
    assert_eq!(path_count(&back, path, Some("lost")), lost, "{}", back.text);

    // A reload without the path: its series go; the targets stay as they are.
    let without = config.replace(path_table, "");
    assert_ne!(without, config);
    fs::write(dir.join("mqtt-pulse.toml"), &without).unwrap();
    let ups = |m: &Metrics| {
        (
            m.status_changes("mqtt-pulse-remote", "up"),
            m.status_changes("mqtt-pulse-bridging", "up"),
        )
    };
    let before = ups(&back);
    daemon.signal(Signal::SIGHUP);
    let gone = daemon.wait_for_metrics("the path's series gone", |m| {
        m.samples.iter().all(|s| !s.name.starts_with("mqtt_path_"))
    });
    assert_eq!(ups(&gone), before, "the targets kept their connections");
    // And back with it: from zero.
    fs::write(dir.join("mqtt-pulse.toml"), &config).unwrap();
    daemon.signal(Signal::SIGHUP);
    let again = daemon.wait_for_metrics("the path back", |m| {
        path_count(m, path, Some("received")) >= 1.0
    });
    assert!(
        path_count(&again, path, Some("received")) < path_count(&back, path, Some("received")),
        "a new path starts from zero:\n{}",
        again.text
    );
    assert_eq!(ups(&again), before);
}
