//! Two replicas of one config never fight over a client id (issue 14, item
//! 5): `client_id = "mqtt-pulse-{hostname}-{name}"` gives each instance its
//! own. Two real daemons, one real Mosquitto, several keep-alives.

use crate::support::daemon::Daemon;
use crate::support::http::ready;
use crate::support::{Broker, TempDir, wait_until};
use crate::{DEADLINE, SHUTDOWN_DEADLINE, write_config};

/// How many PINGREQs mosquitto logged from `client_id`.
fn pings(log: &str, client_id: &str) -> usize {
    let needle = format!("Received PINGREQ from {client_id}");
    log.lines()
        .filter(|line| line.trim_end().ends_with(&needle))
        .count()
}

#[test]
fn two_replicas_of_one_config_both_stay_up() {
    let broker = Broker::start();
    let dir = TempDir::new("daemon-replicas");
    let config = dir.join("mqtt-pulse.toml");
    let target = format!(
        "[[target]]\nname = \"plant-a\"\nurl = \"{}\"\nclient_id = \"mqtt-pulse-{{hostname}}-{{name}}\"\nkeep_alive = \"1s\"\n",
        broker.url()
    );
    write_config(&config, &[target]);
    let args = ["--config.file", config.to_str().unwrap()];
    // Two pods of one Deployment: the same file, each its own HOSTNAME.
    let replicas = ["replica-1", "replica-2"].map(|host| {
        let daemon = Daemon::start_with_env(&dir, &args, &[("HOSTNAME", host)], ready);
        (daemon, format!("mqtt-pulse-{host}-plant-a"))
    });
    for (daemon, id) in &replicas {
        daemon.wait_for_metrics(&format!("{id} up"), |m| m.up(id) == Some(1.0));
    }
    // Several keep-alives of both connections, as the broker saw them.
    let enough = wait_until(DEADLINE, || {
        let log = broker.log();
        replicas.iter().all(|(_, id)| pings(&log, id) >= 4)
    });
    assert!(enough, "too few PINGREQs:\n{}", broker.log());
    let log = broker.log();
    for (daemon, id) in &replicas {
        let metrics = daemon.metrics();
        assert_eq!(metrics.up(id), Some(1.0), "{id}");
        assert_eq!(
            metrics.status_changes(id, "down"),
            Some(0.0),
            "{id}:\n{}",
            metrics.text
        );
        assert_eq!(metrics.status_changes(id, "up"), Some(1.0), "{id}");
        let connects = log
            .lines()
            .filter(|line| line.contains(&format!(" as {id} (")))
            .count();
        assert_eq!(connects, 1, "{id} connected more than once:\n{log}");
    }
    assert!(
        !log.contains("already connected, closing old connection"),
        "{log}"
    );
    for (mut daemon, _) in replicas {
        assert_eq!(daemon.terminate(SHUTDOWN_DEADLINE).code(), Some(0));
    }
}
